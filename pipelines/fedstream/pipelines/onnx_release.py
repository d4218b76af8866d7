"""ONNX materialization: put server weights into a model template, and read them back.

Why: devices run onnxruntime, and the job must publish a runnable model per release
without torch. A model is registered with an ONNX template (exported once by torch);
every release is that template with its initializers replaced by name.

Why without the `onnx` package: an ONNX model is a protobuf `ModelProto`, and swapping
initializers only needs a handful of its fields, so this module edits the bytes directly
(`protobuf_wire`). onnx >= 1.18 is a nanobind extension whose calls abort the JVM in
PyFlink's thread mode (pemja threads fail nanobind's GIL check); with no onnx import, the
job can run in either mode. Every field not named below (nodes, inputs, opsets, metadata,
other initializers, unknown fields) is copied byte for byte.

Details that matter:
- Only the names given are replaced. Exporters add initializers of their own (torch's
  dynamo exporter emits constants such as `val_5`); those are kept as they are.
- The output is self-contained: replaced tensors are embedded (raw_data, little-endian),
  and a template whose *kept* initializers point at external data is refused, because
  the bytes alone would not load. Export templates with embedded data
  (`external_data=False`).
- Only the main graph's initializers are considered (not those of subgraphs).
- Values are cast to the template's dtype only between floating-point types; anything
  else (or a shape change) is an error naming the initializer.
- Readable element types: the floating-point ones numpy has (FLOAT, FLOAT16, DOUBLE,
  COMPLEX64/128), the integer types and BOOL, from raw_data or the typed fields. STRING,
  BFLOAT16, the float8/4-bit types and tensor segments are refused by name.
- Only the fields read here are checked: bytes damaged elsewhere (inside a node, say),
  which onnx would refuse to parse, are copied through unchanged. A model with more than
  one `graph` field (legal protobuf, which merges them, but written by no ONNX tool) is
  refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedstream.pipelines.protobuf_wire import (
    I32,
    I64,
    LEN,
    VARINT,
    Field,
    WireError,
    fields,
    len_header,
    packed_varints,
    tag,
    to_signed,
    varint,
)

__all__ = ["OnnxTemplateError", "materialize", "read_initializers", "strip_initializers"]

# Field numbers, from onnx/onnx-ml.proto (onnx 1.22).
MODEL_GRAPH = 7  # ModelProto.graph: GraphProto
GRAPH_INITIALIZER = 5  # GraphProto.initializer: repeated TensorProto
# TensorProto
DIMS, DATA_TYPE, SEGMENT, FLOAT_DATA, INT32_DATA, INT64_DATA = 1, 2, 3, 4, 5, 7
NAME, RAW_DATA, DOUBLE_DATA, UINT64_DATA, DOC_STRING, DATA_LOCATION = 8, 9, 10, 11, 12, 14
EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL

#: TensorProto.DataType -> (numpy dtype, the typed field that holds the values when there
#: is no raw_data). int32_data holds 8/16-bit types as their bit patterns (FLOAT16 too).
DTYPES: dict[int, tuple[np.dtype[Any], int]] = {
    1: (np.dtype(np.float32), FLOAT_DATA),  # FLOAT
    2: (np.dtype(np.uint8), INT32_DATA),  # UINT8
    3: (np.dtype(np.int8), INT32_DATA),  # INT8
    4: (np.dtype(np.uint16), INT32_DATA),  # UINT16
    5: (np.dtype(np.int16), INT32_DATA),  # INT16
    6: (np.dtype(np.int32), INT32_DATA),  # INT32
    7: (np.dtype(np.int64), INT64_DATA),  # INT64
    9: (np.dtype(np.bool_), INT32_DATA),  # BOOL
    10: (np.dtype(np.float16), INT32_DATA),  # FLOAT16
    11: (np.dtype(np.float64), DOUBLE_DATA),  # DOUBLE
    12: (np.dtype(np.uint32), UINT64_DATA),  # UINT32
    13: (np.dtype(np.uint64), UINT64_DATA),  # UINT64
    14: (np.dtype(np.complex64), FLOAT_DATA),  # COMPLEX64: (real, imaginary) pairs
    15: (np.dtype(np.complex128), DOUBLE_DATA),  # COMPLEX128
}
#: The wire types a typed field may come in: packed (LEN) or one value per field.
TYPED_WIRE = {FLOAT_DATA: I32, DOUBLE_DATA: I64, INT32_DATA: VARINT}
TYPED_WIRE |= {INT64_DATA: VARINT, UINT64_DATA: VARINT}


class OnnxTemplateError(ValueError):
    """The template cannot be read, or the weights do not fit it."""


@dataclass
class _Tensor:
    """The fields of one TensorProto that matter here (the rest stays in the raw bytes)."""

    name: str = ""
    dims: list[int] = field(default_factory=list)
    data_type: int = 0
    doc_string: bytes = b""
    raw_data: memoryview | None = None
    typed: list[Field] = field(default_factory=list)  # *_data fields, in order
    external: bool = False
    segment: bool = False


def _tensor(data: memoryview) -> _Tensor:
    """Parse a TensorProto. As in protobuf, the last value of a singular field wins,
    repeated fields accumulate (packed or not), and a known number with an unexpected
    wire type is an unknown field."""
    t = _Tensor()
    for f in fields(data):
        key = (f.number, f.wire_type)
        if key == (DIMS, VARINT):
            t.dims.append(to_signed(f.value))
        elif key == (DIMS, LEN):
            t.dims += [to_signed(int(v)) for v in packed_varints(f.data)]
        elif key == (DATA_TYPE, VARINT):
            t.data_type = to_signed(f.value, 32)
        elif key == (SEGMENT, LEN):
            t.segment = True
        elif key == (NAME, LEN):
            t.name = bytes(f.data).decode("utf-8")
        elif key == (DOC_STRING, LEN):
            t.doc_string = bytes(f.data)
        elif key == (RAW_DATA, LEN):
            t.raw_data = f.data
        elif key == (DATA_LOCATION, VARINT):
            t.external = f.value == EXTERNAL
        elif f.number in TYPED_WIRE and f.wire_type in (LEN, TYPED_WIRE[f.number]):
            t.typed.append(f)
    return t


@dataclass
class _Model:
    """A ModelProto split into its fields, its main graph's fields, and the parsed
    initializers (position in `graph` -> tensor)."""

    top: list[Field]
    graph_at: int  # the graph's position in `top`
    graph: list[Field]
    initializers: dict[int, _Tensor]

    def by_name(self) -> dict[str, tuple[int, _Tensor]]:
        """name -> (position, tensor); for a repeated name, the last one (as onnx's
        `{t.name: t for t in graph.initializer}` would)."""
        return {t.name: (i, t) for i, t in self.initializers.items()}

    def to_bytes(self, replaced: Mapping[int, list[bytes]]) -> bytes:
        """The model with the graph fields at the given positions replaced by new bytes."""
        graph: list[bytes | memoryview] = []
        for i, f in enumerate(self.graph):
            graph += replaced.get(i, [f.raw])
        header = len_header(MODEL_GRAPH, sum(len(p) for p in graph))
        before = [f.raw for f in self.top[: self.graph_at]]
        after = [f.raw for f in self.top[self.graph_at + 1 :]]
        return b"".join([*before, header, *graph, *after])


def _load(model_bytes: bytes) -> _Model:
    try:
        top = list(fields(model_bytes))
        at = [i for i, f in enumerate(top) if (f.number, f.wire_type) == (MODEL_GRAPH, LEN)]
        if len(at) > 1:
            raise OnnxTemplateError("not an ONNX model: more than one graph field")
        if not at:
            raise OnnxTemplateError("not an ONNX model: no graph")
        graph = list(fields(top[at[0]].data))
        initializers = {
            i: _tensor(f.data)
            for i, f in enumerate(graph)
            if (f.number, f.wire_type) == (GRAPH_INITIALIZER, LEN)
        }
    except (WireError, UnicodeDecodeError) as exc:
        raise OnnxTemplateError(f"not an ONNX model: {exc}") from exc
    return _Model(top, at[0], graph, initializers)


def _names_list(names: Iterable[str], limit: int = 20) -> str:
    items = sorted(names)
    more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(repr(n) for n in items[:limit]) + more


def _dtype(tensor: _Tensor) -> np.dtype[Any]:
    if tensor.data_type not in DTYPES:
        raise OnnxTemplateError(
            f"initializer {tensor.name!r}: ONNX data type {tensor.data_type} is not supported "
            f"(supported: {sorted(DTYPES)})"
        )
    return DTYPES[tensor.data_type][0]


def _to_array(tensor: _Tensor) -> npt.NDArray[Any]:
    name = tensor.name
    if tensor.external:
        raise OnnxTemplateError(
            f"initializer {name!r} is stored as external data, which these bytes do "
            f"not contain; export the model with embedded data"
        )
    if tensor.segment:
        raise OnnxTemplateError(f"initializer {name!r} is a segment; segments are not supported")
    dtype = _dtype(tensor)
    typed = DTYPES[tensor.data_type][1]
    values: npt.NDArray[Any]
    if tensor.raw_data is not None or typed in (FLOAT_DATA, DOUBLE_DATA):
        # raw_data, float_data and double_data all hold little-endian fixed-width values
        # (complex numbers as (real, imaginary) pairs): only the field differs.
        if tensor.raw_data is not None:
            data: bytes | memoryview = tensor.raw_data
        else:
            data = b"".join(f.data for f in tensor.typed if f.number == typed)
        if len(data) % dtype.itemsize:
            raise OnnxTemplateError(f"initializer {name!r}: {len(data)} bytes are no {dtype} array")
        values = np.frombuffer(data, dtype=dtype.newbyteorder("<"))
    else:
        # Varints, as unsigned 64-bit words: keep the type's low bits and read them as the
        # type (int32_data of -1 is ten bytes of ones; FLOAT16 arrives as its bit pattern).
        try:
            words = [
                packed_varints(f.data) if f.wire_type == LEN else np.array([f.value], np.uint64)
                for f in tensor.typed
                if f.number == typed
            ]
        except WireError as exc:  # found by the fuzz test: a damaged packed field
            raise OnnxTemplateError(f"initializer {name!r}: {exc}") from exc
        joined = np.concatenate(words) if words else np.zeros(0, np.uint64)
        values = joined.astype(f"<u{dtype.itemsize}").view(dtype.newbyteorder("<"))
    count = math.prod(tensor.dims)
    if values.size != count:
        raise OnnxTemplateError(
            f"initializer {name!r}: {values.size} values for shape {tuple(tensor.dims)}"
        )
    return values.astype(dtype).reshape(tensor.dims)  # a native-order, writable copy


def read_initializers(
    model_bytes: bytes, names: Iterable[str] | None = None
) -> dict[str, npt.NDArray[Any]]:
    """The main graph's initializers as {name: array} (all, or just `names`)."""
    by_name = _load(model_bytes).by_name()
    wanted = list(by_name) if names is None else list(names)
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise OnnxTemplateError(
            f"unknown initializer(s) {_names_list(unknown)}; the model has {_names_list(by_name)}"
        )
    return {name: _to_array(by_name[name][1]) for name in wanted}


