"""Fragmented records: an encoded record too large for one Kafka record, in signed pieces.

A 10M-parameter model's update is 40 MB of float32, more than a topic takes in one record
(`max.message.bytes`, 16 MiB by default). Like IP fragmentation (RFC 791), the writer
encodes and signs the whole record exactly as for a small one, cuts the single-object
bytes into `RecordFragment` records and sends them in order with the whole record's
Kafka key (one partition, so in order); the job puts the bytes back together and handles
them as if they had come in one record. Nothing downstream of reassembly changes.

Each fragment is signed on its own, over `fragment_statement` (domain
`FRAGMENT_DOMAIN`, then every field but `data`, and the SHA-256 of `data`), by the key
that signs the whole record: the device's for an update, the owner's for a registration.
The job verifies a fragment before it stores a byte of it, so nobody who can merely write
to the broker can fill the job's state or displace a device's assembly in flight
(schemas/README.md, "Fragmented records"). The statement uses the field encoders of
`signing`, so it parses one way only.

Pure functions over bytes and records; `pipelines.reassembly` is the job's side.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Mapping
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedstream.schemas.codec import encode, read_fingerprint
from fedstream.schemas.errors import CodecError, EncodeError
from fedstream.schemas.registry import default_registry
from fedstream.schemas.signing import ReleaseSigner, pack_long, pack_text

__all__ = [
    "FRAGMENT",
    "FRAGMENT_DOMAIN",
    "fragment_count",
    "fragment_overhead",
    "fragment_plan",
    "fragment_problem",
    "fragment_statement",
    "is_fragment",
    "iter_fragments",
    "split_record",
]

#: The record name of a fragment.
FRAGMENT: Final = "RecordFragment"
#: Domain separation from releases, updates and registrations (`signing`): a fragment's
#: signature can never pass for a whole record's, nor the other way round.
FRAGMENT_DOMAIN: Final = b"fedstream.RecordFragment.v1\x00"
_DIGEST_BYTES = 32
_SIGNATURE_BYTES = 64
#: Bytes an Avro varint of the largest `data` length may take, beyond an empty one's.
_VARINT_SLACK = 10


def fragment_statement(record: Mapping[str, Any]) -> bytes:
    """The bytes a fragment's signature covers. Pure; the SDK and the job both call it.

    Layout (big-endian; text = u32 byte length + UTF-8; long = i64): `FRAGMENT_DOMAIN`,
    record_id, signer, key_id, index, count, total_bytes, whole_sha256 (u32 length + the
    bytes: a wrong length cannot shift the next field), then the 32 bytes of SHA-256 of
    data.
    """
    whole = bytes(record["whole_sha256"])
    return b"".join(
        [
            FRAGMENT_DOMAIN,
            pack_text(str(record["record_id"])),
            pack_text(str(record["signer"])),
            pack_text(str(record["key_id"])),
            pack_long(int(record["index"])),
            pack_long(int(record["count"])),
            pack_long(int(record["total_bytes"])),
            struct.pack(">I", len(whole)) + whole,
            hashlib.sha256(bytes(record["data"])).digest(),
        ]
    )


def fragment_problem(record: Mapping[str, Any], key: Ed25519PublicKey) -> str | None:
    """Why the decoded fragment `record` is not signed by `key`, or None when it is."""
    signature = bytes(record["signature"])
    who = f"fragment {record['index']} of {record['record_id']!r} by {record['signer']!r}"
    if len(signature) != _SIGNATURE_BYTES:
        return f"{who}: signature has {len(signature)} bytes, not {_SIGNATURE_BYTES}"
    try:
        key.verify(signature, fragment_statement(record))
    except InvalidSignature:
        return f"{who}: signature by key {record['key_id']} does not verify"
    return None


def fragment_overhead(record_id: str, signer: str, key_id: str) -> int:
    """Encoded bytes of a fragment besides its `data`, at most (largest index and sizes)."""
    empty = {
        "record_id": record_id,
        "signer": signer,
        "key_id": key_id,
        "index": 2**31 - 1,
        "count": 2**31 - 1,
        "total_bytes": 2**63 - 1,
        "whole_sha256": bytes(_DIGEST_BYTES),
        "data": b"",
        "signature": bytes(_SIGNATURE_BYTES),
    }
    return len(encode(FRAGMENT, empty)) + _VARINT_SLACK


def fragment_count(total_bytes: int, max_data_bytes: int) -> int:
    """How many fragments of at most `max_data_bytes` carry `total_bytes` (at least one)."""
    if max_data_bytes <= 0:
        raise EncodeError(f"max_data_bytes must be > 0, got {max_data_bytes}")
    return max(1, -(-total_bytes // max_data_bytes))


def fragment_plan(
    total_bytes: int, room: int, *, record_id: str, signer: str, key_id: str
) -> tuple[int, int]:
    """(data bytes per fragment, fragments) for a record of `total_bytes` sent in
    fragments of at most `room` encoded bytes each (the topic's limit less the key and
    framing); the count is above any bound when not even an empty fragment fits."""
    data = room - fragment_overhead(record_id, signer, key_id)
    if data <= 0:
        return 0, 2**31
    return data, fragment_count(total_bytes, data)


def split_record(
    value: bytes, *, record_id: str, signer: str, key: ReleaseSigner, max_data_bytes: int
) -> list[dict[str, Any]]:
    """`value` (a whole encoded record) as RecordFragment records of at most
    `max_data_bytes` of data each, in order, every one signed by `key`."""
    return list(
        iter_fragments(
            value, record_id=record_id, signer=signer, key=key, max_data_bytes=max_data_bytes
        )
    )


def iter_fragments(
    value: bytes, *, record_id: str, signer: str, key: ReleaseSigner, max_data_bytes: int
) -> Iterator[dict[str, Any]]:
    """`split_record` one fragment at a time: a sender holds one piece's copy at once."""
    count = fragment_count(len(value), max_data_bytes)
    whole = hashlib.sha256(value).digest()
    view = memoryview(value)
    for index in range(count):
        fragment: dict[str, Any] = {
            "record_id": record_id,
            "signer": signer,
            "key_id": key.key_id,
            "index": index,
            "count": count,
            "total_bytes": len(value),
            "whole_sha256": whole,
            "data": bytes(view[index * max_data_bytes : (index + 1) * max_data_bytes]),
        }
        fragment["signature"] = key.sign(fragment_statement(fragment))
        yield fragment


def encoded_fragments(
    value: bytes, room: int, *, record_id: str, signer: str, key: ReleaseSigner
) -> tuple[int, Iterator[bytes]]:
    """(count, the encoded RecordFragment values, lazily) that carry `value` in records
    of at most `room` bytes each (`fragment_plan`). Callers check `count` against their
    bound before taking the first value (it is above any bound when nothing fits)."""
    data, count = fragment_plan(
        len(value), room, record_id=record_id, signer=signer, key_id=key.key_id
    )
    pieces = iter_fragments(
        value, record_id=record_id, signer=signer, key=key, max_data_bytes=max(data, 1)
    )
    return count, (encode(FRAGMENT, piece) for piece in pieces)


def is_fragment(value: bytes) -> bool:
    """Whether `value` is a single-object RecordFragment (by its writer fingerprint)."""
    try:
        return read_fingerprint(value) == default_registry().get(FRAGMENT).fingerprint
    except CodecError:
        return False
