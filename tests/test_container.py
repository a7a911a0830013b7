"""The .nqz container: bit-exact round trips, accounting, and detection of damaged or foreign files."""

from __future__ import annotations

import copy

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netquant
from netquant import container, models
from netquant.container import ContainerError
from netquant.container.books import RAW, decode_books, encode_values
from helpers import REPO, optimal_huffman_cost
from netquant.qmodel import PRUNED, QuantizedModel, QuantizedTensor, from_pruned

KEEP = 0.09  # Table 1: LeNet pruned by 91%


def prune_masks(state_dict, names, keep=KEEP):
    """Magnitude pruning: keep the ``keep`` fraction of largest |w| of every named tensor."""
    masks = {}
    for name in names:
        w = state_dict[name].abs().reshape(-1)
        n_keep = max(1, round(keep * w.numel()))
        threshold = w.kthvalue(w.numel() - n_keep + 1).values
        masks[name] = state_dict[name].abs() >= threshold
    return masks


def quantize_uniform(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Round to the nearest of k evenly spaced centres over [min, max]: (centres float32 [k], labels)."""
    lo, hi = float(values.min()), float(values.max())
    centres = np.linspace(lo, hi, k).astype(np.float32)
    labels = np.clip(np.rint((values - lo) / ((hi - lo) / (k - 1))), 0, k - 1).astype(np.int32)
    return centres, labels


def quantized_lenet(*, per_layer: bool = False, k: int = 32) -> QuantizedModel:
    """LeNet-5, weights pruned to 9% by magnitude and quantized; biases left unquantized."""
    torch.manual_seed(0)
    model = models.build("lenet5")
    sd = model.state_dict()
    weights = [n for n in sd if n.endswith("weight")]
    masks = prune_masks(sd, weights)
    kept = {n: sd[n].reshape(-1)[masks[n].reshape(-1)].numpy() for n in weights}
    codebooks, tensors = [], {}
    if not per_layer:
        centres, labels = quantize_uniform(np.concatenate(list(kept.values())), k)
        codebooks.append(centres)
        splits = np.split(labels, np.cumsum([v.size for v in kept.values()])[:-1])
    for i, name in enumerate(weights):
        if per_layer:
            centres, part = quantize_uniform(kept[name], k)
            codebooks.append(centres)
        else:
            part = splits[i]
        labels = np.full(sd[name].numel(), PRUNED, dtype=np.int32)
        labels[masks[name].reshape(-1).numpy()] = part
        tensors[name] = QuantizedTensor(tuple(sd[name].shape), i if per_layer else 0, labels)
    passthrough = {n: v.numpy() for n, v in sd.items() if n not in tensors}
    return QuantizedModel(codebooks, tensors, passthrough, list(sd), [n for n, _ in model.named_parameters()])


@pytest.fixture(scope="module")
def lenet() -> QuantizedModel:
    return quantized_lenet()


def assert_state_dicts_identical(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].shape == want[name].shape, name
        a, b = got[name].contiguous().numpy(), want[name].contiguous().numpy()
        assert a.tobytes() == b.tobytes(), name  # bit-exact, -0.0 and NaN included


@pytest.mark.parametrize("label_code", ["huffman", "fixed", "ans", "ans-layer"])
@pytest.mark.parametrize("index_code", ["deep-compression", "mask-ans", "mask-context"])
def test_lenet_round_trip(tmp_path, lenet, label_code, index_code):
    path = tmp_path / "m.nqz"
    m = container.save(path, lenet, label_code=label_code, index_code=index_code)
    assert_state_dicts_identical(container.read_state_dict(path), lenet.state_dict())
    q = container.read(path)
    assert q.n_params == lenet.n_params == 431_080
    assert q.param_names == lenet.param_names
    for name, t in lenet.tensors.items():
        np.testing.assert_array_equal(q.tensors[name].labels, t.labels)
        assert q.tensors[name].shape == t.shape
    np.testing.assert_array_equal(q.codebooks[0], lenet.codebooks[0])

    size = os.path.getsize(path)
    assert m["file_bytes"] == size and m["file_bits"] == 8 * size
    assert sum(m["section_bytes"].values()) == size
    assert m["ratio_file"] == pytest.approx(32 * 431_080 / (8 * size))
    assert m["n_quantized"] == lenet.n_quantized
    assert m["n_quantized"] + m["n_pruned"] + m["n_passthrough_params"] == 431_080
    assert m["label_code"] == label_code and m["index_code"] == index_code
    json.dumps(m)  # plain JSON
    assert container.metrics(path) == m

    bpw = m["bits_per_weight"]
    assert bpw["fixed"] == 5.0  # k = 32
    assert bpw["entropy"] <= bpw["ans"] <= bpw["entropy"] * 1.01 + 0.01
    assert bpw["entropy"] <= bpw["huffman"] < bpw["entropy"] + 1
    assert bpw["in_file"] == bpw[label_code.replace("-", "_")]
    idx = m["index_bits_per_kept"]
    assert idx["entropy"] <= idx["mask-ans"] < idx["deep-compression"]
    assert 4.0 < idx["deep-compression"] < 6.0  # ~4.9 bits per kept weight at 9% density (paper digest)
    eq1 = m["eq1"]
    assert eq1["codeword_bits"] == pytest.approx(bpw["in_file"] * m["n_quantized"])
    assert eq1["shared_value_bits"] == 32 * 32
    assert eq1["unquantized_bits"] == 32 * m["n_passthrough_params"]
    assert eq1["index_bits"] == pytest.approx(idx[index_code] * m["n_quantized"])
    # the file holds eq. (1)'s content plus framing, names, shapes and counts: a few hundred bytes
    assert 0 < m["file_bits"] - eq1["total_bits"] < 8 * 800


def test_lenet_file_size_is_its_optimal_code_plus_its_tables(lenet, tmp_path):
    """Huffman + Deep Compression indexes on a 9%-kept LeNet: the label stream is exactly as long as an optimal
    prefix code, the file's ratio is 32 N over its bits, and eq. (1) counts less than the whole file."""
    m = container.save(tmp_path / "m.nqz", lenet)
    labels = np.concatenate([t.labels[t.labels != PRUNED] for t in lenet.tensors.values()])
    assert m["eq1"]["codeword_bits"] == optimal_huffman_cost(np.bincount(labels))
    assert m["file_bytes"] == (tmp_path / "m.nqz").stat().st_size == sum(m["section_bytes"].values())
    assert m["ratio_file"] == 32 * m["n_params"] / (8 * m["file_bytes"])
    assert m["ratio_file"] < m["ratio_eq1"]


def test_per_layer_codebooks(tmp_path):
    q = quantized_lenet(per_layer=True, k=16)
    for code in ("huffman", "ans", "fixed"):
        m = container.save(tmp_path / "m.nqz", q, label_code=code)
        assert_state_dicts_identical(container.read_state_dict(tmp_path / "m.nqz"), q.state_dict())
        assert m["codebook_sizes"] == [16] * 4
        assert m["eq1"]["shared_value_bits"] == 4 * 16 * 32
    assert container.read(tmp_path / "m.nqz").tensors["fc1.weight"].codebook == 2


def test_resnet_buffers_dtypes_and_dense_tensors(tmp_path):
    """Unpruned ResNet-32: dense tensors (no index bits), BatchNorm buffers incl. int64 counters kept as-is."""
    torch.manual_seed(0)
    model = models.build("resnet32")
    sd = model.state_dict()
    sd["bn1.running_var"].uniform_(0.5, 2.0)
    sd["bn1.running_mean"][0] = -0.0
    convs = [n for n in sd if n.endswith("weight") and sd[n].dim() == 4]
    centres, labels = quantize_uniform(torch.cat([sd[n].reshape(-1) for n in convs]).numpy(), 8)
    splits = np.split(labels, np.cumsum([sd[n].numel() for n in convs])[:-1])
    tensors = {n: QuantizedTensor(tuple(sd[n].shape), 0, part) for n, part in zip(convs, splits)}
    passthrough = {n: v.numpy() for n, v in sd.items() if n not in tensors}
    passthrough["extra.flag"] = np.array([True, False, True])
    passthrough["extra.half"] = np.array([1.5, -2.25], dtype=np.float16)
    passthrough["extra.transposed"] = np.arange(6, dtype=np.float32).reshape(2, 3).T  # not C-contiguous
    order = [*sd, "extra.flag", "extra.half", "extra.transposed"]
    params = [n for n, _ in model.named_parameters()]
    q = QuantizedModel([centres], tensors, passthrough, order, params)
    m = container.save(tmp_path / "r.nqz", q, label_code="fixed")
    got = container.read_state_dict(tmp_path / "r.nqz")
    assert_state_dicts_identical(got, q.state_dict())
    assert got["bn1.num_batches_tracked"].dtype == torch.int64 and got["bn1.num_batches_tracked"].dim() == 0
    assert got["extra.flag"].dtype == torch.bool
    assert m["n_params"] == 464_154
    assert m["n_pruned"] == 0 and m["eq1"]["index_bits"] == 0 and m["section_bytes"]["IBIT"] == 12
    assert m["bits_per_weight"]["fixed"] == 3.0
    assert m["n_buffer_elements"] > 0


def test_eq1_by_hand(tmp_path):
    """One 8-element tensor, labels 0,0,0,0,1,1,2,3 (|C| = 4, 2, 1, 1), k = 4.

    Huffman lengths 1, 2, 3, 3: codewords 4*1 + 2*2 + 3 + 3 = 14 bits, decoding table 1 + 2 + 3 + 3 = 9,
    shared values 4 * 32 = 128: 151 bits, ratio 8 * 32 / 151. Fixed (2 bits): 16 + 8 + 128 = 152.
    """
    q = QuantizedModel([np.array([0.5, -0.5, 1.0, -1.0], np.float32)],
                       {"w": QuantizedTensor((2, 4), 0, np.array([0, 0, 0, 0, 1, 1, 2, 3]))}, {}, ["w"], ["w"])
    m = container.save(tmp_path / "h.nqz", q, label_code="huffman")
    assert m["eq1"] == {"codeword_bits": 14, "table_bits": 9, "shared_value_bits": 128, "index_bits": 0,
                        "unquantized_bits": 0, "total_bits": 151}
    assert m["ratio_eq1"] == pytest.approx(256 / 151)
    assert container.eq1_ratio([4, 2, 1, 1], [1, 2, 3, 3]) == pytest.approx(256 / 151)
    assert m["bits_per_weight"]["huffman"] == 14 / 8
    assert m["label_entropy_bits"] == pytest.approx(1.75)
    m = container.save(tmp_path / "f.nqz", q, label_code="fixed")
    assert m["eq1"]["total_bits"] == 16 + 8 + 128
    assert container.eq1_ratio([4, 2, 1, 1], [2, 2, 2, 2]) == pytest.approx(256 / 152)
    # a pruned model adds its index bits; N counts the pruned parameters too
    assert container.eq1_ratio([4, 2, 1, 1], [1, 2, 3, 3], n_params=80, index_bits=49) == pytest.approx(2560 / 200)


def test_pruned_unquantized_model(tmp_path):
    """The paper's 'pruned model' row: 32-bit kept values plus coded positions."""
    torch.manual_seed(0)
    model = models.build("lenet5")
    sd = model.state_dict()
    masks = prune_masks(sd, [n for n in sd if n.endswith("weight")])
    sd["conv1.weight"].view(-1)[masks["conv1.weight"].view(-1).nonzero()[0]] = -0.0  # a kept -0.0 survives
    q = from_pruned(sd, masks, param_names=[n for n, _ in model.named_parameters()])
    m = container.save(tmp_path / "p.nqz", q, label_code="raw")
    got = container.read_state_dict(tmp_path / "p.nqz")
    want = {n: (torch.where(masks[n], v, torch.zeros(())) if n in masks else v) for n, v in sd.items()}
    assert_state_dicts_identical(got, want)
    kept = sum(int(v.sum()) for v in masks.values())
    assert m["eq1"]["codeword_bits"] == 32 * kept
    assert m["eq1"]["shared_value_bits"] == 0 and m["section_bytes"]["BOOK"] == 12
    assert m["bits_per_weight"] == {"in_file": 32.0} and m["label_entropy_bits"] is None
    assert 8 < m["ratio_file"] < 11  # paper: 10.13 for LeNet at 8.55-9% kept
    assert container.metrics(tmp_path / "p.nqz") == m
    with pytest.raises(ValueError, match="float32"):
        from_pruned({"w": torch.zeros(3, dtype=torch.float64)}, {"w": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="mask shape"):
        from_pruned({"w": torch.zeros(3)}, {"w": torch.ones(4, dtype=torch.bool)})


def test_edge_models(tmp_path):
    """One codebook entry (0 bits per label), a fully pruned tensor, a 0-d passthrough."""
    labels = np.full(10, PRUNED, np.int32)
    q = QuantizedModel([np.array([0.25], np.float32)],
                       {"a": QuantizedTensor((10,), 0, labels), "b": QuantizedTensor((2, 3), 0, np.zeros(6))},
                       {"c": np.array(3.0, np.float32)}, ["a", "b", "c"], ["a", "b", "c"])
    for label_code in ("huffman", "fixed", "ans", "ans-layer"):
        for index_code in ("deep-compression", "mask-ans", "mask-context"):
            m = container.save(tmp_path / "e.nqz", q, label_code=label_code, index_code=index_code)
            assert_state_dicts_identical(container.read_state_dict(tmp_path / "e.nqz"), q.state_dict())
            assert m["eq1"]["codeword_bits"] == 0 and m["eq1"]["index_bits"] <= 16


def test_bad_options_write_nothing(tmp_path, lenet):
    with pytest.raises(ValueError, match="label_code must be one of fixed, huffman, ans, raw"):
        container.save(tmp_path / "x.nqz", lenet, label_code="zip")
    with pytest.raises(ValueError, match="index_code"):
        container.save(tmp_path / "x.nqz", lenet, index_code="csr")
    with pytest.raises(ValueError, match="index_bound"):
        container.save(tmp_path / "x.nqz", lenet, index_bound=0)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# damaged and foreign files


@pytest.fixture(scope="module")
def small_file() -> bytes:
    """A small pruned, quantized model with every section non-empty."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 60).astype(np.int32)
    labels[rng.random(60) < 0.5] = PRUNED
    q = QuantizedModel([np.array([-1.0, -0.1, 0.1, 1.0], np.float32)],
                       {"w": QuantizedTensor((6, 10), 0, labels)}, {"b": np.arange(3, dtype=np.float32)},
                       ["w", "b"], ["w", "b"])
    return container.encode(q)


def test_every_truncation_is_detected(small_file):
    for n in range(len(small_file)):
        with pytest.raises(ContainerError, match=f"truncated at byte {n}" if n >= 8 else "truncated|magic"):
            container.decode(small_file[:n])


def test_every_bit_flip_is_detected(small_file):
    for i in range(len(small_file)):
        for bit in (0, 5):
            damaged = bytearray(small_file)
            damaged[i] ^= 1 << bit
            expected = "CRC mismatch|magic|version|truncated|expected section|unexpected"
            with pytest.raises(ContainerError, match=expected):
                container.decode(bytes(damaged))


def _sections(data: bytes) -> dict[str, tuple[int, int]]:
    """(start, end) of each framed section."""
    out, pos = {}, 16
    for tag in container.SECTIONS:
        length = struct.unpack_from("<I", data, pos + 4)[0]
        out[tag] = (pos, pos + 8 + length + 4)
        pos += 8 + length + 4
    return out


def _reframe(data: bytes, tag: str, payload: bytes) -> bytes:
    """Replace a section's payload and recompute its length and CRC (a well-formed but altered file)."""
    start, end = _sections(data)[tag]
    framed = tag.encode() + struct.pack("<I", len(payload)) + payload
    return data[:start] + framed + struct.pack("<I", zlib.crc32(framed)) + data[end:]


def test_lenet_bit_flips_name_the_section(lenet):
    data = container.encode(lenet)
    sections = _sections(data)
    rng = np.random.default_rng(0)
    for tag, (start, end) in sections.items():
        for i in rng.integers(start + 8, end - 4, size=5):  # inside the payload
            damaged = bytearray(data)
            damaged[i] ^= 0x10
            with pytest.raises(ContainerError, match=f"CRC mismatch in section {tag} "):
                container.decode(bytes(damaged))


@pytest.mark.parametrize("label_code,index_code", [("huffman", "deep-compression"), ("ans", "mask-ans"),
                                                    ("fixed", "deep-compression"), ("ans-layer", "mask-context")])
def test_altered_streams_with_valid_crc_never_give_a_wrong_model(lenet, label_code, index_code):
    """Streams changed behind a recomputed section CRC (e.g. another coder version): still an error."""
    data = container.encode(lenet, label_code=label_code, index_code=index_code)
    rng = np.random.default_rng(1)
    for tag in ("LBIT", "IBIT"):
        start, end = _sections(data)[tag]
        payload = data[start + 8 : end - 4]
        for i in rng.integers(0, len(payload), size=8):
            altered = bytearray(payload)
            altered[i] ^= 1 << int(rng.integers(8))
            with pytest.raises(ContainerError):
                container.decode(_reframe(data, tag, bytes(altered)))


def test_foreign_and_future_files(tmp_path, small_file):
    with pytest.raises(ContainerError, match="bad magic"):
        container.decode(b"PK\x03\x04" + bytes(100))
    torch.save({"w": torch.zeros(3)}, tmp_path / "model.pt")
    with pytest.raises(ContainerError, match="bad magic"):
        container.read(tmp_path / "model.pt")
    with pytest.raises(ContainerError, match="truncated at byte 0"):
        container.decode(b"")
    future = bytearray(small_file)
    future[8:10] = struct.pack("<H", 5)
    future[12:16] = struct.pack("<I", zlib.crc32(bytes(future[:12])))
    with pytest.raises(ContainerError, match="unsupported format version 5"):
        container.decode(bytes(future))
    with pytest.raises(ContainerError, match="3 unexpected bytes after the last section"):
        container.decode(small_file + b"abc")
    (tmp_path / "bad.nqz").write_bytes(small_file[:-1])
    with pytest.raises(ContainerError, match="bad.nqz: truncated"):
        container.read_state_dict(tmp_path / "bad.nqz")


def _as_version_1(data: bytes) -> bytes:
    """The same file as format version 1 wrote it: no network description at the end of META, the shared
    values as float32."""
    books = b"".join(b.astype("<f4").tobytes() for b in container.decode(data).codebooks)
    head = bytearray(data[:16])
    head[8:10] = struct.pack("<H", 1)
    head[12:16] = struct.pack("<I", zlib.crc32(bytes(head[:12])))
    out, pos = bytearray(head), 16
    while pos < len(data):
        tag, length = struct.unpack_from("<4sI", data, pos)
        payload = data[pos + 8 : pos + 8 + length]
        if tag == b"META":
            meta = zlib.decompress(payload)
            assert meta.endswith(b"\x02{}")
            payload = zlib.compress(meta[:-3], 9)
        if tag == b"BOOK":
            payload = books
        framed = struct.pack("<4sI", tag, len(payload)) + payload
        out += framed + struct.pack("<I", zlib.crc32(framed))
        pos += 8 + length + 4
    return bytes(out)


def test_version_1_files_are_still_read(small_file):
    old = _as_version_1(small_file)
    assert old != small_file
    decoded = container.decode(old)
    assert decoded.network == {}
    for a, b in zip(container.decode(small_file).state_dict().values(), decoded.state_dict().values()):
        assert torch.equal(a, b)


def test_the_network_description_round_trips(lenet):
    described = copy.copy(lenet)
    described.network = {"arch": "lenet5", "dataset": "mnist", "num_classes": 10}
    assert container.decode(container.encode(described)).network == described.network


# --------------------------------------------------------------------------------------------------
# command line


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(Path(netquant.__file__).parents[1]), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "netquant", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_inspect_and_decode(tmp_path, lenet):
    path = tmp_path / "m.nqz"
    m = container.save(path, lenet)
    out = _run("inspect", path)
    assert out.returncode == 0, out.stderr
    assert f"{m['ratio_file']:.2f}" in out.stdout and "entropy" in out.stdout and "IBIT" in out.stdout
    out = _run("inspect", "--json", path)
    assert out.returncode == 0 and json.loads(out.stdout) == m
    out = _run("decode", path, tmp_path / "sd.pt")
    assert out.returncode == 0, out.stderr
    assert_state_dicts_identical(torch.load(tmp_path / "sd.pt", weights_only=True), lenet.state_dict())
    (tmp_path / "bad.nqz").write_bytes(path.read_bytes()[:1000])
    out = _run("decode", tmp_path / "bad.nqz", tmp_path / "bad.pt")
    assert out.returncode == 2 and "truncated at byte 1000" in out.stderr
    assert not (tmp_path / "bad.pt").exists()


def test_cli_evaluate_rebuilds_the_network_from_the_file(tmp_path, lenet):
    from netquant import data, models, train

    splits = data.synthetic("mnist", 64, 200, seed=3)
    data.save_prepared(tmp_path / "synthetic-mnist.pt", splits)
    described = copy.copy(lenet)
    described.network = {"arch": "lenet5", "dataset": "synthetic-mnist", "num_classes": 10, "in_channels": 1,
                         "input_size": 28}
    path = tmp_path / "m.nqz"
    m = container.save(path, described)
    out = _run("evaluate", path, "--prepared", tmp_path / "synthetic-mnist.pt", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    model = models.build("lenet5")
    model.load_state_dict(lenet.state_dict())
    expected = train.evaluate(model, data.batches(splits["test"], 50))
    assert result["accuracy"] == expected["accuracy"] and result["ratio"] == m["ratio_file"]
    assert result["arch"] == "lenet5"
    out = _run("evaluate", path)
    assert out.returncode == 2 and "data_root" in out.stderr


def test_cli_decode_never_destroys_its_input(tmp_path, lenet):
    path = tmp_path / "m.nqz"
    container.save(path, lenet)
    original = path.read_bytes()
    out = _run("decode", path, path)
    assert out.returncode == 2 and "input file itself" in out.stderr and path.read_bytes() == original
    (tmp_path / "taken.pt").write_bytes(b"mine")
    out = _run("decode", path, tmp_path / "taken.pt")
    assert out.returncode == 2 and "--force" in out.stderr and (tmp_path / "taken.pt").read_bytes() == b"mine"
    assert _run("decode", path, tmp_path / "taken.pt", "--force").returncode == 0
    out = _run("decode", tmp_path, tmp_path / "x.pt")
    assert out.returncode == 2 and "is a folder" in out.stderr and "Traceback" not in out.stderr
    out = _run("inspect", tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr


# --------------------------------------------------------------------------------------------------
# fuzzing: random damage and crafted sections are refused with ContainerError, never anything else

DAMAGE = st.sampled_from(["truncate", "flip", "insert", "section"])


def _damaged(data: bytes, draw) -> bytes:
    kind, out = draw(DAMAGE), bytearray(data)
    if kind == "truncate":
        return bytes(out[: draw(st.integers(0, len(out) - 1))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            out[draw(st.integers(0, len(out) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    if kind == "insert":
        i = draw(st.integers(0, len(out)))
        return bytes(out[:i] + draw(st.binary(min_size=1, max_size=16)) + out[i:])
    # a well-framed file (lengths and CRCs right) whose section content is random
    tag, payload = draw(st.sampled_from(container.SECTIONS)), draw(st.binary(max_size=64))
    return _reframe(data, tag, zlib.compress(payload) if tag == "META" and draw(st.booleans()) else payload)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_files_are_refused_cleanly(small_file, data):
    damaged = _damaged(small_file, data.draw)
    try:
        decoded = container.decode(damaged)
    except ContainerError:
        return
    assert container.encode(decoded) == damaged  # only a file's own content decodes


def test_constant_entries_are_stored_once_and_version_2_files_are_still_read():
    q = QuantizedModel([np.array([-1.0, 1.0], np.float32)], {"w": QuantizedTensor((4,), 0, np.array([0, 1, 1, 0], np.int32))},
                       {"mean": np.zeros(1000, np.float32), "var": np.full(1000, 0.99999, np.float32),
                        "steps": np.array(7, np.int64), "b": np.arange(4, dtype=np.float32)},
                       ["w", "mean", "var", "steps", "b"], ["w", "b"])
    data = container.encode(q)
    assert container.parse(data).section_bytes["PASS"] == 12 + 4 + 4 + 8 + 16
    assert_state_dicts_identical(container.decode(data).state_dict(), q.state_dict())
    # a file of the previous version, from the reference folder: still decodes, to the same network as ever
    v2 = REPO / "reference" / "cpu" / "files" / "lenet5" / "pruned.nqz"
    parsed = container.parse(v2.read_bytes())
    assert parsed.version == 2 and container.read(v2).n_params == 431080


def test_codec_ids_never_change_so_old_files_stay_readable():
    from netquant.container.codes import INDEX_CODE_TABLE, LABEL_CODE_TABLE

    assert {c.name: c.id for c in LABEL_CODE_TABLE.values()} == {"fixed": 0, "huffman": 1, "ans": 2, "raw": 3,
                                                                  "ans-layer": 4, "plane-context": 5}
    assert {c.name: c.id for c in INDEX_CODE_TABLE.values()} == {"deep-compression": 0, "mask-ans": 1,
                                                                  "mask-context": 2, "plane-context": 3}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), max_size=300), st.booleans())
def test_shared_values_round_trip_bit_for_bit(patterns, ordered):
    values = np.array(patterns, np.uint32).view(np.float32)
    if ordered:
        values = np.sort(values[np.isfinite(values)])
    data = encode_values(values)
    (decoded,) = decode_books(data, [len(values)])
    assert decoded.view(np.uint32).tolist() == values.view(np.uint32).tolist()
    assert len(data) <= 1 + 4 * len(values)  # never more than one byte over the float32 values
    first, second = decode_books(data + data, [len(values)] * 2)
    assert first.tobytes() == second.tobytes() == values.tobytes()


def test_a_long_jump_in_a_coded_codebook_round_trips():
    near_one = (np.float32(1.0).view(np.uint32) + np.arange(200, dtype=np.uint32)).view(np.float32)
    for jump in (-np.finfo(np.float32).max, np.float32(-0.0), np.finfo(np.float32).tiny):
        values = np.append(near_one, np.float32(jump)).astype(np.float32)
        data = encode_values(values)
        assert data[0] != RAW
        assert decode_books(data, [len(values)])[0].tobytes() == values.tobytes()


def test_ordered_codebooks_take_fewer_bits_than_float32():
    book = np.sort(np.random.default_rng(0).normal(0, 0.1, 128)).astype(np.float32)
    assert len(encode_values(book)) < 0.75 * 4 * len(book)


def test_defective_shared_values_are_refused():
    book = np.sort(np.random.default_rng(0).normal(0, 0.1, 16)).astype(np.float32)
    data = encode_values(book)
    with pytest.raises(ContainerError, match="runs past|not a valid code"):
        decode_books(data[:-3], [16])
    with pytest.raises(ContainerError, match="order 40"):
        decode_books(bytes([40]) + data[1:], [16])
    with pytest.raises(ContainerError, match="ends at byte"):
        decode_books(data, [16, 1])
    with pytest.raises(ContainerError, match="codebooks end at byte"):
        decode_books(data + b"\0", [16])
    with pytest.raises(ContainerError, match="float32 values"):
        decode_books(bytes([RAW]) + bytes(7), [2])
    with pytest.raises(ContainerError, match="bytes for 9 shared values"):
        decode_books(bytes(1), [9])
    with pytest.raises(ContainerError, match="not coded as netquant codes it"):
        decode_books(bytes([1, 0xAA]), [4])  # four zeros at order 1: the encoder writes order 0
    beyond = "0" * 32 + format(2**32 + 1, "b")  # order 0, zigzag 2^32: the pattern 2^31, one past the last
    beyond += "0" * (-len(beyond) % 8)
    with pytest.raises(ContainerError, match="not a 32-bit pattern"):
        decode_books(bytes([0]) + int(beyond, 2).to_bytes(len(beyond) // 8, "big"), [1])
    assert decode_books(bytes([0, 0x80]), [1])[0].tolist() == [0.0]  # order 0, code "1": 0.0, 7 zero bits
    with pytest.raises(ContainerError, match="not padded with zero bits"):
        decode_books(bytes([0, 0x81]), [1])


def test_version_3_files_with_float32_shared_values_still_read(small_file):
    model = container.decode(small_file)
    old = _reframe(small_file, "BOOK", b"".join(b.astype("<f4").tobytes() for b in model.codebooks))
    old = bytearray(old)
    old[8:10] = struct.pack("<H", 3)
    old[12:16] = struct.pack("<I", zlib.crc32(bytes(old[:12])))
    again = container.decode(bytes(old))
    assert [b.tolist() for b in again.codebooks] == [b.tolist() for b in model.codebooks]
    assert all(np.array_equal(again.tensors[n].labels, model.tensors[n].labels) for n in model.tensors)
