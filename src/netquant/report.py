"""Figures and tables of the paper from the tidy sweep results: Figures 1-3, Table 1, paper vs ours.

Inputs
------
``points``  one row per sweep point and fine-tuning state (``results/tables/points.csv``), columns
            network, variant (baseline|pruned), scope (all|layer), method, importance, rate_name,
            rate_value, finetuned, clusters, entropy_bits, bits_fixed, bits_huffman, bits_ans (average
            codeword length per quantized weight, bits), accuracy, top5 (test %), ratio_file,
            ratio_eq1, ratio_file_ans, ratio_file_runlength, file_bytes, path (and, for the pruned,
            fine-tuned points, path_ans and path_runlength: the same network with ANS-coded labels and
            with mask-ANS positions, each a real file).
``models``  the models before quantization (``results/tables/models.csv``): network, variant,
            accuracy, top5, parameters, nonzeros, ratio_file (pruned: 32-bit values + coded indices).
``skipped`` {network: reason} for networks that were not run (e.g. AlexNet without ImageNet).

Table 1 selection rule
----------------------
For each row of Table 1 (a method with its importance) and network, the candidates are the points of
the pruned model, all layers quantized together (scope ``all``), after fine-tuning. The chosen point is
the one with the largest ``ratio_file`` whose accuracy is at least the pruned model's accuracy minus
``tolerance`` (percentage points). If no point reaches that floor, the most accurate point is shown and
its status is ``fallback``. The paper does not say how its operating points were chosen; this is the
natural reading of "no loss of accuracy at the highest compression".

Figures are drawn with matplotlib's object API (no pyplot state) and saved as vector PDF and 180 dpi PNG.
Every figure uses the same style per method (:data:`METHOD_STYLES`): k-means blue circles, Hessian-weighted
k-means red squares, uniform quantization green triangles, iterative ECSQ black diamonds; the alternative
in a two-way comparison keeps colour and marker but is drawn open and dashed.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

from netquant.io import atomic_path, write_text

NETWORK_ORDER = ("lenet5", "resnet32", "alexnet")
NETWORK_LABELS = {
    "lenet5": "LeNet-5 / MNIST",
    "resnet32": "ResNet-32 / CIFAR-10",
    "alexnet": "AlexNet / ImageNet",
}
MAIN_HESSIAN = "hessian-50000"
PNG_DPI = 180

# Accuracies are percentages computed the same way everywhere; the slack only absorbs the rounding of
# "floor = pruned accuracy - tolerance" (e.g. 99.04 - 0.05 = 98.99000000000001).
_FLOOR_SLACK = 1e-9


# --------------------------------------------------------------------------------------------- styles
@dataclass(frozen=True)
class CurveStyle:
    """How one curve is drawn: legend label, colour, marker, line style, filled or open markers."""

    label: str
    color: str
    marker: str
    linestyle: str = "-"
    filled: bool = True

    def alternative(self, label: str) -> "CurveStyle":
        """The other side of a two-way comparison: same colour and marker, open markers, dashed line."""
        return dataclasses.replace(self, label=label, linestyle="--", filled=False)


METHOD_STYLES: dict[str, CurveStyle] = {
    "kmeans": CurveStyle("k-means", "#1f77b4", "o"),
    "hwkmeans": CurveStyle("Hessian-weighted k-means", "#d62728", "s"),
    "uniform": CurveStyle("Uniform quantization", "#2ca02c", "^"),
    "ecsq": CurveStyle("Iterative ECSQ", "black", "D"),
    "dp-kmeans": CurveStyle("Optimal weighted k-means (DP)", "#d62728", "s", "--", filled=False),
    "dp-ecsq": CurveStyle("Optimal ECSQ (DP)", "black", "D", "--", filled=False),
}
# Figure 2: the same quantizer (red squares) with three sources of importance.
IMPORTANCE_STYLES: tuple[CurveStyle, ...] = (
    METHOD_STYLES["hwkmeans"],
    CurveStyle("", "#ff7f0e", "v", "--", filled=False),
    CurveStyle("", "#8c564b", "P", "-."),
)
FIGURE1_METHODS: tuple[tuple[str, str], ...] = (
    ("kmeans", "none"),
    ("hwkmeans", MAIN_HESSIAN),
    ("uniform", MAIN_HESSIAN),
    ("ecsq", MAIN_HESSIAN),
)
_RC = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "legend.fontsize": 8.5,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "lines.linewidth": 1.4,
    "lines.markersize": 5,
    "pdf.fonttype": 42,  # embed TrueType: text stays text in the PDF
    "svg.fonttype": "none",
}
BITS_LABEL = "Average codeword length (bits)"
ACCURACY_LABEL = "Test accuracy (%)"


def network_label(network: str) -> str:
    return NETWORK_LABELS.get(network, network)


def importance_label(importance: str) -> str:
    """``hessian-50000`` -> "Hessian, 50,000 samples"; ``adam`` -> "Alt-Hessian: Adam second moments"."""
    if importance.startswith("hessian-") and importance[len("hessian-"):].isdigit():
        return f"Hessian, {int(importance[len('hessian-'):]):,} samples"
    if importance == "adam":
        return "Alt-Hessian: Adam second moments"
    if importance == "none":
        return "no weighting"
    return importance


# ------------------------------------------------------------------------------------------- figures
def _curve(points: pd.DataFrame, x: str, y: str = "accuracy", **equal) -> pd.DataFrame:
    """The rows of ``points`` whose columns equal ``equal``, with finite x and y, sorted by x."""
    keep = np.ones(len(points), dtype=bool)
    for column, value in equal.items():
        keep &= (points[column] == value).to_numpy()
    rows = points.loc[keep]
    rows = rows[np.isfinite(rows[x].astype(float)) & np.isfinite(rows[y].astype(float))]
    return rows.sort_values([x, y], kind="stable")


def _draw(ax, rows: pd.DataFrame, x: str, style: CurveStyle, y: str = "accuracy") -> None:
    if rows.empty:
        return
    ax.plot(rows[x].to_numpy(float), rows[y].to_numpy(float), label=style.label, color=style.color,
            marker=style.marker, linestyle=style.linestyle,
            markerfacecolor=style.color if style.filled else "white", markeredgecolor=style.color)


# Accuracy axes are drawn on a scale that is linear within a few tenths of a point of the reference accuracy
# (the unquantized model, or the best point) and logarithmic in the loss beyond it: the tenths where the
# methods differ near the reference get as much room as the tens of points they lose at the lowest rates
# (on a linear 10-100% axis the former are a flat line at the top).
LINEAR_BAND = 0.2  # percentage points around the reference drawn linearly


class AccuracyScale:
    """y = -sign(loss) * log10(1 + |loss| / band), loss = reference - accuracy (percentage points)."""

    def __init__(self, reference: float, band: float = LINEAR_BAND) -> None:
        self.reference, self.band = reference, band

    def forward(self, accuracy):
        loss = self.reference - np.asarray(accuracy, dtype=float)
        return -np.sign(loss) * np.log10(1.0 + np.abs(loss) / self.band)

    def inverse(self, value):
        value = np.asarray(value, dtype=float)
        return self.reference + np.sign(value) * self.band * (10.0 ** np.abs(value) - 1.0)

    def limits(self, accuracies: Sequence[float]) -> tuple[float, float]:
        """The data's range, no lower than chance-level 10%, padded by 5% of its extent on this scale."""
        low = self.forward(max(min(accuracies), 10.0))
        high = self.forward(max(max(accuracies), self.reference))
        pad = 0.05 * max(float(high - low), 0.1)
        return float(self.inverse(low - pad)), float(self.inverse(high + pad))

    def ticks(self, limits: tuple[float, float], spacing: float = 0.09) -> list[float]:
        """Round accuracies inside ``limits``, the roundest first, none closer to another than ``spacing``
        of the axis height."""
        span = float(self.forward(limits[1]) - self.forward(limits[0]))
        chosen: list[float] = []
        for step in (10.0, 5.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.05):
            for value in np.arange(math.ceil(limits[0] / step) * step, limits[1] + 1e-9, step):
                value = round(float(value), 4)
                position = float(self.forward(value))
                if all(abs(position - float(self.forward(c))) >= spacing * span for c in chosen):
                    chosen.append(value)
        return sorted(chosen)


