"""Size accounting of a compressed file: its measured ratio, the paper's eq. (1) breakdown, the average
codeword length under each label code and the index bits under each index code."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from netquant import coding
from netquant.container.binary import ContainerError
from netquant.container.codes import fixed_width
from netquant.container.format import Decoded, Encoding, Parsed, decode_parsed, parse
from netquant.vocabulary import INDEX_CODES


def metrics(source: str | os.PathLike | bytes) -> dict[str, Any]:
    """Size accounting of a .nqz file (path or bytes); JSON-serialisable.

    Keys:
      file_bytes, file_bits, n_params (N: all parameters, as the paper counts), n_quantized (unpruned
      quantized weights, the paper's sum |C_i|), n_pruned, n_passthrough_params, n_buffer_elements,
      codebook_sizes;
      ratio_file = 32 N / file_bits; bits_per_param = file_bits / N;
      section_bytes: framed bytes of the header and of every section (they sum to file_bytes);
      eq1: the paper's eq. (1) terms in bits - codeword_bits (sum |C_i| b_i: the label streams),
        table_bits (the decoding table's codewords: sum of b_i over the clusters of each codebook,
        k b for fixed-length; for ans the bits of the stored counts; 0 for raw), shared_value_bits (32 per codebook entry), index_bits (index stream + its
        table), unquantized_bits (32-bit parameters left unquantized; buffers such as BatchNorm running
        statistics are in the file but not in eq. (1)), total_bits; ratio_eq1 = 32 N / total_bits;
      bits_per_weight: average codeword length per quantized weight - fixed, huffman, ans (a real
        constriction stream), entropy, in_file (the code used); only in_file for raw;
      label_entropy_bits: empirical entropy of the labels per quantized weight (per codebook, weighted);
      index_bits_per_kept: index bits (stream + table) per quantized weight for deep-compression (with
        this file's bound) and mask-ans, and the mask entropy bound (sum size * H(kept/size)).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        parsed = parse(bytes(source))
        return file_metrics(parsed, decode_parsed(parsed))
    try:
        parsed = parse(Path(source).read_bytes())
        return file_metrics(parsed, decode_parsed(parsed))
    except ContainerError as exc:
        raise ContainerError(f"{source}: {exc}") from None


def file_metrics(p: Parsed, decoded: Decoded, encoding: Encoding | None = None) -> dict[str, Any]:
    """:func:`metrics` of a parsed file and what it decodes to. The sizes under the codes the file does
    not use come from ``encoding`` (the model's streams under every code, each computed once; made here
    when not given)."""
    q = decoded.model
    encoding = Encoding(q, p.index_bound) if encoding is None else encoding
    streams = encoding.symbols
    n_kept = sum(s.size for s in streams)
    n_params = q.n_params
    params = set(q.param_names)

    def per(bits: float) -> float:  # bits per quantized (unpruned) weight
        return bits / n_kept if n_kept else 0.0

    label_bits = sum(p.label_bits)
    table_bits = sum(decoded.label_table_bits)
    if p.label_code == "raw":
        shared_bits = 0
        bits_per_weight = {"in_file": per(label_bits)}
        entropy = None
    else:
        ks = [len(b) for b in q.codebooks]
        counts = [coding.symbol_counts(s, k) for s, k in zip(streams, ks)]
        huffman = [coding.huffman_lengths(c) for c in counts]
        shared_bits = 32 * sum(ks)
        bits_per_weight = {
            "fixed": per(sum(s.size * fixed_width(k) for s, k in zip(streams, ks))),
            "huffman": per(sum(int(np.dot(c, np.maximum(h, 0))) for c, h in zip(counts, huffman))),
            "ans": per(sum(8 * len(data) for _, data, _, _ in encoding.labels("ans"))),
            "ans_layer": per(sum(8 * len(data) for _, data, _, _ in encoding.labels("ans-layer"))),
            "entropy": per(sum(s.size * coding.entropy_bits(c) for s, c in zip(streams, counts))),
            "in_file": per(label_bits),
        }
        entropy = bits_per_weight["entropy"]

    index_bits = p.index_bits + 8 * len(p.sections["ITAB"])
    unquantized_bits = sum(8 * np.asarray(a).nbytes for n, a in q.passthrough.items() if n in params)
    eq1 = {
        "codeword_bits": label_bits,
        "table_bits": table_bits,
        "shared_value_bits": shared_bits,
        "index_bits": index_bits,
        "unquantized_bits": unquantized_bits,
    }
    eq1["total_bits"] = sum(eq1.values())

    masks = encoding.masks
    index_per_code = {}
    for code in INDEX_CODES:
        if code == p.index_code:
            bits = index_bits
        else:
            table, _, _, nbits = encoding.index(code)
            bits = nbits + 8 * len(table)
        index_per_code[code] = per(bits)
    index_per_code["entropy"] = per(coding.mask_entropy_bits([m.size for m in masks], [int(m.sum()) for m in masks]))

    file_bits = 8 * p.file_bytes
    return {
        "format_version": p.version,
        "description": dict(q.network),
        "label_code": p.label_code,
        "index_code": p.index_code,
        "index_bound": p.index_bound,
        "file_bytes": p.file_bytes,
        "file_bits": file_bits,
        "n_params": n_params,
        "n_quantized": n_kept,
        "n_pruned": sum(int((~t.mask).sum()) for t in q.tensors.values()),
        "n_passthrough_params": sum(int(np.asarray(a).size) for n, a in q.passthrough.items() if n in params),
        "n_buffer_elements": sum(int(np.asarray(a).size) for n, a in q.passthrough.items() if n not in params),
        "codebook_sizes": [len(b) for b in q.codebooks],
        "ratio_file": 32 * n_params / file_bits,
        "bits_per_param": file_bits / n_params if n_params else 0.0,
        "section_bytes": dict(p.section_bytes),
        "eq1": eq1,
        "ratio_eq1": 32 * n_params / eq1["total_bits"] if eq1["total_bits"] else math.inf,
        "bits_per_weight": bits_per_weight,
        "label_entropy_bits": entropy,
        "index_bits_per_kept": index_per_code,
    }


def eq1_ratio(cluster_sizes, code_lengths, *, n_params: int | None = None, index_bits: int = 0,
              b: int = 32) -> float:
    """The paper's eq. (1): ``N b / (sum_i (|C_i| + 1) b_i + k b + index_bits)``.

    ``cluster_sizes`` |C_i| and ``code_lengths`` b_i: one entry per cluster (k of them);
    ``n_params`` N defaults to ``sum |C_i|`` (an unpruned model).
    """
    sizes = np.asarray(cluster_sizes, dtype=np.int64)
    lengths = np.asarray(code_lengths, dtype=np.int64)
    if sizes.shape != lengths.shape:
        raise ValueError(f"{sizes.size} cluster sizes but {lengths.size} code lengths")
    n = int(sizes.sum()) if n_params is None else n_params
    return n * b / (int(((sizes + 1) * lengths).sum()) + sizes.size * b + index_bits)
