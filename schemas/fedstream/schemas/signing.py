"""Signed model releases: who made a release, not only whether its bytes are intact.

A release's SHA-256 travels in the same record as the ONNX bytes, so it proves integrity
but not origin: anyone who can write the models topic could publish a forged model with a
matching digest. The job therefore signs every release with Ed25519 (RFC 8032, through
the `cryptography` package; no hand-written cryptography), and a device installs a
release only if the signature verifies under a public key it trusts.

What is signed is `release_statement`: canonical bytes that both sides build the same way
from the record's fields (schemas/README.md, "Signed releases"). One pure function, used
by the signer (`ReleaseSigner`, in the job) and the verifier (`TrustedKeys`, in the SDK),
so the two cannot drift. A chunked release is signed once, over the whole file's digest,
and every chunk carries the same signature and key id.

Keys: the job's private key is a PEM (PKCS#8) file that only the job reads
(`load_signing_key`, `write_key_pair`); a key is named by its *key id*, the first 16 hex
digits of the SHA-256 of the raw 32-byte public key, so devices can trust several keys at
once and the job's key can be rotated without restarting them.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "ENV_TRUSTED_KEYS",
    "PRIVATE_KEY_FILE",
    "PUBLIC_KEY_FILE",
    "RELEASE_DOMAIN",
    "ReleaseSigner",
    "SignatureError",
    "SigningKeyError",
    "TrustedKeys",
    "key_id_of",
    "load_public_key",
    "load_signing_key",
    "pack_double",
    "pack_long",
    "pack_text",
    "raw_public_key",
    "release_statement",
    "statement_of",
    "write_key_pair",
]

#: Domain separation: these bytes start every signed release statement, so a signature
#: made for a release can never be taken for one over another kind of message (and a
#: future format gets a new prefix instead of an ambiguous reading).
RELEASE_DOMAIN = b"fedstream.ModelRelease.v1\x00"
#: A device's trusted release keys from the environment: PEM public key files, separated
#: by os.pathsep (`TrustedKeys.from_env`, the default of `EdgeConfig.trusted_keys`).
ENV_TRUSTED_KEYS = "FEDSTREAM_TRUSTED_KEYS"
#: What `write_key_pair` writes (and the CLI's `keygen`).
PRIVATE_KEY_FILE = "job-signing.key"
PUBLIC_KEY_FILE = "job-signing.pub"
_SIGNATURE_BYTES = 64


class SigningKeyError(ValueError):
    """A key file is missing, unreadable, or not an Ed25519 key in PEM (the message names
    the file, never its contents)."""


class SignatureError(ValueError):
    """A release is unsigned, signed by an unknown key, or its signature does not verify."""


# -- the canonical statement ---------------------------------------------------------------
# The field encoders of every signed statement (releases here, updates in update_signing):
# big-endian, variable-length fields length-prefixed, so a statement parses one way only.
def pack_text(value: str) -> bytes:
    data = value.encode("utf-8")
    return struct.pack(">I", len(data)) + data


def pack_long(value: int) -> bytes:
    return struct.pack(">q", value)


def pack_double(value: float) -> bytes:
    return struct.pack(">d", value)


def release_statement(
    *, model_id: str, version: int, onnx_size: int, sha256: str, lineage: Mapping[str, Any]
) -> bytes:
    """The bytes a release's signature covers. Pure; the one definition both sides use.

    Layout (big-endian; text = u32 byte length + UTF-8; long = i64; double = IEEE-754
    binary64; list = u32 count + items): `RELEASE_DOMAIN`, model_id, version, onnx_size,
    the 32 raw bytes of sha256, then the lineage: parent_version (u8 0 = null, 1 + long),
    update_ids, device_ids, num_updates, num_samples, staleness_min, staleness_max,
    staleness_mean, total_weight. Every field has a fixed position and length prefix, so
    no two different releases have the same statement. created_at and the chunk layout
    are not covered (informational; the digest covers the reassembled file).
    """
    if len(sha256) != 64 or sha256 != sha256.lower():
        raise SignatureError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
    try:
        digest = bytes.fromhex(sha256)
    except ValueError:
        raise SignatureError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}") from None
    parent = lineage.get("parent_version")
    parts = [
        RELEASE_DOMAIN,
        pack_text(model_id),
        pack_long(int(version)),
        pack_long(int(onnx_size)),
        digest,
        b"\x00" if parent is None else b"\x01" + pack_long(int(parent)),
    ]
    for name in ("update_ids", "device_ids"):
        items = list(lineage.get(name) or [])
        parts.append(struct.pack(">I", len(items)))
        parts.extend(pack_text(str(item)) for item in items)
    parts += [
        pack_long(int(lineage["num_updates"])),
        pack_long(int(lineage["num_samples"])),
        pack_long(int(lineage.get("staleness_min", 0))),
        pack_long(int(lineage.get("staleness_max", 0))),
        pack_double(float(lineage.get("staleness_mean", 0.0))),
        pack_double(float(lineage.get("total_weight", 0.0))),
    ]
    return b"".join(parts)


def statement_of(record: Mapping[str, Any]) -> bytes:
    """`release_statement` of a decoded ModelRelease record (any chunk of it)."""
    return release_statement(
        model_id=str(record["model_id"]),
        version=int(record["version"]),
        onnx_size=int(record["onnx_size"]),
        sha256=str(record["sha256"]),
        lineage=record["lineage"],
    )


# -- keys --------------------------------------------------------------------------------
def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    """The raw 32-byte form of an Ed25519 public key (RFC 8032), as the registry keeps it."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(raw_public_key(public_key)).hexdigest()[:16]


