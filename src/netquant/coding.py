"""Entropy codes for cluster labels and for the positions of unpruned weights.

(Longer than most modules: each code's encoder and decoder sit next to each other, and they share the
bit-packing helpers.)

Label codes (a stream of integer symbols ``0..k-1``, int32, shape [n]):

- **fixed**: every symbol in ``fixed_width(k) = ceil(log2 k)`` bits (0 bits when k == 1).
- **huffman**: canonical Huffman. Only the code length of each symbol is stored; the codewords follow
  from the lengths by the canonical rule (symbols sorted by (length, symbol), consecutive integer codes),
  so decoding is integer-only and identical on every machine. A stream with a single distinct symbol has
  code length 0 for it and costs 0 bits (the table alone says what every symbol is).
- **ans**: rANS from ``constriction`` (stack coder, 32-bit words, 24-bit fixed-point model). The model is
  built from the integer symbol counts, which are what a file stores, so the decoder rebuilds exactly the
  encoder's model. It reaches the entropy within a few bits per stream.
- **ans-layer**: as ``ans``, but a tensor whose labels are distributed differently from the stream's (a
  layer of larger weights, the biases) is coded with its own counts, stored after the stream's, where
  that is estimated to cost less than the shared model, table included (``layer_label_models``).

Bit order: fixed and Huffman bitstreams are big-endian (first bit = most significant bit of byte 0),
padded with zero bits to whole bytes; ``nbits`` is the unpadded length. ANS streams are constriction's
uint32 words, stored little-endian.

Position codes (one boolean mask per tensor, True = kept, flattened row-major):

- **deep-compression** (Han et al. 2016): each kept weight is given by its distance ``gap >= 1`` to the
  previous kept weight (the first one from position -1). Gaps up to ``bound`` are the symbols ``1..bound``;
  a larger gap first emits ``(gap - 1) // bound`` filler symbols ``0``, each meaning "advance ``bound``
  positions, no weight here". The symbols of all tensors form one stream, Huffman coded with one table.
  Unlike Deep Compression, a filler carries no weight codeword (there it is a stored zero weight), so
  fillers cost only their index codeword. Pruned elements after the last kept one are not coded.
- **mask-ans**: the mask of each tensor, one binary symbol per element, ANS coded with a Bernoulli model
  of probability ``kept / size`` of that tensor (both numbers are known to the decoder). This costs
  ``size * H(kept / size)`` bits, the entropy of the mask when its elements are taken as independent: the
  optimum for that model, with no table, no fillers, no Huffman rounding, and the density of each tensor
  rather than one table for all. Hence it is the better option reported beside deep-compression.
- **mask-context**: the mask of each tensor as a matrix (rows = output units, ``shape[0]``; a 1-D tensor is
  one row), rows in order, each element ANS coded with its own probability from what the decoder already
  knows: the row's kept count ``n_r`` (stored, a varint per row), and how many earlier rows kept the same
  column (an input unit, or an input channel and kernel position). With ``q = n_r / C`` the row's density,
  ``d`` the tensor's, ``c = (kept in the column so far + CONTEXT_PRIOR * d) / (rows so far +
  CONTEXT_PRIOR)`` the column's estimate, the odds of "kept" are ``odds(q) * odds(c) / odds(d)``: row and
  column effects multiply the odds (independent evidence about one unit's inputs and outputs). Only
  + - * / enter, so encoder and decoder compute the same probabilities bit for bit on any machine. It pays
  where pruning left structure: output units that lost most of their inputs, inputs pruned in every row.
  Where it would not (estimated with its row counts), a tensor is coded as by mask-ans; a flag says which.

Every decoder raises ``CodingError`` (a ``ValueError``) on a stream that does not decode to what was
announced.
"""

from __future__ import annotations

import math

import bitarray
import bitarray.util
import constriction
import numpy as np

INDEX_CODES = ("deep-compression", "mask-ans", "mask-context")
CONTEXT_PRIOR = 8.0  # mask-context: weight, in rows, of the tensor's density in a column's estimate

_CHUNK = 1 << 16  # symbols per vectorised packing step: keeps temporaries in cache
_ANS_CHUNK = 1 << 20  # mask symbols per constriction call (bounds the int32 temporaries)
_COUNT_CHUNK = 1 << 18
_U64 = np.uint64


