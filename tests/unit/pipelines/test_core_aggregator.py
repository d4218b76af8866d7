"""The Aggregator end to end: FedBuff == FedAvg at K = N, staleness and sample weights,
windows, FedAsync mixing, DP, robustness, persistence, and copy-on-write of the state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstream.pipelines.accumulator import Accumulator, BufferedAccumulator
from fedstream.pipelines.aggregator import Aggregator
from fedstream.pipelines.config import (
    AggregationConfig,
    Mode,
    OptimizerName,
    Reducer,
    ServerOptimizerConfig,
    StalenessConfig,
    StalenessFunction,
    WindowConfig,
)
from fedstream.pipelines.model_state import ModelState
from fedstream.pipelines.optimizers import optimizer_from_config
from fedstream.pipelines.update import ClientUpdate
from fedstream.pipelines.validation import RejectReason, UpdateRejectedError

F32 = np.ndarray[Any, np.dtype[np.float32]]
SETTINGS = settings(max_examples=40, deadline=None)


def vecs(rng: np.random.Generator, k: int, p: int, scale: float = 1.0) -> list[F32]:
    return [(rng.standard_normal(p) * scale).astype(np.float32) for _ in range(k)]


def cfg(**kw: Any) -> AggregationConfig:
    """These tests pin the weighted mean (normalization WEIGHT_SUM); the default, COUNT,
    is tested against it in test_core_mixing.py."""
    return AggregationConfig.from_dict({"normalization": "weight_sum", **kw})


def make(config: AggregationConfig, params: F32, version: int = 0) -> Aggregator:
    return Aggregator(config, ModelState(params.copy(), version))


@SETTINGS
@given(n=st.integers(1, 8), p=st.integers(1, 30), seed=st.integers(0, 2**32 - 1))
def test_fedbuff_with_k_devices_and_no_staleness_is_synchronous_fedavg(
    n: int, p: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal(p).astype(np.float32)
    deltas = vecs(rng, n, p)
    samples = [int(s) for s in rng.integers(1, 500, n)]
    agg = make(cfg(window={"count": n}, weight_by_samples=True), x0)
    for i, (d, m) in enumerate(zip(deltas, samples, strict=True)):
        agg.add(ClientUpdate(f"d{i}", 0, m, d), now=float(i))
    assert agg.should_close(now=float(n))
    closed = agg.close()
    # FedAvg (McMahan et al. 2017): x + sum_k n_k (w_k - x) / sum_k n_k
    fedavg = x0.astype(np.float64) + np.average(np.stack(deltas), axis=0, weights=samples)
    np.testing.assert_allclose(closed.state.params, fedavg, rtol=1e-5, atol=1e-5)
    assert closed.state.version == 1
    assert closed.lineage.count == n and closed.lineage.total_samples == sum(samples)
    assert (closed.lineage.staleness_min, closed.lineage.staleness_max) == (0, 0)


def test_staleness_and_sample_weights_combine() -> None:
    x0 = np.zeros(2, np.float32)
    d_fresh, d_stale = np.array([1, 0], np.float32), np.array([0, 1], np.float32)
    for by_samples in (False, True):
        agg = make(cfg(window={"count": 2}, weight_by_samples=by_samples), x0, version=3)
        agg.add(ClientUpdate("fresh", 3, 10, d_fresh), 0.0)  # s = 0: weight 1 (x 10)
        agg.add(ClientUpdate("stale", 0, 30, d_stale), 0.0)  # s = 3: weight 1/2 (x 30)
        w = [10.0, 15.0] if by_samples else [1.0, 0.5]
        expected = np.array([w[0], w[1]]) / sum(w)
        np.testing.assert_allclose(agg.close().state.params, expected, rtol=1e-6)


def test_weight_is_exposed_for_the_job() -> None:
    agg = make(cfg(staleness={"function": "hinge", "a": 1.0, "b": 1.0}), np.zeros(2, np.float32), 5)
    assert agg.weight(ClientUpdate("u", 5, 1, np.zeros(2, np.float32))) == 1.0
    assert agg.weight(ClientUpdate("u", 2, 1, np.zeros(2, np.float32))) == 1 / 3
    assert agg.staleness_of(ClientUpdate("u", 2, 1, np.zeros(2, np.float32))) == 3


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(2, 7))
def test_release_does_not_depend_on_arrival_order(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    deltas = vecs(rng, k, 16)
    bases = [int(b) for b in rng.integers(0, 4, k)]
    order = rng.permutation(k)
    finals = []
    for perm in (range(k), order):
        agg = make(
            cfg(window={"count": k}, server_optimizer={"name": "adam"}), np.ones(16, np.float32), 3
        )
        for i in perm:
            agg.add(ClientUpdate(f"u{i}", bases[i], 1 + i, deltas[i]), 0.0)
        finals.append(agg.close().state)
    np.testing.assert_allclose(finals[0].params, finals[1].params, rtol=1e-5, atol=1e-6)
    for key in ("m", "v"):
        np.testing.assert_allclose(
            finals[0].optimizer_state[key], finals[1].optimizer_state[key], rtol=1e-5, atol=1e-7
        )


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "yogi"])
def test_close_applies_the_server_optimizer_to_the_weighted_mean(name: str) -> None:
    rng = np.random.default_rng(0)
    config = cfg(window={"count": 3}, server_optimizer={"name": name, "learning_rate": 0.3})
    agg = make(config, np.ones(8, np.float32), 2)
    opt = optimizer_from_config(config.server_optimizer)
    x, state = np.ones(8, np.float32), opt.init_state(8)
    for _ in range(3):  # three windows, so optimizer state carries over
        deltas = vecs(rng, 3, 8)
        v = agg.state.version
        for i, d in enumerate(deltas):
            agg.add(ClientUpdate(f"{v}.{i}", v - i, 1, d), 0.0)
        w = [(1 + i) ** -0.5 for i in range(3)]
        mean = np.average(np.stack(deltas), axis=0, weights=w).astype(np.float32)
        x, state = opt.step(x, mean, state)
        np.testing.assert_allclose(agg.close().state.params, x, rtol=1e-5, atol=1e-6)


def test_rejections_leave_the_window_untouched() -> None:
    agg = make(cfg(window={"count": 2}, max_staleness=2), np.zeros(3, np.float32), 5)
    good = ClientUpdate("good", 5, 1, np.ones(3, np.float32))
    bad = {
        RejectReason.STALE: ClientUpdate("a", 2, 1, np.ones(3, np.float32)),
        RejectReason.FUTURE_VERSION: ClientUpdate("b", 6, 1, np.ones(3, np.float32)),
        RejectReason.BAD_SHAPE: ClientUpdate("c", 5, 1, np.ones(4, np.float32)),
        RejectReason.BAD_DTYPE: ClientUpdate("d", 5, 1, np.ones(3, np.float16)),
        RejectReason.NON_FINITE: ClientUpdate("e", 5, 1, np.array([1, np.nan, 1], np.float32)),
        RejectReason.BAD_NUM_SAMPLES: ClientUpdate("f", 5, 0, np.ones(3, np.float32)),
    }
    assert agg.try_add(good, 0.0) is None
    for reason, update in bad.items():
        assert agg.validate(update) == agg.try_add(update, 0.0)
        rejection = agg.try_add(update, 0.0)
        assert rejection is not None and rejection.reason is reason
        with pytest.raises(UpdateRejectedError) as info:
            agg.add(update, 0.0)
        assert info.value.rejection.reason is reason
    assert agg.buffer.count == 1 and not agg.should_close(1e9)
    agg.add(ClientUpdate("good2", 5, 1, np.ones(3, np.float32)), 0.0)
    closed = agg.close()
    np.testing.assert_array_equal(closed.state.params, [1, 1, 1])  # NaN never got in
    assert closed.lineage.update_ids == ("good", "good2")


def test_windows_and_deadlines_through_the_aggregator() -> None:
    x0 = np.zeros(2, np.float32)
    one = np.ones(2, np.float32)
    agg = make(cfg(window={"count": 3, "seconds": 10.0}), x0)
    assert agg.deadline() is None and not agg.should_close(1e9)
    with pytest.raises(ValueError, match="empty window"):
        agg.close()
    agg.add(ClientUpdate("a", 0, 1, one), now=100.0)
    assert agg.deadline() == 110.0
    agg.add(ClientUpdate("b", 0, 1, one), now=105.0)
    assert agg.deadline() == 110.0  # measured from the first update
    assert not agg.should_close(109.99) and agg.should_close(110.0)
    agg.close()
    assert agg.deadline() is None  # the next window has not started
    for i, t in enumerate([200.0, 201.0, 202.0]):
        agg.add(ClientUpdate(f"c{i}", 1, 1, one), now=t)
    assert agg.should_close(202.0)  # count first
    count_only = make(cfg(window={"count": 3}), x0)
    count_only.add(ClientUpdate("a", 0, 1, one), now=0.0)
    assert count_only.deadline() is None


def test_fedasync_mixes_each_update_immediately() -> None:
    a = 0.5
    config = cfg(mode="fedasync", fedasync_mixing=a, window={"count": 2})
    x0 = np.array([1.0, 2.0], np.float32)
    agg = make(config, x0, version=4)
    d1, d2 = np.array([2.0, 0.0], np.float32), np.array([0.0, 4.0], np.float32)
    agg.add(ClientUpdate("u1", 4, 7, d1), 0.0)  # s = 0: a_t = 0.5
    np.testing.assert_allclose(agg.state.params, x0 + 0.5 * d1)
    assert agg.state.version == 5  # one server update per absorbed update
    assert not agg.should_close(0.0)
    agg.add(ClientUpdate("u2", 2, 3, d2), 0.0)  # s = 5 - 2 = 3: a_t = 0.5 / sqrt(4)
    expected = x0 + 0.5 * d1 + 0.25 * d2
    np.testing.assert_allclose(agg.state.params, expected)
    # x <- (1 - a_t) x + a_t x_new with x_new = x + delta is the same rule
    x1 = x0 + 0.5 * d1
    np.testing.assert_allclose(agg.state.params, 0.75 * x1 + 0.25 * (x1 + d2), rtol=1e-6)
    assert agg.should_close(0.0)
    closed = agg.close()
    assert closed.state.version == 6
    np.testing.assert_allclose(closed.state.params, expected)
    assert closed.lineage.update_ids == ("u1", "u2")
    assert (closed.lineage.staleness_min, closed.lineage.staleness_max) == (0, 3)
    assert closed.lineage.total_samples == 10
    assert agg.buffer.count == 0 and type(agg.buffer) is Accumulator


def test_clipping_bounds_each_contribution() -> None:
    agg = make(cfg(window={"count": 2}, clip_norm=1.0), np.zeros(2, np.float32))
    agg.add(ClientUpdate("huge", 0, 1, np.array([3e6, 4e6], np.float32)), 0.0)
    agg.add(ClientUpdate("small", 0, 1, np.array([0.0, 0.5], np.float32)), 0.0)
    # clip([3e6, 4e6]) = [0.6, 0.8]; small is untouched
    np.testing.assert_allclose(agg.close().state.params, [0.3, 0.65], rtol=1e-6)


def test_median_resists_a_huge_minority_update() -> None:
    rng = np.random.default_rng(3)
    honest = vecs(rng, 4, 10, scale=0.01)
    agg = make(cfg(window={"count": 5}, reducer="median"), np.zeros(10, np.float32))
    assert isinstance(agg.buffer, BufferedAccumulator)
    for i, d in enumerate(honest):
        agg.add(ClientUpdate(f"h{i}", 0, 1, d), 0.0)
    agg.add(ClientUpdate("evil", 0, 1, np.full(10, 1e30, np.float32)), 0.0)
    params = agg.close().state.params
    assert np.all(np.abs(params) <= np.abs(np.stack(honest)).max(axis=0) + 1e-7)


def _dp_agg(z: float, seed: int | None = 7) -> Aggregator:
    config = cfg(window={"count": 4}, clip_norm=2.0, dp_noise_multiplier=z, seed=seed)
    return make(config, np.zeros(100_000, np.float32))


def _fill_zero(agg: Aggregator) -> None:
    v = agg.state.version
    for i in range(4):
        agg.add(ClientUpdate(f"{v}.{i}", v, 1, np.zeros(agg.state.num_params, np.float32)), 0.0)


def test_dp_noise_scale_is_z_c_over_total_weight() -> None:
    agg = _dp_agg(z=1.5)
    _fill_zero(agg)
    params = agg.close().state.params
    # noise N(0, (zC)^2) on the sum of 4 unit-weight updates -> std zC/4 on the mean
    assert float(np.std(params)) == pytest.approx(1.5 * 2.0 / 4, rel=0.02)
    assert abs(float(np.mean(params))) < 0.01


def test_dp_noise_is_seeded_per_version_and_zero_for_z_zero() -> None:
    a, b = _dp_agg(z=1.0), _dp_agg(z=1.0)
    for agg in (a, b):
        _fill_zero(agg)
        agg.close()
    np.testing.assert_array_equal(a.state.params, b.state.params)  # same seed, same noise
    first = a.state.params.copy()
    _fill_zero(a)
    second = a.close().state.params - first
    assert not np.allclose(second, first)  # the next version draws fresh noise
    explicit = _dp_agg(z=1.0, seed=None)
    _fill_zero(explicit)
    got = explicit.close(rng=np.random.default_rng(0)).state.params
    again = _dp_agg(z=1.0, seed=None)
    _fill_zero(again)
    np.testing.assert_array_equal(got, again.close(rng=np.random.default_rng(0)).state.params)
    silent = _dp_agg(z=0.0)
    _fill_zero(silent)
    np.testing.assert_array_equal(silent.close().state.params, np.zeros(100_000, np.float32))


@pytest.mark.parametrize(
    ("mode", "reducer"),
    [("fedbuff", "mean"), ("fedbuff", "median"), ("fedbuff", "trimmed_mean"), ("fedasync", "mean")],
)
def test_persisting_mid_window_changes_nothing(mode: str, reducer: str) -> None:
    rng = np.random.default_rng(5)
    config = cfg(mode=mode, reducer=reducer, window={"count": 3}, server_optimizer={"name": "yogi"})
    deltas = vecs(rng, 9, 32)
    straight = make(config, np.zeros(32, np.float32))
    restored = make(config, np.zeros(32, np.float32))
    for i, d in enumerate(deltas):
        for agg in (straight, restored):
            agg.add(ClientUpdate(f"u{i}", max(0, agg.state.version - 1), 1 + i, d), float(i))
        restored = Aggregator(
            config,
            ModelState.from_bytes(restored.state.to_bytes()),
            Accumulator.from_bytes(restored.buffer.to_bytes()),
        )
        if straight.should_close(float(i)):
            assert restored.should_close(float(i))
            assert straight.close().lineage == restored.close().lineage
        assert straight.state == restored.state


def test_buffer_and_state_must_fit_the_config() -> None:
    x0 = ModelState(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="buffer is a RunningSumAccumulator"):
        Aggregator(cfg(reducer="median"), x0, make(cfg(), np.zeros(3, np.float32)).buffer)
    with pytest.raises(ValueError, match="buffer"):
        Aggregator(cfg(), x0, Accumulator(3))
    with pytest.raises(ValueError, match="buffer"):
        Aggregator(
            cfg(),
            ModelState(np.zeros(4, np.float32)),
            Accumulator.from_bytes(make(cfg(), np.zeros(3, np.float32)).buffer.to_bytes()),
        )
    with_m = ModelState(np.zeros(3, np.float32), 0, {"m": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="was the optimizer changed"):
        Aggregator(cfg(server_optimizer={"name": "adam"}), with_m)


# -- copy-on-write of the model state ---------------------------------------------------


def _round(agg: Aggregator, k: int = 2) -> None:
    v = agg.state.version
    for i in range(k):
        agg.add(ClientUpdate(f"{v}.{i}", v, 1, np.full(agg.state.num_params, 0.5, np.float32)), 0)
    if agg.should_close(0.0):
        agg.close()


CONFIGS = [
    cfg(window={"count": 2}),
    cfg(window={"count": 2}, server_optimizer={"name": "momentum"}),
    cfg(window={"count": 2}, server_optimizer={"name": "adam"}),
    cfg(window={"count": 2}, server_optimizer={"name": "yogi"}),
    cfg(window={"count": 2}, reducer="median"),
    cfg(window={"count": 2}, mode="fedasync"),
]


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: f"{c.mode}-{c.server_optimizer.name}-{c.reducer}"
)
def test_private_state_is_updated_in_place(config: AggregationConfig) -> None:
    agg = Aggregator(config, ModelState(np.zeros(6, np.float32)))
    _round(agg)
    owner = id(agg.state.params.base)
    for _ in range(3):
        _round(agg)
        assert id(agg.state.params.base) == owner  # no new params array per close


HOLDERS: dict[str, Callable[[Aggregator], object]] = {
    "state": lambda agg: agg.state,
    "params": lambda agg: agg.state.params,
    "slice": lambda agg: agg.state.params[1:3],
    "optimizer_state": lambda agg: agg.state.optimizer_state,
    "m": lambda agg: agg.state.optimizer_state.get("m", agg.state.params),
    "memoryview": lambda agg: agg.state.params.data,
}


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: f"{c.mode}-{c.server_optimizer.name}-{c.reducer}"
)
@pytest.mark.parametrize("holder", list(HOLDERS))
def test_a_state_someone_holds_is_never_modified(config: AggregationConfig, holder: str) -> None:
    agg = Aggregator(config, ModelState(np.zeros(6, np.float32)))
    _round(agg)
    before = ModelState.from_bytes(agg.state.to_bytes())  # an independent copy
    held = HOLDERS[holder](agg)
    kept_state = agg.state if holder == "state" else None
    _round(agg)
    _round(agg)
    assert agg.state.version > before.version
    if kept_state is not None:
        assert kept_state == before
    if isinstance(held, np.ndarray):
        whole = before.params if held.shape == (6,) else before.params[1:3]
        if holder == "m" and "m" in before.optimizer_state:
            whole = before.optimizer_state["m"]
        np.testing.assert_array_equal(held, whole)
    if holder == "optimizer_state":
        for k, v in before.optimizer_state.items():
            np.testing.assert_array_equal(held[k], v)  # type: ignore[index]
    if holder == "memoryview":
        np.testing.assert_array_equal(np.asarray(held), before.params)


def test_the_initial_array_of_the_caller_is_never_modified() -> None:
    x0 = np.zeros(4, np.float32)
    agg = Aggregator(cfg(window={"count": 1}), ModelState(x0))
    agg.add(ClientUpdate("u", 0, 1, np.ones(4, np.float32)), 0.0)
    agg.close()
    np.testing.assert_array_equal(x0, np.zeros(4))
    np.testing.assert_array_equal(agg.state.params, np.ones(4))


def test_a_kept_closed_window_is_never_modified() -> None:
    agg = Aggregator(cfg(window={"count": 1}), ModelState(np.zeros(4, np.float32)))
    agg.add(ClientUpdate("u", 0, 1, np.ones(4, np.float32)), 0.0)
    closed = agg.close()
    agg.add(ClientUpdate("v", 1, 1, np.ones(4, np.float32)), 0.0)
    agg.close()
    np.testing.assert_array_equal(closed.state.params, np.ones(4))
    assert closed.state.version == 1 and agg.state.version == 2


def test_modes_are_exposed() -> None:
    agg = make(cfg(mode="fedasync"), np.zeros(1, np.float32))
    assert agg.config.mode is Mode.FEDASYNC
    assert (
        AggregationConfig(
            staleness=StalenessConfig(StalenessFunction.CONSTANT),
            window=WindowConfig(count=None, seconds=1.0),
            server_optimizer=ServerOptimizerConfig(name=OptimizerName.YOGI),
            reducer=Reducer.TRIMMED_MEAN,
        ).window.kind
        == "time"
    )
