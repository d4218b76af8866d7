"""AggregationConfig: defaults, validation messages, to_dict/from_dict round trip."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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

EXPECTED_KEYS = {
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
}


def test_defaults_are_plain_fedbuff() -> None:
    cfg = AggregationConfig()
    assert cfg.mode is Mode.FEDBUFF
    assert cfg.staleness == StalenessConfig(StalenessFunction.POLYNOMIAL, a=0.5)
    assert cfg.window == WindowConfig(count=10, seconds=None)
    assert cfg.window.kind == "count"
    assert cfg.server_optimizer.name is OptimizerName.SGD
    assert cfg.server_optimizer.learning_rate == 1.0
    assert cfg.reducer is Reducer.MEAN
    assert cfg.max_staleness is None and cfg.clip_norm is None
    assert cfg.dp_noise_multiplier is None and not cfg.weight_by_samples


def test_to_dict_uses_exactly_the_registration_keys_and_lowercase_enums() -> None:
    d = AggregationConfig().to_dict()
    assert set(d) == EXPECTED_KEYS
    assert set(d["staleness"]) == {"function", "a", "b"}
    assert set(d["window"]) == {"count", "seconds", "adaptive"}
    assert set(d["server_optimizer"]) == {
        "name",
        "learning_rate",
        "momentum",
        "beta1",
        "beta2",
        "epsilon",
    }
    assert d["mode"] == "fedbuff" and type(d["mode"]) is str
    assert d["staleness"]["function"] == "polynomial" and type(d["staleness"]["function"]) is str
    assert d["reducer"] == "mean" and d["server_optimizer"]["name"] == "sgd"


def test_from_dict_accepts_strings_and_fills_defaults() -> None:
    cfg = AggregationConfig.from_dict(
        {"mode": "fedasync", "staleness": {"function": "hinge", "a": 10, "b": 4}}
    )
    assert cfg.mode is Mode.FEDASYNC
    assert cfg.staleness == StalenessConfig(StalenessFunction.HINGE, 10.0, 4.0)
    assert isinstance(cfg.staleness.a, float)
    assert cfg.window == WindowConfig()


def test_window_kinds() -> None:
    assert WindowConfig(count=5).kind == "count"
    assert WindowConfig(count=None, seconds=2.0).kind == "time"
    assert WindowConfig(count=5, seconds=2.0).kind == "hybrid"


configs = st.builds(
    lambda mode, fn, a, b, ms, count, secs, opt, lr, mixing, wbs, clip, red, trim, z, seed: dict(
        mode=mode,
        staleness={"function": fn, "a": a, "b": b},
        max_staleness=ms,
        window={"count": count, "seconds": secs},
        server_optimizer={
            "name": opt,
            "learning_rate": lr,
            "momentum": 0.5,
            "beta1": 0.8,
            "beta2": 0.95,
            "epsilon": 1e-4,
        },
        fedasync_mixing=mixing,
        weight_by_samples=wbs,
        clip_norm=clip,
        reducer=red,
        trim_fraction=trim,
        dp_noise_multiplier=z,
        seed=seed,
    ),
    st.sampled_from(["fedbuff", "fedasync"]),
    st.sampled_from(["constant", "polynomial", "hinge"]),
    st.floats(0, 10),
    st.floats(0, 10),
    st.none() | st.integers(0, 100),
    st.none() | st.integers(1, 1000),
    st.none() | st.floats(0.001, 1e4),
    st.sampled_from(["sgd", "momentum", "adam", "yogi"]),
    st.floats(1e-4, 10),
    st.floats(0.01, 1.0),
    st.booleans(),
    st.none() | st.floats(0.01, 100),
    st.sampled_from(["mean", "trimmed_mean", "median"]),
    st.floats(0, 0.49),
    st.none() | st.floats(0, 5),
    st.none() | st.integers(0, 2**31),
)


@settings(max_examples=150, deadline=None)
@given(configs)
def test_round_trip_of_every_valid_config(data: dict[str, Any]) -> None:
    try:
        cfg = AggregationConfig.from_dict(data)
    except ValueError:
        return  # an invalid combination; messages are tested below
    again = AggregationConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"mode": "sync"}, "mode must be one of 'fedbuff', 'fedasync'; got 'sync'"),
        ({"mode": "FEDBUFF"}, "mode must be one of"),
        ({"reducer": "max"}, "reducer must be one of 'mean', 'trimmed_mean', 'median'"),
        ({"staleness": {"function": "exp"}}, "staleness.function must be one of 'constant'"),
        ({"staleness": {"a": -1}}, "staleness.a must be a finite number in [0, inf)"),
        ({"staleness": {"b": float("nan")}}, "staleness.b must be a finite number"),
        ({"staleness": {"c": 1}}, "staleness has unknown keys ['c']"),
        ({"window": {"count": None, "seconds": None}}, "window needs count, seconds or both"),
        ({"window": {"count": 0}}, "window.count must be an int >= 1 or None; got 0"),
        ({"window": {"count": 2.5}}, "window.count must be an int >= 1"),
        ({"window": {"count": True}}, "window.count must be an int >= 1"),
        ({"window": {"seconds": 0}}, "window.seconds must be a finite number in (0, inf)"),
        ({"window": 5}, "window must be a mapping with keys ['count', 'seconds', 'adaptive']"),
        ({"server_optimizer": {"name": "adagrad"}}, "server_optimizer.name must be one of"),
        ({"server_optimizer": {"learning_rate": 0}}, "server_optimizer.learning_rate must be"),
        (
            {"server_optimizer": {"beta1": 1.0}},
            "server_optimizer.beta1 must be a finite number in [0, 1)",
        ),
        ({"server_optimizer": {"beta2": -0.1}}, "server_optimizer.beta2"),
        ({"server_optimizer": {"momentum": 1}}, "server_optimizer.momentum"),
        ({"server_optimizer": {"epsilon": 0}}, "server_optimizer.epsilon"),
        ({"max_staleness": -1}, "max_staleness must be an int >= 0 or None; got -1"),
        ({"fedasync_mixing": 0}, "fedasync_mixing must be a finite number in (0, 1]"),
        ({"fedasync_mixing": 1.5}, "fedasync_mixing"),
        ({"weight_by_samples": 1}, "weight_by_samples must be True or False"),
        ({"clip_norm": 0.0}, "clip_norm must be a finite number in (0, inf) or None"),
        ({"trim_fraction": 0.5}, "trim_fraction must be a finite number in [0, 0.5)"),
        ({"dp_noise_multiplier": -1.0, "clip_norm": 1.0}, "dp_noise_multiplier must be"),
        ({"seed": -3}, "seed must be an int >= 0 or None"),
        ({"sede": 3}, "aggregation config has unknown keys ['sede']"),
        ({"dp_noise_multiplier": 1.0}, "dp_noise_multiplier requires clip_norm"),
        (
            {"dp_noise_multiplier": 1.0, "clip_norm": 1.0, "reducer": "median"},
            "dp_noise_multiplier requires mode 'fedbuff' and reducer 'mean'",
        ),
        (
            {"dp_noise_multiplier": 1.0, "clip_norm": 1.0, "weight_by_samples": True},
            "weight_by_samples must be False when dp_noise_multiplier is set",
        ),
        ({"mode": "fedasync", "reducer": "median"}, "reducer must be 'mean' when mode is"),
        (
            {"mode": "fedasync", "weight_by_samples": True},
            "weight_by_samples must be False when mode is 'fedasync'",
        ),
    ],
)
def test_validation_messages_name_the_field_and_allowed_values(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        AggregationConfig.from_dict(data)
    assert message in str(info.value)


def test_constructor_validates_too() -> None:
    with pytest.raises(ValueError, match=r"server_optimizer\.name"):
        ServerOptimizerConfig(name="lamb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="staleness must be a StalenessConfig"):
        AggregationConfig(staleness={"function": "constant"})  # type: ignore[arg-type]
    assert AggregationConfig(mode="fedasync").mode is Mode.FEDASYNC  # type: ignore[arg-type]


def test_config_is_frozen() -> None:
    cfg = AggregationConfig()
    with pytest.raises(AttributeError):
        cfg.mode = Mode.FEDASYNC  # type: ignore[misc]
