"""Scalar quantizers of network weights: k-means, Hessian-weighted k-means, uniform, iterative ECSQ, and
exact dynamic-programming solvers; applying them to a model.

All quantizers work on a 1-D weight vector ``w`` [n] with an optional importance ``h`` [n] (a diagonal
Hessian, or the square root of Adam's second moments; ``h_i >= 0``; ``None`` means ``h_i = 1``). A
quantizer returns a :class:`QuantizationResult`: float32 ``centers`` [k] sorted ascending and int32
``labels`` [n] indexing them.

Objective conventions (all per weight, i.e. means over the n quantized weights)::

    distortion          = 1/n * sum_i (w_i - c[l_i])^2
    weighted_distortion = 1/n * sum_i h_i (w_i - c[l_i])^2            (= distortion when h is None)
    entropy             = -sum_j p_j log2 p_j,  p_j = |C_j| / n        (bits per weight, label histogram)
    objective           = weighted_distortion                         (kmeans, hwkmeans, uniform, dp-kmeans)
                        = weighted_distortion + lam * entropy         (ecsq, dp-ecsq: the Lagrangian J)

so Algorithm 1's ``J = D + lam*H`` is per weight and ``lam`` is in units of ``h * w^2`` per bit. The
statistics are computed from the float32 centres actually returned.

Methods
-------
kmeans      Lloyd's algorithm on the plain squared error (h only enters the reported weighted distortion).
hwkmeans    Lloyd's algorithm on the Hessian-weighted error; centres are the weighted means
            ``c_j = sum h_i w_i / sum h_i`` (the paper's Hessian-weighted k-means). The assignment stays
            nearest-centre. On sorted weights a Lloyd iteration costs O(k log n).
uniform     uniformly spaced thresholds of width ``step`` (or about ``k`` bins over [min, max]); each
            non-empty bin's centre is the weighted or plain mean of its members (the paper's uniform
            quantization).
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

Options (keywords of :func:`quantize`; the workflow exposes each as a config key)
-------------------------------------------------------------------------------
k : int
    kmeans, hwkmeans, dp-kmeans: number of clusters, required [open: range of k; see :func:`rate_grid`].
    ecsq: the *initial* k of Algorithm 1, default 1024 [open: initial k]; with linear init this reaches
    about 8 bits on network-like (Laplacian) weights, 256 saturates near 6 bits.
    uniform: alternative to ``step``, ``step = (max - min) / k`` (about k bins).
step : float
    uniform: bin width [open: bin-width grid; see :func:`rate_grid`].
lam : float
    ecsq, dp-ecsq: Lagrange multiplier of J = D + lam*H, required [open: lambda grid; see :func:`rate_grid`].
init : "linear" (default) | "quantile" | "random" | array of centres
    kmeans, hwkmeans, ecsq: centre initialisation [open]. "linear" = k points evenly spaced over
    [min, max] (Deep Compression's choice; for ECSQ on Laplacian weights it stayed within 2% of the
    dp-ecsq optimum at 1-8 bits where "quantile" fell far behind at high rates); "quantile" = the
    (j + 1/2)/k quantiles of w; "random" = k distinct weights drawn with ``seed``. Duplicates are merged.
seed : int, default 0
    kmeans, hwkmeans, ecsq: random generator seed (only ``init="random"`` draws).
max_iter : int, default None = 10000 (kmeans, hwkmeans) / 1000 (ecsq)
    kmeans, hwkmeans, ecsq: iteration limit [open]. A Lloyd iteration costs O(k log n) here (1-D Lloyd
    can need thousands of slow iterations on pruned, bimodal weights), an ECSQ iteration O(n) times the
    few candidate centres per weight (O(n k) at worst).
tol : float, default None = 0 (kmeans, hwkmeans) / 1e-6 (ecsq)
    kmeans, hwkmeans, ecsq: stop when the objective decreased by no more than ``tol * objective`` in one
    iteration - Algorithm 1's threshold [open]; 0 = run until it stops decreasing (Lloyd: a fixed
    point). With 1e-6, ECSQ's J is within about 1e-4 (relative) of where it would converge.
weighted_mean : bool, default True
    uniform: bin centre = Hessian-weighted mean (True) or plain mean (False) of the bin's weights; the
    paper's Figure 3 compares the two ("weighted slightly outperforms").
zero_center : bool, default True
    uniform: whether 0 is the middle of a bin (thresholds at (m + 1/2) * step) or a threshold (at
    m * step) [open: whether zero is a bin centre].
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
  the non-empty bins [open: empty bins].
- A cluster whose members all have zero importance takes the plain mean of its members (its weighted
  distortion is zero wherever the centre is). Zero importance is allowed; such weights are still assigned
  (nearest centre in k-means; in ECSQ the penalty alone decides, i.e. the most probable cluster).
- ``k`` at least the number of distinct weights: k-means methods return every distinct weight as its own
  centre (distortion 0, no iterations); ecsq starts from the distinct weights.
- Constant weights: one centre. ``n = 0``: empty centres and labels, all statistics 0.
- Importance with NaN/inf or negative entries is rejected with a ValueError (``netquant.importance``
  clamps negative Hessian entries to 0 upstream).

Applying to a model
-------------------
:func:`quantize_model` gathers the chosen state_dict entries, skips pruned elements (they get the label
``PRUNED``, decode to exactly 0, and are neither quantized nor a cluster), quantizes with one codebook for
all tensors together (``scope="all"``, the paper) or one per tensor (``scope="layer"``, Deep Compression),
and returns a :class:`netquant.qmodel.QuantizedModel`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping, Sequence

import numpy as np
import torch

from netquant.qmodel import PRUNED, QuantizedModel, QuantizedTensor

__all__ = [
    "METHODS",
    "QuantizationResult",
    "quantize",
    "quantize_model",
    "rate_grid",
    "rate_parameter",
]

METHODS = ("kmeans", "hwkmeans", "uniform", "ecsq", "dp-kmeans", "dp-ecsq")
INITS = ("linear", "quantile", "random")
ECSQ_DEFAULT_K = 1024
LLOYD_MAX_ITER, LLOYD_TOL = 10000, 0.0
ECSQ_MAX_ITER, ECSQ_TOL = 1000, 1e-6
DP_KMEANS_DEFAULT_BINS = 65536
DP_ECSQ_DEFAULT_BINS = 4096


@dataclass
class QuantizationResult:
    """Outcome of one quantizer run over a weight vector of n entries.

    Attributes
    ----------
    method : str
    centers : float32 [k], ascending; every centre is used by at least one weight.
    labels : int32 [n], index into ``centers``.
    distortion : float, ``1/n sum (w - c[l])^2``.
    weighted_distortion : float, ``1/n sum h (w - c[l])^2`` (h = 1 without importance).
    entropy : float, bits per weight of the label histogram.
    objective : float, weighted_distortion, plus ``lam * entropy`` for ecsq and dp-ecsq.
    clusters_used : int, ``len(centers)``.
    iterations : int, Lloyd / Algorithm 1 iterations (0 for closed-form methods and the DP solvers).
    history : float64 [iterations], the objective after each iteration (computed in float64 before the
        centres are rounded to float32); non-increasing.
    lam, step : float or None, the rate parameter used (ecsq/dp-ecsq and uniform).
    """

    method: str
    centers: np.ndarray
    labels: np.ndarray
    distortion: float
    weighted_distortion: float
    entropy: float
    objective: float
    clusters_used: int
    iterations: int = 0
    history: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lam: float | None = None
    step: float | None = None

    @property
    def counts(self) -> np.ndarray:
        """int64 [k]: number of weights per centre."""
        return np.bincount(self.labels, minlength=len(self.centers))

    @property
    def values(self) -> np.ndarray:
        """float32 [n]: the quantized weights ``centers[labels]``."""
        return self.centers[self.labels]


# --------------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------------


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
    method : one of "kmeans", "hwkmeans", "uniform", "ecsq", "dp-kmeans", "dp-ecsq".
    k, step, lam, seed, init, max_iter, tol, weighted_mean, zero_center, bins :
        see "Options" in the module docstring.

    Returns
    -------
    QuantizationResult
    """
    if method not in METHODS:
        raise ValueError(f"unknown quantization method {method!r}; choose one of {', '.join(METHODS)}")
    w = _as_vector(w, "w")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"w has {int(np.sum(~np.isfinite(w)))} NaN/inf entries; weights must be finite")
    h = _check_importance(h, w.shape[0])
    if not isinstance(init, str) and method in ("kmeans", "hwkmeans", "ecsq"):
        init = _as_vector(init, "init")
        if k is not None and k != init.size:
            raise ValueError(f"init has {init.size} centres but k={k}; give a matching k or leave k out")
        k = init.size
    k = _check_rate_arguments(method, k, step, lam)
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
        return _result(method, w, h, np.zeros(0), np.zeros(0, np.int32), lam=lam, step=step)

    if method == "uniform":
        if step is None:
            span = float(w.max() - w.min())
            step = span / k if span > 0 else 1.0
        centers, labels = _uniform(w, h, step, zero_center=zero_center, weighted_mean=weighted_mean)
        return _result(method, w, h, centers, labels, step=step)

    data = _SortedData(w, None if method == "kmeans" else h)  # kmeans: h only enters the statistics
    if method in ("kmeans", "hwkmeans", "dp-kmeans") and k >= data.n_distinct:
        centers, labels = data.distinct_solution()
        return _result(method, w, h, centers, labels)

    history = None
    if method in ("kmeans", "hwkmeans"):
        start = _initial_centers(data, k, init, seed)
        bounds, history = _lloyd(data, start, max_iter=max_iter, tol=tol)
        labels = _labels_from_bounds(bounds)
    elif method == "ecsq":
        k = ECSQ_DEFAULT_K if k is None else k
        if k >= data.n_distinct and isinstance(init, str):
            start = data.distinct_values()
        else:
            start = _initial_centers(data, k, init, seed)
        labels, history = _ecsq(data, start, lam=lam, max_iter=max_iter, tol=tol)
    else:
        if bins is None:
            bins = DP_KMEANS_DEFAULT_BINS if method == "dp-kmeans" else DP_ECSQ_DEFAULT_BINS
        groups = data.groups(bins)
        cuts = _dp_kmeans(groups, k) if method == "dp-kmeans" else _dp_ecsq(groups, lam / data.scale, n)
        labels = _labels_from_bounds(groups.starts[cuts])
    # the final centres: means of the final cells (as the last update step of Lloyd / Algorithm 1 has them)
    hw = data.h * data.w
    centers, _ = _label_means(labels, np.bincount(labels), data.h, hw, hw * data.w, data.w)
    lam = lam if method in ("ecsq", "dp-ecsq") else None
    return _result(method, w, h, centers, data.unsort(labels), lam=lam, history=history)


