"""LIME and KernelSHAP run each distinct perturbed input once: coalitions repeating another's input (the same
coalition drawn twice, or differing only on a feature already equal to the baseline) and the image itself (the
all-in coalition) are scored without a model row, and the attributions stay Captum's, which runs them all."""
import pytest
import torch
from captum.attr import KernelShap, Lime
from torch import nn
from test_toolbox_surrogate import captum_with_its_coalitions

from interpretorch.attribution.features import grid_masks
from interpretorch.attribution.surrogate import kernel_shap, lime
from interpretorch.models import TinyCNN


class Counted(nn.Module):
    """Counts the rows its forward sees (on the class, so that a private copy counts too)."""

    rows = [0]

    def __init__(self):
        super().__init__()
        self.net = TinyCNN().double().eval()
        with torch.no_grad():
            self.net.fc.weight.mul_(30)

    def forward(self, x):
        Counted.rows[0] += x.shape[0]
        return self.net(x)


@pytest.mark.numerics
@pytest.mark.parametrize("cls, ours", [(Lime, lime), (KernelShap, kernel_shap)])
def test_repeated_inputs_run_once_and_agree_with_captum(cls, ours):
    torch.manual_seed(0)
    model = Counted().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x[1, :, :8, :8] = 0.1  # image 1's first feature already equals the baseline
    fm = grid_masks(x, 8)  # 4 features: 40 draws repeat coalitions
    ref, z = captum_with_its_coalitions(cls, model, x, baselines=0.1, target=[1, 2], feature_mask=fm, n_samples=40,
                    perturbations_per_eval=20)
    z = z.view(2, 40, 4)
    distinct = 0
    for i in range(2):
        kept = z[i].clone()
        if i == 1:
            kept[:, 0] = 0  # that feature cannot change the input
        inputs = {k for k in {tuple(r.tolist()) for r in kept}
                  if k != ((1, 1, 1, 1) if i == 0 else (0, 1, 1, 1))}  # the image itself: the clean pass
        distinct += len(inputs)
    ours(model, x, [1, 2], features=fm, baseline=0.1, coalitions=z, batch_size=7)  # the copies are made once
    Counted.rows[0] = 0
    e = ours(model, x, [1, 2], features=fm, baseline=0.1, coalitions=z, batch_size=7)
    assert e.extras["forward_passes"] == distinct < 80
    assert e.extras["reused_rows"] == 80 - distinct
    assert Counted.rows[0] == distinct + 2  # those rows and the clean pass of the two images
    scale = ref.abs().max()
    assert (e.maps - ref).abs().max() <= 1e-5 * scale
