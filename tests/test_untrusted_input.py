"""Files and commands: a file never chooses code, a command never destroys what it reads, and meaningless
input is refused with one line naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import netquant
from netquant import compress, config, container, data, models, reference
from netquant.qmodel import QuantizedModel

EVIL = '''
from pathlib import Path
Path("imported.txt").write_text("evil ran")

def make(num_classes=10):
    from netquant import models
    return models.build("lenet5", num_classes=num_classes)
'''


def _run(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(Path(netquant.__file__).parents[1]), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "netquant", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120, cwd=cwd)


def _lenet_file(path: Path, **network) -> Path:
    torch.manual_seed(0)
    model = models.build("lenet5")
    description = {"arch": "lenet5", "dataset": "synthetic-mnist", "num_classes": 10, "in_channels": 1,
                   "input_size": 28, **network}
    q = compress.quantize(model, method="kmeans", k=4, network=description)
    compress.save(q, path)
    return path


@pytest.fixture(scope="module")
def mnist_like(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    data.save_prepared(folder / "synthetic-mnist.pt", data.synthetic("mnist", 32, 64, seed=1))
    data.save_prepared(folder / "synthetic-cifar10.pt", data.synthetic("cifar10", 32, 64, seed=1))
    return folder


@pytest.mark.parametrize("arch", ["evil:make", "os:abort"])
def test_a_file_never_chooses_code(tmp_path, mnist_like, arch):
    path = _lenet_file(tmp_path / "m.nqz", arch=arch)
    (tmp_path / "evil.py").write_text(EVIL)
    out = _run("evaluate", path, "--prepared", mnist_like / "synthetic-mnist.pt", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert f"--arch {arch}" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "imported.txt").exists()
    with pytest.raises(ValueError, match="never code to import"):
        compress.load(path)


def test_the_user_may_name_the_code(tmp_path, mnist_like):
    path = _lenet_file(tmp_path / "m.nqz", arch="evil:make")
    (tmp_path / "evil.py").write_text(EVIL)
    out = _run("evaluate", path, "--prepared", mnist_like / "synthetic-mnist.pt", "--arch", "evil:make", "--json",
               cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "imported.txt").exists() and '"arch": "evil:make"' in out.stdout
    assert isinstance(compress.load(path, models.build("lenet5")), torch.nn.Module)


@pytest.mark.parametrize("key, value, message", [
    ("input_size", 1000, "shape"),  # LeNet-5's fc1 would be 1.5e9 weights: refused before it is built
    ("num_classes", 12, "shape"),
    ("in_channels", 3, "shape"),
    ("num_classes", "10", "expected an integer"),
    ("input_size", 10**9, "expected an integer"),
])
def test_the_description_is_checked_against_the_tensors_before_building(tmp_path, key, value, message):
    path = _lenet_file(tmp_path / "m.nqz", **{key: value})
    with pytest.raises(ValueError, match=message):
        compress.load(path)


def test_evaluate_names_a_dataset_that_does_not_fit(tmp_path, mnist_like):
    path = _lenet_file(tmp_path / "m.nqz")
    out = _run("evaluate", path, "--prepared", mnist_like / "synthetic-cifar10.pt")
    assert out.returncode == 2 and "does not fit the data" in out.stderr and "3x32x32" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("where", [".", "results", "logs", "src", "results/tables", ".."])
def test_reference_never_replaces_its_inputs(tmp_path, where):
    run = tmp_path / "run" / "checkout"
    for folder in ("results/tables", "logs", "src", ".git"):
        (run / folder).mkdir(parents=True)
    (run / "results" / "tables" / "table1.csv").write_text("network\n")
    (run / "src" / "keep.py").write_text("kept")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="give a folder of its own"):
        reference.collect(run / "results", run / where, command="snakemake", logs=run / "logs", run_folder=run,
                          replace=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_reference_refuses_netquants_own_source():
    source = Path(netquant.__file__).parent
    with pytest.raises(ValueError, match="netquant's source"):
        reference.collect("results", source / "ref", command="x", replace=True, run_folder="/nonexistent")


def test_compress_never_replaces_its_input_and_checks_before_work(tmp_path):
    weights = tmp_path / "w.pt"
    torch.save(models.build("lenet5").state_dict(), weights)
    original = weights.read_bytes()
    link = tmp_path / "link.nqz"
    link.symlink_to(weights)
    for out in (weights, link):
        # --images points nowhere: the output is refused before the data is even looked at
        result = _run("compress", "--arch", "lenet5", "--weights", weights, "--images", tmp_path / "none",
                      "--method", "kmeans", "--k", "4", "--out", out, "--force")
        assert result.returncode == 2 and "is the input file itself" in result.stderr, result.stderr
    assert weights.read_bytes() == original
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = _run("compress", "--arch", "lenet5", "--images", tmp_path / "none", "--method", "kmeans", "--k", "4",
                  "--out", fifo, "--force")
    assert result.returncode == 2 and "not a regular file" in result.stderr
    assert fifo.exists() and not fifo.is_file()


def test_decode_never_replaces_a_device_or_a_pipe(tmp_path):
    path = _lenet_file(tmp_path / "m.nqz")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for out in (fifo, Path("/dev/null")):
        result = _run("decode", path, out, "--force")
        assert result.returncode == 2 and "not a regular file" in result.stderr, result.stderr
    assert Path("/dev/null").is_char_device() and not fifo.is_file()


@pytest.mark.parametrize("rate, message", [({"bits": 0}, "bits >= 1"), ({"bits": 0.5}, "bits >= 1"),
                                           ({"k": 1}, "k >= 2")])
def test_meaningless_rates_are_refused(rate, message):
    with pytest.raises(ValueError, match=message):
        compress.quantize(models.build("lenet5"), method="kmeans", **rate)


def test_an_importance_missing_a_layer_is_named():
    model = models.build("lenet5")
    h = {name: torch.ones_like(p) for name, p in model.named_parameters() if name != "fc2.weight"}
    with pytest.raises(ValueError, match="no entry for 'fc2.weight'"):
        compress.quantize(model, h, method="hwkmeans", bits=2)


@pytest.mark.parametrize("where", ["bias", "codebook"])
def test_nan_and_inf_are_never_written(tmp_path, where):
    model = models.build("lenet5")
    q = compress.quantize(model, method="kmeans", k=4)
    if where == "bias":
        q.passthrough["fc2.bias"] = np.full(10, np.nan, np.float32)
    else:
        q.codebooks[0][1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        compress.save(q, tmp_path / "m.nqz")
    assert not (tmp_path / "m.nqz").exists()


def test_a_config_files_empty_mapping_is_refused(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("quantize:\n  rates: {}\n")
    with pytest.raises(config.ConfigError, match=r"mine.yaml: config key 'quantize.rates' is an empty mapping"):
        config.check_files([path])
    path.write_text("quantize:\n  rates: {bits_min: 1, bits_max: 2, points: 2}\n")
    config.check_files([path])


def test_a_valid_file_decodes_under_the_default_limit():
    q = QuantizedModel([np.array([0.5, 1.0], np.float32)], {}, {"b": np.ones(3, np.float32)}, ["b"], ["b"])
    assert container.decode(container.encode(q)).n_params == 3
