"""Signed registrations: only a trusted model owner creates a model, and a model keeps its
owner. Runs the job's registry logic (`admission.admit_registration`, through
`InMemoryJob`) with real Ed25519 keys; every refusal is shown refusing."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedstream.schemas import decode, encode
from fedstream.schemas.registration_signing import (
    registration_statement,
    sign_registration,
    verify_registration,
)
from fedstream.schemas.signing import (
    ReleaseSigner,
    SignatureError,
    TrustedKeys,
    load_signing_key,
    write_key_pair,
)
from tests.support.local_job import InMemoryJob
from tests.support.onnx_models import linear_model
from tests.support.owner_key import owner_public_key, owner_signer
from tests.support.records import (
    CONTROL_TOPIC,
    owner_registration_record,
    read_dead_letters,
    registration_bytes,
)

ONNX = linear_model(inputs=4, outputs=3, seed=0)


@pytest.fixture
def other_owner(tmp_path: Path) -> ReleaseSigner:
    private, _public, _key_id = write_key_pair(tmp_path, "other-owner")
    return load_signing_key(private)


def trusting_job(*extra: Path) -> InMemoryJob:
    return InMemoryJob(owner_keys=TrustedKeys.from_files(owner_public_key(), *extra))


def refusals(job: InMemoryJob) -> list[tuple[str, str]]:
    return [(d["reason"], d["detail"]) for d in read_dead_letters(job.values("dead_letter"))]


def test_a_trusted_owners_registration_creates_the_model() -> None:
    job = trusting_job()
    job.send(registration_bytes("m", ONNX), CONTROL_TOPIC)
    assert job.process("m").version == 0
    assert job.model_owners == {"m": owner_signer().key_id}
    assert refusals(job) == []


def test_an_unsigned_registration_is_refused_as_unauthenticated() -> None:
    job = trusting_job()
    job.send(registration_bytes("m", ONNX, owner=None), CONTROL_TOPIC)
    [(reason, detail)] = refusals(job)
    assert reason == "UNAUTHENTICATED" and "not signed" in detail
    assert job.registered == set() and job.process("m").registration is None


def test_a_registration_by_an_unknown_owner_is_refused(other_owner: ReleaseSigner) -> None:
    job = trusting_job()
    job.send(registration_bytes("m", ONNX, owner=other_owner), CONTROL_TOPIC)
    [(reason, detail)] = refusals(job)
    assert reason == "UNAUTHENTICATED" and "unknown key" in detail
    assert job.registered == set()


def test_a_registration_changed_after_signing_is_refused() -> None:
    record = owner_registration_record("m", ONNX)
    record["aggregation"]["window"]["count"] = 1  # e.g. a man in the middle
    job = trusting_job()
    job.send(encode("ModelRegistration", record), CONTROL_TOPIC)
    [(reason, detail)] = refusals(job)
    assert reason == "UNAUTHENTICATED" and "does not verify" in detail


def test_another_owner_cannot_take_over_a_model(tmp_path: Path) -> None:
    private, public, _ = write_key_pair(tmp_path, "second-owner")
    job = trusting_job(public)
    job.send(registration_bytes("m", ONNX), CONTROL_TOPIC)
    job.send(registration_bytes("m", ONNX, owner=load_signing_key(private)), CONTROL_TOPIC)
    [(reason, detail)] = refusals(job)
    assert reason == "OWNER_MISMATCH" and owner_signer().key_id in detail
    assert job.model_owners == {"m": owner_signer().key_id}
    assert job.process("m").version == 0


def test_the_owner_resending_its_registration_changes_nothing() -> None:
    job = trusting_job()
    value = registration_bytes("m", ONNX)
    job.send(value, CONTROL_TOPIC)
    job.send(value, CONTROL_TOPIC)
    assert refusals(job) == [] and len(job.values("release")) == 1


def test_without_owner_keys_unsigned_registrations_are_accepted() -> None:
    job = InMemoryJob(owner_keys=None)  # trust.allow_unsigned_registrations
    job.send(registration_bytes("m", ONNX, owner=None), CONTROL_TOPIC)
    assert job.process("m").version == 0 and job.model_owners == {}


def test_the_statement_covers_every_field_but_the_signature() -> None:
    signed = sign_registration(owner_registration_record("m", ONNX, owner=None), owner_signer())
    base = registration_statement(signed)
    assert registration_statement({**signed, "signature": b"\x00" * 64}) == base
    for name, value in [
        ("model_id", "m2"),
        ("owner_key_id", "0" * 16),
        ("created_at", 1),
        ("onnx_template", signed["onnx_template"] + b"\x00"),
    ]:
        assert registration_statement({**signed, name: value}) != base, name


def test_verification_names_the_owner_key() -> None:
    decoded = decode(registration_bytes("m", ONNX), expected="ModelRegistration")
    owners = TrustedKeys.from_files(owner_public_key())
    assert verify_registration(decoded, owners) == owner_signer().key_id
    with pytest.raises(SignatureError, match="unknown key"):
        verify_registration(decoded, TrustedKeys())
