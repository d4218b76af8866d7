"""The .avsc files themselves: structure, docs, enums mirrored in Python, loading rules."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedstream.schemas import (
    DeadLetterReason,
    SchemaError,
    SchemaRegistry,
    TensorEncoding,
    default_aggregation_settings,
    default_registry,
)
from fedstream.schemas import registry as registry_module

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"
EXPECTED_RECORDS = (
    "DeadLetter",
    "DeviceKey",
    "GradientUpdate",
    "ModelRegistration",
    "ModelRelease",
    "RecordFragment",
)


def _walk(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (path, node) for every named type and every field."""
    if isinstance(schema, list):
        for branch in schema:
            yield from _walk(branch, path)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            yield f"{path}<{schema['name']}>", schema
            for field in schema.get("fields", []):
                yield f"{path}.{field['name']}", field
                yield from _walk(field["type"], f"{path}.{field['name']}")
        elif kind in ("array", "map"):
            yield from _walk(schema.get("items", schema.get("values")), path + "[]")
        elif isinstance(kind, dict | list):
            yield from _walk(kind, path)


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
    return data


def _find_type(schema: Any, name: str) -> dict[str, Any]:
    for _, node in _walk(schema):
        if node.get("name") == name and node.get("type") in ("record", "enum"):
            return node
    raise AssertionError(f"{name} not found")


def test_expected_records_and_namespace() -> None:
    assert default_registry().names == EXPECTED_RECORDS
    for name in EXPECTED_RECORDS:
        schema = _load(name)
        assert schema["namespace"] == "io.fedstream"
        assert schema["name"] == name


@pytest.mark.parametrize("name", EXPECTED_RECORDS)
def test_every_type_and_field_has_a_doc(name: str) -> None:
    undocumented = [p for p, node in _walk(_load(name)) if not str(node.get("doc", "")).strip()]
    assert undocumented == []


def test_python_enums_mirror_the_avro_enums() -> None:
    reason = _find_type(_load("DeadLetter"), "DeadLetterReason")
    assert [r.value for r in DeadLetterReason] == reason["symbols"]
    assert reason["default"] == "OTHER"
    encoding = _find_type(_load("GradientUpdate"), "TensorEncoding")
    assert [e.value for e in TensorEncoding] == encoding["symbols"]
    assert "default" not in encoding  # unknown encodings must fail, not be misread


def test_tensor_payload_is_identical_wherever_it_is_defined() -> None:
    update = _find_type(_load("GradientUpdate"), "TensorPayload")
    registration = _find_type(_load("ModelRegistration"), "TensorPayload")
    assert update == registration


def test_field_lists() -> None:
    def names(schema: dict[str, Any]) -> list[str]:
        return [f["name"] for f in schema["fields"]]

    assert names(_load("GradientUpdate")) == [
        "update_id",
        "device_id",
        "model_id",
        "base_version",
        "num_samples",
        "created_at",
        "delta",
        "metrics",
        "sequence",
        "key_id",
        "signature",
    ]
    assert names(_find_type(_load("GradientUpdate"), "TensorPayload")) == [
        "encoding",
        "dtype",
        "shape",
        "data",
        "scale",
        "indices",
    ]
    assert names(_load("ModelRegistration")) == [
        "model_id",
        "onnx_template",
        "parameters",
        "initial_parameters",
        "aggregation",
        "created_at",
        "owner_key_id",
        "signature",
    ]
    assert names(_load("ModelRelease")) == [
        "model_id",
        "version",
        "onnx",
        "chunk_index",
        "chunk_count",
        "onnx_size",
        "sha256",
        "lineage",
        "created_at",
        "signature",
        "key_id",
    ]
    assert names(_load("DeadLetter"))[:7] == [
        "original",
        "source_topic",
        "source_partition",
        "source_offset",
        "reason",
        "detail",
        "model_id",
    ]


def test_aggregation_defaults() -> None:
    assert default_aggregation_settings() == {
        "mode": "FEDBUFF",
        "staleness": {"function": "POLYNOMIAL", "a": 0.5, "b": 0.0},
        "max_staleness": None,
        "window": {"count": 10, "seconds": None, "adaptive": False},
        "server_optimizer": {
            "name": "SGD",
            "learning_rate": 1.0,
            "momentum": 0.9,
            "beta1": 0.9,
            "beta2": 0.99,
            "epsilon": 1e-3,
        },
        "fedasync_mixing": 0.6,
        "fedasync_rule": "ADD_DELTA",
        "normalization": "COUNT",
        "weight_by_samples": False,
        "clip_norm": None,
        "reducer": "MEAN",
        "trim_fraction": 0.1,
        "dp_noise_multiplier": None,
        "seed": None,
    }
    # The record-level default (what a new registration gets) agrees with the per-field
    # defaults (what fills in a registration written before the field existed), except
    # where a new default must not change a model registered earlier.
    settings = _find_type(_load("ModelRegistration"), "AggregationSettings")
    upgraded = {"normalization": "WEIGHT_SUM"}
    for field in settings["fields"]:
        want = upgraded.get(field["name"], default_aggregation_settings()[field["name"]])  # type: ignore[literal-required]
        assert field["default"] == want, field["name"]


