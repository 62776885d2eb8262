"""The rest of Quantus's families against Quantus 0.6 on the same model, maps and draws (sufficiency, consistency,
continuity, RIS / ROS / RRS, Focus, input invariance, smooth and efficient MPRT), and the Quantus 0.6 bugs each
documents, shown on a case where our value can be checked by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from interpretorch.metrics.axiomatic import input_invariance, shifted_model
from interpretorch.metrics.consistency import consistency, discretise_maps, sufficiency
from interpretorch.metrics.focus import focus, make_mosaics, quadrant_masks
from interpretorch.metrics.randomisation import efficient_mprt, histogram_entropy, smooth_explain, smooth_mprt
from interpretorch.metrics.robustness import continuity, relative_stability, translate


def _mlp(classes: int = 3, side: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(side * side, 16), nn.Tanh(), nn.Linear(16, classes)).eval()


def _gradient(model, inputs, target):
    """Gradient of the target logit (changes with the input through tanh), for both libraries."""
    xi = torch.as_tensor(inputs).float().clone().requires_grad_(True)
    out = model(xi).gather(1, torch.as_tensor(target).long().reshape(-1, 1)).sum()
    return torch.autograd.grad(out, xi)[0]


def _q_explain(model, inputs, targets, **kwargs):
    return _gradient(model, inputs, targets).numpy()


def _inputs(n: int = 4, side: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ sufficiency and consistency

@pytest.mark.numerics
def test_sufficiency_matches_quantus(quantus):
    model = _mlp()
    x = _inputs(8)
    y = model(x).argmax(1)
    g = torch.Generator().manual_seed(2)
    centres = torch.randn(3, 1, 8, 8, generator=g)  # three groups of similar maps
    a = centres[torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])] + 0.3 * torch.randn(8, 1, 8, 8, generator=g)
    for thr in (0.55, 0.6, 0.7):
        ours = sufficiency(a, model(x), threshold=thr)
        theirs = np.asarray(quantus.Sufficiency(threshold=thr, disable_warnings=True)(
            model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu"))
        defined = ~torch.isnan(ours)
        assert defined.any()
        assert np.allclose(ours[defined].numpy(), theirs[defined.numpy()], atol=1e-7)
        assert np.all(theirs[~defined.numpy()] == 0)  # Quantus: 0 where no other map is close, ours NaN


def test_sufficiency_by_hand_and_quantus_zero_variance_bug(quantus):
    # Four maps: 0 and 1 close, 2 and 3 close, the pairs far apart (a feature equal in all maps, the last one).
    a = torch.tensor([[0.0, 0.0, 1.0], [0.1, 0.0, 1.0], [5.0, 5.0, 1.0], [5.0, 5.1, 1.0]])
    pred = torch.tensor([0, 0, 1, 2])
    ours = sufficiency(a, pred, threshold=0.2)
    assert ours.tolist() == [1.0, 1.0, 0.0, 0.0]  # each image's one close neighbour: same class or not
    # Quantus's seuclidean divides the constant feature's 0 difference by its 0 variance: every distance is NaN,
    # so no map is close to any other and every sufficiency is 0.
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 3)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(3) * 0)
        model[1].bias.copy_(torch.tensor([0.0, 0.0, 0.0]))
    theirs = quantus.Sufficiency(threshold=0.2, disable_warnings=True)(
        model=model, x_batch=np.zeros((4, 1, 1, 3), np.float32), y_batch=np.zeros(4, int),
        a_batch=a.reshape(4, 1, 1, 3).numpy(), device="cpu", channel_first=True)
    assert np.all(np.asarray(theirs) == 0)


@pytest.mark.numerics
def test_consistency_matches_quantus_with_its_discretisation(quantus):
    model = _mlp()
    x = _inputs(8)
    y = model(x).argmax(1)
    a = _gradient(model, x, y)
    ours = consistency(a, model(x), discretise="first_n_sign", n=5, absolute=False)
    theirs = np.asarray(quantus.Consistency(abs=False, normalise=False, disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu"))
    defined = ~torch.isnan(ours)
    assert defined.sum() >= 2
    assert np.allclose(ours[defined].numpy(), theirs[defined.numpy()], atol=1e-7)
    assert np.all(theirs[~defined.numpy()] == 0)


def test_consistency_by_hand_and_quantus_first_values_bug(quantus):
    # Maps strongest in the top-left cell (images 0, 1) or the bottom-right cell (2, 3) of a 2 x 2 grid.
    a = torch.zeros(4, 4, 4)
    a[:2, :2, :2] = 1.0
    a[2:, 2:, 2:] = 1.0
    pred = torch.tensor([0, 0, 0, 1])
    labels = discretise_maps(a, n=1, cells=(2, 2))
    assert torch.equal(labels[0], labels[1]) and not torch.equal(labels[0], labels[2])
    assert consistency(a, pred, n=1, cells=(2, 2)).tolist() == [1.0, 1.0, 0.0, 0.0]
    # Quantus's default (abs=True, then the signs of the first five values) labels every nonzero map alike,
    # so its figure is the share of other images predicted alike, whatever the maps: with one predicted class
    # for all four (zero inputs), 1 everywhere.
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
    theirs = quantus.Consistency(disable_warnings=True)
    a_first = a.clone()
    a_first[:, 0, :] += 0.5  # nonzero first values everywhere
    theirs = np.asarray(theirs(model=model, x_batch=np.zeros((4, 1, 4, 4), np.float32),
                               y_batch=np.zeros(4, int), a_batch=a_first[:, None].numpy(), device="cpu"))
    with torch.no_grad():
        qpred = model(torch.zeros(4, 1, 4, 4)).argmax(1)
    assert len(set(qpred.tolist())) == 1
    assert np.allclose(theirs, 1.0)  # one predicted class for the zero inputs: 1 whatever the maps say


# ------------------------------------------------------------------ continuity

def test_translate_by_hand():
    x = torch.arange(4.0).reshape(1, 1, 1, 4)
    fill = torch.tensor([-1.0])
    assert translate(x, 1, fill).flatten().tolist() == [-1, 0, 1, 2]
    assert translate(x, -2, fill).flatten().tolist() == [2, 3, -1, -1]
    assert translate(x, 4, fill).flatten().tolist() == [-1, -1, -1, -1]


@pytest.mark.numerics
def test_continuity_matches_quantus(quantus):
    # Quantus normalises maps by the batch's largest value: one image per call makes it the image's own.
    model = _mlp(side=16)
    x = _inputs(3, side=16)
    y = model(x).argmax(1)
    a = _gradient(model, x, y)
    for i in range(3):
        ours = continuity(model, x[i:i + 1], a[i:i + 1], explain_fn=_gradient, nr_steps=5)
        theirs = quantus.Continuity(nr_steps=5, disable_warnings=True)(
            model=model, x_batch=x[i:i + 1].numpy(), y_batch=y[i:i + 1].numpy(), a_batch=a[i:i + 1].numpy(),
            device="cpu", explain_func=_q_explain)
        assert np.allclose(ours.numpy(), theirs, rtol=1e-5)
        assert ours.item() > 0


# ------------------------------------------------------------------ relative stability

def _np_uniform(lo: float, hi: float):
    def perturb(x, gen):
        n = np.random.uniform(low=lo, high=hi, size=(x.shape[0], x[0].numel()))
        return x + torch.from_numpy(n).reshape(x.shape).to(x.dtype)
    return perturb


@pytest.mark.numerics
@pytest.mark.parametrize("kind", ["input", "output", "representation"])
def test_relative_stability_matches_quantus(quantus, kind):
    model = _mlp()
    x = _inputs(4)
    y = model(x).argmax(1)
    a = _gradient(model, x, y)
    cls = {"input": quantus.RelativeInputStability, "output": quantus.RelativeOutputStability,
           "representation": quantus.RelativeRepresentationStability}[kind]
    extra = {"layer_names": ["1", "2"]} if kind == "representation" else {}
    np.random.seed(5)
    ours = relative_stability(model, x, a, explain_fn=_gradient, kind=kind, n_samples=6,
                              nan_when_prediction_changes=False, perturb=_np_uniform(0.02, 0.2),
                              layers=["1", "2"] if kind == "representation" else None, softmax=False)
    np.random.seed(5)
    theirs = cls(nr_samples=6, return_nan_when_prediction_changes=False, disable_warnings=True, **extra)(
        model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu",
        explain_func=_q_explain, softmax=False)
    assert np.allclose(ours.numpy(), theirs, rtol=1e-5)


class _LargestCall(nn.Module):
    """Records the most rows any one call held."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.largest = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.largest = max(self.largest, x.shape[0])
        return self.model(x)


