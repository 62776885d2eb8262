"""Activation cache (never stale) and batched CAV training checked against scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from interpretorch.concepts.cache import ActivationCache, compute_activations
from interpretorch.concepts.cav import _split, train_cavs
from interpretorch.models import Preprocess, TinyCNN


@pytest.mark.numerics
def test_cache_hit_then_miss_on_any_change(tmp_path, snapshot):
    model = TinyCNN(num_classes=3).eval()
    snap = snapshot(model)
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x0 = x.clone()
    cache = ActivationCache(tmp_path / "c")
    a = cache.activations(model, ["features.2", "features.6"], x, batch_size=2)
    assert (cache.hits, cache.misses) == (0, 2)
    direct = compute_activations(model, x, ["features.2"], batch_size=5)["features.2"]
    torch.testing.assert_close(a["features.2"], direct)
    b = cache.activations(model, ["features.2", "features.6"], x)
    assert (cache.hits, cache.misses) == (2, 2)
    assert torch.equal(a["features.6"], b["features.6"])
    # a new layer only computes that layer
    cache.activations(model, ["features.2", "features.10"], x)
    assert (cache.hits, cache.misses) == (3, 3)
    # one changed image pixel -> miss
    x2 = x.clone()
    x2[3, 1, 4, 4] += 1e-3
    cache.activations(model, "features.2", x2)
    assert cache.misses == 4
    snap.assert_unchanged()
    assert torch.equal(x, x0)
    # one changed weight -> miss, and the fresh value is served, not the old one
    with torch.no_grad():
        model.features[0].weight[0, 0, 0, 0] += 0.5
    c = cache.activations(model, "features.2", x)
    assert cache.misses == 5
    assert not torch.equal(c["features.2"], a["features.2"])
    torch.testing.assert_close(c["features.2"], compute_activations(model, x, ["features.2"])["features.2"])
    # a changed buffer (BatchNorm running mean) -> miss
    with torch.no_grad():
        model.features[1].running_mean[0] += 0.1
    cache.activations(model, "features.2", x)
    assert cache.misses == 6


def test_cache_files_key_on_bytes_and_preprocessing(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    model = TinyCNN(num_classes=3).eval()
    cache = ActivationCache(tmp_path / "c")
    pre = Preprocess(16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    a = cache.activations(model, "features", paths, preprocess=pre)["features"]
    cache.activations(model, "features", paths, preprocess=pre)
    assert (cache.hits, cache.misses) == (1, 1)
    cache.activations(model, "features", paths, preprocess=Preprocess(16, (0.4, 0.5, 0.5), (0.5, 0.5, 0.5)))
    assert cache.misses == 2
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(paths[1])
    b = cache.activations(model, "features", paths, preprocess=pre)["features"]
    assert cache.misses == 3
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])
    # a corrupt entry is a miss, not an error
    for f in (tmp_path / "c").glob("*.pt"):
        f.write_bytes(b"garbage")
    cache.activations(model, "features", paths, preprocess=pre)
    assert cache.misses == 4
    with pytest.raises(KeyError, match="no layer"):
        cache.activations(model, "featurez", paths, preprocess=pre)
    with pytest.raises(ValueError, match="empty"):
        cache.activations(model, "features", [], preprocess=pre)


def _sets(seed=0, d=40, n=30):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n, d, generator=g) + 0.5
    r = torch.randn(n, d, generator=g)
    r2 = torch.randn(n + 7, d, generator=g)
    return {"c": {"l": c, "m": c[:, :10] * 2}, "r": {"l": r, "m": r[:, :10]}, "r2": {"l": r2, "m": r2[:, :10]}}


def _train_rows(acts, p, q, layer, pair_index, seed=0, test_fraction=0.2):
    gen = torch.Generator().manual_seed(seed * 1_000_003 + pair_index)
    a, b = acts[p][layer], acts[q][layer]
    pt, nt, pv, nv = _split(a.shape[0], b.shape[0], test_fraction, gen)
    x = torch.cat([a[pt], b[nt]]).double().numpy()
    y = np.r_[np.ones(len(pt)), -np.ones(len(nt))]
    xt = torch.cat([a[pv], b[nv]]).double().numpy()
    yt = np.r_[np.ones(len(pv)), -np.ones(len(nv))]
    return x, y, xt, yt


@pytest.mark.parametrize("alpha", [0.01, 1.0, 3.0])
def test_hinge_cavs_equal_sklearn_sgd_all_at_once(alpha):
    from sklearn.linear_model import SGDClassifier

    acts = _sets()
    acts["s"] = {k: v[:17] for k, v in acts["r2"].items()}  # a smaller set: its problems have padded rows
    pairs = [("c", "r"), ("c", "r2"), ("r", "r2"), ("c", "s")]
    cavs = train_cavs(acts, pairs, ["l", "m"], loss="hinge", test_fraction=0.2, shuffle=False, alpha=alpha)
    for layer in ("l", "m"):
        for i, (p, q) in enumerate(pairs):
            x, y, xt, yt = _train_rows(acts, p, q, layer, i)
            sk = SGDClassifier(loss="hinge", alpha=alpha, max_iter=1000, tol=1e-3, shuffle=False).fit(x, y)
            w = cavs.weights[layer][i].double().numpy()
            np.testing.assert_allclose(w, sk.coef_[0], rtol=1e-4, atol=1e-4 * np.abs(sk.coef_).max())
            assert abs(float(cavs.bias[layer][i]) - sk.intercept_[0]) < 1e-4 * max(1, abs(sk.intercept_[0]))
            assert int(cavs.epochs[layer][i]) == sk.n_iter_
            assert float(cavs.accuracy[layer][i]) == pytest.approx(sk.score(xt, yt))
            np.testing.assert_allclose(cavs.vectors[layer][i].numpy(), w / np.linalg.norm(w), rtol=1e-5, atol=1e-6)
    # the concept direction points to the concept: c scores higher than r along it
    v = cavs.vectors["l"][cavs.index("c", "r")]
    assert (acts["c"]["l"] @ v).mean() > (acts["r"]["l"] @ v).mean()


def test_logistic_cavs_equal_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    acts = _sets(1)
    pairs = [("c", "r"), ("r2", "c")]
    cavs = train_cavs(acts, pairs, ["l"], loss="logistic", alpha=0.05, test_fraction=0.2, tol=1e-9,
                      max_epochs=20000)
    for i, (p, q) in enumerate(pairs):
        x, y, xt, yt = _train_rows(acts, p, q, "l", i)
        lr = LogisticRegression(C=1 / (len(y) * 0.05), tol=1e-12, max_iter=10000).fit(x, y)
        np.testing.assert_allclose(cavs.weights["l"][i].double().numpy(), lr.coef_[0], atol=1e-5)
        assert float(cavs.bias["l"][i]) == pytest.approx(lr.intercept_[0], abs=1e-5)
        assert float(cavs.accuracy["l"][i]) == pytest.approx(lr.score(xt, yt))


def test_cav_split_is_balanced_stratified_and_seeded():
    acts = _sets()
    a = train_cavs(acts, [("c", "r2")], ["l"], seed=3)
    b = train_cavs(acts, [("c", "r2")], ["l"], seed=3)
    c = train_cavs(acts, [("c", "r2")], ["l"], seed=4)
    assert torch.equal(a.weights["l"], b.weights["l"])
    assert not torch.equal(a.weights["l"], c.weights["l"])
    g = torch.Generator().manual_seed(3 * 1_000_003)
    pt, nt, pv, nv = _split(30, 37, 0.33, g)
    assert len(pt) == len(nt) == 20 and len(pv) == len(nv) == 10  # 30 of each set, 10 held out per class


def test_cav_bad_input():
    acts = _sets()
    with pytest.raises(KeyError, match="no activations for image set 'x'"):
        train_cavs(acts, [("c", "x")])
    with pytest.raises(ValueError, match="unknown loss"):
        train_cavs(acts, [("c", "r")], loss="svm")
    with pytest.raises(ValueError, match="at least"):
        train_cavs({"a": {"l": torch.zeros(1, 3)}, "b": {"l": torch.ones(1, 3)}}, [("a", "b")])
    bad = {"a": {"l": torch.full((4, 3), float("nan"))}, "b": {"l": torch.ones(4, 3)}}
    with pytest.raises(ValueError, match="NaN"):
        train_cavs(bad, [("a", "b")])
