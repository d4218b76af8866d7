"""Avro records through the real broker: what devices and the job put on the wire.

Every record type goes out with kafka-python and comes back byte-for-byte decodable; the
codec's error cases are exercised on bytes that really travelled through Kafka.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from kafka import KafkaConsumer, KafkaProducer

from fedstream.schemas import (
    BadShapeError,
    CodecError,
    DeadLetterReason,
    TruncatedError,
    UndecodableError,
    UnknownSchemaError,
    decode,
    encode,
    make_dead_letter,
    pack,
    release_chunks,
    unpack,
)
from tests.support.stack import Broker

pytestmark = pytest.mark.kafka


def _roundtrip(broker: Broker, topic: str, values: list[bytes]) -> list[bytes]:
    producer = KafkaProducer(**broker.client_kwargs(), acks="all", max_request_size=8 * 1024 * 1024)
    for value in values:
        producer.send(topic, value)
    producer.close()
    consumer = KafkaConsumer(
        topic,
        **broker.client_kwargs(),
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        consumer_timeout_ms=5000,
    )
    received = [m.value for m in consumer]
    consumer.close()
    return received


def _update(
    encoding: str, delta: npt.NDArray[np.float32], k: int | None = None
) -> dict[str, object]:
    return {
        "update_id": f"dev-1/{encoding}",
        "device_id": "dev-1",
        "model_id": "m",
        "base_version": 3,
        "num_samples": 32,
        "created_at": 1_700_000_000_000,
        "delta": pack(delta, encoding, k=k),
        "metrics": {"loss": 0.25, "steps": 10, "duration_ms": 1200},
        "sequence": None,
        "key_id": None,
        "signature": None,
    }


def test_every_record_type_survives_the_broker(kafka_broker: Broker, topic: str) -> None:
    rng = np.random.default_rng(1)
    delta = rng.normal(size=100_000).astype(np.float32)  # a 400 KB FP32 update
    updates = [
        _update("FP32", delta),
        _update("FP16", delta),
        _update("INT8", delta),
        _update("TOPK", delta, k=1000),
    ]
    lineage = {
        "parent_version": 2,
        "update_ids": ["a", "b"],
        "device_ids": ["d1", "d2"],
        "num_updates": 2,
        "num_samples": 64,
        "staleness_min": 0,
        "staleness_max": 1,
        "staleness_mean": 0.5,
        "total_weight": 1.7,
    }
    release = release_chunks(
        model_id="m",
        version=3,
        onnx=b"\x08\x07" * 1000,
        lineage=lineage,  # type: ignore[arg-type]
        created_at=1,
        max_chunk_bytes=1 << 20,
    )[0]
    letter = make_dead_letter(
        b"junk",
        source_topic="fl.updates",
        source_partition=1,
        source_offset=42,
        error="STALE",
        detail="staleness 9 > 8",
        created_at=1,
    )
    sent = [encode("GradientUpdate", u) for u in updates]
    sent += [encode("ModelRelease", release), encode("DeadLetter", letter)]
    received = _roundtrip(kafka_broker, topic, sent)
    assert received == sent
    for value, original in zip(received[:4], updates, strict=True):
        record = decode(value, expected="GradientUpdate").record
        assert {k: v for k, v in record.items() if k != "delta"} == {
            k: v for k, v in original.items() if k != "delta"
        }
        restored = unpack(record["delta"], expected_shape=[100_000])
        encoding = record["delta"]["encoding"]
        tolerance = {"FP32": 0, "FP16": 2e-3, "INT8": 0.05, "TOPK": None}[encoding]
        if tolerance is None:
            kept = np.argsort(-np.abs(delta))[:1000]
            np.testing.assert_array_equal(restored[kept], delta[kept])
            assert np.count_nonzero(restored) == 1000
        else:
            np.testing.assert_allclose(restored, delta, atol=tolerance, rtol=1e-3)
    assert decode(received[4], expected="ModelRelease").record == release
    assert decode(received[5], expected="DeadLetter").record == letter


def test_codec_errors_on_bytes_from_the_broker(kafka_broker: Broker, topic: str) -> None:
    good = encode("GradientUpdate", _update("FP32", np.ones(10, np.float32)))
    unknown = b"\xc3\x01" + b"\x00" * 8 + good[10:]
    sent = [b"\x00garbage, not avro", good[: len(good) // 2], unknown, good]
    received = _roundtrip(kafka_broker, topic, sent)

    with pytest.raises(UndecodableError) as garbage:
        decode(received[0])
    assert garbage.value.reason is DeadLetterReason.UNDECODABLE
    with pytest.raises(TruncatedError):
        decode(received[1])
    with pytest.raises(UnknownSchemaError) as fingerprint:
        decode(received[2])
    assert fingerprint.value.reason is DeadLetterReason.UNKNOWN_SCHEMA
    record = decode(received[3], expected="GradientUpdate").record
    with pytest.raises(BadShapeError) as shape:
        unpack(record["delta"], expected_shape=[11])
    assert shape.value.reason is DeadLetterReason.BAD_SHAPE
    # every failure is a CodecError: a caller needs one except clause, never a crash
    assert all(
        issubclass(e, CodecError) for e in (UndecodableError, UnknownSchemaError, BadShapeError)
    )