def _accuracy_axis(axes: Sequence, reference: float | None) -> None:
    """Put every axis of ``axes`` on one :class:`AccuracyScale` fitted to the accuracies they show."""
    from matplotlib.ticker import FixedLocator, NullLocator

    values = [float(y) for ax in axes for line in ax.lines for y in line.get_ydata() if math.isfinite(y)]
    if not values:
        return
    scale = AccuracyScale(reference if reference is not None and math.isfinite(reference) else max(values))
    limits = scale.limits(values)
    for ax in axes:
        ax.set_yscale("function", functions=(scale.forward, scale.inverse))
        ax.set_ylim(*limits)
        ax.yaxis.set_major_locator(FixedLocator(scale.ticks(limits)))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(lambda value, _: f"{value:g}")


def _finish_axes(ax, title: str, xlabel: str, ylabel: str = ACCURACY_LABEL) -> None:
    ax.set_title(title, loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, linewidth=0.5, alpha=0.4)
    if not ax.lines:
        ax.text(0.5, 0.5, "no points", transform=ax.transAxes, ha="center", va="center", color="0.5")


def _reference_line(ax, accuracy: float | None, label: str) -> None:
    if accuracy is not None and math.isfinite(accuracy):
        ax.axhline(accuracy, color="0.45", linewidth=0.9, linestyle=":", label=f"{label} ({accuracy:.2f}%)")


