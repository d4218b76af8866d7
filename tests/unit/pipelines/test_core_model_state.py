"""ModelState: immutability, validation and its binary format."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedstream.pipelines.binary_format import (
    BadMagicError,
    ChecksumError,
    MalformedPayloadError,
    TruncatedError,
    UnsupportedVersionError,
    Writer,
    seal,
)
from fedstream.pipelines.model_state import ModelState


def test_arrays_are_read_only_and_callers_array_is_untouched() -> None:
    params = np.arange(4, dtype=np.float32)
    state = ModelState(params, 3, {"m": np.zeros(4, np.float32)})
    assert params.flags.writeable  # the caller's array keeps its flags
    with pytest.raises(ValueError):
        state.params[0] = 1.0
    with pytest.raises(ValueError):
        state.optimizer_state["m"][0] = 1.0
    with pytest.raises(TypeError):
        state.optimizer_state["v"] = np.zeros(4, np.float32)  # type: ignore[index]
    assert state.num_params == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"params": np.zeros(3)}, "params must be a 1-D float32 array"),
        ({"params": np.zeros((2, 2), np.float32)}, "params must be a 1-D float32"),
        ({"params": [0.0]}, "params must be a 1-D float32 array; got list"),
        ({"params": np.zeros(0, np.float32)}, "at least one value"),
        ({"params": np.zeros(3, np.float32), "version": -1}, "version must be >= 0"),
        ({"params": np.zeros(3, np.float32), "version": 1.0}, "version must be an int"),
        (
            {"params": np.zeros(3, np.float32), "optimizer_state": {"m": np.zeros(2, np.float32)}},
            "optimizer_state['m'] has shape (2,), expected (3,)",
        ),
    ],
)
def test_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        ModelState(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


@settings(max_examples=40, deadline=None)
@given(
    params=hnp.arrays(np.float32, st.integers(1, 30), elements=st.floats(width=32)),
    version=st.integers(0, 2**62),
    keys=st.sampled_from([(), ("m",), ("m", "v")]),
)
def test_round_trip(params: np.ndarray, version: int, keys: tuple[str, ...]) -> None:  # type: ignore[type-arg]
    opt = {k: np.full(params.shape, i + 0.5, np.float32) for i, k in enumerate(keys)}
    state = ModelState(params, version, opt)
    data = state.to_bytes()
    back = ModelState.from_bytes(data)
    assert back == state
    assert back.to_bytes() == data
    np.testing.assert_array_equal(back.params, params)  # NaN-aware, bit-exact values


def test_equality() -> None:
    a = ModelState(np.ones(2, np.float32), 1)
    assert a == ModelState(np.ones(2, np.float32), 1)
    assert a != ModelState(np.ones(2, np.float32), 2)
    assert a != ModelState(np.zeros(2, np.float32), 1)
    assert a != ModelState(np.ones(2, np.float32), 1, {"m": np.ones(2, np.float32)})
    assert a != "state"


def test_damaged_bytes() -> None:
    data = ModelState(
        np.arange(100, dtype=np.float32), 7, {"m": np.ones(100, np.float32)}
    ).to_bytes()
    flipped = bytearray(data)
    flipped[-3] ^= 1
    with pytest.raises(ChecksumError):
        ModelState.from_bytes(bytes(flipped))
    with pytest.raises(TruncatedError):
        ModelState.from_bytes(data[:-10])
    with pytest.raises(TruncatedError):
        ModelState.from_bytes(b"")
    bumped = bytearray(data)
    struct.pack_into("<H", bumped, 4, 99)
    with pytest.raises(UnsupportedVersionError):
        ModelState.from_bytes(bytes(bumped))
    with pytest.raises(BadMagicError):
        ModelState.from_bytes(b"FSAC" + data[4:])


def test_well_framed_but_invalid_state_is_malformed() -> None:
    w = Writer()
    w.i64(-1)  # negative version
    w.array(np.zeros(2, np.float32))
    w.texts([])
    with pytest.raises(MalformedPayloadError, match="version must be >= 0"):
        ModelState.from_bytes(seal(b"FSMS", 1, w))
    w = Writer()
    w.i64(0)
    w.array(np.zeros(2, np.float64))  # wrong dtype
    w.texts([])
    with pytest.raises(MalformedPayloadError, match="float32"):
        ModelState.from_bytes(seal(b"FSMS", 1, w))
