"""``cluster_bootstrap_ci``: the percentile bootstrap that resamples whole clusters (an image's detections).
It is the plain bootstrap when every cluster holds one value, the plain bootstrap of the cluster means when the
clusters are of one size, wider than the naive interval when the values of a cluster are alike, and a small case
whose resampling distribution is counted by hand."""
from __future__ import annotations

import numpy as np
import pytest

from interpretorch.core.stats import bootstrap_ci, cluster_bootstrap_ci


@pytest.mark.numerics
@pytest.mark.parametrize("batch", [None, 300])
def test_one_value_per_cluster_is_the_plain_bootstrap(batch):
    x = np.random.default_rng(3).gamma(2.0, size=57)
    clusters = np.arange(57) * 7 + 3  # sorted ids: cluster k holds value k, so both draw the same indices
    ours = cluster_bootstrap_ci(x, clusters, n_resamples=2000, seed=5, batch=batch)
    plain = bootstrap_ci(x, n_resamples=2000, seed=5, batch=batch)
    assert ours == pytest.approx(plain, abs=1e-12)  # sum / count against mean: rounding only


@pytest.mark.numerics
def test_equal_size_clusters_give_the_bootstrap_of_the_cluster_means():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(12, 4))  # 12 clusters of 4 values
    clusters = np.repeat(np.arange(12), 4)
    ours = cluster_bootstrap_ci(values.reshape(-1), clusters, n_resamples=3000, seed=2)
    assert ours == pytest.approx(bootstrap_ci(values.mean(axis=1), n_resamples=3000, seed=2), abs=1e-12)


def test_strongly_clustered_values_get_a_wider_interval_than_the_naive_one():
    """30 clusters of 10 identical values: the data hold 30 independent values, not 300, so the interval must be
    about sqrt(10) ~ 3.2 times the naive one (sd / sqrt(30) against sd / sqrt(300))."""
    centres = np.random.default_rng(1).normal(size=30)
    values = np.repeat(centres, 10)
    clusters = np.repeat(np.arange(30), 10)
    naive = bootstrap_ci(values, seed=0)
    clustered = cluster_bootstrap_ci(values, clusters, seed=0)
    ratio = (clustered[1] - clustered[0]) / (naive[1] - naive[0])
    assert 2.5 < ratio < 4.0
    assert clustered[0] < values.mean() < clustered[1]


def test_small_case_counted_by_hand():
    """Cluster A holds (0, 0), cluster B holds (3,). Drawing two clusters: AA (p 1/4) gives mean 0, AB or BA
    (p 1/2) give (0 + 0 + 3) / 3 = 1, BB (p 1/4) gives 3. The 95% interval is [0, 3]; the 40% one (quantiles 0.3
    and 0.7) is [1, 1]: the mean over the drawn values, not the mean of the cluster means (1.5)."""
    values, clusters = [0.0, 3.0, 0.0], ["A", "B", "A"]  # clusters need not be sorted nor numbers
    assert cluster_bootstrap_ci(values, clusters, seed=0) == (0.0, 3.0)
    assert cluster_bootstrap_ci(values, clusters, confidence=0.4, seed=0) == (1.0, 1.0)
    # 70% (quantiles 0.15 and 0.85): P(mean <= 1) = 3/4 < 0.85, so the upper end is 3. The plain bootstrap of
    # the three values draws means 0, 1, 2, 3 with p 8/27, 12/27, 6/27, 1/27: P(<= 1) = 20/27 < 0.85 <= 26/27,
    # so its upper end is 2, an interval that ignores that the two zeros come as one cluster.
    assert cluster_bootstrap_ci(values, clusters, confidence=0.7, seed=0) == (0.0, 3.0)
    assert bootstrap_ci(values, confidence=0.7, seed=0) == (0.0, 2.0)


def test_one_cluster_per_value_is_required():
    with pytest.raises(ValueError, match="one cluster per value"):
        cluster_bootstrap_ci([1.0, 2.0], [0])
    with pytest.raises(ValueError, match="non-empty"):
        cluster_bootstrap_ci([], [])
    with pytest.raises(ValueError, match="finite"):
        cluster_bootstrap_ci([1.0, float("nan")], [0, 1])
