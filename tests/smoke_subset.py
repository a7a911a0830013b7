"""A small part of the smoke workflow, shared by the SLURM and the kill/resume tests.

LeNet-5 only: prepare the data, train, prune, three sweeps (baseline k-means over all layers, pruned k-means
layer by layer and over all layers) and the layer-wise figure, a local rule. About 40 s on one core. ``reference`` runs it once
per test session without interruption; ``snapshot`` reduces a run's outputs to what must be identical
between runs (everything but wall-clock timings), and ``check_outputs`` proves each output is whole.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from netquant import checkpoint, container
from helpers import copy_workflow

TARGETS = [
    "results/lenet5/pruned/metrics.json",
    "results/lenet5/baseline/sweep/all/kmeans/none/points.csv",
    "results/figures/layerwise-lenet5.png",
]
# --configfile and --config take several values: they go last, after the targets and other options.
CONFIG = ["--configfile", "config/smoke.yaml", "--config", 'networks=["lenet5"]']
# The computing rules of the subset (they go to SLURM) and its local rules (they never do).
COMPUTING_RULES = {"prepare_data", "train", "prune", "sweep"}
LOCAL_RULES = {"plot_layerwise"}


def command(*options: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", *TARGETS, *options, *CONFIG]


def run(cmd: list[str], cwd: Path, *, timeout: float, env: dict | None = None, log: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on timeout kill the whole group and fail with the output."""
    log = log or cwd / f"snakemake-{time.monotonic_ns()}.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise AssertionError(f"{' '.join(cmd)} ran past {timeout} s:\n{tail(log)}") from None
        finally:
            kill_group(proc)  # children left behind by a failed run
    result = subprocess.CompletedProcess(cmd, proc.returncode, log.read_text(), "")
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail(log)}")
    return result


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def reference(base: Path) -> Path:
    """The subset run once, locally and uninterrupted, in ``base``/smoke-subset-reference (cached per session)."""
    work = base / "smoke-subset-reference"
    done = work / "reference.done"
    if not done.exists():
        work.mkdir(exist_ok=True)
        copy_workflow(work)
        run(command("--cores", "1"), work, timeout=600)
        check_outputs(work)
        done.write_text("ok\n")
    return work


def result_files(work: Path) -> list[Path]:
    return sorted(p for p in (work / "results").rglob("*") if p.is_file())


def check_outputs(work: Path) -> None:
    """Every file of the run is whole: checkpoints load, JSON and CSV parse, .nqz files decode, no temp files."""
    files = result_files(work) + sorted((work / "resources").rglob("*.pt"))
    assert files, "no outputs"
    leftovers = [str(p) for p in work.rglob("*.tmp") if ".snakemake" not in p.parts]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    for path in files:
        if path.name == "model.pt":
            checkpoint.load_checkpoint(path)
        elif path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            rows = list(csv.DictReader(path.open()))
            assert rows and all(None not in row and None not in row.values() for row in rows), path
        elif path.suffix == ".nqz":
            assert container.read_state_dict(path), path
        elif path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        elif path.suffix == ".pdf":
            data = path.read_bytes()
            assert data.startswith(b"%PDF") and b"%%EOF" in data[-64:], path
        elif path.name == ".snakemake_timestamp":  # Snakemake's mark of a complete directory() output
            assert path.parent.name == "files", path
        else:
            raise AssertionError(f"unexpected output {path}")


def _timeless(obj):
    """Drop wall-clock timings (keys or columns named *seconds*), which differ between identical runs."""
    if isinstance(obj, dict):
        return {k: _timeless(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, list):
        return [_timeless(v) for v in obj]
    return obj


def snapshot(work: Path) -> dict[str, object]:
    """What two runs of the subset must agree on exactly, per output file."""
    snap: dict[str, object] = {}
    for path in result_files(work):
        key = str(path.relative_to(work))
        if path.suffix == ".json":
            snap[key] = _timeless(json.loads(path.read_text()))
        elif path.suffix == ".csv":
            snap[key] = _timeless(list(csv.DictReader(path.open())))
        elif path.name == "model.pt":
            ckpt = checkpoint.load_checkpoint(path)
            snap[key] = {name: t.numpy().tobytes() for name, t in {**ckpt.state_dict, **ckpt.masks}.items()}
        elif path.suffix == ".nqz":
            snap[key] = path.read_bytes()
        else:  # figures: their bytes carry creation dates; that they exist and parse is checked elsewhere
            snap[key] = "present"
    return snap


def assert_same_results(work: Path, ref: Path) -> None:
    ours, theirs = snapshot(work), snapshot(ref)
    assert sorted(ours) == sorted(theirs), set(ours) ^ set(theirs)
    differ = [key for key in ours if ours[key] != theirs[key]]
    assert not differ, f"outputs differ from the uninterrupted local run: {differ}"
    # the headline numbers, spelled out
    for variant in ("baseline", "pruned"):
        a = json.loads((work / f"results/lenet5/{variant}/metrics.json").read_text())
        b = json.loads((ref / f"results/lenet5/{variant}/metrics.json").read_text())
        assert a["accuracy"] == b["accuracy"] and a["loss"] == b["loss"], variant
