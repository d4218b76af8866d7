"""The aggregation job submitted to a running standalone Flink cluster, for the benchmarks.

`ClusterJob` stands in for `fedstream.jobs.launcher.JobProcess` (a local mini-cluster) in
`bench.job_session.job_session`: it submits with `fedstream submit` (`flink run -py`,
what an operator does; infra/local/flink.sh), is alive while the cluster's REST API says
RUNNING, is cancelled on the way out, and counts as its CPU every thread of the cluster's
daemons (JobManager, TaskManagers) and their children: in thread mode the job's Python
runs inside the TaskManagers' JVMs. The cluster is the caller's (`flink.sh start` with
FEDSTREAM_FLINK_TASKMANAGERS and FEDSTREAM_FLINK_SLOTS), and so is its idle load.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from bench.job_profile import ThreadCpu
from fedstream.jobs.launcher import JobProcess

__all__ = [
    "FLINK_SH",
    "ClusterJob",
    "cluster_overview",
    "daemon_pids",
    "job_id_of",
    "restart_cluster",
]

REPO = Path(__file__).resolve().parents[1]
FLINK_SH = REPO / "infra" / "local" / "flink.sh"


def job_id_of(submit_output: str) -> str | None:
    """The JobID `flink run --detached` prints."""
    match = re.search(r"JobID ([0-9a-f]{32})", submit_output)
    return None if match is None else match.group(1)


def rest_url(env: dict[str, str] | None = None) -> str:
    """The cluster's REST API, from FEDSTREAM_FLINK_REST_PORT as flink.sh reads it."""
    port = (env or os.environ).get("FEDSTREAM_FLINK_REST_PORT", "8081")
    return f"http://localhost:{port}"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def cluster_overview(env: dict[str, str] | None = None) -> dict[str, Any]:
    """GET /overview: taskmanagers, slots-total, slots-available, ..."""
    overview: dict[str, Any] = _get(f"{rest_url(env)}/overview")
    return overview


def daemon_pids(env: dict[str, str] | None = None) -> list[int]:
    """The pids of the cluster's live daemons (`flink.sh pids`)."""
    out = subprocess.run(
        [str(FLINK_SH), "pids"], env=env, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return [int(line.split()[1]) for line in out.splitlines() if len(line.split()) == 2]


def _with_children(pids: list[int]) -> list[Path]:
    """/proc folders of `pids` and of their direct children (process-mode Python workers)."""
    wanted = set(pids)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        if int(entry.name) in wanted or parent in wanted:
            found.append(entry)
    return found


def restart_cluster(env: dict[str, str]) -> None:
    """Stop and start the standalone cluster (flink.sh, same settings): fresh TaskManager
    JVMs. In thread mode a TaskManager keeps ONE Python interpreter for its life, so a job
    submitted after another one finds the modules the first imported (from its
    `python.files` copy, deleted when it ended) and cannot import any other: the sharded
    job after the unsharded one failed with "No module named
    'fedstream.pipelines.shard_function'" (README, "Submitting a changed job")."""
    for action in ("stop", "start"):
        subprocess.run(
            [str(FLINK_SH), action], env=env, capture_output=True, timeout=300, check=True
        )


class ClusterJob(JobProcess):
    """The job on the running cluster (module docstring); `env` reaches the cluster
    (FEDSTREAM_FLINK_REST_PORT and FEDSTREAM_FLINK_DIR, as for flink.sh)."""

    def __init__(self, overrides: dict[str, str], log: Path, env: dict[str, str]) -> None:
        super().__init__(overrides, log, create_topics=False)
        self.env = env
        self.job_id: str | None = None
        self._pids: list[int] = []

    def start(self, resume: bool = True, *, from_scratch: bool = False) -> None:
        """Submit the job (fresh topics and checkpoints: it starts from scratch) to a
        restarted cluster (`restart_cluster`)."""
        restart_cluster(self.env)
        sets = [arg for key, value in self.overrides.items() for arg in ("--set", f"{key}={value}")]
        command = [sys.executable, "-m", "fedstream.jobs.cli", "submit", *sets]
        done = subprocess.run(
            command, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=600
        )
        self.log.write_text(f"$ fedstream submit\n{done.stdout}\n{done.stderr}")
        self.job_id = job_id_of(done.stdout)
        if done.returncode != 0 or self.job_id is None:
            raise RuntimeError(f"submit failed:\n{self.log_tail()}")
        self._pids = daemon_pids(self.env)

    @property
    def pid(self) -> int | None:
        return None  # no process of its own: see `cpu`

    def alive(self) -> bool:
        if self.job_id is None:
            return False
        state = _get(f"{rest_url(self.env)}/jobs/{self.job_id}").get("state")
        return state in ("CREATED", "INITIALIZING", "RUNNING")

    def kill(self) -> None:
        """Cancel the job (the cluster stays up)."""
        if self.job_id is not None:
            subprocess.run(
                [str(FLINK_SH), "cli", "cancel", self.job_id],
                env=self.env,
                capture_output=True,
                timeout=120,
            )
            self.job_id = None

    def log_tail(self, lines: int = 40) -> str:
        logs = self.env.get("FEDSTREAM_FLINK_DIR", str(REPO / "infra/local/.run/flink"))
        return f"{super().log_tail(lines)}\n(cluster logs: {logs}/log)"

    def cpu(self) -> ThreadCpu:
        """CPU seconds of every thread of the cluster's daemons and their children."""
        return ThreadCpu.of_processes(_with_children(self._pids))
