"""The throughput benchmark's arithmetic: medians and spreads of runs, and when the JIT settled.

Pure functions on numbers, unit-tested (tests/unit/bench/test_throughput_stats.py); the
benchmark itself (bench/throughput.py) only measures and calls these.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["JIT_SETTLED_SHARE", "Spread", "jit_settled", "percentile", "spread"]

#: The JIT has settled when its compiler threads take less than this share of the job's CPU
#: over a warm-up burst (a long-running job's steady state: it compiles now and then).
JIT_SETTLED_SHARE = 0.03


@dataclass(frozen=True)
class Spread:
    """The median of some runs' values, with their lowest and highest."""

    median: float
    low: float
    high: float
    values: tuple[float, ...]

    def text(self, digits: int = 1) -> str:
        """'median (low-high)', or the one value of a single run."""
        if len(self.values) == 1:
            return f"{self.median:,.{digits}f}"
        return f"{self.median:,.{digits}f} ({self.low:,.{digits}f}-{self.high:,.{digits}f})"


def spread(values: Sequence[float]) -> Spread:
    """Median (the mean of the middle two for an even count), lowest and highest."""
    if not values:
        raise ValueError("no runs")
    return Spread(statistics.median(values), min(values), max(values), tuple(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between the nearest ranks,
    as numpy's default: p99 of 100 latencies lies between the 99th and the 100th."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    below = int(rank)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)


def jit_settled(jit_cpu_s: float, job_cpu_s: float, threshold: float = JIT_SETTLED_SHARE) -> bool:
    """Whether a burst ran in the steady state: the JIT compiler threads took under
    `threshold` of the job's CPU. A burst that used no CPU at all proves nothing."""
    return job_cpu_s > 0 and jit_cpu_s / job_cpu_s < threshold
