"""CRC-64-AVRO: our implementation against the spec's known answer and two other libraries."""

from __future__ import annotations

import json
from pathlib import Path

import avro.schema
import fastavro.schema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedstream.schemas import crc64_avro, default_registry, schema_fingerprint
from fedstream.schemas.fingerprint import CRC64_AVRO_EMPTY, canonical_form, fingerprint_bytes

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"
ALL_AVSC = sorted(SCHEMA_DIR.glob("*.avsc")) + sorted(SCHEMA_DIR.glob("history/*/*.avsc"))


def test_known_answer_null() -> None:
    # Avro specification: fingerprint64 of the schema "null".
    assert schema_fingerprint("null") == 7195948357588979594
    assert crc64_avro(b'"null"') == 7195948357588979594
    assert fingerprint_bytes(7195948357588979594).hex() == "8a8f25cce724dd63"


def test_empty_input_is_the_spec_constant() -> None:
    assert crc64_avro(b"") == CRC64_AVRO_EMPTY


@given(st.binary(max_size=200))
def test_crc_matches_avro_python_reference(data: bytes) -> None:
    # avro's private helper is an independent implementation of the same table algorithm.
    expected = int.from_bytes(avro.schema._crc_64_fingerprint(data), "little")
    assert crc64_avro(data) == expected


@pytest.mark.parametrize("path", ALL_AVSC, ids=lambda p: str(p.relative_to(SCHEMA_DIR)))
def test_schema_fingerprint_matches_fastavro_and_avro(path: Path) -> None:
    schema = json.loads(path.read_text())
    ours = fingerprint_bytes(schema_fingerprint(schema)).hex()
    pcf = fastavro.schema.to_parsing_canonical_form(schema)
    assert ours == fastavro.schema.fingerprint(pcf, "CRC-64-AVRO")
    # The avro package computes its own canonical form too; it agrees because our schemas
    # use no logical types (it would keep them and disagree with Java: schemas/README.md).
    assert avro.schema.parse(path.read_text()).canonical_form == canonical_form(schema)
    assert ours == avro.schema.parse(path.read_text()).fingerprint("CRC-64-AVRO").hex()


def test_registry_headers_carry_the_fingerprint() -> None:
    registry = default_registry()
    for name in registry.names:
        entry = registry.get(name)
        assert entry.header == b"\xc3\x01" + entry.fingerprint.to_bytes(8, "little")
        assert entry.fingerprint == schema_fingerprint(json.loads(entry.path.read_text()))


def test_doc_and_default_changes_keep_the_fingerprint() -> None:
    schema = json.loads((SCHEMA_DIR / "DeadLetter.avsc").read_text())
    changed = json.loads(json.dumps(schema))
    changed["doc"] = "something else"
    changed["fields"][1]["default"] = "fl.updates"
    assert schema_fingerprint(changed) == schema_fingerprint(schema)
    changed["fields"][1]["name"] = "topic"
    assert schema_fingerprint(changed) != schema_fingerprint(schema)
