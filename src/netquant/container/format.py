"""The file format of compressed models (``.nqz``): encode, write, parse, read, verify, decode.

(Longer than the project's other files, on purpose: the byte layout below, the writer and the reader
must change together, and one file keeps them side by side.)

A file holds a ``QuantizedModel`` (see ``netquant.qmodel``): the codebooks, the labels of the unpruned
elements of every quantized tensor, the positions of those elements, and the passthrough tensors.

Labels: one label stream per codebook. With all layers quantized together (one codebook, the paper's
setting) the labels of the unpruned elements of all tensors, taken in state_dict order and row-major
within a tensor, form one stream coded with one table; with one codebook per layer (Deep Compression)
every codebook has its own stream and table.

Label codes (``label_code``): ``huffman`` (canonical, code lengths stored), ``fixed`` (ceil(log2 k) bits),
``ans`` (rANS, integer symbol counts stored), ``ans-layer`` (rANS, a tensor with its own counts where that
pays), and ``raw``: the 32-bit value of every unpruned element, no codebook stored - the
pruned-but-unquantized model (see ``from_pruned``).
Index codes (``index_code``): ``deep-compression`` (bounded relative index, Huffman coded; ``index_bound``,
default 32), ``mask-ans`` (per-tensor Bernoulli-modelled masks, ANS coded) and ``mask-context`` (per-row
counts stored, column statistics adaptive, ANS coded). See ``netquant.coding``.
A tensor with no pruned element is marked dense and has no positions coded.

File layout (all integers little-endian; varint = unsigned LEB128):

    header (16 bytes)
      0   8  magic  89 4E 51 5A 0D 0A 1A 0A  ("\\x89NQZ\\r\\n\\x1a\\n")
      8   2  u16 format version (3; version 2 has no constant entries, version 1 no network description)
      10  2  u16 number of sections (7)
      12  4  u32 CRC32 of bytes 0..11
    7 sections, in this order, each framed as
      0   4  tag (ASCII)
      4   4  u32 payload length L
      8   L  payload
      8+L 4  u32 CRC32 of tag, length and payload

    META  zlib-compressed:
            varint label code (0 fixed, 1 huffman, 2 ans, 3 raw, 4 ans-layer), varint index code
            (0 deep-compression, 1 mask-ans, 2 mask-context), varint index bound,
            varint number of codebooks, varint size of each (0 with the raw code),
            varint number of entries, then per state_dict entry in order:
              varint name length, UTF-8 name, u8 flags (bit 0 quantized, bit 1 nn.Parameter, bit 2
              constant: a passthrough entry whose elements are all one value, stored once in PASS),
              varint ndim, varint dims...,
              quantized: varint codebook, varint number of unpruned elements;
              passthrough: varint length, numpy dtype string (e.g. "<f4", "<i8", "|b1"),
            per label stream (one per codebook): varint bits, u32 CRC32 of the decoded stream
              (int32 labels, or float32 values with the raw code),
            index stream: varint symbols, varint bits, u32 CRC32 of the decoded masks (np.packbits of
              the masks of the sparse tensors, concatenated),
            varint length, UTF-8 JSON object describing the network (version 2; may be "{}")
    BOOK  codebooks, float32, concatenated (empty with the raw code)
    LTAB  per label stream: huffman: k bytes (code length + 1; 0 = symbol absent);
          ans: k varints (symbol counts, the model); ans-layer: k varints (the stream's counts), then per
          tensor of the stream in order a byte 0 (the stream's counts) or 1 and its own k varints;
          fixed, raw: nothing
    LBIT  label streams, each padded to whole bytes, concatenated
    ITAB  deep-compression: varint n, n bytes (code length + 1) of the index symbols 0..n-1
          (empty when no position is coded); mask-ans: empty; mask-context: per sparse tensor that keeps
          some but not all of its elements, in order, a byte 0 (coded as by mask-ans) or 1 followed by
          the varint kept count of each of its rows (coded with the context model)
    IBIT  index stream
    PASS  passthrough tensors, in order, raw little-endian C-order bytes (one element of a constant one)

Every section and the decoded content of every stream carry a CRC32, so a truncated, bit-flipped or
foreign file raises ``ContainerError`` naming what is wrong; it never decodes to a wrong model.
Quantized tensors decode to float32.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netquant import coding
from netquant.io import write_bytes
from netquant.qmodel import PRUNED, QuantizedModel, QuantizedTensor

MAGIC = b"\x89NQZ\r\n\x1a\n"
VERSION = 3  # 3 adds constant entries, 2 the network description; versions 1 and 2 are still read
READABLE_VERSIONS = (1, 2, 3)
SECTIONS = ("META", "BOOK", "LTAB", "LBIT", "ITAB", "IBIT", "PASS")
LABEL_CODES = coding.LABEL_CODES
INDEX_CODES = coding.INDEX_CODES
DEFAULT_INDEX_BOUND = 32  # 2^5, Deep Compression's bound for fc layers; see save()
META_LIMIT = 4 << 20  # bytes of META once inflated: about 50,000 tensors' entries; a zlib bomb stops here
MAX_DIMS = 32
ELEMENT_ALLOWANCE = 1 << 20  # see element_limit
ELEMENTS_PER_BYTE = 1024
_HEADER = struct.Struct("<8sHHI")
_FRAME = struct.Struct("<4sI")


class ContainerError(ValueError):
    """The file is not a valid .nqz file: the message says what is wrong and where, on one line of ASCII
    (whatever bytes of the file it quotes are escaped)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.encode("ascii", "backslashreplace").decode("ascii").split()))


