"""Keep what a measured run produced: ``reference/<scale>/`` in the repository.

``collect`` copies a finished run's figures, tables, points, model metrics and the compressed file of
every Table 1 row into one folder, renames each row's file after its row and floor
(``files/<net>/<row>-<floor>.nqz``) and
points Table 1's ``path`` column at it, checks that each file's size gives the row's ratio, and writes a
README with the provenance: commit, command, machine, and the wall time of every stage read from
Snakemake's benchmark files. ``python -m netquant evaluate`` on any of the files reproduces its row.
"""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd

from netquant import container, report
from netquant.io import write_text

MODEL_FILES = ("metrics.json", "epochs.csv", "file.json")


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def _git_commit(folder: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True)
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def machine_description() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB memory"
    except (OSError, ValueError, IndexError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores{memory}, {gpu}; {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def stage_times(logs: Path) -> pd.DataFrame:
    """One row per job from Snakemake's benchmark files (``logs/benchmarks/<rule>/<job>.tsv``): rule,
    job, wall seconds, peak resident memory (MiB)."""
    rows = []
    for tsv in sorted((logs / "benchmarks").glob("*/*.tsv")):
        table = pd.read_csv(tsv, sep="\t")
        if table.empty:
            continue
        rows.append({"rule": tsv.parent.name, "job": tsv.stem, "seconds": float(table["s"].iloc[-1]),
                     "max_rss_mib": float(table["max_rss"].iloc[-1]) if "max_rss" in table else math.nan})
    return pd.DataFrame(rows, columns=["rule", "job", "seconds", "max_rss_mib"])


def _row_files(table1: pd.DataFrame, results: Path, out: Path) -> pd.DataFrame:
    """Copy each row's file to ``files/<net>/<row>.nqz`` and point its ``path`` there; check its ratio."""
    table1 = table1.copy()
    paths = []
    for _, row in table1.iterrows():
        source = ""
        if row["row"] == "pruned":
            candidate = results / row["network"] / "pruned" / "model.nqz"
            source = str(candidate) if candidate.exists() else ""
        elif isinstance(row.get("path"), str) and row["path"]:
            source = row["path"]
            if not Path(source).is_absolute() and not Path(source).exists():
                source = str(results.parent / source)
        if not source:
            paths.append("")
            continue
        floor = row.get("floor_name")
        slug = re.sub(r"[^a-z0-9]+", "-", str(floor).lower()).strip("-") if isinstance(floor, str) and floor else ""
        target = _copy(Path(source), out / "files" / row["network"] / f"{row['row']}{'-' + slug if slug else ''}.nqz")
        ratio = container.metrics(target)["ratio_file"]
        if math.isfinite(float(row["ratio"])) and abs(ratio - float(row["ratio"])) > 1e-6 * ratio:
            raise ValueError(f"{target}: the file's ratio {ratio:.4f} is not the {row['row']} row's "
                             f"{float(row['ratio']):.4f}; the run's tables and files do not belong together")
        paths.append(str(target.relative_to(out)))
    table1["path"] = paths
    return table1


def collect(results: str | os.PathLike, out: str | os.PathLike, *, command: str,
            logs: str | os.PathLike = "logs", run_folder: str | os.PathLike = ".", replace: bool = False) -> Path:
    """Copy a finished run (``results``, ``logs``) into the reference folder ``out`` and write its README.

    ``command``: the command that produced the run, quoted in the README. An existing ``out`` is replaced
    only with ``replace``. Returns the README's path.
    """
    results, out, logs, run_folder = Path(results), Path(out), Path(logs), Path(run_folder)
    if out.exists() and not replace:
        raise FileExistsError(f"{out} exists; give another folder, or --force to replace it")
    tables = results / "tables"
    if not (tables / "table1.csv").exists():
        raise FileNotFoundError(f"{tables / 'table1.csv'} not found: finish the run (snakemake table1) first")
    if out.exists():
        shutil.rmtree(out)
    for figure in sorted((results / "figures").glob("*")):
        _copy(figure, out / "figures" / figure.name)
    for table in sorted(tables.glob("*")):
        if table.name not in ("table1.csv", "table1.md", "table1.tex"):
            _copy(table, out / "tables" / table.name)
    table1 = _row_files(pd.read_csv(tables / "table1.csv"), results, out)
    report.write_table_files(table1, out / "tables" / "table1.csv", out / "tables" / "table1.md",
                             out / "tables" / "table1.tex", columns=(*report.TABLE1_DISPLAY_COLUMNS, "path"))
    for net_folder in sorted(p for p in results.iterdir() if p.is_dir() and p.name in report.NETWORK_ORDER):
        for variant in ("baseline", "pruned"):
            for name in MODEL_FILES:
                if (net_folder / variant / name).exists():
                    _copy(net_folder / variant / name, out / net_folder.name / variant / name)
            for summary in sorted((net_folder / variant / "importance").glob("*.json")):
                _copy(summary, out / net_folder.name / variant / "importance" / summary.name)
    times = stage_times(logs)
    write_text(out / "README.md", _readme(table1, times, command=command, commit=_git_commit(run_folder)))
    return out / "README.md"


def _readme(table1: pd.DataFrame, times: pd.DataFrame, *, command: str, commit: str) -> str:
    by_rule = times.groupby("rule", sort=False).agg(jobs=("job", "size"), seconds=("seconds", "sum"),
                                                     longest=("seconds", "max")).reset_index()
    lines = [
        "# Reference results",
        "",
        "What one run of the workflow measured, kept so that it can be read and checked without running it.",
        "",
        f"- commit: `{commit}`",
        f"- command: `{command}`",
        f"- machine: {machine_description()}",
        "",
        "Check any row of Table 1 (`tables/table1.csv`, column `path`) in a minute:",
        "",
        "```bash",
        "python -m netquant evaluate files/<network>/<row>.nqz --data-root /path/to/data --json",
        "```",
        "",
        "## Wall time of each stage",
        "",
        "Sums over the jobs of a rule (Snakemake's `benchmark:` files); jobs ran "
        "in parallel where `--cores` allowed, so the run took less than the total.",
        "",
        "| rule | jobs | seconds (sum) | longest job (s) |",
        "|---|---|---|---|",
    ]
    for _, r in by_rule.iterrows():
        lines.append(f"| {r['rule']} | {r['jobs']} | {r['seconds']:.0f} | {r['longest']:.0f} |")
    lines += [f"| total | {len(times)} | {times['seconds'].sum():.0f} | |", "", "## Jobs", "",
              "| rule | job | seconds | peak memory (MiB) |", "|---|---|---|---|"]
    for _, r in times.iterrows():
        lines.append(f"| {r['rule']} | {r['job']} | {r['seconds']:.0f} | {r['max_rss_mib']:.0f} |")
    lines += ["", "## Table 1", "", report.markdown_table(table1, (*report.TABLE1_DISPLAY_COLUMNS, "path")), ""]
    return "\n".join(lines)
