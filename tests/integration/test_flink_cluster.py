"""`flink run -py` on the local standalone cluster, through the Kafka connector jar."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

from kafka import KafkaConsumer, KafkaProducer

from tests.support.stack import FLINK_SH, Broker, FlinkCluster

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


def test_pids_lists_the_daemons_and_kill_refuses_any_other_process(
    flink_cluster: FlinkCluster,
) -> None:
    pids = subprocess.run(
        [str(FLINK_SH), "pids"], env=flink_cluster.env, capture_output=True, text=True, timeout=60
    )
    roles = sorted(line.split()[0] for line in pids.stdout.splitlines())
    assert roles == ["jobmanager", "taskmanager"], pids.stdout + pids.stderr
    # the chaos tests' SIGKILL only ever reaches a daemon of this cluster
    for command in ("kill-taskmanager", "kill-jobmanager"):
        refused = subprocess.run(
            [str(FLINK_SH), command, str(os.getpid())],
            env=flink_cluster.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode != 0 and "is not a running" in refused.stderr
    jobmanager = next(int(line.split()[1]) for line in pids.stdout.splitlines() if "job" in line)
    refused = subprocess.run(
        [str(FLINK_SH), "kill-taskmanager", str(jobmanager)],
        env=flink_cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0, "a JobManager is not a TaskManager"
    os.kill(jobmanager, 0)  # still alive
