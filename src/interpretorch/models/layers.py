"""Layer lookup by dotted name and resuming a forward mid-network (no hooks here: they live in capture.py)."""
from __future__ import annotations

import difflib
from typing import Callable, Sequence

import torch
from torch import nn


def layer_names(model: nn.Module) -> list[str]:
    """Return every addressable submodule name of ``model`` in definition order."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str | nn.Module) -> nn.Module:
    """Return the submodule called ``name``; unknown names raise a KeyError listing the closest names."""
    if isinstance(name, nn.Module):
        if not any(m is name for m in model.modules()):
            raise KeyError("the given layer module is not part of this model")
        return name
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    names = layer_names(model)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    hint = f"; closest names: {', '.join(close)}" if close else f"; some valid names: {', '.join(names[-5:])}"
    raise KeyError(f"model has no layer {name!r}{hint}")


def layer_name(model: nn.Module, layer: str | nn.Module) -> str:
    """Return the dotted name of ``layer`` (a name or a submodule) inside ``model``."""
    if isinstance(layer, str):
        get_layer(model, layer)
        return layer
    for n, m in model.named_modules():
        if m is layer and n:
            return n
    raise KeyError("the given layer module is not part of this model")


class StagedModule(nn.Module):
    """A model whose forward is the composition of ``stages()``, so methods can resume after any stage."""

    def stages(self) -> list[tuple[str, nn.Module]]:
        """Ordered (name, module) pairs whose composition is ``forward``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, stage in self.stages():
            x = stage(x)
        return x


def _children_chain(module: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """Return the (name, module) chain whose composition is ``module``'s forward, when known."""
    if isinstance(module, nn.Sequential):
        return list(module.named_children())
    stages = getattr(module, "stages", None)
    if callable(stages):
        return list(stages())
    return None


def tail_after(model: nn.Module, name: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Return a function mapping ``name``'s output to the model output without recomputing the prefix.

    Possible when every ancestor of the layer is a sequential chain (``nn.Sequential`` or a model
    exposing ``stages()``); otherwise ``None`` and callers fall back to a full forward.
    """
    parts = name.split(".")
    rest: list[list[nn.Module]] = []
    module = model
    for depth, part in enumerate(parts):
        chain = _children_chain(module)
        if chain is None:
            return None
        names = [n for n, _ in chain]
        if part not in names:
            return None
        idx = names.index(part)
        rest.append([m for _, m in chain[idx + 1:]])
        module = chain[idx][1]
    tail_modules: Sequence[nn.Module] = [m for level in reversed(rest) for m in level]

    def tail(x: torch.Tensor) -> torch.Tensor:
        for m in tail_modules:
            x = m(x)
        return x

    return tail


def has_hooks(module: nn.Module) -> bool:
    """Whether ``module`` itself carries a forward, forward-pre, backward or backward-pre hook."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks  # noqa: SLF001
                or getattr(module, "_backward_pre_hooks", None))


def global_hooks_active() -> bool:
    """Whether a global module hook (``nn.modules.module.register_module_forward_hook``) or a torch function /
    dispatch mode is active: then every module's call is observed, and a path that reruns modules is seen."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:  # noqa: SLF001 - torch's own
        return True
    return bool(torch._C._len_torch_function_stack() or torch._C._len_torch_dispatch_stack())  # noqa: SLF001
