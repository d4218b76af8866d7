"""The throughput benchmark's arithmetic and its devices' updates (no broker, no job)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.bench_fleet import DEVICES, BenchFleet
from bench.plain_aggregator import checked
from bench.throughput import arguments, run_size
from bench.throughput_stats import jit_settled, percentile, spread
from fedstream.schemas import decode
from fedstream.schemas.update_signing import verify_update


def test_spread_is_median_low_high_and_keeps_every_run() -> None:
    s = spread([300.0, 200.0, 250.0, 260.0])
    assert (s.median, s.low, s.high) == (255.0, 200.0, 300.0)
    assert s.values == (300.0, 200.0, 250.0, 260.0)
    assert s.text(0) == "255 (200-300)"
    assert spread([3.0]).text() == "3.0"
    with pytest.raises(ValueError):
        spread([])


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=200), st.floats(0, 100))
def test_percentile_agrees_with_numpy(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-6)


def test_jit_settles_below_three_percent_of_the_jobs_cpu() -> None:
    assert jit_settled(0.2, 10.0)
    assert not jit_settled(0.5, 10.0)
    assert not jit_settled(0.0, 0.0)  # a burst that used no CPU proves nothing


def test_a_run_is_a_whole_number_of_windows_and_never_below_the_minimum() -> None:
    assert run_size(305.0, 10.0, 10, 100) == 3050
    assert run_size(1.0, 10.0, 10, 100) == 100
    assert run_size(3.7, 10.0, 10, 5) == 30


def test_bench_updates_carry_a_sequence_per_device_across_bursts() -> None:
    """The job dedupes sequenced updates per (model, device): every bench device counts
    its own updates up, across bursts, as the SDK's persisted round counter does."""
    from fedstream.schemas import decode

    fleet, seen = BenchFleet(), dict[str, list[int]]()
    for burst in range(2):
        for i in range(40):
            value = fleet.update("m", f"{burst}-{i}", i, 0, np.zeros(3, np.float32))
            record = decode(value).record
            seen.setdefault(record["device_id"], []).append(record["sequence"])
    assert set(seen) == {f"device-{i}" for i in range(DEVICES)}
    for sequences in seen.values():
        assert sequences == sorted(set(sequences))  # strictly increasing, never repeated


def test_the_verifying_loop_refuses_an_update_that_does_not_verify() -> None:
    fleet = BenchFleet()
    value = fleet.update("m", "u-1", 0, 0, np.ones(8, dtype=np.float32))
    record = decode(value, expected="GradientUpdate").record
    entry = fleet.entry("device-0")
    assert checked(record, entry) is record and checked(record, None) is record
    forged = {**record, "num_samples": record["num_samples"] + 1}
    with pytest.raises(RuntimeError, match="does not verify"):
        checked(forged, entry)
    with pytest.raises(RuntimeError, match="registry entry is for 'device-1'"):
        checked(record, fleet.entry("device-1"))


def test_an_unsigned_fleet_sends_what_only_a_legacy_job_accepts() -> None:
    """`--unsigned`: the updates carry no key id or signature; the job's check passes them
    only with trust.allow_unsigned_updates, which `bench.throughput` then sets."""
    fleet = BenchFleet(signed=False)
    record = decode(fleet.update("m", "u0", 3, 0, np.ones(4, np.float32))).record
    assert record["signature"] is None and record["key_id"] is None
    entry = fleet.entry("device-3")
    assert verify_update(record, entry, allow_unsigned=True) is None
    assert verify_update(record, entry) == "update of device 'device-3' is not signed"
    args = arguments(["--unsigned"])
    assert not args.verifying and "trust.allow_unsigned_updates=true" in args.job_set


def test_checkpoints_go_under_an_existing_folder_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert arguments(["--checkpoint-dir", str(tmp_path)]).checkpoint_dir == tmp_path
    assert arguments([]).checkpoint_dir is None  # default: the job's folder
    with pytest.raises(SystemExit):
        arguments(["--checkpoint-dir", str(tmp_path / "missing")])
    assert "not a folder" in capsys.readouterr().err


def test_a_sharded_job_needs_the_windows_time_bound(capsys: pytest.CaptureFixture[str]) -> None:
    """A sharded window may close with more than K updates: without `--window-seconds` a
    burst would wait for updates its count cannot place (it hung); bad pairs fail early."""
    with pytest.raises(SystemExit):
        arguments(["--job-set", "runtime.model_shards=2"])
    assert "needs --window-seconds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        arguments(["--job-set", "runtime.model_shards"])
    assert "takes KEY=VALUE" in capsys.readouterr().err
    sharded = ["--job-set", "runtime.model_shards=2", "--window-seconds", "1"]
    assert arguments(sharded).window_seconds == 1.0
    assert arguments(["--job-set", "runtime.model_shards=1"]).window_seconds is None