# --------------------------------------------------------------------------------------------------
# small serialisation helpers


def _varints(values) -> bytes:
    out = bytearray()
    for value in values:
        value = int(value)
        if value < 0:
            raise ValueError(f"varint must be >= 0, got {value}")
        while True:
            byte = value & 0x7F
            value >>= 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                break
    return bytes(out)


class _Reader:
    """Sequential reader over a section payload; every overrun is a ContainerError naming the section."""

    def __init__(self, data: bytes, section: str) -> None:
        self.data, self.pos, self.section = data, 0, section

    def _need(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise ContainerError(f"section {self.section}: content ends at byte {len(self.data)}, "
                                 f"{n} more bytes needed at byte {self.pos}")

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            self._need(1)
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ContainerError(f"section {self.section}: malformed varint at byte {self.pos}")

    def count(self, what: str, min_bytes: int = 1) -> int:
        """A varint count of items that take at least ``min_bytes`` each in what is left of the section."""
        n = self.varint()
        if n * min_bytes > len(self.data) - self.pos:
            raise ContainerError(f"section {self.section}: {n:,} {what} announced at byte {self.pos}, but "
                                 f"only {len(self.data) - self.pos:,} bytes follow")
        return n

    def varints(self, n: int, what: str) -> np.ndarray:
        """``n`` consecutive varints (each < 2^63) as int64, decoded at once."""
        if n > len(self.data) - self.pos:
            raise ContainerError(f"section {self.section}: {n:,} {what} announced at byte {self.pos}, but "
                                 f"only {len(self.data) - self.pos:,} bytes follow")
        raw = np.frombuffer(self.data, np.uint8, count=min(len(self.data) - self.pos, 9 * n), offset=self.pos)
        ends = np.flatnonzero(raw < 0x80)[:n]
        if ends.size < n:
            raise ContainerError(f"section {self.section}: content ends inside the {what} at byte {self.pos}")
        starts = np.concatenate([[0], ends[:-1] + 1]) if n else ends
        if n and (ends - starts).max() > 8:
            raise ContainerError(f"section {self.section}: malformed varint among the {what} at byte {self.pos}")
        values = np.zeros(n, np.int64)
        for j in range(int((ends - starts).max()) + 1 if n else 0):
            at = starts + j
            use = at <= ends
            values[use] |= (raw[at[use]].astype(np.int64) & 0x7F) << (7 * j)
        self.pos += int(ends[-1]) + 1 if n else 0
        return values

    def take(self, n: int) -> bytes:
        self._need(n)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def done(self) -> None:
        if self.pos != len(self.data):
            raise ContainerError(f"section {self.section}: {len(self.data) - self.pos} unexpected bytes at the end")


def element_limit(file_bytes: int) -> int:
    """The most elements (parameters and buffers) a file of ``file_bytes`` bytes may decode to: 2^20, plus
    1,024 per byte of the file, a compression ratio of 4,096x against float32 (the best file of the paper's
    networks is below 100x). Every claimed size is checked against it before anything is allocated, so a
    small file can never make the reader allocate gigabytes; ``read(..., max_elements=)`` raises it."""
    return ELEMENT_ALLOWANCE + ELEMENTS_PER_BYTE * file_bytes


def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


# --------------------------------------------------------------------------------------------------
# the parsed file


@dataclass
class Entry:
    name: str
    shape: tuple[int, ...]
    quantized: bool
    is_param: bool
    codebook: int = 0  # quantized only
    n_kept: int = 0  # quantized only
    dtype: str = "<f4"  # passthrough only
    constant: bool = False  # passthrough only: one value stored for all elements

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class Parsed:
    """A file split into its parts, before decoding. ``sections`` maps a tag to its payload."""

    version: int
    sections: dict[str, bytes]
    section_bytes: dict[str, int]  # framed size of each section (+ "header"); sums to the file size
    label_code: str
    index_code: str
    index_bound: int
    codebook_sizes: list[int]
    entries: list[Entry]
    label_bits: list[int]
    label_crc: list[int]
    index_symbols: int
    index_bits: int
    index_crc: int
    file_bytes: int = 0
    network: dict = field(default_factory=dict)
    label_tables: list[np.ndarray] = field(default_factory=list)  # per stream, filled while decoding


def _stream_bytes(nbits: int) -> int:
    return (nbits + 7) // 8


def _width(k: int) -> int:
    """Fixed-length code width of a codebook of k entries (0 for an empty codebook)."""
    return coding.fixed_width(k) if k else 0


# --------------------------------------------------------------------------------------------------
# writing


def _check_options(label_code: str, index_code: str, index_bound: int) -> None:
    if label_code not in LABEL_CODES:
        raise ValueError(f"label_code must be one of {', '.join(LABEL_CODES)}; got {label_code!r}")
    if index_code not in INDEX_CODES:
        raise ValueError(f"index_code must be one of {', '.join(INDEX_CODES)}; got {index_code!r}")
    if not isinstance(index_bound, (int, np.integer)) or index_bound < 1:
        raise ValueError(f"index_bound must be an integer >= 1; got {index_bound!r}")


def _stream_parts(qmodel: QuantizedModel) -> list[list[np.ndarray]]:
    """Label stream of each codebook as the unpruned labels (int32) of its tensors, in state_dict order."""
    parts: list[list[np.ndarray]] = [[] for _ in qmodel.codebooks]
    for name in qmodel.order:
        if name in qmodel.tensors:
            t = qmodel.tensors[name]
            parts[t.codebook].append(t.labels[t.labels != PRUNED])
    return parts


def _sparse(qmodel: QuantizedModel) -> list[str]:
    """Quantized tensors with at least one pruned element, in state_dict order."""
    return [n for n in qmodel.order if n in qmodel.tensors and not qmodel.tensors[n].mask.all()]


def _index_stream(masks: list[np.ndarray], shapes: list, index_code: str, index_bound: int):
    """(table bytes, stream bytes, n symbols, n bits) of the positions of the given flat masks."""
    if index_code == "deep-compression":
        symbols = (np.concatenate([coding.dc_gap_symbols(m, index_bound) for m in masks])
                   if masks else np.zeros(0, np.int32))
        lengths = coding.huffman_lengths(coding.symbol_counts(symbols, index_bound + 1))
        used = int(np.flatnonzero(lengths >= 0).max()) + 1 if symbols.size else 0
        table = _varints([used]) + (lengths[:used] + 1).astype(np.uint8).tobytes() if used else b""
        stream, nbits = coding.huffman_encode(symbols, lengths)
        return table, stream, int(symbols.size), nbits
    if index_code == "mask-context":
        use = coding.mask_context_choice(masks, shapes)
        table = b"".join((b"\x01" + _varints(row) if context else b"\x00")
                         for m, row, context in zip(masks, coding.mask_context_row_counts(masks, shapes), use)
                         if 0 < m.sum() < m.size)
        stream = coding.mask_context_encode(masks, shapes, use)
        return table, stream, 0, 8 * len(stream)
    stream = coding.mask_ans_encode(masks)
    return b"", stream, 0, 8 * len(stream)


def _label_stream(code: str, parts: list[np.ndarray], k: int, values: np.ndarray):
    """(table bytes, stream bytes, n bits) of one label stream, the labels ``parts`` of its tensors in
    order; ``values`` is its codebook."""
    symbols = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    if code == "ans-layer":
        shared, own = coding.layer_label_models(parts, k)
        table = _varints(shared) + b"".join(b"\x00" if c is None else b"\x01" + _varints(c) for c in own)
        data = coding.ans_layers_encode(parts, shared, own)
        return table, data, 8 * len(data)
    if code == "raw":
        data = values[symbols].astype("<f4").tobytes()
        return b"", data, 8 * len(data)
    if code == "fixed":
        data, nbits = coding.fixed_encode(symbols, _width(k))
        return b"", data, nbits
    counts = coding.symbol_counts(symbols, k)
    if code == "huffman":
        lengths = coding.huffman_lengths(counts)  # <= 64 bits (coding's limit), fits the 1-byte table
        data, nbits = coding.huffman_encode(symbols, lengths)
        return (lengths + 1).astype(np.uint8).tobytes(), data, nbits
    data = coding.ans_encode(symbols, counts)
    return _varints(counts), data, 8 * len(data)


def _decoded_label_bytes(code: str, symbols: np.ndarray, values: np.ndarray) -> bytes:
    """What the label CRC covers: the int32 labels, or the float32 values with the raw code."""
    if code == "raw":
        return values[symbols].astype("<f4").tobytes()
    return symbols.astype("<i4").tobytes()


def _little_endian(arr) -> np.ndarray:
    arr = np.asarray(arr)  # not ascontiguousarray: it turns 0-d arrays into 1-d; tobytes() is C order anyway
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False)


