"""Rows that differ from the previous row of the same image in a small region, run by recomputing only that region.

Perturbation metrics (pixel flipping, region perturbation, selectivity, IROF, ...) run a sequence of rows per image
in which each row changes a few pixels of the one before. A convolution's output changes only where its window
meets a changed input, so every feature map changes only inside a box that grows by each layer's window and shrinks
by its stride. ``IncrementalRows`` keeps every intermediate feature map of the last row of each image and, for the
next row, recomputes each map only inside that box (one crop per image, the crops of a batch of images stacked,
convolutions run on the crop with its halo), writing the crop back; a map whose box covers most of it, and every
layer it cannot localise (pooling over the image, linear layers), is recomputed whole from the kept maps.

The graph is the model's ATen operations, traced once with fake tensors (``make_fx``), in eval mode (as the
metrics' rows run) and functionalized (in-place operations such as ``out += x`` become new maps, views become
copies), so a forward whose branches depend on the data is refused rather than specialised, and so is one that
changes its parameters, buffers or inputs in place; the folded copy (``folded_model``) is traced, so BatchNorms are
already in the convolutions. Supported localised operations: 2-D convolutions (any stride, dilation, groups and
zero padding, including a separate non-negative zero ``constant_pad_nd`` before them), 2-D max pooling (padding
counts as minus infinity) and average pooling (padding as zeros where it counts, else the map runs whole); both
without ``ceil_mode``; element-wise functions of
one feature map (activations, scalar arithmetic, broadcast per-channel or per-image operands, per-position maps of
one image such as a parameter) and element-wise sums / products of two maps; an operand varying over the rows or
columns only makes its operation run whole. The result equals the full forward pass up to float rounding (the same
sums, the crop's convolution tiled differently): checked when the trace is made, on one image and three
successive changed patches (inside, at the top-left and at the bottom-right corner, where padding meets the box),
to 1e-4 of the largest output, else the model runs whole.
"""
from __future__ import annotations

import contextlib
import operator
import weakref
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from interpretorch.attribution.folded import folded_model
from interpretorch.capture import frozen
from interpretorch.models.layers import global_hooks_active, has_hooks

__all__ = ["IncrementalRows", "disabled", "incremental_rows"]

aten = torch.ops.aten

# element-wise functions of their first argument (the other arguments are numbers)
_UNARY = {aten.hardtanh.default, aten.relu.default, aten.sigmoid.default, aten.silu.default, aten.gelu.default,
          aten.hardswish.default, aten.hardsigmoid.default, aten.leaky_relu.default, aten.elu.default,
          aten.tanh.default, aten.clamp.default, aten.clamp_min.default, aten.clamp_max.default,
          aten.mul.Scalar, aten.add.Scalar, aten.sub.Scalar, aten.div.Scalar, aten.neg.default, aten.abs.default,
          aten.exp.default, aten.mish.default, aten.celu.default, aten.selu.default, aten.clone.default}


def _in_place(op):
    """The in-place form of an element-wise ATen overload (``hardtanh`` -> ``hardtanh_``), or None."""
    packet = getattr(aten, op.__name__.split(".")[0] + "_", None)
    return getattr(packet, op._overloadname, None) if packet is not None else None


_IN_PLACE = {op: _in_place(op) for op in _UNARY}
# element-wise functions of two tensors (broadcasting)
_BINARY = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.maximum.default,
           aten.minimum.default}
# a map recomputed inside a box covering more than this share of it is recomputed whole
FULL_SHARE = 0.5
# the kept maps of one sequence of rows may take this many bytes (``IncrementalRows.rows_within``)
STATE_BYTES = 1 << 30
# reshapes traced on contiguous rows; the kept maps are channels-last, which a view cannot always follow
_RESHAPES = {aten.view.default, aten._unsafe_view.default}


@dataclass
class _Box:
    """Where a (B, C, H, W) map was recomputed this row: per image the top-left corner, one size for all."""

    r0: list[int]
    c0: list[int]
    h: int
    w: int
    crop: torch.Tensor | None = None  # (B, C, h, w), the map's values inside the box

    def same(self, other: "_Box") -> bool:
        return self.h == other.h and self.w == other.w and self.r0 == other.r0 and self.c0 == other.c0


_FULL = "full"  # the map changed and was recomputed whole


