"""Signed model registrations: only a model owner the job trusts can create a model.

A registration decides what every device of a model will install (its ONNX template) and
how the job aggregates it, so Kafka ACLs (only owner principals write the control topic)
are one fence and a signature is the second: the owner signs the registration with an
Ed25519 key (RFC 8032, through `cryptography`), the job verifies it against the owner keys
in its configuration before anything else, and remembers which key owns each model, so a
registration for an existing model id from another owner is refused (`OWNER_MISMATCH`).

What is signed is `registration_statement`: a domain prefix, then the record's own Avro
single-object encoding with `signature` set to null. The encoding is deterministic and
covers every field (template, layout, initial weights, aggregation settings, owner key id),
so nothing needs a hand-made canonical form; a reader verifies with the *writer's* schema
version (`Decoded.writer_version`), so registrations signed by older SDKs still verify
after the schema grows. Keys are the same kind as the job's release key
(`fedstream.schemas.signing`): `write_key_pair(dir, "owner-signing")` makes one, and the
owner's identity is its key id.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from fedstream.schemas.codec import Decoded, encode
from fedstream.schemas.registry import default_registry
from fedstream.schemas.signing import ReleaseSigner, SignatureError, TrustedKeys

__all__ = [
    "ENV_OWNER_KEY_FILE",
    "OWNER_KEY_FILE",
    "REGISTRATION_DOMAIN",
    "owner_key_from_env",
    "registration_statement",
    "sign_registration",
    "verify_registration",
]

#: Domain separation from releases and updates (`fedstream.schemas.signing`).
REGISTRATION_DOMAIN = b"fedstream.ModelRegistration.v1\x00"
#: The name `write_key_pair` gives an owner's key pair in the CLI and the demo.
OWNER_KEY_FILE = "owner-signing"
#: A model owner's private key file, from the environment (the CLI's `register`, the SDK).
ENV_OWNER_KEY_FILE = "FEDSTREAM_OWNER_KEY_FILE"
_NAME = "ModelRegistration"


def registration_statement(record: Mapping[str, Any], writer_version: str | None = None) -> bytes:
    """The bytes an owner's signature covers: `REGISTRATION_DOMAIN` + the single-object
    encoding of `record` (cut to schema `writer_version`'s fields) with `signature` null."""
    schema = default_registry().get(_NAME, writer_version)
    if "signature" not in schema.field_names:
        raise SignatureError(f"{_NAME} schema version {writer_version} has no signature")
    unsigned = {**schema.project(record), "signature": None}
    return REGISTRATION_DOMAIN + encode(_NAME, unsigned, writer_version=writer_version)


def sign_registration(record: Mapping[str, Any], owner: ReleaseSigner) -> dict[str, Any]:
    """A copy of `record` (a ModelRegistration) naming `owner`'s key and signed by it."""
    named = {**record, "owner_key_id": owner.key_id}
    return {**named, "signature": owner.sign(registration_statement(named))}


def verify_registration(decoded: Decoded, owners: TrustedKeys) -> str:
    """The owner key id of a decoded registration whose signature verifies under one of
    `owners`; `SignatureError` (saying why, never quoting key material) otherwise."""
    record = decoded.record
    signature, key_id = record.get("signature"), record.get("owner_key_id")
    if signature is None or key_id is None:
        raise SignatureError("the registration is not signed by a model owner")
    statement = registration_statement(record, decoded.writer_version)
    owners.verify(statement, bytes(signature), str(key_id))
    return str(key_id)


def owner_key_from_env() -> str | None:
    """$FEDSTREAM_OWNER_KEY_FILE (a model owner's private key file), or None when it is
    unset or empty."""
    return os.environ.get(ENV_OWNER_KEY_FILE) or None