@pytest.mark.parametrize("kind", ["input", "output", "representation"])
def test_relative_stability_runs_at_most_batch_size_rows_per_call(kind):
    # The clean representation too: RRS divides by its values near 0, whose float32 rounding depends on the
    # batch, so it must see the same batches as Quantus's (one per ``batch_size`` images), not all images at once.
    model = _LargestCall(_mlp())
    x = _inputs(7)
    y = model(x).argmax(1)
    a = _gradient(model, x, y)
    model.largest = 0
    relative_stability(model, x, a, explain_fn=_gradient, kind=kind, n_samples=3, batch_size=2,
                       layers=["model.1"] if kind == "representation" else None)
    assert model.largest == 2


@pytest.mark.numerics
@pytest.mark.parametrize("kind", ["input", "output"])
def test_relative_stability_reads_the_outputs_the_explanations_carry(kind):
    # An explanation that carries the model's outputs on its rows (Explanation.outputs) spares the forward pass
    # of the copies (ROS's h(x'), the prediction check): same values, n_samples x B fewer rows through the model.
    from interpretorch.explanation import Explanation
    from metric_models import Counting

    model = Counting(_mlp())
    x = _inputs(5)
    y = model(x).argmax(1)
    a = _gradient(model, x, y)

    def with_outputs(m, inputs, target):
        xi = inputs.clone().requires_grad_(True)
        out = m(xi)
        (g,) = torch.autograd.grad(out.gather(1, torch.as_tensor(target).reshape(-1, 1)).sum(), xi)
        return Explanation(maps=g, method="gradient", outputs=out.detach())

    runs = {}
    for name, fn in (("plain", _gradient), ("carried", with_outputs)):
        model.rows = 0
        runs[name] = (relative_stability(model, x, a, explain_fn=fn, kind=kind, n_samples=3, batch_size=4,
                                         clean=model(x).detach()), model.rows)
    assert torch.allclose(runs["plain"][0], runs["carried"][0], rtol=1e-6, equal_nan=True)
    assert runs["plain"][1] - runs["carried"][1] == 5 * 3


