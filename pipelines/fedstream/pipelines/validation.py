"""Input validation with typed, machine-readable rejections (the DLQ `reason` codes).

Why validate in the core: a single NaN or a wrong-length delta would poison every later
model version, and the job must route the record to the dead-letter topic with a reason
rather than crash. Checks run cheapest first; the finiteness check is the only pass over the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import cast

import numpy as np

from fedstream.pipelines.clipping import l2_norm
from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.staleness import staleness
from fedstream.pipelines.update import ClientUpdate, FloatVector

__all__ = [
    "RejectReason",
    "Rejection",
    "UpdateRejectedError",
    "check_content",
    "check_update",
    "finite_squared_norm",
    "staleness_problem",
    "validate_update",
]


class RejectReason(StrEnum):
    """The complete set of reasons an update is refused (values are the DLQ codes)."""

    STALE = "stale"
    FUTURE_VERSION = "future_version"
    BAD_SHAPE = "bad_shape"
    BAD_DTYPE = "bad_dtype"
    NON_FINITE = "non_finite"
    BAD_NUM_SAMPLES = "bad_num_samples"
    BAD_FIELD = "bad_field"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one update was refused: a stable `reason` code plus a human-readable detail."""

    update_id: str
    reason: RejectReason
    detail: str


class UpdateRejectedError(ValueError):
    """Raised by APIs that cannot return a rejection (e.g. `Aggregator.add`)."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(
            f"update {rejection.update_id!r} rejected ({rejection.reason}): {rejection.detail}"
        )
        self.rejection = rejection


def finite_squared_norm(vector: FloatVector) -> float | None:
    """||v||^2 if every element of `v` is finite, else None.

    One BLAS dot product answers both questions: NaN and inf propagate into the sum of
    squares, so a finite result proves every element finite (and is reused for clipping).
    A non-finite result may also be overflow of large finite values; only then is the
    exact elementwise test run, and the norm recomputed without overflow.
    """
    squared = float(np.dot(vector, vector))
    if math.isfinite(squared):
        return squared
    if not np.isfinite(vector).all():
        return None
    return l2_norm(vector) ** 2


def validate_update(
    update: ClientUpdate,
    *,
    num_params: int,
    current_version: int,
    max_staleness: int | None,
) -> Rejection | None:
    """Return the first reason `update` cannot be aggregated, or None if it can."""
    checked = check_update(
        update,
        num_params=num_params,
        current_version=current_version,
        max_staleness=max_staleness,
    )
    return checked if isinstance(checked, Rejection) else None


def check_update(
    update: ClientUpdate,
    *,
    num_params: int,
    current_version: int,
    max_staleness: int | None,
    limits: InputLimits | None = None,
) -> Rejection | float:
    """`validate_update`, returning the delta's squared L2 norm when it is accepted.

    The finiteness check computes the norm anyway; returning it saves clipping a pass,
    and bounds the delta's magnitude (`limits.max_delta_norm`) for free.
    """
    problem = staleness_problem(update.base_version, current_version, max_staleness)
    if problem is not None:
        return Rejection(update.update_id, *problem)
    return check_content(update, num_params=num_params, limits=limits)


def staleness_problem(
    base_version: int, current_version: int, max_staleness: int | None
) -> tuple[RejectReason, str] | None:
    """Why an update from `base_version` cannot join a window at `current_version`
    (FUTURE_VERSION or STALE, with the detail), or None. Separate from the content
    checks because a shard of a sharded model checks content without knowing the
    version (`partial_window.py`); the combine step checks this per base version."""
    s = staleness(current_version, base_version)
    if s < 0:
        return (
            RejectReason.FUTURE_VERSION,
            f"base_version {base_version} is newer than the model's {current_version}",
        )
    if max_staleness is not None and s > max_staleness:
        return RejectReason.STALE, f"staleness {s} exceeds max_staleness {max_staleness}"
    return None


def check_content(
    update: ClientUpdate, *, num_params: int, limits: InputLimits | None = None
) -> Rejection | float:
    """The checks that do not depend on the model's version (sample count, dtype, shape,
    finiteness, the limits): a Rejection, or the delta's squared L2 norm."""

    def reject(reason: RejectReason, detail: str) -> Rejection:
        return Rejection(update.update_id, reason, detail)

    n = update.num_samples
    high = limits.max_num_samples if limits is not None else None
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
        return reject(RejectReason.BAD_NUM_SAMPLES, f"num_samples must be an int > 0, got {n!r}")
    if high is not None and n > high:
        return reject(RejectReason.BAD_NUM_SAMPLES, f"num_samples {n} exceeds the limit {high}")
    delta = update.delta
    if not isinstance(delta, np.ndarray) or delta.dtype != np.float32:
        found = delta.dtype if isinstance(delta, np.ndarray) else type(delta).__name__
        return reject(RejectReason.BAD_DTYPE, f"delta must be float32, got {found}")
    if delta.shape != (num_params,):
        return reject(
            RejectReason.BAD_SHAPE, f"delta shape {delta.shape} is not the model's ({num_params},)"
        )
    squared_norm = finite_squared_norm(cast(FloatVector, delta))
    if squared_norm is None:
        return reject(RejectReason.NON_FINITE, "delta contains NaN or infinity")
    if limits is not None and squared_norm > limits.max_delta_norm**2:
        return reject(
            RejectReason.BAD_FIELD,
            f"delta L2 norm {math.sqrt(squared_norm):.4g} exceeds the limit "
            f"{limits.max_delta_norm:g}",
        )
    return squared_norm
