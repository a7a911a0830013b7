"""``quantize``: one weight vector, any method; the dispatcher over the algorithm families."""

from __future__ import annotations

import math

import numpy as np

from netquant.quantize.checks import as_vector, check_importance, check_rate_arguments
from netquant.quantize.dp import dp_ecsq, dp_kmeans
from netquant.quantize.ecsq import ecsq
from netquant.quantize.lloyd import lloyd
from netquant.quantize.result import QuantizationResult, make_result
from netquant.quantize.sorted import SortedData, initial_centers, label_means, labels_from_bounds
from netquant.quantize.uniform import uniform_cells
from netquant.vocabulary import METHODS

ECSQ_DEFAULT_K = 1024
LLOYD_MAX_ITER, LLOYD_TOL = 10000, 0.0
ECSQ_MAX_ITER, ECSQ_TOL = 1000, 1e-6
DP_KMEANS_DEFAULT_BINS = 65536
DP_ECSQ_DEFAULT_BINS = 4096


def quantize(
    w,
    h=None,
    *,
    method: str,
    k: int | None = None,
    step: float | None = None,
    lam: float | None = None,
    seed: int = 0,
    init: str | np.ndarray = "linear",
    max_iter: int | None = None,
    tol: float | None = None,
    weighted_mean: bool = True,
    zero_center: bool = True,
    bins: int | None = None,
) -> QuantizationResult:
    """Quantize a weight vector with one of :data:`METHODS`.

    Parameters
    ----------
    w : array-like [n], real; the weights (numpy array or CPU tensor).
    h : array-like [n] or None; importance, finite and >= 0 (None: all ones).
    method : one of "kmeans", "hwkmeans", "uniform", "ecsq", "dp-kmeans", "dp-ecsq", "uniform-zero".
    k, step, lam, seed, init, max_iter, tol, weighted_mean, zero_center, bins :
        see "Options" below.

    Returns
    -------
    QuantizationResult

    Methods
    -------
    kmeans      Lloyd's algorithm on the plain squared error (h only enters the reported weighted distortion).
    hwkmeans    Lloyd's algorithm on the Hessian-weighted error; centres are the weighted means
                ``c_j = sum h_i w_i / sum h_i`` (the paper's Hessian-weighted k-means). The assignment stays
                nearest-centre. On sorted weights a Lloyd iteration costs O(k log n).
    uniform     uniformly spaced thresholds of width ``step`` (or about ``k`` bins over [min, max]); each
                non-empty bin's centre is the weighted or plain mean of its members (the paper's uniform
                quantization).
    uniform-zero  uniform, with the zero bin's centre exactly 0 (needs ``zero_center``): in a model its
                members join the pruned weights (:func:`netquant.quantize.quantize_model`). Beyond the paper.
    ecsq        iterative entropy-constrained scalar quantization (the paper's Algorithm 1): equal initial
                proportions; assign ``argmin_j h_i (w_i - c_j)^2 - lam log2 p_j``; update weighted means and
                ``p_j = |C_j| / n``; stop when J decreases by less than ``tol * J``. The exact assignment
                scores each weight against the few centres that can win for its chunk of similar (w, h).
    dp-kmeans   globally optimal weighted 1-D k-means by dynamic programming over the sorted values
                (divide-and-conquer optimisation, O(k m log m) for m groups). Beyond the paper: an oracle that
                tells how far Lloyd is from optimal.
    dp-ecsq     the partition of the sorted values into intervals minimising J = weighted D + lam * H
                (shortest path over breakpoints, O(m^2)); optimal among interval partitions. With constant
                importance the global ECSQ optimum is an interval partition, so it is then the optimum.

    Memory: about ten float64 arrays of n (sorted copies, prefix sums, the ECSQ layout).

    The DP solvers are exact when the number m of distinct weights is at most ``bins``; otherwise the sorted
    weights are grouped into at most ``bins`` groups (runs of equal values are never split; group edges are
    the union of equal-count and equal-width edges, so both the dense centre and the sparse tails are fine)
    and the result is optimal among partitions whose boundaries fall on group edges.

    Options (the workflow exposes each as a config key)
    ---------------------------------------------------
    k : int
        kmeans, hwkmeans, dp-kmeans: number of clusters, required.
        ecsq: the *initial* k of Algorithm 1, default 1024; with linear init this reaches
        about 8 bits on network-like (Laplacian) weights, 256 saturates near 6 bits.
        uniform, uniform-zero: alternative to ``step``, ``step = (max - min) / k`` (about k bins).
    step : float
        uniform: bin width.
    lam : float
        ecsq, dp-ecsq: Lagrange multiplier of J = D + lam*H, required.
    init : "linear" (default) | "quantile" | "random" | array of centres
        kmeans, hwkmeans, ecsq: centre initialisation. "linear" = k points evenly spaced over
        [min, max] (Deep Compression's choice; for ECSQ on Laplacian weights it stayed within 2% of the
        dp-ecsq optimum at 1-8 bits where "quantile" fell far behind at high rates); "quantile" = the
        (j + 1/2)/k quantiles of w; "random" = k distinct weights drawn with ``seed``. Duplicates are merged.
    seed : int, default 0
        kmeans, hwkmeans, ecsq: random generator seed (only ``init="random"`` draws).
    max_iter : int, default None = 10000 (kmeans, hwkmeans) / 1000 (ecsq)
        kmeans, hwkmeans, ecsq: iteration limit. A Lloyd iteration costs O(k log n) here (1-D Lloyd
        can need thousands of slow iterations on pruned, bimodal weights), an ECSQ iteration O(n) times the
        few candidate centres per weight (O(n k) at worst).
    tol : float, default None = 0 (kmeans, hwkmeans) / 1e-6 (ecsq)
        kmeans, hwkmeans, ecsq: stop when the objective decreased by no more than ``tol * objective`` in one
        iteration - Algorithm 1's threshold; 0 = run until it stops decreasing (Lloyd: a fixed
        point). With 1e-6, ECSQ's J is within about 1e-4 (relative) of where it would converge.
    weighted_mean : bool, default True
        uniform: bin centre = Hessian-weighted mean (True) or plain mean (False) of the bin's weights; the
        paper's Figure 3 compares the two ("weighted slightly outperforms").
    zero_center : bool, default True
        uniform: whether 0 is the middle of a bin (thresholds at (m + 1/2) * step) or a threshold (at
        m * step).
    bins : int, default 65536 (dp-kmeans) / 4096 (dp-ecsq)
        dp-kmeans, dp-ecsq: largest number of groups the DP works on (beyond the paper; exact below it).

    Options that belong to another method are ignored, so one config section can serve every method.

    Defined behaviour at the edges
    ------------------------------
    - Empty clusters are removed and labels re-indexed, so every returned centre is used
      (``clusters_used == len(centers)``, possibly fewer than k). In Lloyd a cluster left empty by an
      assignment is moved onto the distinct weight with the largest weighted error (as scikit-learn does;
      it cannot increase the objective) and dropped only when no weight has a positive error. In
      Algorithm 1 it is dropped for good (its ``p_j = 0``, so it is never chosen again). Uniform keeps only
      the non-empty bins.
    - A cluster whose members all have zero importance takes the plain mean of its members (its weighted
      distortion is zero wherever the centre is). Zero importance is allowed; such weights are still assigned
      (nearest centre in k-means; in ECSQ the penalty alone decides, i.e. the most probable cluster).
    - ``k`` at least the number of distinct weights: k-means methods return every distinct weight as its own
      centre (distortion 0, no iterations); ecsq starts from the distinct weights.
    - Constant weights: one centre. ``n = 0``: empty centres and labels, all statistics 0.
    - Importance with NaN/inf or negative entries is rejected with a ValueError (``netquant.importance``
      clamps negative Hessian entries to 0 upstream).
    """
    if method not in METHODS:
        raise ValueError(f"unknown quantization method {method!r}; choose one of {', '.join(METHODS)}")
    w = as_vector(w, "w")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"w has {int(np.sum(~np.isfinite(w)))} NaN/inf entries; weights must be finite")
    if w.size and np.abs(w).max() > np.finfo(np.float32).max:
        raise ValueError(f"w has entries up to {np.abs(w).max():.3g}, beyond float32 (the codebook's type); "
                         "rescale the weights")
    h = check_importance(h, w.shape[0])
    if not isinstance(init, str) and method in ("kmeans", "hwkmeans", "ecsq"):
        init = as_vector(init, "init")
        if k is not None and k != init.size:
            raise ValueError(f"init has {init.size} centres but k={k}; give a matching k or leave k out")
        k = init.size
    k = check_rate_arguments(method, k, step, lam)
    if max_iter is None:
        max_iter = ECSQ_MAX_ITER if method == "ecsq" else LLOYD_MAX_ITER
    if tol is None:
        tol = ECSQ_TOL if method == "ecsq" else LLOYD_TOL
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0, got {tol}")
    n = w.shape[0]
    if n == 0:
        return make_result(method, w, h, np.zeros(0), np.zeros(0, np.int32), lam=lam, step=step)

    if method in ("uniform", "uniform-zero"):
        if step is None:
            span = float(w.max() - w.min())
            step = span / k if span > 0 else 1.0
        centers, labels = uniform_cells(w, h, step, zero_center=zero_center, weighted_mean=weighted_mean,
                                        zero_bin_to_zero=method == "uniform-zero")
        return make_result(method, w, h, centers, labels, step=step)

    data = SortedData(w, None if method == "kmeans" else h)  # kmeans: h only enters the statistics
    if method in ("kmeans", "hwkmeans", "dp-kmeans") and k >= data.n_distinct:
        centers, labels = data.distinct_solution()
        return make_result(method, w, h, centers, labels)

    history = None
    if method in ("kmeans", "hwkmeans"):
        start = initial_centers(data, k, init, seed)
        bounds, history = lloyd(data, start, max_iter=max_iter, tol=tol)
        labels = labels_from_bounds(bounds)
    elif method == "ecsq":
        k = ECSQ_DEFAULT_K if k is None else k
        if k >= data.n_distinct and isinstance(init, str):
            # every distinct value its own centre with equal proportions is a fixed point of Algorithm 1
            # whatever lam is; a start with half as many centres lets lam merge them. The lower J is kept.
            starts = [data.distinct_values(), initial_centers(data, max(1, data.n_distinct // 2), "linear", seed)]
            runs = [ecsq(data, start, lam=lam, max_iter=max_iter, tol=tol) for start in starts]
            labels, history = min(runs, key=lambda run: run[1][-1])
        else:
            labels, history = ecsq(data, initial_centers(data, k, init, seed), lam=lam, max_iter=max_iter, tol=tol)
    else:
        if bins is None:
            bins = DP_KMEANS_DEFAULT_BINS if method == "dp-kmeans" else DP_ECSQ_DEFAULT_BINS
        groups = data.groups(bins)
        cuts = dp_kmeans(groups, k) if method == "dp-kmeans" else dp_ecsq(groups, lam / data.scale, n)
        labels = labels_from_bounds(groups.starts[cuts])
    # the final centres: means of the final cells (as the last update step of Lloyd / Algorithm 1 has them)
    hw = data.h * data.w
    centers, _ = label_means(labels, np.bincount(labels), data.h, hw, hw * data.w, data.w)
    lam = lam if method in ("ecsq", "dp-ecsq") else None
    return make_result(method, w, h, centers, data.unsort(labels), lam=lam, history=history)


def method_options(method: str, options: dict) -> dict:
    """The keyword arguments of :func:`quantize` for ``method`` from a config's ``quantize.options``: unset
    (None) entries dropped, ``ecsq_k`` passed as ECSQ's initial ``k``, ``bins`` only to the DP solvers."""
    out = {k: v for k, v in options.items() if v is not None and k not in ("ecsq_k", "bins")}
    if method == "ecsq" and options.get("ecsq_k") is not None:
        out["k"] = options["ecsq_k"]
    if method.startswith("dp-") and options.get("bins") is not None:
        out["bins"] = options["bins"]
    return out
