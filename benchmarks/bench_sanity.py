"""The cascading model-parameter randomization test on EfficientNet-Lite0: interpretorch against its floor and
Quantus's MPRT.

Every block of EfficientNet-Lite0 (the 19 blocks of ``randomization_blocks``: the stem, the 16 MBConv blocks, the
head convolution and the classifier, each with its batch norm), 4 photos at 224 x 224, Gradient and Grad-CAM (at
``_head_act``), CPU, one process.

- **floor**: (steps + 1) x one explanation of the 4 images with the method on the trained model (the original
  maps once, then one per randomized model); nothing else is unavoidable.
- **interpretorch**: ``model_randomization(model, x, [method], mode="cascading", ...)``: the deep copy,
  randomization, explanations, the similarity of every step, and the random / edge baselines; with
  ``reuse=True`` (the default: the trained bottom's activations are kept and each step resumes above its cut
  where the method allows, ``sanity.cascade``) and ``reuse=False`` (every step runs the full model).
- **Quantus** ``MPRT(layer_order="top_down", similarity_func=correlation_spearman, abs=True, normalise=True)``
  on the same model, images and steps: Quantus randomizes every module that has ``reset_parameters``, so it gets
  a view of the model whose only such modules are the 19 blocks (``BlockView``: each block's ``reset_parameters``
  resets its layers in order, batch norms with their running statistics, as Quantus does for a layer). Its
  explanations come from the same interpretorch method (``explain_func``), so the comparison is of the
  randomization test itself. Quantus seeds the global generator with ``seed + 1`` before every block;
  interpretorch runs with ``seeding="shared", seed=43, reset_running_stats=True`` to draw the same weights, and
  its Spearman of the absolute maps is taken without the 99th-percentile clipping of the paper's view
  (``percentile=100``), which Quantus does not do. Both then report the same numbers: the script prints the largest
  difference.

Each harness's minor page faults are recorded (median per run, ``minor_faults_median`` in the JSON rows): with
``--clock cpu`` the kernel's time mapping in fresh memory counts, and it depends on what the process allocated
before (glibc gives the top of its heap back to the system whenever a large block is freed). Running the script
with ``MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=4294967296`` keeps freed memory in the heap and
shows the comparison without that effect.

Protocol differences that stay: Quantus explains the original model twice (once for ``a_batch``, once at the first
step) and interpretorch once; interpretorch also computes its random-map and edge-map baselines.

    python benchmarks/bench_sanity.py [--images 4] [--repeats 1] [--threads N] [--clock wall|cpu] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time

import numpy as np
import torch
from torch import nn

from interpretorch.attribution import explain
from interpretorch.models import load_model
from interpretorch.sanity import model_randomization, randomization_blocks
from interpretorch.sanity.randomize import Block

try:
    import quantus
except Exception as e:  # noqa: BLE001 - optional peer
    QUANTUS = f"unavailable ({type(e).__name__}: {e})"
else:
    QUANTUS = quantus.__version__

LAYER = "_head_act"


def photos(pre, n: int) -> torch.Tensor:
    """``n`` sample photos (chelsea, coffee, astronaut, rocket, repeated) preprocessed for the model."""
    from skimage import data

    imgs = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    return pre([imgs[i % len(imgs)] for i in range(n)])


class _BlockReset(nn.Module):
    """One block as Quantus sees it: a module with ``reset_parameters`` and no registered children."""

    def __init__(self, modules: list[nn.Module]) -> None:
        super().__init__()
        object.__setattr__(self, "members", modules)  # unregistered: Quantus must not see the layers

    def reset_parameters(self) -> None:
        for top in self.members:
            for m in top.modules():
                if any(True for _ in m.parameters(recurse=False)):
                    m.reset_parameters()  # batch norm: its running statistics too


class BlockView(nn.Module):
    """The model, with the 19 blocks as the only modules Quantus can randomize (in the model's order)."""

    def __init__(self, model: nn.Module, blocks: list[Block]) -> None:
        super().__init__()
        object.__setattr__(self, "inner", model)
        mods = dict(model.named_modules())
        self.blocks = nn.ModuleList(_BlockReset([mods[n] for n in b.modules]) for b in blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def quantus_explain(model, inputs, targets, method: str, **_kw) -> np.ndarray:
    """Quantus ``explain_func``: the interpretorch method on the view's model, as (B, 1, H, W) |map| summed."""
    inner = model.inner if isinstance(model, BlockView) else model
    x = torch.as_tensor(inputs, dtype=torch.float32)
    e = explain(inner, x, method, target=torch.as_tensor(targets, dtype=torch.long),
                layer=LAYER if method == "gradcam" else None)
    m = e.maps.abs().sum(1) if e.maps.dim() == 4 else e.maps.abs()
    return m[:, None].detach().numpy()


def faults() -> int:
    """Minor page faults of this process so far (memory the kernel had to map in on first touch)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def clock(kind: str):
    return time.process_time if kind == "cpu" else time.perf_counter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--methods", default="gradient,gradcam")
    ap.add_argument("--skip-quantus", action="store_true")
    ap.add_argument("--top", type=int, default=None, help="only the top N blocks (a quick check of the script)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    now = clock(args.clock)
    lm = load_model("efficientnet_lite0")
    model = lm.model
    x = photos(lm.preprocess, args.images)
    with torch.no_grad():
        target = model(x).argmax(1)
    blocks = randomization_blocks(model)
    if args.top:
        blocks = blocks[-args.top:]
    steps = len(blocks)
    load_before = os.getloadavg()[0]
    rows = []
    for method in args.methods.split(","):
        layer = LAYER if method == "gradcam" else None
        one = []
        for _ in range(max(3, args.repeats)):
            t = now()
            explain(model, x, method, target=target, layer=layer)
            one.append(now() - t)
        floor = (steps + 1) * statistics.median(one)
        ours_t, plain_t, q_t = [], [], []
        flt: dict[str, list[int]] = {"reuse": [], "no_reuse": [], "quantus": []}  # minor page faults per run
        kw = dict(mode="cascading", target=target, layer=layer, seeding="shared", seed=43, reset_running_stats=True,
                  metrics=("spearman_abs",), metric_options={"spearman_abs": {"percentile": 100.0}}, keep_maps=0,
                  max_steps=steps)
        for _ in range(args.repeats):
            f, t = faults(), now()
            r = model_randomization(model, x, [method], reuse=True, **kw)
            ours_t.append(now() - t)
            flt["reuse"].append(faults() - f)
            f, t = faults(), now()
            r_plain = model_randomization(model, x, [method], reuse=False, **kw)
            plain_t.append(now() - t)
            flt["no_reuse"].append(faults() - f)
            if not args.skip_quantus and not QUANTUS.startswith("unavailable"):
                metric = quantus.MPRT(similarity_func=quantus.similarity_func.correlation_spearman,
                                      layer_order="top_down", seed=42, abs=True, normalise=True,
                                      disable_warnings=True, display_progressbar=False)
                view = BlockView(model, blocks)
                f, t = faults(), now()
                q = metric(model=view, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=None,
                           explain_func=quantus_explain, explain_func_kwargs={"method": method}, device="cpu",
                           batch_size=args.images)
                q_t.append(now() - t)
                flt["quantus"].append(faults() - f)
        ours = r.similarity[method]["spearman_abs"].numpy()  # (B, S)
        plain = r_plain.similarity[method]["spearman_abs"].numpy()
        row = {"method": method, "steps": steps, "one_explanation_s": statistics.median(one), "floor_s": floor,
               "interpretorch_s": statistics.median(ours_t), "x_floor": statistics.median(ours_t) / floor,
               "no_reuse_s": statistics.median(plain_t), "no_reuse_x_floor": statistics.median(plain_t) / floor,
               "reuse_counts": r.config["reuse"],
               "minor_faults_median": {k: int(statistics.median(v)) for k, v in flt.items() if v},
               "max_abs_diff_reuse_vs_not": float(np.nanmax(np.abs(plain - ours)))}
        if q_t:
            qv = np.array([q[k] for k in q if k != "original"]).T  # (B, S), top block first
            row.update({"quantus_s": statistics.median(q_t), "quantus_x_floor": statistics.median(q_t) / floor,
                        "speedup_vs_quantus": statistics.median(q_t) / statistics.median(ours_t),
                        "max_abs_diff_vs_quantus": float(np.nanmax(np.abs(qv - ours))),
                        "quantus_steps": len(qv[0])})
        row["mean_spearman_abs_per_step"] = [round(float(v), 4) for v in np.nanmean(ours, 0)]
        rows.append(row)
        print(json.dumps(row), flush=True)
    env = {"torch": torch.__version__, "quantus": QUANTUS, "threads": torch.get_num_threads(), "clock": args.clock,
           "cpu": platform.processor() or platform.machine(), "load_before": load_before,
           "load_after": os.getloadavg()[0], "images": args.images, "repeats": args.repeats}
    print(json.dumps(env))
    print(f"\nEfficientNet-Lite0, cascading over {steps} blocks, {args.images} images at 224x224, {env['clock']} "
          f"clock, {env['threads']} thread(s), torch {env['torch']}, Quantus {QUANTUS}; 1-min load "
          f"{env['load_before']:.1f} before, {env['load_after']:.1f} after\n")
    print("| method | one explanation s | floor s | interpretorch s (reuse) | x floor | no reuse s | x floor | "
          "Quantus MPRT s | x floor | ours faster | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        q = (f"{r['quantus_s']:.1f} | {r['quantus_x_floor']:.2f}x | {r['speedup_vs_quantus']:.2f}x | "
             f"{r['max_abs_diff_vs_quantus']:.1e}") if "quantus_s" in r else "n/a | n/a | n/a | n/a"
        print(f"| {r['method']} | {r['one_explanation_s']:.2f} | {r['floor_s']:.1f} | {r['interpretorch_s']:.1f} | "
              f"{r['x_floor']:.2f}x | {r['no_reuse_s']:.1f} | {r['no_reuse_x_floor']:.2f}x | {q} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "env": env}, f, indent=1)


if __name__ == "__main__":
    main()
