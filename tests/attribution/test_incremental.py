"""IncrementalRows: rows recomputed only where they changed give the model's own outputs.

Tolerance used throughout: a step's outputs may differ from the model's outputs on the same rows by at most
1e-5 of the largest absolute output of that step (the crop's convolutions sum in another order than the whole
map's, and the model's own rows are not bit-equal across batch sizes or CPUs either).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.attribution.incremental import IncrementalRows, disabled, incremental_rows
from interpretorch.metrics.perturbation import (faithfulness_estimate, irof, monotonicity, pixel_flipping,
                                                region_perturbation, selectivity)
from interpretorch.models import TinyCNN
from interpretorch.models.efficientnet import SamePadConv2d

pytestmark = pytest.mark.numerics

RTOL = 1e-5  # of the largest absolute output (or feature-map value) compared
H, W = 32, 40  # not square, so rows and columns cannot be swapped unnoticed


def _seeded(module: nn.Module, seed: int) -> nn.Module:
    """``module`` with every parameter redrawn from ``seed`` (BatchNorm statistics included), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in list(module.named_parameters()) + list(module.named_buffers()):
            if not p.is_floating_point():
                continue
            if name.endswith("running_var"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif name.endswith("weight") and p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if name.endswith("weight") else 0.0))
    return module.eval()


class Plain(nn.Module):
    """3x3 / 3x3 / 1x1 convolutions with ReLU, global average pool and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 8, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c3(F.relu(self.c2(F.relu(self.c1(x))))))
        return self.fc(x.mean((2, 3)))


class StridedDilated(nn.Module):
    """Stride-2 and dilated convolutions (odd sizes, uneven padding), flattened into a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(6, 6, 3, padding=2, dilation=2)
        self.c3 = nn.Conv2d(6, 4, (5, 3), stride=(2, 3), padding=(1, 2), dilation=(1, 2))
        self.fc = nn.Linear(4 * 7 * 7, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.c3(F.leaky_relu(self.c2(F.relu(self.c1(x))), 0.1)))
        return self.fc(x.flatten(1))


class Depthwise(nn.Module):
    """A depthwise stride-2 convolution, a grouped one and pointwise ones (MobileNet-like)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.gc = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.pw = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.hardswish(self.gc(F.silu(self.dw(F.relu6(self.c1(x))))))
        return self.fc(self.pw(x).amax((2, 3)))


class SamePad(nn.Module):
    """TensorFlow-"same" convolutions (EfficientNet's): an asymmetric zero ``F.pad`` before stride-2 ones."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = SamePadConv2d(3, 6, 3, stride=2)
        self.c2 = SamePadConv2d(6, 6, 5, stride=2, groups=6)
        self.c3 = SamePadConv2d(6, 6, 3, stride=1)
        self.c4 = SamePadConv2d(6, 6, (4, 2), stride=1)  # even kernels: one more after than before, top != left
        self.c5 = nn.Conv2d(6, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.c4(F.relu6(self.c3(F.relu6(self.c2(F.relu6(self.c1(x))))))))
        x = self.c5(F.pad(x, (2, 0, 1, 3)))  # an explicit zero pad, before a padded convolution
        return self.fc(x.flatten(1))


class Residual(nn.Module):
    """Sums, differences and products of two branches whose changed regions differ (1x1 beside 5x5 + 3x3)."""

    def __init__(self) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(3, 6, 3, padding=1)
        self.a = nn.Conv2d(6, 6, 1)
        self.b1, self.b2 = nn.Conv2d(6, 6, 5, padding=2), nn.Conv2d(6, 6, 3, padding=1)
        self.c1 = nn.Conv2d(6, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c0(x))
        a, b = self.a(x), self.b2(F.relu(self.b1(x)))
        y = F.relu(a + b) - 0.5 * torch.sigmoid(b) * a + x
        y = torch.maximum(self.c1(y), torch.zeros(()))
        return self.fc(y.mean((2, 3)))


class InPlace(nn.Module):
    """A ResNet-like block written with in-place operations (``out += identity``, in-place ReLU and scaling)."""

    def __init__(self) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(3, 6, 3, padding=1)
        self.c1, self.c2 = nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c0(x), inplace=True)
        out = self.c2(F.relu(self.c1(x), inplace=True))
        out += x
        out.mul_(0.5)
        out = F.relu(out, inplace=True)
        return self.fc(out.mean((2, 3)))


