"""`AggregationConfig`: every knob of the aggregation core, validated once, up front.

Frozen dataclasses so a config can be shared between operators and compared; validation
in `__post_init__` raises `ValueError` naming the field and what it accepts, because the
config arrives from a registration record written by someone else. `to_dict`/`from_dict`
use exactly the keys of the Avro registration record, enum values as lowercase strings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

__all__ = [
    "AggregationConfig",
    "FedAsyncRule",
    "Mode",
    "Normalization",
    "OptimizerName",
    "Reducer",
    "ServerOptimizerConfig",
    "StalenessConfig",
    "StalenessFunction",
    "WindowConfig",
]


class Mode(StrEnum):
    FEDBUFF = "fedbuff"
    FEDASYNC = "fedasync"


class FedAsyncRule(StrEnum):
    """How FedAsync mixes an update in (see `aggregator.py`)."""

    ADD_DELTA = "add_delta"  # x <- x + a_t delta: no history, diverges with many in flight
    MIX_WITH_BASE = "mix_with_base"  # Xie et al.: x <- (1 - a_t) x + a_t (x_base + delta)


class Normalization(StrEnum):
    """The divisor of a FedBuff window's weighted sum (see `aggregator.py`)."""

    WEIGHT_SUM = "weight_sum"  # sum w_i d_i / sum w_i: a weighted mean
    # sum w_i d_i / sum of the undiscounted weights: K (FedBuff's Algorithm 1, Nguyen et
    # al. 2022), or sum n_i with weight_by_samples. The default, from bench.learning_sweep.
    COUNT = "count"


class StalenessFunction(StrEnum):
    CONSTANT = "constant"
    POLYNOMIAL = "polynomial"
    HINGE = "hinge"


class OptimizerName(StrEnum):
    SGD = "sgd"
    MOMENTUM = "momentum"
    ADAM = "adam"
    YOGI = "yogi"


class Reducer(StrEnum):
    MEAN = "mean"
    TRIMMED_MEAN = "trimmed_mean"
    MEDIAN = "median"


_E = TypeVar("_E", bound=StrEnum)


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # normalising a frozen dataclass in __post_init__


def _enum(cls: type[_E], name: str, value: object) -> _E:
    if isinstance(value, str):
        try:
            return cls(value)
        except ValueError:
            pass
    allowed = ", ".join(repr(m.value) for m in cls)
    raise ValueError(f"{name} must be one of {allowed}; got {value!r}")


