"""The container's codec table: one object per code, each with the ID a file stores, how it writes its
table and stream, how it reads them back, and how many bits its table costs.

A label code turns the labels of one codebook's stream (the unpruned labels of its tensors, in state_dict
order) into ``(table bytes, stream bytes, stream bits)`` and back; an index code does the same for the
masks of the sparse tensors (``netquant.coding`` has the codes themselves). Adding a code means adding one
object here and its name to ``netquant.vocabulary``; the IDs of existing codes never change, so every file
ever written stays readable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netquant import coding
from netquant.container.binary import ContainerError, SectionReader, varints
from netquant.vocabulary import INDEX_CODES, LABEL_CODES


def fixed_width(k: int) -> int:
    """Fixed-length code width of a codebook of k entries (0 for an empty codebook)."""
    return coding.fixed_width(k) if k else 0


@dataclass
class LabelStream:
    """One decoded label stream: its labels, the bits of its table, and (raw code only) its codebook."""

    labels: np.ndarray
    table_bits: int
    codebook: np.ndarray | None = None


class LabelCode:
    """A code of label streams. ``encode(parts, codebook, tensors)``: ``parts`` are the int32 labels of the
    stream's tensors in order, ``tensors`` their (shape, flat mask) (a code may model labels by position).
    ``decode(table, data, nbits, codebook, sizes, tensors)``: ``table`` reads the stream's table from LTAB,
    ``sizes`` are the kept counts of its tensors. A decoder raises ``coding.CodingError``."""

    name: str
    id: int
    stores_codebook = True

    def encode(self, parts: list[np.ndarray], codebook: np.ndarray, tensors: list) -> tuple[bytes, bytes, int]:
        raise NotImplementedError

    def decode(self, table: SectionReader, data: bytes, nbits: int, codebook: np.ndarray, sizes: list[int],
               tensors: list) -> LabelStream:
        raise NotImplementedError

    def checked_bytes(self, labels: np.ndarray, codebook: np.ndarray) -> bytes:
        """What the stream's CRC covers: the int32 labels (the float32 values with the raw code)."""
        return labels.astype("<i4").tobytes()


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.int32)


class FixedLabels(LabelCode):
    name, id = "fixed", 0

    def encode(self, parts, codebook, tensors):
        data, nbits = coding.fixed_encode(_joined(parts), fixed_width(len(codebook)))
        return b"", data, nbits

    def decode(self, table, data, nbits, codebook, sizes, tensors):
        k = len(codebook)
        n = sum(sizes)
        if n and not k:
            raise coding.CodingError(f"{n} labels announced for an empty codebook")
        return LabelStream(coding.fixed_decode(data, fixed_width(k), n), k * fixed_width(k))


class HuffmanLabels(LabelCode):
    """Canonical Huffman; the table is one byte per symbol: code length + 1 (0 = absent)."""

    name, id = "huffman", 1

    def encode(self, parts, codebook, tensors):
        symbols = _joined(parts)
        lengths = coding.huffman_lengths(coding.symbol_counts(symbols, len(codebook)))  # <= 64 bits: 1 byte
        data, nbits = coding.huffman_encode(symbols, lengths)
        return (lengths + 1).astype(np.uint8).tobytes(), data, nbits

    def decode(self, table, data, nbits, codebook, sizes, tensors):
        k = len(codebook)
        n = sum(sizes)
        lengths = np.frombuffer(table.take(k), np.uint8).astype(np.int64) - 1
        if n > nbits and np.count_nonzero(lengths >= 0) > 1:
            raise coding.CodingError(f"{n:,} labels announced in {nbits:,} bits")
        return LabelStream(coding.huffman_decode(data, nbits, lengths, n), int(lengths[lengths > 0].sum()))


class AnsLabels(LabelCode):
    """rANS with the stream's symbol counts as its model; the table is k varints."""

    name, id = "ans", 2

    def encode(self, parts, codebook, tensors):
        symbols = _joined(parts)
        counts = coding.symbol_counts(symbols, len(codebook))
        data = coding.ans_encode(symbols, counts)
        return varints(counts), data, 8 * len(data)

    def decode(self, table, data, nbits, codebook, sizes, tensors):
        k = len(codebook)
        start = table.pos
        counts = table.varints(k, "symbol counts of a label stream")
        return LabelStream(coding.ans_decode(data, counts, sum(sizes)), 8 * (table.pos - start))


