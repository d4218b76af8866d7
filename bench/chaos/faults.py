"""The seeded fault schedule: which fault, when, aimed at what, triggered on what.

Kinds: `taskmanager` (SIGKILL the TaskManager running the job; Flink restarts it on the
other one), `jobmanager` (SIGKILL the JobManager; restart it and resubmit the job from its
retained checkpoint), `broker` (SIGKILL one of the three brokers, restart it),
`device_kill` (SIGKILL a device at a random moment; it restarts and re-sends its round)
and `device_crash` (a device dies right after the broker acknowledged an update, before
its round counter was persisted: the re-send carries the same id).

Triggers: `now`, `before_first_checkpoint` (the job runs, no checkpoint completed yet),
`in_checkpoint` (a checkpoint is in flight) and `after_complete` (a checkpoint has just
completed: its transactions are being committed).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

KINDS = ("taskmanager", "jobmanager", "broker", "device_kill", "device_crash")
PROCESS_TRIGGERS = ("now", "in_checkpoint", "after_complete")


@dataclass(frozen=True)
class Fault:
    index: int
    kind: str
    trigger: str
    target: int
    """broker node (1..3) or device index; unused for Flink faults"""
    gap_s: float
    """seconds to wait (after the previous fault's recovery) before this one"""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def schedule(
    count: int, seed: int, devices: int, gap_s: tuple[float, float], kinds: tuple[str, ...] = KINDS
) -> list[Fault]:
    """`count` faults: the first kills the TaskManager before the first checkpoint, then
    the kinds in seeded shuffled rounds (every kind as often as the others). The first
    JobManager and broker faults strike as a checkpoint commits (`after_complete`), the
    first later TaskManager fault during a checkpoint (`in_checkpoint`); the rest of the
    Flink and broker faults on a seeded trigger."""
    rng = random.Random(seed)
    order: list[str] = []
    while len(order) < count - 1:
        batch = list(kinds)
        rng.shuffle(batch)
        order += batch
    faults = [Fault(0, "taskmanager", "before_first_checkpoint", 0, 0.0)]
    first = {"jobmanager": "after_complete", "broker": "after_complete"}
    first["taskmanager"] = "in_checkpoint"
    for index, kind in enumerate(order[: count - 1], start=1):
        trigger = "now"
        if kind in first:
            trigger = first.pop(kind, "") or rng.choice(PROCESS_TRIGGERS)
        elif kind in ("taskmanager", "jobmanager", "broker"):
            trigger = rng.choice(PROCESS_TRIGGERS)
        target = rng.randint(1, 3) if kind == "broker" else rng.randrange(devices)
        faults.append(Fault(index, kind, trigger, target, round(rng.uniform(*gap_s), 1)))
    return faults[:count]
