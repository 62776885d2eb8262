"""Reuse of the unchanged bottom of the network in cascading randomization.

In the top-down cascade, step k randomizes the top k+1 blocks; everything below the lowest randomized block keeps
the trained weights, so its forward activations on the inputs are the trained model's. ``PrefixCache`` computes
them once (one forward pass of the trained model, recording the output of every cut point the steps need) and
``PrefixCache.wrap`` hands the method a model that, when called on (a contiguous run of) those very inputs,
resumes from the cached activation and runs only the randomized top part.

A method that differentiates to the input (Gradient) still needs the bottom's backward at every step, since the
gradient arriving from the randomized top changes, but not its forward: for inputs that require gradients the
cache keeps the trained bottom's autograd graph (one forward with gradients per run of rows, the first time that run
is asked for) and the resumed forward hands the top the recorded activation through ``_BottomGrad``, whose backward
runs the kept graph with the new incoming gradient. Only first-order gradients: a second backward through it
(``create_graph``) raises.

The kept graph runs on channels-last rows where the model takes them (``attribution.layout``), so each step's
backward through the bottom runs in the layout PyTorch's CPU convolutions are fastest in, and the resumed top gets
channels-last activations too (EfficientNet-Lite0, 4 images, one thread, loaded machine: the resumed backward
summed over the 18 steps went from 2.43 to 2.00 s of CPU time, and the maps came out bit-identical to the full
copies'). The BatchNorm-folded copy (``attribution.folded``) is *not* used: its input gradients are not the
model's to float rounding on a ReLU6 network (most likely a rounding-size change of a pre-activation at 0 or 6
flips that unit's derivative; not checked unit by unit): EfficientNet-Lite0's cascade maps moved by 0.3-5 % of
their maximum and the Spearman values by up to 5.8e-4.

The kept graph's saved tensors (the bottom's activations for all the images, about 340 MB for EfficientNet-Lite0
with 4 images at 224 px) are copied, as autograd saves them, into a few large buffers of their own (``_Slabs``:
64 MiB each, above glibc's largest mmap threshold, so mapped apart from the malloc heap). Left in the heap, they
sat between the free holes every step's temporaries need; those temporaries then landed at the top of the heap,
which glibc hands back to the system whenever a large block is freed (its trim threshold), so every step
page-faulted its memory in again. EfficientNet-Lite0, 4 images, Gradient, 19 steps, one thread, loaded machine:
460,000-550,000 minor faults and 1.2-1.6 s of system time per run against 7,000-9,000 and 0.02-0.05 s without
reuse; that system time, charged to the first ops writing fresh memory (convolution and BatchNorm backward,
fill), made the backward look 18 % slower and cancelled the skipped forward passes. With glibc told not to trim
(``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``) the same code faulted 12 times. With the slabs, the
median run faults 168,000-366,000 times against 231,000-394,000 without reuse in the same process
(``benchmarks/bench_sanity.py``, two runs).

It is method-agnostic and falls back to the full forward pass whenever reuse would be wrong: inputs that are not
rows of the cached ones (perturbed or noisy copies, interpolations), or a hook on any module of the bottom part (a
layer method whose layer lies below the cut), or an active torch function / dispatch mode (a ReLU rule). So CAMs at
a layer inside the randomized part skip the bottom's forward and backward at every step, and Gradient its forward.
Possible only where the model's forward is a chain (``nn.Sequential`` or ``stages()``) down to the cut; otherwise
nothing is cached and every step runs the full model. The kept graphs hold the bottom's activations for all the
images (the memory of one forward pass with gradients over them).
"""
from __future__ import annotations

import weakref
from typing import Any, Sequence

import torch
from torch import nn

from interpretorch.attribution.layout import row_layout
from interpretorch.capture import capture
from interpretorch.models.layers import global_hooks_active, has_hooks
from interpretorch.sanity.randomize import Block

__all__ = ["chain", "cut_before", "PrefixCache", "ResumedModel"]


