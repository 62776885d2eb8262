"""Robustness of explanations (Quantus's robustness family): Infidelity, Max- / Avg-Sensitivity, local Lipschitz
estimate, continuity, relative input / output / representation stability.

* Infidelity (Yeh et al. 2019): ``E_I[(I . Phi(x) - (f(x) - f(x - I)))^2]`` over random perturbations ``I``; with
  ``normalize=True`` the map is first scaled by the optimal ``beta`` (as in the paper's experiments),
  so maps of arbitrary scale (CAMs) compare fairly. Uses the given maps, never recomputes them.
* Max-Sensitivity (Yeh et al. 2019): ``max_{||y - x||_inf <= r} ||Phi(y) - Phi(x)|| / ||Phi(x)||`` by Monte Carlo;
  it recomputes explanations at the perturbed inputs by definition, through ``explain_fn``.
* Continuity (Montavon et al. 2018): the largest change of the map per change of the input over horizontal
  translations of the image.
* RIS / ROS / RRS (Agarwal et al. 2022): the largest relative change of the map per relative change of the input,
  the outputs or an internal representation, over noisy copies that keep the predicted class.

Everything that re-explains does so for every copy of every image together, ``batch_size`` rows per call.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import torch
from torch import nn

from interpretorch.capture import capture
from interpretorch.core.targets import Target, image_target, split_target
from interpretorch.explanation import Explanation
from interpretorch.metrics._common import MapsLike, attributions, batched_rows, explanation_maps, prepare

Perturbation = Union[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]]
ExplainFn = Callable[[nn.Module, torch.Tensor, Target], Explanation]
PERTURBATIONS = ("gaussian", "square")


def _sample_perturbation(x: torch.Tensor, kind: Perturbation, gen: torch.Generator, sigma: float,
                         square: float, baseline: float) -> torch.Tensor:
    """Return one perturbation I (B, C, H, W) per image: the model then sees ``x - I``."""
    if callable(kind):
        out = kind(x, gen)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise ValueError(f"a perturbation callable must return a tensor shaped like the inputs "
                             f"{tuple(x.shape)}, got {getattr(out, 'shape', type(out))}")
        return out.to(device=x.device, dtype=x.dtype)
    if kind == "gaussian":
        return (torch.randn(x.shape, generator=gen, dtype=torch.float64) * sigma).to(x.device, x.dtype)
    if kind == "square":
        b, _, h, w = x.shape
        side = max(1, round(square * min(h, w)))
        tops = torch.randint(0, h - side + 1, (b,), generator=gen)
        lefts = torch.randint(0, w - side + 1, (b,), generator=gen)
        ys = torch.arange(h)[None, :, None]
        xs = torch.arange(w)[None, None, :]
        inside = ((ys >= tops[:, None, None]) & (ys < tops[:, None, None] + side) &
                  (xs >= lefts[:, None, None]) & (xs < lefts[:, None, None] + side)).to(x.device)
        return torch.where(inside[:, None], x - baseline, torch.zeros_like(x))
    raise ValueError(f"unknown perturbation {kind!r}; use one of {PERTURBATIONS} or a callable (x, generator) -> I")


def infidelity(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
               n_perturb: int = 16, perturbation: Perturbation = "gaussian", sigma: float = 0.2,
               square: float = 0.25, baseline: float = 0.0, normalize: bool = True, softmax: bool = False,
               seed: int = 0, batch_size: int | None = None, clean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image infidelity of the maps (Yeh et al. 2019); lower is better.

    ``perturbation`` draws ``I``: "gaussian" noise N(0, sigma^2) on every input value (the noisy
    baseline), "square" sets a random square of side ``square`` x the image size to ``baseline``, or
    a callable ``(x, generator) -> I``. 2-D maps count for every channel of a pixel. ``normalize``
    scales each map by the optimal ``beta = sum(e * d) / sum(e^2)`` first. Scores are logits unless
    ``softmax``. One forward pass per perturbation and image (plus the shared clean pass).
    """
    if n_perturb < 1:
        raise ValueError(f"n_perturb must be a positive integer, got {n_perturb}")
    scorer, cl = prepare(model, inputs, target, batch_size, clean)
    x = cl.inputs
    b = x.shape[0]
    phi = attributions(maps, x)
    gen = torch.Generator().manual_seed(int(seed))
    perts = torch.stack([_sample_perturbation(x, perturbation, gen, sigma, square, baseline)
                         for _ in range(n_perturb)], dim=1)  # (B, P, C, H, W)
    dots = (perts * phi[:, None]).flatten(2).sum(-1).double()  # (B, P): I . Phi
    f_clean = cl.scores(scorer, softmax).double()
    f_pert = torch.empty(b * n_perturb, dtype=torch.float64, device=x.device)
    flat = perts.reshape(b * n_perturb, *x.shape[1:])
    img = torch.arange(b, device=x.device).repeat_interleave(n_perturb)
    for sl in batched_rows(img.numel(), scorer.batch_size):
        i = img[sl]
        f_pert[sl] = scorer.forward_scores(x[i] - flat[sl], None if cl.idx is None else cl.idx[i], softmax).double()
    diffs = f_clean[:, None] - f_pert.reshape(b, n_perturb)  # (B, P): f(x) - f(x - I)
    if normalize:
        denom = (dots ** 2).sum(1)
        beta = torch.where(denom > 0, (dots * diffs).sum(1) / denom.clamp(min=1e-300), torch.ones_like(denom))
        dots = dots * beta[:, None]
    return ((dots - diffs) ** 2).mean(1).to(x.dtype)


