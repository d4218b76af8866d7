"""Accumulator algebra (against numpy) and its binary format.

Mergeable state tested as in river's test_parallel.py: (A + B) == C where C saw both
streams; the order-invariance and zero-weight properties follow FLSim's
test_async_aggregator.py.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstream.pipelines.accumulator import (
    Accumulator,
    BufferedAccumulator,
    DeltaAccumulator,
    RunningSumAccumulator,
    make_accumulator,
)
from fedstream.pipelines.binary_format import (
    ChecksumError,
    MalformedPayloadError,
    StateFormatError,
    TruncatedError,
    UnsupportedVersionError,
)
from fedstream.pipelines.config import AggregationConfig, Mode, Reducer

F32 = np.ndarray[Any, np.dtype[np.float32]]
SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def batches(draw: st.DrawFn, min_k: int = 1, max_k: int = 8) -> tuple[list[F32], list[float]]:
    p = draw(st.integers(1, 12))
    k = draw(st.integers(min_k, max_k))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    deltas = [rng.uniform(-100, 100, p).astype(np.float32) for _ in range(k)]
    weights = draw(st.lists(st.floats(0.05, 10.0), min_size=k, max_size=k))
    return deltas, weights


def fill(acc: Accumulator, deltas: list[F32], weights: list[float], start: int = 0) -> None:
    for i, (d, w) in enumerate(zip(deltas, weights, strict=True), start=start):
        acc.add(d, w, update_id=f"u{i}", staleness=i % 3, num_samples=i + 1, now=float(i))


def kinds(p: int) -> list[DeltaAccumulator]:
    return [
        RunningSumAccumulator(p),
        BufferedAccumulator(p, Reducer.MEDIAN),
        BufferedAccumulator(p, Reducer.TRIMMED_MEAN, 0.2),
    ]


@SETTINGS
@given(batches())
def test_weighted_mean_equals_numpy(batch: tuple[list[F32], list[float]]) -> None:
    deltas, weights = batch
    acc = RunningSumAccumulator(deltas[0].shape[0])
    fill(acc, deltas, weights)
    expected = np.average(np.stack(deltas).astype(np.float64), axis=0, weights=weights)
    np.testing.assert_allclose(acc.result(), expected, rtol=1e-4, atol=1e-3)
    assert acc.total_weight == pytest.approx(sum(weights))
    assert acc.count == len(deltas)
    assert acc.update_ids == tuple(f"u{i}" for i in range(len(deltas)))


@SETTINGS
@given(batches(min_k=2), st.randoms(use_true_random=False))
def test_result_does_not_depend_on_update_order(
    batch: tuple[list[F32], list[float]], rnd: Any
) -> None:
    deltas, weights = batch
    order = list(range(len(deltas)))
    rnd.shuffle(order)
    for a, b in zip(kinds(deltas[0].shape[0]), kinds(deltas[0].shape[0]), strict=True):
        fill(a, deltas, weights)
        fill(b, [deltas[i] for i in order], [weights[i] for i in order])
        np.testing.assert_allclose(a.result(), b.result(), rtol=1e-5, atol=1e-4)


@SETTINGS
@given(batches(min_k=3))
def test_merge_is_associative_and_equals_one_stream(
    batch: tuple[list[F32], list[float]],
) -> None:
    deltas, weights = batch
    p = deltas[0].shape[0]
    i, j = 1, 1 + (len(deltas) - 1) // 2
    parts = [(deltas[:i], weights[:i]), (deltas[i:j], weights[i:j]), (deltas[j:], weights[j:])]
    for proto in kinds(p):
        a, b, c, whole = (proto.empty() for _ in range(4))
        for acc, (d, w), start in zip((a, b, c), parts, (0, i, j), strict=True):
            fill(acc, d, w, start)
        fill(whole, deltas, weights)
        left = a.merge(b).merge(c)
        right = a.merge(b.merge(c))
        for merged in (left, right):
            np.testing.assert_allclose(merged.result(), whole.result(), rtol=1e-5, atol=1e-4)
            assert merged.update_ids == whole.update_ids
            assert merged.stalenesses == whole.stalenesses
            assert merged.total_samples == whole.total_samples
            assert merged.first_added_at == whole.first_added_at
            assert merged.total_weight == pytest.approx(whole.total_weight)


@SETTINGS
@given(batches(min_k=2, max_k=2))
def test_merge_of_two_singletons_is_bitwise_the_two_added(
    batch: tuple[list[F32], list[float]],
) -> None:
    (da, db), (wa, wb) = batch
    for proto in kinds(da.shape[0]):
        a, b, both = proto.empty(), proto.empty(), proto.empty()
        fill(a, [da], [wa])
        fill(b, [db], [wb], start=1)
        fill(both, [da, db], [wa, wb])
        merged = a.merge(b)
        assert merged.to_bytes() == both.to_bytes()
        # merge is pure
        assert a.count == 1 and b.count == 1


def test_merge_with_empty_is_identity_and_kinds_must_match() -> None:
    a = RunningSumAccumulator(3)
    fill(a, [np.ones(3, np.float32)], [2.0])
    assert a.merge(a.empty()).to_bytes() == a.to_bytes()
    assert a.empty().merge(a).to_bytes() == a.to_bytes()
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(RunningSumAccumulator(4))
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(BufferedAccumulator(3, Reducer.MEDIAN))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot merge"):
        BufferedAccumulator(3, Reducer.MEDIAN).merge(BufferedAccumulator(3, Reducer.TRIMMED_MEAN))


@SETTINGS
@given(batches(), st.integers(0, 2**32 - 1))
def test_zero_weight_update_changes_nothing(
    batch: tuple[list[F32], list[float]], seed: int
) -> None:
    deltas, weights = batch
    p = deltas[0].shape[0]
    junk = np.random.default_rng(seed).uniform(-1e6, 1e6, p).astype(np.float32)
    for with_junk, without in zip(kinds(p), kinds(p), strict=True):
        fill(without, deltas, weights)
        fill(with_junk, deltas, weights)
        with_junk.add(junk, 0.0, update_id="zero", staleness=0, num_samples=1, now=99.0)
        np.testing.assert_array_equal(with_junk.result(), without.result())


def test_all_zero_weights_give_a_zero_pseudo_gradient() -> None:
    for acc in kinds(3):
        acc.add(np.ones(3, np.float32), 0.0, update_id="a", staleness=0, num_samples=1, now=0)
        np.testing.assert_array_equal(acc.result(), np.zeros(3, np.float32))


def test_scale_multiplies_the_delta_not_the_weight() -> None:
    acc = RunningSumAccumulator(2)
    acc.add(
        np.array([10, 0], np.float32),
        1.0,
        update_id="a",
        staleness=0,
        num_samples=1,
        now=0,
        scale=0.1,
    )
    acc.add(np.array([0, 4], np.float32), 1.0, update_id="b", staleness=0, num_samples=1, now=0)
    np.testing.assert_allclose(acc.result(), [0.5, 2.0])
    assert acc.total_weight == 2.0
    buf = BufferedAccumulator(2, Reducer.TRIMMED_MEAN, 0.0)
    buf.add(
        np.array([10, 0], np.float32),
        1.0,
        update_id="a",
        staleness=0,
        num_samples=1,
        now=0,
        scale=0.1,
    )
    np.testing.assert_allclose(buf.result(), [1.0, 0.0])


def test_add_refuses_bad_arguments() -> None:
    acc = RunningSumAccumulator(2)
    ok = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="weight"):
        acc.add(ok, -1.0, update_id="a", staleness=0, num_samples=1, now=0)
    with pytest.raises(ValueError, match="weight"):
        acc.add(ok, float("nan"), update_id="a", staleness=0, num_samples=1, now=0)
    with pytest.raises(ValueError, match="scale"):
        acc.add(ok, 1.0, update_id="a", staleness=0, num_samples=1, now=0, scale=-1)
    with pytest.raises(ValueError, match="shape"):
        acc.add(np.zeros(3, np.float32), 1.0, update_id="a", staleness=0, num_samples=1, now=0)
    with pytest.raises(ValueError, match="float32"):
        acc.add(np.zeros(2), 1.0, update_id="a", staleness=0, num_samples=1, now=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        acc.result()
    with pytest.raises(ValueError, match="num_params"):
        RunningSumAccumulator(0)
    with pytest.raises(ValueError, match="mean"):
        BufferedAccumulator(2, Reducer.MEAN)


def test_the_buffer_does_not_alias_the_callers_delta() -> None:
    d = np.ones(2, np.float32)
    for acc in kinds(2):
        acc.add(d, 1.0, update_id="a", staleness=0, num_samples=1, now=0)
        d[:] = 100.0
        np.testing.assert_array_equal(acc.result(), [1.0, 1.0])
        d[:] = 1.0


def test_tally_lineage_and_first_arrival() -> None:
    acc = Accumulator(3)
    assert acc.first_added_at is None and not acc.keeps_deltas
    for i, (s, n) in enumerate([(2, 10), (0, 5), (4, 1)]):
        acc.add(
            np.zeros(3, np.float32),
            1.0,
            update_id=f"x{i}",
            staleness=s,
            num_samples=n,
            now=10.0 + i,
        )
    assert acc.first_added_at == 10.0
    lin = acc.lineage()
    assert lin.update_ids == ("x0", "x1", "x2") and lin.count == 3
    assert (lin.staleness_min, lin.staleness_max, lin.staleness_mean) == (0, 4, 2.0)
    assert lin.total_samples == 16
    assert lin.to_dict()["update_ids"] == ["x0", "x1", "x2"]


def test_clear_resets_the_window_and_reuses_buffers() -> None:
    acc = RunningSumAccumulator(3)
    fill(acc, [np.ones(3, np.float32), np.full(3, 3, np.float32)], [1.0, 0.5])
    acc.clear()
    assert acc.count == 0 and acc.total_weight == 0 and acc.first_added_at is None
    assert acc.weighted_sum is None
    fill(acc, [np.full(3, 2, np.float32)], [4.0])
    np.testing.assert_array_equal(acc.result(), [2, 2, 2])
    out = np.empty(3, np.float32)
    assert acc.result(out=out) is out


def test_make_accumulator_follows_the_config() -> None:
    assert type(make_accumulator(AggregationConfig(), 4)) is RunningSumAccumulator
    assert type(make_accumulator(AggregationConfig(mode=Mode.FEDASYNC), 4)) is Accumulator
    robust = make_accumulator(AggregationConfig(reducer=Reducer.MEDIAN), 4)
    assert isinstance(robust, BufferedAccumulator) and robust.reducer is Reducer.MEDIAN
    assert robust.keeps_deltas


# -- binary format -----------------------------------------------------------------------


def _filled() -> list[Accumulator]:
    rng = np.random.default_rng(1)
    deltas = [rng.standard_normal(5).astype(np.float32) for _ in range(4)]
    out: list[Accumulator] = [Accumulator(5), *kinds(5)]
    for acc in out:
        fill(acc, deltas, [1.0, 0.5, 0.25, 2.0])
    return out


@pytest.mark.parametrize("acc", [Accumulator(5), *kinds(5), *_filled()], ids=repr)
def test_round_trip(acc: Accumulator) -> None:
    data = acc.to_bytes()
    back = Accumulator.from_bytes(data)
    assert type(back) is type(acc) and back.same_kind(acc)
    assert back.to_bytes() == data
    assert (back.update_ids, back.stalenesses) == (acc.update_ids, acc.stalenesses)
    assert (back.total_samples, back.total_weight) == (acc.total_samples, acc.total_weight)
    assert back.first_added_at == acc.first_added_at
    if isinstance(acc, DeltaAccumulator) and acc.count:
        assert isinstance(back, DeltaAccumulator)
        np.testing.assert_array_equal(back.result(), acc.result())
        # a restored accumulator keeps accumulating
        d = np.ones(5, np.float32)
        acc.add(d, 1.0, update_id="more", staleness=0, num_samples=1, now=0)
        back.add(d, 1.0, update_id="more", staleness=0, num_samples=1, now=0)
        assert back.to_bytes() == acc.to_bytes()


def test_from_bytes_on_a_subclass_checks_the_kind() -> None:
    data = RunningSumAccumulator(3).to_bytes()
    assert type(RunningSumAccumulator.from_bytes(data)) is RunningSumAccumulator
    with pytest.raises(MalformedPayloadError, match="not a BufferedAccumulator"):
        BufferedAccumulator.from_bytes(data)


@pytest.mark.parametrize("acc", _filled(), ids=repr)
def test_corrupted_truncated_and_wrong_version_bytes_raise_typed_errors(acc: Accumulator) -> None:
    data = acc.to_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    with pytest.raises(ChecksumError):
        Accumulator.from_bytes(bytes(flipped))
    for cut in (0, 5, 19, 20, len(data) - 1):
        with pytest.raises(TruncatedError):
            Accumulator.from_bytes(data[:cut])
    bumped = bytearray(data)
    struct.pack_into("<H", bumped, 4, 3)
    with pytest.raises(UnsupportedVersionError):
        Accumulator.from_bytes(bytes(bumped))
    with pytest.raises(StateFormatError):
        Accumulator.from_bytes(b"FSMS" + data[4:])


def test_device_ids_round_trip_and_version_1_state_still_reads() -> None:
    """Format 2 keeps each update's device (the lineage's device_ids); a window saved by
    the previous job version (format 1, no devices) restores with "" for each."""
    from fedstream.pipelines.binary_format import Writer, seal

    acc = Accumulator(3)
    for i, device in enumerate(("d1", "d2")):
        acc.add(np.ones(3, np.float32), 1.0, update_id=f"u{i}", staleness=0, num_samples=1,
                now=0.0, device_id=device)  # fmt: skip
    restored = Accumulator.from_bytes(acc.to_bytes())
    assert restored.device_ids == ("d1", "d2")
    assert restored.lineage().device_ids == ("d1", "d2")
    w = Writer()
    w.u8(0)
    w.i64(3)
    w.texts(["u0", "u1"])
    w.array(np.zeros(2, np.int64))
    w.i64(2)
    w.f64(2.0)
    w.optional_f64(0.0)
    old = Accumulator.from_bytes(seal(b"FSAC", 1, w))
    assert old.update_ids == ("u0", "u1") and old.device_ids == ("", "")


def test_consistent_frame_with_inconsistent_payload_is_malformed() -> None:
    from fedstream.pipelines.binary_format import Writer, seal

    w = Writer()
    w.u8(9)  # unknown kind
    with pytest.raises(MalformedPayloadError, match="kind"):
        Accumulator.from_bytes(seal(b"FSAC", 1, w))
    w = Writer()
    w.u8(2)
    w.i64(3)
    w.text("max")  # unknown reducer
    w.f64(0.1)
    with pytest.raises(MalformedPayloadError):
        Accumulator.from_bytes(seal(b"FSAC", 1, w))
