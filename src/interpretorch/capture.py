"""The one place hooks live: record what layers compute (and its gradients), replace a layer's output, trace
shapes, and run a model without changing it.

A *site* names what to record: a module's output (``"features.3"``), a member of a tuple / dict output
(``"blocks.3.attn:1"``, ``"encoder.layer.0:hidden_states"``), a module's input (``"head:input"``, or
``"head:input:1"`` / ``"head:input:mask"`` for another positional or a keyword argument), or a
:class:`Site` with a callable selector. Every context manager here leaves the model exactly as it was:
parameters, buffers, train/eval flags, ``requires_grad``, ``.grad`` and no hooks, also when the body raises.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import torch
from torch import nn

from interpretorch.models.layers import get_layer, layer_name

Selector = Union[int, str, Callable[[Any], torch.Tensor], None]


@dataclass(frozen=True)
class Site:
    """What to record: ``part`` ("output" or "input") of module ``module``, optionally one member of it.

    ``select``: None (the tensor itself, or the first positional input), an int (a tuple member or
    positional input), a str (a dict key or keyword argument) or a callable returning the tensor (read
    only: the gradient then flows to whatever the callable returned).
    """

    module: str
    part: str = "output"
    select: Selector = None

    @property
    def key(self) -> str:
        """The name this site is recorded under (its string spelling)."""
        tail = "" if self.select is None else f":{self.select if not callable(self.select) else '<fn>'}"
        return f"{self.module}:input{tail}" if self.part == "input" else f"{self.module}{tail}"


SiteLike = Union[str, nn.Module, Site]

SCRIPTED = ("is TorchScript, where no hook can run, so layer methods (the CAMs, Score-/Ablation-CAM, Guided "
            "Grad-CAM) cannot see its layers; use a pixel method (gradient, integrated_gradients, occlusion, rise) "
            "or load the model as Python modules or as a torch.export program (.pt2)")


def check_hookable(model: nn.Module, what: str = "the model") -> None:
    """Raise a TypeError saying what to do instead when ``model`` is TorchScript (scripted or traced)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(f"{what} {SCRIPTED}")


def parse_site(model: nn.Module, spec: SiteLike) -> Site:
    """Return the :class:`Site` a layer spec names, checking that the module exists."""
    check_hookable(model)
    if isinstance(spec, Site):
        get_layer(model, spec.module)
        if spec.part not in ("output", "input"):
            raise ValueError(f"a site's part must be 'output' or 'input', got {spec.part!r}")
        return spec
    if isinstance(spec, nn.Module):
        return Site(layer_name(model, spec))
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"a layer is a dotted module name, a module or a Site, got {spec!r}")
    name, _, rest = spec.partition(":")
    get_layer(model, name)
    if not rest:
        return Site(name)
    part, select = "output", rest
    if rest == "input" or rest.startswith("input:"):
        part, select = "input", rest[6:] or None
    sel: Selector = int(select) if isinstance(select, str) and select.lstrip("-").isdigit() else select
    return Site(name, part, sel)


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Restore every module's train/eval flag and every parameter's ``requires_grad`` and ``.grad`` on exit."""
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


@contextlib.contextmanager
def frozen(model: nn.Module, *, grad: bool = False) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode with its parameters frozen (gradients only if ``grad``), then restore it.

    The one way every method evaluates a model without changing it; with ``grad=True`` gradients can be
    taken with respect to inputs or recorded activations, never parameters.
    """
    with preserved_state(model):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.enable_grad() if grad else torch.no_grad():
            yield model


