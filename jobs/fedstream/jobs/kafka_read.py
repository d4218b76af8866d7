"""Read a whole topic as committed data (read_committed), for the CLI and tools."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kafka import KafkaConsumer, TopicPartition

from fedstream.edge.connection import hidden_topic_hint, open_kafka_client
from fedstream.edge.errors import TopicNotFoundError

if TYPE_CHECKING:
    from fedstream.edge.security import KafkaSecurity


def read_topic(
    bootstrap: str,
    topic: str,
    security: KafkaSecurity,
    idle_ms: int = 2000,
    isolation: str = "read_committed",
) -> list[bytes]:
    """Every committed record of `topic` (`isolation="read_uncommitted"`: every record
    the log holds, aborted ones included), in offset order per partition, read as the
    principal of `security`. A compacted topic's tombstones come as None values."""
    consumer = open_kafka_client(
        KafkaConsumer,
        bootstrap,
        security,
        timeout_s=30.0,
        what=f"reader of {topic}",
        isolation_level=isolation,
        enable_auto_commit=False,
        consumer_timeout_ms=idle_ms,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=32 * 1024 * 1024,
        bootstrap_timeout_ms=30000,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not partitions:
            raise TopicNotFoundError(
                f"topic {topic!r} does not exist at {bootstrap}{hidden_topic_hint(security)}"
            )
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        return [message.value for message in consumer]
    finally:
        consumer.close()