def _fit(name: str, value: npt.ArrayLike, template: _Tensor) -> npt.NDArray[Any]:
    array = np.asarray(value)
    expected_shape = tuple(template.dims)
    if array.shape != expected_shape:
        raise OnnxTemplateError(
            f"initializer {name!r}: shape {array.shape} does not match the template's "
            f"{expected_shape}"
        )
    dtype = _dtype(template)
    if array.dtype != dtype:
        both_float = np.issubdtype(array.dtype, np.floating) and np.issubdtype(dtype, np.floating)
        if not both_float:
            raise OnnxTemplateError(
                f"initializer {name!r}: dtype {array.dtype} cannot be stored as the "
                f"template's {dtype}"
            )
        array = array.astype(dtype)
    return array


def _tensor_field(template: _Tensor, data: bytes | None) -> list[bytes]:
    """A GraphProto.initializer field for `template`'s name, dims, type and doc string,
    holding `data` as raw_data (or no values at all). Fields in number order, dims not
    packed: what onnx itself writes, so the result is byte-identical to
    `numpy_helper.from_array` + `SerializeToString`. Nothing else of the old tensor is
    kept: its data fields, external location, segment and metadata described old data."""
    head = b"".join(tag(DIMS, VARINT) + varint(d) for d in template.dims)
    head += tag(DATA_TYPE, VARINT) + varint(template.data_type)
    if template.name:
        name = template.name.encode()
        head += len_header(NAME, len(name)) + name
    pieces = [head]
    if data is not None:
        pieces += [len_header(RAW_DATA, len(data)), data]
    if template.doc_string:
        pieces.append(len_header(DOC_STRING, len(template.doc_string)) + template.doc_string)
    return [len_header(GRAPH_INITIALIZER, sum(len(p) for p in pieces)), *pieces]