def _select(value: Any, select: Selector, where: str) -> torch.Tensor:
    if select is None:
        t = value
    elif callable(select):
        t = select(value)
    else:
        try:
            t = value[select]
        except (KeyError, IndexError, TypeError):
            kind = type(value).__name__
            keys = list(value.keys()) if isinstance(value, Mapping) else (
                f"0..{len(value) - 1}" if isinstance(value, (tuple, list)) else "none")
            raise KeyError(f"{where} is a {kind} with no member {select!r} (members: {keys})") from None
    if not isinstance(t, torch.Tensor):
        hint = (" pick a member with 'NAME:INDEX' or 'NAME:KEY'"
                if isinstance(t, (tuple, list, Mapping)) else "")
        raise TypeError(f"{where} gives a {type(t).__name__}, not a tensor;{hint}")
    return t


def _replace(value: Any, select: Selector, new: torch.Tensor) -> Any:
    """``value`` with its ``select`` member replaced by ``new`` (containers are copied, never changed)."""
    if select is None:
        return new
    if isinstance(value, tuple):
        items = list(value)
        items[select] = new  # type: ignore[index]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        items = list(value)
        items[select] = new  # type: ignore[index]
        return items
    if isinstance(value, Mapping):
        out = copy.copy(value)
        out[select] = new  # type: ignore[index]
        return out
    raise TypeError(f"cannot replace member {select!r} of a {type(value).__name__}")


class Capture:
    """Tensors recorded at the requested sites during a forward pass, and their gradients."""

    def __init__(self, names: list[str], reshape: Mapping[str, Callable[[torch.Tensor], torch.Tensor]]) -> None:
        self.names = names
        self.activations: dict[str, torch.Tensor] = {}
        self.calls: dict[str, int] = {}
        self._reshape = dict(reshape)

    def raw(self, name: str) -> torch.Tensor:
        """The tensor recorded at ``name`` as the model computed it (before any ``reshape``)."""
        if name not in self.activations:
            raise RuntimeError(f"layer {name!r} did not run during the forward pass; "
                               "is it used by the model's forward()?")
        if self.calls.get(name, 0) > 1:
            raise RuntimeError(f"layer {name!r} ran {self.calls[name]} times in one forward pass, so its "
                               "activation is ambiguous; choose a module that runs once")
        return self.activations[name]

    def __getitem__(self, name: str) -> torch.Tensor:
        t = self.raw(name)
        fn = self._reshape.get(name)
        return fn(t) if fn is not None else t

    def gradients(self, scores: torch.Tensor, names: Sequence[str] | None = None, *,
                  retain_graph: bool = False) -> dict[str, torch.Tensor]:
        """Return d(sum of scores)/d(recorded tensor) at each site (reshaped like the tensor itself).

        Parameters are never touched; the graph is freed unless ``retain_graph``.
        """
        names = list(names or self.names)
        acts = [self.raw(n) for n in names]
        if not scores.requires_grad:
            raise RuntimeError("the target scores do not depend on the captured layers")
        grads = torch.autograd.grad(scores.sum(), acts, retain_graph=retain_graph, allow_unused=True)
        out = {}
        for n, a, g in zip(names, acts, grads):
            g = g if g is not None else torch.zeros_like(a)
            fn = self._reshape.get(n)
            out[n] = fn(g) if fn is not None else g
        return out


