"""The paper's figures from the tidy points table: Figures 1-3 and the layer-wise comparison.

Figures are drawn with matplotlib's object API (no pyplot state) and saved as vector PDF and 180 dpi PNG.
Every figure uses the same style per method (:data:`METHOD_STYLES`): k-means blue circles, Hessian-weighted
k-means red squares, uniform quantization green triangles, iterative ECSQ black diamonds; the alternative
in a two-way comparison keeps colour and marker but is drawn open and dashed. Each figure draws exactly the
curves it is given (the config's ``figures`` section).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from netquant.io import atomic_path
from netquant.report.labels import importance_label, network_label
from netquant.vocabulary import FIGURE_MODELS

PNG_DPI = 180


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
    "dp-ecsq": CurveStyle("Optimal interval-cell ECSQ (DP)", "black", "D", "--", filled=False),
    "uniform-zero": CurveStyle("Uniform quantization, zero bin pruned", "#2ca02c", "^", "--", filled=False),
}
# Figure 2: the same quantizer (red squares) with three sources of importance.
IMPORTANCE_STYLES: tuple[CurveStyle, ...] = (
    METHOD_STYLES["hwkmeans"],
    CurveStyle("", "#ff7f0e", "v", "--", filled=False),
    CurveStyle("", "#8c564b", "P", "-."),
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
        """Round accuracies inside ``limits`` and within 0-100%, the roundest first, none closer to another
        than ``spacing`` of the axis height."""
        span = float(self.forward(limits[1]) - self.forward(limits[0]))
        low, high = max(limits[0], 0.0), min(limits[1], 100.0)  # the padding may reach past a real accuracy
        chosen: list[float] = []
        for step in (10.0, 5.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.05):
            for value in np.arange(math.ceil(low / step) * step, high + 1e-9, step):
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


def _rows(points: pd.DataFrame, figure: str, **equal) -> pd.DataFrame:
    """The points of a figure's model variant and scope (and of ``equal``'s column values)."""
    variant, scope = FIGURE_MODELS[figure]
    if points.empty:  # a figure whose curve lists are all empty: its panels are drawn without curves
        return points
    keep = (points["variant"] == variant) & (points["scope"] == scope)
    for column, value in equal.items():
        keep &= points[column] == value
    return points[keep]


def parse_curve(curve: str) -> tuple[str, str]:
    """``"hwkmeans/hessian-50000"`` -> ("hwkmeans", "hessian-50000"): a curve as the config names it."""
    method, _, importance = curve.partition("/")
    if not importance:
        raise ValueError(f"a curve is 'method/importance', e.g. 'hwkmeans/hessian-50000', not {curve!r}")
    return method, importance


def _finish_figure(fig: Figure, axes, *, title: str, ncols: int, reference: float | None, out_pdf, out_png,
                   each_own_scale: bool = False) -> Figure:
    """The ending every figure shares: the accuracy scale, the title, one legend, the two files."""
    for group in ([[ax] for ax in axes] if each_own_scale else [list(axes)]):
        _accuracy_axis(group, reference)
    fig.suptitle(title, fontsize=10)
    _figure_legend(fig, axes, ncols=ncols)
    save_figure(fig, out_pdf, out_png)
    return fig


def plot_figure1(points: pd.DataFrame, network: str, out_pdf, out_png, *, curves: Sequence[str],
                 reference_accuracy: float | None = None) -> Figure:
    """Paper Figure 1 for one network: accuracy vs average codeword length, unpruned, all layers together.

    Panels (a) fixed-length coding, (b) fixed-length + fine-tuning, (c) Huffman coding,
    (d) Huffman + fine-tuning; x = ``bits_fixed`` or ``bits_huffman``. ``curves``: "method/importance"
    (the paper: k-means, and Hessian-weighted k-means, uniform quantization and iterative ECSQ with the
    Hessian), each in its method's style. A curve without points is simply absent.
    ``reference_accuracy`` (the unquantized model's accuracy, %) is drawn as a dotted line when given.
    """
    rows = _rows(points, "fig1", network=network)
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
            for method, importance in map(parse_curve, curves):
                curve = _curve(rows, x, method=method, importance=importance, finetuned=finetuned)
                _draw(ax, curve, x, METHOD_STYLES[method])
            _reference_line(ax, reference_accuracy, "unquantized")
            _finish_axes(ax, title, BITS_LABEL if i >= 2 else "", ACCURACY_LABEL if i % 2 == 0 else "")
        return _finish_figure(fig, axes, title=f"{network_label(network)}: all layers quantized together", ncols=3,
                              reference=reference_accuracy, out_pdf=out_pdf, out_png=out_png)


def plot_figure2(points: pd.DataFrame, curves: Mapping[str, Sequence[str]], out_pdf, out_png) -> Figure:
    """Paper Figure 2: Hessian-weighted k-means after Huffman coding and fine-tuning, one panel per network.

    ``curves``: {network: ["hwkmeans/<importance>", ...]} (the paper: the Hessian from 50,000 samples, from
    1,000 samples, and the square root of Adam's second moments); unpruned models, all layers together;
    x = ``bits_huffman``, y = accuracy.
    """
    networks = list(curves)
    rows = _rows(points, "fig2", finetuned=True)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.2, 3.6), layout="constrained")
        axes = fig.subplots(1, len(networks), squeeze=False)[0]
        for i, (ax, network) in enumerate(zip(axes, networks)):
            if len(curves[network]) > len(IMPORTANCE_STYLES):
                raise ValueError(f"at most {len(IMPORTANCE_STYLES)} curves per panel, got {curves[network]}")
            for (method, importance), style in zip(map(parse_curve, curves[network]), IMPORTANCE_STYLES):
                style = dataclasses.replace(style, label=importance_label(importance))
                curve = _curve(rows, "bits_huffman", network=network, method=method, importance=importance)
                _draw(ax, curve, "bits_huffman", style)
            _finish_axes(ax, f"({chr(ord('a') + i)}) {network_label(network)}", BITS_LABEL)
        return _finish_figure(fig, axes, title="Hessian-weighted k-means, Huffman coding + fine-tuning", ncols=3,
                              reference=None, out_pdf=out_pdf, out_png=out_png, each_own_scale=True)


def plot_figure3(points: pd.DataFrame, network: str, out_pdf, out_png, *, curves: Sequence[str]) -> Figure:
    """Paper Figure 3: uniform quantization with the plain mean vs the Hessian-weighted mean as bin centre.

    Huffman coding, (a) before and (b) after fine-tuning; unpruned, all layers together;
    x = ``bits_huffman``, y = accuracy. ``curves``: "uniform/none" is the plain mean, "uniform/<importance>"
    the mean weighted by that importance.
    """
    rows = _rows(points, "fig3", network=network)
    weighted = dataclasses.replace(METHOD_STYLES["uniform"], label="Hessian-weighted mean")
    plain = weighted.alternative("Plain mean")
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.2, 3.6), layout="constrained")
        axes = fig.subplots(1, 2, sharex=True, sharey=True)
        titles = ("(a) Huffman coding", "(b) Huffman coding + fine-tuning")
        for ax, finetuned, title in zip(axes, (False, True), titles):
            weighted_first = sorted(map(parse_curve, curves), key=lambda curve: curve[1] == "none")
            for method, importance in weighted_first:
                curve = _curve(rows, "bits_huffman", method=method, importance=importance, finetuned=finetuned)
                _draw(ax, curve, "bits_huffman", plain if importance == "none" else weighted)
            _finish_axes(ax, title, BITS_LABEL, ACCURACY_LABEL if ax is axes[0] else "")
        return _finish_figure(fig, axes, title=f"{network_label(network)}: uniform quantization, centre of each bin",
                              ncols=2, reference=None, out_pdf=out_pdf, out_png=out_png)


def plot_layerwise(points: pd.DataFrame, network: str, out_pdf, out_png, *, curves: Sequence[str],
                   reference_accuracy: float | None = None) -> Figure:
    """All layers quantized together (one codebook) vs layer by layer (one codebook per layer).

    Pruned model, Huffman coding, after fine-tuning: (a) accuracy vs average codeword length,
    (b) accuracy vs compression ratio of the file (which includes every layer's codebook). ``curves``: the
    "method/importance" of each comparison (the paper: k-means). ``reference_accuracy`` (the pruned model's
    accuracy, %) is drawn as a dotted line when given.
    """
    panels = (("(a) Average codeword length", "bits_huffman", BITS_LABEL),
              ("(b) Compression ratio of the file", "ratio_file", "Compression ratio (32-bit model / file size)"))
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.2, 3.6), layout="constrained")
        axes = fig.subplots(1, 2, sharey=True)
        for method, importance in map(parse_curve, curves):
            variant, _ = FIGURE_MODELS["layerwise"]
            rows = points[(points["network"] == network) & (points["variant"] == variant)
                          & (points["method"] == method) & (points["importance"] == importance)
                          & (points["finetuned"] == True)]  # noqa: E712 (a column)
            label = METHOD_STYLES[method].label
            together = dataclasses.replace(METHOD_STYLES[method], label=f"{label}, all layers together")
            by_layer = together.alternative(f"{label}, layer by layer")
            for ax, (_, x, _) in zip(axes, panels):
                _draw(ax, _curve(rows, x, scope="all"), x, together)
                _draw(ax, _curve(rows, x, scope="layer"), x, by_layer)
        for ax, (title, _, xlabel) in zip(axes, panels):
            _reference_line(ax, reference_accuracy, "pruned, unquantized")
            _finish_axes(ax, title, xlabel, ACCURACY_LABEL if ax is axes[0] else "")
        return _finish_figure(fig, axes, title=f"{network_label(network)}, pruned: Huffman coding + fine-tuning",
                              ncols=3, reference=reference_accuracy, out_pdf=out_pdf, out_png=out_png)
