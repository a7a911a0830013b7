"""The file format of compressed models (``.nqz``): its byte layout (below), the writer of its bytes
(:class:`Encoding`), and the reader (:func:`parse`, then :func:`decode_parsed` in four parts). The codes
themselves are in ``netquant.container.codes``, one object per code. (Longer than most files, on purpose:
the layout, its writer and its reader change together, and this file keeps them side by side.)

A file holds a ``QuantizedModel`` (see ``netquant.qmodel``): the codebooks, the labels of the unpruned
elements of every quantized tensor, the positions of those elements, and the passthrough tensors.

Labels: one label stream per codebook. With all layers quantized together (one codebook, the paper's
setting) the labels of the unpruned elements of all tensors, taken in state_dict order and row-major
within a tensor, form one stream coded with one table; with one codebook per layer (Deep Compression)
every codebook has its own stream and table.

Label codes (``label_code``): ``huffman`` (canonical, code lengths stored), ``fixed`` (ceil(log2 k) bits),
``ans`` (rANS, integer symbol counts stored), ``ans-layer`` (rANS, a tensor with its own counts where that
pays), ``plane-context`` (signed ranks in plane order, contexts from the neighbouring weights, adaptive,
no table; ``netquant.coding.context``), and ``raw``: the 32-bit value of every unpruned element, no
codebook stored - the pruned-but-unquantized model (see ``from_pruned``).
Index codes (``index_code``): ``deep-compression`` (bounded relative index, Huffman coded; ``index_bound``,
default 32), ``mask-ans`` (per-tensor Bernoulli-modelled masks, ANS coded), ``mask-context`` (per-row
counts stored, column statistics adaptive, ANS coded) and ``plane-context`` (plane order, contexts from
kernel neighbours, filter and channel statistics, adaptive, no table). See ``netquant.coding``.
A tensor with no pruned element is marked dense and has no positions coded.

File layout (all integers little-endian; varint = unsigned LEB128):

    header (16 bytes)
      0   8  magic  89 4E 51 5A 0D 0A 1A 0A  ("\\x89NQZ\\r\\n\\x1a\\n")
      8   2  u16 format version (4; version 3 stores BOOK as float32 values, version 2 has no constant
             entries, version 1 no network description)
      10  2  u16 number of sections (7)
      12  4  u32 CRC32 of bytes 0..11
    7 sections, in this order, each framed as
      0   4  tag (ASCII)
      4   4  u32 payload length L
      8   L  payload
      8+L 4  u32 CRC32 of tag, length and payload

    META  zlib-compressed:
            varint label code (0 fixed, 1 huffman, 2 ans, 3 raw, 4 ans-layer, 5 plane-context), varint index
            code (0 deep-compression, 1 mask-ans, 2 mask-context, 3 plane-context), varint index bound,
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
    BOOK  codebooks, concatenated (empty with the raw code): per codebook a byte k, then each value's
          exp-Golomb code of order k (the zigzag difference of its ordered 32-bit pattern from the
          previous value's), padded with zero bits to a whole byte (``netquant.container.books``);
          version 3 and below: the float32 values as they are
    LTAB  per label stream: huffman: k bytes (code length + 1; 0 = symbol absent);
          ans: k varints (symbol counts, the model); ans-layer: k varints (the stream's counts), then per
          tensor of the stream in order a byte 0 (the stream's counts) or 1 and its own k varints;
          fixed, raw, plane-context: nothing
    LBIT  label streams, each padded to whole bytes, concatenated
    ITAB  deep-compression: varint n, n bytes (code length + 1) of the index symbols 0..n-1
          (empty when no position is coded); mask-ans, plane-context: empty; mask-context: per sparse tensor that keeps
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
import re
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from netquant import coding
from netquant.container.binary import ContainerError, SectionReader, crc, varints
from netquant.container.books import decode_books, encode_values
from netquant.container.codes import (
    INDEX_CODE_TABLE,
    LABEL_CODE_TABLE,
    LabelStream,
    SparseTensor,
    code_with_id,
)
from netquant.qmodel import PRUNED, QuantizedModel, QuantizedTensor
from netquant.vocabulary import INDEX_CODES, LABEL_CODES

MAGIC = b"\x89NQZ\r\n\x1a\n"
VERSION = 4  # 4 codes the shared values, 3 adds constant entries, 2 the network description; 1-3 are still read
READABLE_VERSIONS = (1, 2, 3, 4)
SECTIONS = ("META", "BOOK", "LTAB", "LBIT", "ITAB", "IBIT", "PASS")
DEFAULT_INDEX_BOUND = 32  # 2^5, Deep Compression's bound for fc layers; see save()
META_LIMIT = 4 << 20  # bytes of META once inflated: about 50,000 tensors' entries; a zlib bomb stops here
MAX_DIMS = 32
ELEMENT_ALLOWANCE = 1 << 20  # see element_limit
ELEMENTS_PER_BYTE = 1024
_HEADER = struct.Struct("<8sHHI")
_FRAME = struct.Struct("<4sI")


def element_limit(file_bytes: int) -> int:
    """The most elements (parameters and buffers) a file of ``file_bytes`` bytes may decode to: 2^20, plus
    1,024 per byte of the file, a compression ratio of 4,096x against float32 (the best file of the paper's
    networks is below 100x). Every claimed size is checked against it before anything is allocated, so a
    small file can never make the reader allocate gigabytes; ``read(..., max_elements=)`` raises it."""
    return ELEMENT_ALLOWANCE + ELEMENTS_PER_BYTE * file_bytes


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


def _stream_bytes(nbits: int) -> int:
    return (nbits + 7) // 8


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
            for s, (parts, symbols, book) in enumerate(zip(self.parts, self.symbols, self.qmodel.codebooks)):
                label_code = LABEL_CODE_TABLE[code]
                tensors = [(t.shape, t.mask) for t in (self.qmodel.tensors[n] for n in self.qmodel.order
                                                       if n in self.qmodel.tensors) if t.codebook == s]
                table, data, nbits = label_code.encode(parts, book, tensors)
                streams.append((table, data, nbits, crc(label_code.checked_bytes(symbols, book))))
            self._labels[code] = streams
        return self._labels[code]

    def index(self, code: str) -> tuple[bytes, bytes, int, int]:
        """The positions of the kept weights: (table bytes, stream bytes, symbols, bits)."""
        if code not in self._index:
            self._index[code] = INDEX_CODE_TABLE[code].encode(self.masks, self.shapes, self.index_bound)
        return self._index[code]

    def file(self, label_code: str = "huffman", index_code: str = "deep-compression") -> bytes:
        """The .nqz bytes with these codes (see the module docstring for the layout)."""
        _check_options(label_code, index_code, self.index_bound)
        qmodel = self.qmodel
        labels = self.labels(label_code)
        index_table, index_data, index_symbols, index_bits = self.index(index_code)
        stores_codebook = LABEL_CODE_TABLE[label_code].stores_codebook
        meta = bytearray(varints([LABEL_CODE_TABLE[label_code].id, INDEX_CODE_TABLE[index_code].id,
                                  self.index_bound]))
        sizes = [len(b) if stores_codebook else 0 for b in qmodel.codebooks]
        meta += varints([len(sizes), *sizes, len(qmodel.order)])
        params = set(qmodel.param_names)
        for name in qmodel.order:
            encoded = name.encode("utf-8")
            meta += varints([len(encoded)]) + encoded
            if name in qmodel.tensors:
                t = qmodel.tensors[name]
                meta.append(1 | (2 if name in params else 0))
                meta += varints([len(t.shape), *t.shape, t.codebook, int(t.mask.sum())])
            else:
                arr = _little_endian(qmodel.passthrough[name])
                dtype = arr.dtype.str.encode("ascii")
                meta.append((2 if name in params else 0) | (4 if _constant(arr) else 0))
                meta += varints([arr.ndim, *arr.shape, len(dtype)]) + dtype
        for _, _, nbits, stream_crc in labels:
            meta += varints([nbits]) + struct.pack("<I", stream_crc)
        meta += varints([index_symbols, index_bits]) + struct.pack("<I", crc(_mask_bytes(self.masks)))
        network = json.dumps(qmodel.network, sort_keys=True, separators=(",", ":")).encode("utf-8")
        meta += varints([len(network)]) + network

        books = b"".join(encode_values(b) for b in qmodel.codebooks) if stores_codebook else b""
        passthrough = b"".join(_passthrough_bytes(_little_endian(qmodel.passthrough[n]))
                               for n in qmodel.order if n in qmodel.passthrough)
        payloads = [zlib.compress(bytes(meta), 9), books, b"".join(s[0] for s in labels),
                    b"".join(s[1] for s in labels), index_table, index_data, passthrough]
        head = _HEADER.pack(MAGIC, VERSION, len(SECTIONS), 0)[:12]
        out = bytearray(head + struct.pack("<I", crc(head)))
        for tag, payload in zip(SECTIONS, payloads):
            if len(payload) >= 1 << 32:
                raise ValueError(f"section {tag} has {len(payload)} bytes; the format allows < 4 GiB per section")
            framed = _FRAME.pack(tag.encode("ascii"), len(payload)) + payload
            out += framed + struct.pack("<I", crc(framed))
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
    if header_crc != crc(data[:12]):
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
        if struct.unpack_from("<I", data, end - 4)[0] != crc(data[pos : end - 4]):
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
    r = SectionReader(meta, "META")
    label_code = code_with_id(LABEL_CODE_TABLE, r.varint(), "label")
    index_code = code_with_id(INDEX_CODE_TABLE, r.varint(), "index")
    bound = r.varint()
    if bound < 1:
        raise ContainerError(f"section META: index bound {bound} (at least 1)")
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
    return Parsed(version, sections, section_bytes, label_code.name, index_code.name, bound, sizes,
                  entries, label_bits, label_crc, index_symbols, index_bits, index_crc, n, network=network)


def decode(data: bytes, max_elements: int | None = None) -> QuantizedModel:
    """The QuantizedModel held by the .nqz bytes ``data``. Raises ``ContainerError`` on any defect; a file
    may claim at most ``max_elements`` elements (default :func:`element_limit` of its size)."""
    return decode_parsed(parse(data, max_elements)).model


@dataclass
class Decoded:
    """A file's model and, per label stream, the bits of its table (for the accounting)."""

    model: QuantizedModel
    label_table_bits: list[int]


