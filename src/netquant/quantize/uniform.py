"""Uniform quantization (the paper's section 5.2): uniformly spaced thresholds of width ``step``; each
non-empty bin's centre is the plain or the Hessian-weighted mean of its members (Figure 3).

``uniform-zero`` (beyond the paper) pins the zero bin's centre to exactly 0, so its members become pruned
weights (:mod:`netquant.quantize.model`): coded as positions, not labels, as NNR's uniform quantizer with a
zero reconstruction level does."""

from __future__ import annotations

import math

import numpy as np

from netquant.coding import entropy_bits

def uniform_bins(w: np.ndarray, step: float, zero_center: bool) -> np.ndarray:
    scaled = w / step + (0.5 if zero_center else 0.0)
    if np.abs(scaled).max() > 2.0**52:
        raise ValueError(
            f"step {step:.3g} is too small for weights up to {np.abs(w).max():.3g} (more than 2**52 bins); "
            "use a larger step"
        )
    return np.floor(scaled)


def uniform_cells(w, h, step: float, *, zero_center: bool, weighted_mean: bool, zero_bin_to_zero: bool = False):
    if zero_bin_to_zero and not zero_center:
        raise ValueError("uniform-zero needs zero_center: true (0 the middle of a bin); "
                         "set quantize.options.zero_center to true")
    bins, labels = np.unique(uniform_bins(w, step, zero_center), return_inverse=True)
    centers, labels = _bin_means(w, h, labels, weighted_mean)
    if zero_bin_to_zero:
        centers = np.where(bins == 0, 0.0, centers)
    return centers, labels


def _bin_means(w, h, labels, weighted_mean: bool):
    labels = labels.astype(np.int32).reshape(-1)
    count = np.bincount(labels)
    plain = np.bincount(labels, w) / count
    if not weighted_mean or h is None:
        return plain, labels
    scaled = h / h.max() if h.max() > 0 else h
    s0 = np.bincount(labels, scaled, minlength=count.size)
    s1 = np.bincount(labels, scaled * w, minlength=count.size)
    return np.where(s0 > 0, s1 / np.where(s0 > 0, s0, 1.0), plain), labels


def uniform_steps_for_entropy(w: np.ndarray, bits: np.ndarray, zero_center: bool) -> np.ndarray:
    """Bin widths whose uniform-quantizer label entropy on w is ``bits`` (bisection in log step)."""
    sample = np.sort(w)
    if sample.size > 65536:  # evenly spaced order statistics: the same distribution, fast to bin
        sample = sample[np.linspace(0, sample.size - 1, 65536).astype(np.int64)]
    span = float(sample[-1] - sample[0])
    scale = span if span > 0 else max(float(np.abs(sample).max()), 1.0)

    def entropy(step):
        bins = np.floor(sample / step + (0.5 if zero_center else 0.0))
        return entropy_bits(np.diff(np.flatnonzero(np.diff(np.concatenate([[np.nan], bins, [np.nan]])) != 0)))

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
