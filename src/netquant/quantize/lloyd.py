"""Lloyd's algorithm on sorted weights: k-means and Hessian-weighted k-means (the paper's section 4.1).

Centres are (weighted) means of their cells; cells are the intervals between midpoints of adjacent
centres. A cluster emptied by an assignment moves onto the weight with the largest weighted error.
"""

from __future__ import annotations

import numpy as np

from netquant.quantize.sorted import SortedData, labels_from_bounds, nearest_bounds

def lloyd(data: SortedData, centers: np.ndarray, *, max_iter: int, tol: float):
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
        bounds = nearest_bounds(data.w, centers)
        empty = np.diff(bounds) == 0
        targets = relocation_targets(data, bounds, centers, int(empty.sum())) if empty.any() else []
        if empty.any():
            bounds = np.append(bounds[:-1][~empty], data.n)
        cell_centers, sse, _ = prefix.cells(bounds)
        centers = np.sort(np.concatenate([cell_centers, targets])) if len(targets) else cell_centers
        history.append(sse.sum() / data.n * data.scale)
        if not len(targets) and len(history) > 1 and history[-2] - history[-1] <= tol * history[-2]:
            break
    return bounds, np.array(history)


def relocation_targets(data: SortedData, bounds: np.ndarray, centers: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` distinct weights with the largest positive weighted error (new centres)."""
    error = data.h * (data.w - centers[labels_from_bounds(bounds)]) ** 2
    pool = min(16 * count, data.n)  # the largest errors, enough to find ``count`` distinct values
    top = np.argpartition(error, data.n - pool)[data.n - pool :]
    top = top[np.argsort(-error[top], kind="stable")]
    top = top[error[top] > 0]
    values, first = np.unique(data.w[top], return_index=True)  # first = the largest error of each value
    return np.sort(values[np.argsort(first)[:count]])
