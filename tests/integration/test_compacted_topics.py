"""Compacted control and models topics keep each model's registration and newest release.

The job writes every release chunk keyed `<model_id>#<chunk_index>` and partitioned by
model id (jobs/java), registrations are keyed by model id; both topics are created
compacted (`fedstream.jobs.topics`). Here compaction is forced (segments roll every
second, any dirt is cleanable, tombstones and markers go at once) on a real broker with
the real job, releases of two chunks each, and a registration re-sent. Afterwards only
the newest release of each model and one registration per model are left; a device's
`ReleaseReader` still installs the newest complete release, and a new job started on the
compacted control topic registers every model again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from fedstream.edge import EdgeConfig
from fedstream.edge.releases import ReleaseReader
from fedstream.jobs.config import load
from fedstream.jobs.topics import ensure_topics, topic_specs
from fedstream.schemas import decode, registration_key, release_key
from tests.integration.test_job_exactly_once import MODEL, WINDOW, Fleet
from tests.support.job_runner import JobTopics, job_process, trusted
from tests.support.kafka_io import releases, wait_for
from tests.support.onnx_models import linear_model
from tests.support.records import registration_bytes
from tests.support.stack import Broker

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]

#: Compaction as soon as the broker's cleaner looks (log.cleaner.backoff.ms, 15 s).
FAST_COMPACTION = {
    "segment.ms": "1000",
    "min.cleanable.dirty.ratio": "0.001",
    "delete.retention.ms": "100",
    "min.compaction.lag.ms": "0",
}
#: Small enough that a 256x128 linear model's release (~130 KB) takes two chunks; the
#: limits keep the lineage bound (window x id length) below it, as the config requires.
SETTINGS = {
    "topics.models_max_message_bytes": "100000",
    "limits.max_window_updates": "16",
    "limits.max_id_length": "64",
}
OTHER = "second-model"


def _records(broker: Broker, topic: str) -> list[tuple[bytes, dict[str, Any]]]:
    """(key, decoded record) of every committed record the topic still holds."""
    consumer = KafkaConsumer(
        **broker.client_kwargs(),
        isolation_level="read_committed",
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
        max_partition_fetch_bytes=32 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        return [(bytes(m.key), decode(m.value).record) for m in consumer]
    finally:
        consumer.close()


def _create(broker: Broker, topics: JobTopics) -> None:
    """The job's topics as `ensure_topics` makes them, control and models compacting fast."""
    config = load(overrides={**topics.overrides(), **broker.job_overrides(), **SETTINGS})
    admin = KafkaAdminClient(**broker.client_kwargs(), request_timeout_ms=30000)
    try:
        specs = []
        for spec in topic_specs(config):
            configs = dict(spec.topic_configs)
            if configs.get("cleanup.policy") == "compact":
                configs |= FAST_COMPACTION
            specs.append(NewTopic(spec.name, spec.num_partitions, 1, topic_configs=configs))
        admin.create_topics(specs)
    finally:
        admin.close()


def test_compaction_keeps_each_models_registration_and_newest_release(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    topics = JobTopics()
    _create(kafka_broker, topics)
    job = job_process(
        kafka_broker, tmp_path / "checkpoints", topics, tmp_path / "job.log", **SETTINGS
    )
    onnx = linear_model(inputs=256, outputs=128)
    fleet = Fleet(kafka_broker, topics, onnx)
    # a second job: topics of its own, but the first one's (compacted) control topic
    on_control = {**SETTINGS, "topics.control": topics.control}
    second_topics = JobTopics()
    second_config = {**second_topics.overrides(), **kafka_broker.job_overrides(), **on_control}
    ensure_topics(load(overrides=second_config))
    second = job_process(
        kafka_broker,
        tmp_path / "checkpoints-2",
        second_topics,
        tmp_path / "job-2.log",
        **on_control,
    )
    try:
        job.start()
        fleet.register(job, timeout=300)  # a job's first start is slow on a busy machine
        fleet.register(job)  # re-sent: the job ignores it, compaction keeps one
        for _ in range(3):
            fleet.send(WINDOW, 0)
            time.sleep(1.5)  # releases in different segments (segment.ms 1 s)
        wait_for(
            lambda: max(r.version for r in releases(kafka_broker, topics.models)) >= 3,
            120,
            "v3",
            job.log_tail,
        )
        before = _records(kafka_broker, topics.models)
        assert {r["chunk_count"] for _, r in before} == {2}
        assert all(k == release_key(MODEL, r["chunk_index"]) for k, r in before)
        time.sleep(1.5)
        # a second model: its registration and version 0 roll both topics' segments, so
        # the newest release of the first model is in a segment the cleaner may compact
        fleet.producer.send(
            topics.control,
            registration_bytes(OTHER, onnx, {"window": {"count": WINDOW}}),
            key=registration_key(OTHER),
        ).get(timeout=30)
        wait_for(
            lambda: OTHER in {r.model_id for r in releases(kafka_broker, topics.models)},
            120,
            f"{OTHER} v0",
            job.log_tail,
        )

        def compacted() -> bool:
            try:
                records = _records(kafka_broker, topics.models)
            except RuntimeError as error:  # kafka-python read a segment the cleaner replaced
                if "unpacking messageset" not in str(error):
                    raise
                return False  # read again
            left = {(r["model_id"], r["version"]) for _, r in records}
            return left == {(MODEL, 3), (OTHER, 0)}

        wait_for(compacted, 150, "older releases compacted away", lambda: "")
        after = _records(kafka_broker, topics.models)
        assert sorted(k for k, _ in after) == sorted(
            release_key(m, i) for m in (MODEL, OTHER) for i in (0, 1)
        )

        def one_registration_each() -> bool:
            keys = [k for k, _ in _records(kafka_broker, topics.control)]
            return sorted(keys) == sorted([registration_key(OTHER), registration_key(MODEL)])

        wait_for(one_registration_each, 150, "the re-sent registration compacted", lambda: "")

        # a device joining now installs the newest complete release
        key = tmp_path / "signing" / "job-signing.key"
        config = EdgeConfig(
            trusted_keys=trusted(key),
            bootstrap=kafka_broker.bootstrap,
            security=kafka_broker.security,
            models_topic=topics.models,
            connect_timeout_s=10,
        )
        with ReleaseReader(config, MODEL) as reader:
            newest = reader.newest(timeout_s=30)
        assert (newest.version, newest.chunk_count) == (3, 2)

        # a new job on the compacted control topic registers both models again
        job.kill()
        second.start()
        wait_for(
            lambda: (
                {(r.model_id, r.version) for r in releases(kafka_broker, second_topics.models)}
                == {(MODEL, 0), (OTHER, 0)}
            ),
            150,
            "both models registered again by a new job",
            second.log_tail,
        )
    finally:
        job.kill()
        second.kill()
        fleet.close()
