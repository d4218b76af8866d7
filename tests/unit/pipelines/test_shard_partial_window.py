"""The shard's partial window: sums per base version that merge like sequential adds,
a bounded number of base versions, a versioned binary format that refuses bad bytes,
and the combine step's staleness bound and shardability checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstream.pipelines.aggregator import Aggregator
from fedstream.pipelines.binary_format import (
    MalformedPayloadError,
    StateFormatError,
    Writer,
    seal,
)
from fedstream.pipelines.config import AggregationConfig
from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.model_state import ModelState
from fedstream.pipelines.partial_window import (
    MAGIC,
    MAX_PARTIAL_BASES,
    PartialFullError,
    PartialWindow,
    ShardSettings,
    check_shardable,
    partial_base_cap,
)
from fedstream.pipelines.shard_combine import combine, fold_partial
from fedstream.pipelines.update import ClientUpdate
from fedstream.pipelines.validation import RejectReason, UpdateRejectedError

P = 5
SETTINGS = settings(max_examples=60, deadline=None)
Row = tuple[int, int, int]  # base version, num_samples, seed of the delta


def delta(seed: int, integral: bool = False) -> np.ndarray[Any, np.dtype[np.float32]]:
    rng = np.random.default_rng(seed)
    if integral:
        return rng.integers(-20, 20, P).astype(np.float32)
    return rng.standard_normal(P).astype(np.float32)


def filled(
    rows: list[Row], prefix: str, shard: ShardSettings, integral: bool = False
) -> PartialWindow:
    partial = PartialWindow(P, shard)
    for i, (base, n, seed) in enumerate(rows):
        u = ClientUpdate(f"{prefix}{i}", base, n, delta(seed, integral), f"dev{seed % 4}")
        partial.add(u, now=float(i))
    return partial


def assert_same(a: PartialWindow, b: PartialWindow, exact: bool = False) -> None:
    assert (a.num_params, a.settings) == (b.num_params, b.settings)
    assert a.base_versions == b.base_versions
    for base in a.base_versions:
        assert a.entries(base) == b.entries(base)
        if exact:
            np.testing.assert_array_equal(a.weighted_sum(base), b.weighted_sum(base))
        else:
            # float32 addition in another order: a few ulps of the sum of |terms|
            # (|delta| < 20, multiplier <= num_samples), whatever cancels in the result
            weights = [
                e.num_samples if a.settings.weight_by_samples else 1 for e in a.entries(base)
            ]
            atol = 8 * float(np.finfo(np.float32).eps) * 20 * sum(weights)
            np.testing.assert_allclose(a.weighted_sum(base), b.weighted_sum(base), atol=atol)


rows = st.lists(st.tuples(st.integers(0, 3), st.integers(1, 50), st.integers(0, 10**6)), max_size=8)
shard_settings = st.builds(
    ShardSettings,
    weight_by_samples=st.booleans(),
    clip_norm=st.sampled_from([None, 0.5, 3.0]),
    max_staleness=st.sampled_from([None, 3, 7]),
    max_bases=st.just(4),
)


# -- merge -----------------------------------------------------------------------------
@SETTINGS
@given(a=rows, b=rows, shard=shard_settings, integral=st.booleans())
def test_merge_equals_adding_one_after_the_other(
    a: list[Row], b: list[Row], shard: ShardSettings, integral: bool
) -> None:
    merged = filled(a, "a", shard, integral).merge(filled(b, "b", shard, integral))
    sequential = filled(a, "a", shard, integral)
    for i, (base, n, seed) in enumerate(b):
        u = ClientUpdate(f"b{i}", base, n, delta(seed, integral), f"dev{seed % 4}")
        sequential.add(u, now=float(i))
    # integer deltas and integer multipliers (no clipping) make every float32 sum exact
    assert_same(merged, sequential, exact=integral and shard.clip_norm is None)
    assert merged.count == len(a) + len(b)


@SETTINGS
@given(a=rows, b=rows, c=rows, shard=shard_settings, integral=st.booleans())
def test_merge_is_associative(
    a: list[Row], b: list[Row], c: list[Row], shard: ShardSettings, integral: bool
) -> None:
    pa, pb, pc = (filled(r, x, shard, integral) for r, x in ((a, "a"), (b, "b"), (c, "c")))
    left, right = pa.merge(pb).merge(pc), pa.merge(pb.merge(pc))
    assert_same(left, right, exact=integral and shard.clip_norm is None)


def test_merge_leaves_its_inputs_unchanged_and_refuses_foreign_partials() -> None:
    shard = ShardSettings(max_bases=2)
    a, b = filled([(0, 1, 1)], "a", shard), filled([(0, 1, 2), (1, 1, 3)], "b", shard)
    before = a.weighted_sum(0).copy()
    a.merge(b).add(ClientUpdate("x", 0, 1, np.ones(P, np.float32)), now=0.0)
    np.testing.assert_array_equal(a.weighted_sum(0), before)
    assert a.count == 1 and b.count == 2
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(PartialWindow(P, ShardSettings(weight_by_samples=True, max_bases=2)))
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(PartialWindow(P + 1, shard))
    with pytest.raises(PartialFullError):
        b.merge(filled([(2, 1, 4)], "c", shard))


# -- what a shard does per update --------------------------------------------------------
def test_the_sum_holds_samples_times_clip_times_delta() -> None:
    shard = ShardSettings(weight_by_samples=True, clip_norm=1.0)
    partial = PartialWindow(2, shard)
    partial.add(ClientUpdate("a", 4, 3, np.array([3.0, 4.0], np.float32)), now=1.0)  # norm 5
    partial.add(ClientUpdate("b", 4, 2, np.array([0.5, 0.0], np.float32)), now=2.0)
    np.testing.assert_allclose(partial.weighted_sum(4), [3 * 0.6 + 2 * 0.5, 3 * 0.8])
    assert partial.undiscounted_weight(4) == 5.0
    assert partial.first_added_at == 1.0
    unweighted = PartialWindow(2, ShardSettings())
    unweighted.add(ClientUpdate("a", 4, 3, np.ones(2, np.float32)), now=1.0)
    assert unweighted.undiscounted_weight(4) == 1.0


@pytest.mark.parametrize(
    "update",
    [
        ClientUpdate("nan", 0, 1, np.array([np.nan, 0, 0, 0, 0], np.float32)),
        ClientUpdate("shape", 0, 1, np.zeros(P + 1, np.float32)),
        ClientUpdate("dtype", 0, 1, np.zeros(P, np.float64)),
        ClientUpdate("samples", 0, 0, np.zeros(P, np.float32)),
        ClientUpdate("too-many", 0, 11, np.zeros(P, np.float32)),
        ClientUpdate("too-far", 0, 1, np.full(P, 100.0, np.float32)),
    ],
)
def test_a_shard_rejects_content_as_the_unsharded_core_does(update: ClientUpdate) -> None:
    limits = InputLimits(max_num_samples=10, max_delta_norm=10.0)
    partial = PartialWindow(P, ShardSettings())
    agg = Aggregator(AggregationConfig(), ModelState(np.zeros(P, np.float32)))
    assert partial.try_add(update, 0.0, limits=limits) == agg.try_add(update, 0.0, limits)
    assert partial.count == 0
    with pytest.raises(UpdateRejectedError):
        partial.add(update, 0.0, limits=limits)


def test_a_base_version_outside_int64_is_a_bad_field() -> None:
    rejection = PartialWindow(P, ShardSettings()).try_add(
        ClientUpdate("big", 2**63, 1, np.zeros(P, np.float32)), 0.0
    )
    assert rejection is not None and rejection.reason is RejectReason.BAD_FIELD


def test_known_version_rejects_what_no_later_version_accepts() -> None:
    partial = PartialWindow(P, ShardSettings(max_staleness=2))
    zeros = np.zeros(P, np.float32)
    rejection = partial.try_add(ClientUpdate("old", 7, 1, zeros), 0.0, known_version=10)
    assert rejection is not None and rejection.reason is RejectReason.STALE
    # at the bound, or from a "future" base: the combiner's version decides
    assert partial.try_add(ClientUpdate("edge", 8, 1, zeros), 0.0, known_version=10) is None
    assert partial.try_add(ClientUpdate("ahead", 12, 1, zeros), 0.0, known_version=10) is None
    unbounded = PartialWindow(P, ShardSettings())
    assert unbounded.try_add(ClientUpdate("old", 0, 1, zeros), 0.0, known_version=10) is None


# -- the bound on base versions --------------------------------------------------------
def test_the_cap_is_max_staleness_plus_one_within_fixed_bounds() -> None:
    def cap(max_staleness: int | None, num_params: int = P) -> int:
        return partial_base_cap(AggregationConfig(max_staleness=max_staleness), num_params)

    assert (cap(0), cap(2), cap(None), cap(1000)) == (1, 3, MAX_PARTIAL_BASES, MAX_PARTIAL_BASES)
    assert cap(None, num_params=8_000_000) == 8  # 256 MiB of float32 sums
    assert cap(None, num_params=2**30) == 1
    made = PartialWindow.for_config(AggregationConfig(max_staleness=2), P)
    assert made.settings.max_bases == 3


def test_a_full_partial_refuses_a_new_base_only_after_validation() -> None:
    partial = PartialWindow(P, ShardSettings(max_bases=2))
    ones = np.ones(P, np.float32)
    partial.add(ClientUpdate("a", 0, 1, ones), 0.0)
    partial.add(ClientUpdate("b", 1, 1, ones), 0.0)
    assert partial.has_room_for(1) and not partial.has_room_for(2)
    partial.add(ClientUpdate("c", 1, 1, ones), 0.0)  # an existing base still fits
    bad = ClientUpdate("bad", 2, 1, np.full(P, np.inf, np.float32))
    rejection = partial.try_add(bad, 0.0)
    assert rejection is not None and rejection.reason is RejectReason.NON_FINITE
    with pytest.raises(PartialFullError, match="flush"):
        partial.try_add(ClientUpdate("d", 2, 1, ones), 0.0)
    assert partial.count == 3 and partial.base_versions == (0, 1)
    fresh = partial.empty()
    assert fresh.count == 0 and fresh.settings == partial.settings


# -- the binary format -----------------------------------------------------------------
@SETTINGS
@given(r=rows, shard=shard_settings)
def test_round_trip(r: list[Row], shard: ShardSettings) -> None:
    partial = filled(r, "u", shard)
    data = partial.to_bytes()
    restored = PartialWindow.from_bytes(data)
    assert_same(restored, partial, exact=True)
    assert restored.to_bytes() == data


@SETTINGS
@given(r=rows, shard=shard_settings, cut=st.integers(0, 10**6), flip=st.integers(0, 10**6))
def test_damaged_bytes_are_refused(r: list[Row], shard: ShardSettings, cut: int, flip: int) -> None:
    data = filled(r, "u", shard).to_bytes()
    with pytest.raises(StateFormatError):
        PartialWindow.from_bytes(data[: cut % len(data)])
    damaged = bytearray(data)
    damaged[flip % len(data)] ^= 0x5A
    with pytest.raises(StateFormatError):
        PartialWindow.from_bytes(bytes(damaged))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_format_errors(data: bytes) -> None:
    with pytest.raises(StateFormatError):
        PartialWindow.from_bytes(data)
    with pytest.raises(StateFormatError):  # a valid frame around garbage
        PartialWindow.from_bytes(_frame(lambda w: w.chunks.append(data) or None))


def _frame(write: Any) -> bytes:
    w = Writer()
    write(w)
    w.size = sum(len(c) for c in w.chunks)
    return seal(MAGIC, 1, w)


def _payload(**change: Any) -> bytes:
    """A well-framed partial with one field changed from a valid one-bucket encoding."""
    f: dict[str, Any] = {
        "num_params": P,
        "flags": (0, None, 1, 3, 4),
        "buckets": [(2, ["a"], ["d"], [1], [0.5], np.ones(P, np.float32))],
        "count": None,
        "trailing": b"",
    }
    f.update(change)

    def write(w: Writer) -> None:
        w.i64(f["num_params"])
        by_samples, clip, has_limit, limit, cap = f["flags"]
        w.u8(by_samples)
        w.optional_f64(clip)
        w.u8(has_limit)
        w.i64(limit)
        w.i64(cap)
        w.u32(len(f["buckets"]) if f["count"] is None else f["count"])
        for base, ids, devices, samples, times, total in f["buckets"]:
            w.i64(base)
            w.texts(ids)
            w.texts(devices)
            w.array(np.asarray(samples, dtype=np.int64))
            w.array(np.asarray(times, dtype=np.float64))
            w.array(total)
        if f["trailing"]:
            w.chunks.append(f["trailing"])

    return _frame(write)


def _bucket(**change: Any) -> tuple[Any, ...]:
    b = {"base": 2, "ids": ["a"], "devices": ["d"], "samples": [1], "times": [0.5]}
    b["total"] = np.ones(P, np.float32)
    b.update(change)
    return tuple(b.values())


def test_the_valid_crafted_payload_decodes() -> None:
    partial = PartialWindow.from_bytes(_payload())
    assert partial.base_versions == (2,) and partial.settings.max_bases == 4


@pytest.mark.parametrize(
    "change",
    [
        {"num_params": 0},
        {"flags": (2, None, 1, 3, 4)},
        {"flags": (0, None, 7, 3, 4)},
        {"flags": (0, -1.0, 1, 3, 4)},
        {"flags": (0, None, 1, -3, 4)},
        {"flags": (0, None, 1, 3, 0)},
        {"buckets": [_bucket(base=b) for b in range(5)]},  # above max_bases 4
        {"buckets": [_bucket(base=3), _bucket(base=3)]},
        {"buckets": [_bucket(base=3), _bucket(base=1)]},
        {"buckets": [_bucket(ids=[], devices=[], samples=[], times=[])]},
        {"buckets": [_bucket(devices=["d", "e"])]},
        {"buckets": [_bucket(samples=[0])]},
        {"buckets": [_bucket(samples=[1, 2])]},
        {"buckets": [_bucket(times=[np.inf])]},
        {"buckets": [_bucket(total=np.ones(P + 1, np.float32))]},
        {"buckets": [_bucket(total=np.ones(P, np.float64))]},
        {"buckets": [_bucket(total=np.full(P, np.nan, np.float32))]},
        {"count": 2},
        {"trailing": b"\x00"},
    ],
)
def test_malformed_payloads_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(StateFormatError):
        PartialWindow.from_bytes(_payload(**change))


def test_a_payload_that_breaks_a_rule_raises_malformed() -> None:
    with pytest.raises(MalformedPayloadError, match="strictly increasing"):
        PartialWindow.from_bytes(_payload(buckets=[_bucket(base=3), _bucket(base=1)]))
    with pytest.raises(MalformedPayloadError, match="invalid partial header"):
        PartialWindow.from_bytes(_payload(flags=(0, None, 1, 3, 0)))


def test_foreign_state_is_refused() -> None:
    with pytest.raises(StateFormatError):
        PartialWindow.from_bytes(ModelState(np.zeros(P, np.float32)).to_bytes())


# -- the combine step: staleness bound, shardability, compatibility --------------------
def test_bases_beyond_the_bound_are_rejected_as_a_whole() -> None:
    config = AggregationConfig(max_staleness=2)
    state = ModelState(np.zeros(P, np.float32), version=10)
    partials = [PartialWindow.for_config(config, P) for _ in range(2)]  # 3 bases each
    for i, base in enumerate([7, 7, 8, 10, 11]):  # staleness 3, 3, 2, 0, -1
        partials[i // 3].add(ClientUpdate(f"u{i}", base, 1, np.ones(P, np.float32)), float(i))
    combined = combine(config, state, partials)
    reasons = {r.update_id: r.reason for r in combined.rejections}
    stale, future = RejectReason.STALE, RejectReason.FUTURE_VERSION
    assert reasons == {"u0": stale, "u1": stale, "u4": future}
    assert combined.closed is not None
    assert set(combined.closed.lineage.update_ids) == {"u2", "u3"}
    assert (combined.closed.lineage.staleness_min, combined.closed.lineage.staleness_max) == (0, 2)


def test_a_window_with_every_update_rejected_releases_nothing() -> None:
    config = AggregationConfig(max_staleness=0)
    state = ModelState(np.zeros(P, np.float32), version=4)
    partial = PartialWindow.for_config(config, P)
    partial.add(ClientUpdate("old", 3, 1, np.ones(P, np.float32)), 0.0)
    combined = combine(config, state, [partial, partial.empty()])
    assert combined.closed is None
    assert [r.reason for r in combined.rejections] == [RejectReason.STALE]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"mode": "fedasync"}, "fedbuff"),
        ({"reducer": "median"}, "mean"),
        ({"reducer": "trimmed_mean"}, "mean"),
    ],
)
def test_configs_that_do_not_merge_are_refused(change: dict[str, Any], match: str) -> None:
    config = AggregationConfig.from_dict(change)
    with pytest.raises(ValueError, match=match):
        check_shardable(config)
    with pytest.raises(ValueError, match=match):
        PartialWindow.for_config(config, P)
    partial = PartialWindow(P, ShardSettings())
    with pytest.raises(ValueError, match=match):
        combine(config, ModelState(np.zeros(P, np.float32)), [partial])


def test_the_default_config_and_its_variants_are_shardable() -> None:
    for change in ({}, {"normalization": "weight_sum"}, {"clip_norm": 1.0}):
        check_shardable(AggregationConfig.from_dict(change))


def test_a_partial_for_other_settings_or_another_model_is_refused() -> None:
    config = AggregationConfig(weight_by_samples=True)
    agg = Aggregator(config, ModelState(np.zeros(P, np.float32)))
    with pytest.raises(ValueError, match="weighs updates"):
        fold_partial(agg, PartialWindow(P, ShardSettings(weight_by_samples=False)))
    with pytest.raises(ValueError, match="parameters"):
        fold_partial(agg, PartialWindow.for_config(config, P + 1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weight_by_samples": 1},
        {"clip_norm": 0.0},
        {"clip_norm": float("nan")},
        {"max_staleness": -1},
        {"max_bases": 0},
        {"max_bases": True},
    ],
)
def test_invalid_shard_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ShardSettings(**kwargs)
