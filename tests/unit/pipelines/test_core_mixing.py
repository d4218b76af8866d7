"""Issue 15 core: FedAsync's mixing with the base model (bounded history), FedBuff's
K normalisation, and the adaptive window, each against a plain reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstream.pipelines.aggregator import Aggregator
from fedstream.pipelines.config import AggregationConfig, Normalization
from fedstream.pipelines.mixing import (
    MAX_HISTORY_BYTES,
    add_delta,
    check_history_bound,
    history_bytes,
    mix_with_base,
    prune_history,
    window_divisor,
)
from fedstream.pipelines.model_state import ModelState
from fedstream.pipelines.update import ClientUpdate
from fedstream.pipelines.windows import (
    MAX_ADAPTIVE_COUNT,
    next_adaptive_count,
    observed_concurrency,
)

F32 = np.ndarray[Any, np.dtype[np.float32]]
SETTINGS = settings(max_examples=40, deadline=None)


def vec(rng: np.random.Generator, p: int) -> F32:
    return rng.standard_normal(p).astype(np.float32)


def fedasync(max_staleness: int | None = 8, **kw: Any) -> AggregationConfig:
    return AggregationConfig.from_dict(
        {
            "mode": "fedasync",
            "fedasync_rule": "mix_with_base",
            "max_staleness": max_staleness,
            "staleness": {"function": "constant"},
            "window": {"count": 1},
            **kw,
        }
    )


# ------------------------------------------------------------------ pure rules
@SETTINGS
@given(p=st.integers(1, 40), alpha=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_mix_with_base_is_the_papers_formula(p: int, alpha: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, base, delta = vec(rng, p), vec(rng, p), vec(rng, p)
    reference = (1 - alpha) * x.astype(np.float64) + alpha * (base + delta.astype(np.float64))
    out = mix_with_base(x, base, delta, alpha)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)


@SETTINGS
@given(p=st.integers(1, 40), alpha=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_both_rules_agree_when_the_base_is_current(p: int, alpha: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, delta = vec(rng, p), vec(rng, p)
    np.testing.assert_allclose(
        mix_with_base(x, x, delta, alpha), add_delta(x, delta, alpha), rtol=1e-5, atol=1e-5
    )


def test_mix_refuses_alpha_outside_unit_interval() -> None:
    x = np.zeros(3, dtype=np.float32)
    with pytest.raises(ValueError, match="alpha"):
        mix_with_base(x, x, x, 1.5)


@given(
    versions=st.sets(st.integers(0, 50), max_size=20),
    version=st.integers(0, 60),
    keep=st.integers(0, 30),
)
def test_prune_history_keeps_exactly_the_last_keep_versions(
    versions: set[int], version: int, keep: int
) -> None:
    history = {v: np.zeros(1, dtype=np.float32) for v in versions}
    kept = prune_history(history, version, keep)
    assert set(kept) == {v for v in versions if version - keep <= v < version}
    assert len(kept) <= keep


def test_window_divisor() -> None:
    assert window_divisor(Normalization.WEIGHT_SUM, 2.5, 10) == 2.5
    assert window_divisor(Normalization.COUNT, 2.5, 10) == 10.0


@SETTINGS
@given(
    samples=st.lists(st.integers(1, 100), min_size=1, max_size=6),
    s=st.integers(0, 9),
    seed=st.integers(0, 2**32 - 1),
)
def test_count_with_sample_weights_divides_by_the_undiscounted_sample_sum(
    samples: list[int], s: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    deltas = [vec(rng, 3) for _ in samples]
    config = AggregationConfig.from_dict(
        {"window": {"count": len(samples)}, "weight_by_samples": True}
    )
    x0 = vec(rng, 3)
    agg = Aggregator(config, ModelState(x0.copy(), s))
    for i, (n, d) in enumerate(zip(samples, deltas, strict=True)):
        agg.add(ClientUpdate(f"u{i}", 0, n, d), now=0.0)
    w = [(1 + s) ** -0.5 * n for n in samples]
    expected = sum(wi * d.astype(np.float64) for wi, d in zip(w, deltas, strict=True))
    step = agg.close().state.params.astype(np.float64) - x0
    np.testing.assert_allclose(step, expected / sum(samples), rtol=1e-4, atol=1e-5)


def test_count_scales_a_robust_reducer_by_the_mean_discount() -> None:
    deltas = [np.full(2, v, dtype=np.float32) for v in (1.0, 2.0, 30.0)]
    steps = {}
    for norm in ("weight_sum", "count"):
        config = AggregationConfig.from_dict(
            {"window": {"count": 3}, "reducer": "median", "normalization": norm}
        )
        agg = Aggregator(config, ModelState(np.zeros(2, dtype=np.float32), 3))
        for i, d in enumerate(deltas):
            agg.add(ClientUpdate(f"u{i}", 0, 1, d), now=0.0)
        steps[norm] = agg.close().state.params
    np.testing.assert_allclose(steps["weight_sum"], 2.0)  # all equally stale: the median
    np.testing.assert_allclose(steps["count"], 2.0 * 4**-0.5, rtol=1e-6)


# ------------------------------------------------------------------ config refusals
def test_mix_with_base_refuses_unbounded_history() -> None:
    with pytest.raises(ValueError, match="needs max_staleness"):
        fedasync(max_staleness=None)
    with pytest.raises(ValueError, match="max_staleness must be <= 1024"):
        fedasync(max_staleness=1025)


def test_count_normalisation_is_the_default_and_adaptive_windows_refuse_other_modes() -> None:
    assert AggregationConfig().normalization is Normalization.COUNT
    with pytest.raises(ValueError, match=r"window\.adaptive requires mode 'fedbuff'"):
        fedasync(window={"count": 1, "seconds": 1.0, "adaptive": True})
    with pytest.raises(ValueError, match=r"needs window\.count"):
        AggregationConfig.from_dict({"window": {"count": None, "seconds": 1.0, "adaptive": True}})
    with pytest.raises(ValueError, match="keeps an overshooting K live"):
        AggregationConfig.from_dict({"window": {"count": 10, "adaptive": True}})


# ------------------------------------------------------------------ FedAsync in the aggregator
@SETTINGS
@given(
    p=st.integers(1, 12),
    bases=st.lists(st.integers(0, 4), min_size=1, max_size=12),
    alpha=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_fedasync_mixes_each_update_with_its_own_base(
    p: int, bases: list[int], alpha: float, seed: int
) -> None:
    """Reference: a dict of every version's params, the paper's rule applied in order."""
    rng = np.random.default_rng(seed)
    keep = 4
    x0 = vec(rng, p)
    agg = Aggregator(fedasync(keep, fedasync_mixing=alpha), ModelState(x0.copy(), 0))
    versions = {0: x0.astype(np.float64)}
    for i, lag in enumerate(bases):
        current = max(versions)
        base = max(0, current - lag)
        delta = vec(rng, p)
        agg.add(ClientUpdate(f"u{i}", base, 1, delta), now=float(i))
        versions[current + 1] = (1 - alpha) * versions[current] + alpha * (versions[base] + delta)
        state = agg.state
        assert state.version == current + 1
        np.testing.assert_allclose(state.params, versions[current + 1], rtol=1e-4, atol=1e-4)
        assert len(state.history) <= keep  # the stated bound
        window = range(state.version - keep, state.version)
        assert set(state.history) == {v for v in versions if v in window}


def test_fedasync_history_survives_serialisation() -> None:
    rng = np.random.default_rng(0)
    agg = Aggregator(fedasync(3), ModelState(vec(rng, 5), 0))
    for i in range(5):
        agg.add(ClientUpdate(f"u{i}", i, 1, vec(rng, 5)), now=float(i))
    restored = ModelState.from_bytes(agg.state.to_bytes())
    assert restored == agg.state and sorted(restored.history) == [2, 3, 4]
    # An update based on version 2 (staleness 3) mixes with the restored version-2 params.
    again = Aggregator(fedasync(3, fedasync_mixing=0.5), restored)
    delta = vec(rng, 5)
    again.add(ClientUpdate("late", 2, 1, delta), now=9.0)
    expected = 0.5 * restored.params + 0.5 * (restored.history[2] + delta)
    np.testing.assert_allclose(again.state.params, expected, rtol=1e-5, atol=1e-6)


def test_staler_than_max_staleness_is_refused_not_mixed() -> None:
    rng = np.random.default_rng(1)
    agg = Aggregator(fedasync(2), ModelState(vec(rng, 3), 0))
    for i in range(4):
        agg.add(ClientUpdate(f"u{i}", i, 1, vec(rng, 3)), now=float(i))
    before = agg.state
    assert agg.try_add(ClientUpdate("old", 1, 1, vec(rng, 3)), now=5.0) is not None
    assert agg.state is before


def test_fedasync_does_not_diverge_where_add_delta_does() -> None:
    """20 updates in flight from one base, a = 0.6, a quadratic with optimum at 1: each
    device's delta moves its base halfway there. The paper's rule converges; the
    re-based rule steps 20 x 0.6 half-deltas and overshoots."""
    finals = {}
    for rule in ("mix_with_base", "add_delta"):
        config = fedasync(64, fedasync_rule=rule, fedasync_mixing=0.6)
        agg = Aggregator(config, ModelState(np.zeros(1, dtype=np.float32), 0))
        seen = {0: agg.state.params}  # what each device trained from
        for i in range(200):
            base = max(0, agg.state.version - 19)  # ~20 in flight
            delta = (0.5 * (1.0 - seen[base])).astype(np.float32)
            agg.add(ClientUpdate(f"u{i}", base, 1, delta), now=float(i))
            seen[agg.state.version] = agg.state.params
        finals[rule] = float(abs(agg.state.params[0] - 1.0))
    assert finals["mix_with_base"] < 0.05
    assert finals["add_delta"] > 1.0 or not np.isfinite(finals["add_delta"])


# ------------------------------------------------------------------ FedBuff normalisation
@SETTINGS
@given(
    k=st.integers(1, 8),
    s=st.integers(0, 20),
    p=st.integers(1, 10),
    seed=st.integers(0, 2**32 - 1),
)
def test_count_normalisation_keeps_the_discount_on_an_equally_stale_backlog(
    k: int, s: int, p: int, seed: int
) -> None:
    """Post-outage backlog: K updates, all s stale. WEIGHT_SUM takes the plain mean (the
    discount cancels); COUNT takes (1 + s)^-0.5 times it (FedBuff Algorithm 1)."""
    rng = np.random.default_rng(seed)
    x0 = vec(rng, p)
    deltas = [vec(rng, p) for _ in range(k)]
    mean = np.mean(np.stack(deltas).astype(np.float64), axis=0)
    steps = {}
    for norm in ("weight_sum", "count"):
        config = AggregationConfig.from_dict({"window": {"count": k}, "normalization": norm})
        agg = Aggregator(config, ModelState(x0.copy(), s))
        for i, d in enumerate(deltas):
            agg.add(ClientUpdate(f"u{i}", 0, 1, d), now=0.0)
        steps[norm] = agg.close().state.params.astype(np.float64) - x0
    np.testing.assert_allclose(steps["weight_sum"], mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(steps["count"], mean * (1 + s) ** -0.5, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ adaptive window
def test_observed_concurrency_is_k_times_mean_staleness() -> None:
    assert observed_concurrency(10, 2.5) == 25.0


@given(
    previous=st.none() | st.floats(1, 5000),
    count=st.integers(1, 5000),
    staleness=st.floats(0, 100),
)
def test_next_adaptive_count_is_bounded_and_smoothed(
    previous: float | None, count: int, staleness: float
) -> None:
    estimate, k = next_adaptive_count(previous, count, staleness)
    assert 1 <= k <= MAX_ADAPTIVE_COUNT and 1.0 <= estimate <= MAX_ADAPTIVE_COUNT
    observed = min(max(count * staleness, 1.0), MAX_ADAPTIVE_COUNT)
    if previous is None:
        assert estimate == pytest.approx(observed)
    else:
        low, high = sorted((min(previous, MAX_ADAPTIVE_COUNT), observed))
        assert low - 1e-9 <= estimate <= high + 1e-9


@pytest.mark.parametrize("in_flight", [3, 40, 300])
def test_adaptive_window_converges_to_the_concurrency(in_flight: int) -> None:
    """A fleet with `in_flight` updates always outstanding (a device's update arrives
    after `in_flight` others): K settles near it and staleness near 1."""
    config = AggregationConfig.from_dict(
        {"window": {"count": 10, "seconds": 1e9, "adaptive": True}}
    )
    agg = Aggregator(config, ModelState(np.zeros(2, dtype=np.float32), 0))
    started: list[int] = [0] * in_flight  # base version of each outstanding update
    stale: list[int] = []
    for i in range(in_flight * 40):
        base = started[i % in_flight]
        stale.append(agg.state.version - base)
        agg.add(ClientUpdate(f"u{i}", base, 1, np.zeros(2, dtype=np.float32)), now=0.0)
        started[i % in_flight] = agg.state.version  # the device restarts on the newest
        if agg.should_close(0.0):
            agg.close()
    k = agg.window_policy().count
    assert k is not None and abs(k - in_flight) <= max(2, 0.2 * in_flight)
    tail = stale[len(stale) // 2 :]
    assert 0.6 <= float(np.mean(tail)) <= 1.4
    assert ModelState.from_bytes(agg.state.to_bytes()).concurrency == agg.state.concurrency


def test_history_over_the_byte_limit_is_refused() -> None:
    config = fedasync(1024)
    assert history_bytes(config, 1000) == 1024 * 1000 * 4
    check_history_bound(config, 1000)
    too_many = MAX_HISTORY_BYTES // (1024 * 4) + 1
    with pytest.raises(ValueError, match="lower max_staleness"):
        Aggregator(config, ModelState(np.zeros(too_many, dtype=np.float32), 0))
    assert history_bytes(AggregationConfig(), 10**9) == 0  # FedBuff keeps no history


def test_model_state_format_1_is_still_read() -> None:
    from fedstream.pipelines.binary_format import Writer, seal

    w = Writer()
    w.i64(3)
    w.array(np.arange(4, dtype=np.float32))
    w.texts([])
    old = ModelState.from_bytes(seal(b"FSMS", 1, w))
    assert old.version == 3 and not old.history and old.concurrency is None


def test_model_state_refuses_history_that_is_not_in_the_past() -> None:
    x = np.zeros(2, dtype=np.float32)
    with pytest.raises(ValueError, match="past versions"):
        ModelState(x, 2, history={2: x})
    with pytest.raises(ValueError, match="concurrency"):
        ModelState(x, 2, concurrency=float("nan"))