class RawValues(LabelCode):
    """The 32-bit value of every unpruned element, no codebook: the pruned-but-unquantized model. The
    decoded stream's codebook is its distinct values (by bit pattern)."""

    name, id = "raw", 3
    stores_codebook = False

    def encode(self, parts, codebook, tensors):
        data = codebook[_joined(parts)].astype("<f4").tobytes()
        return b"", data, 8 * len(data)

    def decode(self, table, data, nbits, codebook, sizes, tensors):
        n = sum(sizes)
        if nbits != 32 * n:
            raise coding.CodingError(f"raw stream has {nbits} bits, {n} values need {32 * n}")
        values = np.frombuffer(data, "<f4").astype(np.float32)
        if not np.isfinite(values).all():
            raise coding.CodingError("a stored value is NaN or infinite; a file holds finite numbers only")
        distinct, labels = np.unique(values.view(np.uint32), return_inverse=True)
        return LabelStream(labels.reshape(-1).astype(np.int32), 0, distinct.view(np.float32))

    def checked_bytes(self, labels, codebook):
        return codebook[labels].astype("<f4").tobytes()


class AnsLayerLabels(LabelCode):
    """rANS; a tensor whose labels are distributed unlike its stream's is coded with its own counts. The
    table: the stream's k varints, then per tensor a byte 0 (the stream's counts) or 1 and its own k."""

    name, id = "ans-layer", 4

    def encode(self, parts, codebook, tensors):
        shared, own = coding.layer_label_models(parts, len(codebook))
        table = varints(shared) + b"".join(b"\x00" if c is None else b"\x01" + varints(c) for c in own)
        data = coding.ans_layers_encode(parts, shared, own)
        return table, data, 8 * len(data)

    def decode(self, table, data, nbits, codebook, sizes, tensors):
        k = len(codebook)
        start = table.pos
        shared = table.varints(k, "symbol counts of a label stream")
        own = []
        for _ in sizes:
            flag = table.u8()
            if flag > 1:
                raise coding.CodingError(f"tensor model flag {flag} (0 shared, 1 own counts)")
            own.append(table.varints(k, "symbol counts of a tensor") if flag else None)
        if int(shared.sum()) != sum(sizes):
            raise coding.CodingError(f"stream counts sum to {int(shared.sum())}, {sum(sizes)} labels announced")
        return LabelStream(coding.ans_layers_decode(data, sizes, shared, own), 8 * (table.pos - start))


class PlaneContextLabels(LabelCode):
    """Labels as signed ranks in plane order, DeepCABAC's binarisation with contexts from the neighbouring
    weights' ranks, one rANS stream (``netquant.coding.context``); no table."""

    name, id = "plane-context", 5

    def encode(self, parts, codebook, tensors):
        data = coding.context_labels_encode(parts, codebook, [s for s, _ in tensors], [m for _, m in tensors])
        return b"", data, 8 * len(data)

    def decode(self, table, data, nbits, codebook, sizes, tensors):
        if len(data) * 8 != nbits:
            raise coding.CodingError(f"stream has {len(data)} bytes, META announces {nbits} bits")
        return LabelStream(coding.context_labels_decode(data, codebook, [s for s, _ in tensors],
                                                        [m for _, m in tensors]), 0)


@dataclass
class SparseTensor:
    """What an index code knows of a tensor with pruned elements: its shape, size and kept count."""

    name: str
    shape: tuple[int, ...]
    size: int
    n_kept: int


class IndexCode:
    """A code of the positions of the kept weights: the flat boolean masks of the sparse tensors.
    ``encode(masks, shapes, bound)`` gives ``(table bytes, stream bytes, symbols, stream bits)``;
    ``decode(table, data, nbits, symbols, bound, tensors)`` the masks. A decoder raises
    ``coding.CodingError`` or ``ContainerError``."""

    name: str
    id: int

    def encode(self, masks: list[np.ndarray], shapes: list, bound: int) -> tuple[bytes, bytes, int, int]:
        raise NotImplementedError

    def decode(self, table: SectionReader, data: bytes, nbits: int, symbols: int, bound: int,
               tensors: list[SparseTensor]) -> list[np.ndarray]:
        raise NotImplementedError


def _whole_bytes(data: bytes, nbits: int) -> None:
    if len(data) * 8 != nbits:
        raise ContainerError(f"section IBIT has {len(data)} bytes, META announces {nbits} bits")


