"""The paper-vs-ours page: headline compressions, the models before quantization, Table 1 per network with
the paper's numbers (read from ``paper_numbers.yaml`` only), ours and the difference."""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from netquant.report.labels import network_label, ordered_networks
from netquant.report.paper import load_paper_numbers, paper_cell
from netquant.report.selection import model_row
from netquant.report.writers import format_value

HEADLINE_ROW = "uniform"  # the paper's headline: uniform quantization + Huffman coding of pruned models


def _number(value, unit: str = "", digits: int = 2) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and not math.isfinite(value)):
        return "-"
    return f"{float(value):.{digits}f}{unit}"


def _signed(value, unit: str = "") -> str:
    if value is None or not math.isfinite(float(value)):
        return "-"
    return f"{float(value):+.2f}{unit}"


def _operating_point(row: pd.Series) -> str:
    if not row["rate_name"]:
        return ""
    return (f"{row['rate_name']} = {format_value('rate_value', row['rate_value'])}, "
            f"{format_value('clusters', row['clusters'])} clusters, {_number(row['bits_huffman'])} bits")


def _md_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"


def _value(row: pd.Series | None, column: str) -> float:
    return math.nan if row is None else float(row[column])


def _headline_sentence(paper: Mapping) -> str:
    parts = [f"{network_label(net).split(' / ')[0]} {paper_cell(paper, net, HEADLINE_ROW)['ratio']:.2f}x"
             for net in ordered_networks(paper["networks"])
             if math.isfinite(paper_cell(paper, net, HEADLINE_ROW)["ratio"])]
    listing = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else "".join(parts)
    return (f"The paper's headline: uniform quantization with Huffman coding compresses the pruned {listing} "
            "without loss of accuracy.")


