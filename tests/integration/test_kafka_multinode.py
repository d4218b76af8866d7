"""The multi-node mode of the local stack: three secured KRaft nodes, one of them stoppable.

`FEDSTREAM_KAFKA_NODES=3 kafka.sh start` must bring up three combined broker+controller
nodes that share one CA and one admin credential, create internal and new topics with
replication factor 3 and min.insync.replicas 2, keep accepting acks=all writes (plain and
transactional) while one node is stopped (`stop-node`), take it back (`start-node`), and
stop everything cleanly. The start is watched through /proc: the admin password reaches
StorageTool only through its 0600 @argfile, never as an argument.

The cluster uses ports of its own: FEDSTREAM_TEST_KAFKA_PORT + 10 onwards (19102-19107).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from fedstream.edge import EdgeConfig, KafkaSecurity, RecordProducer
from fedstream.jobs.config import load
from fedstream.jobs.kafka_read import read_topic
from fedstream.jobs.topics import ensure_topics
from tests.support.secrets import command_lines, watch_command_lines
from tests.support.stack import KAFKA_SH, admin_security

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@dataclass(frozen=True)
class Cluster:
    env: dict[str, str]
    folder: Path
    bootstrap: str
    security: KafkaSecurity
    seen_at_start: list[str]
    """every process command line seen while `kafka.sh start` ran"""
    start_seconds: float

    def run(self, *command: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(KAFKA_SH), *command], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def admin(self) -> KafkaAdminClient:
        return KafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            request_timeout_ms=30000,
            **self.security.kafka_python_kwargs(),
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    port = int(os.environ.get("FEDSTREAM_TEST_KAFKA_PORT", "19092")) + 10
    folder = tmp_path_factory.mktemp("kafka-3")
    env = {
        **os.environ,
        "FEDSTREAM_KAFKA_PORT": str(port),
        "FEDSTREAM_KAFKA_CONTROLLER_PORT": str(port + 1),
        "FEDSTREAM_KAFKA_DIR": str(folder),
        "FEDSTREAM_KAFKA_NODES": "3",
        "FEDSTREAM_KAFKA_HEAP": "512m",
        "FEDSTREAM_KAFKA_START_TIMEOUT": "240",
    }
    started = time.monotonic()
    start = subprocess.Popen(
        [str(KAFKA_SH), "start"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen = watch_command_lines(start)
    out, err = start.communicate()
    took = time.monotonic() - started
    try:
        assert start.returncode == 0, out + err
        bootstrap = ",".join(f"127.0.0.1:{port + 2 * i}" for i in range(3))
        assert bootstrap in out
        yield Cluster(env, folder, bootstrap, admin_security(folder / "credentials"), seen, took)
    finally:
        subprocess.run([str(KAFKA_SH), "stop"], env=env, capture_output=True, timeout=180)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def in_sync(cluster: Cluster, topic: str) -> list[int]:
    admin = cluster.admin()
    try:
        (described,) = admin.describe_topics([topic])
    finally:
        admin.close()
    (partition,) = described["partitions"]
    assert len(partition["replica_nodes"]) == 3
    return sorted(partition["isr_nodes"])


def test_three_nodes_start_with_replicated_defaults_and_no_password_in_arguments(
    cluster: Cluster,
) -> None:
    status = cluster.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert all(f"node {n} running" in status.stdout for n in (1, 2, 3))
    for n in (1, 2, 3):
        props = (cluster.folder / f"node-{n}" / "server.properties").read_text()
        assert "default.replication.factor=3\n" in props
        assert "min.insync.replicas=2\n" in props
        assert "transaction.state.log.min.isr=2\n" in props
    # one CA and one admin for all nodes: the same login works against each of them
    for n in range(3):
        node = cluster.bootstrap.split(",")[n]
        admin = KafkaAdminClient(bootstrap_servers=node, **cluster.security.kafka_python_kwargs())
        admin.close()
    password = cluster.security.resolve_password()
    # StorageTool ran as `java ... @node-N/format.args`: the JVM read its arguments, the
    # --add-scram with the password among them, from the 0600 file
    # (rm/chmod of the argfile show its path too: only the JVMs are looked at)
    formats = [
        line for line in cluster.seen_at_start if line.startswith("java ") and "format.args" in line
    ]
    assert formats, "the storage format was not observed"
    assert all("--add-scram" not in line and " @/" in line for line in formats)
    assert not [line for line in cluster.seen_at_start if password in line]
    assert not [line for line in command_lines().values() if password in line]
    assert not list(cluster.folder.glob("node-*/format.args"))  # removed after use
    print(f"3-node secured start took {cluster.start_seconds:.1f} s")


def test_a_topic_keeps_taking_acks_all_writes_with_one_node_down(cluster: Cluster) -> None:
    topic = f"replicated-{uuid.uuid4().hex[:8]}"
    made = cluster.run("topic", topic, "1")
    assert made.returncode == 0 and "replication 3" in made.stdout, made.stdout + made.stderr
    admin = cluster.admin()
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, ["min.insync.replicas"])
    configs = admin.describe_configs([resource], config_filter="all")
    admin.close()
    assert configs["topic"][topic]["min.insync.replicas"]["value"] == "2"
    assert in_sync(cluster, topic) == [1, 2, 3]
    config = EdgeConfig(
        bootstrap=cluster.bootstrap,
        security=cluster.security,
        connect_timeout_s=20,
        send_timeout_s=60,
    )
    with RecordProducer(config) as producer:  # idempotent, acks=all
        for i in range(5):
            producer.send(topic, f"before-{i}".encode())

    stopped = cluster.run("stop-node", "2")
    assert stopped.returncode == 0, stopped.stderr
    status = cluster.run("status")
    assert status.returncode == 1 and "node 2 not running" in status.stdout
    wait_until(lambda: in_sync(cluster, topic) == [1, 3], 120, "node 2 to leave the ISR")

    with RecordProducer(config) as producer:  # 2 in sync >= min.insync.replicas: accepted
        for i in range(5):
            producer.send(topic, f"during-{i}".encode())
    transactional = KafkaProducer(
        bootstrap_servers=cluster.bootstrap,
        transactional_id=f"chaos-{uuid.uuid4().hex[:6]}",
        **cluster.security.kafka_python_kwargs(),
    )
    transactional.init_transactions()  # the transaction log (RF 3, min ISR 2) is available
    transactional.begin_transaction()
    transactional.send(topic, b"in-a-transaction")
    transactional.commit_transaction()
    transactional.close()

    values = read_topic(cluster.bootstrap, topic, cluster.security)
    assert values == [
        *(f"before-{i}".encode() for i in range(5)),
        *(f"during-{i}".encode() for i in range(5)),
        b"in-a-transaction",
    ]

    restarted = cluster.run("start-node", "2")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert cluster.run("status").returncode == 0
    wait_until(lambda: in_sync(cluster, topic) == [1, 2, 3], 120, "node 2 to catch up")


def test_the_jobs_topics_are_replicated_on_every_node(cluster: Cluster) -> None:
    suffix = uuid.uuid4().hex[:8]
    config = load(
        overrides={
            "kafka.bootstrap": cluster.bootstrap,
            "kafka.password_file": str(cluster.security.password_file),
            "kafka.ca_file": str(cluster.security.ca_file),
            **{
                f"topics.{t}": f"{t}-{suffix}"
                for t in ("updates", "control", "models", "dlq", "devices")
            },
        }
    )
    created = ensure_topics(config)
    assert len(created) == 5
    admin = cluster.admin()
    try:
        described = admin.describe_topics(created)
    finally:
        admin.close()
    for topic in described:
        assert all(len(p["replica_nodes"]) == 3 for p in topic["partitions"]), topic["name"]


def test_stop_stops_every_node(cluster: Cluster) -> None:
    stopped = cluster.run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped node(s) 1 2 3" in stopped.stdout
    folder = str(cluster.folder)
    assert not [
        line for line in command_lines().values() if "kafka.Kafka" in line and folder in line
    ]
    assert cluster.run("status").returncode == 3
    again = cluster.run("stop")
    assert again.returncode == 0 and "not running" in again.stdout
