"""Concept Activation Vectors: linear classifiers of one image set's activations against another's.

A CAV (Kim et al. 2018) is the normal of a hyperplane that separates the activations of a concept's images
from those of a random set (or of another concept) at one layer. Every CAV of an experiment - concepts x
random runs x layers - is trained here as one batched problem.

How it is batched. With L2 regularisation the weight vector of a linear classifier stays in the span of its
training rows, ``w = X^T a`` (gradient steps from ``w = 0`` only ever add multiples of rows, and the L2 term
only rescales), so the training can run on the Gram matrix ``K = X X^T`` and the coefficient vector ``a``
without changing a single iterate: ``w . x_j = (K a)_j`` and ``|w|^2 = a^T K a``. Activations have thousands of
dimensions and a CAV has a hundred or so rows, so the Gram matrices of all CAVs, whatever their layer, stack
into one small ``(n_cavs, n, n)`` tensor and every optimisation step is one batched product. The Gram blocks
are computed once per pair of image sets (the concept-concept block is shared by all runs of a concept), and
``w`` is formed at the end.

Two losses:

``hinge`` - the original TCAV classifier, scikit-learn's ``SGDClassifier(loss="hinge", alpha=0.01,
max_iter=1000, tol=1e-3)``: per-sample SGD with the "optimal" step ``1 / (alpha (t0 + t))``, a shuffle per
epoch, unregularised intercept, and its stopping rule (scikit-learn >= 1.6: the epoch's mean objective, hinge loss
+ ``alpha/2 |w|^2`` before each update, not better than the best by ``tol`` for 5 epochs; older releases, which
the original TCAV code ran on, compared the summed loss alone).

``logistic`` - mean logistic loss + ``alpha/2 |w|^2``, full-batch Nesterov-accelerated gradient descent with
step ``1/L`` (``L = lambda_max(K)/(4 n) + alpha``) until the gradient norm is below ``tol``.

Classes are balanced (the larger set is subsampled to the smaller one's size) and split per class into train
and held-out rows with a seeded generator; the held-out accuracy of each CAV is reported.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import torch

LOSSES = ("hinge", "logistic")
FEATURES = ("flatten", "mean")


def layer_features(acts: torch.Tensor, features: str = "flatten") -> torch.Tensor:
    """(N, ...) activations to (N, D) CAV features: flattened (the original TCAV) or the spatial mean per channel."""
    if features == "flatten":
        return acts.reshape(acts.shape[0], -1)
    if features == "mean":
        return acts.reshape(acts.shape[0], acts.shape[1], -1).mean(-1) if acts.dim() > 2 else acts
    raise ValueError(f"unknown features {features!r}; choose one of {FEATURES}")


def feature_gradients(grads: torch.Tensor, features: str = "flatten") -> torch.Tensor:
    """(N, ...) gradients at a layer to (N, D) gradients along CAV features.

    For ``mean`` features a channel direction ``v`` moves every position by ``v``, so the directional
    derivative is (sum of the gradient over positions) . v.
    """
    if features == "flatten":
        return grads.reshape(grads.shape[0], -1)
    if features == "mean":
        return grads.reshape(grads.shape[0], grads.shape[1], -1).sum(-1) if grads.dim() > 2 else grads
    raise ValueError(f"unknown features {features!r}; choose one of {FEATURES}")


@dataclass
class CAVs:
    """Trained CAVs: for each layer, one unit vector per (positive set, negative set) pair.

    ``vectors[layer]`` (P, D) unit directions pointing towards the positive set; ``weights[layer]`` the
    unnormalised classifier weights and ``bias[layer]`` its intercept (decision ``w . x + b > 0`` means the
    positive set); ``accuracy[layer]`` held-out accuracy (P,); ``epochs[layer]`` epochs (hinge) or iterations
    (logistic) each CAV used.
    """

    pairs: list[tuple[str, str]]
    layers: list[str]
    vectors: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor]
    bias: dict[str, torch.Tensor]
    accuracy: dict[str, torch.Tensor]
    epochs: dict[str, torch.Tensor]
    loss: str = "hinge"
    alpha: float = 0.01
    features: str = "flatten"
    options: dict = field(default_factory=dict)

    def index(self, positive: str, negative: str) -> int:
        """Row of the CAV trained for ``positive`` against ``negative``."""
        try:
            return self.pairs.index((positive, negative))
        except ValueError:
            raise KeyError(f"no CAV was trained for {positive!r} against {negative!r}") from None


@dataclass
class _Problem:
    layer: str
    pair: int
    k_train: int
    k_test: int
    pos_train: torch.Tensor
    neg_train: torch.Tensor
    pos_test: torch.Tensor
    neg_test: torch.Tensor


def _split(m_pos: int, m_neg: int, test_fraction: float, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Balanced, stratified, seeded split: k rows of each set (k = the smaller size), the same share held out."""
    k = min(m_pos, m_neg)
    n_test = int(round(k * test_fraction))
    if test_fraction > 0:
        n_test = max(1, n_test)
    if k - n_test < 1:
        raise ValueError(f"a CAV needs at least {n_test + 1} images per set with test_fraction={test_fraction}; "
                         f"got sets of {m_pos} and {m_neg}")
    pos = torch.randperm(m_pos, generator=gen)[:k]
    neg = torch.randperm(m_neg, generator=gen)[:k]
    return pos[n_test:], neg[n_test:], pos[:n_test], neg[:n_test]


