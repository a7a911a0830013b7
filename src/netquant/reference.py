"""Keep what a measured run produced: ``reference/<scale>/`` in the repository.

``collect`` copies a finished run's figures, tables, points, model metrics and the compressed file of
every Table 1 row into one folder, renames each row's file after its row and floor
(``files/<net>/<row>-<floor>.nqz``) and points Table 1's ``path`` column at it, checks that each file's
size gives the row's ratio, and writes each network's run page ``<net>/RUN.md`` (commit, command, machine,
the wall time of every stage read from Snakemake's benchmark files) and the folder's README. Runs of
different networks share one folder: a later run is added to it (``add``), and the rows of a run that
computed only some curves of a network from the same pruned model are added with ``add_rows``.
``python -m netquant evaluate`` on any of the files reproduces its row.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import re
import shutil
import subprocess
from contextlib import contextmanager
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


def snakemake_wall_time(run_folder: Path) -> tuple[float, int, int]:
    """Wall seconds of the run, summed over the Snakemake invocations that made it (their logs in
    ``.snakemake/log``, resumed runs included), how many there were, and how many of them were stopped
    before the end: a log without Snakemake's closing "Elapsed time" counts from its first to its last
    timestamp (the job running when it stopped is not counted past that). Logs without any timestamp
    (``--unlock``, dry runs) are not invocations that ran jobs."""
    seconds, invocations, stopped = 0.0, 0, 0
    for log in sorted((run_folder / ".snakemake" / "log").glob("*.snakemake.log")):
        text = log.read_text()
        found = re.search(r"Elapsed time: (?:(\d+) days?, )?(\d+):(\d+):([\d.]+)", text)
        if found:
            days, hours, minutes, secs = found.groups()
            seconds += int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(secs)
            invocations += 1
            continue
        stamps = [datetime.datetime.strptime(stamp, "%a %b %d %H:%M:%S %Y")
                  for stamp in re.findall(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$", text, re.M)]
        if stamps:
            seconds += (max(stamps) - min(stamps)).total_seconds()
            invocations += 1
            stopped += 1
    return seconds, invocations, stopped


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


# Tables with one row group per network: adding a run replaces its networks' rows and keeps the others'.
NETWORK_TABLES = ("points.csv", "models.csv", "dp_gap.csv")

def _merged(old: pd.DataFrame | None, new: pd.DataFrame, networks: list[str]) -> pd.DataFrame:
    """``old`` without ``networks``' rows, then ``new``, in the paper's network order."""
    kept = new.iloc[0:0] if old is None else old[~old["network"].isin(networks)]
    merged = pd.concat([kept, new], ignore_index=True) if not kept.empty else new
    order = {net: i for i, net in enumerate(report.ordered_networks(set(merged["network"])))}
    return merged.sort_values("network", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.exists() else None


@contextmanager
def _staged(out: Path, *, from_out: bool):
    """A folder beside ``out`` to build the new reference folder in (a copy of ``out`` with ``from_out``),
    moved into place when the block completes and removed if it fails: ``out`` is never half-written."""
    staging = out.with_name(out.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        if from_out:
            shutil.copytree(out, staging)
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        previous = out.with_name(out.name + ".previous")
        out.rename(previous)
        staging.rename(out)
        shutil.rmtree(previous)
    else:
        staging.rename(out)


def collect(results: str | os.PathLike, out: str | os.PathLike, *, command: str,
            logs: str | os.PathLike = "logs", run_folder: str | os.PathLike = ".", replace: bool = False,
            add: bool = False, figures: dict | None = None, scale: str = "", note: str = "") -> Path:
    """Copy a finished run (``results``, ``logs``) into the reference folder ``out`` and write its README.

    ``command``: the command that produced the run, quoted in its networks' ``<net>/RUN.md``. An existing
    ``out`` is replaced only with ``replace``; with ``add`` the run's networks are added to it (their rows,
    files and model folders replace the ones there, the other networks' stay), and what is drawn from all
    networks at once (paper vs ours, findings, the DP table) and every figure are made again from the merged
    tables; ``figures`` (the config's section) and ``scale`` say how. The folder is built beside ``out``
    and moved into place when complete. ``note``: a sentence for the run page (e.g. how the run was resumed).
    Returns the README's path.
    """
    results, out, logs, run_folder = Path(results), Path(out), Path(logs), Path(run_folder)
    _check_out_keeps_inputs(out, results=results, logs=logs, run_folder=run_folder)
    if add and replace:
        raise ValueError("give add or replace, not both")
    if add and not (out / "tables" / "table1.csv").exists():
        raise FileNotFoundError(f"{out / 'tables' / 'table1.csv'} not found: there is no reference folder to add "
                                "to; collect a first run without --add")
    if add and figures is None:
        raise ValueError("adding a run rebuilds Figure 2 and the findings: give the config's figures section")
    if out.exists() and not (replace or add):
        raise FileExistsError(f"{out} exists; give another folder, --add to add this run's networks to it, "
                              "or --force to replace it")
    tables = results / "tables"
    if not (tables / "table1.csv").exists():
        raise FileNotFoundError(f"{tables / 'table1.csv'} not found: finish the run (snakemake table1) first")
    missing = [name for name in NETWORK_TABLES if add and not (tables / name).exists()]
    if missing:
        raise FileNotFoundError(f"{tables}: no {', '.join(missing)}; finish the run (snakemake all) before adding it")
    run_table1 = pd.read_csv(tables / "table1.csv")
    networks = report.ordered_networks(set(run_table1["network"]))
    with _staged(out, from_out=add) as staging:
        if add:
            for net in networks:
                for folder in (staging / "files" / net, staging / net):
                    if folder.exists():
                        shutil.rmtree(folder)
        if not add:  # when adding, every figure is drawn again from the merged tables
            for figure in sorted((results / "figures").glob("*")):
                _copy(figure, staging / "figures" / figure.name)
        run_table1 = _row_files(run_table1, results, staging)
        old = (lambda name: _read(staging / "tables" / name)) if add else (lambda name: None)
        table1 = _merged(old("table1.csv"), run_table1, networks)
        report.write_table_files(table1, staging / "tables" / "table1.csv", staging / "tables" / "table1.md",
                                 staging / "tables" / "table1.tex", columns=(*report.TABLE1_DISPLAY_COLUMNS, "path"))
        for table in sorted(tables.glob("*")):
            if table.name.startswith("table1."):
                continue
            if add and table.name in NETWORK_TABLES:
                write_text(staging / "tables" / table.name,
                           _merged(old(table.name), pd.read_csv(table), networks).to_csv(index=False))
            elif not add or table.name not in _DERIVED:
                _copy(table, staging / "tables" / table.name)
        if add:
            _rebuild_shared(staging, table1, figures, scale)
        for net in networks:
            for variant in ("baseline", "pruned"):
                for name in MODEL_FILES:
                    if (results / net / variant / name).exists():
                        _copy(results / net / variant / name, staging / net / variant / name)
                for summary in sorted((results / net / variant / "importance").glob("*.json")):
                    _copy(summary, staging / net / variant / "importance" / summary.name)
        times = stage_times(logs)
        provenance = _provenance(command=command, commit=_git_commit(run_folder), networks=networks,
                                 wall=snakemake_wall_time(run_folder), note=note)
        for net in networks:
            write_text(staging / net / "RUN.md", _run_page(net, provenance, times))
        write_text(staging / "README.md", _readme(staging, table1))
    return out / "README.md"


def add_rows(results: str | os.PathLike, out: str | os.PathLike, *, command: str, figures: dict,
             logs: str | os.PathLike = "logs", run_folder: str | os.PathLike = ".", scale: str = "",
             note: str = "") -> Path:
    """Add the Table 1 rows of a run that computed only some curves of networks already in ``out``, from
    the same pruned models: its rows (all but the model rows) replace the folder's rows of the same name
    and their files, its points replace the points of the same curves, every figure and what is drawn from
    all networks is made again, and each network's RUN.md gets a section on the added rows (their run's
    commit, command and stage times). The run's pruned models must be the folder's (same accuracy and
    ratio), or the rows would not belong to its Table 1. Returns the README's path."""
    results, out, logs, run_folder = Path(results), Path(out), Path(logs), Path(run_folder)
    _check_out_keeps_inputs(out, results=results, logs=logs, run_folder=run_folder)
    tables = results / "tables"
    for name in ("table1.csv", "points.csv"):
        if not (tables / name).exists():
            raise FileNotFoundError(f"{tables / name} not found: finish the run (snakemake all) before adding its rows")
    if not (out / "tables" / "table1.csv").exists():
        raise FileNotFoundError(f"{out / 'tables' / 'table1.csv'} not found: there is no reference folder to add to")
    old_table1 = pd.read_csv(out / "tables" / "table1.csv")
    run_table1 = pd.read_csv(tables / "table1.csv")
    networks = report.ordered_networks(set(run_table1["network"]))
    for net in networks:
        run_pruned = run_table1[(run_table1["network"] == net) & (run_table1["row"] == "pruned")]
        folder_pruned = old_table1[(old_table1["network"] == net) & (old_table1["row"] == "pruned")]
        if run_pruned.empty or folder_pruned.empty or not all(
                math.isclose(float(run_pruned[column].iloc[0]), float(folder_pruned[column].iloc[0]))
                for column in ("accuracy", "ratio")):
            raise ValueError(f"{net}: the run's pruned model is not the reference folder's (accuracy and ratio differ "
                             "or one is missing); add rows only from a run that started from the folder's pruned model "
                             "(config key <network>.prune.pretrained: files/<network>/pruned.nqz)")
    # the rows the run measured: a file each (the curves it did not compute are rows without points)
    added = run_table1[~run_table1["row"].isin(("original", "pruned")) & run_table1["path"].notna()
                       & run_table1["path"].astype(str).str.len().gt(0)]
    if added.empty:
        raise ValueError(f"{tables / 'table1.csv'} has no quantized rows to add")
    with _staged(out, from_out=True) as staging:
        added = _row_files(added, results, staging)
        keys = set(zip(added["network"], added["row"]))
        kept = old_table1[[key not in keys for key in zip(old_table1["network"], old_table1["row"])]]
        table1 = report.in_table1_order(pd.concat([kept, added], ignore_index=True))
        report.write_table_files(table1, staging / "tables" / "table1.csv", staging / "tables" / "table1.md",
                                 staging / "tables" / "table1.tex", columns=(*report.TABLE1_DISPLAY_COLUMNS, "path"))
        curve = ["network", "variant", "scope", "method", "importance"]
        old_points, new_points = pd.read_csv(staging / "tables" / "points.csv"), pd.read_csv(tables / "points.csv")
        replaced = set(map(tuple, new_points[curve].astype(str).values))
        old_points = old_points[[tuple(key) not in replaced for key in old_points[curve].astype(str).values]]
        write_text(staging / "tables" / "points.csv",
                   pd.concat([old_points, new_points], ignore_index=True).to_csv(index=False))
        _rebuild_shared(staging, table1, figures, scale)
        provenance = _provenance(command=command, commit=_git_commit(run_folder), networks=networks,
                                 wall=snakemake_wall_time(run_folder), note=note)
        times = stage_times(logs)
        for net in networks:
            labels = ", ".join(dict.fromkeys(added.loc[added["network"] == net, "label"]))
            page = staging / net / "RUN.md"
            write_text(page, page.read_text() + "\n" + _run_page(
                net, provenance, times, title=f"The run behind the rows added later: {labels}", level=2))
        write_text(staging / "README.md", _readme(staging, table1))
    return out / "README.md"


