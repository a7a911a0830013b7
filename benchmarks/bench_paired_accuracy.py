"""How far below (or above) a reference network is each compressed file, paired on the same test images?

    python benchmarks/bench_paired_accuracy.py --reference reference/cpu/files/resnet32/pruned.nqz \
        --files reference/cpu/files/resnet32/*-pruned.nqz --data-root DIR --json out.json

Two networks of about 92% accuracy evaluated on the same 10,000 images agree on most of them, so the
difference of their accuracies is far better determined than either accuracy alone (standard error about
0.27 points each). For every file: the images it gets right that the reference gets wrong (``gained``) and
the reverse (``lost``), the difference of accuracies in points, and its paired standard error
``100 * std(correct_file - correct_reference) / sqrt(n)``. Every network is the one its file decodes to.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path

import torch

from netquant import compress

import provenance


def correct(path: str, data_root: str | None, prepared: str | None, source=None):
    """(one bool per test image: whether the network of the file at ``path`` classifies it right, the data)."""
    model, qmodel = compress.load_model(path)
    source = source or compress.test_source(qmodel.network, data_root=data_root, prepared=prepared)
    model.eval()
    hits = []
    with torch.no_grad():
        for inputs, targets in source.test_batches():
            hits.append(model(inputs).argmax(1) == targets)
    return torch.cat(hits), source


def paired(reference: torch.Tensor, other: torch.Tensor) -> dict:
    n, accuracy = len(reference), other.double().mean().item()
    change = other.double() - reference.double()
    return {"accuracy": round(100 * accuracy, 2), "gained": int((change > 0).sum()),
            "lost": int((change < 0).sum()), "difference": round(100 * change.mean().item(), 2),
            "paired_standard_error": round(100 * change.std(correction=0).item() / math.sqrt(n), 3),
            "unpaired_standard_error": round(100 * math.sqrt(accuracy * (1 - accuracy) / n), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", required=True, help="the .nqz file compared against (the pruned model's)")
    ap.add_argument("--files", nargs="+", required=True, help=".nqz files of the same network")
    ap.add_argument("--data-root", default=None, help="the folder holding the dataset (torchvision's layout)")
    ap.add_argument("--prepared", default=None, help="or the workflow's prepared data (resources/data/*.pt)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    if (args.data_root is None) == (args.prepared is None):
        ap.error("give the test data: --data-root DIR or --prepared FILE (one of them)")
    torch.set_num_threads(args.threads)
    commit = provenance.commit()
    base, source = correct(args.reference, args.data_root, args.prepared)
    rows = []
    for path in args.files:
        hits, _ = correct(path, args.data_root, args.prepared, source)
        rows.append({"file": path, **paired(base, hits)})
        print(json.dumps(rows[-1]), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "reference": args.reference, "reference_accuracy": round(100 * base.double().mean().item(), 2),
        "test_images": len(base), "commit": commit, "machine": platform.platform(), "torch": torch.__version__,
        "threads": args.threads, "command": provenance.command_line("bench_paired_accuracy.py", args),
        "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