def _figure_legend(fig: Figure, axes: Iterable, ncols: int) -> None:
    """One legend for the whole figure, below the panels, each label once."""
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center",
                   ncols=min(ncols, len(handles)), frameon=False)


def save_figure(fig: Figure, out_pdf: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """Write ``fig`` as a vector PDF and a PNG, each atomically."""
    with matplotlib.rc_context(_RC):
        with atomic_path(out_pdf) as tmp:
            fig.savefig(tmp, format="pdf", metadata={"CreationDate": None})
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=PNG_DPI)


def plot_figure1(points: pd.DataFrame, network: str, out_pdf, out_png, *, hessian: str = MAIN_HESSIAN,
                 reference_accuracy: float | None = None) -> Figure:
    """Paper Figure 1 for one network: accuracy vs average codeword length, unpruned, all layers together.

    Panels (a) fixed-length coding, (b) fixed-length + fine-tuning, (c) Huffman coding,
    (d) Huffman + fine-tuning; x = ``bits_fixed`` or ``bits_huffman``. Curves: k-means (importance none),
    Hessian-weighted k-means, uniform quantization and iterative ECSQ with importance ``hessian``.
    A method without points is simply absent. ``reference_accuracy`` (the unquantized model's accuracy,
    %) is drawn as a dotted line when given. Returns the figure.
    """
    rows = points[(points["network"] == network) & (points["variant"] == "baseline") & (points["scope"] == "all")]
    panels = (
        ("(a) Fixed-length coding", "bits_fixed", False),
        ("(b) Fixed-length coding + fine-tuning", "bits_fixed", True),
        ("(c) Huffman coding", "bits_huffman", False),
        ("(d) Huffman coding + fine-tuning", "bits_huffman", True),
    )
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.2, 6.4), layout="constrained")
        axes = fig.subplots(2, 2, sharex=True, sharey=True).ravel()
        for i, (ax, (title, x, finetuned)) in enumerate(zip(axes, panels)):
            for method, importance in FIGURE1_METHODS:
                importance = hessian if importance == MAIN_HESSIAN else importance
                curve = _curve(rows, x, method=method, importance=importance, finetuned=finetuned)
                _draw(ax, curve, x, METHOD_STYLES[method])
            _reference_line(ax, reference_accuracy, "unquantized")
            _finish_axes(ax, title, BITS_LABEL if i >= 2 else "", ACCURACY_LABEL if i % 2 == 0 else "")
        _accuracy_axis(axes, reference_accuracy)
        fig.suptitle(f"{network_label(network)}: all layers quantized together", fontsize=10)
        _figure_legend(fig, axes, ncols=3)
    save_figure(fig, out_pdf, out_png)
    return fig


def plot_figure2(points: pd.DataFrame, networks: Sequence[str], out_pdf, out_png, *,
                 importances: Sequence[str] = (MAIN_HESSIAN, "hessian-1000", "adam")) -> Figure:
    """Paper Figure 2: Hessian-weighted k-means after Huffman coding and fine-tuning, one panel per network.

    Curves: the importance from each of ``importances`` (default: Hessian from 50,000 samples, from 1,000
    samples, square root of Adam's second moments); unpruned models, all layers together;
    x = ``bits_huffman``, y = accuracy. Returns the figure.
    """
    if len(importances) > len(IMPORTANCE_STYLES):
        raise ValueError(f"at most {len(IMPORTANCE_STYLES)} importances per panel, got {len(importances)}")
    rows = points[(points["method"] == "hwkmeans") & (points["variant"] == "baseline")
                  & (points["scope"] == "all") & (points["finetuned"] == True)]  # noqa: E712 (a column)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.2, 3.6), layout="constrained")
        axes = fig.subplots(1, len(networks), squeeze=False)[0]
        for i, (ax, network) in enumerate(zip(axes, networks)):
            for importance, style in zip(importances, IMPORTANCE_STYLES):
                style = dataclasses.replace(style, label=importance_label(importance))
                _draw(ax, _curve(rows, "bits_huffman", network=network, importance=importance), "bits_huffman", style)
            _finish_axes(ax, f"({chr(ord('a') + i)}) {network_label(network)}", BITS_LABEL)
        for ax in axes:  # one panel per network: each its own scale
            _accuracy_axis([ax], None)
        fig.suptitle("Hessian-weighted k-means, Huffman coding + fine-tuning", fontsize=10)
        _figure_legend(fig, axes, ncols=3)
    save_figure(fig, out_pdf, out_png)
    return fig


