"""Run the aggregation job as a process of its own, the way an operator would.

`python -m fedstream.jobs.aggregation_job --local` hosts a Flink mini-cluster (a JVM that
is a child of the Python client, plus Python worker processes). The process gets its own
session so the demo, the benchmarks and the tests can stop the whole group at once, or
SIGKILL it: the harshest crash there is, which the recovery tests need.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


class JobProcess:
    """The aggregation job in a local mini-cluster, in a process group of its own."""

    def __init__(self, overrides: dict[str, str], log: Path, *, create_topics: bool = True) -> None:
        """`overrides`: config keys for `--set` (kafka.bootstrap, topics.*, checkpoint.dir...);
        `log`: where the job's output goes (appended across restarts); `create_topics`:
        False where Terraform provisioned them (the job's principal may not create)."""
        self.log = log
        self.overrides = dict(overrides)
        self._args = [sys.executable, "-m", "fedstream.jobs.aggregation_job", "--local"]
        if create_topics:
            self._args.append("--create-topics")
        for key, value in overrides.items():
            self._args += ["--set", f"{key}={value}"]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, resume: bool = True, *, from_scratch: bool = False) -> None:
        """Start the job: it resumes from its newest sound checkpoint when there is one
        (`fedstream.jobs.resume`), or ignores them with `from_scratch` (or `resume=False`,
        the spelling from before resuming became the default; `resume=True` is a no-op)."""
        from_scratch = from_scratch or not resume
        args = self._args + (["--from-scratch"] if from_scratch else [])
        handle = self.log.open("ab")
        handle.write(f"\n==== start from_scratch={from_scratch} {time.ctime()}\n".encode())
        handle.flush()
        self._process = subprocess.Popen(
            args,
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    @property
    def pid(self) -> int | None:
        """The client's pid, which is also its process group id."""
        return None if self._process is None else self._process.pid

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
