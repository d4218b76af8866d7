"""One chaos campaign: stack up, job submitted, fleet sending, faults injected on a seeded
schedule, then the oracle's verdict and the time each fault took to the next checkpoint."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.chaos import oracle
from bench.chaos.faults import Fault, schedule
from bench.chaos.fleet import Fleet
from bench.chaos.stack import ChaosStack, Ports
from fedstream.edge import EdgeConfig
from fedstream.edge.producer import RecordProducer
from fedstream.jobs.registration import registration_bytes
from fedstream.schemas.signing import load_signing_key, write_key_pair
from tests.support.devices import DEVICES_TOPIC, enroll_fleet
from tests.support.job_runner import job_signing_key
from tests.support.onnx_models import linear_model
from tests.support.stack import REPO

TOPICS = oracle.Topics("fl.updates", "fl.control", "fl.models", "fl.dlq")
INPUTS, OUTPUTS = 8, 4
PARAMS = INPUTS * OUTPUTS + OUTPUTS


@dataclass
class Settings:
    updates: int = 10_000
    faults: int = 20
    devices: int = 8
    rate: float = 3.0
    """updates per second per device, at most"""
    seed: int = 1
    gap_s: tuple[float, float] = (5.0, 15.0)
    checkpoint_ms: int = 2000
    kinds: tuple[str, ...] = ("taskmanager", "jobmanager", "broker", "device_kill", "device_crash")
    aggregation: dict[str, Any] = field(
        default_factory=lambda: {
            "window": {"count": 10, "seconds": 5.0},
            "staleness": {"function": "polynomial", "a": 0.5, "b": 0.0},
            "reducer": "mean",
            "weight_by_samples": True,
        }
    )
    dedupe_versions: int | None = None
    """runtime.dedupe_versions for the job; None keeps the job's default (64)"""
    recovery_timeout_s: float = 240.0
    drain_timeout_s: float = 300.0


