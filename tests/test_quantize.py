"""Tests of netquant.quantize: the math against brute force, invariants of the iterations, edge cases and
the model round trip."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from netquant.qmodel import PRUNED
from netquant.quantize import METHODS, quantize, quantize_model, rate_grid, rate_parameter
from netquant.quantize.ecsq import ecsq_assign
from netquant.quantize.lloyd import relocation_targets
from netquant.quantize.sorted import SortedData

settings.register_profile("quantize", max_examples=60, deadline=None)
settings.load_profile("quantize")

RATE = {"kmeans": {"k": 3}, "hwkmeans": {"k": 3}, "dp-kmeans": {"k": 3}, "uniform": {"step": 0.25},
        "ecsq": {"lam": 0.01, "k": 8}, "dp-ecsq": {"lam": 0.01}, "uniform-zero": {"step": 0.25}}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# strategies and reference computations
# --------------------------------------------------------------------------------------------------

weight = st.floats(-1, 1, width=32, allow_subnormal=False)
importance_value = st.one_of(st.just(0.0), st.floats(0.01, 100))


@st.composite
def problems(draw, max_size=30, zero_importance=True):
    """(w float32 [n], h float64 [n]) with n >= 1; h may contain zeros."""
    n = draw(st.integers(1, max_size))
    w = np.array(draw(st.lists(weight, min_size=n, max_size=n)), np.float32)
    values = importance_value if zero_importance else st.floats(0.01, 100)
    h = np.array(draw(st.lists(values, min_size=n, max_size=n)))
    return w, h


def scale_of(w, h=None) -> float:
    """A magnitude for absolute tolerances: the weighted spread of the weights."""
    w = np.asarray(w, np.float64)
    h = np.ones_like(w) if h is None else h
    return float(np.mean((h + 1) * (w - w.mean()) ** 2) + np.mean(np.abs(w)) ** 2 + 1e-30)


def partition_cost(w, h, labels, lam=0.0) -> float:
    """Per-weight weighted SSE of the partition around its weighted means, plus lam * entropy."""
    w = np.asarray(w, np.float64)
    h = np.ones_like(w) if h is None else h
    cost = 0.0
    for label in np.unique(labels):
        member = labels == label
        s0 = h[member].sum()
        if s0 > 0:
            center = (h[member] * w[member]).sum() / s0
            cost += (h[member] * (w[member] - center) ** 2).sum()
    p = np.bincount(labels)[np.bincount(labels) > 0] / len(w)
    return cost / len(w) + lam * float(-(p * np.log2(p)).sum())


def interval_partitions(m: int, max_cells: int | None = None):
    """All partitions of m ordered groups into contiguous cells, as cell-index arrays [m]."""
    max_cells = m if max_cells is None else max_cells
    for cuts in range(min(m, max_cells)):
        for positions in itertools.combinations(range(1, m), cuts):
            cell = np.zeros(m, np.int64)
            for position in positions:
                cell[position:] += 1
            yield cell


def brute_force(w, h, lam=0.0, max_cells=None) -> float:
    """Minimum of partition_cost over all partitions of the distinct values of w into intervals."""
    distinct, group = np.unique(np.asarray(w, np.float64), return_inverse=True)
    return min(partition_cost(w, h, cell[group], lam) for cell in interval_partitions(len(distinct), max_cells))


def assert_valid(result, n):
    assert result.centers.dtype == np.float32 and result.centers.ndim == 1
    assert result.labels.dtype == np.int32 and result.labels.shape == (n,)
    k = len(result.centers)
    assert result.clusters_used == k
    if n:
        assert result.labels.min() >= 0 and result.labels.max() < k
        assert np.all(np.bincount(result.labels, minlength=k) > 0), "every centre is used"
        assert np.all(np.diff(result.centers) > 0), "centres ascending"
    assert result.distortion >= 0 and result.weighted_distortion >= 0
    assert -1e-12 <= result.entropy <= math.log2(max(k, 1)) + 1e-9
    assert result.iterations == len(result.history)


# --------------------------------------------------------------------------------------------------
# k-means
# --------------------------------------------------------------------------------------------------


@given(problems(), st.integers(1, 8), st.floats(0.001, 1000), st.sampled_from(["linear", "quantile", "random"]))
def test_hwkmeans_with_constant_importance_equals_kmeans(problem, k, constant, init):
    w, _ = problem
    plain = quantize(w, method="kmeans", k=k, init=init, seed=3)
    weighted = quantize(w, np.full(len(w), constant), method="hwkmeans", k=k, init=init, seed=3)
    np.testing.assert_array_equal(weighted.centers, plain.centers)
    np.testing.assert_array_equal(weighted.labels, plain.labels)
    assert weighted.weighted_distortion == pytest.approx(constant * plain.distortion, rel=1e-9, abs=1e-300)


@given(problems(), st.integers(1, 8), st.sampled_from(["kmeans", "hwkmeans"]), st.integers(0, 5))
def test_lloyd_objective_never_increases(problem, k, method, seed):
    w, h = problem
    result = quantize(w, h, method=method, k=k, init="random", seed=seed, tol=0)
    assert_valid(result, len(w))
    assert np.all(np.diff(result.history) <= 1e-12 * scale_of(w, h))


def test_hwkmeans_matches_sklearn_from_the_same_init():
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    rng = np.random.default_rng(7)
    w = rng.laplace(0, 0.05, 3000)
    h = rng.lognormal(0, 1, 3000)
    init = np.linspace(np.quantile(w, 0.01), np.quantile(w, 0.99), 8)
    ours = quantize(w, h, method="hwkmeans", init=init, tol=0)
    theirs = sklearn_cluster.KMeans(8, init=init[:, None], n_init=1, tol=0, max_iter=1000)
    theirs.fit(w[:, None], sample_weight=h)
    order = np.argsort(theirs.cluster_centers_[:, 0])
    rank = np.argsort(order)
    np.testing.assert_array_equal(ours.labels, rank[theirs.labels_])
    np.testing.assert_allclose(ours.centers, theirs.cluster_centers_[order, 0], rtol=1e-6)


def test_emptied_cluster_is_relocated():
    # linear init puts a centre at 5 with no weights near it; it moves onto the worst-served weight
    w = np.array([0.0, 0.01, 0.02, 10.0])
    result = quantize(w, method="kmeans", k=3)
    assert result.clusters_used == 3
    np.testing.assert_allclose(result.centers, [0.005, 0.02, 10.0])


def test_relocation_targets_are_distinct_weights_with_the_largest_errors():
    # repeated weights must not use up the targets: errors 4 (w=2), 1 (w=1, three times), 0.25 (w=0.5)
    data = SortedData(np.array([0.0, 0.5, 1.0, 1.0, 1.0, 2.0]), None)
    targets = relocation_targets(data, np.array([0, 6]), np.array([0.0]), 3)
    np.testing.assert_array_equal(targets, [0.5, 1.0, 2.0])


def test_k_equals_one_gives_the_weighted_mean():
    w = np.array([0.0, 1.0, 4.0])
    h = np.array([1.0, 2.0, 1.0])
    result = quantize(w, h, method="hwkmeans", k=1)
    np.testing.assert_allclose(result.centers, [1.5])
    assert result.weighted_distortion == pytest.approx((2.25 + 2 * 0.25 + 6.25) / 3)


@given(problems(max_size=12), st.data())
def test_k_at_least_distinct_values_is_lossless(problem, data):
    w, h = problem
    distinct = len(np.unique(w))
    k = data.draw(st.integers(distinct, distinct + 5))
    for method in ("kmeans", "hwkmeans", "dp-kmeans"):
        result = quantize(w, h, method=method, k=k)
        assert result.clusters_used == distinct
        np.testing.assert_array_equal(result.values, w)
        assert result.distortion == 0


# --------------------------------------------------------------------------------------------------
# ECSQ
# --------------------------------------------------------------------------------------------------


@given(problems(), st.integers(1, 10), st.floats(0, 2), st.integers(0, 5))
def test_ecsq_lagrangian_never_increases(problem, k, lam_factor, seed):
    w, h = problem
    lam = lam_factor * scale_of(w, h)
    result = quantize(w, h, method="ecsq", k=k, lam=lam, init="random", seed=seed, tol=0)
    assert_valid(result, len(w))
    assert np.all(np.diff(result.history) <= 1e-9 * scale_of(w, h))
    # the reported J is D + lam*H of the returned quantizer
    assert result.objective == pytest.approx(result.weighted_distortion + lam * result.entropy)


@given(problems(), st.integers(1, 8), st.integers(0, 5))
def test_ecsq_with_zero_lambda_reproduces_hwkmeans(problem, k, seed):
    # Algorithm 1 with lam = 0 is weighted Lloyd. The two differ only in what happens to a cluster that
    # empties (Lloyd relocates it, Algorithm 1 drops it for good), so the claim is: from the same initial
    # centres, while no cluster empties, the runs are identical - same trajectory, centres and labels.
    w, h = problem
    distinct = np.unique(w)
    assume(k < len(distinct))  # else hwkmeans returns the distinct values without iterating
    init = np.random.default_rng(seed).choice(distinct, size=k, replace=False)
    ecsq = quantize(w, h, method="ecsq", lam=0.0, init=init, tol=0, max_iter=1000)
    assume(ecsq.clusters_used == len(init))
    lloyd = quantize(w, h, method="hwkmeans", init=init, tol=0, max_iter=1000)
    np.testing.assert_array_equal(ecsq.history, lloyd.history)
    np.testing.assert_array_equal(ecsq.centers, lloyd.centers)
    np.testing.assert_array_equal(ecsq.labels, lloyd.labels)


@given(
    st.integers(1, 300),
    st.integers(1, 30),
    st.sampled_from([0.0, 1e-3, 1.0, 100.0]),
    st.sampled_from([1, 7, 64, 4096]),
    st.integers(0, 10**6),
)
def test_ecsq_assignment_is_the_argmin(n, k, penalty_scale, chunk, seed):
    # the candidate pruning per chunk must never exclude the optimum
    rng = np.random.default_rng(seed)
    w = rng.normal(size=n) * rng.choice([1.0, 1e-3])
    h = rng.lognormal(0, 2, n) * (rng.random(n) > 0.2)
    centers = np.sort(rng.normal(size=k)) * rng.choice([1.0, 1e-3])
    penalty = rng.exponential(size=k) * penalty_scale
    labels = ecsq_assign(w, h, centers, penalty, chunk=chunk)
    cost = h[:, None] * (w[:, None] - centers) ** 2 + penalty
    rounding = 1e-12 * (h * (w**2 + np.max(centers**2)) + penalty.max())
    assert np.all(cost[np.arange(n), labels] <= cost.min(axis=1) + rounding)


def test_ecsq_removes_improbable_clusters_as_lambda_grows():
    rng = np.random.default_rng(0)
    w = rng.laplace(0, 1, 5000)
    used = [quantize(w, method="ecsq", lam=lam, k=64).clusters_used for lam in (0.01, 0.1, 1.0, 10.0)]
    assert used == sorted(used, reverse=True) and used[0] > used[-1]
    assert quantize(w, method="ecsq", lam=1e6, k=64).clusters_used == 1


# --------------------------------------------------------------------------------------------------
# DP solvers
# --------------------------------------------------------------------------------------------------


@given(problems(max_size=9), st.integers(1, 5))
def test_dp_kmeans_equals_brute_force(problem, k):
    w, h = problem
    result = quantize(w, h, method="dp-kmeans", k=k)
    assert_valid(result, len(w))
    assert result.clusters_used <= k
    best = brute_force(w, h, max_cells=k)
    assert partition_cost(w, h, result.labels) == pytest.approx(best, rel=1e-9, abs=1e-12 * scale_of(w, h))


@given(problems(max_size=9), st.floats(0, 1))
def test_dp_ecsq_equals_brute_force(problem, lam_factor):
    w, h = problem
    lam = lam_factor * scale_of(w, h)
    result = quantize(w, h, method="dp-ecsq", lam=lam)
    assert_valid(result, len(w))
    best = brute_force(w, h, lam=lam)
    assert partition_cost(w, h, result.labels, lam) == pytest.approx(best, rel=1e-9, abs=1e-12 * scale_of(w, h))


@given(problems(max_size=40), st.integers(1, 6), st.integers(0, 5), st.sampled_from(["linear", "quantile", "random"]))
def test_dp_kmeans_never_worse_than_lloyd(problem, k, seed, init):
    w, h = problem
    optimum = partition_cost(w, h, quantize(w, h, method="dp-kmeans", k=k).labels)
    for method in ("kmeans", "hwkmeans"):
        heuristic = quantize(w, h, method=method, k=k, init=init, seed=seed)
        assert optimum <= partition_cost(w, h, heuristic.labels) + 1e-12 * scale_of(w, h)


@given(problems(max_size=40), st.integers(1, 12), st.floats(0, 1), st.integers(0, 5))
def test_dp_ecsq_never_worse_than_ecsq_with_constant_importance(problem, k, lam_factor, seed):
    # with constant importance the optimal ECSQ partition is an interval partition, so dp-ecsq is the
    # global optimum; with varying importance Algorithm 1 may leave the interval partitions
    w, _ = problem
    lam = lam_factor * scale_of(w)
    optimum = partition_cost(w, None, quantize(w, method="dp-ecsq", lam=lam).labels, lam)
    heuristic = quantize(w, method="ecsq", lam=lam, k=k, init="random", seed=seed)
    assert optimum <= partition_cost(w, None, heuristic.labels, lam) + 1e-12 * scale_of(w)


def test_dp_on_binned_input_is_close_to_exact():
    rng = np.random.default_rng(1)
    w = rng.laplace(0, 1, 3000)
    h = rng.lognormal(0, 1, 3000)
    exact = quantize(w, h, method="dp-kmeans", k=6, bins=10**6)
    binned = quantize(w, h, method="dp-kmeans", k=6, bins=256)
    assert exact.weighted_distortion <= binned.weighted_distortion <= 1.01 * exact.weighted_distortion
    lam = 0.05
    exact = quantize(w, h, method="dp-ecsq", lam=lam, bins=10**6)
    binned = quantize(w, h, method="dp-ecsq", lam=lam, bins=256)
    assert exact.objective <= binned.objective * (1 + 1e-6) and binned.objective <= 1.01 * exact.objective


# --------------------------------------------------------------------------------------------------
# uniform
# --------------------------------------------------------------------------------------------------


@given(st.lists(st.integers(-(2**20), 2**20), min_size=1, max_size=40), st.booleans(), st.booleans(), st.data())
def test_uniform_with_tiny_step_reproduces_the_weights(integers, zero_center, weighted_mean, data):
    w = (np.array(integers) / 2.0**16).astype(np.float32)  # distinct values at least 2**-16 apart
    h = np.array(data.draw(st.lists(importance_value, min_size=len(w), max_size=len(w))))
    result = quantize(w, h, method="uniform", step=2.0**-18, zero_center=zero_center, weighted_mean=weighted_mean)
    assert_valid(result, len(w))
    np.testing.assert_array_equal(result.values, w)
    assert result.clusters_used == len(np.unique(w))


def test_uniform_zero_center_and_weighted_mean():
    w = np.array([-0.4, 0.4])
    assert quantize(w, method="uniform", step=1.0, zero_center=True).clusters_used == 1
    assert quantize(w, method="uniform", step=1.0, zero_center=False).clusters_used == 2
    w, h = np.array([0.0, 0.5]), np.array([3.0, 1.0])
    np.testing.assert_allclose(quantize(w, h, method="uniform", step=10.0).centers, [0.125])
    np.testing.assert_allclose(quantize(w, h, method="uniform", step=10.0, weighted_mean=False).centers, [0.25])


@given(st.lists(weight, min_size=1, max_size=60), st.floats(0.01, 0.5), st.data())
def test_uniform_zero_is_uniform_with_the_zero_bin_pruned(values, step, data):
    w = np.array(values, np.float32)
    h = np.array(data.draw(st.lists(importance_value, min_size=len(w), max_size=len(w))))
    plain = quantize(w, h, method="uniform", step=step)
    zero = quantize(w, h, method="uniform-zero", step=step)
    in_zero_bin = np.floor(w.astype(np.float64) / step + 0.5) == 0
    np.testing.assert_array_equal(zero.labels, plain.labels)
    np.testing.assert_array_equal(zero.values, np.where(in_zero_bin, 0.0, plain.values).astype(np.float32))
    # in a model the zero bin's members are pruned and 0 is not a shared value
    qmodel = quantize_model({"w": w}, param_names=["w"], importance={"w": h}, method="uniform-zero", step=step)
    np.testing.assert_array_equal(qmodel.tensors["w"].labels == PRUNED, in_zero_bin)
    np.testing.assert_array_equal(qmodel.values("w"), zero.values)
    assert 0.0 not in qmodel.codebooks[0]


def test_uniform_zero_needs_a_zero_centred_bin():
    with pytest.raises(ValueError, match="zero_center"):
        quantize(np.array([0.1, 0.5]), method="uniform-zero", step=0.25, zero_center=False)


def test_uniform_thresholds_are_evenly_spaced():
    w = (np.arange(-1000, 1000) + 0.5) / 1000  # evenly spread, never on a threshold
    result = quantize(w, method="uniform", step=0.1)
    assert result.clusters_used == 21  # bins [-1.05, -0.95), ..., [0.95, 1.05)
    np.testing.assert_allclose(result.centers[1:-1], np.arange(-9, 10) / 10, atol=1e-6)
    np.testing.assert_allclose(result.centers[[0, -1]], [-0.975, 0.975], atol=1e-6)
    assert quantize(w, method="uniform", step=0.1, zero_center=False).clusters_used == 20
    np.testing.assert_allclose(quantize(w, method="uniform", k=20).step, 1.999 / 20)


# --------------------------------------------------------------------------------------------------
# all methods: validity, seeds, edge cases, errors
# --------------------------------------------------------------------------------------------------


@given(problems(), st.sampled_from(METHODS))
def test_every_method_returns_a_valid_quantizer(problem, method):
    w, h = problem
    result = quantize(w, h, method=method, **RATE[method])
    assert_valid(result, len(w))
    q = result.values.astype(np.float64)
    assert result.distortion == pytest.approx(np.mean((w - q) ** 2))
    assert result.weighted_distortion == pytest.approx(np.mean(h * (w - q) ** 2))


@given(problems(), st.sampled_from(["kmeans", "hwkmeans", "ecsq"]), st.integers(0, 2**32 - 1))
def test_results_are_reproducible_with_the_seed(problem, method, seed):
    w, h = problem
    rate = {"k": 4, "lam": 0.01} if method == "ecsq" else {"k": 4}
    first = quantize(w, h, method=method, init="random", seed=seed, **rate)
    second = quantize(w.copy(), h.copy(), method=method, init="random", seed=seed, **rate)
    np.testing.assert_array_equal(first.centers, second.centers)
    np.testing.assert_array_equal(first.labels, second.labels)


def test_random_init_depends_on_the_seed():
    w = np.random.default_rng(0).normal(size=1000)
    inits = {tuple(quantize(w, method="kmeans", k=8, init="random", seed=s, max_iter=1).centers) for s in range(5)}
    assert len(inits) > 1


@pytest.mark.parametrize("method", METHODS)
def test_empty_and_constant_inputs(method):
    empty = quantize(np.zeros(0), method=method, **RATE[method])
    assert empty.centers.shape == (0,) and empty.labels.shape == (0,)
    assert empty.distortion == 0 and empty.entropy == 0 and empty.clusters_used == 0
    constant = quantize(np.full(50, 0.3, np.float32), np.ones(50), method=method, **RATE[method])
    np.testing.assert_array_equal(constant.centers, np.float32([0.3]))
    assert constant.distortion == 0 and constant.entropy == 0
    assert np.all(constant.labels == 0)


def test_zero_importance_clusters_take_the_plain_mean():
    w = np.array([0.0, 0.1, 10.0, 10.2])
    h = np.array([1.0, 1.0, 0.0, 0.0])
    result = quantize(w, h, method="hwkmeans", k=2)
    np.testing.assert_allclose(result.centers, [0.05, 10.1], rtol=1e-6)
    assert result.weighted_distortion == pytest.approx(0.0025 * 2 / 4)
    # the optimum puts 0.1 alone, so that the zero-importance weights cost nothing
    optimum = quantize(w, h, method="dp-kmeans", k=2)
    assert optimum.weighted_distortion == pytest.approx(0, abs=1e-15)  # float32 rounding of 0.1
    np.testing.assert_allclose(optimum.centers, [0.0, 0.1], rtol=1e-6)
    everything_zero = quantize(w, np.zeros(4), method="hwkmeans", k=2)
    np.testing.assert_allclose(everything_zero.centers, [0.05, 10.1], rtol=1e-6)
    assert everything_zero.weighted_distortion == 0


@pytest.mark.parametrize(
    ("h", "message"),
    [
        (np.array([1.0, np.nan, 1.0]), "NaN/inf"),
        (np.array([1.0, np.inf, 1.0]), "NaN/inf"),
        (np.array([1.0, -0.5, 1.0]), "negative.*clamp"),
        (np.array([1.0, 1.0]), "entries"),
    ],
)
def test_bad_importance_is_rejected(h, message):
    with pytest.raises(ValueError, match=message):
        quantize(np.array([0.0, 1.0, 2.0]), h, method="hwkmeans", k=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "median"}, "unknown quantization method"),
        ({"method": "kmeans"}, "needs k"),
        ({"method": "kmeans", "k": 0}, "k must be"),
        ({"method": "ecsq"}, "needs lam"),
        ({"method": "dp-ecsq", "lam": -1.0}, "lam must be"),
        ({"method": "uniform"}, "exactly one of step"),
        ({"method": "uniform", "step": 0.1, "k": 4}, "exactly one of step"),
        ({"method": "uniform", "step": 0.0}, "step must be"),
        ({"method": "uniform", "step": 1e-300}, "too small"),
        ({"method": "kmeans", "k": 2, "init": "spread"}, "unknown init"),
        ({"method": "kmeans", "k": 3, "init": np.array([0.0, 1.0])}, "init has 2 centres"),
        ({"method": "kmeans", "k": 2, "max_iter": 0}, "max_iter"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        quantize(np.array([0.0, 1.0, 2.0]), **kwargs)


def test_bad_weights_are_rejected():
    with pytest.raises(ValueError, match="1-D"):
        quantize(np.zeros((2, 2)), method="kmeans", k=2)
    with pytest.raises(ValueError, match="NaN/inf"):
        quantize(np.array([0.0, np.nan]), method="kmeans", k=2)


def test_torch_tensors_are_accepted():
    w = torch.linspace(-1, 1, 100, requires_grad=True)
    result = quantize(w, torch.ones(100), method="hwkmeans", k=4)
    assert result.clusters_used == 4


# --------------------------------------------------------------------------------------------------
# rate grids
# --------------------------------------------------------------------------------------------------


def test_rate_parameter_names():
    assert [rate_parameter(m) for m in METHODS] == ["k", "k", "step", "lam", "k", "lam", "step"]
    with pytest.raises(ValueError, match="unknown"):
        rate_parameter("median")


def test_kmeans_rate_grid_is_powers_of_two():
    np.testing.assert_array_equal(rate_grid("kmeans", np.zeros(3)), [2, 4, 8, 16, 32, 64, 128, 256])
    np.testing.assert_array_equal(rate_grid("hwkmeans", np.zeros(3), bits_min=2, bits_max=3, points=2), [4, 8])


def test_uniform_rate_grid_hits_the_target_entropies():
    w = np.random.default_rng(0).laplace(0, 0.02, 20000)
    steps = rate_grid("uniform", w)
    assert np.all(np.diff(steps) < 0)
    entropies = [quantize(w, method="uniform", step=s).entropy for s in steps]
    np.testing.assert_allclose(entropies, np.arange(1, 9), atol=0.05)


def test_ecsq_rate_grid_spans_the_bit_range():
    rng = np.random.default_rng(0)
    w = rng.laplace(0, 0.02, 5000)
    h = rng.lognormal(0, 1, 5000)
    lams = rate_grid("ecsq", w, h)
    assert np.all(np.diff(lams) < 0)
    entropies = np.array([quantize(w, h, method="ecsq", lam=lam).entropy for lam in lams])
    assert np.all(np.diff(entropies) > 0)
    np.testing.assert_allclose(entropies, np.arange(1, 9), atol=0.75)


# --------------------------------------------------------------------------------------------------
# quantize_model
# --------------------------------------------------------------------------------------------------


def small_network():
    rng = np.random.default_rng(0)
    state = {
        "conv.weight": torch.from_numpy(rng.normal(0, 0.1, (4, 2, 3, 3)).astype(np.float32)),
        "conv.bias": torch.from_numpy(rng.normal(0, 0.1, 4).astype(np.float32)),
        "bn.running_mean": torch.from_numpy(rng.normal(0, 1, 4).astype(np.float32)),
        "bn.num_batches_tracked": torch.tensor(7),
        "fc.weight": torch.from_numpy(rng.normal(0, 0.1, (3, 36)).astype(np.float32)),
    }
    masks = {
        "conv.weight": torch.from_numpy(rng.random((4, 2, 3, 3)) > 0.5),
        "fc.weight": torch.ones(3, 36, dtype=bool),
    }
    masks["fc.weight"][0, :5] = False
    importance = {name: torch.from_numpy(rng.lognormal(0, 1, state[name].shape)) for name in state}
    return state, masks, importance


def test_quantize_model_round_trip():
    state, masks, importance = small_network()
    names = ["conv.weight", "conv.bias", "fc.weight"]
    model, (result,) = quantize_model(
        state, param_names=names, masks=masks, importance=importance, method="hwkmeans", k=5, return_results=True
    )
    assert len(model.codebooks) == 1 and all(t.codebook == 0 for t in model.tensors.values())
    np.testing.assert_array_equal(model.codebooks[0], result.centers)
    assert model.order == list(state) and model.param_names == names
    decoded = model.state_dict()
    assert list(decoded) == list(state)
    kept_values = []
    for name in names:
        kept = masks[name].numpy() if name in masks else np.ones(state[name].shape, bool)
        values = decoded[name].numpy()
        assert values.shape == tuple(state[name].shape)
        assert np.all(values[~kept] == 0), "pruned elements decode to exactly 0"
        assert np.all(model.tensors[name].labels[~kept.reshape(-1)] == PRUNED)
        assert np.isin(values[kept], model.codebooks[0]).all()
        kept_values.append(values[kept])
    np.testing.assert_array_equal(np.concatenate(kept_values), result.values)
    assert model.n_quantized == len(result.labels)
    for name in ("bn.running_mean", "bn.num_batches_tracked"):
        assert torch.equal(decoded[name], state[name])


def test_quantize_model_matches_quantize_on_the_kept_weights():
    state, masks, importance = small_network()
    names = ["conv.weight", "fc.weight"]
    model = quantize_model(state, param_names=names, masks=masks, importance=importance, method="ecsq", lam=1e-4, k=16)
    w = np.concatenate([state[n].numpy()[masks[n].numpy()] for n in names])
    h = np.concatenate([importance[n].numpy()[masks[n].numpy()] for n in names])
    np.testing.assert_array_equal(model.codebooks[0], quantize(w, h, method="ecsq", lam=1e-4, k=16).centers)


def test_quantize_model_layer_scope_has_one_codebook_per_tensor():
    state, masks, _ = small_network()
    names = ["conv.weight", "conv.bias", "fc.weight"]
    model = quantize_model(state, param_names=names, masks=masks, method="kmeans", k=3, scope="layer")
    assert len(model.codebooks) == 3
    for index, name in enumerate(names):
        assert model.tensors[name].codebook == index
        flat = state[name].numpy().reshape(-1)
        kept = masks[name].numpy().reshape(-1) if name in masks else np.ones(flat.size, bool)
        np.testing.assert_array_equal(model.codebooks[index], quantize(flat[kept], method="kmeans", k=3).centers)


def test_quantize_model_counts_all_parameters():
    state, _, _ = small_network()
    model = quantize_model(
        state,
        param_names=["fc.weight"],
        parameters=["conv.weight", "conv.bias", "fc.weight"],
        method="uniform",
        step=0.05,
    )
    assert model.param_names == ["conv.weight", "conv.bias", "fc.weight"]
    assert model.n_params == 72 + 4 + 108
    assert set(model.passthrough) == {"conv.weight", "conv.bias", "bn.running_mean", "bn.num_batches_tracked"}


@pytest.mark.parametrize("scope", ["all", "layer"])
def test_quantize_model_with_everything_pruned(scope):
    state, _, _ = small_network()
    names = ["conv.weight", "fc.weight"]
    masks = {name: torch.zeros(state[name].shape, dtype=bool) for name in names}
    model = quantize_model(state, param_names=names, masks=masks, method="hwkmeans", k=4, scope=scope)
    assert all(len(book) == 0 for book in model.codebooks)
    decoded = model.state_dict()
    assert all(torch.count_nonzero(decoded[name]) == 0 for name in names)


def test_quantize_model_errors_name_the_tensor():
    state, masks, importance = small_network()
    importance["fc.weight"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="fc.weight: importance h has 1 NaN/inf"):
        quantize_model(state, param_names=["fc.weight"], importance=importance, method="hwkmeans", k=2)
    with pytest.raises(ValueError, match="no entry for"):
        quantize_model(state, param_names=["fc.weight"], importance={}, method="hwkmeans", k=2)
    with pytest.raises(ValueError, match="not in the state_dict"):
        quantize_model(state, param_names=["fc2.weight"], method="kmeans", k=2)
    with pytest.raises(ValueError, match="only floating-point"):
        quantize_model(state, param_names=["bn.num_batches_tracked"], method="kmeans", k=2)
    with pytest.raises(ValueError, match="mask shape"):
        bad_mask = {"fc.weight": torch.ones(3, dtype=bool)}
        quantize_model(state, param_names=["fc.weight"], masks=bad_mask, method="kmeans", k=2)
    with pytest.raises(ValueError, match="scope"):
        quantize_model(state, param_names=["fc.weight"], method="kmeans", k=2, scope="net")
    with pytest.raises(ValueError, match="subset of parameters"):
        quantize_model(state, param_names=["fc.weight"], parameters=["conv.weight"], method="kmeans", k=2)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_ecsq_honours_lambda_when_k_covers_every_distinct_value(seed):
    w = np.random.default_rng(seed).laplace(size=1000)
    assert quantize(w, method="ecsq", lam=1e30, k=1024).clusters_used == 1
    assert quantize(w, method="ecsq", lam=0.0, k=1024).clusters_used == 1000
    dp = quantize(w, method="dp-ecsq", lam=1e-3)
    ours = quantize(w, method="ecsq", lam=1e-3, k=1024)
    # Algorithm 1 is a heuristic: over seeds 0-299 it came within 5.1% of the optimal interval-cell
    # objective (median 3.4%, 99th percentile 4.8%)
    assert ours.objective <= 1.08 * dp.objective


def test_low_precision_tensors_and_out_of_range_weights():
    import torch

    w = torch.randn(200, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.bfloat16, torch.float16):
        result = quantize(w.to(dtype), method="kmeans", k=4)
        assert result.clusters_used == 4 and np.all(np.isfinite(result.centers))
    for method in ("kmeans", "dp-kmeans", "uniform"):
        with pytest.raises(ValueError, match="beyond float32"):
            quantize(np.array([1.0, 1e39, -2.0]), method=method, **({"step": 0.5} if method == "uniform" else {"k": 2}))


def test_rate_grids_refuse_what_cannot_be_built():
    w = np.linspace(-1, 1, 100)
    with pytest.raises(ValueError, match="bits_min <= bits_max"):
        rate_grid("kmeans", w, bits_min=8, bits_max=1)
    with pytest.raises(ValueError, match="at most 24 bits"):
        rate_grid("kmeans", w, bits_min=1, bits_max=100)
