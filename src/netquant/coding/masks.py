"""Masks of kept weights coded element by element with Bernoulli models: each tensor's density
(``mask-ans``), or row counts and column statistics (``mask-context``).
"""

from __future__ import annotations

import math

import constriction
import numpy as np

from netquant.coding.ans import _categorical, ans_decoder, decoding
from netquant.coding.symbols import CodingError, varint_bytes

CONTEXT_PRIOR = 8.0  # mask-context: weight, in rows, of the tensor's density in a column's estimate
_ANS_CHUNK = 1 << 20  # mask symbols per constriction call (bounds the int32 temporaries)


def _bernoulli(size: int, kept: int):
    return _categorical(np.array([size - kept, kept], dtype=np.int64))


def mask_ans_encode(masks: list[np.ndarray]) -> bytes:
    """One rANS stream holding every mask (flat bool) with its own Bernoulli(kept/size) model.

    Masks with nothing or everything kept cost nothing.
    """
    coder = constriction.stream.stack.AnsCoder()
    coded = False
    for mask in reversed(masks):  # a stack: encode backwards so that decoding runs forwards
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        kept = int(np.count_nonzero(mask))
        if kept in (0, mask.size):
            continue
        _encode_tensor_mask(coder, mask, kept)
        coded = True
    return coder.get_compressed().astype("<u4").tobytes() if coded else b""


def _encode_tensor_mask(coder, flat: np.ndarray, kept: int) -> None:
    """Push one flat mask onto ``coder`` under its tensor's Bernoulli(kept / size)."""
    model = _bernoulli(flat.size, kept)
    for i in reversed(range(0, flat.size, _ANS_CHUNK)):
        coder.encode_reverse(flat[i : i + _ANS_CHUNK].astype(np.int32), model)


def _decode_tensor_mask(coder, size: int, count: int) -> np.ndarray:
    """Inverse of ``_encode_tensor_mask``: the flat mask, checked to keep ``count`` elements."""
    model = _bernoulli(size, count)
    mask = np.empty(size, dtype=bool)
    for i in range(0, size, _ANS_CHUNK):
        part = min(_ANS_CHUNK, size - i)
        mask[i : i + part] = np.asarray(coder.decode(model, part)) != 0
    if int(np.count_nonzero(mask)) != count:
        raise CodingError(f"decoded mask keeps {int(np.count_nonzero(mask))} elements, {count} announced")
    return mask


def mask_ans_decode(data: bytes, sizes: list[int], kept: list[int]) -> list[np.ndarray]:
    """Inverse of ``mask_ans_encode``: flat boolean masks."""
    coder = ans_decoder(data)
    masks = []
    with decoding(coder, "mask ANS"):
        for size, count in zip(sizes, kept):
            if count in (0, size):
                masks.append(np.full(size, count == size, dtype=bool))
                continue
            masks.append(_decode_tensor_mask(coder, size, count))
    return masks


def mask_entropy_bits(sizes: list[int], kept: list[int]) -> float:
    """Total ``sum size * H(kept/size)`` in bits: the bound reached by ``mask-ans``."""
    total = 0.0
    for size, count in zip(sizes, kept):
        if 0 < count < size:
            p = count / size
            total += size * -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    return total


def mask_rows(shape) -> tuple[int, int]:
    """(rows, columns) of a tensor's mask as mask-context sees it: output units x the rest."""
    size = math.prod(shape)
    rows = int(shape[0]) if len(shape) >= 2 and shape[0] else 1
    return rows, size // rows


def _context_probabilities(columns_kept: np.ndarray, rows_before, row_density, density: float) -> np.ndarray:
    """P(kept) of elements given their column's kept count among ``rows_before`` earlier rows and their
    row's density (arrays broadcast; the same operations element by element whatever the shapes)."""
    column = (columns_kept + CONTEXT_PRIOR * density) / (rows_before + CONTEXT_PRIOR)
    odds = (row_density / (1.0 - row_density)) * (column / (1.0 - column)) * ((1.0 - density) / density)
    return odds / (1.0 + odds)


def mask_context_row_counts(masks: list[np.ndarray], shapes: list) -> list[np.ndarray]:
    """Kept count of every row of every mask (int64 per tensor)."""
    return [np.asarray(m, dtype=bool).reshape(mask_rows(shape)).sum(axis=1) for m, shape in zip(masks, shapes)]


