"""A shard's partial window: one model's FedBuff window, split over S parallel shards.

One model is one key, so one subtask absorbs its whole stream. To scale out ONE model
(README, "Scaling out one model"), S shards do the per-update work (validation, clipping,
the params-sized multiply-add) and a combiner keyed by the model merges their partials
and closes the window (`shard_combine.py`).

What makes that exact: FedBuff (Nguyen et al., "Federated Learning with Buffered
Asynchronous Aggregation", AISTATS 2022) weights update i by s(v - b_i) n_i, with v the
model's version when the window absorbs it and b_i the version it trained from. A shard
does not know v, but inside one window v does not change, so

    sum_i s(v - b_i) n_i c_i d_i = sum_b s(v - b) sum_{i: b_i = b} n_i c_i d_i

(c_i the clip factor, n_i the sample count with `weight_by_samples`, else 1). A partial
therefore keeps, per base version b, the float32 sum S_b = sum_i n_i c_i d_i and the
lineage entries (update id, device id, num_samples, arrival time); the undiscounted weight
U_b = sum_i n_i (or the count) follows from the entries. Sums merge by addition, so
`a.merge(b)` equals adding a's updates then b's (up to float32 rounding of the sum).
Only the "mean" reducer has this form: order statistics (median, trimmed mean) do not
merge, and FedAsync changes the model on every update; `check_shardable` refuses them.

Memory bound: one params-sized float32 vector per distinct base version, plus one
scratch vector. Every update a window at version v accepts has a base in
[v - max_staleness, v], so a partial needs at most max_staleness + 1 sums; the cap is
that, and at most MAX_PARTIAL_BASES (also when max_staleness is unbounded) and
MAX_PARTIAL_BYTES of sums. Beyond the cap, an update from a new base version does not
fit (`has_room_for` is False, `try_add` raises `PartialFullError`): the shard flushes
its partial to the combiner and starts an empty one. That is exact, not lossy: nothing
is rejected early, the combiner judges every base against v; it only costs one more
partial through the exchange. With `known_version` (a version the model is known to
have reached: v never decreases) a shard rejects an update that is stale whatever v is,
as the unsharded core would, before it takes a bucket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Self, cast

import numpy as np

from fedstream.pipelines.accumulator import add_scaled
from fedstream.pipelines.binary_format import MalformedPayloadError, Reader, Writer, seal, unseal
from fedstream.pipelines.clipping import clip_factor
from fedstream.pipelines.config import AggregationConfig, Mode, Reducer
from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.mixing import MAX_HISTORY_BYTES, sample_weight
from fedstream.pipelines.update import ClientUpdate, FloatVector
from fedstream.pipelines.validation import (
    Rejection,
    RejectReason,
    UpdateRejectedError,
    check_content,
    staleness_problem,
)

__all__ = [
    "MAX_PARTIAL_BASES",
    "MAX_PARTIAL_BYTES",
    "PartialEntry",
    "PartialFullError",
    "PartialWindow",
    "ShardSettings",
    "check_shardable",
    "partial_base_cap",
]

MAGIC = b"FSPW"
FORMAT_VERSION = 1
#: The most base versions one partial keeps (its sums dominate its memory).
MAX_PARTIAL_BASES = 16
#: The most bytes of sums one partial keeps (as FedAsync's history, `mixing.py`).
MAX_PARTIAL_BYTES = MAX_HISTORY_BYTES
_INT64 = (-(2**63), 2**63 - 1)


def check_shardable(config: AggregationConfig) -> None:
    """Refuse (ValueError) a config whose window cannot be split into mergeable partials."""
    if config.mode is not Mode.FEDBUFF:
        raise ValueError(
            f"model_shards > 1 needs mode 'fedbuff'; got {config.mode.value!r} (FedAsync "
            "mixes every update into the model on arrival: there is no window to split)"
        )
    if config.reducer is not Reducer.MEAN:
        raise ValueError(
            f"model_shards > 1 needs reducer 'mean'; got {config.reducer.value!r} (a median "
            "or trimmed mean is an order statistic of all updates: partial sums do not merge)"
        )


def partial_base_cap(config: AggregationConfig, num_params: int) -> int:
    """How many base versions a partial keeps (see the module docstring): max_staleness + 1,
    at most MAX_PARTIAL_BASES and MAX_PARTIAL_BYTES of float32 sums, and at least 1."""
    cap = MAX_PARTIAL_BASES
    if config.max_staleness is not None:
        cap = min(cap, config.max_staleness + 1)
    return max(1, min(cap, MAX_PARTIAL_BYTES // (4 * num_params)))


class PartialFullError(ValueError):
    """The partial keeps max_bases base versions and the update names another: flush."""


@dataclass(frozen=True, slots=True)
class ShardSettings:
    """What a shard needs of the model's config: the per-update weight and clip, the
    staleness bound for `known_version`, and the cap on base versions."""

    weight_by_samples: bool = False
    clip_norm: float | None = None
    max_staleness: int | None = None
    max_bases: int = MAX_PARTIAL_BASES

    def __post_init__(self) -> None:
        if not isinstance(self.weight_by_samples, bool):
            raise ValueError(f"weight_by_samples must be a bool; got {self.weight_by_samples!r}")
        clip = self.clip_norm
        if clip is not None and (
            isinstance(clip, bool)
            or not isinstance(clip, int | float)
            or not (math.isfinite(clip) and clip > 0)
        ):
            raise ValueError(f"clip_norm must be a finite number > 0 or None; got {clip!r}")
        for name, low in (("max_staleness", 0), ("max_bases", 1)):
            value = getattr(self, name)
            if value is None and name == "max_staleness":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}; got {value!r}")

    @classmethod
    def from_config(cls, config: AggregationConfig, num_params: int) -> ShardSettings:
        check_shardable(config)
        return cls(
            config.weight_by_samples,
            config.clip_norm,
            config.max_staleness,
            partial_base_cap(config, num_params),
        )

    def matches(self, config: AggregationConfig) -> bool:
        """True if partials built with these settings weigh updates as `config` does."""
        return (self.weight_by_samples, self.clip_norm) == (
            config.weight_by_samples,
            config.clip_norm,
        )


@dataclass(frozen=True, slots=True)
class PartialEntry:
    """One absorbed update, for the release's lineage (its staleness is known at combine)."""

    update_id: str
    device_id: str
    num_samples: int
    arrived_at: float


