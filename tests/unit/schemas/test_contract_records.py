"""Helpers in records.py: aggregation settings mapping, dead letters, release chunks."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstream.schemas import (
    DEAD_LETTER_TEXT_LIMIT,
    DeadLetterReason,
    EncodeError,
    ReleaseError,
    TruncatedError,
    aggregation_from_avro,
    aggregation_to_avro,
    assemble_release,
    decode,
    default_aggregation_settings,
    encode,
    make_dead_letter,
    release_chunks,
)

PYTHON_DEFAULTS: dict[str, Any] = {
    "mode": "fedbuff",
    "staleness": {"function": "polynomial", "a": 0.5, "b": 0.0},
    "max_staleness": None,
    "window": {"count": 10, "seconds": None, "adaptive": False},
    "server_optimizer": {
        "name": "sgd",
        "learning_rate": 1.0,
        "momentum": 0.9,
        "beta1": 0.9,
        "beta2": 0.99,
        "epsilon": 1e-3,
    },
    "fedasync_mixing": 0.6,
    "fedasync_rule": "add_delta",
    "normalization": "count",
    "weight_by_samples": False,
    "clip_norm": None,
    "reducer": "mean",
    "trim_fraction": 0.1,
    "dp_noise_multiplier": None,
    "seed": None,
}


def test_defaults_both_ways() -> None:
    assert aggregation_from_avro(default_aggregation_settings()) == PYTHON_DEFAULTS
    assert aggregation_to_avro({}) == default_aggregation_settings()
    assert aggregation_to_avro(PYTHON_DEFAULTS) == default_aggregation_settings()


def test_enum_case_mapping() -> None:
    config = {
        "mode": "fedasync",
        "staleness": {"function": "hinge", "a": 10.0, "b": 4.0},
        "server_optimizer": {"name": "yogi"},
        "reducer": "trimmed_mean",
    }
    avro = aggregation_to_avro(config)
    assert (avro["mode"], avro["staleness"]["function"]) == ("FEDASYNC", "HINGE")
    assert (avro["server_optimizer"]["name"], avro["reducer"]) == ("YOGI", "TRIMMED_MEAN")
    assert avro["server_optimizer"]["learning_rate"] == 1.0  # untouched nested default
    back = aggregation_from_avro(avro)
    assert back["mode"] == "fedasync" and back["reducer"] == "trimmed_mean"
    assert back["staleness"] == {"function": "hinge", "a": 10.0, "b": 4.0}


def test_settings_survive_the_wire(samples: dict[str, tuple[str, dict[str, Any]]]) -> None:
    name, registration = samples["registration"]
    decoded = decode(encode(name, registration)).record
    assert aggregation_from_avro(decoded["aggregation"])["reducer"] == "trimmed_mean"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"mdoe": "fedbuff"}, "unknown aggregation setting 'mdoe'"),
        ({"window": {"size": 3}}, r"unknown aggregation setting window\.'size'"),
        ({"window": 3}, "must be a mapping"),
        ({"mode": "fedprox"}, r"mode='fedprox'; expected one of \['fedbuff', 'fedasync'\]"),
        ({"reducer": None}, "must be a string"),
        ({"server_optimizer": {"name": "rmsprop"}}, "server_optimizer.name"),
    ],
)
def test_aggregation_errors(config: dict[str, Any], message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        aggregation_to_avro(config)


def test_from_avro_does_not_mutate_its_input() -> None:
    avro = default_aggregation_settings()
    aggregation_from_avro(avro)
    assert avro["mode"] == "FEDBUFF" and avro["staleness"]["function"] == "POLYNOMIAL"


def test_dead_letter_from_codec_error() -> None:
    bad = b"\xc3\x01\x00"
    try:
        decode(bad)
    except TruncatedError as exc:
        letter = make_dead_letter(
            bad,
            source_topic="fl.updates",
            source_partition=2,
            source_offset=99,
            error=exc,
            created_at=5,
        )
    assert letter["reason"] == "UNDECODABLE"
    assert letter["detail"].startswith("header truncated")
    assert letter["original"] == bad
    assert decode(encode("DeadLetter", letter), "DeadLetter").record == letter


def test_dead_letter_from_reason() -> None:
    letter = make_dead_letter(
        b"x",
        source_topic="t",
        source_partition=0,
        source_offset=1,
        error=DeadLetterReason.STALE,
        detail="staleness 12 > 10",
        created_at=0,
        model_id="m",
        update_id="u",
    )
    assert (letter["reason"], letter["detail"], letter["update_id"]) == (
        "STALE",
        "staleness 12 > 10",
        "u",
    )
    assert (
        make_dead_letter(
            b"",
            source_topic="t",
            source_partition=0,
            source_offset=0,
            error="duplicate",
            created_at=0,
        )["reason"]
        == "DUPLICATE"
    )
    with pytest.raises(EncodeError, match="unknown dead-letter reason"):
        make_dead_letter(
            b"", source_topic="t", source_partition=0, source_offset=0, error="bad", created_at=0
        )


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 40_000),
    detail_len=st.integers(0, 20_000),
    id_len=st.integers(0, 9_000),
    max_bytes=st.integers(33 * 1024, 80_000),
)
def test_dead_letter_always_fits_its_topic(
    size: int, detail_len: int, id_len: int, max_bytes: int
) -> None:
    """Whatever the original and the texts, the encoded dead letter fits `max_bytes`, and
    it says when (and from what size) the original was cut."""
    original = bytes(range(256)) * (size // 256) + bytes(size % 256)
    letter = make_dead_letter(
        original,
        source_topic="fl.updates",
        source_partition=0,
        source_offset=2**62,
        error="INTERNAL",
        detail="é" * detail_len,
        created_at=2**62,
        model_id="m" * id_len,
        update_id="u" * id_len,
        max_bytes=max_bytes,
    )
    encoded = encode("DeadLetter", letter)
    assert len(encoded) <= max_bytes
    assert original.startswith(letter["original"])
    assert letter["original_truncated"] == (len(letter["original"]) < size)
    assert letter["original_size"] == (size if letter["original_truncated"] else None)
    assert len(letter["detail"]) <= DEAD_LETTER_TEXT_LIMIT


def test_dead_letter_refuses_a_limit_with_no_room() -> None:
    with pytest.raises(EncodeError, match="no room"):
        make_dead_letter(
            b"x",
            source_topic="t",
            source_partition=0,
            source_offset=0,
            error="OTHER",
            created_at=0,
            max_bytes=100,
        )


LINEAGE: Any = {
    "parent_version": None,
    "update_ids": [],
    "device_ids": [],
    "num_updates": 0,
    "num_samples": 0,
    "staleness_min": 0,
    "staleness_max": 0,
    "staleness_mean": 0.0,
    "total_weight": 0.0,
}


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 64), st.randoms())
def test_release_chunks_round_trip(onnx: bytes, chunk: int, rnd: Any) -> None:
    records = release_chunks(
        model_id="m", version=3, onnx=onnx, lineage=LINEAGE, created_at=0, max_chunk_bytes=chunk
    )
    assert all(len(r["onnx"]) <= chunk for r in records)
    assert {r["chunk_count"] for r in records} == {len(records)}
    assert records[0]["sha256"] == hashlib.sha256(onnx).hexdigest()
    wire = [decode(encode("ModelRelease", r), "ModelRelease").record for r in records]
    rnd.shuffle(wire)
    assert assemble_release(wire) == onnx


def _ten_bytes_in_three(sha256: str | None = None) -> list[Any]:
    return list(
        release_chunks(
            model_id="m",
            version=3,
            onnx=b"abcdefghij",
            lineage=LINEAGE,
            created_at=0,
            max_chunk_bytes=4,
            sha256=sha256,
        )
    )


def test_release_chunks_carry_the_digest_their_caller_computed() -> None:
    digest = hashlib.sha256(b"abcdefghij").hexdigest()
    records = _ten_bytes_in_three(digest)
    assert [r["sha256"] for r in records] == [digest] * 3
    assert assemble_release(records) == b"abcdefghij"


def test_release_assembly_errors() -> None:
    records = _ten_bytes_in_three()
    assert len(records) == 3
    with pytest.raises(ReleaseError, match="no chunks"):
        assemble_release([])
    with pytest.raises(ReleaseError, match=r"have chunks \[0, 2\] of 3"):
        assemble_release([records[0], records[2]])
    with pytest.raises(ReleaseError, match="duplicate"):
        assemble_release([records[0], records[0], records[1]])
    with pytest.raises(ReleaseError, match="different releases"):
        assemble_release([records[0], records[1], {**records[2], "version": 4}])
    with pytest.raises(ReleaseError, match="SHA-256"):
        assemble_release([records[0], {**records[1], "onnx": b"XXXX"}, records[2]])
    with pytest.raises(ReleaseError, match="reassembled 9 bytes"):
        assemble_release([records[0], {**records[1], "onnx": b"efg"}, records[2]])
    with pytest.raises(EncodeError):
        release_chunks(
            model_id="m", version=0, onnx=b"", lineage=LINEAGE, created_at=0, max_chunk_bytes=0
        )