def _constant(arr: np.ndarray) -> bool:
    """Whether a passthrough array is stored as one value: two or more elements, all the same bytes."""
    if arr.size < 2:
        return False
    raw = np.frombuffer(arr.tobytes(), np.uint8).reshape(arr.size, arr.dtype.itemsize)
    return bool((raw == raw[0]).all())


def _passthrough_bytes(arr: np.ndarray) -> bytes:
    return arr.reshape(-1)[:1].tobytes() if _constant(arr) else arr.tobytes()


def _mask_bytes(masks: list[np.ndarray]) -> bytes:
    return np.packbits(np.concatenate(masks)).tobytes() if masks else b""


class Encoding:
    """The streams of one quantized model under each label and index code, each coder run at most once.

    A sweep point is written as several files (Huffman labels; ANS labels; mask-ANS positions) and sized
    under every code; all of them are assembled from the streams computed here, so no stream is computed
    twice. ``file(label_code, index_code)`` gives the bytes of one file.
    """

    def __init__(self, qmodel: QuantizedModel, index_bound: int = DEFAULT_INDEX_BOUND) -> None:
        for name, arr in qmodel.passthrough.items():
            if np.asarray(arr).dtype.kind not in "biufc":
                raise ValueError(f"passthrough {name!r} has dtype {np.asarray(arr).dtype}; "
                                 "only numeric arrays can be stored")
            if np.asarray(arr).dtype.kind in "fc" and not np.isfinite(arr).all():
                raise ValueError(f"{name!r} holds NaN or infinite values; a file stores finite numbers only "
                                 "(check the training run that produced the model)")
        for name, t in qmodel.tensors.items():
            book = qmodel.codebooks[t.codebook]
            if not np.isfinite(book[t.labels[t.labels != PRUNED]]).all():
                raise ValueError(f"{name!r} holds NaN or infinite values; a file stores finite numbers only "
                                 "(check the training run that produced the model)")
        self.qmodel, self.index_bound = qmodel, index_bound
        self.parts = _stream_parts(qmodel)
        self.symbols = [np.concatenate(p) if p else np.zeros(0, np.int32) for p in self.parts]
        self.masks = [qmodel.tensors[n].mask for n in _sparse(qmodel)]
        self.shapes = [qmodel.tensors[n].shape for n in _sparse(qmodel)]
        self._labels: dict[str, list[tuple[bytes, bytes, int, int]]] = {}
        self._index: dict[str, tuple[bytes, bytes, int, int]] = {}

    def labels(self, code: str) -> list[tuple[bytes, bytes, int, int]]:
        """Per label stream (one per codebook): (table bytes, stream bytes, bits, CRC of the decoded stream)."""
        if code not in self._labels:
            streams = []
            for parts, symbols, book in zip(self.parts, self.symbols, self.qmodel.codebooks):
                table, data, nbits = _label_stream(code, parts, len(book), book)
                streams.append((table, data, nbits, _crc(_decoded_label_bytes(code, symbols, book))))
            self._labels[code] = streams
        return self._labels[code]

    def index(self, code: str) -> tuple[bytes, bytes, int, int]:
        """The positions of the kept weights: (table bytes, stream bytes, symbols, bits)."""
        if code not in self._index:
            self._index[code] = _index_stream(self.masks, self.shapes, code, self.index_bound)
        return self._index[code]

    def file(self, label_code: str = "huffman", index_code: str = "deep-compression") -> bytes:
        """The .nqz bytes with these codes (see the module docstring for the layout)."""
        _check_options(label_code, index_code, self.index_bound)
        qmodel = self.qmodel
        labels = self.labels(label_code)
        index_table, index_data, index_symbols, index_bits = self.index(index_code)
        meta = bytearray(_varints([LABEL_CODES.index(label_code), INDEX_CODES.index(index_code), self.index_bound]))
        sizes = [0 if label_code == "raw" else len(b) for b in qmodel.codebooks]
        meta += _varints([len(sizes), *sizes, len(qmodel.order)])
        params = set(qmodel.param_names)
        for name in qmodel.order:
            encoded = name.encode("utf-8")
            meta += _varints([len(encoded)]) + encoded
            if name in qmodel.tensors:
                t = qmodel.tensors[name]
                meta.append(1 | (2 if name in params else 0))
                meta += _varints([len(t.shape), *t.shape, t.codebook, int(t.mask.sum())])
            else:
                arr = _little_endian(qmodel.passthrough[name])
                dtype = arr.dtype.str.encode("ascii")
                meta.append((2 if name in params else 0) | (4 if _constant(arr) else 0))
                meta += _varints([arr.ndim, *arr.shape, len(dtype)]) + dtype
        for _, _, nbits, crc in labels:
            meta += _varints([nbits]) + struct.pack("<I", crc)
        meta += _varints([index_symbols, index_bits]) + struct.pack("<I", _crc(_mask_bytes(self.masks)))
        network = json.dumps(qmodel.network, sort_keys=True, separators=(",", ":")).encode("utf-8")
        meta += _varints([len(network)]) + network

        books = b"" if label_code == "raw" else b"".join(b.astype("<f4").tobytes() for b in qmodel.codebooks)
        passthrough = b"".join(_passthrough_bytes(_little_endian(qmodel.passthrough[n]))
                               for n in qmodel.order if n in qmodel.passthrough)
        payloads = [zlib.compress(bytes(meta), 9), books, b"".join(s[0] for s in labels),
                    b"".join(s[1] for s in labels), index_table, index_data, passthrough]
        head = _HEADER.pack(MAGIC, VERSION, len(SECTIONS), 0)[:12]
        out = bytearray(head + struct.pack("<I", _crc(head)))
        for tag, payload in zip(SECTIONS, payloads):
            if len(payload) >= 1 << 32:
                raise ValueError(f"section {tag} has {len(payload)} bytes; the format allows < 4 GiB per section")
            framed = _FRAME.pack(tag.encode("ascii"), len(payload)) + payload
            out += framed + struct.pack("<I", _crc(framed))
        return bytes(out)


