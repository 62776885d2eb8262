"""Concept Relevance Propagation (Achtibat et al. 2023): LRP restricted to a concept at a layer.

A *condition* says which part of a layer's relevance is sent further down: one channel, a set of channels, or a
direction in channel space (a CAV, linking to TCAV). The LRP pass of :mod:`interpretorch.attribution.lrp` (same
rules, composites and BatchNorm canonizer, on a copy of the model) runs from the class logit down to the layer;
there the relevance of the layer's output is replaced by its part in the condition (channels outside the set
set to zero; for a direction ``v`` of unit length, the relevance vector at every position projected on ``v``)
and the pass goes on to the input. The input relevance is then "where in this image concept c mattered for
class y". Every LRP rule is linear in the relevance it receives, so the conditional relevances of all
channels of a layer (or of any orthonormal basis of directions) add up to the plain LRP relevance.

Also here: the relevance of every channel of a layer for a class (the concept relevance, summed over positions),
the attribution graph (which lower-layer channels carry the relevance of a concept, conditioned on the path
above them), and relevance-maximisation reference images (per channel, the images of a stream where the channel
had the most relevance for their class, kept with the activation-maximisation choice beside them; resumable).
"""
from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence, Union

import torch
from torch import nn

from interpretorch.attribution.lrp import Rule, relevance_copy
from interpretorch.capture import frozen
from interpretorch.core.batching import chunks, rows_per_pass
from interpretorch.core.fingerprint import model_fingerprint
from interpretorch.core.inputs import check_inputs
from interpretorch.core.runningstats import TopImages
from interpretorch.core.targets import (Target, check_finite, check_target, split_target, target_indices,
                                        target_scores)
from interpretorch.models.layers import get_layer

Concept = Union[int, Sequence[int], torch.Tensor]


@dataclass
class LRPCopy:
    """A canonized copy of a model whose backward pass is LRP (hooks installed), and what was merged."""

    model: nn.Module
    merged: list
    state: dict


@contextmanager
def lrp_copy(model: nn.Module, example: torch.Tensor, *, composite: str | None = "epsilon_plus",
             rule: str | None = None, epsilon: float = 1e-6, gamma: float = 0.25,
             low: torch.Tensor | float | None = None, high: torch.Tensor | float | None = None,
             canonize: bool = True) -> Iterator[LRPCopy]:
    """A copy of ``model`` set up as :func:`interpretorch.attribution.lrp.lrp` sets it up (the same rules per
    layer, BatchNorm merged when ``canonize``), whose gradient is LRP relevance; the user's model is untouched."""
    if composite is None and rule is None:
        raise ValueError("give an LRP composite or a rule")
    if composite is not None and rule is not None:
        raise ValueError("give either an LRP composite or a rule (with composite=None), not both")
    the_rule = None if rule is None else Rule(rule, epsilon=epsilon if rule == "epsilon" else 1e-6, gamma=gamma,
                                              low=low, high=high)
    work, merged, state, handles = relevance_copy(model, example, composite, the_rule, None, epsilon, gamma, low,
                                                  high, canonize)
    try:
        with frozen(work, grad=True):
            yield LRPCopy(work, merged, state)
    finally:
        for h in handles:
            h.remove()


def _condition_matrix(concept: Concept, channels: int, layer: str) -> torch.Tensor:
    """The (C, C) projection a condition applies to the relevance vector at each position."""
    if isinstance(concept, torch.Tensor) and concept.is_floating_point():
        v = concept.detach().reshape(-1).double()
        if v.numel() != channels:
            raise ValueError(f"a direction at layer {layer!r} needs {channels} entries, got {v.numel()}")
        norm = v.norm()
        if not torch.isfinite(norm) or norm == 0:
            raise ValueError(f"the direction at layer {layer!r} is zero or not finite")
        v = v / norm
        return torch.outer(v, v)
    if isinstance(concept, torch.Tensor):
        concept = concept.reshape(-1).tolist()
    idx = [concept] if isinstance(concept, int) else list(concept)
    if not idx or not all(isinstance(c, int) and not isinstance(c, bool) for c in idx):
        raise TypeError(f"a condition is a channel index, a list of channel indices or a float direction, "
                        f"got {concept!r}")
    bad = [c for c in idx if not 0 <= c < channels]
    if bad:
        raise ValueError(f"channel {bad[0]} is outside layer {layer!r}'s {channels} channels (0-{channels - 1})")
    m = torch.zeros(channels, dtype=torch.float64)
    m[idx] = 1.0
    return torch.diag(m)


