"""The benchmark frees the updates a checkpoint already holds (`bench.job_session`).

A 60 s run writes 10-16 GB of updates into one topic, and five rounds of them filled more
than the VM's disk: before each burst the session deletes the records below the offset
the job's source committed with its last checkpoint, and nothing above it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.structs import OffsetAndMetadata

from bench.job_session import delete_checkpointed
from tests.support.stack import Broker

pytestmark = pytest.mark.kafka


def test_only_records_below_the_committed_offset_are_deleted(
    kafka_broker: Broker, topic_factory: Callable[..., str]
) -> None:
    client = kafka_broker.client_kwargs()
    topic, group = topic_factory("trim"), "bench-trim-test"
    partition = TopicPartition(topic, 0)
    with_producer = KafkaProducer(**client, acks="all")
    for i in range(10):
        with_producer.send(topic, f"r{i}".encode(), partition=0)
    with_producer.flush()
    with_producer.close()

    admin = KafkaAdminClient(**client)
    consumer = KafkaConsumer(**client, group_id=group, enable_auto_commit=False)
    try:
        assert delete_checkpointed(admin, topic, group) == 0  # nothing committed: nothing goes
        assert consumer.beginning_offsets([partition])[partition] == 0
        consumer.commit({partition: OffsetAndMetadata(6, "", -1)})
        assert delete_checkpointed(admin, topic, group) == 6
        assert consumer.beginning_offsets([partition])[partition] == 6
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        values = [r.value for batch in consumer.poll(10_000).values() for r in batch]
        assert values == [f"r{i}".encode() for i in range(6, 10)]
    finally:
        consumer.close()
        admin.close()
