"""The workflow end to end on the smoke config, its dry runs, and the config schema."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, copy_workflow, snakemake
from netquant.io import read_json

CONFIGS = ["config", "paper", "smoke"]


@pytest.mark.parametrize("name", CONFIGS)
def test_dry_run_builds_the_dag(name, tmp_path):
    run = snakemake("-n", "--quiet", "rules", "--configfile", f"config/{name}.yaml", cwd=copy_workflow(tmp_path))
    assert "prune" in run.stdout


def test_lint_is_clean(tmp_path):
    run = snakemake("--lint", "--configfile", "config/smoke.yaml", cwd=copy_workflow(tmp_path), check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_snakefmt_is_clean():
    run = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "."], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def _validate(cfg):
    from snakemake.utils import validate

    validate(cfg, str(REPO / "workflow/schemas/config.schema.yaml"))


def _config(name="config"):
    return yaml.safe_load((REPO / f"config/{name}.yaml").read_text())


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_are_valid(name):
    _validate(_config(name))


@pytest.mark.parametrize("path, value, key", [
    (("lenet5", "train", "lr"), "fast", "lr"),
    (("lenet5", "train", "optimizer"), "rmsprop", "optimizer"),
    (("resnet32", "train", "epochs"), -3, "epochs"),
    (("lenet5", "prune", "sparsity"), 1.5, "sparsity"),
    (("threads",), 0, "threads"),
    (("lenet5", "train", "momentun"), 0.9, "momentun"),
])
def test_schema_rejects_bad_values_naming_the_key(path, value, key):
    from snakemake.exceptions import WorkflowError

    cfg = _config()
    node = cfg
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(WorkflowError) as err:
        _validate(cfg)
    assert key in str(err.value)


def test_every_config_key_is_documented():
    doc = (REPO / "config/README.md").read_text()

    def keys(node, prefix=""):
        for k, v in node.items():
            yield prefix + k
            if isinstance(v, dict):
                yield from keys(v, prefix + k + ".")

    missing = []
    for name in CONFIGS:
        for key in keys(_config(name)):
            leaf = key.split(".")[-1]
            if f"`{leaf}`" not in doc and f"`{key}`" not in doc:
                missing.append(f"{name}: {key}")
    assert not missing, f"undocumented config keys in config/README.md: {sorted(set(missing))}"


@pytest.mark.workflow
def test_smoke_workflow_end_to_end(tmp_path):
    work = copy_workflow(tmp_path)
    snakemake("--cores", "2", "--configfile", "config/smoke.yaml", cwd=work)
    for net in ("lenet5", "resnet32", "alexnet"):
        metrics = read_json(work / f"results/{net}/pruned/metrics.json")
        assert metrics["stage"] == "pruned" and 0 <= metrics["accuracy"] <= 100
        prune_cfg = yaml.safe_load((work / "config/smoke.yaml").read_text())[net]["prune"]
        removed = (metrics["prunable_sparsity"] if prune_cfg.get("counts", "prunable") == "prunable"
                   else 1 - metrics["nonzeros"] / metrics["parameters"])
        assert abs(removed - prune_cfg["sparsity"]) < 1e-3
        assert (work / f"results/{net}/pruned/epochs.csv").stat().st_size > 0
    assert not list(work.rglob("*.tmp"))
    # the synthetic classes are learnable: a working training loop lifts LeNet-5 far above chance (10%)
    assert read_json(work / "results/lenet5/baseline/metrics.json")["accuracy"] > 50

    import pandas as pd

    from netquant import container

    points = pd.read_csv(work / "results/tables/points.csv")
    assert set(points["network"]) == {"lenet5", "resnet32", "alexnet"}
    assert set(points["finetuned"]) == {True, False}
    for row in points.sample(5, random_state=0).itertuples():
        nqz = work / row.path
        assert nqz.stat().st_size == row.file_bytes  # the ratio is measured on the file itself
        assert abs(32 * row.n_params / (8 * row.file_bytes) - row.ratio_file) < 1e-9
        first = {"lenet5": "conv1.weight", "resnet32": "conv1.weight", "alexnet": "features.0.weight"}[row.network]
        assert first in container.read_state_dict(nqz)
    table1 = pd.read_csv(work / "results/tables/table1.csv")
    assert {"Original model", "Pruned model", "Uniform quantization"} <= set(table1["label"])
    for name in ["fig1-lenet5", "fig1-resnet32", "fig2", "fig3-resnet32", "layerwise-lenet5"]:
        for ext in ("pdf", "png"):
            assert (work / f"results/figures/{name}.{ext}").stat().st_size > 1000, name
    for name in ["table1.md", "table1.tex", "paper_vs_ours.md", "dp_gap.md", "models.csv", "findings.md"]:
        assert (work / "results/tables" / name).stat().st_size > 0, name

    _reference_rows_are_reproduced(work)
    _lenet_column_is_reproduced(work, tmp_path / "again")

    again = snakemake("-n", "--configfile", "config/smoke.yaml", cwd=work)
    assert "Nothing to be done" in again.stdout + again.stderr
    snakemake("--report", "report.html", "--configfile", "config/smoke.yaml", cwd=work)
    assert (work / "report.html").stat().st_size > 10_000


def _lenet_column_is_reproduced(work: Path, fresh: Path) -> None:
    """The LeNet-5 column of Table 1 run again from nothing, same seed, same machine: the same table, the
    same sweep and search points, the same files (bit for bit)."""
    import csv

    from smoke_subset import _timeless

    fresh.mkdir()
    again = copy_workflow(fresh)
    snakemake("--cores", "2", "results/tables/table1.csv", "--configfile", "config/smoke.yaml", "--config",
              'networks=["lenet5"]', cwd=again)

    def rows(path: Path) -> list[dict]:
        return [r for r in _timeless(list(csv.DictReader(path.open()))) if r.get("network", "lenet5") == "lenet5"]

    first, second = rows(work / "results/tables/table1.csv"), rows(again / "results/tables/table1.csv")
    assert first and first == second
    tables = sorted(p.relative_to(again) for p in (again / "results/lenet5/pruned").rglob("points.csv"))
    assert any("search" in str(t) for t in tables) and any("sweep" in str(t) for t in tables)
    for table in tables:
        assert rows(work / table) == rows(again / table), table
    files = sorted(p.relative_to(again) for p in (again / "results/lenet5/pruned").rglob("*.nqz"))
    assert files and all((work / f).read_bytes() == (again / f).read_bytes() for f in files)


def _reference_rows_are_reproduced(work: Path) -> None:
    """A reference folder of the run: every Table 1 row names its file there, and evaluating that file
    alone gives the row's accuracy and ratio."""
    import json

    import pandas as pd

    from netquant import reference

    readme = reference.collect(work / "results", work / "reference/smoke", command="snakemake --configfile "
                               "config/smoke.yaml", logs=work / "logs", run_folder=work)
    assert "machine:" in readme.read_text()
    assert "| sweep |" in (work / "reference/smoke/lenet5/RUN.md").read_text()
    table1 = pd.read_csv(work / "reference/smoke/tables/table1.csv")
    rows = table1[table1["path"].notna() & (table1["network"] != "alexnet")]
    assert {"pruned", "uniform", "uniform-ans", "uniform-mask-ans"} <= set(rows["row"])
    for row in rows[rows["row"].isin(["pruned", "hwkmeans", "uniform-ans"])].itertuples():
        dataset = "synthetic-mnist" if row.network == "lenet5" else "synthetic-cifar10"
        out = subprocess.run([sys.executable, "-m", "netquant", "evaluate", str(work / "reference/smoke" / row.path),
                              "--prepared", str(work / f"resources/data/{dataset}.pt"), "--json"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert abs(result["ratio"] - row.ratio) < 1e-9
        if row.row != "pruned":
            assert result["accuracy"] == row.file_accuracy
    # Adding the run to its own folder again draws every figure from the kept tables alone.
    figures = sorted((work / "reference/smoke/figures").glob("*.png"))
    for figure in figures:
        figure.unlink()
    smoke = yaml.safe_load((work / "config/smoke.yaml").read_text())
    reference.collect(work / "results", work / "reference/smoke", command="again", logs=work / "logs",
                      run_folder=work, add=True, figures=smoke["figures"], scale=smoke["scale"])
    assert figures and all(figure.stat().st_size > 1000 for figure in figures)
    assert pd.read_csv(work / "reference/smoke/tables/table1.csv").equals(table1)


def test_the_schema_uses_the_library_vocabulary():
    from netquant import vocabulary

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    defs = schema["$defs"]
    assert tuple(defs["network"]["properties"]["dataset"]["enum"]) == vocabulary.DATASETS
    assert tuple(schema["properties"]["networks"]["items"]["enum"]) == vocabulary.ARCHS
    assert tuple(schema["properties"]["importance"]["properties"]["estimator"]["enum"]) == vocabulary.ESTIMATORS
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())["importance"]["estimator"]
    assert default == vocabulary.DEFAULT_ESTIMATOR  # the default scale uses the library's default
    methods, importances = defs["curve"]["pattern"].strip("^$").split("/")
    assert methods == "(" + "|".join(vocabulary.METHODS) + ")"
    assert tuple(defs["rates"]["properties"]["methods"]["propertyNames"]["enum"]) == vocabulary.METHODS
    assert importances == "(" + vocabulary.IMPORTANCE_PATTERN + ")"
    assert set(schema["properties"]["figures"]["properties"]) == set(vocabulary.FIGURE_MODELS)
    coding = schema["properties"]["coding"]["properties"]
    assert set(coding["label_code"]["enum"]) == set(vocabulary.LABEL_CODES) - {"raw"}  # raw: unquantized files
    assert tuple(coding["index_code"]["enum"]) == vocabulary.INDEX_CODES


@pytest.mark.parametrize("override, message", [
    ({"quantize": {"rates": {"bits_min": 8, "bits_max": 1, "points": 8}}}, "bits_min <= bits_max"),
    ({"quantize": {"rates": {"bits_min": 1, "bits_max": 100, "points": 8}}}, "at most 24 bits"),
    ({"networks": []}, "'networks' is empty"),
    ({"figures": {"fig1": {"lenet5": ["hwkmeans/hessian-0"]}}}, "0 samples"),
    ({"lenet5": {"rates": {"bits_min": 3, "bits_max": 2, "points": 2}}}, "lenet5.rates"),
])
def test_bad_configs_stop_the_dry_run(tmp_path, override, message):
    work = copy_workflow(tmp_path)
    (work / "bad.yaml").write_text(yaml.safe_dump(override))
    run = snakemake("-n", "--configfile", "config/smoke.yaml", "bad.yaml", cwd=work, check=False)
    assert run.returncode != 0 and message in run.stdout + run.stderr, run.stdout[-2000:] + run.stderr[-2000:]


def test_an_imagenet_root_without_its_folders_stops_the_dry_run(tmp_path):
    work = copy_workflow(tmp_path)
    (tmp_path / "not-imagenet").mkdir()
    run = snakemake("-n", "--configfile", "config/config.yaml", "--config", f"imagenet_root={tmp_path / 'not-imagenet'}",
                    cwd=work, check=False)
    assert run.returncode != 0 and "has no train and no val folder" in run.stdout + run.stderr


def test_download_false_on_the_command_line_is_a_boolean(tmp_path):
    work = copy_workflow(tmp_path)
    run = snakemake("-n", "--configfile", "config/smoke.yaml", "--config", "download=false", cwd=work, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]


def test_a_failing_job_writes_its_error_to_its_log(tmp_path):
    work = copy_workflow(tmp_path)
    (tmp_path / "empty").mkdir()
    run = snakemake("--cores", "1", "resources/data/mnist.pt", "--config", f"data_root={tmp_path / 'empty'}",
                    "download=false", cwd=work, check=False)
    assert run.returncode != 0
    log = (work / "logs/prepare_data/mnist.log").read_text()
    assert "error: DataError: mnist: missing files" in log and "data_root" in log and "Traceback" in log


def test_reference_never_replaces_a_folder_without_force(tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "mine.txt").write_text("mine")
    run = subprocess.run([sys.executable, "-m", "netquant", "reference", "--out", str(tmp_path / "ref"),
                          "--command", "snakemake", "--results", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "exists" in run.stderr and "--force" in run.stderr
    assert (tmp_path / "ref" / "mine.txt").read_text() == "mine"


def test_a_methods_own_rate_grid():
    from netquant.config import rate_grid_of

    config = {"quantize": {"rates": {"bits_min": 1, "bits_max": 8, "points": 8}},
              "resnet32": {"rates": {"bits_min": 1, "bits_max": 4.5, "points": 8,
                                     "methods": {"kmeans": {"bits_max": 6, "points": 10}}}},
              "lenet5": {}}
    assert rate_grid_of(config, "resnet32", "kmeans") == {"bits_min": 1, "bits_max": 6, "points": 10}
    assert rate_grid_of(config, "resnet32", "uniform") == {"bits_min": 1, "bits_max": 4.5, "points": 8}
    assert rate_grid_of(config, "lenet5", "kmeans") == {"bits_min": 1, "bits_max": 8, "points": 8}
    assert "methods" in config["resnet32"]["rates"]  # the config is not changed


def test_a_networks_own_quantized_parameters():
    from netquant.config import quantize_of

    config = {"quantize": {"params": "all", "options": {}, "rates": {"bits_min": 1, "bits_max": 8, "points": 8}},
              "resnet32": {"quantize_params": "weights+biases"}, "lenet5": {"quantize_params": None}}
    assert quantize_of(config, "resnet32", "uniform")["params"] == "weights+biases"
    assert quantize_of(config, "lenet5", "uniform") == {**config["quantize"]}


def test_the_pruned_models_points_have_their_own_fine_tuning_steps():
    from netquant.config import finetune_of

    config = {"resnet32": {"finetune": {"steps": 50, "lr": 0.01, "pruned_steps": 400}}, "lenet5": {"finetune": {"steps": 5}}}
    assert finetune_of(config, "resnet32", "pruned") == {"steps": 400, "lr": 0.01}
    assert finetune_of(config, "resnet32", "baseline") == {"steps": 50, "lr": 0.01}
    assert finetune_of(config, "lenet5", "pruned") == {"steps": 5}
