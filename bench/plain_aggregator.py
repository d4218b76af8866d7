"""The baseline: what a user would write instead of fedstream.

One kafka-python thread consumes updates, decodes them with our codec, keeps a numpy sum
and produces a model every K updates: no checkpoints, no exactly-once, no signature check.
With `entry` (the sending device's registry entry) it also verifies each update's
signature as fedstream's gate does (`verify_update`: SHA-256 of the delta, Ed25519): the
like-for-like loop, which tells the cost of the streaming framework apart from the cost
of the trust boundary every fleet needs (a fragmented update is verified whole, its
fragments' own signatures are not: a little less work than the job does).
It drains a backlog that is already in its topic (produced before the clock starts), as the
fedstream job drains a committed transaction, so neither shares the CPU with its load
generator. Each run gets fresh topics, deleted afterwards (a run writes GBs).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from bench.kafka_stack import BenchKafka
from fedstream.schemas import decode, unpack
from fedstream.schemas.fragments import FRAGMENT, is_fragment
from fedstream.schemas.update_signing import RegisteredKey, verify_update

__all__ = ["MAX_BYTES", "PlainRun", "big_record_consumer", "checked", "make_topic", "plain_run"]

MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class PlainRun:
    """One drain of a backlog by the plain aggregator."""

    updates: int
    seconds: float
    cpu_s: float
    """CPU of the benchmark process meanwhile (the aggregator's thread, its producer's I/O
    thread; the release watcher idles)"""

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.seconds

    @property
    def cpu_ms_per_update(self) -> float:
        return self.cpu_s * 1000 / self.updates


def make_topic(kafka: BenchKafka, partitions: int = 1) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(**kafka.client_kwargs())
    config = {"max.message.bytes": str(MAX_BYTES)}
    admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config)])
    admin.close()
    return name


def delete_topics(kafka: BenchKafka, *names: str) -> None:
    admin = KafkaAdminClient(**kafka.client_kwargs())
    admin.delete_topics(list(names))
    admin.close()


def big_record_consumer(kafka: BenchKafka, topic: str, **settings: Any) -> KafkaConsumer:
    """A consumer of partition 0 of `topic`, from the start, sized for multi-MB records."""
    consumer = KafkaConsumer(
        **kafka.client_kwargs(),
        auto_offset_reset="earliest",
        fetch_max_bytes=4 * MAX_BYTES,
        max_partition_fetch_bytes=2 * MAX_BYTES,
        **settings,
    )
    consumer.assign([TopicPartition(topic, 0)])
    return consumer


def _producer(kafka: BenchKafka) -> KafkaProducer:
    return KafkaProducer(**kafka.client_kwargs(), acks="all", max_request_size=MAX_BYTES)


def _fill(kafka: BenchKafka, topic: str, values: list[bytes], count: int) -> None:
    """The backlog: `count` copies of one signed update, as the Kafka values that carry it
    (its fragments when it is larger than a record); the aggregator checks no signature."""
    producer = _producer(kafka)
    for _ in range(count):
        for value in values:
            producer.send(topic, value)
    producer.flush()
    producer.close()


def _whole(value: bytes, pieces: list[bytes]) -> bytes | None:
    """The update a consumed value completes: itself, or (a fragment) the joined data of
    the fragments so far once the last one is in; None while fragments are missing. A
    user's loop has to put large updates back together too; it need not verify them."""
    if not is_fragment(value):
        return value
    fragment = decode(value, expected=FRAGMENT).record
    pieces.append(fragment["data"])
    if fragment["index"] + 1 < fragment["count"]:
        return None
    whole = b"".join(pieces)
    pieces.clear()
    return whole


def _drain(
    consumer: KafkaConsumer,
    producer: KafkaProducer,
    models: str,
    params: int,
    count: int,
    k: int,
    entry: RegisteredKey | None,
) -> int:
    """Consume `count` updates: decode, (with `entry`) verify, unpack, sum; publish the
    model every `k`."""
    model = np.zeros(params, dtype=np.float32)
    total = np.zeros(params, dtype=np.float32)
    seen = 0
    pieces: list[bytes] = []
    for message in consumer:
        value = _whole(message.value, pieces)
        if value is None:
            continue
        record = checked(decode(value, expected="GradientUpdate").record, entry)
        total += unpack(record["delta"], expected_shape=[params], require_finite=True)
        seen += 1
        if seen % k == 0:
            model += total / k
            total[:] = 0
            _publish(producer, models, model.tobytes())
        if seen == count:
            break
    producer.flush()
    return seen


def checked(record: dict[str, Any], entry: RegisteredKey | None) -> dict[str, Any]:
    """`record`, once its signature verifies against `entry` (None: not checked); an
    update that does not verify stops the run (the benchmark's backlog is all authentic)."""
    if entry is not None and (problem := verify_update(record, entry)) is not None:
        raise RuntimeError(f"plain aggregator: {problem}")
    return record


def _publish(producer: KafkaProducer, topic: str, model: bytes) -> None:
    """The model's bytes, in records that fit the topic (fedstream chunks its releases)."""
    room = MAX_BYTES - 4096
    for start in range(0, len(model), room):
        producer.send(topic, model[start : start + room])


def plain_run(
    kafka: BenchKafka,
    values: list[bytes],
    params: int,
    count: int,
    window: int,
    entry: RegisteredKey | None = None,
) -> PlainRun:
    """Fill a fresh topic with `count` updates (each carried by `values`), then time the
    aggregator draining it (verifying each signature against `entry` when given)."""
    updates, models = make_topic(kafka), make_topic(kafka)
    try:
        _fill(kafka, updates, values, count)
        consumer = big_record_consumer(kafka, updates, consumer_timeout_ms=30000)
        producer = _producer(kafka)
        cpu, start = time.process_time(), time.perf_counter()
        seen = _drain(consumer, producer, models, params, count, window, entry)
        seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu
        consumer.close()
        producer.close()
    finally:
        delete_topics(kafka, updates, models)
    if seen != count:
        raise RuntimeError(f"plain aggregator: {seen}/{count} updates consumed")
    return PlainRun(seen, seconds, cpu_s)
