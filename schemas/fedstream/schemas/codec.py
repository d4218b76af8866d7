"""Avro single-object encoding of fedstream records: ``C3 01`` + fingerprint + body.

Every Kafka record value on every fedstream topic is one Avro datum in single-object
encoding (Avro specification, "Single-object encoding")::

    C3 01 | CRC-64-AVRO fingerprint of the writer schema (8 bytes, little-endian) | body

The fingerprint tells a reader which schema wrote the body without a schema registry
service: the reader keeps the current schemas plus their history (`registry`), resolves
old data to the current schema, and rejects any other fingerprint (UNKNOWN_SCHEMA), which
is what makes independent upgrades of devices and the job safe.

`decode` is the trust boundary for bytes from devices, so it never lets anything but a
`CodecError` escape, whatever the input (fuzzed in the tests): bad magic, truncation and
trailing bytes each get their own `UndecodableError` subclass and detail, so dead letters
say precisely what was wrong. `encode` validates the record against the schema first
(fastavro's writer alone would, for example, silently write 2**40 into an Avro ``int``;
see `validation`) and raises `EncodeError`, naming the field, instead of writing bad data.

Library choice, measured by ``bench/codec_bench.py`` (``bench/results/codec_bench.json``;
2-core shared machine, CPython 3.11, fastavro 1.13.1 vs avro 1.12.2, best of 7 batches).
Both write identical bytes. For a ~400 KB GradientUpdate (100 000 FP32 parameters) fastavro
encodes the body in 32 us vs 112 us (3.5x) and decodes it in 15 us vs 60 us (4x); both
spend much of that copying the bytes field. For small records (a DeadLetter, an
8-parameter update) fastavro is 8-9x faster to encode (5-11 us vs 40-98 us) and 7-13x
faster to decode (4-6 us vs 24-72 us). Hence fastavro. This codec's own work (header,
fingerprint lookup, validation, trailing-byte check) brings the 400 KB update to 42 us
encode / 17 us decode and a DeadLetter to 9 us / 6 us.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from fastavro import schemaless_reader, schemaless_writer

from fedstream.schemas.errors import (
    BadMagicError,
    EncodeError,
    InvalidBodyError,
    TrailingBytesError,
    TruncatedError,
    UndecodableError,
    UnknownSchemaError,
    WrongRecordTypeError,
)
from fedstream.schemas.registry import SchemaRegistry, default_registry

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "Codec",
    "Decoded",
    "decode",
    "default_codec",
    "encode",
    "read_fingerprint",
]

#: The two marker bytes that start every single-object encoded datum.
MAGIC: Final = b"\xc3\x01"
#: Marker plus the 8-byte fingerprint.
HEADER_SIZE: Final = 10


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded record and what wrote it."""

    name: str
    """Short record name (``GradientUpdate``, ...)."""
    record: dict[str, Any]
    """The record, resolved to the current schema of `name`."""
    writer_fingerprint: int
    """CRC-64-AVRO of the writer schema (unsigned), as read from the header."""
    writer_version: str | None
    """None if written with the current schema, else its history folder (``"1"``, ...)."""


