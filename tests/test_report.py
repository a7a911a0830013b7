"""Tests of netquant.report on a synthetic points table: Table 1 selection, paper numbers, figures, tables."""

import math

import jinja2
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from docutils.core import publish_parts
from matplotlib.colors import to_hex

from netquant import report

K_GRID = (2, 4, 8, 16, 32, 64, 128)
# (method, importance, rate_name, extra effective bits, Huffman length / fixed length)
METHODS = (
    ("kmeans", "none", "k", 0.0, 0.85),
    ("hwkmeans", "hessian-50000", "k", 0.3, 0.80),
    ("hwkmeans", "hessian-1000", "k", 0.25, 0.80),
    ("hwkmeans", "adam", "k", 0.2, 0.80),
    ("uniform", "hessian-50000", "step", -0.4, 0.55),
    ("uniform", "none", "step", -0.5, 0.55),
    ("ecsq", "hessian-50000", "lam", -0.3, 0.50),
    ("dp-kmeans", "hessian-50000", "k", 0.35, 0.80),
    ("dp-ecsq", "hessian-50000", "lam", -0.2, 0.50),
)
TOP = {"lenet5": 99.2, "resnet32": 92.5}
KEPT = {"lenet5": 0.09, "resnet32": 0.2}
INDEX_BITS = {"lenet5": 4.9, "resnet32": 3.4}


def _point(network, variant, scope, method, importance, rate_name, k, extra, huffman_factor, finetuned):
    bits_fixed = math.log2(k)
    bits_huffman = bits_fixed * huffman_factor
    effective = bits_fixed + extra + (0.7 if finetuned else 0.0) - (0.2 if scope == "layer" else 0.0)
    accuracy = max(10.0, TOP[network] + 0.05 - 80.0 * math.exp(-1.6 * effective))
    if variant == "pruned":
        ratio = 32.0 / (KEPT[network] * (bits_huffman + INDEX_BITS[network]))
    else:
        ratio = 32.0 / bits_huffman
    rate_value = {"k": float(k), "step": 0.5 / k, "lam": 1e-3 / k}[rate_name]
    return dict(network=network, variant=variant, scope=scope, method=method, importance=importance,
                rate_name=rate_name, rate_value=rate_value, finetuned=finetuned, clusters=k,
                entropy_bits=bits_huffman - 0.05, bits_fixed=float(math.ceil(bits_fixed)), bits_huffman=bits_huffman,
                bits_ans=bits_huffman - 0.03, accuracy=round(accuracy, 2), top5=math.nan, ratio_file=ratio,
                ratio_eq1=ratio * 1.02, ratio_file_ans=ratio * 1.03,
                ratio_file_mask_ans=ratio * 1.1 if variant == "pruned" else math.nan,
                file_bytes=1000, path=f"results/{network}/{variant}/{method}-{importance}-{k}-{finetuned}.nqz")


def synthetic_points():
    rows = []
    for network in TOP:
        for variant in ("baseline", "pruned"):
            for method, importance, rate_name, extra, factor in METHODS:
                if variant == "pruned" and importance in ("hessian-1000", "adam"):
                    continue  # Figure 2 only: unpruned models
                scopes = ("all", "layer") if (variant, method) == ("pruned", "kmeans") else ("all",)
                for scope in scopes:
                    for k in K_GRID:
                        for finetuned in (False, True):
                            rows.append(_point(network, variant, scope, method, importance, rate_name, k, extra,
                                               factor, finetuned))
    return pd.DataFrame(rows)


def synthetic_models():
    return pd.DataFrame([
        dict(network="lenet5", variant="baseline", accuracy=99.21, top5=math.nan, parameters=431080,
             nonzeros=431080, ratio_file=math.nan),
        dict(network="lenet5", variant="pruned", accuracy=99.22, top5=math.nan, parameters=431080,
             nonzeros=38797, ratio_file=9.8),
        dict(network="resnet32", variant="baseline", accuracy=92.4, top5=math.nan, parameters=464154,
             nonzeros=464154, ratio_file=math.nan),
        dict(network="resnet32", variant="pruned", accuracy=92.45, top5=math.nan, parameters=464154,
             nonzeros=92831, ratio_file=4.4),
    ])