def rate_parameter(method: str) -> str:
    """Name of the argument of :func:`quantize` that sets the rate of ``method``: "k", "step" or "lam"."""
    if method in ("kmeans", "hwkmeans", "dp-kmeans"):
        return "k"
    if method == "uniform":
        return "step"
    if method in ("ecsq", "dp-ecsq"):
        return "lam"
    raise ValueError(f"unknown quantization method {method!r}; choose one of {', '.join(METHODS)}")


def rate_grid(
    method: str,
    w,
    h=None,
    *,
    bits_min: float = 1.0,
    bits_max: float = 8.0,
    points: int = 8,
    zero_center: bool = True,
) -> np.ndarray:
    """Values of the rate parameter (:func:`rate_parameter`) whose curves span ``bits_min..bits_max``.

    The x axis of the paper's Figure 1 is the average codeword length per weight. The grids are
    ordered from low to high rate:

    - k-means methods: ``k = round(2 ** linspace(bits_min, bits_max, points))``, de-duplicated (fixed-length
      bits ``ceil(log2 k)``; the default gives k = 2, 4, ..., 256) [open: range of k];
    - uniform: the bin widths whose label entropy is ``linspace(bits_min, bits_max, points)`` bits, found by
      bisection on the empirical entropy of at most 65,536 evenly spaced order statistics of w
      [open: bin-width grid];
    - ecsq, dp-ecsq: ``lam = ln 2 * mean(h) * step^2 / 6`` for those bin widths, the high-rate relation
      between ECSQ's Lagrange multiplier and its (near uniform) cell width; the reached entropies are
      close to the targets at high rate and approximate at 1-2 bits [open: lambda grid].

    Parameters
    ----------
    method : one of :data:`METHODS`.
    w : array-like [n], the weights that will be quantized (pruned weights already removed).
    h : array-like [n] or None, importance (only its mean is used, for ecsq/dp-ecsq).
    bits_min, bits_max : float, target range of average codeword length in bits per weight.
    points : int, number of grid points (fewer for k-means if rounding merges some).
    zero_center : bool, as in :func:`quantize` (uniform and ecsq grids).

    Returns
    -------
    numpy array [<= points]: int64 values of k, or float64 values of step or lam.
    """
    parameter = rate_parameter(method)
    if not (0 <= bits_min <= bits_max):
        raise ValueError(f"need 0 <= bits_min <= bits_max, got bits_min={bits_min}, bits_max={bits_max}")
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    bits = np.linspace(bits_min, bits_max, points)
    if parameter == "k":
        return np.unique(np.rint(2.0**bits).astype(np.int64))
    w = _as_vector(w, "w")
    if w.size == 0:
        raise ValueError("rate_grid needs at least one weight")
    if not np.all(np.isfinite(w)):
        raise ValueError("w has NaN/inf entries; weights must be finite")
    steps = _uniform_steps_for_entropy(w, bits, zero_center)
    if parameter == "step":
        return steps
    h = _check_importance(h, w.shape[0])
    mean_h = 1.0 if h is None else float(h.mean())
    return math.log(2) * mean_h * steps**2 / 6


