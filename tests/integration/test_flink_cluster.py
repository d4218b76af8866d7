"""`flink run -py` on the local standalone cluster, through the Kafka connector jar."""

from __future__ import annotations

from collections.abc import Callable

from kafka import KafkaConsumer, KafkaProducer

from tests.support.stack import Broker, FlinkCluster

JOB = "jobs/fedstream/jobs/topic_copy.py"


def test_flink_run_py_copies_a_topic_through_the_connector(
    kafka_broker: Broker, flink_cluster: FlinkCluster, topic_factory: Callable[..., str]
) -> None:
    source, sink = topic_factory("copy-in"), topic_factory("copy-out")
    producer = KafkaProducer(**kafka_broker.client_kwargs())
    sent = [f"record-{i}" for i in range(20)]
    for value in sent:
        producer.send(source, value.encode())
    producer.close()

    done = flink_cluster.run(
        "run",
        "-py",
        JOB,
        "--bootstrap",
        kafka_broker.bootstrap,
        "--source",
        source,
        "--sink",
        sink,
        *kafka_broker.security.arguments(),  # paths only: no password on the command line
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\nlogs: {flink_cluster.log_dir}"
    assert "has finished" in done.stdout

    consumer = KafkaConsumer(
        sink,
        **kafka_broker.client_kwargs(),
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        consumer_timeout_ms=5000,
    )
    received = [m.value.decode() for m in consumer]
    consumer.close()
    assert received == [f"copied:{v}" for v in sent]