SKIPPED = {"alexnet": "imagenet_root is not set"}
FIG1 = ["kmeans/none", "hwkmeans/hessian-50000", "uniform/hessian-50000", "ecsq/hessian-50000"]
FIG2 = ["hwkmeans/hessian-50000", "hwkmeans/hessian-1000", "hwkmeans/adam"]
FIG3 = ["uniform/none", "uniform/hessian-50000"]


def _curve_points(accuracy_ratio, network="lenet5", method="uniform", importance="hessian-50000"):
    """Fine-tuned pruned points of one curve with the given (accuracy, ratio_file) pairs."""
    return pd.DataFrame([
        dict(network=network, variant="pruned", scope="all", method=method, importance=importance, rate_name="step",
             rate_value=0.01 * (i + 1), finetuned=True, clusters=10 + i, bits_huffman=2.0, accuracy=acc, top5=math.nan,
             ratio_file=ratio, ratio_file_ans=ratio + 1, ratio_file_mask_ans=ratio + 2,
             ratio_file_context=ratio + 3, path=f"p{i}", path_ans=f"p{i}-ans", path_mask_ans=f"p{i}-mask-ans",
             path_context=f"p{i}-context")
        for i, (acc, ratio) in enumerate(accuracy_ratio)
    ])


def _models(pruned_accuracy, network="lenet5"):
    return pd.DataFrame([
        dict(network=network, variant="baseline", accuracy=99.25, top5=math.nan, parameters=1000, nonzeros=1000,
             ratio_file=math.nan),
        dict(network=network, variant="pruned", accuracy=pruned_accuracy, top5=math.nan, parameters=1000,
             nonzeros=90, ratio_file=10.0),
    ])


def _cell(table, network, row):
    rows = table[(table["network"] == network) & (table["row"] == row)]
    assert len(rows) == 1
    return rows.iloc[0]


# ------------------------------------------------------------------------------------ selection rule
def test_table1_picks_largest_ratio_meeting_the_floor():
    # the 60x point misses the floor of 99.27; among the rest, 50x is the largest ratio
    points = _curve_points([(99.30, 30.0), (99.27, 50.0), (99.26, 60.0), (99.28, 40.0)])
    table = report.select_table1(points, _models(99.27))
    uniform = _cell(table, "lenet5", "uniform")
    assert uniform["status"] == "selected"
    assert (uniform["accuracy"], uniform["ratio"]) == (99.27, 50.0)
    assert uniform["floor"] == 99.27
    # the ANS and run-length rows: the same chosen network in its other files, with their ratios
    assert _cell(table, "lenet5", "uniform-ans")["ratio"] == 51.0
    assert _cell(table, "lenet5", "uniform-mask-ans")["ratio"] == 52.0
    assert uniform["path"] == "p1"
    assert _cell(table, "lenet5", "uniform-ans")["path"] == "p1-ans"
    assert _cell(table, "lenet5", "uniform-mask-ans")["path"] == "p1-mask-ans"
    assert (_cell(table, "lenet5", "uniform-context")[["ratio", "path"]] == [53.0, "p1-context"]).all()


def test_table1_tolerance_lowers_the_floor():
    points = _curve_points([(99.30, 30.0), (98.99, 60.0), (98.98, 70.0)])
    strict = _cell(report.select_table1(points, _models(99.04)), "lenet5", "uniform")
    assert strict["ratio"] == 30.0
    tolerant = _cell(report.select_table1(points, _models(99.04), tolerance=0.05), "lenet5", "uniform")
    # 99.04 - 0.05 is 98.99000000000001 in floating point; 98.99 must still qualify
    assert 99.04 - 0.05 > 98.99
    assert (tolerant["accuracy"], tolerant["ratio"]) == (98.99, 60.0)
    assert tolerant["floor"] == pytest.approx(98.99)


