"""Shared helpers for the edge SDK unit tests."""

from __future__ import annotations

import hashlib

from fedstream.edge import Release
from fedstream.schemas import ReleaseLineage


def lineage(parent: int | None = None, update_ids: tuple[str, ...] = ()) -> ReleaseLineage:
    return {
        "parent_version": parent,
        "update_ids": list(update_ids),
        "device_ids": [],
        "num_updates": len(update_ids),
        "num_samples": 0,
        "staleness_min": 0,
        "staleness_max": 0,
        "staleness_mean": 0.0,
        "total_weight": 0.0,
    }


def make_release(onnx: bytes, version: int = 0, model_id: str = "m") -> Release:
    """A verified release as the reader would hand it out."""
    return Release(
        model_id=model_id,
        version=version,
        onnx=onnx,
        sha256=hashlib.sha256(onnx).hexdigest(),
        lineage=lineage(version - 1 if version else None),
        created_at=0,
    )


def constant_model(value: float, size: int = 256) -> bytes:
    """ONNX model y = x * 0 + c, with c an initializer of `size` copies of `value`."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "zero"], ["xz"]),
            helper.make_node("Add", ["xz", "c"], ["y"]),
        ],
        "constant",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", size])],
        initializer=[
            numpy_helper.from_array(np.zeros(size, np.float32), "zero"),
            numpy_helper.from_array(np.full(size, value, np.float32), "c"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data