def _gram_blocks(feats: Mapping[str, torch.Tensor], pairs: Sequence[tuple[str, str]]
                 ) -> dict[tuple[str, str], torch.Tensor]:
    """X_s X_t^T in float64 for every set s, t that appear together in a pair (and each set with itself)."""
    blocks: dict[tuple[str, str], torch.Tensor] = {}
    by_pos: dict[str, list[str]] = {}
    for p, q in pairs:
        by_pos.setdefault(p, [])
        if q not in by_pos[p]:
            by_pos[p].append(q)
    for s in {s for pq in pairs for s in pq}:
        blocks[(s, s)] = (feats[s] @ feats[s].T).double()
    for p, qs in by_pos.items():
        cross = (feats[p] @ torch.cat([feats[q] for q in qs]).T).double()
        start = 0
        for q in qs:
            m = feats[q].shape[0]
            blocks[(p, q)] = cross[:, start:start + m]
            start += m
    return blocks


def train_cavs(acts: Mapping[str, Mapping[str, torch.Tensor]], pairs: Sequence[tuple[str, str]],
               layers: Sequence[str] | None = None, *, loss: str = "hinge", alpha: float = 0.01,
               test_fraction: float = 0.33, seed: int = 0, features: str = "flatten", max_epochs: int = 1000,
               tol: float = 1e-3, n_iter_no_change: int = 5, shuffle: bool = True) -> CAVs:
    """Train one CAV per (positive set, negative set) pair and layer, all as one batched problem.

    ``acts[set_name][layer]`` holds (N, ...) activations of one image set. Each pair is trained at every
    layer of ``layers`` (default: the layers of the first set). ``shuffle=False`` visits the training rows
    in order (positive rows, then negative rows) every epoch, as scikit-learn's ``shuffle=False``.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    pairs = [tuple(p) for p in pairs]
    if not pairs:
        raise ValueError("no (concept, random) pairs to train")
    for p, q in pairs:
        for s in (p, q):
            if s not in acts:
                raise KeyError(f"no activations for image set {s!r}; have {sorted(acts)}")
        if p == q:
            raise ValueError(f"a CAV needs two different sets, got {p!r} twice")
    if layers is None:
        layers = list(next(iter(acts.values())).keys())
    layers = list(layers)
    used = sorted({s for pq in pairs for s in pq})
    device = next(iter(acts[used[0]].values())).device

    problems: list[_Problem] = []
    blocks: dict[str, dict] = {}
    feats_by_layer: dict[str, dict[str, torch.Tensor]] = {}
    for layer in layers:
        feats = {}
        for s in used:
            if layer not in acts[s]:
                raise KeyError(f"no activations of set {s!r} at layer {layer!r}")
            f = layer_features(acts[s][layer], features).float()
            if f.shape[0] == 0:
                raise ValueError(f"image set {s!r} is empty")
            if not torch.isfinite(f).all():
                raise ValueError(f"activations of set {s!r} at layer {layer!r} contain NaN or infinity")
            feats[s] = f
        dims = {f.shape[1] for f in feats.values()}
        if len(dims) != 1:
            raise ValueError(f"sets have different feature sizes at layer {layer!r}: {sorted(dims)}")
        feats_by_layer[layer] = feats
        blocks[layer] = _gram_blocks(feats, pairs)
        for i, (p, q) in enumerate(pairs):
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + i)  # same split at every layer
            pt, nt, pv, nv = _split(feats[p].shape[0], feats[q].shape[0], test_fraction, gen)
            problems.append(_Problem(layer, i, len(pt), len(pv), pt, nt, pv, nv))

    n_prob = len(problems)
    ntr = 2 * max(pr.k_train for pr in problems)
    nte = 2 * max(pr.k_test for pr in problems)
    K = torch.zeros(n_prob, ntr, ntr, dtype=torch.float64)
    Kte = torch.zeros(n_prob, max(nte, 1), ntr, dtype=torch.float64)
    y = torch.zeros(n_prob, ntr, dtype=torch.float64)
    yte = torch.zeros(n_prob, max(nte, 1), dtype=torch.float64)
    valid = torch.zeros(n_prob, ntr, dtype=torch.bool)
    valid_te = torch.zeros(n_prob, max(nte, 1), dtype=torch.bool)
    for j, pr in enumerate(problems):
        p, q = pairs[pr.pair]
        bl = blocks[pr.layer]
        tr_sets = [(p, pr.pos_train), (q, pr.neg_train)]
        te_sets = [(p, pr.pos_test), (q, pr.neg_test)]

        def block(a: str, ia: torch.Tensor, b: str, ib: torch.Tensor) -> torch.Tensor:
            g = bl[(a, b)] if (a, b) in bl else bl[(b, a)].T
            return g[ia][:, ib]

        rows = [0, pr.k_train, 2 * pr.k_train]
        for u, (a, ia) in enumerate(tr_sets):
            for v, (b, ib) in enumerate(tr_sets):
                K[j, rows[u]:rows[u + 1], rows[v]:rows[v + 1]] = block(a, ia, b, ib)
        trows = [0, pr.k_test, 2 * pr.k_test]
        for u, (a, ia) in enumerate(te_sets):
            for v, (b, ib) in enumerate(tr_sets):
                Kte[j, trows[u]:trows[u + 1], rows[v]:rows[v + 1]] = block(a, ia, b, ib)
        y[j, :pr.k_train], y[j, pr.k_train:2 * pr.k_train] = 1.0, -1.0
        yte[j, :pr.k_test], yte[j, pr.k_test:2 * pr.k_test] = 1.0, -1.0
        valid[j, :2 * pr.k_train] = True
        valid_te[j, :2 * pr.k_test] = True
    K, Kte, y, yte, valid, valid_te = (t.to(device) for t in (K, Kte, y, yte, valid, valid_te))

    with _few_threads(device):
        if loss == "hinge":
            a, b, epochs = _sgd_hinge(K, y, valid, alpha, max_epochs, tol, n_iter_no_change, seed, shuffle)
        else:
            a, b, epochs = _gd_logistic(K, y, valid, alpha, max_epochs, tol)

    f_te = torch.einsum("pij,pj->pi", Kte, a) + b[:, None]
    correct = ((f_te > 0) == (yte > 0)) & valid_te
    acc = correct.sum(1).double() / valid_te.sum(1).clamp_min(1).double()
    if nte == 0:
        acc = torch.full_like(acc, float("nan"))

    vectors, weights, biases, accs, eps = {}, {}, {}, {}, {}
    for layer in layers:
        idx = [j for j, pr in enumerate(problems) if pr.layer == layer]
        feats = feats_by_layer[layer]
        dim = next(iter(feats.values())).shape[1]
        W = torch.zeros(len(pairs), dim, dtype=torch.float64, device=device)
        for j in idx:
            pr = problems[j]
            p, q = pairs[pr.pair]
            k = pr.k_train
            W[pr.pair] = (a[j, :k] @ feats[p][pr.pos_train.to(device)].double()
                          + a[j, k:2 * k] @ feats[q][pr.neg_train.to(device)].double())
        weights[layer] = W.float()
        norms = W.norm(dim=1, keepdim=True)
        vectors[layer] = torch.where(norms > 0, W / norms.clamp_min(1e-300), W).float()
        biases[layer] = b[idx].float()
        accs[layer] = acc[idx].float()
        eps[layer] = epochs[idx]
    return CAVs(list(pairs), layers, vectors, weights, biases, accs, eps, loss, float(alpha), features,
                {"test_fraction": test_fraction, "seed": seed, "max_epochs": max_epochs, "tol": tol, "shuffle": shuffle})


@contextlib.contextmanager
def _few_threads(device: torch.device) -> Iterator[None]:
    """Run the many tiny steps of the solvers on one CPU thread: at (n_cavs, 100, 100) a step takes microseconds
    and thread hand-offs cost more than the arithmetic (30x slower with two threads on a busy 2-core machine)."""
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sgd_hinge(K: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, alpha: float, max_epochs: int, tol: float,
               n_iter_no_change: int, seed: int, shuffle: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's SGDClassifier(loss="hinge", learning_rate="optimal") for every problem at once, in dual form.

    The weights are ``w = X^T a`` with ``a = s * ah`` (scikit-learn's ``wscale``). Within an epoch the visit order,
    step sizes and decay factors are known in advance, so everything but the margins is computed for the whole
    epoch at once; the Python loop does only what is truly sequential: seven small operations per visited row.
    """
    P, n = y.shape
    device, dt = K.device, torch.float64
    ah = torch.zeros(P, n, dtype=dt, device=device)
    Kah = torch.zeros(P, n, dtype=dt, device=device)  # K ah, in row order
    q = torch.zeros(P, dtype=dt, device=device)  # ah K ah, so |w|^2 = s^2 q
    s = torch.ones(P, dtype=dt, device=device)
    b = torch.zeros(P, dtype=dt, device=device)
    n_valid = valid.sum(1)
    typw = math.sqrt(1.0 / math.sqrt(alpha))
    t0 = 1.0 / (typw * alpha)  # scikit-learn's "optimal" initial step: eta0 = typw / max(1, dloss(-typw, 1))
    t = torch.ones(P, dtype=dt, device=device)  # 1 + the number of updates so far, per problem
    best = torch.full((P,), float("inf"), dtype=dt, device=device)
    no_improve = torch.zeros(P, dtype=torch.long, device=device)
    active = torch.ones(P, dtype=torch.bool, device=device)
    epochs = torch.zeros(P, dtype=torch.long, device=device)
    gen = torch.Generator().manual_seed(int(seed))
    diag = torch.diagonal(K, dim1=1, dim2=2)
    rows = torch.arange(P, device=device)
    K_rows = K.reshape(P * n, n)
    z_t = torch.empty(n, P, dtype=dt, device=device)  # margins y (w.x + b) at each visit of the epoch
    kah_t = torch.empty(n, P, dtype=dt, device=device)  # (K ah)_j just before each visit
    for _ in range(max_epochs):
        # a permutation of each problem's valid rows, padded rows last; everything below is in visit order
        keys = (torch.rand(P, n, generator=gen, dtype=dt).to(device) if shuffle
                else torch.linspace(0, 0.5, n, dtype=dt, device=device).expand(P, n))
        order = (keys + (~valid).double() * 2).argsort(dim=1)
        live = valid.gather(1, order) & active[:, None]
        yo = y.gather(1, order)
        lf = live.double()
        tk = t[:, None] + torch.cumsum(lf, 1) - lf  # t at each visit
        eta = 1.0 / (alpha * (t0 + tk - 1))
        # w *= max(0, 1 - eta alpha); at a problem's first update w is zero, so its factor is irrelevant
        c = torch.where(live & (tk > 1), (1 - eta * alpha).clamp_min(0), torch.ones_like(eta))
        s_after = s[:, None] * torch.cumprod(c, 1)
        s_before = torch.cat([s[:, None], s_after[:, :-1]], 1)
        step = torch.where(live, eta * yo, torch.zeros_like(eta))
        # per visit k: z = y s_before (K ah)_k + y b; if z <= 1: b += eta y, ah_k += eta y / s_after
        y_t, ys_t = yo.T.contiguous(), (yo * s_before).T.contiguous()
        step_t, v_t = step.T.contiguous(), (step / s_after).T.contiguous()
        flat_t = (order + rows[:, None] * n).T.contiguous()  # visit k of problem p: row p * n + order[p, k]
        for k in range(n):
            j = flat_t[k]
            kk = Kah.view(-1).index_select(0, j)
            kah_t[k] = kk
            zk = torch.addcmul(y_t[k] * b, ys_t[k], kk, out=z_t[k])
            hit = zk <= 1
            b += step_t[k] * hit
            Kah.addcmul_(K_rows.index_select(0, j), (v_t[k] * hit)[:, None])
        z, kah = z_t.T, kah_t.T
        u = step * (z <= 1)
        v = u / s_after
        # ah K ah before each visit: each update adds v_j to one coordinate j
        dq = 2 * v * kah + v * v * diag.gather(1, order)
        q_before = q[:, None] + torch.cumsum(dq, 1) - dq
        objective = torch.where(live, (1 - z).clamp_min(0) + 0.5 * alpha * s_before ** 2 * q_before,
                                torch.zeros_like(z)).sum(1)
        # back to row order, the scale folded into ah so that it never underflows
        s_end = s_after[:, -1]
        ah = (ah + torch.zeros_like(ah).scatter_(1, order, v)) * s_end[:, None]
        Kah = Kah * s_end[:, None]
        q = (q + dq.sum(1)) * s_end ** 2
        s = torch.ones_like(s)
        t = t + lf.sum(1)
        epochs += active.long()
        objective = objective / n_valid.double()
        worse = objective > best - tol
        no_improve = torch.where(active, torch.where(worse, no_improve + 1, torch.zeros_like(no_improve)),
                                 no_improve)
        best = torch.where(active, torch.minimum(best, objective), best)
        active = active & (no_improve < n_iter_no_change)
        if not active.any():
            break
    return ah * s[:, None], b, epochs