def chain(module: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The (name, module) pairs whose composition is ``module``'s forward, when known (``nn.Sequential`` children
    or ``stages()``), else None."""
    if isinstance(module, nn.Sequential):
        return list(module.named_children())
    stages = getattr(module, "stages", None)
    return list(stages()) if callable(stages) else None


def _lookup(model: nn.Module, name: str) -> nn.Module | None:
    m = model
    for part in name.split("."):
        links = chain(m)
        found = dict(links).get(part) if links is not None else None
        if found is None:
            return None
        m = found
    return m


def cut_before(model: nn.Module, name: str) -> str | None:
    """The chain element whose output is the input of module ``name`` (its predecessor in the nested chain of
    ``nn.Sequential`` / ``stages()``), or None when ``name`` is first or the model is not such a chain there."""
    parts = name.split(".")
    parent = ".".join(parts[:-1])
    links = chain(model if not parent else _lookup(model, parent) or nn.Module())
    if links is None:
        return None
    names = [n for n, _ in links]
    if parts[-1] not in names:
        return None
    i = names.index(parts[-1])
    if i > 0:
        return ".".join(p for p in (parent, names[i - 1]) if p)
    return cut_before(model, parent) if parent else None


def _split(model: nn.Module, cut: str) -> tuple[list[nn.Module], list[nn.Module]] | None:
    """(the modules the resumed forward skips, the tail modules it runs after ``cut``, in order), or None. The
    skipped ones are the chain elements up to and including ``cut`` and the containers around it (the model and
    the chains it opens), whose own hooks would not fire either."""
    parts = cut.split(".")
    module: nn.Module = model
    skipped: list[nn.Module] = []
    levels: list[list[nn.Module]] = []
    for depth, part in enumerate(parts):
        links = chain(module)
        if links is None:
            return None
        names = [n for n, _ in links]
        if part not in names:
            return None
        i = names.index(part)
        last = depth == len(parts) - 1
        skipped.extend(m for _, m in links[:i + 1 if last else i])
        levels.append([m for _, m in links[i + 1:]])
        module = links[i][1]
    tail = [m for level in reversed(levels) for m in level]
    return skipped, tail


def _containers(model: nn.Module, cut: str) -> list[nn.Module]:
    out, m = [model], model
    for part in cut.split(".")[:-1]:
        m = dict(chain(m) or [])[part]
        out.append(m)
    return out


def _hooked(subtrees: Sequence[nn.Module], containers: Sequence[nn.Module]) -> bool:
    if global_hooks_active():  # a global hook or a torch function / dispatch mode (a ReLU rule of guided backprop)
        return True
    return any(has_hooks(m) for top in subtrees for m in top.modules()) or any(has_hooks(c) for c in containers)


class ResumedModel(nn.Module):
    """The randomized copy seen through the cache: its modules (same names, same objects), and a forward that
    resumes after ``cut`` from the cached activation when it can, else runs the copy in full."""

    def __init__(self, inner: nn.Module, bottom: list[nn.Module], containers: list[nn.Module],
                 tail: list[nn.Module], inputs: torch.Tensor, cache: "PrefixCache", cut: str,
                 counts: dict[str, int]) -> None:
        super().__init__()
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "_modules", inner._modules)  # the same module tree: layer names resolve alike
        object.__setattr__(self, "_parameters", inner._parameters)
        object.__setattr__(self, "_buffers", inner._buffers)
        object.__setattr__(self, "_bottom", bottom)
        object.__setattr__(self, "_containers", containers)
        object.__setattr__(self, "_tail", tail)
        object.__setattr__(self, "_inputs", inputs)
        object.__setattr__(self, "_cache", cache)
        object.__setattr__(self, "_cut", cut)
        object.__setattr__(self, "counts", counts)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["inner"], name)

    def _rows(self, x: torch.Tensor) -> slice | None:
        xs = self._inputs
        n = x.shape[0]
        if x.shape[1:] != xs.shape[1:] or x.dtype != xs.dtype or x.device != xs.device or n > xs.shape[0]:
            return None
        for s in range(xs.shape[0] - n + 1):
            if torch.equal(xs[s], x[0]) and torch.equal(xs[s:s + n], x):
                return slice(s, s + n)
        return None

    def forward(self, x: torch.Tensor) -> Any:
        """The copy's outputs on ``x``: resumed from the cache when ``x`` is a run of the cached rows, else in full."""
        rows = None if _hooked(self._bottom, self._containers) else self._rows(x)
        if rows is None:
            self.counts["full"] += 1
            return self.inner(x)
        self.counts["resumed"] += 1
        if x.requires_grad and torch.is_grad_enabled():
            x0, h0 = self._cache.graph(rows, self._cut)
            h = _BottomGrad.apply(x, x0, h0)
        else:
            h = self._cache.activation(self._cut)[rows].clone()  # the tail may work in place (ReLU(inplace=True))
        for m in self._tail:
            h = m(h)
        return h


class _BottomGrad(torch.autograd.Function):
    """``h0`` (the trained bottom's activation at the cut, computed from ``x0``, equal to ``x``) as a function of
    ``x``: its backward runs ``h0``'s kept graph back to ``x0`` with the incoming gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, x0: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.graph = (x0, h0)
        return h0.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:  # noqa: D102
        if torch.is_grad_enabled():
            raise RuntimeError("cascading randomization reuses the bottom's first-order graph only; a method that "
                               "differentiates twice needs model_randomization(..., reuse=False)")
        x0, h0 = ctx.graph
        (g,) = torch.autograd.grad(h0, x0, grad, retain_graph=True, allow_unused=True)
        return (torch.zeros_like(x0) if g is None else g), None, None


def _dense(t: torch.Tensor) -> bool:
    """Whether ``t`` covers its elements once in a plain or channels-last layout (so its strides can be re-used)."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)) or (
        t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d))


