"""A local job's JVM scratch folder: private, and what a killed job left is swept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedstream.jobs.jvm_scratch import folder_of, sweep, use_private_tmpdir


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sweep_removes_the_folders_of_dead_jobs_only(tmp_path: Path) -> None:
    dead, alive = folder_of(_dead_pid(), tmp_path), folder_of(os.getpid(), tmp_path)
    other = dead.parent / "notes"
    for folder in (dead, alive, other):
        folder.mkdir(parents=True)
    (dead / "flink-table-planner_x.jar").write_bytes(b"jar")
    assert sweep(tmp_path) == [dead]
    assert not dead.exists() and alive.is_dir() and other.is_dir()


def test_sweep_of_a_machine_without_jobs_is_empty(tmp_path: Path) -> None:
    assert sweep(tmp_path) == []


def test_the_jvm_is_pointed_at_a_private_folder_of_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JVM_ARGS", "-Xss2m")
    stale = folder_of(_dead_pid(), tmp_path)
    stale.mkdir(parents=True)
    mine = use_private_tmpdir(tmp_path)
    assert mine == folder_of(os.getpid(), tmp_path) and mine.is_dir()
    assert (mine.stat().st_mode & 0o777) == 0o700 and (mine.parent.stat().st_mode & 0o077) == 0
    assert os.environ["JVM_ARGS"] == f"-Xss2m -Djava.io.tmpdir={mine}"
    assert not stale.exists()


def test_a_root_that_is_not_our_own_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder_of(0, tmp_path).parent.symlink_to(elsewhere)  # planted in a shared /tmp
    monkeypatch.setenv("JVM_ARGS", "")
    with pytest.raises(RuntimeError, match="not a directory owned by this user"):
        use_private_tmpdir(tmp_path)
    assert os.environ["JVM_ARGS"] == ""
