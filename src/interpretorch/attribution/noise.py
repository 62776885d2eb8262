"""SmoothGrad and VarGrad: a noise tunnel around any registered pixel method."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from interpretorch.attribution.common import clean_pass, method_inputs, row_scores
from interpretorch.attribution.registry import get_method, register
from interpretorch.core import seed_for
from interpretorch.core.batching import chunks
from interpretorch.core.targets import Target, image_target, tensor_outputs
from interpretorch.explanation import Explanation


NOISE_TUNNELS = ("smoothgrad", "vargrad")


def noise_sigma(x: torch.Tensor, noise_level: float, stdev: float | Sequence[float] | torch.Tensor | None
                ) -> torch.Tensor:
    """Each image's noise standard deviation: ``stdev`` when given, else ``noise_level`` x its value range."""
    b = x.shape[0]
    if stdev is None:
        if noise_level < 0:
            raise ValueError(f"noise_level must be >= 0, got {noise_level}")
        flat = x.reshape(b, -1)
        return noise_level * (flat.amax(1) - flat.amin(1))
    return torch.as_tensor(stdev, dtype=x.dtype, device=x.device).reshape(-1).expand(b).clone()


def _base_method(base: str, method: str):
    """The registered pixel method a noise tunnel wraps."""
    try:
        spec = get_method(base)
    except ValueError as e:
        raise ValueError(f"unknown base method {base!r} for {method}: {e}") from None
    if spec.kind != "pixel" or spec.needs_layer or spec.name in NOISE_TUNNELS:
        raise ValueError(f"base method {spec.name!r} does not fit {method}: it wraps a pixel method that needs "
                         "no layer (gradient, gradient_x_input, "
                         "integrated_gradients, guided_backprop, deconvnet, ...)")
    return spec


def unit_noise(samples: list[int], shape: tuple[int, ...], seed: int = 0, *, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """The standard normal noise of SmoothGrad / VarGrad sample numbers ``samples``: (len(samples), *shape).

    Sample ``s`` draws from its own stream of ``seed`` on the given device, so it is the same for every image,
    chunking and batch; the noise added to an image is this times its ``stdev``.
    """
    out = torch.empty((len(samples),) + tuple(shape), dtype=dtype, device=device)
    gen = torch.Generator(device=device)
    for j, sample in enumerate(samples):
        gen.manual_seed(seed_for(seed, sample))
        out[j] = torch.randn(shape, generator=gen, dtype=dtype, device=device)
    return out


def _noise_tunnel(model: nn.Module, inputs: torch.Tensor, target: Target, *, method: str, n_samples: int,
                  noise_level: float, stdev: float | torch.Tensor | None, base: str, seed: int,
                  batch_size: int | None, base_options: dict | None, need: tuple[str, ...] = ("mean", "square")
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None, dict]:
    """Mean and mean square of ``base`` attributions over ``n_samples`` noisy copies of each image (each None
    when not in ``need``, so SmoothGrad does not pay for the squares)."""
    base_fn = _base_method(base, method)
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    b = x.shape[0]
    sigma = noise_sigma(x, noise_level, stdev)
    idx, out = clean_pass(model, x, target, batch_size)
    opts = dict(base_options or {})
    total = torch.zeros_like(x, dtype=torch.float64) if "mean" in need else None
    total_sq = torch.zeros_like(x, dtype=torch.float64) if "square" in need else None
    # Rows are sample-major (row r = sample r // b of image r % b); sample s draws the same unit noise
    # for every image and every chunking, so results do not depend on batch_size or batch composition.
    for sl in chunks(n_samples * b, batch_size):
        r = torch.arange(sl.start, sl.stop, device=x.device)
        s, i = r // b, r % b
        uniq, inv = torch.unique(s, return_inverse=True)
        noise = unit_noise(uniq.tolist(), tuple(x.shape[1:]), seed, dtype=x.dtype, device=x.device)[inv]
        rows = x[i] + sigma[i].view(-1, 1, 1, 1) * noise
        rows_target = image_target(target, idx, i)
        a = base_fn(model, rows, rows_target, batch_size=batch_size, **opts).maps.double()
        if total is not None:
            total.index_add_(0, i, a)
        if total_sq is not None:
            total_sq.index_add_(0, i, a.square_())
    mean = None if total is None else total / n_samples
    mean_sq = None if total_sq is None else total_sq / n_samples
    scores = row_scores(out, target, idx)
    extras = {"stdev": sigma, "n_samples": n_samples, "base": base}
    return mean, mean_sq, {"idx": idx, "scores": scores, "extras": extras, "dtype": x.dtype, "outputs": tensor_outputs(out)}


def smoothgrad(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, n_samples: int = 50,
               noise_level: float = 0.15, stdev: float | torch.Tensor | None = None, base: str = "gradient",
               squared: bool = False, seed: int = 0, batch_size: int | None = None,
               base_options: dict | None = None) -> Explanation:
    """SmoothGrad (Smilkov et al. 2017): the mean of ``base`` attributions over noisy copies of each image.

    Gaussian noise has standard deviation ``noise_level`` x (max - min) of each image (the paper's
    10-20%), or ``stdev`` in input units when given. ``squared=True`` averages squared attributions
    (SmoothGrad-Squared). ``base``: gradient, gradient_x_input, integrated_gradients, guided_backprop or
    deconvnet, with ``base_options`` passed on. ``seed`` fixes the noise.
    """
    mean, mean_sq, info = _noise_tunnel(model, inputs, target, method="smoothgrad", n_samples=n_samples,
                                        noise_level=noise_level, stdev=stdev, base=base, seed=seed,
                                        batch_size=batch_size, base_options=base_options,
                                        need=("square",) if squared else ("mean",))
    maps = (mean_sq if squared else mean).to(info["dtype"])
    return Explanation(maps=maps, method="smoothgrad", target=info["idx"], scores=info["scores"],
                       extras=info["extras"], outputs=info["outputs"])


register("smoothgrad", smoothgrad, kind="pixel", aliases=("smooth_grad",))


def vargrad(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, n_samples: int = 50,
            noise_level: float = 0.15, stdev: float | torch.Tensor | None = None, base: str = "gradient",
            seed: int = 0, batch_size: int | None = None, base_options: dict | None = None) -> Explanation:
    """VarGrad (Adebayo et al. 2018): the variance of ``base`` attributions over noisy copies of each image.

    Same noise and options as ``smoothgrad``; the variance is the population one (divided by n_samples).
    """
    mean, mean_sq, info = _noise_tunnel(model, inputs, target, method="vargrad", n_samples=n_samples,
                                        noise_level=noise_level, stdev=stdev, base=base, seed=seed,
                                        batch_size=batch_size, base_options=base_options)
    var = (mean_sq - mean * mean).clamp_min(0).to(info["dtype"])
    return Explanation(maps=var, method="vargrad", target=info["idx"], scores=info["scores"],
                       extras=info["extras"], outputs=info["outputs"])


register("vargrad", vargrad, kind="pixel", aliases=("var_grad",))