class _Slabs:
    """Pack hook that copies the tensors an autograd graph saves into a few large buffers of their own (each
    ``SIZE`` bytes or the tensor's size), with the same shape, strides and values; parameters and buffers of the
    model, and tensors that are not dense CPU tensors, stay as they are. A tensor saved twice is copied once."""

    SIZE = 64 << 20  # above glibc's largest mmap threshold (32 MiB): always mapped apart from the malloc heap
    ALIGN = 64

    def __init__(self, skip: set[int]) -> None:
        self.skip = skip
        self.slab: torch.Tensor | None = None
        self.used = 0
        self.seen: dict[tuple, tuple[weakref.ref, torch.Tensor]] = {}

    def _room(self, nbytes: int) -> tuple[torch.Tensor, int]:
        if nbytes > self.SIZE:
            return torch.empty(nbytes, dtype=torch.uint8), 0
        if self.slab is None or self.used + nbytes > self.SIZE:
            self.slab, self.used = torch.empty(self.SIZE, dtype=torch.uint8), 0
        off = self.used
        self.used = -(-(off + nbytes) // self.ALIGN) * self.ALIGN
        return self.slab, off

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        """``t``'s copy in a slab (or ``t`` itself when it is not copied)."""
        if (t.device.type != "cpu" or t.is_sparse or t.numel() == 0 or t.data_ptr() in self.skip
                or not _dense(t)):
            return t
        key = (t.data_ptr(), t.dtype, tuple(t.shape), t.stride(), t._version)
        hit = self.seen.get(key)
        if hit is not None and hit[0]() is t:
            return hit[1]
        nbytes = t.numel() * t.element_size()
        slab, off = self._room(nbytes)
        out = slab[off:off + nbytes].view(t.dtype).as_strided(t.shape, t.stride())
        out.copy_(t.detach())
        self.seen[key] = (weakref.ref(t), out)
        return out

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        """The saved copy as it is."""
        return t


class PrefixCache:
    """The trained model's activations at the cut point of every step (computed once), and the wrapper of each
    step's randomized copy."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, blocks: Sequence[Block],
                 plan: Sequence[tuple[str, list[int]]]) -> None:
        self.inputs = inputs
        self.blocks = list(blocks)
        self.counts = {"full": 0, "resumed": 0}
        cuts = {}
        for _, idx in plan:
            low = min(idx)
            if low in cuts:
                continue
            cut = cut_before(model, self.blocks[low].modules[0])
            split = _split(model, cut) if cut is not None else None
            cuts[low] = (cut, split) if split is not None else (None, None)
        self.cuts = cuts
        self.model = model
        self.names = sorted({c for c, _ in cuts.values() if c is not None})
        self.activations: dict[str, torch.Tensor] = {}
        self.graphs: dict[tuple[int, int], tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}

    def activation(self, cut: str) -> torch.Tensor:
        """The trained model's activation at ``cut`` on all the inputs (one forward pass without gradients for
        every cut, the first time one is asked for)."""
        if not self.activations:
            with capture(self.model, self.names, grad=False) as rec:
                self.model(self.inputs)
                self.activations = {n: rec[n] for n in self.names}
        return self.activations[cut]

    def graph(self, rows: slice, cut: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(the leaf copy of input ``rows``, the trained model's activation at ``cut`` with its graph back to it): one
        forward pass with gradients for every cut, the first time these rows are asked for; kept for the run."""
        key = (rows.start, rows.stop)
        if key not in self.graphs:
            x0 = self.inputs[rows].detach().clone().requires_grad_(True)
            layout = row_layout(self.model, x0)  # channels-last where the model takes it
            own = {t.data_ptr() for t in list(self.model.parameters()) + list(self.model.buffers())}
            slabs = _Slabs(own)
            with capture(self.model, self.names, grad=True) as rec, \
                    torch.autograd.graph.saved_tensors_hooks(slabs.pack, slabs.unpack):
                self.model(x0.clone(memory_format=layout))  # a non-leaf copy: in-place first ops stay legal
                self.graphs[key] = (x0, {n: rec[n] for n in self.names})
        x0, acts = self.graphs[key]
        return x0, acts[cut]

    def wrap(self, work: nn.Module, idx: Sequence[int]) -> nn.Module:
        """``work`` (the step's randomized copy, blocks ``idx`` random) seen through the cache; ``work`` itself when
        the step has no cut point (its lowest randomized block is the first, or the model is not a chain there)."""
        cut, _ = self.cuts.get(min(idx), (None, None))
        if cut is None:
            return work
        bottom, tail = _split(work, cut)  # the copy's own modules
        return ResumedModel(work, bottom, _containers(work, cut), tail, self.inputs, self, cut, self.counts)
