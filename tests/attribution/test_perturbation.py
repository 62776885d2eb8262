"""Occlusion and RISE: agreement with Captum and with the papers' formulas, chunking, the model-state contract."""
import pytest
import torch
from captum.attr import Occlusion
from torch import nn

from interpretorch.attribution import RiseMasks, explain, occlusion, rise
from interpretorch.models import TinyCNN


@pytest.fixture
def tiny64():
    """TinyCNN in float64 (in-place ReLUs, non-trivial BatchNorm, 10 classes) and a batch of 3 images."""
    g = torch.Generator().manual_seed(0)
    return TinyCNN().double().eval(), torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=g)


@pytest.mark.parametrize("window,stride", [(4, 2), ((5, 3), (3, 2)), (16, 16), (3, 1)])
def test_occlusion_matches_captum(tiny64, window, stride):
    model, x = tiny64
    kh, kw = (window, window) if isinstance(window, int) else window
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ours = occlusion(model, x, [0, 4, 9], window=window, stride=stride, baseline=0.3, batch_size=50)
    ref = Occlusion(model).attribute(x, sliding_window_shapes=(3, kh, kw), strides=(3, sh, sw), baselines=0.3,
                                     target=[0, 4, 9], perturbations_per_eval=20)
    assert ours.maps.shape == (3, 16, 16)
    # Captum builds its window in float32, so its result is float32 even for float64 inputs
    torch.testing.assert_close(ours.maps, ref[:, 0].double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ref[:, 0], ref[:, 2])


def test_occlusion_options(tiny64):
    model, x = tiny64
    a = occlusion(model, x, window=4, stride=2, batch_size=7)
    torch.testing.assert_close(occlusion(model, x, window=4, stride=2, batch_size=1000).maps, a.maps)
    torch.testing.assert_close(occlusion(model, x[2:], window=4, stride=2).maps, a.maps[2:])
    probs = occlusion(model, x, window=4, stride=2, score="softmax")
    torch.testing.assert_close(probs.scores, model(x).softmax(1).amax(1))
    img = torch.randn(3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(occlusion(model, x, window=4, stride=2, baseline=img).maps,
                               occlusion(model, x, window=4, stride=2, baseline=img[None].expand(3, -1, -1, -1)).maps)
    with pytest.raises(ValueError, match="larger than the images"):
        occlusion(model, x, window=17)
    with pytest.raises(ValueError, match="never be occluded"):
        occlusion(model, x, window=4, stride=5)


def test_occlusion_of_a_linear_model_is_the_mean_window_contribution():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(1 * 6 * 6, 2)).double()
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    contrib = (model[1].weight[1].detach().reshape(6, 6) * x[0, 0])
    # 2x2 windows with stride 2 tile the image: each pixel gets its own window's summed contribution
    e = occlusion(model, x, 1, window=2, stride=2)
    expected = contrib.reshape(3, 2, 3, 2).sum((1, 3)).repeat_interleave(2, 0).repeat_interleave(2, 1)
    torch.testing.assert_close(e.maps[0], expected)


def test_rise_masks_follow_the_paper():
    masks = RiseMasks(500, (20, 30), grid=5, p=0.3, seed=1)
    m = masks(torch.arange(500), dtype=torch.float64)
    assert m.shape == (500, 20, 30) and m.min() >= 0 and m.max() <= 1
    assert abs(m.mean() - 0.3) < 0.02  # E[M] = p
    again = RiseMasks(500, (20, 30), grid=5, p=0.3, seed=1)(torch.tensor([7, 3]), dtype=torch.float64)
    torch.testing.assert_close(again, m[[7, 3]])
    assert not torch.equal(RiseMasks(500, (20, 30), grid=5, p=0.3, seed=2)(torch.arange(5)), m[:5].float())
    # a kept cell is a smooth bump: masks are not binary, and neighbouring pixels differ little
    assert ((m > 0.05) & (m < 0.95)).any() and (m[:, 1:] - m[:, :-1]).abs().max() < 0.5


