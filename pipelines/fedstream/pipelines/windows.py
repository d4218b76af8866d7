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

__all__ = [
    "MAX_ADAPTIVE_COUNT",
    "adaptive_count",
    "next_adaptive_count",
    "observed_concurrency",
    "window_deadline",
    "window_should_close",
]


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


#: Bounds of an adaptive window's size (its running sum is O(params) whatever K is).
MAX_ADAPTIVE_COUNT = 4096
#: Weight of the newest window in the smoothed concurrency estimate.
CONCURRENCY_SMOOTHING = 0.3


def observed_concurrency(count: int, mean_staleness: float) -> float:
    """Updates in flight, from one closed window (Little's law in arrivals).

    A device that starts at a uniformly random position of a K-update window and is
    in flight while L updates arrive comes back floor((p + L) / K) versions stale, L / K on
    average; so K x mean staleness estimates L without any clock."""
    return float(count) * float(mean_staleness)


def next_adaptive_count(
    previous: float | None, count: int, mean_staleness: float
) -> tuple[float, int]:
    """(smoothed concurrency, next K) after a window of `count` updates closed.

    K follows the estimated concurrency L: with K = L a device's update arrives about one
    window after it started, i.e. staleness ~1 (what FedBuff's K is tuned for, Nguyen et
    al. 2022, and what Papaya sizes its buffer by, Huba et al., MLSys 2022). Exponentially
    smoothed so one odd window does not swing K; K in [1, MAX_ADAPTIVE_COUNT]."""
    observed = observed_concurrency(count, mean_staleness)
    estimate = (
        observed
        if previous is None
        else (1 - CONCURRENCY_SMOOTHING) * previous + CONCURRENCY_SMOOTHING * observed
    )
    estimate = min(max(estimate, 1.0), float(MAX_ADAPTIVE_COUNT))
    return estimate, adaptive_count(estimate)


def adaptive_count(concurrency: float) -> int:
    """The window size for a concurrency estimate: round(L) in [1, MAX_ADAPTIVE_COUNT]."""
    return min(max(round(concurrency), 1), MAX_ADAPTIVE_COUNT)