class Broadcast(nn.Module):
    """Per-channel scale and shift parameters, a per-image operand and a per-position (1, C, H, W) one."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(1, 6, 1, 1))
        self.shift = nn.Parameter(torch.zeros(6, 1, 1))
        self.pos = nn.Parameter(torch.zeros(1, 6, H, W))
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(x) * self.scale + self.shift)
        x = x * x.new_tensor([1.0, 2.0, 0.5])[:x.shape[0], None, None, None]  # a per-image factor (3 images)
        x = F.relu(self.c2(x) + self.pos * 2.0)  # a per-position map computed from a parameter
        return self.fc(x.mean((2, 3)))


class PerColumn(nn.Module):
    """Operands that vary over the columns or rows only ((W,) and (H, 1)): not maps, so the sum runs whole."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.col, self.row = nn.Parameter(torch.zeros(W)), nn.Parameter(torch.zeros(H, 1))
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c2(F.relu(self.c1(x) + self.col)) * self.row)
        return self.fc(x.mean((2, 3)))


class SqueezeExcite(nn.Module):
    """A squeeze-excitation block: global pool, two linear layers, sigmoid, and a channel-wise product."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.se1, self.se2 = nn.Linear(8, 4), nn.Linear(4, 8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(x))
        s = torch.sigmoid(self.se2(F.relu(self.se1(x.mean((2, 3))))))
        x = F.relu(self.c2(x * s[:, :, None, None]))
        return self.fc(x.mean((2, 3)))


class Pooling(nn.Module):
    """Max-pool, average-pool and adaptive pooling between convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 6, 3)
        self.fc = nn.Linear(6 * 2 * 2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.avg_pool2d(F.relu(self.c2(x)), 3, stride=1, padding=1)
        x = F.adaptive_avg_pool2d(F.relu(self.c3(x)), 2)
        return self.fc(x.flatten(1))


class ResNetLike(nn.Module):
    """A ResNet stem (7x7 stride-2 convolution with no activation, so the max pool's padding meets negative
    values; 3x3 stride-2 max pool padded by 1), a basic block, a dilated max pool with a non-square window and an
    average pool counting its zero padding, with a divisor of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 7, stride=2, padding=3)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.a, self.b = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        x = F.relu(x + self.b(F.relu(self.a(x))))
        x = F.max_pool2d(x, (2, 3), stride=(1, 2), padding=(1, 1), dilation=(2, 1))
        x = F.avg_pool2d(self.c(x), 3, stride=1, padding=1, divisor_override=7)
        return self.fc(x.mean((2, 3)))


class PoolsRunWhole(nn.Module):
    """Pools whose windows the engine does not localise (ceil mode, padding not counted): they run whole, the
    maps after them too, and the outputs still equal the model's."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.c1(x), 3, stride=2, ceil_mode=True)
        x = F.avg_pool2d(self.c2(x), 3, stride=1, padding=1, count_include_pad=False)
        return self.fc(x.mean((2, 3)))


class BatchNormed(nn.Module):
    """Convolution + BatchNorm pairs (folded into the convolutions) and a stride-2 one."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
            nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


class DenseOutput(nn.Module):
    """A fully convolutional model: its outputs are a (B, K, H, W) map (segmentation-like)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(F.relu(self.c1(x)))


class Cropping(nn.Module):
    """A negative ``F.pad`` (it drops the first row and the last column) before a zero-padded convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c2(F.pad(F.relu(self.c1(x)), (0, -1, -1, 0)))
        return self.fc(y.mean((2, 3)))


class DynamicWeights(nn.Module):
    """A convolution whose weights depend on the inputs (scaled by the batch's mean value)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.w = nn.Parameter(torch.zeros(6, 6, 3, 3))
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.c1(x))
        y = F.conv2d(y, self.w * torch.sigmoid(4.0 * x.mean()), padding=1)
        return self.fc(y.mean((2, 3)))


MODELS = {"plain": Plain, "strided_dilated": StridedDilated, "depthwise": Depthwise, "same_pad": SamePad,
          "residual": Residual, "in_place": InPlace, "broadcast": Broadcast,
          "per_column": PerColumn, "squeeze_excite": SqueezeExcite,
          "pooling": Pooling, "resnet_like": ResNetLike, "pools_run_whole": PoolsRunWhole, "batchnorm": BatchNormed, "dense_output": DenseOutput, "cropping": Cropping,
          "dynamic_weights": DynamicWeights, "tiny_cnn": lambda: TinyCNN(num_classes=4)}


def _model(name: str, seed: int = 0) -> nn.Module:
    return _seeded(MODELS[name](), seed)


def _images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, H, W, generator=torch.Generator().manual_seed(seed))