def test_rise_with_given_masks_is_the_closed_form(tiny64):
    """Given masks M_1..M_N: map = sum_i s_i M_i / (N E[M]), s_i the softmax score of x * M_i + b * (1 - M_i)
    and E[M] the masks' mean; the masks come back in extras and can be passed again (also as RiseMasks)."""
    model, x = tiny64
    g = torch.Generator().manual_seed(0)
    m = torch.rand(30, 16, 16, generator=g, dtype=torch.float64) * (torch.rand(30, 1, 1, generator=g) < 0.7)
    e = rise(model, x, [4, 1, 8], masks=m, baseline=0.25, batch_size=8)
    for i, t in enumerate([4, 1, 8]):
        masked = x[i] * m[:, None] + 0.25 * (1 - m[:, None])
        s = model(masked).softmax(1)[:, t].detach()
        torch.testing.assert_close(e.maps[i], (s[:, None, None] * m).sum(0) / (30 * m.mean()))
    assert e.extras["masks"] is not None and e.extras["n_masks"] == 30
    torch.testing.assert_close(e.extras["p"], float(m.mean()))
    torch.testing.assert_close(rise(model, x, [4, 1, 8], masks=e.extras["masks"][:, None], baseline=0.25).maps,
                               e.maps)
    gen = rise(model, x, [4, 1, 8], n_masks=20, grid=3, seed=2)
    again = rise(model, x[:1], [4], masks=gen.extras["masks"])
    torch.testing.assert_close(again.maps, gen.maps[:1])
    with pytest.raises(ValueError, match=r"masks must have shape \(N, 16, 16\)"):
        rise(model, x, masks=m[:, :8])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        rise(model, x, masks=m * 2)
    with pytest.raises(ValueError, match="RISE masks are for"):
        rise(model, x[..., :8], masks=gen.extras["masks"])


def test_rise_is_the_weighted_mean_of_masks(tiny64):
    model, x = tiny64
    e = rise(model, x, [1, 2, 3], n_masks=40, grid=4, p=0.4, baseline=0.1, batch_size=13, seed=5)
    m = RiseMasks(40, (16, 16), grid=4, p=0.4, seed=5)(torch.arange(40), dtype=torch.float64)
    for i, t in enumerate([1, 2, 3]):
        masked = x[i] * m[:, None] + 0.1 * (1 - m[:, None])
        s = model(masked).softmax(1)[:, t].detach()
        torch.testing.assert_close(e.maps[i], (s[:, None, None] * m).sum(0) / (40 * 0.4))
    torch.testing.assert_close(rise(model, x[1:2], 2, n_masks=40, grid=4, p=0.4, baseline=0.1, seed=5).maps,
                               e.maps[1:2])


def test_rise_and_occlusion_find_the_region_the_model_looks_at():
    class Region(nn.Module):
        def forward(self, x):
            s = x[:, :, 4:10, 10:16].mean((1, 2, 3))
            return torch.stack([s, -s], 1)

    x = torch.ones(2, 3, 20, 20)
    inside = torch.zeros(20, 20, dtype=torch.bool)
    inside[4:10, 10:16] = True
    r = rise(Region(), x, 0, n_masks=1000, grid=5, score="logit").maps
    top = r.flatten(1).topk(int(inside.sum()), dim=1).indices  # as many pixels as the region has
    assert (inside.flatten()[top].float().mean(1) > 0.75).all()
    assert inside.flatten()[r.flatten(1).argmax(1)].all()
    o = occlusion(Region(), x, 0, window=4, stride=2).maps
    assert (o[:, ~inside] <= o[:, inside].min(1).values[:, None]).all() and (o[:, inside] > 0).all()


@pytest.mark.numerics
@pytest.mark.parametrize("name,opts", [("occlusion", {"window": 6, "stride": 4}),
                                       ("occlusion", {"window": (5, 3), "stride": (2, 3), "score": "softmax"}),
                                       ("rise", {"n_masks": 25, "grid": 3}),
                                       ("rise", {"n_masks": 10, "score": "logit", "baseline": 0.2})])
def test_a_batch_of_4_equals_4_single_calls(name, opts):
    """Windows / masks of all images go through the model together, batch_size=7 rows at a time (chunks cut
    across images); each image still gets exactly its own result."""
    model = TinyCNN().double().eval()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    targets = [3, 0, 7, 3]
    batch = explain(model, x, name, targets, batch_size=7, options={name: opts})
    singles = [explain(model, x[i:i + 1], name, [targets[i]], batch_size=7, options={name: opts}) for i in range(4)]
    torch.testing.assert_close(batch.maps, torch.cat([e.maps for e in singles]))
    torch.testing.assert_close(batch.scores, torch.cat([e.scores for e in singles]))
    assert batch.extras["forward_passes"] == sum(e.extras["forward_passes"] for e in singles)


@pytest.mark.parametrize("name,opts", [("occlusion", {"window": 8, "stride": 8}), ("rise", {"n_masks": 8})])
def test_model_left_as_it_was(tiny64, name, opts, snapshot):
    model, x = tiny64
    ref = explain(model, x, name, options={name: opts}).maps
    model.train()
    snap = snapshot(model)
    e = explain(model, x, name, options={name: opts})
    snap.assert_unchanged()
    torch.testing.assert_close(e.maps, ref)
    with pytest.raises(KeyError, match="boom"):
        explain(model, x, name, target=lambda o: {}["boom"], options={name: opts})
    snap.assert_unchanged()


