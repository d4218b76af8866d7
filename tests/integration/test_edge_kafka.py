"""The edge SDK against the real broker: updates out, releases in, errors where they belong.

Releases here are written directly by a test transactional producer, the way the job's
EXACTLY_ONCE sink writes them (chunks of one version in one transaction, signed with the
test's job key), so the reader's behaviour is pinned down without the job: newest-first
look-back across chunks and other models' records, aborted transactions invisible, digest
failures refused.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer

from fedstream.edge import (
    DigestMismatchError,
    EdgeClient,
    EdgeConfig,
    PayloadTooLargeError,
    ReleaseReader,
    TopicNotFoundError,
    UnknownModelError,
    make_update_id,
    registration_record,
)
from fedstream.schemas import ModelRelease, decode, encode, release_chunks, unpack
from fedstream.schemas.signing import (
    ReleaseSigner,
    TrustedKeys,
    load_signing_key,
    statement_of,
    write_key_pair,
)
from tests.support.stack import Broker
from tests.unit.edge.edge_support import constant_model, lineage

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def job_key(tmp_path_factory: pytest.TempPathFactory) -> ReleaseSigner:
    """The release key the test's writer signs with, as the job would."""
    private, _public, _ = write_key_pair(tmp_path_factory.mktemp("job-key"))
    return load_signing_key(private)


@pytest.fixture
def config(
    kafka_broker: Broker, topic_factory: Callable[..., str], job_key: ReleaseSigner
) -> EdgeConfig:
    return EdgeConfig(
        trusted_keys=TrustedKeys([job_key.key.public_key()]),
        bootstrap=kafka_broker.bootstrap,
        security=kafka_broker.security,
        updates_topic=topic_factory("updates", partitions=2),
        control_topic=topic_factory("control"),
        models_topic=topic_factory("models"),
        dlq_topic=topic_factory("dlq"),
        connect_timeout_s=10,
        send_timeout_s=20,
    )