def plot_figure3(points: pd.DataFrame, network: str, out_pdf, out_png, *, hessian: str = MAIN_HESSIAN) -> Figure:
    """Paper Figure 3: uniform quantization with the plain mean vs the Hessian-weighted mean as bin centre.

    Huffman coding, (a) before and (b) after fine-tuning; unpruned, all layers together;
    x = ``bits_huffman``, y = accuracy. Plain mean = importance ``none``, weighted mean = ``hessian``.
    Returns the figure.
    """
    rows = points[(points["network"] == network) & (points["method"] == "uniform")
                  & (points["variant"] == "baseline") & (points["scope"] == "all")]
    weighted = dataclasses.replace(METHOD_STYLES["uniform"], label="Hessian-weighted mean")
    plain = weighted.alternative("Plain mean")
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.2, 3.6), layout="constrained")
        axes = fig.subplots(1, 2, sharex=True, sharey=True)
        titles = ("(a) Huffman coding", "(b) Huffman coding + fine-tuning")
        for ax, finetuned, title in zip(axes, (False, True), titles):
            _draw(ax, _curve(rows, "bits_huffman", importance=hessian, finetuned=finetuned), "bits_huffman", weighted)
            _draw(ax, _curve(rows, "bits_huffman", importance="none", finetuned=finetuned), "bits_huffman", plain)
            _finish_axes(ax, title, BITS_LABEL, ACCURACY_LABEL if ax is axes[0] else "")
        _accuracy_axis(axes, None)
        fig.suptitle(f"{network_label(network)}: uniform quantization, centre of each bin", fontsize=10)
        _figure_legend(fig, axes, ncols=2)
    save_figure(fig, out_pdf, out_png)
    return fig


def plot_layerwise(points: pd.DataFrame, network: str, out_pdf, out_png, *, method: str = "kmeans",
                   importance: str = "none", reference_accuracy: float | None = None) -> Figure:
    """All layers quantized together (one codebook) vs layer by layer (one codebook per layer).

    Pruned model, Huffman coding, after fine-tuning: (a) accuracy vs average codeword length,
    (b) accuracy vs compression ratio of the file (which includes every layer's codebook).
    ``reference_accuracy`` (the pruned model's accuracy, %) is drawn as a dotted line when given.
    Returns the figure.
    """
    rows = points[(points["network"] == network) & (points["variant"] == "pruned") & (points["method"] == method)
                  & (points["importance"] == importance) & (points["finetuned"] == True)]  # noqa: E712
    together = dataclasses.replace(METHOD_STYLES[method], label=f"{METHOD_STYLES[method].label}, all layers together")
    by_layer = together.alternative(f"{METHOD_STYLES[method].label}, layer by layer")
    panels = (("(a) Average codeword length", "bits_huffman", BITS_LABEL),
              ("(b) Compression ratio of the file", "ratio_file", "Compression ratio (32-bit model / file size)"))
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.2, 3.6), layout="constrained")
        axes = fig.subplots(1, 2, sharey=True)
        for ax, (title, x, xlabel) in zip(axes, panels):
            _draw(ax, _curve(rows, x, scope="all"), x, together)
            _draw(ax, _curve(rows, x, scope="layer"), x, by_layer)
            _reference_line(ax, reference_accuracy, "pruned, unquantized")
            _finish_axes(ax, title, xlabel, ACCURACY_LABEL if ax is axes[0] else "")
        _accuracy_axis(axes, reference_accuracy)
        fig.suptitle(f"{network_label(network)}, pruned: Huffman coding + fine-tuning", fontsize=10)
        _figure_legend(fig, axes, ncols=3)
    save_figure(fig, out_pdf, out_png)
    return fig


