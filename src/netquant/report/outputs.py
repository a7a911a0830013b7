"""The files of the workflow's table rules: the tidy points table, the models table, Table 1 and the
paper-vs-ours page, the heuristics-vs-DP table."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from netquant.io import read_json, write_text
from netquant.report.findings import findings_markdown, findings_table
from netquant.report.paper_vs_ours import paper_vs_ours_markdown
from netquant.report.selection import DP_GAP_DISPLAY_COLUMNS, TABLE1_DISPLAY_COLUMNS, dp_gap_table, select_table1
from netquant.report.writers import write_table_files

def read_points(curve_tables: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """The tidy points table: the rows of every curve's points.csv, concatenated."""
    frames = [pd.read_csv(path) for path in curve_tables]
    points = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["network"])
    for column in ("finetuned", "selected", "meets_floor"):
        if column in points:
            points[column] = points[column].astype(str).str.lower().eq("true")
    return points


def swept_points(points: pd.DataFrame) -> pd.DataFrame:
    """The sweeps' points of a points table, without the operating-point searches' probes (what the
    figures draw)."""
    return points[points["floor_name"].isna()] if "floor_name" in points else points


def models_table(model_metrics: Iterable[str | os.PathLike], file_metrics: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per network and variant before quantization: accuracy, size, and for pruned models the
    ratio of the file holding their 32-bit kept values and coded positions (``results/{net}/pruned/file.json``)."""
    ratios = {}
    for path in file_metrics:
        net = Path(path).parts[-3]
        m = read_json(path)
        ratios[net] = (m["ratio_file"], m["file_bytes"])
    rows = []
    for path in model_metrics:
        m = read_json(path)
        ratio, size = ratios.get(m["arch"], (math.nan, math.nan)) if m["stage"] == "pruned" else (math.nan, math.nan)
        rows.append({"network": m["arch"], "variant": m["stage"], "accuracy": m["accuracy"],
                     "top5": m.get("top5", math.nan), "parameters": m["parameters"], "nonzeros": m["nonzeros"],
                     "ratio_file": ratio, "file_bytes": size})
    return pd.DataFrame(rows, columns=["network", "variant", "accuracy", "top5", "parameters", "nonzeros",
                                       "ratio_file", "file_bytes"])


def write_table1(*, curve_tables, model_metrics, file_metrics, out_table, out_markdown, out_latex, out_models,
                 out_paper_vs_ours, tolerance: float, skipped: Mapping[str, str], scale: str,
                 search_tables=()) -> pd.DataFrame:
    """Select Table 1 from the curves' points and write it (CSV, Markdown, LaTeX), the models table and the
    paper-vs-ours page."""
    points = read_points(curve_tables)
    models = models_table(model_metrics, file_metrics)
    write_text(out_models, models.to_csv(index=False))
    search = read_points(search_tables) if search_tables else None
    table1 = select_table1(points, models, tolerance=tolerance, skipped=skipped, search=search)
    write_table_files(table1, out_table, out_markdown, out_latex, columns=TABLE1_DISPLAY_COLUMNS)
    write_text(out_paper_vs_ours, paper_vs_ours_markdown(table1, models, skipped, scale))
    return table1


def write_points(curve_tables, *, out_points, out_dp_gap, out_dp_gap_markdown, out_dp_gap_latex,
                 figures: Mapping | None = None, out_findings=None, out_findings_markdown=None) -> pd.DataFrame:
    """The tidy points table of every curve, the heuristics-vs-DP table and, with the config's ``figures``
    section, the paper's findings checked on the figures' curves."""
    points = read_points(curve_tables)
    write_text(out_points, points.to_csv(index=False))
    if figures is not None:
        findings = findings_table(points, figures)
        write_text(out_findings, findings.to_csv(index=False))
        write_text(out_findings_markdown, findings_markdown(findings))
    write_table_files(dp_gap_table(swept_points(points)), out_dp_gap, out_dp_gap_markdown, out_dp_gap_latex,
                      columns=DP_GAP_DISPLAY_COLUMNS)
    return points