class CheckpointWatch(threading.Thread):
    """Polls the current job's /checkpoints and records every completed checkpoint."""

    def __init__(self, stack: ChaosStack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.job_id: str | None = None
        self.completed: dict[tuple[str, int], float] = {}  # (job, id) -> ack time (s)
        self.restored: list[tuple[str, int]] = []
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(0.25):
            job = self.job_id
            data = self.stack.rest_or_none(f"/jobs/{job}/checkpoints") if job else None
            for entry in (data or {}).get("history", []):
                if entry.get("status") == "COMPLETED" and job is not None:
                    acked = entry["latest_ack_timestamp"] / 1e3
                    self.completed.setdefault((job, entry["id"]), acked)

    def next_after(self, moment: float) -> float | None:
        later = [t for t in self.completed.values() if t > moment]
        return min(later) if later else None

    def stop(self) -> None:
        self._stop.set()


class Campaign:
    def __init__(
        self, work: Path, ports: Ports, settings: Settings, say: Callable[[str], None] = print
    ) -> None:
        self.work = work
        self.settings = settings
        self.say = say
        self.stack = ChaosStack(work, ports)
        self.model_id = f"chaos-{settings.seed}"
        self.checkpoints = work / "checkpoints"
        self.trust = work / "trust"
        """the model owner's key pair (the job's trust.owner_keys) and the devices' keys"""
        self.watch = CheckpointWatch(self.stack)
        self.fleet: Fleet | None = None
        self.events: list[dict[str, Any]] = []
        self.started = 0.0

    # -- the job ----------------------------------------------------------------------
    def job_settings(self) -> dict[str, str]:
        return {
            **self.stack.principal("job"),
            "checkpoint.dir": self.checkpoints.as_uri(),
            "checkpoint.interval_ms": str(self.settings.checkpoint_ms),
            "signing.key_file": str(job_signing_key(self.work)),
            "trust.owner_keys": str(self.owner_key().with_suffix(".pub")),
            # a restart strategy on, generous enough for every fault of the campaign
            "runtime.restart_attempts": "1000",
            "runtime.restart_delay_ms": "1000",
            **(
                {"runtime.dedupe_versions": str(self.settings.dedupe_versions)}
                if self.settings.dedupe_versions
                else {}
            ),
        }

    def submit(self) -> tuple[str, str]:
        """`fedstream submit` (flink run) as the `job` principal, which resumes the newest
        sound checkpoint by default (a fresh start when there is none yet); the new job's
        id and what it restored."""
        sets = [a for k, v in self.job_settings().items() for a in ("--set", f"{k}={v}")]
        done = subprocess.run(
            [sys.executable, "-m", "fedstream.jobs.cli", "submit", *sets],
            cwd=REPO, env=self.stack.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        match = re.search(r"JobID ([0-9a-f]{32})", done.stdout)
        if done.returncode != 0 or not match:
            raise RuntimeError(f"submit failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        self.watch.job_id = match.group(1)
        restored = re.search(r"fedstream: (resuming from \S+|resuming from nothing)", done.stdout)
        shown = restored.group(1).replace(f"{REPO}/", "") if restored else "?"  # repo-relative
        return match.group(1), shown

    def wait_running(self, timeout: float = 180, poll_s: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.stack.rest_or_none(f"/jobs/{self.watch.job_id}")
            if (
                job
                and job.get("state") == "RUNNING"
                and all(v.get("status") == "RUNNING" for v in job.get("vertices", []))
            ):
                return
            time.sleep(poll_s)
        raise RuntimeError(f"job {self.watch.job_id} not running within {timeout:.0f}s")

    def deployed_victim(self, timeout: float = 180) -> tuple[int | None, str] | None:
        """The TaskManager the new job's tasks were deployed to, found while they still
        initialize: no checkpoint can complete before every task runs, so a kill right
        after `wait_running` lands before the first checkpoint. Resolving the pid after
        the job runs (REST plus `flink.sh pids`, seconds on a busy machine) raced the
        first checkpoint, which comes at most one interval after the tasks run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.stack.job_taskmanager(self.watch.job_id)
            if pid is not None:
                return pid, "the job's"
            time.sleep(0.1)
        return None  # not found: `inject` looks it up at the kill, as for any fault

    def owner_key(self) -> Path:
        """The model owner's private key (made once): the job acts only on registrations
        signed by its public half (README "Signed registrations")."""
        private = self.trust / "owner-signing.key"
        if not private.exists():
            write_key_pair(self.trust, "owner-signing")
        return private

    def register(self) -> None:
        """The model's registration, signed by the owner key, produced as the `owner`
        principal, keyed by model id (fl.control is compacted)."""
        value = registration_bytes(
            self.model_id, linear_model(INPUTS, OUTPUTS), ["W", "b"], self.settings.aggregation,
            owner=load_signing_key(self.owner_key()),
        )  # fmt: skip
        config = EdgeConfig(bootstrap=self.stack.bootstrap, security=self.stack.security("owner"))
        with RecordProducer(config) as producer:
            producer.send(TOPICS.control, value, self.model_id.encode())

    def checkpoint_counts(self) -> dict[str, Any]:
        data = self.stack.rest_or_none(f"/jobs/{self.watch.job_id}/checkpoints") or {}
        counts: dict[str, Any] = data.get("counts", {})
        latest = (data.get("latest") or {}).get("completed") or {}
        return {**counts, "latest_completed": latest.get("id")}

    # -- faults -----------------------------------------------------------------------
    def wait_trigger(self, trigger: str, timeout: float = 60) -> str:
        """Wait for the moment `trigger` names; what was observed when it came."""
        if trigger in ("now", "before_first_checkpoint"):
            return f"completed checkpoints: {self.checkpoint_counts().get('completed')}"
        first = self.checkpoint_counts().get("latest_completed")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.checkpoint_counts()
            if trigger == "in_checkpoint" and counts.get("in_progress", 0) > 0:
                return "a checkpoint in flight"
            if trigger == "after_complete" and counts.get("latest_completed") not in (None, first):
                return f"checkpoint {counts['latest_completed']} just completed (commit phase)"
            time.sleep(0.02)
        return f"{trigger} not seen within {timeout:.0f}s; injected anyway"

    def _victim(self, fault: Fault) -> tuple[int | None, str]:
        """The pid a Flink or broker fault kills, found before its trigger (REST and the
        scripts take a while on a busy machine; the kill itself must be instant)."""
        stack = self.stack
        if fault.kind == "taskmanager":
            pid = stack.job_taskmanager(self.watch.job_id)
            if pid is None:  # the job is between attempts: any TaskManager
                return stack.flink_pids()["taskmanager"][0], "an idle"
            return pid, "the job's"
        if fault.kind == "jobmanager":
            return stack.flink_pids()["jobmanager"][0], ""
        if fault.kind == "broker":
            return stack.broker_pid(fault.target), ""
        return None, ""

    def inject(self, fault: Fault, victim: tuple[int | None, str] | None = None) -> dict[str, Any]:
        """Kill what `fault` names once its trigger comes (`victim`: resolved earlier)."""
        stack, fleet = self.stack, self.fleet
        assert fleet is not None
        pid, role = victim or self._victim(fault)
        observed = self.wait_trigger(fault.trigger)
        at = time.time()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        if fault.kind == "taskmanager":
            detail = f"SIGKILL {role} TaskManager {pid}; Flink restarts the job by itself"
            time.sleep(3)
            stack.start_taskmanager()
        elif fault.kind == "jobmanager":
            self.watch.job_id = None  # gone with its JobManager (no HA): nothing to poll
            time.sleep(2)
            stack.start_jobmanager()
            stack.wait_taskmanagers(1)
            job, restored = self.submit()
            detail = f"SIGKILL JobManager {pid}; restarted; job {job} resubmitted: {restored}"
        elif fault.kind == "broker":
            time.sleep(5)
            stack.start_broker(fault.target)
            detail = f"SIGKILL broker node {fault.target} ({pid}), restarted after 5 s"
        elif fault.kind == "device_kill":
            fleet.kill(fault.target)
            detail = f"SIGKILL device-{fault.target}; restarted with its state"
        else:
            crashed = fleet.crash_after_ack(fault.target)
            detail = f"device-{fault.target} died between ack and round persist: {crashed}"
        return {**fault.to_dict(), "at": at, "observed": observed, "detail": detail}

    def wait_recovery(self, at: float) -> float | None:
        deadline = time.monotonic() + self.settings.recovery_timeout_s
        while time.monotonic() < deadline:
            found = self.watch.next_after(at)
            if found is not None:
                return found - at
            time.sleep(0.5)
        return None

    # -- the campaign -----------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        settings = self.settings
        faults = schedule(settings.faults, settings.seed, settings.devices, settings.gap_s,
                          settings.kinds)  # fmt: skip
        self.started = time.monotonic()
        self.say(f"chaos: stack in {self.work} (3 brokers, JobManager + 2 TaskManagers)")
        try:
            self.stack.up()  # inside: a piece that fails to start must not outlive the run
            return self._run(faults)
        finally:
            self.watch.stop()
            if self.fleet is not None:
                self.fleet.stop(timeout=10)
            self.stack.down()

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _run(self, faults: list[Fault]) -> dict[str, Any]:
        settings = self.settings
        self.register()  # before the job: it has state to lose before its first checkpoint
        # the operator (admin) registers every device's key before any device sends: the
        # job refuses updates its registry cannot verify (README "Signed updates")
        device_keys = enroll_fleet(
            self.stack.admin(), DEVICES_TOPIC, self.trust / "devices",
            [f"device-{i}" for i in range(settings.devices)],
        )  # fmt: skip
        self.fleet = Fleet(
            self.work / "fleet", settings.devices, bootstrap=self.stack.bootstrap,
            security=self.stack.security("device"),
            trusted_key=job_signing_key(self.work).with_suffix(".pub"),
            model_id=self.model_id, params=PARAMS, seed=settings.seed, rate=settings.rate,
            device_keys=device_keys,
        )  # fmt: skip
        job, _ = self.submit()
        self.watch.start()
        victim = self.deployed_victim() if faults[0].trigger == "before_first_checkpoint" else None
        self.wait_running(poll_s=0.02 if victim else 0.1)
        self.say(f"chaos: job {job} running at {self._elapsed():.0f} s")
        for fault in faults:
            time.sleep(fault.gap_s)
            event = self.inject(fault, victim if fault.index == 0 else None)
            recovery = self.wait_recovery(event["at"])
            event["to_next_checkpoint_s"] = recovery
            self.events.append(event)
            for index in self.fleet.respawn_crashed():
                self.say(f"chaos: device-{index} exited on its own (see its device.log); restarted")
            shown = "none" if recovery is None else f"{recovery:.1f} s"
            self.say(
                f"chaos: [{fault.index + 1}/{len(faults)}] t={self._elapsed():.0f}s {fault.kind} "
                f"({fault.trigger}: {event['observed']}) -> next checkpoint {shown}; "
                f"acked {len(self.fleet.acked())}"
            )
            if not self.fleet.processes:  # after the fault before the first checkpoint
                self.fleet.start()
        while len(self.fleet.acked()) < settings.updates:
            for index in self.fleet.respawn_crashed():
                self.say(f"chaos: device-{index} exited on its own (see its device.log); restarted")
            time.sleep(2)
        self.fleet.stop()
        sent = self.fleet.acked()
        self.say(f"chaos: {len(sent)} updates acked at {self._elapsed():.0f} s; draining")
        verdict = self.drain(sent)
        return self.result(faults, verdict)

    def drain(self, sent: list[str]) -> dict[str, Any]:
        """The oracle's verdict once every sent update is accounted for (or time is up)."""
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while True:
            verdict = oracle.check(self.stack.admin(), TOPICS, self.model_id, sent)
            if verdict["lost"] == 0 or time.monotonic() > deadline:
                return verdict
            time.sleep(5)

    def result(self, faults: list[Fault], verdict: dict[str, Any]) -> dict[str, Any]:
        recoveries = [e["to_next_checkpoint_s"] for e in self.events]
        measured = sorted(r for r in recoveries if r is not None)
        settings = asdict(self.settings)
        return {
            "settings": settings,
            "schedule": [f.to_dict() for f in faults],
            "faults": self.events,
            "verdict": verdict,
            "recovery_s": {
                "max": measured[-1] if measured else None,
                "median": measured[len(measured) // 2] if measured else None,
                "unrecovered": sum(r is None for r in recoveries),
            },
            "checkpoints_completed": len(self.watch.completed),
            "device_restarts": self.fleet.restarts if self.fleet else 0,
            "device_crashes": self.fleet.crashes if self.fleet else 0,
            "duration_s": round(self._elapsed(), 1),
        }
