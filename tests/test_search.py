"""Operating-point search on synthetic monotone curves: it brackets the floor and finds, within its probe
budget, a point at least as good as a dense grid would."""

import math

from hypothesis import given, settings, strategies as st

from netquant.search import Probe, best, search


def curve(threshold: float, noise_seed: int):
    """Accuracy falls as the step grows past ``threshold``; the ratio grows with the step."""

    def measure(step: float) -> Probe:
        accuracy = 99.3 - 5 * max(0.0, math.log(step / threshold))
        wobble = [((noise_seed * 7919 + i * 104729 + int(step * 1e6)) % 7 - 3) * 0.001 for i in range(3)]
        return Probe(step, [accuracy + w for w in wobble], ratio=10 * step ** 0.5)

    return measure


@settings(max_examples=40, deadline=None)
@given(st.floats(0.01, 0.5), st.integers(0, 1000))
def test_search_with_12_probes_beats_a_40_point_grid(threshold, noise_seed):
    measure = curve(threshold, noise_seed)
    floor = 99.27
    coarse = [measure(0.005 * 2 ** i) for i in range(9)]  # a coarse sweep: 8 doublings
    found, made = search(measure, coarse, floor, max_probes=12, integer=False)
    assert len(made) <= 12 and found is not None and found.meets(floor)
    grid = [measure(0.005 * (256 ** (i / 39))) for i in range(40)]  # 40 points over the same range
    grid_best = best(grid, floor)
    assert found.ratio >= grid_best.ratio * (1 - 1e-9)


def test_integer_rates_stop_when_the_bracket_is_adjacent():
    def measure(k: float) -> Probe:
        return Probe(k, [99.3 if k >= 20 else 98.0], ratio=100 / k)

    coarse = [measure(k) for k in (4, 8, 16, 32, 64)]
    found, made = search(measure, coarse, 99.27, max_probes=12, integer=True)
    assert found.rate == 20 and all(float(p.rate).is_integer() for p in made) and len(made) <= 5


def test_no_point_meeting_the_floor_or_no_failing_point_means_nothing_to_refine():
    measure = curve(0.1, 0)
    low = [Probe(r, [90.0], ratio=r) for r in (1, 2, 3)]
    assert search(measure, low, 99.0, max_probes=5, integer=False) == (None, [])
    high = [Probe(r, [99.9], ratio=r) for r in (1, 2, 3)]
    found, made = search(measure, high, 99.0, max_probes=5, integer=False)
    assert found.rate == 3 and made == []


def test_the_mean_over_seeds_decides():
    probe = Probe(1.0, [99.30, 99.20, 99.28], ratio=50)
    assert abs(probe.accuracy - 99.26) < 1e-9 and not probe.meets(99.27) and abs(probe.spread - 0.05) < 1e-9
