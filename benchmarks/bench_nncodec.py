"""NNCodec (Fraunhofer HHI's MPEG NNR reference software) against this project's files.

    pip install -e ".[bench]"      # nncodec==2.1.3 (see the note on numpy below)
    OMP_NUM_THREADS=1 python benchmarks/bench_nncodec.py --network lenet5 [--part pipeline|lossless|both] \\
        [--qps -18 -20 ...] [--floors 99.42 99.27] [--data-root /work/shared/data] [--reference reference/cpu] \\
        [--repeat 3] [--threads 1] [--out reference/cpu/benchmarks/nncodec_lenet5.json]

pipeline: NNCodec's own quantizer and coder on our pruned network. The pruned network's file
(``<reference>/files/<network>/pruned.nqz``) is decoded; every float32 tensor of its state_dict is coded with
``nncodec.nnc.compress`` at each ``--qps`` value (dependent quantization on, NNCodec's defaults otherwise),
decoded with ``nncodec.nnc.decompress``, loaded into the network and evaluated on the full test set.
Given a dict of arrays, NNCodec codes the tensors of two or more dimensions at ``qp`` and all others (biases,
BatchNorm weight, bias, running mean and variance) at ``--nonweight-qp`` (its default -75, a step of about
2e-6), with no BatchNorm folding (that needs NNCodec's PyTorch-model path); it takes only float32 and int32
arrays, so BatchNorm's int64 ``num_batches_tracked`` (unused at evaluation) stays out and is kept as it is.
Ratio = 32 N / (8 * bitstream bytes), N the network's parameter count as netquant counts it. At each
accuracy floor (default: the floors of the network's Table 1 rows) NNCodec's best ratio is set beside ours:
the best ratio of our Table 1 rows (``<reference>/tables/table1.csv``) meeting the same floor, judged by the
accuracy of the row's file and by the row's accuracy (mean over its fine-tuning seeds).

lossless: NNCodec as the entropy coder of our quantized networks. For each Table 1 file of the network, the
labels of every quantized tensor become int32 signed ranks (see ``signed_ranks``: pruned = 0, the shared
values below 0 are -1, -2, ... and those above 0 are 1, 2, ... outward from 0), coded with NNCodec, which
codes int32 tensors as they are (no quantization: checked by decoding, exact equality is required). NNCodec's
size = its bitstream + 32 bits per shared value; ours = the file's BOOK, LTAB, LBIT, ITAB and IBIT sections
(framed bytes; the names and shapes in META and the unquantized tensors in PASS are left out, while NNCodec's
bitstream carries its own headers, names and shapes: ``nncodec_overhead_bytes`` estimates them by coding
all-zero tensors of the same names and shapes). Speeds are the best of ``--repeat`` runs, in weights per
second: elements of the quantized tensors (pruned ones included) over the seconds to encode the file with
its own codes / decode it, against ``nnc.compress`` / ``nnc.decompress``. Every file is also encoded with our
best codes (``BEST_CODE`` labels and positions) in this netquant's format (from version 4 the shared values
coded too, where a file of an earlier version stores them as float32), decoded back and checked to hold the
same network: its sections' bits (``best_bits``) and speeds are set beside NNCodec's.

Note: nncodec 2.1.3 declares numpy<2; installed with ``--no-deps`` next to numpy 2.4 it runs, and every
lossless result is checked exactly.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from nncodec import nnc

from netquant import compress, container, reference, train
from netquant.io import write_json
from netquant.qmodel import PRUNED, QuantizedModel
from timing import best_of

REPO = Path(__file__).resolve().parents[1]
# LeNet-5 reaches its pruned model's accuracy only at about qp -33; a ResNet-32 evaluation costs 40 s on one core
DEFAULT_QPS = {"lenet5": list(range(-16, -41, -1)), "resnet32": [-26, -29, -32, -35, -38]}
# the settings of NNCodec's own network API (nncodec.nn.encode) that nnc.compress does not default to
NNCODEC_OPTIONS = {"qp_density": 2, "row_skipping": True, "param_opt": True}
SECTIONS = ("BOOK", "LTAB", "LBIT", "ITAB", "IBIT")  # codebooks, label tables and streams, positions
BEST_CODE = "plane-context"  # our best label and index code, measured beside each file's own codes


def machine_info(threads: int) -> dict:
    """The machine and the software versions the numbers were measured with."""
    return {"machine": reference.machine_description(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "nncodec": importlib.metadata.version("nncodec"), "torch_threads": threads}


def nncodec_encode(arrays: dict[str, np.ndarray], qp: int, nonweight_qp: int) -> bytes:
    """NNCodec's bitstream of a dict of float32 / int32 arrays. Tensors of two or more dimensions are
    quantized at ``qp``, the others at ``nonweight_qp``; int32 tensors are coded as they are."""
    stream = nnc.compress(arrays, bitstream_path=None, qp=qp, nonweight_qp=nonweight_qp, use_dq=True,
                          return_bitstream=True, verbose=False, **NNCODEC_OPTIONS)
    return bytes(stream)


def nncodec_decode(stream: bytes) -> dict[str, np.ndarray]:
    """The arrays decoded from an NNCodec bitstream (``nnc.decompress`` only reads a bytearray)."""
    return nnc.decompress(bytearray(stream), verbose=False)


def table1_rows(reference_dir: Path, network: str) -> list[dict]:
    """The network's quantized Table 1 rows that have a file (not the original or pruned model)."""
    with open(reference_dir / "tables" / "table1.csv", newline="") as f:
        return [r for r in csv.DictReader(f)
                if r["network"] == network and r["path"] and r["row"] not in ("original", "pruned")]