class PartialWindow:
    """Per base version: the float32 sum of n_i c_i d_i and the entries (module docstring)."""

    def __init__(self, num_params: int, settings: ShardSettings) -> None:
        if isinstance(num_params, bool) or not isinstance(num_params, int) or num_params < 1:
            raise ValueError(f"num_params must be an int >= 1; got {num_params!r}")
        self._num_params = num_params
        self._settings = settings
        self._sums: dict[int, FloatVector] = {}
        self._entries: dict[int, list[PartialEntry]] = {}
        self._scratch: FloatVector | None = None
        self._revision = 0

    @classmethod
    def for_config(cls, config: AggregationConfig, num_params: int) -> PartialWindow:
        """An empty partial for `config` (refused unless `check_shardable`)."""
        return cls(num_params, ShardSettings.from_config(config, num_params))

    def empty(self) -> PartialWindow:
        """A fresh partial with the same settings (the next one, after a flush)."""
        return type(self)(self._num_params, self._settings)

    # -- read-only view ------------------------------------------------------------------
    @property
    def num_params(self) -> int:
        return self._num_params

    @property
    def settings(self) -> ShardSettings:
        return self._settings

    @property
    def base_versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._sums))

    @property
    def count(self) -> int:
        return sum(len(e) for e in self._entries.values())

    @property
    def revision(self) -> int:
        """Bumped before every in-place change (`try_add` past its checks), like
        `Accumulator.revision`: whether a failed step may have touched a partial that is
        newer than its saved copy (`deferred_windows`)."""
        return self._revision

    @property
    def first_added_at(self) -> float | None:
        """The earliest arrival in the partial (None while empty)."""
        times = [e.arrived_at for entries in self._entries.values() for e in entries]
        return min(times, default=None)

    def weighted_sum(self, base_version: int) -> FloatVector:
        """S_b = sum of n_i c_i d_i over base version b (a read-only view, valid until the
        next mutation)."""
        view = self._sums[base_version].view()
        view.flags.writeable = False
        return view

    def entries(self, base_version: int) -> tuple[PartialEntry, ...]:
        return tuple(self._entries[base_version])

    def undiscounted_weight(self, base_version: int) -> float:
        """U_b: the weight of base version b's updates before any staleness discount."""
        wbs = self._settings.weight_by_samples
        return math.fsum(sample_weight(wbs, e.num_samples) for e in self._entries[base_version])

    def has_room_for(self, base_version: int) -> bool:
        return base_version in self._sums or len(self._sums) < self._settings.max_bases

    # -- mutation ------------------------------------------------------------------------
    def try_add(
        self,
        update: ClientUpdate,
        now: float,
        *,
        limits: InputLimits | None = None,
        known_version: int | None = None,
    ) -> Rejection | None:
        """Validate and absorb `update` at clock `now`; returns the rejection if refused.

        The content checks are the unsharded core's (`validation.check_content`); the
        version checks wait for the combiner, except a staleness beyond max_staleness
        from `known_version`, which no later version can cure. Raises `PartialFullError`
        (after validation) if the update's base version does not fit: flush first."""
        b = update.base_version
        if isinstance(b, bool) or not isinstance(b, int | np.integer) or not _in_int64(int(b)):
            return Rejection(update.update_id, RejectReason.BAD_FIELD, f"base_version {b!r}")
        stale = self._known_stale(int(b), known_version)
        if stale is not None:
            return Rejection(update.update_id, RejectReason.STALE, stale)
        checked = check_content(update, num_params=self._num_params, limits=limits)
        if isinstance(checked, Rejection):
            return checked
        if not self.has_room_for(int(b)):
            raise PartialFullError(
                f"the partial holds {len(self._sums)} base versions (its cap); base_version "
                f"{b} needs a new one: flush the partial and start an empty one"
            )
        n = int(update.num_samples)
        multiplier = sample_weight(self._settings.weight_by_samples, n) * clip_factor(
            checked, self._settings.clip_norm
        )
        self._revision += 1
        self._accumulate(int(b), cast(FloatVector, update.delta), multiplier)
        self._entries.setdefault(int(b), []).append(
            PartialEntry(update.update_id, update.device_id, n, float(now))
        )
        return None

    def add(
        self,
        update: ClientUpdate,
        now: float,
        *,
        limits: InputLimits | None = None,
        known_version: int | None = None,
    ) -> None:
        """Like `try_add`, but raises `UpdateRejectedError` for an invalid update."""
        rejection = self.try_add(update, now, limits=limits, known_version=known_version)
        if rejection is not None:
            raise UpdateRejectedError(rejection)

    def _known_stale(self, base_version: int, known_version: int | None) -> str | None:
        limit = self._settings.max_staleness
        if known_version is None or limit is None:
            return None
        problem = staleness_problem(base_version, known_version, limit)
        return problem[1] if problem is not None and problem[0] is RejectReason.STALE else None

    def _accumulate(self, base_version: int, delta: FloatVector, multiplier: float) -> None:
        total = self._sums.get(base_version)
        if total is None:
            self._sums[base_version] = np.multiply(delta, multiplier, dtype=np.float32)
        else:
            self._scratch = add_scaled(total, delta, multiplier, self._scratch)

    def merge(self, other: PartialWindow) -> PartialWindow:
        """A new partial holding self's updates followed by other's; both unchanged.

        Raises ValueError if they belong to different models or settings, and
        `PartialFullError` if together they hold more than max_bases base versions
        (adding other's updates one by one would refuse too): combine them separately."""
        if (other._num_params, other._settings) != (self._num_params, self._settings):
            raise ValueError(
                f"cannot merge a partial of {other._num_params} params with {other._settings} "
                f"into one of {self._num_params} params with {self._settings}"
            )
        bases = sorted(set(self._sums) | set(other._sums))
        if len(bases) > self._settings.max_bases:
            raise PartialFullError(
                f"merged, the partials hold {len(bases)} base versions; the cap is "
                f"{self._settings.max_bases}"
            )
        out = self.empty()
        for b in bases:
            sums = [p._sums[b] for p in (self, other) if b in p._sums]
            out._sums[b] = np.add(sums[0], sums[1]) if len(sums) == 2 else sums[0].copy()
            out._entries[b] = self._entries.get(b, []) + other._entries.get(b, [])
        return out

    # -- serialization -------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        w = Writer()
        w.i64(self._num_params)
        _write_settings(w, self._settings)
        w.u32(len(self._sums))
        for b in self.base_versions:
            entries = self._entries[b]
            w.i64(b)
            w.texts([e.update_id for e in entries])
            w.texts([e.device_id for e in entries])
            w.array(np.asarray([e.num_samples for e in entries], dtype=np.int64))
            w.array(np.asarray([e.arrived_at for e in entries], dtype=np.float64))
            w.array(self._sums[b])
        return seal(MAGIC, FORMAT_VERSION, w)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Restore a partial; raises a `binary_format.StateFormatError` subclass
        (`MalformedPayloadError` for a well-framed but invalid payload) on bad bytes."""
        _, r = unseal(data, MAGIC, (FORMAT_VERSION,))
        num_params = r.i64()
        try:
            out = cls(num_params, _read_settings(r))
        except ValueError as exc:
            raise MalformedPayloadError(f"invalid partial header: {exc}") from exc
        buckets = r.u32()
        if buckets > out._settings.max_bases:
            raise MalformedPayloadError(f"{buckets} base versions exceed the cap")
        previous: int | None = None
        for _ in range(buckets):
            b = r.i64()
            if previous is not None and b <= previous:
                raise MalformedPayloadError("base versions are not strictly increasing")
            previous = b
            out._entries[b], out._sums[b] = _read_bucket(r, num_params)
        r.finish()
        return out


def _in_int64(value: int) -> bool:
    return _INT64[0] <= value <= _INT64[1]


def _write_settings(w: Writer, settings: ShardSettings) -> None:
    w.u8(int(settings.weight_by_samples))
    w.optional_f64(settings.clip_norm)
    w.u8(0 if settings.max_staleness is None else 1)
    w.i64(-1 if settings.max_staleness is None else settings.max_staleness)
    w.i64(settings.max_bases)


def _read_settings(r: Reader) -> ShardSettings:
    flags = (r.u8(), r.optional_f64(), r.u8(), r.i64(), r.i64())
    by_samples, clip, has_limit, limit, max_bases = flags
    if by_samples not in (0, 1) or has_limit not in (0, 1):
        raise MalformedPayloadError("a flag of the partial's settings is not 0 or 1")
    return ShardSettings(bool(by_samples), clip, limit if has_limit else None, max_bases)


def _read_bucket(r: Reader, num_params: int) -> tuple[list[PartialEntry], FloatVector]:
    ids, devices = r.texts(), r.texts()
    samples, times, total = r.array(), r.array(), r.array()
    n = len(ids)
    if n == 0 or len(devices) != n:
        raise MalformedPayloadError("a base version has no updates, or unmatched device ids")
    if samples.dtype != np.int64 or samples.shape != (n,) or not (samples > 0).all():
        raise MalformedPayloadError("num_samples are not one int64 > 0 per update")
    if times.dtype != np.float64 or times.shape != (n,) or not np.isfinite(times).all():
        raise MalformedPayloadError("arrival times are not one finite float64 per update")
    if total.dtype != np.float32 or total.shape != (num_params,):
        raise MalformedPayloadError(f"a sum has {total.dtype} {total.shape}, not ({num_params},)")
    if not np.isfinite(total).all():
        raise MalformedPayloadError("a sum holds NaN or infinity")
    entries = [
        PartialEntry(i, d, int(s), float(t))
        for i, d, s, t in zip(ids, devices, samples, times, strict=True)
    ]
    return entries, total
