"""Signed updates (Ed25519, RFC 8032): the canonical update statement and `verify_update`.

Every refusal is shown refusing: unsigned, unknown device, revoked key, another key id,
a bad or short signature, each covered field tampered with after signing, a signature
made for another device, a release signature replayed as an update signature.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstream.schemas import decode, encode, pack
from fedstream.schemas.signing import RELEASE_DOMAIN, ReleaseSigner, key_id_of
from fedstream.schemas.update_signing import (
    UPDATE_DOMAIN,
    RegisteredKey,
    RegistryEntryError,
    delta_digest,
    device_key_record,
    sign_update,
    update_statement,
    verify_update,
)


def signer() -> ReleaseSigner:
    key = Ed25519PrivateKey.generate()
    return ReleaseSigner(key, key_id_of(key.public_key()))


def entry_of(device: str, key: ReleaseSigner, status: str = "ACTIVE") -> RegisteredKey:
    record = device_key_record(device, key.key.public_key(), status=status, created_at=1)
    return RegisteredKey.from_record(decode(encode("DeviceKey", record)).record)


def update(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "update_id": "u1",
        "device_id": "d1",
        "model_id": "m",
        "base_version": 3,
        "num_samples": 32,
        "created_at": 1_767_225_600_123,
        "delta": pack(np.arange(6, dtype=np.float32), "FP32"),
        "metrics": None,
        "sequence": 7,
        "key_id": None,
        "signature": None,
    }
    record.update(changes)
    return record


KEY = signer()
ENTRY = entry_of("d1", KEY)


def test_a_signed_update_verifies_after_an_avro_round_trip() -> None:
    signed = sign_update(update(), KEY)
    assert signed["key_id"] == KEY.key_id and len(signed["signature"]) == 64
    assert verify_update(decode(encode("GradientUpdate", signed)).record, ENTRY) is None
    assert update_statement(signed).startswith(UPDATE_DOMAIN)


@pytest.mark.parametrize(
    "change",
    [
        {"update_id": "u2"},
        {"device_id": "d2"},
        {"model_id": "m2"},
        {"base_version": 4},
        {"num_samples": 33},
        {"sequence": 8},
        {"sequence": None},
        {"created_at": 1},
        {"delta": pack(np.arange(6, dtype=np.float32) + 1, "FP32")},
        {"delta": pack(np.arange(6, dtype=np.float32), "FP16")},
    ],
)
def test_every_covered_field_tampered_after_signing_is_refused(change: dict[str, Any]) -> None:
    signed = {**sign_update(update(), KEY), **change}
    entry = entry_of(signed["device_id"], KEY)  # even with the right key for the device
    assert "does not verify" in str(verify_update(signed, entry))


def test_metrics_are_not_covered() -> None:
    signed = {**sign_update(update(), KEY), "metrics": {"loss": 1.0, "steps": 1, "duration_ms": 1}}
    assert verify_update(signed, ENTRY) is None


def test_delta_digest_covers_each_payload_field() -> None:
    base = pack(np.arange(8, dtype=np.float32), "TOPK", k=3)
    digests = {delta_digest(base)}
    for name, value in [
        ("shape", [9]),
        ("dtype", "float64"),
        ("data", base["data"][:-4]),
        ("indices", base["indices"][:-4]),
        ("scale", 2.0),
        ("encoding", "FP32"),
    ]:
        digests.add(delta_digest({**base, name: value}))
    assert len(digests) == 7


def test_refusals_name_the_claimed_device_and_never_key_material() -> None:
    signed = sign_update(update(), KEY)
    other = signer()
    cases = {
        "not signed": verify_update(update(), ENTRY),
        "not registered": verify_update(signed, None),
        "revoked": verify_update(signed, entry_of("d1", KEY, "REVOKED")),
        "is not the registered key": verify_update(signed, entry_of("d1", other)),
        "does not verify": verify_update(
            {**sign_update(update(), other), "key_id": KEY.key_id}, ENTRY
        ),
        "63 bytes": verify_update({**signed, "signature": signed["signature"][:63]}, ENTRY),
        "not device": verify_update(signed, entry_of("d2", KEY)),
    }
    for expected, problem in cases.items():
        assert problem is not None and expected in problem and "'d1'" in problem, problem
        assert ENTRY.public_key.hex() not in problem
        assert signed["signature"].hex() not in problem


def test_unsigned_updates_pass_only_for_a_legacy_fleet_and_signed_ones_are_still_checked() -> None:
    assert verify_update(update(), None, allow_unsigned=True) is None
    bad = {**sign_update(update(), KEY), "num_samples": 1}
    assert "does not verify" in str(verify_update(bad, ENTRY, allow_unsigned=True))
    half = {**update(), "key_id": KEY.key_id}  # a key id without a signature
    assert "not signed" in str(verify_update(half, ENTRY, allow_unsigned=True))


def test_a_release_signature_is_never_an_update_signature() -> None:
    """Domain separation: the statements start with different prefixes, so the same key
    signing a release statement gives nothing an update could carry."""
    assert not RELEASE_DOMAIN.startswith(UPDATE_DOMAIN[:-1])
    signed = sign_update(update(), KEY)
    forged = {**signed, "signature": KEY.sign(RELEASE_DOMAIN + update_statement(signed)[28:])}
    assert "does not verify" in str(verify_update(forged, ENTRY))


def test_registry_entries_must_hold_a_raw_key_with_its_own_id() -> None:
    record: Any = device_key_record("d1", KEY.key.public_key(), created_at=1)
    with pytest.raises(RegistryEntryError, match="32"):
        RegisteredKey.from_record({**record, "public_key": record["public_key"] + b"\0"})
    with pytest.raises(RegistryEntryError, match="not the key's id"):
        RegisteredKey.from_record({**record, "key_id": "0" * 16})
    assert not entry_of("d1", KEY, "REVOKED").active


@settings(max_examples=100, deadline=None)  # timing on a shared machine is not the property
@given(
    ids=st.tuples(st.text(max_size=20), st.text(max_size=20), st.text(max_size=20)),
    longs=st.tuples(*(st.integers(-(2**63), 2**63 - 1) for _ in range(3))),
    sequence=st.none() | st.integers(-(2**63), 2**63 - 1),
)
def test_the_statement_is_total_and_injective_on_its_fields(
    ids: tuple[str, str, str], longs: tuple[int, int, int], sequence: int | None
) -> None:
    record = update(
        update_id=ids[0],
        device_id=ids[1],
        model_id=ids[2],
        base_version=longs[0],
        num_samples=longs[1],
        created_at=longs[2],
        sequence=sequence,
    )
    statement = update_statement(record)
    shifted = update(
        update_id=ids[0] + ids[1][:1],
        device_id=ids[1][1:],
        model_id=ids[2],
        base_version=longs[0],
        num_samples=longs[1],
        created_at=longs[2],
        sequence=sequence,
    )
    if ids[1]:  # moving a character between adjacent texts changes the statement
        assert update_statement(shifted) != statement
