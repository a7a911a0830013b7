"""Prefix codes: fixed-length and canonical Huffman, and the bit packing of their streams.

Bit order: big-endian (first bit = most significant bit of byte 0), padded with zero bits to whole
bytes; ``nbits`` is the unpadded length.
"""

from __future__ import annotations

import bitarray
import bitarray.util
import numpy as np

from netquant.coding.symbols import CodingError, _check_range, symbol_counts

_CHUNK = 1 << 16  # symbols per vectorised packing step: keeps temporaries in cache
_U64 = np.uint64


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
