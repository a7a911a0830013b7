"""Deep Compression's relative index: the positions of kept weights as bounded gaps.
"""

from __future__ import annotations

import numpy as np

from netquant.coding.symbols import CodingError


def dc_gap_symbols(mask: np.ndarray, bound: int) -> np.ndarray:
    """Deep Compression relative-index symbols of one flattened mask: int32 [kept + fillers].

    Symbol ``g`` in ``1..bound``: the next kept weight is ``g`` positions after the previous one;
    symbol 0 (filler): advance ``bound`` positions without a weight.
    """
    if bound < 1:
        raise ValueError(f"index bound must be >= 1, got {bound}")
    positions = np.flatnonzero(np.asarray(mask).reshape(-1))
    gaps = np.diff(positions, prepend=-1)
    fillers = (gaps - 1) // bound
    out = np.zeros(positions.size + int(fillers.sum()), dtype=np.int32)
    out[np.cumsum(fillers + 1) - 1] = gaps - fillers * bound
    return out


def dc_masks(symbols: np.ndarray, bound: int, sizes: list[int], kept: list[int]) -> list[np.ndarray]:
    """Inverse of ``dc_gap_symbols`` applied to consecutive tensors (``sizes``, ``kept`` per tensor).

    Returns flat boolean masks. Raises ``CodingError`` when the symbols do not fit the tensors.
    """
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.size and (symbols.min() < 0 or symbols.max() > bound):
        raise CodingError(f"index symbols must lie in [0, {bound}]")
    weight_at = np.flatnonzero(symbols)  # stream index of every kept weight
    if weight_at.size != sum(kept):
        raise CodingError(f"index stream holds {weight_at.size} kept positions, tensors need {sum(kept)}")
    masks, begin, seen = [], 0, 0
    for size, count in zip(sizes, kept):
        end = int(weight_at[seen + count - 1]) + 1 if count else begin
        part = symbols[begin:end]
        position = np.cumsum(np.where(part == 0, bound, part)) - 1
        position = position[part != 0]
        if position.size and position[-1] >= size:
            raise CodingError(f"index stream points at element {position[-1]} of a tensor with {size}")
        mask = np.zeros(size, dtype=bool)
        mask[position] = True
        masks.append(mask)
        begin, seen = end, seen + count
    if begin != symbols.size:
        raise CodingError(f"index stream has {symbols.size - begin} symbols after the last tensor")
    return masks