def encode(qmodel: QuantizedModel, *, label_code: str = "huffman", index_code: str = "deep-compression",
           index_bound: int = DEFAULT_INDEX_BOUND) -> bytes:
    """The .nqz bytes of ``qmodel`` (see the module docstring for the layout)."""
    return Encoding(qmodel, index_bound).file(label_code, index_code)


# --------------------------------------------------------------------------------------------------
# reading


def parse(data: bytes, max_elements: int | None = None) -> Parsed:
    """Check the framing and CRCs of ``data`` and read its META section, checking every size it claims
    against what the file can hold (see :func:`element_limit`). Raises ``ContainerError``."""
    n = len(data)
    if data[: min(n, 8)] != MAGIC[: min(n, 8)]:
        raise ContainerError(f"not a netquant .nqz file (bad magic {data[:8]!r}, expected {MAGIC!r})")
    if n < _HEADER.size:
        raise ContainerError(f"truncated at byte {n}: the header needs {_HEADER.size} bytes")
    _, version, n_sections, header_crc = _HEADER.unpack_from(data)
    if version not in READABLE_VERSIONS:
        raise ContainerError(f"unsupported format version {version} (this netquant reads versions "
                             f"{', '.join(map(str, READABLE_VERSIONS))}; "
                             "a different version of netquant wrote the file, or its header is corrupted)")
    if header_crc != _crc(data[:12]):
        raise ContainerError("CRC mismatch in the header (bytes 0..15): the file is corrupted")
    if n_sections != len(SECTIONS):
        raise ContainerError(f"header announces {n_sections} sections, version {version} has {len(SECTIONS)}")
    sections, section_bytes, pos = {}, {"header": _HEADER.size}, _HEADER.size
    for tag in SECTIONS:
        if pos + _FRAME.size > n:
            raise ContainerError(f"truncated at byte {n}: section {tag} starts at byte {pos} "
                                 f"and its frame needs {_FRAME.size} bytes")
        found, length = _FRAME.unpack_from(data, pos)
        if found != tag.encode("ascii"):
            raise ContainerError(f"expected section {tag} at byte {pos}, found {found!r}: the file is corrupted")
        end = pos + _FRAME.size + length + 4
        if end > n:
            raise ContainerError(f"truncated at byte {n}: section {tag} (byte {pos}) announces {length} bytes "
                                 f"and ends at byte {end}")
        if struct.unpack_from("<I", data, end - 4)[0] != _crc(data[pos : end - 4]):
            raise ContainerError(f"CRC mismatch in section {tag} (bytes {pos}..{end - 1}): the file is corrupted")
        sections[tag] = data[pos + _FRAME.size : end - 4]
        section_bytes[tag] = end - pos
        pos = end
    if pos != n:
        raise ContainerError(f"{n - pos} unexpected bytes after the last section (byte {pos}): the file is corrupted")
    return _parse_meta(_inflate_meta(sections["META"]), version, sections, section_bytes, n, max_elements)


