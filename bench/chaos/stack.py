"""The campaign's stack: three KRaft brokers, Terraform's principals, a Flink standalone
cluster of one JobManager and two TaskManagers; and where to find (and restart) its pieces.

Everything runs through the operator scripts (infra/local/kafka.sh, flink.sh,
infra/terraform/provision.sh) with the campaign's own folders and ports, so a campaign
never touches another stack. SIGKILL is used throughout, the harshest crash there is; the
campaign sends it itself, to a pid found here before the fault's trigger, so that the kill
lands the moment the trigger fires.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedstream.edge.security import KafkaSecurity
from tests.support.stack import FLINK_SH, KAFKA_SH, REPO, Broker, FlinkCluster, admin_security

PROVISION_SH = REPO / "infra" / "terraform" / "provision.sh"
NODES = 3


@dataclass(frozen=True)
class Ports:
    """Node N of Kafka listens on kafka + 2(N-1) (controller kafka + 1 + 2(N-1))."""

    kafka: int
    flink_rest: int
    flink_rpc: int


class ChaosStack:
    """The stack in `work` (kafka/, flink/), started by `up`, stopped by `down`."""

    def __init__(self, work: Path, ports: Ports, *, taskmanagers: int = 2) -> None:
        self.work = work
        self.ports = ports
        self.kafka_dir = work / "kafka"
        self.credentials = self.kafka_dir / "credentials"
        self.env = {
            **os.environ,
            "FEDSTREAM_KAFKA_DIR": str(self.kafka_dir),
            "FEDSTREAM_KAFKA_PORT": str(ports.kafka),
            "FEDSTREAM_KAFKA_CONTROLLER_PORT": str(ports.kafka + 1),
            "FEDSTREAM_KAFKA_NODES": str(NODES),
            "FEDSTREAM_KAFKA_HEAP": "512m",
            # three brokers and a Flink cluster starting at once on a busy 2-core machine
            "FEDSTREAM_KAFKA_START_TIMEOUT": "300",
            "FEDSTREAM_FLINK_START_TIMEOUT": "300",
            "FEDSTREAM_TF_STATE_DIR": str(work / "terraform"),
            "FEDSTREAM_FLINK_DIR": str(work / "flink"),
            "FEDSTREAM_FLINK_REST_PORT": str(ports.flink_rest),
            "FEDSTREAM_FLINK_RPC_PORT": str(ports.flink_rpc),
            "FEDSTREAM_FLINK_TASKMANAGERS": str(taskmanagers),
            "FEDSTREAM_FLINK_SLOTS": "1",
            "FEDSTREAM_FLINK_HEARTBEAT_TIMEOUT_MS": "10000",
        }
        self.bootstrap = ",".join(f"127.0.0.1:{ports.kafka + 2 * i}" for i in range(NODES))
        self.rest_url = f"http://localhost:{ports.flink_rest}"

    # -- lifecycle --------------------------------------------------------------------
    def _script(self, *args: str | Path, timeout: float = 300) -> str:
        done = subprocess.run(
            [*map(str, args)], env=self.env, cwd=REPO, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def up(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self._script(KAFKA_SH, "start", timeout=420)
        self._script(PROVISION_SH, "apply", timeout=900)
        self._script(FLINK_SH, "start", timeout=420)

    def down(self) -> None:
        for script in (FLINK_SH, KAFKA_SH):
            subprocess.run(
                [str(script), "stop"], env=self.env, cwd=REPO, capture_output=True, timeout=180
            )

    # -- who is who -------------------------------------------------------------------
    def security(self, role: str) -> KafkaSecurity:
        """A provisioned principal (job, device, owner, auditor) or admin."""
        if role == "admin":
            return admin_security(self.credentials)
        return KafkaSecurity(
            username=role,
            password_file=self.credentials / f"{role}.password",
            ca_file=self.credentials / "ca.pem",
        )

    def principal(self, role: str) -> dict[str, str]:
        """Job config overrides that log in as `role` (paths only, never a password)."""
        return {
            "kafka.bootstrap": self.bootstrap,
            "kafka.username": role,
            "kafka.password_file": str(self.credentials / f"{role}.password"),
            "kafka.ca_file": str(self.credentials / "ca.pem"),
        }

    def admin(self) -> Broker:
        """The admin's view (tests.support): what the oracle reads with."""
        return Broker(
            self.bootstrap, self.env, self.kafka_dir, self.credentials,
            admin_security(self.credentials),
        )  # fmt: skip

    def flink(self) -> FlinkCluster:
        return FlinkCluster(self.rest_url, self.env, self.work / "flink" / "log")

    # -- Kafka faults -----------------------------------------------------------------
    def broker_pid(self, node: int) -> int | None:
        try:
            pid = int((self.kafka_dir / f"node-{node}" / "kafka.pid").read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def start_broker(self, node: int) -> None:
        self._script(KAFKA_SH, "start-node", str(node), timeout=420)

    # -- Flink faults -----------------------------------------------------------------
    def flink_pids(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {"jobmanager": [], "taskmanager": []}
        for line in self._script(FLINK_SH, "pids").splitlines():
            role, _, pid = line.partition(" ")
            out[role].append(int(pid))
        return out

    def start_jobmanager(self) -> None:
        self._script(FLINK_SH, "start-jobmanager")

    def start_taskmanager(self) -> None:
        self._script(FLINK_SH, "start-taskmanager")

    def job_taskmanager(self, job_id: str | None) -> int | None:
        """The pid of the TaskManager running `job_id`'s tasks (REST gives its data port)."""
        job = self.rest_or_none(f"/jobs/{job_id}") if job_id else None
        pids = self.flink_pids()["taskmanager"]
        for vertex in (job or {}).get("vertices", [])[:1]:
            hosts = self.rest_or_none(f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")
            managers = (hosts or {}).get("taskmanagers", [])
            for manager in sorted(managers, key=lambda m: m.get("status") != "RUNNING"):
                port = str(manager.get("endpoint", "")).rpartition(":")[2]
                pid = listening_pid(int(port), pids) if port.isdigit() else None
                if pid is not None:
                    return pid
        return None

    def rest(self, path: str, timeout: float = 3.0) -> dict[str, Any]:
        with urllib.request.urlopen(self.rest_url + path, timeout=timeout) as answer:
            data: dict[str, Any] = json.loads(answer.read())
            return data

    def rest_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return self.rest(path)
        except OSError:
            return None

    def wait_taskmanagers(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            overview = self.rest_or_none("/overview")
            if overview and overview.get("taskmanagers", 0) >= count:
                return
            time.sleep(0.5)
        raise RuntimeError(f"fewer than {count} TaskManagers registered within {timeout:.0f}s")


def listening_pid(port: int, candidates: list[int]) -> int | None:
    """Which of `candidates` has a TCP socket listening on `port` (/proc, no psutil)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(inode)
    for pid in candidates:
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        if any(f"socket:[{inode}]" in links for inode in inodes):
            return pid
    return None
