"""One description per method, ``register`` to add one, ``bind`` to fix its options, and ``explain`` which runs any
set of them, sharing passes where their descriptions say they can.

A method is a function ``fn(model, inputs, target="top1", [layer=None,] *, batch_size=None, **options) ->
Explanation``; its description says what its map is (``kind``), whether it explains a hidden layer, its
aliases, and which shared pass (``group``) it can join. Its options are read off its signature.

The registry knows no family: each family's package registers its built-in methods when it is imported
(:mod:`interpretorch.attribution`, then :mod:`interpretorch.transformers`), and the first question asked of the
registry loads the declared plugins (:mod:`interpretorch.core.plugins`) in that order, which is the registry's
order.
"""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from interpretorch.core.plugins import load_plugins
from interpretorch.core.targets import (TARGET_KINDS, Target, check_target, describe_target, is_target_object,
                                        target_kind)
from interpretorch.explanation import Explanation

KINDS = ("pixel", "region", "token")
# What is never an option: the arguments every method takes, set by explain / bind / the CLI themselves.
CALL_ARGUMENTS = ("model", "inputs", "target", "layer", "batch_size")


@dataclass(frozen=True)
class Geometry:
    """What a method's row count depends on: images, their size and the channels of the layer it explains."""

    n_images: int
    height: int = 224
    width: int = 224
    channels: int = 1


@dataclass(frozen=True)
class MethodSpec:
    """The description of one registered method."""

    name: str
    fn: Callable[..., Explanation]
    kind: str = "pixel"
    needs_layer: bool = False
    aliases: tuple[str, ...] = ()
    group: str | None = None
    default: bool = False
    doc: str = ""
    applies: Callable[[nn.Module], bool] | None = None
    class_agnostic: bool = False
    _params: Mapping[str, inspect.Parameter] = field(default_factory=dict, repr=False, compare=False)
    rows: Callable[[Mapping[str, Any], Geometry], int] | None = field(default=None, repr=False, compare=False)
    backward: bool = True
    tail: bool = False  # its rows run only the network after the layer where the model can be cut there
    targets: tuple[str, ...] = TARGET_KINDS
    targets_note: str = ""

    def check_target_kind(self, target: Target) -> None:
        """Raise a ValueError naming the method and the target kind when the method cannot explain that kind."""
        kind = target_kind(target)
        if kind in self.targets or kind == "mixed":
            return
        raise ValueError(f"{self.name} cannot explain a {kind} target: it explains {', '.join(self.targets)} targets"
                         + (f" ({self.targets_note})" if self.targets_note else "")
                         + "; `interpretorch methods` lists what each method explains")

    def estimate_rows(self, options: Mapping[str, Any], geometry: Geometry) -> int | None:
        """Model rows the method needs on ``geometry`` with ``options`` (its defaults filled in); None: unknown.

        A method described with no ``rows`` is taken to need one pass per image.
        """
        if self.rows is None:
            return geometry.n_images
        opts = {k: v for k, v in self.options.items() if v is not inspect.Parameter.empty}
        opts.update(options)
        return self.rows(opts, geometry)

    @property
    def options(self) -> dict[str, Any]:
        """The method's own options with their defaults (``inspect.Parameter.empty`` when required)."""
        return {n: p.default for n, p in self._params.items()
                if n not in CALL_ARGUMENTS and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}

    def applies_to(self, model: nn.Module) -> bool:
        """Whether the method can explain ``model`` (e.g. attention methods need attention modules)."""
        return self.applies is None or bool(self.applies(model))

    def accepts(self, key: str) -> bool:
        """Whether the method takes the keyword ``key``."""
        return key in self._params or any(p.kind is p.VAR_KEYWORD for p in self._params.values())

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise a TypeError naming any option the method does not take, and listing those it does."""
        bad = [k for k in options if k in CALL_ARGUMENTS or not self.accepts(k)]
        if bad:
            raise TypeError(f"{self.name} takes no option {', '.join(map(repr, bad))}; it takes "
                            f"{', '.join(self.options) or 'none'} (target, layer and batch_size are arguments "
                            "of every call)")

    def __call__(self, model: nn.Module, inputs: torch.Tensor, target: Target = "top1",
                 layer: str | nn.Module | None = None, *, batch_size: int | None = None,
                 **options: Any) -> Explanation:
        """Run the method: the one way every caller calls a registered method."""
        if layer is not None and not self.needs_layer:
            raise ValueError(f"{self.name} explains the input pixels and takes no layer; drop layer= "
                             f"(it is for the layer methods: {', '.join(_layer_methods())})")
        self.check_options(options)
        self.check_target_kind(target)
        if is_target_object(target) or target_kind(target) not in ("class", "callable"):
            if isinstance(inputs, torch.Tensor) and inputs.dim() > 0:
                target = check_target(target, 1 if inputs.dim() == 3 else inputs.shape[0])
        if self.needs_layer:
            return target_result(self.fn(model, inputs, target, layer, batch_size=batch_size, **options), target)
        return target_result(self.fn(model, inputs, target, batch_size=batch_size, **options), target)


def target_result(exp: Explanation, target: Target) -> Explanation:
    """A method's result for ``target``: for target objects, ``target`` (which the methods fill with the images'
    own indices, the routing of rows) becomes None and ``extras["targets"]`` describes each image's target."""
    if not is_target_object(target) or not isinstance(exp, Explanation):
        return exp
    return replace(exp, target=None, extras={**exp.extras, "targets": describe_target(target),
                                             "target_kind": target.kind})


