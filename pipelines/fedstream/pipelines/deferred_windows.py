"""Open windows written to Flink state once per checkpoint instead of after every update.

The aggregate used to seal its model's open window (0.4 MB at 100k parameters, 4 MB at
1M), pickle it and hand it to the JVM after every absorbed update, though Flink reads
keyed state only when it snapshots it. In thread mode the job runs the aggregate in
`io.fedstream.flink.FlushingKeyedProcessOperator`, which before each checkpoint barrier
(and at the end of input) sets each key it processed since the last one and calls the
function's `on_timer` with `FLUSH_TIMESTAMP`; the function writes that model's window
there. Between two barriers the newest window of such a model lives only in the
function's live cache, which `DeferredWindows` keeps from evicting it.

Why nothing is lost or doubled:

- A checkpoint holds every window write that precedes its barrier, and the flush runs
  before the barrier: the state it snapshots matches the source offsets it snapshots.
- Only a plain update that leaves the window open is deferred. Anything that can close
  the window (a release), fold in a shard's partial, register or fire a timer saves the
  unsaved window first, so those steps, and their rollback on failure (`contain`), see
  state that is the truth, as before.
- A failure while a window is unsaved cannot roll back to Flink state (it is older than
  the truth). If the failed step left the window untouched (`window_mark`), the live
  window is the state before the record, and the record is contained as before. If it
  changed it, the job fails with `UnsavedWindowError` and Flink restarts from the last
  checkpoint: the one failure that costs a restart instead of one record, reachable only
  past every check of the update (the in-place sum), never by what a device sends.
- At most `limit` windows (the live cache's size, `runtime.live_models`) wait unsaved;
  a model past that is written after each update as before, so memory stays bounded.

A shard of a sharded model (`shard_function.ShardFunction`, `runtime.model_shards` > 1)
runs in the same operator and defers its open partial window the same way: an update
that cannot send the partial on (`ShardProcess.flushes_with_next`) leaves it unsaved,
anything else (the update that sends it, the flush timer, a registration) writes it
first, and a failure is judged by `partial_mark`.

In process mode (no such operator) nothing is deferred.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fedstream.pipelines.aggregator import Aggregator
from fedstream.pipelines.partial_window import PartialWindow

__all__ = [
    "FLUSH_TIMESTAMP",
    "DeferredWindows",
    "UnsavedWindowError",
    "partial_mark",
    "window_mark",
]

#: The `on_timer` time that means "save this key's window now" (Java's Long.MIN_VALUE,
#: `FlushingKeyedProcessOperator.FLUSH_TIMESTAMP`): no processing-time timer has it.
FLUSH_TIMESTAMP = -(2**63)


class UnsavedWindowError(RuntimeError):
    """A failed step changed a window that Flink state does not hold yet: only a restart
    from the last checkpoint restores a consistent model."""


def window_mark(aggregator: Aggregator | None) -> tuple[int, int]:
    """What changes when a step touches a model in memory: its state object (replaced by
    a close or a FedAsync mix) and its window's revision (bumped by every in-place add or
    clear)."""
    if aggregator is None:
        return (0, -1)
    return (id(aggregator.state), aggregator.buffer.revision)


def partial_mark(partial: PartialWindow | None) -> tuple[int, int]:
    """`window_mark` of a shard's open partial: the object (replaced when it is sent on)
    and its revision (bumped by every in-place add)."""
    return (0, -1) if partial is None else (id(partial), partial.revision)


class DeferredWindows:
    """The models whose open window in memory is newer than the one in Flink state."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.limit = limit  # 0: never defer (process mode, or no live cache)
        self._unsaved: set[str] = set()

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._unsaved

    def __len__(self) -> int:
        return len(self._unsaved)

    def defer(self, model_id: str) -> bool:
        """True if `model_id`'s window write may wait for the flush (now counted as
        unsaved); False if it must be written now (the limit is reached)."""
        if model_id in self._unsaved:
            return True
        if len(self._unsaved) >= self.limit:
            return False
        self._unsaved.add(model_id)
        return True

    def trim(self, live: MutableMapping[str, Any], size: int) -> None:
        """Evict the least recently used entries of the live cache `live` (oldest first)
        past `size`, never an unsaved one: its window exists only there until the flush.
        `size` >= `limit`, so a saved entry is always there to evict."""
        while len(live) > size:
            del live[next(key for key in live if key not in self._unsaved)]

    def saved(self, model_id: str) -> None:
        """`model_id`'s window in state is the one in memory again."""
        self._unsaved.discard(model_id)