def quantize_model(
    state_dict: Mapping[str, torch.Tensor | np.ndarray],
    *,
    param_names: Sequence[str],
    masks: Mapping[str, torch.Tensor | np.ndarray] | None = None,
    importance: Mapping[str, torch.Tensor | np.ndarray] | None = None,
    method: str,
    scope: str = "all",
    parameters: Sequence[str] | None = None,
    return_results: bool = False,
    **quantize_kwargs,
) -> QuantizedModel | tuple[QuantizedModel, list[QuantizationResult]]:
    """Quantize the entries ``param_names`` of a state_dict and return the quantized model.

    Parameters
    ----------
    state_dict : name -> tensor or array, in the network's key order (kept as ``order``).
    param_names : names of the floating-point entries to quantize (the workflow's default: every
        nn.Parameter, as the paper counts N).
    masks : name -> bool tensor of the same shape, True = kept. Pruned elements are excluded from
        quantization, get label ``PRUNED`` and decode to exactly 0. Masks of other entries are ignored.
    importance : name -> tensor of the same shape (>= 0, finite), one for every name in
        ``param_names``; None for plain (unweighted) importance.
    method : quantization method, see :func:`quantize`.
    scope : "all" = one codebook for all tensors together (the paper); "layer" = one codebook per tensor
        (Deep Compression).
    parameters : names of all nn.Parameters of the network (quantized or not), stored as the
        QuantizedModel's ``param_names`` so that its ``n_params`` is the paper's N. Default: ``param_names``.
        Must contain every name of ``param_names``.
    return_results : also return the :class:`QuantizationResult` of each codebook (in codebook order).
    **quantize_kwargs : passed to :func:`quantize` (k, step, lam, init, ...).

    Returns
    -------
    QuantizedModel, or (QuantizedModel, list of QuantizationResult) with ``return_results=True``.
    Every entry not in ``param_names`` goes to ``passthrough`` unchanged as a numpy array. With
    ``scope="all"`` and every element pruned the single codebook is empty.
    """
    if scope not in ("all", "layer"):
        raise ValueError(f"scope must be 'all' (one codebook, the paper) or 'layer' (one per tensor), got {scope!r}")
    param_names = list(param_names)
    if len(set(param_names)) != len(param_names):
        raise ValueError("param_names contains duplicates")
    missing = [name for name in param_names if name not in state_dict]
    if missing:
        raise ValueError(f"param_names not in the state_dict: {missing}")
    parameters = param_names if parameters is None else list(parameters)
    outside = [name for name in parameters if name not in state_dict]
    if outside:
        raise ValueError(f"parameters not in the state_dict: {outside}")
    not_listed = [name for name in param_names if name not in set(parameters)]
    if not_listed:
        raise ValueError(f"param_names must be a subset of parameters; missing from parameters: {not_listed}")
    masks = masks or {}
    if importance is not None:
        absent = [name for name in param_names if name not in importance]
        if absent:
            raise ValueError(f"importance has no entry for {absent}; give one tensor per quantized name")

    arrays = {name: _to_numpy(value) for name, value in state_dict.items()}
    kept_values, kept_importance, kept_masks = {}, {}, {}
    for name in param_names:
        values = arrays[name]
        if not np.issubdtype(values.dtype, np.floating):
            raise ValueError(f"{name}: only floating-point entries can be quantized, got dtype {values.dtype}")
        flat = values.reshape(-1)
        kept = np.ones(flat.size, bool)
        if name in masks:
            mask = _to_numpy(masks[name])
            if mask.shape != values.shape:
                raise ValueError(f"{name}: mask shape {mask.shape} differs from the tensor's {values.shape}")
            kept = mask.reshape(-1).astype(bool)
        kept_masks[name] = kept
        kept_values[name] = flat[kept]
        if importance is not None:
            imp = _to_numpy(importance[name])
            if imp.shape != values.shape:
                raise ValueError(f"{name}: importance shape {imp.shape} differs from the tensor's {values.shape}")
            try:
                kept_importance[name] = _check_importance(imp.reshape(-1)[kept], int(kept.sum()))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None

    groups = [param_names] if scope == "all" else [[name] for name in param_names]
    codebooks, tensors, results = [], {}, []
    for book, names in enumerate(groups):
        w = np.concatenate([kept_values[name] for name in names]) if names else np.zeros(0)
        h = np.concatenate([kept_importance[name] for name in names]) if importance is not None and names else None
        result = quantize(w, h, method=method, **quantize_kwargs)
        results.append(result)
        codebooks.append(result.centers)
        offset = 0
        for name in names:
            kept = kept_masks[name]
            labels = np.full(kept.size, PRUNED, np.int32)
            count = int(kept.sum())
            labels[kept] = result.labels[offset : offset + count]
            offset += count
            tensors[name] = QuantizedTensor(arrays[name].shape, book, labels)

    passthrough = {name: np.array(arrays[name], copy=True) for name in arrays if name not in tensors}
    model = QuantizedModel(codebooks, tensors, passthrough, list(state_dict.keys()), list(parameters))
    return (model, results) if return_results else model


