"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import time


def best_of(repeat: int, fn):
    """(the shortest of ``repeat`` timed calls of ``fn``, in seconds; the last call's result)."""
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out
