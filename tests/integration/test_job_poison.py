"""Poison pills through the real job on the real broker, Kafka source and sinks included.

The job tier (tests/job/test_job_tier_fuzz.py) fuzzes the topology on in-memory input;
this test adds what only the real connector shows: the largest update the updates topic
accepts (just under 16 MiB, undecodable) must give a dead letter that the DLQ topic and
the transactional sink accept (the DLQ has headroom), and the issue's reproducer (two
well-formed updates with num_samples near 2**62) must neither stop the job nor keep
another model from releasing. No restart is allowed: any escaped failure kills the job.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer

from fedstream.jobs.config import load
from fedstream.jobs.launcher import JobProcess
from fedstream.jobs.topics import ensure_topics
from fedstream.schemas import registration_key
from tests.support.devices import register_devices
from tests.support.job_runner import JobTopics, job_process
from tests.support.kafka_io import dead_letters, releases, wait_for
from tests.support.onnx_models import linear_model
from tests.support.records import registration_bytes, update_bytes
from tests.support.stack import Broker

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]

ONNX = linear_model(4, 3, seed=9)
SIZE = 15
MiB = 1024 * 1024


@pytest.fixture
def running(kafka_broker: Broker, tmp_path: Path) -> Iterator[tuple[JobProcess, JobTopics]]:
    topics = JobTopics()
    ensure_topics(load(overrides={**topics.overrides(), **kafka_broker.job_overrides()}))
    job = job_process(kafka_broker, tmp_path / "checkpoints", topics, tmp_path / "job.log")
    job.start()
    try:
        yield job, topics
    finally:
        job.kill()


def test_poison_pills_are_dead_lettered_and_the_job_goes_on(
    kafka_broker: Broker, running: tuple[JobProcess, JobTopics]
) -> None:
    job, topics = running
    producer = KafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap,
        max_request_size=17 * MiB,
        **kafka_broker.security.kafka_python_kwargs(),
    )
    huge = b"\x00" + bytes(16 * MiB - 4096)  # not Avro; just fits fl.updates (16 MiB)
    try:
        for model in ("victim", "healthy"):
            value = registration_bytes(model, ONNX, {"window": {"count": 2}})
            producer.send(topics.control, value, key=registration_key(model))
        producer.flush()
        wait_for(
            lambda: (
                {r.model_id for r in releases(kafka_broker, topics.models)} >= {"victim", "healthy"}
            ),
            120,
            "version 0 of both models",
            job.log_tail,
        )
        register_devices(kafka_broker, topics.devices, ["device-0"])
        producer.send(topics.updates, huge)
        for i in range(2):
            producer.send(
                topics.updates,
                update_bytes("victim", f"big{i}", np.ones(SIZE), num_samples=2**62 + i),
            )
        for i in range(2):
            producer.send(topics.updates, update_bytes("healthy", f"ok{i}", np.ones(SIZE) * 0.1))
        producer.flush()
    finally:
        producer.close()

    def healthy_released() -> bool:
        assert job.alive(), f"the job died:\n{job.log_tail()}"
        return any(
            r.model_id == "healthy" and r.version == 1
            for r in releases(kafka_broker, topics.models)
        )

    wait_for(healthy_released, 120, "version 1 of the healthy model", job.log_tail)
    letters = dead_letters(kafka_broker, topics.dlq)
    by_reason = sorted((d["reason"], d["update_id"]) for d in letters)
    assert ("BAD_NUM_SAMPLES", "big0") in by_reason and ("BAD_NUM_SAMPLES", "big1") in by_reason
    (big,) = [d for d in letters if d["reason"] == "UNDECODABLE"]
    assert big["original"] == huge and not big["original_truncated"]  # the DLQ had room
    assert not any(
        r.model_id == "victim" and r.version > 0 for r in releases(kafka_broker, topics.models)
    )
    assert job.alive()