# --------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------


def _to_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _as_vector(value, name: str) -> np.ndarray:
    array = _to_numpy(value)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}; pass a flattened vector (.reshape(-1))")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    return array.astype(np.float64, copy=False)


def _check_importance(h, n: int) -> np.ndarray | None:
    if h is None:
        return None
    h = _as_vector(h, "importance h")
    if h.shape[0] != n:
        raise ValueError(f"importance h has {h.shape[0]} entries, the weights have {n}; they must match")
    bad = ~np.isfinite(h)
    if bad.any():
        raise ValueError(
            f"importance h has {int(bad.sum())} NaN/inf entries; recompute it or replace them before quantizing"
        )
    negative = h < 0
    if negative.any():
        raise ValueError(
            f"importance h has {int(negative.sum())} negative entries (min {h.min():.3g}); importance must be >= 0 "
            "- clamp negative Hessian entries to 0 first (netquant.importance does this)"
        )
    return h


def _check_rate_arguments(method: str, k, step, lam) -> int | None:
    if method in ("kmeans", "hwkmeans", "dp-kmeans") or (method in ("ecsq", "uniform") and k is not None):
        if method in ("kmeans", "hwkmeans", "dp-kmeans") and k is None:
            raise ValueError(f"method {method!r} needs k (the number of clusters)")
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        k = int(k)
    if method == "uniform":
        if (step is None) == (k is None):
            raise ValueError("method 'uniform' needs exactly one of step (bin width) or k (number of bins)")
        if step is not None and not (step > 0 and math.isfinite(step)):
            raise ValueError(f"step must be a finite number > 0, got {step!r}")
    if method in ("ecsq", "dp-ecsq"):
        if lam is None:
            raise ValueError(f"method {method!r} needs lam (the Lagrange multiplier of D + lam*H)")
        if not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    return k


# --------------------------------------------------------------------------------------------------
# sorted data, prefix sums, groups
# --------------------------------------------------------------------------------------------------