class DeepCompressionIndex(IndexCode):
    """Bounded gaps, Huffman coded; the table: varint n, then n bytes (code length + 1) of symbols 0..n-1."""

    name, id = "deep-compression", 0

    def encode(self, masks, shapes, bound):
        symbols = np.concatenate([coding.dc_gap_symbols(m, bound) for m in masks]) if masks else np.zeros(0, np.int32)
        lengths = coding.huffman_lengths(coding.symbol_counts(symbols, bound + 1))
        used = int(np.flatnonzero(lengths >= 0).max()) + 1 if symbols.size else 0
        table = varints([used]) + (lengths[:used] + 1).astype(np.uint8).tobytes() if used else b""
        data, nbits = coding.huffman_encode(symbols, lengths)
        return table, data, int(symbols.size), nbits

    def decode(self, table, data, nbits, symbols, bound, tensors):
        used = table.varint() if table.data else 0
        if used > bound + 1:
            raise ContainerError(f"section ITAB: {used} index symbols exceed bound {bound} + 1")
        lengths = np.frombuffer(table.take(used), np.uint8).astype(np.int64) - 1
        table.done()
        gaps = coding.huffman_decode(data, nbits, lengths, symbols)
        return coding.dc_masks(gaps, bound, [t.size for t in tensors], [t.n_kept for t in tensors])


class MaskAnsIndex(IndexCode):
    """Each tensor's mask, ANS coded with a Bernoulli model of its density; no table."""

    name, id = "mask-ans", 1

    def encode(self, masks, shapes, bound):
        data = coding.mask_ans_encode(masks)
        return b"", data, 0, 8 * len(data)

    def decode(self, table, data, nbits, symbols, bound, tensors):
        _whole_bytes(data, nbits)
        table.done()
        return coding.mask_ans_decode(data, [t.size for t in tensors], [t.n_kept for t in tensors])


class MaskContextIndex(IndexCode):
    """Row counts stored, column statistics adaptive; the table: per tensor that keeps some but not all of
    its elements, a byte 0 (coded as by mask-ans) or 1 followed by the varint kept count of each row."""

    name, id = "mask-context", 2

    def encode(self, masks, shapes, bound):
        use = coding.mask_context_choice(masks, shapes)
        rows = coding.mask_context_row_counts(masks, shapes)
        table = b"".join((b"\x01" + varints(row) if context else b"\x00")
                         for m, row, context in zip(masks, rows, use) if 0 < m.sum() < m.size)
        data = coding.mask_context_encode(masks, shapes, use)
        return table, data, 0, 8 * len(data)

    def decode(self, table, data, nbits, symbols, bound, tensors):
        _whole_bytes(data, nbits)
        row_counts = []
        for t in tensors:
            flag = table.u8() if 0 < t.n_kept < t.size else 0
            if flag > 1:
                raise ContainerError(f"section ITAB: mask model flag {flag} (0 per tensor, 1 context)")
            rows = coding.mask_rows(t.shape)[0]
            row_counts.append(table.varints(rows, f"row counts of {t.name!r}") if flag else None)
        table.done()
        return coding.mask_context_decode(data, [t.shape for t in tensors], [t.n_kept for t in tensors], row_counts)


class PlaneContextIndex(IndexCode):
    """Each sparse tensor's mask in plane order, every element with a context from its kernel neighbours,
    its filter's and input channel's earlier planes (``netquant.coding.context``); no table."""

    name, id = "plane-context", 3

    def encode(self, masks, shapes, bound):
        data = coding.context_masks_encode(masks, shapes)
        return b"", data, 0, 8 * len(data)

    def decode(self, table, data, nbits, symbols, bound, tensors):
        _whole_bytes(data, nbits)
        table.done()
        return coding.context_masks_decode(data, [t.shape for t in tensors], [t.n_kept for t in tensors])


LABEL_CODE_TABLE: dict[str, LabelCode] = {c.name: c for c in (FixedLabels(), HuffmanLabels(), AnsLabels(),
                                                              RawValues(), AnsLayerLabels(), PlaneContextLabels())}
INDEX_CODE_TABLE: dict[str, IndexCode] = {c.name: c for c in (DeepCompressionIndex(), MaskAnsIndex(),
                                                              MaskContextIndex(), PlaneContextIndex())}
if set(LABEL_CODE_TABLE) != set(LABEL_CODES) or set(INDEX_CODE_TABLE) != set(INDEX_CODES):
    raise ImportError("the codec table and netquant.vocabulary name different codes")


def code_with_id(table: dict, code_id: int, what: str):
    """The code of ``table`` (``LABEL_CODE_TABLE`` or ``INDEX_CODE_TABLE``) that a file names by ``code_id``."""
    for code in table.values():
        if code.id == code_id:
            return code
    raise ContainerError(f"section META: unknown {what} code {code_id} (this netquant knows "
                         f"{', '.join(f'{c.id} {c.name}' for c in table.values())})")