def materialize(template: bytes, weights: Mapping[str, npt.ArrayLike]) -> bytes:
    """A copy of `template` with the named initializers replaced by `weights`.

    Raises OnnxTemplateError for unknown names, shape or dtype mismatches, and for kept
    initializers that reference external data (the result would not be self-contained).
    """
    model = _load(template)
    index = model.by_name()
    unknown = [n for n in weights if n not in index]
    if unknown:
        raise OnnxTemplateError(
            f"unknown initializer(s) {_names_list(unknown)}; the template has {_names_list(index)}"
        )
    replaced: dict[int, list[bytes]] = {}
    for name, value in weights.items():
        position, slot = index[name]
        array = _fit(name, value, slot)
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        replaced[position] = _tensor_field(slot, data)
    external = [t.name for i, t in model.initializers.items() if t.external and i not in replaced]
    if external:
        raise OnnxTemplateError(
            f"initializer(s) {_names_list(external)} reference external data that is not "
            f"replaced; the release would not be self-contained"
        )
    return model.to_bytes(replaced)


def strip_initializers(template: bytes, names: Iterable[str]) -> bytes:
    """`template` with the values of the named initializers dropped (name, dims and dtype
    kept), so the job keeps one copy of the weights in state, not two: `materialize`
    refills them at each release. Other initializers (exporter constants) are untouched."""
    model = _load(template)
    wanted = set(names)
    replaced = {
        i: _tensor_field(t, None) for i, t in model.initializers.items() if t.name in wanted
    }
    missing = wanted - {model.initializers[i].name for i in replaced}
    if missing:
        raise OnnxTemplateError(f"unknown initializer(s) {_names_list(missing)}")
    return model.to_bytes(replaced)
