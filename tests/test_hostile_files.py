"""A .nqz file is untrusted input: crafted and damaged files are refused quickly, in bounded memory.

Every file here is read in a child process whose address space is capped (``resource.setrlimit``), so a
reader that tried to allocate what a file claims would fail the test instead of the machine; the child
reports each file's outcome, its time and the growth of its peak memory.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from netquant import container
from netquant.qmodel import PRUNED, QuantizedModel, QuantizedTensor

SECONDS = 0.5  # per refusal
MEMORY_MB = 100  # peak growth over the interpreter with netquant imported, for all files together


def _varints(*values: int) -> bytes:
    out = bytearray()
    for value in values:
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                break
    return bytes(out)


def _framed(meta: bytes, *, book: bytes = b"", ltab: bytes = b"", lbit: bytes = b"", itab: bytes = b"",
            ibit: bytes = b"", pass_: bytes = b"", compressed_meta: bytes | None = None) -> bytes:
    """A well-framed version-2 file (right lengths and CRCs) with the given section payloads."""
    head = container.MAGIC + struct.pack("<HH", 2, len(container.SECTIONS))
    out = bytearray(head + struct.pack("<I", zlib.crc32(head)))
    payloads = [zlib.compress(meta, 9) if compressed_meta is None else compressed_meta, book, ltab, lbit, itab,
                ibit, pass_]
    for tag, payload in zip(container.SECTIONS, payloads):
        framed = tag.encode() + struct.pack("<I", len(payload)) + payload
        out += framed + struct.pack("<I", zlib.crc32(framed))
    return bytes(out)


def _quantized(name: bytes, shape, kept: int, book: int = 0) -> bytes:
    return _varints(len(name)) + name + b"\x03" + _varints(len(shape), *shape, book, kept)


def _passthrough(name: bytes, shape, dtype: bytes = b"<f4") -> bytes:
    return _varints(len(name)) + name + b"\x02" + _varints(len(shape), *shape, len(dtype)) + dtype


def _meta(entries: list[bytes], *, books=(2,), label_code=1, index_code=0, streams=None, index=(0, 0)) -> bytes:
    """META of the layout in netquant/container/format.py: codes, codebooks, entries, stream records."""
    records = b"".join(_varints(bits) + b"\0\0\0\0" for bits in (streams if streams is not None else [0] * len(books)))
    return (_varints(label_code, index_code, 32, len(books), *books, len(entries)) + b"".join(entries) + records
            + _varints(*index) + b"\0\0\0\0" + _varints(2) + b"{}")


def _zlib_bomb(inflated_mb: int) -> bytes:
    packer = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    return b"".join(packer.compress(chunk) for _ in range(inflated_mb)) + packer.flush()


def hostile_files() -> dict[str, bytes]:
    """Crafted files, each claiming more than it holds, by name; every one must be refused."""
    book = np.array([-1.0, 1.0], "<f4").tobytes()
    files = {
        "dense tensor of 10^12 elements": _framed(_meta([_quantized(b"w", [10**6, 10**6], 10**12)]), book=book,
                                                 ltab=b"\x02\x02"),
        "dense tensor of 3*10^9 elements": _framed(_meta([_quantized(b"w", [3 * 10**9], 3 * 10**9)]), book=book,
                                                  ltab=b"\x02\x02"),
        "shape whose product is 2^93": _framed(_meta([_quantized(b"w", [2**31, 2**31, 2**31], 1)]), book=book,
                                              ltab=b"\x02\x02"),
        "passthrough of 10^12 floats": _framed(_meta([_passthrough(b"b", [10**12])], books=())),
        "sparse tensor with 10^9 positions": _framed(_meta([_quantized(b"w", [10**9], 10)], index=(10, 40)),
                                                    book=book, ltab=b"\x02\x02", ibit=bytes(5)),
        "500,000 empty codebooks": _framed(_meta([_quantized(b"w", [4], 0)], books=[0] * 500_000)),
        "index symbols beyond the positions": _framed(_meta([_quantized(b"w", [100], 10)], index=(10**9, 8)),
                                                     book=book, ltab=b"\x02\x02", ibit=b"\0"),
        "more labels than bits": _framed(_meta([_quantized(b"w", [10**6], 10**6)], streams=[8]), book=book,
                                        ltab=b"\x02\x02", lbit=b"\0"),
        "1,000 dimensions": _framed(_meta([_quantized(b"w", [1] * 1000, 1)]), book=book, ltab=b"\x02\x02"),
        "duplicate names": _framed(_meta([_passthrough(b"b", [1]), _passthrough(b"b", [1])], books=()),
                                   pass_=bytes(8)),
        "empty name": _framed(_meta([_passthrough(b"", [1])], books=()), pass_=bytes(4)),
        "zlib bomb in META": _framed(b"", compressed_meta=_zlib_bomb(64)),
        "a million entries announced": _framed(_varints(1, 0, 32, 0, 10**6)),
        "binary dtype": _framed(_meta([_passthrough(b"b", [1], b"\xff\xfe<f4")], books=()), pass_=bytes(4)),
        "object dtype": _framed(_meta([_passthrough(b"b", [1], b"|O")], books=()), pass_=bytes(8)),
        "ans counts of 10^6 symbols": _framed(_meta([_quantized(b"w", [4], 4)], label_code=2, books=[10**6]),
                                              book=bytes(4 * 10**6)),
    }
    return files


CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from netquant import container

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))
start_mb, results = peak_mb(), {}
for path in sorted(Path(sys.argv[1]).iterdir()):
    data = path.read_bytes()
    t0 = time.perf_counter()
    try:
        container.decode(data)
        outcome = "decoded"
    except container.ContainerError as exc:
        outcome = "ContainerError: " + str(exc)
    except BaseException as exc:
        outcome = type(exc).__name__ + ": " + str(exc)[:300]
    results[path.name] = {"outcome": outcome, "seconds": time.perf_counter() - t0}
print(json.dumps({"results": results, "growth_mb": peak_mb() - start_mb}))
"""