def test_relative_stability_ignores_changed_copies_where_quantus_gives_nan(quantus):
    # Noise large enough that some copies change class: Quantus's np.max over the copies is then NaN; ours is
    # the largest over the copies that kept the class, which equals Quantus's value on those copies only.
    model = _mlp()
    x = _inputs(4)
    y = model(x).argmax(1)
    a = _gradient(model, x, y)
    np.random.seed(7)
    draws = [np.random.uniform(0.5, 3.0, size=(4, 64)) for _ in range(6)]
    it = iter(draws)
    perturb = lambda xx, g: xx + torch.from_numpy(next(it)).reshape(xx.shape).to(xx.dtype)  # noqa: E731
    ours = relative_stability(model, x, a, explain_fn=_gradient, n_samples=6, perturb=perturb)
    kept = []
    per_copy = []
    for d in draws:
        it2 = iter([d])
        v = relative_stability(model, x, a, explain_fn=_gradient, n_samples=1,
                               perturb=lambda xx, g: xx + torch.from_numpy(next(it2)).reshape(xx.shape).to(xx.dtype))
        per_copy.append(v)
        with torch.no_grad():
            kept.append(model(x + torch.from_numpy(d).reshape(x.shape).float()).argmax(1) == y)
    kept = torch.stack(kept, 1)
    assert (~kept).any() and kept.any()
    vals = torch.stack(per_copy, 1)
    expected = torch.where(kept, vals, torch.tensor(-1.0, dtype=vals.dtype)).max(1).values
    expected = torch.where(kept.any(1), expected, torch.tensor(float("nan"), dtype=vals.dtype))
    assert torch.allclose(ours, expected, equal_nan=True)
    np.random.seed(7)
    theirs = quantus.RelativeInputStability(nr_samples=6, perturb_func_kwargs={"lower_bound": 0.5,
                                                                                "upper_bound": 3.0},
                                            disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu",
        explain_func=_q_explain)
    changed_any = (~kept).any(1).numpy()
    assert np.all(np.isnan(np.asarray(theirs)[changed_any]))


# ------------------------------------------------------------------ Focus

