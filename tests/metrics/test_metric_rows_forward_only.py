"""The perturbed rows of the metrics and of Occlusion / RISE run on ``forward_only_model`` (BatchNorms folded,
activations in place, on the CPU): the same values as on the model itself, and the user's model unchanged."""
import pytest
import torch
from torch import nn
from torch.profiler import profile

from interpretorch.attribution.perturbation import occlusion, rise
from interpretorch.metrics.faithfulness import deletion
from interpretorch.metrics.perturbation import pixel_flipping


class BatchNormCNN(nn.Module):
    """Two convolutions with BatchNorm (non-trivial running statistics) and ReLUs that are not in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8, 5)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for bn in (self.bn1, self.bn2):
                bn.running_mean.copy_(torch.randn(8, generator=g) * 0.3)
                bn.running_var.copy_(torch.rand(8, generator=g) + 0.5)
                bn.weight.copy_(torch.rand(8, generator=g) + 0.5)
                bn.bias.copy_(torch.randn(8, generator=g) * 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu1(self.bn1(self.conv1(x)))
        h = self.relu2(self.bn2(self.conv2(h)))
        return self.fc(h.mean((2, 3)))


def _snapshot(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _batch_norm_rows(fn) -> int:
    """The rows that went through ``aten::batch_norm`` (the model itself; the folded copy has none) while ``fn`` ran."""
    with profile(record_shapes=True) as prof:
        fn()
    return sum(e.input_shapes[0][0] for e in prof.events() if e.name == "aten::batch_norm" and e.input_shapes)


CASES = {
    "deletion": lambda m, x, maps: deletion(m, x, maps, step=0.125, batch_size=8).scores,
    "pixel_flipping": lambda m, x, maps: pixel_flipping(m, x, maps, features_in_step=8, batch_size=8),
    "occlusion": lambda m, x, maps: occlusion(m, x, window=4, stride=2, batch_size=8).maps,
    "rise": lambda m, x, maps: rise(m, x, n_masks=16, grid=4, seed=0, batch_size=8).maps,
}


@pytest.mark.numerics
@pytest.mark.parametrize("name", list(CASES))
def test_perturbed_rows_on_the_copy_equal_the_model_itself(name):
    torch.manual_seed(0)
    model = BatchNormCNN().train()  # the user's mode is restored afterwards
    x = torch.randn(3, 3, 8, 8)
    maps = torch.rand(3, 8, 8)
    before, kept = _snapshot(model), x.clone()
    fn = CASES[name]

    # without the copy: a hooked model is evaluated as it is (a copy would hide the calls from the hook)
    handle = model.register_forward_pre_hook(lambda m, args: None)
    try:
        plain_rows = _batch_norm_rows(lambda: fn(model, x, maps))
        plain = fn(model, x, maps)
    finally:
        handle.remove()
    copy_rows = _batch_norm_rows(lambda: fn(model, x, maps))  # builds the copy (one-image checks) on first use
    fast = fn(model, x, maps)

    # the perturbed rows left the model: only Occlusion's / RISE's clean pass (3 rows) and the copy's one-image
    # checks remain; the metrics' clean pass runs on the copy too (a score drop compares outputs of one function)
    assert plain_rows >= 2 * 24 and copy_rows <= 2 * (3 + 2), (plain_rows, copy_rows)
    clean_rows = 0 if name in ("deletion", "pixel_flipping") else 2 * 3
    assert _batch_norm_rows(lambda: fn(model, x, maps)) == clean_rows  # cached copy
    scale = float(plain.abs().max())
    assert torch.allclose(fast, plain, rtol=1e-5, atol=1e-5 * scale), float((fast - plain).abs().max())
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters()) and torch.equal(x, kept)