def test_callable_target_rows(tiny64):
    model, x = tiny64
    fn = lambda out: out[:, 1] * 2  # noqa: E731
    e = occlusion(model, x, fn, window=8, stride=8)
    ref = Occlusion(lambda z: fn(model(z))[:, None]).attribute(x, sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8),
                                                               target=0)
    torch.testing.assert_close(e.maps, ref[:, 0].double(), rtol=1e-5, atol=1e-6)
    assert e.target is None


def test_default_rows_per_pass_depend_on_the_device(tiny64):
    from interpretorch.core import rows_per_pass

    assert rows_per_pass(None, torch.device("cpu")) == 8 and rows_per_pass(None, torch.device("cuda")) == 64
    assert rows_per_pass(5, torch.device("cpu")) == 5
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            rows_per_pass(bad, torch.device("cpu"))
    model, x = tiny64
    sizes = []
    handle = model.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    try:
        rise(model, x[:1], n_masks=20)  # no batch_size: 8 masked rows per call on the CPU
    finally:
        handle.remove()
    assert sizes == [1, 8, 8, 4]  # the clean pass, then 20 masked rows


def test_occlusion_rows_run_incrementally_and_equal_whole_rows(monkeypatch):
    """Where IncrementalRows can run the model, every window is one engine step per image group (boustrophedon
    order), and the maps equal those of the rows run whole (to float32 rounding of the logits)."""
    from interpretorch.attribution import incremental
    from interpretorch.attribution.incremental import IncrementalRows

    g = torch.Generator().manual_seed(0)
    model, x = TinyCNN().eval(), torch.randn(3, 3, 48, 40, generator=g)
    with incremental.disabled():
        ref = occlusion(model, x, [1, 2, 3], window=(8, 6), stride=(4, 3), baseline=0.2, batch_size=2)
    steps = []
    real = IncrementalRows.step

    def counted(self, rows):
        steps.append(rows.shape[0])
        return real(self, rows)
    incremental_rows = incremental.incremental_rows(model, x)  # traced and checked before counting
    assert incremental_rows is not None
    monkeypatch.setattr(IncrementalRows, "step", counted)
    ours = occlusion(model, x, [1, 2, 3], window=(8, 6), stride=(4, 3), baseline=0.2, batch_size=2)
    windows = 11 * 13  # ceil((48 - 8) / 4) + 1 rows of ceil((40 - 6) / 3) + 1 windows
    assert sorted(set(steps)) == [1, 2] and steps.count(2) == steps.count(1) == windows  # groups of 2 and 1 images
    assert ours.extras["forward_passes"] == windows * 3
    scale = float(ref.maps.abs().max())
    assert float((ours.maps - ref.maps).abs().max()) <= 1e-4 * scale
    torch.testing.assert_close(ours.scores, ref.scores)


def test_snake_order_visits_every_window_once_each_next_to_the_last():
    from interpretorch.attribution.perturbation import _snake

    order = _snake(4, 5)
    assert sorted(order) == list(range(20))
    for a, b in zip(order, order[1:]):
        (ra, ca), (rb, cb) = divmod(a, 5), divmod(b, 5)
        assert abs(ra - rb) + abs(ca - cb) == 1


def test_occlusion_of_one_image_steps_through_chains_of_windows(monkeypatch):
    """One image and 8 rows per call: the windows are cut into 8 chains stepped side by side (8 rows per step,
    the last chain shorter), and the maps still equal the rows run whole."""
    from interpretorch.attribution import incremental
    from interpretorch.attribution.incremental import IncrementalRows

    g = torch.Generator().manual_seed(1)
    model, x = TinyCNN().eval(), torch.randn(1, 3, 40, 36, generator=g)
    with incremental.disabled():
        ref = occlusion(model, x, 5, window=6, stride=3, score="softmax", batch_size=8)
    steps = []
    real = IncrementalRows.step

    def counted(self, rows):
        steps.append(rows.shape[0])
        return real(self, rows)
    assert incremental.incremental_rows(model, x) is not None
    monkeypatch.setattr(IncrementalRows, "step", counted)
    ours = occlusion(model, x, 5, window=6, stride=3, score="softmax", batch_size=8)
    windows = 13 * 11  # ceil((40 - 6) / 3) + 1 rows of ceil((36 - 6) / 3) + 1 windows: 143 = 8 chains of 18, less 1
    assert steps == [8] * 18 and ours.extras["forward_passes"] == windows
    assert float((ours.maps - ref.maps).abs().max()) <= 1e-4 * float(ref.maps.abs().max())
