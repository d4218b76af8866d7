"""Single-object encode/decode: round trips, schema evolution and every error path."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fedstream.schemas import (
    HEADER_SIZE,
    BadMagicError,
    Codec,
    CodecError,
    DeadLetterReason,
    EncodeError,
    InvalidBodyError,
    SchemaError,
    TrailingBytesError,
    TruncatedError,
    UndecodableError,
    UnknownSchemaError,
    WrongRecordTypeError,
    decode,
    default_registry,
    encode,
    read_fingerprint,
)
from tests.support.records import as_written_by

Samples = dict[str, tuple[str, dict[str, Any]]]


def test_round_trip_every_sample(samples: Samples) -> None:
    registry = default_registry()
    for label, (name, record) in samples.items():
        data = encode(name, record)
        assert data[:2] == b"\xc3\x01", label
        assert data[2:HEADER_SIZE] == registry.get(name).fingerprint.to_bytes(8, "little")
        decoded = decode(data, expected=name)
        assert decoded.name == name
        assert decoded.record == record, label
        assert decoded.writer_fingerprint == registry.get(name).fingerprint
        assert decoded.writer_version is None
        assert read_fingerprint(data) == decoded.writer_fingerprint


def test_full_names_and_buffer_types(encoded_samples: dict[str, bytes]) -> None:
    data = encoded_samples["dead-letter"]
    assert decode(bytearray(data), "io.fedstream.DeadLetter").name == "DeadLetter"
    assert decode(memoryview(data)).name == "DeadLetter"


def test_encoding_is_deterministic(samples: Samples) -> None:
    name, record = samples["registration"]
    assert encode(name, record) == encode(f"io.fedstream.{name}", copy.deepcopy(record))


def test_old_writer_is_resolved_to_current_schema(samples: Samples) -> None:
    _, update = samples["update-FP32"]
    old = as_written_by("GradientUpdate", "1", update)
    data = encode("GradientUpdate", old, writer_version="1")
    v1 = default_registry().get("GradientUpdate", "1")
    assert data[:HEADER_SIZE] == v1.header
    assert v1.fingerprint != default_registry().get("GradientUpdate").fingerprint
    decoded = decode(data, expected="GradientUpdate")
    assert decoded.writer_version == "1"
    assert decoded.writer_fingerprint == v1.fingerprint
    assert decoded.record == {**dict.fromkeys(update), **old}


def test_unknown_fingerprint(encoded_samples: dict[str, bytes]) -> None:
    data = bytearray(encoded_samples["update-FP32"])
    data[5] ^= 0x01
    with pytest.raises(UnknownSchemaError) as info:
        decode(bytes(data))
    assert info.value.reason is DeadLetterReason.UNKNOWN_SCHEMA
    assert info.value.fingerprint == int.from_bytes(data[2:10], "little")


def test_wrong_record_type(encoded_samples: dict[str, bytes]) -> None:
    with pytest.raises(WrongRecordTypeError) as info:
        decode(encoded_samples["dead-letter"], expected="GradientUpdate")
    assert info.value.reason is DeadLetterReason.WRONG_RECORD_TYPE
    assert (info.value.expected, info.value.actual) == ("GradientUpdate", "DeadLetter")


@pytest.mark.parametrize(
    ("mutate", "error", "detail"),
    [
        (lambda d: b"", BadMagicError, "empty input"),
        (lambda d: b"\x00" + d[1:], BadMagicError, "bad magic 0001"),
        (lambda d: b"{" + d[1:], BadMagicError, "bad magic"),
        (lambda d: d[:1], TruncatedError, "header truncated: 1 of 10"),
        (lambda d: d[:7], TruncatedError, "header truncated: 7 of 10"),
        (lambda d: d[:HEADER_SIZE], TruncatedError, "body truncated"),
        (lambda d: d[:-3], TruncatedError, "body truncated"),
        (lambda d: d + b"\x00", TrailingBytesError, "1 trailing bytes"),
        (lambda d: d + d, TrailingBytesError, "trailing bytes"),
    ],
)
def test_undecodable_inputs_have_distinct_errors(
    encoded_samples: dict[str, bytes], mutate: Any, error: type[CodecError], detail: str
) -> None:
    with pytest.raises(error, match=detail) as info:
        decode(mutate(encoded_samples["update-INT8"]))
    assert info.value.reason is DeadLetterReason.UNDECODABLE
    assert isinstance(info.value, UndecodableError)


def test_invalid_body(encoded_samples: dict[str, bytes]) -> None:
    data = encoded_samples["dead-letter"]
    header = data[:HEADER_SIZE]
    # DeadLetter starts with `original` (bytes): make its length prefix negative (-1).
    with pytest.raises(UndecodableError):
        decode(header + b"\x01" + data[HEADER_SIZE + 1 :])
    # An enum index out of range: reason is the 5th field; build a body by hand.
    body = b"\x00" + b"\x04ab" + b"\x02" + b"\x04" + b"\x7e"  # reason index 63
    with pytest.raises(InvalidBodyError, match="DeadLetter body invalid"):
        decode(header + body + b"\x00\x00\x00\x00")
    # Invalid UTF-8 in a string.
    with pytest.raises(InvalidBodyError):
        decode(header + b"\x00" + b"\x04\xff\xfe" + data[HEADER_SIZE + 1 + 3 :])


@pytest.mark.parametrize("value", [None, "text", 42, [1, 2]])
def test_non_bytes_input(value: Any) -> None:
    with pytest.raises(UndecodableError, match="expected bytes"):
        decode(value)


def test_unknown_record_type_names() -> None:
    with pytest.raises(SchemaError, match="unknown record type 'Nope'"):
        encode("Nope", {})
    with pytest.raises(SchemaError):
        decode(b"\xc3\x01" + bytes(8), expected="Nope")
    with pytest.raises(SchemaError, match="no historical version"):
        encode("DeadLetter", {}, writer_version="7")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(source_partition=2**40), "source_partition"),
        (lambda r: r.update(source_partition=True), "source_partition"),
        (lambda r: r.update(source_offset=2**63), "source_offset"),
        (lambda r: r.update(source_offset=1.5), "source_offset"),
        (lambda r: r.update(original="text"), "original"),
        (lambda r: r.update(detail=b"bytes"), "detail"),
        (lambda r: r.update(reason="NOT_A_REASON"), "reason"),
        (lambda r: r.pop("detail"), "detail"),
        (lambda r: r.update(detial="typo"), "detial"),
        (lambda r: r.update(model_id=3), "model_id"),
    ],
)
def test_invalid_records_raise_encode_error(samples: Samples, change: Any, message: str) -> None:
    record = copy.deepcopy(samples["dead-letter"][1])
    change(record)
    with pytest.raises(EncodeError, match=message) as info:
        encode("DeadLetter", record)
    assert info.value.reason is DeadLetterReason.OTHER


def test_invalid_nested_record(samples: Samples) -> None:
    record = copy.deepcopy(samples["update-FP16"][1])
    record["delta"]["encoding"] = "FP8"
    with pytest.raises(EncodeError, match="encoding"):
        encode("GradientUpdate", record)
    record = copy.deepcopy(samples["update-FP16"][1])
    record["metrics"] = {"loss": 1.0, "steps": 2**31, "duration_ms": None}
    with pytest.raises(EncodeError):
        encode("GradientUpdate", record)


def test_non_mapping_record() -> None:
    with pytest.raises(EncodeError, match="must be a mapping"):
        encode("DeadLetter", [("a", 1)])  # type: ignore[arg-type]


def test_codec_with_explicit_registry(encoded_samples: dict[str, bytes]) -> None:
    codec = Codec(default_registry())
    assert codec.decode(encoded_samples["release"], "ModelRelease").record["version"] == 42


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("base_version",), 1.0, "base_version=1.0 is not an Avro long"),
        (("num_samples",), True, "num_samples=True is not an Avro long"),
        (("delta", "scale"), "1", "delta.scale='1' is not an Avro float"),
        (("delta", "scale"), False, "delta.scale=False is not an Avro float"),
        (("delta", "shape"), "12", "delta.shape='12' is not an array"),
        (("delta", "shape"), [3, 2.0], r"delta.shape\[1\]=2.0 is not an Avro long"),
        (("delta", "data"), memoryview(b"x"), "delta.data=<memory at"),
        (("metrics",), {"loss": None}, "metrics.steps is missing"),
        (("metrics",), 3, "metrics=3 is not a UpdateMetrics record"),
        (("metrics", "loss"), "0.1", "metrics.loss='0.1' is not an Avro double"),
        (("delta",), None, "delta=None is not a TensorPayload record"),
    ],
)
def test_validator_messages_name_the_field(
    samples: Samples, path: tuple[str, ...], value: Any, message: str
) -> None:
    record = copy.deepcopy(samples["update-FP32"][1])
    parent = record
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    with pytest.raises(
        EncodeError, match=f"invalid GradientUpdate record: GradientUpdate.{message}"
    ):
        encode("GradientUpdate", record)


def test_tuples_and_bytearrays_are_accepted(samples: Samples) -> None:
    record = copy.deepcopy(samples["update-FP32"][1])
    record["delta"]["shape"] = tuple(record["delta"]["shape"])
    record["delta"]["data"] = bytearray(record["delta"]["data"])
    assert decode(encode("GradientUpdate", record)).record == samples["update-FP32"][1]


def test_validator_for_maps_and_unsupported_types() -> None:
    from fedstream.schemas.validation import compile_validator

    check = compile_validator(
        {
            "type": "record",
            "name": "R",
            "fields": [
                {"name": "m", "type": {"type": "map", "values": "int"}},
                {"name": "u", "type": ["string", "int"]},
            ],
        }
    )
    assert check({"m": {"a": 1}, "u": 3}, "R") is None
    assert (
        check({"m": {"a": "x"}, "u": 3}, "R")
        == "R.m['a']='x' is not an Avro int (needs an integer)"
    )
    assert check({"m": {1: 1}, "u": 3}, "R") == "R.m has a non-string key 1"
    assert check({"m": [], "u": 3}, "R") == "R.m=[] is not a map (a mapping)"
    assert (
        check({"m": {}, "u": 1.5}, "R")
        == "R.u=1.5 matches no branch of the union ['string', 'int']"
    )
    with pytest.raises(ValueError, match="unsupported Avro type 'fixed'"):
        compile_validator({"type": "fixed", "name": "F", "size": 4})