def read_fingerprint(data: bytes | bytearray | memoryview) -> int:
    """The writer fingerprint in a single-object header, checking only the header.

    Useful for metrics and dead letters without decoding the body.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UndecodableError(f"expected bytes, got {type(data).__name__}")
    head = bytes(data[:HEADER_SIZE])
    if not head:
        raise BadMagicError("empty input (no single-object marker C3 01)")
    if head[:2] != MAGIC[: len(head[:2])]:
        raise BadMagicError(f"bad magic {head[:2].hex()} (expected c301): not single-object Avro")
    if len(head) < HEADER_SIZE:
        raise TruncatedError(f"header truncated: {len(head)} of {HEADER_SIZE} bytes")
    return int.from_bytes(head[2:], "little")


class Codec:
    """Encoder/decoder bound to one `SchemaRegistry` (thread-safe; holds no mutable state)."""

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        self.registry = registry if registry is not None else default_registry()

    def encode(
        self, record_name: str, record: Mapping[str, Any], *, writer_version: str | None = None
    ) -> bytes:
        """Single-object encode `record` with the current schema of `record_name`.

        `writer_version` selects a historical schema instead, to produce data as an older
        writer would (compatibility tests, simulating devices not yet upgraded).
        """
        entry = self.registry.get(record_name, writer_version)
        if not isinstance(record, Mapping):
            raise EncodeError(f"{entry.name} record must be a mapping, got {type(record).__name__}")
        problem = entry.validator(record, entry.name)
        if problem is not None:
            raise EncodeError(f"invalid {entry.name} record: {problem}")
        out = io.BytesIO()
        out.write(entry.header)
        try:
            schemaless_writer(out, entry.parsed, record, strict=True)
        except Exception as exc:  # pragma: no cover - the validator should have said why
            raise EncodeError(f"cannot encode {entry.name}: {_one_line(exc)}") from exc
        return out.getvalue()

    def decode(self, data: bytes | bytearray | memoryview, expected: str | None = None) -> Decoded:
        """Decode single-object `data`; with `expected`, require that record type.

        Raises only `CodecError` subclasses: `BadMagicError`, `TruncatedError`,
        `TrailingBytesError`, `InvalidBodyError` (reason UNDECODABLE), `UnknownSchemaError`,
        `WrongRecordTypeError` (and `SchemaError` if `expected` is not a record type at all).
        """
        expected_name = self.registry.get(expected).name if expected is not None else None
        fingerprint = read_fingerprint(data)
        if isinstance(data, memoryview):  # lengths below count bytes, not items
            data = data.tobytes()
        entry = self.registry.lookup(fingerprint)
        if entry is None:
            raise UnknownSchemaError(
                f"unknown writer schema fingerprint {fingerprint:016x} (not a current or "
                "historical fedstream schema)",
                fingerprint,
            )
        if expected_name is not None and entry.name != expected_name:
            raise WrongRecordTypeError(
                f"expected a {expected_name}, got a {entry.name}", expected_name, entry.name
            )
        reader = None if entry.version is None else self.registry.get(entry.name).parsed
        buf = io.BytesIO(data)
        buf.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(buf, entry.parsed, reader)
        except Exception as exc:  # EOF, bad union/enum index, bad UTF-8, varint overflow...
            # fastavro reports running out of input as EOFError or, inside a varint, as an
            # IndexError indistinguishable from a bad enum index; replay to tell them apart.
            if isinstance(exc, EOFError) or _runs_out(data, entry.parsed, reader):
                raise TruncatedError(
                    f"{entry.name} body truncated ({len(data) - HEADER_SIZE} bytes): "
                    f"{_describe(exc)}"
                ) from None
            raise InvalidBodyError(f"{entry.name} body invalid: {_describe(exc)}") from None
        end = buf.tell()
        if end != len(data):
            raise TrailingBytesError(
                f"{len(data) - end} trailing bytes after the {entry.name} body"
            )
        if not isinstance(record, dict):  # pragma: no cover - top level is always a record
            raise InvalidBodyError(f"{entry.name} body is not a record")
        return Decoded(entry.name, record, fingerprint, entry.version)


class _EndTrackingIO(io.BytesIO):
    """A BytesIO that remembers whether a read asked for more bytes than were left."""

    ran_out = False

    def read(self, size: int | None = -1, /) -> bytes:
        out = super().read(size)
        if size is not None and size >= 0 and len(out) < size:
            self.ran_out = True
        return out


def _runs_out(data: bytes | bytearray | memoryview, writer: Any, reader: Any) -> bool:
    """Whether decoding `data` tries to read past its end (only called after a failure)."""
    buf = _EndTrackingIO(data)
    buf.seek(HEADER_SIZE)
    try:
        schemaless_reader(buf, writer, reader)
    except Exception:
        return buf.ran_out
    return False  # pragma: no cover - it failed a moment ago


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    return text[:500] + ("..." if len(text) > 500 else "")


def _describe(exc: BaseException) -> str:
    """``Type: message`` on one line (just ``Type`` when there is no message)."""
    text = _one_line(exc)
    return text if text == type(exc).__name__ else f"{type(exc).__name__}: {text}"


_default: Codec | None = None


def default_codec() -> Codec:
    """A `Codec` over `default_registry()`, created on first use."""
    global _default
    if _default is None:
        _default = Codec()
    return _default


def encode(
    record_name: str, record: Mapping[str, Any], *, writer_version: str | None = None
) -> bytes:
    """`Codec.encode` with the default registry."""
    return default_codec().encode(record_name, record, writer_version=writer_version)


def decode(data: bytes | bytearray | memoryview, expected: str | None = None) -> Decoded:
    """`Codec.decode` with the default registry."""
    return default_codec().decode(data, expected)
