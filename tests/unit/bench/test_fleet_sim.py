"""bench.fleet_sim: its numpy MLP's gradient, the event loop's protocols, the outage."""

from __future__ import annotations

import numpy as np

from bench.fleet_sim import (
    NUM_PARAMS,
    Outage,
    SimSettings,
    _unflat,
    init_params,
    load_data,
    sgd_step,
    simulate,
)

DATA = load_data(0)


def _loss(params: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:  # type: ignore[type-arg]
    w1, b1, w2, b2 = (a.astype(np.float64) for a in _unflat(params))
    logits = np.maximum(x @ w1.T + b1, 0.0) @ w2.T + b2
    logits -= logits.max(axis=1, keepdims=True)
    log_prob = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_prob[np.arange(len(y)), y].mean())


def test_sgd_step_follows_the_numerical_gradient() -> None:
    rng = np.random.default_rng(0)
    params = init_params(1)
    x = DATA.pool[rng.integers(len(DATA.pool), size=8)].astype(np.float64)
    y = rng.integers(10, size=8)
    lr = 1e-3
    stepped = params.astype(np.float64)
    sgd_step(stepped, x, y, lr)  # type: ignore[arg-type]  # float64 for the check
    analytic = (params - stepped) / lr
    for i in rng.choice(NUM_PARAMS, size=20, replace=False):
        e = np.zeros(NUM_PARAMS)
        e[i] = 1e-5
        p = params.astype(np.float64)
        numeric = (_loss(p + e, x, y) - _loss(p - e, x, y)) / 2e-5
        assert abs(numeric - analytic[i]) < 1e-4 + 1e-3 * abs(numeric)


def test_sync_waits_for_every_device_and_async_does_not() -> None:
    base = SimSettings(devices=8, duration_s=15.0, dropout_prob=0.0)
    sync = simulate(SimSettings(**{**base.__dict__, "protocol": "sync"}), DATA)
    fedbuff = simulate(SimSettings(**{**base.__dict__, "aggregation": {"window": {"count": 4}}}))
    assert set(sync.window_sizes) == {8} and sync.mean_staleness == 0.0
    assert set(fedbuff.window_sizes) == {4} and fedbuff.versions > sync.versions
    assert sync.updates_absorbed == sync.updates_sent  # nothing refused
    assert 0.0 <= sync.final_accuracy <= 1.0 and len(sync.times) == len(sync.accuracies)


def test_the_backlog_after_an_outage_is_based_on_the_pre_outage_version() -> None:
    outage = Outage(start_s=3.0, duration_s=4.0)
    s = SimSettings(devices=30, duration_s=8.0, outage=outage, dropout_prob=0.0)
    result = simulate(s, DATA)
    # every device queued one update on the same base: the backlog's windows come out
    # progressively staler, 0 .. 30/10 - 1 versions behind
    assert max(result.stalenesses) >= 2


def test_five_hundred_devices_run_quickly() -> None:
    s = SimSettings(devices=500, duration_s=2.0, aggregation={"window": {"count": 50}})
    result = simulate(s, DATA)
    assert result.updates_sent > 500 and result.versions >= 10
