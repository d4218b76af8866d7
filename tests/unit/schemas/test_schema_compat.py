"""Schema evolution: every historical version stays readable, and the checker has teeth.

Rule (schemas/README.md): before changing a schema, copy the committed version into
schemas/history/<n>/. These tests then prove, for every current schema and each of its
historical versions, that old data reads with the new schema and new data with the old,
by fastavro's schema resolution on generated data and by the structural checker.
"""

from __future__ import annotations

import copy
import io
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.utils import generate_many

from fedstream.schemas import check_compatible, default_registry

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"
PAIRS = [
    (name, old.version)
    for name in default_registry().names
    for old in default_registry().history(name)
]


def _parse(schema: Any) -> Any:
    return fastavro.parse_schema(copy.deepcopy(schema), named_schemas={})


def _round_trip(writer: Any, reader: Any, record: Any) -> Any:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, _parse(writer), record)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, _parse(writer), _parse(reader))


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
    return data


def test_history_is_not_empty() -> None:
    # v1 of GradientUpdate (without `metrics`) exists to prove that evolution works.
    assert ("GradientUpdate", "1") in PAIRS


@pytest.mark.parametrize(("name", "version"), PAIRS)
def test_old_and_new_data_stay_readable(name: str, version: str) -> None:
    registry = default_registry()
    old = registry.get(name, version).schema
    new = registry.get(name).schema
    assert check_compatible(old, new) == []
    random.seed(1234)  # generate_many draws from the global random module
    new_fields = {f["name"]: f for f in new["fields"]}
    old_fields = {f["name"] for f in old["fields"]}
    for record in generate_many(_parse(old), 30):  # backward: old writer, new reader
        read = _round_trip(old, new, record)
        baseline = _round_trip(old, old, record)  # what the old schema itself reads back
        old_specs = {f["name"]: f for f in old["fields"]}
        for field, spec in new_fields.items():
            expected = (
                _filled(baseline[field], old_specs[field]["type"], spec["type"])
                if field in old_fields
                else spec["default"]
            )
            assert read[field] == expected, field
    for record in generate_many(_parse(new), 30):  # forward: new writer, old reader
        read = _round_trip(new, old, record)
        assert set(read) == old_fields


def _filled(value: Any, old_type: Any, new_type: Any) -> Any:
    """`value` (read with the old schema) as the new one reads it: fields a nested record
    gained take their defaults (schema step 5 added fields inside AggregationSettings)."""
    if not (isinstance(new_type, dict) and new_type.get("type") == "record"):
        return value
    assert isinstance(old_type, dict) and isinstance(value, dict)
    old_nested = {f["name"]: f["type"] for f in old_type["fields"]}
    return {
        f["name"]: (
            _filled(value[f["name"]], old_nested[f["name"]], f["type"])
            if f["name"] in old_nested
            else f["default"]
        )
        for f in new_type["fields"]
    }