@contextlib.contextmanager
def capture(model: nn.Module, layers: SiteLike | Sequence[SiteLike], *, grad: bool = True,
            reshape: Callable[[torch.Tensor], torch.Tensor] | Mapping[str, Callable] | None = None
            ) -> Iterator[Capture]:
    """Record the tensors at ``layers`` (sites) while the body runs the model; gradients via ``Capture.gradients``.

    The model runs in eval mode with parameters frozen, so a backward pass stops at the shallowest
    recorded site and never fills ``.grad``. With ``grad=False`` tensors are recorded detached and
    the body runs without autograd. ``reshape`` (one callable, or one per layer name) is applied to a
    recorded tensor and its gradient when read, e.g. :func:`token_grid` for (B, T, C) token outputs.
    Recorded tensors are read as ``rec[name]`` with the spelling given in ``layers``.
    """
    specs = [layers] if isinstance(layers, (str, nn.Module, Site)) else list(layers)
    sites = [parse_site(model, s) for s in specs]
    names = [s if isinstance(s, str) else site.key for s, site in zip(specs, sites)]
    if len(set(names)) != len(names):
        raise ValueError(f"a layer is named twice in {names}")
    if reshape is None:
        per_layer: dict[str, Callable] = {}
    elif callable(reshape):
        per_layer = {n: reshape for n in names}
    else:
        per_layer = dict(reshape)
    rec = Capture(names, per_layer)

    def keep(n: str, t: torch.Tensor) -> torch.Tensor:
        """Record ``t`` under ``n``; returns what the network should continue with."""
        rec.calls[n] = rec.calls.get(n, 0) + 1
        if not grad:
            # A copy: a later in-place op (ReLU(inplace=True)) must not change what was recorded.
            rec.activations[n] = t.detach().clone()
            return t
        # The network continues on a copy, so later in-place ops (ReLU(inplace=True)) cannot change the
        # recorded tensor: activation and gradient belong to this site.
        act = t if t.requires_grad else t.detach().requires_grad_(True)
        rec.activations[n] = act
        return act.clone()

    def output_hook(n: str, site: Site) -> Callable:
        def hook(_m: nn.Module, _inp: object, out: object) -> object:
            t = _select(out, site.select, f"the output of {site.module!r}")
            if callable(site.select):  # read only
                rec.calls[n] = rec.calls.get(n, 0) + 1
                rec.activations[n] = t.detach() if not grad else t
                return None
            new = keep(n, t)
            return None if new is t else _replace(out, site.select, new)
        return hook

    def input_hook(n: str, site: Site) -> Callable:
        def hook(_m: nn.Module, args: tuple, kwargs: dict) -> object:
            if isinstance(site.select, str):
                if site.select not in kwargs:
                    raise KeyError(f"{site.module!r} was called without keyword argument {site.select!r} "
                                   f"(keywords: {sorted(kwargs)})")
                new = keep(n, _select(kwargs[site.select], None, f"input {site.select!r} of {site.module!r}"))
                return args, {**kwargs, site.select: new}
            i = 0 if site.select is None else site.select
            if callable(i):
                t = _select(args, i, f"the inputs of {site.module!r}")
                rec.calls[n] = rec.calls.get(n, 0) + 1
                rec.activations[n] = t.detach() if not grad else t
                return None
            t = _select(args, i, f"the positional inputs of {site.module!r}")
            new = keep(n, t)
            items = list(args)
            items[i] = new
            return tuple(items), kwargs
        return hook

    handles = []
    with frozen(model, grad=grad):
        try:
            for n, site in zip(names, sites):
                m = get_layer(model, site.module)
                check_hookable(m, f"layer {site.module!r}")
                if site.part == "input":
                    handles.append(m.register_forward_pre_hook(input_hook(n, site), with_kwargs=True))
                else:
                    handles.append(m.register_forward_hook(output_hook(n, site)))
            yield rec
        finally:
            for h in handles:
                h.remove()
            rec.activations = {k: v.detach() for k, v in rec.activations.items()}


