"""Signed updates: which device sent an update, so one device cannot act as another.

Each device holds an Ed25519 key pair (RFC 8032, through the `cryptography` package); an
operator registers its public key in the device registry (a `DeviceKey` record on the
compacted devices topic) and can revoke it. The SDK signs every update; the job verifies
it before anything else and refuses an unsigned, unknown, revoked or badly signed update
as UNAUTHENTICATED (schemas/README.md, "Signed updates").

What is signed is `update_statement`: canonical bytes built with the same field encoders
as the release statement (`signing.pack_text`, ...), under its own domain prefix, so a
release signature can never pass for an update signature or the other way round. It
covers every field that affects aggregation; the delta is covered by `delta_digest`, a
SHA-256 over all of its encoded payload fields, so the statement stays small and the
signature does not depend on how Avro framed the bytes.

`verify_update` is the whole decision as a pure function over a decoded record and the
registry entry of its claimed device: the job's gate (`pipelines.device_gate`) and the
tests call exactly it.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedstream.schemas.records import DeviceKey
from fedstream.schemas.signing import (
    ReleaseSigner,
    key_id_of,
    pack_long,
    pack_text,
    raw_public_key,
)

__all__ = [
    "DEVICE_KEY_NAME",
    "ENV_DEVICE_KEY",
    "UPDATE_DOMAIN",
    "RegisteredKey",
    "RegistryEntryError",
    "delta_digest",
    "device_key_from_env",
    "device_key_record",
    "entry_problem",
    "registered_public_key",
    "sign_update",
    "update_statement",
    "verify_update",
]

#: Domain separation from releases (`signing.RELEASE_DOMAIN`) and any later statement.
UPDATE_DOMAIN = b"fedstream.GradientUpdate.v1\x00"
#: The file name stem of a device key pair (`write_key_pair(dir, DEVICE_KEY_NAME)`:
#: device.key, 0600, and device.pub, which the operator registers).
DEVICE_KEY_NAME = "device"
#: A device's private key file from the environment (`EdgeConfig.device_key_file`).
ENV_DEVICE_KEY = "FEDSTREAM_DEVICE_KEY_FILE"
_SIGNATURE_BYTES = 64
_PUBLIC_KEY_BYTES = 32


class RegistryEntryError(ValueError):
    """A DeviceKey record that cannot be used (wrong key size, key id that does not match)."""


def delta_digest(payload: Mapping[str, Any]) -> bytes:
    """SHA-256 over every field of a TensorPayload, canonically: encoding, dtype (texts),
    shape (u32 count + i64 each), data (i64 length + bytes), scale (the Avro float's 4
    big-endian bytes), indices (i64 length + bytes). 32 bytes."""
    digest = hashlib.sha256()
    digest.update(pack_text(str(payload["encoding"])))
    digest.update(pack_text(str(payload.get("dtype", "float32"))))
    shape = [int(d) for d in payload["shape"]]
    digest.update(struct.pack(">I", len(shape)))
    digest.update(b"".join(pack_long(d) for d in shape))
    for name in ("data", "indices"):
        data = bytes(payload.get(name) or b"")
        digest.update(pack_long(len(data)))
        digest.update(data)
    digest.update(struct.pack(">f", float(payload.get("scale", 1.0))))
    return digest.digest()


def update_statement(record: Mapping[str, Any]) -> bytes:
    """The bytes an update's signature covers. Pure; the SDK and the job both call it.

    Layout (big-endian; text = u32 byte length + UTF-8; long = i64): `UPDATE_DOMAIN`,
    key_id, update_id, device_id, model_id, base_version, num_samples, sequence (u8 0 =
    null, or u8 1 + long), created_at, then the 32 bytes of `delta_digest(delta)`.
    `metrics` is not covered: it never influences aggregation.
    """
    sequence = record.get("sequence")
    return b"".join(
        [
            UPDATE_DOMAIN,
            pack_text(str(record.get("key_id") or "")),
            pack_text(str(record["update_id"])),
            pack_text(str(record["device_id"])),
            pack_text(str(record["model_id"])),
            pack_long(int(record["base_version"])),
            pack_long(int(record["num_samples"])),
            b"\x00" if sequence is None else b"\x01" + pack_long(int(sequence)),
            pack_long(int(record["created_at"])),
            delta_digest(record["delta"]),
        ]
    )


def sign_update(record: Mapping[str, Any], signer: ReleaseSigner) -> dict[str, Any]:
    """A copy of the GradientUpdate `record` with `key_id` and `signature` set by the
    device's key (`signing.load_signing_key` of its private key file)."""
    signed = {**record, "key_id": signer.key_id}
    signed["signature"] = signer.sign(update_statement(signed))
    return signed


