"""Train the shipped generator (DCGAN) and segmenter on the seeded synthetic shapes-on-textures images.

``python -m interpretorch.gan.train --out DIR`` writes ``DIR/generator.pt`` and ``DIR/segmenter.pt`` (the
discriminator too with ``--save-discriminator``). Both trainings run single-threaded with seeded
initialisation, data, noise and shuffling (:func:`interpretorch.training.seeded_single_thread`), so the same
config gives bit-identical weights on the same platform (CPU kind and torch build); the weights shipped in
``interpretorch/gan/weights`` are the default config's. ``--check DIR`` retrains and compares with the
weights in DIR (the packaged ones with ``--check packaged``).
"""
from __future__ import annotations

import argparse
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from interpretorch.gan.models import (CONCEPTS, IMAGE_SIZE, Discriminator, Generator, Segmenter, concept_targets,
                                      load_checkpoint)
from interpretorch.training import finish, seeded_single_thread


@dataclass
class GANConfig:
    """Everything that determines the trained weights."""

    seed: int = 0
    data_seed: int = 0        # synthetic image stream for the GAN's real images
    n_train: int = 6000
    z_dim: int = 64
    g_widths: tuple[int, int, int] = (128, 96, 48)
    d_widths: tuple[int, int, int] = (32, 64, 128)
    iters: int = 1500
    batch_size: int = 64
    lr: float = 2e-4
    seg_data_seed: int = 1    # a different stream for the segmenter
    seg_n_train: int = 3000
    s_width: int = 24
    seg_epochs: int = 6
    seg_batch_size: int = 64
    seg_lr: float = 3e-3


def _made_with() -> dict:
    return {"torch": str(torch.__version__), "machine": platform.machine(), "processor": platform.processor()}


def train_gan(config: GANConfig, verbose: bool = False) -> tuple[Generator, Discriminator, dict]:
    """Train the DCGAN (non-saturating logistic loss, Adam); returns generator, discriminator (eval) and stats."""
    with seeded_single_thread(config.seed):
        real, _ = concept_targets(config.data_seed, 0, config.n_train, IMAGE_SIZE)
        g = Generator(config.z_dim, config.g_widths, seed=config.seed)
        d = Discriminator(config.d_widths, seed=config.seed + 1)
        opt_g = torch.optim.Adam(g.parameters(), config.lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(d.parameters(), config.lr, betas=(0.5, 0.999))
        gen = torch.Generator().manual_seed(config.seed)
        g.train()
        d.train()
        start = time.perf_counter()
        loss_d = loss_g = torch.zeros(())
        for it in range(config.iters):
            idx = torch.randint(0, config.n_train, (config.batch_size,), generator=gen)
            x = real[idx]
            flip = torch.rand(config.batch_size, generator=gen) < 0.5  # the data is left-right symmetric
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            z = torch.randn(config.batch_size, config.z_dim, generator=gen)
            fake = g(z)
            loss_d = F.softplus(-d(x)).mean() + F.softplus(d(fake.detach())).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            loss_g = F.softplus(-d(fake)).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            if verbose and (it + 1) % 100 == 0:
                print(f"gan iter {it + 1}/{config.iters}: loss_d {loss_d.item():.3f}, loss_g {loss_g.item():.3f}, "
                      f"{time.perf_counter() - start:.1f} s", flush=True)
        stats = {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach()), "seconds": time.perf_counter() - start}
        return finish(g), finish(d), stats


