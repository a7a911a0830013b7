"""Fault tolerance: SIGKILL Snakemake in the middle of training-type jobs, resume, get the same results.

One workflow directory, killed three times (during train, during prune, during a sweep), each time resumed
the way a user would (``snakemake --unlock``, then ``--rerun-incomplete``); the last run completes. The
outputs must all be whole and equal to those of an uninterrupted run.
"""

import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smoke_subset import CONFIG, assert_same_results, check_outputs, command, reference, run, tail
from helpers import copy_workflow

BASE = "results/lenet5"
# The log file of each job that can be killed, and the outputs that job writes.
JOBS = {
    "logs/train/lenet5.log": ("train", [f"{BASE}/baseline/{f}" for f in ("model.pt", "metrics.json", "epochs.csv")]),
    "logs/prune/lenet5.log": ("prune", [f"{BASE}/pruned/{f}" for f in ("model.pt", "metrics.json", "epochs.csv")]),
    "logs/sweep/lenet5-baseline-all-kmeans-none.log": ("sweep", [f"{BASE}/baseline/sweep/all/kmeans/none/points.csv"]),
    "logs/sweep/lenet5-pruned-layer-kmeans-none.log": ("sweep", [f"{BASE}/pruned/sweep/layer/kmeans/none/points.csv"]),
}
# Kill points: a job's log shows a line logged mid-way through its work (after the first of five
# training epochs; after the first of three rate points, between two file writes). Each job depends on the
# job killed before it, so a run reaches its kill point only after it has rerun that job: the order of
# the jobs does not depend on the machine's load.
KILL_POINTS = [
    ("logs/train/lenet5.log", "epoch 1 "),
    ("logs/prune/lenet5.log", "epoch 1 "),
    ("logs/sweep/lenet5-pruned-layer-kmeans-none.log", "k=2 +ft:"),
]
STAGE_TIMEOUT = 300


def _incomplete(work: Path) -> set[str]:
    """Outputs Snakemake has marked as being written (.snakemake/incomplete/<base64 of the path>)."""
    folder = work / ".snakemake" / "incomplete"
    names = [p.name for p in folder.iterdir()] if folder.exists() else []
    return {base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode() for name in names}


def _start(work: Path, out: Path) -> subprocess.Popen:
    with open(out, "w") as f:
        return subprocess.Popen(command("--cores", "1", "--rerun-incomplete"), cwd=work, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(proc: subprocess.Popen, work: Path, log: str, line: str, since_ns: int, out: Path) -> None:
    """Wait until the job writing ``log`` in this run logs ``line``."""
    deadline = time.monotonic() + STAGE_TIMEOUT
    path = work / log
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended ({proc.returncode}) before {log} showed {line!r}:\n{tail(out)}")
        try:
            if path.stat().st_mtime_ns >= since_ns and line in path.read_text():
                return
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    raise AssertionError(f"{log} did not show {line!r} within {STAGE_TIMEOUT} s:\n{tail(out)}")


def _unlock(work: Path) -> None:
    # A killed Snakemake leaves its lock behind; without --unlock the next run refuses to start.
    run([sys.executable, "-m", "snakemake", "--unlock", *CONFIG], work, timeout=120, log=work / "unlock.out")


@pytest.mark.workflow
def test_killed_runs_resume_to_the_uninterrupted_results(tmp_path, tmp_path_factory):
    ref = reference(tmp_path_factory.getbasetemp())
    work = copy_workflow(tmp_path)
    started = time.monotonic()
    killed = None  # (log, outputs) of the job killed in the previous run
    for stage, (log, line) in enumerate(KILL_POINTS):
        if killed:
            _unlock(work)
        out = work / f"run{stage}.out"
        since = time.time_ns()
        proc = _start(work, out)
        try:
            _wait_for(proc, work, log, line, since, out)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and the job it runs
            proc.wait()
        if killed:  # the run reran the job killed before it, to completion, before getting here
            assert f"localrule {JOBS[killed][0]}:" in out.read_text()
            assert all((work / o).exists() for o in JOBS[killed][1]), tail(out)
        outputs = JOBS[log][1]
        assert set(outputs) <= _incomplete(work), f"{log}: outputs not marked incomplete after the kill"
        assert not all((work / o).exists() for o in outputs), f"{log}: the job finished before it was killed"
        killed = log

    _unlock(work)
    final = run(command("--cores", "1", "--rerun-incomplete"), work, timeout=STAGE_TIMEOUT, log=work / "final.out")
    assert f"localrule {JOBS[killed][0]}:" in final.stdout and JOBS[killed][1][0] in final.stdout
    elapsed = time.monotonic() - started
    print(f"kill/resume: 3 kills and the final run took {elapsed:.1f} s")

    assert not _incomplete(work), _incomplete(work)
    check_outputs(work)
    assert_same_results(work, ref)
    again = run(command("-n"), work, timeout=120, log=work / "dry.out")
    assert "Nothing to be done" in again.stdout
