"""ParameterLayout: flat-vector order shared by devices and the job."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from fedstream.schemas import (
    BadDtypeError,
    DeadLetterReason,
    LayoutError,
    ParameterLayout,
    decode,
    encode,
)

LAYOUT = ParameterLayout([("w", (2, 3)), ("b", (3,)), ("scalar", ()), ("empty", (0, 4))])


def _params(layout: ParameterLayout, seed: int = 0) -> dict[str, NDArray[np.float32]]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in layout}


def test_basics() -> None:
    assert LAYOUT.size == 6 + 3 + 1 + 0
    assert LAYOUT.names == ("w", "b", "scalar", "empty")
    assert LAYOUT.shapes == ((2, 3), (3,), (), (0, 4))
    assert len(LAYOUT) == 4 and "b" in LAYOUT and "x" not in LAYOUT
    assert LAYOUT.slice_of("b") == slice(6, 9)
    assert repr(LAYOUT) == "ParameterLayout([w[2, 3], b[3], scalar[], empty[0, 4]], size=10)"
    assert ParameterLayout(list(LAYOUT)) == LAYOUT and hash(LAYOUT) == hash(
        ParameterLayout(list(LAYOUT))
    )
    assert (
        ParameterLayout([("w", (3, 2)), ("b", (3,)), ("scalar", ()), ("empty", (0, 4))]) != LAYOUT
    )


def test_flatten_order_and_values() -> None:
    params = _params(LAYOUT)
    flat = LAYOUT.flatten(params)
    assert flat.dtype == np.float32 and flat.shape == (10,)
    assert np.array_equal(flat[:6], params["w"].reshape(-1))  # C order
    assert np.array_equal(flat[6:9], params["b"])
    assert flat[9] == params["scalar"]


def test_unflatten_round_trip_and_independence() -> None:
    params = _params(LAYOUT, 3)
    flat = LAYOUT.flatten(params)
    back = LAYOUT.unflatten(flat)
    assert list(back) == list(LAYOUT.names)
    for name, shape in LAYOUT:
        assert back[name].shape == shape and back[name].dtype == np.float32
        assert np.array_equal(back[name], params[name])
    back["b"][:] = 7.0
    assert not np.any(flat[6:9] == 7.0)  # the caller's vector is untouched


def test_flatten_casts_and_accepts_lists() -> None:
    layout = ParameterLayout([("a", (2,))])
    assert layout.flatten({"a": [1, 2]}).tolist() == [1.0, 2.0]
    assert layout.flatten({"a": np.array([1.5, 2.5], np.float64)}).dtype == np.float32


def test_registration_round_trip(samples: dict[str, tuple[str, dict[str, Any]]]) -> None:
    specs = LAYOUT.to_registration()
    assert specs[0] == {"name": "w", "shape": [2, 3]}
    assert ParameterLayout.from_registration(specs) == LAYOUT
    # ...including through a real ModelRegistration, whose `parameters` field this is.
    registration = {**samples["registration"][1], "parameters": specs}
    decoded = decode(encode("ModelRegistration", registration), "ModelRegistration")
    assert ParameterLayout.from_registration(decoded.record["parameters"]) == LAYOUT


def test_flatten_errors() -> None:
    params = _params(LAYOUT)
    missing = {k: v for k, v in params.items() if k != "b"}
    with pytest.raises(LayoutError, match=r"missing \['b'\], extra \[\]") as info:
        LAYOUT.flatten(missing)
    assert info.value.reason is DeadLetterReason.BAD_SHAPE
    with pytest.raises(LayoutError, match=r"missing \[\], extra \['zzz'\]"):
        LAYOUT.flatten({**params, "zzz": np.zeros(1)})
    with pytest.raises(LayoutError, match=r"'w' has shape \[3, 2\], layout says \[2, 3\]"):
        LAYOUT.flatten({**params, "w": np.zeros((3, 2))})
    with pytest.raises(LayoutError, match="shape"):
        LAYOUT.flatten({**params, "b": np.zeros((1, 3))})  # no silent broadcast/reshape
    with pytest.raises(BadDtypeError):
        LAYOUT.flatten({**params, "b": np.array(["x", "y", "z"])})


def test_unflatten_errors() -> None:
    with pytest.raises(LayoutError, match=r"flat vector has shape \[9\], layout needs \[10\]"):
        LAYOUT.unflatten(np.zeros(9))
    with pytest.raises(LayoutError, match="layout needs"):
        LAYOUT.unflatten(np.zeros((2, 5)))
    with pytest.raises(BadDtypeError):
        LAYOUT.unflatten(np.zeros(10, dtype=complex))


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([("a", (1,)), ("a", (2,))], "listed twice"),
        ([("", (1,))], "non-empty string"),
        ([("a", (-1,))], "negative"),
        ([("a", (1.5,))], "integers"),
        ([("a", (True,))], "integers"),
    ],
)
def test_invalid_layouts(specs: list[tuple[str, tuple[object, ...]]], message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        ParameterLayout(specs)  # type: ignore[arg-type]


def test_from_registration_errors() -> None:
    with pytest.raises(LayoutError, match="need 'name' and 'shape'"):
        ParameterLayout.from_registration([{"name": "a"}])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=8), st.lists(st.integers(0, 4), max_size=3)),
        max_size=6,
        unique_by=lambda t: t[0],
    ),
    st.integers(0, 2**32 - 1),
)
def test_round_trip_property(specs: list[tuple[str, list[int]]], seed: int) -> None:
    layout = ParameterLayout(specs)
    params = _params(layout, seed)
    flat = layout.flatten(params)
    assert flat.shape == (layout.size,)
    back = layout.unflatten(flat)
    assert all(np.array_equal(back[n], params[n]) for n in layout.names)
    assert np.array_equal(layout.flatten(back), flat)
