"""The opt-in operator profile: off by default, and a readable pstats file when on."""

from __future__ import annotations

import pstats
import time
from pathlib import Path

import pytest

from fedstream.pipelines import profiling
from fedstream.pipelines.profiling import ENV_VAR, OperatorProfile


def busy_work() -> int:
    return sum(i * i for i in range(20_000))


def test_off_without_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    profile = OperatorProfile("route")
    with profile:
        busy_work()
    profile.dump()
    assert not profile.enabled
    assert list(tmp_path.iterdir()) == []


def test_profiles_only_inside_the_block_and_dumps_periodically(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    monkeypatch.setattr(profiling, "DUMP_EVERY_S", 0.0)  # dump after every call
    profile = OperatorProfile("aggregate")
    assert profile.enabled
    busy_work()  # outside: not counted
    with profile:
        busy_work()
    files = list(tmp_path.glob("aggregate-*.pstats"))
    assert len(files) == 1, "one file per operator instance, no leftover .tmp"
    assert not list(tmp_path.glob("*.tmp"))
    stats = pstats.Stats(str(files[0]))
    calls = {func[2]: row[0] for func, row in stats.stats.items()}  # type: ignore[attr-defined]
    assert calls["busy_work"] == 1


def test_time_mode_counts_calls_and_cpu_inside_the_block_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    monkeypatch.setenv(profiling.MODE_VAR, "time")
    monkeypatch.setattr(profiling, "DUMP_EVERY_S", 0.0)
    first, second = OperatorProfile("device_gate"), OperatorProfile("device_gate")
    assert first.enabled
    for _ in range(30):
        busy_work()  # outside: not counted
    with first:
        pass
    with first:
        busy_work()
    with second:
        busy_work()
    assert not list(tmp_path.glob("*.pstats")) and not list(tmp_path.glob("*.tmp"))
    seconds, calls = profiling.read_times(tmp_path)["device_gate"]  # both instances
    assert calls == 3
    started = time.thread_time()
    for _ in range(2):
        busy_work()
    assert 0 < seconds < 10 * (time.thread_time() - started)  # not the 30 calls outside
