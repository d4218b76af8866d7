"""Offline replay of a model's updates through the aggregation core, for comparing releases.

The job must publish exactly what `Aggregator` computes for the same accepted updates in
the same order; `replay` is that reference, with no Avro, Kafka or Flink involved.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from fedstream.pipelines.aggregator import Aggregator
from fedstream.pipelines.config import AggregationConfig
from fedstream.pipelines.model_state import ModelState
from fedstream.pipelines.update import ClientUpdate
from tests.support.records import F32

__all__ = ["Sent", "replay", "replay_windows"]


class Sent(NamedTuple):
    """An update as a device sent it (and as the job should have absorbed it)."""

    update_id: str
    base_version: int
    num_samples: int
    delta: F32


def _core(aggregation: AggregationConfig | Mapping[str, Any], initial: F32) -> Aggregator:
    """The unsharded core at version 0 with parameters `initial`."""
    config = (
        aggregation
        if isinstance(aggregation, AggregationConfig)
        else AggregationConfig.from_dict(dict(aggregation))
    )
    return Aggregator(config, ModelState(np.array(initial, np.float32), 0))


def _add(aggregator: Aggregator, update: Sent, now: float) -> None:
    delta = np.array(update.delta, np.float32)
    aggregator.add(
        ClientUpdate(update.update_id, update.base_version, update.num_samples, delta), now
    )


def replay(
    aggregation: AggregationConfig | Mapping[str, Any],
    initial: F32,
    updates: Iterable[Sent],
    *,
    close_after: Collection[int] = (),
    now: float = 0.0,
) -> dict[int, F32]:
    """Params of every version the core reaches for `updates` in order (0 = `initial`).

    A window closes as soon as `should_close(now)` holds (count windows), and also after
    the updates at the indices in `close_after` (where a time window's timer fired).
    """
    aggregator = _core(aggregation, initial)
    out = {0: np.array(initial, np.float32)}
    for index, update in enumerate(updates):
        _add(aggregator, update, now)
        if aggregator.should_close(now) or index in close_after:
            closed = aggregator.close()
            out[closed.state.version] = closed.state.params.copy()
    return out


def replay_windows(
    aggregation: AggregationConfig | Mapping[str, Any],
    initial: F32,
    windows: Sequence[Sequence[Sent]],
) -> dict[int, F32]:
    """Params of every version when window i holds exactly `windows[i]`, in that order:
    the unsharded core over the updates a sharded model's release i + 1 lists in its
    lineage (a sharded count window may close with more than K updates)."""
    aggregator = _core(aggregation, initial)
    out = {0: np.array(initial, np.float32)}
    for window in windows:
        for update in window:
            _add(aggregator, update, 0.0)
        closed = aggregator.close()
        out[closed.state.version] = closed.state.params.copy()
    return out
