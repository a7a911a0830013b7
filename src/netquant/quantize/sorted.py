"""The core every quantizer but uniform shares: the weights sorted ascending with their importance, prefix
sums over them, and cells as intervals of the sorted weights.

In 1-D, nearest-centre cells are intervals, so a Lloyd iteration is a binary search per centre and a cell's
weighted mean and error are differences of prefix sums (O(k log n) per iteration). The DP solvers work on
groups of sorted weights (runs of equal values never split); ``SortedData.groups`` builds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from netquant.vocabulary import INITS

class Prefix:
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
class Groups:
    starts: np.ndarray  # int64 [m + 1]: first sorted index of each group, then n
    prefix: Prefix  # over the m groups


class SortedData:
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
    def prefix(self) -> Prefix:
        hw = self.h * self.w
        return Prefix(self.h, hw, hw * self.w, self.w)

    def distinct_values(self) -> np.ndarray:
        return self.w[self.run_starts]

    def distinct_solution(self):
        """Every distinct weight its own centre."""
        bounds = np.append(self.run_starts, self.n)
        return self.distinct_values(), self.unsort(labels_from_bounds(bounds))

    def unsort(self, sorted_labels: np.ndarray) -> np.ndarray:
        labels = np.empty(self.n, np.int32)
        labels[self.order] = sorted_labels
        return labels

    def groups(self, bins: int) -> Groups:
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
        return Groups(np.append(starts, self.n), Prefix(*sums, count=np.diff(np.append(starts, self.n))))


def labels_from_bounds(bounds: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(bounds) - 1, dtype=np.int32), np.diff(bounds))


def initial_centers(data: SortedData, k: int, init, seed: int) -> np.ndarray:
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




def nearest_bounds(w_sorted: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Cell bounds [k + 1] of the nearest-centre assignment of sorted weights to sorted centres.

    A weight exactly at a midpoint goes to the lower centre.
    """
    cuts = np.searchsorted(w_sorted, 0.5 * (centers[:-1] + centers[1:]), side="right")
    return np.concatenate([[0], cuts, [w_sorted.shape[0]]])



def label_means(labels, count, h, hw, hww, w):
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
