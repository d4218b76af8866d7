"""Opt-in cProfile of the job's Python operators: where does an update's time go?

A JVM profiler sees a Python operator as one opaque native call (thread mode: pemja in
the task thread; process mode: a Beam worker process), and a profiler attached from
outside cannot see into pemja's embedded interpreter either. So each Python function
profiles itself when the environment variable ``FEDSTREAM_PROFILE_DIR`` names a folder:
every call is run under its own `cProfile.Profile`, and the statistics are written to
``<dir>/<operator>-<pid>-<instance>.pstats`` at most every `DUMP_EVERY_S` seconds, so a
job that is SIGKILLed (as the benchmarks stop it) still leaves a recent profile behind.

Times are the thread's CPU time (`time.thread_time`), not wall time: on a busy machine a
descheduled thread would otherwise charge the wait to whatever Python frame it was in.
Calls into the JVM (Flink state access) run on the same thread and are counted.

Off (the default) it costs one attribute check per record. On, cProfile slows
Python-heavy code by up to 2x: profile runs are for attribution, never for throughput
numbers (`bench.throughput --profile` does both, in separate runs).
"""

from __future__ import annotations

import cProfile
import itertools
import os
import time
from pathlib import Path
from types import TracebackType

__all__ = ["DUMP_EVERY_S", "ENV_VAR", "OperatorProfile"]

ENV_VAR = "FEDSTREAM_PROFILE_DIR"
DUMP_EVERY_S = 2.0
_instances = itertools.count()


class OperatorProfile:
    """``with profile: ...`` around each call of one operator instance."""

    def __init__(self, operator: str) -> None:
        folder = os.environ.get(ENV_VAR)
        self._profile = cProfile.Profile(time.thread_time) if folder else None
        self._path = (
            Path(folder) / f"{operator}-{os.getpid()}-{next(_instances)}.pstats" if folder else None
        )
        self._last_dump = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self._profile is not None

    def __enter__(self) -> None:
        if self._profile is not None:
            self._profile.enable()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._profile is None:
            return
        self._profile.disable()
        if time.monotonic() - self._last_dump >= DUMP_EVERY_S:
            self.dump()

    def dump(self) -> None:
        """Write the statistics so far (atomically: a reader never sees half a file)."""
        if self._profile is None or self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        partial = self._path.with_suffix(".tmp")
        self._profile.dump_stats(partial)
        partial.replace(self._path)
        self._last_dump = time.monotonic()
