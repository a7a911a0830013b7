"""Helpers shared by the workflow tests: the repository, a copy of the workflow, running Snakemake."""

import heapq
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# seconds a Snakemake call of a test may take; raise it on a machine busy with other work
SNAKEMAKE_TIMEOUT = int(os.environ.get("NETQUANT_TEST_SNAKEMAKE_TIMEOUT", "1800"))


def snakemake(*args, cwd=REPO, check=True, timeout=SNAKEMAKE_TIMEOUT):
    cmd = [sys.executable, "-m", "snakemake", *args]
    run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and run.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}")
    return run


def copy_workflow(dest: Path) -> Path:
    for item in ("Snakefile", "config", "workflow", "profiles"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / item)
    return dest


def optimal_huffman_cost(counts) -> int:
    """Total bits of an optimal prefix code: sum of the weights of all merges (independent of coding)."""
    heap = [int(c) for c in counts if c > 0]
    if len(heap) <= 1:
        return 0
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        total += merged
        heapq.heappush(heap, merged)
    return total