def explanation_changes(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                        explain_fn: ExplainFn, measure: Callable[..., torch.Tensor], n_samples: int = 10,
                        radius: float = 0.2, noise: str = "uniform",
                        perturb: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                        seed: int = 0, batch_size: int | None = None,
                        clean: torch.Tensor | None = None) -> torch.Tensor:
    """(B, n_samples) values of ``measure(phi, phi_y, x, y)`` (flattened float64 rows of the clean maps, the maps
    re-explained at the noisy copies, the inputs and the copies) over ``n_samples`` noisy copies of each image:
    uniform noise in [-radius, radius] (``noise="uniform"``) or Gaussian noise of std ``radius``
    (``"gaussian"``), or ``perturb(x, generator)`` returning the copies of the whole batch (called once per
    sample, so a caller can replay another library's draws). Every copy of every image is re-explained together,
    ``batch_size`` rows at a time, for the class of its clean image."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples}")
    if not callable(explain_fn):
        raise TypeError("a re-explaining metric needs explain_fn(model, inputs, target) -> Explanation")
    if noise not in ("uniform", "gaussian"):
        raise ValueError(f"noise must be 'uniform' or 'gaussian', got {noise!r}")
    scorer, cl = prepare(model, inputs, target, batch_size, clean)
    x = cl.inputs
    b = x.shape[0]
    phi = explanation_maps(maps).detach().to(x.device).reshape(b, -1).double()
    gen = torch.Generator().manual_seed(int(seed))
    noisy = []
    for _ in range(n_samples):
        if perturb is not None:
            y = perturb(x, gen)
            if not isinstance(y, torch.Tensor) or y.shape != x.shape:
                raise ValueError(f"perturb must return perturbed inputs shaped {tuple(x.shape)}")
        elif noise == "uniform":
            y = x + ((torch.rand(x.shape, generator=gen, dtype=torch.float64) * 2 - 1) * radius).to(x.device, x.dtype)
        else:
            y = x + (torch.randn(x.shape, generator=gen, dtype=torch.float64) * radius).to(x.device, x.dtype)
        noisy.append(y.to(device=x.device, dtype=x.dtype))
    ys = torch.stack(noisy, dim=1).reshape(b * n_samples, *x.shape[1:])  # image-major rows
    img = torch.arange(b, device=x.device).repeat_interleave(n_samples)
    tgt: Target = image_target(scorer.target, cl.idx, img)
    out = torch.empty(b * n_samples, dtype=torch.float64, device=x.device)
    for sl in batched_rows(img.numel(), scorer.batch_size):
        t = split_target(tgt, sl)
        e = explain_fn(model, ys[sl], t)
        em = explanation_maps(e).detach().to(x.device)
        if em.shape[0] != sl.stop - sl.start or em[0].numel() != phi.shape[1]:
            raise ValueError(f"explain_fn returned maps of shape {tuple(em.shape)}; expected "
                             f"{sl.stop - sl.start} maps shaped like the given ones {tuple(explanation_maps(maps).shape[1:])}")
        n = sl.stop - sl.start
        out[sl] = measure(phi[img[sl]], em.reshape(n, -1).double(), x[img[sl]].reshape(n, -1).double(),
                          ys[sl].reshape(n, -1).double())
    return out.reshape(b, n_samples)


def _relative_change(phi: torch.Tensor, em: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    dist = (em - phi).norm(dim=1)
    norm = phi.norm(dim=1)
    # A zero clean map: any change is infinitely large relative to it, no change is 0.
    return torch.where(norm > 0, dist / norm.clamp(min=1e-300),
                       torch.where(dist > 0, torch.full_like(dist, float("inf")), dist))


def _max_normalised(v: torch.Tensor) -> torch.Tensor:
    top = v.abs().amax(1, keepdim=True)
    return v / torch.where(top > 0, top, torch.ones_like(top))


def _lipschitz(phi: torch.Tensor, em: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (_max_normalised(em) - _max_normalised(phi)).norm(dim=1) / ((y - x).norm(dim=1) + 1e-10)


def max_sensitivity(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                    explain_fn: ExplainFn, radius: float = 0.2, n_samples: int = 10, relative: bool = True,
                    perturb: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                    seed: int = 0, batch_size: int | None = None, clean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image Max-Sensitivity (Yeh et al. 2019) of the maps under uniform noise of radius ``radius``; lower is better.

    ``explain_fn(model, inputs, target) -> Explanation`` re-explains each noisy copy for the same
    class as the clean image; ``maps`` must be that function's output on the clean inputs. The
    distance is the Frobenius norm of the map difference, divided by the clean map's norm when
    ``relative`` (as Quantus and Captum report it). ``perturb(x, generator)`` may replace the
    uniform noise and returns the perturbed inputs.
    """
    measure = _relative_change if relative else (lambda phi, em, x, y: (em - phi).norm(dim=1))
    dist = explanation_changes(model, inputs, maps, target, explain_fn=explain_fn, measure=measure,
                               n_samples=n_samples, radius=radius, perturb=perturb, seed=seed,
                               batch_size=batch_size, clean=clean)
    return dist.max(dim=1).values.to(inputs.dtype)


