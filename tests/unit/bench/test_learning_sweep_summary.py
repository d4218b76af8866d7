"""The pure parts of bench.learning_sweep: per-seed speed-ups, outage metrics, tables."""

from __future__ import annotations

from typing import Any

import pytest

from bench.fleet_sim import Outage
from bench.learning_sweep import (
    SWEEP_VARIANTS,
    VARIANTS,
    outage_metrics,
    speedup,
    summarise,
    sweep_table,
    variants_table,
)


def row(variant: str, seed: int, t: float | None, devices: int = 20) -> dict[str, Any]:
    return {
        "variant": variant,
        "seed": seed,
        "devices": devices,
        "time_to_target_s": t,
        "final_accuracy": 0.9,
        "best_accuracy": 0.95,
        "updates_sent": 10,
        "bytes_per_update": 100.0,
        "mean_staleness": 1.0,
        "mean_window": 10.0,
        "versions": 3,
        "rejected": 0,
        "cpu_s": 0.1,
    }


def test_speedup_is_the_mean_of_per_seed_ratios_over_seeds_that_both_reached() -> None:
    rows = [
        row("sync", 0, 100.0),
        row("fedbuff", 0, 10.0),
        row("sync", 1, 60.0),
        row("fedbuff", 1, 20.0),
        row("sync", 2, 50.0),
        row("fedbuff", 2, None),  # not reached: left out, not counted as infinitely fast
    ]
    stat = speedup(rows, "fedbuff", "sync")
    assert stat is not None and stat.n == 2 and stat.mean == pytest.approx(6.5)
    assert summarise([r for r in rows if r["variant"] == "fedbuff"], ["cpu_s"])["reached"] == 2


def test_outage_metrics_read_the_curve_around_the_drain() -> None:
    times = [0.0, 1.0, 2.0, 3.0, 4.0, 9.0]
    accs = [0.1, 0.8, 0.8, 0.5, 0.7, 0.9]
    m = outage_metrics([times, accs], Outage(start_s=1.5, duration_s=1.0))  # back at 2.5
    assert m["accuracy_before_backlog"] == 0.8
    assert m["lowest_after_backlog"] == 0.5  # within 5 s after 2.5; 9.0 is outside
    assert m["accuracy_drop"] == pytest.approx(0.3)


def test_tables_have_a_row_per_variant_and_size() -> None:
    rows = [row(v.key, s, 10.0 + s) for v in VARIANTS for s in range(2)]
    assert variants_table(rows).count("\n") == 1 + len(VARIANTS)
    sweep = [row(v.key, 0, 5.0, devices=d) for d in (10, 500) for v in SWEEP_VARIANTS]
    assert sweep_table(sweep).count("\n") == 1 + 2 * len(SWEEP_VARIANTS)
