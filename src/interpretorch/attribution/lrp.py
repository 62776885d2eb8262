"""Layer-wise Relevance Propagation for CNNs (Bach et al. 2015; Montavon et al. 2019): rules, composites and a
BatchNorm canonizer.

The relevance of the target class (its logit, or ``out * d score / d out`` for a callable target) is sent back
layer by layer: every convolution and linear layer redistributes it to its inputs by a rule, activations,
BatchNorm (when not merged) pass it on unchanged, average pooling redistributes it in proportion to its inputs,
and everything else (max pooling, reshapes, residual sums written as ``+``) propagates it by its gradient. The
rules follow Zennit's definitions, and so do the composites (which rule each layer gets):

- ``epsilon_plus``: ZPlus for convolutions, Epsilon for linear layers;
- ``epsilon_gamma_box``: ZBox for the first convolution, Gamma (0.25) for the others, Epsilon for linear layers;
- ``epsilon_alpha2_beta1``: AlphaBeta (2, 1) for convolutions, Epsilon for linear layers;
- ``excitation_backprop`` (Zhang et al. 2016): ZPlus for every convolution and linear layer, activations by
  their gradient.

All of it runs on a copy of the model (canonized when ``canonize=True``: each BatchNorm that directly follows a
convolution or linear layer is merged into it), so the user's model is never changed. Zennit itself is not the
engine: it imports torchvision, which does not install beside this project's torch pin; the tests compare this
code with Zennit 0.5.1 in the second CI environment (tests_vision/test_zennit_parity.py).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from interpretorch.attribution.common import method_inputs
from interpretorch.attribution.layout import in_layout, row_layout
from interpretorch.attribution.registry import register
from interpretorch.core.batching import chunks
from interpretorch.capture import frozen
from interpretorch.explanation import Explanation
from interpretorch.core.target_objects import segmentation_logits
from interpretorch.core.targets import (Target, check_finite, concat_outputs, is_callable_target, is_target_object,
                                        split_target, target_indices, target_scores, tensor_outputs)

RULES = ("epsilon", "zero", "gamma", "zplus", "alpha_beta", "zbox", "flat", "wsquare")
COMPOSITES = ("epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1", "excitation_backprop")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LINEAR = _CONV + (nn.Linear,)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
            nn.AdaptiveAvgPool3d)
_ACTIVATIONS = (nn.ELU, nn.Hardshrink, nn.Hardsigmoid, nn.Hardtanh, nn.Hardswish, nn.LeakyReLU, nn.LogSigmoid,
                nn.PReLU, nn.ReLU, nn.ReLU6, nn.RReLU, nn.SELU, nn.CELU, nn.GELU, nn.Sigmoid, nn.SiLU, nn.Softplus,
                nn.Softshrink, nn.Softsign, nn.Tanh, nn.Tanhshrink, nn.Threshold)


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z`` moved ``eps`` away from zero (zero counts as positive)."""
    return z + eps * ((z == 0).to(z) + z.sign())