def _gather(full: torch.Tensor, r0: list[int], c0: list[int], h: int, w: int, fill: float = 0.0) -> torch.Tensor:
    """(B, C, h, w) channels-last crops of a (B, C, H, W) map at per-image corners; ``fill`` outside the map."""
    b, c, hh, ww = full.shape
    outside = any(r < 0 or r + h > hh for r in r0) or any(q < 0 or q + w > ww for q in c0)
    out = torch.empty((b, h, w, c), dtype=full.dtype, device=full.device).permute(0, 3, 1, 2)
    if outside:
        out.fill_(fill)
    for i, (r, q) in enumerate(zip(r0, c0)):
        r1, r2, q1, q2 = max(r, 0), min(r + h, hh), max(q, 0), min(q + w, ww)
        if r1 < r2 and q1 < q2:
            out[i, :, r1 - r:r2 - r, q1 - q:q2 - q].copy_(full[i, :, r1:r2, q1:q2])
    return out


def _scatter(full: torch.Tensor, box: _Box) -> None:
    """Write the box's crop into the (B, C, H, W) map (the box lies inside it)."""
    for i, (r, q) in enumerate(zip(box.r0, box.c0)):
        full[i, :, r:r + box.h, q:q + box.w].copy_(box.crop[i])


def _span(lo: list[int], hi: list[int], size: int) -> tuple[list[int], int]:
    """Corners and one common length covering [lo, hi] (inclusive, per image) inside [0, size)."""
    lo = [min(max(v, 0), size - 1) for v in lo]
    hi = [min(max(v, 0), size - 1) for v in hi]
    n = max(max(b - a, 0) for a, b in zip(lo, hi)) + 1
    return [min(v, size - n) for v in lo], n


def _pair(v, default: list[int]) -> list[int]:
    """An ATen pooling argument (int, one- or two-element list, or empty for the default) as two ints."""
    if isinstance(v, int):
        return [v, v]
    v = list(v) if v is not None else []
    return list(default) if not v else (v * 2 if len(v) == 1 else v)


_MAX_POOL = aten.max_pool2d_with_indices.default
_AVG_POOL = aten.avg_pool2d.default


def _conv(x: torch.Tensor, w: torch.Tensor, b, stride, padding, dilation, groups) -> torch.Tensor:
    if (x.dtype == w.dtype == torch.float32 and x.device.type == "cpu" and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled):
        return aten.mkldnn_convolution(x.contiguous(memory_format=torch.channels_last), w, b, list(padding),
                                       list(stride), list(dilation), groups)
    return aten.convolution(x, w, b, list(stride), list(padding), list(dilation), False, [0, 0], groups)


