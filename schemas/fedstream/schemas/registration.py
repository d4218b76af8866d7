"""The ModelRegistration record, from ONNX bytes and the trainable tensors (numpy only).

The one builder of the record: the SDK uses it directly (`fedstream.edge`), the job's CLI
through `fedstream.jobs.registration` (which reads the trainable tensors out of the ONNX
file first). Kept free of torch and onnx so that any framework's exporter can feed it;
the torch path is `fedstream.edge.training.torch_registration`.

The record's format is the contract in ``schemas/ModelRegistration.avsc``: the ONNX
template (weights embedded), the trainable parameters in the order of every flat vector,
their initial values as one FP32 vector, and the aggregation settings (keys of
`fedstream.schemas.default_aggregation_settings`, in the Python form with lowercase enum
names, e.g. ``{"window": {"count": 8}, "staleness": {"function": "constant"}}``). Keys left
out take the schema's defaults; unknown keys or enum values raise
`fedstream.schemas.EncodeError` here, not later at the job.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fedstream.schemas.layout import ParameterLayout
from fedstream.schemas.records import ModelRegistration, aggregation_to_avro
from fedstream.schemas.tensors import pack

__all__ = ["registration_record"]


def registration_record(
    model_id: str,
    onnx_bytes: bytes,
    parameters: Sequence[tuple[str, ArrayLike]],
    aggregation: Mapping[str, Any] | None = None,
    *,
    created_at: int | None = None,
) -> ModelRegistration:
    """The registration of `model_id`: `parameters` are (initializer name, initial value)
    in flat-vector order. The job re-checks names and shapes against the ONNX graph."""
    if not model_id:
        raise ValueError("model_id must not be empty")
    arrays = {name: np.asarray(value, dtype=np.float32) for name, value in parameters}
    layout = ParameterLayout([(name, arrays[name].shape) for name, _ in parameters])
    return {
        "model_id": model_id,
        "onnx_template": bytes(onnx_bytes),
        "parameters": layout.to_registration(),
        "initial_parameters": pack(layout.flatten(arrays), "FP32"),
        "aggregation": aggregation_to_avro(dict(aggregation or {})),
        "created_at": int(time.time() * 1000) if created_at is None else created_at,
        "owner_key_id": None,
        "signature": None,
    }
