"""The campaign's devices: one `bench.chaos.device` process each, with persistent state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.chaos.device import CRASH_MARK, STOP_MARK
from fedstream.edge.security import KafkaSecurity
from fedstream.schemas.signing import ENV_TRUSTED_KEYS
from tests.support.stack import REPO


class Fleet:
    """`count` device processes in `work`/device-N, as the `device` principal."""

    def __init__(
        self,
        work: Path,
        count: int,
        *,
        bootstrap: str,
        security: KafkaSecurity,
        trusted_key: Path,
        model_id: str,
        params: int,
        seed: int,
        rate: float,
        device_keys: Path,
    ) -> None:
        self.work = work
        self.device_keys = device_keys
        """device_keys/<device_id>/device.key: each device's registered Ed25519 key"""
        self.count = count
        self._args = [
            "--model-id", model_id, "--params", str(params), "--seed", str(seed),
            "--rate", str(rate), "--bootstrap", bootstrap,
        ]  # fmt: skip
        self._env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "FEDSTREAM_KAFKA_SECURITY_PROTOCOL": security.protocol,
            "FEDSTREAM_KAFKA_SASL_MECHANISM": security.mechanism,
            "FEDSTREAM_KAFKA_USERNAME": security.username or "",
            "FEDSTREAM_KAFKA_PASSWORD_FILE": str(security.password_file or ""),
            "FEDSTREAM_KAFKA_CA_FILE": str(security.ca_file or ""),
            ENV_TRUSTED_KEYS: str(trusted_key),
        }
        self._env.pop("FEDSTREAM_KAFKA_PASSWORD", None)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.restarts = 0
        self.crashes = 0
        """devices that exited on their own (see their device.log), restarted"""

    def state(self, index: int) -> Path:
        return self.work / f"device-{index}"

    def spawn(self, index: int) -> None:
        state = self.state(index)
        state.mkdir(parents=True, exist_ok=True)
        log = (state / "device.log").open("ab")
        self.processes[index] = subprocess.Popen(
            [sys.executable, "-m", "bench.chaos.device", "--device-id", f"device-{index}",
             "--state", str(state), "--device-key",
             str(self.device_keys / f"device-{index}" / "device.key"), *self._args],
            cwd=REPO, env=self._env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def start(self) -> None:
        for index in range(self.count):
            self.spawn(index)

    def kill(self, index: int) -> None:
        """SIGKILL the device wherever it is (mid-send most of the time), then restart it."""
        self.processes[index].send_signal(signal.SIGKILL)
        self.processes[index].wait(timeout=30)
        self.restarts += 1
        self.spawn(index)

    def crash_after_ack(self, index: int, timeout: float = 60) -> bool:
        """Make the device die between an ack and its persisted round, then restart it.
        False if it did not reach an ack in time (killed anyway)."""
        (self.state(index) / CRASH_MARK).touch()
        try:
            self.processes[index].wait(timeout=timeout)
            crashed = True
        except subprocess.TimeoutExpired:
            crashed = False
            (self.state(index) / CRASH_MARK).unlink(missing_ok=True)
            self.processes[index].kill()
            self.processes[index].wait(timeout=30)
        self.restarts += 1
        self.spawn(index)
        return crashed

    def acked(self) -> list[str]:
        """Every acknowledged update id, in the devices' logs (what the oracle calls sent)."""
        ids: list[str] = []
        for index in range(self.count):
            path = self.state(index) / "acked.jsonl"
            if path.exists():
                for line in path.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        ids.append(json.loads(line)["update_id"])
        return ids

    def respawn_crashed(self) -> list[int]:
        """Restart the devices that exited on their own (an SDK error: counted, reported)."""
        crashed = [i for i, p in self.processes.items() if p.poll() not in (None, 0)]
        for index in crashed:
            self.crashes += 1
            self.spawn(index)
        return crashed

    def stop(self, timeout: float = 60) -> None:
        for index in self.processes:
            (self.state(index) / STOP_MARK).touch()
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