def _sequence(x: torch.Tensor, seed: int = 2) -> list[torch.Tensor]:
    """Rows continuing ``x`` (3 images): patches at corners and borders, different places per image, an image
    unchanged in a step, a step changing nothing, a step changing almost everything, then random patches."""
    g = torch.Generator().manual_seed(seed)
    rows, cur = [], x.clone()

    def put(i: int, r0: int, r1: int, c0: int, c1: int) -> None:
        cur[i, :, r0:r1, c0:c1] = torch.randn(cur[i, :, r0:r1, c0:c1].shape, generator=g)

    put(0, 0, 2, 0, 3), put(1, H - 1, H, W - 2, W)  # top-left / bottom-right corners; image 2 unchanged
    rows.append(cur.clone())
    put(0, 13, 17, W - 1, W), put(1, 0, 1, 20, 26), put(2, H - 3, H, 0, 1)  # right / top borders, a corner
    rows.append(cur.clone())
    rows.append(cur.clone())  # nothing changes
    put(0, 1, H, 0, W - 1), put(1, 10, 12, 10, 12)  # almost all of image 0
    rows.append(cur.clone())
    put(2, 0, H, 0, 1), put(0, 5, 6, 7, 8)  # a whole column of image 2; one pixel of image 0
    rows.append(cur.clone())
    cur[1] = x[1]  # image 1 back to its clean row (faithfulness estimate puts pixels back)
    rows.append(cur.clone())
    for _ in range(5):
        for i in range(3):
            if torch.rand((), generator=g) < 0.8:
                h, w = (int(v) for v in torch.randint(1, 7, (2,), generator=g))
                r = int(torch.randint(0, H - h + 1, (), generator=g))
                c = int(torch.randint(0, W - w + 1, (), generator=g))
                put(i, r, r + h, c, c + w)
        rows.append(cur.clone())
    return rows


