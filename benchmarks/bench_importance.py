"""Seconds per 1,000 samples of each importance estimator on LeNet-5 and ResNet-32, one CPU thread.

    python benchmarks/bench_importance.py [--scale 1.0] [--threads 1] [--device cpu]

Random inputs of the paper's shapes (MNIST 1x28x28, CIFAR-10 3x32x32); ResNet-32's BatchNorm statistics are
set by a train-mode pass first (a fresh network's running statistics saturate the softmax, which changes
nothing in the cost). The reference is one batched gradient pass (mean cross-entropy, batch 100). Cost does
not depend on trained or random weights. ``--scale`` multiplies the number of timed samples.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from netquant.importance import adam_second_moments, hessian_diagonal
from netquant.models import build

SHAPES = {"lenet5": (1, 28, 28), "resnet32": (3, 32, 32)}
# (label, keyword arguments of hessian_diagonal, timed samples for lenet5, for resnet32)
CASES = [
    ("becker-lecun (default)", {"estimator": "becker-lecun"}, 2000, 500),
    ("ggn (modules)", {"estimator": "ggn", "backend": "modules"}, 1000, 64),
    ("ggn (func)", {"estimator": "ggn", "backend": "func"}, 100, 32),
    ("ggn-mc (modules)", {"estimator": "ggn-mc", "backend": "modules"}, 2000, 256),
    ("ggn-mc (func)", {"estimator": "ggn-mc", "backend": "func"}, 500, 128),
    ("hutchinson (1 probe / 100 samples)", {"estimator": "hutchinson"}, 2000, 200),
]
BATCH = 100


def batches(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, len(x), BATCH)]


def per_1000(seconds: float, samples: int) -> float:
    return seconds / samples * 1000


def bench(arch: str, scale: float, device: str) -> list[tuple[str, float, float]]:
    torch.manual_seed(0)
    model = build(arch).to(device)
    n_max = max(max(int(c[2] * scale), int(c[3] * scale), 1) for c in CASES) + BATCH
    x, y = torch.randn(n_max, *SHAPES[arch], device=device), torch.randint(0, 10, (n_max,), device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: one pass sets the statistics of that pass
    with torch.no_grad():
        model.train()(x[:256])
    model.eval()
    rows = []

    n = max(int(1000 * scale), BATCH) if arch == "lenet5" else max(int(200 * scale), BATCH)
    model(x[:BATCH]).sum().backward()  # warm-up
    sync()
    start = time.perf_counter()
    for xb, yb in batches(x[:n], y[:n]):
        model.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
    sync()
    gradient = per_1000(time.perf_counter() - start, n)
    rows.append(("gradient pass (batch 100)", gradient))

    for label, kwargs, n_lenet, n_resnet in CASES:
        n = max(int((n_lenet if arch == "lenet5" else n_resnet) * scale), 1)
        hessian_diagonal(model, batches(x[:2], y[:2]), 2, **kwargs)  # warm-up
        start = time.perf_counter()
        hessian_diagonal(model, batches(x[:n], y[:n]), n, **kwargs)
        rows.append((label, per_1000(time.perf_counter() - start, n)))

    n = max(int((1000 if arch == "lenet5" else 200) * scale), BATCH)
    start = time.perf_counter()
    adam_second_moments(model, batches(x[:n], y[:n]), epochs=1, lr=1e-4)
    rows.append(("adam retraining (batch 100)", per_1000(time.perf_counter() - start, n)))
    return [(label, seconds, seconds / gradient) for label, seconds in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the number of timed samples")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    on = torch.cuda.get_device_name(args.device) if cuda else f"{torch.get_num_threads()} thread(s)"
    print(f"torch {torch.__version__}, {args.device}: {on}\n")
    print("| network | method | s / 1,000 samples | x gradient pass | 50,000 samples |")
    print("|---|---|---:|---:|---:|")
    for arch in SHAPES:
        for label, seconds, ratio in bench(arch, args.scale, args.device):
            print(f"| {arch} | {label} | {seconds:.2f} | {ratio:.1f} | {seconds * 50 / 60:.1f} min |")


if __name__ == "__main__":
    main()
