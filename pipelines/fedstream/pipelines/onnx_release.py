"""ONNX materialization: put server weights into a model template, and read them back.

Why: devices run onnxruntime, and the job must publish a runnable model per release
without torch. A model is registered with an ONNX template (exported once by torch);
every release is that template with its initializers replaced by name. This is the only
module of the core that imports `onnx`.

Details that matter:
- Only the names given are replaced. Exporters add initializers of their own (torch's
  dynamo exporter emits constants such as `val_5`); those are kept as they are.
- The output is self-contained: replaced tensors are embedded, and a template whose
  *kept* initializers point at external data is refused, because the bytes alone would
  not load. Export templates with embedded data (`external_data=False`).
- Only the main graph's initializers are considered (not those of subgraphs).
- Values are cast to the template's dtype only between floating-point types; anything
  else (or a shape change) is an error naming the initializer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import numpy_helper

__all__ = ["OnnxTemplateError", "materialize", "read_initializers", "strip_initializers"]


class OnnxTemplateError(ValueError):
    """The template cannot be read, or the weights do not fit it."""


def _load(model_bytes: bytes) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(model_bytes)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise OnnxTemplateError(f"not an ONNX model: {exc}") from exc
    if not model.HasField("graph"):
        raise OnnxTemplateError("not an ONNX model: no graph")
    return model


def _is_external(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL


def _names_list(names: Iterable[str], limit: int = 20) -> str:
    items = sorted(names)
    more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(repr(n) for n in items[:limit]) + more


def read_initializers(
    model_bytes: bytes, names: Iterable[str] | None = None
) -> dict[str, npt.NDArray[Any]]:
    """The main graph's initializers as {name: array} (all, or just `names`)."""
    model = _load(model_bytes)
    by_name = {t.name: t for t in model.graph.initializer}
    wanted = list(by_name) if names is None else list(names)
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise OnnxTemplateError(
            f"unknown initializer(s) {_names_list(unknown)}; the model has {_names_list(by_name)}"
        )
    out: dict[str, npt.NDArray[Any]] = {}
    for name in wanted:
        tensor = by_name[name]
        if _is_external(tensor):
            raise OnnxTemplateError(
                f"initializer {name!r} is stored as external data, which these bytes do "
                f"not contain; export the model with embedded data"
            )
        out[name] = numpy_helper.to_array(tensor)
    return out


def _fit(name: str, value: npt.ArrayLike, template: onnx.TensorProto) -> npt.NDArray[Any]:
    array = np.asarray(value)
    expected_shape = tuple(int(d) for d in template.dims)
    if array.shape != expected_shape:
        raise OnnxTemplateError(
            f"initializer {name!r}: shape {array.shape} does not match the template's "
            f"{expected_shape}"
        )
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(template.data_type))
    if array.dtype != dtype:
        both_float = np.issubdtype(array.dtype, np.floating) and np.issubdtype(dtype, np.floating)
        if not both_float:
            raise OnnxTemplateError(
                f"initializer {name!r}: dtype {array.dtype} cannot be stored as the "
                f"template's {dtype}"
            )
        array = array.astype(dtype)
    return array


def materialize(template: bytes, weights: Mapping[str, npt.ArrayLike]) -> bytes:
    """A copy of `template` with the named initializers replaced by `weights`.

    Raises OnnxTemplateError for unknown names, shape or dtype mismatches, and for kept
    initializers that reference external data (the result would not be self-contained).
    """
    model = _load(template)
    index = {t.name: i for i, t in enumerate(model.graph.initializer)}
    unknown = [n for n in weights if n not in index]
    if unknown:
        raise OnnxTemplateError(
            f"unknown initializer(s) {_names_list(unknown)}; the template has {_names_list(index)}"
        )
    for name, value in weights.items():
        slot = model.graph.initializer[index[name]]
        replacement = numpy_helper.from_array(_fit(name, value, slot), name=name)
        if slot.doc_string:
            replacement.doc_string = slot.doc_string
        slot.CopyFrom(replacement)  # also drops any external_data location of the old one
    external = [t.name for t in model.graph.initializer if _is_external(t)]
    if external:
        raise OnnxTemplateError(
            f"initializer(s) {_names_list(external)} reference external data that is not "
            f"replaced; the release would not be self-contained"
        )
    data: bytes = model.SerializeToString()
    return data


def strip_initializers(template: bytes, names: Iterable[str]) -> bytes:
    """`template` with the values of the named initializers dropped (name, dims and dtype
    kept), so the job keeps one copy of the weights in state, not two: `materialize`
    refills them at each release. Other initializers (exporter constants) are untouched."""
    model = _load(template)
    wanted = set(names)
    found: set[str] = set()
    for tensor in model.graph.initializer:
        if tensor.name in wanted:
            found.add(tensor.name)
            kept = onnx.TensorProto(
                name=tensor.name,
                dims=list(tensor.dims),
                data_type=tensor.data_type,
                doc_string=tensor.doc_string,
            )
            tensor.CopyFrom(kept)
    missing = wanted - found
    if missing:
        raise OnnxTemplateError(f"unknown initializer(s) {_names_list(missing)}")
    data: bytes = model.SerializeToString()
    return data