def _check_out_keeps_inputs(out: Path, *, results: Path, logs: Path, run_folder: Path) -> None:
    """A reference folder never replaces what it is made from: ``out`` may not be or hold the run folder,
    and may not overlap results/, logs/, the run's source (.git, src, workflow, config, tests) or the
    installed netquant package."""
    target = out.resolve()

    def overlaps(folder: Path) -> bool:
        folder = folder.resolve()
        return target == folder or folder in target.parents or target in folder.parents

    run = run_folder.resolve()
    if target == run or target in run.parents:
        raise ValueError(f"--out {out} is or holds the run folder {run_folder}; give a folder of its own, e.g. "
                         "reference/cpu")
    package = Path(__file__).resolve().parent
    for what, folder in (("the results", results), ("the logs", logs), ("netquant's source", package.parent),
                         *((f"the run's {name}", run / name) for name in (".git", "src", "workflow", "config", "tests"))):
        if overlaps(folder):
            raise ValueError(f"--out {out} overlaps {what} ({folder}); give a folder of its own, e.g. reference/cpu")


# What is drawn from all networks' tables: rebuilt from the merged tables when a run is added.
_DERIVED = ("findings.csv", "findings.md", "dp_gap.md", "dp_gap.tex", "paper_vs_ours.md")


def _rebuild_shared(folder: Path, table1: pd.DataFrame, figures: dict, scale: str) -> None:
    tables = folder / "tables"
    points = report.read_points([tables / "points.csv"])
    findings = report.findings_table(points, figures)
    write_text(tables / "findings.csv", findings.to_csv(index=False))
    write_text(tables / "findings.md", report.findings_markdown(findings))
    dp_gap = pd.read_csv(tables / "dp_gap.csv")
    report.write_table_files(dp_gap, tables / "dp_gap.csv", tables / "dp_gap.md", tables / "dp_gap.tex",
                             columns=report.DP_GAP_DISPLAY_COLUMNS)
    write_text(tables / "paper_vs_ours.md",
               report.paper_vs_ours_markdown(table1, pd.read_csv(tables / "models.csv"), {}, scale))
    _draw_figures(folder, report.swept_points(points), pd.read_csv(tables / "models.csv"), figures)


