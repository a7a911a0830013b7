"""Compress your own model: torchvision networks through the public API, the file and the CLI."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys

import pytest
import torch

from helpers import REPO
from netquant import compress, container, models


def _loader(n=16, batch=8, size=32, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


@pytest.mark.parametrize("name, method", [("resnet18", "hwkmeans"), ("mobilenet_v2", "ecsq")])
def test_a_torchvision_model_through_the_file(tmp_path, name, method):
    torch.manual_seed(0)
    model = compress.build_named(f"torchvision:{name}", num_classes=10).eval()
    loader = _loader()
    h = compress.importance(model, loader, kind="hessian", samples=16)
    q = compress.quantize(model, h, method=method, bits=3, network={"arch": f"torchvision:{name}", "num_classes": 10})
    q = compress.finetune(model, q, loader, steps=2, lr=1e-3)
    m = compress.save(q, tmp_path / "m.nqz")
    assert m["ratio_file"] == 32 * m["n_params"] / (8 * (tmp_path / "m.nqz").stat().st_size)
    assert m["n_params"] == sum(p.numel() for p in model.parameters())
    decoded = compress.load(tmp_path / "m.nqz")  # rebuilt from the file's description
    for key, value in q.state_dict().items():
        assert torch.equal(decoded.state_dict()[key], value), key  # bit-exact round trip
    reference = copy.deepcopy(model)
    reference.load_state_dict(q.state_dict())  # what was quantized and fine-tuned, not read from the file
    assert compress.evaluate(decoded, loader) == compress.evaluate(reference.eval(), loader)
    # every convolution (mobilenet's depthwise ones too) holds codebook values only
    book = set(q.codebooks[0].tolist())
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            assert set(decoded.state_dict()[f"{module_name}.weight"].flatten().tolist()) <= book, module_name


def test_pruned_zeros_are_positions_and_the_include_choice(tmp_path):
    torch.manual_seed(0)
    model = compress.build_named("torchvision:resnet18", num_classes=10)
    with torch.no_grad():
        model.fc.weight[:, ::2] = 0  # half of a layer pruned
    names = compress.quantized_names(model)
    assert "fc.weight" in names and "fc.bias" not in names and "bn1.weight" not in names
    assert "fc.bias" in compress.quantized_names(model, "weights+biases")
    assert "bn1.weight" in compress.quantized_names(model, "all")
    q = compress.quantize(model, method="kmeans", k=8)
    assert int((~q.tensors["fc.weight"].mask).sum()) == model.fc.weight.numel() // 2
    assert torch.equal(q.state_dict()["fc.weight"][:, ::2], torch.zeros(10, 256))


def test_the_readme_example_runs_as_written(tmp_path):
    readme = (REPO / "README.md").read_text()
    example = re.search(r"<!-- example: own model -->\s*```python\n(.*?)```", readme, re.S).group(1)
    run = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ratio" in run.stdout and (tmp_path / "resnet18.nqz").exists()


def _image_folder(root, per_class: int, size: int = 40) -> None:
    """root/train|val/class0|class1/*.png: two classes of plain images."""
    from PIL import Image

    for split in ("train", "val"):
        for c in range(2):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (size, size), (60 * c + 10 * i, 80, 120)).save(folder / f"{i}.png")


def test_cli_compress_a_torchvision_model(tmp_path):
    _image_folder(tmp_path / "images", per_class=4)
    torch.manual_seed(0)
    torch.save(compress.build_named("torchvision:resnet18", num_classes=2).state_dict(), tmp_path / "w.pt")
    out = subprocess.run(
        [sys.executable, "-m", "netquant", "compress", "--arch", "torchvision:resnet18", "--weights",
         str(tmp_path / "w.pt"), "--num-classes", "2", "--images", str(tmp_path / "images"), "--image-size", "32",
         "--method", "uniform", "--bits", "4", "--importance", "none", "--finetune-steps", "1",
         "--out", str(tmp_path / "r18.nqz"), "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["ratio"] == container.metrics(tmp_path / "r18.nqz")["ratio_file"] and 0 <= result["accuracy"] <= 100


def _separable_task(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 16, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    batches = [(x[i:i + 128], y[i:i + 128]) for i in range(0, 512, 128)]
    return model.eval(), batches


@pytest.mark.parametrize("method", ["kmeans", "uniform"])
def test_largest_ratio_at_a_floor(tmp_path, method):
    model, batches = _separable_task()
    full = compress.evaluate(model, batches)["accuracy"]
    floor = full - 3.0
    found = compress.largest_ratio(model, None, batches, batches, method=method, floor=floor, folder=tmp_path,
                                   bits=(1, 2, 3, 4), max_probes=3, finetune_steps=0)
    probes = found["probes"]
    assert 4 < len(probes) <= 4 + 3  # the grid, then at least one refining probe
    for p in probes:  # every probe is a real file, measured and evaluated as decoded
        assert container.metrics(p["file"])["ratio_file"] == p["ratio"]
        decoded = compress.load(p["file"], copy.deepcopy(model))
        assert compress.evaluate(decoded, batches)["accuracy"] == p["accuracy"]
    meeting = [p for p in probes if p["accuracy"] >= floor]
    assert found["best"]["accuracy"] >= floor
    assert found["best"]["ratio"] == max(p["ratio"] for p in meeting)
    assert compress.largest_ratio(model, None, batches, batches, method=method, floor=101.0,
                                  folder=tmp_path / "none", bits=(2,), max_probes=2, finetune_steps=0)["best"] is None


def test_cli_compress_at_a_floor(tmp_path):
    _image_folder(tmp_path / "images", per_class=2, size=32)
    out = subprocess.run(
        [sys.executable, "-m", "netquant", "compress", "--arch", "torchvision:shufflenet_v2_x0_5",
         "--num-classes", "2", "--images", str(tmp_path / "images"), "--image-size", "32", "--method", "kmeans", "--floor", "0",
         "--max-probes", "1", "--importance", "none", "--finetune-steps", "0", "--out", str(tmp_path / "r.nqz"),
         "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    # every probe meets a 0% floor, so the file kept is the probe of largest ratio
    assert result["ratio"] == pytest.approx(max(p["ratio"] for p in result["probes"]), rel=1e-6)
    assert len(result["probes"]) == 6 == len(list((tmp_path / "r.nqz.probes").glob("k=*.nqz")))


def test_batchnorm_statistics_fold_into_the_file(tmp_path):
    torch.manual_seed(0)
    model = models.build("resnet32").eval()
    for module in model.modules():  # statistics far from the defaults, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.2, 3)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    folded = compress.quantize(model, method="uniform", bits=4)
    plain = compress.quantize(model, method="uniform", bits=4, fold_batchnorm=False)
    m_folded = compress.save(folded, tmp_path / "folded.nqz")
    m_plain = compress.save(plain, tmp_path / "plain.nqz")
    statistics = sum(m.running_mean.numel() + m.running_var.numel() for m in model.modules()
                     if isinstance(m, torch.nn.BatchNorm2d))
    assert m_folded["n_params"] == m_plain["n_params"] == 464154  # N stays the paper's
    saved = m_plain["file_bytes"] - m_folded["file_bytes"]
    # each of the 62 statistics tensors is stored as one value; META's compressed size moves by a few bytes
    assert 4 * statistics - 4 * 62 - 16 <= saved <= 4 * statistics
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        want = compress.load(tmp_path / "plain.nqz", models.build("resnet32")).eval()(x)
        got = compress.load(tmp_path / "folded.nqz", models.build("resnet32")).eval()(x)
    # the same function up to float32 rounding: within 1e-5 of the outputs' scale
    assert (got - want).abs().max() <= 1e-5 * want.abs().max(), (got - want).abs().max()


def test_a_file_says_what_made_it(tmp_path):
    q = compress.quantize(models.build("lenet5"), method="uniform", bits=3, network={"arch": "lenet5"})
    compress.save(q, tmp_path / "m.nqz")
    made = container.metrics(tmp_path / "m.nqz")["description"]["quantization"]
    assert made["method"] == "uniform" and made["scope"] == "all" and made["step"] > 0
    out = subprocess.run([sys.executable, "-m", "netquant", "inspect", str(tmp_path / "m.nqz")], capture_output=True,
                         text=True, timeout=120)
    assert f"quantized by uniform (step {made['step']:.6g}; scope all, weights quantized)" in out.stdout
