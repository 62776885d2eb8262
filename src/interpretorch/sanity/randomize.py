"""Model-parameter randomization of Adebayo et al. 2018, on copies: the caller's model is never touched.

A model is cut into *blocks* (lists of modules that are randomized together), ordered from the input to the
logits. The cascading test randomizes the blocks top-down, one more at each step (step k = the top k+1 blocks
random); the independent test randomizes one block at a time, the others keeping their trained weights.

Initialisation (``init``):

- ``"reset"``: each module's own ``reset_parameters()`` (PyTorch's default initialiser for that layer), the
  analogue of the paper's code, which ran each TensorFlow variable's own initialiser
  (``tf.initialize_variables`` on the block's trainable variables).
- ``"normal"``: weights and biases drawn from a normal distribution with standard deviation ``std``, truncated at
  two standard deviations; normalisation layers (batch / layer / group / instance norm) get their own
  ``reset_parameters`` (scale 1, shift 0), since a scale drawn around 0 would silence the network rather than
  randomize it.

Normalisation layers' running statistics are *kept* by default (``reset_running_stats=False``), as in the
paper's code: it re-initialised the trainable variables only, and the moving mean / variance of TensorFlow's
batch norm are not trainable. ``reset_running_stats=True`` sets them to mean 0, variance 1.

Seeding (``seeding``): ``"per_block"`` (default) draws block ``i`` (its index from the input side) from the stream
``seed_for(seed, i)``, so a block gets the same random weights in every step, in both modes, whatever the other
blocks; ``"shared"`` re-seeds the global generator with ``seed`` before each block (Quantus's MPRT convention, for
side-by-side comparisons). The global RNG is left as it was either way.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from interpretorch.core import seed_for
from interpretorch.models.layers import get_layer

MODES = ("cascading", "independent")
INITS = ("reset", "normal")
GRANULARITIES = ("stages", "modules")
SEEDINGS = ("per_block", "shared")
ORDERS = ("top_down", "bottom_up")
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


@dataclass(frozen=True)
class Block:
    """Modules randomized together, named for display."""

    name: str
    modules: tuple[str, ...]


def _has_params(m: nn.Module, recurse: bool = True) -> bool:
    return any(True for _ in m.parameters(recurse=recurse))


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, NORM_TYPES)


def _group_norms(named: list[tuple[str, nn.Module]]) -> list[Block]:
    """One block per parameterised module, a normalisation layer joining the block before it."""
    blocks: list[list[str]] = []
    for n, m in named:
        if _is_norm(m) and blocks and not _is_norm(dict(named)[blocks[-1][-1]]):
            blocks[-1].append(n)
        else:
            blocks.append([n])
    return [Block("+".join(b), tuple(b)) for b in blocks]


def _stage_blocks(model: nn.Module) -> list[Block]:
    """The parameterised ``stages()``; a ``nn.Sequential`` stage is opened into its children."""
    prefix = {id(m): n for n, m in model.named_modules()}
    named: list[tuple[str, nn.Module]] = []
    for _, stage in model.stages():
        children = list(stage.named_children()) if isinstance(stage, nn.Sequential) else []
        if children:
            named.extend((prefix[id(c)], c) for _, c in children if _has_params(c))
        elif _has_params(stage):
            named.append((prefix[id(stage)], stage))
    return _group_norms(named)


def randomization_blocks(model: nn.Module, blocks: Sequence[str] | None = None,
                         granularity: str = "stages") -> list[Block]:
    """The blocks to randomize, ordered from the input to the logits.

    ``blocks`` names modules (dotted names; each is one block, ordered as the model defines them). Otherwise
    ``granularity="stages"`` uses the model's ``stages()`` when it has them (a ``nn.Sequential`` stage opened into
    its children; a normalisation layer joins the block before it), else falls back to ``"modules"``: every module
    that holds parameters itself, one block each.
    """
    if blocks is not None:
        names = [b.strip() for b in ([blocks] if isinstance(blocks, str) else blocks) if b.strip()]
        if not names:
            raise ValueError("blocks is empty; name at least one module, or pass blocks=None for the default")
        if len(set(names)) != len(names):
            raise ValueError(f"blocks names a module twice: {names}")
        order = {n: i for i, (n, _) in enumerate(model.named_modules())}
        for n in names:
            if not _has_params(get_layer(model, n)):
                raise ValueError(f"block {n!r} has no parameters to randomize")
        for a in names:
            for b in names:
                if a != b and b.startswith(a + "."):
                    raise ValueError(f"block {b!r} lies inside block {a!r}; name blocks that do not overlap")
        return [Block(n, (n,)) for n in sorted(names, key=order.__getitem__)]
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; choose one of {GRANULARITIES}")
    if granularity == "stages" and callable(getattr(model, "stages", None)):
        found = _stage_blocks(model)
    else:
        found = [Block(n, (n,)) for n, m in model.named_modules() if n and _has_params(m, recurse=False)]
    if not found:
        raise ValueError("the model has no parameters to randomize")
    return found


def plan_steps(blocks: Sequence[Block], mode: str = "cascading", order: str = "top_down"
               ) -> list[tuple[str, list[int]]]:
    """(step name, indices of the blocks random at that step) for each step of ``mode``.

    Cascading: the top block, then the top two, ...; independent: each block alone, from the top. ``order=
    "bottom_up"`` starts from the input side instead (the first block, then the first two, ...: Quantus's
    default order for smooth and efficient MPRT).
    """
    if mode not in MODES:
        raise ValueError(f"unknown randomization mode {mode!r}; choose one of {MODES}")
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; choose one of {ORDERS}")
    seq = list(range(len(blocks)))
    seq = seq[::-1] if order == "top_down" else seq
    if mode == "cascading":
        return [(blocks[i].name, seq[:k + 1]) for k, i in enumerate(seq)]
    return [(blocks[i].name, [i]) for i in seq]


def _modules(model: nn.Module, block: Block) -> list[nn.Module]:
    return [get_layer(model, n) for n in block.modules]


@torch.no_grad()
def randomize_block(model: nn.Module, block: Block, *, init: str = "reset", std: float = 0.01,
                    reset_running_stats: bool = False, seed: int = 0) -> None:
    """Re-initialise the parameters of ``block`` in ``model`` IN PLACE (only ever called on a copy)."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
    if init == "normal" and not std > 0:
        raise ValueError(f"std must be positive, got {std}")
    device = next((p.device for m in _modules(model, block) for p in m.parameters()), torch.device("cpu"))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for top in _modules(model, block):
            for name, m in top.named_modules():
                if not _has_params(m, recurse=False):
                    continue
                kept = {k: b.clone() for k, b in m.named_buffers(recurse=False)}
                if init == "reset" or _is_norm(m):
                    reset = getattr(m, "reset_parameters", None)
                    if not callable(reset):
                        where = ".".join(x for x in (block.name, name) if x)
                        raise ValueError(f"module {where!r} ({type(m).__name__}) has no reset_parameters(); "
                                         "use init='normal'")
                    reset()
                else:
                    for p in m.parameters(recurse=False):
                        nn.init.trunc_normal_(p, 0.0, std, -2 * std, 2 * std)
                if _is_norm(m) and reset_running_stats and hasattr(m, "reset_running_stats"):
                    m.reset_running_stats()
                else:  # reset_parameters() of batch norm also resets the statistics: put them back
                    for k, b in kept.items():
                        getattr(m, k).copy_(b)


