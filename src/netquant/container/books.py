"""The shared values as the BOOK section stores them from format version 4: per codebook, one byte ``k``,
then an exp-Golomb code of order ``k`` per value, padded with zero bits to a whole byte.

A value's 32-bit pattern is taken as an ordered integer ``o`` (the pattern itself when the sign bit is 0,
``-(pattern & 0x7fffffff) - 1`` when it is 1: a bijection on all 2^32 patterns that increases with the value
among finite numbers) and coded as the zigzag of its difference from the previous value's ``o`` (0 before
the first). Codebooks in increasing order - what k-means and the uniform methods write - have positive
differences of a few thousand to a few million units in the last place, which cost about
``2 log2(difference) - k`` bits each instead of 32; the encoder picks the order ``k`` that minimises the
total. Where that is no shorter than the values themselves (an unordered codebook of spread values), the
byte is ``RAW`` (255) and the float32 values follow as they are. Every pattern round-trips exactly, -0.0,
subnormals and all. (Versions 1-3 store float32 values as they are.)
"""

from __future__ import annotations

import numpy as np

from netquant.container.binary import ContainerError

MAX_ORDER = 33  # zigzag differences are below 2^33
RAW = 255  # the order byte of a codebook stored as float32 values


def _ordered(values: np.ndarray) -> np.ndarray:
    pattern = np.asarray(values, "<f4").view("<i4").astype(np.int64)
    return np.where(pattern >= 0, pattern, -(pattern & 0x7FFFFFFF) - 1)


def _patterns(ordered: list[int]) -> np.ndarray:
    o = np.asarray(ordered, np.int64)
    return np.where(o >= 0, o, (-(o + 1)) | 0x80000000).astype(np.uint32).view("<f4").astype(np.float32)


def _bit_lengths(x: np.ndarray) -> np.ndarray:
    """bit_length of positive integers below 2^53 (exactly: frexp of an exactly represented float)."""
    return np.frexp(x.astype(np.float64))[1].astype(np.int64)


def encode_values(values: np.ndarray) -> bytes:
    """One codebook's bytes in the BOOK section (empty for an empty codebook)."""
    if len(values) == 0:
        return b""
    o = _ordered(values)
    d = np.diff(o, prepend=0)
    z = np.where(d >= 0, 2 * d, -2 * d - 1)
    lengths = [_bit_lengths(z + (1 << k)) for k in range(MAX_ORDER + 1)]
    costs = [int(np.sum(2 * n - 1 - k)) for k, n in enumerate(lengths)]
    k = int(np.argmin(costs))
    if (costs[k] + 7) // 8 >= 4 * len(values):
        return bytes([RAW]) + np.asarray(values, "<f4").tobytes()
    bits = "".join("0" * (n - 1 - k) + format(int(x), "b") for x, n in zip(z + (1 << k), lengths[k]))
    bits += "0" * (-len(bits) % 8)
    return bytes([k]) + int(bits, 2).to_bytes(len(bits) // 8, "big")


def decode_books(data: bytes, sizes: list[int]) -> list[np.ndarray]:
    """The codebooks of sizes ``sizes`` held by the BOOK section ``data``, which they must fill exactly.
    Raises ContainerError on any defect."""
    if sum(sizes) > 8 * len(data):  # a coded value takes at least one bit
        raise ContainerError(f"section BOOK has {len(data)} bytes for {sum(sizes):,} shared values")
    bits = format(int.from_bytes(data, "big"), "b").zfill(8 * len(data)) if data else ""
    books, pos = [], 0
    for size in sizes:
        book, pos = _decode_book(data, bits, pos, size)
        books.append(book)
    if pos != len(data):
        raise ContainerError(f"section BOOK has {len(data)} bytes, its {len(books)} codebooks end at byte {pos}")
    return books


def _decode_book(data: bytes, bits: str, pos: int, count: int) -> tuple[np.ndarray, int]:
    """``count`` values of the codebook that starts at byte ``pos`` (``bits``: the section as a string of
    bits, made once), and the byte after it. Only the encoder's own bytes are accepted (its order, float32
    only where coding is no shorter), so that a file's bytes follow from the network it holds."""
    book, end = _read_book(data, bits, pos, count)
    if encode_values(book) != data[pos:end]:
        raise ContainerError(f"section BOOK: the codebook at byte {pos} is not coded as netquant codes it "
                             "(another order, or float32 where the code is shorter)")
    return book, end


def _read_book(data: bytes, bits: str, pos: int, count: int) -> tuple[np.ndarray, int]:
    if count == 0:
        return np.zeros(0, np.float32), pos
    if pos >= len(data):
        raise ContainerError(f"section BOOK ends at byte {len(data)}; a codebook of {count:,} values starts there")
    k = data[pos]
    if k == RAW:
        if pos + 1 + 4 * count > len(data):
            raise ContainerError(f"section BOOK ends at byte {len(data)}, within the {count:,} float32 values of "
                                 f"the codebook at byte {pos}")
        return np.frombuffer(data, "<f4", count, pos + 1).astype(np.float32), pos + 1 + 4 * count
    if k > MAX_ORDER:
        raise ContainerError(f"section BOOK: exp-Golomb order {k} at byte {pos} (at most {MAX_ORDER})")
    at, previous, ordered = 8 * (pos + 1), 0, []
    for i in range(count):
        one = bits.find("1", at)
        zeros = one - at
        if one < 0 or zeros > MAX_ORDER + 1 - k:
            raise ContainerError(f"section BOOK: value {i} of a codebook of {count:,} at byte {pos} is not a "
                                 "valid code (the section ends or its prefix is too long)")
        end = one + zeros + k + 1
        if end > len(bits):
            raise ContainerError(f"section BOOK: value {i} of a codebook of {count:,} at byte {pos} runs past "
                                 "the section's end")
        z = int(bits[one:end], 2) - (1 << k)
        previous += z >> 1 if z % 2 == 0 else -((z + 1) >> 1)
        if not -(1 << 31) <= previous < 1 << 31:
            raise ContainerError(f"section BOOK: value {i} of a codebook at byte {pos} is not a 32-bit pattern")
        ordered.append(previous)
        at = end
    used = (at + 7) // 8
    if "1" in bits[at:8 * used]:
        raise ContainerError(f"section BOOK: the codebook at byte {pos} is not padded with zero bits")
    return _patterns(ordered), used
