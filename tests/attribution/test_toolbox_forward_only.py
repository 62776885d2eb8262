"""The copy the no-gradient rows run on (``forward_only_model``): the model's function, its activations in place
only where nothing else reads their inputs, 1x1 convolutions through oneDNN on one thread, the user's model and
rows untouched, and the feature methods' numbers the same as on the model itself."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import profile

from interpretorch.attribution.folded import folded_model, forward_only_model
from interpretorch.attribution.shapley import feature_ablation, shapley_sampling
from interpretorch.attribution.surrogate import kernel_shap, lime


class PointwiseNet(nn.Module):
    """1x1 convolutions with BatchNorm and ReLU6 that are not in place, as in MobileNet / EfficientNet blocks."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.act0 = nn.ReLU6()
        self.expand = nn.Conv2d(8, 16, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = nn.ReLU6()
        self.project = nn.Conv2d(16, 8, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)
        g = torch.Generator().manual_seed(0)
        for bn in (self.bn0, self.bn1, self.bn2):
            with torch.no_grad():
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)

    def forward(self, x):
        h = self.act0(self.bn0(self.stem(x)))
        h = h + self.bn2(self.project(self.act1(self.bn1(self.expand(h)))))
        return self.fc(h.mean((2, 3)))


class ReadsAgain(nn.Module):
    """The first ReLU's input is read again after it (the sum): it must not be overwritten. The second ReLU's
    input is the model's input: the caller's rows must not be overwritten either."""

    def __init__(self):
        super().__init__()
        self.first = nn.ReLU()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.after = nn.ReLU()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        a = self.conv(self.first(x))
        b = self.relu(a)
        return self.fc(self.after(a + b).mean((2, 3)))


@pytest.fixture
def net():
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    return PointwiseNet().eval(), x


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_same_function_weights_shared_model_unchanged(net, snapshot, one_thread):
    model, x = net
    snap = snapshot(model)
    work = forward_only_model(model, x)
    snap.assert_unchanged()
    assert work is not model and work is not folded_model(model, x)
    assert work.act0.inplace and work.act1.inplace  # their inputs are convolution outputs nothing else reads
    assert not model.act0.inplace and not model.act1.inplace
    assert work.fc.weight is folded_model(model, x).fc.weight  # the weights are shared, not copied again
    rows = x.contiguous(memory_format=torch.channels_last)
    kept = rows.clone()
    with torch.no_grad():
        torch.testing.assert_close(work(rows), model(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(rows, kept)
    assert forward_only_model(model, x) is work  # kept for the next call


def test_no_activation_overwrites_what_is_read_again():
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    model = ReadsAgain().eval()
    work = forward_only_model(model, x)
    assert work is not model
    assert not work.first.inplace  # its input is the caller's rows
    assert not work.relu.inplace  # its input is read again by the sum
    assert work.after.inplace  # the sum is read by nothing else
    kept = x.clone()
    with torch.no_grad():
        torch.testing.assert_close(work(x), model(x), rtol=1e-6, atol=1e-6)
    assert torch.equal(x, kept)


def test_a_hooked_model_is_evaluated_as_it_is(net):
    model, x = net
    handle = model.act1.register_forward_hook(lambda *a: None)
    try:
        assert forward_only_model(model, x) is model
    finally:
        handle.remove()


def test_pointwise_convolutions_take_onednn_on_one_thread(net, one_thread):
    model, x = net
    work = forward_only_model(model, x)
    rows = x.contiguous(memory_format=torch.channels_last)

    def kernels(m):
        with torch.no_grad(), profile() as prof:
            out = m(rows)
        return {e.key for e in prof.key_averages()}, out
    plain, ref = kernels(folded_model(model, x))
    routed, out = kernels(work)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    if not torch.backends.mkldnn.is_available():  # a build without oneDNN: the copy keeps PyTorch's own kernels
        assert "aten::mkldnn_convolution" not in routed
        return
    assert "aten::_slow_conv2d_forward" in plain  # PyTorch's own choice for 1x1 convolutions on one thread
    assert "aten::_slow_conv2d_forward" not in routed and "aten::mkldnn_convolution" in routed


@pytest.mark.numerics
@pytest.mark.parametrize("method,opts", [(feature_ablation, {}), (shapley_sampling, {"n_samples": 2}),
                                         (lime, {"n_samples": 20}), (kernel_shap, {"n_samples": 20})])
def test_feature_methods_equal_on_the_model_itself(net, one_thread, method, opts):
    model, x = net
    ours = method(model, x, "top1", features="grid", cell=4, batch_size=4, **opts)
    handle = model.act1.register_forward_hook(lambda *a: None)  # a hook: the model itself is evaluated
    try:
        plain = method(model, x, "top1", features="grid", cell=4, batch_size=4, **opts)
    finally:
        handle.remove()
    values = plain.extras["feature_values"]
    tol = 1e-4 * float(values.abs().max())
    torch.testing.assert_close(ours.extras["feature_values"], values, rtol=0, atol=tol)