class _Prefix:
    """Prefix sums [m + 1] over a sequence of items (weights or groups of weights) in ascending order.

    ``h`` sums are of the scaled importance, ``hw``/``hww`` of importance times weight (squared), ``w`` of
    plain weights, ``count`` of weights (None: one weight per item).
    """

    def __init__(self, h, hw, hww, w, count=None):
        def prefix(values):
            out = np.zeros(len(values) + 1)
            np.cumsum(values, out=out[1:])
            return out

        self.h, self.hw, self.hww, self.w = prefix(h), prefix(hw), prefix(hww), prefix(w)
        self.count = None if count is None else prefix(count)

    def counts(self, a, b):
        return b - a if self.count is None else self.count[b] - self.count[a]

    def sse(self, a, b) -> np.ndarray:
        """Weighted squared error of the cells [a, b) around their weighted means (vectorised)."""
        s0 = self.h[b] - self.h[a]
        s1 = self.hw[b] - self.hw[a]
        s2 = self.hww[b] - self.hww[a]
        return np.maximum(s2 - s1 * s1 / np.where(s0 > 0, s0, 1.0), 0.0)

    def cells(self, bounds):
        """Centres, weighted squared errors and counts of the non-empty cells [bounds[j], bounds[j+1])."""
        a, b = bounds[:-1], bounds[1:]
        s0 = self.h[b] - self.h[a]
        count = self.counts(a, b)
        weighted = s0 > 0
        # members all with zero importance: plain mean (their weighted error is 0 wherever the centre is)
        centers = np.where(
            weighted,
            (self.hw[b] - self.hw[a]) / np.where(weighted, s0, 1.0),
            (self.w[b] - self.w[a]) / np.maximum(count, 1),
        )
        return centers, self.sse(a, b), count


@dataclass
class _Groups:
    starts: np.ndarray  # int64 [m + 1]: first sorted index of each group, then n
    prefix: _Prefix  # over the m groups


class _SortedData:
    """The weights sorted ascending, with importance scaled to max 1.

    Scaling h by a constant leaves every argmin unchanged (lam is scaled along), keeps the numbers in a
    good range, and makes constant importance exactly the unweighted problem.
    """

    def __init__(self, w: np.ndarray, h: np.ndarray | None):
        self.order = np.argsort(w)
        self.w = w[self.order]
        self.n = w.shape[0]
        if h is None:
            self.scale = 1.0
            self.h = np.ones(self.n)
        else:
            self.scale = float(h.max()) if h.max() > 0 else 1.0
            self.h = h[self.order] / self.scale

    @cached_property
    def run_starts(self) -> np.ndarray:
        """int64 [distinct]: first sorted index of each run of equal weights."""
        return np.concatenate([[0], np.flatnonzero(np.diff(self.w) != 0) + 1])

    @property
    def n_distinct(self) -> int:
        return len(self.run_starts)

    @cached_property
    def prefix(self) -> _Prefix:
        hw = self.h * self.w
        return _Prefix(self.h, hw, hw * self.w, self.w)

    def distinct_values(self) -> np.ndarray:
        return self.w[self.run_starts]

    def distinct_solution(self):
        """Every distinct weight its own centre."""
        bounds = np.append(self.run_starts, self.n)
        return self.distinct_values(), self.unsort(_labels_from_bounds(bounds))

    def unsort(self, sorted_labels: np.ndarray) -> np.ndarray:
        labels = np.empty(self.n, np.int32)
        labels[self.order] = sorted_labels
        return labels

    def groups(self, bins: int) -> _Groups:
        """At most ``bins`` groups of consecutive sorted weights; runs of equal weights are never split."""
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        starts = self.run_starts
        if len(starts) > bins:
            half = max(bins // 2, 1)
            equal_count = (np.arange(half) * self.n) // half
            edges = np.linspace(self.w[0], self.w[-1], bins - half + 1)[1:-1]
            equal_width = np.searchsorted(self.w, edges, side="left")
            candidates = np.concatenate([equal_count, equal_width])
            starts = np.unique(starts[np.searchsorted(starts, candidates, side="right") - 1])
        hw = self.h * self.w
        sums = [np.add.reduceat(values, starts) for values in (self.h, hw, hw * self.w, self.w)]
        return _Groups(np.append(starts, self.n), _Prefix(*sums, count=np.diff(np.append(starts, self.n))))


def _labels_from_bounds(bounds: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(bounds) - 1, dtype=np.int32), np.diff(bounds))


def _initial_centers(data: _SortedData, k: int, init, seed: int) -> np.ndarray:
    """Initial centres, sorted and de-duplicated."""
    if isinstance(init, str):
        if init == "linear":
            centers = np.linspace(data.w[0], data.w[-1], k)
        elif init == "quantile":
            centers = data.w[((np.arange(k) + 0.5) * data.n / k).astype(np.int64)]
        elif init == "random":
            distinct = data.distinct_values()
            rng = np.random.default_rng(seed)
            centers = rng.choice(distinct, size=min(k, len(distinct)), replace=False)
        else:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)} or pass an array of centres")
    else:
        if not np.all(np.isfinite(init)):
            raise ValueError("an init array must hold finite centres")
        centers = init
    return np.unique(centers)


# --------------------------------------------------------------------------------------------------
# Lloyd (kmeans, hwkmeans)
# --------------------------------------------------------------------------------------------------