@pytest.mark.numerics
def test_focus_matches_quantus_and_mosaics_are_built_right(quantus):
    from interpretorch.data.synthetic import make_localisation_set

    s = make_localisation_set(12, size=16, seed=0)
    mos = make_mosaics(s.images, s.labels, 5, seed=3)
    assert mos.images.shape == (5, 3, 32, 32) and mos.quadrants.sum(1).tolist() == [2] * 5
    for k in range(5):
        src = mos.sources[k]
        assert (s.labels[src][mos.quadrants[k]] == mos.target[k]).all()
        assert (s.labels[src][~mos.quadrants[k]] != mos.target[k]).all()
        assert torch.equal(mos.images[k, :, 16:, :16], s.images[src[2]])  # bottom-left tile
    assert torch.equal(mos.masks, quadrant_masks(mos.quadrants, 32, 32))
    a = torch.randn(5, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    ours = focus(a, quadrants=mos.quadrants)
    assert torch.allclose(ours, focus(a, masks=mos.masks))
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4)).eval()
    theirs = quantus.Focus(disable_warnings=True)(
        model=model, x_batch=mos.images.numpy(), y_batch=mos.target.numpy(), a_batch=a.numpy(), device="cpu",
        custom_batch=mos.quadrants.numpy().astype(int))
    assert np.allclose(ours.numpy(), theirs, rtol=1e-5)
    # By hand: all positive relevance on the target tiles gives 1, none gives 0.
    assert torch.allclose(focus(mos.masks.double() - 0.5, masks=mos.masks), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(focus(0.5 - mos.masks.double(), masks=mos.masks), torch.zeros(5, dtype=torch.float64))


# ------------------------------------------------------------------ input invariance

class _ConvNet(nn.Module):
    def __init__(self, padding: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=padding)
        self.fc = nn.Linear(4 * (8 if padding else 6) ** 2, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _gxi(model, inputs, target):
    x = torch.as_tensor(inputs).float()
    return _gradient(model, x, target) * x


@pytest.mark.numerics
def test_input_invariance_matches_quantus_and_the_paper(quantus):
    model = _ConvNet(padding=0).eval()
    x = _inputs(3)
    y = model(x).argmax(1)
    # The shifted model on the shifted input computes the same outputs.
    assert torch.allclose(shifted_model(model, -1.0)(x - 1.0), model(x), atol=1e-5)
    for fn, expected in ((_gradient, 1.0), (_gxi, 0.0)):  # Kindermans et al.: gradient yes, gradient x input no
        a = fn(model, x, y)
        ours = input_invariance(model, x, a, explain_fn=fn)
        theirs = quantus.InputInvariance(disable_warnings=True)(
            model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu",
            explain_func=lambda model, inputs, targets, **kw: fn(model, inputs, targets).numpy())
        assert ours.tolist() == [expected] * 3
        assert np.array_equal(ours.numpy().astype(bool), np.asarray(theirs, dtype=bool))


def test_input_invariance_padding_quantus_bias_bug(quantus):
    # With zero padding, Quantus sets the bias from the smallest output of conv(shift), a border value: its
    # shifted model does not compute the same interior outputs; ours (the interior value) does.
    model = _ConvNet(padding=1).eval()
    x = _inputs(3)
    y = model(x).argmax(1)
    ours_model = shifted_model(model, -1.0)
    inner = lambda m, xx: m.conv(xx)[..., 1:-1, 1:-1]  # noqa: E731 - interior outputs
    assert torch.allclose(inner(ours_model, x - 1.0), inner(model, x), atol=1e-5)
    a = _gradient(model, x, y)
    theirs = quantus.InputInvariance(disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu",
        explain_func=_q_explain)
    from quantus.helpers.model.pytorch_model import PyTorchModel

    q_model = PyTorchModel(model, channel_first=True).add_mean_shift_to_first_layer(-1.0, (1, 1, 8, 8))
    assert not torch.allclose(inner(q_model, x - 1.0), inner(model, x), atol=1e-3)
    # No bias makes a padded first layer exact at the border, so both give the gradient 0 there.
    assert input_invariance(model, x, a, explain_fn=_gradient).tolist() == [0.0, 0.0, 0.0]
    assert not any(theirs)


# ------------------------------------------------------------------ smooth and efficient MPRT

def _np_normal(x, gen):
    return torch.from_numpy(np.random.randn(*x.shape))


@pytest.mark.numerics
def test_smooth_mprt_matches_quantus(quantus):
    # Quantus explains the noisy copies with quantus.explain(method="Gradient") (Captum's Saliency without abs),
    # not with explain_func: our explain_fn is that gradient. Our smoothed original is handed to Quantus as a_batch.
    model = _mlp()
    x = _inputs(3)
    y = model(x).argmax(1)
    np.random.seed(11)
    ours = smooth_mprt(model, x, None, y, explain_fn=_gradient, nr_samples=4, noise=_np_normal)
    np.random.seed(11)
    a0 = smooth_explain(model, x, y, _gradient, nr_samples=4, noise=_np_normal)
    np.random.seed(11)
    metric = quantus.SmoothMPRT(nr_samples=4, disable_warnings=True)
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a0.float().numpy(), device="cpu",
                    explain_func=quantus.explain, explain_func_kwargs={"method": "Gradient"})
    layers = [k for k in theirs if k != "original"]
    assert layers == ["1", "3"]  # bottom-up: the first Linear, then both
    assert np.allclose(ours.numpy(), np.array([theirs[k] for k in layers]).T, rtol=1e-4, atol=1e-6)
    # Quantus's average per sample includes the "original" entry (it skips a key "orig"): not the layers' mean.
    avg = np.mean([theirs["original"], *[theirs[k] for k in layers]], axis=0)
    assert not np.allclose(avg, ours.mean(1).numpy())


def test_smooth_mprt_ignores_explain_func_in_quantus(quantus):
    model = _mlp()
    x = _inputs(2)
    y = model(x).argmax(1)

    def refuse(**kw):
        raise AssertionError("called")

    metric = quantus.SmoothMPRT(nr_samples=2, disable_warnings=True)
    out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=np.random.rand(2, 1, 8, 8).astype(np.float32),
                 device="cpu", explain_func=refuse, explain_func_kwargs={"method": "Gradient"})
    assert "original" in out  # ran to the end without ever calling the explain_func it was given