def train_segmenter(config: GANConfig, verbose: bool = False, n_val: int = 500) -> tuple[Segmenter, dict]:
    """Train the segmenter on synthetic images and their concept masks; returns it (eval) and its pixel accuracy
    on ``n_val`` held-out images (which do not change the weights)."""
    with seeded_single_thread(config.seed + 2):
        x, y = concept_targets(config.seg_data_seed, 0, config.seg_n_train, IMAGE_SIZE)
        xv, yv = concept_targets(config.seg_data_seed, config.seg_n_train, n_val, IMAGE_SIZE)
        s = Segmenter(len(CONCEPTS), config.s_width, seed=config.seed + 2)
        opt = torch.optim.AdamW(s.parameters(), config.seg_lr, weight_decay=1e-4)
        steps = config.seg_epochs * -(-len(x) // config.seg_batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.seg_lr, total_steps=steps)
        gen = torch.Generator().manual_seed(config.seed + 2)
        # rarer shape pixels weigh more, so the shapes are not drowned by the backgrounds
        freq = torch.bincount(y.flatten(), minlength=len(CONCEPTS)).double()
        weight = (freq.sum() / (len(CONCEPTS) * freq.clamp(min=1))).sqrt().float()
        start = time.perf_counter()
        for epoch in range(config.seg_epochs):
            s.train()
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), config.seg_batch_size):
                idx = perm[i:i + config.seg_batch_size]
                xb, yb = x[idx], y[idx]
                flip = torch.rand(len(idx), generator=gen) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
                yb = torch.where(flip[:, None, None], yb.flip(2), yb)
                xb = _augment_soft(xb, gen)
                loss = F.cross_entropy(s(xb), yb, weight=weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            if verbose:
                acc = pixel_accuracy(s, xv, yv)
                print(f"segmenter epoch {epoch + 1}/{config.seg_epochs}: loss {loss.item():.3f}, "
                      f"val pixel accuracy {acc:.3f}, {time.perf_counter() - start:.1f} s", flush=True)
        finish(s)
        return s, {"val_pixel_accuracy": pixel_accuracy(s, xv, yv), "seconds": time.perf_counter() - start}


def _augment_soft(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """On half the images a slight blur and noise, so generated (softer) images segment well too."""
    soft = torch.rand(x.shape[0], generator=gen) < 0.5
    kernel = torch.tensor([0.25, 0.5, 0.25])
    k2 = (kernel[:, None] * kernel[None]).expand(3, 1, 3, 3).contiguous()
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k2, groups=3)
    blurred = blurred + 0.05 * torch.randn(x.shape, generator=gen)
    return torch.where(soft[:, None, None, None], blurred, x)


def pixel_accuracy(segmenter: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of pixels whose arg-max class equals the truth (segmenter in eval mode)."""
    segmenter.eval()
    with torch.no_grad():
        return float((segmenter(x).argmax(1) == y).float().mean())


def train_all(config: GANConfig, verbose: bool = False, n_val: int = 500) -> dict:
    """Train generator, discriminator and segmenter; returns checkpoint dicts keyed by file name."""
    g, d, gstats = train_gan(config, verbose)
    s, sstats = train_segmenter(config, verbose, n_val)
    meta = {"config": asdict(config), "made_with": _made_with()}
    return {"generator.pt": {"state_dict": g.state_dict(), **meta, "stats": gstats},
            "discriminator.pt": {"state_dict": d.state_dict(), **meta, "stats": gstats},
            "segmenter.pt": {"state_dict": s.state_dict(), **meta, "stats": sstats}}


def same_weights(a: dict, b: dict) -> list[str]:
    """Names of the tensors that differ between two state dicts (empty when bit-identical)."""
    if a.keys() != b.keys():
        return sorted(set(a) ^ set(b))
    return [k for k in a if not torch.equal(a[k], b[k])]


def main(argv: list[str] | None = None) -> int:
    """Command line: train and write the weights, or retrain and compare with existing ones (--check)."""
    ap = argparse.ArgumentParser(prog="python -m interpretorch.gan.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="folder to write generator.pt and segmenter.pt into")
    ap.add_argument("--check", help="retrain and compare with the weights in this folder ('packaged': the shipped)")
    ap.add_argument("--save-discriminator", action="store_true")
    defaults = GANConfig()
    for name, value in asdict(defaults).items():
        kind = (lambda t: tuple(int(v) for v in t.split(","))) if isinstance(value, tuple) else type(value)
        ap.add_argument("--" + name.replace("_", "-"), type=kind, default=value)
    args = ap.parse_args(argv)
    if not args.out and not args.check:
        ap.error("give --out DIR (train and write) or --check DIR (retrain and compare)")
    config = GANConfig(**{k: getattr(args, k) for k in asdict(defaults)})
    start = time.perf_counter()
    ckpts = train_all(config, verbose=True)
    print(f"trained in {time.perf_counter() - start:.1f} s; segmenter validation pixel accuracy "
          f"{ckpts['segmenter.pt']['stats']['val_pixel_accuracy']:.4f}", flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, ck in ckpts.items():
            if name != "discriminator.pt" or args.save_discriminator:
                torch.save(ck, out / name)
                print(f"wrote {out / name}")
    if args.check:
        from importlib import resources

        folder = resources.files("interpretorch.gan").joinpath("weights") if args.check == "packaged" \
            else Path(args.check)
        bad = 0
        for name in ("generator.pt", "segmenter.pt"):
            ref = load_checkpoint(folder.joinpath(name))
            if ref["config"] != ckpts[name]["config"]:
                print(f"{name}: made with a different config {ref['config']}")
                bad += 1
                continue
            diff = same_weights(ref["state_dict"], ckpts[name]["state_dict"])
            print(f"{name}: {'bit-identical' if not diff else f'{len(diff)} tensors differ: {diff[:5]}'} "
                  f"(made with {ref.get('made_with')}, now {_made_with()})")
            bad += bool(diff)
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
