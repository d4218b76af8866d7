"""Pure update rules the aggregator composes: FedAsync's mixing, FedBuff's divisor.

FedAsync (Xie, Koyejo, Gupta, "Asynchronous Federated Optimization", 2019, Algorithm 1):
a device trains from the model of version tau and returns x_new; the server mixes

    x_t = (1 - a_t) x_{t-1} + a_t x_new,    a_t = a * s(t - tau)

A device sends its delta, x_new = x_base + delta, x_base the parameters of version tau, so
the server needs x_base: `mix_with_base` is that rule, `VersionHistory`-like bookkeeping is
`prune_history` (the last `keep` versions, the bound on its memory). `add_delta` is the
re-based shortcut x <- x + a_t delta, which equals the paper's rule only for staleness 0;
with n updates in flight from about the same base it steps ~n a_t deltas and diverges.

FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation",
AISTATS 2022, Algorithm 1) divides a buffer's sum of staleness-weighted deltas by K, the
number of updates; `window_divisor` offers that (generalised to sample weights: the sum
of the undiscounted weights) next to the weighted mean's sum of weights.
With sum-of-weights, a window whose updates are all equally stale (the backlog after an
outage) takes a full step: the discount cancels. With K it still discounts.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedstream.pipelines.config import AggregationConfig, FedAsyncRule, Mode, Normalization
from fedstream.pipelines.update import FloatVector

__all__ = [
    "MAX_HISTORY_BYTES",
    "add_delta",
    "check_history_bound",
    "history_bytes",
    "mix_with_base",
    "prune_history",
    "sample_weight",
    "window_divisor",
]

#: The most memory (and checkpoint size) FedAsync's version history may take per model.
MAX_HISTORY_BYTES = 256 * 1024 * 1024


def mix_with_base(
    current: FloatVector, base: FloatVector, delta: FloatVector, alpha: float
) -> FloatVector:
    """Xie et al.'s x <- (1 - alpha) x + alpha (x_base + delta), as a new float32 array."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    out = np.add(base, delta, dtype=np.float32)
    out -= current
    out *= np.float32(alpha)
    out += current  # x + alpha (x_base + delta - x): one pass, no second temporary
    return out


def add_delta(current: FloatVector, delta: FloatVector, alpha: float) -> FloatVector:
    """The re-based rule x <- x + alpha delta, as a new float32 array."""
    out = np.multiply(delta, np.float32(alpha), dtype=np.float32)
    out += current
    return out


def prune_history(
    history: Mapping[int, FloatVector], version: int, keep: int
) -> dict[int, FloatVector]:
    """The entries of `history` among the `keep` versions before `version`.

    An update at most `keep` versions stale (max_staleness) has its base in here, so the
    history never holds more than `keep` parameter vectors."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0; got {keep}")
    return {v: p for v, p in history.items() if version - keep <= v < version}


def sample_weight(weight_by_samples: bool, num_samples: int) -> float:
    """An update's undiscounted weight: num_samples with `weight_by_samples`, else 1.
    Its staleness weight multiplies it; COUNT divides the window by the sum of these."""
    return float(num_samples) if weight_by_samples else 1.0


def window_divisor(
    normalization: Normalization, total_weight: float, undiscounted_weight: float
) -> float:
    """What a window's weighted sum is divided by (0: no step).

    WEIGHT_SUM: the sum of the weights. COUNT: the sum of the weights the updates would
    have had with no staleness, K (or sum n_i with weight_by_samples), so a stale window
    steps (mean discount) x (its weighted mean) and a fresh one exactly its mean."""
    if normalization is Normalization.COUNT:
        return float(undiscounted_weight)
    return float(total_weight)


def history_bytes(config: AggregationConfig, num_params: int) -> int:
    """Upper bound of the version history `config` keeps: max_staleness float32 vectors
    for FedAsync MIX_WITH_BASE, nothing otherwise."""
    if config.mode is not Mode.FEDASYNC or config.fedasync_rule is not FedAsyncRule.MIX_WITH_BASE:
        return 0
    assert config.max_staleness is not None  # AggregationConfig refuses it unbounded
    return config.max_staleness * num_params * 4


def check_history_bound(config: AggregationConfig, num_params: int) -> None:
    """Refuse (ValueError) a history above MAX_HISTORY_BYTES: it lives in job state."""
    size = history_bytes(config, num_params)
    if size > MAX_HISTORY_BYTES:
        raise ValueError(
            f"fedasync_rule 'mix_with_base' would keep max_staleness={config.max_staleness} "
            f"versions of {num_params} parameters ({size} bytes) in job state; the limit is "
            f"{MAX_HISTORY_BYTES} bytes: lower max_staleness"
        )