def test_no_logical_types_anywhere() -> None:
    for path in [*SCHEMA_DIR.glob("*.avsc"), *SCHEMA_DIR.glob("history/*/*.avsc")]:
        assert "logicalType" not in path.read_text(), path


# ------------------------------------------------------------------ loading rules


@pytest.fixture
def schema_copy(tmp_path: Path) -> Path:
    root = tmp_path / "schemas"
    root.mkdir()
    for path in SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(path, root / path.name)
    shutil.copytree(SCHEMA_DIR / "history", root / "history")
    return root


def _edit(path: Path, change: Any) -> None:
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema))


def test_loads_a_copy(schema_copy: Path) -> None:
    registry = SchemaRegistry.load(schema_copy)
    assert registry.names == EXPECTED_RECORDS
    assert [v.version for v in registry.history("GradientUpdate")] == ["1", "4"]


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"no \.avsc files"):
        SchemaRegistry.load(tmp_path)


def test_file_name_must_be_record_name(schema_copy: Path) -> None:
    (schema_copy / "DeadLetter.avsc").rename(schema_copy / "Dead.avsc")
    with pytest.raises(SchemaError, match="file name must be the record name"):
        SchemaRegistry.load(schema_copy)


def test_invalid_json_is_a_schema_error(schema_copy: Path) -> None:
    (schema_copy / "DeadLetter.avsc").write_text("{not json")
    with pytest.raises(SchemaError, match="cannot read schema"):
        SchemaRegistry.load(schema_copy)


def test_invalid_avro_is_a_schema_error(schema_copy: Path) -> None:
    _edit(schema_copy / "DeadLetter.avsc", lambda s: s["fields"][0].update(type="no_such_type"))
    with pytest.raises(SchemaError, match="invalid Avro schema"):
        SchemaRegistry.load(schema_copy)


def test_logical_types_are_refused(schema_copy: Path) -> None:
    def annotate(schema: dict[str, Any]) -> None:
        schema["fields"][-1]["type"] = {"type": "long", "logicalType": "timestamp-millis"}

    _edit(schema_copy / "DeadLetter.avsc", annotate)
    with pytest.raises(SchemaError, match="logicalType"):
        SchemaRegistry.load(schema_copy)


def test_diverging_shared_type_is_refused(schema_copy: Path) -> None:
    def change(schema: dict[str, Any]) -> None:
        payload = _find_type(schema, "TensorPayload")
        payload["fields"][4]["type"] = "double"

    _edit(schema_copy / "ModelRegistration.avsc", change)
    with pytest.raises(SchemaError, match="TensorPayload differs"):
        SchemaRegistry.load(schema_copy)


def test_incompatible_history_is_refused_at_load(schema_copy: Path) -> None:
    # Pretend the committed history had a field that the current schema dropped without
    # it ever having a default.
    def add(schema: dict[str, Any]) -> None:
        schema["fields"].append({"name": "legacy", "type": "string", "doc": "gone"})

    _edit(schema_copy / "history" / "1" / "GradientUpdate.avsc", add)
    with pytest.raises(SchemaError, match="legacy: field removed"):
        SchemaRegistry.load(schema_copy)


def test_history_of_an_unknown_record_is_refused(schema_copy: Path) -> None:
    (schema_copy / "DeadLetter.avsc").unlink()
    # a free history number: a history folder is created only for files that changed
    free = schema_copy / "history" / str(len(list((schema_copy / "history").iterdir())) + 1)
    free.mkdir()
    shutil.copy(SCHEMA_DIR / "DeadLetter.avsc", free / "DeadLetter.avsc")
    with pytest.raises(SchemaError, match="no current schema"):
        SchemaRegistry.load(schema_copy)


def test_history_folders_must_be_numbered(schema_copy: Path) -> None:
    (schema_copy / "history" / "old").mkdir()
    with pytest.raises(SchemaError, match="named 1, 2, 3"):
        SchemaRegistry.load(schema_copy)


def test_schema_dir_prefers_packaged_avsc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate an installed wheel: site-packages/fedstream/schemas/{registry.py, avsc/}
    module_dir = tmp_path / "site-packages" / "fedstream" / "schemas"
    (module_dir / "avsc").mkdir(parents=True)
    monkeypatch.setattr(registry_module, "__file__", str(module_dir / "registry.py"))
    with pytest.raises(SchemaError, match=r"no \.avsc files found .*must be packaged"):
        registry_module.default_schema_dir()
    shutil.copy(SCHEMA_DIR / "DeadLetter.avsc", tmp_path / "site-packages" / "stray.avsc")
    assert registry_module.default_schema_dir() == tmp_path / "site-packages"
    shutil.copy(SCHEMA_DIR / "DeadLetter.avsc", module_dir / "avsc" / "DeadLetter.avsc")
    assert registry_module.default_schema_dir() == module_dir / "avsc"


def test_default_schema_dir_is_the_source_tree() -> None:
    assert registry_module.default_schema_dir() == SCHEMA_DIR
