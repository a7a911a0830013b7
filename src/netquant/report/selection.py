"""Which sweep point each row of Table 1 shows, and the heuristics-vs-DP table.

Table 1 selection rule: for each row (a method with a kind of importance) and network, the candidates are
the points of the pruned model, all layers quantized together (scope ``all``), after fine-tuning. The chosen
point is the one with the largest ``ratio_file`` whose accuracy is at least the pruned model's accuracy
minus ``tolerance`` (percentage points). If no point reaches that floor, the most accurate point is shown
and its status is ``fallback``. The paper does not say how its operating points were chosen; this is the
natural reading of "no loss of accuracy at the highest compression".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from netquant.report.labels import ordered_networks
from netquant.report.paper import load_paper_numbers, paper_cell
from netquant.search import meets_floor
from netquant.vocabulary import FIGURE_MODELS, hessian_samples

@dataclass(frozen=True)
class Table1Row:
    """One row of Table 1. ``weighting``: which importance the row's curve has - "none", "hessian" (any
    hessian-N; the one with most samples if several), "adam", or "weighted" (a Hessian, else Adam: AlexNet
    has no Hessian in the paper). The curves themselves are the ones the config's ``figures.table1`` lists.
    ``ratio_column``: the ratio reported for the chosen point (the choice itself always uses
    ``ratio_file``). ``method=None``: a model row or a paper-only row."""

    key: str
    label: str
    method: str | None = None
    weighting: str = "none"
    ratio_column: str = "ratio_file"
    path_column: str = "path"  # the file whose size gives ``ratio_column``
    in_paper: bool = True


TABLE1_ROWS: tuple[Table1Row, ...] = (
    Table1Row("original", "Original model"),
    Table1Row("pruned", "Pruned model"),
    Table1Row("kmeans", "k-means", "kmeans", "none"),
    Table1Row("hwkmeans", "Hessian-weighted k-means", "hwkmeans", "hessian"),
    Table1Row("adam-kmeans", "Alt-Hessian (Adam) weighted k-means", "hwkmeans", "adam"),
    Table1Row("uniform", "Uniform quantization", "uniform", "weighted"),
    Table1Row("ecsq", "Iterative ECSQ", "ecsq", "weighted"),
    Table1Row("deep-compression", "Deep Compression (Han et al.)"),
    Table1Row("dp-kmeans", "Optimal weighted k-means (DP)", "dp-kmeans", "weighted", in_paper=False),
    Table1Row("dp-ecsq", "Optimal interval-cell ECSQ (DP)", "dp-ecsq", "weighted", in_paper=False),
    Table1Row("uniform-zero", "Uniform quantization, zero bin pruned", "uniform-zero", "weighted", in_paper=False),
    Table1Row("uniform-ans", "Uniform quantization, ANS-coded labels", "uniform", "weighted",
              ratio_column="ratio_file_ans", path_column="path_ans", in_paper=False),
    Table1Row("uniform-mask-ans", "Uniform quantization, better index code", "uniform", "weighted",
              ratio_column="ratio_file_mask_ans", path_column="path_mask_ans", in_paper=False),
    *(Table1Row(f"{key}-context", f"{label}, context-adaptive codes", method, importance,
                ratio_column="ratio_file_context", path_column="path_context", in_paper=False)
      for key, label, method, importance in (
          ("kmeans", "k-means", "kmeans", "none"), ("hwkmeans", "Hessian-weighted k-means", "hwkmeans", "hessian"),
          ("uniform", "Uniform quantization", "uniform", "weighted"), ("ecsq", "Iterative ECSQ", "ecsq", "weighted"),
          ("dp-kmeans", "Optimal weighted k-means (DP)", "dp-kmeans", "weighted"),
          ("dp-ecsq", "Optimal interval-cell ECSQ (DP)", "dp-ecsq", "weighted"),
          ("uniform-zero", "Uniform quantization, zero bin pruned", "uniform-zero", "weighted"))),
)
TABLE1_COLUMNS = (
    "network", "row", "label", "floor_name", "status", "note", "method", "importance", "rate_name", "rate_value",
    "clusters", "bits_huffman", "accuracy", "accuracy_spread", "seeds", "top5", "ratio", "floor",
    "paper_accuracy", "paper_ratio", "diff_accuracy", "diff_ratio", "paper_source", "path", "file_accuracy",
)
_CHOSEN_COLUMNS = ("rate_name", "rate_value", "clusters", "bits_huffman", "accuracy", "top5", "path")
TABLE1_DISPLAY_COLUMNS = (
    "network", "label", "floor_name", "rate_name", "rate_value", "bits_huffman", "accuracy", "accuracy_spread",
    "paper_accuracy", "diff_accuracy", "ratio", "paper_ratio", "diff_ratio", "status",
)
# What a floor is named in Table 1: the sweep's own points (one fine-tuning each) against the pruned model's
# accuracy, or a search's probes (the mean over several fine-tuning seeds) against a named floor.
SWEEP_FLOOR = "pruned (sweep)"




def in_table1_order(table: pd.DataFrame) -> pd.DataFrame:
    """Table 1's rows by network (the paper's order), then in the order of :data:`TABLE1_ROWS`; rows of
    the same network and row (their floors) keep their order."""
    rows = {key: i for i, key in enumerate(row.key for row in TABLE1_ROWS)}
    networks = {net: i for i, net in enumerate(ordered_networks(set(table["network"])))}
    return table.sort_values(["network", "row"], kind="stable", key=lambda column: column.map(
        networks if column.name == "network" else rows)).reset_index(drop=True)


def select_point(curve: pd.DataFrame, floor: float) -> tuple[pd.Series | None, bool]:
    """The point of ``curve`` with the largest ``ratio_file`` whose accuracy >= ``floor`` (ties: the more
    accurate); if none qualifies, the most accurate point (ties: the larger ratio).

    Returns ``(row, met_floor)``; ``(None, False)`` for an empty curve.
    """
    curve = curve[np.isfinite(curve["accuracy"].astype(float)) & np.isfinite(curve["ratio_file"].astype(float))]
    if curve.empty:
        return None, False
    qualifying = curve[meets_floor(curve["accuracy"], floor)]
    if not qualifying.empty:
        return qualifying.sort_values(["ratio_file", "accuracy"], ascending=False, kind="stable").iloc[0], True
    return curve.sort_values(["accuracy", "ratio_file"], ascending=False, kind="stable").iloc[0], False


def model_row(models: pd.DataFrame, network: str, variant: str) -> pd.Series | None:
    rows = models[(models["network"] == network) & (models["variant"] == variant)]
    return None if rows.empty else rows.iloc[0]


def _model_cell(models: pd.DataFrame, network: str, key: str) -> dict:
    """Table 1's "original model" or "pruned model" cell of one network from the models table."""
    model = model_row(models, network, "baseline" if key == "original" else "pruned")
    if model is None:
        return {"status": "no points", "note": f"no {key} model in the models table"}
    return {"status": "model", "accuracy": float(model["accuracy"]), "top5": model.get("top5", math.nan),
            "ratio": math.nan if key == "original" else float(model["ratio_file"])}


