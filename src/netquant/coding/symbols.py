"""Symbol statistics shared by the codes, and the error every decoder raises."""

from __future__ import annotations

import numpy as np

_COUNT_CHUNK = 1 << 18


class CodingError(ValueError):
    """A bitstream does not decode to the announced content."""


def symbol_counts(symbols: np.ndarray, k: int) -> np.ndarray:
    """Occurrences of each symbol ``0..k-1``: int64 [k]."""
    symbols = np.asarray(symbols).reshape(-1)
    _check_range(symbols, k)
    counts = np.zeros(k, dtype=np.int64)
    for i in range(0, symbols.size, _COUNT_CHUNK):  # chunks: bincount's intp copy stays in cache
        counts += np.bincount(symbols[i : i + _COUNT_CHUNK], minlength=k)
    return counts


def _check_range(symbols: np.ndarray, k: int) -> None:
    if symbols.size and (symbols.min() < 0 or symbols.max() >= k):
        raise ValueError(f"symbols must lie in [0, {k}), got [{symbols.min()}, {symbols.max()}]")


def entropy_bits(counts: np.ndarray) -> float:
    """Empirical entropy in bits per symbol, ``-sum p log2 p`` with ``p = counts / counts.sum()``."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 (one symbol) into 0.0


def varint_bytes(values) -> int:
    """Bytes of ``values`` stored as unsigned LEB128 varints (a file's tables)."""
    return sum(max(1, (int(v).bit_length() + 6) // 7) for v in values)
