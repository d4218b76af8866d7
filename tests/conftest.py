"""Session-wide fixtures: one real Kafka broker (and, on demand, one Flink cluster) per run.

The broker is the project's own (infra/local/kafka.sh), started once per test session on
ports of its own (so a `make demo` stack can run beside the tests) with a throw-away data
folder. It is the secured stack (SASL_SSL, SCRAM-SHA-512, ACLs); tests connect as its
admin principal (`Broker.security`, `Broker.client_kwargs()`). Every test that needs Kafka
gets a fresh topic. Nothing here ever skips: if the broker cannot start, every test that
needs it fails with the script's message.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fedstream.schemas.registration_signing import ENV_OWNER_KEY_FILE
from tests.support.owner_key import owner_private_key
from tests.support.stack import FLINK_SH, KAFKA_SH, Broker, FlinkCluster, admin_security

# Every client of the session registers models as the tests' model owner (EdgeConfig's
# default owner_key, the simulator, the CLI), and every job trusts it (tests.support).
os.environ[ENV_OWNER_KEY_FILE] = str(owner_private_key())


def _script(script: Path, command: str, env: dict[str, str], timeout: float = 180) -> str:
    done = subprocess.run(
        [str(script), command], env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        pytest.fail(
            f"{script.name} {command} failed (exit {done.returncode}):\n"
            f"{done.stdout}\n{done.stderr}",
            pytrace=False,
        )
    return done.stdout


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    port = os.environ.get("FEDSTREAM_TEST_KAFKA_PORT", "19092")
    data = tmp_path_factory.mktemp("kafka")
    env = {
        **os.environ,
        "FEDSTREAM_KAFKA_PORT": port,
        "FEDSTREAM_KAFKA_CONTROLLER_PORT": str(int(port) + 1),
        "FEDSTREAM_KAFKA_DIR": str(data),
        "FEDSTREAM_KAFKA_NODES": "1",
    }
    _script(KAFKA_SH, "start", env)
    try:
        yield Broker(
            bootstrap=f"127.0.0.1:{port}",
            env=env,
            log_dir=data / "node-1" / "logs",
            credentials=data / "credentials",
            security=admin_security(data / "credentials"),
        )
    finally:
        _script(KAFKA_SH, "stop", env)


@pytest.fixture
def topic_factory(kafka_broker: Broker) -> Iterator[Callable[..., str]]:
    """Create a fresh, uniquely named topic: `topic_factory(partitions=1, max_bytes=...)`."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(**kafka_broker.client_kwargs(), request_timeout_ms=30000)

    def make(prefix: str = "t", partitions: int = 1, max_bytes: int = 16 * 1024 * 1024) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=partitions,
                    replication_factor=1,
                    topic_configs={"max.message.bytes": str(max_bytes)},
                )
            ]
        )
        return name

    yield make
    admin.close()


@pytest.fixture
def topic(topic_factory: Callable[..., str]) -> str:
    """A fresh single-partition topic for this test."""
    return topic_factory()


@pytest.fixture(scope="session")
def flink_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlinkCluster]:
    rest = os.environ.get("FEDSTREAM_TEST_FLINK_REST_PORT", "18081")
    folder = tmp_path_factory.mktemp("flink")
    env = {
        **os.environ,
        "FEDSTREAM_FLINK_REST_PORT": rest,
        "FEDSTREAM_FLINK_RPC_PORT": os.environ.get("FEDSTREAM_TEST_FLINK_RPC_PORT", "16123"),
        "FEDSTREAM_FLINK_DIR": str(folder),
    }
    _script(FLINK_SH, "start", env)
    try:
        yield FlinkCluster(rest_url=f"http://localhost:{rest}", env=env, log_dir=folder / "log")
    finally:
        _script(FLINK_SH, "stop", env)