def row_importance(row: Table1Row, present: Iterable[str]) -> str | None:
    """The importance of the curve a row shows, among the importances ``present`` for its method."""
    present = set(present)
    hessians = sorted((imp for imp in present if hessian_samples(imp)), key=hessian_samples, reverse=True)
    options = {"none": ["none"], "hessian": hessians, "adam": ["adam"], "weighted": hessians + ["adam"]}
    return next((imp for imp in options[row.weighting] if imp in present), None)


def _quantized_cell(candidates: pd.DataFrame, row: Table1Row, floor: float) -> dict:
    """The chosen point of one quantized row among one network's Table 1 candidates."""
    same_method = candidates[candidates["method"] == row.method]
    importance = row_importance(row, same_method["importance"])
    if importance is None:
        return {"status": "no points", "importance": "",
                "note": f"no fine-tuned points of {row.method} with {row.weighting} importance on the pruned "
                        "model (all layers together) among the config's figures.table1 curves"}
    chosen, met_floor = select_point(same_method[same_method["importance"] == importance], floor)
    cell = {c: chosen.get(c, math.nan) for c in _CHOSEN_COLUMNS}
    cell.update(status="selected" if met_floor else "fallback", importance=importance,
                ratio=float(chosen.get(row.ratio_column, math.nan)), path=chosen.get(row.path_column, ""))
    if not met_floor:
        cell["note"] = (f"no point reaches the floor {floor:.2f}%; the most accurate point "
                        f"({float(chosen['accuracy']):.2f}%) is shown")
    return cell


