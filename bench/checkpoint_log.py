"""The checkpoints a local job took, read from its Flink log.

A release becomes visible to devices (read_committed) only when the checkpoint after it
completes and its transaction commits, so the update→visible latency is the window's fill
time plus the wait for that checkpoint. The CheckpointCoordinator logs every checkpoint
twice at INFO, which costs the job nothing extra to read afterwards:

    ... - Triggering checkpoint 7 (type=...) @ 1796398044546 for job ec17....
    ... - Completed checkpoint 7 for job ec17... (8174 bytes, checkpointDuration=158 ms, ...)

Pure parsing here (unit-tested); `bench.job_session` points the job's log at its folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

__all__ = ["Checkpoint", "checkpoints", "completed_between", "read"]

_TRIGGERED = re.compile(r"Triggering checkpoint (\d+) \(.*\) @ (\d+) for job (\w+)")
_COMPLETED = re.compile(
    r"^(\S+ \S+) .*Completed checkpoint (\d+) for job (\w+) \((\d+) bytes, "
    r"checkpointDuration=(\d+) ms"
)


@dataclass(frozen=True)
class Checkpoint:
    """One completed checkpoint of one job."""

    job: str
    id: int
    triggered_at: float | None
    """epoch seconds (the coordinator's own timestamp); None if its line was not seen"""
    completed_at: float
    """epoch seconds of the log line (millisecond resolution, the JVM's local time)"""
    duration_ms: float
    """trigger → every task acknowledged (what the coordinator reports)"""
    bytes: int


def _log_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def checkpoints(lines: Iterable[str]) -> list[Checkpoint]:
    """Every completed checkpoint in the lines of a Flink log, in log order."""
    triggered: dict[tuple[str, int], float] = {}
    done: list[Checkpoint] = []
    for line in lines:
        trigger = _TRIGGERED.search(line)
        if trigger is not None:
            triggered[(trigger.group(3), int(trigger.group(1)))] = int(trigger.group(2)) / 1000
            continue
        complete = _COMPLETED.search(line)
        if complete is not None:
            at, number, job, size, duration = complete.groups()
            key = (job, int(number))
            done.append(
                Checkpoint(
                    job, key[1], triggered.get(key), _log_time(at), float(duration), int(size)
                )
            )
    return done


def read(log_dir: Path) -> list[Checkpoint]:
    """The completed checkpoints in every Flink log file of `log_dir` (none: no logs)."""
    found: list[Checkpoint] = []
    for path in sorted(log_dir.glob("flink-*.log*")):
        with path.open(errors="replace") as lines:
            found += checkpoints(lines)
    return sorted(found, key=lambda c: c.completed_at)


def completed_between(log_dir: Path | None, start: float, end: float) -> list[Checkpoint]:
    """The checkpoints completed in [start, end] (epoch seconds); none without a log."""
    if log_dir is None:
        return []
    return [c for c in read(log_dir) if start <= c.completed_at <= end]