class CodingError(ValueError):
    """A bitstream does not decode to the announced content."""


# --------------------------------------------------------------------------------------------------
# statistics


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


# --------------------------------------------------------------------------------------------------
# fixed-length and canonical Huffman codes


def fixed_width(k: int) -> int:
    """Bits per symbol of the fixed-length code for an alphabet of ``k`` symbols: ``ceil(log2 k)``."""
    if k < 1:
        raise ValueError(f"alphabet size must be >= 1, got {k}")
    return (k - 1).bit_length()


def huffman_lengths(counts: np.ndarray) -> np.ndarray:
    """Optimal (Huffman) code lengths in bits: int64 [k]; -1 for symbols with count 0.

    A single symbol with a nonzero count gets length 0. The lengths satisfy Kraft's equality
    ``sum 2^-length == 1`` over the occurring symbols.
    """
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.full(counts.size, -1, dtype=np.int64)
    present = np.flatnonzero(counts > 0)
    if present.size == 1:
        lengths[present] = 0
    elif present.size > 1:
        code = bitarray.util.huffman_code({int(s): int(counts[s]) for s in present}, endian="big")
        for s, word in code.items():
            lengths[s] = len(word)
    return lengths


def kraft_sum_is_one(lengths: np.ndarray) -> bool:
    """True when the occurring symbols' lengths (>= 0) form a complete prefix code (exact integers)."""
    used = [int(length) for length in np.asarray(lengths) if length >= 0]
    if not used:
        return True  # empty stream: no code needed
    top = max(used)
    return sum(1 << (top - length) for length in used) == 1 << top


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical codewords (as integers, ``lengths[s]`` bits each) for the given lengths: uint64 [k].

    Symbols are ordered by (length, symbol); each codeword is the previous one plus one, shifted left
    by the increase in length (as in DEFLATE). Codes of absent symbols (length -1) are 0.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(lengths.size, dtype=np.uint64)
    present = np.flatnonzero(lengths >= 0)
    order = present[np.lexsort((present, lengths[present]))]
    code, previous = -1, None
    for s in order.tolist():
        length = int(lengths[s])
        code = 0 if previous is None else (code + 1) << (length - previous)
        codes[s] = code
        previous = length
    return codes