def _pos(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.clamp(min=0)


def _neg(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.clamp(max=0)


def _forward_with(module: nn.Module, x: torch.Tensor, weight: torch.Tensor | None,
                  bias: torch.Tensor | None | str = "same") -> torch.Tensor:
    """``module``'s own forward on ``x`` with its weight (and bias; None: no bias) replaced, without hooks."""
    saved = dict(module._parameters)
    try:
        if "weight" in saved and weight is not None:
            module._parameters["weight"] = weight
        if "bias" in saved and saved["bias"] is not None and not (isinstance(bias, str) and bias == "same"):
            module._parameters["bias"] = torch.zeros_like(saved["bias"]) if bias is None else bias
        return module.forward(x)
    finally:
        module._parameters.update(saved)


def _terms(module: nn.Module, g: torch.Tensor, terms: Sequence[tuple[torch.Tensor, Callable]],
           scale: Callable[[list[torch.Tensor]], list[torch.Tensor]]) -> list[torch.Tensor]:
    """For each (input, forward) term: input * d forward(input) / d input, contracted with ``scale(outputs)``."""
    ins = [t.detach().requires_grad_(True) for t, _ in terms]
    with torch.enable_grad():
        outs = [fwd(i) for i, (_, fwd) in zip(ins, terms)]
        weights = scale(outs)
        used = [(i, o, w) for i, o, w in zip(ins, outs, weights) if w is not None]
        grads = torch.autograd.grad([o for _, o, _ in used], [i for i, _, _ in used], [w for _, _, w in used],
                                    allow_unused=True)
    return [torch.zeros_like(i) if gr is None else gr for (i, _, _), gr in zip(used, grads)]


@dataclass(frozen=True)
class Rule:
    """One LRP rule for a layer with weights: ``name`` and its parameters."""

    name: str
    epsilon: float = 1e-6
    gamma: float = 0.25
    alpha: float = 2.0
    beta: float = 1.0
    low: torch.Tensor | float | None = None
    high: torch.Tensor | float | None = None

    def __call__(self, module: nn.Module, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """The relevance of ``module``'s input ``x`` given the relevance ``r`` of its output."""
        w = module._parameters.get("weight")
        b = module._parameters.get("bias")
        eps = self.epsilon
        n = self.name
        if n in ("epsilon", "zero", "norm"):
            e = 0.0 if n == "zero" else eps
            (c,) = _terms(module, r, [(x, lambda t: module.forward(t))], lambda o: [r / stabilize(o[0], e)])
            return x * c
        if n in ("zplus", "alpha_beta"):
            xp, xn = x.clamp(min=0), x.clamp(max=0)
            fp = [(xp, lambda t: _forward_with(module, t, _pos(w), _pos(b))),
                  (xn, lambda t: _forward_with(module, t, _neg(w), None))]
            gp = _terms(module, r, fp, lambda o: [r / stabilize(o[0] + o[1], eps)] * 2)
            pos = xp * gp[0] + xn * gp[1]
            if n == "zplus":
                return pos
            fn = [(xp, lambda t: _forward_with(module, t, _neg(w), _neg(b))),
                  (xn, lambda t: _forward_with(module, t, _pos(w), None))]
            gn = _terms(module, r, fn, lambda o: [r / stabilize(o[0] + o[1], eps)] * 2)
            return self.alpha * pos - self.beta * (xp * gn[0] + xn * gn[1])
        if n == "gamma":
            gam = self.gamma
            xp, xn = x.clamp(min=0), x.clamp(max=0)
            with torch.no_grad():
                z = module.forward(x)

            def up(t):
                return None if t is None else t + gam * t.clamp(min=0)

            def down(t):
                return None if t is None else t + gam * t.clamp(max=0)
            fp = [(xp, lambda t: _forward_with(module, t, up(w), up(b))),
                  (xn, lambda t: _forward_with(module, t, down(w), None))]
            gp = _terms(module, r, fp, lambda o: [(z > 0).to(r) * r / stabilize(o[0] + o[1], eps)] * 2)
            fn = [(xp, lambda t: _forward_with(module, t, down(w), down(b))),
                  (xn, lambda t: _forward_with(module, t, up(w), None))]
            gn = _terms(module, r, fn, lambda o: [(z < 0).to(r) * r / stabilize(o[0] + o[1], eps)] * 2)
            return xp * gp[0] + xn * gp[1] + xp * gn[0] + xn * gn[1]
        if n == "zbox":
            low = torch.as_tensor(self.low, dtype=x.dtype, device=x.device).expand_as(x)
            high = torch.as_tensor(self.high, dtype=x.dtype, device=x.device).expand_as(x)
            f = [(x, lambda t: module.forward(t)), (low, lambda t: _forward_with(module, t, _pos(w), _pos(b))),
                 (high, lambda t: _forward_with(module, t, _neg(w), _neg(b)))]
            g = _terms(module, r, f, lambda o: [r / stabilize(o[0] - o[1] - o[2], eps)] * 3)
            return x * g[0] - low * g[1] - high * g[2]
        if n in ("flat", "wsquare"):
            ones = torch.ones_like(x)
            if n == "flat":
                fw = torch.ones_like(w) if w is not None else None
                f = [(ones, lambda t: _forward_with(module, t, fw, None))]
            else:
                f = [(ones, lambda t: _forward_with(module, t, None if w is None else w ** 2,
                                                    "same" if b is None else b ** 2))]
            (g,) = _terms(module, r, f, lambda o: [r / stabilize(o[0], eps)])
            return g
        raise ValueError(f"unknown LRP rule {n!r}; choose one of {RULES}")


class RelevancePass(torch.autograd.Function):
    """Identity on the layer's output forward; backward: the layer's rule instead of its gradient."""

    @staticmethod
    def forward(ctx, x, y, module, rule):  # noqa: D102
        ctx.save_for_backward(x)
        ctx.module, ctx.rule = module, rule
        return y.clone()

    @staticmethod
    def backward(ctx, r):  # noqa: D102
        (x,) = ctx.saved_tensors
        if ctx.rule is None:  # pass: the output's relevance goes to the input unchanged
            return r, None, None, None
        return ctx.rule(ctx.module, x.detach(), r), None, None, None


def relevance_copy(model: nn.Module, example: torch.Tensor, composite: str | None, rule: "Rule | None",
                   first: "Rule | None", epsilon: float, gamma: float, low: Any, high: Any,
                   canonize: bool) -> tuple[nn.Module, list, dict, list]:
    """A copy of ``model`` whose gradient is LRP relevance (in-place activations off, parameters frozen,
    BatchNorm merged when ``canonize``, one pass rule per layer): (copy, merged layers, the ZBox bounds of the
    current rows, set through ``state["low"]`` / ``state["high"]``, hook handles to remove)."""
    work = copy.deepcopy(model).eval()
    for m in work.modules():
        if hasattr(m, "inplace") and isinstance(getattr(m, "inplace"), bool):
            m.inplace = False  # an in-place activation would hide its input from the pass rule
    for p in work.parameters():
        p.requires_grad_(False)
    merged = merge_batchnorm(work, example[:1]) if canonize else []
    rules = layer_rules(work, composite, rule, first, epsilon, gamma, low, high)
    state: dict = {"low": None, "high": None}
    handles = []
    for m, r in rules.items():
        def hook(mod, args, out, r=r):
            a = args[0] if args else None
            if not (isinstance(a, torch.Tensor) and isinstance(out, torch.Tensor) and torch.is_grad_enabled()
                    and a.requires_grad):
                return None
            if r is not None and r.name == "zbox" and state["low"] is not None:
                r = Rule("zbox", epsilon=r.epsilon, low=state["low"], high=state["high"])
            return RelevancePass.apply(a, out.detach(), mod, r)
        handles.append(m.register_forward_hook(hook))
    return work, merged, state, handles


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, child = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), child


def merge_batchnorm(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """Fold every BatchNorm whose input is the output of a convolution or linear layer into that layer's weight and
    bias, and replace the BatchNorm by an identity, IN PLACE (use it on a copy). Returns the merged (layer,
    batchnorm) names, found by running ``example`` once."""
    names = {m: n for n, m in model.named_modules()}
    produced: dict[int, nn.Module] = {}
    pairs: list[tuple[nn.Module, nn.Module]] = []
    handles = []
    for m in model.modules():
        if isinstance(m, _LINEAR):
            handles.append(m.register_forward_hook(lambda mod, a, out: produced.__setitem__(id(out), mod)))
        elif isinstance(m, _BATCHNORM):
            def pre(mod, args):
                src = produced.get(id(args[0]))
                if src is not None and all(p[1] is not mod for p in pairs):
                    pairs.append((src, mod))
            handles.append(m.register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    for layer, bn in pairs:
        with torch.no_grad():
            scale = bn.weight / (bn.running_var + bn.eps).sqrt() if bn.affine else (bn.running_var + bn.eps).rsqrt()
            shift = bn.bias if bn.affine else torch.zeros_like(scale)
            w = layer.weight
            layer.weight = nn.Parameter(w * scale.view((-1,) + (1,) * (w.dim() - 1)), requires_grad=False)
            b = layer.bias if layer.bias is not None else torch.zeros_like(scale)
            layer.bias = nn.Parameter((b - bn.running_mean) * scale + shift, requires_grad=False)
        parent, child = _parent(model, names[bn])
        setattr(parent, child, nn.Identity())
    return [(names[a], names[b]) for a, b in pairs]


def layer_rules(model: nn.Module, composite: str | None, rule: Rule | None, first_rule: Rule | None,
                epsilon: float, gamma: float, low, high) -> dict[nn.Module, Rule | None]:
    """Which modules of ``model`` get which rule (None: pass the relevance on); the others keep their gradient."""
    if composite is not None and composite not in COMPOSITES:
        raise ValueError(f"unknown composite {composite!r}; choose one of {COMPOSITES}")
    out: dict[nn.Module, Rule | None] = {}
    first_types = _CONV if composite == "epsilon_gamma_box" else _LINEAR
    first_done = False
    stab = 1e-6
    for _, m in model.named_modules():
        if isinstance(m, _LINEAR):
            r = rule
            if composite in ("epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1"):
                if isinstance(m, nn.Linear):
                    r = Rule("epsilon", epsilon=epsilon)
                else:
                    r = {"epsilon_plus": Rule("zplus", epsilon=stab), "epsilon_gamma_box": Rule("gamma", epsilon=stab,
                                                                                             gamma=gamma),
                         "epsilon_alpha2_beta1": Rule("alpha_beta", epsilon=stab)}[composite]
            elif composite == "excitation_backprop":
                r = Rule("zplus", epsilon=stab)
            if not first_done and isinstance(m, first_types):
                first_done = True
                if composite == "epsilon_gamma_box":
                    r = Rule("zbox", epsilon=stab, low=low, high=high)
                elif first_rule is not None:
                    r = first_rule
            if r is not None:
                out[m] = r
        elif isinstance(m, _AVGPOOL):
            out[m] = Rule("norm", epsilon=stab)
        elif isinstance(m, _ACTIVATIONS + _BATCHNORM) and composite != "excitation_backprop":
            out[m] = None
    return out


def _rule(name: str | None, epsilon: float, gamma: float, alpha: float, beta: float, low, high) -> Rule | None:
    if name is None:
        return None
    if name not in RULES:
        raise ValueError(f"unknown LRP rule {name!r}; choose one of {RULES}")
    if name == "alpha_beta" and (alpha < 0 or beta < 0 or abs(alpha - beta - 1) > 1e-12):
        raise ValueError(f"the alpha-beta rule needs alpha, beta >= 0 and alpha - beta = 1, got {alpha}, {beta}")
    return Rule(name, epsilon=epsilon if name == "epsilon" else 1e-6, gamma=gamma, alpha=alpha, beta=beta, low=low,
                high=high)


def lrp(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, composite: str | None = "epsilon_plus",
        rule: str | None = None, first_rule: str | None = None, epsilon: float = 1e-6, gamma: float = 0.25,
        alpha: float = 2.0, beta: float = 1.0, low: float | torch.Tensor | None = None,
        high: float | torch.Tensor | None = None, canonize: bool = True,
        batch_size: int | None = None) -> Explanation:
    """LRP (Bach et al. 2015) with a composite (epsilon_plus, epsilon_gamma_box, epsilon_alpha2_beta1,
    excitation_backprop) or one ``rule`` for every convolution and linear layer (epsilon, zero, gamma, zplus,
    alpha_beta, zbox, flat, wsquare; ``composite=None``), and optionally a ``first_rule`` for the first one.

    Defaults are Zennit's (epsilon 1e-6, gamma 0.25, alpha 2 / beta 1); ``low`` / ``high`` bound the input for
    ZBox (default: each image's per-channel minimum and maximum). ``canonize`` merges BatchNorm into the layer
    before it, on a copy of the model. The relevance starts as the target logit; ``extras["relevance_sum"]`` /
    ``extras["conservation"]`` say how much of it reaches the input (all of it through bias-free layers; biases and
    epsilon absorb some). A row is one image: one forward and one backward pass per ``batch_size`` images.
    """
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    if composite is None and rule is None:
        raise ValueError(f"give a composite ({', '.join(COMPOSITES)}) or a rule ({', '.join(RULES)})")
    if composite is not None and rule is not None:
        raise ValueError("give either a composite or a rule (with composite=None), not both")
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    if low is None:
        low = x.amin(dim=(2, 3), keepdim=True) if x.dim() == 4 else x.min()
    if high is None:
        high = x.amax(dim=(2, 3), keepdim=True) if x.dim() == 4 else x.max()
    the_rule = _rule(rule, epsilon, gamma, alpha, beta, low, high)
    first = _rule(first_rule, epsilon, gamma, alpha, beta, low, high)
    work, merged, state, handles = relevance_copy(model, x, composite, the_rule, first, epsilon, gamma, low, high,
                                                  canonize)
    n = x.shape[0]
    layout = row_layout(work, x)
    maps, idx_all, scores, outs = [], [], [], []
    try:
        with frozen(work, grad=True):
            for sl in chunks(n, batch_size):
                if isinstance(low, torch.Tensor) and low.dim() == 4 and low.shape[0] == n:
                    state["low"], state["high"] = low[sl], high[sl]
                rows = in_layout(x[sl].clone(), layout).requires_grad_(True)
                out = work(rows.clone())
                check_finite(out)
                t = split_target(target, sl)
                idx = target_indices(out, t)
                s = target_scores(out, t, idx)
                head = out if isinstance(out, torch.Tensor) else relevance_head(out, target)
                (g,) = torch.autograd.grad(s.sum(), head, retain_graph=True)
                (rel,) = torch.autograd.grad(head, rows, (g * head).detach(), allow_unused=True)
                maps.append(torch.zeros_like(rows) if rel is None else rel.detach())
                scores.append(s.detach())
                outs.append(head.detach())
                if idx is not None:
                    idx_all.append(idx)
    finally:
        for h in handles:
            h.remove()
    r = torch.cat(maps)
    sc = torch.cat(scores)
    total = r.reshape(n, -1).sum(1)
    linear = not is_callable_target(target) and (not is_target_object(target)
                                                 or target.kind in ("regression", "segmentation"))
    start = sc if linear else None  # relevance starts at d score / d out * out: the score only when linear
    return Explanation(maps=r, method="lrp", target=torch.cat(idx_all) if idx_all else None, scores=sc,
                       extras={"composite": composite, "rule": rule, "first_rule": first_rule,
                               "relevance_sum": total, "conservation": None if start is None else total / start,
                               "merged_batchnorm": merged, "forward_backward_passes": n},
                       outputs=tensor_outputs(concat_outputs(outs)))


def relevance_head(out: object, target: Target) -> torch.Tensor:
    """The output tensor relevance starts from when the model returns a dict / ModelOutput: a segmentation
    target's logits; anything else is an error naming the output."""
    if is_target_object(target) and target.kind == "segmentation":
        return segmentation_logits(out)
    raise TypeError(f"LRP starts relevance at one output tensor; the model returns a {type(out).__name__} (wrap it "
                    "so that it returns the tensor explained)")


register("lrp", lrp, kind="pixel", aliases=("layerwise_relevance_propagation", "lrp_epsilon_plus"),
         targets=("class", "callable", "segmentation", "similarity", "regression", "function"),
         targets_note="relevance starts at one output tensor; a detector's decoding (top-k selection, box matching) "
                      "is outside the rules",
         doc="LRP (Bach et al. 2015), Zennit's composites (default epsilon_plus) on a BatchNorm-merged copy; "
             "a row is an image")