def _state(model: nn.Module, block: Block) -> dict[str, dict[str, torch.Tensor]]:
    return {n: {k: v.clone() for k, v in get_layer(model, n).state_dict().items()} for n in block.modules}


@torch.no_grad()
def _restore(model: nn.Module, block: Block, saved: dict[str, dict[str, torch.Tensor]]) -> None:
    for n in block.modules:
        sd = get_layer(model, n).state_dict()
        for k, v in saved[n].items():
            sd[k].copy_(v)


def private_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with no hooks' side effects on the original and no ``.grad``."""
    clone = copy.deepcopy(model)
    for p in clone.parameters():
        p.grad = None
    return clone


def randomized_models(model: nn.Module, mode: str = "cascading", blocks: Sequence[Block] | None = None, *,
                      init: str = "reset", std: float = 0.01, reset_running_stats: bool = False,
                      seed: int = 0, seeding: str = "per_block", order: str = "top_down"
                      ) -> Iterator[tuple[str, nn.Module]]:
    """Yield (step name, randomized copy) for each step of ``mode`` (and ``order``, see ``plan_steps``); one private
    copy is updated step by step.

    The yielded model is only valid until the next step (cascading adds a block, independent restores the
    previous one); the caller's ``model`` is never modified.
    """
    if seeding not in SEEDINGS:
        raise ValueError(f"unknown seeding {seeding!r}; choose one of {SEEDINGS}")
    blocks = list(blocks) if blocks is not None else randomization_blocks(model)
    steps = plan_steps(blocks, mode, order)
    kw = dict(init=init, std=std, reset_running_stats=reset_running_stats)

    def block_seed(i: int) -> int:
        return seed_for(seed, i) if seeding == "per_block" else int(seed)

    work = private_copy(model)
    if mode == "cascading":
        for name, idx in steps:
            randomize_block(work, blocks[idx[-1]], seed=block_seed(idx[-1]), **kw)
            yield name, work
    else:
        for name, (i,) in steps:
            saved = _state(work, blocks[i])
            randomize_block(work, blocks[i], seed=block_seed(i), **kw)
            try:
                yield name, work
            finally:
                _restore(work, blocks[i], saved)
