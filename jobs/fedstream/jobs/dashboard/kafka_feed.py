"""Releases and dead letters as they are committed: the dashboard's view of the topics.

One consumer follows the models and dead-letter topics from their beginning with
`isolation.level=read_committed`, the view devices have: a release appears when the
checkpoint that produced it completed, never from an aborted transaction. Only what the
page shows is kept, bounded: per model the (time, version) of each release, and the last
dead letters.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kafka import KafkaConsumer, TopicPartition

from fedstream.schemas import CodecError, decode

if TYPE_CHECKING:
    from fedstream.jobs.config import JobConfig

__all__ = ["DeadLetterLine", "KafkaFeed", "ReleasePoint", "TopicView"]

#: Releases kept per model, dead letters kept in all.
KEEP_RELEASES, KEEP_DEAD_LETTERS = 2000, 50


@dataclass(frozen=True, slots=True)
class ReleasePoint:
    created_at_ms: int
    version: int
    onnx_size: int
    num_updates: int


@dataclass(frozen=True, slots=True)
class DeadLetterLine:
    created_at_ms: int
    model_id: str
    reason: str
    detail: str


@dataclass
class TopicView:
    """What has been read so far (built by `KafkaFeed`, read by the page)."""

    releases: dict[str, deque[ReleasePoint]] = field(default_factory=dict)
    dead_letters: deque[DeadLetterLine] = field(
        default_factory=lambda: deque(maxlen=KEEP_DEAD_LETTERS)
    )
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)

    def add_release(self, record: dict[str, Any]) -> None:
        if record["chunk_index"] != 0:  # one point per release, not per chunk
            return
        points = self.releases.setdefault(str(record["model_id"]), deque(maxlen=KEEP_RELEASES))
        lineage = record["lineage"]
        points.append(
            ReleasePoint(
                int(record["created_at"]),
                int(record["version"]),
                int(record["onnx_size"]),
                int(lineage["num_updates"]),
            )
        )

    def add_dead_letter(self, record: dict[str, Any]) -> None:
        reason = str(record["reason"])
        self.dead_letter_reasons[reason] += 1
        self.dead_letters.append(
            DeadLetterLine(
                int(record["created_at"]),
                str(record.get("model_id") or ""),
                reason,
                str(record.get("detail") or "")[:160],
            )
        )


class KafkaFeed:
    """A daemon thread that keeps a `TopicView` of the config's models and DLQ topics."""

    def __init__(self, config: JobConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._view = TopicView()
        self._stop = threading.Event()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="kafka-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def view(self) -> TopicView:
        """A copy of what was read so far (the page renders it without the lock)."""
        with self._lock:
            return TopicView(
                {m: deque(p, maxlen=KEEP_RELEASES) for m, p in self._view.releases.items()},
                deque(self._view.dead_letters, maxlen=KEEP_DEAD_LETTERS),
                Counter(self._view.dead_letter_reasons),
            )

    def _consumer(self) -> KafkaConsumer:
        from fedstream.jobs.kafka_clients import kafka_client

        topics = self._config.topics
        consumer = kafka_client(
            KafkaConsumer,
            self._config,
            what="dashboard reader",
            isolation_level="read_committed",
            enable_auto_commit=False,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=32 * 1024 * 1024,
        )
        partitions = [
            TopicPartition(topic, p)
            for topic in (topics.models, topics.dlq)
            for p in sorted(consumer.partitions_for_topic(topic) or [])
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        return consumer

    def _run(self) -> None:
        try:
            consumer = self._consumer()
        except Exception as error:  # shown on the page; the metrics part still works
            self.error = f"cannot read Kafka: {error}"
            return
        try:
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        self._take(record.topic, record.value)
        finally:
            consumer.close()

    def _take(self, topic: str, value: bytes | None) -> None:
        if value is None:  # a tombstone of the compacted models topic
            return
        try:
            if topic == self._config.topics.models:
                record = decode(value, expected="ModelRelease").record
                with self._lock:
                    self._view.add_release(record)
            else:
                record = decode(value, expected="DeadLetter").record
                with self._lock:
                    self._view.add_dead_letter(record)
        except CodecError:  # not ours to judge here; the page shows what decodes
            return
