"""The local stack as the tests see it: where the scripts are, what a started piece offers."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedstream.edge.security import KafkaSecurity

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "infra" / "local" / "kafka.sh"
FLINK_SH = REPO / "infra" / "local" / "flink.sh"


@dataclass(frozen=True)
class Broker:
    """A started local stack (kafka.sh): where it listens and how to log in as admin."""

    bootstrap: str
    env: dict[str, str]
    log_dir: Path
    credentials: Path
    """The stack's credentials folder: ca.pem, admin.password, admin.properties."""
    security: KafkaSecurity
    """The admin principal over SASL_SSL (super user: every test client may do anything)."""

    def client_kwargs(self) -> dict[str, Any]:
        """bootstrap_servers + authentication for a kafka-python client as admin."""
        return {"bootstrap_servers": self.bootstrap, **self.security.kafka_python_kwargs()}

    def job_overrides(self) -> dict[str, str]:
        """Job config keys (`--set`) that point a job or CLI at this broker as admin."""
        return {
            "kafka.bootstrap": self.bootstrap,
            "kafka.username": self.security.username or "",
            "kafka.password_file": str(self.security.password_file or ""),
            "kafka.ca_file": str(self.security.ca_file or ""),
        }


def admin_security(credentials: Path) -> KafkaSecurity:
    """The admin principal of a stack whose credentials folder is `credentials`."""
    return KafkaSecurity(
        username="admin",
        password_file=credentials / "admin.password",
        ca_file=credentials / "ca.pem",
    )


@dataclass(frozen=True)
class FlinkCluster:
    rest_url: str
    env: dict[str, str]
    log_dir: Path

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`flink <args>` against this cluster, as an operator would type it."""
        return subprocess.run(
            [str(FLINK_SH), "cli", *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
