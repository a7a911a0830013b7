"""rANS (constriction's stack coder, 32-bit words) for labels: one model per stream (``ans``), or a
model per tensor where it pays (``ans-layer``); and the decoder every ANS stream is read with.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import constriction
import numpy as np

from netquant.coding.symbols import CodingError, entropy_bits, symbol_counts, varint_bytes


def ans_decoder(data: bytes):
    """A constriction ANS decoder over ``data`` (uint32 words, little-endian); ``CodingError`` when the
    stream cannot be one."""
    if len(data) % 4:
        raise CodingError(f"ANS stream length {len(data)} is not a multiple of 4 bytes")
    return constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))


@contextlib.contextmanager
def decoding(coder, what: str) -> Iterator[None]:
    """Decode from ``coder`` in the block: constriction's plain exceptions on a bad stream become one
    ``CodingError`` naming the stream, and so does data left in the stream after the block."""
    try:
        yield
    except CodingError:
        raise
    except Exception as exc:  # noqa: BLE001 - constriction raises plain exceptions on bad data
        raise CodingError(f"{what} stream does not decode: {exc}") from exc
    if not coder.is_empty():
        raise CodingError(f"{what} stream has data left after its last symbol")


def _categorical(counts: np.ndarray):
    return constriction.stream.model.Categorical(np.asarray(counts, dtype=np.float64), perfect=False)


def ans_encode(symbols: np.ndarray, counts: np.ndarray) -> bytes:
    """rANS stream of ``symbols`` under the model ``counts`` (int [k], the symbols' own counts).

    Streams with at most one distinct symbol cost 0 bytes.
    """
    symbols = np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1)
    counts = np.asarray(counts, dtype=np.int64)
    if np.count_nonzero(counts) <= 1:
        return b""
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols, _categorical(counts))
    return coder.get_compressed().astype("<u4").tobytes()


def ans_decode(data: bytes, counts: np.ndarray, n: int) -> np.ndarray:
    """Inverse of ``ans_encode``: int32 [n]."""
    counts = np.asarray(counts, dtype=np.int64)
    if int(counts.sum()) != n:
        raise CodingError(f"ANS model counts sum to {int(counts.sum())}, {n} symbols announced")
    present = np.flatnonzero(counts)
    if present.size <= 1:
        if data:
            raise CodingError(f"single-symbol ANS stream must be empty, has {len(data)} bytes")
        return np.full(n, present[0] if present.size else 0, dtype=np.int32)
    coder = ans_decoder(data)
    with decoding(coder, "ANS"):
        out = np.asarray(coder.decode(_categorical(counts), n), dtype=np.int32)
    return out


def layer_label_models(parts: list[np.ndarray], k: int) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """The models of an ``ans-layer`` label stream made of the tensors' ``parts``: the counts of the whole
    stream, and for each tensor its own counts where coding it with them (its entropy plus its k stored
    varints) is estimated to cost less than with the stream's, else None."""
    shared = symbol_counts(np.concatenate(parts) if parts else np.zeros(0, np.int32), k)
    total = max(int(shared.sum()), 1)
    own: list[np.ndarray | None] = []
    for part in parts:
        counts = symbol_counts(part, k)
        present = counts > 0
        with_shared = float(-(counts[present] * np.log2(shared[present] / total)).sum())
        with_own = part.size * entropy_bits(counts) + 8 * varint_bytes(counts)
        own.append(counts if with_own < with_shared else None)
    return shared, own


def ans_layers_encode(parts: list[np.ndarray], shared: np.ndarray, own: list[np.ndarray | None]) -> bytes:
    """One rANS stream of the tensors' label ``parts``, each under its own counts or the shared ones."""
    coder = constriction.stream.stack.AnsCoder()
    coded = False
    for part, counts in reversed(list(zip(parts, own))):
        counts = shared if counts is None else counts
        if part.size == 0 or np.count_nonzero(counts) <= 1:
            continue
        coder.encode_reverse(np.ascontiguousarray(part, dtype=np.int32), _categorical(counts))
        coded = True
    return coder.get_compressed().astype("<u4").tobytes() if coded else b""


def ans_layers_decode(data: bytes, sizes: list[int], shared: np.ndarray, own: list[np.ndarray | None]) -> np.ndarray:
    """Inverse of ``ans_layers_encode``: the labels of the tensors (``sizes`` each), concatenated."""
    coder = ans_decoder(data)
    out = []
    with decoding(coder, "ANS"):
        for n, counts in zip(sizes, own):
            counts = shared if counts is None else counts
            if counts is not shared and int(counts.sum()) != n:
                raise CodingError(f"a tensor's label counts sum to {int(counts.sum())}, {n} labels announced")
            present = np.flatnonzero(counts)
            if n == 0:
                continue
            if present.size <= 1:
                out.append(np.full(n, present[0] if present.size else 0, dtype=np.int32))
                continue
            out.append(np.asarray(coder.decode(_categorical(counts), n), dtype=np.int32))
    return np.concatenate(out) if out else np.zeros(0, np.int32)
