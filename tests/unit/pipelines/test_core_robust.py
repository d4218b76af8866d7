"""Robust reducers, clipping and DP noise, against plain numpy references."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedstream.pipelines.clipping import clip_scale, l2_norm
from fedstream.pipelines.privacy import add_gaussian_noise, noise_stddev
from fedstream.pipelines.reducers import trimmed_mean, weighted_median

F32 = np.ndarray[Any, np.dtype[np.float32]]
F64 = np.ndarray[Any, np.dtype[np.float64]]
SETTINGS = settings(max_examples=60, deadline=None)

stacks = st.integers(1, 9).flatmap(
    lambda k: st.tuples(
        hnp.arrays(np.float32, (k, 6), elements=st.floats(-1e3, 1e3, width=32)),
        hnp.arrays(np.float64, (k,), elements=st.floats(0.01, 10)),
    )
)


def ref_weighted_median(col: F32, w: F64) -> float:
    """Textbook definition, one coordinate: smallest x with cumulative weight >= W/2, and
    the smallest with cumulative weight > W/2; their midpoint."""
    order = np.argsort(col, kind="stable")
    x, c = col[order].astype(np.float64), np.cumsum(w[order] / w.max())
    half = c[-1] / 2
    lo = next(i for i in range(len(c)) if c[i] >= half)
    hi = next(i for i in range(len(c)) if c[i] > half)
    return float((x[lo] + x[hi]) / 2)


def ref_trimmed_mean(col: F32, w: F64, beta: float) -> float:
    k = math.floor(beta * len(col))
    order = np.argsort(col, kind="stable")[k : len(col) - k]
    return float(np.average(col[order].astype(np.float64), weights=w[order]))


@SETTINGS
@given(stacks)
def test_equal_weight_median_is_numpy_median(stack_w: tuple[F32, F64]) -> None:
    stack, _ = stack_w
    got = weighted_median(stack, np.ones(stack.shape[0]))
    np.testing.assert_array_equal(got, np.median(stack, axis=0).astype(np.float32))


@SETTINGS
@given(stacks)
def test_weighted_median_matches_definition(stack_w: tuple[F32, F64]) -> None:
    stack, w = stack_w
    got = weighted_median(stack, w)
    expected = [ref_weighted_median(stack[:, j], w) for j in range(stack.shape[1])]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-4)


@SETTINGS
@given(stacks, st.sampled_from([0.0, 0.1, 0.2, 0.34, 0.49]))
def test_trimmed_mean_matches_definition(stack_w: tuple[F32, F64], beta: float) -> None:
    stack, w = stack_w
    got = trimmed_mean(stack, w, beta)
    expected = [ref_trimmed_mean(stack[:, j], w, beta) for j in range(stack.shape[1])]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


@SETTINGS
@given(stacks)
def test_equal_weight_trimmed_mean_is_the_classic_one(stack_w: tuple[F32, F64]) -> None:
    stack, _ = stack_w
    k = math.floor(0.2 * stack.shape[0])
    classic = np.sort(stack.astype(np.float64), axis=0)[k : stack.shape[0] - k].mean(axis=0)
    got = trimmed_mean(stack, np.full(stack.shape[0], 3.0), 0.2)
    np.testing.assert_allclose(got, classic, rtol=1e-5, atol=1e-3)


@SETTINGS
@given(
    honest=st.integers(5, 12),
    attackers=st.integers(1, 2),
    sign=st.sampled_from([1.0, -1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_minority_of_huge_updates_is_resisted(
    honest: int, attackers: int, sign: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    good = rng.uniform(-1, 1, (honest, 20)).astype(np.float32)
    bad = np.full((attackers, 20), sign * 1e30, np.float32)
    stack = np.concatenate([good, bad])
    w = np.ones(stack.shape[0])
    lo, hi = good.min(axis=0), good.max(axis=0)
    # trim 0.3: floor(0.3 K) >= attackers for every K drawn here
    for robust in (weighted_median(stack, w), trimmed_mean(stack, w, 0.3)):
        # stays inside the honest range, coordinate by coordinate
        assert np.all(robust >= lo) and np.all(robust <= hi)
    mean = np.average(stack, axis=0, weights=w)
    assert np.all(np.abs(mean) > 1e27)  # the mean is not robust


def test_shapes_and_weights_are_checked() -> None:
    with pytest.raises(ValueError, match="weights"):
        weighted_median(np.zeros((2, 3), np.float32), np.ones(3))
    with pytest.raises(ValueError, match=">= 0"):
        weighted_median(np.zeros((2, 3), np.float32), np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="trim_fraction"):
        trimmed_mean(np.zeros((2, 3), np.float32), np.ones(2), 0.5)


# -- clipping ----------------------------------------------------------------------------


@SETTINGS
@given(
    hnp.arrays(np.float32, st.integers(1, 50), elements=st.floats(-1e6, 1e6, width=32)),
    st.floats(1e-3, 1e3),
)
def test_clipping_bounds_the_norm(v: F32, c: float) -> None:
    norm = l2_norm(v)
    assert norm == pytest.approx(float(np.linalg.norm(v.astype(np.float64))), rel=1e-4)
    scale = clip_scale(norm, c)
    assert 0.0 <= scale <= 1.0
    clipped = v.astype(np.float64) * scale
    assert np.linalg.norm(clipped) <= c * (1 + 1e-6) or scale == 1.0
    if norm <= c:
        assert scale == 1.0  # small updates are untouched


def test_l2_norm_does_not_overflow() -> None:
    v = np.array([3e38, 3e38], np.float32)
    assert l2_norm(v) == pytest.approx(3e38 * math.sqrt(2), rel=1e-6)


# -- DP noise ----------------------------------------------------------------------------


def test_noise_has_the_right_scale_with_a_fixed_seed() -> None:
    z, c = 1.3, 0.5
    std = noise_stddev(z, c)
    assert std == pytest.approx(0.65)
    v = np.zeros(200_000, np.float32)
    add_gaussian_noise(v, std, np.random.default_rng(42))
    # 200k samples: the sample std is within ~0.3% of the truth (5 sigma ~ 0.8%)
    assert float(np.std(v)) == pytest.approx(std, rel=0.01)
    assert abs(float(np.mean(v))) < 5 * std / math.sqrt(v.size)
    # deterministic for a given seed
    w = np.zeros(200_000, np.float32)
    add_gaussian_noise(w, std, np.random.default_rng(42))
    np.testing.assert_array_equal(v, w)


def test_zero_noise_multiplier_adds_nothing() -> None:
    v = np.arange(5, dtype=np.float32)
    add_gaussian_noise(v, noise_stddev(0.0, 1.0), np.random.default_rng(0))
    np.testing.assert_array_equal(v, np.arange(5, dtype=np.float32))
    with pytest.raises(ValueError):
        noise_stddev(-1.0, 1.0)
    with pytest.raises(ValueError):
        add_gaussian_noise(v, -1.0, np.random.default_rng(0))