_METHODS: dict[str, MethodSpec] = {}
_ALIASES: dict[str, str] = {}
# group name -> runner(model, inputs, methods, target, layer, *, batch_size, **options) -> {method: Explanation}
GROUPS: dict[str, Callable[..., dict[str, Explanation]]] = {}


def _key(name: str) -> str:
    return name.strip().lower()


def register(name: str, fn: Callable[..., Explanation], *, kind: str = "pixel", needs_layer: bool = False,
             aliases: Sequence[str] = (), group: str | None = None, default: bool = False, doc: str | None = None,
             applies: Callable[[nn.Module], bool] | None = None, replace: bool = False,
             class_agnostic: bool = False, targets: Sequence[str] = TARGET_KINDS,
             targets_note: str = "") -> MethodSpec:
    """Add a method under ``name`` (and ``aliases``); returns its description.

    ``kind``: "pixel" ((B, C, H, W) maps on the input), "region" ((B, H, W) maps, usually from a layer) or
    "token" ((B, T) maps); ``needs_layer``: it explains a hidden layer (and takes ``layer``);
    ``group``: the name of a shared pass registered with ``register_group`` that computes several
    methods of the group at once; ``default``: part of ``interpretorch explain``'s default set;
    ``applies(model)``: whether it can explain a model (what ``"all"`` keeps; None: every model);
    ``class_agnostic``: the map is the same whatever the target (Eigen-CAM, raw attention), so reports
    caption it as such instead of naming a class; ``targets``: the target kinds it explains
    (``core.targets.TARGET_KINDS``: every kind unless it says otherwise) and ``targets_note`` why not the others.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not callable(fn):
        raise TypeError(f"a method must be callable, got {type(fn).__name__}")
    key = _key(name)
    names = [key] + [_key(a) for a in aliases]
    if not replace:
        taken = [n for n in names if n in _METHODS or (n in _ALIASES and _ALIASES[n] != key)]
        if taken:
            raise ValueError(f"method name(s) {taken} are already registered; pass replace=True to override")
    params = inspect.signature(fn).parameters
    first = " ".join((doc or inspect.getdoc(fn) or "").strip().split("\n\n")[0].split())  # the first paragraph
    bad = [t for t in targets if t not in TARGET_KINDS]
    if bad:
        raise ValueError(f"unknown target kind(s) {bad}; the kinds are {', '.join(TARGET_KINDS)}")
    spec = MethodSpec(key, fn, kind, needs_layer, tuple(_key(a) for a in aliases), group, default, first, applies,
                      class_agnostic, dict(params), targets=tuple(targets), targets_note=targets_note)
    _METHODS[key] = spec
    for a in spec.aliases:
        _ALIASES[a] = key
    return spec


def describe_rows(name: str, rows: Callable[[Mapping[str, Any], Geometry], int], *, backward: bool = True,
                  tail: bool = False) -> MethodSpec:
    """Say how many model rows method ``name`` needs (``rows(options, geometry)``), whether they run a backward
    pass and whether they run only the network after the layer (``tail``); returns the updated description (what
    run-time estimates read)."""
    key = _ALIASES.get(_key(name), _key(name))
    # a method registered already is described without loading the plugins (which import the metrics and the
    # report, and so would close an import cycle when ``interpretorch.metrics`` is the first module imported)
    spec = _METHODS[key] if key in _METHODS else get_method(name)
    if not callable(rows):
        raise TypeError(f"rows must be callable (options, geometry) -> int, got {type(rows).__name__}")
    new = replace(spec, rows=rows, backward=backward, tail=tail)
    _METHODS[spec.name] = new
    return new


def register_group(name: str, runner: Callable[..., dict[str, Explanation]]) -> None:
    """Declare a shared pass: ``runner(model, inputs, methods, target, layer, *, batch_size, **options)``."""
    GROUPS[name] = runner


@dataclass(frozen=True)
class OneForward:
    """A pass that explains K targets of ONE image from one forward pass of it (``explain_targets``):
    ``run(model, image (1, C, H, W), methods, target bound to the K targets, layer, **options) -> {method:
    Explanation}``, and ``backward(methods)``: whether it then runs one backward pass per target."""

    run: Callable[..., dict[str, Explanation]]
    backward: Callable[[Sequence[str]], bool]


# method name -> its one-forward pass; group name -> the one-forward pass of every method of that group
ONE_FORWARD: dict[str, OneForward] = {}
ONE_FORWARD_GROUPS: dict[str, OneForward] = {}
_ONE_FORWARD_FN: dict[str, Callable] = {}  # the method's function when its pass was declared (replaced: K rows)


def register_one_forward(run: Callable[..., dict[str, Explanation]], backward: Callable[[Sequence[str]], bool], *,
                         methods: Sequence[str] = (), group: str | None = None) -> OneForward:
    """Declare that ``methods`` (and every method of shared pass ``group``, registered now or later) explain the K
    targets of one image from one forward pass of it with ``run`` (see :class:`OneForward`)."""
    if not callable(run) or not callable(backward):
        raise TypeError("run and backward must be callable")
    p = OneForward(run, backward)
    for m in methods:
        key = _ALIASES.get(_key(m), _key(m))
        if key not in _METHODS:
            raise ValueError(f"no method {m!r} is registered; register it before its one-forward pass")
        ONE_FORWARD[key] = p
        _ONE_FORWARD_FN[key] = _METHODS[key].fn
    if group is not None:
        ONE_FORWARD_GROUPS[group] = p
    return p


def one_forward_plan(names: Sequence[str], target: Target, options: Mapping[str, Mapping[str, Any]]
                     ) -> tuple[list[tuple[OneForward, list[str]]], list[str]]:
    """How ``explain_targets`` runs methods ``names`` on K targets of one image (``target``: checked, bound to the
    K targets): the one-forward passes with the methods sharing each (a method given options of its own runs a
    pass alone), and the methods left to K copies of the image as rows. Target objects and class indices take the
    one-forward path; a callable target does not."""
    if not (is_target_object(target) or isinstance(target, torch.Tensor)):
        return [], list(names)
    passes: list[tuple[OneForward, list[str]]] = []
    rest: list[str] = []
    shared: dict[int, int] = {}
    for m in names:
        spec = _METHODS[m]
        p = ONE_FORWARD.get(m) if _ONE_FORWARD_FN.get(m) is spec.fn else None
        if p is None and spec.group is not None:
            p = ONE_FORWARD_GROUPS.get(spec.group)
        if p is None:
            rest.append(m)
        elif options.get(m):
            passes.append((p, [m]))
        elif id(p) in shared:
            passes[shared[id(p)]][1].append(m)
        else:
            shared[id(p)] = len(passes)
            passes.append((p, [m]))
    return passes, rest


def _layer_methods() -> list[str]:
    load_plugins()
    return [n for n, s in _METHODS.items() if s.needs_layer]


def available_methods() -> list[str]:
    """Return every registered method name, in registration order."""
    load_plugins()
    return list(_METHODS)


def method_specs() -> list[MethodSpec]:
    """Return the description of every registered method."""
    load_plugins()
    return list(_METHODS.values())


def default_methods() -> list[str]:
    """The methods ``interpretorch explain`` runs when none are named."""
    return [s.name for s in method_specs() if s.default]


def canonical(name: str) -> str:
    """Return the registered spelling of a method name or alias, or raise listing the valid ones."""
    load_plugins()
    key = _key(name)
    key = _ALIASES.get(key, key)
    if key not in _METHODS:  # guided-backprop, Guided Backprop, ...
        spaced = key.replace("-", "_").replace(" ", "_")
        key = _ALIASES.get(spaced, spaced)
    if key not in _METHODS:
        close = difflib.get_close_matches(key, list(_METHODS) + list(_ALIASES), n=3)
        close = list(dict.fromkeys(_ALIASES.get(c, c) for c in close))
        raise ValueError(f"unknown method {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                         + f" Available: {', '.join(_METHODS)}")
    return key


def get_method(name: str) -> MethodSpec:
    """Return the description of the method called ``name`` (or an alias of it)."""
    return _METHODS[canonical(name)]


class BoundMethod:
    """A method with its options fixed: call it as ``bound(model, inputs, target)``."""

    def __init__(self, method: str, options: Mapping[str, Any]) -> None:
        self.spec = get_method(method)
        opts = dict(options)
        self.layer = opts.pop("layer", None)
        self.batch_size = opts.pop("batch_size", None)
        if self.layer is not None and not self.spec.needs_layer:
            raise ValueError(f"{self.spec.name} explains the input pixels and takes no layer")
        self.spec.check_options(opts)
        self.options = opts

    @property
    def name(self) -> str:
        """The method's registered name."""
        return self.spec.name

    def __call__(self, model: nn.Module, inputs: torch.Tensor, target: Target = "top1") -> Explanation:
        return self.spec(model, inputs, target, self.layer, batch_size=self.batch_size, **self.options)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"bind({self.name!r}{', ' if opts else ''}{opts})"


