"""What a benchmark's result file records about how it was made."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def commit() -> str:
    """The checkout's commit; call it at the start, when the code the run imports is the checkout's."""
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


def command_line(script: str, args: argparse.Namespace) -> str:
    """The command that reruns ``script`` with ``args`` (every option that has a value written out)."""
    return f"python benchmarks/{script} " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if v is not None)