def _assert_close(out: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert out.shape == ref.shape, what
    scale = float(ref.abs().max())
    err = float((out - ref).abs().max())
    assert err <= RTOL * scale, f"{what}: max abs diff {err:.3g} > {RTOL} x {scale:.3g}"


@pytest.mark.parametrize("name", list(MODELS))
def test_steps_equal_the_models_outputs(name):
    model, x = _model(name), _images()
    run = incremental_rows(model, x)
    assert run is not None, f"{name}: no incremental engine"
    with torch.no_grad():
        _assert_close(run.start(x), model(x), f"{name} start")
        for k, y in enumerate(_sequence(x)):
            _assert_close(run.step(y), model(y), f"{name} step {k}")
    assert run.rows == 3 * (1 + len(_sequence(x)))


# what a few changed pixels may still recompute whole: the global pools and the linear layers after the maps
AFTER_THE_MAPS = {torch.ops.aten.mean.dim, torch.ops.aten.amax.default, torch.ops.aten.view_copy.default,
                  torch.ops.aten.addmm.default}


# a ResNet's stem and pool shrink the maps 4x: at 32 x 40 a pixel's reach covers half the 8 x 10 maps
CROP_SIZES = {"resnet_like": (96, 120)}


@pytest.mark.parametrize("name", ["plain", "strided_dilated", "depthwise", "same_pad", "residual", "in_place",
                                  "broadcast", "batchnorm", "dense_output", "resnet_like"])
def test_small_changes_recompute_the_maps_in_crops(name, monkeypatch):
    """A few changed pixels recompute no convolution or element-wise map whole (else the engine would be a slow
    full pass)."""
    model = _model(name)
    h, w = CROP_SIZES.get(name, (H, W))
    x = torch.randn(3, 3, h, w, generator=torch.Generator().manual_seed(1))
    run = incremental_rows(model, x)
    whole = []
    real = IncrementalRows._whole

    def counted(self, n):
        whole.append(n.target)
        return real(self, n)
    with torch.no_grad():
        run.start(x)
        monkeypatch.setattr(IncrementalRows, "_whole", counted)
        y = x.clone()
        y[0, :, 0, 0], y[1, :, h - 1, 5], y[2, :, 9, w - 1] = 0.0, 1.0, 2.0
        _assert_close(run.step(y), model(y), name)
    assert set(whole) <= AFTER_THE_MAPS, f"{name}: ran whole for 3 changed pixels: {set(whole) - AFTER_THE_MAPS}"


@pytest.mark.parametrize("name", ["plain", "strided_dilated", "same_pad", "residual", "in_place", "squeeze_excite",
                                  "resnet_like"])
def test_kept_maps_do_not_drift(name):
    """After many steps every kept feature map equals a whole pass's on the same rows."""
    model, x = _model(name), _images()
    run = incremental_rows(model, x)
    with torch.no_grad():
        run.start(x)
        rows = _sequence(x) + _sequence(x, seed=3)
        for y in rows:
            run.step(y)
        fresh = incremental_rows(model, x)
        fresh.start(rows[-1])
    kept = [n for n, v in fresh.state.items() if isinstance(v, torch.Tensor) and v.dim() == 4 and n is not run.input]
    assert len(kept) >= 3 and set(kept) <= set(run.state)
    for n in kept:
        _assert_close(run.state[n], fresh.state[n], f"{name}: kept map {n.name}")
    _assert_close(run.state[run.result], model(rows[-1]).detach(), f"{name}: outputs")


def test_outputs_returned_earlier_are_not_changed_by_later_steps():
    model, x = _model("dense_output"), _images()
    run = incremental_rows(model, x)
    with torch.no_grad():
        first = run.start(x)
        kept = first.clone()
        y = x.clone()
        y[:, :, 3:5, 3:5] = 0.0
        second = run.step(y)
        kept_second = second.clone()
        first.fill_(7.0)  # the caller may change what it got: the next step must not see it
        z = y.clone()
        z[:, :, 20, 20] = 1.0
        third = run.step(z)
        _assert_close(third, model(z), "after the caller changed an earlier output")
    assert torch.equal(second, kept_second), "a later step changed the outputs an earlier one returned"
    assert not torch.equal(kept, first)


# ------------------------------------------------------------------------------------------------ refusals

class Branching(Plain):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if x.sum() > 0:  # data-dependent: a trace would specialise to one branch
            return y
        return -y


class TupleOut(Plain):
    def forward(self, x: torch.Tensor):
        y = super().forward(x)
        return y, y.sum(1)


class DictOut(Plain):
    def forward(self, x: torch.Tensor):
        return {"logits": super().forward(x)}


class OneTuple(Plain):
    def forward(self, x: torch.Tensor):
        return (super().forward(x),)


class CountingCalls(Plain):
    """Changes its own buffer at every call: running the trace would change the user's model."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x)


@pytest.mark.parametrize("cls", [Branching, TupleOut, DictOut, OneTuple, CountingCalls])
def test_models_it_cannot_follow_get_none(cls):
    assert incremental_rows(_seeded(cls(), 0), _images()) is None


def test_hooked_models_and_disabled_get_none():
    model, x = _model("plain"), _images()
    assert incremental_rows(model, x) is not None
    handle = model.c2.register_forward_hook(lambda m, i, o: None)
    try:
        assert incremental_rows(model, x) is None
    finally:
        handle.remove()
    pre = nn.modules.module.register_module_forward_pre_hook(lambda m, i: None)  # a global hook sees every call
    try:
        assert incremental_rows(model, x) is None
    finally:
        pre.remove()
    with disabled():
        assert incremental_rows(model, x) is None
        with disabled():
            assert incremental_rows(model, x) is None
        assert incremental_rows(model, x) is None
    assert incremental_rows(model, x) is not None


def test_rows_of_another_shape_are_refused_clearly():
    model, x = _model("plain"), _images()
    run = incremental_rows(model, x)
    with pytest.raises(ValueError, match="start"):
        run.step(x)
    with pytest.raises(ValueError, match=r"shape \(2, 3, 32, 40\)"):
        run.start(x[:2])
    with torch.no_grad():
        run.start(x)
    with pytest.raises(ValueError, match=r"rows of shape \(3, 3, 32, 39\) do not continue"):
        run.step(x[..., :-1])
    with pytest.raises(ValueError, match=r"rows of shape \(2, 3, 32, 40\) do not continue"):
        run.step(x[:2])


def test_branching_model_metric_equals_the_whole_rows():
    model, x = _seeded(Branching(), 0), _images()
    maps = torch.rand(3, H, W, generator=torch.Generator().manual_seed(4))
    on = region_perturbation(model, x, maps, patch_size=8, regions_evaluation=6)
    with disabled():
        off = region_perturbation(model, x, maps, patch_size=8, regions_evaluation=6)
    torch.testing.assert_close(on, off, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------ metrics

def _grid_segments(n: int) -> torch.Tensor:
    """(n, H, W) labels: 8x8 squares (20 segments), numbered differently per image."""
    base = (torch.arange(H)[:, None] // 8) * (W // 8) + torch.arange(W)[None] // 8
    return torch.stack([(base * (2 * i + 1)) % 20 for i in range(n)])


METRICS = {
    "region_perturbation": lambda m, x, a: region_perturbation(m, x, a, patch_size=4, regions_evaluation=12),
    "selectivity": lambda m, x, a: selectivity(m, x, a, patch_size=8),
    "pixel_flipping": lambda m, x, a: pixel_flipping(m, x, a, features_in_step=64),
    "irof": lambda m, x, a: irof(m, x, a, segments=_grid_segments(x.shape[0])),
    "monotonicity": lambda m, x, a: monotonicity(m, x, a, features_in_step=64, return_curve=True),
    "faithfulness_estimate": lambda m, x, a: faithfulness_estimate(m, x, a, features_in_step=64),
}


@pytest.mark.parametrize("metric", list(METRICS))
def test_metrics_equal_with_and_without_incremental_rows(metric, monkeypatch):
    model, x = _model("same_pad"), _images()
    maps = torch.rand(3, H, W, generator=torch.Generator().manual_seed(5))
    steps = []
    real = IncrementalRows.step

    def counted(self, rows):
        steps.append(rows.shape[0])
        return real(self, rows)
    monkeypatch.setattr(IncrementalRows, "step", counted)
    on = METRICS[metric](model, x, maps)
    assert steps, f"{metric}: the incremental rows were not used"
    n = len(steps)
    with disabled():
        off = METRICS[metric](model, x, maps)
    assert len(steps) == n
    assert torch.isfinite(off).all()
    torch.testing.assert_close(on, off, rtol=1e-5, atol=1e-6)


class TrainModeNet(nn.Module):
    """BatchNorm on the inputs (nothing to fold it into) and dropout: both act differently in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.c1, self.c2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c2(F.relu(self.c1(self.bn(x)))))
        return self.fc(self.drop(x.mean((2, 3))))


@pytest.mark.parametrize("name", ["train_mode", "batchnorm", "in_place"])
def test_metrics_leave_the_model_unchanged(name, snapshot, monkeypatch):
    model = _seeded(TrainModeNet(), 0) if name == "train_mode" else _model(name)
    model.train()  # a model left in training mode is evaluated in eval mode, and left in training mode
    for p in model.parameters():
        p.requires_grad_(True)
    x = _images()
    maps = torch.rand(3, H, W, generator=torch.Generator().manual_seed(6))
    snap = snapshot(model)
    steps = []
    real = IncrementalRows.step
    monkeypatch.setattr(IncrementalRows, "step", lambda self, rows: steps.append(1) or real(self, rows))
    on = region_perturbation(model, x, maps, patch_size=4, regions_evaluation=8)
    snap.assert_unchanged()
    assert steps, "the incremental rows were not used"
    with disabled():
        off = region_perturbation(model, x, maps, patch_size=4, regions_evaluation=8)
    snap.assert_unchanged()
    torch.testing.assert_close(on, off, rtol=1e-5, atol=1e-6)
