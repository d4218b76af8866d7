"""torch <-> ONNX: export, layout by initializer name, weight loading, local deltas."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fedstream.edge import ModelMismatchError
from fedstream.edge.training import (
    LocalTrainer,
    export_onnx,
    flat_parameters,
    load_weights,
    read_initializers,
    torch_registration,
    trainable_layout,
)
from fedstream.schemas import EncodeError, decode, encode, unpack
from tests.unit.edge.edge_support import make_release


def mlp(seed: int, hidden: int = 8) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 3)
    )


@pytest.fixture(scope="module")
def exported() -> tuple[torch.nn.Module, bytes]:
    module = mlp(0)
    return module, export_onnx(module, torch.zeros(1, 6))


def test_export_is_self_contained_and_matches_torch(
    exported: tuple[torch.nn.Module, bytes],
) -> None:
    module, blob = exported
    model = onnx.load_from_string(blob)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    for batch in (1, 7):  # the batch dimension is dynamic
        x = np.random.default_rng(batch).normal(size=(batch, 6)).astype(np.float32)
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        want = module(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert module.training  # export left the module's mode alone


def test_layout_follows_named_parameters(exported: tuple[torch.nn.Module, bytes]) -> None:
    module, blob = exported
    layout = trainable_layout(module, blob)
    assert layout.names == ("0.weight", "0.bias", "2.weight", "2.bias")
    assert layout.shapes == ((8, 6), (8,), (3, 8), (3,))


def test_frozen_parameters_are_not_federated(exported: tuple[torch.nn.Module, bytes]) -> None:
    _, blob = exported
    frozen = mlp(0)
    dict(frozen.named_parameters())["0.bias"].requires_grad_(False)
    assert "0.bias" not in trainable_layout(frozen, blob).names


def _reorder_initializers(blob: bytes) -> bytes:
    model = onnx.load_from_string(blob)
    inits = list(model.graph.initializer)[::-1]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    data: bytes = model.SerializeToString()
    return data


def test_weights_load_by_initializer_name(exported: tuple[torch.nn.Module, bytes]) -> None:
    source, blob = exported
    shuffled = _reorder_initializers(blob)  # position in the graph must not matter
    target = mlp(1)
    layout = load_weights(target, shuffled)
    np.testing.assert_array_equal(flat_parameters(target, layout), flat_parameters(source, layout))
    arrays = read_initializers(shuffled, ["2.bias"])
    bias = dict(source.named_parameters())["2.bias"]
    np.testing.assert_array_equal(arrays["2.bias"], bias.detach().numpy())


def test_mismatched_module_is_refused_untouched(exported: tuple[torch.nn.Module, bytes]) -> None:
    _, blob = exported
    wider = mlp(2, hidden=9)
    before = [p.detach().clone() for p in wider.parameters()]
    with pytest.raises(ModelMismatchError, match="shape"):
        load_weights(wider, blob)
    assert all(torch.equal(a, b) for a, b in zip(before, wider.parameters(), strict=True))
    extra = torch.nn.Sequential(*list(mlp(0)), torch.nn.Linear(3, 2))
    with pytest.raises(ModelMismatchError, match="not an initializer"):
        trainable_layout(extra, blob)
    with pytest.raises(ModelMismatchError, match="no initializers named"):
        read_initializers(blob, ["nope"])


def test_delta_is_local_minus_base(exported: tuple[torch.nn.Module, bytes]) -> None:
    _, blob = exported
    module = mlp(5)
    trainer = LocalTrainer(module, lr=0.1, epochs=2, batch_size=4, seed=0)
    with pytest.raises(RuntimeError, match="load_release"):
        trainer.fit(np.zeros((4, 6), np.float32), np.zeros(4, np.int64))
    trainer.load_release(make_release(blob, version=3))
    assert trainer.layout is not None
    base = flat_parameters(module, trainer.layout)
    np.testing.assert_array_equal(base, flat_parameters(exported[0], trainer.layout))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=20)
    result = trainer.fit(x, y)
    assert result.base_version == 3 and result.num_samples == 20
    assert result.steps == 2 * 5 and result.loss > 0
    np.testing.assert_allclose(result.delta, flat_parameters(module, trainer.layout) - base)
    assert np.abs(result.delta).max() > 0
    # a new release becomes the new base: the next delta is against it, not the old one
    newer = export_onnx(mlp(9), torch.zeros(2, 6))
    trainer.load_release(make_release(newer, version=4))
    new_base = flat_parameters(module, trainer.layout)
    second = trainer.fit(x, y)
    assert second.base_version == 4
    np.testing.assert_allclose(second.delta, flat_parameters(module, trainer.layout) - new_base)
    assert second.metrics()["steps"] == 10


def test_registration_record_is_valid_for_the_codec() -> None:
    module = mlp(0)
    reg = torch_registration("digits", module, torch.zeros(2, 6), {"window": {"count": 4}})
    decoded = decode(encode("ModelRegistration", reg.record), expected="ModelRegistration").record
    assert [p["name"] for p in decoded["parameters"]] == list(reg.layout.names)
    initial = unpack(decoded["initial_parameters"], expected_shape=[reg.layout.size])
    np.testing.assert_array_equal(initial, flat_parameters(module, reg.layout))
    assert decoded["aggregation"]["window"]["count"] == 4
    assert decoded["onnx_template"] == reg.onnx
    with pytest.raises(EncodeError, match="unknown aggregation setting"):
        torch_registration("digits", module, torch.zeros(2, 6), {"windows": 3})
