"""The paper's findings from Figures 1-3, checked on the measured curves.

A curve is compared with another at a rate budget: the best test accuracy among its points whose average
codeword length is at most ``budget`` bits per weight (fixed-length: ``bits_fixed``; Huffman:
``bits_huffman``). Comparing these envelopes at the same budgets is fair to methods whose grids differ (k
for k-means, bin widths for uniform, lambda for ECSQ). The findings (paper section 5):

- Figure 1, fixed-length codes: Hessian-weighted k-means is the best, uniform quantization and ECSQ are worse
  than both k-means variants.
- Figure 1, Huffman codes: uniform quantization and ECSQ are the best.
- Figure 2: the Hessian from 1,000 samples is almost the same as from 50,000; the Adam alternative is similar.
- Figure 3: the Hessian-weighted mean (uniform with a Hessian) is at least as good as the plain mean.

Each check names, per budget, the most accurate curve and the accuracy of each; "holds" says whether the
paper's statement is true at that budget, with ties (equal accuracies) counted for it. A curve with no point
within a budget cannot reach that rate: it counts as below every curve that can, and the verdict is left
open only when a curve the statement is about has no point there.
"""

from __future__ import annotations

import math
from typing import Mapping

import pandas as pd

from netquant.report.labels import ordered_networks
from netquant.vocabulary import FIGURE_MODELS

FIXED_BUDGETS = (2.0, 3.0, 4.0)  # the low rates where the paper's Figure 1 (a), (b) separate the methods
HUFFMAN_BUDGETS = (1.0, 1.5, 2.0, 2.5, 3.0)
SIMILAR_POINTS = 0.5  # "almost the same" / "similar": within half a percentage point at every budget
FINDINGS_COLUMNS = ("finding", "network", "panel", "budget_bits", "curve", "accuracy", "best_curve", "holds")


def accuracy_within(points: pd.DataFrame, bits_column: str, budget: float) -> float:
    """The best accuracy among ``points`` whose ``bits_column`` is at most ``budget`` (nan if none)."""
    inside = points[points[bits_column].astype(float) <= budget + 1e-9]
    return float(inside["accuracy"].max()) if not inside.empty else math.nan


def _curve_points(points: pd.DataFrame, network: str, figure: str, curve: str, finetuned: bool) -> pd.DataFrame:
    variant, scope = FIGURE_MODELS[figure]
    method, importance = curve.split("/")
    return points[(points["network"] == network) & (points["variant"] == variant) & (points["scope"] == scope)
                  & (points["method"] == method) & (points["importance"] == importance)
                  & (points["finetuned"] == finetuned)]


def _rows(points, network, figure, curves, finetuned, bits_column, budgets, finding, panel, holds, needs):
    """Envelope accuracies of ``curves`` at each budget and whether ``holds(accuracies)`` is true (curves
    without a point there at -inf); None where a curve of ``needs`` has no point."""
    rows = []
    for budget in budgets:
        accuracy = {c: accuracy_within(_curve_points(points, network, figure, c, finetuned), bits_column, budget)
                    for c in curves}
        measured = {c: a for c, a in accuracy.items() if math.isfinite(a)}
        if len(measured) < 2:
            continue
        best = max(measured, key=measured.get)
        reached = {c: a if math.isfinite(a) else -math.inf for c, a in accuracy.items()}
        verdict = bool(holds(reached)) if all(c in measured for c in needs) else None
        rows += [{"finding": finding, "network": network, "panel": panel, "budget_bits": budget, "curve": c,
                  "accuracy": a, "best_curve": best, "holds": verdict} for c, a in accuracy.items()]
    return rows