def test_table1_only_uses_pruned_all_layer_finetuned_points():
    good = _curve_points([(99.30, 30.0)])
    tempting = pd.concat([
        _curve_points([(99.9, 90.0)]).assign(finetuned=False),
        _curve_points([(99.9, 91.0)]).assign(scope="layer"),
        _curve_points([(99.9, 92.0)]).assign(variant="baseline"),
        _curve_points([(99.9, 93.0)], importance="none"),
    ])
    table = report.select_table1(pd.concat([good, tempting], ignore_index=True), _models(99.27))
    assert _cell(table, "lenet5", "uniform")["ratio"] == 30.0


def test_table1_fallback_is_the_most_accurate_point_and_flagged():
    points = _curve_points([(99.10, 60.0), (99.20, 40.0), (99.20, 45.0), (98.0, 80.0)])
    uniform = _cell(report.select_table1(points, _models(99.27)), "lenet5", "uniform")
    assert uniform["status"] == "fallback"
    assert (uniform["accuracy"], uniform["ratio"]) == (99.20, 45.0)
    assert "floor 99.27%" in uniform["note"]


def test_table1_rows_paper_numbers_and_differences():
    table = report.select_table1(synthetic_points(), synthetic_models(), skipped=SKIPPED)
    assert list(table.columns) == list(report.TABLE1_COLUMNS)
    assert list(dict.fromkeys(table["network"])) == ["lenet5", "resnet32", "alexnet"]
    assert list(table[table["network"] == "lenet5"]["row"]) == [r.key for r in report.TABLE1_ROWS]
    uniform = _cell(table, "lenet5", "uniform")
    assert (uniform["paper_accuracy"], uniform["paper_ratio"]) == (99.28, 51.25)
    assert uniform["diff_ratio"] == pytest.approx(uniform["ratio"] - 51.25)
    assert uniform["diff_accuracy"] == pytest.approx(uniform["accuracy"] - 99.28)
    assert uniform["status"] == "selected" and uniform["accuracy"] >= 99.22
    pruned = _cell(table, "lenet5", "pruned")
    assert (pruned["status"], pruned["accuracy"], pruned["ratio"]) == ("model", 99.22, 9.8)
    assert pruned["diff_ratio"] == pytest.approx(9.8 - 10.13)
    original = _cell(table, "resnet32", "original")
    assert original["accuracy"] == 92.4 and math.isnan(original["ratio"]) and original["paper_accuracy"] == 92.58
    assert _cell(table, "lenet5", "deep-compression")["status"] == "paper only"
    assert math.isnan(_cell(table, "lenet5", "dp-kmeans")["paper_ratio"])  # beyond the paper
    # no pruned Adam points in the synthetic sweep: said, not invented
    adam = _cell(table, "lenet5", "adam-kmeans")
    assert adam["status"] == "no points" and math.isnan(adam["accuracy"])


def test_skipped_network_rows_say_why():
    table = report.select_table1(synthetic_points(), synthetic_models(), skipped=SKIPPED)
    alexnet = table[table["network"] == "alexnet"]
    assert set(alexnet["status"]) == {"not run"}
    assert set(alexnet["note"]) == {"not run: imagenet_root is not set"}
    assert alexnet["accuracy"].isna().all()
    assert _cell(table, "alexnet", "uniform")["paper_ratio"] == 40.65


def test_alexnet_rows_fall_back_to_adam_importance():
    points = _curve_points([(56.2, 40.0)], network="alexnet", importance="adam")
    table = report.select_table1(points, _models(56.0, network="alexnet"))
    uniform = _cell(table, "alexnet", "uniform")
    assert (uniform["importance"], uniform["ratio"], uniform["paper_ratio"]) == ("adam", 40.0, 40.65)


