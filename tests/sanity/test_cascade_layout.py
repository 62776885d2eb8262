"""The kept bottom graph of cascading randomization runs the trained model (its BatchNorms as they are, not folded)
on channels-last rows: input gradients and similarities stay those of the full randomized copies, and the user's
model is left as it was."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from interpretorch.sanity import model_randomization, randomization_blocks
from interpretorch.sanity.cascade import PrefixCache
from interpretorch.sanity.randomize import plan_steps, randomized_models


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    def stage(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    net = nn.Sequential(stage(3, 6), stage(6, 8), stage(8, 8),
                        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)))
    with torch.no_grad():  # running statistics and affine parameters away from their defaults
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def _node_names(t: torch.Tensor) -> set[str]:
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        f = todo.pop()
        if f is None or f in seen:
            continue
        seen.add(f)
        names.add(type(f).__name__)
        todo.extend(nxt for nxt, _ in f.next_functions)
    return names


@pytest.mark.numerics
def test_kept_graph_is_channels_last_unfolded_and_gradients_match_the_full_copy():
    model = _bn_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    blocks = randomization_blocks(model, ["0", "1", "2", "3"])  # stages: conv + batch norm + ReLU, and the head
    plan = plan_steps(blocks)
    cache = PrefixCache(model, x, blocks, plan)
    models = randomized_models(model, "cascading", blocks)
    for _ in range(2):
        _, work = next(models)  # the head and the last stage random: cut at "1"
    wrapped = cache.wrap(work, plan[1][1])
    assert wrapped is not work

    def grad_of(m: nn.Module) -> torch.Tensor:
        rows = x.clone().requires_grad_(True)
        return torch.autograd.grad(m(rows.clone())[:, 1].sum(), rows)[0]

    expected = grad_of(work)
    got = grad_of(wrapped)
    assert cache.counts == {"full": 0, "resumed": 1}
    assert torch.allclose(got, expected, atol=1e-6, rtol=1e-4)
    _, h0 = cache.graph(slice(0, 3), "1")
    names = _node_names(h0)
    assert any("Convolution" in n for n in names)
    assert any("BatchNorm" in n for n in names)  # the model's own BatchNorms: a folded copy changes the gradients
    assert h0.is_contiguous(memory_format=torch.channels_last)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the user's model is not changed


@pytest.mark.numerics
@pytest.mark.parametrize("blocks", [["0", "1", "2", "3"], None])
def test_channels_last_reuse_gives_the_plain_similarities(blocks):
    # blocks=None: every conv, batch norm and the linear layer a block of its own, so a cut falls between a
    # convolution and its batch norm
    model = _bn_net()
    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    kw = dict(mode="cascading", metrics=("spearman_abs", "ssim"), keep_maps=2, seed=3, blocks=blocks)
    fast = model_randomization(model, x, ["gradient"], reuse=True, **kw)
    slow = model_randomization(model, x, ["gradient"], reuse=False, **kw)
    assert fast.config["reuse"]["resumed"] == len(fast.steps) - 1  # every step but the first block's
    for metric in ("spearman_abs", "ssim"):
        assert torch.allclose(fast.similarity["gradient"][metric], slow.similarity["gradient"][metric], atol=1e-5,
                              equal_nan=True)
    for a, b in zip(fast.step_maps["gradient"], slow.step_maps["gradient"]):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
