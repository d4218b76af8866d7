"""Input validation: every reason code, the fast finiteness path, and its fallbacks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.update import ClientUpdate
from fedstream.pipelines.validation import (
    RejectReason,
    UpdateRejectedError,
    check_update,
    finite_squared_norm,
    validate_update,
)
from fedstream.schemas import DeadLetterReason

P = 4


def _check(delta: Any, num_samples: Any = 1, base: int = 3) -> RejectReason | None:
    update = ClientUpdate("u", base, num_samples, delta)
    got = validate_update(update, num_params=P, current_version=3, max_staleness=None)
    return None if got is None else got.reason


def test_reason_codes_are_exactly_the_contract() -> None:
    assert {r.value for r in RejectReason} == {
        "stale",
        "future_version",
        "bad_shape",
        "bad_dtype",
        "non_finite",
        "bad_num_samples",
        "bad_field",
    }
    # every code is a dead-letter reason of the wire contract
    assert {r.value.upper() for r in RejectReason} <= {r.value for r in DeadLetterReason}


def test_limits_bound_num_samples_and_the_delta_norm() -> None:
    limits = InputLimits(max_num_samples=100, max_delta_norm=2.0)

    def check(delta: Any, num_samples: int) -> RejectReason | float:
        update = ClientUpdate("u", 3, num_samples, np.asarray(delta, dtype=np.float32))
        got = check_update(
            update, num_params=P, current_version=3, max_staleness=None, limits=limits
        )
        return got.reason if not isinstance(got, float) else got

    assert check([1, 1, 1, 1], 100) == 4.0  # norm 2: at the bound
    assert check([1, 1, 1, 1], 101) is RejectReason.BAD_NUM_SAMPLES
    assert check([1, 1, 1, 1.01], 1) is RejectReason.BAD_FIELD
    assert check([3e38, 3e38, 0, 0], 1) is RejectReason.BAD_FIELD  # finite, norm overflows


def test_limits_refuse_bounds_whose_sums_could_overflow() -> None:
    with pytest.raises(ValueError, match="Avro long"):
        InputLimits(max_num_samples=2**62, max_window_updates=4)
    with pytest.raises(ValueError, match="float32"):
        InputLimits(max_delta_norm=9e14, max_num_samples=10**13, max_window_updates=10**5)
    with pytest.raises(ValueError, match="max_models"):
        InputLimits(max_models=0)
    assert InputLimits().id_problem("model_id", "m" * 256) is None
    assert "257 bytes" in str(InputLimits().id_problem("model_id", "m" * 257))
    assert "258 bytes" in str(InputLimits().id_problem("model_id", "é" * 129))
    assert InputLimits().id_problem("update_id", "") == "update_id is empty"


@pytest.mark.parametrize(
    ("delta", "reason"),
    [
        (np.zeros(P, np.float32), None),
        (np.zeros(P + 1, np.float32), RejectReason.BAD_SHAPE),
        (np.zeros((2, 2), np.float32), RejectReason.BAD_SHAPE),
        (np.zeros((), np.float32), RejectReason.BAD_SHAPE),
        (np.zeros(P, np.float64), RejectReason.BAD_DTYPE),
        (np.zeros(P, np.float16), RejectReason.BAD_DTYPE),
        (np.zeros(P, np.int32), RejectReason.BAD_DTYPE),
        ([0.0, 0.0, 0.0, 0.0], RejectReason.BAD_DTYPE),
        (np.array([0, np.nan, 0, 0], np.float32), RejectReason.NON_FINITE),
        (np.array([0, 0, np.inf, 0], np.float32), RejectReason.NON_FINITE),
        (np.array([-np.inf, 0, 0, 0], np.float32), RejectReason.NON_FINITE),
        (np.array([np.inf, -np.inf, 0, 0], np.float32), RejectReason.NON_FINITE),
        # finite but overflowing float32 when squared: must still be accepted
        (np.array([3e38, -3e38, 1e30, 0], np.float32), None),
    ],
)
def test_delta_checks(delta: Any, reason: RejectReason | None) -> None:
    assert _check(delta) == reason


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "3", None])
def test_bad_num_samples(n: Any) -> None:
    assert _check(np.zeros(P, np.float32), num_samples=n) == RejectReason.BAD_NUM_SAMPLES


def test_num_samples_accepts_numpy_integers() -> None:
    assert _check(np.zeros(P, np.float32), num_samples=np.int64(7)) is None


def test_version_checks_come_first() -> None:
    # a future update with a broken payload is reported as future_version
    assert _check(np.zeros(1, np.float64), base=9) == RejectReason.FUTURE_VERSION


def test_check_update_returns_the_squared_norm() -> None:
    update = ClientUpdate("u", 0, 1, np.array([3, 4, 0, 0], np.float32))
    got = check_update(update, num_params=P, current_version=0, max_staleness=None)
    assert got == pytest.approx(25.0)


def test_rejected_error_carries_the_rejection() -> None:
    update = ClientUpdate("u9", 0, 0, np.zeros(P, np.float32))
    rejection = validate_update(update, num_params=P, current_version=0, max_staleness=None)
    assert rejection is not None
    err = UpdateRejectedError(rejection)
    assert err.rejection is rejection and "u9" in str(err) and "bad_num_samples" in str(err)


@settings(max_examples=80, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.integers(1, 64),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    )
)
def test_finite_squared_norm_agrees_with_numpy(v: np.ndarray[Any, np.dtype[np.float32]]) -> None:
    got = finite_squared_norm(v)
    if not np.isfinite(v).all():
        assert got is None
    else:
        assert got is not None
        expected = float(np.sum(v.astype(np.float64) ** 2))
        assert got == pytest.approx(expected, rel=1e-4)
