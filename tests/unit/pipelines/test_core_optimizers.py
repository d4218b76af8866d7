"""Server optimizers against steps computed by hand (FedOpt, Reddi et al. 2021, Alg. 2)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from fedstream.pipelines.config import OptimizerName, ServerOptimizerConfig
from fedstream.pipelines.optimizers import (
    ServerAdam,
    ServerMomentum,
    ServerOptimizer,
    ServerSGD,
    ServerYogi,
    optimizer_from_config,
)

F32 = np.ndarray[Any, np.dtype[np.float32]]
X0 = [1.0, -2.0]
GRADS = [[0.5, -1.0], [1.0, 0.0], [-0.5, 2.0]]


def vec(values: list[float]) -> F32:
    return np.array(values, dtype=np.float32)


def run(opt: ServerOptimizer) -> list[tuple[F32, dict[str, F32]]]:
    x: F32 = vec(X0)
    state: dict[str, F32] = {}
    trace = []
    for g in GRADS:
        x, state = opt.step(x, vec(g), state)
        trace.append((x, state))
    return trace


def test_sgd_by_hand() -> None:
    trace = run(ServerSGD(learning_rate=0.5))
    # x1 = [1, -2] + 0.5 [0.5, -1] = [1.25, -2.5]; x2 = + 0.5 [1, 0]; x3 = + 0.5 [-0.5, 2]
    expected = [[1.25, -2.5], [1.75, -2.5], [1.5, -1.5]]
    for (x, state), e in zip(trace, expected, strict=True):
        np.testing.assert_allclose(x, e, rtol=1e-6)
        assert state == {}
    # lr = 1 is FedAvg: x + Delta
    np.testing.assert_allclose(run(ServerSGD())[0][0], [1.5, -3.0])


def test_momentum_by_hand() -> None:
    trace = run(ServerMomentum(learning_rate=2.0, momentum=0.5))
    # m1 = [0.5, -1]              x1 = [1, -2] + 2 m1 = [2, -4]
    # m2 = 0.5 m1 + [1, 0]   = [1.25, -0.5]    x2 = [4.5, -5]
    # m3 = 0.5 m2 + [-0.5, 2] = [0.125, 1.75]  x3 = [4.75, -1.5]
    expected_m = [[0.5, -1.0], [1.25, -0.5], [0.125, 1.75]]
    expected_x = [[2.0, -4.0], [4.5, -5.0], [4.75, -1.5]]
    for (x, state), em, ex in zip(trace, expected_m, expected_x, strict=True):
        np.testing.assert_allclose(state["m"], em, rtol=1e-6)
        np.testing.assert_allclose(x, ex, rtol=1e-6)


def _adaptive_by_hand(yogi: bool) -> list[tuple[list[float], list[float], list[float]]]:
    """b1 = 0.5, b2 = 0.75, tau = 0.5, lr = 0.1; m0 = 0, v0 = tau^2 = 0.25 (per coordinate)."""
    b1, b2, tau, lr = 0.5, 0.75, 0.5, 0.1
    x, m, v = list(X0), [0.0, 0.0], [0.25, 0.25]
    out = []
    for g in GRADS:
        for i in range(2):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            g2 = g[i] * g[i]
            if yogi:
                v[i] = v[i] - (1 - b2) * g2 * math.copysign(1.0, v[i] - g2) * (v[i] != g2)
            else:
                v[i] = b2 * v[i] + (1 - b2) * g2
            x[i] = x[i] + lr * m[i] / (math.sqrt(v[i]) + tau)
        out.append((list(x), list(m), list(v)))
    return out


def test_adam_by_hand() -> None:
    expected = _adaptive_by_hand(yogi=False)
    # first step, coordinate 0 written out: m = 0.25, v = 0.75*0.25 + 0.25*0.25 = 0.25,
    # x = 1 + 0.1 * 0.25 / (0.5 + 0.5) = 1.025
    assert expected[0][0][0] == pytest.approx(1.025)
    trace = run(ServerAdam(learning_rate=0.1, beta1=0.5, beta2=0.75, epsilon=0.5))
    for (x, state), (ex, em, ev) in zip(trace, expected, strict=True):
        np.testing.assert_allclose(state["m"], em, rtol=1e-6)
        np.testing.assert_allclose(state["v"], ev, rtol=1e-6)
        np.testing.assert_allclose(x, ex, rtol=1e-6)


def test_yogi_by_hand() -> None:
    expected = _adaptive_by_hand(yogi=True)
    # step 1, coordinate 1: g^2 = 1 > v0 = 0.25 so v grows additively: 0.25 + 0.25 = 0.5;
    # step 2, coordinate 1: g = 0 so v is unchanged (sign(v - 0) * 0)
    assert expected[0][2][1] == pytest.approx(0.5)
    assert expected[1][2][1] == pytest.approx(0.5)
    trace = run(ServerYogi(learning_rate=0.1, beta1=0.5, beta2=0.75, epsilon=0.5))
    for (x, state), (ex, em, ev) in zip(trace, expected, strict=True):
        np.testing.assert_allclose(state["m"], em, rtol=1e-6)
        np.testing.assert_allclose(state["v"], ev, rtol=1e-6)
        np.testing.assert_allclose(x, ex, rtol=1e-6)


ALL = [
    ServerSGD(0.3),
    ServerMomentum(0.7, 0.9),
    ServerAdam(0.01, 0.9, 0.99, 1e-3),
    ServerYogi(0.01, 0.9, 0.99, 1e-3),
]


@pytest.mark.parametrize("opt", ALL, ids=repr)
def test_step_is_pure_and_matches_step_in_place(opt: ServerOptimizer) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(50).astype(np.float32)
    state = opt.init_state(50)
    for _ in range(3):
        g = rng.standard_normal(50).astype(np.float32)
        x_copy, g_copy = x.copy(), g.copy()
        state_copy = {k: v.copy() for k, v in state.items()}
        new_x, new_state = opt.step(x, g, state)
        np.testing.assert_array_equal(x, x_copy)
        np.testing.assert_array_equal(g, g_copy)
        for k in state:
            np.testing.assert_array_equal(state[k], state_copy[k])
        opt.step_in_place(x_copy, g_copy, state_copy)
        np.testing.assert_array_equal(new_x, x_copy)
        for k in new_state:
            np.testing.assert_array_equal(new_state[k], state_copy[k])
        x, state = new_x, new_state


def test_state_checks() -> None:
    with pytest.raises(ValueError, match=r"expects optimizer state keys \['m', 'v'\]"):
        ServerAdam().step(vec([0, 0]), vec([1, 1]), {"m": vec([0, 0])})
    with pytest.raises(ValueError, match="shape"):
        ServerMomentum().step(vec([0, 0]), vec([1, 1]), {"m": vec([0, 0, 0])})
    with pytest.raises(ValueError, match="was the optimizer changed"):
        ServerSGD().step(vec([0, 0]), vec([1, 1]), {"m": vec([0, 0])})
    v0 = ServerYogi(epsilon=0.1).init_state(3)["v"]
    np.testing.assert_allclose(v0, [0.01] * 3)  # v_{-1} = tau^2 as in Algorithm 2


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        (OptimizerName.SGD, ServerSGD),
        (OptimizerName.MOMENTUM, ServerMomentum),
        (OptimizerName.ADAM, ServerAdam),
        (OptimizerName.YOGI, ServerYogi),
    ],
)
def test_from_config(name: OptimizerName, cls: type[ServerOptimizer]) -> None:
    cfg = ServerOptimizerConfig(
        name=name, learning_rate=0.2, momentum=0.3, beta1=0.4, beta2=0.5, epsilon=0.06
    )
    opt = optimizer_from_config(cfg)
    assert type(opt) is cls
    assert opt.learning_rate == 0.2  # type: ignore[attr-defined]