def _searched_cell(search: pd.DataFrame, row: Table1Row, floor_name: str) -> dict:
    """The selected probe of an operating-point search for one quantized row and floor."""
    same_method = search[(search["method"] == row.method) & (search["floor_name"] == floor_name)]
    importance = row_importance(row, same_method["importance"])
    if importance is None:
        return {"status": "no points", "importance": "", "note": f"no search of {row.method} with {row.weighting} "
                f"importance for the floor {floor_name!r}"}
    chosen = same_method[(same_method["importance"] == importance) & same_method["selected"]]
    # the row names the seed's file of the smallest ratio: its ratio is the row's, its own accuracy is kept
    if row.ratio_column not in chosen:  # a run made before this code existed
        return {"status": "no points", "importance": importance, "note": f"no {row.ratio_column} in the search"}
    first = chosen.sort_values([row.ratio_column, "seed"], kind="stable").iloc[0]
    cell = {c: first.get(c, math.nan) for c in _CHOSEN_COLUMNS}
    met = bool(first["meets_floor"])
    cell.update(status="selected" if met else "fallback", importance=importance, floor=float(first["floor"]),
                accuracy=float(first["probe_accuracy"]), accuracy_spread=float(first["probe_spread"]),
                seeds=len(chosen), ratio=float(first[row.ratio_column]), path=first.get(row.path_column, ""),
                file_accuracy=float(first["accuracy"]))
    if not met:
        cell["note"] = (f"no probe's mean accuracy reaches the floor {cell['floor']:.2f}%; the most accurate "
                        f"({cell['accuracy']:.2f}%) is shown")
    return cell


