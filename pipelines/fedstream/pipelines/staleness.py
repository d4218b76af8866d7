"""Staleness and the functions that turn it into an aggregation weight.

Staleness `s = current_version - base_version` counts the server updates a device did not
see while it trained. Older deltas point in directions the model has partly moved past, so
asynchronous methods down-weight them. One class per formula, in the style of FLSim's
`async_staleness_weights.py`; unlike FLSim we do not renormalise by an "average staleness",
so the weights are exactly the papers' formulas and lie in (0, 1] for a, b >= 0.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from fedstream.pipelines.config import StalenessConfig, StalenessFunction

__all__ = [
    "ConstantStalenessWeight",
    "HingeStalenessWeight",
    "PolynomialStalenessWeight",
    "StalenessWeight",
    "staleness",
    "staleness_weight_from_config",
]


def staleness(current_version: int, base_version: int) -> int:
    """Server versions elapsed since the device's base model (negative: a future base)."""
    return current_version - base_version


class StalenessWeight(ABC):
    """Maps a staleness s >= 0 to a multiplicative weight."""

    @abstractmethod
    def _raw(self, s: int) -> float: ...

    def weight(self, s: int) -> float:
        # A negative staleness is a protocol error (rejected upstream as `future_version`);
        # refusing it here keeps the formulas from silently extrapolating.
        if s < 0:
            raise ValueError(f"staleness must be >= 0, got {s}")
        return self._raw(s)

    __call__ = weight


@dataclass(frozen=True, slots=True)
class ConstantStalenessWeight(StalenessWeight):
    """s(t) = 1: staleness is ignored (plain asynchronous SGD / FedBuff without discount)."""

    def _raw(self, s: int) -> float:
        return 1.0


@dataclass(frozen=True, slots=True)
class PolynomialStalenessWeight(StalenessWeight):
    """s(t) = (1 + t)^-a.

    Xie, Koyejo, Gupta, "Asynchronous Federated Optimization" (FedAsync), 2019, eq. for
    the polynomial function; FedBuff (Nguyen et al., "Federated Learning with Buffered
    Asynchronous Aggregation", AISTATS 2022) uses a = 0.5, i.e. 1/sqrt(1 + t).
    """

    a: float = 0.5

    def _raw(self, s: int) -> float:
        return float((1.0 + s) ** -self.a)


@dataclass(frozen=True, slots=True)
class HingeStalenessWeight(StalenessWeight):
    """s(t) = 1 if t <= b else 1 / (a (t - b) + 1).

    Xie, Koyejo, Gupta, "Asynchronous Federated Optimization" (FedAsync), 2019: tolerate
    up to b versions of lag at full weight, then decay hyperbolically with slope a.
    """

    a: float = 10.0
    b: float = 4.0

    def _raw(self, s: int) -> float:
        if s <= self.b:
            return 1.0
        return 1.0 / (self.a * (s - self.b) + 1.0)


def staleness_weight_from_config(config: StalenessConfig) -> StalenessWeight:
    """The weight function `config` names, with its parameters."""
    if config.function is StalenessFunction.CONSTANT:
        return ConstantStalenessWeight()
    if config.function is StalenessFunction.POLYNOMIAL:
        return PolynomialStalenessWeight(a=config.a)
    return HingeStalenessWeight(a=config.a, b=config.b)
