"""Signed releases (Ed25519, RFC 8032): the canonical statement, keys, sign and verify.

Every check that refuses is shown refusing: a tampered covered field, another key, an
unknown key id, a missing or malformed signature, and key files that are not what the job
needs.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from fedstream.schemas import decode, encode, release_chunks
from fedstream.schemas.signing import (
    RELEASE_DOMAIN,
    ReleaseSigner,
    SignatureError,
    SigningKeyError,
    TrustedKeys,
    key_id_of,
    load_signing_key,
    release_statement,
    statement_of,
    write_key_pair,
)
from tests.support.foreign_keys import write_ec_key

ONNX = b"an onnx file" * 10
LINEAGE: dict[str, Any] = {
    "parent_version": 2,
    "update_ids": ["u1", "u2"],
    "device_ids": ["d1", "d2"],
    "num_updates": 2,
    "num_samples": 64,
    "staleness_min": 0,
    "staleness_max": 1,
    "staleness_mean": 0.5,
    "total_weight": 1.75,
}


def fields(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model_id": "m",
        "version": 3,
        "onnx_size": len(ONNX),
        "sha256": hashlib.sha256(ONNX).hexdigest(),
        "lineage": LINEAGE,
    }
    return {**base, **changes}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReleaseSigner, Path]:
    private, public, key_id = write_key_pair(tmp_path_factory.mktemp("keys"))
    signer = load_signing_key(private)
    assert signer.key_id == key_id
    return signer, public


def test_statement_is_deterministic_and_domain_separated() -> None:
    statement = release_statement(**fields())
    assert statement == release_statement(**fields())
    assert statement.startswith(RELEASE_DOMAIN)
    assert bytes.fromhex(fields()["sha256"]) in statement


TAMPERED = [
    {"model_id": "m2"},
    {"version": 4},
    {"onnx_size": len(ONNX) + 1},
    {"sha256": hashlib.sha256(b"another model").hexdigest()},
    {"lineage": {**LINEAGE, "parent_version": None}},
    {"lineage": {**LINEAGE, "parent_version": 1}},
    {"lineage": {**LINEAGE, "update_ids": ["u1", "u3"]}},
    {"lineage": {**LINEAGE, "update_ids": ["u1u2"]}},  # same characters, other split
    {"lineage": {**LINEAGE, "device_ids": ["d1", "evil"]}},
    {"lineage": {**LINEAGE, "num_updates": 3}},
    {"lineage": {**LINEAGE, "num_samples": 65}},
    {"lineage": {**LINEAGE, "staleness_min": 1}},
    {"lineage": {**LINEAGE, "staleness_max": 2}},
    {"lineage": {**LINEAGE, "staleness_mean": 0.25}},
    {"lineage": {**LINEAGE, "total_weight": 2.0}},
]


@pytest.mark.parametrize("change", TAMPERED, ids=lambda c: next(iter(c)))
def test_tampering_any_covered_field_is_refused(
    change: dict[str, Any], keys: tuple[ReleaseSigner, Path]
) -> None:
    signer, public = keys
    signature = signer.sign(release_statement(**fields()))
    trusted = TrustedKeys.from_files(public)
    trusted.verify(release_statement(**fields()), signature, signer.key_id)
    tampered = release_statement(**fields(**change))
    assert tampered != release_statement(**fields())
    with pytest.raises(SignatureError, match="does not verify"):
        trusted.verify(tampered, signature, signer.key_id)


def test_another_key_unknown_id_and_missing_signature_are_refused(
    keys: tuple[ReleaseSigner, Path], tmp_path: Path
) -> None:
    signer, public = keys
    statement = release_statement(**fields())
    other_private, other_public, other_id = write_key_pair(tmp_path)
    forger = load_signing_key(other_private)
    trusted = TrustedKeys.from_files(public)
    # a forger's signature under the trusted key's id
    with pytest.raises(SignatureError, match="does not verify"):
        trusted.verify(statement, forger.sign(statement), signer.key_id)
    # under its own id, which the device does not know
    with pytest.raises(SignatureError, match=f"unknown key '{other_id}'"):
        trusted.verify(statement, forger.sign(statement), other_id)
    with pytest.raises(SignatureError, match="not signed"):
        trusted.verify(statement, None, None)
    with pytest.raises(SignatureError, match="not signed"):
        trusted.verify(statement, signer.sign(statement), None)
    with pytest.raises(SignatureError, match="63 bytes"):
        trusted.verify(statement, signer.sign(statement)[:63], signer.key_id)
    with pytest.raises(SignatureError, match="none configured"):
        TrustedKeys().verify(statement, signer.sign(statement), signer.key_id)
    # both keys trusted at once (rotation): each verifies its own signature
    both = TrustedKeys.from_files(public, other_public)
    assert both.key_ids == sorted([signer.key_id, other_id])
    both.verify(statement, forger.sign(statement), other_id)
    both.verify(statement, signer.sign(statement), signer.key_id)


def test_statement_of_a_record_matches_every_chunk(keys: tuple[ReleaseSigner, Path]) -> None:
    signer, public = keys
    statement = release_statement(**fields())
    records = release_chunks(
        model_id="m",
        version=3,
        onnx=ONNX,
        lineage=LINEAGE,  # type: ignore[arg-type]
        created_at=1,
        max_chunk_bytes=16,
        signature=signer.sign(statement),
        key_id=signer.key_id,
    )
    assert len(records) > 1
    for record in records:
        decoded = decode(encode("ModelRelease", record), expected="ModelRelease").record
        assert statement_of(decoded) == statement
        TrustedKeys.from_files(public).verify(
            statement_of(decoded), decoded["signature"], decoded["key_id"]
        )


def test_bad_digest_text_is_refused() -> None:
    with pytest.raises(SignatureError, match="64 lowercase hex"):
        release_statement(**fields(sha256="AB" * 32))
    with pytest.raises(SignatureError, match="64 lowercase hex"):
        release_statement(**fields(sha256="zz" * 32))


def test_key_pair_files(tmp_path: Path) -> None:
    private, public, key_id = write_key_pair(tmp_path)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    (trusted_id,) = TrustedKeys.from_pem(public.read_text()).key_ids
    assert trusted_id == key_id == load_signing_key(private).key_id
    raw = load_signing_key(private).key.public_key()
    assert key_id == key_id_of(raw) and len(key_id) == 16
    assert key_id not in repr(TrustedKeys()) and "PRIVATE" not in repr(load_signing_key(private))
    with pytest.raises(FileExistsError):
        write_key_pair(tmp_path)  # never replaces a key


def test_key_files_that_are_not_ed25519_pem_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="does not exist"):
        load_signing_key(tmp_path / "missing.key")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key at all")
    with pytest.raises(SigningKeyError, match="not an unencrypted PEM private key") as error:
        load_signing_key(garbage)
    assert "not a key at all" not in str(error.value)
    ec = write_ec_key(tmp_path / "ec.key")
    with pytest.raises(SigningKeyError, match="not an Ed25519 key"):
        load_signing_key(ec)
    unreadable = tmp_path / "unreadable.key"
    unreadable.write_bytes(b"")
    unreadable.chmod(0)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(SigningKeyError, match="unreadable"):
            load_signing_key(unreadable)
    private, _public, _ = write_key_pair(tmp_path / "pair")
    with pytest.raises(SigningKeyError, match="not a PEM public key"):
        TrustedKeys.from_files(private)
    with pytest.raises(SigningKeyError, match="No such file"):
        TrustedKeys.from_files(tmp_path / "nothing.pub")
