"""The throughput benchmark's choice of the row it publishes for repeated runs."""

from __future__ import annotations

import numpy as np

from bench.throughput import DEVICES, Result, median_run, update_value


def run(updates_per_s: float, cpu: float) -> Result:
    return Result("fedstream", 100, 100 / updates_per_s, 4, {"job_cpu_ms_per_update": cpu})


def test_median_run_is_the_middle_one_and_keeps_the_spread() -> None:
    runs = [run(300, 3.0), run(200, 4.0), run(250, 3.5)]
    chosen = median_run(runs)
    assert round(chosen.updates_per_s) == 250
    assert chosen.extra["runs_updates_per_s"] == [300.0, 200.0, 250.0]
    assert chosen.extra["runs_job_cpu_ms_per_update"] == [3.0, 4.0, 3.5]


def test_even_count_takes_the_lower_middle_and_one_run_adds_nothing() -> None:
    assert round(median_run([run(300, 3.0), run(200, 4.0)]).updates_per_s) == 200
    single = median_run([run(300, 3.0)])
    assert "runs_updates_per_s" not in single.extra


def test_bench_updates_carry_a_sequence_per_device_and_burst() -> None:
    """The job dedupes sequenced updates per (model, device): every bench device (one of
    the registered `DEVICES`) counts its own updates up, across bursts, as the SDK's
    persisted round counter does, so no burst repeats a sequence the job absorbed."""
    from fedstream.schemas import decode

    seen: dict[str, list[int]] = {}
    for prefix in ("warmup", "open"):
        for i in range(40):
            value = update_value(f"m{i % 2}", i, 0, np.zeros(3, np.float32), prefix)
            record = decode(value).record
            seen.setdefault(record["device_id"], []).append(record["sequence"])
    assert set(seen) == {f"device-{i}" for i in range(DEVICES)}
    for sequences in seen.values():
        assert sequences == sorted(set(sequences))  # strictly increasing, never repeated