@pytest.mark.numerics
def test_efficient_mprt_matches_quantus(quantus):
    model = _mlp()
    x = _inputs(3)
    y = model(x).argmax(1)
    a = _gradient(model, x, y).double()
    ours = efficient_mprt(model, x, a, y, explain_fn=lambda m, xx, t: _gradient(m, xx, t).double())
    theirs = quantus.EfficientMPRT(disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu",
        explain_func=lambda model, inputs, targets, **kw: _gradient(model, inputs, targets).double().numpy())
    assert np.allclose(ours.numpy(), theirs, rtol=1e-6)


def test_histogram_entropy_by_hand():
    # Two equal halves: ln 2; one value repeated: 0; np.histogram + scipy on random values.
    assert torch.allclose(histogram_entropy(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), 2),
                          torch.tensor([np.log(2.0)], dtype=torch.float64))
    assert histogram_entropy(torch.full((1, 5), 3.0)).item() == 0.0
    from scipy.stats import entropy

    v = torch.rand(2, 300, generator=torch.Generator().manual_seed(0)).double()
    ref = [entropy(np.histogram(r, bins=100)[0]) for r in v.numpy()]
    assert np.allclose(histogram_entropy(v).numpy(), ref, rtol=1e-12)


# ------------------------------------------------------------------ Sensitivity-N

@pytest.mark.numerics
def test_sensitivity_n_matches_quantus(quantus):
    from interpretorch.metrics.perturbation import sensitivity_n

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    x = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    a = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(2))  # untied: one order for both
    ours = sensitivity_n(model, x, a, y, features_in_step=4, n_max_percentage=0.8)
    theirs = np.asarray(quantus.SensitivityN(features_in_step=4, n_max_percentage=0.8, return_aggregate=False,
                                             disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu"), dtype=float)
    assert ours.shape == (7,) and theirs.shape == (7,)  # int(0.8 * 36 // 4) steps, one value each
    assert np.allclose(ours.numpy(), theirs, rtol=1e-5, atol=1e-7)


def test_quantus_sufficiency_depends_on_its_batching(quantus):
    # Quantus compares maps only within each batch of batch_size images: its value for the same 8 maps changes
    # with batch_size; ours compares all the images given, which is Quantus's with one batch.
    model = _mlp()
    x = _inputs(8)
    y = model(x).argmax(1)
    g = torch.Generator().manual_seed(2)
    centres = torch.randn(2, 1, 8, 8, generator=g)
    a = centres[torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])] + 0.3 * torch.randn(8, 1, 8, 8, generator=g)
    args = dict(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu")
    whole = np.asarray(quantus.Sufficiency(threshold=0.7, disable_warnings=True)(**args, batch_size=8))
    halves = np.asarray(quantus.Sufficiency(threshold=0.7, disable_warnings=True)(**args, batch_size=4))
    ours = sufficiency(a, model(x), threshold=0.7).numpy()
    assert not np.allclose(whole, halves)
    ok = ~np.isnan(ours)
    assert np.allclose(ours[ok], whole[ok])
