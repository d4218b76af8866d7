"""The combine step of a sharded model: fold shards' partials into the model's window.

The combiner keyed by the model is an ordinary `Aggregator` (it holds the parameters,
the server optimizer's state and the version), fed partials instead of updates:
`fold_partial` weighs each base version's sum S_b by the staleness weight s(v - b) at
the model's current version v and adds it to the open window in one params-sized pass
(`RunningSumAccumulator.add_sum`), and the window closes with `Aggregator.close`. So the
normalization (COUNT or WEIGHT_SUM, `mixing.window_divisor`), the DP noise and its seed,
the server optimizer (FedOpt, Reddi et al. 2021), the adaptive window's estimate and the
lineage are the unsharded core's own code, not a copy. Within one window v is constant, so

    sum_b s(v - b) S_b = sum_i s(v - b_i) n_i c_i d_i

is FedBuff's weighted sum (Nguyen et al., AISTATS 2022) exactly, in real arithmetic;
in float32 the two differ only by the order of the additions (`partial_window.py`).

A base version staler than max_staleness at v is rejected as a whole (every update id
of it, reason STALE), and so is one newer than v (FUTURE_VERSION): the checks and
details of `validation.staleness_problem`, which the unsharded core applies per update.
The combiner's open window holds one params-sized sum whatever the number of partials
or base versions, because v is fixed until the window closes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fedstream.pipelines.accumulator import RunningSumAccumulator
from fedstream.pipelines.aggregator import Aggregator, ClosedWindow
from fedstream.pipelines.config import AggregationConfig
from fedstream.pipelines.model_state import ModelState
from fedstream.pipelines.partial_window import PartialWindow, check_shardable
from fedstream.pipelines.validation import Rejection, staleness_problem

__all__ = ["CombinedWindow", "combine", "fold_partial"]


@dataclass(frozen=True, slots=True)
class CombinedWindow:
    """The outcome of `combine`: the closed window (None if every update was rejected,
    so nothing is released and the version stays) and the rejected updates."""

    closed: ClosedWindow | None
    rejections: tuple[Rejection, ...]


def fold_partial(aggregator: Aggregator, partial: PartialWindow) -> list[Rejection]:
    """Absorb a shard's `partial` into `aggregator`'s open window at its current version.

    Returns the rejections of base versions out of range; raises ValueError if the
    aggregator's config cannot be sharded or the partial was built for other settings
    or another parameter count. The partial is read, never kept by reference."""
    config = aggregator.config
    check_shardable(config)
    _check_compatible(config, aggregator.state.num_params, partial)
    buffer = aggregator.buffer
    assert isinstance(buffer, RunningSumAccumulator)  # FedBuff with reducer "mean"
    version = aggregator.state.version
    rejections: list[Rejection] = []
    for base in partial.base_versions:
        entries = partial.entries(base)
        problem = staleness_problem(base, version, config.max_staleness)
        if problem is not None:
            rejections.extend(Rejection(e.update_id, *problem) for e in entries)
            continue
        discount = aggregator.staleness_weight(base)
        buffer.add_sum(
            partial.weighted_sum(base),
            discount,
            weight=discount * partial.undiscounted_weight(base),
            update_ids=[e.update_id for e in entries],
            device_ids=[e.device_id for e in entries],
            staleness=version - base,
            num_samples=sum(e.num_samples for e in entries),
            now=min(e.arrived_at for e in entries),
        )
    return rejections


def combine(
    config: AggregationConfig,
    state: ModelState,
    partials: Iterable[PartialWindow],
    rng: np.random.Generator | None = None,
) -> CombinedWindow:
    """Close one window of a sharded model from its partials (merged or not, any order).

    The pure form of the combiner: `state` is the model before the window, the result's
    `closed.state` after it (version + 1), exactly as `Aggregator.close` would produce
    from the same updates; `rng` as there (None: seeded from config.seed and the new
    version, so a replayed window draws the same DP noise)."""
    aggregator = Aggregator(config, state)
    rejections = [r for partial in partials for r in fold_partial(aggregator, partial)]
    closed = aggregator.close(rng) if aggregator.buffer.count else None
    return CombinedWindow(closed, tuple(rejections))


def _check_compatible(config: AggregationConfig, num_params: int, partial: PartialWindow) -> None:
    if partial.num_params != num_params:
        raise ValueError(
            f"the partial holds {partial.num_params} parameters; the model has {num_params}"
        )
    if not partial.settings.matches(config):
        raise ValueError(
            f"the partial weighs updates with {partial.settings}; the model's config has "
            f"weight_by_samples={config.weight_by_samples}, clip_norm={config.clip_norm}"
        )