def device_key_record(
    device_id: str, public_key: Ed25519PublicKey, *, status: str = "ACTIVE", created_at: int
) -> DeviceKey:
    """The registry entry that registers (or, with status REVOKED, revokes) a device key."""
    return {
        "device_id": device_id,
        "key_id": key_id_of(public_key),
        "public_key": raw_public_key(public_key),
        "status": status,
        "created_at": created_at,
    }


@dataclass(frozen=True)
class RegisteredKey:
    """A device's registry entry as the job keeps it: the key and whether it is active."""

    device_id: str
    key_id: str
    public_key: bytes
    active: bool

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RegisteredKey:
        """From a decoded DeviceKey; `RegistryEntryError` when the key is not 32 bytes or
        the key id is not the key's (an entry the job cannot trust either way)."""
        raw = bytes(record["public_key"])
        if len(raw) != _PUBLIC_KEY_BYTES:
            raise RegistryEntryError(
                f"public_key has {len(raw)} bytes, not {_PUBLIC_KEY_BYTES} (raw Ed25519)"
            )
        try:
            key = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise RegistryEntryError("public_key is not an Ed25519 public key") from None
        if key_id_of(key) != record["key_id"]:
            raise RegistryEntryError(f"key_id {record['key_id']!r} is not the key's id")
        return cls(
            str(record["device_id"]), str(record["key_id"]), raw, record["status"] == "ACTIVE"
        )


def entry_problem(entry: RegisteredKey | None, device: str, key_id: str) -> str | None:
    """Why `device`'s registry `entry` does not vouch for its key `key_id` (no entry, an
    entry of another device, a revoked key, another key), or None: what every signed
    record of a device (an update, a fragment of one) is checked against first."""
    if entry is None:
        return f"device {device!r} is not registered"
    if entry.device_id != device:
        return f"the registry entry is for {entry.device_id!r}, not device {device!r}"
    if not entry.active:
        return f"key {entry.key_id} of device {device!r} is revoked"
    if key_id != entry.key_id:
        return f"key {key_id!r} is not the registered key of device {device!r}"
    return None


def verify_update(
    record: Mapping[str, Any], entry: RegisteredKey | None, *, allow_unsigned: bool = False
) -> str | None:
    """Why the update `record` is not authentic, or None when it is.

    `entry` is the registry entry of the device the update claims (`device_id`), None when
    the registry has none. A signed update is always verified; an unsigned one passes only
    with `allow_unsigned` (legacy fleets: its device id is then a claim, not a fact). The
    text names the claimed device and key id, never key material.
    """
    device, key_id, signature = record["device_id"], record.get("key_id"), record.get("signature")
    if signature is None and key_id is None and allow_unsigned:
        return None
    if signature is None or key_id is None:
        return f"update of device {device!r} is not signed"
    problem = entry_problem(entry, device, key_id)
    if problem is not None:
        return problem
    assert entry is not None
    if len(signature) != _SIGNATURE_BYTES:
        return f"signature of device {device!r} has {len(signature)} bytes"
    try:
        key = registered_public_key(bytes(entry.public_key))
        key.verify(bytes(signature), update_statement(record))
    except InvalidSignature:
        return f"signature of device {device!r} by key {key_id} does not verify"
    return None


@lru_cache(maxsize=4096)
def registered_public_key(raw: bytes) -> Ed25519PublicKey:
    """The key object of a registered public key, parsed once per key rather than per
    update or fragment (the job verifies every record of a device with the same key)."""
    return Ed25519PublicKey.from_public_bytes(raw)


def device_key_from_env() -> str | None:
    """$FEDSTREAM_DEVICE_KEY_FILE, or None when unset or empty."""
    return os.environ.get(ENV_DEVICE_KEY) or None
