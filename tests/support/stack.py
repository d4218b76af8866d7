"""The local stack as the tests see it: where the scripts are, what a started piece offers."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "infra" / "local" / "kafka.sh"
FLINK_SH = REPO / "infra" / "local" / "flink.sh"


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    env: dict[str, str]
    log_dir: Path


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
