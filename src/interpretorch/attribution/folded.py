"""The model a method evaluates when it needs only the network's function (outputs, and gradients with respect to
the inputs or to a layer it names): on the CPU, a private copy with every BatchNorm folded into the convolution
or linear layer before it, so that each BatchNorm's pass over its feature map disappears (the eval-mode function
is the same up to float rounding). EfficientNet-Lite0 (49 BatchNorms), 8 rows at 224 px in channels-last, one
thread, loaded machine: forward 0.34 -> 0.24 s of CPU time.

The user's model is never changed. The copy is kept for the next call while the model's parameters, buffers and
modules stay the same (one copy per model, so a model with BatchNorm costs its parameters' memory twice), and it
is made only where it is safe: no hooks on the model (a hook would no longer see the calls), tensor outputs, and
the copy's output on one image equal to the model's (else the model itself is used). A layer that a method
captures keeps its BatchNorm (``keep``), so the captured values are the model's.

Rows run without gradients (the feature methods, LIME, KernelSHAP) go through ``forward_only_model``: a second
copy sharing the folded copy's weights, in which (1) an activation (ReLU, ReLU6, SiLU, ...) overwrites its input
where one recorded pass shows that nothing reads that input afterwards (not a later call, not the model's input,
output, parameters or buffers), so each activation allocates and writes no fresh feature map, and (2) 1x1
convolutions on channels-last float32 rows (two or more, or one large one) run through oneDNN on one thread, where
PyTorch itself sends them to its slower reference kernel (with more threads or 16 rows PyTorch picks oneDNN
itself). Both keep the function (in-place: the same numbers; oneDNN: the same sums in another order, checked on
one image to 1e-4 of its largest output). EfficientNet-Lite0, 8 rows at 224 px, one thread, loaded machine:
forward 1.59x faster than the folded copy alone (best of 7 interleaved, CPU time).
"""
from __future__ import annotations

import copy
import weakref

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from interpretorch.attribution.lrp import merge_batchnorm
from interpretorch.capture import frozen
from interpretorch.models.layers import has_hooks

__all__ = ["folded_model", "forward_only_model", "forward_only_rows"]

_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_COPIES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _signature(model: nn.Module, x: torch.Tensor, keep: tuple[str, ...]) -> tuple:
    """What the folded copy depends on: the modules, every parameter and buffer (object, storage, version), the
    row shape and the unfolded layers."""
    tensors = tuple((id(t), t.data_ptr(), t._version) for t in list(model.parameters()) + list(model.buffers()))
    return (tuple(id(m) for m in model.modules()), tensors, tuple(x.shape[1:]), x.dtype, keep)


def _hooked(model: nn.Module) -> bool:
    """Whether any module of ``model`` carries a hook, or a global module hook is registered (a copy would hide
    the model's calls from the one and show the other modules it never has)."""
    from torch.nn.modules import module as torch_module

    if (torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks  # noqa: SLF001 - torch's own
            or torch_module._global_backward_hooks or torch_module._global_backward_pre_hooks):  # noqa: SLF001
        return True
    return any(has_hooks(m) for m in model.modules())


def _fold(model: nn.Module, x: torch.Tensor, keep: tuple[str, ...]) -> nn.Module | None:
    """The folded copy, or None where folding merges nothing or does not keep the function."""
    try:
        work = copy.deepcopy(model).eval()
    except Exception:  # a model that cannot be copied is evaluated as it is
        return None
    for p in work.parameters():
        p.requires_grad_(False)
    one = x[:1].detach()
    with frozen(model):
        ref = model(one)
    if not isinstance(ref, torch.Tensor) or not merge_batchnorm(work, one, keep=keep):
        return None
    with torch.no_grad():
        out = work(one)
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
        return None
    scale = float(ref.detach().abs().max()) + 1e-12
    if not bool(torch.isfinite(out).all()) or float((out - ref).abs().max()) > 1e-4 * scale:
        return None  # e.g. a layer's output also used without its BatchNorm
    return work


