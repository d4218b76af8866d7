"""Just enough of the protobuf wire format to edit a message without its schema library.

Why: the job must swap the weights of an ONNX model, and the `onnx` package cannot run in
PyFlink's thread mode (its nanobind extension aborts in pemja's threads). A protobuf
message is a flat sequence of (tag, value) fields, so editing a few known fields while
copying every other one byte for byte needs no generated code: this module splits a buffer
into fields, and encodes tags, varints and length prefixes. `onnx_release` knows which
field numbers mean what.

Reference: https://protobuf.dev/programming-guides/encoding/. Groups (wire types 3 and 4,
deprecated since proto2 and never written by ONNX tools) are refused, as is anything
truncated or malformed; `WireError` says where.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "I32",
    "I64",
    "LEN",
    "VARINT",
    "Field",
    "WireError",
    "fields",
    "len_header",
    "packed_varints",
    "tag",
    "to_signed",
    "varint",
]

VARINT, I64, LEN, I32 = 0, 1, 2, 5
_FIXED_SIZE = {I64: 8, I32: 4}
_MAX_VARINT_BYTES = 10  # 64 bits, 7 per byte


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


@dataclass(frozen=True, slots=True)
class Field:
    """One field as found in the buffer: `value` is the integer of a VARINT field, `data`
    the bytes of a LEN field or the 4/8 little-endian bytes of an I32/I64 field, `raw` the
    whole field, tag included, to copy it unchanged."""

    number: int
    wire_type: int
    value: int
    data: memoryview
    raw: memoryview


def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    for i in range(pos, min(pos + _MAX_VARINT_BYTES, len(data))):
        byte = data[i]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & 0xFFFF_FFFF_FFFF_FFFF, i + 1
        shift += 7
    raise WireError(f"truncated or over-long varint at byte {pos}")


def fields(data: bytes | memoryview) -> Iterator[Field]:
    """The fields of one message, in buffer order (slices of `data`, no copies)."""
    view = memoryview(data)
    pos, end = 0, len(view)
    while pos < end:
        start = pos
        key, pos = _read_varint(view, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {start}")
        value, data = 0, view[pos:pos]
        if wire_type == VARINT:
            value, pos = _read_varint(view, pos)
        elif wire_type == LEN:
            length, pos = _read_varint(view, pos)
            if length > end - pos:
                raise WireError(f"field {number} at byte {start}: {length} bytes past the end")
            data, pos = view[pos : pos + length], pos + length
        elif wire_type in _FIXED_SIZE:
            size = _FIXED_SIZE[wire_type]
            if size > end - pos:
                raise WireError(f"field {number} at byte {start}: truncated fixed-size value")
            data, pos = view[pos : pos + size], pos + size
        else:
            raise WireError(f"field {number} at byte {start}: unsupported wire type {wire_type}")
        yield Field(number, wire_type, value, data, view[start:pos])


def varint(value: int) -> bytes:
    """The varint encoding of `value`; negative numbers as 64-bit two's complement (as
    protobuf writes int32/int64)."""
    value &= 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def len_header(number: int, length: int) -> bytes:
    """Tag and length of a LEN field; the caller appends `length` bytes of payload (so a
    large payload is joined into the output once, never copied into a temporary)."""
    return tag(number, LEN) + varint(length)


def to_signed(value: int, bits: int = 64) -> int:
    """A varint read as unsigned, as the signed int64/int32 it encodes."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def packed_varints(payload: bytes | memoryview) -> npt.NDArray[np.uint64]:
    """A packed repeated varint field, decoded with numpy (no Python loop per value).

    A varint ends at each byte below 0x80; each byte contributes its low 7 bits shifted by
    7x its position within its varint. Bits past 64 are dropped, as protobuf does."""
    raw = np.frombuffer(payload, dtype=np.uint8)
    if raw.size == 0:
        return np.zeros(0, dtype=np.uint64)
    ends = np.flatnonzero(raw < 0x80)
    if ends.size == 0 or ends[-1] != raw.size - 1:
        raise WireError("packed varints: the last value is truncated")
    starts = np.concatenate(([0], ends[:-1] + 1))
    if int((ends - starts).max()) >= _MAX_VARINT_BYTES:
        raise WireError("packed varints: a value is longer than 10 bytes")
    position = np.arange(raw.size) - np.repeat(starts, ends - starts + 1)
    parts = (raw & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    out: npt.NDArray[Any] = np.bitwise_or.reduceat(parts, starts)
    return out.astype(np.uint64)