def select_table1(points: pd.DataFrame, models: pd.DataFrame, *, tolerance: float = 0.0,
                  skipped: Mapping[str, str] | None = None, paper: Mapping | None = None,
                  search: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 1 for the networks present in ``points``, ``models`` or ``skipped``, one row per (network, row)
    and, for the quantized rows, per floor.

    With ``search`` (the probes of operating-point searches, ``netquant.sweeps.search_curve``), a network's
    quantized rows show each searched floor's selected probe: its mean accuracy over the fine-tuning seeds,
    their spread (half the range) and the smallest ratio of their files. Without it they are chosen among
    the sweep's points (floor ``pruned (sweep)``), as follows.

    Quantized rows are chosen by the rule in the module docstring: among the pruned-variant, scope ``all``,
    fine-tuned points of the row's method and importance, the largest ``ratio_file`` with
    ``accuracy >= pruned accuracy - tolerance`` (status ``selected``), else the most accurate point
    (status ``fallback``). Model rows come from ``models`` (status ``model``); the Deep Compression row
    is the paper's only (``paper only``); a row without points has status ``no points``; every row of a
    skipped network has status ``not run`` and the reason in ``note``.

    Columns: :data:`TABLE1_COLUMNS`. ``ratio`` is the row's ``ratio_column`` of the chosen point;
    ``floor`` the accuracy floor used; ``diff_*`` = ours - paper.
    """
    paper = load_paper_numbers() if paper is None else paper
    skipped = dict(skipped or {})
    networks = ordered_networks(set(points["network"]) | set(models["network"]) | set(skipped))
    search = pd.DataFrame(columns=["network"]) if search is None else search
    records = []
    for network in networks:
        searched = search[search["network"] == network]
        floors = sorted(set(searched["floor_name"])) if not searched.empty else [SWEEP_FLOOR]
        pruned = model_row(models, network, "pruned")
        floor = float(pruned["accuracy"]) - tolerance if pruned is not None else math.nan
        variant, scope = FIGURE_MODELS["table1"]
        candidates = points[(points["network"] == network) & (points["variant"] == variant)
                            & (points["scope"] == scope) & (points["finetuned"] == True)]  # noqa: E712
        for row in TABLE1_ROWS:
            for floor_name in floors if row.method is not None else [""]:
                cell = paper_cell(paper, network, row.key) if row.in_paper else {}
                record = {name: math.nan for name in TABLE1_COLUMNS}
                record.update(network=network, row=row.key, label=row.label, method=row.method or "",
                              importance="", rate_name="", note="", path="", floor=floor, floor_name=floor_name,
                              paper_accuracy=cell.get("accuracy", math.nan),
                              paper_ratio=cell.get("ratio", math.nan), paper_source=cell.get("source", ""))
                if network in skipped:
                    record.update(status="not run", note=f"not run: {skipped[network]}")
                elif row.key in ("original", "pruned"):
                    record.update(_model_cell(models, network, row.key))
                elif row.method is None:
                    record.update(status="paper only", note="the paper's quoted result; not reproduced here")
                elif floor_name == SWEEP_FLOOR:
                    record.update(_quantized_cell(candidates, row, floor), seeds=1)
                    record["file_accuracy"] = record["accuracy"]
                else:
                    record.update(_searched_cell(searched, row, floor_name))
                records.append(record)
    table = pd.DataFrame.from_records(records, columns=list(TABLE1_COLUMNS))
    table["diff_accuracy"] = table["accuracy"].astype(float) - table["paper_accuracy"]
    table["diff_ratio"] = table["ratio"].astype(float) - table["paper_ratio"]
    return table


# -------------------------------------------------------------------------------------- DP gap table
DP_PAIRS: tuple[tuple[str, str], ...] = (("kmeans", "dp-kmeans"), ("hwkmeans", "dp-kmeans"), ("ecsq", "dp-ecsq"))
_DP_KEYS = ["network", "variant", "scope", "importance", "finetuned", "rate_name", "rate_value"]
_DP_VALUES = ["clusters", "bits_huffman", "accuracy", "ratio_file"]


def dp_gap_table(points: pd.DataFrame) -> pd.DataFrame:
    """Heuristic quantizers vs the DP optimum of the same objective at the same rate parameter.

    Pairs (:data:`DP_PAIRS`): k-means and Hessian-weighted k-means vs ``dp-kmeans`` at equal ``k``
    (the importance is matched too, so plain k-means meets the unweighted optimum), iterative ECSQ vs
    ``dp-ecsq`` at equal ``lam``. One row per matched point: ``<value>_heuristic``, ``<value>_optimum``
    for clusters, bits_huffman, accuracy, ratio_file, and ``accuracy_gap``, ``bits_gap`` = optimum -
    heuristic (percentage points, bits per weight).
    """
    frames = []
    for heuristic, optimum in DP_PAIRS:
        left = points[points["method"] == heuristic][_DP_KEYS + _DP_VALUES]
        right = points[points["method"] == optimum][_DP_KEYS + _DP_VALUES]
        merged = left.merge(right, on=_DP_KEYS, suffixes=("_heuristic", "_optimum"))
        merged.insert(0, "optimum", optimum)
        merged.insert(0, "heuristic", heuristic)
        frames.append(merged)
    columns = ["heuristic", "optimum"] + _DP_KEYS + [f"{v}_{s}" for v in _DP_VALUES for s in ("heuristic", "optimum")]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    table = table.reindex(columns=columns)
    table["accuracy_gap"] = table["accuracy_optimum"] - table["accuracy_heuristic"]
    table["bits_gap"] = table["bits_huffman_optimum"] - table["bits_huffman_heuristic"]
    rank = {n: i for i, n in enumerate(ordered_networks(table["network"]))}
    table = table.sort_values(["network", "variant", "scope", "heuristic", "importance", "finetuned", "rate_value"],
                              key=lambda c: c.map(rank) if c.name == "network" else c, kind="stable")
    return table.reset_index(drop=True)


DP_GAP_DISPLAY_COLUMNS = (
    "heuristic", "optimum", "network", "variant", "importance", "finetuned", "rate_name", "rate_value",
    "bits_huffman_heuristic", "bits_huffman_optimum", "accuracy_heuristic", "accuracy_optimum", "accuracy_gap",
    "bits_gap",
)