def pruned_accuracy(reference_dir: Path, network: str) -> float:
    """The pruned model's accuracy as Table 1 gives it."""
    with open(reference_dir / "tables" / "table1.csv", newline="") as f:
        return next(float(r["accuracy"]) for r in csv.DictReader(f)
                    if r["network"] == network and r["row"] == "pruned")


def best_row(rows: list[dict], floor: float, accuracy_key: str) -> dict | None:
    """Our row of largest ratio whose ``accuracy_key`` meets ``floor`` (None if none does)."""
    meeting = [r for r in rows if r[accuracy_key] and float(r[accuracy_key]) >= floor - 1e-9]
    if not meeting:
        return None
    r = max(meeting, key=lambda r: float(r["ratio"]))
    return {"row": r["row"], "floor_name": r["floor_name"], "ratio": float(r["ratio"]),
            "accuracy": float(r["accuracy"]), "file_accuracy": float(r["file_accuracy"]), "path": r["path"]}


def best_point(points: list[dict], floor: float) -> dict | None:
    """NNCodec's point of largest ratio whose accuracy meets ``floor`` (None if none does)."""
    meeting = [p for p in points if p["accuracy"] >= floor - 1e-9]
    return max(meeting, key=lambda p: p["ratio"]) if meeting else None


def run_pipeline(args, reference_dir: Path) -> dict:
    """NNCodec's quantization and coding of the pruned network at each qp, evaluated as decoded."""
    pruned_path = reference_dir / "files" / args.network / "pruned.nqz"
    model, qmodel = compress.load_model(pruned_path)
    n_params = container.metrics(pruned_path)["n_params"]
    source = compress.test_source(qmodel.network, data_root=args.data_root)
    state = {n: t.clone() for n, t in model.state_dict().items()}
    floats = {n: t.numpy().copy() for n, t in state.items() if t.dtype == torch.float32}
    excluded = {n: str(t.dtype) for n, t in state.items() if n not in floats}
    weights = [n for n, a in floats.items() if a.ndim > 1]
    pruned_mask = {n: floats[n] == 0 for n in weights}

    start = time.perf_counter()
    measured = train.evaluate(model, source.test_batches(), device="cpu")["accuracy"]
    print(f"{args.network}: pruned model {measured:.2f}% ({time.perf_counter() - start:.0f} s to evaluate)")
    others = {n: a for n, a in floats.items() if n not in weights}
    nonweight_bytes = len(nncodec_encode(others, 0, args.nonweight_qp)) if others else 0  # no tensor at qp
    points = []
    for qp in args.qps:
        encode_s, stream = best_of(1, lambda: nncodec_encode(floats, qp, args.nonweight_qp))
        decode_s, decoded = best_of(1, lambda: nncodec_decode(stream))
        decoded = {n: decoded[n].reshape(a.shape) for n, a in floats.items()}
        model.load_state_dict({n: torch.from_numpy(decoded[n]) if n in floats else t for n, t in state.items()})
        result = train.evaluate(model, source.test_batches(), device="cpu")
        points.append({
            "qp": qp, "bytes": len(stream), "ratio": 32 * n_params / (8 * len(stream)),
            "accuracy": result["accuracy"], "loss": result["loss"], "encode_s": encode_s, "decode_s": decode_s,
            "pruned_made_nonzero": int(sum((decoded[n][m] != 0).sum() for n, m in pruned_mask.items())),
            "max_abs_error_weights": float(max(np.abs(decoded[n] - floats[n]).max() for n in weights)),
            "max_abs_error_others": float(max((np.abs(decoded[n] - a).max() for n, a in others.items()),
                                              default=0.0)),
        })
        p = points[-1]
        print(f"  qp {qp}: {p['bytes']} bytes, ratio {p['ratio']:.2f}, accuracy {p['accuracy']:.2f}%")

    rows = table1_rows(reference_dir, args.network)
    floors = args.floors or sorted({float(r["floor"]) for r in rows}, reverse=True)
    comparison = [{"floor": f, "nncodec": best_point(points, f),
                   "ours_by_file_accuracy": best_row(rows, f, "file_accuracy"),
                   "ours_by_row_accuracy": best_row(rows, f, "accuracy")} for f in floors]
    return {
        "input": str(pruned_path.relative_to(reference_dir)), "n_params": n_params,
        "pruned_accuracy_table1": pruned_accuracy(reference_dir, args.network),
        "pruned_accuracy_measured": measured,
        "settings": {"use_dq": True, "nonweight_qp": args.nonweight_qp, **NNCODEC_OPTIONS},
        "tensors": {"weights_at_qp": weights, "others_at_nonweight_qp": list(others),
                    "excluded_not_float32": excluded},
        "nonweight_only_bytes": nonweight_bytes,
        "points": points, "comparison": comparison,
    }