def _nearest_bounds(w_sorted: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Cell bounds [k + 1] of the nearest-centre assignment of sorted weights to sorted centres.

    A weight exactly at a midpoint goes to the lower centre.
    """
    cuts = np.searchsorted(w_sorted, 0.5 * (centers[:-1] + centers[1:]), side="right")
    return np.concatenate([[0], cuts, [w_sorted.shape[0]]])


def _lloyd(data: _SortedData, centers: np.ndarray, *, max_iter: int, tol: float):
    """Lloyd's algorithm on sorted weights.

    With sorted weights and sorted centres every cell is an interval, so the assignment step is a
    ``searchsorted`` of the k - 1 midpoints and the update reads cell sums off prefix sums: one
    iteration costs O(k log n). A cluster left empty by the assignment is moved onto the weight with
    the largest weighted error (as scikit-learn does), which cannot increase the objective; it is
    dropped only if every error is already zero.

    Returns the final cell bounds [k + 1] (non-empty cells only) and the weighted distortion after each
    iteration (original units).
    """
    prefix = data.prefix
    history = []
    for _ in range(max_iter):
        bounds = _nearest_bounds(data.w, centers)
        empty = np.diff(bounds) == 0
        targets = _relocation_targets(data, bounds, centers, int(empty.sum())) if empty.any() else []
        if empty.any():
            bounds = np.append(bounds[:-1][~empty], data.n)
        cell_centers, sse, _ = prefix.cells(bounds)
        centers = np.sort(np.concatenate([cell_centers, targets])) if len(targets) else cell_centers
        history.append(sse.sum() / data.n * data.scale)
        if not len(targets) and len(history) > 1 and history[-2] - history[-1] <= tol * history[-2]:
            break
    return bounds, np.array(history)


def _relocation_targets(data: _SortedData, bounds: np.ndarray, centers: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` distinct weights with the largest positive weighted error (new centres)."""
    error = data.h * (data.w - centers[_labels_from_bounds(bounds)]) ** 2
    pool = min(16 * count, data.n)  # the largest errors, enough to find ``count`` distinct values
    top = np.argpartition(error, data.n - pool)[data.n - pool :]
    top = top[np.argsort(-error[top], kind="stable")]
    top = top[error[top] > 0]
    values, first = np.unique(data.w[top], return_index=True)  # first = the largest error of each value
    return np.sort(values[np.argsort(first)[:count]])


# --------------------------------------------------------------------------------------------------
# iterative ECSQ (Algorithm 1)
# --------------------------------------------------------------------------------------------------


class _EcsqLayout:
    """The weights regrouped for the ECSQ assignment ``argmin_j h_i (w_i - c_j)^2 + penalty_j``.

    With h_i varying per weight the cells are not intervals of w, so the assignment is a matrix argmin.
    To keep it small, the weights are split into ``classes`` classes of similar importance (quantiles of
    h; zero importance is a class of its own), each class in ascending w, and cut into chunks of at most
    ``chunk`` weights. A chunk has a narrow range [w_lo, w_hi] x [h_lo, h_hi], and centre j can be the
    argmin for one of its weights only if ``h_lo d_near_j^2 + penalty_j <= min_j' (h_hi d_far_j'^2 +
    penalty_j')`` (nearest / farthest distance from c_j to [w_lo, w_hi]). Only those candidates are scored,
    so the exact assignment costs O(n * candidates) instead of O(n k). The layout is fixed for a run.
    """

    def __init__(self, w_sorted: np.ndarray, h_sorted: np.ndarray, classes: int = 16, chunk: int = 4096):
        positive = h_sorted > 0
        edges = np.quantile(h_sorted[positive], np.linspace(0, 1, classes + 1)[1:-1]) if positive.any() else []
        category = np.where(positive, 1 + np.searchsorted(edges, h_sorted, side="right"), 0)
        self.perm = np.argsort(category, kind="stable")  # stable: ascending w within a class
        self.w, self.h = w_sorted[self.perm], h_sorted[self.perm]
        n = self.w.shape[0]
        class_starts = np.searchsorted(category[self.perm], np.arange(classes + 2))
        self.starts = np.unique(np.concatenate([np.arange(0, n, chunk), class_starts[class_starts < n]]))
        self.stops = np.append(self.starts[1:], n)
        self.w_lo, self.w_hi = self.w[self.starts], self.w[self.stops - 1]
        self.h_lo = np.minimum.reduceat(self.h, self.starts)
        self.h_hi = np.maximum.reduceat(self.h, self.starts)
        self.features = np.stack([self.h, self.h * self.w], axis=1)  # [n, 2]: cost = f @ [c^2, -2c] + penalty

    def assign(self, centers: np.ndarray, penalty: np.ndarray) -> np.ndarray:
        """Labels [n] in layout order; ties go to the lowest index."""
        w_lo, w_hi = self.w_lo[:, None], self.w_hi[:, None]
        near = np.maximum(np.maximum(centers - w_hi, w_lo - centers), 0.0)  # [chunks, k]
        far = np.maximum(np.abs(centers - w_lo), np.abs(centers - w_hi))
        upper = np.min(self.h_hi[:, None] * far**2 + penalty, axis=1, keepdims=True)
        candidates = self.h_lo[:, None] * near**2 + penalty <= upper * (1 + 1e-9) + 1e-300  # rounding slack
        coefficients = np.stack([centers * centers, -2.0 * centers])
        labels = np.empty(self.w.shape[0], np.int32)
        for chunk, (start, stop) in enumerate(zip(self.starts, self.stops)):  # loop over chunks of weights
            index = np.flatnonzero(candidates[chunk])
            if index.size == 1:
                labels[start:stop] = index[0]
            else:
                cost = self.features[start:stop] @ coefficients[:, index] + penalty[index]
                labels[start:stop] = index[np.argmin(cost, axis=1)]
        return labels


def _ecsq_assign(w, h, centers, penalty, chunk: int = 4096) -> np.ndarray:
    """``argmin_j h_i (w_i - c_j)^2 + penalty_j`` for every i (any order; ``centers`` ascending)."""
    order = np.argsort(w)
    layout = _EcsqLayout(w[order], h[order], chunk=chunk)
    labels = np.empty(w.shape[0], np.int32)
    labels[order[layout.perm]] = layout.assign(centers, penalty)
    return labels


def _ecsq(data: _SortedData, centers: np.ndarray, *, lam: float, max_iter: int, tol: float):
    """Algorithm 1 on the sorted data. Returns the labels [n] (sorted order, clusters numbered in
    ascending order of their centres) and J after each iteration (original units)."""
    n = data.n
    lam_scaled = lam / data.scale
    layout = _EcsqLayout(data.w, data.h)
    hw = layout.features[:, 1]
    hww = hw * layout.w
    p = np.full(centers.shape[0], 1.0 / centers.shape[0])
    history = []
    for _ in range(max_iter):
        order = np.argsort(centers)
        centers, p = centers[order], p[order]
        penalty = -lam_scaled * np.log2(p)
        # an emptied cluster has p_j = 0 and is never chosen again: it is dropped
        if np.ptp(penalty) == 0:
            # equal penalties (first iteration, lam = 0): nearest centre, cells are intervals; the same
            # arithmetic as Lloyd's, so lam = 0 reproduces hwkmeans exactly while no cluster empties
            bounds = _nearest_bounds(data.w, centers)
            bounds = np.append(bounds[:-1][np.diff(bounds) > 0], n)
            labels = _labels_from_bounds(bounds)[layout.perm]
            centers, sse, count = data.prefix.cells(bounds)
        else:
            labels = layout.assign(centers, penalty)
            count = np.bincount(labels, minlength=centers.shape[0])
            if not (count > 0).all():
                kept = count > 0
                labels = (np.cumsum(kept) - 1).astype(np.int32)[labels]
                count = count[kept]
            centers, sse = _label_means(labels, count, layout.h, hw, hww, layout.w)
        distortion = sse.sum() / n
        p = count / n
        objective = distortion + lam_scaled * _entropy(count)
        history.append(objective * data.scale)
        if len(history) > 1 and history[-2] - history[-1] <= tol * history[-2]:
            break
    rank = np.empty(centers.size, np.int32)
    rank[np.argsort(centers)] = np.arange(centers.size)
    sorted_labels = np.empty(n, np.int32)
    sorted_labels[layout.perm] = rank[labels]
    return sorted_labels, np.array(history)


def _label_means(labels, count, h, hw, hww, w):
    """Centres (weighted means; the plain mean where all importance is zero) and weighted squared
    errors of the clusters of ``labels`` [n] (every cluster non-empty); ``h, hw, hww, w`` [n] are h, h*w,
    h*w^2 and w in the order of the labels.

    Sums per cluster are accumulated directly, without the cancellation of prefix-sum differences.
    """
    k = count.shape[0]
    s0 = np.bincount(labels, h, minlength=k)
    s1 = np.bincount(labels, hw, minlength=k)
    s2 = np.bincount(labels, hww, minlength=k)
    weighted = s0 > 0
    safe = np.where(weighted, s0, 1.0)
    centers = s1 / safe
    if not weighted.all():
        centers = np.where(weighted, centers, np.bincount(labels, w, minlength=k) / count)
    return centers, np.maximum(s2 - s1 * s1 / safe, 0.0)


# --------------------------------------------------------------------------------------------------
# uniform quantization
# --------------------------------------------------------------------------------------------------


def _uniform_bins(w: np.ndarray, step: float, zero_center: bool) -> np.ndarray:
    scaled = w / step + (0.5 if zero_center else 0.0)
    if np.abs(scaled).max() > 2.0**52:
        raise ValueError(
            f"step {step:.3g} is too small for weights up to {np.abs(w).max():.3g} (more than 2**52 bins); "
            "use a larger step"
        )
    return np.floor(scaled)


def _uniform(w, h, step: float, *, zero_center: bool, weighted_mean: bool):
    _, labels = np.unique(_uniform_bins(w, step, zero_center), return_inverse=True)
    labels = labels.astype(np.int32).reshape(-1)
    count = np.bincount(labels)
    plain = np.bincount(labels, w) / count
    if not weighted_mean or h is None:
        return plain, labels
    scaled = h / h.max() if h.max() > 0 else h
    s0 = np.bincount(labels, scaled, minlength=count.size)
    s1 = np.bincount(labels, scaled * w, minlength=count.size)
    return np.where(s0 > 0, s1 / np.where(s0 > 0, s0, 1.0), plain), labels


def _uniform_steps_for_entropy(w: np.ndarray, bits: np.ndarray, zero_center: bool) -> np.ndarray:
    """Bin widths whose uniform-quantizer label entropy on w is ``bits`` (bisection in log step)."""
    sample = np.sort(w)
    if sample.size > 65536:  # evenly spaced order statistics: the same distribution, fast to bin
        sample = sample[np.linspace(0, sample.size - 1, 65536).astype(np.int64)]
    span = float(sample[-1] - sample[0])
    scale = span if span > 0 else max(float(np.abs(sample).max()), 1.0)

    def entropy(step):
        bins = np.floor(sample / step + (0.5 if zero_center else 0.0))
        return _entropy(np.diff(np.flatnonzero(np.diff(np.concatenate([[np.nan], bins, [np.nan]])) != 0)))

    steps = []
    for target in bits:
        low, high = math.log(scale) - 40 * math.log(2), math.log(scale) + 2  # entropy(high) ~ 0 bits
        for _ in range(60):
            middle = 0.5 * (low + high)
            if entropy(math.exp(middle)) > target:
                low = middle
            else:
                high = middle
        steps.append(math.exp(0.5 * (low + high)))
    return np.array(steps)


# --------------------------------------------------------------------------------------------------
# dynamic programming
# --------------------------------------------------------------------------------------------------


def _dp_kmeans(groups: _Groups, k: int) -> np.ndarray:
    """Optimal partition of m groups into k intervals minimising the weighted squared error.

    F_j(b) = min_a F_{j-1}(a) + sse(a, b). The 1-D k-means cost satisfies the quadrangle inequality, so
    the leftmost optimal a is non-decreasing in b and each layer is solved by divide and conquer; all
    sub-problems of one recursion depth are evaluated together (O(m) vectorised work per depth, log m
    depths per layer). Returns the k + 1 cut positions (group indices).
    """
    prefix = groups.prefix
    m = len(groups.starts) - 1
    k = min(k, m)
    everything = np.arange(m + 1)
    cost = prefix.sse(np.zeros(m + 1, np.int64), everything)  # one cluster: cells [0, b)
    choice = np.zeros((k + 1, m + 1), np.int32)
    for j in range(2, k + 1):
        new_cost = np.full(m + 1, np.inf)
        # segments: targets b in [b_lo, b_hi], candidates a in [a_lo, a_hi]
        b_lo, b_hi = np.array([j]), np.array([m])
        a_lo, a_hi = np.array([j - 1]), np.array([m - 1])
        while b_lo.size:
            middle = (b_lo + b_hi) // 2
            last = np.minimum(a_hi, middle - 1)
            lengths = last - a_lo + 1
            offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            segment = np.repeat(np.arange(b_lo.size), lengths)
            a = a_lo[segment] + np.arange(segment.size) - offsets[segment]
            values = cost[a] + prefix.sse(a, middle[segment])
            best = np.minimum.reduceat(values, offsets)
            position = np.where(values == best[segment], np.arange(segment.size), segment.size)
            best_a = a[np.minimum.reduceat(position, offsets)]
            new_cost[middle] = best
            choice[j, middle] = best_a
            left = b_lo <= middle - 1
            right = middle + 1 <= b_hi
            b_lo, b_hi, a_lo, a_hi = (
                np.concatenate([b_lo[left], middle[right] + 1]),
                np.concatenate([middle[left] - 1, b_hi[right]]),
                np.concatenate([a_lo[left], best_a[right]]),
                np.concatenate([best_a[left], a_hi[right]]),
            )
        cost = new_cost
    cuts = np.zeros(k + 1, np.int64)
    cuts[k] = m
    for j in range(k, 1, -1):
        cuts[j - 1] = choice[j, cuts[j]]
    return cuts


def _dp_ecsq(groups: _Groups, lam_scaled: float, n: int) -> np.ndarray:
    """Optimal partition of m groups into intervals minimising sse/n + lam * (-sum p log2 p).

    The cost of a cell is separable (sse/n - lam * p log2 p with p = count/n), so this is a shortest
    path over breakpoints: F(b) = min_{a<b} F(a) + cost(a, b), O(m^2) vectorised per b. Returns the cut
    positions (group indices).
    """
    prefix = groups.prefix
    m = len(groups.starts) - 1
    best = np.zeros(m + 1)
    previous = np.zeros(m + 1, np.int64)
    for b in range(1, m + 1):
        a = np.arange(b)
        p = prefix.counts(a, b) / n
        values = best[:b] + prefix.sse(a, b) / n - lam_scaled * p * np.log2(p)
        previous[b] = np.argmin(values)
        best[b] = values[previous[b]]
    cuts = [m]
    while cuts[-1] > 0:
        cuts.append(previous[cuts[-1]])
    return np.array(cuts[::-1], np.int64)


# --------------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------------


def _entropy(count: np.ndarray) -> float:
    count = count[count > 0]
    if count.size == 0:
        return 0.0
    p = count / count.sum()
    return float(max(-(p * np.log2(p)).sum(), 0.0))


def _result(method, w, h, centers, labels, *, lam=None, step=None, history=None) -> QuantizationResult:
    centers = np.asarray(centers, np.float32)
    labels = np.asarray(labels, np.int32)
    if np.any(np.diff(centers) < 0):  # number the clusters in ascending order of their centres
        order = np.argsort(centers, kind="stable")
        rank = np.empty(order.size, np.int32)
        rank[order] = np.arange(order.size)
        centers, labels = centers[order], rank[labels]
    n = w.shape[0]
    if n:
        error = (w - centers.astype(np.float64)[labels]) ** 2
        distortion = float(error.mean())
        weighted = distortion if h is None else float(np.dot(h, error) / n)
    else:
        distortion = weighted = 0.0
    entropy = _entropy(np.bincount(labels, minlength=len(centers)))
    objective = weighted + (lam * entropy if method in ("ecsq", "dp-ecsq") else 0.0)
    history = np.zeros(0) if history is None else np.asarray(history, np.float64)
    return QuantizationResult(
        method=method,
        centers=centers,
        labels=labels,
        distortion=distortion,
        weighted_distortion=weighted,
        entropy=entropy,
        objective=objective,
        clusters_used=int(len(centers)),
        iterations=int(history.size),
        history=history,
        lam=None if lam is None else float(lam),
        step=None if step is None else float(step),
    )
