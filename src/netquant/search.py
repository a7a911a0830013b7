"""Operating-point search: the largest compression ratio whose accuracy still meets a floor, robustly.

A probe quantizes at one value of the method's rate parameter (k, step or lam), fine-tunes with several
seeds, and writes and evaluates a file per seed; it meets the floor when the *mean* accuracy over the seeds
does (one test image is 0.01 points on MNIST, while fine-tuning seeds move a point by 0.05-0.1, so a single
run is a knife's edge). The search starts from a sweep's coarse points, brackets the floor between the
largest-ratio point that meets it and the next point of larger ratio that does not, and bisects the rate
parameter in between (on a log scale for step and lam, over integers for k) within a fixed number of
probes. Every probe is kept, so the table shows all that was tried.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Callable, Sequence


@dataclass
class Probe:
    """One rate value, measured: the accuracies (%) of its fine-tuning seeds and its file's ratio."""

    rate: float
    accuracies: list[float]
    ratio: float
    info: dict = field(default_factory=dict)  # anything the caller wants kept with it (paths, bits, ...)

    @property
    def accuracy(self) -> float:
        """The robust accuracy: the mean over the seeds."""
        return statistics.fmean(self.accuracies)

    @property
    def spread(self) -> float:
        """Half the range of the seeds' accuracies (0 for one seed)."""
        return (max(self.accuracies) - min(self.accuracies)) / 2

    def meets(self, floor: float) -> bool:
        return meets_floor(self.accuracy, floor)


def _midpoint(a: float, b: float, integer: bool) -> float | None:
    """A rate strictly between a and b (geometric mean; integers for k), or None when there is none."""
    lo, hi = sorted((a, b))
    if integer:
        middle = round(math.sqrt(lo * hi)) if lo > 0 else (lo + hi) // 2
        middle = min(max(middle, lo + 1), hi - 1)
        return float(middle) if lo < middle < hi else None
    middle = math.sqrt(lo * hi) if lo > 0 else (lo + hi) / 2
    return middle if lo < middle < hi and not math.isclose(middle, lo, rel_tol=1e-6) else None


# Accuracies are percentages computed the same way everywhere; the slack only absorbs the rounding of
# "floor = pruned accuracy - tolerance" (e.g. 99.04 - 0.05 = 98.99000000000001).
FLOOR_SLACK = 1e-9


def meets_floor(accuracy, floor: float):
    """The floor rule of Table 1, the search and ``largest_ratio``: accuracy (a number or an array) is at
    least the floor."""
    return accuracy >= floor - FLOOR_SLACK


def best(probes: Sequence[Probe], floor: float) -> Probe | None:
    """The probe of largest ratio that meets the floor (ties: the more accurate); None if none does."""
    meeting = [p for p in probes if p.meets(floor)]
    return max(meeting, key=lambda p: (p.ratio, p.accuracy)) if meeting else None


def search(measure: Callable[[float], Probe], coarse: Sequence[Probe], floor: float, *, max_probes: int,
           integer: bool) -> tuple[Probe | None, list[Probe]]:
    """Refine ``coarse`` (probes at a sweep's grid values) towards the floor with at most ``max_probes``
    calls of ``measure(rate)``. Returns (the best probe of all, the new probes in the order made)."""
    if max_probes < 0:
        raise ValueError(f"max_probes must be >= 0, got {max_probes}")
    probes = list(coarse)
    made: list[Probe] = []
    while len(made) < max_probes:
        ordered = sorted(probes, key=lambda p: p.ratio)
        chosen = best(ordered, floor)
        if chosen is None:
            break  # nothing meets the floor: there is no bracket to refine
        above = [p for p in ordered if p.ratio > chosen.ratio and not p.meets(floor)]
        if not above:
            break  # the largest ratio tried meets the floor: the grid, not the floor, is the limit
        failing = min(above, key=lambda p: p.ratio)
        rate = _midpoint(chosen.rate, failing.rate, integer)
        if rate is None or any(math.isclose(rate, p.rate, rel_tol=1e-9) for p in probes):
            break  # the bracket cannot be split any further
        probe = measure(rate)
        probes.append(probe)
        made.append(probe)
    return best(probes, floor), made