# -------------------------------------------------------------------------------------- paper numbers
def test_paper_numbers_cover_table1_and_hold_its_headline():
    """paper_numbers.yaml is the one copy of the paper's Table 1: every row of ours that the paper has is in it,
    values are sane, and its headline holds in it (uniform quantization has each network's largest ratio)."""
    paper = report.load_paper_numbers()
    assert paper["source"] == "Choi et al. ICLR 2017, Table 1"
    keys = {row.key for row in report.TABLE1_ROWS if row.in_paper}
    for network, sections in paper["networks"].items():
        table1 = sections["table1"]
        assert set(table1) <= keys, network
        assert {"original", "pruned", "kmeans", "uniform"} <= set(table1)
        for row, cell in table1.items():
            assert 0 < cell["accuracy"] < 100 and cell.get("ratio", 2) > 1 and "Table 1" in cell["source"]
        quantized = {row: cell["ratio"] for row, cell in table1.items()
                     if row not in ("original", "pruned", "deep-compression")}
        assert max(quantized, key=quantized.get) == "uniform", network
    assert math.isnan(report.paper_cell(paper, "alexnet", "ecsq")["ratio"])


# -------------------------------------------------------------------------------------------- figures
def _check_files(tmp_path, name):
    pdf, png = tmp_path / f"{name}.pdf", tmp_path / f"{name}.png"
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert not list(tmp_path.glob(".*.tmp"))
    return pdf, png


def _curve_lines(ax):
    """The data curves of an axes (not reference lines), each checked to be sorted by x."""
    lines = [line for line in ax.lines if line.get_marker() not in (None, "None", "")]
    for line in lines:
        x = np.asarray(line.get_xdata(), dtype=float)
        assert np.all(np.diff(x) >= 0), line.get_label()
    return lines


def test_figure1_panels_curves_and_files(tmp_path):
    fig = report.plot_figure1(synthetic_points(), "resnet32", tmp_path / "fig1.pdf", tmp_path / "fig1.png",
                              curves=FIG1, reference_accuracy=92.4)
    _check_files(tmp_path, "fig1")
    axes = fig.get_axes()
    assert len(axes) == 4
    assert [ax.get_title(loc="left")[:3] for ax in axes] == ["(a)", "(b)", "(c)", "(d)"]
    for ax in axes:
        labels = [line.get_label() for line in _curve_lines(ax)]
        assert labels == ["k-means", "Hessian-weighted k-means", "Uniform quantization", "Iterative ECSQ"]
        assert len(ax.lines) == 5  # four curves and the unquantized reference
        assert all(len(line.get_xdata()) == len(K_GRID) for line in _curve_lines(ax))
    # (a) is before fine-tuning on fixed-length codes, (d) after fine-tuning on Huffman codes
    points = synthetic_points()
    kmeans_a = _curve_lines(axes[0])[0]
    expected = points[(points.network == "resnet32") & (points.variant == "baseline") & (points.method == "kmeans")
                      & ~points.finetuned].sort_values("bits_fixed")
    np.testing.assert_allclose(kmeans_a.get_xdata(), expected["bits_fixed"])
    np.testing.assert_allclose(kmeans_a.get_ydata(), expected["accuracy"])
    ecsq_d = _curve_lines(axes[3])[3]
    expected = points[(points.network == "resnet32") & (points.variant == "baseline") & (points.method == "ecsq")
                      & points.finetuned].sort_values("bits_huffman")
    np.testing.assert_allclose(ecsq_d.get_xdata(), expected["bits_huffman"])
    assert to_hex(ecsq_d.get_color()) == "#000000" and ecsq_d.get_marker() == "D"
    assert "(bits" in axes[2].get_xlabel() and "(%)" in axes[0].get_ylabel()
    assert len(fig.legends) == 1


def test_figure1_missing_method_is_absent(tmp_path):
    points = synthetic_points()
    points = points[points["method"] != "ecsq"]
    fig = report.plot_figure1(points, "lenet5", tmp_path / "f.pdf", tmp_path / "f.png", curves=FIG1)
    for ax in fig.get_axes():
        labels = [line.get_label() for line in ax.lines]
        assert labels == ["k-means", "Hessian-weighted k-means", "Uniform quantization"]