@contextlib.contextmanager
def patched(model: nn.Module, layer: SiteLike, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """While the body runs, replace the tensor at ``layer`` (an output site) by ``fn(tensor)``."""
    site = parse_site(model, layer)
    if site.part != "output" or callable(site.select):
        raise ValueError("patched() replaces a module's output or one member of it")

    def hook(_m: nn.Module, _inp: object, out: object) -> object:
        return _replace(out, site.select, fn(_select(out, site.select, f"the output of {site.module!r}")))

    handle = get_layer(model, site.module).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def intercepted(model: nn.Module, layers: Sequence[str],
                fn: Callable[[str, nn.Module, tuple, dict, Any], Any]) -> Iterator[None]:
    """While the body runs, call ``fn(name, module, args, kwargs, output)`` after each of ``layers`` runs.

    A result other than None replaces the module's output. For code that needs a module's own inputs (keyword
    masks included) to recompute what it does, e.g. attention probabilities that fused kernels never materialise.
    """
    mods = []
    for n in layers:
        m = get_layer(model, n)
        check_hookable(m, f"layer {n!r}")
        mods.append((n, m))

    def make_hook(n: str) -> Callable:
        def hook(m: nn.Module, args: tuple, kwargs: dict, out: Any) -> Any:
            return fn(n, m, args, kwargs, out)
        return hook

    handles = []
    try:
        for n, m in mods:
            handles.append(m.register_forward_hook(make_hook(n), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def token_grid(input_size: tuple[int, int], prefix_tokens: int | None = None
               ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return a function turning (B, T, C) tokens into a (B, C, h, w) patch grid for (H, W) inputs.

    The grid keeps the inputs' aspect ratio; the first ``prefix_tokens`` tokens (class / register /
    distillation tokens) are dropped, inferred as the fewest that leave such a grid when not given.
    (B, C, h, w) tensors pass through unchanged, except channels-last (B, h, w, C) maps (timm's Swin stages): a
    4-D tensor whose dims 2-3 are not a grid of the input's aspect ratio but whose dims 1-2 are is permuted to
    (B, C, h, w).
    """
    H, W = input_size

    def is_grid(h: int, w: int) -> bool:
        """Whether an h x w map is the input downsampled by one stride (aspect ratio kept, up to rounding)."""
        return 0 < h <= H and 0 < w <= W and abs(H / h - W / w) <= max(H / h, W / w) * 0.15 + 1e-9

    def grid(t: int) -> tuple[int, int, int]:
        starts = [prefix_tokens] if prefix_tokens is not None else range(0, min(t, 9))
        for p in starts:
            n = t - p
            for h in range(1, n + 1):
                if n % h == 0 and n // h == max(1, round(h * W / H)):
                    return p, h, n // h
        what = f"{prefix_tokens} prefix token(s)" if prefix_tokens is not None else "0-8 prefix tokens"
        raise ValueError(f"cannot lay {t} tokens out as a patch grid for {H}x{W} inputs with {what}; "
                         "pass reshape= a function (B, T, C) -> (B, C, h, w)")

    def reshape(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            if not is_grid(x.shape[2], x.shape[3]) and is_grid(x.shape[1], x.shape[2]):
                return x.permute(0, 3, 1, 2)
            return x
        if x.dim() != 3:
            raise ValueError(f"token outputs must be (B, T, C), got shape {tuple(x.shape)}")
        p, h, w = grid(x.shape[1])
        return x[:, p:].transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)

    return reshape


def spatial_layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """Run one dry forward pass and list (name, output shape) of modules giving (B, C, H, W) outputs, in call order."""
    check_hookable(model)
    found: list[tuple[str, tuple[int, ...]]] = []
    handles = []

    def make_hook(n: str) -> Callable:
        def hook(_m: nn.Module, _i: object, out: object) -> None:
            if isinstance(out, torch.Tensor) and out.dim() == 4:
                found.append((n, tuple(out.shape)))
        return hook

    with frozen(model):
        try:
            for n, m in model.named_modules():
                if n and not isinstance(m, torch.jit.ScriptModule):
                    handles.append(m.register_forward_hook(make_hook(n)))
            model(example[:1])
        finally:
            for h in handles:
                h.remove()
    return found


def default_cam_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Return the name of the last module whose output is (B, C, H, W) with more than one spatial cell."""
    cands = [n for n, shape in spatial_layers(model, example) if shape[2] * shape[3] > 1]
    if not cands:
        raise ValueError("no module of this model gives a (B, C, H, W) output with H*W > 1; "
                         "pass layer= explicitly (CAM methods need a spatial feature map; for token "
                         "outputs (B, T, C) name the block, e.g. layer='blocks.3')")
    return cands[-1]