def _context_rows(mask: np.ndarray, shape):
    """The mask as a matrix, its row counts, the rows that are coded (neither empty nor full) and the
    kept count of each element's column among the earlier rows."""
    rows, cols = mask_rows(shape)
    m = np.asarray(mask, dtype=bool).reshape(rows, cols)
    counts = m.sum(axis=1)
    coded = np.flatnonzero((counts > 0) & (counts < cols))
    return m, counts, coded, np.cumsum(m, axis=0, dtype=np.int64) - m


def _row_block_probabilities(m, counts, before, r) -> np.ndarray:
    return _context_probabilities(before[r].astype(np.float64), r[:, None].astype(np.float64),
                                  (counts[r] / m.shape[1])[:, None], m.sum() / m.size)


def mask_context_choice(masks: list[np.ndarray], shapes: list) -> list[bool]:
    """Per mask: True where the context model, its row counts included, is estimated to cost less than
    one Bernoulli probability for the whole tensor (what mask-ans does); False for empty or full masks."""
    choice = []
    for mask, shape in zip(masks, shapes):
        m, counts, coded, before = _context_rows(mask, shape)
        kept = int(m.sum())
        if kept in (0, m.size):
            choice.append(False)
            continue
        p = np.clip(_row_block_probabilities(m, counts, before, coded), 1e-12, 1 - 1e-12)
        bits = m[coded]
        context = float(-(bits * np.log2(p) + (~bits) * np.log2(1 - p)).sum()) + 8 * varint_bytes(counts)
        choice.append(context < mask_entropy_bits([m.size], [kept]))
    return choice


def mask_context_encode(masks: list[np.ndarray], shapes: list, use_context: list[bool]) -> bytes:
    """One rANS stream of every mask: under the context model (see the module docstring) where
    ``use_context`` says so, else under the tensor's Bernoulli(kept / size) as mask-ans. Masks with nothing
    or everything kept, and context rows with nothing or everything kept, cost nothing."""
    family = constriction.stream.model.Bernoulli(perfect=False)
    coder = constriction.stream.stack.AnsCoder()
    coded = False
    for mask, shape, context in reversed(list(zip(masks, shapes, use_context))):  # a stack: encode backwards
        m, counts, rows, before = _context_rows(mask, shape)
        kept = int(m.sum())
        if kept in (0, m.size):
            continue
        if not context:
            _encode_tensor_mask(coder, m.reshape(-1), kept)
            coded = True
            continue
        step = max(1, _ANS_CHUNK // max(m.shape[1], 1))
        for start in reversed(range(0, rows.size, step)):
            r = rows[start : start + step]
            p = _row_block_probabilities(m, counts, before, r)
            coder.encode_reverse(m[r].reshape(-1).astype(np.int32), family, p.reshape(-1))
            coded = True
    return coder.get_compressed().astype("<u4").tobytes() if coded else b""


def mask_context_decode(data: bytes, shapes: list, kept: list[int],
                        row_counts: list[np.ndarray | None]) -> list[np.ndarray]:
    """Inverse of ``mask_context_encode``; ``row_counts`` None for a mask coded without context."""
    family = constriction.stream.model.Bernoulli(perfect=False)
    coder = ans_decoder(data)
    masks = []
    with decoding(coder, "mask-context"):
        for shape, count, counts in zip(shapes, kept, row_counts):
            rows, cols = mask_rows(shape)
            size = rows * cols
            if count in (0, size):
                masks.append(np.full(size, count == size, dtype=bool))
                continue
            if counts is None:
                masks.append(_decode_tensor_mask(coder, size, count))
                continue
            counts = np.asarray(counts, dtype=np.int64)
            if counts.shape != (rows,) or int(counts.sum()) != count or counts.min() < 0 or counts.max() > cols:
                raise CodingError(f"row counts of a {rows}x{cols} mask do not add up to its {count} kept elements")
            m = np.zeros((rows, cols), dtype=bool)
            column_kept = np.zeros(cols, dtype=np.int64)
            for r in range(rows):
                if counts[r] == cols:
                    m[r] = True
                elif counts[r]:
                    p = _context_probabilities(column_kept.astype(np.float64), float(r), counts[r] / cols,
                                               count / size)
                    m[r] = np.asarray(coder.decode(family, p)) != 0
                    if int(m[r].sum()) != counts[r]:
                        raise CodingError(f"row {r} of a mask decodes to {int(m[r].sum())} kept, {counts[r]} stored")
                column_kept += m[r]
            masks.append(m.reshape(-1))
    return masks