def signed_ranks(qmodel: QuantizedModel) -> dict[str, np.ndarray]:
    """Each quantized tensor's labels as int32 signed ranks of their shared values, in the tensor's shape.

    Pruned elements are 0. A shared value v is ranked outward from zero: the values below 0 are -1
    (the one nearest 0), -2, ...; the values above 0 are 1 (nearest 0), 2, ...; a shared value of exactly 0
    is 0 like the pruned elements, since both decode to 0. This maps the decoded network one to one (none
    of our codebooks holds 0: giving the shared value nearest 0 the symbol 0 of the pruned elements would
    change the network).
    """
    out = {}
    for name, t in qmodel.tensors.items():
        book = qmodel.codebooks[t.codebook]
        order = np.argsort(book, kind="stable")
        below, zero = int((book < 0).sum()), int((book == 0).sum())
        position = np.empty(len(book), dtype=np.int64)
        position[order] = np.arange(len(book))
        rank = np.where(book < 0, position - below, np.where(book > 0, position - below - zero + 1, 0))
        symbols = np.zeros(t.labels.size, dtype=np.int32)
        kept = t.labels != PRUNED
        symbols[kept] = rank[t.labels[kept]]
        out[name] = symbols.reshape(t.shape)
    return out


def values_of_ranks(qmodel: QuantizedModel, name: str, symbols: np.ndarray) -> np.ndarray:
    """The float32 values that signed ranks (see ``signed_ranks``) of tensor ``name`` stand for."""
    book = np.sort(qmodel.codebooks[qmodel.tensors[name].codebook])
    negative, positive = book[book < 0], book[book > 0]
    table = np.concatenate([negative, [np.float32(0)], positive])  # index = rank + len(negative)
    return table[symbols.astype(np.int64) + len(negative)].astype(np.float32)


