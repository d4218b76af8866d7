"""Server optimizers applied to the pseudo-gradient at window close.

Reddi et al., "Adaptive Federated Optimization" (FedOpt), ICLR 2021, Algorithm 2:
the pseudo-gradient is Delta = weighted mean of client deltas (delta = w_local - w_base,
the improving direction), and the server takes x <- x + lr * step(Delta):

- SGD:      x <- x + lr * Delta                          (FedAvg when lr = 1)
- momentum: m <- beta * m + Delta;  x <- x + lr * m      (FedAvgM, Hsu, Qi, Brown,
            "Measuring the Effects of Non-Identical Data Distribution ...", 2019)
- Adam:     m <- b1 m + (1-b1) Delta;  v <- b2 v + (1-b2) Delta^2
- Yogi:     m as Adam;  v <- v - (1-b2) Delta^2 sign(v - Delta^2)
            (Zaheer et al., "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018)
  both:     x <- x + lr * m / (sqrt(v) + tau)

As in Algorithm 2 there is no bias correction, m starts at 0 and v at tau^2
(the paper requires v_{-1} >= tau^2). Optimizer state (m, v) is part of the model state
and travels in `ModelState.optimizer_state` under the keys in `state_keys`; an empty state
means "no step taken yet" and is initialised on the first step.

`step` is pure (new arrays); `step_in_place` does the same arithmetic in the caller's
arrays with no allocation (the aggregator uses it when it alone owns the state).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedstream.pipelines.config import OptimizerName, ServerOptimizerConfig
from fedstream.pipelines.update import FloatVector

__all__ = [
    "OptimizerState",
    "ServerAdam",
    "ServerMomentum",
    "ServerOptimizer",
    "ServerSGD",
    "ServerYogi",
    "optimizer_from_config",
]

OptimizerState = Mapping[str, FloatVector]


class ServerOptimizer(ABC):
    """A FedOpt server optimizer. `step` is pure; `step_in_place` is the same arithmetic
    with no allocation, for callers that own the arrays (see `Aggregator.close`)."""

    state_keys: ClassVar[tuple[str, ...]] = ()

    def init_state(self, num_params: int) -> dict[str, FloatVector]:
        return {key: np.zeros(num_params, dtype=np.float32) for key in self.state_keys}

    def prepare_state(self, state: OptimizerState, num_params: int) -> OptimizerState:
        """`state` checked against this optimizer, or a fresh one if it is empty."""
        if not state:
            return self.init_state(num_params)
        if set(state) != set(self.state_keys):
            raise ValueError(
                f"{type(self).__name__} expects optimizer state keys {list(self.state_keys)}; "
                f"the model state holds {sorted(state)} (was the optimizer changed?)"
            )
        for key, value in state.items():
            if value.shape != (num_params,):
                raise ValueError(
                    f"optimizer state {key!r} has shape {value.shape}, expected ({num_params},)"
                )
        return state

    def step(
        self, params: FloatVector, pseudo_gradient: FloatVector, state: OptimizerState
    ) -> tuple[FloatVector, dict[str, FloatVector]]:
        """Return (new params, new optimizer state); the inputs are left untouched."""
        new_params = params.copy()
        new_state = {k: v.copy() for k, v in self.prepare_state(state, params.shape[0]).items()}
        self.step_in_place(new_params, pseudo_gradient.copy(), new_state)
        return new_params, new_state

    @abstractmethod
    def step_in_place(
        self,
        params: FloatVector,
        pseudo_gradient: FloatVector,
        state: dict[str, FloatVector],
    ) -> None:
        """Update `params` and the (prepared) `state` arrays in place. `pseudo_gradient`
        is used as scratch space and overwritten."""


@dataclass(frozen=True)
class ServerSGD(ServerOptimizer):
    """x <- x + lr * Delta (FedOpt with SGD; lr = 1 is FedAvg / plain FedBuff)."""

    learning_rate: float = 1.0

    def step_in_place(
        self,
        params: FloatVector,
        pseudo_gradient: FloatVector,
        state: dict[str, FloatVector],
    ) -> None:
        if self.learning_rate != 1.0:
            pseudo_gradient *= self.learning_rate
        params += pseudo_gradient


@dataclass(frozen=True)
class ServerMomentum(ServerOptimizer):
    """FedAvgM (Hsu et al. 2019): m <- beta m + Delta; x <- x + lr m."""

    state_keys: ClassVar[tuple[str, ...]] = ("m",)
    learning_rate: float = 1.0
    momentum: float = 0.9

    def step_in_place(
        self,
        params: FloatVector,
        pseudo_gradient: FloatVector,
        state: dict[str, FloatVector],
    ) -> None:
        m = state["m"]
        m *= self.momentum
        m += pseudo_gradient
        if self.learning_rate == 1.0:
            params += m
        else:
            np.multiply(m, self.learning_rate, out=pseudo_gradient)
            params += pseudo_gradient


@dataclass(frozen=True)
class _Adaptive(ServerOptimizer):
    """Shared FedAdam / FedYogi update; subclasses give the second-moment rule."""

    state_keys: ClassVar[tuple[str, ...]] = ("m", "v")
    learning_rate: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    epsilon: float = 1e-3

    def init_state(self, num_params: int) -> dict[str, FloatVector]:
        return {
            "m": np.zeros(num_params, dtype=np.float32),
            "v": np.full(num_params, self.epsilon**2, dtype=np.float32),
        }

    @abstractmethod
    def _second_moment(self, v: FloatVector, g2: FloatVector) -> None:
        """Update v in place from g2 = Delta^2 (which may be overwritten)."""

    def step_in_place(
        self,
        params: FloatVector,
        pseudo_gradient: FloatVector,
        state: dict[str, FloatVector],
    ) -> None:
        g, m, v = pseudo_gradient, state["m"], state["v"]
        # m <- b1 m + (1 - b1) g, as (1 - b1) (m b1 / (1 - b1) + g) to need no temporary.
        c1 = 1.0 - self.beta1
        m *= self.beta1 / c1
        m += g
        m *= c1
        np.square(g, out=g)
        self._second_moment(v, g)
        np.sqrt(v, out=g)
        g += self.epsilon
        np.divide(m, g, out=g)
        if self.learning_rate != 1.0:
            g *= self.learning_rate
        params += g


@dataclass(frozen=True)
class ServerAdam(_Adaptive):
    """FedAdam (Reddi et al. 2021): v <- b2 v + (1 - b2) Delta^2."""

    def _second_moment(self, v: FloatVector, g2: FloatVector) -> None:
        v *= self.beta2
        g2 *= 1.0 - self.beta2
        v += g2


@dataclass(frozen=True)
class ServerYogi(_Adaptive):
    """FedYogi (Reddi et al. 2021; Zaheer et al. 2018): v <- v - (1-b2) Delta^2 sign(v - Delta^2).

    v grows additively rather than multiplicatively, so a burst of large
    pseudo-gradients cannot blow the effective learning rate down as fast as Adam does.
    """

    def _second_moment(self, v: FloatVector, g2: FloatVector) -> None:
        sign = np.subtract(v, g2)
        np.sign(sign, out=sign)
        g2 *= 1.0 - self.beta2
        g2 *= sign
        v -= g2


def optimizer_from_config(config: ServerOptimizerConfig) -> ServerOptimizer:
    """The server optimizer `config` names, with its hyper-parameters."""
    lr = config.learning_rate
    if config.name is OptimizerName.SGD:
        return ServerSGD(learning_rate=lr)
    if config.name is OptimizerName.MOMENTUM:
        return ServerMomentum(learning_rate=lr, momentum=config.momentum)
    cls = ServerAdam if config.name is OptimizerName.ADAM else ServerYogi
    return cls(learning_rate=lr, beta1=config.beta1, beta2=config.beta2, epsilon=config.epsilon)
