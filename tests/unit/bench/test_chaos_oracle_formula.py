"""The chaos oracle's own arithmetic and schedule, checked by hand (bench/chaos).

The oracle recomputes the job's parameters without fedstream.pipelines, so its formula
gets a test of its own, against numbers worked out on paper.
"""

from __future__ import annotations

import numpy as np

from bench.chaos.faults import KINDS, schedule
from bench.chaos.oracle import Update, bookkeeping, expected_step

AGGREGATION = {"staleness": {"function": "polynomial", "a": 0.5}, "weight_by_samples": True}


def test_the_step_is_the_staleness_and_sample_weighted_mean() -> None:
    # version 4 closes a window opened at version 3: staleness 3 - base
    fresh = Update(base_version=3, num_samples=2, delta=np.array([1.0, 0.0], np.float32))
    stale = Update(base_version=0, num_samples=4, delta=np.array([0.0, 1.0], np.float32))
    step, total = expected_step([fresh, stale], 4, AGGREGATION)
    # weights: (1 + 0)^-0.5 * 2 = 2 and (1 + 3)^-0.5 * 4 = 2
    assert total == 4.0
    np.testing.assert_allclose(step, [0.5, 0.5])


def test_without_sample_weights_only_staleness_counts() -> None:
    fresh = Update(base_version=8, num_samples=100, delta=np.array([3.0], np.float32))
    stale = Update(base_version=0, num_samples=1, delta=np.array([0.0], np.float32))
    step, total = expected_step([fresh, stale], 9, {"staleness": {"a": 1.0}})
    # weights 1 and (1 + 8)^-1 = 1/9: mean = 3 * 1 / (10/9) = 2.7
    np.testing.assert_allclose(step, [2.7])
    np.testing.assert_allclose(total, 10 / 9)


def test_count_normalisation_divides_by_what_the_window_would_weigh_unstaled() -> None:
    # FedBuff's Algorithm 1: the weighted sum over K (or the samples), so staleness still
    # discounts the step; the total weight in the lineage stays sum w_i
    fresh = Update(base_version=3, num_samples=2, delta=np.array([1.0, 0.0], np.float32))
    stale = Update(base_version=0, num_samples=4, delta=np.array([0.0, 1.0], np.float32))
    step, total = expected_step([fresh, stale], 4, {**AGGREGATION, "normalization": "COUNT"})
    # weights 2 and 2 over 2 + 4 samples
    assert total == 4.0
    np.testing.assert_allclose(step, [1 / 3, 1 / 3])
    fresh = Update(base_version=8, num_samples=100, delta=np.array([3.0], np.float32))
    stale = Update(base_version=0, num_samples=1, delta=np.array([0.0], np.float32))
    step, _ = expected_step([fresh, stale], 9, {"staleness": {"a": 1.0}, "normalization": "COUNT"})
    np.testing.assert_allclose(step, [1.5])  # 3 * 1 / K = 2


def test_the_schedule_is_seeded_and_covers_every_kind() -> None:
    first = schedule(20, seed=5, devices=6, gap_s=(5, 15))
    assert first == schedule(20, seed=5, devices=6, gap_s=(5, 15))
    assert first != schedule(20, seed=6, devices=6, gap_s=(5, 15))
    assert (first[0].kind, first[0].trigger) == ("taskmanager", "before_first_checkpoint")
    assert {f.kind for f in first} == set(KINDS)
    firsts = {k: next(f.trigger for f in first[1:] if f.kind == k) for k in KINDS}
    assert firsts["jobmanager"] == firsts["broker"] == "after_complete"
    assert firsts["taskmanager"] == "in_checkpoint"
    assert firsts["device_kill"] == firsts["device_crash"] == "now"
    assert all(1 <= f.target <= 3 for f in first if f.kind == "broker")


def test_bookkeeping_is_sequence_too_old_or_stale_not_by_max_staleness() -> None:
    # the job's own dead-letter details (pipelines/validation.py, model_process.py)
    by_registration = {"reason": "STALE", "detail": "staleness 9 exceeds max_staleness 8"}
    by_horizon = {"reason": "STALE", "detail": "staleness 70 exceeds the dedupe horizon of 64"}
    too_old = {"reason": "SEQUENCE_TOO_OLD", "detail": "sequence 3 of device 'd' is below"}
    duplicate = {"reason": "DUPLICATE", "detail": "sequence 3 of device 'd' was already absorbed"}
    assert not bookkeeping(by_registration) and not bookkeeping(duplicate)
    assert bookkeeping(by_horizon) and bookkeeping(too_old)