def folded_model(model: nn.Module, x: torch.Tensor, keep: str | None = None) -> nn.Module:
    """``model``, or on the CPU a cached copy computing the same function with its BatchNorms folded into the
    layers before them; ``keep`` names a layer (or ``layer:site``) whose BatchNorm pair stays as it is."""
    if not isinstance(model, nn.Module) or x.device.type != "cpu" or not any(
            isinstance(m, _BATCHNORM) for m in model.modules()) or _hooked(model):
        return model
    kept = () if keep is None else (keep.split(":")[0],)
    sig = _signature(model, x, kept)
    try:
        entry = _COPIES.get(model)
    except TypeError:
        return model
    if entry is None or entry[0] != sig:
        entry = (sig, _fold(model, x, kept))
        _COPIES[model] = entry
    return entry[1] if entry[1] is not None else model


# ------------------------------------------------------------------------------------- the no-grad rows' copy

# Exact types whose in-place form computes the same function (a subclass may have its own forward: left alone).
_IN_PLACE = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.SiLU, nn.Hardswish,
             nn.Hardsigmoid, nn.Mish)
_FORWARD_ONLY: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _tensors(value) -> list[torch.Tensor]:
    """The tensors in ``value`` (nested tuples, lists and dicts)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _storage(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage().data_ptr()
    except Exception:  # no storage (meta, sparse, a subclass): treated as unknown
        return None


class _Reads(TorchFunctionMode):
    """Records the storages every torch call reads (the activations' inputs are kept alive by the caller, so no
    other tensor takes their memory while it records)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[set[int | None]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.calls.append({_storage(t) for t in _tensors((args, kwargs))})
        return out


def _in_place_safe(work: nn.Module, one: torch.Tensor) -> tuple[list[nn.Module], torch.Tensor]:
    """The activation modules of ``work`` whose input nothing reads after them (no later torch call, not the
    model's input, output, parameters or buffers), found by running ``one`` once (these may overwrite it), and
    the output of that run."""
    acts = [m for m in work.modules() if type(m) in _IN_PLACE and not getattr(m, "inplace", True)]
    rec = _Reads()
    uses: list[tuple[nn.Module, torch.Tensor | None, int, list]] = []

    def pre(mod, args):
        first = args[0] if len(args) == 1 and isinstance(args[0], torch.Tensor) else None
        uses.append((mod, first, len(rec.calls), []))

    def post(mod, args, out):
        for u in reversed(uses):
            if u[0] is mod and not u[3]:
                u[3].append(len(rec.calls))
                break
    handles = [h for m in acts for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    try:
        with torch.no_grad(), rec:
            out = work(one)
    finally:
        for h in handles:
            h.remove()
    fixed = {_storage(t) for t in [one, *work.parameters(), *work.buffers(), *_tensors(out)]}
    last_read: dict[int | None, int] = {}  # storage -> the last call reading it
    for k, call in enumerate(rec.calls):
        for r in call:
            last_read[r] = k
    unsafe = set()
    for mod, t, _start, end in uses:
        s = _storage(t) if t is not None else None
        if s is None or s in fixed or not end or last_read.get(s, -1) >= end[0]:
            unsafe.add(mod)
    return [m for m in acts if m not in unsafe and any(u[0] is m for u in uses)], out


def _conv_arguments(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return input, weight, bias, stride, padding, dilation, groups


def _pair_list(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(k) for k in v]


_PLAIN = (torch.Tensor, nn.Parameter)
# Routed: two or more rows, or one row of at least this many values. PyTorch's slow path computes one matrix
# product per row, which oneDNN beats for several rows; for one small row the routing's own cost (a Python function
# mode, about 70 us per convolution) is more than it saves: routing every 1x1 convolution of one 64 px Lite0 row
# took it to 0.64x. With this rule, in place + routed against the folded copy, best of 5 interleaved, loaded machine:
# 1 row per call 0.98x (64 px), 1.06x (128 px), 1.04x (224 px); 8 rows 1.20x, 2.29x, 1.94x.
ROUTE_MIN_VALUES = 1 << 20


class _OneDNN(TorchFunctionMode):
    """Runs the 1x1 convolutions that PyTorch sends to its slow path on one thread (channels-last float32 rows,
    stride and dilation 1, fewer than 16 rows) through oneDNN, the kernel it picks itself with more threads or
    rows: the same sums in another order."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.conv2d:
            x, w, b, stride, padding, dilation, groups = _conv_arguments(*args, **kwargs)
            if (type(x) is torch.Tensor and type(w) in _PLAIN and (b is None or type(b) in _PLAIN)
                    and x.dtype == w.dtype == torch.float32 and x.device.type == "cpu" and x.dim() == 4
                    and w.dim() == 4 and tuple(w.shape[-2:]) == (1, 1) and x.shape[0] < 16
                    and not isinstance(padding, str) and _pair_list(stride) == [1, 1]
                    and _pair_list(dilation) == [1, 1] and x.is_contiguous(memory_format=torch.channels_last)):
                return torch.ops.aten.mkldnn_convolution(x, w, b, _pair_list(padding), [1, 1], [1, 1], groups)
        return func(*args, **kwargs)


def _route_pointwise(conv: nn.Conv2d) -> None:
    """Give ``conv`` (of the private copy) a forward that runs its 1x1 convolution through oneDNN where PyTorch
    would take its slow path (one thread, no gradients)."""
    forward = conv.forward

    def routed(*args, **kwargs):
        x = args[0] if args else None
        if (torch.get_num_threads() != 1 or torch.is_grad_enabled() or not torch.backends.mkldnn.enabled
                or not isinstance(x, torch.Tensor) or x.dim() != 4
                or (x.shape[0] < 2 and x.numel() < ROUTE_MIN_VALUES)):
            return forward(*args, **kwargs)
        with _OneDNN():
            return forward(*args, **kwargs)
    conv.forward = routed


def _forward_only(base: nn.Module, x: torch.Tensor) -> nn.Module | None:
    """A copy of ``base`` sharing its tensors, with in-place activations where safe and oneDNN 1x1 convolutions on
    one thread; None where it would change nothing or not compute the model's function."""
    params = list(base.parameters()) + list(base.buffers())
    try:
        work = copy.deepcopy(base, memo={id(t): t for t in params}).eval()
    except Exception:
        return None
    convs = [m for m in work.modules() if isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1)
             and tuple(m.stride) == (1, 1) and tuple(m.dilation) == (1, 1)] \
        if torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled else []
    if not convs and not any(type(m) in _IN_PLACE and not getattr(m, "inplace", True) for m in work.modules()):
        return None
    one = x[:1].detach()
    acts, ref = _in_place_safe(work, one)  # ref: base's function, which folded_model checked against the model's
    if not isinstance(ref, torch.Tensor) or (not acts and not convs):
        return None
    for m in acts:
        m.inplace = True
    for m in convs:
        _route_pointwise(m)
    with torch.no_grad():
        out = work(one.contiguous(memory_format=torch.channels_last) if one.dim() == 4 else one)
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
        return None
    scale = float(ref.detach().abs().max()) + 1e-12
    if not bool(torch.isfinite(out).all()) or float((out - ref).abs().max()) > 1e-4 * scale:
        return None
    return work


def forward_only_model(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The model a method's no-gradient rows run on: on the CPU, a cached copy of ``folded_model(model, x)``
    sharing its weights whose activations overwrite their inputs where nothing else reads them and whose 1x1
    convolutions use oneDNN on one thread; elsewhere (or where that would not keep the function)
    ``folded_model(model, x)``. Only for calls without gradients."""
    base = folded_model(model, x)
    if not isinstance(model, nn.Module) or x.device.type != "cpu" or _hooked(model):
        return base
    sig = _signature(model, x, ())
    try:
        entry = _FORWARD_ONLY.get(model)
    except TypeError:
        return base
    if entry is None or entry[0] != sig:
        try:
            work = _forward_only(base, x)
        except Exception:  # a model this cannot analyse runs as folded_model gives it
            work = None
        entry = (sig, work)
        _FORWARD_ONLY[model] = entry
    return entry[1] if entry[1] is not None else base


def forward_only_rows(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.memory_format]:
    """``forward_only_model(model, x)`` and the memory format its rows should take: channels-last where it is its
    own copy (checked on one channels-last row when it was made, so no further check row), else contiguous."""
    net = forward_only_model(model, x)
    own = x.dim() == 4 and net is not model and net is not folded_model(model, x)
    return net, torch.channels_last if own else torch.contiguous_format
