"""The file's serialisation: its error type, varints, CRCs, and the bounded reader of a section."""

from __future__ import annotations

import struct
import zlib

import numpy as np


class ContainerError(ValueError):
    """The file is not a valid .nqz file: the message says what is wrong and where, on one line of ASCII
    (whatever bytes of the file it quotes are escaped)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.encode("ascii", "backslashreplace").decode("ascii").split()))


def varints(values) -> bytes:
    """Unsigned LEB128 varints of ``values``, concatenated."""
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


class SectionReader:
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


def crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF
