"""The benchmarks' own broker: the secured local stack, and how every client logs in.

Each benchmark starts a stack of its own (infra/local/kafka.sh, a throw-away folder, its
own ports) and talks to it as the stack's admin principal, like the tests do: kafka-python
clients with `client_kwargs`, the job with `job_overrides` (paths only), Kafka's Java perf
tools with a properties file written 0600 (`java_config`), because the JAAS line holds the
password and a command-line argument would show it to every local user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedstream.edge.security import KafkaSecurity, write_java_properties
from fedstream.schemas.registration_signing import OWNER_KEY_FILE
from fedstream.schemas.signing import write_key_pair

REPO = Path(__file__).resolve().parents[1]
KAFKA_SH = REPO / "infra" / "local" / "kafka.sh"


@dataclass(frozen=True)
class BenchKafka:
    """A running benchmark broker and the admin login to it."""

    env: dict[str, str]
    bootstrap: str
    security: KafkaSecurity
    folder: Path

    def client_kwargs(self) -> dict[str, Any]:
        """bootstrap_servers + authentication for a kafka-python client."""
        return {"bootstrap_servers": self.bootstrap, **self.security.kafka_python_kwargs()}

    def job_overrides(self) -> dict[str, str]:
        """Job config keys that point the job at this broker as admin (no password)."""
        return {
            "kafka.bootstrap": self.bootstrap,
            "kafka.username": str(self.security.username),
            "kafka.password_file": str(self.security.password_file or ""),
            "kafka.ca_file": str(self.security.ca_file or ""),
        }

    def java_config(self, name: str, extra: Mapping[str, str] | None = None) -> Path:
        """A Java client properties file: the login plus `extra` settings, written 0600 in
        a 0700 folder of the stack's own (for --command-config, --producer.config...)."""
        folder = self.folder / "clients"
        folder.mkdir(mode=0o700, exist_ok=True)
        return write_java_properties(
            folder / name, {**self.security.java_properties(), **(extra or {})}
        )


@contextmanager
def broker(port: int) -> Iterator[BenchKafka]:
    """A fresh secured single-node stack on `port` (and `port + 1` for its controller)."""
    data = Path(tempfile.mkdtemp(prefix="fedstream-bench-kafka-"))
    env = {
        **os.environ,
        "FEDSTREAM_KAFKA_PORT": str(port),
        "FEDSTREAM_KAFKA_CONTROLLER_PORT": str(port + 1),
        "FEDSTREAM_KAFKA_DIR": str(data),
        "FEDSTREAM_KAFKA_NODES": "1",
    }
    subprocess.run([str(KAFKA_SH), "start"], env=env, check=True)
    credentials = data / "credentials"
    try:
        yield BenchKafka(
            env=env,
            bootstrap=f"127.0.0.1:{port}",
            security=KafkaSecurity(
                username="admin",
                password_file=credentials / "admin.password",
                ca_file=credentials / "ca.pem",
            ),
            folder=data,
        )
    finally:
        subprocess.run([str(KAFKA_SH), "stop"], env=env, check=False)
        # a run writes GBs of updates: keep only the broker's logs
        for node in data.glob("node-*"):
            shutil.rmtree(node / "data", ignore_errors=True)


def signing_keys(work: Path) -> tuple[dict[str, str], Path]:
    """Fresh keys for one run, under `work` (never in the repository): the job's release
    key and a model owner's key. Returns the job config keys that use them and the
    owner's private key file, which the run's registrations must be signed with."""
    job_key = write_key_pair(work / "signing")[0]
    owner_key, owner_public, _key_id = write_key_pair(work / "signing", OWNER_KEY_FILE)
    overrides = {"signing.key_file": str(job_key), "trust.owner_keys": str(owner_public)}
    return overrides, owner_key
