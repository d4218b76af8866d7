"""When a model's buffer closes: count, time, or whichever comes first (hybrid).

Pure functions of the buffer state and a clock value handed in by the caller, never a
wall-clock read: the Flink job passes event/processing time, tests pass numbers, and a
restored job makes the same decision it would have made before the crash.

- count window (FedBuff, Nguyen et al. 2022): close once K updates are buffered;
- time window: close T seconds after the *first* buffered update, so a quiet fleet still
  produces releases while an empty buffer never produces an empty release;
- hybrid: whichever of the two happens first.
"""

from __future__ import annotations

from fedstream.pipelines.config import WindowConfig

__all__ = ["window_deadline", "window_should_close"]


def window_deadline(policy: WindowConfig, first_added_at: float | None) -> float | None:
    """The clock value at which a time/hybrid window closes, for registering a timer.

    None when there is no time bound or nothing is buffered (no timer needed).
    """
    if policy.seconds is None or first_added_at is None:
        return None
    return first_added_at + policy.seconds


def window_should_close(
    policy: WindowConfig, count: int, first_added_at: float | None, now: float
) -> bool:
    """True when the buffer (holding `count` updates, the first added at `first_added_at`)
    must close at clock `now`. Boundaries are inclusive: count == K closes, and so does
    now == deadline (a Flink timer fires *at* its timestamp)."""
    if count <= 0:
        return False
    if policy.count is not None and count >= policy.count:
        return True
    deadline = window_deadline(policy, first_added_at)
    return deadline is not None and now >= deadline
