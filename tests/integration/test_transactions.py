"""Kafka transactions as fedstream relies on them: what read_committed consumers see.

The job's releases become visible only when its checkpoint commits the sink's transaction;
these tests pin down the broker-side behaviour that rests on, with kafka-python.
"""

from __future__ import annotations

import uuid

from kafka import KafkaConsumer, KafkaProducer

from tests.support.stack import Broker


def _read_all(broker: Broker, topic: str, isolation: str) -> list[bytes]:
    consumer = KafkaConsumer(
        topic,
        **broker.client_kwargs(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation,
        consumer_timeout_ms=3000,
    )
    try:
        return [message.value for message in consumer]
    finally:
        consumer.close()


def test_aborted_transaction_is_invisible_and_committed_is_seen_once(
    kafka_broker: Broker, topic: str
) -> None:
    producer = KafkaProducer(
        **kafka_broker.client_kwargs(),
        transactional_id=f"test-{uuid.uuid4().hex}",
    )
    producer.init_transactions()

    producer.begin_transaction()
    producer.send(topic, b"aborted-1")
    producer.send(topic, b"aborted-2")
    producer.flush()  # the records reach the log before the abort: only the marker hides them
    producer.abort_transaction()

    producer.begin_transaction()
    producer.send(topic, b"committed")
    producer.commit_transaction()
    producer.close()

    assert _read_all(kafka_broker, topic, "read_committed") == [b"committed"]
    # The contrast proves the aborted records really were written to the log.
    uncommitted = _read_all(kafka_broker, topic, "read_uncommitted")
    assert sorted(uncommitted) == [b"aborted-1", b"aborted-2", b"committed"]


def test_open_transaction_blocks_read_committed_until_commit(
    kafka_broker: Broker, topic: str
) -> None:
    producer = KafkaProducer(
        **kafka_broker.client_kwargs(), transactional_id=f"test-{uuid.uuid4().hex}"
    )
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topic, b"pending")
    producer.flush()
    assert _read_all(kafka_broker, topic, "read_committed") == []
    producer.commit_transaction()
    producer.close()
    assert _read_all(kafka_broker, topic, "read_committed") == [b"pending"]
