"""The open window of one model: what it absorbed, and (for FedBuff) the deltas.

Three storage modes, one per class, because what must be kept differs in kind:

- `RunningSumAccumulator` (reducer "mean"): keeps sum_i w_i d_i and sum_i w_i.
  O(params) memory however many updates arrive; the weighted mean is one divide away.
- `BufferedAccumulator` (reducers "trimmed_mean", "median"): keeps EVERY delta and its
  weight, O(K x params) memory, because order statistics cannot be computed from a sum.
- `Accumulator` itself (mode "fedasync"): keeps no delta at all. FedAsync mixes each
  update into the model on arrival; the window only needs the tally (ids, staleness,
  samples, first arrival time) for lineage and for the window decision.

All three are mergeable (`a.merge(b)` is a new accumulator as if a's and b's updates had
been added to one, like river's mergeable statistics) and serialize to a versioned
binary format (see `binary_format.py`) so Flink state can hold and restore them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Self

import numpy as np

from fedstream.pipelines.binary_format import (
    MalformedPayloadError,
    Reader,
    Writer,
    seal,
    unseal,
)
from fedstream.pipelines.config import AggregationConfig, Mode, Reducer
from fedstream.pipelines.lineage import Lineage
from fedstream.pipelines.reducers import trimmed_mean, weighted_median
from fedstream.pipelines.update import FloatVector

__all__ = [
    "Accumulator",
    "BufferedAccumulator",
    "DeltaAccumulator",
    "RunningSumAccumulator",
    "add_scaled",
    "make_accumulator",
]

MAGIC = b"FSAC"
#: 2 adds the device id of every update (lineage device_ids); 1 is still read (its
#: updates' devices read as "")
FORMAT_VERSION = 2


def add_scaled(
    total: FloatVector, delta: FloatVector, multiplier: float, scratch: FloatVector | None
) -> FloatVector | None:
    """total += multiplier * delta in place (float32). A unit multiplier adds directly;
    others go through `scratch`, allocated here on first need and returned for the caller
    to keep, so a long-lived sum allocates nothing per update."""
    if multiplier == 1.0:
        np.add(total, delta, out=total)
        return scratch
    if scratch is None:
        scratch = np.empty_like(total)
    np.multiply(delta, multiplier, out=scratch)
    np.add(total, scratch, out=total)
    return scratch


def _check_factors(**factors: float) -> None:
    """Refuse a weight, scale or multiplier that is negative or not finite (by name)."""
    for name, value in factors.items():
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and >= 0; got {value}")


class Accumulator:
    """Tally of the updates absorbed by the open window (FedAsync's whole buffer)."""

    KIND: ClassVar[int] = 0
    keeps_deltas: ClassVar[bool] = False

    def __init__(self, num_params: int) -> None:
        if num_params < 1:
            raise ValueError(f"num_params must be >= 1; got {num_params}")
        self._num_params = num_params
        self._ids: list[str] = []
        self._devices: list[str] = []
        self._stalenesses: list[int] = []
        self._total_samples = 0
        self._total_weight = 0.0
        self._first_added_at: float | None = None
        self._revision = 0

    # -- read-only view of the tally -------------------------------------------------
    @property
    def num_params(self) -> int:
        return self._num_params

    @property
    def count(self) -> int:
        return len(self._ids)

    @property
    def update_ids(self) -> tuple[str, ...]:
        return tuple(self._ids)

    @property
    def device_ids(self) -> tuple[str, ...]:
        return tuple(self._devices)

    @property
    def stalenesses(self) -> tuple[int, ...]:
        return tuple(self._stalenesses)

    @property
    def total_samples(self) -> int:
        return self._total_samples

    @property
    def total_weight(self) -> float:
        return self._total_weight

    @property
    def first_added_at(self) -> float | None:
        """Clock value of the first update in the window (starts the time window)."""
        return self._first_added_at

    @property
    def revision(self) -> int:
        """Bumped before every in-place change (`add`, `add_sum`, `clear`): a caller that
        holds a window newer than its saved copy tells from it whether a failed step may
        have touched the window (`deferred_windows`)."""
        return self._revision

    def lineage(self) -> Lineage:
        return Lineage.of(self._ids, self._stalenesses, self._total_samples, self._devices)

    # -- mutation --------------------------------------------------------------------
    def add(
        self,
        delta: FloatVector,
        weight: float,
        *,
        update_id: str,
        staleness: int,
        num_samples: int,
        now: float,
        scale: float = 1.0,
        device_id: str = "",
    ) -> None:
        """Absorb `scale * delta` with aggregation weight `weight`.

        `scale` multiplies the delta but not the weight: it is how clipping is applied
        without copying (the clipped update still counts `weight` in the normaliser).
        The delta is read, never kept by reference.
        """
        _check_factors(weight=weight, scale=scale)
        self._check_vector("delta", delta)
        self._revision += 1
        self._add_delta(delta, float(weight), float(scale))
        self._tally([update_id], [device_id], staleness, int(num_samples), float(weight), now)

    def _check_vector(self, name: str, vector: FloatVector) -> None:
        """Refuse a vector that is not float32 of this window's shape."""
        if vector.shape != (self._num_params,) or vector.dtype != np.float32:
            raise ValueError(
                f"{name} must be float32 of shape ({self._num_params},); got "
                f"{vector.dtype} {vector.shape}"
            )

    def _tally(
        self,
        update_ids: Sequence[str],
        device_ids: Sequence[str],
        staleness: int,
        num_samples: int,
        weight: float,
        now: float,
    ) -> None:
        """Count updates of one staleness into the tally (after their storage)."""
        self._ids.extend(update_ids)
        self._devices.extend(device_ids)
        self._stalenesses.extend([int(staleness)] * len(update_ids))
        self._total_samples += num_samples
        self._total_weight += weight
        if self._first_added_at is None:
            self._first_added_at = float(now)

    def merge(self, other: Self) -> Self:
        """A new accumulator holding self's updates followed by other's; both unchanged."""
        if not self.same_kind(other):
            raise ValueError(f"cannot merge {other.describe()} into {self.describe()}")
        out = self.empty()
        out._ids = self._ids + other._ids
        out._devices = self._devices + other._devices
        out._stalenesses = self._stalenesses + other._stalenesses
        out._total_samples = self._total_samples + other._total_samples
        out._total_weight = self._total_weight + other._total_weight
        firsts = [t for t in (self._first_added_at, other._first_added_at) if t is not None]
        out._first_added_at = min(firsts) if firsts else None
        out._merge_storage(self, other)
        return out

    def empty(self) -> Self:
        """A fresh accumulator of the same kind and settings (the next window)."""
        return type(self)(self._num_params)

    def clear(self) -> None:
        """Empty this accumulator in place for the next window, keeping its buffers
        (no re-allocation per window)."""
        self._revision += 1
        self._ids = []
        self._devices = []
        self._stalenesses = []
        self._total_samples = 0
        self._total_weight = 0.0
        self._first_added_at = None
        self._clear_storage()

    def same_kind(self, other: Accumulator) -> bool:
        """True if `other` has the same class and settings (mergeable with self)."""
        return type(other) is type(self) and other._params() == self._params()

    # -- storage hooks (the tally keeps no deltas) -----------------------------------
    def _add_delta(self, delta: FloatVector, weight: float, scale: float) -> None:
        return None

    def _merge_storage(self, a: Self, b: Self) -> None:
        return None

    def _clear_storage(self) -> None:
        return None

    def _params(self) -> tuple[object, ...]:
        return (self._num_params,)

    def describe(self) -> str:
        return f"{type(self).__name__}{self._params()}"

    def _write_params(self, w: Writer) -> None:
        return None

    @classmethod
    def _read_params(cls, num_params: int, r: Reader) -> Self:
        return cls(num_params)

    def _write_storage(self, w: Writer) -> None:
        return None

    def _read_storage(self, r: Reader) -> None:
        return None

    # -- serialization ---------------------------------------------------------------
    def to_bytes(self) -> bytes:
        w = Writer()
        w.u8(self.KIND)
        w.i64(self._num_params)
        self._write_params(w)
        w.texts(self._ids)
        w.array(np.asarray(self._stalenesses, dtype=np.int64))
        w.i64(self._total_samples)
        w.f64(self._total_weight)
        w.optional_f64(self._first_added_at)
        self._write_storage(w)
        w.texts(self._devices)
        return seal(MAGIC, FORMAT_VERSION, w)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Restore any accumulator kind; called on a subclass, the kind must match.

        Raises a `binary_format.StateFormatError` subclass on damaged or foreign bytes.
        """
        version, r = unseal(data, MAGIC, (1, FORMAT_VERSION))
        kind = r.u8()
        klass = _KINDS.get(kind)
        if klass is None:
            raise MalformedPayloadError(f"unknown accumulator kind {kind}")
        if not issubclass(klass, cls):
            raise MalformedPayloadError(f"bytes hold a {klass.__name__}, not a {cls.__name__}")
        num_params = r.i64()
        if num_params < 1:
            raise MalformedPayloadError(f"num_params {num_params} < 1")
        try:
            acc = klass._read_params(num_params, r)
        except ValueError as exc:
            if isinstance(exc, MalformedPayloadError):
                raise
            raise MalformedPayloadError(str(exc)) from exc
        acc._ids = r.texts()
        stalenesses = r.array()
        if stalenesses.dtype != np.int64 or stalenesses.shape != (len(acc._ids),):
            raise MalformedPayloadError("staleness list does not match the update ids")
        acc._stalenesses = [int(s) for s in stalenesses]
        acc._total_samples = r.i64()
        acc._total_weight = r.f64()
        acc._first_added_at = r.optional_f64()
        acc._read_storage(r)
        acc._devices = r.texts() if version >= 2 else [""] * len(acc._ids)
        if len(acc._devices) != len(acc._ids):
            raise MalformedPayloadError("device list does not match the update ids")
        r.finish()
        return acc  # type: ignore[return-value]  # klass is a subclass of cls (checked)


class DeltaAccumulator(Accumulator, ABC):
    """An accumulator that keeps the deltas (in some form) and reduces them at close."""

    keeps_deltas: ClassVar[bool] = True

    @abstractmethod
    def result(self, out: FloatVector | None = None) -> FloatVector:
        """The reduced pseudo-gradient, written to `out` if given (else a new array).
        Zeros if every weight is 0."""

    def _check_nonempty(self) -> None:
        if not self._ids:
            raise ValueError("the accumulator is empty: no pseudo-gradient to compute")


class RunningSumAccumulator(DeltaAccumulator):
    """Weighted mean as a running sum: O(params) memory (reducer "mean").

    The first add of a window writes straight into the sum buffer (no zero fill), a unit
    multiplier adds in place, others go through one scratch vector; both buffers are
    kept across `clear`, so a long-lived accumulator allocates nothing per update.
    """

    KIND: ClassVar[int] = 1

    def __init__(self, num_params: int) -> None:
        super().__init__(num_params)
        self._sum: FloatVector | None = None  # valid only while count > 0
        self._scratch: FloatVector | None = None

    @property
    def weighted_sum(self) -> FloatVector | None:
        """sum_i w_i scale_i d_i (a read-only view, valid until the next mutation), or
        None while empty."""
        if not self._ids or self._sum is None:
            return None
        view = self._sum.view()
        view.flags.writeable = False
        return view

    def _add_delta(self, delta: FloatVector, weight: float, scale: float) -> None:
        multiplier = weight * scale
        if self._sum is None:
            self._sum = np.empty(self._num_params, dtype=np.float32)
        if not self._ids:
            np.multiply(delta, multiplier, out=self._sum)
        else:
            self._scratch = add_scaled(self._sum, delta, multiplier, self._scratch)

    def add_sum(
        self,
        weighted_sum: FloatVector,
        multiplier: float,
        *,
        weight: float,
        update_ids: Sequence[str],
        device_ids: Sequence[str],
        staleness: int,
        num_samples: int,
        now: float,
    ) -> None:
        """Absorb `multiplier * weighted_sum`, a sum of several updates of one staleness
        (a shard's partial for one base version, `partial_window.py`), as if they had
        been added one by one with the weights that sum to `weight`: one params-sized
        pass for the whole group, by linearity. `now` is the group's first arrival."""
        _check_factors(multiplier=multiplier, weight=weight)
        self._check_vector("weighted_sum", weighted_sum)
        if not update_ids or len(device_ids) != len(update_ids):
            raise ValueError("a group needs update ids, and one device id per update id")
        self._revision += 1
        self._add_delta(weighted_sum, float(multiplier), 1.0)
        self._tally(update_ids, device_ids, staleness, int(num_samples), float(weight), now)
        # A group waited on its shard: the window started at its earliest arrival.
        assert self._first_added_at is not None  # set by _tally
        self._first_added_at = min(float(now), self._first_added_at)

    def _merge_storage(self, a: Self, b: Self) -> None:
        sums = [x._sum for x in (a, b) if x._ids and x._sum is not None]
        if len(sums) == 2:
            self._sum = np.add(sums[0], sums[1])
        elif sums:
            self._sum = sums[0].copy()

    def result(self, out: FloatVector | None = None) -> FloatVector:
        """sum_i w_i d_i / sum_i w_i."""
        self._check_nonempty()
        assert self._sum is not None
        if out is None:
            out = np.empty(self._num_params, dtype=np.float32)
        if self._total_weight == 0.0:
            out.fill(0.0)
        else:
            np.multiply(self._sum, 1.0 / self._total_weight, out=out)
        return out

    def _write_storage(self, w: Writer) -> None:
        if self._ids:
            assert self._sum is not None
            w.array(self._sum)

    def _read_storage(self, r: Reader) -> None:
        if self._ids:
            total = r.array()
            if total.dtype != np.float32 or total.shape != (self._num_params,):
                raise MalformedPayloadError(f"running sum has {total.dtype} {total.shape}")
            self._sum = total


class BufferedAccumulator(DeltaAccumulator):
    """Keeps every (scaled) delta and its weight: O(K x params) memory, for the robust
    reducers "trimmed_mean" and "median" (see `reducers.py`)."""

    KIND: ClassVar[int] = 2

    def __init__(self, num_params: int, reducer: Reducer, trim_fraction: float = 0.1) -> None:
        super().__init__(num_params)
        reducer = Reducer(reducer)
        if reducer is Reducer.MEAN:
            raise ValueError("reducer 'mean' needs no buffer: use RunningSumAccumulator")
        if not 0.0 <= trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5); got {trim_fraction}")
        self._reducer = reducer
        self._trim_fraction = float(trim_fraction)
        self._deltas: list[FloatVector] = []
        self._weights: list[float] = []

    @property
    def reducer(self) -> Reducer:
        return self._reducer

    @property
    def trim_fraction(self) -> float:
        return self._trim_fraction

    def _params(self) -> tuple[object, ...]:
        return (self._num_params, self._reducer.value, self._trim_fraction)

    def empty(self) -> Self:
        return type(self)(self._num_params, self._reducer, self._trim_fraction)

    def _add_delta(self, delta: FloatVector, weight: float, scale: float) -> None:
        kept = delta.copy() if scale == 1.0 else np.multiply(delta, scale, dtype=np.float32)
        self._deltas.append(kept)
        self._weights.append(weight)

    def _merge_storage(self, a: Self, b: Self) -> None:
        # Stored deltas are never mutated, so sharing them between accumulators is safe.
        self._deltas = a._deltas + b._deltas
        self._weights = a._weights + b._weights

    def _clear_storage(self) -> None:
        self._deltas = []
        self._weights = []

    def result(self, out: FloatVector | None = None) -> FloatVector:
        self._check_nonempty()
        stack = np.stack(self._deltas)
        weights = np.asarray(self._weights, dtype=np.float64)
        if self._reducer is Reducer.MEDIAN:
            reduced = weighted_median(stack, weights)
        else:
            reduced = trimmed_mean(stack, weights, self._trim_fraction)
        if out is None:
            return reduced
        np.copyto(out, reduced)
        return out

    def _write_params(self, w: Writer) -> None:
        w.text(self._reducer.value)
        w.f64(self._trim_fraction)

    @classmethod
    def _read_params(cls, num_params: int, r: Reader) -> Self:
        return cls(num_params, Reducer(r.text()), r.f64())

    def _write_storage(self, w: Writer) -> None:
        w.array(np.asarray(self._weights, dtype=np.float64))
        for delta in self._deltas:
            w.array(delta)

    def _read_storage(self, r: Reader) -> None:
        weights = r.array()
        if weights.dtype != np.float64 or weights.shape != (len(self._ids),):
            raise MalformedPayloadError("buffered weights do not match the tally")
        self._weights = [float(x) for x in weights]
        for _ in self._ids:
            delta = r.array()
            if delta.dtype != np.float32 or delta.shape != (self._num_params,):
                raise MalformedPayloadError(f"buffered delta has {delta.dtype} {delta.shape}")
            self._deltas.append(delta)


_KINDS: dict[int, type[Accumulator]] = {
    k.KIND: k for k in (Accumulator, RunningSumAccumulator, BufferedAccumulator)
}


def make_accumulator(config: AggregationConfig, num_params: int) -> Accumulator:
    """The accumulator kind `config` needs (see the module docstring)."""
    if config.mode is Mode.FEDASYNC:
        return Accumulator(num_params)
    if config.reducer is Reducer.MEAN:
        return RunningSumAccumulator(num_params)
    return BufferedAccumulator(num_params, config.reducer, config.trim_fraction)