def paper_vs_ours_markdown(table1: pd.DataFrame, models: pd.DataFrame, skipped: Mapping[str, str] | None,
                           config_scale: str, *, paper: Mapping | None = None) -> str:
    """A Markdown page: headline compressions, the models before quantization, Table 1 per network with the
    paper's numbers, ours and the difference, the selection rule, and what was not run and why.

    ``table1`` is the output of :func:`select_table1` (also after a CSV round trip).
    """
    paper = load_paper_numbers() if paper is None else paper
    skipped = dict(skipped or {})
    text_columns = [c for c in ("note", "rate_name", "importance", "method", "path", "floor_name") if c in table1]
    table1 = table1.astype({c: object for c in text_columns}).fillna({c: "" for c in text_columns})
    networks = ordered_networks(set(table1["network"]) | set(skipped))
    out = [
        "# Paper vs ours",
        "",
        f"Published numbers: {paper['source']} ({paper['reference']}). Ours: this workflow at config scale "
        f"`{config_scale}`. Pruned models, all layers quantized together, Huffman coding, after fine-tuning; "
        "accuracy is test top-1 (%) of the network decoded from its compressed file, the compression ratio is "
        "32 x (number of parameters) / (bits of the file). Differences are ours - paper.",
        "",
        "## Headline",
        "",
        _headline_sentence(paper),
        "Ours: the uniform row at the paper's accuracy (floor `paper`) where it was searched, else at the pruned "
        "model's accuracy.",
        "",
        _md_row(["Network", "Paper ratio", "Paper bits/parameter", "Ours ratio", "Ours bits/parameter",
                 "Paper acc. (%)", "Ours acc. (%)"]),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for network in networks:
        rows = table1[(table1["network"] == network) & (table1["row"] == HEADLINE_ROW)]
        at_paper = rows[rows["floor_name"] == "paper"] if "floor_name" in rows else rows
        rows = at_paper if not at_paper.empty else rows  # the headline compares at the paper's accuracy
        ours = rows.iloc[0] if not rows.empty else None
        cell = paper_cell(paper, network, HEADLINE_ROW)
        ratio = _value(ours, "ratio")
        out.append(_md_row([network_label(network), _number(cell["ratio"], "x"), _number(32 / cell["ratio"], "", 3),
                            _number(ratio, "x"), _number(32 / ratio, "", 3), _number(cell["accuracy"]),
                            _number(_value(ours, "accuracy"))]))
    out += ["", "## Models before quantization", "",
            _md_row(["Network", "Paper original (%)", "Ours original (%)", "Paper pruned (%)", "Ours pruned (%)",
                     "Paper pruned ratio", "Ours pruned ratio", "Parameters", "Kept after pruning"]),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for network in networks:
        baseline, pruned = model_row(models, network, "baseline"), model_row(models, network, "pruned")
        parameters = _value(baseline if baseline is not None else pruned, "parameters")
        kept = "-"
        if pruned is not None:
            kept = f"{int(pruned['nonzeros']):,} ({100 * pruned['nonzeros'] / pruned['parameters']:.2f}%)"
        out.append(_md_row([
            network_label(network), _number(paper_cell(paper, network, "original")["accuracy"]),
            _number(_value(baseline, "accuracy")), _number(paper_cell(paper, network, "pruned")["accuracy"]),
            _number(_value(pruned, "accuracy")), _number(paper_cell(paper, network, "pruned")["ratio"], "x"),
            _number(_value(pruned, "ratio_file"), "x"), f"{int(parameters):,}" if math.isfinite(parameters) else "-",
            kept]))
    for network in networks:
        rows = table1[table1["network"] == network]
        out += ["", f"## Table 1: {network_label(network)}", ""]
        pruned_accuracy = _value(model_row(models, network, "pruned"), "accuracy")
        pruned_floor = rows[rows["floor_name"] != "paper"] if "floor_name" in rows else rows
        floor = float(pruned_floor["floor"].dropna().iloc[0]) if pruned_floor["floor"].notna().any() else math.nan
        at_paper_floor = "floor_name" in rows and (rows["floor_name"] == "paper").any()
        if network in skipped:
            out += [f"Not run: {skipped[network]}. Only the paper's numbers are shown.", ""]
        elif math.isfinite(pruned_accuracy) and math.isfinite(floor):
            out += [f"Accuracy floor `pruned`: {floor:.2f}% (pruned model {pruned_accuracy:.2f}% minus a tolerance "
                    f"of {pruned_accuracy - floor:.2f} points)."
                    + (" Floor `paper`: the paper's accuracy of the row (column Paper acc.)." if at_paper_floor
                       else ""), ""]
        else:
            out += ["No pruned model was measured, so there is no accuracy floor: every quantized row shows its "
                    "most accurate point.", ""]
        out += [_md_row(["Row", "Floor", "Paper acc. (%)", "Ours acc. (%)", "+/- (seeds)", "Diff.", "Paper ratio",
                         "Ours ratio", "Diff.", "Operating point", "Note"]),
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for _, row in rows.iterrows():
            note = row["note"] if row["status"] not in ("selected", "model") else ""
            spread = (f"{_number(row['accuracy_spread'])} ({int(row['seeds'])})"
                      if "seeds" in row and row["seeds"] == row["seeds"] and row["seeds"] > 1 else "-")
            out.append(_md_row([row["label"], row.get("floor_name", "") or "", _number(row["paper_accuracy"]),
                                _number(row["accuracy"]), spread, _signed(row["diff_accuracy"]),
                                _number(row["paper_ratio"], "x"),
                                _number(row["ratio"], "x"), _signed(row["diff_ratio"]), _operating_point(row), note]))
    out += [
        "",
        "## How the operating points were chosen",
        "",
        "The paper does not say which k, bin width or lambda produced each Table 1 cell. With the operating-point "
        "search (config key `search`), each row is shown at each floor - `pruned`, the pruned model's accuracy, and "
        "`paper`, the paper's accuracy for that row - as the probe of largest ratio whose accuracy averaged over "
        "several fine-tuning seeds meets the floor, with half the range of the seeds' accuracies; the test set's "
        "standard error, sqrt(p (1 - p) / n), is about 0.08 points at 99.3% on MNIST and 0.26 at 92.5% on "
        "CIFAR-10. Without it (floor `pruned (sweep)`), for each row the candidates "
        "are the sweep points of the pruned model with all layers quantized together, after fine-tuning; the chosen "
        "point has the largest compression ratio of its file among those whose accuracy is at least the pruned "
        "model's accuracy minus the tolerance. If no point reaches that floor, the most accurate point is shown and "
        "marked as a fallback. The rows \"ANS-coded labels\" and \"better index code\" are the chosen uniform "
        "point's network in files with the labels coded by ANS and with the improved coding of the pruned "
        "positions. Beyond the paper, the DP rows: the optimal weighted k-means partition, and the optimal "
        "partition of the weights into interval cells for ECSQ's objective (the ECSQ optimum when the importance "
        "is constant; with a varying importance, cells that are not intervals can do better).",
        "",
        "## Not run or incomplete",
        "",
    ]
    notes = [f"- {network_label(n)}: not run: {why}." for n, why in skipped.items()]
    for _, row in table1[table1["status"].isin(["no points", "fallback"])].iterrows():
        if row["network"] not in skipped:
            notes.append(f"- {network_label(row['network'])}, {row['label']}: {row['note']}.")
    out += notes or ["Every network and row was run."]
    return "\n".join(out) + "\n"

