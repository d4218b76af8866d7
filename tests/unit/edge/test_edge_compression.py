"""Compression round trips, and error feedback: nothing is lost, only delayed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.typing import NDArray

from fedstream.edge import Compression, DeltaCompressor
from fedstream.schemas import unpack

finite = st.floats(-100, 100, allow_nan=False, width=32)


def _vector(seed: int, n: int = 1000) -> NDArray[np.float32]:
    return np.random.default_rng(seed).normal(scale=0.01, size=n).astype(np.float32)


def test_none_is_exact_and_keeps_no_residual() -> None:
    delta = _vector(0)
    c = DeltaCompressor("none")
    prepared = c.prepare(delta)
    assert prepared.payload["encoding"] == "FP32"
    np.testing.assert_array_equal(unpack(prepared.payload), delta)
    c.commit(prepared)
    assert c.residual is None


@pytest.mark.parametrize(
    ("method", "encoding"),
    [("fp16", "FP16"), ("int8", "INT8"), ("topk", "TOPK")],
)
def test_round_trip_within_the_encoding_bound(method: str, encoding: str) -> None:
    delta = _vector(1)
    prepared = DeltaCompressor(method, topk_fraction=0.1).prepare(delta)
    assert prepared.payload["encoding"] == encoding
    decoded = unpack(prepared.payload, expected_shape=[delta.size])
    if method == "fp16":
        np.testing.assert_allclose(decoded, delta, rtol=2**-11, atol=2**-25)
    elif method == "int8":
        scale = np.abs(delta).max() / 127
        assert np.abs(decoded - delta).max() <= scale / 2 + 1e-9
    else:
        kept = np.flatnonzero(decoded)
        assert len(kept) == 100
        # the kept ones are exactly the largest magnitudes, exact values
        assert set(kept) == set(np.argsort(-np.abs(delta))[:100])
        np.testing.assert_array_equal(decoded[kept], delta[kept])
    # residual is exactly what the server will not see
    assert prepared.residual is not None
    np.testing.assert_allclose(prepared.residual, delta - decoded, atol=1e-7)


@pytest.mark.parametrize("method", ["fp16", "int8", "topk"])
def test_error_feedback_telescopes(method: str) -> None:
    """sum(sent) + final residual == sum(deltas): compression only delays information."""
    c = DeltaCompressor(method, topk_fraction=0.05)
    deltas = [_vector(seed) for seed in range(20)]
    sent = np.zeros_like(deltas[0], dtype=np.float64)
    for delta in deltas:
        prepared = c.prepare(delta)
        sent += unpack(prepared.payload)
        c.commit(prepared)
    residual = c.residual
    assert residual is not None
    np.testing.assert_allclose(sent + residual, np.sum(deltas, axis=0), atol=1e-5)


def test_topk_without_feedback_loses_the_small_values() -> None:
    c = DeltaCompressor("topk", topk_fraction=0.05, error_feedback=False)
    prepared = c.prepare(_vector(3))
    c.commit(prepared)
    assert c.residual is None


def test_prepare_changes_nothing_until_commit() -> None:
    c = DeltaCompressor("topk", topk_fraction=0.1)
    first = c.prepare(_vector(0))
    assert c.residual is None  # a failed send leaves the state as it was
    again = c.prepare(_vector(0))
    np.testing.assert_array_equal(first.payload["data"], again.payload["data"])
    c.commit(first)
    assert c.residual is not None
    c.reset()
    assert c.residual is None


def test_residual_of_another_size_is_an_error() -> None:
    c = DeltaCompressor("int8")
    c.commit(c.prepare(_vector(0, 10)))
    with pytest.raises(ValueError, match="layout changed"):
        c.prepare(_vector(0, 11))


def test_unknown_method_and_bad_fraction() -> None:
    with pytest.raises(ValueError, match="unknown compression"):
        DeltaCompressor("zip")
    with pytest.raises(ValueError, match="topk_fraction"):
        DeltaCompressor("topk", topk_fraction=0)
    assert DeltaCompressor("TOPK").method is Compression.TOPK


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, st.integers(1, 200), elements=finite), st.sampled_from(list(Compression)))
def test_sent_plus_residual_is_the_input(delta: NDArray[np.float32], method: Compression) -> None:
    prepared = DeltaCompressor(method, topk_fraction=0.3).prepare(delta)
    decoded = unpack(prepared.payload, expected_shape=[delta.size])
    residual = np.zeros_like(delta) if prepared.residual is None else prepared.residual
    np.testing.assert_allclose(decoded + residual, delta, atol=1e-4, rtol=1e-6)
