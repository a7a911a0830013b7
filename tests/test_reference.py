"""Reference folders: a run's results kept with their files, and runs of different networks in one folder."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from netquant import compress, container, models, readme, reference, report

FIGURES = {"fig2": {}}  # no figure-2 curves: the shared figure is not drawn here


def _finished_run(folder: Path, accuracies: dict[str, float], *, ratio_file: bool = True, method: str = "uniform",
                  pruned_accuracy: float | None = None) -> Path:
    """The tables, one Table 1 file per network and the benchmark logs of a finished run of ``accuracies``'s
    networks (each network's ``method`` row at its accuracy; with ``pruned_accuracy``, a pruned-model row)."""
    results = folder / "results"
    tables = results / "tables"
    tables.mkdir(parents=True)
    torch.manual_seed(0)
    rows, points, model_rows = [], [], []
    for net, accuracy in accuracies.items():
        path = results / net / "pruned" / "search" / f"{method}.nqz"
        path.parent.mkdir(parents=True)
        m = compress.save(compress.quantize(models.build("lenet5"), method=method, bits=2), path)
        if pruned_accuracy is not None:
            rows.append({**{c: math.nan for c in report.TABLE1_COLUMNS}, "network": net, "row": "pruned",
                         "label": "Pruned model", "status": "model", "accuracy": pruned_accuracy, "ratio": 10.0})
        rows.append({**{c: math.nan for c in report.TABLE1_COLUMNS}, "network": net, "row": method,
                     "label": {r.key: r.label for r in report.TABLE1_ROWS}[method], "floor_name": "paper", "status": "selected", "method": method,
                     "accuracy": accuracy, "ratio": m["ratio_file"] * (1 if ratio_file else 2),
                     "path": str(path)})
        points.append({"network": net, "variant": "pruned", "scope": "all", "method": method, "importance": "none",
                       "accuracy": accuracy})
        model_rows += [{"network": net, "variant": variant, "accuracy": accuracy, "top5": math.nan,
                        "parameters": 431080, "nonzeros": 431080 // (1 if variant == "baseline" else 10),
                        "ratio_file": math.nan, "file_bytes": math.nan} for variant in ("baseline", "pruned")]
    pd.DataFrame(rows).to_csv(tables / "table1.csv", index=False)
    pd.DataFrame(points).to_csv(tables / "points.csv", index=False)
    pd.DataFrame(model_rows).to_csv(tables / "models.csv", index=False)
    pd.DataFrame(columns=report.DP_GAP_DISPLAY_COLUMNS).to_csv(tables / "dp_gap.csv", index=False)
    (tables / "paper_vs_ours.md").write_text("# Paper vs ours\n")
    bench = folder / "logs" / "benchmarks" / "sweep"
    bench.mkdir(parents=True)
    for net in accuracies:
        (bench / f"{net}-uniform.tsv").write_text("s\tmax_rss\n12.5\t300\n")
    snakemake_logs = folder / ".snakemake" / "log"
    snakemake_logs.mkdir(parents=True)
    # stopped after 10 minutes (killed: no closing line), unlocked, resumed, resumed again to the end
    (snakemake_logs / "T0.snakemake.log").write_text(
        "Building DAG of jobs...\n[Sun Dec  6 02:55:23 2026]\nrule sweep:\n[Sun Dec  6 03:05:23 2026]\nFinished\n")
    (snakemake_logs / "T0u.snakemake.log").write_text("Unlocked working directory.\n")
    for start, elapsed in (("T1", "0:49:30.5"), ("T2", "1 day, 0:01:00.0")):
        (snakemake_logs / f"{start}.snakemake.log").write_text(f"...\n39 of 39 steps done\nElapsed time: {elapsed}\n")
    return folder


def test_a_run_is_kept_with_its_files_and_its_run_page(tmp_path):
    run = _finished_run(tmp_path / "run", {"lenet5": 99.3, "resnet32": 91.7})
    folder_readme = reference.collect(run / "results", tmp_path / "ref", command="snakemake --cores 2",
                                      logs=run / "logs", run_folder=run, note="resumed once")
    table1 = pd.read_csv(tmp_path / "ref/tables/table1.csv")
    assert list(table1["path"]) == ["files/lenet5/uniform-paper.nqz", "files/resnet32/uniform-paper.nqz"]
    for row in table1.itertuples():
        assert container.metrics(tmp_path / "ref" / row.path)["ratio_file"] == pytest.approx(row.ratio)
    for net in ("lenet5", "resnet32"):
        page = (tmp_path / f"ref/{net}/RUN.md").read_text()
        assert "snakemake --cores 2" in page and "| sweep | 2 | 25 | 12 |" in page
        assert ("- wall time: 1500.5 min, summed over 3 Snakemake invocations (Snakemake's logs; 1 stopped before "
                "the end, each counted to its last logged event)") in page
        assert "- note: resumed once" in page
    assert "lenet5/RUN.md" in folder_readme.read_text() and "machine:" in folder_readme.read_text()
    with pytest.raises(FileExistsError, match="--add"):
        reference.collect(run / "results", tmp_path / "ref", command="again", logs=run / "logs", run_folder=run)


def test_adding_a_run_replaces_its_networks_and_keeps_the_others(tmp_path):
    first = _finished_run(tmp_path / "first", {"lenet5": 99.3, "resnet32": 91.7})
    second = _finished_run(tmp_path / "second", {"lenet5": 99.4})
    ref = tmp_path / "ref"
    reference.collect(first / "results", ref, command="first run", logs=first / "logs", run_folder=first)
    resnet_file = (ref / "files/resnet32/uniform-paper.nqz").read_bytes()
    reference.collect(second / "results", ref, command="second run", logs=second / "logs", run_folder=second,
                      add=True, figures=FIGURES, scale="cpu")
    table1 = pd.read_csv(ref / "tables/table1.csv").set_index("network")
    assert table1.loc["lenet5", "accuracy"] == 99.4 and table1.loc["resnet32", "accuracy"] == 91.7
    points = pd.read_csv(ref / "tables/points.csv").set_index("network")
    assert points.loc["lenet5", "accuracy"] == 99.4 and points.loc["resnet32", "accuracy"] == 91.7
    assert list(pd.read_csv(ref / "tables/models.csv")["network"]) == ["lenet5"] * 2 + ["resnet32"] * 2
    assert "second run" in (ref / "lenet5/RUN.md").read_text()
    assert "first run" in (ref / "resnet32/RUN.md").read_text()
    assert (ref / "files/resnet32/uniform-paper.nqz").read_bytes() == resnet_file
    assert (ref / "tables/findings.md").exists() and (ref / "tables/dp_gap.md").exists()
    assert not (tmp_path / "ref.partial").exists()


def test_adding_rows_keeps_the_networks_other_rows_and_checks_the_pruned_model(tmp_path):
    first = _finished_run(tmp_path / "first", {"lenet5": 99.3, "resnet32": 91.7}, pruned_accuracy=99.42)
    more = _finished_run(tmp_path / "more", {"lenet5": 99.35}, method="uniform-zero", pruned_accuracy=99.42)
    other_model = _finished_run(tmp_path / "other", {"lenet5": 99.35}, method="uniform-zero", pruned_accuracy=99.1)
    table = pd.read_csv(more / "results/tables/table1.csv")  # the rows of curves it did not compute
    table = pd.concat([table, table.iloc[[-1]].assign(row="uniform", status="no points", path=math.nan)])
    table.to_csv(more / "results/tables/table1.csv", index=False)
    ref = tmp_path / "ref"
    reference.collect(first / "results", ref, command="first run", logs=first / "logs", run_folder=first)
    before = {p: p.read_bytes() for p in ref.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="pruned model is not the reference folder's"):
        reference.add_rows(other_model / "results", ref, command="x", logs=other_model / "logs",
                           run_folder=other_model, figures=FIGURES)
    assert {p: p.read_bytes() for p in ref.rglob("*") if p.is_file()} == before
    reference.add_rows(more / "results", ref, command="more rows", logs=more / "logs", run_folder=more,
                       figures=FIGURES, scale="cpu")
    table1 = pd.read_csv(ref / "tables/table1.csv")
    assert list(zip(table1["network"], table1["row"])) == [
        ("lenet5", "pruned"), ("lenet5", "uniform"), ("lenet5", "uniform-zero"), ("resnet32", "pruned"),
        ("resnet32", "uniform")]
    assert table1.loc[table1["row"] == "uniform", "accuracy"].tolist() == [99.3, 91.7]
    added = table1[table1["row"] == "uniform-zero"].iloc[0]
    assert added["path"] == "files/lenet5/uniform-zero-paper.nqz" and added["accuracy"] == 99.35
    assert container.metrics(ref / added["path"])["ratio_file"] == pytest.approx(added["ratio"])
    assert (ref / "files/lenet5/uniform-paper.nqz").read_bytes() == before[ref / "files/lenet5/uniform-paper.nqz"]
    points = pd.read_csv(ref / "tables/points.csv")
    assert sorted(points.loc[points["network"] == "lenet5", "method"]) == ["uniform", "uniform-zero"]
    page = (ref / "lenet5/RUN.md").read_text()
    assert "first run" in page and "# The run behind the rows added later: Uniform quantization, zero bin pruned" in page and "more rows" in page
    assert "more rows" not in (ref / "resnet32/RUN.md").read_text()
    assert not (tmp_path / "ref.partial").exists()


def test_a_failed_collect_leaves_the_reference_folder_as_it_was(tmp_path):
    first = _finished_run(tmp_path / "first", {"lenet5": 99.3, "resnet32": 91.7})
    broken = _finished_run(tmp_path / "broken", {"lenet5": 99.4}, ratio_file=False)  # tables and files disagree
    ref = tmp_path / "ref"
    reference.collect(first / "results", ref, command="first run", logs=first / "logs", run_folder=first)
    before = {p: p.read_bytes() for p in ref.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="do not belong together"):
        reference.collect(broken / "results", ref, command="broken", logs=broken / "logs", run_folder=broken,
                          add=True, figures=FIGURES, scale="cpu")
    assert {p: p.read_bytes() for p in ref.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "ref.partial").exists()
    with pytest.raises(FileNotFoundError, match="without --add"):
        reference.collect(first / "results", tmp_path / "none", command="x", logs=first / "logs", add=True,
                          figures=FIGURES)


def test_readme_blocks_are_generated_from_their_reference_folders(tmp_path):
    for name, accuracy in (("ref", 99.3), ("rerun", 99.1)):
        run = _finished_run(tmp_path / f"run-{name}", {"lenet5": accuracy})
        reference.collect(run / "results", tmp_path / name, command=name, logs=run / "logs", run_folder=run)
    page = tmp_path / "README.md"
    page.write_text("# x\n<!-- reference: table1 lenet5 ref -->\nstale\n<!-- end reference -->\n"
                      "<!-- reference: rerun lenet5 ref rerun -->\n<!-- end reference -->\n"
                      "<!-- reference: coding lenet5 ref -->\n<!-- end reference -->\ntail\n")
    text = readme.refreshed_readme(page)
    assert "stale" not in text and text.endswith("tail\n")
    assert "| Uniform quantization | paper | 99.30% |" in text
    assert "| Uniform quantization | paper | 99.30% / " in text and "| -0.20 points / +0.0% |" in text
    m = container.metrics(tmp_path / "ref/files/lenet5/uniform-paper.nqz")
    assert (f"| Uniform quantization | paper | huffman, {m['bits_per_weight']['in_file']:.3f} | "
            f"{m['label_entropy_bits']:.3f} | deep-compression, ") in text
    page.write_text("<!-- reference: figure lenet5 ref -->\n<!-- end reference -->\n")
    with pytest.raises(ValueError, match="expected 'table1 NETWORK FOLDER'"):
        readme.refreshed_readme(page)


def test_the_rerun_table_keeps_table1_order_and_the_rows_of_either_run(tmp_path):
    import pandas as pd

    columns = ["network", "row", "label", "floor_name", "status", "accuracy", "ratio"]
    runs = {"a": [("lenet5", "pruned", "Pruned model", None, "model", 99.4, 10.0),
                  ("lenet5", "uniform", "Uniform quantization", "paper", "selected", 99.3, 50.0),
                  ("lenet5", "kmeans", "k-means", "paper", "selected", 99.3, 40.0)],
            "b": [("lenet5", "pruned", "Pruned model", None, "model", 99.5, 10.0),
                  ("lenet5", "kmeans", "k-means", "paper", "selected", 99.3, 44.0),
                  ("lenet5", "ecsq", "Iterative ECSQ", "paper", "selected", 99.3, 55.0)]}
    for name, rows in runs.items():
        (tmp_path / name / "tables").mkdir(parents=True)
        pd.DataFrame(rows, columns=columns).to_csv(tmp_path / name / "tables/table1.csv", index=False)
    lines = readme.rerun_block(tmp_path / "a", tmp_path / "b", "lenet5").splitlines()[2:]
    assert [line.split(" | ")[0] for line in lines] == ["| Pruned model", "| Uniform quantization", "| k-means",
                                                         "| Iterative ECSQ"]
    assert lines[1].endswith("| 99.30% / 50.00x | - | - |") and lines[2].endswith("| +0.00 points / +10.0% |")
    assert "| - | 99.30% / 55.00x | - |" in lines[3]


def test_the_readme_tables_match_the_committed_reference_results():
    page = Path(__file__).resolve().parents[1] / "README.md"
    assert "<!-- reference: table1 lenet5 reference/cpu -->" in page.read_text()
    assert readme.refreshed_readme(page) == page.read_text(), \
        "README.md's reference tables are stale: run python -m netquant readme README.md"
