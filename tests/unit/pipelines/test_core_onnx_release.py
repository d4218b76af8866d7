"""ONNX materialization: torch MLP -> ONNX template -> new weights -> onnxruntime == torch.

torch is imported here only (the core never needs it). This runs in the ordinary unit
suite: both exporters work offline and the whole module takes a few seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from fedstream.pipelines.onnx_release import OnnxTemplateError, materialize, read_initializers
from tests.support.torch_export import export as export_onnx

NAMES = ["0.weight", "0.bias", "2.weight", "2.bias"]


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def export(model: torch.nn.Module, dynamo: bool, tmp_path: Path) -> bytes:
    return export_onnx(model, torch.randn(2, 64), dynamo, tmp_path)


def run_onnx(model_bytes: bytes, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x})
    return np.asarray(out)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_torch_onnx_round_trip(dynamo: bool, tmp_path: Path) -> None:
    template = export(mlp(), dynamo, tmp_path)
    params = read_initializers(template, NAMES)
    assert {k: v.shape for k, v in params.items()} == {
        "0.weight": (32, 64),
        "0.bias": (32,),
        "2.weight": (10, 32),
        "2.bias": (10,),
    }
    trained = mlp()
    for name, value in zip(NAMES, trained.state_dict().values(), strict=True):
        np.testing.assert_array_equal(params[name], value.numpy())

    # server-side change of the weights, then materialize a release
    rng = np.random.default_rng(1)
    new = {k: (v + rng.standard_normal(v.shape)).astype(np.float32) for k, v in params.items()}
    release = materialize(template, new)
    onnx.checker.check_model(onnx.load_from_string(release))
    back = read_initializers(release, NAMES)
    for k in NAMES:
        np.testing.assert_array_equal(back[k], new[k])
    # initializers we were not given (e.g. dynamo's constants) are kept as they were
    before = read_initializers(template)
    after = read_initializers(release)
    assert set(before) == set(after)
    for k in set(before) - set(NAMES):
        np.testing.assert_array_equal(before[k], after[k])

    # the same weights loaded into torch give the same outputs as onnxruntime
    model = mlp()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in new.items()})
    model.eval()
    x = rng.standard_normal((5, 64)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_onnx(release, x), expected, atol=1e-5, rtol=1e-5)
    # and the release really differs from the template
    assert not np.allclose(run_onnx(template, x), expected, atol=1e-3)


def _tiny(external: bool = False) -> bytes:
    w = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    if external:
        b.ClearField("raw_data")
        b.data_location = onnx.TensorProto.EXTERNAL
        entry = b.external_data.add()
        entry.key, entry.value = "location", "weights.bin"
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])],
        initializer=[w, b],
    )
    data: bytes = helper.make_model(graph).SerializeToString()
    return data


def test_clear_errors() -> None:
    template = _tiny()
    with pytest.raises(OnnxTemplateError, match=r"unknown initializer\(s\) 'nope'.*'b', 'w'"):
        materialize(template, {"nope": np.zeros(1, np.float32)})
    with pytest.raises(OnnxTemplateError, match=r"'w': shape \(3, 2\) does not match .* \(2, 3\)"):
        materialize(template, {"w": np.zeros((3, 2), np.float32)})
    with pytest.raises(OnnxTemplateError, match="dtype int64 cannot be stored"):
        materialize(template, {"w": np.zeros((2, 3), np.int64)})
    with pytest.raises(OnnxTemplateError, match="unknown initializer"):
        read_initializers(template, ["w", "zz"])
    with pytest.raises(OnnxTemplateError, match="not an ONNX model"):
        materialize(b"\x00garbage\xff", {})


def test_float64_values_are_cast_to_the_template_dtype() -> None:
    out = read_initializers(materialize(_tiny(), {"w": np.full((2, 3), 0.5)}), ["w"])["w"]
    assert out.dtype == np.float32 and np.all(out == 0.5)


def test_external_data_is_replaced_or_refused() -> None:
    template = _tiny(external=True)
    with pytest.raises(OnnxTemplateError, match="external data"):
        read_initializers(template, ["b"])
    with pytest.raises(OnnxTemplateError, match=r"'b'.*would not be self-contained"):
        materialize(template, {"w": np.ones((2, 3), np.float32)})
    # replacing it embeds the data, so the release loads from its bytes alone
    release = materialize(template, {"b": np.full(3, 2.0, np.float32)})
    assert all(
        t.data_location == onnx.TensorProto.DEFAULT
        for t in onnx.load_from_string(release).graph.initializer
    )
    y = run_onnx(release, np.ones((1, 2), np.float32))
    np.testing.assert_allclose(y, [[4.0, 4.0, 4.0]])
