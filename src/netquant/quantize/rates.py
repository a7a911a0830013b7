"""Rate grids: the values of each method's rate parameter (k, step or lam) that span a range of bits."""

from __future__ import annotations

import math

import numpy as np

from netquant.quantize.checks import as_vector, check_importance
from netquant.quantize.uniform import uniform_steps_for_entropy
from netquant.vocabulary import METHODS

def rate_parameter(method: str) -> str:
    """Name of the argument of :func:`quantize` that sets the rate of ``method``: "k", "step" or "lam"."""
    if method in ("kmeans", "hwkmeans", "dp-kmeans"):
        return "k"
    if method in ("uniform", "uniform-zero"):
        return "step"
    if method in ("ecsq", "dp-ecsq"):
        return "lam"
    raise ValueError(f"unknown quantization method {method!r}; choose one of {', '.join(METHODS)}")


def rate_is_integer(method: str) -> bool:
    """Whether ``method``'s rate parameter takes whole numbers only (k, a number of clusters)."""
    return rate_parameter(method) == "k"


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
      bits ``ceil(log2 k)``; the default gives k = 2, 4, ..., 256);
    - uniform: the bin widths whose label entropy is ``linspace(bits_min, bits_max, points)`` bits, found by
      bisection on the empirical entropy of at most 65,536 evenly spaced order statistics of w
     ;
    - ecsq, dp-ecsq: ``lam = ln 2 * mean(h) * step^2 / 6`` for those bin widths, the high-rate relation
      between ECSQ's Lagrange multiplier and its (near uniform) cell width; the reached entropies are
      close to the targets at high rate and approximate at 1-2 bits.

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
    if bits_max > 24:
        raise ValueError(f"bits_max={bits_max} asks for up to 2^{bits_max:g} clusters; at most 24 bits")
    bits = np.linspace(bits_min, bits_max, points)
    if parameter == "k":
        return np.unique(np.rint(2.0**bits).astype(np.int64))
    w = as_vector(w, "w")
    if w.size == 0:
        raise ValueError("rate_grid needs at least one weight")
    if not np.all(np.isfinite(w)):
        raise ValueError("w has NaN/inf entries; weights must be finite")
    steps = uniform_steps_for_entropy(w, bits, zero_center)
    if parameter == "step":
        return steps
    h = check_importance(h, w.shape[0])
    mean_h = 1.0 if h is None else float(h.mean())
    return math.log(2) * mean_h * steps**2 / 6