def lossless_file(path: Path, repeat: int, nonweight_qp: int) -> dict:
    """Our file's codebook, label and position bits against NNCodec coding its labels as signed ranks."""
    data = path.read_bytes()
    m = container.metrics(path)
    qmodel = container.read(path)
    symbols = signed_ranks(qmodel)
    for name, s in symbols.items():
        if not np.array_equal(values_of_ranks(qmodel, name, s), qmodel.values(name)):
            raise RuntimeError(f"{path}: the signed ranks of {name} do not give back its values")

    ours_encode_s, encoded = best_of(repeat, lambda: container.Encoding(qmodel, m["index_bound"]).file(
        m["label_code"], m["index_code"]))
    # the same sections but BOOK (before format version 4 a file stores its shared values as float32) and the
    # same shared values
    encoded_file, the_file = container.parse(encoded), container.parse(data)
    same_values = all(np.array_equal(a.view(np.uint32), b.view(np.uint32))
                      for a, b in zip(container.decode(encoded).codebooks, qmodel.codebooks))
    compared = [t for t in container.SECTIONS if t != "BOOK" or the_file.version >= 4]
    if not same_values or any(encoded_file.sections[t] != the_file.sections[t] for t in compared):
        raise RuntimeError(f"{path}: encoding with {m['label_code']} / {m['index_code']} does not give the file")
    ours_decode_s, _ = best_of(repeat, lambda: container.decode(data))
    nnc_encode_s, stream = best_of(repeat, lambda: nncodec_encode(symbols, 0, nonweight_qp))  # no tensor at qp
    nnc_decode_s, decoded = best_of(repeat, lambda: nncodec_decode(stream))
    for name, s in symbols.items():
        got = decoded[name].reshape(s.shape)
        if got.dtype != np.int32 or not np.array_equal(got, s):
            raise RuntimeError(f"{path}: NNCodec did not give back the int32 symbols of {name} exactly "
                               f"(dtype {got.dtype}, {int((got != s).sum())} differ)")
    overhead = len(nncodec_encode({n: np.zeros_like(s) for n, s in symbols.items()}, 0, nonweight_qp))

    breakdown = {s: 8 * m["section_bytes"][s] for s in SECTIONS}
    ours_bits = sum(breakdown.values())
    # our best code on the same network: the plane-context labels and positions, a real file decoded back
    best_encode_s, best = best_of(repeat, lambda: container.Encoding(qmodel, m["index_bound"]).file(
        BEST_CODE, BEST_CODE))
    best_decode_s, again = best_of(repeat, lambda: container.decode(best))
    if any(not np.array_equal(again.values(n), qmodel.values(n)) for n in qmodel.tensors):
        raise RuntimeError(f"{path}: the {BEST_CODE} file does not decode to the same network")
    best_bits = sum(8 * container.parse(best).section_bytes[s] for s in SECTIONS)
    shared_values = sum(len(b) for b in qmodel.codebooks)
    nnc_bits = 8 * len(stream) + 32 * shared_values
    weights = sum(s.size for s in symbols.values())
    return {
        "file": path.name, "label_code": m["label_code"], "index_code": m["index_code"],
        "weights": weights, "kept": m["n_quantized"], "shared_values": shared_values,
        "max_abs_symbol": int(max(np.abs(s).max() for s in symbols.values())),
        "ours_bits": ours_bits, "ours_breakdown_bits": breakdown,
        "nncodec_bits": nnc_bits, "nncodec_stream_bytes": len(stream), "nncodec_overhead_bytes": overhead,
        "ours_over_nncodec": ours_bits / nnc_bits,
        "best_code": BEST_CODE, "best_bits": best_bits, "best_over_nncodec": best_bits / nnc_bits,
        "best_encode_weights_per_s": weights / best_encode_s, "best_decode_weights_per_s": weights / best_decode_s,
        "ours_encode_weights_per_s": weights / ours_encode_s, "ours_decode_weights_per_s": weights / ours_decode_s,
        "nncodec_encode_weights_per_s": weights / nnc_encode_s,
        "nncodec_decode_weights_per_s": weights / nnc_decode_s,
        "seconds": {"ours_encode": ours_encode_s, "ours_decode": ours_decode_s, "nncodec_encode": nnc_encode_s,
                    "nncodec_decode": nnc_decode_s, "best_encode": best_encode_s, "best_decode": best_decode_s},
    }


def run_lossless(args, reference_dir: Path) -> dict:
    """``lossless_file`` for every Table 1 file of the network."""
    paths = sorted(p for p in (reference_dir / "files" / args.network).glob("*.nqz") if p.name != "pruned.nqz")
    files = []
    for path in paths:
        files.append(lossless_file(path, args.repeat, args.nonweight_qp))
        f = files[-1]
        print(f"  {f['file']}: ours {f['ours_bits']} bits, {BEST_CODE} {f['best_bits']} bits, NNCodec "
              f"{f['nncodec_bits']} bits ({f['ours_over_nncodec']:.3f}, {f['best_over_nncodec']:.3f})")
    return {"symbols": "signed ranks of the shared values, pruned = 0 (see signed_ranks)",
            "ours_sections": list(SECTIONS), "repeat": args.repeat, "files": files}


