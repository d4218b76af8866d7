"""Build a ModelRegistration from an ONNX file, without torch (the job side never has it).

A registration tells the job everything about a model: the ONNX template whose
initializers are replaced at each release, which initializers are trainable (their order
defines the flat parameter vector), their initial values, and the aggregation settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedstream.pipelines.config import AggregationConfig
from fedstream.pipelines.onnx_release import read_initializers
from fedstream.schemas import encode
from fedstream.schemas.registration import registration_record as build_record
from fedstream.schemas.registration_signing import sign_registration
from fedstream.schemas.signing import ReleaseSigner


def trainable_names(onnx_bytes: bytes) -> list[str]:
    """Floating-point initializers with at least one element, in graph order."""
    found = read_initializers(onnx_bytes)
    return [n for n, a in found.items() if np.issubdtype(a.dtype, np.floating) and a.size > 0]


def registration_from_onnx(
    model_id: str,
    onnx_bytes: bytes,
    parameter_names: Sequence[str] | None = None,
    aggregation: AggregationConfig | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ModelRegistration record of an ONNX file whose initializers hold the initial
    weights (`parameter_names`, or every trainable one), built by the one builder,
    `fedstream.schemas.registration_record`, with the aggregation settings checked by the
    job's own rules first (validated by the codec when encoded)."""
    names = list(parameter_names) if parameter_names else trainable_names(onnx_bytes)
    arrays = read_initializers(onnx_bytes, names)
    if isinstance(aggregation, AggregationConfig):
        settings = aggregation.to_dict()
    else:
        settings = AggregationConfig.from_dict(dict(aggregation or {})).to_dict()
    parameters = [(name, arrays[name]) for name in names]
    return dict(build_record(model_id, onnx_bytes, parameters, settings))


def registration_bytes(
    model_id: str,
    onnx_bytes: bytes,
    parameter_names: Sequence[str] | None = None,
    aggregation: AggregationConfig | Mapping[str, Any] | None = None,
    owner: ReleaseSigner | None = None,
) -> bytes:
    """The encoded ModelRegistration, ready to produce to the control topic; signed by
    `owner` (a model owner's key the job trusts, [trust] owner_keys) when given."""
    record = registration_from_onnx(model_id, onnx_bytes, parameter_names, aggregation)
    if owner is not None:
        record = sign_registration(record, owner)
    return encode("ModelRegistration", record)
