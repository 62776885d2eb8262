"""Cascading randomization reusing the unchanged bottom of the network: the same similarities as recomputing
everything, the bottom skipped only where that is right (a layer method above the cut, the cached inputs)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from interpretorch.attribution.relu_rules import relu_rule
from interpretorch.models import TinyCNN
from interpretorch.sanity import model_randomization, randomization_blocks
from interpretorch.sanity.cascade import PrefixCache, cut_before
from interpretorch.sanity.randomize import plan_steps, randomized_models


@pytest.fixture(scope="module")
def setup():
    model = TinyCNN(num_classes=4).eval()
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return model, x


def test_cut_points_by_hand(setup):
    model, _ = setup
    assert cut_before(model, "features.8") == "features.7"
    assert cut_before(model, "features.0") is None  # nothing below the first block
    assert cut_before(model, "fc") == "flatten"
    nested = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), nn.Sequential(nn.Linear(2, 2)))
    assert cut_before(nested, "1.0") == "0"


@pytest.mark.numerics
@pytest.mark.parametrize("method", ["gradcam", "gradient", "scorecam", "ablationcam", "guided_gradcam"])
def test_reuse_gives_the_same_similarities(setup, method):
    model, x = setup
    kw = dict(mode="cascading", layer="features.10", keep_maps=2, metrics=("spearman_abs", "ssim"))
    fast = model_randomization(model, x, [method], reuse=True, **kw)
    slow = model_randomization(model, x, [method], reuse=False, **kw)
    for metric in ("spearman_abs", "ssim"):
        assert torch.allclose(fast.similarity[method][metric], slow.similarity[method][metric], atol=1e-5,
                              equal_nan=True)
    for a, b in zip(fast.step_maps[method], slow.step_maps[method]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    counts = fast.config["reuse"]
    if method == "gradcam":
        # steps 2 and 3 (cut at features.7 / features.3) resume; step 1 (fc: the layer lies below its cut) runs
        # in full; step 4 (the first block: no cut) is not wrapped at all
        assert counts == {"full": 1, "resumed": 2}
    elif method == "gradient":
        # the bottom's forward is reused and its backward run on the kept graph at every wrapped step
        assert counts == {"full": 0, "resumed": 3}
    elif method == "guided_gradcam":
        assert counts["resumed"] == 0  # the guided ReLU rule hooks modules below every cut


def test_input_gradient_through_the_kept_bottom_graph(setup):
    # d logit / d x through the resumed copy (the trained bottom's kept graph, the random top) equals the full
    # copy's, for a run of the cached rows, twice (the graph is kept); a second-order gradient refuses.
    model, x = setup
    blocks = randomization_blocks(model)
    plan = plan_steps(blocks)
    cache = PrefixCache(model, x, blocks, plan)
    models = randomized_models(model, "cascading", blocks)
    for _ in range(3):
        _, work = next(models)  # fc, features.8 and features.4 random: cut at features.3
    wrapped = cache.wrap(work, plan[2][1])

    def grad_of(m: nn.Module, create_graph: bool = False) -> torch.Tensor:
        rows = x[1:4].clone().requires_grad_(True)
        out = m(rows.clone())[:, 2].sum()
        return torch.autograd.grad(out, rows, create_graph=create_graph)[0]

    expected = grad_of(work)
    assert expected.abs().sum() > 0
    for _ in range(2):
        assert torch.allclose(grad_of(wrapped), expected, atol=1e-6, rtol=1e-5)
    assert cache.counts == {"full": 0, "resumed": 2}
    with pytest.raises(RuntimeError, match="reuse=False"):
        g = grad_of(wrapped, create_graph=True)
        torch.autograd.grad(g.sum(), work.fc.weight)


def test_wrapped_copy_falls_back_on_other_inputs_and_hooks(setup):
    model, x = setup
    blocks = randomization_blocks(model)
    plan = plan_steps(blocks)
    cache = PrefixCache(model, x, blocks, plan)
    _, work = next(randomized_models(model, "cascading", blocks))  # fc random: everything below is the trained one
    step = plan[2]  # features.4 and above random: cut at features.3
    wrapped = cache.wrap(work, step[1])
    with torch.no_grad():
        full = work(x)
        assert torch.allclose(wrapped(x[1:4]), full[1:4], atol=1e-6)
        assert cache.counts == {"full": 0, "resumed": 1}
        wrapped(x[1:4] + 0.1)  # not the cached rows
        assert cache.counts["full"] == 1
        h = work.features[1].register_forward_hook(lambda *a: None)  # a hook below the cut
        try:
            wrapped(x)
        finally:
            h.remove()
        assert cache.counts["full"] == 2
        with relu_rule(work, "guided"):  # a torch function mode: the bottom's ops would change
            wrapped(x)
        assert cache.counts["full"] == 3
    assert dict(wrapped.named_parameters()).keys() == dict(work.named_parameters()).keys()
