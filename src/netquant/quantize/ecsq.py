"""Iterative entropy-constrained scalar quantization, the paper's Algorithm 1.

Minimises J = D + lam * H: assign each weight to ``argmin_j h_i (w_i - c_j)^2 - lam log2 p_j``, update the
centres to weighted means and ``p_j = |C_j| / n``, until J falls by less than ``tol * J``. With a varying
importance the cells are not intervals of w, so the exact assignment is a matrix argmin, made small by
scoring each chunk of similar (w, h) against only the centres that can win for it (``EcsqLayout``).
"""

from __future__ import annotations

import numpy as np

from netquant.coding import entropy_bits
from netquant.quantize.sorted import SortedData, label_means, labels_from_bounds, nearest_bounds

class EcsqLayout:
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


def ecsq_assign(w, h, centers, penalty, chunk: int = 4096) -> np.ndarray:
    """``argmin_j h_i (w_i - c_j)^2 + penalty_j`` for every i (any order; ``centers`` ascending)."""
    order = np.argsort(w)
    layout = EcsqLayout(w[order], h[order], chunk=chunk)
    labels = np.empty(w.shape[0], np.int32)
    labels[order[layout.perm]] = layout.assign(centers, penalty)
    return labels


def ecsq(data: SortedData, centers: np.ndarray, *, lam: float, max_iter: int, tol: float):
    """Algorithm 1 on the sorted data. Returns the labels [n] (sorted order, clusters numbered in
    ascending order of their centres) and J after each iteration (original units)."""
    n = data.n
    lam_scaled = lam / data.scale
    layout = EcsqLayout(data.w, data.h)
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
            bounds = nearest_bounds(data.w, centers)
            bounds = np.append(bounds[:-1][np.diff(bounds) > 0], n)
            labels = labels_from_bounds(bounds)[layout.perm]
            centers, sse, count = data.prefix.cells(bounds)
        else:
            labels = layout.assign(centers, penalty)
            count = np.bincount(labels, minlength=centers.shape[0])
            if not (count > 0).all():
                kept = count > 0
                labels = (np.cumsum(kept) - 1).astype(np.int32)[labels]
                count = count[kept]
            centers, sse = label_means(labels, count, layout.h, hw, hww, layout.w)
        distortion = sse.sum() / n
        p = count / n
        objective = distortion + lam_scaled * entropy_bits(count)
        history.append(objective * data.scale)
        if len(history) > 1 and history[-2] - history[-1] <= tol * history[-2]:
            break
    rank = np.empty(centers.size, np.int32)
    rank[np.argsort(centers)] = np.arange(centers.size)
    sorted_labels = np.empty(n, np.int32)
    sorted_labels[layout.perm] = rank[labels]
    return sorted_labels, np.array(history)
