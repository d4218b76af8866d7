"""pack/unpack: property-tested round trips per encoding, and validation of hostile payloads."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from fedstream.schemas import (
    BadDtypeError,
    BadShapeError,
    CodecError,
    DeadLetterReason,
    EncodeError,
    InvalidBodyError,
    NonFiniteError,
    TensorEncoding,
    decode,
    encode,
    pack,
    unpack,
)

PROPS = settings(max_examples=150, deadline=None)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12)
finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


def arrays(elements: st.SearchStrategy[float] = finite32) -> st.SearchStrategy[NDArray[Any]]:
    return hnp.arrays(np.float32, shapes, elements=elements)


def through_the_wire(payload: Any) -> Any:
    """Send a payload through a real GradientUpdate encode/decode, as in production."""
    update = {
        "update_id": "u",
        "device_id": "d",
        "model_id": "m",
        "base_version": 0,
        "num_samples": 1,
        "created_at": 0,
        "delta": payload,
        "metrics": None,
        "sequence": None,
        "key_id": None,
        "signature": None,
    }
    return decode(encode("GradientUpdate", update)).record["delta"]


@PROPS
@given(arrays(st.floats(width=32)))  # NaN and infinities included
def test_fp32_is_exact(x: NDArray[np.float32]) -> None:
    payload = through_the_wire(pack(x, "FP32"))
    assert payload["encoding"] == "FP32" and payload["shape"] == list(x.shape)
    y = unpack(payload, expected_shape=x.shape)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert y.tobytes() == x.tobytes()  # bit-exact, signed zeros and NaN payloads included
    assert y.flags.writeable
    view = unpack(payload, expected_shape=x.shape, writable=False)  # the job's read-once path
    assert view.tobytes() == x.tobytes() and view.dtype == np.float32
    assert not view.flags.writeable  # a view of the record's bytes, never changed in place
    if view.size:
        assert np.shares_memory(view, np.frombuffer(payload["data"], dtype=np.uint8))


@PROPS
@given(arrays(st.floats(-65504, 65504, width=32)))
def test_fp16_within_half_precision(x: NDArray[np.float32]) -> None:
    y = unpack(through_the_wire(pack(x, TensorEncoding.FP16)))
    err = np.abs(y.astype(np.float64) - x.astype(np.float64))
    # round to nearest: half an ulp of fp16, relative 2^-11; absolute 2^-25 in the subnormals
    bound = np.maximum(np.abs(x.astype(np.float64)) * 2.0**-11, 2.0**-25)
    assert np.all(err <= bound)


@PROPS
@given(arrays())
def test_int8_error_is_at_most_half_a_step(x: NDArray[np.float32]) -> None:
    payload = through_the_wire(pack(x, "INT8"))
    y = unpack(payload)
    scale = payload["scale"]
    assert np.isfinite(scale) and scale > 0
    q = np.frombuffer(payload["data"], dtype=np.int8)
    assert np.all(np.abs(q.astype(np.int16)) <= 127)
    err = np.abs(y.astype(np.float64) - x.astype(np.float64))
    with np.errstate(over="ignore"):  # spacing of float32 max is inf in float32
        ulp = np.spacing(np.abs(x).astype(np.float64)) * 2.0**29  # the final float32 rounding
    assert np.all(err <= scale / 2 + ulp)


def test_int8_all_zero_and_extremes() -> None:
    zero = pack(np.zeros((3, 2)), "INT8")
    assert zero["scale"] == 1.0 and zero["data"] == bytes(6)
    assert np.array_equal(unpack(zero), np.zeros((3, 2), np.float32))
    x = np.array([-3.0, 0.0, 1.5, 3.0], np.float32)
    payload = pack(x, "INT8")
    assert np.frombuffer(payload["data"], np.int8).tolist() == [-127, 0, 64, 127]
    assert payload["scale"] == pytest.approx(3.0 / 127, rel=1e-7)
    big = np.array([np.finfo(np.float32).max, -1.0], np.float32)
    assert unpack(pack(big, "INT8"))[0] == pytest.approx(np.finfo(np.float32).max, rel=1e-6)
    tiny = np.array([1e-44, -1e-45], np.float32)  # subnormal: scale clamps to the normal min
    assert np.all(np.abs(unpack(pack(tiny, "INT8")) - tiny) <= np.finfo(np.float32).tiny / 2)


@PROPS
@given(arrays(), st.data())
def test_topk_keeps_the_k_largest_exactly(x: NDArray[np.float32], data: st.DataObject) -> None:
    k = data.draw(st.integers(0, x.size))
    payload = through_the_wire(pack(x, "TOPK", k=k))
    idx = np.frombuffer(payload["indices"], dtype="<i4")
    assert len(idx) == k and len(payload["data"]) == 4 * k
    assert np.all(np.diff(idx) > 0)
    y = unpack(payload, expected_shape=x.shape)
    flat_x, flat_y = x.reshape(-1), y.reshape(-1)
    kept = np.zeros(x.size, bool)
    kept[idx] = True
    assert np.array_equal(flat_y[kept], flat_x[kept])
    assert np.all(flat_y[~kept] == 0)
    if 0 < k < x.size:
        assert np.abs(flat_x[kept]).min() >= np.abs(flat_x[~kept]).max()


def test_topk_small_example() -> None:
    payload = pack(np.array([[0.1, -5.0], [3.0, 0.2]]), "TOPK", k=2)
    assert np.frombuffer(payload["indices"], "<i4").tolist() == [1, 2]
    assert np.frombuffer(payload["data"], "<f4").tolist() == [-5.0, 3.0]
    assert unpack(payload).tolist() == [[0.0, -5.0], [3.0, 0.0]]


def test_bytes_are_little_endian() -> None:
    payload = pack(np.array([1.0], dtype=">f8"), "FP32")
    assert payload["data"] == b"\x00\x00\x80\x3f"
    assert pack(np.array([1.0]), "FP16")["data"] == b"\x00\x3c"


def test_input_types() -> None:
    assert unpack(pack([1, 2, 3], "FP32")).tolist() == [1.0, 2.0, 3.0]
    assert unpack(pack(np.arange(4, dtype=np.int64).reshape(2, 2), "FP32")).shape == (2, 2)
    assert unpack(pack(np.float64(2.5), "FP16")).shape == ()
    assert unpack(pack(np.array([True, False]), "INT8")).tolist() == [1.0, 0.0]


# ------------------------------------------------------------------ pack errors


def test_pack_errors() -> None:
    with pytest.raises(BadDtypeError, match="unknown tensor encoding"):
        pack([1.0], "FP8")
    with pytest.raises(BadDtypeError, match="real-valued"):
        pack(np.array([1j]), "FP32")
    with pytest.raises(BadDtypeError, match="real-valued"):
        pack(["a"], "FP32")
    with pytest.raises(EncodeError, match="needs k"):
        pack([1.0], "TOPK")
    with pytest.raises(EncodeError, match="only meaningful for TOPK"):
        pack([1.0], "FP32", k=1)
    for k in (-1, 3, True, 1.0):
        with pytest.raises(EncodeError, match="integer in"):
            pack([1.0, 2.0], "TOPK", k=k)  # type: ignore[arg-type]
    with pytest.raises(NonFiniteError):
        pack([1.0, np.nan], "INT8")
    with pytest.raises(NonFiniteError):
        pack([1.0, np.inf], "TOPK", k=1)
    with pytest.raises(NonFiniteError, match="float16 range"):
        pack([70000.0], "FP16")
    with pytest.raises(NonFiniteError, match="float32 range"):
        pack(np.array([1e300]), "FP32")


def test_non_finite_passes_fp32_and_fp16_but_is_caught_on_request() -> None:
    for enc in ("FP32", "FP16"):
        payload = pack([1.0, np.nan, -np.inf], enc)
        assert np.isnan(unpack(payload)[1])
        with pytest.raises(NonFiniteError) as info:
            unpack(payload, require_finite=True)
        assert info.value.reason is DeadLetterReason.NON_FINITE


# ------------------------------------------------------------------ unpack validation


def _payload(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(pack(np.arange(6, dtype=np.float32).reshape(2, 3), "FP32"))
    base.update(overrides)
    return base


def _topk(
    indices: list[int], values: list[float] | None = None, shape: list[int] | None = None
) -> dict[str, Any]:
    vals = values if values is not None else [1.0] * len(indices)
    return _payload(
        encoding="TOPK",
        shape=shape or [6],
        data=np.array(vals, "<f4").tobytes(),
        indices=np.array(indices, "<i4").tobytes(),
    )


@pytest.mark.parametrize(
    ("payload", "error", "reason", "message"),
    [
        (_payload(encoding="FP8"), BadDtypeError, "BAD_DTYPE", "unknown tensor encoding"),
        (_payload(dtype="float64"), BadDtypeError, "BAD_DTYPE", "unsupported logical dtype"),
        (_payload(shape=[3, 3]), BadShapeError, "BAD_SHAPE", "needs 36 bytes, got 24"),
        (_payload(shape=[2, -3]), BadShapeError, "BAD_SHAPE", "negative dimension"),
        (_payload(shape=[1] * 33), BadShapeError, "BAD_SHAPE", "at most 32"),
        (_payload(shape=[2**20, 2**20]), BadShapeError, "BAD_SHAPE", "more than the limit"),
        (_payload(data=b"\x00" * 23), BadShapeError, "BAD_SHAPE", "needs 24 bytes"),
        (_payload(encoding="FP16"), BadShapeError, "BAD_SHAPE", "needs 12 bytes, got 24"),
        (_payload(indices=b"\x00" * 4), InvalidBodyError, "UNDECODABLE", "must be empty"),
        (
            _payload(encoding="INT8", data=bytes(6), scale=0.0),
            InvalidBodyError,
            "UNDECODABLE",
            "scale",
        ),
        (
            _payload(encoding="INT8", data=bytes(6), scale=-1.0),
            InvalidBodyError,
            "UNDECODABLE",
            "scale",
        ),
        (
            _payload(encoding="INT8", data=bytes(6), scale=float("nan")),
            InvalidBodyError,
            "UNDECODABLE",
            "scale",
        ),
        (
            _payload(encoding="INT8", data=bytes(6), scale=float("inf")),
            InvalidBodyError,
            "UNDECODABLE",
            "scale",
        ),
        (_topk([0, 6]), BadShapeError, "BAD_SHAPE", "out of range"),
        (_topk([-1, 2]), BadShapeError, "BAD_SHAPE", "out of range"),
        (_topk([2, 1]), InvalidBodyError, "UNDECODABLE", "strictly ascending"),
        (_topk([1, 1]), InvalidBodyError, "UNDECODABLE", "strictly ascending"),
        (
            _topk([0, 1, 2], shape=[2]),
            BadShapeError,
            "BAD_SHAPE",
            "keeps 3 values of a tensor of size 2",
        ),
        (_topk([0, 1], values=[1.0]), BadShapeError, "BAD_SHAPE", "2 indices but 4 bytes"),
        (
            _payload(encoding="TOPK", data=b"", indices=b"\x00\x00"),
            InvalidBodyError,
            "UNDECODABLE",
            "multiple of 4",
        ),
        (_topk([0], shape=[2**31]), BadShapeError, "BAD_SHAPE", "more than the limit"),
        (_payload(shape="23"), InvalidBodyError, "UNDECODABLE", "'shape' has type str"),
        (_payload(shape=[2.0, 3]), BadShapeError, "BAD_SHAPE", "non-integer"),
        (_payload(data="text"), InvalidBodyError, "UNDECODABLE", "'data' has type str"),
        ({"encoding": "FP32"}, InvalidBodyError, "UNDECODABLE", "no 'dtype'"),
    ],
)
def test_unpack_rejects(
    payload: dict[str, Any], error: type[CodecError], reason: str, message: str
) -> None:
    with pytest.raises(error, match=message) as info:
        unpack(payload)
    assert info.value.reason == reason


def test_expected_shape() -> None:
    payload = _payload()
    assert unpack(payload, expected_shape=(2, 3)).shape == (2, 3)
    with pytest.raises(BadShapeError, match=r"tensor shape \[2, 3\] != expected \[6\]"):
        unpack(payload, expected_shape=[6])
    # An expected shape lifts the default size limit: the caller vouches for the size.
    big = _topk([0], shape=[2**29])
    with pytest.raises(BadShapeError, match="limit"):
        unpack(big)
    with pytest.raises(BadShapeError, match="limit"):
        unpack(big, max_size=10)


def test_topk_empty_and_full() -> None:
    assert unpack(_topk([], shape=[3])).tolist() == [0.0, 0.0, 0.0]
    assert unpack(_topk([0, 1, 2], [1.0, 2.0, 3.0], shape=[3])).tolist() == [1.0, 2.0, 3.0]


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "encoding": st.sampled_from(["FP32", "FP16", "INT8", "TOPK", "X"]),
            "dtype": st.sampled_from(["float32", "int8"]),
            "shape": st.lists(st.integers(-2, 2**33), max_size=4),
            "data": st.binary(max_size=64),
            "scale": st.floats(width=32),
            "indices": st.binary(max_size=32),
        }
    ),
    st.one_of(st.none(), st.lists(st.integers(0, 20), max_size=3)),
)
def test_unpack_never_raises_anything_else(
    payload: dict[str, Any], expected: list[int] | None
) -> None:
    try:
        out = unpack(payload, expected_shape=expected)
    except CodecError:
        return
    assert out.dtype == np.float32
    assert list(out.shape) == payload["shape"]


def test_an_empty_tensor_with_huge_other_dimensions_is_bad_shape() -> None:
    """Size 0, but numpy cannot shape it: refused as BAD_SHAPE, not a bare ValueError."""
    payload = through_the_wire(pack(np.zeros(0, dtype=np.float32), "FP32"))
    payload["shape"] = [0, 46454, 695122, 71407789]
    with pytest.raises(BadShapeError, match="spans"):
        unpack(payload)
