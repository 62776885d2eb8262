"""Randomization on copies: which blocks, in which order, how they are drawn, and the caller's model untouched."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from interpretorch.models import EfficientNetLite, TinyCNN
from interpretorch.sanity.randomize import (Block, plan_steps, randomization_blocks, randomize_block,
                                            randomized_models)


def _changed(a: nn.Module, b: nn.Module) -> set[str]:
    """Names of the state entries that differ between two models of one architecture."""
    sb = b.state_dict()
    return {k for k, v in a.state_dict().items() if not torch.equal(v, sb[k])}


def test_efficientnet_blocks_follow_its_stages():
    blocks = randomization_blocks(EfficientNetLite())
    names = [b.name for b in blocks]
    assert names[0] == "_conv_stem+_bn0" and names[-1] == "_fc" and names[-2] == "_conv_head+_bn1"
    assert names[1:17] == [f"_blocks.{i}" for i in range(16)]
    assert len(blocks) == 19


def test_tiny_blocks_modules_and_named():
    m = TinyCNN(num_classes=5)
    assert [b.modules for b in randomization_blocks(m)] == [
        ("features.0", "features.1"), ("features.4", "features.5"), ("features.8", "features.9"), ("fc",)]
    assert [b.name for b in randomization_blocks(m, granularity="modules")] == [
        "features.0", "features.1", "features.4", "features.5", "features.8", "features.9", "fc"]
    # Named blocks come back in the model's order whatever order they are given in.
    assert [b.name for b in randomization_blocks(m, ["fc", "features.4"])] == ["features.4", "fc"]
    with pytest.raises(KeyError, match="no layer"):
        randomization_blocks(m, ["features.44"])
    with pytest.raises(ValueError, match="no parameters"):
        randomization_blocks(m, ["pool"])
    with pytest.raises(ValueError, match="inside block"):
        randomization_blocks(m, ["features", "features.0"])
    with pytest.raises(ValueError, match="granularity"):
        randomization_blocks(m, granularity="layers")


def test_plans():
    blocks = [Block(n, (n,)) for n in "abcd"]
    assert plan_steps(blocks, "cascading") == [("d", [3]), ("c", [3, 2]), ("b", [3, 2, 1]), ("a", [3, 2, 1, 0])]
    assert plan_steps(blocks, "independent") == [("d", [3]), ("c", [2]), ("b", [1]), ("a", [0])]
    with pytest.raises(ValueError, match="unknown randomization mode"):
        plan_steps(blocks, "random")


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_steps_randomize_exactly_their_blocks_and_leave_the_caller_alone(mode, snapshot):
    model = TinyCNN(num_classes=5).eval()
    snap = snapshot(model)
    rng = torch.random.get_rng_state()
    blocks = randomization_blocks(model)
    seen = []
    for s, (name, work) in enumerate(randomized_models(model, mode, blocks, seed=3)):
        assert work is not model
        changed = {k.rsplit(".", 1)[0] for k in _changed(model, work)}
        ids = plan_steps(blocks, mode)[s][1]
        expected = {n for i in ids for n in blocks[i].modules}
        assert changed == expected, (name, changed)
        seen.append({k: v.clone() for k, v in work.state_dict().items()})
        snap.assert_unchanged()
    assert len(seen) == len(blocks)
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_seeded_and_the_same_block_draws_the_same_weights_in_both_modes():
    model = TinyCNN(num_classes=5).eval()
    casc = []
    for _, w in randomized_models(model, "cascading", seed=1):
        casc.append({k: v.clone() for k, v in w.state_dict().items()})
    again = [{k: v.clone() for k, v in w.state_dict().items()} for _, w in randomized_models(model, seed=1)]
    other = [{k: v.clone() for k, v in w.state_dict().items()} for _, w in randomized_models(model, seed=2)]
    indep = [{k: v.clone() for k, v in w.state_dict().items()} for _, w in randomized_models(model, "independent",
                                                                                             seed=1)]
    for a, b in zip(casc, again):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(casc[0]["fc.weight"], other[0]["fc.weight"])
    # Step 1 of both modes randomizes the top block alone; the last independent step draws the first block as the
    # last cascading step does.
    assert torch.equal(casc[0]["fc.weight"], indep[0]["fc.weight"])
    assert torch.equal(casc[-1]["features.0.weight"], indep[-1]["features.0.weight"])


def test_running_stats_kept_by_default_and_reset_on_request():
    model = TinyCNN(num_classes=5).eval()
    bn = Block("features.0+features.1", ("features.0", "features.1"))
    work = TinyCNN(num_classes=5).eval()
    work.load_state_dict(model.state_dict())
    randomize_block(work, bn, seed=5)
    assert torch.equal(work.features[1].running_mean, model.features[1].running_mean)
    assert torch.equal(work.features[1].running_var, model.features[1].running_var)
    assert not torch.equal(work.features[0].weight, model.features[0].weight)
    assert torch.equal(work.features[1].weight, torch.ones(8))  # BatchNorm's own reset: scale 1, shift 0
    randomize_block(work, bn, seed=5, reset_running_stats=True)
    assert torch.equal(work.features[1].running_mean, torch.zeros(8))
    assert torch.equal(work.features[1].running_var, torch.ones(8))


def test_truncated_normal_init():
    work = nn.Sequential(nn.Linear(200, 300))
    randomize_block(work, Block("0", ("0",)), init="normal", std=0.05, seed=0)
    w = work[0].weight
    assert w.abs().max() <= 0.1 + 1e-7
    assert 0.035 < w.std().item() < 0.05  # a normal truncated at 2 sigma has std 0.88 sigma
    with pytest.raises(ValueError, match="std must be positive"):
        randomize_block(work, Block("0", ("0",)), init="normal", std=0.0)
    with pytest.raises(ValueError, match="unknown init"):
        randomize_block(work, Block("0", ("0",)), init="xavier")


class _Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.s


def test_a_module_without_reset_parameters_is_named(snapshot):
    model = nn.Sequential(nn.Linear(4, 4), _Scale())
    snap = snapshot(model)
    with pytest.raises(ValueError, match="'1' \\(_Scale\\) has no reset_parameters"):
        for _ in randomized_models(model, "cascading", seed=0):
            pass
    snap.assert_unchanged()
    steps = list(n for n, _ in randomized_models(model, "cascading", init="normal"))
    assert steps == ["1", "0"]
