"""The job's ONNX editing (protobuf wire format, no onnx import) against the onnx package.

`onnx_release` reads and replaces initializers on the bytes of a ModelProto. Here
hypothesis builds random models with the onnx package (every supported dtype, shapes with
zeros, raw or typed storage, doc strings, metadata, external data, repeated names, unknown
fields, fields re-encoded the ways protobuf allows) and torch exports random networks with
both exporters. Every result must equal what the onnx package computes, byte for byte
where onnx writes the bytes, and onnxruntime must reproduce torch on a release.
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper

from fedstream.pipelines.onnx_release import (
    OnnxTemplateError,
    materialize,
    read_initializers,
    strip_initializers,
)
from fedstream.pipelines.protobuf_wire import I32, I64, LEN, VARINT, fields, tag, varint
from tests.support.torch_export import export

SUPPORTED = [
    TensorProto.FLOAT,
    TensorProto.FLOAT16,
    TensorProto.DOUBLE,
    TensorProto.UINT8,
    TensorProto.INT8,
    TensorProto.UINT16,
    TensorProto.INT16,
    TensorProto.INT32,
    TensorProto.INT64,
    TensorProto.UINT32,
    TensorProto.UINT64,
    TensorProto.BOOL,
    TensorProto.COMPLEX64,
    TensorProto.COMPLEX128,
]
NAMES = ["w", "b", "0.weight", "val_5", "", "ü/β"]  # few, so that names repeat
UNKNOWN_FIELD = tag(1999, VARINT) + varint(7)  # an unknown field: onnx keeps it, so do we

Arrays = dict[str, npt.NDArray[Any]]


# -- the oracle: the same operations through the onnx package ---------------------------
def onnx_read(model_bytes: bytes) -> dict[str, TensorProto]:
    model = onnx.ModelProto.FromString(model_bytes)
    return {t.name: t for t in model.graph.initializer}


def onnx_materialize(template: bytes, weights: Arrays) -> bytes:
    model = onnx.ModelProto.FromString(template)
    index = {t.name: i for i, t in enumerate(model.graph.initializer)}
    for name, value in weights.items():
        slot = model.graph.initializer[index[name]]
        dtype = helper.tensor_dtype_to_np_dtype(slot.data_type)
        replacement = numpy_helper.from_array(np.asarray(value).astype(dtype), name=name)
        if slot.doc_string:
            replacement.doc_string = slot.doc_string
        slot.CopyFrom(replacement)
    data: bytes = model.SerializeToString()
    return data


def onnx_strip(template: bytes, names: set[str]) -> bytes:
    model = onnx.ModelProto.FromString(template)
    for tensor in model.graph.initializer:
        if tensor.name in names:
            kept = TensorProto(dims=list(tensor.dims), data_type=tensor.data_type)
            if tensor.name:
                kept.name = tensor.name
            if tensor.doc_string:
                kept.doc_string = tensor.doc_string
            tensor.CopyFrom(kept)
    data: bytes = model.SerializeToString()
    return data


def same_array(ours: npt.NDArray[Any], theirs: npt.NDArray[Any]) -> None:
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert ours.tobytes() == theirs.tobytes()  # bit for bit, NaN payloads included


# -- random models ------------------------------------------------------------------------
texts = st.text(max_size=8)


@st.composite
def tensors(draw: st.DrawFn) -> TensorProto:
    code = draw(st.sampled_from(SUPPORTED))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    values = draw(hnp.arrays(helper.tensor_dtype_to_np_dtype(code), shape))
    name = draw(st.sampled_from(NAMES))
    if draw(st.booleans()):
        tensor = numpy_helper.from_array(values, name)
    else:  # the typed fields: float_data, int32_data (FLOAT16 as bit patterns), ...
        tensor = helper.make_tensor(name, code, shape, values.flatten(), raw=False)
    if draw(st.booleans()):
        tensor.doc_string = draw(texts)
    if draw(st.booleans()):
        tensor.metadata_props.add(key=draw(texts), value=draw(texts))
    if draw(st.integers(0, 5)) == 0:
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value="weights.bin")
    if draw(st.booleans()):
        tensor.ParseFromString(tensor.SerializeToString() + UNKNOWN_FIELD)
    return tensor


@st.composite
def models(draw: st.DrawFn) -> bytes:
    initializers = draw(st.lists(tensors(), max_size=5))
    nodes = [
        helper.make_node("Identity", [t.name], [f"y{i}"], name=draw(texts), alpha=1.5)
        for i, t in enumerate(initializers)
    ]
    graph = helper.make_graph(
        nodes,
        draw(texts),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [
            helper.make_tensor_value_info(f"y{i}", t.data_type, None)
            for i, t in enumerate(initializers)
        ],
        initializer=initializers,
        doc_string=draw(texts),
    )
    if draw(st.booleans()):
        graph.ParseFromString(graph.SerializeToString() + UNKNOWN_FIELD)
    model = helper.make_model(
        graph, producer_name=draw(texts), opset_imports=[helper.make_opsetid("", 17)]
    )
    helper.set_model_props(model, {draw(texts): draw(texts)})
    data: bytes = model.SerializeToString()
    if draw(st.booleans()):
        data += UNKNOWN_FIELD
    return data


def weights_for(data: st.DataObject, template: bytes) -> Arrays:
    """New values for a random subset of the template's initializers (the last of each
    name), sometimes of another float dtype, which must be cast."""
    last = onnx_read(template)
    names = data.draw(st.lists(st.sampled_from(sorted(last)), unique=True)) if last else []
    weights = {}
    for name in names:
        dtype = helper.tensor_dtype_to_np_dtype(last[name].data_type)
        if np.issubdtype(dtype, np.floating):
            dtype = data.draw(st.sampled_from([dtype, np.dtype(np.float64), np.dtype(np.float16)]))
        weights[name] = data.draw(hnp.arrays(dtype, tuple(last[name].dims)))
    return weights


# -- properties -----------------------------------------------------------------------------
@given(models())
def test_read_matches_onnx(model_bytes: bytes) -> None:
    for name, tensor in onnx_read(model_bytes).items():
        if tensor.data_location == TensorProto.EXTERNAL:
            with pytest.raises(OnnxTemplateError, match="is stored as external data"):
                read_initializers(model_bytes, [name])
        else:
            same_array(read_initializers(model_bytes, [name])[name], numpy_helper.to_array(tensor))
    if not any(t.data_location == TensorProto.EXTERNAL for t in onnx_read(model_bytes).values()):
        assert list(read_initializers(model_bytes)) == list(onnx_read(model_bytes))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@given(models(), st.data())
def test_materialize_matches_onnx_byte_for_byte(model_bytes: bytes, data: st.DataObject) -> None:
    weights = weights_for(data, model_bytes)
    model = onnx.ModelProto.FromString(model_bytes)
    index = {t.name: i for i, t in enumerate(model.graph.initializer)}
    replaced = {index[n] for n in weights}
    kept_external = [
        t.name
        for i, t in enumerate(model.graph.initializer)
        if i not in replaced and t.data_location == TensorProto.EXTERNAL
    ]
    if kept_external:
        with pytest.raises(OnnxTemplateError, match="would not be self-contained"):
            materialize(model_bytes, weights)
        return
    release = materialize(model_bytes, weights)
    assert release == onnx_materialize(model_bytes, weights)
    back = read_initializers(release, list(weights))
    for name, value in weights.items():
        same_array(back[name], value.astype(back[name].dtype))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@given(models(), st.data())
def test_strip_matches_onnx_and_materialize_refills(
    model_bytes: bytes, data: st.DataObject
) -> None:
    present = sorted(onnx_read(model_bytes))
    names = set(data.draw(st.lists(st.sampled_from(present), unique=True))) if present else set()
    stripped = strip_initializers(model_bytes, names)
    assert stripped == onnx_strip(model_bytes, names)
    # What the job does: strip at registration, materialize every name at each release.
    weights = {n: v for n, v in weights_for(data, model_bytes).items() if n in names}
    initializers = onnx.ModelProto.FromString(model_bytes).graph.initializer
    unique = len({t.name for t in initializers}) == len(initializers)
    kept_external = any(
        t.data_location == TensorProto.EXTERNAL for t in initializers if t.name not in names
    )
    if weights.keys() == names and unique and not kept_external:
        assert materialize(stripped, weights) == materialize(model_bytes, weights)


def reencoded(tensor: bytes, order: list[int]) -> bytes:
    """The same TensorProto written differently, as protobuf allows a reader to meet it:
    dims packed, packed *_data fields as one field per value, fields of different numbers
    in the given order (fields of one number keep their relative order)."""
    out: list[tuple[int, bytes]] = []
    dims = b"".join(varint(f.value) for f in fields(tensor) if (f.number, f.wire_type) == (1, 0))
    if dims:
        out.append((1, tag(1, LEN) + varint(len(dims)) + dims))
    for f in fields(tensor):
        if f.number == 1 and f.wire_type == VARINT:
            continue
        if f.wire_type == LEN and f.number in (4, 10):  # float_data, double_data
            size, wire = (4, I32) if f.number == 4 else (8, I64)
            raw = bytes(f.data)
            out += [
                (f.number, tag(f.number, wire) + raw[i : i + size])
                for i in range(0, len(raw), size)
            ]
        elif f.wire_type == LEN and f.number in (5, 7, 11):  # int32/int64/uint64_data
            values = [int(v) for v in _python_varints(bytes(f.data))]
            out += [(f.number, tag(f.number, VARINT) + varint(v)) for v in values]
        else:
            out.append((f.number, bytes(f.raw)))
    rank = {number: order.index(number) if number in order else 99 for number, _ in out}
    return b"".join(raw for _, raw in sorted(out, key=lambda item: rank[item[0]]))


def _python_varints(data: bytes) -> list[int]:
    values, value, shift = [], 0, 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            values.append(value)
            value = shift = 0
    return values


@given(tensors(), st.permutations(list(range(1, 17))))
def test_any_valid_encoding_of_a_tensor_reads_the_same(
    tensor: TensorProto, order: list[int]
) -> None:
    tensor.name = "t"
    recoded = reencoded(tensor.SerializeToString(), order)
    parsed = TensorProto.FromString(recoded)
    assert parsed == TensorProto.FromString(tensor.SerializeToString())  # the same message
    graph = helper.make_graph([], "g", [], [])
    model = helper.make_model(graph).SerializeToString()
    # splice the re-encoded tensor in as the graph's only initializer
    graph_field = next(f for f in fields(model) if f.number == 7)
    new_graph = bytes(graph_field.data) + tag(5, LEN) + varint(len(recoded)) + recoded
    spliced = b"".join(
        (tag(7, LEN) + varint(len(new_graph)) + new_graph) if f.number == 7 else bytes(f.raw)
        for f in fields(model)
    )
    if tensor.data_location == TensorProto.EXTERNAL:
        with pytest.raises(OnnxTemplateError):
            read_initializers(spliced)
        return
    same_array(read_initializers(spliced)["t"], numpy_helper.to_array(parsed))
    assert materialize(spliced, {}) == spliced  # untouched bytes are copied as they are


@given(models(), st.data())
def test_damaged_bytes_raise_only_template_errors(model_bytes: bytes, data: st.DataObject) -> None:
    damaged = bytearray(model_bytes)
    if damaged and data.draw(st.booleans()):
        del damaged[data.draw(st.integers(0, len(damaged) - 1)) :]
    for _ in range(data.draw(st.integers(0, 3))):
        if damaged:
            damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    for call in (
        lambda: read_initializers(bytes(damaged)),
        lambda: materialize(bytes(damaged), {}),
        lambda: strip_initializers(bytes(damaged), []),
    ):
        with contextlib.suppress(OnnxTemplateError):
            call()


@given(st.binary(max_size=64))
def test_random_bytes_raise_only_template_errors(garbage: bytes) -> None:
    with contextlib.suppress(OnnxTemplateError):
        read_initializers(garbage)


def test_a_model_without_a_graph_or_with_two_is_refused() -> None:
    model = helper.make_model(helper.make_graph([], "g", [], [])).SerializeToString()
    graph = next(f for f in fields(model) if f.number == 7)
    with pytest.raises(OnnxTemplateError, match="no graph"):
        read_initializers(b"".join(bytes(f.raw) for f in fields(model) if f.number != 7))
    with pytest.raises(OnnxTemplateError, match="more than one graph"):
        read_initializers(model + bytes(graph.raw))


def test_unsupported_types_and_bad_sizes_name_the_initializer() -> None:
    bf16 = helper.make_tensor("bf", TensorProto.BFLOAT16, [1], [1.0])
    short = numpy_helper.from_array(np.zeros(3, np.float32), "short")
    short.dims[0] = 4
    graph = helper.make_graph([], "g", [], [], initializer=[bf16, short])
    model = helper.make_model(graph).SerializeToString()
    with pytest.raises(OnnxTemplateError, match="'bf': ONNX data type 16 is not supported"):
        read_initializers(model, ["bf"])
    with pytest.raises(OnnxTemplateError, match=r"'short': 3 values for shape \(4,\)"):
        read_initializers(model, ["short"])
    # an unsupported initializer that is not touched is copied as it is
    assert materialize(model, {"short": np.ones(4, np.float32)}).count(bf16.SerializeToString())


# -- torch exports ------------------------------------------------------------------------
ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}


def network(widths: list[int], activation: str, bias: bool, seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        if i:
            layers.append(ACTIVATIONS[activation]())
        layers.append(torch.nn.Linear(a, b, bias=bias))
    return torch.nn.Sequential(*layers)


def run_onnx(model_bytes: bytes, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x})
    return np.asarray(out)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    widths=st.lists(st.integers(1, 12), min_size=2, max_size=4),
    activation=st.sampled_from(sorted(ACTIVATIONS)),
    bias=st.booleans(),
    double=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_torch_exports_materialize_to_what_torch_computes(
    dynamo: bool, widths: list[int], activation: str, bias: bool, double: bool, seed: int
) -> None:
    # Without a bias the legacy exporter folds each weight into a transposed constant of
    # its own name (onnx::MatMul_4): nothing is left to replace by the parameter's name.
    assume(bias or dynamo)
    dtype = torch.float64 if double else torch.float32
    net = network(widths, activation, bias, seed).to(dtype)
    with tempfile.TemporaryDirectory() as folder:
        template = export(net, torch.zeros(2, widths[0], dtype=dtype), dynamo, Path(folder))
    names = list(net.state_dict())
    params = read_initializers(template, names)
    for name, value in net.state_dict().items():
        same_array(params[name], value.numpy())
    for name, tensor in onnx_read(template).items():  # exporter constants too
        same_array(read_initializers(template, [name])[name], numpy_helper.to_array(tensor))

    rng = np.random.default_rng(seed)
    new = {n: np.asarray(rng.standard_normal(v.shape), v.dtype) for n, v in params.items()}
    release = materialize(template, new)
    assert release == onnx_materialize(template, new)
    assert materialize(strip_initializers(template, set(names)), new) == release
    onnx.checker.check_model(onnx.load_from_string(release))

    net.load_state_dict({k: torch.from_numpy(v) for k, v in new.items()})
    x = rng.standard_normal((5, widths[0])).astype(params[names[0]].dtype)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_onnx(release, x), expected, rtol=1e-5, atol=1e-5)