class IncrementalRows:
    """A traced model whose rows, after a full first row per image, are recomputed only where they changed."""

    def __init__(self, graph: torch.fx.Graph, params: list[torch.Tensor],
                 constants: dict[str, torch.Tensor] | None = None) -> None:
        self.nodes = [n for n in graph.nodes]
        holders = [n for n in self.nodes if n.op == "placeholder"]
        if len(holders) != len(params) + 1:
            raise ValueError("the trace's inputs do not match the model's parameters")
        self.consts = {n: p for n, p in zip(holders[:-1], params)}
        for n in self.nodes:  # tensors the forward made itself (torch.tensor(...)), kept by the trace
            if n.op == "get_attr":
                if constants is None or n.target not in constants:
                    raise ValueError(f"the trace's constant {n.target!r} is missing")
                self.consts[n] = constants[n.target]
        if any(isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable for n in self.nodes):
            raise ValueError("the model changes its parameters or inputs in place")  # would change the user's
        self.input = holders[-1]
        self.output = next(n for n in self.nodes if n.op == "output")
        out = self.output.args[0]
        self.result = out[0] if isinstance(out, (list, tuple)) and len(out) == 1 else out
        if not isinstance(self.result, torch.fx.Node):
            raise ValueError("the model must return one tensor")
        self.calls = [n for n in self.nodes if n.op == "call_function"]
        self.shape = {n: tuple(n.meta["val"].shape) for n in self.nodes
                      if isinstance(n.meta.get("val"), torch.Tensor)}
        self.shape.update({n: tuple(v.shape) for n, v in self.consts.items() if isinstance(v, torch.Tensor)})
        # a zero constant_pad_nd read only by 2-D convolutions is folded into their windows
        self.fused = {n for n in self.calls if n.target is aten.constant_pad_nd.default
                      and (len(n.args) < 3 or n.args[2] == 0) and len(n.args[1]) == 4 and min(n.args[1]) >= 0
                      and n.users
                      and all(self._conv2d(u) and u.args[0] is n for u in n.users)}
        # pooling windows recomputed in boxes: node -> (kernel, stride, padding, dilation); a max pool's values
        # are its first output (read through getitem), its indices must go unread
        self.pools: dict = {}
        self.picks: set = set()  # getitem(max pool, 0): the pooled map itself
        self.unread: set = set()  # getitem(max pool, 1): its indices, read by nothing, not computed
        for n in self.calls:
            pool = self._pool_args(n)
            if pool is not None:
                self.pools[n] = pool
                if n.target is _MAX_POOL:
                    self.shape[n] = tuple(n.meta["val"][0].shape)
                    self.picks.update(u for u in n.users if u.args[1] == 0)
                    self.unread.update(u for u in n.users if u.args[1] != 0)
        # maps read only by element-wise functions of them (a convolution before its activation): those reuse
        # the map's crop, so it is not kept between rows; whole, it lives until its readers have run
        self.transient = {n for n in self.calls if n not in self.fused and n is not self.result and n.users
                          and n not in self.picks and n not in self.pools
                          and len(self.shape.get(n, ())) == 4
                          and all(u.target in _UNARY and u.args[0] is n and n not in u.args[1:] for u in n.users)}
        self.state: dict = {}
        self.rows = 0  # rows this object ran, counting each changed row once

    @staticmethod
    def _pool_args(n: torch.fx.Node) -> tuple | None:
        """(kernel, stride, padding, dilation) of a 2-D pooling node whose windows can be recomputed in a box."""
        if n.op != "call_function" or n.target not in (_MAX_POOL, _AVG_POOL):
            return None
        a = list(n.args) + [None] * 7
        kernel = _pair(a[1], [])
        stride = _pair(a[2], kernel)
        padding = _pair(a[3] if a[3] is not None else 0, [0, 0])
        if n.target is _MAX_POOL:
            dilation, ceil = _pair(a[4] if a[4] is not None else 1, [1, 1]), a[5]
            # only the values are read, each through getitem(pool, 0)
            if not all(u.target is operator.getitem and (u.args[1] == 0 or not u.users) for u in n.users):
                return None
        else:
            dilation, ceil = [1, 1], a[4]
            include_pad = a[5] if a[5] is not None else True
            if not include_pad and any(padding):  # edge windows would divide by fewer values
                return None
        if ceil or len(kernel) != 2:
            return None
        return kernel, stride, padding, dilation

    @staticmethod
    def _conv2d(n: torch.fx.Node) -> bool:
        return (n.op == "call_function" and n.target is aten.convolution.default and not n.args[6]
                and len(n.args[3]) == 2)

    def rows_within(self, budget: int = STATE_BYTES) -> int:
        """How many images' kept maps fit in ``budget`` bytes (at least 1)."""
        kept = [self.input] + [n for n in self.calls
                               if n not in self.fused and n not in self.transient and n not in self.unread]
        per = 0
        for n in kept:
            val = n.meta.get("val")
            if isinstance(val, torch.Tensor) and val.dim() > 0 and val.shape[0] > 0:
                per += val.numel() // val.shape[0] * val.element_size()
        return max(1, budget // max(per, 1))

    def _release(self, n: torch.fx.Node, done: set) -> None:
        """Drop the whole maps of ``n``'s transient inputs once all their readers have run."""
        for a in n.all_input_nodes:
            if a in self.transient and all(u in done for u in a.users):
                self.state.pop(a, None)

    # ------------------------------------------------------------------ whole passes

    def _value(self, a):
        if isinstance(a, torch.fx.Node):
            return self.consts[a] if a in self.consts else self.state[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self._value(v) for v in a)
        return a

    def _whole(self, n: torch.fx.Node) -> torch.Tensor:
        for a in n.all_input_nodes:
            if a in self.transient and a not in self.state:
                raise RuntimeError(f"internal: {n.name} runs whole but its input {a.name} was not kept")
        if self._conv2d(n):
            src = n.args[0]
            if src in self.fused:
                x = aten.constant_pad_nd(self._value(src.args[0]), src.args[1], 0.0)
            else:
                x = self._value(src)
            return _conv(x, self._value(n.args[1]), self._value(n.args[2]), n.args[3], n.args[4], n.args[5],
                         n.args[8])
        if n.target in _RESHAPES:
            return aten.reshape(self._value(n.args[0]), n.args[1])
        if n in self.pools and n.target is _MAX_POOL:  # its indices go unread: not computed, not kept
            kernel, stride, padding, dilation = self.pools[n]
            return aten.max_pool2d(self._value(n.args[0]), kernel, stride, padding, dilation, False), None
        return self._call(n, self._value(n.args))

    def _call(self, n: torch.fx.Node, args: list | tuple) -> torch.Tensor:
        """Run ``n`` on ``args``; a function of a transient map that is its only reader overwrites the map."""
        op = n.target
        if n.target in _UNARY and n.args and n.args[0] in self.transient and len(n.args[0].users) == 1:
            op = _IN_PLACE.get(n.target) or op
        return op(*args, **{k: self._value(v) for k, v in n.kwargs.items()})

    def start(self, x: torch.Tensor) -> torch.Tensor:
        """Run (B, C, H, W) rows whole, keep their maps, and return the outputs."""
        traced = self.shape.get(self.input)
        if traced is not None and tuple(x.shape) != traced:
            raise ValueError(f"rows of shape {tuple(x.shape)} given to a trace of rows of shape {traced}")
        self.state = {self.input: x.contiguous(memory_format=torch.channels_last).clone()}
        done: set = set()
        for n in self.calls:
            if n not in self.fused and n not in self.unread:
                self.state[n] = self._whole(n)
                done.add(n)
                self._release(n, done)
        self.rows += x.shape[0]
        return self.state[self.result].clone()  # the kept map changes in place at the next step

    # ------------------------------------------------------------------ changed rows

    def _input_box(self, x: torch.Tensor):
        if self.input not in self.state:
            raise ValueError("step continues rows given to start: call start first")
        old = self.state[self.input]
        if x.shape != old.shape:
            raise ValueError(f"rows of shape {tuple(x.shape)} do not continue rows of shape {tuple(old.shape)}")
        diff = (x != old).any(dim=1)  # (B, H, W)
        rows, cols = diff.any(dim=2), diff.any(dim=1)
        if not bool(rows.any()):
            return None
        hh, ww = rows.shape[1], cols.shape[1]
        ar_h, ar_w = torch.arange(hh), torch.arange(ww)
        top = torch.where(rows, ar_h, hh).min(1).values.tolist()
        bottom = torch.where(rows, ar_h, -1).max(1).values.tolist()
        left = torch.where(cols, ar_w, ww).min(1).values.tolist()
        right = torch.where(cols, ar_w, -1).max(1).values.tolist()
        for i, b in enumerate(bottom):
            if b < 0:  # an unchanged image: a one-pixel box (recomputing unchanged values is harmless)
                top[i] = bottom[i] = left[i] = right[i] = 0
        r0, h = _span(top, bottom, hh)
        c0, w = _span(left, right, ww)
        self.state[self.input] = x.contiguous(memory_format=torch.channels_last).clone()
        if h * w > FULL_SHARE * hh * ww:
            return _FULL
        return _Box(r0, c0, h, w)

    def _window(self, n: torch.fx.Node, box: _Box, x: torch.Tensor, kernel, stride, padding, dilation,
                fill: float = 0.0) -> tuple[_Box | str, torch.Tensor | None]:
        """The box of ``n``'s output that a sliding window (kernel, stride, top / left padding, dilation) over a
        map changed inside ``box`` reaches, and the input window it reads (``fill`` outside ``x``)."""
        kh, kw = kernel
        pt, pl = padding
        ho, wo = self.shape[n][-2:]
        sh, sw = stride
        dh, dw = dilation
        lo_r = [-((-(r + pt - (kh - 1) * dh)) // sh) for r in box.r0]
        hi_r = [(r + box.h - 1 + pt) // sh for r in box.r0]
        lo_c = [-((-(q + pl - (kw - 1) * dw)) // sw) for q in box.c0]
        hi_c = [(q + box.w - 1 + pl) // sw for q in box.c0]
        r0, h = _span(lo_r, hi_r, ho)
        c0, wd = _span(lo_c, hi_c, wo)
        if h * wd > FULL_SHARE * ho * wo:
            return _FULL, None
        win = _gather(x, [r * sh - pt for r in r0], [q * sw - pl for q in c0], (h - 1) * sh + (kh - 1) * dh + 1,
                      (wd - 1) * sw + (kw - 1) * dw + 1, fill)
        return _Box(r0, c0, h, wd), win

    def _conv_box(self, n: torch.fx.Node, box: _Box, src: torch.fx.Node) -> _Box | str:
        stride, padding, dilation, groups = n.args[3], n.args[4], n.args[5], n.args[8]
        w = self._value(n.args[1])
        pt, pl = padding
        if src in self.fused:
            pads = src.args[1]  # [left, right, top, bottom]
            pt, pl = pt + pads[2], pl + pads[0]
        x = self.state[src.args[0] if src in self.fused else src]
        out, win = self._window(n, box, x, w.shape[-2:], stride, [pt, pl], dilation)
        if out is not _FULL:
            out.crop = _conv(win, w, self._value(n.args[2]), stride, [0, 0], dilation, groups)
        return out

    def _pool_box(self, n: torch.fx.Node, box: _Box) -> _Box | str:
        kernel, stride, padding, dilation = self.pools[n]
        if n.target is _MAX_POOL:  # padding is minus infinity to a max pool
            out, win = self._window(n, box, self.state[n.args[0]], kernel, stride, padding, dilation, float("-inf"))
            if out is not _FULL:
                out.crop = aten.max_pool2d(win, kernel, stride, [0, 0], dilation, False)
            return out
        out, win = self._window(n, box, self.state[n.args[0]], kernel, stride, padding, dilation)
        if out is not _FULL:  # padding counts as zeros here (else the node is not in ``pools``)
            divisor = n.args[6] if len(n.args) > 6 else None
            out.crop = aten.avg_pool2d(win, kernel, stride, [0, 0], False, True, divisor)
        return out

    def _spatial(self, a, n: torch.fx.Node) -> bool:
        """Whether argument ``a`` is a map with the node's rows and columns, of its batch size or of one image."""
        sa, sn = self.shape.get(a, ()) if isinstance(a, torch.fx.Node) else (), self.shape.get(n, ())
        return len(sa) == 4 and len(sn) == 4 and sa[-2:] == sn[-2:] and sa[0] in (1, sn[0])

    def _elementwise(self, n: torch.fx.Node, boxes: dict) -> _Box | str:
        maps = [a for a in n.args if self._spatial(a, n)]
        others = [a for a in n.args if isinstance(a, torch.fx.Node) and a not in maps]
        if not maps or any(boxes.get(a) is not None for a in others):
            return _FULL
        # the other operands must broadcast over the rows and columns (per image or per channel values)
        if any(a not in self.shape or any(d != 1 for d in self.shape[a][-2:]) for a in others):
            return _FULL
        changed = [boxes[a] for a in maps if boxes.get(a) is not None]
        if any(b is _FULL for b in changed):
            return _FULL
        first = changed[0]
        if all(b.same(first) for b in changed) and len(changed) == len(maps):
            box = _Box(first.r0, first.c0, first.h, first.w)
        else:  # the union of the boxes, one size for all images
            hh, ww = self.shape[n][-2:]
            r0, h = _span([min(v) for v in zip(*[b.r0 for b in changed])],
                          [max(v) for v in zip(*[[r + b.h - 1 for r in b.r0] for b in changed])], hh)
            c0, w = _span([min(v) for v in zip(*[b.c0 for b in changed])],
                          [max(v) for v in zip(*[[q + b.w - 1 for q in b.c0] for b in changed])], ww)
            if h * w > FULL_SHARE * hh * ww:
                return _FULL
            box = _Box(r0, c0, h, w)

        def crop(a):
            if isinstance(a, torch.fx.Node) and a in maps:
                b = boxes.get(a)
                if b is not None and b.crop is not None and b.same(box):
                    return b.crop
                v = self._value(a)  # of the rows' batch size, or one image's (a parameter)
                return _gather(v.expand(len(box.r0), *v.shape[1:]), box.r0, box.c0, box.h, box.w)
            return self._value(a)
        box.crop = self._call(n, [crop(a) for a in n.args])
        return box

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Run rows continuing the last rows of the same images; return the outputs."""
        first = self._input_box(x)
        self.rows += x.shape[0]
        if first is None:
            return self.state[self.result].clone()
        boxes: dict = {self.input: first}
        done: set = set()
        for n in self.calls:
            if n in self.fused or n in self.unread:
                continue
            done.add(n)
            srcs = [a for a in n.all_input_nodes if a not in self.consts]
            srcs = [s.args[0] if s in self.fused else s for s in srcs]
            if all(boxes.get(s) is None for s in srcs):
                continue
            box: _Box | str = _FULL
            if any(boxes.get(s) is _FULL for s in srcs):
                box = _FULL
            elif self._conv2d(n):
                src = n.args[0]
                box = self._conv_box(n, boxes[src.args[0] if src in self.fused else src], src)
            elif n in self.pools:
                box = self._pool_box(n, boxes[n.args[0]])
            elif n in self.picks:
                box = boxes[n.args[0]]
            elif (n.target in _UNARY or n.target in _BINARY) and len(self.shape.get(n, ())) == 4:
                box = self._elementwise(n, boxes)
            if box is _FULL:
                self.state[n] = self._whole(n)
            elif n not in self.transient and not (n in self.pools and n.target is _MAX_POOL):
                _scatter(self.state[n], box)  # a max pool's values are written through its getitem
            boxes[n] = box
            self._release(n, done)
        return self.state[self.result].clone()  # the kept map changes in place at the next step


_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()
_DISABLED = [0]


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within this block ``incremental_rows`` gives None, so every row runs whole (for comparisons)."""
    _DISABLED[0] += 1
    try:
        yield
    finally:
        _DISABLED[0] -= 1


def _trace(net: nn.Module, x: torch.Tensor) -> IncrementalRows | None:
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.func import functional_call, functionalize

    named = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    names = list(named)
    params = [named[k] for k in names]

    def fn(*args):
        return functional_call(net, dict(zip(names, args[:-1])), (args[-1],))
    with torch.no_grad():  # functionalized: in-place operations become new maps, views copies
        gm = make_fx(functionalize(fn, remove="mutations_and_views"), tracing_mode="fake")(*params, x.detach())
    constants = {}
    for n in gm.graph.nodes:
        if n.op == "get_attr":
            v = gm
            for part in n.target.split("."):
                v = getattr(v, part)
            constants[n.target] = v
    return IncrementalRows(gm.graph, params, constants)


def _check(inc: IncrementalRows, net: nn.Module, x: torch.Tensor) -> bool:
    """Whether one image and three successive rows changing a patch (inside, at the top-left corner, at the
    bottom-right corner, where padding meets the box) give the model's outputs (to 1e-4 of the largest)."""
    one = x[:1].detach()
    h, w = one.shape[-2:]
    ph, pw = max(1, h // 8), max(1, w // 8)
    rows = [one.clone()]
    for r, c in ((h // 3, w // 2), (0, 0), (h - ph, w - pw)):
        moved = rows[-1].clone()
        moved[..., r:r + ph, c:c + pw] = 0.0
        rows.append(moved)
    with torch.no_grad():
        refs = [net(r) for r in rows]
        outs = [inc.start(rows[0]).clone()] + [inc.step(r).clone() for r in rows[1:]]
    inc.state = {}
    inc.rows = 0
    for ref, out in zip(refs, outs):
        scale = float(ref.abs().max()) + 1e-12
        if out.shape != ref.shape or not bool(torch.isfinite(out).all()) or float((out - ref).abs().max()) > 1e-4 * scale:
            return False
    return True


def incremental_rows(model: nn.Module, x: torch.Tensor) -> IncrementalRows | None:
    """A fresh ``IncrementalRows`` for ``model`` and rows of ``x``'s shape (batch size included; traces cached per
    model), or None where the model cannot be traced or localised (not on the CPU, hooks, data-dependent branches,
    outputs that differ from the model's)."""
    if (_DISABLED[0] or not isinstance(model, nn.Module) or x.device.type != "cpu" or x.dim() != 4
            or global_hooks_active() or any(has_hooks(m) for m in model.modules())):
        return None
    with frozen(model):  # traced and checked in eval mode (as the metrics' rows run), the model's flags restored
        return _engine(model, x)


def _engine(model: nn.Module, x: torch.Tensor) -> IncrementalRows | None:
    net = folded_model(model, x)
    tensors = tuple((id(t), t.data_ptr(), t._version) for t in list(model.parameters()) + list(model.buffers()))
    sig = (tuple(id(m) for m in model.modules()), tensors, tuple(x.shape[1:]), x.dtype)
    try:
        entry = _CACHE.get(model)
    except TypeError:
        return None
    if entry is None or entry[0] != sig:
        try:  # checked once, on one image; the rows' batch size gets its own trace of the same operations
            one = _trace(net, x[:1])
            ok = _check(one, net, x)
        except Exception:  # a model the trace cannot follow runs whole
            one, ok = None, False
        entry = (sig, {1: one} if ok else None)
        _CACHE[model] = entry
    traces = entry[1]
    if traces is None:
        return None
    b = x.shape[0]
    if b not in traces:
        try:
            traces[b] = _trace(net, x)
        except Exception:
            return None
    fresh = IncrementalRows.__new__(IncrementalRows)
    fresh.__dict__.update(traces[b].__dict__)
    fresh.state, fresh.rows = {}, 0
    return fresh
