"""Leaf helpers shared by every format: varints and the block checksum."""

import mmh3

from .errors import Error


class VarintError(Error):
    """A varint ran past its buffer or past 10 bytes."""


def encode_varint(n: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, low bits first, high bit set on all but the last byte."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode_varint(buf, pos: int) -> tuple[int, int]:
    """Return ``(value, next_pos)`` of the varint at ``buf[pos]``; raise VarintError if it is cut."""
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise VarintError("varint runs past the end of its buffer")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise VarintError("varint longer than 10 bytes")


def checksum(data) -> int:
    """32-bit checksum of a record: the low 32 bits of the first word of MurmurHash3_x64_128."""
    return mmh3.mmh3_x64_128_utupledigest(data, 0)[0] & 0xFFFFFFFF