def bind(method: str, **options: Any) -> BoundMethod:
    """Return ``method`` with ``options`` fixed (``layer`` and ``batch_size`` too), as a callable
    ``(model, inputs, target) -> Explanation``; unknown options are an error here, not at call time."""
    return BoundMethod(method, options)


def reexplainers(explanations: Mapping[str, Explanation]) -> dict[str, BoundMethod]:
    """For each explanation, the registered method that made it bound to its layer: what a metric that re-explains
    (``evaluate(..., explain_fn=...)``, Max-Sensitivity) calls."""
    load_plugins()
    out = {}
    for name, exp in explanations.items():
        key = _ALIASES.get(_key(exp.method), _key(exp.method))
        if key not in _METHODS:  # maps made outside the registry: only an explicit explain_fn re-explains them
            continue
        spec = _METHODS[key]
        out[name] = bind(spec.name, layer=exp.layer) if spec.needs_layer else bind(spec.name)
    return out


def resolve_methods(methods: str | Sequence[str] | None, model: nn.Module | None = None) -> list[str]:
    """Registered names of ``methods``: one name, several, "all" (those that apply to ``model`` when given), or
    None for ``default_methods()``."""
    if methods is None:
        names = default_methods()
    elif methods == "all":
        names = [s.name for s in method_specs() if model is None or s.applies_to(model)]
    else:
        names = list(dict.fromkeys(canonical(m) for m in ([methods] if isinstance(methods, str) else methods)))
    if not names:
        raise ValueError("no method given; name at least one (interpretorch.available_methods() lists them)")
    return names


def method_options(names: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict]:
    """``options`` keyed by registered names, each checked against its method, which must be among ``names``."""
    out = {canonical(k): dict(v) for k, v in (options or {}).items()}
    for m, opts in out.items():
        if m not in names:
            raise ValueError(f"options given for {m}, which is not among the methods run ({', '.join(names)})")
        _METHODS[m].check_options(opts)
    return out


def check_call(names: Sequence[str], layer: str | nn.Module | None, shared: Mapping[str, Any],
               target: Target) -> None:
    """Raise when no method of ``names`` takes a shared option, when ``layer`` is given to pixel methods only, or
    when a method cannot explain ``target``'s kind."""
    specs = [_METHODS[n] for n in names]
    unused = [k for k in shared if not any(s.accepts(k) for s in specs)]
    if unused:
        raise TypeError(f"option(s) {unused} are taken by none of the methods {list(names)}; "
                        "give method-specific options as options={'method': {...}}")
    if layer is not None and not any(s.needs_layer for s in specs):
        raise ValueError(f"layer= is for the layer methods ({', '.join(_layer_methods())}); "
                         f"{', '.join(names)} explain the input pixels")
    for s in specs:
        s.check_target_kind(target)


def explain(model: nn.Module, inputs: torch.Tensor, methods: str | Sequence[str] = "gradcam",
            target: Target = "top1", layer: str | nn.Module | None = None, *, batch_size: int | None = None,
            options: dict[str, dict] | None = None, **shared: Any) -> Explanation | dict[str, Explanation]:
    """Explain ``model``'s prediction on ``inputs`` with one method (returns an Explanation) or several (a dict).

    Methods of one shared pass (the gradient CAMs) requested together run as one forward/backward;
    ``options`` maps a method name to its own keyword arguments; other keyword arguments go to every
    method that takes them (``normalize=True`` reaches the CAMs, not the pixel attributions), and one
    that no requested method takes is an error. ``layer`` is for the layer methods; ``batch_size`` is
    the number of rows per model call.
    """
    single = isinstance(methods, str) and methods != "all"
    names = resolve_methods(methods, model)
    specs = {n: _METHODS[n] for n in names}
    options = method_options(names, options)
    check_call(names, layer, shared, target)
    if isinstance(inputs, torch.Tensor) and inputs.dim() > 0:
        target = check_target(target, inputs.shape[0])
    result: dict[str, Explanation] = {}
    groups: dict[str, list[str]] = {}
    for m, s in specs.items():
        if s.group is not None and not options.get(m):
            groups.setdefault(s.group, []).append(m)
    for g, members in groups.items():
        if g not in GROUPS:
            raise ValueError(f"{members[0]} joins the shared pass {g!r}, which no register_group() declared")
        runner = GROUPS[g]
        params = inspect.signature(runner).parameters
        kw = {k: v for k, v in shared.items() if k in params}
        result.update({m: target_result(e, target) for m, e in
                       runner(model, inputs, members, target, layer, batch_size=batch_size, **kw).items()})
    for m, s in specs.items():
        if m in result:
            continue
        kw = {k: v for k, v in shared.items() if s.accepts(k)}
        kw.update(options.get(m, {}))
        result[m] = s(model, inputs, target, layer if s.needs_layer else None, batch_size=batch_size, **kw)
    ordered = {m: result[m] for m in names}
    return ordered[names[0]] if single else ordered


