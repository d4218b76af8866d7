"""Reading a job's checkpoints from its Flink log (the lines Flink 2.2 writes, verbatim)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from bench.checkpoint_log import checkpoints, completed_between, read

COORDINATOR = "INFO  org.apache.flink.runtime.checkpoint.CheckpointCoordinator    [] - "
JOB = "ec178fcd3e6bacd4d45a5a79f21c61a0"
OTHER_JOB = "1c1b25f72d6543694706f97c00b22a9d"


def triggered(at: str, number: int, epoch_ms: int, job: str = JOB) -> str:
    kind = "CheckpointType{name='Checkpoint', sharingFilesStrategy=FORWARD_BACKWARD}"
    return (
        f"{at} {COORDINATOR}Triggering checkpoint {number} (type={kind}) @ {epoch_ms} "
        f"for job {job}."
    )


def completed(at: str, number: int, size: int, duration: int, job: str = JOB) -> str:
    return (
        f"{at} {COORDINATOR}Completed checkpoint {number} for job {job} ({size} bytes, "
        f"checkpointDuration={duration} ms, finalizationTime=14 ms)."
    )


def epoch(at: str) -> float:
    return datetime.strptime(at, "%Y-%m-%d %H:%M:%S,%f").timestamp()


LOG = [
    "2026-12-04 15:27:24,100 INFO  org.apache.flink.runtime.taskexecutor.TaskExecutor [] - x",
    triggered("2026-12-04 15:27:24,381", 1, 1796398044367),
    completed("2026-12-04 15:27:24,539", 1, 8174, 158),
    triggered("2026-12-04 15:27:24,553", 2, 1796398044546),
    triggered("2026-12-04 15:27:24,600", 1, 1796398044600, OTHER_JOB),
    completed("2026-12-04 15:27:27,001", 2, 9000, 2455),
    completed("2026-12-04 15:27:27,500", 5, 10, 3, OTHER_JOB),  # its trigger line rolled away
]


def test_every_completed_checkpoint_with_its_trigger_duration_and_size() -> None:
    found = checkpoints(LOG)
    assert [(c.job, c.id, c.duration_ms, c.bytes) for c in found] == [
        (JOB, 1, 158.0, 8174),
        (JOB, 2, 2455.0, 9000),
        (OTHER_JOB, 5, 3.0, 10),
    ]
    assert found[0].triggered_at == pytest.approx(1796398044.367)
    assert found[1].completed_at == pytest.approx(epoch("2026-12-04 15:27:27,001"))
    assert found[2].triggered_at is None  # a checkpoint of another job is not given this one's


def test_checkpoints_between_two_times_from_every_log_file(tmp_path: Path) -> None:
    (tmp_path / "flink-root-python-vm.log.1").write_text("\n".join(LOG[:3]) + "\n")
    (tmp_path / "flink-root-python-vm.log").write_text("\n".join(LOG[3:]) + "\n")
    (tmp_path / "notes.txt").write_text(LOG[2])  # not a Flink log
    assert [c.id for c in read(tmp_path)] == [1, 2, 5]
    start, end = epoch("2026-12-04 15:27:25,000"), epoch("2026-12-04 15:27:27,200")
    assert [c.id for c in completed_between(tmp_path, start, end)] == [2]
    assert completed_between(None, start, end) == []  # a job on a cluster: no log here
    assert read(tmp_path / "missing") == []