Mutation = Callable[[dict[str, Any]], None]


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def _payload(schema: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = _field(schema, "delta")["type"]
    return payload


def _add_required(s: dict[str, Any]) -> None:
    s["fields"].append({"name": "priority", "type": "int"})


def _remove_required(s: dict[str, Any]) -> None:
    s["fields"] = [f for f in s["fields"] if f["name"] != "num_samples"]


def _narrow_long(s: dict[str, Any]) -> None:
    _field(s, "base_version")["type"] = "int"


def _drop_encoding(s: dict[str, Any]) -> None:
    _field(_payload(s), "encoding")["type"]["symbols"].remove("TOPK")


def _rename_payload(s: dict[str, Any]) -> None:
    _payload(s)["name"] = "Tensor"


def _drop_metrics_branch(s: dict[str, Any]) -> None:
    _field(s, "metrics")["type"] = ["null"]


def _string_to_int(s: dict[str, Any]) -> None:
    _field(s, "device_id")["type"] = "int"


INCOMPATIBLE: list[tuple[Mutation, str, str]] = [
    # (mutation of the current GradientUpdate, expected problem, direction fastavro fails)
    (_add_required, "priority: field added without a default", "backward"),
    (_remove_required, "num_samples: field removed, but it had no default", "forward"),
    (_narrow_long, "base_version: type changed from long to int", "backward"),
    (_drop_encoding, "removed symbols ['TOPK'] and has no default symbol", "backward"),
    (_rename_payload, "renamed to io.fedstream.Tensor without an alias", "backward"),
    (
        _drop_metrics_branch,
        "old union branch io.fedstream.UpdateMetrics matches nothing",
        "backward",
    ),
    (_string_to_int, "device_id: type changed from string to int", "backward"),
]


@pytest.mark.parametrize(
    ("mutate", "problem", "direction"),
    INCOMPATIBLE,
    ids=[m.__name__ for m, _, _ in INCOMPATIBLE],
)
def test_checker_catches_incompatible_changes(
    mutate: Mutation, problem: str, direction: str, samples: dict[str, Any]
) -> None:
    old = _load("GradientUpdate")
    new = copy.deepcopy(old)
    mutate(new)
    problems = check_compatible(old, new)
    assert any(problem in p for p in problems), problems
    # fastavro agrees, on data that exercises the change (TOPK payload, metrics set)
    record = dict(samples["update-TOPK"][1])
    if direction == "backward":  # old data, new reader
        with pytest.raises(Exception):  # noqa: B017 - SchemaResolutionError and kin
            _round_trip(old, new, record)
    else:  # new data, old reader
        del record["num_samples"]
        with pytest.raises(Exception):  # noqa: B017
            _round_trip(new, old, record)


def _add_optional(s: dict[str, Any]) -> None:
    s["fields"].append({"name": "region", "type": ["null", "string"], "default": None})


def _widen_steps(s: dict[str, Any]) -> None:
    metrics = _field(s, "metrics")["type"][1]
    _field(metrics, "steps")["type"] = ["null", "long"]


def _rename_with_alias(s: dict[str, Any]) -> None:
    _payload(s)["name"] = "Tensor"
    _payload(s)["aliases"] = ["TensorPayload"]


def _remove_optional(s: dict[str, Any]) -> None:
    s["fields"] = [f for f in s["fields"] if f["name"] != "metrics"]


COMPATIBLE: list[Mutation] = [_add_optional, _widen_steps, _rename_with_alias, _remove_optional]


@pytest.mark.parametrize("mutate", COMPATIBLE, ids=[m.__name__ for m in COMPATIBLE])
def test_checker_accepts_compatible_changes(mutate: Mutation, samples: dict[str, Any]) -> None:
    old = _load("GradientUpdate")
    new = copy.deepcopy(old)
    mutate(new)
    assert check_compatible(old, new) == []
    _round_trip(old, new, samples["update-TOPK"][1])


def test_enum_symbol_removal_is_fine_with_a_default() -> None:
    # DeadLetterReason has default OTHER, so retiring a reason keeps old letters readable.
    old = _load("DeadLetter")
    new = copy.deepcopy(old)
    _field(new, "reason")["type"]["symbols"].remove("STALE")
    assert check_compatible(old, new) == []
    letter = {
        "original": b"",
        "source_topic": "t",
        "source_partition": 0,
        "source_offset": 0,
        "reason": "STALE",
        "detail": "",
        "model_id": None,
        "update_id": None,
        "created_at": 0,
    }
    assert _round_trip(old, new, letter)["reason"] == "OTHER"
    # Without the default it is a breaking change.
    del _field(new, "reason")["type"]["default"]
    assert check_compatible(old, new) != []


def test_a_registration_from_before_step_5_keeps_the_weighted_mean() -> None:
    """A model registered before schema step 5 keeps the arithmetic it was registered with
    (WEIGHT_SUM) when a newer job reads its registration; a new registration that says
    nothing gets the new default, COUNT (the AggregationSettings record default)."""
    registry = default_registry()
    old = registry.get("ModelRegistration", "4").schema
    new = registry.get("ModelRegistration").schema
    random.seed(5)
    for record in generate_many(_parse(old), 5):
        assert _round_trip(old, new, record)["aggregation"]["normalization"] == "WEIGHT_SUM"
    aggregation = next(f for f in new["fields"] if f["name"] == "aggregation")
    assert aggregation["default"]["normalization"] == "COUNT"