def _inflate_meta(payload: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        meta = inflater.decompress(payload, META_LIMIT + 1)
    except zlib.error as exc:
        raise ContainerError(f"section META: not zlib data ({exc})") from exc
    if len(meta) > META_LIMIT:
        raise ContainerError(f"section META: inflates to more than {META_LIMIT >> 20} MiB, the format's limit "
                             "(a zlib bomb, or not a netquant file)")
    if not inflater.eof or inflater.unused_data:
        raise ContainerError("section META: the zlib stream is incomplete or followed by other data")
    return meta


def _parse_meta(meta: bytes, version: int, sections, section_bytes, n: int, max_elements: int | None) -> Parsed:
    r = _Reader(meta, "META")
    label_id, index_id, bound = r.varint(), r.varint(), r.varint()
    if label_id >= len(LABEL_CODES) or index_id >= len(INDEX_CODES) or bound < 1:
        raise ContainerError(f"section META: unknown label code {label_id} / index code {index_id} / bound {bound}")
    # each codebook also has a label stream record (>= 5 bytes) further on
    sizes = [int(v) for v in r.varints(r.count("codebooks", 6), "codebook sizes")]
    entries, names = [], set()
    for _ in range(r.count("entries", 4)):
        try:
            name = r.take(r.count("bytes of an entry name")).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ContainerError(f"section META: entry name is not UTF-8 ({exc})") from exc
        if not name or name in names:
            raise ContainerError(f"section META: entry {len(entries)} has {'an empty' if not name else 'a repeated'} "
                                 f"name {name!r}")
        names.add(name)
        flags = r.u8()
        if flags > 7 or (flags & 5 == 5) or (flags & 4 and version < 3):
            raise ContainerError(f"section META: entry {name!r} has flags {flags} (version {version})")
        ndim = r.varint()
        if ndim > MAX_DIMS:
            raise ContainerError(f"section META: entry {name!r} has {ndim} dimensions (at most {MAX_DIMS})")
        shape = tuple(int(v) for v in r.varints(ndim, f"dimensions of entry {name!r}"))
        if flags & 1:
            entry = Entry(name, shape, True, bool(flags & 2), codebook=r.varint(), n_kept=r.varint())
            if entry.codebook >= len(sizes) or entry.n_kept > entry.size:
                raise ContainerError(f"section META: entry {name!r} has codebook {entry.codebook} "
                                     f"of {len(sizes)} and {entry.n_kept} of {entry.size} elements kept")
        else:
            dtype = r.take(r.count("bytes of a dtype")).decode("ascii", "replace")
            ok = re.fullmatch(r"[<>|][biufc][0-9]{1,2}", dtype) is not None  # numpy parses anything else too
            try:
                ok = ok and np.dtype(dtype).kind in "biufc"
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ContainerError(f"section META: entry {name!r} has unsupported dtype {dtype!r}")
            entry = Entry(name, shape, False, bool(flags & 2), dtype=dtype, constant=bool(flags & 4))
        entries.append(entry)
    limit = element_limit(n) if max_elements is None else max_elements
    total = sum(e.size for e in entries)
    if total > limit:
        largest = max(entries, key=lambda e: e.size)
        raise ContainerError(f"section META: the entries claim {total:,} elements (the largest, {largest.name!r}, "
                             f"{largest.size:,}), more than a {n:,}-byte file may hold ({limit:,}; "
                             "netquant.container.read(..., max_elements=) raises the limit)")
    n_quantized = sum(e.quantized for e in entries)
    if len(sizes) > max(1, n_quantized):
        raise ContainerError(f"section META: {len(sizes):,} codebooks for {n_quantized} quantized entries")
    label_bits, label_crc = [], []
    for _ in sizes:
        label_bits.append(r.varint())
        label_crc.append(r.u32())
    index_symbols, index_bits, index_crc = r.varint(), r.varint(), r.u32()
    sparse_size = sum(e.size for e in entries if e.quantized and e.n_kept < e.size)
    if index_symbols > sparse_size:
        raise ContainerError(f"section META: {index_symbols:,} index symbols announced for {sparse_size:,} "
                             "positions of pruned tensors")
    network: dict = {}
    if version >= 2:
        try:
            network = json.loads(r.take(r.varint()).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ContainerError(f"section META: the network description is not JSON ({exc})") from exc
        if not isinstance(network, dict):
            raise ContainerError("section META: the network description is not a JSON object")
    r.done()
    return Parsed(version, sections, section_bytes, LABEL_CODES[label_id], INDEX_CODES[index_id], bound, sizes,
                  entries, label_bits, label_crc, index_symbols, index_bits, index_crc, n, network=network)


def decode(data: bytes, max_elements: int | None = None) -> QuantizedModel:
    """The QuantizedModel held by the .nqz bytes ``data``. Raises ``ContainerError`` on any defect; a file
    may claim at most ``max_elements`` elements (default :func:`element_limit` of its size)."""
    return _decode(parse(data, max_elements))


def _decode(p: Parsed) -> QuantizedModel:
    quantized = [e for e in p.entries if e.quantized]
    sparse = [e for e in quantized if e.n_kept < e.size]

    # positions
    table = _Reader(p.sections["ITAB"], "ITAB")
    index_data = p.sections["IBIT"]
    try:
        if p.index_code == "deep-compression":
            used = table.varint() if p.sections["ITAB"] else 0
            if used > p.index_bound + 1:
                raise ContainerError(f"section ITAB: {used} index symbols exceed bound {p.index_bound} + 1")
            lengths = np.frombuffer(table.take(used), np.uint8).astype(np.int64) - 1
            table.done()
            symbols = coding.huffman_decode(index_data, p.index_bits, lengths, p.index_symbols)
            masks = coding.dc_masks(symbols, p.index_bound, [e.size for e in sparse], [e.n_kept for e in sparse])
        else:
            if len(index_data) * 8 != p.index_bits:
                raise ContainerError(f"section IBIT has {len(index_data)} bytes, META announces {p.index_bits} bits")
            if p.index_code == "mask-context":
                row_counts = []
                for e in sparse:
                    flag = table.take(1)[0] if 0 < e.n_kept < e.size else 0
                    if flag > 1:
                        raise ContainerError(f"section ITAB: mask model flag {flag} (0 per tensor, 1 context)")
                    rows = coding.mask_rows(e.shape)[0]
                    row_counts.append(table.varints(rows, f"row counts of {e.name!r}") if flag else None)
                table.done()
                masks = coding.mask_context_decode(index_data, [e.shape for e in sparse],
                                                   [e.n_kept for e in sparse], row_counts)
            else:
                table.done()
                masks = coding.mask_ans_decode(index_data, [e.size for e in sparse], [e.n_kept for e in sparse])
    except coding.CodingError as exc:
        raise ContainerError(f"section IBIT (positions of unpruned weights): {exc}") from exc
    if _crc(_mask_bytes(masks)) != p.index_crc:
        raise ContainerError("positions of unpruned weights decode to data whose CRC32 does not match; "
                             "the file was written by an incompatible coder version or is corrupted")
    mask_of = {e.name: m for e, m in zip(sparse, masks)}

    # codebooks
    books_data = p.sections["BOOK"]
    if len(books_data) != 4 * sum(p.codebook_sizes):
        raise ContainerError(f"section BOOK has {len(books_data)} bytes, META announces "
                             f"{sum(p.codebook_sizes)} float32 values")
    books = np.frombuffer(books_data, "<f4").astype(np.float32)
    bounds = np.cumsum([0, *p.codebook_sizes])
    codebooks = [books[bounds[i] : bounds[i + 1]].copy() for i in range(len(p.codebook_sizes))]
    if not np.isfinite(books).all():
        raise ContainerError("section BOOK: a shared value is NaN or infinite; a file holds finite numbers only")

    # labels
    n_stream = [0] * len(codebooks)
    for e in quantized:
        n_stream[e.codebook] += e.n_kept
    tables = _Reader(p.sections["LTAB"], "LTAB")
    bits = p.sections["LBIT"]
    expected = sum(_stream_bytes(b) for b in p.label_bits)
    if len(bits) != expected:
        raise ContainerError(f"section LBIT has {len(bits)} bytes, META announces {expected}")
    streams, offset = [], 0
    for s, (n, nbits, crc) in enumerate(zip(n_stream, p.label_bits, p.label_crc)):
        k = len(codebooks[s])
        data = bits[offset : offset + _stream_bytes(nbits)]
        offset += len(data)
        try:
            if p.label_code == "raw":
                if nbits != 32 * n:
                    raise coding.CodingError(f"raw stream has {nbits} bits, {n} values need {32 * n}")
                values = np.frombuffer(data, "<f4").astype(np.float32)
                if not np.isfinite(values).all():
                    raise coding.CodingError("a stored value is NaN or infinite; a file holds finite numbers only")
                streams.append(values)
                decoded = values.tobytes()
            else:
                if p.label_code == "fixed":
                    if n and not k:
                        raise coding.CodingError(f"{n} labels announced for an empty codebook")
                    labels = coding.fixed_decode(data, _width(k), n)
                elif p.label_code == "huffman":
                    lengths = np.frombuffer(tables.take(k), np.uint8).astype(np.int64) - 1
                    p.label_tables.append(lengths)
                    if n > nbits and np.count_nonzero(lengths >= 0) > 1:
                        raise coding.CodingError(f"{n:,} labels announced in {nbits:,} bits")
                    labels = coding.huffman_decode(data, nbits, lengths, n)
                elif p.label_code == "ans":
                    counts = tables.varints(k, f"symbol counts of stream {s}")
                    p.label_tables.append(counts)
                    labels = coding.ans_decode(data, counts, n)
                else:
                    shared = tables.varints(k, f"symbol counts of stream {s}")
                    sizes = [e.n_kept for e in quantized if e.codebook == s]
                    own = []
                    for _ in sizes:
                        flag = tables.take(1)[0]
                        if flag > 1:
                            raise coding.CodingError(f"tensor model flag {flag} (0 shared, 1 own counts)")
                        own.append(tables.varints(k, f"symbol counts of a tensor of stream {s}") if flag else None)
                    if int(shared.sum()) != n:
                        raise coding.CodingError(f"stream counts sum to {int(shared.sum())}, {n} labels announced")
                    p.label_tables.append(shared)
                    labels = coding.ans_layers_decode(data, sizes, shared, own)
                if labels.size and labels.max() >= k:
                    raise coding.CodingError(f"a label exceeds the codebook size {k}")
                streams.append(labels)
                decoded = labels.astype("<i4").tobytes()
        except coding.CodingError as exc:
            raise ContainerError(f"section LBIT (label stream {s}): {exc}") from exc
        if _crc(decoded) != crc:
            raise ContainerError(f"label stream {s} decodes to data whose CRC32 does not match; the file was "
                                 "written by an incompatible coder version or is corrupted")
    tables.done()

    if p.label_code == "raw":  # codebook of each stream: its distinct values (by bit pattern)
        for s, values in enumerate(streams):
            distinct, labels = np.unique(values.view(np.uint32), return_inverse=True)
            codebooks[s] = distinct.view(np.float32)
            streams[s] = labels.reshape(-1).astype(np.int32)

    # tensors
    tensors, passthrough, taken = {}, {}, [0] * len(codebooks)
    pass_data, pass_offset = p.sections["PASS"], 0
    for e in p.entries:
        if e.quantized:
            labels = np.full(e.size, PRUNED, dtype=np.int32)
            part = streams[e.codebook][taken[e.codebook] : taken[e.codebook] + e.n_kept]
            taken[e.codebook] += e.n_kept
            if e.name in mask_of:
                labels[mask_of[e.name]] = part
            else:
                labels[:] = part
            tensors[e.name] = QuantizedTensor(e.shape, e.codebook, labels)
        else:
            dtype = np.dtype(e.dtype)
            nbytes = (1 if e.constant else e.size) * dtype.itemsize
            if pass_offset + nbytes > len(pass_data):
                raise ContainerError(f"section PASS ends at byte {len(pass_data)}, entry {e.name!r} needs "
                                     f"bytes {pass_offset}..{pass_offset + nbytes}")
            raw = pass_data[pass_offset : pass_offset + nbytes]
            values = np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))
            if dtype.kind in "fc" and not np.isfinite(values).all():
                raise ContainerError(f"section PASS: entry {e.name!r} holds NaN or infinite values; a file holds "
                                     "finite numbers only")
            passthrough[e.name] = np.full(e.shape, values[0]) if e.constant else values.reshape(e.shape)
            pass_offset += nbytes
    if pass_offset != len(pass_data):
        raise ContainerError(f"section PASS has {len(pass_data) - pass_offset} bytes beyond its entries")
    try:
        return QuantizedModel(codebooks, tensors, passthrough, [e.name for e in p.entries],
                              [e.name for e in p.entries if e.is_param], network=dict(p.network))
    except ValueError as exc:
        raise ContainerError(f"inconsistent content: {exc}") from exc


