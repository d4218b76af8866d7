"""Staleness weight functions: known values, monotonicity, range; version checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstream.pipelines.config import StalenessConfig, StalenessFunction
from fedstream.pipelines.staleness import (
    ConstantStalenessWeight,
    HingeStalenessWeight,
    PolynomialStalenessWeight,
    StalenessWeight,
    staleness,
    staleness_weight_from_config,
)
from fedstream.pipelines.update import ClientUpdate
from fedstream.pipelines.validation import RejectReason, validate_update


def test_staleness_is_version_difference() -> None:
    assert staleness(10, 7) == 3
    assert staleness(5, 5) == 0
    assert staleness(5, 6) == -1


@pytest.mark.parametrize(
    ("fn", "s", "expected"),
    [
        (ConstantStalenessWeight(), 0, 1.0),
        (ConstantStalenessWeight(), 100, 1.0),
        (PolynomialStalenessWeight(0.5), 0, 1.0),
        (PolynomialStalenessWeight(0.5), 3, 0.5),  # FedBuff: 1/sqrt(1+3)
        (PolynomialStalenessWeight(0.5), 8, 1 / 3),
        (PolynomialStalenessWeight(1.0), 4, 0.2),
        (PolynomialStalenessWeight(0.0), 50, 1.0),
        (HingeStalenessWeight(a=10, b=4), 0, 1.0),
        (HingeStalenessWeight(a=10, b=4), 4, 1.0),  # up to b: full weight
        (HingeStalenessWeight(a=10, b=4), 5, 1 / 11),  # 1/(a(s-b)+1)
        (HingeStalenessWeight(a=10, b=4), 6, 1 / 21),
        (HingeStalenessWeight(a=0.5, b=0), 2, 0.5),
    ],
)
def test_known_values(fn: StalenessWeight, s: int, expected: float) -> None:
    assert fn.weight(s) == pytest.approx(expected, rel=1e-12)
    assert fn(s) == fn.weight(s)


FUNCTIONS = [
    ConstantStalenessWeight(),
    PolynomialStalenessWeight(0.5),
    PolynomialStalenessWeight(2.0),
    HingeStalenessWeight(10, 4),
    HingeStalenessWeight(0.3, 0),
]


@pytest.mark.parametrize("fn", FUNCTIONS, ids=repr)
@settings(max_examples=60, deadline=None)
@given(s=st.integers(0, 10_000), step=st.integers(1, 1000))
def test_monotone_non_increasing_and_in_unit_interval(
    fn: StalenessWeight, s: int, step: int
) -> None:
    assert 0.0 < fn(s + step) <= fn(s) <= 1.0
    assert fn(0) == 1.0


@pytest.mark.parametrize("fn", FUNCTIONS, ids=repr)
def test_negative_staleness_is_refused(fn: StalenessWeight) -> None:
    with pytest.raises(ValueError, match="staleness must be >= 0"):
        fn(-1)


def test_from_config() -> None:
    make = staleness_weight_from_config
    assert make(StalenessConfig(StalenessFunction.CONSTANT)) == ConstantStalenessWeight()
    assert make(StalenessConfig(StalenessFunction.POLYNOMIAL, a=0.7)) == (
        PolynomialStalenessWeight(0.7)
    )
    hinge = make(StalenessConfig(StalenessFunction.HINGE, a=2.0, b=3.0))
    assert hinge == HingeStalenessWeight(2.0, 3.0)
    assert math.isclose(hinge(5), 1 / 5)


def _update(base_version: int) -> ClientUpdate:
    return ClientUpdate("u", base_version, 1, np.zeros(3, dtype=np.float32))


@pytest.mark.parametrize(
    ("current", "base", "max_staleness", "reason"),
    [
        (5, 5, 0, None),
        (5, 2, 3, None),  # s == max_staleness is accepted
        (5, 1, 3, RejectReason.STALE),  # s == max_staleness + 1 is not
        (5, 0, None, None),  # no bound
        (5, 6, None, RejectReason.FUTURE_VERSION),
        (0, 1, 10, RejectReason.FUTURE_VERSION),
    ],
)
def test_max_staleness_and_future_version(
    current: int, base: int, max_staleness: int | None, reason: RejectReason | None
) -> None:
    got = validate_update(
        _update(base), num_params=3, current_version=current, max_staleness=max_staleness
    )
    assert (got.reason if got else None) == reason
    if got is not None:
        assert got.update_id == "u" and got.detail
