"""The real job on the real broker: every accepted update counted exactly once.

Devices produce GradientUpdates (kafka-python, idempotent producer) while the job runs in a
local mini-cluster with EXACTLY_ONCE checkpoints and transactional sinks. The tests read
`fl.models` as devices do (read_committed) and prove from the lineage alone:
- versions 0..M are contiguous, none missing, none twice;
- every accepted update_id appears in exactly one release (devices 0 and 1 number their
  updates with `sequence`, as the SDK does; device 2 is an older SDK without one, so both
  dedupe paths are exercised; a crashed device's re-send is refused as DUPLICATE);
- the parameters of every release equal an offline replay of its lineage through the core;
- and the same holds after the job is SIGKILLed mid-stream and resumed from its latest
  checkpoint (nothing lost, nothing counted twice, no torn or duplicate version visible),
  also with the model scaled out over two shards (`runtime.model_shards`), whose
  checkpoint then refuses to restore into a job with another number of shards.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyflink
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from fedstream.jobs.config import load
from fedstream.jobs.jvm_scratch import folder_of
from fedstream.jobs.launcher import JobProcess
from fedstream.jobs.registration import registration_bytes
from fedstream.jobs.topics import ensure_topics
from fedstream.pipelines.aggregator import Aggregator
from fedstream.pipelines.config import AggregationConfig
from fedstream.pipelines.model_state import ModelState
from fedstream.pipelines.onnx_release import read_initializers
from fedstream.pipelines.update import ClientUpdate
from fedstream.schemas import ParameterLayout, pack, registration_key
from tests.support.devices import register_devices, signed_bytes
from tests.support.job_runner import JobTopics, job_process
from tests.support.kafka_io import Release, dead_letters, releases, wait_for
from tests.support.onnx_models import linear_model
from tests.support.owner_key import owner_signer
from tests.support.secrets import files_containing
from tests.support.stack import Broker

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]

MODEL = "digits-linear"
WINDOW = 4
AGGREGATION = {"window": {"count": WINDOW, "seconds": None}, "weight_by_samples": True}
# A sharded count window may close with more than K updates (a partial is never split), so
# the time bound closes what is left at the end.
# K = 14 over 2 shards (all 3 devices hash to shard 0): a shard sends its partial on at 7
# updates or 30 s after its first (longer than the crash takes to come), so the checkpoints
# before the crash hold an open partial (5 of the 12 sequenced updates among the first 23,
# 6 of the 20 among the first 35), written to state at the barrier, not per update
SHARDED_AGGREGATION = {"window": {"count": 14, "seconds": 30.0}, "weight_by_samples": True}
SHARDED = {
    "runtime.model_shards": "2",
    "runtime.parallelism": "2",
    "runtime.shard_flush_ms": "30000",
}
LEGACY_DEVICE = 2  # device-2 sends no sequence (an SDK from before schema v4)


@dataclass(frozen=True)
class SentUpdate:
    update_id: str
    device_id: str
    sequence: int | None  # None: a device with an SDK older than sequences
    base_version: int
    num_samples: int
    delta: npt.NDArray[np.float32]


class Fleet:
    """A few devices producing updates with an idempotent producer, remembering what they sent."""

    def __init__(
        self,
        broker: Broker,
        topics: JobTopics,
        onnx: bytes,
        seed: int = 7,
        aggregation: dict[str, object] | None = None,
    ) -> None:
        self.broker = broker
        self.aggregation = aggregation or AGGREGATION
        self.topics = topics
        self.onnx = onnx
        names = ["W", "b"]
        arrays = read_initializers(onnx, names)
        self.layout = ParameterLayout([(n, arrays[n].shape) for n in names])
        self.initial = self.layout.flatten(arrays)
        self.rng = np.random.default_rng(seed)
        self.sent: dict[str, SentUpdate] = {}
        self.sequences: dict[str, int] = {}  # per device: its next sequence
        self.producer = KafkaProducer(
            **broker.client_kwargs(),
            acks="all",
            enable_idempotence=True,
            max_request_size=16 * 1024 * 1024,
        )

    def register(self, job: JobProcess, timeout: float = 120) -> None:
        """Register, then wait for version 0 as a device would before training on it."""
        value = registration_bytes(MODEL, self.onnx, ["W", "b"], self.aggregation, owner_signer())
        self.producer.send(self.topics.control, value, key=registration_key(MODEL)).get(timeout=30)
        register_devices(self.broker, self.topics.devices, [f"device-{i}" for i in range(3)])
        wait_for(
            lambda: bool(releases(self.broker, self.topics.models)),
            timeout,
            "version 0",
            job.log_tail,
        )

    def send(self, count: int, base_version: int) -> list[str]:
        ids = []
        for _ in range(count):
            index = int(self.rng.integers(3))
            device = f"device-{index}"
            sequence = None if index == LEGACY_DEVICE else self.sequences.get(device, 0)
            if sequence is not None:
                self.sequences[device] = sequence + 1
            update = SentUpdate(
                update_id=f"{device}-{len(self.sent)}",
                device_id=device,
                sequence=sequence,
                base_version=base_version,
                num_samples=int(self.rng.integers(1, 50)),
                delta=self.rng.normal(scale=0.1, size=self.layout.size).astype(np.float32),
            )
            self.sent[update.update_id] = update
            self.resend(update.update_id)
            ids.append(update.update_id)
        self.producer.flush()
        return ids

    def resend(self, update_id: str) -> None:
        """(Re-)send an update as its device does: same id, device and sequence, signed."""
        update = self.sent[update_id]
        record = {
            "update_id": update.update_id,
            "device_id": update.device_id,
            "model_id": MODEL,
            "base_version": update.base_version,
            "num_samples": update.num_samples,
            "created_at": int(time.time() * 1000),
            "delta": pack(update.delta, "FP32"),
            "metrics": None,
            "sequence": update.sequence,
            "key_id": None,
            "signature": None,
        }
        self.producer.send(self.topics.updates, signed_bytes(record))

    def close(self) -> None:
        self.producer.close()


def replay(fleet: Fleet, found: list[Release]) -> list[npt.NDArray[np.float32]]:
    """Offline replay of the lineage through the core: the params each version must have."""
    aggregator = Aggregator(
        AggregationConfig.from_dict(fleet.aggregation), ModelState(fleet.initial.copy(), 0)
    )
    expected = [fleet.initial.copy()]
    for release in found[1:]:
        for update_id in release.lineage["update_ids"]:
            sent = fleet.sent[update_id]
            update = ClientUpdate(update_id, sent.base_version, sent.num_samples, sent.delta)
            assert aggregator.try_add(update, 0.0) is None
        expected.append(aggregator.close().state.params.copy())
    return expected


def check_invariants(fleet: Fleet, found: list[Release], accepted: set[str]) -> None:
    versions = [r.version for r in found]
    assert versions == list(range(len(found))), f"versions not contiguous: {versions}"
    absorbed = Counter(u for r in found for u in r.lineage["update_ids"])
    twice = [u for u, n in absorbed.items() if n > 1]
    assert not twice, f"updates counted twice: {twice}"
    missing, unexpected = accepted - set(absorbed), set(absorbed) - accepted
    assert not missing and not unexpected, f"missing {sorted(missing)}, unexpected {unexpected}"
    for release, params in zip(found, replay(fleet, found), strict=True):
        got = fleet.layout.flatten(read_initializers(release.onnx, fleet.layout.names))
        np.testing.assert_allclose(
            got,
            params,
            rtol=1e-5,
            atol=1e-6,
            err_msg=f"version {release.version} differs from replay",
        )


Env = tuple[JobProcess, Fleet, JobTopics]


def _env(broker: Broker, tmp_path: Path, sharded: bool) -> Iterator[Env]:
    topics = JobTopics()
    ensure_topics(load(overrides={**topics.overrides(), **broker.job_overrides()}))
    settings = SHARDED if sharded else {}
    job = job_process(broker, tmp_path / "checkpoints", topics, tmp_path / "job.log", **settings)
    aggregation = SHARDED_AGGREGATION if sharded else AGGREGATION
    fleet = Fleet(broker, topics, linear_model(inputs=8, outputs=4), aggregation=aggregation)
    try:
        yield job, fleet, topics
    finally:
        job.kill()
        fleet.close()


@pytest.fixture
def job_env(kafka_broker: Broker, tmp_path: Path) -> Iterator[Env]:
    yield from _env(kafka_broker, tmp_path, sharded=False)


@pytest.fixture
def sharded_env(kafka_broker: Broker, tmp_path: Path) -> Iterator[Env]:
    yield from _env(kafka_broker, tmp_path, sharded=True)


def _wait_absorbed(
    broker: Broker, topics: JobTopics, job: JobProcess, count: int, timeout: float = 150
) -> list[Release]:
    found: list[Release] = []

    def done() -> bool:
        nonlocal found
        if not job.alive():
            raise AssertionError(f"the job died:\n{job.log_tail()}")
        found = releases(broker, topics.models)
        return sum(int(r.lineage["num_updates"]) for r in found) >= count

    wait_for(done, timeout, f"{count} absorbed updates", job.log_tail)
    return found


def test_every_update_counted_exactly_once_and_params_match_replay(
    kafka_broker: Broker, job_env: tuple[JobProcess, Fleet, JobTopics]
) -> None:
    job, fleet, topics = job_env
    job.start()
    fleet.register(job)
    accepted: set[str] = set()
    base = 0
    for _ in range(4):  # devices train from whatever release they last saw
        accepted |= set(fleet.send(10, base))
        time.sleep(2)
        base = max((r.version for r in releases(kafka_broker, topics.models)), default=0)
    # a device that crashed after sending re-sends: absorbed once, the copy is dead-lettered
    resent = [sorted(u for u in accepted if u.startswith(f"device-{d}-"))[0] for d in range(3)]
    for update_id in resent:  # by sequence (devices 0, 1) and by update id (device 2)
        fleet.resend(update_id)
    fleet.producer.send(topics.updates, b"not avro at all")
    fleet.producer.flush()
    found = _wait_absorbed(kafka_broker, topics, job, len(accepted))
    check_invariants(fleet, found, accepted)
    assert len(found) == 1 + len(accepted) // WINDOW

    letters: list[dict[str, object]] = []

    def four_letters() -> bool:
        nonlocal letters
        letters = dead_letters(kafka_broker, topics.dlq)
        return len(letters) >= 4

    wait_for(four_letters, 60, "4 dead letters", job.log_tail)
    reasons = Counter(str(d["reason"]) for d in letters)
    assert reasons == {"DUPLICATE": 3, "UNDECODABLE": 1}
    garbage = next(d for d in letters if d["reason"] == "UNDECODABLE")
    assert garbage["original"] == b"not avro at all"
    assert garbage["source_topic"] == topics.updates and int(str(garbage["source_offset"])) >= 0
    # the job logged in as admin, yet neither its output nor Flink's logs hold the password
    password = (kafka_broker.credentials / "admin.password").read_text().strip()
    assert password not in job.log.read_text()
    assert files_containing(Path(pyflink.__file__).parent / "log", password) == []


def test_sigkill_mid_stream_then_resume_loses_and_doubles_nothing(
    kafka_broker: Broker, job_env: Env
) -> None:
    _kill_and_resume(kafka_broker, job_env)


def test_sharded_model_sigkill_resume_exactly_once_and_no_restore_with_other_shards(
    kafka_broker: Broker, sharded_env: Env, tmp_path: Path
) -> None:
    """Two shards at parallelism 2: the shards' open partials and sequence windows and the
    model key's window are all in the checkpoint the resumed job restores (an open partial
    of 5 or 6 updates, `SHARDED_AGGREGATION`). Device 2 has no sequences, so
    its updates are forwarded to the model key: both paths cross the kill."""
    job, _, topics = sharded_env
    _kill_and_resume(kafka_broker, sharded_env)
    job.kill()
    published = len(releases(kafka_broker, topics.models))
    three = job_process(
        kafka_broker,
        tmp_path / "checkpoints",
        topics,
        tmp_path / "job-3-shards.log",
        **{**SHARDED, "runtime.model_shards": "3"},
    )
    three.start()  # devices would move between shards and lose their dedupe windows
    wait_for(lambda: not three.alive(), 180, "the 3-shard job to stop", three.log_tail)
    log = three.log.read_text(errors="replace")
    assert "resuming from" in log and "Cannot map checkpoint/savepoint state" in log, log[-3000:]
    assert len(releases(kafka_broker, topics.models)) == published  # it released nothing


def _checkpointed(broker: Broker, topic: str, group: str) -> bool:
    """True when `group` has committed every partition of `topic` to its end."""
    consumer = KafkaConsumer(**broker.client_kwargs(), group_id=group, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        ends = consumer.end_offsets(partitions)
        return all((consumer.committed(tp) or 0) >= end for tp, end in ends.items())
    finally:
        consumer.close()


def _kill_and_resume(kafka_broker: Broker, env: Env) -> None:
    """23 updates, all in a checkpoint before the crash (the source commits its offsets
    only when one completes): 5 windows of 4 closed and 3 updates in the open window, which
    the aggregate writes to state when the barrier comes, not per update
    (`fedstream.pipelines.deferred_windows`); had it not, the resumed job would lose them
    (their ids are in the same checkpoint's dedupe state, so not even a re-send counts).
    Then more updates and a SIGKILL while they arrive."""
    job, fleet, topics = env
    job.start()
    fleet.register(job)
    accepted = set(fleet.send(23, 0))
    group = topics.overrides()["kafka.group_id"]
    wait_for(
        lambda: _checkpointed(kafka_broker, topics.updates, group),
        150,
        "a checkpoint holding the first 23 updates",
        job.log_tail,
    )
    # Crash while updates are still arriving: some are consumed but not yet checkpointed,
    # and the sink has an open transaction with releases no consumer may ever see.
    accepted |= set(fleet.send(12, 0))
    killed = folder_of(job.pid or 0)
    job.kill()
    # the killed JVM's scratch folder, with the planner it unpacked, outlives it...
    assert list(killed.glob("flink-table-planner_*.jar")), f"no planner jar in {killed}"
    accepted |= set(fleet.send(13, 0))  # produced while the job is down; 60 in all
    job.start()  # resumes the newest checkpoint by default
    accepted |= set(fleet.send(12, 0))
    found = _wait_absorbed(kafka_broker, topics, job, len(accepted), timeout=200)
    check_invariants(fleet, found, accepted)
    assert not killed.exists(), "the next start did not sweep what the killed job left"
    second_start = job.log.read_text().split("==== start")[-1]
    assert "resuming from" in second_start and "nothing (no checkpoint yet)" not in second_start