def _draw_figures(folder: Path, points: pd.DataFrame, models: pd.DataFrame, figures: dict) -> None:
    """Every figure of the networks in ``points``, as the workflow draws them (``figures``: the config's
    section saying which curves each figure shows)."""
    networks = set(points["network"])

    def accuracy(net: str, variant: str) -> float | None:
        row = report.model_row(models, net, variant)
        return None if row is None else float(row["accuracy"])

    def out(name: str) -> dict:
        return {"out_pdf": folder / "figures" / f"{name}.pdf", "out_png": folder / "figures" / f"{name}.png"}

    for net, curves in figures.get("fig1", {}).items():
        if net in networks:
            report.plot_figure1(points, net, **out(f"fig1-{net}"), curves=curves,
                                reference_accuracy=accuracy(net, "baseline"))
    for net, curves in figures.get("fig3", {}).items():
        if net in networks:
            report.plot_figure3(points, net, **out(f"fig3-{net}"), curves=curves)
    for net, curves in figures.get("layerwise", {}).items():
        if net in networks:
            report.plot_layerwise(points, net, **out(f"layerwise-{net}"), curves=curves,
                                  reference_accuracy=accuracy(net, "pruned"))
    fig2 = {net: names for net, names in figures.get("fig2", {}).items() if net in networks}
    if fig2:
        report.plot_figure2(points, fig2, **out("fig2"))


