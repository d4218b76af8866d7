"""Packing float32 tensors into TensorPayload records, and validating them on the way back.

The logical tensor is always float32 (what the aggregation core computes in); the encoding
only changes how many bytes cross the network:

========  =====================  ==========================================================
encoding  bytes per value        exactness
========  =====================  ==========================================================
FP32      4                      exact
FP16      2                      relative error <= 2^-11 (absolute 2^-25 near zero);
                                 values beyond +-65504 are refused, not turned into inf
INT8      1 (+4 for the scale)   symmetric per tensor: scale = max|x| / 127,
                                 q = round(x / scale); error <= scale / 2
TOPK      8 per kept value       the k values of largest magnitude exactly, zeros elsewhere
========  =====================  ==========================================================

Everything is little-endian whatever the host byte order, so a Java or Rust reader needs no
guessing. `unpack` treats its input as untrusted (it comes from devices) and checks every
length, index and the scale before touching numpy, so a hostile payload cannot make it read
out of bounds, allocate a huge dense tensor from a few bytes, or return garbage: it raises
a `CodecError` whose `reason` is BAD_SHAPE (shape does not fit the data or the model),
BAD_DTYPE (unknown encoding or dtype), UNDECODABLE (malformed bytes) or NON_FINITE.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedstream.schemas.errors import (
    BadDtypeError,
    BadShapeError,
    EncodeError,
    InvalidBodyError,
    NonFiniteError,
)
from fedstream.schemas.records import TensorPayload

__all__ = ["DEFAULT_MAX_SIZE", "MAX_NDIM", "TensorEncoding", "pack", "unpack"]


class TensorEncoding(enum.StrEnum):
    """The ``io.fedstream.TensorEncoding`` Avro enum; values are the Avro symbols."""

    FP32 = "FP32"
    FP16 = "FP16"
    INT8 = "INT8"
    TOPK = "TOPK"


#: The only logical dtype defined so far.
LOGICAL_DTYPE: Final = "float32"
#: Most dimensions a payload may declare (numpy allows 64; no model tensor needs more).
MAX_NDIM: Final = 32
#: Largest logical size `unpack` accepts when the caller gives no expected shape. Only TOPK
#: can declare a size much larger than its bytes; pass `expected_shape` for untrusted data.
DEFAULT_MAX_SIZE: Final = 1 << 28
# TOPK indices are int32, so no logical tensor may have more elements than this.
_MAX_INDEX_SIZE: Final = (1 << 31) - 1

_F32: Final = np.dtype("<f4")
_F16: Final = np.dtype("<f2")
_I8: Final = np.dtype("i1")
_I32: Final = np.dtype("<i4")
_BYTES: Final = (bytes, bytearray, memoryview)
_FP16_MAX: Final = float(np.finfo(np.float16).max)
_F32_TINY: Final = float(np.finfo(np.float32).tiny)
_F32_MAX: Final = float(np.finfo(np.float32).max)


def _as_float32(array: ArrayLike) -> NDArray[np.float32]:
    try:
        arr = np.asarray(array)
    except Exception as exc:
        raise BadDtypeError(f"cannot convert {type(array).__name__} to an array: {exc}") from exc
    if arr.dtype.kind not in "fiub":
        raise BadDtypeError(f"tensor must be real-valued, got dtype {arr.dtype}")
    if arr.ndim > MAX_NDIM:
        raise BadShapeError(f"tensor has {arr.ndim} dimensions, at most {MAX_NDIM} allowed")
    if arr.size > _MAX_INDEX_SIZE:
        raise BadShapeError(f"tensor has {arr.size} elements, at most {_MAX_INDEX_SIZE}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(arr, dtype=_F32, order="C")  # (ascontiguousarray makes 0-d 1-d)
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
        overflow = np.isfinite(arr) & ~np.isfinite(out)
        if overflow.any():
            raise NonFiniteError("tensor has values outside the float32 range")
    return out


#: What one encoding's packer returns: (data, scale, indices) of the TensorPayload.
_Packed = tuple[bytes, float, bytes]


def _pack_fp32(flat: NDArray[np.float32], k: int | None) -> _Packed:
    return flat.tobytes(), 1.0, b""


def _pack_fp16(flat: NDArray[np.float32], k: int | None) -> _Packed:
    with np.errstate(over="ignore"):
        half = flat.astype(_F16)
    if (np.isfinite(flat) & ~np.isfinite(half)).any():
        raise NonFiniteError(f"tensor has values beyond the float16 range (+-{_FP16_MAX:g})")
    return half.tobytes(), 1.0, b""


def _pack_int8(flat: NDArray[np.float32], k: int | None) -> _Packed:
    """Symmetric per-tensor quantization: q = rint(x / scale), scale = max|x| / 127."""
    if not np.isfinite(flat).all():
        raise NonFiniteError("INT8 cannot encode NaN or infinity")
    max_abs = float(np.max(np.abs(flat))) if flat.size else 0.0
    if max_abs == 0.0:
        return bytes(flat.size), 1.0, b""  # all zeros: any scale works, keep the neutral 1.0
    # The scale travels as an Avro float, so quantize with the float32 value the reader
    # will see; never below the smallest normal float32 (subnormal scales lose precision
    # and would break the error bound), never so large that 127 * scale overflows float32.
    scale32 = np.float32(max(max_abs / 127.0, _F32_TINY))
    if 127.0 * float(scale32) > _F32_MAX:  # rounded up past the float32 range
        scale32 = np.nextafter(scale32, np.float32(0))
    scale = float(scale32)
    q = np.clip(np.rint(flat.astype(np.float64) / scale), -127, 127)
    return q.astype(_I8).tobytes(), scale, b""


def _pack_topk(flat: NDArray[np.float32], k: int | None) -> _Packed:
    """The k values of largest magnitude and their ascending int32 indices."""
    if k is None:
        raise EncodeError("TOPK needs k (the number of values to keep)")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 0 <= k <= flat.size:
        raise EncodeError(f"TOPK k must be an integer in [0, {flat.size}], got {k!r}")
    if not np.isfinite(flat).all():
        raise NonFiniteError("TOPK cannot rank NaN or infinity")
    k = int(k)
    if k == flat.size:
        idx = np.arange(flat.size, dtype=_I32)
    elif k == 0:
        idx = np.empty(0, dtype=_I32)
    else:
        idx = np.sort(np.argpartition(np.abs(flat), flat.size - k)[flat.size - k :])
    idx = idx.astype(_I32)
    return flat[idx].tobytes(), 1.0, idx.tobytes()


_PACKERS: Final = {
    TensorEncoding.FP32: _pack_fp32,
    TensorEncoding.FP16: _pack_fp16,
    TensorEncoding.INT8: _pack_int8,
    TensorEncoding.TOPK: _pack_topk,
}


def pack(
    array: ArrayLike,
    encoding: TensorEncoding | str = TensorEncoding.FP32,
    k: int | None = None,
) -> TensorPayload:
    """Encode `array` (any real dtype, converted to float32) as a TensorPayload record.

    `k` is required for TOPK (0 <= k <= size) and not allowed otherwise. FP32 and FP16 carry
    NaN and infinity faithfully (the server dead-letters them as NON_FINITE); INT8 and TOPK
    cannot represent them meaningfully and raise `NonFiniteError`.
    """
    try:
        enc = TensorEncoding(encoding)
    except ValueError:
        known = [e.value for e in TensorEncoding]
        raise BadDtypeError(
            f"unknown tensor encoding {encoding!r}; expected one of {known}"
        ) from None
    if enc is not TensorEncoding.TOPK and k is not None:
        raise EncodeError(f"k is only meaningful for TOPK, not {enc}")
    x = _as_float32(array)
    data, scale, indices = _PACKERS[enc](x.reshape(-1), k)
    return {
        "encoding": enc.value,
        "dtype": LOGICAL_DTYPE,
        "shape": [int(d) for d in x.shape],
        "data": data,
        "scale": scale,
        "indices": indices,
    }


def _field(payload: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    try:
        value = payload[key]
    except (KeyError, TypeError):
        raise InvalidBodyError(f"tensor payload has no {key!r}") from None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidBodyError(f"tensor payload {key!r} has type {type(value).__name__}")
    return value


def _check_shape(raw: Sequence[Any], max_size: int) -> tuple[tuple[int, ...], int]:
    if len(raw) > MAX_NDIM:
        raise BadShapeError(f"shape has {len(raw)} dimensions, at most {MAX_NDIM} allowed")
    shape: list[int] = []
    for d in raw:
        if isinstance(d, bool) or not isinstance(d, int):
            raise BadShapeError(f"shape {list(raw)} has a non-integer dimension")
        if d < 0:
            raise BadShapeError(f"shape {list(raw)} has a negative dimension")
        shape.append(d)
    size = math.prod(shape)
    if size > max_size:
        raise BadShapeError(f"shape {shape} has {size} elements, more than the limit {max_size}")
    # An empty tensor's other dimensions are bounded too: numpy refuses to shape even an
    # empty array whose nonzero dimensions multiply past its index range.
    spanned = math.prod(d for d in shape if d)
    if spanned > max_size:
        raise BadShapeError(f"shape {shape} spans {spanned} elements, more than {max_size}")
    return tuple(shape), size


def _unpack_fp32(data: Any, indices: Any, scale: float, size: int) -> NDArray[np.float32]:
    if len(data) != 4 * size:
        raise BadShapeError(f"FP32 of {size} values needs {4 * size} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=_F32)  # a view: `unpack` copies it unless told not to


def _unpack_fp16(data: Any, indices: Any, scale: float, size: int) -> NDArray[np.float32]:
    if len(data) != 2 * size:
        raise BadShapeError(f"FP16 of {size} values needs {2 * size} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=_F16).astype(np.float32)


def _unpack_int8(data: Any, indices: Any, scale: float, size: int) -> NDArray[np.float32]:
    if len(data) != size:
        raise BadShapeError(f"INT8 of {size} values needs {size} bytes, got {len(data)}")
    if not (math.isfinite(scale) and scale > 0):
        raise InvalidBodyError(f"INT8 scale must be finite and > 0, got {scale!r}")
    q = np.frombuffer(data, dtype=_I8)
    with np.errstate(over="ignore"):  # 127 * huge scale may exceed float32
        return (q.astype(np.float64) * float(scale)).astype(np.float32)


def _unpack_topk(data: Any, indices: Any, scale: float, size: int) -> NDArray[np.float32]:
    """Scatter the kept values into zeros; indices must be ascending and in range."""
    if len(indices) % 4:
        raise InvalidBodyError(f"TOPK indices length {len(indices)} is not a multiple of 4")
    k = len(indices) // 4
    if len(data) != 4 * k:
        raise BadShapeError(f"TOPK has {k} indices but {len(data)} bytes of values (need {4 * k})")
    if k > size:
        raise BadShapeError(f"TOPK keeps {k} values of a tensor of size {size}")
    idx = np.frombuffer(indices, dtype=_I32)
    if k > 1 and not bool(np.all(idx[1:] > idx[:-1])):
        raise InvalidBodyError("TOPK indices are not strictly ascending")
    if k and (int(idx[0]) < 0 or int(idx[-1]) >= size):  # sorted: the ends bound all
        raise BadShapeError(f"TOPK index out of range [0, {size})")
    out = np.zeros(size, dtype=np.float32)
    out[idx] = np.frombuffer(data, dtype=_F32)
    return out


_UNPACKERS: Final = {
    TensorEncoding.FP32: _unpack_fp32,
    TensorEncoding.FP16: _unpack_fp16,
    TensorEncoding.INT8: _unpack_int8,
    TensorEncoding.TOPK: _unpack_topk,
}


def unpack(
    payload: Mapping[str, Any],
    expected_shape: Sequence[int] | None = None,
    *,
    require_finite: bool = False,
    max_size: int = DEFAULT_MAX_SIZE,
    writable: bool = True,
) -> NDArray[np.float32]:
    """Decode a TensorPayload into a new, writable float32 array of its logical shape.

    `expected_shape`, when given, must equal the payload's shape (BAD_SHAPE otherwise) and
    also lifts `max_size`: the size is then bounded by what the caller expects. With
    `require_finite`, NaN or infinity raises `NonFiniteError`. With `writable=False`, an
    FP32 payload on a little-endian host comes back as a read-only view of `data`, not a
    copy: the job reads each update's delta once, and a copy is a pass over its bytes.
    """
    enc_raw = _field(payload, "encoding", str)
    try:
        enc = TensorEncoding(enc_raw)
    except ValueError:
        raise BadDtypeError(f"unknown tensor encoding {enc_raw!r}") from None
    dtype = _field(payload, "dtype", str)
    if dtype != LOGICAL_DTYPE:
        raise BadDtypeError(f"unsupported logical dtype {dtype!r}; only {LOGICAL_DTYPE!r}")
    raw_shape = _field(payload, "shape", (list, tuple))
    data = _field(payload, "data", _BYTES)
    indices = _field(payload, "indices", _BYTES)
    scale = _field(payload, "scale", (float, int))

    if expected_shape is not None:
        want = tuple(int(d) for d in expected_shape)
        if tuple(raw_shape) != want:
            raise BadShapeError(f"tensor shape {list(raw_shape)} != expected {list(want)}")
        max_size = max(max_size, math.prod(want))
    shape, size = _check_shape(raw_shape, min(max_size, _MAX_INDEX_SIZE))
    if enc is not TensorEncoding.TOPK and len(indices):
        raise InvalidBodyError(f"{enc} payload has {len(indices)} bytes of indices (must be empty)")
    out = _UNPACKERS[enc](data, indices, scale, size)
    if (writable and not out.flags.writeable) or not out.dtype.isnative:
        out = out.astype(np.float32)
    if require_finite and not bool(np.isfinite(out).all()):
        raise NonFiniteError("tensor has NaN or infinite values")
    return out.reshape(shape)
