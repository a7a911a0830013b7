"""Exact dynamic-programming solvers over sorted weights (beyond the paper).

- ``dp_kmeans``: the optimal weighted 1-D k-means partition (divide-and-conquer optimisation,
  O(k m log m) for m groups) - tells how far Lloyd is from optimal.
- ``dp_ecsq``: the partition into intervals minimising J = D + lam * H (shortest path over breakpoints,
  O(m^2)). Optimal among interval partitions; with constant importance the ECSQ optimum is an interval
  partition, so it is then the optimum. With a varying importance the optimal cells need not be
  intervals, and iterative ECSQ can do better.

Both are exact when the number m of distinct weights is at most ``bins``; otherwise the result is optimal
among partitions whose boundaries fall on the groups' edges (``SortedData.groups``).
"""

from __future__ import annotations

import numpy as np

from netquant.quantize.sorted import Groups

def dp_kmeans(groups: Groups, k: int) -> np.ndarray:
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


def dp_ecsq(groups: Groups, lam_scaled: float, n: int) -> np.ndarray:
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