def decode_parsed(p: Parsed) -> Decoded:
    """Decode a parsed file in four parts: the positions, the codebooks, the label streams, the tensors."""
    masks = _decode_positions(p)
    codebooks = _decode_codebooks(p)
    streams = _decode_labels(p, codebooks, masks)
    model = _assemble(p, [s.codebook if s.codebook is not None else book for s, book in zip(streams, codebooks)],
                      [s.labels for s in streams], masks)
    return Decoded(model, [s.table_bits for s in streams])


def _decode_positions(p: Parsed) -> dict[str, np.ndarray]:
    """The flat mask (True = kept) of every quantized tensor with pruned elements, by name."""
    sparse = [SparseTensor(e.name, e.shape, e.size, e.n_kept) for e in p.entries if e.quantized and e.n_kept < e.size]
    try:
        masks = INDEX_CODE_TABLE[p.index_code].decode(SectionReader(p.sections["ITAB"], "ITAB"), p.sections["IBIT"],
                                                      p.index_bits, p.index_symbols, p.index_bound, sparse)
    except coding.CodingError as exc:
        raise ContainerError(f"section IBIT (positions of unpruned weights): {exc}") from exc
    if crc(_mask_bytes(masks)) != p.index_crc:
        raise ContainerError("positions of unpruned weights decode to data whose CRC32 does not match; "
                             "the file was written by an incompatible coder version or is corrupted")
    return {t.name: m for t, m in zip(sparse, masks)}


