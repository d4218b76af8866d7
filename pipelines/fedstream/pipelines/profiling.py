"""Opt-in profile of the job's Python operators: where does an update's time go?

A JVM profiler sees a Python operator as one opaque native call (thread mode: pemja in
the task thread; process mode: a Beam worker process), and a profiler attached from
outside cannot see into pemja's embedded interpreter either. So each Python function
profiles itself when the environment variable ``FEDSTREAM_PROFILE_DIR`` names a folder,
in one of two modes (``FEDSTREAM_PROFILE_MODE``):

* ``cprofile`` (the default): every call runs under the instance's `cProfile.Profile`,
  written to ``<dir>/<operator>-<pid>-<instance>.pstats``. Attribution inside our code;
  cProfile slows Python-heavy code by up to 2x, and small calls the most.
* ``time``: only the thread CPU time spent inside each call and the number of calls,
  written to ``<operator>-<pid>-<instance>.time`` ("seconds calls"). Cheap enough to
  leave the job's speed alone, so our Python's share of a task thread's CPU is exact:
  the rest of the thread (from /proc) is Flink's and pemja's work around the call
  (network (de)serialization, converting the row to Python objects and back).

Files are written at most every `DUMP_EVERY_S` seconds (and on close), so a job that is
SIGKILLed (as the benchmarks stop it) still leaves a recent profile behind; a reader
divides by the calls in the same file, never by updates it counted elsewhere.

Times are the thread's CPU time (`time.thread_time`), not wall time: on a busy machine a
descheduled thread would otherwise charge the wait to whatever Python frame it was in.
Calls into the JVM (Flink state access) run on the same thread and are counted.
Off (the default) it costs one attribute check per record. `python -m bench.profile_job`
runs both modes on the real job.
"""

from __future__ import annotations

import cProfile
import itertools
import os
import time
from pathlib import Path
from types import TracebackType

__all__ = ["DUMP_EVERY_S", "ENV_VAR", "MODE_VAR", "OperatorProfile", "read_times"]

ENV_VAR = "FEDSTREAM_PROFILE_DIR"
MODE_VAR = "FEDSTREAM_PROFILE_MODE"
DUMP_EVERY_S = 2.0
_instances = itertools.count()


class OperatorProfile:
    """``with profile: ...`` around each call of one operator instance."""

    def __init__(self, operator: str) -> None:
        folder = os.environ.get(ENV_VAR)
        timing = os.environ.get(MODE_VAR, "cprofile") == "time"
        self._profile = cProfile.Profile(time.thread_time) if folder and not timing else None
        stem = Path(folder or ".") / f"{operator}-{os.getpid()}-{next(_instances)}"
        self._path = stem.with_suffix(".time") if timing else stem.with_suffix(".pstats")
        self._timing = bool(folder) and timing
        self._seconds, self._calls, self._entered = 0.0, 0, 0.0
        self._last_dump = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self._profile is not None or self._timing

    def __enter__(self) -> None:
        if self._timing:
            self._entered = time.thread_time()
        elif self._profile is not None:
            self._profile.enable()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._timing:
            self._seconds += time.thread_time() - self._entered
            self._calls += 1
        elif self._profile is not None:
            self._profile.disable()
        else:
            return
        if time.monotonic() - self._last_dump >= DUMP_EVERY_S:
            self.dump()

    def dump(self) -> None:
        """Write what was measured so far (atomically: a reader never sees half a file)."""
        if not self.enabled:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        partial = self._path.with_suffix(".tmp")
        if self._profile is not None:
            self._profile.dump_stats(partial)
        else:
            partial.write_text(f"{self._seconds!r} {self._calls}")
        partial.replace(self._path)
        self._last_dump = time.monotonic()


def read_times(folder: Path) -> dict[str, tuple[float, int]]:
    """Per operator (all its instances and processes): (CPU seconds, calls) so far, from
    the ``time`` mode's files."""
    out: dict[str, tuple[float, int]] = {}
    for path in folder.glob("*.time"):
        operator = path.name.rsplit("-", 2)[0]
        seconds, calls = path.read_text().split()
        before = out.get(operator, (0.0, 0))
        out[operator] = (before[0] + float(seconds), before[1] + int(calls))
    return out
