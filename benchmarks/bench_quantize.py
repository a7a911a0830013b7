"""Benchmark of netquant.quantize: speed against scikit-learn, time and peak memory at pruned-AlexNet scale,
and the gap of the heuristics (Lloyd, Algorithm 1) to the DP optimum.

Part 1: n weights (default 1,000,000, Laplacian like unpruned layers) with random positive importance,
k = 32: ``quantize(method="hwkmeans")`` against ``sklearn.cluster.KMeans(n_clusters=32, init=<the same
linear init>, n_init=1).fit(w[:, None], sample_weight=h)``, both on the float32 weights.

Part 2: n_large weights (default 6,700,000, the kept weights of a 89%-pruned AlexNet: Laplacian weights
with the small ones removed) - hwkmeans k=64 and ECSQ at a lambda aiming at ``--ecsq-bits`` bits, against
dp-kmeans and dp-ecsq. With varying importance Algorithm 1 may leave the interval partitions that dp-ecsq
searches and beat it, so that "gap" can be negative.

Part 3: ECSQ with constant importance on n pruned-like weights, where the best interval partition that
dp-ecsq finds is the true ECSQ optimum.

Times are wall-clock seconds; in parts 2 and 3 with tracemalloc tracing on (numpy reports its buffers to
it; the overhead is small for large arrays), in part 1 untraced and the best of ``--repeat`` runs for
both sides, the peak taken from a separate traced run. Peak MB is the largest traced allocation during
the call above what was allocated before it. Run single-threaded for comparable numbers:
``OMP_NUM_THREADS=1 python benchmarks/bench_quantize.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import tracemalloc

import numpy as np

from netquant.quantize import quantize, rate_grid


def measure(function):
    """(result, seconds, peak MB above the allocations at the start) of function(), traced."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - start
    peak = (tracemalloc.get_traced_memory()[1] - before) / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def timed(function, repeat=1):
    """(result, fastest seconds of ``repeat`` runs) of function(), untraced."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return result, min(times)


def laplacian_weights(rng, n):
    return rng.laplace(0.0, 0.02, n).astype(np.float32)


def pruned_weights(rng, n, threshold=0.006, scale=0.01):
    # kept weights of magnitude pruning of Laplacian weights: |w| = threshold + Exp(scale) (memoryless tail)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return (sign * (threshold + rng.exponential(scale, n))).astype(np.float32)


def weighted_distortion(w, h, values):
    return float(np.mean(h * (w.astype(np.float64) - values.astype(np.float64)) ** 2))


def row(name, seconds, peak, result, reference=None, extra=""):
    objective = result.objective
    gap = "" if reference is None else f"{100 * (objective / reference - 1):+8.3f}%"
    print(
        f"{name:<34} {seconds:8.2f} {peak:8.0f} {result.iterations:6d} {result.clusters_used:5d} "
        f"{result.entropy:6.3f} {objective:13.6e} {gap:>10} {extra}"
    )


def header(title):
    print(f"\n{title}")
    columns = ("time s", "peak MB", "iters", "k", "H bits", "objective", "gap to DP")
    widths = (8, 8, 6, 5, 6, 13, 10)
    print(f"{'method':<34} " + " ".join(f"{name:>{width}}" for name, width in zip(columns, widths)))


def part_one(args):
    rng = np.random.default_rng(args.seed)
    w = laplacian_weights(rng, args.n)
    h = rng.lognormal(0.0, 1.0, args.n)
    init = np.linspace(w.min(), w.max(), args.k)
    header(
        f"Part 1: n = {args.n:,}, k = {args.k}, Laplacian weights, importance lognormal(0, 1); "
        "objective = weighted distortion"
    )
    # times untraced and best of --repeat runs (as scikit-learn's below); the peak memory from a traced run
    ours, ours_time = timed(lambda: quantize(w, h, method="hwkmeans", init=init), args.repeat)
    _, _, ours_peak = measure(lambda: quantize(w, h, method="hwkmeans", init=init))
    optimum, dp_time = timed(lambda: quantize(w, h, method="dp-kmeans", k=args.k))
    _, _, dp_peak = measure(lambda: quantize(w, h, method="dp-kmeans", k=args.k))
    row("dp-kmeans (optimum, 65536 bins)", dp_time, dp_peak, optimum)
    row("netquant hwkmeans (linear init)", ours_time, ours_peak, ours, optimum.objective)
    if args.skip_sklearn:
        return
    from sklearn.cluster import KMeans

    kmeans = KMeans(n_clusters=args.k, init=init[:, None].astype(w.dtype), n_init=1)
    model, sklearn_time = timed(lambda: kmeans.fit(w[:, None], sample_weight=h), args.repeat)
    centers = model.cluster_centers_[:, 0].astype(np.float32)
    sklearn_distortion = weighted_distortion(w, h, centers[model.labels_])
    gap = 100 * (sklearn_distortion / optimum.objective - 1)
    print(
        f"{'sklearn KMeans (same init)':<34} {sklearn_time:8.2f} {'-':>8} {model.n_iter_:6d} "
        f"{len(np.unique(model.labels_)):5d} {'':>6} {sklearn_distortion:13.6e} {gap:+9.3f}%"
    )
    print(
        f"speed-up hwkmeans vs sklearn: {sklearn_time / ours_time:.1f}x; weighted distortion ratio "
        f"ours/sklearn = {ours.weighted_distortion / sklearn_distortion:.6f} (<= 1 means no worse)"
    )


def part_two(args):
    rng = np.random.default_rng(args.seed + 1)
    w = pruned_weights(rng, args.n_large)
    h = rng.lognormal(0.0, 1.0, args.n_large)
    header(
        f"Part 2: n = {args.n_large:,} kept weights of a pruned layer stack (AlexNet scale), importance "
        f"lognormal(0, 1); hwkmeans objective = weighted distortion, ecsq objective = J = D + lam*H"
    )
    optimum, seconds, peak = measure(lambda: quantize(w, h, method="dp-kmeans", k=args.k_large))
    row(f"dp-kmeans k={args.k_large} (65536 bins)", seconds, peak, optimum)
    result, seconds, peak = measure(lambda: quantize(w, h, method="hwkmeans", k=args.k_large))
    row(f"hwkmeans k={args.k_large} (linear init)", seconds, peak, result, optimum.objective)
    result, seconds, peak = measure(lambda: quantize(w, h, method="kmeans", k=args.k_large))
    row(f"kmeans k={args.k_large} (linear init)", seconds, peak, result, optimum.objective, "(objective: weighted)")

    bits = {"bits_min": args.ecsq_bits, "bits_max": args.ecsq_bits, "points": 1}
    grid, seconds, _ = measure(lambda: rate_grid("ecsq", w, h, **bits))
    lam = float(grid[0])
    print(f"lam = {lam:.4g} from rate_grid for {args.ecsq_bits} bits ({seconds:.2f} s)")
    optimum, seconds, peak = measure(lambda: quantize(w, h, method="dp-ecsq", lam=lam))
    row("dp-ecsq (intervals, 4096 bins)", seconds, peak, optimum)
    result, seconds, peak = measure(lambda: quantize(w, h, method="ecsq", lam=lam))
    row("ecsq (k0=1024, linear init)", seconds, peak, result, optimum.objective)
    step = float(rate_grid("uniform", w, **bits)[0])
    result, seconds, peak = measure(lambda: quantize(w, h, method="uniform", step=step))
    row("uniform (weighted mean)", seconds, peak, result, None, f"(step {step:.3g}; objective: weighted D)")


def part_three(args):
    rng = np.random.default_rng(args.seed + 1)
    w = pruned_weights(rng, args.n)
    lam = float(rate_grid("ecsq", w, bits_min=args.ecsq_bits, bits_max=args.ecsq_bits, points=1)[0])
    header(
        f"Part 3: ECSQ against the true optimum - constant importance (then the optimal ECSQ cells are intervals), "
        f"n = {args.n:,} pruned-like weights, lam = {lam:.4g}"
    )
    optimum, seconds, peak = measure(lambda: quantize(w, method="dp-ecsq", lam=lam))
    row("dp-ecsq (optimum, 4096 bins)", seconds, peak, optimum)
    optimum, seconds, peak = measure(lambda: quantize(w, method="dp-ecsq", lam=lam, bins=16384))
    row("dp-ecsq (optimum, 16384 bins)", seconds, peak, optimum)
    result, seconds, peak = measure(lambda: quantize(w, method="ecsq", lam=lam))
    row("ecsq (k0=1024, linear init)", seconds, peak, result, optimum.objective)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="weights in part 1")
    parser.add_argument("--k", type=int, default=32, help="clusters in part 1")
    parser.add_argument("--n-large", type=int, default=6_700_000, help="weights in part 2")
    parser.add_argument("--k-large", type=int, default=64, help="clusters of hwkmeans in part 2")
    parser.add_argument("--ecsq-bits", type=float, default=4.0, help="target entropy of the ECSQ run in part 2")
    parser.add_argument("--repeat", type=int, default=3, help="part 1: best of this many runs of each side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-sklearn", action="store_true", help="part 1 without the scikit-learn run")
    parser.add_argument("--skip-large", action="store_true", help="only part 1")
    args = parser.parse_args()
    print(
        f"numpy {np.__version__}, python {platform.python_version()}, {platform.machine()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    part_one(args)
    if not args.skip_large:
        part_two(args)
    part_three(args)


if __name__ == "__main__":
    main()
