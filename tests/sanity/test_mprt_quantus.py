"""Cascading randomization (reuse on and off) against Quantus 0.6's MPRT on the same blocks, seeds and maps."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from interpretorch.attribution import explain
from interpretorch.models import TinyCNN
from interpretorch.sanity import model_randomization, randomization_blocks


class _BlockReset(nn.Module):
    """One block as Quantus sees it: a module with ``reset_parameters`` and no registered children."""

    def __init__(self, modules: list[nn.Module]) -> None:
        super().__init__()
        object.__setattr__(self, "members", modules)

    def reset_parameters(self) -> None:
        for top in self.members:
            for m in top.modules():
                if any(True for _ in m.parameters(recurse=False)):
                    m.reset_parameters()


class _BlockView(nn.Module):
    """The model, with our randomization blocks as the only modules Quantus can randomize."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "inner", model)
        mods = dict(model.named_modules())
        self.blocks = nn.ModuleList(_BlockReset([mods[n] for n in b.modules]) for b in randomization_blocks(model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def _q_explain(model, inputs, targets, method: str = "gradient", **_kw) -> np.ndarray:
    inner = model.inner if isinstance(model, _BlockView) else model
    e = explain(inner, torch.as_tensor(inputs, dtype=torch.float32), method,
                target=torch.as_tensor(targets, dtype=torch.long), layer="features.8" if method == "gradcam" else None)
    m = e.maps.abs().sum(1) if e.maps.dim() == 4 else e.maps.abs()
    return m[:, None].detach().numpy()


@pytest.mark.numerics
@pytest.mark.parametrize("method", ["gradient", "gradcam"])
def test_cascading_randomization_matches_quantus_mprt(method):
    warnings.filterwarnings("ignore", module="quantus")
    import quantus

    torch.manual_seed(0)
    model = TinyCNN(num_classes=4).eval()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    metric = quantus.MPRT(similarity_func=quantus.similarity_func.correlation_spearman, layer_order="top_down",
                          seed=42, abs=True, normalise=True, disable_warnings=True, display_progressbar=False)
    theirs = metric(model=_BlockView(model), x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None,
                    explain_func=_q_explain, explain_func_kwargs={"method": method}, device="cpu", batch_size=3)
    theirs = np.array([theirs[k] for k in theirs if k != "original"]).T  # (B, steps), top block first
    kw = dict(mode="cascading", target=y, layer="features.8" if method == "gradcam" else None, seeding="shared",
              seed=43, reset_running_stats=True, metrics=("spearman_abs",),
              metric_options={"spearman_abs": {"percentile": 100.0}}, keep_maps=0)
    for reuse in (True, False):
        ours = model_randomization(model, x, [method], reuse=reuse, **kw).similarity[method]["spearman_abs"].numpy()
        assert ours.shape == theirs.shape
        assert np.allclose(ours, theirs, atol=1e-6, equal_nan=True)