@dataclass(frozen=True)
class ReleaseSigner:
    """The job's release key. Built on the worker from a file path (`load_signing_key`):
    the key object is never pickled into the job graph, and its repr shows the key id only."""

    key: Ed25519PrivateKey
    key_id: str

    def sign(self, statement: bytes) -> bytes:
        """Ed25519 signature (RFC 8032, deterministic, 64 bytes) over `statement`."""
        return self.key.sign(statement)

    def __repr__(self) -> str:
        return f"ReleaseSigner(key_id={self.key_id!r})"


def load_signing_key(path: str | os.PathLike[str]) -> ReleaseSigner:
    """The Ed25519 private key in the PEM file at `path`; `SigningKeyError` if the file is
    missing, unreadable, encrypted, or holds anything else (message names the file only)."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(f"signing key file {file} does not exist") from None
    except OSError as error:
        raise SigningKeyError(f"signing key file {file} is unreadable: {error.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # no detail: the parser's message could quote the file
        raise SigningKeyError(
            f"signing key file {file} is not an unencrypted PEM private key"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(
            f"signing key file {file} holds a {type(key).__name__}, not an Ed25519 key"
        )
    return ReleaseSigner(key, key_id_of(key.public_key()))


def write_key_pair(
    directory: str | os.PathLike[str], name: str = "job-signing"
) -> tuple[Path, Path, str]:
    """Generate a key pair into `directory`: `<name>.key` (PKCS#8 PEM, created 0600, never
    overwritten) and `<name>.pub` (SubjectPublicKeyInfo PEM). Returns (private path,
    public path, key id)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / f"{name}.key", folder / f"{name}.pub"
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: an existing key is never replaced by accident (devices trust it).
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_path.write_bytes(public)
    return private_path, public_path, key_id_of(key.public_key())


def _public_key(pem: bytes, where: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise SigningKeyError(f"{where} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{where} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """The Ed25519 public key in the PEM file at `path` (`SigningKeyError` naming the file
    when it is missing, unreadable or holds anything else)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise SigningKeyError(f"public key file {path}: {error.strerror}") from None
    return _public_key(data, f"public key file {path}")


class TrustedKeys:
    """The release keys a device trusts: key id -> Ed25519 public key.

    Several at once, so the job can switch to a new key while devices still trust the old
    one (rotation without restarting devices). Empty means nothing verifies."""

    def __init__(self, keys: Iterable[Ed25519PublicKey] = ()) -> None:
        self.keys: dict[str, Ed25519PublicKey] = {key_id_of(k): k for k in keys}

    @classmethod
    def from_pem(cls, *pems: str | bytes) -> TrustedKeys:
        """From PEM texts (SubjectPublicKeyInfo, as `write_key_pair` writes them)."""
        return cls(
            _public_key(p.encode() if isinstance(p, str) else p, f"trusted key #{i + 1}")
            for i, p in enumerate(pems)
        )

    @classmethod
    def from_files(cls, *paths: str | os.PathLike[str]) -> TrustedKeys:
        """From PEM public key files (e.g. `job-signing.pub`)."""
        return cls(load_public_key(path) for path in paths)

    @classmethod
    def from_env(cls) -> TrustedKeys:
        """From the files named in $FEDSTREAM_TRUSTED_KEYS (os.pathsep-separated); none
        when it is unset or empty, and then no release verifies."""
        value = os.environ.get(ENV_TRUSTED_KEYS, "")
        return cls.from_files(*(p for p in value.split(os.pathsep) if p))

    @property
    def key_ids(self) -> list[str]:
        return sorted(self.keys)

    def verify(self, statement: bytes, signature: bytes | None, key_id: str | None) -> None:
        """Raise `SignatureError` unless `signature` is a valid Ed25519 signature over
        `statement` by the trusted key `key_id`."""
        if signature is None or key_id is None:
            raise SignatureError("the release is not signed")
        key = self.keys.get(key_id)
        if key is None:
            trusted = ", ".join(self.key_ids) or "none configured"
            raise SignatureError(f"signed by unknown key {key_id!r} (trusted: {trusted})")
        if len(signature) != _SIGNATURE_BYTES:
            raise SignatureError(f"signature has {len(signature)} bytes, not {_SIGNATURE_BYTES}")
        try:
            key.verify(signature, statement)
        except InvalidSignature:
            raise SignatureError(f"signature by key {key_id} does not verify") from None

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"TrustedKeys({self.key_ids})"