def markdown(network: str, result: dict) -> str:
    """Short Markdown tables of the results."""
    lines = []
    if "pipeline" in result:
        p = result["pipeline"]
        lines += [f"NNCodec on the pruned {network} ({p['pruned_accuracy_measured']:.2f}%, N = {p['n_params']:,})",
                  "", "| qp | accuracy | ratio | bytes |", "|---|---|---|---|"]
        lines += [f"| {x['qp']} | {x['accuracy']:.2f} | {x['ratio']:.2f} | {x['bytes']} |" for x in p["points"]]
        lines += ["", "| floor | NNCodec: ratio (qp, accuracy) | ours by file accuracy: ratio (row) "
                  "| ours by row accuracy: ratio (row) |", "|---|---|---|---|"]
        for c in p["comparison"]:
            n, a, b = c["nncodec"], c["ours_by_file_accuracy"], c["ours_by_row_accuracy"]
            cells = ["none" if n is None else f"{n['ratio']:.2f} ({n['qp']}, {n['accuracy']:.2f}%)",
                     *["none" if r is None else f"{r['ratio']:.2f} ({r['row']}-{r['floor_name']})" for r in (a, b)]]
            lines.append(f"| {c['floor']} | " + " | ".join(cells) + " |")
        lines.append("")
    if "lossless" in result:
        lines += [f"NNCodec as the lossless coder of the {network} Table 1 files (kbit; speeds in M weights/s)",
                  "", f"| file | its codes | {BEST_CODE} | NNCodec | {BEST_CODE} / NNCodec | "
                  f"enc {BEST_CODE} / NNCodec | dec {BEST_CODE} / NNCodec |", "|---|---|---|---|---|---|---|"]
        for f in result["lossless"]["files"]:
            lines.append(f"| {f['file']} | {f['ours_bits'] / 1e3:.1f} | {f['best_bits'] / 1e3:.1f} | "
                         f"{f['nncodec_bits'] / 1e3:.1f} | {f['best_over_nncodec']:.3f} | "
                         f"{f['best_encode_weights_per_s'] / 1e6:.2f} / {f['nncodec_encode_weights_per_s'] / 1e6:.2f}"
                         f" | {f['best_decode_weights_per_s'] / 1e6:.2f} / {f['nncodec_decode_weights_per_s'] / 1e6:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--network", required=True, choices=sorted(DEFAULT_QPS))
    ap.add_argument("--part", choices=["pipeline", "lossless", "both"], default="both")
    ap.add_argument("--qps", type=int, nargs="+", help="NNCodec qp values (default: per network)")
    ap.add_argument("--nonweight-qp", type=int, default=-75, help="qp of 1-D tensors (NNCodec's default)")
    ap.add_argument("--floors", type=float, nargs="+", help="accuracy floors, %% (default: Table 1's)")
    ap.add_argument("--data-root", default="data", help="MNIST / CIFAR-10 in torchvision's layout")
    ap.add_argument("--reference", default="reference/cpu", help="the reference folder (files/, tables/)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each coder (lossless part)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="default: <reference>/benchmarks/nncodec_<network>.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.qps = args.qps or DEFAULT_QPS[args.network]
    reference_dir = (REPO / args.reference).resolve()
    out = Path(args.out) if args.out else reference_dir / "benchmarks" / f"nncodec_{args.network}.json"

    # a part not run now keeps its earlier result (the machine and version fields are this run's)
    earlier = json.loads(out.read_text()) if out.exists() else {}
    if earlier and earlier.get("network") != args.network:
        raise SystemExit(f"{out} holds results of {earlier.get('network')}, not {args.network}: give another --out")
    kept = [part for part in ("pipeline", "lossless") if part in earlier and args.part not in (part, "both")]
    result = {"network": args.network, **machine_info(args.threads), **{part: earlier[part] for part in kept}}
    for part, run in (("pipeline", run_pipeline), ("lossless", run_lossless)):
        if args.part in (part, "both"):
            start = time.perf_counter()
            result[part] = run(args, reference_dir)
            result[part]["wall_s"] = time.perf_counter() - start
    write_json(out, result)
    print(markdown(args.network, result))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