def findings_table(points: pd.DataFrame, figures: Mapping[str, Mapping[str, list[str]]]) -> pd.DataFrame:
    """One row per (finding, network, panel, budget, curve); ``figures`` is the config's ``figures``
    section (the curves each figure draws per network)."""
    points = points[points["floor_name"].isna()] if "floor_name" in points else points  # sweeps only
    rows: list[dict] = []
    for network in ordered_networks(points["network"].unique()):
        fig1 = list(figures.get("fig1", {}).get(network, []))
        by_method = {c.split("/")[0]: c for c in fig1}
        if {"kmeans", "hwkmeans", "uniform", "ecsq"} <= set(by_method):
            km, hw, un, ec = (by_method[m] for m in ("kmeans", "hwkmeans", "uniform", "ecsq"))
            for finetuned, panel in ((False, "fixed-length"), (True, "fixed-length + fine-tuning")):
                rows += _rows(points, network, "fig1", fig1, finetuned, "bits_fixed", FIXED_BUDGETS,
                              "fixed-length: Hessian-weighted k-means best, uniform and ECSQ below both k-means",
                              panel, lambda a: a[hw] >= max(a.values()) and max(a[un], a[ec]) <= min(a[km], a[hw]),
                              needs=(km, hw))
            for finetuned, panel in ((False, "Huffman"), (True, "Huffman + fine-tuning")):
                rows += _rows(points, network, "fig1", fig1, finetuned, "bits_huffman", HUFFMAN_BUDGETS,
                              "Huffman: uniform or ECSQ best", panel,
                              lambda a: max(a[un], a[ec]) >= max(a.values()), needs=())
        fig2 = list(figures.get("fig2", {}).get(network, []))
        if len(fig2) >= 2:
            reference = fig2[0]
            rows += _rows(points, network, "fig2", fig2, True, "bits_huffman", HUFFMAN_BUDGETS,
                          f"Hessian estimates within {SIMILAR_POINTS} points of {reference}",
                          "Huffman + fine-tuning",
                          lambda a: all(abs(v - a[reference]) <= SIMILAR_POINTS for v in a.values()), needs=fig2)
        fig3 = list(figures.get("fig3", {}).get(network, []))
        if len(fig3) == 2:
            plain, weighted = fig3
            for finetuned, panel in ((False, "Huffman"), (True, "Huffman + fine-tuning")):
                rows += _rows(points, network, "fig3", fig3, finetuned, "bits_huffman", HUFFMAN_BUDGETS,
                              "uniform: weighted mean at least as good as the plain mean", panel,
                              lambda a: a[weighted] >= a[plain], needs=(weighted,))
    return pd.DataFrame(rows, columns=list(FINDINGS_COLUMNS))


def findings_markdown(table: pd.DataFrame) -> str:
    """The findings as a page: per finding and network, a table of budgets x curves, and how many hold."""
    out = ["# The paper's findings on our curves", "",
           "Accuracy (%) of each curve at a rate budget: the best point with at most that many bits per weight "
           "(fixed-length or Huffman, as the panel says). \"holds\": the paper's statement is true at that budget "
           "(ties count for it).", ""]
    if table.empty:
        return "\n".join(out + ["No figure curves were measured.", ""])
    for (finding, network), part in table.groupby(["finding", "network"], sort=False):
        out += [f"## {network}: {finding}", ""]
        curves = list(dict.fromkeys(part["curve"]))
        out += ["| panel | budget (bits) | " + " | ".join(curves) + " | best | holds |",
                "|---|---:|" + "---:|" * len(curves) + "---|---|"]
        for (panel, budget), cell in part.groupby(["panel", "budget_bits"], sort=False):
            accuracy = dict(zip(cell["curve"], cell["accuracy"]))
            holds = cell["holds"].iloc[0]
            out.append(f"| {panel} | {budget:g} | " + " | ".join(
                f"{accuracy[c]:.2f}" if math.isfinite(accuracy[c]) else "-" for c in curves)
                + f" | {cell['best_curve'].iloc[0]} | {'-' if holds is None else ('yes' if holds else 'no')} |")
        verdicts = part.drop_duplicates(["panel", "budget_bits"])["holds"].dropna()
        out += ["", f"Holds at {int(verdicts.sum())} of {len(verdicts)} budgets.", ""]
    return "\n".join(out)