# --------------------------------------------------------------------------------------- paper numbers
def load_paper_numbers() -> dict:
    """The paper's published Table 1 (package data ``paper_numbers.yaml``): ``{"source", "reference",
    "networks": {network: {"table1": {row: {"accuracy", "ratio"?, "source"}}}}}``."""
    text = resources.files("netquant").joinpath("paper_numbers.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def paper_cell(paper: Mapping, network: str, row: str) -> dict:
    """The paper's Table 1 cell ``{"accuracy", "ratio", "source"}`` (NaN where the paper has none)."""
    cell = paper["networks"].get(network, {}).get("table1", {}).get(row, {})
    return {"accuracy": float(cell.get("accuracy", math.nan)), "ratio": float(cell.get("ratio", math.nan)),
            "source": cell.get("source", "")}


# --------------------------------------------------------------------------------------------- Table 1
@dataclass(frozen=True)
class Table1Row:
    """One row of Table 1. ``importances``: the first of these with points for a network is used (AlexNet
    has no Hessian, only Adam's second moments). ``ratio_column``: the ratio reported for the chosen point
    (the choice itself always uses ``ratio_file``). ``method=None``: a model row or a paper-only row."""

    key: str
    label: str
    method: str | None = None
    importances: tuple[str, ...] = ()
    ratio_column: str = "ratio_file"
    path_column: str = "path"  # the file whose size gives ``ratio_column``
    in_paper: bool = True


TABLE1_ROWS: tuple[Table1Row, ...] = (
    Table1Row("original", "Original model"),
    Table1Row("pruned", "Pruned model"),
    Table1Row("kmeans", "k-means", "kmeans", ("none",)),
    Table1Row("hwkmeans", "Hessian-weighted k-means", "hwkmeans", (MAIN_HESSIAN,)),
    Table1Row("adam-kmeans", "Alt-Hessian (Adam) weighted k-means", "hwkmeans", ("adam",)),
    Table1Row("uniform", "Uniform quantization", "uniform", (MAIN_HESSIAN, "adam")),
    Table1Row("ecsq", "Iterative ECSQ", "ecsq", (MAIN_HESSIAN, "adam")),
    Table1Row("deep-compression", "Deep Compression (Han et al.)"),
    Table1Row("dp-kmeans", "Optimal weighted k-means (DP)", "dp-kmeans", (MAIN_HESSIAN, "adam"), in_paper=False),
    Table1Row("dp-ecsq", "Optimal ECSQ (DP)", "dp-ecsq", (MAIN_HESSIAN, "adam"), in_paper=False),
    Table1Row("uniform-ans", "Uniform quantization, ANS-coded labels", "uniform", (MAIN_HESSIAN, "adam"),
              ratio_column="ratio_file_ans", path_column="path_ans", in_paper=False),
    Table1Row("uniform-runlength", "Uniform quantization, better index code", "uniform", (MAIN_HESSIAN, "adam"),
              ratio_column="ratio_file_runlength", path_column="path_runlength", in_paper=False),
)
TABLE1_COLUMNS = (
    "network", "row", "label", "status", "note", "method", "importance", "rate_name", "rate_value", "clusters",
    "bits_huffman", "accuracy", "top5", "ratio", "floor", "paper_accuracy", "paper_ratio", "diff_accuracy",
    "diff_ratio", "paper_source", "path",
)
_CHOSEN_COLUMNS = ("rate_name", "rate_value", "clusters", "bits_huffman", "accuracy", "top5", "path")
TABLE1_DISPLAY_COLUMNS = (
    "network", "label", "rate_name", "rate_value", "bits_huffman", "accuracy", "paper_accuracy", "diff_accuracy",
    "ratio", "paper_ratio", "diff_ratio", "status",
)


def ordered_networks(names: Iterable[str]) -> list[str]:
    """Networks in the paper's order (LeNet-5, ResNet-32, AlexNet), then any others alphabetically."""
    names = set(names)
    return [n for n in NETWORK_ORDER if n in names] + sorted(names - set(NETWORK_ORDER))


def select_point(curve: pd.DataFrame, floor: float) -> tuple[pd.Series | None, bool]:
    """The point of ``curve`` with the largest ``ratio_file`` whose accuracy >= ``floor`` (ties: the more
    accurate); if none qualifies, the most accurate point (ties: the larger ratio).

    Returns ``(row, met_floor)``; ``(None, False)`` for an empty curve.
    """
    curve = curve[np.isfinite(curve["accuracy"].astype(float)) & np.isfinite(curve["ratio_file"].astype(float))]
    if curve.empty:
        return None, False
    qualifying = curve[curve["accuracy"] >= floor - _FLOOR_SLACK]
    if not qualifying.empty:
        return qualifying.sort_values(["ratio_file", "accuracy"], ascending=False, kind="stable").iloc[0], True
    return curve.sort_values(["accuracy", "ratio_file"], ascending=False, kind="stable").iloc[0], False


def _model_row(models: pd.DataFrame, network: str, variant: str) -> pd.Series | None:
    rows = models[(models["network"] == network) & (models["variant"] == variant)]
    return None if rows.empty else rows.iloc[0]


def _model_cell(models: pd.DataFrame, network: str, key: str) -> dict:
    """Table 1's "original model" or "pruned model" cell of one network from the models table."""
    model = _model_row(models, network, "baseline" if key == "original" else "pruned")
    if model is None:
        return {"status": "no points", "note": f"no {key} model in the models table"}
    return {"status": "model", "accuracy": float(model["accuracy"]), "top5": model.get("top5", math.nan),
            "ratio": math.nan if key == "original" else float(model["ratio_file"])}


def _quantized_cell(candidates: pd.DataFrame, row: Table1Row, floor: float, hessian: str = MAIN_HESSIAN) -> dict:
    """The chosen point of one quantized row among one network's Table 1 candidates."""
    same_method = candidates[candidates["method"] == row.method]
    present = set(same_method["importance"])
    importances = [hessian if imp == MAIN_HESSIAN else imp for imp in row.importances]
    importance = next((imp for imp in importances if imp in present), importances[0])
    chosen, met_floor = select_point(same_method[same_method["importance"] == importance], floor)
    if chosen is None:
        return {"status": "no points", "importance": importance,
                "note": f"no fine-tuned points of {row.method} with importance {importance} on the pruned model "
                        "(all layers together)"}
    cell = {c: chosen.get(c, math.nan) for c in _CHOSEN_COLUMNS}
    cell.update(status="selected" if met_floor else "fallback", importance=importance,
                ratio=float(chosen.get(row.ratio_column, math.nan)), path=chosen.get(row.path_column, ""))
    if not met_floor:
        cell["note"] = (f"no point reaches the floor {floor:.2f}%; the most accurate point "
                        f"({float(chosen['accuracy']):.2f}%) is shown")
    return cell


def select_table1(points: pd.DataFrame, models: pd.DataFrame, *, tolerance: float = 0.0,
                  skipped: Mapping[str, str] | None = None, paper: Mapping | None = None,
                  hessian: str = MAIN_HESSIAN) -> pd.DataFrame:
    """Table 1 for the networks present in ``points``, ``models`` or ``skipped``, one row per (network, row).

    Quantized rows are chosen by the rule in the module docstring: among the pruned-variant, scope ``all``,
    fine-tuned points of the row's method and importance, the largest ``ratio_file`` with
    ``accuracy >= pruned accuracy - tolerance`` (status ``selected``), else the most accurate point
    (status ``fallback``). Model rows come from ``models`` (status ``model``); the Deep Compression row
    is the paper's only (``paper only``); a row without points has status ``no points``; every row of a
    skipped network has status ``not run`` and the reason in ``note``.

    Columns: :data:`TABLE1_COLUMNS`. ``ratio`` is the row's ``ratio_column`` of the chosen point;
    ``floor`` the accuracy floor used; ``diff_*`` = ours - paper. ``hessian``: the importance name that
    stands for the paper's 50,000-sample Hessian (smaller configs use fewer samples).
    """
    paper = load_paper_numbers() if paper is None else paper
    skipped = dict(skipped or {})
    networks = ordered_networks(set(points["network"]) | set(models["network"]) | set(skipped))
    records = []
    for network in networks:
        pruned = _model_row(models, network, "pruned")
        floor = float(pruned["accuracy"]) - tolerance if pruned is not None else math.nan
        candidates = points[(points["network"] == network) & (points["variant"] == "pruned")
                            & (points["scope"] == "all") & (points["finetuned"] == True)]  # noqa: E712
        for row in TABLE1_ROWS:
            cell = paper_cell(paper, network, row.key) if row.in_paper else {}
            record = {name: math.nan for name in TABLE1_COLUMNS}
            record.update(network=network, row=row.key, label=row.label, method=row.method or "", importance="",
                          rate_name="", note="", path="", floor=floor,
                          paper_accuracy=cell.get("accuracy", math.nan), paper_ratio=cell.get("ratio", math.nan),
                          paper_source=cell.get("source", ""))
            if network in skipped:
                record.update(status="not run", note=f"not run: {skipped[network]}")
            elif row.key in ("original", "pruned"):
                record.update(_model_cell(models, network, row.key))
            elif row.method is None:
                record.update(status="paper only", note="the paper's quoted result; not reproduced here")
            else:
                record.update(_quantized_cell(candidates, row, floor, hessian))
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


# ------------------------------------------------------------------------------------- table writing
COLUMN_HEADERS = {
    "network": "Network", "label": "Method", "row": "Row", "status": "Status", "note": "Note",
    "method": "Method", "importance": "Importance", "rate_name": "Rate", "rate_value": "Value",
    "clusters": "Clusters", "bits_huffman": "Bits (Huffman)", "accuracy": "Accuracy (%)", "top5": "Top-5 (%)",
    "ratio": "Ratio", "floor": "Floor (%)", "paper_accuracy": "Paper acc. (%)", "paper_ratio": "Paper ratio",
    "diff_accuracy": "Diff. acc.", "diff_ratio": "Diff. ratio", "variant": "Variant", "scope": "Scope",
    "finetuned": "Fine-tuned", "heuristic": "Heuristic", "optimum": "Optimum",
    "bits_huffman_heuristic": "Bits heur.", "bits_huffman_optimum": "Bits opt.",
    "accuracy_heuristic": "Acc. heur. (%)", "accuracy_optimum": "Acc. opt. (%)",
    "accuracy_gap": "Acc. gap", "bits_gap": "Bits gap",
}
# Columns shown with two decimals (percentages, ratios, bits); other floats with four significant digits.
_TWO_DECIMALS = ("accuracy", "top5", "ratio", "diff", "paper_accuracy", "paper_ratio", "bits", "entropy", "floor")


def _format_value(column: str, value) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and not math.isfinite(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        if column.startswith("diff") or column.endswith("_gap"):
            return f"{value:+.2f}"
        if column.startswith(_TWO_DECIMALS):
            return f"{value:.2f}"
        return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    return str(value)


def _display(df: pd.DataFrame, columns: Sequence[str] | None) -> tuple[list[str], list[list[str]]]:
    columns = list(df.columns if columns is None else columns)
    headers = [COLUMN_HEADERS.get(c, c) for c in columns]
    if "network" in columns:
        df = df.assign(network=df["network"].map(network_label))
    cells = [[_format_value(c, value) for c, value in zip(columns, values)]
             for values in df[columns].itertuples(index=False)]
    return headers, cells


def markdown_table(df: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown pipe table of ``df`` (numbers right-aligned; empty cell = missing)."""
    headers, cells = _display(df, columns)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               for c in (df.columns if columns is None else columns)]
    escape = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(escape(h) for h in headers) + " |",
             "|" + "|".join("---:" if num else "---" for num in numeric) + "|"]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex_table(df: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A booktabs ``tabular`` of ``df`` (needs ``\\usepackage{booktabs}``); missing cells as ``--``."""
    headers, cells = _display(df, columns)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               for c in (df.columns if columns is None else columns)]
    lines = [r"\begin{tabular}{" + "".join("r" if num else "l" for num in numeric) + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in headers) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) if c else "--" for c in row) + r" \\" for row in cells]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, stem: str | os.PathLike, *, columns: Sequence[str] | None = None) -> list[Path]:
    """Write ``stem.csv`` (all columns, full precision), ``stem.md`` and ``stem.tex`` (``columns`` only,
    default all; rounded for reading). Each file is written atomically. Returns the three paths."""
    stem = Path(stem)
    paths = [stem.with_name(stem.name + ext) for ext in (".csv", ".md", ".tex")]
    write_table_files(df, *paths, columns=columns)
    return paths