def _decode_codebooks(p: Parsed) -> list[np.ndarray]:
    data = p.sections["BOOK"]
    if p.version >= 4:
        books = decode_books(data, p.codebook_sizes)
    else:
        if len(data) != 4 * sum(p.codebook_sizes):
            raise ContainerError(f"section BOOK has {len(data)} bytes, META announces "
                                 f"{sum(p.codebook_sizes)} float32 values")
        values = np.frombuffer(data, "<f4").astype(np.float32)
        bounds = np.cumsum([0, *p.codebook_sizes])
        books = [values[bounds[i] : bounds[i + 1]].copy() for i in range(len(p.codebook_sizes))]
    if not all(np.isfinite(book).all() for book in books):
        raise ContainerError("section BOOK: a shared value is NaN or infinite; a file holds finite numbers only")
    return books


def _decode_labels(p: Parsed, codebooks: list[np.ndarray], masks: dict[str, np.ndarray]) -> list[LabelStream]:
    """Every label stream, its CRC checked; ``masks``: the positions (a code may model labels by them)."""
    code = LABEL_CODE_TABLE[p.label_code]
    tables = SectionReader(p.sections["LTAB"], "LTAB")
    data = p.sections["LBIT"]
    expected = sum(_stream_bytes(b) for b in p.label_bits)
    if len(data) != expected:
        raise ContainerError(f"section LBIT has {len(data)} bytes, META announces {expected}")
    streams, offset = [], 0
    for s, (nbits, stream_crc) in enumerate(zip(p.label_bits, p.label_crc)):
        k = len(codebooks[s])
        part = data[offset : offset + _stream_bytes(nbits)]
        offset += len(part)
        entries = [e for e in p.entries if e.quantized and e.codebook == s]
        sizes = [e.n_kept for e in entries]
        tensors = [(e.shape, masks[e.name] if e.name in masks else np.ones(e.size, bool)) for e in entries]
        try:
            stream = code.decode(tables, part, nbits, codebooks[s], sizes, tensors)
            if code.stores_codebook and stream.labels.size and stream.labels.max() >= k:
                raise coding.CodingError(f"a label exceeds the codebook size {k}")
        except coding.CodingError as exc:
            raise ContainerError(f"section LBIT (label stream {s}): {exc}") from exc
        book = codebooks[s] if stream.codebook is None else stream.codebook
        if crc(code.checked_bytes(stream.labels, book)) != stream_crc:
            raise ContainerError(f"label stream {s} decodes to data whose CRC32 does not match; the file was "
                                 "written by an incompatible coder version or is corrupted")
        streams.append(stream)
    tables.done()
    return streams


def _assemble(p: Parsed, codebooks: list[np.ndarray], streams: list[np.ndarray],
              mask_of: dict[str, np.ndarray]) -> QuantizedModel:
    """The tensors: the labels of each stream laid into its tensors' kept positions; the passthrough."""
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
