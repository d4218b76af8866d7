"""Robust coordinate-wise reducers over a buffer of deltas.

Why they need the buffer: a weighted mean can be kept as a running sum (O(params) memory),
but order statistics cannot: the median of a coordinate depends on every value seen. So
these reducers take the stacked deltas (K x params) that `BufferedAccumulator` keeps.

Both are the coordinate-wise estimators of Yin, Chen, Ramchandran, Bartlett,
"Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates", ICML 2018,
generalised to per-update weights (staleness, samples) so that robust mode still honours
the staleness discount. With equal weights they are exactly the unweighted estimators.
Updates of weight 0 are dropped first, so a zero-weight update changes nothing.

Note: num_samples is reported by the device; with `weight_by_samples` an attacker can buy
weight by lying about it, which undermines robustness. Prefer weight_by_samples=False here.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fedstream.pipelines.update import FloatVector

__all__ = ["trimmed_mean", "weighted_median"]

Weights = npt.NDArray[np.float64]
Stack = npt.NDArray[np.float32]


def _positive(deltas: Stack, weights: Weights) -> tuple[Stack, Weights]:
    if deltas.ndim != 2 or weights.shape != (deltas.shape[0],):
        raise ValueError(
            f"need deltas (K, P) and weights (K,); got {deltas.shape}, {weights.shape}"
        )
    if np.any(weights < 0):
        raise ValueError("weights must be >= 0")
    keep = weights > 0
    if keep.all():
        return deltas, weights
    return deltas[keep], weights[keep]


def weighted_median(deltas: Stack, weights: Weights) -> FloatVector:
    """Coordinate-wise weighted median.

    Per coordinate, sort the values; the median is the midpoint of the first value whose
    cumulative weight reaches half the total and the first that passes it. With equal
    weights this is `np.median` (mean of the two middle values for even K).
    """
    deltas, weights = _positive(deltas, weights)
    if deltas.shape[0] == 0:
        return np.zeros(deltas.shape[1], dtype=np.float32)
    if np.all(weights == weights[0]):
        return np.asarray(np.median(deltas, axis=0), dtype=np.float32)
    order = np.argsort(deltas, axis=0, kind="stable")
    values = np.take_along_axis(deltas, order, axis=0)
    # Normalising by the largest weight keeps integer-valued weights exact in the cumsum.
    cumulative = np.cumsum((weights / weights.max())[order], axis=0)
    half = cumulative[-1] / 2.0
    lower = np.argmax(cumulative >= half, axis=0)
    upper = np.argmax(cumulative > half, axis=0)
    cols = np.arange(deltas.shape[1])
    lo = values[lower, cols]
    hi = values[upper, cols]
    return np.asarray(lo + (hi - lo) * np.float32(0.5), dtype=np.float32)


def trimmed_mean(deltas: Stack, weights: Weights, trim_fraction: float) -> FloatVector:
    """Coordinate-wise trimmed mean: per coordinate drop the floor(trim_fraction * K)
    smallest and largest values, then take the weighted mean of the rest."""
    if not 0.0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be in [0, 0.5); got {trim_fraction}")
    deltas, weights = _positive(deltas, weights)
    k_total = deltas.shape[0]
    if k_total == 0:
        return np.zeros(deltas.shape[1], dtype=np.float32)
    k = math.floor(trim_fraction * k_total)
    if k == 0:
        kept, kept_w = deltas, np.broadcast_to(weights[:, None], deltas.shape)
    else:
        order = np.argsort(deltas, axis=0, kind="stable")[k : k_total - k]
        kept = np.take_along_axis(deltas, order, axis=0)
        kept_w = weights[order]
    total = np.einsum("kp,kp->p", kept_w, kept, dtype=np.float64)
    return np.asarray(total / kept_w.sum(axis=0), dtype=np.float32)
