"""Sample records for the schema/codec tests: one of every record type and tensor encoding."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedstream.schemas import (
    DeadLetter,
    GradientUpdate,
    ModelRegistration,
    ModelRelease,
    ParameterLayout,
    aggregation_to_avro,
    encode,
    pack,
)

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"
CREATED_AT = 1_767_225_600_123  # 2026-01-01T00:00:00.123Z

LAYOUT = ParameterLayout([("fc1.weight", (4, 3)), ("fc1.bias", (4,)), ("fc2.weight", (2, 4))])


def make_update(encoding: str = "FP32", *, metrics: bool = True, seed: int = 0) -> GradientUpdate:
    rng = np.random.default_rng(seed)
    delta = rng.normal(size=LAYOUT.size).astype(np.float32)
    return {
        "update_id": f"upd-{encoding}-{seed}-é",  # non-ASCII on purpose (UTF-8 strings)
        "device_id": "device-7",
        "model_id": "digits-mlp",
        "base_version": 41,
        "num_samples": 128,
        "created_at": CREATED_AT,
        "delta": pack(delta, encoding, k=5 if encoding == "TOPK" else None),
        "metrics": ({"loss": 0.3125, "steps": 17, "duration_ms": None} if metrics else None),
        "sequence": None,
        "key_id": None,
        "signature": None,
    }


def make_registration() -> ModelRegistration:
    rng = np.random.default_rng(1)
    return {
        "model_id": "digits-mlp",
        "onnx_template": bytes(range(256)) * 3,  # every byte value, as Avro JSON must escape
        "parameters": LAYOUT.to_registration(),
        "initial_parameters": pack(rng.normal(size=LAYOUT.size), "FP32"),
        "aggregation": aggregation_to_avro(
            {
                "mode": "fedbuff",
                "staleness": {"function": "hinge", "a": 10.0, "b": 4.0},
                "max_staleness": 20,
                "window": {"count": 8, "seconds": 2.5},
                "server_optimizer": {"name": "adam", "learning_rate": 0.01},
                "clip_norm": 5.0,
                "reducer": "trimmed_mean",
                "seed": 1234,
            }
        ),
        "created_at": CREATED_AT,
        "owner_key_id": None,
        "signature": None,
    }


def make_release(chunk_index: int = 0, chunk_count: int = 1) -> ModelRelease:
    onnx = b"\x08\x07ONNX\x00\xff" * 50
    return {
        "model_id": "digits-mlp",
        "version": 42,
        "onnx": onnx,
        "chunk_index": chunk_index,
        "chunk_count": chunk_count,
        "onnx_size": len(onnx) * chunk_count,
        "sha256": hashlib.sha256(onnx).hexdigest(),
        "lineage": {
            "parent_version": 41,
            "update_ids": ["u-1", "u-2", "u-3"],
            "device_ids": ["d-1", "d-2", "d-1"],
            "num_updates": 3,
            "num_samples": 384,
            "staleness_min": 0,
            "staleness_max": 5,
            "staleness_mean": 1.6666666666666667,
            "total_weight": 2.25,
        },
        "created_at": CREATED_AT,
        "signature": bytes(range(64)),
        "key_id": "0123456789abcdef",
    }


def make_dead_letter() -> DeadLetter:
    return {
        "original": b"\xc3\x01garbage\x00\x80",
        "source_topic": "fl.updates",
        "source_partition": 3,
        "source_offset": 2**40 + 7,
        "reason": "NON_FINITE",
        "detail": "tensor has NaN or infinite values",
        "model_id": "digits-mlp",
        "update_id": None,
        "created_at": CREATED_AT,
        "original_truncated": False,
        "original_size": None,
    }


def make_device_key(status: str = "ACTIVE") -> dict[str, Any]:
    return {
        "device_id": "cam-17",
        "key_id": "0123456789abcdef",
        "public_key": bytes(range(32)),
        "status": status,
        "created_at": CREATED_AT,
    }


def make_fragment() -> dict[str, Any]:
    return {
        "record_id": "upd-1",
        "signer": "cam-17",
        "key_id": "0123456789abcdef",
        "index": 1,
        "count": 3,
        "total_bytes": 2**33,
        "whole_sha256": bytes(range(32)),
        "data": b"\xc3\x01piece",
        "signature": bytes(64),
    }


def all_samples() -> dict[str, tuple[str, dict[str, Any]]]:
    """label -> (record name, record) covering every record type and tensor encoding."""
    samples: dict[str, tuple[str, dict[str, Any]]] = {}
    for enc in ("FP32", "FP16", "INT8", "TOPK"):
        samples[f"update-{enc}"] = ("GradientUpdate", dict(make_update(enc)))
    samples["update-no-metrics"] = ("GradientUpdate", dict(make_update(metrics=False)))
    samples["registration"] = ("ModelRegistration", dict(make_registration()))
    samples["release"] = ("ModelRelease", dict(make_release(1, 3)))
    samples["dead-letter"] = ("DeadLetter", dict(make_dead_letter()))
    samples["device-key"] = ("DeviceKey", make_device_key())
    samples["device-key-revoked"] = ("DeviceKey", make_device_key("REVOKED"))
    samples["fragment"] = ("RecordFragment", make_fragment())
    return samples


@pytest.fixture(scope="session")
def samples() -> dict[str, tuple[str, dict[str, Any]]]:
    return all_samples()


@pytest.fixture(scope="session")
def encoded_samples() -> dict[str, bytes]:
    return {label: encode(name, rec) for label, (name, rec) in all_samples().items()}
