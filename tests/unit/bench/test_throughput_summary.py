"""The throughput benchmark's choice of the row it publishes for repeated runs."""

from __future__ import annotations

from bench.throughput import Result, median_run


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
