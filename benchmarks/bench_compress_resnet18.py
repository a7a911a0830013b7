"""Compressing a torchvision ResNet-18 (11.7 M parameters) with netquant.compress on the CPU: wall time and
peak memory of each stage.

    python benchmarks/bench_compress_resnet18.py [--threads 2] [--samples 1000] [--json out.json]

Stages: the diagonal Hessian (Becker & Le Cun) over ``--samples`` random 224x224 images, quantization with
Hessian-weighted k-means and with iterative ECSQ at 3 bits (all layers together), writing each file
(encode + verify), and reading it back (decode). Peak memory is the largest resident set size sampled every
10 ms during the stage, minus the size before it. Random weights and images: time and memory do not depend
on the values.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

from netquant import compress, container


class Stage:
    """Wall time and peak extra resident memory (MiB) of a block."""

    def __init__(self, name: str, results: dict) -> None:
        self.name, self.results = name, results

    def __enter__(self):
        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        self.start = time.perf_counter()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        seconds = time.perf_counter() - self.start
        self.running = False
        self.thread.join()
        self.results[self.name] = {"seconds": seconds, "peak_extra_mib": (self.peak - self.base) / 2**20}
        print(f"{self.name:<34}{seconds:>9.1f} s{(self.peak - self.base) / 2**20:>10.0f} MiB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = compress.build_named("torchvision:resnet18").eval()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(50, 3, 224, 224, generator=g), torch.randint(0, 1000, (50,), generator=g))
               for _ in range(args.samples // 50)]
    n = sum(p.numel() for p in model.parameters())
    print(f"ResNet-18, {n:,} parameters, {args.threads} thread(s), torch {torch.__version__}")
    results: dict = {"parameters": n, "threads": args.threads, "samples": args.samples}
    with Stage(f"importance ({args.samples} samples)", results):
        h = compress.importance(model, batches, kind="hessian", samples=args.samples)
    network = {"arch": "torchvision:resnet18", "num_classes": 1000}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("hwkmeans", "ecsq"):
            with Stage(f"quantize {method}, 3 bits", results):
                q = compress.quantize(model, h, method=method, bits=3, network=network)
            path = Path(tmp) / f"{method}.nqz"
            with Stage(f"encode {method}", results):
                m = compress.save(q, path)
            with Stage(f"decode {method}", results):
                container.read_state_dict(path)
            results[f"ratio {method}"] = m["ratio_file"]
            print(f"  {method}: {m['file_bytes']:,} bytes, ratio {m['ratio_file']:.2f}, "
                  f"{m['bits_per_weight']['in_file']:.3f} bits per weight")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