def test_figure2_importance_curves(tmp_path):
    fig = report.plot_figure2(synthetic_points(), {"lenet5": FIG2, "resnet32": FIG2}, tmp_path / "fig2.pdf",
                              tmp_path / "fig2.png")
    _check_files(tmp_path, "fig2")
    axes = fig.get_axes()
    assert [ax.get_title(loc="left") for ax in axes] == ["(a) LeNet-5 / MNIST", "(b) ResNet-32 / CIFAR-10"]
    for ax in axes:
        assert [line.get_label() for line in _curve_lines(ax)] == [
            "Hessian, 50,000 samples", "Hessian, 1,000 samples", "Alt-Hessian: Adam second moments"]


def test_a_figure_whose_curve_lists_are_empty_is_drawn_without_curves(tmp_path):
    # a run of some curves only (e.g. figures.fig2.lenet5: []) has no points for the figure at all
    fig = report.plot_figure2(report.read_points([]), {"lenet5": []}, tmp_path / "fig2.pdf", tmp_path / "fig2.png")
    _check_files(tmp_path, "fig2")
    assert _curve_lines(fig.get_axes()[0]) == []


def test_figure3_plain_vs_weighted_mean(tmp_path):
    fig = report.plot_figure3(synthetic_points(), "resnet32", tmp_path / "fig3.pdf", tmp_path / "fig3.png",
                              curves=FIG3)
    _check_files(tmp_path, "fig3")
    axes = fig.get_axes()
    assert len(axes) == 2
    for ax in axes:
        weighted, plain = _curve_lines(ax)
        assert (weighted.get_label(), plain.get_label()) == ("Hessian-weighted mean", "Plain mean")
        assert weighted.get_linestyle() == "-" and plain.get_linestyle() == "--"


def test_layerwise_figure(tmp_path):
    fig = report.plot_layerwise(synthetic_points(), "lenet5", tmp_path / "lw.pdf", tmp_path / "lw.png",
                                curves=["kmeans/none"], reference_accuracy=99.22)
    _check_files(tmp_path, "lw")
    axes = fig.get_axes()
    assert len(axes) == 2
    assert [line.get_label() for line in _curve_lines(axes[1])] == [
        "k-means, all layers together", "k-means, layer by layer"]
    assert "Compression ratio" in axes[1].get_xlabel()


