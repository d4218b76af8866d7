"""The pure parts of the learning-efficiency benchmark (bench.learning): no Kafka, no job.

What is checked is what a wrong number in the published table would come from: the time
to target, the bytes counted, the step curves averaged in the figure, the spread over
seeds and the run order.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.kafka_stack import BenchKafka, signing_keys
from bench.learning import (
    DEDUPE_VERSIONS,
    VARIANTS,
    Stat,
    aggregate,
    bytes_until,
    job_overrides,
    markdown,
    rotated,
    run_metrics,
    step_hold,
)
from fedstream.edge.security import KafkaSecurity
from fedstream.edge.simulator.fleet import EvalPoint, FleetSettings, RunResult, SentRecord
from fedstream.jobs.config import load
from fedstream.schemas.signing import load_signing_key


def test_rotation_puts_every_variant_first_once_per_cycle() -> None:
    firsts = [rotated(VARIANTS, seed)[0].key for seed in range(len(VARIANTS))]
    assert sorted(firsts) == sorted(v.key for v in VARIANTS)
    assert rotated(VARIANTS, 0) == list(VARIANTS)
    assert rotated(VARIANTS, len(VARIANTS)) == list(VARIANTS)
    for seed in range(6):
        assert sorted(v.key for v in rotated(VARIANTS, seed)) == sorted(v.key for v in VARIANTS)
    assert rotated([], 3) == []


def test_the_four_variants_of_the_issue() -> None:
    by_key = {v.key: v for v in VARIANTS}
    assert by_key["sync"].mode == "sync"
    assert by_key["fedbuff"].mode == "async" and by_key["fedbuff"].compression == "none"
    assert by_key["fedasync"].mode == "fedasync"
    assert by_key["fedbuff-int8"].mode == "async"
    assert by_key["fedbuff-int8"].compression == "int8"


def test_time_to_target_is_the_first_crossing() -> None:
    """The bench takes time to target from `RunResult.time_to` (what the simulator reports)."""
    points = [(0.1, 0.1), (2.0, 0.5), (3.0, 0.8), (4.0, 0.6), (5.0, 0.9)]
    result = RunResult("async", "m", FleetSettings(devices=2), window=2)
    result.timeline = [EvalPoint(t, v, acc, 0, 0.0, 0, ()) for v, (t, acc) in enumerate(points)]
    assert result.time_to(0.8) == 3.0
    assert result.time_to(0.5) == 2.0  # reaching it exactly counts
    assert result.time_to(0.95) is None
    assert RunResult("async", "m", FleetSettings(devices=2), window=2).time_to(0.1) is None


def test_bytes_until_counts_what_was_sent_by_then() -> None:
    sent = [(0.5, 100), (1.0, 200), (2.5, 400)]
    assert bytes_until(sent, 1.0) == 300
    assert bytes_until(sent, 10.0) == 700
    assert bytes_until(sent, 0.1) == 0
    assert bytes_until(sent, None) is None


def test_step_hold_holds_the_last_value_and_is_nan_before_the_first() -> None:
    out = step_hold([1.0, 2.0, 2.0, 4.0], [0.1, 0.2, 0.3, 0.5], [0.0, 1.0, 1.5, 2.0, 3.9, 9.0])
    assert math.isnan(out[0])
    # equal times: the later value is what was seen at that time
    assert out[1:].tolist() == [0.1, 0.1, 0.3, 0.3, 0.5]
    assert np.isnan(step_hold([], [], [0.0, 1.0])).all()
    with pytest.raises(ValueError, match="non-decreasing"):
        step_hold([2.0, 1.0], [0.1, 0.2], [0.0])
    with pytest.raises(ValueError, match="length"):
        step_hold([1.0], [0.1, 0.2], [0.0])


def test_stat_is_mean_and_sample_std() -> None:
    stat = Stat.of([1.0, 2.0, 3.0])
    assert stat is not None and stat == Stat(3, 2.0, 1.0, 1.0, 3.0)
    assert stat.format(1) == "2.0 ± 1.0"
    assert Stat.of([5.0]) == Stat(1, 5.0, 0.0, 5.0, 5.0)
    assert Stat.of([5.0]).format(0) == "5"  # type: ignore[union-attr]
    assert Stat.of([]) is None
    assert Stat.of([2e6, 4e6]).format(1, scale=1e6) == "3.0 ± 1.4"  # type: ignore[union-attr]


def _row(variant: str, seed: int, time: float | None, final: float) -> dict[str, object]:
    return {
        "variant": variant,
        "seed": seed,
        "time_to_target_s": time,
        "final_accuracy": final,
        "best_accuracy": final,
        "updates_sent": 10,
        "updates_absorbed": 10,
        "bytes_sent": 1000,
        "bytes_per_update": 100.0,
        "bytes_to_target": None if time is None else 500,
        "releases": 5,
        "mean_staleness": 1.0,
        "dead_letters": 0,
    }


def test_aggregate_leaves_unreached_runs_out_of_the_time() -> None:
    rows = [
        _row("sync", 0, 10.0, 0.7),
        _row("sync", 1, 12.0, 0.8),
        _row("fedasync", 0, 3.0, 0.5),
        _row("fedasync", 1, None, 0.4),
    ]
    summary = aggregate(rows)
    assert summary["sync"]["reached"] == 2 and summary["sync"]["runs"] == 2
    assert summary["sync"]["time_to_target_s"]["mean"] == pytest.approx(11.0)
    assert summary["fedasync"]["reached"] == 1
    assert summary["fedasync"]["time_to_target_s"]["n"] == 1
    assert summary["fedasync"]["final_accuracy"]["n"] == 2
    assert summary["fedasync"]["final_accuracy"]["min"] == pytest.approx(0.4)
    table = markdown(summary, {"sync": "sync FedAvg"}, Stat.of([0.7, 0.8]))
    assert "| sync FedAvg | 11.0 ± 1.4 | 2/2 | 0.750 ± 0.071 |" in table
    assert "| fedasync | 3.0 | 1/2 |" in table  # no label given: the key
    assert "0.750 ± 0.071" in table.splitlines()[0]  # the target, over seeds


def test_markdown_shows_a_metric_no_run_had_as_a_dash() -> None:
    rows = [_row("fedasync", 0, None, 0.4)]
    table = markdown(aggregate(rows), {}, None)
    assert "| fedasync | - | 0/1 |" in table


def _result() -> RunResult:
    settings = FleetSettings(devices=2, compression="int8")
    result = RunResult("async", "m", settings, window=2, duration_s=10.0)
    result.sent = {
        "u1": SentRecord("d0", 0, 1.0, 100),
        "u2": SentRecord("d1", 0, 2.0, 100),
        "u3": SentRecord("d0", 1, 4.0, 300),
    }
    result.timeline = [
        EvalPoint(0.1, 0, 0.1, 0, 0.0, 0, ()),
        EvalPoint(3.0, 1, 0.6, 2, 0.0, 0, ("u1", "u2")),
        EvalPoint(5.0, 2, 0.5, 1, 0.0, 0, ("u3",)),
    ]
    return result


def test_run_metrics_from_a_run_result() -> None:
    metrics = run_metrics(_result(), target=0.55, dead_letters={"STALE": 2, "DUPLICATE": 1})
    assert metrics["time_to_target_s"] == 3.0
    assert metrics["final_accuracy"] == 0.5 and metrics["best_accuracy"] == 0.6
    assert metrics["updates_sent"] == 3 and metrics["updates_absorbed"] == 3
    assert metrics["bytes_sent"] == 500
    assert metrics["bytes_per_update"] == pytest.approx(500 / 3)
    assert metrics["bytes_to_target"] == 200  # u3 went out after the target was reached
    assert metrics["releases"] == 2
    assert metrics["mean_staleness"] == pytest.approx(0.0)
    assert metrics["dead_letters"] == 3
    assert metrics["compression"] == "int8"
    missed = run_metrics(_result(), target=0.9)
    assert missed["time_to_target_s"] is None and missed["bytes_to_target"] is None
    assert missed["dead_letters"] == 0


def test_job_keeps_updates_far_staler_than_the_default_horizon(tmp_path: Path) -> None:
    password = tmp_path / "admin.password"
    password.write_text("pw\n")
    kafka = BenchKafka(
        env={},
        bootstrap="127.0.0.1:1",
        security=KafkaSecurity(username="admin", password_file=password),
        folder=tmp_path,
    )
    keys, owner = signing_keys(tmp_path)
    overrides = job_overrides(kafka, tmp_path, "x", keys)
    assert overrides["kafka.password_file"] == str(password)  # a path, never the password
    assert int(overrides["runtime.dedupe_versions"]) == DEDUPE_VERSIONS > 64
    assert overrides["checkpoint.interval_ms"] == "1000"
    topics = [v for k, v in overrides.items() if k.startswith("topics.")]
    assert len(set(topics)) == 4 and all(t.startswith("learn-x-") for t in topics)
    config = load(overrides=overrides)  # every key is one the job knows, and valid
    assert config.runtime.dedupe_versions == DEDUPE_VERSIONS
    assert config.runtime.python_execution_mode == "thread"
    # registrations signed by the run's owner
    assert config.trust.check() == [load_signing_key(owner).key_id]