def _int(name: str, value: object, *, minimum: int, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return value
    kind = f"an int >= {minimum}" + (" or None" if optional else "")
    raise ValueError(f"{name} must be {kind}; got {value!r}")


def _float(
    name: str,
    value: object,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = True,
    optional: bool = False,
) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        v = float(value)
        if (v > low if low_open else v >= low) and (v < high if high_open else v <= high):
            return v
    interval = (
        f"{'(' if low_open else '['}{low:g}, "
        f"{'inf' if math.isinf(high) else f'{high:g}'}{')' if high_open else ']'}"
    )
    kind = f"a finite number in {interval}" + (" or None" if optional else "")
    raise ValueError(f"{name} must be {kind}; got {value!r}")


def _fields(name: str, data: object, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{name} must be a mapping with keys {list(allowed)}; got {data!r}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(f"{name} has unknown keys {unknown}; allowed keys are {list(allowed)}")
    return data


@dataclass(frozen=True)
class StalenessConfig:
    """Which staleness weight (see `staleness.py`) and its parameters a (and b for hinge)."""

    function: StalenessFunction = StalenessFunction.POLYNOMIAL
    a: float = 0.5
    b: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "function", _enum(StalenessFunction, "staleness.function", self.function))
        # a, b >= 0 keep every weight in (0, 1]: stale updates are never up-weighted, which
        # the DP noise calibration (sensitivity <= clip_norm) relies on.
        _set(self, "a", _float("staleness.a", self.a, low=0.0))
        _set(self, "b", _float("staleness.b", self.b, low=0.0))

    def to_dict(self) -> dict[str, Any]:
        return {"function": self.function.value, "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, data: object) -> StalenessConfig:
        return cls(**_fields("staleness", data, ("function", "a", "b")))


@dataclass(frozen=True)
class WindowConfig:
    """count only: count window; seconds only: time window; both: hybrid (first wins).

    `adaptive`: the count follows the measured concurrency (`windows.next_adaptive_count`);
    `count` is then the first window's size, and `seconds` must bound the window in time
    (an estimate above the devices that can still report would otherwise never close)."""

    count: int | None = 10
    seconds: float | None = None
    adaptive: bool = False

    def __post_init__(self) -> None:
        _set(self, "count", _int("window.count", self.count, minimum=1, optional=True))
        _set(
            self,
            "seconds",
            _float("window.seconds", self.seconds, low=0.0, low_open=True, optional=True),
        )
        if self.count is None and self.seconds is None:
            raise ValueError("window needs count, seconds or both (hybrid); got neither")
        if not isinstance(self.adaptive, bool):
            raise ValueError(f"window.adaptive must be True or False; got {self.adaptive!r}")
        if self.adaptive and (self.count is None or self.seconds is None):
            # An estimate can overshoot the devices able to fill a window (a device sends
            # one update per version): without a time bound such a window never closes.
            raise ValueError(
                "window.adaptive needs window.count (the first window's size) and "
                "window.seconds (the time bound that keeps an overshooting K live)"
            )

    @property
    def kind(self) -> str:
        if self.count is not None and self.seconds is not None:
            return "hybrid"
        return "count" if self.count is not None else "time"

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "seconds": self.seconds, "adaptive": self.adaptive}

    @classmethod
    def from_dict(cls, data: object) -> WindowConfig:
        return cls(**_fields("window", data, ("count", "seconds", "adaptive")))


@dataclass(frozen=True)
class ServerOptimizerConfig:
    """FedOpt server optimizer (Reddi et al. 2021). `momentum` is FedAvgM's beta;
    beta1/beta2/epsilon are Adam/Yogi's (epsilon is the paper's tau, default 1e-3)."""

    name: OptimizerName = OptimizerName.SGD
    learning_rate: float = 1.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    epsilon: float = 1e-3

    def __post_init__(self) -> None:
        p = "server_optimizer."
        _set(self, "name", _enum(OptimizerName, p + "name", self.name))
        _set(
            self,
            "learning_rate",
            _float(p + "learning_rate", self.learning_rate, low=0.0, low_open=True),
        )
        _set(self, "momentum", _float(p + "momentum", self.momentum, low=0.0, high=1.0))
        _set(self, "beta1", _float(p + "beta1", self.beta1, low=0.0, high=1.0))
        _set(self, "beta2", _float(p + "beta2", self.beta2, low=0.0, high=1.0))
        _set(self, "epsilon", _float(p + "epsilon", self.epsilon, low=0.0, low_open=True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name.value,
            "learning_rate": self.learning_rate,
            "momentum": self.momentum,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "epsilon": self.epsilon,
        }

    @classmethod
    def from_dict(cls, data: object) -> ServerOptimizerConfig:
        keys = ("name", "learning_rate", "momentum", "beta1", "beta2", "epsilon")
        return cls(**_fields("server_optimizer", data, keys))


#: The most past versions `fedasync_rule` MIX_WITH_BASE may keep (its max_staleness).
MAX_FEDASYNC_HISTORY = 1024

_TOP_KEYS = (
    "mode",
    "staleness",
    "max_staleness",
    "window",
    "server_optimizer",
    "fedasync_mixing",
    "fedasync_rule",
    "normalization",
    "weight_by_samples",
    "clip_norm",
    "reducer",
    "trim_fraction",
    "dp_noise_multiplier",
    "seed",
)


@dataclass(frozen=True)
class AggregationConfig:
    """How one model aggregates. Defaults: FedBuff, polynomial staleness a = 0.5,
    count window K = 10, the window's weighted sum divided by K (normalization COUNT),
    server SGD with learning rate 1.0 (plain FedBuff, Nguyen et al. 2022, Algorithm 1)."""

    mode: Mode = Mode.FEDBUFF
    staleness: StalenessConfig = field(default_factory=StalenessConfig)
    max_staleness: int | None = None
    window: WindowConfig = field(default_factory=WindowConfig)
    server_optimizer: ServerOptimizerConfig = field(default_factory=ServerOptimizerConfig)
    fedasync_mixing: float = 0.6
    fedasync_rule: FedAsyncRule = FedAsyncRule.ADD_DELTA
    normalization: Normalization = Normalization.COUNT
    weight_by_samples: bool = False
    clip_norm: float | None = None
    reducer: Reducer = Reducer.MEAN
    trim_fraction: float = 0.1
    dp_noise_multiplier: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        _set(self, "mode", _enum(Mode, "mode", self.mode))
        for name, cls in (
            ("staleness", StalenessConfig),
            ("window", WindowConfig),
            ("server_optimizer", ServerOptimizerConfig),
        ):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"{name} must be a {cls.__name__}; got {getattr(self, name)!r}")
        _set(
            self,
            "max_staleness",
            _int("max_staleness", self.max_staleness, minimum=0, optional=True),
        )
        _set(
            self,
            "fedasync_mixing",
            _float(
                "fedasync_mixing",
                self.fedasync_mixing,
                low=0.0,
                high=1.0,
                low_open=True,
                high_open=False,
            ),
        )
        _set(self, "fedasync_rule", _enum(FedAsyncRule, "fedasync_rule", self.fedasync_rule))
        _set(self, "normalization", _enum(Normalization, "normalization", self.normalization))
        if not isinstance(self.weight_by_samples, bool):
            raise ValueError(
                f"weight_by_samples must be True or False; got {self.weight_by_samples!r}"
            )
        _set(
            self,
            "clip_norm",
            _float("clip_norm", self.clip_norm, low=0.0, low_open=True, optional=True),
        )
        _set(self, "reducer", _enum(Reducer, "reducer", self.reducer))
        _set(self, "trim_fraction", _float("trim_fraction", self.trim_fraction, low=0.0, high=0.5))
        _set(
            self,
            "dp_noise_multiplier",
            _float("dp_noise_multiplier", self.dp_noise_multiplier, low=0.0, optional=True),
        )
        _set(self, "seed", _int("seed", self.seed, minimum=0, optional=True))
        self._check_combinations()

    def _check_combinations(self) -> None:
        self._check_fedasync_rule()
        if self.mode is Mode.FEDASYNC:
            # FedAsync mixes each update into the model on arrival: there is no buffer to
            # take order statistics over, and nothing to normalise sample counts against.
            if self.reducer is not Reducer.MEAN:
                raise ValueError(
                    f"reducer must be 'mean' when mode is 'fedasync' (robust reducers need "
                    f"a buffer of updates); got {self.reducer.value!r}"
                )
            if self.weight_by_samples:
                raise ValueError(
                    "weight_by_samples must be False when mode is 'fedasync' "
                    "(one update at a time has nothing to normalise against)"
                )
        if self.dp_noise_multiplier is not None:
            if self.clip_norm is None:
                raise ValueError(
                    "dp_noise_multiplier requires clip_norm (the noise std is "
                    "dp_noise_multiplier * clip_norm)"
                )
            if self.mode is not Mode.FEDBUFF or self.reducer is not Reducer.MEAN:
                raise ValueError(
                    f"dp_noise_multiplier requires mode 'fedbuff' and reducer 'mean'; got "
                    f"mode {self.mode.value!r}, reducer {self.reducer.value!r}"
                )
            if self.weight_by_samples:
                # Per-update weights must stay <= 1 for one device to move the noisy sum by
                # at most clip_norm; client-reported sample counts would break that bound.
                raise ValueError(
                    "weight_by_samples must be False when dp_noise_multiplier "
                    "is set (sample weights would exceed the DP sensitivity bound)"
                )

    def _check_fedasync_rule(self) -> None:
        if self.mode is Mode.FEDASYNC and self.fedasync_rule is FedAsyncRule.MIX_WITH_BASE:
            # The rule needs the parameters of every base version an update may name; the
            # job keeps max_staleness of them, so an unbounded max_staleness would mean
            # unbounded state (memory and checkpoint size): refused, not warned.
            if self.max_staleness is None:
                raise ValueError(
                    "fedasync_rule 'mix_with_base' needs max_staleness: the job keeps the "
                    "parameters of the last max_staleness versions (memory "
                    "max_staleness x parameters x 4 bytes); null would be unbounded"
                )
            if self.max_staleness > MAX_FEDASYNC_HISTORY:
                raise ValueError(
                    f"fedasync_rule 'mix_with_base' keeps max_staleness versions; "
                    f"max_staleness must be <= {MAX_FEDASYNC_HISTORY}, got {self.max_staleness}"
                )
        if self.window.adaptive and self.mode is not Mode.FEDBUFF:
            raise ValueError("window.adaptive requires mode 'fedbuff' (FedAsync has no buffer)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "staleness": self.staleness.to_dict(),
            "max_staleness": self.max_staleness,
            "window": self.window.to_dict(),
            "server_optimizer": self.server_optimizer.to_dict(),
            "fedasync_mixing": self.fedasync_mixing,
            "fedasync_rule": self.fedasync_rule.value,
            "normalization": self.normalization.value,
            "weight_by_samples": self.weight_by_samples,
            "clip_norm": self.clip_norm,
            "reducer": self.reducer.value,
            "trim_fraction": self.trim_fraction,
            "dp_noise_multiplier": self.dp_noise_multiplier,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: object) -> AggregationConfig:
        """Missing keys take their defaults; unknown keys are an error (likely typos)."""
        top = dict(_fields("aggregation config", data, _TOP_KEYS))
        nested: dict[str, Any] = {
            "staleness": StalenessConfig.from_dict,
            "window": WindowConfig.from_dict,
            "server_optimizer": ServerOptimizerConfig.from_dict,
        }
        for key, parse in nested.items():
            if key in top:
                top[key] = parse(top[key])
        return cls(**top)