def explain_targets(model: nn.Module, image: torch.Tensor, targets: Sequence[Any],
                    methods: str | Sequence[str] = "gradcam", layer: str | nn.Module | None = None, *, batch_size: int | None = None,
                    options: dict[str, dict] | None = None, **shared: Any
                    ) -> Explanation | dict[str, Explanation]:
    """Explain several targets of one image (every detection, every class region) in one call: the image
    (C, H, W) or (1, C, H, W) and ``targets[k]`` give map k.

    The methods with a one-forward pass (``register_one_forward``: the CAMs of the shared CAM pass, Gradient,
    Gradient x Input) run the image forward ONCE, score all K targets on that one output and take one backward
    pass per target, back to the layer (or the input) only; the maps equal those of K rows. Every other method
    (and any method with a plain callable target) explains K copies of the image as rows, ``batch_size`` per model
    call (a perturbation method needs K times its rows). Rows counted by progress and by
    :func:`explain_targets_rows`: a one-forward pass is 1 row for its forward plus 1 per target for the backward
    passes (none when its methods need no gradient, e.g. Eigen-CAM alone); a K-row method its own rows on K images.
    """
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4) or (image.dim() == 4
                                                                           and image.shape[0] != 1):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"explain_targets takes one image, (C, H, W) or (1, C, H, W), got {shape}")
    targets = list(targets)
    if not targets:
        raise ValueError("explain_targets needs at least one target")
    single = isinstance(methods, str) and methods != "all"
    names = resolve_methods(methods, model)
    options = method_options(names, options)
    check_call(names, layer, shared, targets)
    one = image[None] if image.dim() == 3 else image
    bound = check_target(targets, len(targets))
    passes, rest = one_forward_plan(names, bound, options)
    result: dict[str, Explanation] = {}
    for p, members in passes:
        params = inspect.signature(p.run).parameters
        kw = {k: v for k, v in shared.items() if k in params}
        if len(members) == 1:
            kw.update(options.get(members[0], {}))
        lay = layer if any(_METHODS[m].needs_layer for m in members) else None
        result.update({m: target_result(e, bound) for m, e in p.run(model, one, members, bound, lay, **kw).items()})
    if rest:
        x = one.expand(len(targets), *one.shape[-3:])
        kw = {k: v for k, v in shared.items() if any(_METHODS[m].accepts(k) for m in rest)}
        result.update(explain(model, x, rest, target=targets,
                              layer=layer if any(_METHODS[m].needs_layer for m in rest) else None,
                              batch_size=batch_size, options={m: options[m] for m in rest if m in options}, **kw))
    ordered = {m: result[m] for m in names}
    return ordered[names[0]] if single else ordered


def explain_targets_rows(methods: str | Sequence[str], targets: Sequence[Any], geometry: Geometry | None = None,
                         options: Mapping[str, Mapping[str, Any]] | None = None) -> int | None:
    """Model rows :func:`explain_targets` runs for ``targets`` of one image (what its progress counts): 1 + K per
    one-forward pass (1 when its methods need no gradient), each other method its own rows on K images
    (``geometry``: the image's size and the layer's channels, for the methods whose rows depend on them); None
    when a method's rows are unknown."""
    targets = list(targets)
    k = len(targets)
    names = resolve_methods(methods)
    opts = method_options(names, options)
    passes, rest = one_forward_plan(names, check_target(targets, k), opts)
    total = sum(1 + (k if p.backward(members) else 0) for p, members in passes)
    geo = Geometry(k) if geometry is None else replace(geometry, n_images=k)
    for m in rest:
        rows = _METHODS[m].estimate_rows(opts.get(m, {}), geo)
        if rows is None:
            return None
        total += rows
    return total