def _provenance(*, command: str, commit: str, networks: list[str], wall: tuple[float, int, int],
                note: str) -> list[str]:
    seconds, invocations, stopped = wall
    lines = [f"- networks: {', '.join(report.network_label(n) for n in networks)}", f"- commit: `{commit}`",
             f"- command: `{command}`", f"- machine: {machine_description()}"]
    if invocations:
        lines.append(f"- wall time: {seconds / 60:.1f} min, summed over {invocations} Snakemake invocation"
                     f"{'s' if invocations > 1 else ''} (Snakemake's logs"
                     + (f"; {stopped} stopped before the end, each counted to its last logged event" if stopped else "")
                     + ")")
    return lines + ([f"- note: {note}"] if note else [])


def _run_page(network: str, provenance: list[str], times: pd.DataFrame, *, title: str | None = None,
              level: int = 1) -> str:
    """A run's page: ``title`` (default: the network's results) at heading ``level``, its provenance, and
    the wall time of each stage and job."""
    heading = "#" * level
    by_rule = times.groupby("rule", sort=False).agg(jobs=("job", "size"), seconds=("seconds", "sum"),
                                                     longest=("seconds", "max")).reset_index()
    lines = [
        f"{heading} {title or f'The run behind the {report.network_label(network)} results'}", "", *provenance, "",
        f"{heading}# Wall time of each stage",
        "",
        "Sums over the jobs of a rule (Snakemake's `benchmark:` files); jobs ran "
        "in parallel where `--cores` allowed, so the run took less than the total.",
        "",
        "| rule | jobs | seconds (sum) | longest job (s) |",
        "|---|---|---|---|",
    ]
    for _, r in by_rule.iterrows():
        lines.append(f"| {r['rule']} | {r['jobs']} | {r['seconds']:.0f} | {r['longest']:.0f} |")
    lines += [f"| total | {len(times)} | {times['seconds'].sum():.0f} | |", "", f"{heading}# Jobs", "",
              "| rule | job | seconds | peak memory (MiB) |", "|---|---|---|---|"]
    for _, r in times.iterrows():
        lines.append(f"| {r['rule']} | {r['job']} | {r['seconds']:.0f} | {r['max_rss_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def _readme(folder: Path, table1: pd.DataFrame) -> str:
    lines = [
        "# Reference results",
        "",
        "What runs of the workflow measured, kept so that they can be read and checked without running them.",
        "Each network's run (commit, command, machine, wall time of every stage) is described in "
        "`<network>/RUN.md`:",
        "",
    ]
    for net in report.ordered_networks(set(table1["network"])):
        page = folder / net / "RUN.md"
        if page.exists():
            header = [line for line in page.read_text().splitlines() if line.startswith(("- commit", "- machine"))]
            lines.append(f"- [{report.network_label(net)}]({net}/RUN.md): " + "; ".join(
                h[2:] for h in header))
    lines += [
        "",
        "Check any row of Table 1 (`tables/table1.csv`, column `path`) in a minute:",
        "",
        "```bash",
        "python -m netquant evaluate files/<network>/<row>.nqz --data-root /path/to/data --json",
        "```",
        "",
        "## Table 1",
        "",
        report.markdown_table(table1, (*report.TABLE1_DISPLAY_COLUMNS, "path")),
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------- README tables from a reference
# A README block is generated between "<!-- reference: SPEC -->" and "<!-- end reference -->", where SPEC
# is "table1 NETWORK FOLDER" (a network's Table 1 rows kept in FOLDER), "coding NETWORK FOLDER" (what
# those rows' files spend on labels and positions) or "rerun NETWORK FOLDER OTHER" (how far each row
# moved between two runs kept in two folders). Folders are relative to the README.
