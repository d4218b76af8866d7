"""Run the real aggregation job as its own process, the way an operator would.

`python -m fedstream.jobs.aggregation_job --local` hosts a Flink mini-cluster (a JVM that
is a child of the Python client). The process gets its own session so a test can SIGKILL
the whole group at once: the harshest crash there is, with no chance to flush or abort
anything, which is what the recovery tests need.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.stack import REPO


@dataclass
class JobTopics:
    """Unique topic, group and transactional-id names, so tests never see each other."""

    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def updates(self) -> str:
        return f"updates-{self.suffix}"

    @property
    def control(self) -> str:
        return f"control-{self.suffix}"

    @property
    def models(self) -> str:
        return f"models-{self.suffix}"

    @property
    def dlq(self) -> str:
        return f"dlq-{self.suffix}"

    def overrides(self) -> dict[str, str]:
        return {
            "topics.updates": self.updates,
            "topics.control": self.control,
            "topics.models": self.models,
            "topics.dlq": self.dlq,
            "kafka.group_id": f"fedstream-{self.suffix}",
            "kafka.transactional_id_prefix": f"fedstream-{self.suffix}",
        }


class JobProcess:
    """The aggregation job in a local mini-cluster, in a process group of its own."""

    def __init__(
        self, bootstrap: str, checkpoint_dir: Path, topics: JobTopics, log: Path, **settings: str
    ) -> None:
        self.log = log
        overrides = {
            "kafka.bootstrap": bootstrap,
            "checkpoint.dir": checkpoint_dir.as_uri(),
            "checkpoint.interval_ms": "1000",
            "runtime.restart_attempts": "0",
            **topics.overrides(),
            **settings,
        }
        self._args = [
            sys.executable,
            "-m",
            "fedstream.jobs.aggregation_job",
            "--local",
            "--create-topics",
        ]
        for key, value in overrides.items():
            self._args += ["--set", f"{key}={value}"]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, resume: bool = False) -> None:
        args = self._args + (["--resume-from", "latest"] if resume else [])
        handle = self.log.open("ab")
        handle.write(f"\n==== start resume={resume} {time.ctime()}\n".encode())
        handle.flush()
        self._process = subprocess.Popen(
            args,
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """SIGKILL the client and its JVM together (no clean shutdown of anything)."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=30)
        self._process = None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