def _gd_logistic(K: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, alpha: float, max_iter: int, tol: float
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean logistic loss + alpha/2 |w|^2 by accelerated gradient descent, for every problem at once, in dual form."""
    P, n = y.shape
    m = valid.double()
    n_valid = m.sum(1)
    Km = K * m[:, :, None] * m[:, None, :]
    lam = torch.linalg.eigvalsh(Km)[:, -1].clamp_min(0)
    step = 1.0 / (lam / (4 * n_valid) + 1.0 / (4.0) + alpha)  # the 1/4 bounds the intercept's curvature
    a = torch.zeros(P, n, dtype=torch.float64, device=K.device)
    b = torch.zeros(P, dtype=torch.float64, device=K.device)
    a_prev, b_prev = a.clone(), b.clone()
    iters = torch.zeros(P, dtype=torch.long, device=K.device)
    done = torch.zeros(P, dtype=torch.bool, device=K.device)
    for it in range(1, max_iter + 1):
        mom = (it - 1) / (it + 2)
        va, vb = a + mom * (a - a_prev), b + mom * (b - b_prev)
        f = torch.einsum("pij,pj->pi", Km, va) + vb[:, None]
        r = -y * torch.sigmoid(-y * f) * m / n_valid[:, None]  # d(mean loss)/df
        ga = r + alpha * va * m  # gradient in w-space is X^T ga
        gb = r.sum(1)
        gnorm = torch.sqrt(torch.einsum("pi,pij,pj->p", ga, Km, ga).clamp_min(0) + gb ** 2)
        newly = (~done) & (gnorm < tol)
        done = done | newly
        a_prev, b_prev = a, b
        a = torch.where(done[:, None], a, va - step[:, None] * ga)
        b = torch.where(done, b, vb - step * gb)
        iters += (~done).long()
        if done.all():
            break
    return a, b, iters