def _read_bytes(path: str | os.PathLike) -> bytes:
    return Path(path).read_bytes()


def read(path: str | os.PathLike, max_elements: int | None = None) -> QuantizedModel:
    """The QuantizedModel stored in the .nqz file ``path``. Raises ``ContainerError`` on any defect (see
    :func:`decode`)."""
    try:
        return decode(_read_bytes(path), max_elements)
    except ContainerError as exc:
        raise ContainerError(f"{path}: {exc}") from None


def load(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The decoded network of the .nqz file ``path`` as a PyTorch state_dict (original key order)."""
    return read(path).state_dict()


# --------------------------------------------------------------------------------------------------
# saving and accounting


def write(path: str | os.PathLike, qmodel: QuantizedModel, *, label_code: str = "huffman",
          index_code: str = "deep-compression", index_bound: int = DEFAULT_INDEX_BOUND,
          encoding: Encoding | None = None) -> tuple[QuantizedModel, Any]:
    """Write ``qmodel`` to the .nqz file ``path`` (atomically); return what the file decodes to and its
    metrics (``netquant.container.metrics``).

    The bytes are decoded before they are written; a file that does not decode bit-exactly to ``qmodel`` is
    never written (``RuntimeError``). ``encoding``: the model's :class:`Encoding`, to share its streams
    between several files of the same model.

    ``index_bound`` (deep-compression only): the largest gap coded without a filler. The default 32 = 2^5
    is Deep Compression's bound for fc layers (5-bit indices; 8 bits for conv layers), used for all
    tensors. Measured on i.i.d. masks of 430k elements (stream + table bits per kept weight), 32 stays
    within 8% of the mask entropy from 1% to 50% density (0.8% at LeNet's 8.5%); a bound of 8 costs 2x
    at 1% density (every filler takes at least a 1-bit codeword), 256 is 1.7% better at 1% but no better
    from 3% up (its longer code table costs more than the fillers it saves).
    """
    from netquant.container.accounting import file_metrics

    if encoding is None:
        encoding = Encoding(qmodel, index_bound)
    elif encoding.qmodel is not qmodel or encoding.index_bound != index_bound:
        raise ValueError("the encoding is of another model or index bound")
    data = encoding.file(label_code, index_code)
    parsed = parse(data, max_elements=qmodel.n_elements)
    decoded = _decode(parsed)
    _check_equal(qmodel, decoded)
    write_bytes(path, data)
    return decoded, file_metrics(parsed, decoded, encoding)


def save(path: str | os.PathLike, qmodel: QuantizedModel, *, label_code: str = "huffman",
         index_code: str = "deep-compression", index_bound: int = DEFAULT_INDEX_BOUND) -> dict[str, Any]:
    """:func:`write` returning only the metrics of the file."""
    return write(path, qmodel, label_code=label_code, index_code=index_code, index_bound=index_bound)[1]


def _check_equal(original: QuantizedModel, decoded: QuantizedModel) -> None:
    if list(original.order) != list(decoded.order):
        raise RuntimeError("encoded file does not decode to the same state_dict keys")
    if original.network != decoded.network:
        raise RuntimeError("encoded file does not decode to the same network description (it must be JSON)")
    for name in original.order:
        if name in original.tensors:
            same = np.array_equal(original.values(name).view(np.uint32), decoded.values(name).view(np.uint32))
        else:
            a, b = np.asarray(original.passthrough[name]), decoded.passthrough[name]
            same = (a.shape == b.shape and a.dtype.newbyteorder("=") == b.dtype.newbyteorder("=")
                    and np.ascontiguousarray(a).astype(b.dtype).tobytes() == b.tobytes())
        if not same:
            raise RuntimeError(f"encoded file does not decode bit-exactly to {name!r}; nothing was written")


