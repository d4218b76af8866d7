"""Signed registrations through the real job on the real broker.

The job trusts two model owners ([trust] owner_keys). A model registered with the CLI
(`fedstream register --owner-key-file`) by the first owner is released; an unsigned
registration, one signed by an unknown key, and the second owner's registration of the
first owner's model id are each dead-lettered with their reason, and none of them
creates or changes a model.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from fedstream.jobs.config import load
from fedstream.jobs.launcher import REPO, JobProcess
from fedstream.jobs.topics import ensure_topics
from fedstream.schemas import registration_key
from fedstream.schemas.signing import load_signing_key, write_key_pair
from tests.support.job_runner import JobTopics, job_process
from tests.support.kafka_io import dead_letters, releases, wait_for
from tests.support.onnx_models import linear_model
from tests.support.owner_key import owner_private_key, owner_public_key
from tests.support.records import registration_bytes
from tests.support.stack import Broker

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]

ONNX = linear_model(4, 3, seed=3)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    second, second_public, _ = write_key_pair(tmp_path / "keys", "second-owner")
    unknown, _, _ = write_key_pair(tmp_path / "keys", "unknown-owner")
    return {"second": second, "second.pub": second_public, "unknown": unknown}


@pytest.fixture
def running(
    kafka_broker: Broker, tmp_path: Path, keys: dict[str, Path]
) -> Iterator[tuple[JobProcess, JobTopics, dict[str, str]]]:
    topics = JobTopics()
    settings = {**topics.overrides(), **kafka_broker.job_overrides()}
    ensure_topics(load(overrides=settings))
    owners = f"{owner_public_key()},{keys['second.pub']}"
    job = job_process(
        kafka_broker,
        tmp_path / "checkpoints",
        topics,
        tmp_path / "job.log",
        **{"trust.owner_keys": owners},
    )
    job.start()
    try:
        yield job, topics, settings
    finally:
        job.kill()


def cli_register(settings: dict[str, str], model_id: str, onnx: Path, key: Path) -> str:
    sets = [arg for k, v in settings.items() for arg in ("--set", f"{k}={v}")]
    model = ["--model-id", model_id, "--onnx", str(onnx), "--window-count", "2"]
    command = [sys.executable, "-m", "fedstream.jobs.cli", "register", *sets, *model]
    done = subprocess.run(
        [*command, "--owner-key-file", str(key)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_only_trusted_owners_register_and_a_model_keeps_its_owner(
    kafka_broker: Broker,
    running: tuple[JobProcess, JobTopics, dict[str, str]],
    keys: dict[str, Path],
    tmp_path: Path,
) -> None:
    job, topics, settings = running
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(ONNX)
    assert "registered 'owned'" in cli_register(settings, "owned", onnx, owner_private_key())
    wait_for(
        lambda: any(r.model_id == "owned" for r in releases(kafka_broker, topics.models)),
        120,
        "version 0 of the owned model",
        job.log_tail,
    )
    producer = KafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap, **kafka_broker.security.kafka_python_kwargs()
    )
    try:
        for model, owner in (
            ("anonymous", None),
            ("rogue", load_signing_key(keys["unknown"])),
            ("owned", load_signing_key(keys["second"])),
        ):
            value = registration_bytes(model, ONNX, owner=owner)
            # keyed: the control topic is compacted and refuses unkeyed records
            producer.send(topics.control, value, key=registration_key(model)).get(timeout=30)
    finally:
        producer.close()

    def refused() -> list[tuple[str, str]]:
        assert job.alive(), f"the job died:\n{job.log_tail()}"
        return sorted((d["reason"], d["model_id"]) for d in dead_letters(kafka_broker, topics.dlq))

    expected = [
        ("OWNER_MISMATCH", "owned"),
        ("UNAUTHENTICATED", "anonymous"),
        ("UNAUTHENTICATED", "rogue"),
    ]
    wait_for(lambda: refused() == expected, 60, f"dead letters {expected}", job.log_tail)
    assert [(r.model_id, r.version) for r in releases(kafka_broker, topics.models)] == [
        ("owned", 0)
    ]
    key_material = [p.read_bytes() for p in keys.values()]
    for letter in dead_letters(kafka_broker, topics.dlq):
        assert not any(k in letter["detail"].encode() for k in key_material)