def write_table_files(df: pd.DataFrame, csv_path, markdown_path, latex_path, *,
                      columns: Sequence[str] | None = None) -> None:
    """:func:`write_table` with each file's path given."""
    write_text(csv_path, df.to_csv(index=False))
    write_text(markdown_path, markdown_table(df, columns))
    write_text(latex_path, latex_table(df, columns))


# ------------------------------------------------------------------------------------ paper vs ours
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
    return (f"{row['rate_name']} = {_format_value('rate_value', row['rate_value'])}, "
            f"{_format_value('clusters', row['clusters'])} clusters, {_number(row['bits_huffman'])} bits")


def _md_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"


def _value(row: pd.Series | None, column: str) -> float:
    return math.nan if row is None else float(row[column])


def paper_vs_ours_markdown(table1: pd.DataFrame, models: pd.DataFrame, skipped: Mapping[str, str] | None,
                           config_scale: str, *, paper: Mapping | None = None) -> str:
    """A Markdown page: headline compressions, the models before quantization, Table 1 per network with the
    paper's numbers, ours and the difference, the selection rule, and what was not run and why.

    ``table1`` is the output of :func:`select_table1` (also after a CSV round trip).
    """
    paper = load_paper_numbers() if paper is None else paper
    skipped = dict(skipped or {})
    table1 = table1.fillna({c: "" for c in ("note", "rate_name", "importance", "method", "path")})
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
        "The paper's headline: uniform quantization with Huffman coding compresses the pruned LeNet-5 51.25x, "
        "ResNet-32 22.17x and AlexNet 40.65x without loss of accuracy.",
        "",
        _md_row(["Network", "Paper ratio", "Paper bits/parameter", "Ours ratio", "Ours bits/parameter",
                 "Paper acc. (%)", "Ours acc. (%)"]),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for network in networks:
        rows = table1[(table1["network"] == network) & (table1["row"] == HEADLINE_ROW)]
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
        baseline, pruned = _model_row(models, network, "baseline"), _model_row(models, network, "pruned")
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
        pruned_accuracy = _value(_model_row(models, network, "pruned"), "accuracy")
        floor = float(rows["floor"].iloc[0]) if not rows.empty else math.nan
        if network in skipped:
            out += [f"Not run: {skipped[network]}. Only the paper's numbers are shown.", ""]
        elif math.isfinite(pruned_accuracy) and math.isfinite(floor):
            out += [f"Accuracy floor: {floor:.2f}% (pruned model {pruned_accuracy:.2f}% minus a tolerance of "
                    f"{pruned_accuracy - floor:.2f} points).", ""]
        else:
            out += ["No pruned model was measured, so there is no accuracy floor: every quantized row shows its "
                    "most accurate point.", ""]
        out += [_md_row(["Row", "Paper acc. (%)", "Ours acc. (%)", "Diff.", "Paper ratio", "Ours ratio", "Diff.",
                         "Operating point", "Note"]),
                "|---|---:|---:|---:|---:|---:|---:|---|---|"]
        for _, row in rows.iterrows():
            note = row["note"] if row["status"] not in ("selected", "model") else ""
            out.append(_md_row([row["label"], _number(row["paper_accuracy"]), _number(row["accuracy"]),
                                _signed(row["diff_accuracy"]), _number(row["paper_ratio"], "x"),
                                _number(row["ratio"], "x"), _signed(row["diff_ratio"]), _operating_point(row), note]))
    out += [
        "",
        "## How the operating points were chosen",
        "",
        "The paper does not say which k, bin width or lambda produced each Table 1 cell. For each row the candidates "
        "are the sweep points of the pruned model with all layers quantized together, after fine-tuning; the chosen "
        "point has the largest compression ratio of its file among those whose accuracy is at least the pruned "
        "model's accuracy minus the tolerance. If no point reaches that floor, the most accurate point is shown and "
        "marked as a fallback. The rows \"ANS-coded labels\" and \"better index code\" are the chosen uniform "
        "point's file with the labels coded by ANS and with the improved coding of the pruned positions. The DP "
        "rows are the exact optima of the weighted k-means and ECSQ objectives (beyond the paper).",
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


# -------------------------------------------------------------------------------------- assembling
def read_points(curve_tables: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """The tidy points table: the rows of every curve's points.csv, concatenated."""
    frames = [pd.read_csv(path) for path in curve_tables]
    points = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["network"])
    if "finetuned" in points:
        points["finetuned"] = points["finetuned"].astype(str).str.lower().eq("true")
    return points


def models_table(model_metrics: Iterable[str | os.PathLike], file_metrics: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per network and variant before quantization: accuracy, size, and for pruned models the
    ratio of the file holding their 32-bit kept values and coded positions (``results/{net}/pruned/file.json``)."""
    from netquant.io import read_json

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
                 out_paper_vs_ours, tolerance: float, hessian: str, skipped: Mapping[str, str],
                 scale: str) -> pd.DataFrame:
    """Select Table 1 from the curves' points and write it (CSV, Markdown, LaTeX), the models table and the
    paper-vs-ours page."""
    points = read_points(curve_tables)
    models = models_table(model_metrics, file_metrics)
    write_text(out_models, models.to_csv(index=False))
    table1 = select_table1(points, models, tolerance=tolerance, skipped=skipped, hessian=hessian)
    write_table_files(table1, out_table, out_markdown, out_latex, columns=TABLE1_DISPLAY_COLUMNS)
    write_text(out_paper_vs_ours, paper_vs_ours_markdown(table1, models, skipped, scale))
    return table1


def write_points(curve_tables, *, out_points, out_dp_gap, out_dp_gap_markdown, out_dp_gap_latex) -> pd.DataFrame:
    """The tidy points table of every curve, and the heuristics-vs-DP table."""
    points = read_points(curve_tables)
    write_text(out_points, points.to_csv(index=False))
    write_table_files(dp_gap_table(points), out_dp_gap, out_dp_gap_markdown, out_dp_gap_latex,
                      columns=DP_GAP_DISPLAY_COLUMNS)
    return points
