"""Per-update L2 norm clipping.

Why: one device (faulty or malicious) must not move the model arbitrarily far, and DP
needs a known bound on each update's contribution (McMahan et al., "Learning
Differentially Private Recurrent Language Models" (DP-FedAvg), ICLR 2018, flat clipping).
clip(d) = d * min(1, C / ||d||_2). The core applies it as a scale factor folded into the
accumulation, so clipping costs one extra read of the delta and no copy.
"""

from __future__ import annotations

import math

import numpy as np

from fedstream.pipelines.update import FloatVector

__all__ = ["clip_factor", "clip_scale", "l2_norm"]


def l2_norm(vector: FloatVector) -> float:
    """||v||_2 of a finite vector, without overflow for very large entries."""
    squared = float(np.dot(vector, vector))  # float32 BLAS: one fast pass
    if math.isfinite(squared):
        return math.sqrt(squared)
    peak = float(np.max(np.abs(vector)))  # overflowed: rescale so the sum fits
    scaled = vector.astype(np.float64) / peak
    return peak * math.sqrt(float(np.dot(scaled, scaled)))


def clip_scale(norm: float, clip_norm: float) -> float:
    """The factor min(1, C / ||v||) that clips a vector of L2 norm `norm` to `clip_norm`."""
    return 1.0 if norm <= clip_norm else clip_norm / norm


def clip_factor(squared_norm: float, clip_norm: float | None) -> float:
    """The scale an update of squared L2 norm `squared_norm` (from validation, which
    computes it anyway) is multiplied by: `clip_scale`, or 1 when clipping is off."""
    return 1.0 if clip_norm is None else clip_scale(math.sqrt(squared_norm), clip_norm)
