"""Signed releases end to end: the real job signs, devices on the real broker verify.

One job run on topics of its own, a device (the edge SDK) trusting two job keys {A, B}:

* the job, started with key A, releases v0 and v1; the device installs them (signed by A);
* anyone else with write access to the models topic publishes forged releases of any
  version, each with a correct SHA-256 of its (forged) ONNX bytes: unsigned, signed by an
  unknown key, signed by another key under A's key id, and tampered ONNX bytes. The device
  refuses each (`InvalidSignatureError` / `DigestMismatchError`), installs none, and its
  version stays at 1;
* the job is killed and restarted from its checkpoint with key B (rotation): the device,
  never restarted, installs v2 signed by B, while a device trusting only A refuses it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kafka import KafkaProducer

from fedstream.edge import (
    DigestMismatchError,
    EdgeClient,
    EdgeConfig,
    InvalidReleaseError,
    InvalidSignatureError,
    Release,
    registration_record,
)
from fedstream.jobs.config import load
from fedstream.jobs.launcher import JobProcess
from fedstream.jobs.topics import ensure_topics
from fedstream.schemas import ModelRelease, encode, release_chunks
from fedstream.schemas.signing import ReleaseSigner, key_id_of, load_signing_key, statement_of
from tests.support.devices import enrolled
from tests.support.job_runner import JobTopics, edge_config, job_process, job_signing_key, trusted
from tests.support.stack import Broker
from tests.unit.edge.edge_support import constant_model, lineage

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]

MODEL = "signed"
SIZE = 8


def forged(version: int, signer: ReleaseSigner | None, *, key_id: str | None = None) -> list[bytes]:
    """A release that did not come from the job: correct digest of its own ONNX bytes,
    plausible lineage, signed by `signer` (or not at all), under `key_id` if given."""
    records: list[ModelRelease] = release_chunks(
        model_id=MODEL,
        version=version,
        onnx=constant_model(66.0, SIZE),
        lineage=lineage(version - 1, ("looks-genuine",)),
        created_at=int(time.time() * 1000),
        max_chunk_bytes=1 << 20,
    )
    if signer is not None:
        signature = signer.sign(statement_of(records[0]))
        records = [
            {**r, "signature": signature, "key_id": key_id or signer.key_id} for r in records
        ]
    return [encode("ModelRelease", r) for r in records]


def tampered(version: int, signer: ReleaseSigner) -> list[bytes]:
    """A correctly signed release whose ONNX bytes were changed afterwards."""
    records = release_chunks(
        model_id=MODEL,
        version=version,
        onnx=constant_model(1.0, SIZE),
        lineage=lineage(version - 1, ("genuine",)),
        created_at=int(time.time() * 1000),
        max_chunk_bytes=1 << 20,
    )
    signature = signer.sign(statement_of(records[0]))
    onnx = bytearray(records[0]["onnx"])
    onnx[-1] ^= 0xFF
    bad: ModelRelease = {
        **records[0],
        "onnx": bytes(onnx),
        "signature": signature,
        "key_id": signer.key_id,
    }
    return [encode("ModelRelease", bad)]


def newer(client: EdgeClient, than: int, timeout: float) -> Release:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = client.refresh(timeout_s=1.0)
        if found is not None and found.version > than:
            return found
    raise AssertionError(f"no release newer than v{than} in {timeout:.0f} s")


@pytest.fixture
def setup(
    kafka_broker: Broker, tmp_path: Path
) -> Iterator[tuple[JobTopics, EdgeConfig, Path, Path]]:
    topics = JobTopics()
    ensure_topics(load(overrides={**topics.overrides(), **kafka_broker.job_overrides()}))
    key_a, key_b = job_signing_key(tmp_path / "a"), job_signing_key(tmp_path / "b")
    device_key = enrolled(kafka_broker, topics.devices, tmp_path / "devices", "device")
    # trusting both keys: the job's key can rotate
    config = edge_config(kafka_broker, topics, key_a, key_b, device_key_file=device_key)
    yield topics, config, key_a, key_b


def start(broker: Broker, tmp_path: Path, topics: JobTopics, key: Path) -> JobProcess:
    job = job_process(
        broker,
        tmp_path / "checkpoints",
        topics,
        tmp_path / "job.log",
        **{"signing.key_file": str(key)},
    )
    return job


def test_forged_releases_are_refused_and_rotation_keeps_devices_installing(
    kafka_broker: Broker, tmp_path: Path, setup: tuple[JobTopics, EdgeConfig, Path, Path]
) -> None:
    topics, config, key_a, key_b = setup
    id_a, id_b = load_signing_key(key_a).key_id, load_signing_key(key_b).key_id
    job = start(kafka_broker, tmp_path, topics, key_a)
    job.start()
    forger = KafkaProducer(**kafka_broker.client_kwargs(), acks="all")
    try:
        record = registration_record(
            MODEL, constant_model(0.0, SIZE), [("c", np.zeros(SIZE))], {"window": {"count": 1}}
        )
        with EdgeClient(config, device_id="device", model_id=MODEL) as device:
            device.register(record)
            assert device.wait_for_model(timeout_s=180).key_id == id_a
            device.send_update(np.full(SIZE, 0.5, np.float32), base_version=0, num_samples=1)
            v1 = newer(device, 0, 120)
            assert (v1.version, v1.key_id, device.runtime.version) == (1, id_a, 1)

            # -- forgeries: any version, correct digest, no or bad signature --------------
            stranger_key = Ed25519PrivateKey.generate()
            stranger = ReleaseSigner(stranger_key, key_id_of(stranger_key.public_key()))
            attempts: list[tuple[list[bytes], type[InvalidReleaseError], str]] = [
                (forged(50, None), InvalidSignatureError, "not signed"),
                (forged(7, stranger), InvalidSignatureError, "unknown key"),
                (forged(2, stranger, key_id=id_a), InvalidSignatureError, "does not verify"),
            ]
            # a release signed by the job's key A, its ONNX bytes changed in transit
            attempts.append((tampered(60, load_signing_key(key_a)), DigestMismatchError, "v60"))
            for values, error, message in attempts:
                for value in values:
                    forger.send(topics.models, value, key=b"forged").get(timeout=30)
                with pytest.raises(error, match=message) as refused:
                    for _ in range(20):
                        device.refresh(timeout_s=1.0)
                assert f"{MODEL!r} v" in str(refused.value)  # says which release
                assert device.runtime.version == 1 and device.release == v1  # never installed

            # -- rotation: the job restarts from its checkpoint with key B ----------------
            job.kill()
            job = start(kafka_broker, tmp_path, topics, key_b)
            job.start()  # resumes its checkpoint (the default)
            device.send_update(np.full(SIZE, 0.25, np.float32), base_version=1, num_samples=1)
            v2 = newer(device, 1, 180)
            assert (v2.version, v2.key_id, device.runtime.version) == (2, id_b, 2)
            assert device.infer(np.zeros((1, SIZE), np.float32)).version == 2

        # a device that trusts only the old key refuses the new key's release
        # (it sees the forgeries too: each is reported once, in version order)
        only_a = replace(config, trusted_keys=trusted(key_a), client_id=uuid.uuid4().hex)
        refusals: list[str] = []
        with EdgeClient(only_a, device_id="stale-trust", model_id=MODEL) as old:
            for _ in range(10):
                try:
                    old.wait_for_model(timeout_s=10)
                except InvalidReleaseError as error:
                    refusals.append(str(error))
                if any(f"unknown key '{id_b}'" in r for r in refusals):
                    break
            assert any("v2 refused" in r and f"unknown key '{id_b}'" in r for r in refusals)
            assert old.release is None or old.release.version < 2
    finally:
        forger.close()
        job.kill()
