"""Errors of the wire contract, each carrying the dead-letter reason it maps to.

Every consumer of untrusted bytes (the job's decode step, the edge model consumer) does the
same thing with a failure: put the original bytes on the dead-letter topic with a
machine-readable reason. So every error here is a `CodecError` whose class attribute
`reason` is a `DeadLetterReason` symbol (identical to the Avro enum in DeadLetter.avsc; a
test keeps the two in step) and whose `detail` is a human-readable sentence. Callers catch
`CodecError` once and write `err.reason` / `err.detail`; they never need to know fastavro's
or numpy's exception types, because the codec never lets those escape.
"""

from __future__ import annotations

import enum
from typing import ClassVar

__all__ = [
    "BadDtypeError",
    "BadMagicError",
    "BadShapeError",
    "CodecError",
    "DeadLetterReason",
    "EncodeError",
    "InvalidBodyError",
    "LayoutError",
    "NonFiniteError",
    "ReleaseError",
    "SchemaError",
    "TrailingBytesError",
    "TruncatedError",
    "UndecodableError",
    "UnknownSchemaError",
    "WrongRecordTypeError",
]


class DeadLetterReason(enum.StrEnum):
    """The `io.fedstream.DeadLetterReason` Avro enum; values are the Avro symbols.

    A `StrEnum`, so a member can be put straight into a DeadLetter record.
    """

    UNDECODABLE = "UNDECODABLE"
    UNKNOWN_SCHEMA = "UNKNOWN_SCHEMA"
    WRONG_RECORD_TYPE = "WRONG_RECORD_TYPE"
    UNKNOWN_MODEL = "UNKNOWN_MODEL"
    BAD_SHAPE = "BAD_SHAPE"
    BAD_DTYPE = "BAD_DTYPE"
    NON_FINITE = "NON_FINITE"
    BAD_NUM_SAMPLES = "BAD_NUM_SAMPLES"
    FUTURE_VERSION = "FUTURE_VERSION"
    STALE = "STALE"
    DUPLICATE = "DUPLICATE"
    BAD_REGISTRATION = "BAD_REGISTRATION"
    BAD_FIELD = "BAD_FIELD"
    INTERNAL = "INTERNAL"
    NON_FINITE_AGGREGATE = "NON_FINITE_AGGREGATE"
    MODEL_LIMIT = "MODEL_LIMIT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    SEQUENCE_TOO_OLD = "SEQUENCE_TOO_OLD"
    OWNER_MISMATCH = "OWNER_MISMATCH"
    OTHER = "OTHER"


class CodecError(Exception):
    """Base of every error raised by `fedstream.schemas`.

    `reason` says which dead-letter reason applies; `detail` is the message without the
    class name, suitable for `DeadLetter.detail`.
    """

    reason: ClassVar[DeadLetterReason] = DeadLetterReason.OTHER

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class SchemaError(CodecError):
    """The .avsc files are missing or inconsistent, or a record name is not in them.

    A deployment or programming error, never caused by message bytes.
    """


class EncodeError(CodecError):
    """A record or tensor given to `encode` / `pack` does not fit the schema.

    Raised on the writing side, so bad data never reaches the topic.
    """


class UndecodableError(CodecError):
    """The bytes are not a single-object encoded record of any schema we know how to read."""

    reason = DeadLetterReason.UNDECODABLE


class BadMagicError(UndecodableError):
    """The first two bytes are not the single-object marker C3 01 (or the input is empty)."""


class TruncatedError(UndecodableError):
    """The input ends inside the 10-byte header or inside the record body."""


class TrailingBytesError(UndecodableError):
    """The record body was decoded but bytes remain after it."""


class InvalidBodyError(UndecodableError):
    """The body does not decode with the writer schema (bad union/enum index, bad UTF-8, ...).

    Also used for a TensorPayload whose bytes are malformed (lengths not a multiple of the
    element size, unsorted or duplicate TOPK indices, a bad INT8 scale).
    """


class ReleaseError(UndecodableError):
    """The chunks of a ModelRelease are incomplete, inconsistent or fail the SHA-256 check."""


class UnknownSchemaError(CodecError):
    """The header's writer fingerprint is not a current or historical schema."""

    reason = DeadLetterReason.UNKNOWN_SCHEMA

    def __init__(self, detail: str, fingerprint: int) -> None:
        super().__init__(detail)
        self.fingerprint = fingerprint


class WrongRecordTypeError(CodecError):
    """A well-formed record of another type than the caller expected (e.g. on the wrong topic)."""

    reason = DeadLetterReason.WRONG_RECORD_TYPE

    def __init__(self, detail: str, expected: str, actual: str) -> None:
        super().__init__(detail)
        self.expected = expected
        self.actual = actual


class BadShapeError(CodecError):
    """A tensor's shape does not match its data, its indices or the shape the model expects."""

    reason = DeadLetterReason.BAD_SHAPE


class LayoutError(BadShapeError):
    """Parameters do not match a `ParameterLayout` (missing/extra names, wrong shapes)."""


class BadDtypeError(CodecError):
    """Unknown tensor encoding or logical dtype, or an array that is not real-valued."""

    reason = DeadLetterReason.BAD_DTYPE


class NonFiniteError(CodecError):
    """NaN or infinity where finite values are required."""

    reason = DeadLetterReason.NON_FINITE