def read_in_child(folder) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, str(folder)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_hostile_files_are_refused_fast_in_bounded_memory(tmp_path):
    files = hostile_files()
    names = {}
    for i, (what, data) in enumerate(files.items()):
        (tmp_path / f"{i:02d}.nqz").write_bytes(data)
        names[f"{i:02d}.nqz"] = what
    report = read_in_child(tmp_path)
    for file, result in report["results"].items():
        what = names[file]
        assert result["outcome"].startswith("ContainerError: "), (what, result["outcome"])
        message = result["outcome"].removeprefix("ContainerError: ")
        assert "\n" not in message and message.isascii(), (what, message)
        assert result["seconds"] < SECONDS, (what, result)
    assert report["growth_mb"] < MEMORY_MB, report["growth_mb"]


def test_refusals_name_what_is_wrong():
    files = hostile_files()
    expected = {
        "dense tensor of 10^12 elements": "'w', 1,000,000,000,000",
        "shape whose product is 2^93": "'w'",
        "500,000 empty codebooks": "500,000 codebooks for 1 quantized entries",
        "duplicate names": "repeated name 'b'",
        "empty name": "empty name",
        "zlib bomb in META": "section META: inflates to more than",
        "1,000 dimensions": "1000 dimensions",
        "binary dtype": "unsupported dtype",
        "object dtype": "unsupported dtype",
        "index symbols beyond the positions": "index symbols",
        "more labels than bits": "1,000,000 labels announced in 8 bits",
    }
    for what, fragment in expected.items():
        with pytest.raises(container.ContainerError, match=None) as caught:
            container.decode(files[what])
        assert fragment in str(caught.value), (what, str(caught.value))


def test_the_element_limit_can_be_raised_for_a_valid_file():
    # a valid file of 2^21 equal weights, coded in almost nothing, is beyond the default limit of its size
    n = 1 << 21
    q = QuantizedModel([np.array([0.5], np.float32)], {"w": QuantizedTensor((n,), 0, np.zeros(n, np.int32))},
                       {}, ["w"], ["w"])
    data = container.encode(q, label_code="ans")
    with pytest.raises(container.ContainerError, match="max_elements"):
        container.decode(data)
    assert container.decode(data, max_elements=n).n_params == n


def _small_model() -> QuantizedModel:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, (8, 12)).astype(np.int32)
    labels[rng.random((8, 12)) < 0.6] = PRUNED
    return QuantizedModel([np.array([-1.0, -0.1, 0.1, 1.0], np.float32)],
                          {"w": QuantizedTensor((8, 12), 0, labels.reshape(-1))},
                          {"b": np.arange(3, dtype=np.float32), "n": np.array(3, np.int64)}, ["w", "b", "n"],
                          ["w", "b"], network={"arch": "lenet5"})