def _pack(symbols: np.ndarray, codes: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Concatenate ``codes[symbols]`` (``lengths[symbols]`` bits each, <= 32) big-endian: (bytes, nbits).

    Symbols with length -1 (no codeword) raise ``ValueError``. Vectorised over chunks of symbols: each
    codeword (<= 32 bits) is shifted into the 48-bit window that starts at its 16-bit output word (bit
    offset <= 15); windows that start at the same output word never overlap, so their sum is their OR,
    computed with one ``bincount`` (exact in float64 below 2^53); the sums of neighbouring windows are
    then merged word by word. Small alphabets pack two symbols per entry (one table lookup of the
    concatenated codeword), except the rare pairs longer than 32 bits and pairs with a symbol that has
    no codeword, which go in as two entries (and are checked).
    """
    k = codes.size
    invalid = lengths < 0
    lengths = np.maximum(lengths, 0).astype(np.uint64)
    single = codes << (_U64(48) - lengths)  # codewords left-aligned in 48 bits
    single_len = lengths.astype(np.uint8)
    n = symbols.size
    pairs = k <= 256 and n >= 2
    if pairs:
        # Pair tables indexed by first + 256 * second: the uint16 view of the symbols as bytes.
        pad = 256 - k
        first_code, first_len = np.pad(codes, (0, pad))[None, :], np.pad(lengths, (0, pad))[None, :]
        second_code, second_len = first_code.T, first_len.T
        no_code = np.pad(invalid, (0, pad), constant_values=True)
        pair_len = (first_len + second_len).reshape(-1)
        pair_code = ((first_code << second_len) | second_code).reshape(-1)
        pair_split = (pair_len > 32) | (no_code[None, :] | no_code[:, None]).reshape(-1)
        pair = np.where(pair_split, _U64(0), pair_code << (_U64(48) - np.minimum(pair_len, _U64(48))))
        pair_len = pair_len.astype(np.uint8)
    # zero-filled by the OS on first touch, so the upper bound costs only the pages written
    words = np.zeros(n * int(lengths.max()) // 16 + 4, dtype=np.uint16)
    base = 0
    step = 2 * _CHUNK if pairs else _CHUNK
    body = n - n % 2 if pairs else n
    for i in range(0, body, step):
        chunk = symbols[i : min(i + step, body)]
        if pairs:
            index = chunk.astype(np.uint8).view("<u2")  # first + 256 * second on every machine
            entries, length = pair[index], pair_len[index]
            split = np.flatnonzero(pair_split[index])
            if split.size:  # two entries: the first symbol in place, the second inserted after it
                a, b = chunk[2 * split], chunk[2 * split + 1]
                if invalid[a].any() or invalid[b].any():
                    raise ValueError("a symbol to encode has no codeword (length -1)")
                entries = np.insert(entries, split + 1, single[b])
                length = np.insert(length, split + 1, single_len[b])
                first = split + np.arange(split.size)
                entries[first] = single[a]
                length[first] = single_len[a]
        else:
            entries, length = single[chunk], single_len[chunk]
            if invalid[chunk].any():
                raise ValueError("a symbol to encode has no codeword (length -1)")
        base = _pack_words(entries, length, words, base)
    if body < n:
        if invalid[symbols[body:]].any():
            raise ValueError("a symbol to encode has no codeword (length -1)")
        base = _pack_words(single[symbols[body:]], single_len[symbols[body:]], words, base)
    return words[: (base + 15) // 16].astype(">u2").tobytes()[: (base + 7) // 8], base


def _pack_words(entries: np.ndarray, length: np.ndarray, words: np.ndarray, base: int) -> int:
    """OR codewords (uint64, left-aligned in 48 bits) of ``length`` bits (uint8) into big-endian uint16
    ``words``, starting at bit ``base``; returns the bit position after the last one."""
    offset = base & 15
    first_length = int(length[0])
    length[0] += offset  # start[i] = offset + sum(length[:i]) with one cumsum; start[0] is set below
    start = np.cumsum(length, dtype=np.uint64)
    end = int(start[-1])
    start -= length
    start[0] = offset
    length[0] = first_length
    word = (start >> _U64(4)).view(np.int64)
    window = entries >> (start & _U64(15))
    n_words = int(word[-1]) + 3
    total = np.bincount(word, weights=window, minlength=n_words).astype(np.uint64)
    merged = total >> _U64(32)  # bits 47..32 of the windows starting at this word,
    merged[1:] |= (total[:-1] >> _U64(16)) & _U64(0xFFFF)  # 31..16 of those starting one word before,
    merged[2:] |= total[:-2] & _U64(0xFFFF)  # 15..0 of those starting two words before
    first = base >> 4
    words[first : first + n_words] |= merged.astype(np.uint16)
    return base - offset + end


def _encode_with_bitarray(symbols: np.ndarray, codes: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Fallback for codewords longer than 32 bits (only for extremely skewed, huge streams)."""
    table = {s: bitarray.util.int2ba(int(codes[s]), int(lengths[s]), endian="big")
             for s in np.flatnonzero(lengths > 0).tolist()}
    out = bitarray.bitarray(endian="big")
    try:
        out.encode(table, symbols.tolist())
    except KeyError as exc:
        raise ValueError(f"symbol {exc} has no codeword (length -1)") from None
    return out.tobytes(), len(out)


def huffman_encode(symbols: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Canonical Huffman bitstream of ``symbols`` (int [n]) under ``lengths``: (bytes, nbits)."""
    symbols = np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1)
    lengths = np.asarray(lengths, dtype=np.int64)
    if symbols.size == 0:
        return b"", 0
    _check_range(symbols, lengths.size)
    if lengths.max(initial=-1) > 64:
        raise ValueError(f"code length {lengths.max()} exceeds 64 bits")
    if not kraft_sum_is_one(lengths):
        raise ValueError("code lengths do not form a complete prefix code (Kraft sum != 1)")
    present = np.flatnonzero(lengths >= 0)
    if present.size == 1:
        if (symbols != present[0]).any():
            raise ValueError("a symbol to encode has no codeword (length -1)")
        return b"", 0
    codes = canonical_codes(lengths)
    if lengths.max() > 32:
        return _encode_with_bitarray(symbols, codes, lengths)
    return _pack(symbols, codes, lengths)


def huffman_decode(data: bytes, nbits: int, lengths: np.ndarray, n: int) -> np.ndarray:
    """Decode ``n`` symbols from a canonical Huffman bitstream: int32 [n].

    Raises ``CodingError`` if ``lengths`` is not a complete prefix code or the stream does not hold
    exactly ``n`` codewords in ``nbits`` bits.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.max(initial=-1) > 64:
        raise CodingError(f"code length {lengths.max()} exceeds the 64 bits this decoder supports")
    if not kraft_sum_is_one(lengths):
        raise CodingError("code-length table is not a complete prefix code (Kraft sum != 1)")
    if len(data) != (nbits + 7) // 8:
        raise CodingError(f"stream holds {len(data)} bytes, {nbits} bits need {(nbits + 7) // 8}")
    present = np.flatnonzero(lengths >= 0)
    if n == 0:
        if nbits:
            raise CodingError(f"empty stream announced but {nbits} bits present")
        return np.zeros(0, dtype=np.int32)
    if present.size == 0:
        raise CodingError(f"{n} symbols announced but the code table is empty")
    if present.size == 1:
        if nbits:
            raise CodingError(f"single-symbol stream must have 0 bits, has {nbits}")
        return np.full(n, present[0], dtype=np.int32)
    stream = bitarray.bitarray(endian="big")
    stream.frombytes(data)
    del stream[nbits:]
    codes = canonical_codes(lengths)
    words = {int(s): bitarray.util.int2ba(int(codes[s]), int(lengths[s]), endian="big") for s in present}
    try:
        # Decoding groups of g symbols cuts the per-item work of the iterator; a group's codeword is the
        # concatenation of g codewords, so the bitstream is the same. Groups are used when the tree of
        # present^g leaves is small and pays for itself.
        group = max(g for g in (1, 2, 3) if g == 1 or (present.size**g <= 1 << 15 and n >= 64 * present.size**g))
        body = n - n % group
        if group == 1:
            out = np.fromiter(stream.decode(bitarray.decodetree(words)), dtype=np.int32, count=n)
        else:
            shift = max(1, (lengths.size - 1).bit_length())  # group key: the symbols' bits side by side
            tree = dict(words)
            for _ in range(group - 1):
                tree = {(key << shift) | s: word + words[s] for key, word in tree.items() for s in words}
            key_type = np.int32 if group * shift <= 31 else np.int64
            keys = np.fromiter(stream.decode(bitarray.decodetree(tree)), dtype=key_type, count=n // group)
            out = np.empty(n, dtype=np.int32)
            for j in range(group):
                out[j:body:group] = (keys >> ((group - 1 - j) * shift)) & ((1 << shift) - 1)
            if body < n:
                used = int(np.dot(symbol_counts(out[:body], lengths.size), lengths))
                tail = stream[used:].decode(bitarray.decodetree(words))
                out[body:] = np.fromiter(tail, dtype=np.int32, count=n - body)
    except (ValueError, StopIteration) as exc:
        raise CodingError(f"Huffman stream does not hold {n} codewords: {exc}") from exc
    used = int(np.dot(symbol_counts(out, lengths.size), np.maximum(lengths, 0)))
    if used != nbits:
        raise CodingError(f"Huffman stream has {nbits} bits but its {n} codewords use {used}")
    return out


def fixed_encode(symbols: np.ndarray, width: int) -> tuple[bytes, int]:
    """Fixed-length code, ``width`` bits per symbol (<= 32), big-endian: (bytes, nbits)."""
    symbols = np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1)
    if not 0 <= width <= 32:
        raise ValueError(f"fixed width must be in [0, 32], got {width}")
    if symbols.size and (symbols.min() < 0 or int(symbols.max()) >= 1 << width):
        raise ValueError(f"symbols do not fit in {width} bits")
    if symbols.size * width == 0:
        return b"", 0
    k = 1 << width
    if k <= 1 << 16:
        codes = np.arange(k, dtype=np.uint64)
        lengths = np.full(k, width, dtype=np.int64)
    else:  # do not build a 2^width table for wide codes: a one-entry-per-occurring-symbol table suffices
        codes = np.arange(int(symbols.max()) + 1, dtype=np.uint64)
        lengths = np.full(codes.size, width, dtype=np.int64)
    return _pack(symbols, codes, lengths)


def fixed_decode(data: bytes, width: int, n: int) -> np.ndarray:
    """Inverse of ``fixed_encode``: int32 [n]. Each symbol is read from a 40-bit big-endian window."""
    if len(data) != (n * width + 7) // 8:
        raise CodingError(f"fixed-length stream holds {len(data)} bytes, "
                          f"{n} x {width} bits need {(n * width + 7) // 8}")
    if width == 0:
        return np.zeros(n, dtype=np.int32)
    buf = np.frombuffer(data + bytes(8), dtype=np.uint8)
    out = np.empty(n, dtype=np.int32)
    mask = _U64((1 << width) - 1)
    for i in range(0, n, 1 << 20):
        pos = np.arange(i, min(i + (1 << 20), n), dtype=np.int64) * width
        byte = pos >> 3
        window = np.zeros(pos.size, dtype=np.uint64)
        for j in range(5):
            window = (window << _U64(8)) | buf[byte + j]
        shift = (40 - width - (pos & 7)).astype(np.uint64)
        out[i : i + pos.size] = (window >> shift) & mask
    return out


# --------------------------------------------------------------------------------------------------
# ANS (constriction)


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
    if len(data) % 4:
        raise CodingError(f"ANS stream length {len(data)} is not a multiple of 4 bytes")
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    try:
        out = np.asarray(coder.decode(_categorical(counts), n), dtype=np.int32)
    except Exception as exc:  # noqa: BLE001 - constriction raises plain exceptions on bad data
        raise CodingError(f"ANS stream does not decode: {exc}") from exc
    if not coder.is_empty():
        raise CodingError("ANS stream has data left after decoding all symbols")
    return out


# --------------------------------------------------------------------------------------------------
# positions of unpruned weights


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
    if len(data) % 4:
        raise CodingError(f"ANS stream length {len(data)} is not a multiple of 4 bytes")
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    masks = []
    try:
        for size, count in zip(sizes, kept):
            if count in (0, size):
                masks.append(np.full(size, count == size, dtype=bool))
                continue
            masks.append(_decode_tensor_mask(coder, size, count))
    except CodingError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise CodingError(f"mask ANS stream does not decode: {exc}") from exc
    if not coder.is_empty():
        raise CodingError("mask ANS stream has data left after decoding all masks")
    return masks


def mask_entropy_bits(sizes: list[int], kept: list[int]) -> float:
    """Total ``sum size * H(kept/size)`` in bits: the bound reached by ``mask-ans``."""
    total = 0.0
    for size, count in zip(sizes, kept):
        if 0 < count < size:
            p = count / size
            total += size * -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    return total


# --------------------------------------------------------------------------------------------------
# mask-context: row counts stored, column statistics adaptive


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
        context = float(-(bits * np.log2(p) + (~bits) * np.log2(1 - p)).sum()) + 8 * _varint_bytes(counts)
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
    if len(data) % 4:
        raise CodingError(f"ANS stream length {len(data)} is not a multiple of 4 bytes")
    family = constriction.stream.model.Bernoulli(perfect=False)
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    masks = []
    try:
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
    except CodingError:
        raise
    except Exception as exc:  # noqa: BLE001 - constriction raises plain exceptions on bad data
        raise CodingError(f"mask-context stream does not decode: {exc}") from exc
    if not coder.is_empty():
        raise CodingError("mask-context stream has data left after decoding all masks")
    return masks


# --------------------------------------------------------------------------------------------------
# ans-layer: labels with a model per tensor where it pays


def _varint_bytes(values) -> int:
    return sum(max(1, (int(v).bit_length() + 6) // 7) for v in values)


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
        with_own = part.size * entropy_bits(counts) + 8 * _varint_bytes(counts)
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
    if len(data) % 4:
        raise CodingError(f"ANS stream length {len(data)} is not a multiple of 4 bytes")
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    out = []
    try:
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
    except CodingError:
        raise
    except Exception as exc:  # noqa: BLE001 - constriction raises plain exceptions on bad data
        raise CodingError(f"ANS stream does not decode: {exc}") from exc
    if not coder.is_empty():
        raise CodingError("ANS stream has data left after decoding all labels")
    return np.concatenate(out) if out else np.zeros(0, np.int32)
