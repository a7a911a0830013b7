"""Quantize, encode and decode a pruned AlexNet-sized model (61.1 M parameters, 89% pruned): time and memory.

    python benchmarks/bench_alexnet_scale.py [--methods uniform hwkmeans ecsq] [--sparsity 0.89]

The weights are torchvision's AlexNet at its random initialisation (no ImageNet weights are needed to
measure the cost), magnitude-pruned per layer; the importance is random and positive. Peak memory is the
process's maximum resident set size, read after each stage.
"""

import argparse
import os
import resource
import tempfile
import time

import numpy as np
import torch

from netquant import container, models, prune, quantize


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", nargs="+", default=["uniform", "hwkmeans", "ecsq"])
    ap.add_argument("--sparsity", type=float, default=0.89)
    ap.add_argument("--k", type=int, default=64)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = models.build("alexnet")
    state = model.state_dict()
    params = [n for n, _ in model.named_parameters()]
    weights = prune.prunable_names(model)
    masks = prune.magnitude_masks({n: state[n] for n in weights}, a.sparsity, scope="layer")
    rng = np.random.default_rng(0)
    importance = {n: torch.from_numpy(rng.random(state[n].shape, dtype=np.float32) + 0.01) for n in params}
    kept = sum(int(m.sum()) for m in masks.values()) + sum(state[n].numel() for n in params if n not in masks)
    print(f"AlexNet: {sum(state[n].numel() for n in params):,} parameters, {kept:,} kept; peak RSS so far "
          f"{peak_rss_gib():.2f} GiB")
    print(f"{'method':<10} {'rate':>14} {'quantize s':>11} {'encode s':>9} {'decode s':>9} {'file MB':>8} "
          f"{'ratio':>7} {'peak GiB':>9}")
    for method in a.methods:
        rate = {"k": a.k} if quantize.rate_parameter(method) == "k" else {}
        if method == "uniform":
            rate = {"step": 0.002}
        elif method == "ecsq":
            rate = {"lam": 1e-7, "k": a.k}
        start = time.perf_counter()
        qmodel = quantize.quantize_model(state, param_names=params, masks=masks, importance=importance,
                                         method=method, parameters=params, **rate)
        t_quantize = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "alexnet.nqz")
            start = time.perf_counter()
            m = container.save(path, qmodel)
            t_encode = time.perf_counter() - start
            start = time.perf_counter()
            decoded = container.read_state_dict(path)
            t_decode = time.perf_counter() - start
        assert decoded.keys() == state.keys()
        shown = ", ".join(f"{k}={v:g}" for k, v in rate.items())
        print(f"{method:<10} {shown:>14} {t_quantize:>11.1f} {t_encode:>9.1f} {t_decode:>9.1f} "
              f"{m['file_bytes'] / 1e6:>8.2f} {m['ratio_file']:>7.1f} {peak_rss_gib():>9.2f}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
