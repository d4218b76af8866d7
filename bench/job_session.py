"""One running fedstream job under measurement: start it, feed it updates, time its releases.

The job runs in a local mini-cluster (`JobProcess`, its own process group) on the
benchmark's broker, with its own topics, checkpoints and signing keys. A release counts
when a read_committed consumer sees it (`ReleaseWatcher`): that is when devices can have
it. Two ways to feed it:

* `backlog`: n updates in one transaction, committed at once: the job finds them all
  waiting, and the producer's CPU is spent before the clock starts (throughput, CPU);
* `paced`: updates sent one by one at a given rate while the job runs (latency).

CPU is the job's process group, per thread group, from /proc (`job_profile.ThreadCpu`).
A local job logs to `<its folder>/flink-log`, where `bench.checkpoint_log` reads the
checkpoints that completed during a burst: the wait a release has for one is most of its
latency.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from kafka import KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import CoordinatorNotAvailableError

from bench.bench_fleet import BenchFleet, bench_delta, record_values, registration_value
from bench.checkpoint_log import Checkpoint, completed_between
from bench.job_profile import ThreadCpu, group_rss_mb
from bench.kafka_stack import BenchKafka, signing_keys
from bench.plain_aggregator import MAX_BYTES, big_record_consumer
from fedstream.jobs.config import load
from fedstream.jobs.launcher import JobProcess
from fedstream.jobs.topics import ensure_topics
from fedstream.pipelines.profiling import ENV_VAR
from fedstream.schemas import decode, registration_key
from fedstream.schemas.signing import load_signing_key

__all__ = ["Burst", "JobSession", "ReleaseWatcher", "job_session"]

#: Thread groups of `ThreadCpu` that are the JVM's JIT compilers.
JIT_GROUP = "JVM JIT compilers"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass(frozen=True)
class Seen:
    """A release as the watcher saw it."""

    visible_at: float
    """perf_counter() when the watcher read it (read_committed: its checkpoint completed)"""
    update_ids: list[str]
    built_at: float
    """wall clock when the job built it (the release's created_at)"""


class ReleaseWatcher:
    """Reads every release of a models topic (read_committed) on a thread of its own."""

    def __init__(self, kafka: BenchKafka, topic: str) -> None:
        self._consumer = big_record_consumer(kafka, topic, isolation_level="read_committed")
        self._seen: dict[tuple[str, int], Seen] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="release-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=200).values():
                now = time.perf_counter()
                for message in records:
                    release = decode(message.value, expected="ModelRelease").record
                    ids = list(release["lineage"]["update_ids"])
                    seen = Seen(now, ids, release["created_at"] / 1000)
                    with self._lock:
                        self._seen.setdefault((release["model_id"], release["version"]), seen)
        self._consumer.close()

    def count(self) -> int:
        with self._lock:
            return len(self._seen)

    def newest_version(self, model_id: str) -> int:
        with self._lock:
            return max((v for (m, v) in self._seen if m == model_id), default=0)

    def holding(self, update_ids: set[str]) -> list[Seen]:
        """The releases that absorbed any of `update_ids`."""
        with self._lock:
            return [s for s in self._seen.values() if update_ids.intersection(s.update_ids)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@dataclass(frozen=True)
class Burst:
    """n updates through the job: from their commit (backlog) or first send (paced) until
    every full window of them was in a visible release."""

    updates: int
    visible_s: float
    """start -> the last release visible to read_committed consumers"""
    built_s: float
    """start -> the job built the last release (its created_at): without the wait for
    the checkpoint that makes it visible"""
    latencies_ms: list[float]
    """per absorbed update: sent (paced) or committed (backlog) -> its release visible"""
    cpu_s: dict[str, float]
    """the job's CPU seconds meanwhile, by thread group"""
    release_waits_ms: list[float] = field(default_factory=list)
    """per release: built (its created_at) -> visible, the wait for its checkpoint and commit"""
    to_built_ms: list[float] = field(default_factory=list)
    """per absorbed update: sent -> its release built (the window's fill, the job's queue)"""
    checkpoints: list[Checkpoint] = field(default_factory=list)
    """the job's checkpoints completed meanwhile (from its Flink log; none on a cluster)"""

    @property
    def job_cpu_s(self) -> float:
        return sum(self.cpu_s.values())

    @property
    def jit_cpu_s(self) -> float:
        return self.cpu_s.get(JIT_GROUP, 0.0)

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.visible_s

    @property
    def cpu_ms_per_update(self) -> float:
        return self.job_cpu_s * 1000 / self.updates


@dataclass
class JobSession:
    """A started job with its model registered (version 0 visible), ready for bursts."""

    kafka: BenchKafka
    job: JobProcess
    """the job: a local mini-cluster, or one submitted to a cluster (duck-typed:
    `bench.cluster_job.ClusterJob`)"""
    watcher: ReleaseWatcher
    producer: KafkaProducer
    backlog_producer: KafkaProducer
    """transactional: a backlog burst is committed at once"""
    admin: KafkaAdminClient
    """frees the updates a checkpoint holds before each burst (`delete_checkpointed`)"""
    fleet: BenchFleet
    topic: str
    model_id: str
    window: int
    delta: npt.NDArray[np.float32]
    work: Path
    checkpoints: Path
    """the job's checkpoint.dir"""
    bursts: int = 0
    #: the window's time bound (s): the updates left in an open count window are released
    #: by its timer, so every update of a burst is waited for; None: count only
    window_seconds: float | None = None
    #: where the job's Flink log is written (a local job's), for its checkpoints
    flink_log: Path | None = None
    #: the job's Kafka consumer group: its source commits offsets there with each checkpoint
    group_id: str = ""

    def _values(self, n: int) -> Iterator[tuple[str, list[bytes]]]:
        """(update_id, its Kafka values) of n fresh updates based on the newest version."""
        base, self.bursts = self.watcher.newest_version(self.model_id), self.bursts + 1
        for i in range(n):
            update_id = f"b{self.bursts}-{i}"
            yield update_id, self.fleet.records(self.model_id, update_id, i, base, self.delta)

    def _send(self, producer: KafkaProducer, values: list[bytes]) -> None:
        for value in values:
            producer.send(self.topic, value, key=self.model_id.encode(), partition=0)

    def backlog(self, n: int) -> Burst:
        """n updates committed in one transaction; timed from the commit."""
        delete_checkpointed(self.admin, self.topic, self.group_id)
        self.backlog_producer.begin_transaction()
        ids = []
        for update_id, value in self._values(n):
            ids.append(update_id)
            self._send(self.backlog_producer, value)
        self.backlog_producer.flush()
        before, start, wall = self.cpu(), time.perf_counter(), time.time()
        self.backlog_producer.commit_transaction()
        return self._measure(dict.fromkeys(ids, start), start, wall, before)

    def paced(self, n: int, rate: float) -> Burst:
        """n updates sent at `rate` per second (open loop); timed from the first send."""
        sent: dict[str, float] = {}
        delete_checkpointed(self.admin, self.topic, self.group_id)
        values = self._values(n)
        before, start, wall = self.cpu(), time.perf_counter(), time.time()
        for i, (update_id, value) in enumerate(values):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent[update_id] = time.perf_counter()
            self._send(self.producer, value)
        self.producer.flush()
        return self._measure(sent, start, wall, before)

    @property
    def pgid(self) -> int:
        assert self.job.pid is not None
        return self.job.pid

    def cpu(self) -> ThreadCpu:
        """CPU seconds by thread so far: the job's process group, or what a job on a
        cluster counts as its own (`bench.cluster_job.ClusterJob.cpu`)."""
        own = getattr(self.job, "cpu", None)
        return own() if own is not None else ThreadCpu.snapshot(self.pgid)

    def _measure(
        self, sent: dict[str, float], start: float, wall: float, before: ThreadCpu
    ) -> Burst:
        left_open = 0 if self.window_seconds else len(sent) % self.window
        releases = self._wait(set(sent), len(sent) - left_open)
        cpu = self.cpu().since(before)
        latencies = [
            (r.visible_at - sent[u]) * 1000 for r in releases for u in r.update_ids if u in sent
        ]
        visible = max(r.visible_at for r in releases) - start
        built = max(r.built_at for r in releases) - wall
        waits = [((r.visible_at - start) - (r.built_at - wall)) * 1000 for r in releases]
        to_built = [
            (r.built_at - wall + start - sent[u]) * 1000
            for r in releases
            for u in r.update_ids
            if u in sent
        ]
        taken = completed_between(self.flink_log, wall, wall + visible)
        return Burst(
            len(sent),
            visible,
            built,
            sorted(latencies),
            cpu,
            release_waits_ms=sorted(waits),
            to_built_ms=sorted(to_built),
            checkpoints=taken,
        )

    def _wait(self, update_ids: set[str], expected: int) -> list[Seen]:
        deadline = time.monotonic() + 900
        while True:
            releases = self.watcher.holding(update_ids)
            absorbed = sum(len(update_ids.intersection(r.update_ids)) for r in releases)
            if absorbed >= expected:
                return releases
            if time.monotonic() > deadline or not self.job.alive():
                raise RuntimeError(f"only {absorbed}/{expected} absorbed:\n{self.job.log_tail()}")
            time.sleep(0.05)

    def rss_mb(self) -> float:
        return group_rss_mb(self.pgid)

    def checkpoint_bytes(self) -> int:
        """Bytes of the newest checkpoint (hashmap backend: a full snapshot)."""
        checkpoints = sorted(self.checkpoints.glob("*/chk-*"), key=lambda p: p.stat().st_mtime)
        if not checkpoints:
            return 0
        return sum(f.stat().st_size for f in checkpoints[-1].rglob("*") if f.is_file())


def delete_checkpointed(admin: KafkaAdminClient, topic: str, group_id: str) -> int:
    """Delete the records of partition 0 of `topic` below the offset `group_id` committed
    (a Flink Kafka source commits with each completed checkpoint, so nothing the job could
    still need goes); the new start offset (0: nothing committed yet). A 60 s run writes
    10-16 GB of updates, and five rounds of them are more than a VM's disk holds; Kafka
    frees the segments below the start offset in the background."""
    partition = TopicPartition(topic, 0)
    try:
        committed = admin.list_group_offsets({group_id: [partition]}).get(group_id, {})
    except CoordinatorNotAvailableError:  # no group has committed on this broker yet
        return 0
    offset = committed[partition].offset if partition in committed else -1
    if offset > 0:
        admin.delete_records({partition: offset})
    return max(offset, 0)


def _overrides(
    kafka: BenchKafka, checkpoints: Path, suffix: str, keys: dict[str, str], extra: dict[str, str]
) -> dict[str, str]:
    return {
        **kafka.job_overrides(),
        **{
            f"topics.{t}": f"{t}-{suffix}"
            for t in ("updates", "control", "models", "dlq", "devices")
        },
        "topics.partitions": "2",
        "kafka.group_id": f"bench-{suffix}",
        "kafka.transactional_id_prefix": f"bench-{suffix}",
        "checkpoint.dir": checkpoints.as_uri(),
        "runtime.restart_attempts": "0",
        **keys,  # releases and registrations signed, as always
        **extra,
    }


def _start(overrides: dict[str, str], work: Path, profile_dir: Path | None) -> JobProcess:
    """A local mini-cluster whose Flink log goes to `work/flink-log` (`_flink_log`)."""
    job = JobProcess(overrides, work / "job.log")
    extra = {"FLINK_LOG_DIR": str(_flink_log(work))}
    if profile_dir is not None:
        extra[ENV_VAR] = str(profile_dir)
    with _environment(extra):  # the job's process copies os.environ as it starts
        job.start()
    return job


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set, restored afterwards."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _flink_log(work: Path) -> Path:
    return work / "flink-log"


def _register(session: JobSession, owner_key: Path, params: int) -> None:
    """The operator registers the devices, the owner the model; wait for version 0."""
    config = load(overrides=session.job.overrides)
    for device_id, value in session.fleet.device_keys():
        session.producer.send(config.topics.devices, value, key=device_id.encode())
    owner = load_signing_key(owner_key)
    value = registration_value(
        session.model_id, params, session.window, owner, seconds=session.window_seconds
    )
    for piece in record_values(value, session.model_id, owner.key_id, owner):
        session.producer.send(config.topics.control, piece, key=registration_key(session.model_id))
    session.producer.flush()
    deadline = time.monotonic() + 180
    while session.watcher.count() < 1:
        if time.monotonic() > deadline or not session.job.alive():
            raise RuntimeError(f"no version 0 release:\n{session.job.log_tail()}")
        time.sleep(0.2)


@contextmanager
def job_session(
    kafka: BenchKafka,
    params: int,
    window: int,
    extra: dict[str, str],
    profile_dir: Path | None = None,
    start: Callable[[dict[str, str], Path, Path | None], JobProcess] | None = None,
    window_seconds: float | None = None,
    checkpoint_root: Path | None = None,
) -> Iterator[JobSession]:
    """A job on `kafka` with one model of `params` parameters and count window `window`
    (also closed after `window_seconds` when given), config overrides `extra`; killed
    (with its JVM) on the way out, also on errors.
    `start(overrides, work folder, profile folder)` starts it (default: a local
    mini-cluster, `JobProcess`). Its checkpoints go to a folder of their own under
    `checkpoint_root` (another device than the broker's, as in production), or by
    default to its work folder, on the broker's disk."""
    suffix = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="fedstream-bench-job-"))
    checkpoints = (
        Path(tempfile.mkdtemp(prefix="fedstream-bench-checkpoints-", dir=checkpoint_root))
        if checkpoint_root
        else work / "checkpoints"
    )
    keys, owner_key = signing_keys(work)
    overrides = _overrides(kafka, checkpoints, suffix, keys, extra)
    config = load(overrides=overrides)
    ensure_topics(config)
    job = (start or _start)(overrides, work, profile_dir)
    client = {**kafka.client_kwargs(), "acks": "all", "max_request_size": MAX_BYTES}
    producer = KafkaProducer(**client, enable_idempotence=True)
    # a backlog of a 60 s run takes longer to produce than kafka-python's 60 s default
    backlog = KafkaProducer(
        **client, transactional_id=f"bench-backlog-{suffix}", transaction_timeout_ms=900_000
    )
    watcher = ReleaseWatcher(kafka, config.topics.models)
    admin = KafkaAdminClient(**kafka.client_kwargs())
    session = JobSession(
        kafka,
        job,
        watcher,
        producer,
        backlog,
        admin,
        # a job that takes unsigned updates (a legacy fleet's) is sent unsigned ones
        BenchFleet(signed=not config.trust.allow_unsigned_updates),
        config.topics.updates,
        "bench-model-0",
        window,
        bench_delta(params),
        work,
        checkpoints,
        window_seconds=window_seconds,
        flink_log=None if start else _flink_log(work),
        group_id=config.kafka.group_id,
    )
    try:
        backlog.init_transactions()
        _register(session, owner_key, params)
        yield session
    finally:
        watcher.close()
        job.kill()
        producer.close()
        backlog.close()
        admin.close()
        shutil.rmtree(checkpoints, ignore_errors=True)  # the job's log stays