def read_values(config: EdgeConfig, topic: str) -> list[tuple[bytes | None, bytes]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=config.bootstrap,
        **config.security.kafka_python_kwargs(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        consumer_timeout_ms=3000,
    )
    try:
        return [(m.key, m.value) for m in consumer]
    finally:
        consumer.close()


def test_update_round_trip(config: EdgeConfig, tmp_path: Path) -> None:
    delta = np.random.default_rng(0).normal(scale=0.01, size=500).astype(np.float32)
    with EdgeClient(
        config,
        device_id="dev-1",
        model_id="digits",
        compression="int8",
        state_path=tmp_path / "rounds.json",
    ) as client:
        first = client.send_update(
            delta,
            base_version=4,
            num_samples=32,
            metrics={"loss": 0.5, "steps": 3, "duration_ms": 12},
        )
        second = client.send_update(delta, base_version=4, num_samples=32)
    assert first.update_id == make_update_id("dev-1", "digits", 4, 0)
    assert second.update_id == make_update_id("dev-1", "digits", 4, 1)  # same base, next round
    assert (first.round_index, second.round_index) == (0, 1)
    assert first.encoding == "INT8" and first.delivery.topic == config.updates_topic
    records = read_values(config, config.updates_topic)
    assert len(records) == 2
    by_id = {}
    for key, value in records:
        assert key == b"digits"  # keyed by model: one partition and one keyed state per model
        record = decode(value, expected="GradientUpdate").record
        by_id[record["update_id"]] = record
    got = by_id[first.update_id]
    assert (got["device_id"], got["base_version"], got["num_samples"]) == ("dev-1", 4, 32)
    # the sequence is the round of the update id: a re-send after a crash repeats both
    assert [by_id[s.update_id]["sequence"] for s in (first, second)] == [0, 1]
    assert got["metrics"] == {"loss": 0.5, "steps": 3, "duration_ms": 12}
    decoded = unpack(got["delta"], expected_shape=[500])
    assert np.abs(decoded - delta).max() <= np.abs(delta).max() / 254 + 1e-9
    # error feedback: the second update carried what the first could not
    second_delta = unpack(by_id[second.update_id]["delta"], expected_shape=[500])
    np.testing.assert_allclose(decoded + second_delta, 2 * delta, atol=np.abs(delta).max() / 200)
    # after a restart the counter goes on from where it was: no id is reused
    restarted = EdgeClient(
        config, device_id="dev-1", model_id="digits", state_path=tmp_path / "rounds.json"
    )
    assert restarted.rounds.current("digits") == 2


def test_only_a_persisted_round_counter_is_sent_as_sequence(config: EdgeConfig) -> None:
    """A counter that restarts at 0 would repeat sequences the job has absorbed (and get
    the device's updates refused as DUPLICATE), so a client without `state_path` sends
    none unless told its counter outlives the model's updates (the simulator)."""
    delta = np.zeros(4, np.float32)
    with EdgeClient(config, device_id="mem", model_id="seq-model") as volatile:
        first = volatile.send_update(delta, base_version=0, num_samples=1)
    with EdgeClient(config, device_id="sim", model_id="seq-model", sequenced=True) as simulated:
        second = simulated.send_update(delta, base_version=0, num_samples=1)
    records = [
        decode(v, expected="GradientUpdate").record
        for k, v in read_values(config, config.updates_topic)
        if k == b"seq-model"
    ]
    sequences = {r["update_id"]: r["sequence"] for r in records}
    assert sequences == {first.update_id: None, second.update_id: 0}


def test_registration_goes_to_the_control_topic(config: EdgeConfig) -> None:
    record = registration_record(
        "digits", constant_model(0.0, 8), [("c", np.zeros(8, np.float32))], {"window": {"count": 3}}
    )
    with EdgeClient(config, device_id="owner", model_id="digits") as client:
        client.register(record)
        with pytest.raises(ValueError, match="registration is for"):
            client.register({**record, "model_id": "other"})
    ((key, value),) = read_values(config, config.control_topic)
    assert key == b"digits"
    got = decode(value, expected="ModelRegistration").record
    assert got["aggregation"]["window"]["count"] == 3


def test_payload_over_the_topic_limit(
    kafka_broker: Broker, topic_factory: Callable[..., str], config: EdgeConfig
) -> None:
    small = EdgeConfig(
        bootstrap=kafka_broker.bootstrap,
        security=kafka_broker.security,
        updates_topic=topic_factory("small", max_bytes=20_000),
        models_topic=config.models_topic,
    )
    delta = np.ones(10_000, np.float32)  # 40 KB as FP32
    with EdgeClient(small, device_id="d", model_id="m", compression="fp16") as client:
        with pytest.raises(PayloadTooLargeError, match=r"max\.message\.bytes 20000") as caught:
            client.send_update(delta, base_version=0, num_samples=1)
        assert caught.value.size > caught.value.limit
        assert client.rounds.current("m") == 0 and client.compressor.residual is None
    with EdgeClient(small, device_id="d", model_id="m", compression="topk", topk_fraction=0.1) as c:
        sent = c.send_update(delta, base_version=0, num_samples=1)  # 8 KB: fits
        assert sent.size < 20_000
    assert len(read_values(small, small.updates_topic)) == 1  # only the one that fit


def test_missing_topics_are_named(config: EdgeConfig) -> None:
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    with (
        EdgeClient(replace(config, updates_topic=ghost), device_id="d", model_id="m") as client,
        pytest.raises(TopicNotFoundError, match=ghost),
    ):
        client.send_update(np.zeros(2), base_version=0, num_samples=1)
    with pytest.raises(TopicNotFoundError, match=ghost):
        ReleaseReader(replace(config, models_topic=ghost), "m")


def test_unknown_model_times_out_clearly(config: EdgeConfig) -> None:
    started = time.monotonic()
    with (
        EdgeClient(config, device_id="d", model_id="never-registered") as client,
        pytest.raises(UnknownModelError, match="never-registered"),
    ):
        client.wait_for_model(timeout_s=2)
    assert time.monotonic() - started < 15


# ---------------------------------------------------------------- releases


class ReleaseWriter:
    """Writes releases like the job's sink: all chunks of a version in one transaction."""

    def __init__(self, config: EdgeConfig, topic: str, signer: ReleaseSigner) -> None:
        self.topic = topic
        self.signer = signer
        self.producer = KafkaProducer(
            bootstrap_servers=config.bootstrap,
            **config.security.kafka_python_kwargs(),
            transactional_id=f"edge-test-{uuid.uuid4().hex}",
            max_request_size=4 * 1024 * 1024,
        )
        self.producer.init_transactions()

    def chunks(self, model_id: str, version: int, chunk: int = 200) -> list[ModelRelease]:
        records = release_chunks(
            model_id=model_id,
            version=version,
            onnx=constant_model(float(version), 64),
            lineage=lineage(version - 1 if version else None, (f"u-{version}",)),
            created_at=int(time.time() * 1000),
            max_chunk_bytes=chunk,
        )
        signature = self.signer.sign(statement_of(records[0]))
        return [{**r, "signature": signature, "key_id": self.signer.key_id} for r in records]

    def write(self, records: list[ModelRelease], *, abort: bool = False) -> None:
        self.producer.begin_transaction()
        for record in records:
            self.producer.send(self.topic, encode("ModelRelease", record))
        self.producer.flush()
        if abort:
            self.producer.abort_transaction()
        else:
            self.producer.commit_transaction()

    def release(self, model_id: str, version: int, *, chunk: int = 200, abort: bool = False) -> int:
        records = self.chunks(model_id, version, chunk)
        self.write(records, abort=abort)
        return len(records)


@pytest.fixture
def writer(config: EdgeConfig, job_key: ReleaseSigner) -> Iterator[ReleaseWriter]:
    w = ReleaseWriter(config, config.models_topic, job_key)
    yield w
    w.producer.close()


def test_device_that_was_away_gets_the_newest_release(
    config: EdgeConfig, writer: ReleaseWriter
) -> None:
    for version in range(6):
        assert writer.release("A", version) > 1  # every release is chunked
        writer.release("B", version)  # another model's releases in between
    writer.release("A", 6, abort=True)  # a crashed job's release: never visible
    for version in range(6, 40):
        writer.release("B", version)  # a lot of other traffic after A's newest
    # A's newest in > 64 chunks, so the first look-back window starts in its middle
    assert writer.release("A", 7, chunk=8) > 64

    with EdgeClient(config, device_id="late", model_id="A") as client:
        release = client.wait_for_model(timeout_s=20)
        assert release.version == 7 and release.chunk_count > 64
        release.verify()
        prediction = client.infer(np.zeros((1, 64), np.float32))
        assert prediction.version == 7 and np.all(prediction.outputs[0] == 7.0)
        assert client.refresh(timeout_s=1) is None  # nothing newer; nothing older handed out

        writer.release("A", 8)
        writer.release("A", 9, abort=True)
        newer = client.refresh(timeout_s=10)
        assert newer is not None and newer.version == 8 and client.runtime.version == 8
        assert client.refresh(timeout_s=1) is None

        bad = writer.chunks("A", 10)
        bad[0] = {**bad[0], "onnx": bytes(len(bad[0]["onnx"]))}  # corrupted chunk
        writer.write(bad)
        with pytest.raises(DigestMismatchError, match="v10"):
            for _ in range(10):
                client.refresh(timeout_s=1)
        assert client.runtime.version == 8  # the corrupted one was never installed
        writer.release("A", 11)
        deadline = time.monotonic() + 10
        while client.runtime.version != 11 and time.monotonic() < deadline:
            client.refresh(timeout_s=1)
        assert client.runtime.version == 11

        client.disconnect()  # offline, then back: looks back again, never goes backwards
        assert client.wait_for_model(timeout_s=10).version == 11

    # an auditor (the simulator's evaluator) reads every committed version, in order
    seen: list[int] = []
    with ReleaseReader(config, "A", from_beginning=True) as reader:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not seen or seen[-1] < 11):
            try:
                seen += [r.version for r in reader.fetch(1.0)]
            except DigestMismatchError:
                seen.append(-10)
    assert seen == [0, 1, 2, 3, 4, 5, 7, 8, -10, 11]