def _mutations(rng: np.random.Generator, files: list[bytes], count: int):
    """Damaged files: random bytes changed, truncated, inserted, and - the ones that pass the CRCs - META
    (inflated) or another section changed and framed again."""
    sections = list(container.SECTIONS)
    for _ in range(count):
        data = bytearray(files[rng.integers(len(files))])
        kind = rng.integers(5)
        if kind == 0:
            for _ in range(rng.integers(1, 6)):
                data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
            yield bytes(data)
            continue
        if kind == 1:
            yield bytes(data[: rng.integers(len(data))])
            continue
        parsed = container.parse(bytes(data))
        payloads = {tag: bytearray(parsed.sections[tag]) for tag in sections}
        payloads["META"] = bytearray(zlib.decompress(parsed.sections["META"]))
        tag = "META" if kind in (2, 3) else sections[rng.integers(1, len(sections))]
        target = payloads[tag]
        for _ in range(rng.integers(1, 4)):
            if not target or rng.random() < 0.3:
                target[rng.integers(len(target) + 1):0] = rng.bytes(int(rng.integers(1, 6)))
            elif rng.random() < 0.5:
                target[rng.integers(len(target))] = int(rng.integers(256))
            else:
                del target[rng.integers(len(target))]
        yield _framed(bytes(payloads["META"]), book=bytes(payloads["BOOK"]), ltab=bytes(payloads["LTAB"]),
                      lbit=bytes(payloads["LBIT"]), itab=bytes(payloads["ITAB"]), ibit=bytes(payloads["IBIT"]),
                      pass_=bytes(payloads["PASS"]))


FUZZ_CHILD = r"""
import json, resource, sys, time, zlib
from pathlib import Path
from netquant import container

vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
blob = Path(sys.argv[1]).read_bytes()
pos, bad, slowest, counts = 0, [], 0.0, {"refused": 0, "decoded": 0}
while pos < len(blob):
    n = int.from_bytes(blob[pos:pos + 4], "little"); data = blob[pos + 4:pos + 4 + n]; pos += 4 + n
    t0 = time.perf_counter()
    try:
        try:
            q = container.decode(data)
        finally:
            slowest = max(slowest, time.perf_counter() - t0)  # the reading is timed, not the check below
        counts["decoded"] += 1
        again = container.decode(container.encode(q, label_code=container.parse(data).label_code,
                                                  index_code=container.parse(data).index_code))
        if any(not (a == b).all() for a, b in zip(q.state_dict().values(), again.state_dict().values())):
            bad.append(("decodes to content that does not round-trip", data.hex()))
    except container.ContainerError as exc:
        counts["refused"] += 1
        if "\n" in str(exc) or not str(exc).isascii():
            bad.append(("message", str(exc)[:200]))
    except BaseException as exc:
        bad.append((type(exc).__name__ + ": " + str(exc)[:200], data.hex()))
growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - start
print(json.dumps({"bad": bad[:5], "n_bad": len(bad), "slowest": slowest, "growth_mb": growth, **counts}))
"""


@pytest.mark.parametrize("label_code,index_code", [("huffman", "deep-compression"), ("ans", "mask-ans"),
                                                   ("ans-layer", "mask-context"), ("fixed", "mask-ans"),
                                                   ("plane-context", "plane-context")])
def test_ten_thousand_damaged_files_are_refused_cleanly(tmp_path, label_code, index_code):
    rng = np.random.default_rng(zlib.crc32(f"{label_code}/{index_code}".encode()))
    originals = [container.encode(_small_model(), label_code=label_code, index_code=index_code),
                 container.encode(QuantizedModel([np.array([0.25, 2.0], np.float32)],
                                                 {"a": QuantizedTensor((5,), 0, np.array([0, 1, 1, 0, 1], np.int32))},
                                                 {}, ["a"], ["a"]), label_code=label_code, index_code=index_code)]
    blob = b"".join(len(f).to_bytes(4, "little") + f for f in _mutations(rng, originals, 2500))
    (tmp_path / "fuzz.bin").write_bytes(blob)
    run = subprocess.run([sys.executable, "-c", FUZZ_CHILD, str(tmp_path / "fuzz.bin")], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["n_bad"] == 0, report["bad"]
    assert report["refused"] + report["decoded"] == 2500
    assert report["slowest"] < SECONDS and report["growth_mb"] < MEMORY_MB, report