def _apply(proj: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Rows' relevance (N, C, ...) with the per-row (N, C, C) projection applied over the channel axis."""
    shape = r.shape
    flat = r.reshape(shape[0], shape[1], -1)
    return torch.bmm(proj.to(r), flat).reshape(shape)


def _layer_channels(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, int]:
    """The channel count of each layer's output for one image."""
    found: dict[str, int] = {}
    handles = [get_layer(model, n).register_forward_hook(
        lambda _m, _i, out, n=n: found.__setitem__(n, int(out.shape[1]) if isinstance(out, torch.Tensor)
                                                   and out.dim() >= 2 else -1)) for n in layers]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    for n in layers:
        if found.get(n, -1) < 1:
            raise ValueError(f"layer {n!r} gives no (B, C, ...) tensor output to condition on")
    return found


def _relevance_pass(work: LRPCopy, rows: torch.Tensor, target: Target,
                    conditions: Mapping[str, torch.Tensor], record: Sequence[str]
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
    """One LRP pass of ``rows`` with per-row projections ``conditions[layer]`` (N, C, C) at the layers' outputs;
    returns the input relevance, the relevance reaching each ``record`` layer's output (after its own condition),
    the target scores and indices."""
    recorded: dict[str, torch.Tensor] = {}
    handles = []

    def make(name: str):
        def hook(_m, _i, out):
            if not (isinstance(out, torch.Tensor) and out.requires_grad):
                return None
            proj = conditions.get(name)

            def on_grad(g: torch.Tensor) -> torch.Tensor:
                g = g if proj is None else _apply(proj, g)
                if name in record:
                    recorded[name] = g.detach()
                return g
            out.register_hook(on_grad)
            return None
        return hook

    for name in set(conditions) | set(record):
        handles.append(get_layer(work.model, name).register_forward_hook(make(name)))
    try:
        x = rows.clone().requires_grad_(True)
        out = work.model(x.clone())
        check_finite(out)
        idx = target_indices(out, target)
        s = target_scores(out, target, idx)
        (g,) = torch.autograd.grad(s.sum(), out, retain_graph=True)
        (rel,) = torch.autograd.grad(out, x, (g * out).detach(), allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    rel = torch.zeros_like(x) if rel is None else rel.detach()
    for name in record:
        if name not in recorded:
            raise ValueError(f"no relevance reached layer {name!r}: is it on the path from the input to the output?")
    return rel, recorded, s.detach(), idx


@dataclass
class ConditionalRelevance:
    """Input relevance per image and condition, and the relevance of the conditioned layer's channels.

    ``relevance`` (B, K, C, H, W): input relevance of image b under condition k; ``heatmaps`` sums it over colour
    channels. ``concept_relevance`` (B, K): the relevance of each condition's part of the layer (summed over
    positions); ``channel_relevance`` (B, C_layer): every channel's relevance for the class, unconditioned;
    ``scores`` / ``target``: the explained class scores and indices.
    """

    relevance: torch.Tensor
    concept_relevance: torch.Tensor
    channel_relevance: torch.Tensor
    scores: torch.Tensor
    target: torch.Tensor | None
    layer: str
    conditions: list
    extras: dict = field(default_factory=dict)

    @property
    def heatmaps(self) -> torch.Tensor:
        """(B, K, H, W): the input relevance summed over colour channels."""
        return self.relevance.sum(2)


def _lrp_options(composite, rule, epsilon, gamma, canonize, x) -> dict:
    low = x.amin(dim=(2, 3), keepdim=True) if x.dim() == 4 else x.min()
    high = x.amax(dim=(2, 3), keepdim=True) if x.dim() == 4 else x.max()
    return dict(composite=composite, rule=rule, epsilon=epsilon, gamma=gamma, low=low, high=high,
                canonize=canonize)


def conditional_relevance(model: nn.Module, inputs: torch.Tensor, target: Target, layer: str,
                          concepts: Sequence[Concept], *, composite: str | None = "epsilon_plus",
                          rule: str | None = None, epsilon: float = 1e-6, gamma: float = 0.25,
                          canonize: bool = True, batch_size: int | None = None) -> ConditionalRelevance:
    """CRP: the input relevance of ``target`` restricted, at ``layer``, to each of ``concepts`` (a channel, a list
    of channels, or a float direction such as a CAV). A row is one (image, condition) pair: one forward and one
    backward each."""
    x = check_inputs(model, inputs)
    n = x.shape[0]
    target = check_target(target, n)
    if not concepts:
        raise ValueError("give at least one condition (a channel, a list of channels or a direction)")
    channels = _layer_channels(model, x, [layer])[layer]
    projs = torch.stack([_condition_matrix(c, channels, layer) for c in concepts])  # (K, C, C)
    k = projs.shape[0]
    bs = rows_per_pass(batch_size, x.device)
    opts = _lrp_options(composite, rule, epsilon, gamma, canonize, x)
    rels, crel, scores, idxs = [], [], [], []
    base_layer: list[torch.Tensor] = []
    with lrp_copy(model, x, **opts) as work:
        # every row: image i repeated for each condition; rows are image-major
        img_of = torch.arange(n).repeat_interleave(k)
        cond_of = torch.arange(k).repeat(n)
        for sl in chunks(n * k, bs):
            im, cd = img_of[sl], cond_of[sl]
            t = _rows_target(target, im)
            if isinstance(opts["low"], torch.Tensor) and opts["low"].dim() == 4:
                work.state["low"], work.state["high"] = opts["low"][im], opts["high"][im]
            rel, rec, s, idx = _relevance_pass(work, x[im], t, {layer: projs[cd]}, [layer])
            rels.append(rel)
            crel.append(rec[layer].reshape(rec[layer].shape[0], -1).sum(1))
            scores.append(s)
            if idx is not None:
                idxs.append(idx)
        # the unconditioned relevance of every channel of the layer, one pass per image
        for sl in chunks(n, bs):
            im = torch.arange(n)[sl]
            if isinstance(opts["low"], torch.Tensor) and opts["low"].dim() == 4:
                work.state["low"], work.state["high"] = opts["low"][im], opts["high"][im]
            _, rec, _, _ = _relevance_pass(work, x[im], split_target(target, sl), {}, [layer])
            r = rec[layer]
            base_layer.append(r.reshape(r.shape[0], r.shape[1], -1).sum(2))
    rel = torch.cat(rels)
    rel = rel.reshape(n, k, *rel.shape[1:])
    tgt = torch.cat(idxs).reshape(n, k)[:, 0] if idxs else None
    return ConditionalRelevance(rel, torch.cat(crel).reshape(n, k), torch.cat(base_layer),
                                torch.cat(scores).reshape(n, k)[:, 0], tgt, layer,
                                [c.tolist() if isinstance(c, torch.Tensor) else c for c in concepts],
                                {"composite": composite, "rule": rule, "forward_backward_passes": n * (k + 1)})


def _rows_target(target: Target, images: torch.Tensor) -> Target:
    """The checked target for rows that repeat the images ``images``."""
    if isinstance(target, torch.Tensor):
        return target[images]
    return target


def channel_relevance(model: nn.Module, inputs: torch.Tensor, target: Target, layers: Sequence[str], *,
                      composite: str | None = "epsilon_plus", rule: str | None = None, epsilon: float = 1e-6,
                      gamma: float = 0.25, canonize: bool = True, batch_size: int | None = None
                      ) -> dict[str, torch.Tensor]:
    """Per layer, the (B, C) relevance of every channel for ``target`` (LRP summed over positions), one pass."""
    x = check_inputs(model, inputs)
    n = x.shape[0]
    target = check_target(target, n)
    _layer_channels(model, x, layers)
    bs = rows_per_pass(batch_size, x.device)
    opts = _lrp_options(composite, rule, epsilon, gamma, canonize, x)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    with lrp_copy(model, x, **opts) as work:
        for sl in chunks(n, bs):
            if isinstance(opts["low"], torch.Tensor) and opts["low"].dim() == 4:
                work.state["low"], work.state["high"] = opts["low"][sl], opts["high"][sl]
            _, rec, _, _ = _relevance_pass(work, x[sl], split_target(target, sl), {}, list(layers))
            for name in layers:
                r = rec[name]
                parts[name].append(r.reshape(r.shape[0], r.shape[1], -1).sum(2))
    return {name: torch.cat(v) for name, v in parts.items()}


@dataclass
class GraphNode:
    """A concept (layer, channel) of an attribution graph: its relevance and the lower concepts that carry it."""

    layer: str
    channel: int
    relevance: float
    children: list["GraphNode"] = field(default_factory=list)

    def to_json(self) -> dict:
        """A nested dict: layer, channel, relevance, children."""
        return {"layer": self.layer, "channel": self.channel, "relevance": self.relevance,
                "children": [c.to_json() for c in self.children]}

    def edges(self) -> list[tuple[str, int, str, int, float]]:
        """(upper layer, upper channel, lower layer, lower channel, relevance of the lower one) for every edge."""
        out = []
        for c in self.children:
            out.append((self.layer, self.channel, c.layer, c.channel, c.relevance))
            out.extend(c.edges())
        return out


def attribution_graph(model: nn.Module, image: torch.Tensor, target: Target, layers: Sequence[str], channel: int,
                      *, top: int = 3, composite: str | None = "epsilon_plus", rule: str | None = None,
                      canonize: bool = True) -> GraphNode:
    """The attribution graph of ``channel`` at ``layers[0]`` for one image: the ``top`` channels of each next
    (lower) layer that receive the most relevance when the pass is conditioned on the path of concepts above
    them (Achtibat et al. 2023, section 4.2). ``layers`` go from the concept's layer down."""
    x = check_inputs(model, image)
    if x.shape[0] != 1:
        raise ValueError(f"an attribution graph is for one image, got {x.shape[0]}")
    if len(layers) < 2:
        raise ValueError("give the concept's layer and at least one lower layer")
    target = check_target(target, 1)
    chans = _layer_channels(model, x, layers)
    opts = _lrp_options(composite, rule, 1e-6, 0.25, canonize, x)
    with lrp_copy(model, x, **opts) as work:
        work.state["low"], work.state["high"] = (opts["low"], opts["high"]) if isinstance(opts["low"], torch.Tensor) \
            else (None, None)
        _, rec, _, _ = _relevance_pass(work, x, target, {}, [layers[0]])
        top_rel = float(rec[layers[0]][0, channel].sum())
        root = GraphNode(layers[0], int(channel), top_rel)

        def grow(node: GraphNode, path: dict[str, int], depth: int) -> None:
            if depth >= len(layers):
                return
            lower = layers[depth]
            conds = {name: _condition_matrix(c, chans[name], name)[None] for name, c in path.items()}
            _, rec, _, _ = _relevance_pass(work, x, target, conds, [lower])
            per = rec[lower][0].reshape(chans[lower], -1).sum(1)
            for c in per.argsort(descending=True, stable=True)[:top].tolist():
                child = GraphNode(lower, int(c), float(per[c]))
                node.children.append(child)
                grow(child, {**path, lower: int(c)}, depth + 1)

        grow(root, {layers[0]: int(channel)}, 1)
    return root


@dataclass
class ReferenceImages:
    """Per channel of a layer, the dataset indices of its reference images chosen by relevance (``relevance``:
    the channel's relevance for the image's class, summed over positions) and, beside them, by activation
    (``activation``: the channel's peak activation): values and indices (C, n), best first."""

    layer: str
    relevance_values: torch.Tensor
    relevance_indices: torch.Tensor
    activation_values: torch.Tensor
    activation_indices: torch.Tensor
    images_seen: int

    def to_json(self) -> dict:
        """Per channel: the indices and values of both choices."""
        return {"layer": self.layer, "images_seen": self.images_seen,
                "channels": [{"channel": c, "by_relevance": self.relevance_indices[c].tolist(),
                              "relevance": self.relevance_values[c].tolist(),
                              "by_activation": self.activation_indices[c].tolist(),
                              "activation": self.activation_values[c].tolist()}
                             for c in range(self.relevance_indices.shape[0])]}


def reference_images(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor, Target]], layer: str,
                     *, n: int = 8, composite: str | None = "epsilon_plus", rule: str | None = None,
                     canonize: bool = True, checkpoint: str | Path | None = None, resume: bool = False,
                     checkpoint_every: int = 10, fingerprint: str = "",
                     progress: Callable[[int], None] | None = None) -> ReferenceImages:
    """Relevance maximisation (Achtibat et al. 2023): stream ``batches`` of (dataset indices (B,), model-ready
    images (B, C, H, W), target) and keep, per channel of ``layer``, the ``n`` images where the channel had the
    largest relevance for the target (and the ``n`` of largest peak activation, for comparison).

    With ``checkpoint`` the state is saved every ``checkpoint_every`` batches (and at the end); ``resume=True``
    continues from it, skipping the batches already counted, and refuses a checkpoint of another model, layer or
    settings (``fingerprint`` stands for the data and anything else the caller wants checked).
    """
    key = {"model": model_fingerprint(model), "layer": layer, "n": int(n), "composite": composite, "rule": rule,
           "canonize": bool(canonize), "data": fingerprint}
    rel_top = act_top = None
    done = seen = 0
    path = None if checkpoint is None else Path(checkpoint)
    if resume:
        if path is None or not path.exists():
            raise ValueError(f"resume: no checkpoint at {str(path)!r}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("key") != key:
            diff = [k for k in key if state.get("key", {}).get(k) != key[k]]
            raise ValueError(f"the checkpoint {str(path)!r} is of another run (its {', '.join(diff)} differ); "
                             "start afresh without resume")
        done, seen = int(state["batches"]), int(state["images"])
        rel_top = TopImages(state["relevance"]["units"], n)
        rel_top.load_state_dict(state["relevance"])
        act_top = TopImages(state["activation"]["units"], n)
        act_top.load_state_dict(state["activation"])

    def save(batches_done: int) -> None:
        if path is None or rel_top is None:
            return
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"key": key, "batches": batches_done, "images": seen, "relevance": rel_top.state_dict(),
                    "activation": act_top.state_dict()}, tmp)
        os.replace(tmp, path)

    i = -1
    with ExitStack() as stack:
        work = None
        for i, (indices, images, target) in enumerate(batches):
            if i < done:
                continue
            x = check_inputs(model, images)
            t = check_target(target, x.shape[0])
            if work is None:  # ZBox bounds are set per batch below
                work = stack.enter_context(lrp_copy(model, x, composite=composite, rule=rule, low=x.min(),
                                                    high=x.max(), canonize=canonize))
            work.state["low"], work.state["high"] = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
            acts: dict[str, torch.Tensor] = {}
            h = get_layer(work.model, layer).register_forward_hook(
                lambda _m, _i, out: acts.__setitem__("a", out.detach()))
            try:
                _, rec, _, _ = _relevance_pass(work, x, t, {}, [layer])
            finally:
                h.remove()
            r = rec[layer]
            per = r.reshape(r.shape[0], r.shape[1], -1).sum(2)
            if rel_top is None:
                rel_top, act_top = TopImages(per.shape[1], n), TopImages(per.shape[1], n)
            idx = torch.as_tensor(indices).long().cpu()
            rel_top.update(per.cpu(), idx)
            act_top.update(acts["a"].cpu(), idx)
            seen += x.shape[0]
            if progress is not None:
                progress(x.shape[0])
            if (i + 1) % checkpoint_every == 0:
                save(i + 1)
    if rel_top is None:
        raise ValueError("no images: the stream of batches was empty")
    save(max(i + 1, done))
    return ReferenceImages(layer, rel_top.values, rel_top.indices, act_top.values, act_top.indices, seen)


__all__ = ["ConditionalRelevance", "GraphNode", "LRPCopy", "ReferenceImages", "attribution_graph",
           "channel_relevance", "conditional_relevance", "lrp_copy", "reference_images"]
