"""Window decisions (count / time / hybrid) at the boundary clocks, and deadlines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstream.pipelines.config import WindowConfig
from fedstream.pipelines.windows import window_deadline, window_should_close

COUNT = WindowConfig(count=3)
TIME = WindowConfig(count=None, seconds=10.0)
HYBRID = WindowConfig(count=3, seconds=10.0)


@pytest.mark.parametrize(
    ("policy", "count", "first", "now", "closes"),
    [
        # count window: K - 1 stays open, K closes, clocks are irrelevant
        (COUNT, 2, 100.0, 1e9, False),
        (COUNT, 3, 100.0, 100.0, True),
        (COUNT, 4, 100.0, 100.0, True),
        (COUNT, 0, None, 1e9, False),
        # time window: T after the first buffered update, inclusive
        (TIME, 1, 100.0, 109.999, False),
        (TIME, 1, 100.0, 110.0, True),
        (TIME, 1, 100.0, 110.001, True),
        (TIME, 1000, 100.0, 100.0, False),  # no count bound
        (TIME, 0, None, 1e9, False),  # an empty buffer never closes
        # hybrid: whichever comes first
        (HYBRID, 2, 100.0, 109.999, False),
        (HYBRID, 3, 100.0, 100.0, True),
        (HYBRID, 1, 100.0, 110.0, True),
        (HYBRID, 0, None, 1e9, False),
    ],
)
def test_window_boundaries(
    policy: WindowConfig, count: int, first: float | None, now: float, closes: bool
) -> None:
    assert window_should_close(policy, count, first, now) is closes


def test_deadline() -> None:
    assert window_deadline(COUNT, 100.0) is None  # no timer for a pure count window
    assert window_deadline(TIME, None) is None  # nothing buffered, no timer
    assert window_deadline(TIME, 100.0) == 110.0
    assert window_deadline(HYBRID, 5.5) == 15.5


@settings(max_examples=100, deadline=None)
@given(
    k=st.integers(1, 50),
    seconds=st.floats(0.001, 1e6),
    count=st.integers(0, 100),
    first=st.floats(0, 1e9),
    dt=st.floats(0, 2e6),
)
def test_hybrid_is_count_or_time(
    k: int, seconds: float, count: int, first: float, dt: float
) -> None:
    now = first + dt
    f = first if count > 0 else None
    hybrid = window_should_close(WindowConfig(count=k, seconds=seconds), count, f, now)
    by_count = window_should_close(WindowConfig(count=k), count, f, now)
    by_time = window_should_close(WindowConfig(count=None, seconds=seconds), count, f, now)
    assert hybrid == (by_count or by_time)
    deadline = window_deadline(WindowConfig(count=k, seconds=seconds), f)
    if deadline is not None:
        # the timer registered at the deadline sees a closing window
        assert window_should_close(WindowConfig(count=None, seconds=seconds), count, f, deadline)