def test_figure_without_points_is_still_written(tmp_path):
    fig = report.plot_figure3(synthetic_points(), "alexnet", tmp_path / "e.pdf", tmp_path / "e.png", curves=FIG3)
    assert all(not ax.lines and ax.texts[0].get_text() == "no points" for ax in fig.get_axes())
    assert (tmp_path / "e.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------- DP gap table
def test_dp_gap_matches_rates():
    table = report.dp_gap_table(synthetic_points())
    assert set(zip(table["heuristic"], table["optimum"])) == {("hwkmeans", "dp-kmeans"), ("ecsq", "dp-ecsq")}
    # 2 networks x 2 variants x 2 fine-tuning states x 7 rates, for each of the two pairs
    assert len(table) == 2 * 2 * 2 * 2 * len(K_GRID)
    row = table[(table["network"] == "lenet5") & (table["heuristic"] == "hwkmeans") & (table["rate_value"] == 8.0)
                & (table["variant"] == "baseline") & ~table["finetuned"]].iloc[0]
    points = synthetic_points()
    at = (points.network == "lenet5") & (points.variant == "baseline") & ~points.finetuned & (points.clusters == 8)
    heuristic = points[at & (points.method == "hwkmeans") & (points.importance == "hessian-50000")].iloc[0]
    optimum = points[at & (points.method == "dp-kmeans")].iloc[0]
    assert row["accuracy_gap"] == pytest.approx(optimum["accuracy"] - heuristic["accuracy"])
    assert row["bits_gap"] == pytest.approx(optimum["bits_huffman"] - heuristic["bits_huffman"])


# --------------------------------------------------------------------------------------- table writing
def test_write_table_csv_markdown_latex(tmp_path):
    table = report.select_table1(synthetic_points(), synthetic_models(), skipped=SKIPPED)
    paths = report.write_table(table, tmp_path / "table1", columns=report.TABLE1_DISPLAY_COLUMNS)
    assert [p.name for p in paths] == ["table1.csv", "table1.md", "table1.tex"]
    back = pd.read_csv(paths[0])
    assert list(back.columns) == list(report.TABLE1_COLUMNS) and len(back) == len(table)
    np.testing.assert_allclose(back["ratio"], table["ratio"].astype(float))
    markdown = paths[1].read_text().splitlines()
    assert len(markdown) == 2 + len(table)
    assert markdown[0].startswith("| Network | Method |") and markdown[1].startswith("|---|---|")
    lenet_uniform = _cell(table, "lenet5", "uniform")
    assert any(line.startswith("| LeNet-5 / MNIST | Uniform quantization |") and f"{lenet_uniform['ratio']:.2f}" in line
               and "| 51.25 |" in line for line in markdown)
    latex = paths[2].read_text()
    assert latex.startswith(r"\begin{tabular}{llllrrrrrrrrrl}")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert latex.count(rule) == 1
    assert latex.count(r" \\") == 1 + len(table)
    assert r"Accuracy (\%)" in latex and "Optimal weighted k-means (DP)" in latex


def test_latex_escapes_special_characters():
    df = pd.DataFrame({"name": ["a_b & 50%"], "value": [1.5]})
    assert r"a\_b \& 50\%" in report.latex_table(df)


# ------------------------------------------------------------------------------------- paper vs ours
def test_paper_vs_ours_markdown():
    table = report.select_table1(synthetic_points(), synthetic_models(), skipped=SKIPPED)
    page = report.paper_vs_ours_markdown(table, synthetic_models(), SKIPPED, "cpu")
    assert page.startswith("# Paper vs ours")
    assert "config scale `cpu`" in page
    assert "51.25x" in page and "22.17x" in page and "40.65x" in page
    assert "## Table 1: LeNet-5 / MNIST" in page and "## Table 1: AlexNet / ImageNet" in page
    assert "Not run: imagenet_root is not set." in page
    assert "- AlexNet / ImageNet: not run: imagenet_root is not set." in page
    assert "Accuracy floor `pruned`: 99.22% (pruned model 99.22% minus a tolerance of 0.00 points)" in page
    assert "largest compression ratio" in page
    uniform = _cell(table, "lenet5", "uniform")
    expected = (f"| Uniform quantization | pruned (sweep) | 99.28 | {uniform['accuracy']:.2f} | - | "
                f"{uniform['diff_accuracy']:+.2f} | 51.25x |")
    assert expected in page
    assert "38,797 (9.00%)" in page
    # the page is the same from the CSV round trip of the table
    assert report.paper_vs_ours_markdown(pd.read_csv(pd.io.common.StringIO(table.to_csv(index=False))),
                                         synthetic_models(), SKIPPED, "cpu") == page


# ------------------------------------------------------------------------------------------- captions
CAPTIONS = ("workflow", "fig1", "fig2", "fig3", "table1", "paper_vs_ours", "layerwise", "dp_gap")


@pytest.mark.parametrize("name", CAPTIONS)
def test_report_captions_render(repo, name):
    class Snakemake:
        config = {"scale": "smoke", "table1": {"tolerance": 0.0}}
        wildcards = {}

    text = (report_dir(repo) / f"{name}.rst").read_text()
    rst = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(text).render(snakemake=Snakemake)
    assert "smoke" in rst
    # docutils raises on any warning (halt_level 2), e.g. a malformed table or title
    html = publish_parts(rst, writer="html", settings_overrides={"halt_level": 2, "report_level": 2})["body"]
    assert len(html) > 200


def report_dir(repo):
    from pathlib import Path

    return Path(repo) / "workflow" / "report"


def _search_rows(network="lenet5", method="uniform", importance="hessian-50000"):
    """Probes of a search at two floors: per floor two probes of two seeds, the second one selected."""
    rows = []
    for floor_name, floor in (("pruned", 99.30), ("paper", 99.28)):
        for probe, (accuracies, ratios, selected) in enumerate((([99.40, 99.36], [40.0, 40.1], False),
                                                                 ([99.31, 99.29], [55.0, 54.8], True))):
            for seed, (accuracy, ratio) in enumerate(zip(accuracies, ratios), start=1):
                rows.append(dict(network=network, variant="pruned", scope="all", method=method,
                                 importance=importance, rate_name="step", rate_value=0.01 * (probe + 1),
                                 finetuned=True, clusters=20, bits_huffman=3.0, accuracy=accuracy, top5=math.nan,
                                 ratio_file=ratio, ratio_file_ans=ratio + 1, ratio_file_mask_ans=ratio + 2,
                                 path=f"{floor_name}-{probe}-{seed}", path_ans=f"{floor_name}-{probe}-{seed}-ans",
                                 path_mask_ans="", seed=seed, floor_name=floor_name, floor=floor,
                                 probe_accuracy=sum(accuracies) / 2, probe_spread=abs(accuracies[0] - accuracies[1]) / 2,
                                 probe_ratio=min(ratios), meets_floor=sum(accuracies) / 2 >= floor,
                                 selected=selected))
    return pd.DataFrame(rows)


def test_table1_rows_from_searches_show_each_floor_mean_spread_and_the_smallest_ratio():
    table = report.select_table1(_curve_points([(99.30, 30.0)]), _models(99.30), search=_search_rows())
    uniform = table[(table["network"] == "lenet5") & (table["row"] == "uniform")]
    assert list(uniform["floor_name"]) == ["paper", "pruned"]
    for _, cell in uniform.iterrows():
        assert cell["accuracy"] == pytest.approx(99.30) and cell["accuracy_spread"] == pytest.approx(0.01)
        assert cell["ratio"] == 54.8 and cell["seeds"] == 2 and cell["path"] == f"{cell['floor_name']}-1-2"
        assert cell["file_accuracy"] == 99.29  # the named file's own accuracy
    assert set(uniform["status"]) == {"selected"}
    ans = table[(table["network"] == "lenet5") & (table["row"] == "uniform-ans")]
    assert list(ans["ratio"]) == [55.8, 55.8] and list(ans["path"]) == ["paper-1-2-ans", "pruned-1-2-ans"]
    # a search made before the context-coded files existed: that row says so instead of failing
    assert set(table[table["row"] == "uniform-context"]["status"]) == {"no points"}
    assert len(table[(table["network"] == "lenet5") & (table["row"] == "pruned")]) == 1


# ------------------------------------------------------------------------------------ findings
FIGURES = {"fig1": {"resnet32": ["kmeans/none", "hwkmeans/hessian-50000", "uniform/hessian-50000",
                                 "ecsq/hessian-50000"]},
           "fig2": {"resnet32": ["hwkmeans/hessian-50000", "hwkmeans/hessian-1000", "hwkmeans/adam"]},
           "fig3": {"resnet32": ["uniform/none", "uniform/hessian-50000"]}}


def _figure_points(points):
    """Baseline points: (method, importance, bits_fixed, bits_huffman, accuracy), fine-tuned or not alike."""
    return pd.DataFrame([dict(network="resnet32", variant="baseline", scope="all", method=m, importance=i,
                              finetuned=ft, bits_fixed=bf, bits_huffman=bh, accuracy=a)
                         for m, i, bf, bh, a in points for ft in (False, True)])


def test_findings_compare_curves_at_the_same_rate_budget():
    points = _figure_points([
        ("kmeans", "none", 2, 1.5, 85.0), ("kmeans", "none", 3, 2.5, 90.0),
        ("hwkmeans", "hessian-50000", 2, 1.5, 86.0), ("hwkmeans", "hessian-50000", 3, 2.5, 89.0),
        ("uniform", "hessian-50000", 5, 1.4, 88.0), ("uniform", "hessian-50000", 6, 2.4, 91.0),
        ("ecsq", "hessian-50000", 5, 1.3, 87.0), ("ecsq", "hessian-50000", 6, 2.6, 91.5),
        ("hwkmeans", "hessian-1000", 2, 1.5, 85.8), ("hwkmeans", "adam", 2, 1.5, 84.0),
        ("uniform", "none", 5, 1.4, 88.0),
    ])
    table = report.findings_table(points, FIGURES)

    def verdict(finding, panel, budget):
        rows = table[table["finding"].str.startswith(finding) & (table["panel"] == panel)
                     & (table["budget_bits"] == budget)]
        holds = rows["holds"].iloc[0]
        return (None if holds is None else bool(holds)), rows["best_curve"].iloc[0], dict(zip(rows["curve"],
                                                                                              rows["accuracy"]))

    # 2 fixed-length bits: only the k-means variants fit, hwkmeans is best; uniform and ECSQ cannot reach it
    holds, best, acc = verdict("fixed-length", "fixed-length", 2.0)
    assert best == "hwkmeans/hessian-50000" and holds is True and math.isnan(acc["uniform/hessian-50000"])
    # 3 bits: k-means (90) beats hwkmeans (89): the finding does not hold there
    holds, best, _ = verdict("fixed-length", "fixed-length + fine-tuning", 3.0)
    assert best == "kmeans/none" and holds is False
    # Huffman 1.5 bits: uniform 88 is best; 2.5 bits: ECSQ 91.5 is best, the envelope keeps the best point
    holds, best, acc = verdict("Huffman", "Huffman", 1.5)
    assert holds and best == "uniform/hessian-50000" and acc["kmeans/none"] == 85.0
    holds, best, acc = verdict("Huffman", "Huffman + fine-tuning", 3.0)
    assert holds and best == "ecsq/hessian-50000" and acc["ecsq/hessian-50000"] == 91.5
    # Figure 2: 1,000 samples within 0.5 points at 1.5 bits, Adam 2 points below: does not hold
    assert verdict("Hessian estimates", "Huffman + fine-tuning", 1.5)[0] is False
    # Figure 3: equal accuracies count for the weighted mean; below every plain-mean point, it cannot say
    assert verdict("uniform: weighted mean", "Huffman", 1.5)[0] is True
    assert table[table["finding"].str.startswith("uniform") & (table["budget_bits"] == 1.0)].empty
    text = report.findings_markdown(table)
    assert "| Huffman | 1.5 | 85.00 | 86.00 | 88.00 | 87.00 | uniform/hessian-50000 | yes |" in text


def test_findings_need_the_figures_curves():
    assert report.findings_table(_figure_points([("kmeans", "none", 2, 1.5, 85.0)]), {}).empty


@settings(max_examples=60, deadline=None)
@given(reference=st.floats(50, 100), accuracies=st.lists(st.floats(0, 100), min_size=1, max_size=20))
def test_accuracy_axis_ticks_are_real_accuracies_inside_the_axis_in_order(reference, accuracies):
    scale = report.AccuracyScale(reference)
    values = np.array(accuracies)
    assert np.allclose(scale.inverse(scale.forward(values)), values, atol=1e-6)
    limits = scale.limits(accuracies)
    ticks = scale.ticks(limits)
    assert ticks == sorted(ticks)
    assert all(max(limits[0], 0) - 1e-9 <= t <= min(limits[1], 100) + 1e-9 for t in ticks)
    assert np.all(np.diff(scale.forward(np.array(ticks))) > 0)
