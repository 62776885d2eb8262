"""Record activations and their gradients at named layers, leaving the model exactly as it was."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn

from interpretorch.models.layers import get_layer


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Restore every module's train/eval flag and every parameter's ``requires_grad`` on exit."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    grads = [(p, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)
        for p, g in grads:
            p.grad = g


@dataclass
class Capture:
    """Activations recorded at the requested layers during one forward pass."""

    names: list[str]
    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    enabled: bool = True

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.activations:
            raise RuntimeError(f"layer {name!r} did not run during the forward pass; "
                               "is it used by the model's forward()?")
        if self.calls.get(name, 0) > 1:
            raise RuntimeError(f"layer {name!r} ran {self.calls[name]} times in one forward pass, so its "
                               "activation is ambiguous; choose a module that runs once")
        return self.activations[name]

    def gradients(self, scores: torch.Tensor, names: Sequence[str] | None = None, *,
                  retain_graph: bool = False) -> dict[str, torch.Tensor]:
        """Return d(sum of scores)/d(activation) at each layer, without touching parameters.

        The graph is freed unless ``retain_graph`` (for a second backward through the same forward).
        """
        names = list(names or self.names)
        acts = [self[n] for n in names]
        if not scores.requires_grad:
            raise RuntimeError("the target scores do not depend on the captured layers")
        grads = torch.autograd.grad(scores.sum(), acts, retain_graph=retain_graph, allow_unused=True)
        return {n: (g if g is not None else torch.zeros_like(a)) for n, a, g in zip(names, acts, grads)}


@contextlib.contextmanager
def capture(model: nn.Module, layers: Sequence[str] | str, *, grad: bool = True,
            eval_mode: bool = True) -> Iterator[Capture]:
    """Record activations at ``layers`` (dotted names) for gradients taken with ``Capture.gradients``.

    Parameters are frozen for the duration, so the backward pass stops at the shallowest captured
    layer and never fills ``.grad``; hooks, train/eval flags and ``requires_grad`` are restored on
    exit, also when the body raises.
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    modules = [get_layer(model, n) for n in names]
    rec = Capture(names)
    handles = []

    def make_hook(n: str):
        def hook(_m: nn.Module, _inp: object, out: object) -> object:
            if not rec.enabled:
                return None
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"layer {n!r} returns {type(out).__name__}, not a tensor; capture needs a tensor output")
            rec.calls[n] = rec.calls.get(n, 0) + 1
            if not grad:
                rec.activations[n] = out.detach()
                return None
            # Keep the recorded tensor out of reach of later in-place ops (e.g. ReLU(inplace=True)):
            # the network continues on a copy, so activation and gradient belong to this layer's output.
            act = out if out.requires_grad else out.detach().requires_grad_(True)
            rec.activations[n] = act
            return act.clone()
        return hook

    with preserved_state(model):
        if eval_mode:
            model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            for n, m in zip(names, modules):
                handles.append(m.register_forward_hook(make_hook(n)))
            with torch.enable_grad() if grad else contextlib.nullcontext():
                yield rec
        finally:
            for h in handles:
                h.remove()
            rec.activations = {k: v.detach() for k, v in rec.activations.items()}
