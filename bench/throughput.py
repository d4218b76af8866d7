"""Throughput and release latency of fedstream against its baselines, in one run, one broker.

For one update size (fp32 parameters), measured back to back on the same local broker:

1. raw Kafka, the broker's own perf tools (kafka-tools ProducerPerformance /
   ConsumerPerformance, acks=all) and a kafka-python producer/consumer pair: the ceiling;
2. a plain Python aggregator: one kafka-python process that consumes the updates, decodes
   them with our codec, keeps a numpy weighted sum and produces a model every K updates
   (what a user would write instead of fedstream: no checkpoints, no exactly-once);
3. fedstream: devices' updates -> broker -> the aggregation job (mini-cluster, EXACTLY_ONCE
   checkpoints, transactional sink) -> releases visible to a read_committed consumer.

The aggregators are timed draining a backlog: the plain aggregator consumes updates that
are already in the topic; fedstream's updates are produced in one transaction and
committed at once, so neither shares the CPU with its load generator (on 2 cores a
kafka-python producer takes about a third of the machine). fedstream's time runs from the
commit until the job has built the release holding the last update (its created_at): the
processing rate. Until that release is *visible* adds the wait for the next checkpoint
(up to one interval), which on a 2-second run is mostly noise; that rate is reported as
`until_visible_updates_per_s`. Release latency is measured separately,
open loop: updates produced as fast as kafka-python can while the job runs, each one's
time from produced to its release visible. Each job is warmed up first (half as many
updates), so the JIT's compile time is not measured.

Besides speed, each fedstream run reports CPU per update by thread of the job
(`job_profile.ThreadCpu`), its resident memory and checkpoint size per model; the
in-process row runs the job's Python logic without Flink (what the framework adds is the
difference); `--parallelism` compares 2 models at parallelism 1 and 2, and `--profile`
runs the job once more with its Python operators profiled: where an update's time goes.

    python -m bench.throughput --params 100000 --updates 600 --parallelism --profile
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from bench.job_profile import ThreadCpu, group_rss_mb, machine_busy_seconds, python_breakdown
from bench.kafka_stack import BenchKafka, broker, signing_keys
from bench.key_groups import subtask_of
from fedstream.jobs.config import load
from fedstream.jobs.launcher import JobProcess
from fedstream.jobs.registration import registration_bytes
from fedstream.jobs.topics import ensure_topics
from fedstream.pipelines.profiling import ENV_VAR
from fedstream.schemas import decode, pack, registration_key, unpack
from fedstream.schemas.signing import ReleaseSigner, load_signing_key

REPO = Path(__file__).resolve().parents[1]
MAX_BYTES = 16 * 1024 * 1024


@dataclass
class Result:
    system: str
    updates: int
    seconds: float
    payload_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.payload_bytes * self.updates / self.seconds / 1e6


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `finally` blocks stop the job and the broker
    (Ctrl-C already does: KeyboardInterrupt)."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_topic(kafka: BenchKafka, partitions: int = 1) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(**kafka.client_kwargs())
    config = {"max.message.bytes": str(MAX_BYTES)}
    admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config)])
    admin.close()
    return name


def big_record_consumer(kafka: BenchKafka, topic: str, **settings: Any) -> KafkaConsumer:
    """A consumer of partition 0 of `topic`, from the start, sized for multi-MB records."""
    consumer = KafkaConsumer(
        **kafka.client_kwargs(),
        auto_offset_reset="earliest",
        fetch_max_bytes=4 * MAX_BYTES,
        max_partition_fetch_bytes=2 * MAX_BYTES,
        **settings,
    )
    consumer.assign([TopicPartition(topic, 0)])
    return consumer


def kafka_tools(kafka: BenchKafka, size: int, count: int) -> list[Result]:
    """The broker's own perf tools: the ceiling for this record size on this machine.

    They log in as admin from 0600 properties files (--producer.config, --consumer.config):
    the JAAS line holds the password, which must not be a command-line argument."""
    topic = make_topic(kafka)
    classpath = f"{REPO}/infra/local/.lib/kafka/*"
    java = ["java", "-Xmx1g", "-cp", classpath]
    produced = subprocess.run(
        [
            *java,
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
            "--num-records",
            str(count),
            "--record-size",
            str(size),
            "--throughput",
            "-1",
            "--producer.config",
            str(kafka.java_config("producer.properties")),
            "--producer-props",
            f"bootstrap.servers={kafka.bootstrap}",
            "acks=all",
            f"max.request.size={MAX_BYTES}",
            f"buffer.memory={8 * MAX_BYTES}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    final = [line for line in produced.splitlines() if "records sent" in line][-1]
    per_s = float(re.search(r"([\d.]+) records/sec", final).group(1))  # type: ignore[union-attr]
    consumed = subprocess.run(
        [
            *java,
            "org.apache.kafka.tools.ConsumerPerformance",
            "--bootstrap-server",
            kafka.bootstrap,
            "--topic",
            topic,
            "--messages",
            str(count),
            "--timeout",
            "60000",
            "--consumer.config",
            str(kafka.java_config("consumer.properties")),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, ...
    row = consumed.strip().splitlines()[-1].split(",")
    consume_per_s = float(row[5])
    return [
        Result("kafka perf tools: produce", count, count / per_s, size),
        Result("kafka perf tools: consume", count, count / consume_per_s, size),
    ]


def kafka_python(kafka: BenchKafka, size: int, count: int) -> list[Result]:
    topic = make_topic(kafka)
    value = os.urandom(size)
    producer = KafkaProducer(
        **kafka.client_kwargs(),
        acks="all",
        max_request_size=MAX_BYTES,
    )
    start = time.perf_counter()
    for _ in range(count):
        producer.send(topic, value)
    producer.flush()
    produce_s = time.perf_counter() - start
    producer.close()
    consumer = big_record_consumer(kafka, topic, consumer_timeout_ms=10000)
    start, seen = time.perf_counter(), 0
    for _ in consumer:
        seen += 1
        if seen == count:
            break
    consume_s = time.perf_counter() - start
    consumer.close()
    return [
        Result("kafka-python: produce", count, produce_s, size),
        Result("kafka-python: consume", seen, consume_s, size),
    ]


def update_value(
    model_id: str, index: int, base: int, delta: npt.NDArray[np.float32], prefix: str = "bench"
) -> bytes:
    """A signed update of one of `DEVICES` bench devices (the job requires signatures)."""
    from tests.support.devices import signed_bytes

    return signed_bytes(
        {
            "update_id": f"{prefix}-{index}",
            "device_id": f"device-{index % DEVICES}",
            "model_id": model_id,
            "base_version": base,
            "num_samples": 10,
            "created_at": int(time.time() * 1000),
            "delta": pack(delta, "FP32"),
            "metrics": None,
            # each device counts its own updates, across bursts, as the SDK does
            "sequence": next(_SEQUENCES[f"device-{index % DEVICES}"]),
            "key_id": None,
            "signature": None,
        }
    )


#: How many devices the benchmark's updates come from (each registered, each signing).
DEVICES = 16
#: The next sequence number of each bench device (they only ever increase, like a device's
#: persisted round counter, so no burst repeats one the job has absorbed).
_SEQUENCES: defaultdict[str, itertools.count[int]] = defaultdict(itertools.count)


def device_keys() -> list[tuple[str, bytes]]:
    """(device_id, DeviceKey record) of every bench device, as the operator registers them."""
    from tests.support.devices import device_key_bytes

    return [(f"device-{i}", device_key_bytes(f"device-{i}")) for i in range(DEVICES)]


def plain_aggregator(kafka: BenchKafka, params: int, count: int, window: int) -> Result:
    """What a user would write instead: consume, decode, numpy sum, publish every K."""
    updates, models = make_topic(kafka), make_topic(kafka)
    delta = np.random.default_rng(0).normal(size=params).astype(np.float32)
    producer = KafkaProducer(
        **kafka.client_kwargs(),
        acks="all",
        max_request_size=MAX_BYTES,
    )
    for i in range(count):
        producer.send(updates, update_value("plain", i, 0, delta))
    producer.flush()
    consumer = big_record_consumer(kafka, updates, consumer_timeout_ms=10000)
    model = np.zeros(params, dtype=np.float32)
    total = np.zeros(params, dtype=np.float32)
    cpu = time.process_time()
    start, seen, buffered = time.perf_counter(), 0, 0
    for message in consumer:
        record = decode(message.value, expected="GradientUpdate").record
        total += unpack(record["delta"], expected_shape=[params], require_finite=True)
        seen, buffered = seen + 1, buffered + 1
        if buffered == window:
            model += total / window
            total[:] = 0
            buffered = 0
            producer.send(models, model.tobytes())
        if seen == count:
            break
    producer.flush()
    seconds = time.perf_counter() - start
    cpu_ms = (time.process_time() - cpu) * 1000 / seen
    consumer.close()
    producer.close()
    return Result(
        "plain Python aggregator (no checkpoints)",
        seen,
        seconds,
        params * 4,
        {"cpu_ms_per_update": round(cpu_ms, 2)},
    )


def registration_value(
    model_id: str, params: int, window: int, owner: ReleaseSigner | None = None
) -> bytes:
    """The benchmark model's registration: plain FedBuff with a count window, signed by
    `owner` (the job's trusted model owner) when given."""
    settings = {"window": {"count": window, "seconds": None}}
    return registration_bytes(model_id, onnx_model(params), ["W"], settings, owner)


def job_logic_in_process(params: int, count: int, window: int) -> Result:
    """fedstream's per-update Python without Flink or Kafka: route, validate, aggregate,
    and the model's state turned into bytes and back after every record, as the job keeps
    it in Flink state (`tests.support.local_job.InMemoryJob`, the job's logic on dicts).
    The gap between this and the job is what the framework costs."""
    from fedstream.pipelines.device_gate import DeviceGate
    from tests.support.local_job import InMemoryJob

    job = InMemoryJob(gate=DeviceGate())  # every update verified first, as in the job
    for _device, value in device_keys():
        job.send(value, job.devices_topic)
    job.send(registration_value("bench-model-0", params, window), job.control_topic)
    delta = bench_delta(params)
    values = [update_value("bench-model-0", i, 0, delta) for i in range(count)]
    cpu, start = time.process_time(), time.perf_counter()
    for value in values:
        job.send(value, now=time.time())
    seconds = time.perf_counter() - start
    cpu_ms = (time.process_time() - cpu) * 1000 / count
    releases = len(job.values("release")) - 1  # version 0 came from the registration
    if releases != count // window or job.values("dead_letter"):
        raise RuntimeError(f"in-process job: {releases} releases, {job.values('dead_letter')}")
    return Result(
        "fedstream's Python logic alone, in one process (no Flink, no Kafka)",
        count,
        seconds,
        len(delta) * 4,
        {"cpu_ms_per_update": round(cpu_ms, 2)},
    )


def model_shape(params: int) -> tuple[int, int]:
    """(inputs, outputs) of a one-matrix model with about `params` parameters."""
    outputs = 100 if params < 500_000 else 1000
    return max(1, params // outputs), outputs


def onnx_model(params: int) -> bytes:
    """y = x @ W with W of about `params` float32 values: the job only sees initializers."""
    from onnx import TensorProto, helper, numpy_helper

    inputs, outputs = model_shape(params)
    weight = np.zeros((inputs, outputs), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "bench",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", outputs])],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data


@dataclass(frozen=True)
class Burst:
    """One burst of updates through the job, timed from the first send (open loop) or
    from the commit of the transaction that held them all (backlog)."""

    begin: float
    end: float
    """perf_counter() when the last of its releases was visible (read_committed)"""
    processed_s: float
    """commit -> the job built its last release (wall clock, from the release's
    created_at): processing without the wait for the next checkpoint's commit"""
    latencies_ms: list[float]

    @property
    def visible_s(self) -> float:
        return self.end - self.begin


@dataclass(frozen=True)
class Seen:
    """A release as the watcher saw it."""

    visible_at: float
    """perf_counter() when it was read (read_committed)"""
    update_ids: list[str]
    built_at: float
    """its created_at: when the job built it (wall clock of this host, s)"""


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
                    seen = Seen(
                        now, list(release["lineage"]["update_ids"]), release["created_at"] / 1000
                    )
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


def bench_delta(params: int) -> npt.NDArray[np.float32]:
    """The update every benchmark device sends: small, fixed, the bench model's size."""
    inputs, outputs = model_shape(params)
    return np.random.default_rng(0).normal(scale=1e-3, size=inputs * outputs).astype(np.float32)


@dataclass
class JobDriver:
    """Feeds updates to a running job and times the releases that come out."""

    job: JobProcess
    watcher: ReleaseWatcher
    producer: KafkaProducer
    backlog_producer: KafkaProducer
    """transactional: `burst(backlog=True)` commits a whole burst at once"""
    topic: str
    partitions: int
    model_ids: list[str]
    window: int
    delta: npt.NDArray[np.float32]

    def burst(self, prefix: str, n: int, backlog: bool = False) -> Burst:
        """Produce n updates (round robin over the models, each based on its newest
        version) and wait until every full window of them is in a visible release.

        Open loop (default): sent as fast as kafka-python can while the job runs. Backlog:
        sent in one transaction and committed at once, so the job finds them all waiting
        (read_committed) and the producer's CPU is spent before the clock starts — how
        the plain aggregator is measured too."""
        models = self.model_ids
        base = {m: self.watcher.newest_version(m) for m in models}
        values = [
            update_value(
                models[i % len(models)], i, base[models[i % len(models)]], self.delta, prefix
            )
            for i in range(n)
        ]
        sender = self.backlog_producer if backlog else self.producer
        if backlog:
            sender.begin_transaction()
        produced: dict[str, float] = {}
        begin, committed_at = time.perf_counter(), time.time()
        for i, value in enumerate(values):
            produced[f"{prefix}-{i}"] = time.perf_counter()
            # model m on partition m: with two source subtasks, each reads one model's updates
            model = i % len(models)
            sender.send(
                self.topic, value, key=models[model].encode(), partition=model % self.partitions
            )
        sender.flush()
        if backlog:
            begin, committed_at = time.perf_counter(), time.time()
            sender.commit_transaction()
            produced = dict.fromkeys(produced, begin)
        per_model = [len(range(m, n, len(models))) for m in range(len(models))]
        releases = self._wait(set(produced), sum(k - k % self.window for k in per_model))
        latencies = [
            (r.visible_at - produced[u]) * 1000
            for r in releases
            for u in r.update_ids
            if u in produced
        ]
        end = max(r.visible_at for r in releases)
        processed = max(r.built_at for r in releases) - committed_at
        log(
            f"fedstream: {prefix}: {n} updates in releases after {processed:.1f} s, "
            f"visible after {end - begin:.1f} s"
        )
        return Burst(begin, end, processed, sorted(latencies))

    def _wait(self, update_ids: set[str], expected: int) -> list[Seen]:
        deadline = time.monotonic() + 600
        while True:
            releases = self.watcher.holding(update_ids)
            absorbed = sum(len(update_ids.intersection(r.update_ids)) for r in releases)
            if absorbed >= expected:
                return releases
            if time.monotonic() > deadline or not self.job.alive():
                raise RuntimeError(f"only {absorbed}/{expected} absorbed:\n{self.job.log_tail()}")
            time.sleep(0.2)


def spread_model_ids(models: int, parallelism: int) -> list[str]:
    """`models` ids that Flink's key_by spreads over as many of `parallelism` subtasks as
    possible (bench-model-0 and -1 share subtask 0 at parallelism 2, for one)."""
    chosen: list[str] = []
    taken: set[int] = set()
    for n in range(10_000):
        candidate = f"bench-model-{n}"
        subtask = subtask_of(candidate, parallelism)
        if subtask not in taken or len(taken) == parallelism:
            chosen.append(candidate)
            taken.add(subtask)
            if len(chosen) == models:
                return chosen
    raise AssertionError("unreachable: 10k candidates cover every subtask")


def fedstream_job(
    kafka: BenchKafka,
    params: int,
    count: int,
    window: int,
    interval_ms: int,
    models: int = 1,
    parallelism: int = 1,
    mode: str | None = None,
    profile_dir: Path | None = None,
    live_models: int | None = None,
) -> Result:
    """One measured run of the job; with `profile_dir`, its Python operators profile
    themselves there (`fedstream.pipelines.profiling`), which slows them down."""
    suffix = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="fedstream-bench-job-"))
    keys, owner = signing_keys(work)
    overrides = {
        **kafka.job_overrides(),
        "topics.updates": f"updates-{suffix}",
        "topics.control": f"control-{suffix}",
        "topics.models": f"models-{suffix}",
        "topics.dlq": f"dlq-{suffix}",
        "topics.devices": f"devices-{suffix}",
        "topics.partitions": str(max(2, parallelism)),
        "kafka.group_id": f"bench-{suffix}",
        "kafka.transactional_id_prefix": f"bench-{suffix}",
        "checkpoint.dir": (work / "checkpoints").as_uri(),
        "checkpoint.interval_ms": str(interval_ms),
        "runtime.parallelism": str(parallelism),
        "runtime.restart_attempts": "0",
        **keys,  # releases and registrations signed, as always
    }
    if mode is not None:
        overrides["runtime.python_execution_mode"] = mode
    if live_models is not None:
        overrides["runtime.live_models"] = str(live_models)
    config = load(overrides=overrides)
    ensure_topics(config)
    job = JobProcess(overrides, work / "job.log")
    if profile_dir is not None:
        os.environ[ENV_VAR] = str(profile_dir)
    try:
        job.start()
    finally:
        os.environ.pop(ENV_VAR, None)
    assert job.pid is not None
    pgid = job.pid
    watcher = ReleaseWatcher(kafka, config.topics.models)
    producer = KafkaProducer(
        **kafka.client_kwargs(), acks="all", max_request_size=MAX_BYTES, enable_idempotence=True
    )
    backlog_producer = KafkaProducer(
        **kafka.client_kwargs(),
        acks="all",
        max_request_size=MAX_BYTES,
        transactional_id=f"bench-backlog-{suffix}",
    )
    try:  # also on Ctrl-C or an error: never leave a job (and its JVM) behind
        backlog_producer.init_transactions()
        model_ids = spread_model_ids(models, max(parallelism, models))
        for device_id, value in device_keys():  # the operator registers the devices first
            producer.send(config.topics.devices, value, key=device_id.encode())
        for model_id in model_ids:
            value = registration_value(model_id, params, window, load_signing_key(owner))
            producer.send(config.topics.control, value, key=registration_key(model_id))
        producer.flush()
        deadline = time.monotonic() + 180
        while watcher.count() < models:
            if time.monotonic() > deadline or not job.alive():
                raise RuntimeError(f"no version 0 release:\n{job.log_tail()}")
            time.sleep(0.2)
        driver = JobDriver(
            job,
            watcher,
            producer,
            backlog_producer,
            config.topics.updates,
            config.topics.partitions,
            model_ids,
            window,
            bench_delta(params),
        )
        # Warm-up: the JVM's JIT compiles the hot paths during the first seconds of traffic
        # (measured: ~2 ms of compiler CPU per update over a cold 300-update run, still ~1.9 ms
        # after a 100-update warm-up). A long-running job pays that once.
        driver.burst("warmup", max(10 * window * models, count // 2))
        open_loop = driver.burst("open", count)
        cpu_before, busy_before = ThreadCpu.snapshot(pgid), machine_busy_seconds()
        backlog = driver.burst("backlog", count, backlog=True)
        rss = group_rss_mb(pgid)
        cpu = ThreadCpu.snapshot(pgid).since(cpu_before)
        machine_cpu = machine_busy_seconds() - busy_before
    finally:
        watcher.close()
        job.kill()
        producer.close()
        backlog_producer.close()
    latencies, drain = open_loop.latencies_ms, backlog.latencies_ms
    param_bytes = driver.delta.nbytes
    root = work / "checkpoints"
    checkpoints = sorted(root.glob("*/chk-*"), key=lambda p: p.stat().st_mtime)
    last = checkpoints[-1] if checkpoints else None
    # hashmap backend: a full snapshot per checkpoint, the keyed state of every model
    state_bytes = sum(f.stat().st_size for f in last.rglob("*") if f.is_file()) if last else 0
    shutil.rmtree(root, ignore_errors=True)  # the job's log stays, next to it
    return Result(
        f"fedstream (exactly-once, {models} model(s), parallelism {parallelism}"
        + (f", live_models={live_models})" if live_models is not None else ")"),
        len(drain),
        backlog.processed_s,
        param_bytes,
        {
            "until_visible_updates_per_s": round(len(drain) / backlog.visible_s, 1),
            "latency_ms_p50": float(np.percentile(latencies, 50)),
            "latency_ms_p99": float(np.percentile(latencies, 99)),
            "open_loop_updates_per_s": round(len(latencies) / open_loop.visible_s, 1),
            "backlog_latency_ms_p50": float(np.percentile(drain, 50)),
            "checkpoint_interval_ms": interval_ms,
            "window": window,
            "job_rss_mb": round(rss, 1),
            "checkpoint_bytes": state_bytes,
            "params_bytes_per_model": param_bytes,
            "python_execution_mode": config.runtime.python_execution_mode,
            "parallelism": parallelism,
            "live_models": config.runtime.live_models,
            "models": model_ids,
            "cpu_ms_per_update": {
                group: round(seconds * 1000 / len(drain), 2)
                for group, seconds in sorted(cpu.items(), key=lambda kv: -kv[1])
            },
            "job_cpu_ms_per_update": round(sum(cpu.values()) * 1000 / len(drain), 2),
            "machine_cpu_ms_per_update": round(machine_cpu * 1000 / len(drain), 2),
        },
    )


FEDSTREAM = "fedstream (exactly-once"


def median_run(runs: list[Result]) -> Result:
    """The median run by updates/s (the lower middle one for an even count), carrying
    every run's updates/s and job CPU per update, so the spread is on record."""
    ordered = sorted(runs, key=lambda r: r.updates_per_s)
    chosen = ordered[(len(ordered) - 1) // 2]
    if len(runs) > 1:
        chosen.extra["runs_updates_per_s"] = [round(r.updates_per_s, 1) for r in runs]
        chosen.extra["runs_job_cpu_ms_per_update"] = [
            r.extra["job_cpu_ms_per_update"] for r in runs
        ]
    return chosen


def _ms(value: object) -> str:
    return f"{value:,.0f}" if isinstance(value, float) else "-"


def markdown(results: list[Result], params: int, profile: dict[str, Any] | None) -> str:
    """The results as markdown: throughput, then the job's memory, then where time goes."""
    lines = [
        f"| system ({params:,} fp32 params, {params * 4 / 1e6:.1f} MB per update) "
        "| updates/s | MB/s | CPU ms/update | open-loop release latency p50 / p99 (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        cpu = r.extra.get("job_cpu_ms_per_update", r.extra.get("cpu_ms_per_update"))
        latency = (
            f"{_ms(r.extra['latency_ms_p50'])} / {_ms(r.extra['latency_ms_p99'])}"
            if "latency_ms_p50" in r.extra
            else "-"
        )
        spread = r.extra.get("runs_updates_per_s")
        name = r.system
        if spread:
            name += f", median of {len(spread)} runs ({min(spread):,.0f}-{max(spread):,.0f})"
            cpus = r.extra["runs_job_cpu_ms_per_update"]
            cpu = f"{cpu} ({min(cpus)}-{max(cpus)})"
        lines.append(
            f"| {name} | {r.updates_per_s:,.1f} | {r.mb_per_s:,.1f} "
            f"| {cpu if cpu is not None else '-'} | {latency} |"
        )
    jobs = [r for r in results if r.system.startswith(FEDSTREAM)]
    lines += [
        "",
        "Aggregators drain a backlog (fedstream: committed in one transaction, timed until "
        "the job built its last release; until that release was visible: "
        + ", ".join(f"{r.extra['until_visible_updates_per_s']}/s" for r in jobs)
        + "). Latency is measured open loop, while a kafka-python producer sends as fast "
        "as it can, which reached "
        + ", ".join(f"{r.extra['open_loop_updates_per_s']}/s" for r in jobs)
        + " end to end.",
        "",
        "| fedstream run | models | parallelism | updates/s | job RSS (MB) "
        "| checkpoint bytes per model / param bytes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in jobs:
        e = r.extra
        models = len(e["models"])
        per_model = e["checkpoint_bytes"] / models / e["params_bytes_per_model"]
        lines.append(
            f"| {e['python_execution_mode']} mode, live_models={e['live_models']}, "
            f"checkpoint every {e['checkpoint_interval_ms']} ms"
            f" | {models} | {e['parallelism']} | {r.updates_per_s:,.1f} | {e['job_rss_mb']:,.0f}"
            f" | {per_model:.3f} |"
        )
    main = jobs[0].extra
    lines += [
        "",
        f"CPU per update of the first fedstream run, by thread of the job (/proc), "
        f"{main['job_cpu_ms_per_update']} ms in all; the whole machine (broker, producer, "
        f"job): {main['machine_cpu_ms_per_update']} ms:",
        "",
        "| job threads | CPU ms/update |",
        "|---|---:|",
        *(f"| {group} | {ms} |" for group, ms in main["cpu_ms_per_update"].items()),
    ]
    if profile:
        for operator, rows in profile.items():
            lines += [
                "",
                f"Inside the Python of the `{operator}` operator (cProfile, thread CPU time, "
                f"{rows['records profiled']:.0f} records; cProfile roughly doubles the "
                "absolute times, the shares are what to read):",
                "",
                f"| {operator}: Python, per record | CPU ms (profiled) | share |",
                "|---|---:|---:|",
                *(
                    f"| {k} | {v} | {v / rows['total']:.0%} |"
                    for k, v in rows.items()
                    if k != "records profiled"
                ),
            ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--checkpoint-interval-ms", type=int, default=1000)
    parser.add_argument("--port", type=int, default=49092)
    parser.add_argument(
        "--parallelism",
        action="store_true",
        help="also run 2 models at parallelism 1 and 2 (and measure memory per model)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run the job once more with its Python operators profiled (cProfile)",
    )
    parser.add_argument(
        "--ablate-live-models",
        action="store_true",
        help="also run the job with runtime.live_models=0 (every record reads its model "
        "from Flink state), the job's behaviour before live models",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each fedstream variant (alternating); rows show the median run",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--mode",
        choices=["process", "thread"],
        help="PyFlink python.execution-mode of the fedstream runs (default: the job config's)",
    )
    args = parser.parse_args(argv)
    exit_on_sigterm()
    size = args.params * 4
    results: list[Result] = []
    profile: dict[str, Any] | None = None

    def job(
        models: int = 1,
        parallelism: int = 1,
        profile_dir: Path | None = None,
        live_models: int | None = None,
    ) -> Result:
        return fedstream_job(
            kafka,
            args.params,
            args.updates,
            args.window,
            args.checkpoint_interval_ms,
            models,
            parallelism,
            args.mode,
            profile_dir,
            live_models,
        )

    with broker(args.port) as kafka:
        log(f"raw Kafka, perf tools: {args.updates} records of {size:,} bytes")
        results += kafka_tools(kafka, size, args.updates)
        log("raw Kafka, kafka-python")
        results += kafka_python(kafka, size, args.updates)
        log("plain Python aggregator")
        results.append(plain_aggregator(kafka, args.params, args.updates, args.window))
        log("fedstream's Python logic alone, in this process")
        results.append(job_logic_in_process(args.params, args.updates, args.window))
        # Runs alternate (A B A B ...), so a drift of the machine hits every variant alike;
        # each variant's row is its median run by updates/s, with all runs in the JSON.
        variants: list[tuple[str, dict[str, Any]]] = [("fedstream job", {})]
        if args.ablate_live_models:
            variants.append(("fedstream job, live_models=0", {"live_models": 0}))
        if args.parallelism:
            variants += [
                (f"fedstream job, 2 models, parallelism {p}", {"models": 2, "parallelism": p})
                for p in (1, 2)
            ]
        runs: dict[str, list[Result]] = {name: [] for name, _ in variants}
        for repeat in range(args.repeat):
            for name, settings in variants:
                log(f"{name} (run {repeat + 1}/{args.repeat}; a mini-cluster starts, ~15 s)")
                runs[name].append(job(**settings))
        results += [median_run(runs[name]) for name, _ in variants]
        if args.profile:
            log("fedstream job with its Python operators profiled")
            folder = Path(tempfile.mkdtemp(prefix="fedstream-bench-profile-"))
            job(profile_dir=folder)
            profile = python_breakdown(folder)
            shutil.rmtree(folder)
    raw = next(r for r in results if r.system == "kafka-python: produce")
    plain = next(r for r in results if r.system.startswith("plain"))
    ours = next(r for r in results if r.system.startswith(FEDSTREAM))
    ratios = {
        "fedstream / kafka-python produce": ours.updates_per_s / raw.updates_per_s,
        "fedstream / plain aggregator": ours.updates_per_s / plain.updates_per_s,
    }
    table = markdown(results, args.params, profile)
    table += "\n\n" + "\n".join(f"- {k}: {v:.2f}" for k, v in ratios.items())
    repeats = f"median of {args.repeat} alternating runs" if args.repeat > 1 else "one run"
    table += f"\n\nMeasured on {machine()}, one broker; fedstream rows: {repeats}.\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"throughput_{args.params}" + (f"_{args.mode}" if args.mode else "")
    (args.out / f"{stem}.json").write_text(
        json.dumps(
            {
                "params": args.params,
                "machine": machine(),
                "ratios": ratios,
                "results": [
                    asdict(r) | {"updates_per_s": r.updates_per_s, "mb_per_s": r.mb_per_s}
                    for r in results
                ],
                "python_profile_ms_per_record": profile,
            },
            indent=2,
        )
    )
    (args.out / f"{stem}.md").write_text(table)
    log(f"wrote {args.out / stem}.json and .md")


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    return f"{os.cpu_count()} cores, {cpu}"


if __name__ == "__main__":
    main()