def average_sensitivity(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                        explain_fn: ExplainFn, radius: float = 0.2, n_samples: int = 200,
                        perturb: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                        seed: int = 0, batch_size: int | None = None,
                        clean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image Avg-Sensitivity (Yeh et al. 2019): the mean over noisy copies (uniform noise of radius
    ``radius``) of ``||phi(y) - phi(x)|| / ||phi(x)||``; lower is better. As Quantus 0.6 (no normalisation)."""
    dist = explanation_changes(model, inputs, maps, target, explain_fn=explain_fn, measure=_relative_change,
                               n_samples=n_samples, radius=radius, perturb=perturb, seed=seed,
                               batch_size=batch_size, clean=clean)
    return dist.mean(dim=1).to(inputs.dtype)


def local_lipschitz_estimate(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                             explain_fn: ExplainFn, sigma: float = 0.1, n_samples: int = 200,
                             perturb: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                             seed: int = 0, batch_size: int | None = None,
                             clean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018): the largest, over copies with Gaussian
    noise of std ``sigma``, of ``||phi(y) - phi(x)|| / ||y - x||`` with each map divided by its largest |value|;
    lower is better.

    Quantus 0.6 divides the clean maps by the largest value of the whole batch and each batch of re-explained
    maps by theirs; here every map is divided by its own, which is the same for one image at a time.
    """
    dist = explanation_changes(model, inputs, maps, target, explain_fn=explain_fn, measure=_lipschitz,
                               n_samples=n_samples, radius=sigma, noise="gaussian", perturb=perturb, seed=seed,
                               batch_size=batch_size, clean=clean)
    return dist.max(dim=1).values.to(inputs.dtype)


# ------------------------------------------------------------------ continuity and relative stability

def _reexplain(model: nn.Module, ys: torch.Tensor, target: Target, explain_fn: ExplainFn,
               batch_size: int | None, shape: tuple[int, ...]) -> torch.Tensor:
    """(N, numel) float64 maps of ``explain_fn`` on rows ``ys`` for ``target`` (the target of each row's image:
    ``image_target``), ``batch_size`` at a time."""
    n = ys.shape[0]
    out = []
    for sl in batched_rows(n, batch_size):
        t = split_target(target, sl)
        em = explanation_maps(explain_fn(model, ys[sl], t)).detach().to(ys.device)
        if em.shape[0] != sl.stop - sl.start or em[0].numel() != int(torch.tensor(shape).prod()):
            raise ValueError(f"explain_fn returned maps of shape {tuple(em.shape)}; expected "
                             f"{sl.stop - sl.start} maps shaped like the given ones {shape}")
        out.append(em.reshape(em.shape[0], -1).double())
    return torch.cat(out)


def _max_normalised_abs(v: torch.Tensor, normalise: bool, absolute: bool) -> torch.Tensor:
    v = _max_normalised(v) if normalise else v
    return v.abs() if absolute else v


def translate(x: torch.Tensor, shift: int, fill: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) moved ``shift`` pixels right (left when negative), the uncovered columns set to ``fill``
    (B,) (Quantus's ``batched_translation`` in x)."""
    w = x.shape[-1]
    out = fill[:, None, None, None].to(x.dtype).expand_as(x).clone()
    if shift >= 0:
        if shift < w:
            out[..., shift:] = x[..., :w - shift]
    elif -shift < w:
        out[..., :w + shift] = x[..., -shift:]
    return out


def continuity(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
               explain_fn: ExplainFn, nr_steps: int = 28, normalise: bool = True, absolute: bool = True,
               nan_when_prediction_changes: bool = False, batch_size: int | None = None,
               clean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image continuity (Montavon et al. 2018, as Quantus 0.6): the image is translated horizontally in
    ``nr_steps`` steps of ``(2W + 1) // nr_steps`` pixels from ``-W``, the uncovered columns black (the image's
    minimum), and re-explained; the figure is the largest ``||a - a_t||_1 / ||x - x_t||_2`` over the steps (maps
    divided by their largest |value| and made absolute first); lower is better.

    Quantus divides a whole batch of maps by the batch's largest value; here each map by its own (the same for
    one image at a time). ``nan_when_prediction_changes`` ignores the steps whose top-1 class changed."""
    if isinstance(nr_steps, bool) or not isinstance(nr_steps, int) or nr_steps < 1:
        raise ValueError(f"nr_steps must be a positive integer, got {nr_steps!r}")
    if not callable(explain_fn):
        raise TypeError("continuity re-explains: it needs explain_fn(model, inputs, target) -> Explanation")
    scorer, cl = prepare(model, inputs, target, batch_size, clean)
    x = cl.inputs
    b, w = x.shape[0], x.shape[-1]
    dx = (2 * w + 1) // nr_steps
    shifts = [-w + (k + 1) * dx for k in range(nr_steps)]
    fill = x.reshape(b, -1).amin(1)
    xs = torch.stack([translate(x, s, fill) for s in shifts], 1).reshape(b * nr_steps, *x.shape[1:])
    img = torch.arange(b, device=x.device).repeat_interleave(nr_steps)
    shape = tuple(explanation_maps(maps).shape[1:])
    phi = _max_normalised_abs(explanation_maps(maps).detach().to(x.device).reshape(b, -1).double(), normalise,
                              absolute)
    em = _max_normalised_abs(_reexplain(model, xs, image_target(scorer.target, cl.idx, img), explain_fn,
                                        scorer.batch_size, shape), normalise, absolute)
    num = (phi[img] - em).abs().sum(1)
    den = (x[img].reshape(b * nr_steps, -1).double() - xs.reshape(b * nr_steps, -1).double()).norm(dim=1) + 1e-9
    val = (num / den).reshape(b, nr_steps)
    if nan_when_prediction_changes:
        if cl.classes is None:
            raise ValueError("nan_when_prediction_changes needs class targets, not a callable target or target "
                             "objects")
        changed = (scorer.outputs(xs).argmax(1) != cl.idx[img]).reshape(b, nr_steps)
        val = torch.where(changed, torch.full_like(val, float("nan")), val)
        return _nanmax(val)
    return val.max(1).values


def _nanmax(v: torch.Tensor) -> torch.Tensor:
    """Row-wise maximum ignoring NaN; NaN where a row holds nothing else."""
    filled = torch.where(torch.isnan(v), torch.full_like(v, -float("inf")), v).max(1).values
    return torch.where(torch.isnan(v).all(1), torch.full_like(filled, float("nan")), filled)


def _relative(a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """``||(a - b) / a||_2`` per row, a zero of ``a`` replaced by ``eps`` (Agarwal et al. 2022)."""
    return ((a - b) / (a + (a == 0) * eps)).norm(dim=1)


STABILITIES = ("input", "output", "representation")


def relative_stability(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                       explain_fn: ExplainFn, kind: str = "input", n_samples: int = 200,
                       noise: tuple[float, float] = (0.02, 0.2), layers: str | Sequence[str] | None = None,
                       softmax: bool = False, eps_min: float = 1e-6, nan_when_prediction_changes: bool = True,
                       perturb: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                       seed: int = 0, batch_size: int | None = None,
                       clean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image relative input / output / representation stability (Agarwal et al. 2022; ``kind``): the largest,
    over ``n_samples`` noisy copies ``x'`` (uniform noise in [``noise[0]``, ``noise[1]``) added to every value, as
    Quantus 0.6, or ``perturb(x, generator)``), of ``||(e - e') / e|| / d`` with ``d`` = ``||(x - x') / x||``
    (input), ``||h(x) - h(x')||`` of the outputs (output; logits unless ``softmax``) or ``||(l - l') / l||`` of
    the flattened outputs of ``layers`` (representation; default every leaf module that runs once per pass); lower is better.

    Copies whose top-1 class differs from the clean image's are left out (``nan_when_prediction_changes``; NaN
    when every copy changed). Quantus 0.6 takes a plain maximum, so one changed copy makes its value NaN."""
    if kind not in STABILITIES:
        raise ValueError(f"kind must be one of {STABILITIES}, got {kind!r}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    if not callable(explain_fn):
        raise TypeError("relative stability re-explains: it needs explain_fn(model, inputs, target) -> Explanation")
    scorer, cl = prepare(model, inputs, target, batch_size, clean)
    x = cl.inputs
    b = x.shape[0]
    names: list[str] = []
    if kind == "representation":
        names = ([layers] if isinstance(layers, str) else list(layers)) if layers is not None else \
            [n for n, m in model.named_modules() if n and not any(True for _ in m.children())]
        if not names:
            raise ValueError("the model has no modules whose outputs could be its representation; name layers=")
    gen = torch.Generator().manual_seed(int(seed))
    lo, hi = float(noise[0]), float(noise[1])
    if perturb is None and not lo < hi:
        raise ValueError(f"noise must be (low, high) with low < high, got {noise}")
    copies = []
    for _ in range(n_samples):
        if perturb is not None:
            y = perturb(x, gen)
            if not isinstance(y, torch.Tensor) or y.shape != x.shape:
                raise ValueError(f"perturb must return perturbed inputs shaped {tuple(x.shape)}")
        else:
            y = x + (torch.rand(x.shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo).to(x.device, x.dtype)
        copies.append(y.to(device=x.device, dtype=x.dtype))
    ys = torch.stack(copies, 1).reshape(b * n_samples, *x.shape[1:])
    img = torch.arange(b, device=x.device).repeat_interleave(n_samples)
    shape = tuple(explanation_maps(maps).shape[1:])
    e = explanation_maps(maps).detach().to(x.device).reshape(b, -1).double()
    es = _reexplain(model, ys, image_target(scorer.target, cl.idx, img), explain_fn, scorer.batch_size,
                    shape)
    num = _relative(e[img], es, eps_min)
    outs, reps = [], []
    need_out = kind == "output" or nan_when_prediction_changes
    if kind == "representation":
        def represent(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with capture(model, names, grad=False) as rec:
                out = model(rows)
                # by default, the leaves that ran once (a module reused within one pass has no single output)
                used = names if layers is not None else [n for n in names if rec.calls.get(n, 0) == 1]
                rep = torch.cat([rec[n].reshape(rows.shape[0], -1) for n in used], 1)
            return out, rep.double()
        clean_out, clean_rep = represent(x)
        for sl in batched_rows(ys.shape[0], scorer.batch_size):
            o, r = represent(ys[sl])
            outs.append(o)
            reps.append(r)
        den = _relative(clean_rep[img], torch.cat(reps), eps_min)
        out_y = torch.cat(outs)
    else:
        out_y = scorer.outputs(ys) if need_out else None
        if kind == "input":
            xf = x.reshape(b, -1).double()
            den = _relative(xf[img], ys.reshape(ys.shape[0], -1).double(), eps_min)
        else:
            h, hy = cl.outputs.double(), out_y.double()
            if softmax:
                h, hy = h.softmax(1), hy.softmax(1)
            den = (h[img] - hy).norm(dim=1)
    den = den + (den == 0) * eps_min
    val = (num / den).reshape(b, n_samples)
    if nan_when_prediction_changes:
        changed = (out_y.argmax(1) != cl.outputs.argmax(1)[img]).reshape(b, n_samples)
        val = torch.where(changed, torch.full_like(val, float("nan")), val)
    return _nanmax(val)


def relative_input_stability(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1",
                             **options: Any) -> torch.Tensor:
    """Per-image relative input stability (RIS, Agarwal et al. 2022); lower is better. See ``relative_stability``."""
    return relative_stability(model, inputs, maps, target, kind="input", **options)


def relative_output_stability(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1",
                              **options: Any) -> torch.Tensor:
    """Per-image relative output stability (ROS, Agarwal et al. 2022); lower is better. See ``relative_stability``."""
    return relative_stability(model, inputs, maps, target, kind="output", **options)


def relative_representation_stability(model: nn.Module, inputs: torch.Tensor, maps: MapsLike,
                                      target: Target = "top1", **options: Any) -> torch.Tensor:
    """Per-image relative representation stability (RRS, Agarwal et al. 2022); lower is better. See
    ``relative_stability`` (``layers``: the representation's modules)."""
    return relative_stability(model, inputs, maps, target, kind="representation", **options)
