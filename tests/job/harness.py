"""Run the real job topology in a local mini-cluster on in-memory input, and read its output.

    feed = Feed(partitions=2)
    feed.register("m", onnx, {"window": {"count": 2}})
    feed.update("m", "u1", delta)          # signed by device-0, registered before its first
    feed.sleep(2.5)                        # lets processing-time timers fire
    out = run_job(feed, job_config(tmp_path, parallelism=2))
    out.releases["m", 1].lineage, out.dead_letter(source)

`run_job` builds the environment with `flink_configuration(config, local=True)` and the
exact `topology()` of the aggregation job; only the Kafka source and sinks are replaced:
input comes from `from_collection` (through the test-only `pacing.Pace` operator) and
both outputs are collected. Rows carry Kafka-like coordinates: each model is assigned a
partition, offsets count per (topic, partition), and the pacing operator is keyed by
partition, so records of one model reach the job in order at any parallelism.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
from pyflink.common import Row, Types
from pyflink.datastream import StreamExecutionEnvironment

import tests.job.pacing as pacing
from fedstream.jobs.aggregation_job import INPUT_ROW, flink_configuration, topology
from fedstream.jobs.config import JobConfig
from fedstream.pipelines.config import AggregationConfig
from fedstream.pipelines.model_process import Envelope
from fedstream.schemas import DeadLetter, decode
from tests.support.devices import DEVICES_TOPIC, device_key_bytes
from tests.support.job_runner import job_signing_key
from tests.support.owner_key import owner_public_key
from tests.support.records import (
    CONTROL_TOPIC,
    UPDATES_TOPIC,
    Release,
    read_dead_letters,
    read_releases,
    registration_bytes,
    update_bytes,
)

__all__ = [
    "Feed",
    "JobOutput",
    "absorbed",
    "coordinates",
    "job_config",
    "run_job",
]

#: Seconds of pause between registrations and the records after them (see `Feed.raw`).
REGISTRATION_SETTLE = 1.0

# Ship the pacing operator by value: the Python workers need not import `tests`.
cloudpickle.register_pickle_by_value(pacing)


def python_execution_mode() -> str:
    """The PyFlink mode to test: FEDSTREAM_TEST_PYTHON_MODE, else the job config's default."""
    return os.environ.get("FEDSTREAM_TEST_PYTHON_MODE", JobConfig().runtime.python_execution_mode)


def job_config(tmp_path: Path, *, parallelism: int = 1, **overrides: Any) -> JobConfig:
    """A job config for the mini-cluster: checkpoints under `tmp_path`, failures not
    retried, releases signed with `job_signing_key(tmp_path)`, registrations trusted when the
    tests' model owner signed them."""
    settings: dict[str, Any] = {
        "signing.key_file": str(job_signing_key(tmp_path)),
        "trust.owner_keys": [str(owner_public_key())],
        "checkpoint.dir": (tmp_path / "checkpoints").as_uri(),
        # Short: a bounded job waits for one last checkpoint before it finishes.
        "checkpoint.interval_ms": 500,
        # Fail at once: with checkpointing the default restart strategy loops (PyFlink 2.2).
        "runtime.restart_attempts": 0,
        "runtime.parallelism": parallelism,
        # The job's default mode unless FEDSTREAM_TEST_PYTHON_MODE names one (thread|process).
        "runtime.python_execution_mode": python_execution_mode(),
    }
    settings.update(overrides)
    return JobConfig().with_overrides(settings)


@dataclass
class Feed:
    """The input of one job run: INPUT_ROW rows with Kafka-like coordinates."""

    partitions: int = 1
    updates_topic: str = UPDATES_TOPIC
    control_topic: str = CONTROL_TOPIC
    devices_topic: str = DEVICES_TOPIC
    rows: list[Row] = field(default_factory=list)
    #: devices whose registry record is in the feed (`update` adds it before the first)
    devices: set[str] = field(default_factory=set)
    _offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    _partition_of: dict[str, int] = field(default_factory=dict)
    _markers: int = 0
    _registered: bool = False

    def partition_of(self, model_id: str) -> int:
        """The model's partition: assigned round-robin on first use (like keyed records)."""
        if model_id not in self._partition_of:
            self._partition_of[model_id] = len(self._partition_of) % self.partitions
        return self._partition_of[model_id]

    def raw(self, value: bytes, topic: str | None = None, partition: int = 0) -> Envelope:
        """Any bytes, at the next offset of topic/partition; returns the coordinates.

        The first record after registrations waits `REGISTRATION_SETTLE` seconds:
        registrations take a detour through the job's registry (one key for the whole
        job) and, as on Kafka, where updates and registrations are different topics,
        nothing orders them against updates sent right after them."""
        topic = self.updates_topic if topic is None else topic
        if topic != self.control_topic and self._registered:
            self._registered = False
            self.sleep(REGISTRATION_SETTLE)
        elif topic == self.control_topic:
            self._registered = True
        offset = self._offsets.get((topic, partition), 0)
        self._offsets[topic, partition] = offset + 1
        self.rows.append(Row(value, topic, partition, offset))
        return Envelope(value, topic, partition, offset)

    def register(
        self,
        model_id: str,
        onnx: bytes,
        aggregation: AggregationConfig | Mapping[str, Any] | None = None,
    ) -> Envelope:
        value = registration_bytes(model_id, onnx, aggregation)
        return self.raw(value, self.control_topic, self.partition_of(model_id))

    def device(self, device_id: str = "device-0", *, status: str = "ACTIVE") -> Envelope:
        """The operator's registry record of the device's test key (or its revocation)."""
        self.devices.add(device_id)
        return self.raw(device_key_bytes(device_id, status=status), self.devices_topic)

    def update(
        self,
        model_id: str,
        update_id: str,
        delta: npt.ArrayLike,
        *,
        base_version: int = 0,
        num_samples: int = 1,
        device_id: str = "device-0",
        sequence: int | None = None,
    ) -> Envelope:
        """A signed update; its device is registered first if the feed has not yet."""
        if device_id not in self.devices:
            self.device(device_id)
        value = update_bytes(
            model_id,
            update_id,
            delta,
            base_version=base_version,
            num_samples=num_samples,
            device_id=device_id,
            sequence=sequence,
        )
        return self.raw(value, self.updates_topic, self.partition_of(model_id))

    def sleep(self, seconds: float) -> None:
        """Let `seconds` of wall time pass before the records after this point."""
        self._markers += 1
        marker = f"{self._markers}:{seconds}".encode()
        for partition in range(self.partitions):
            self.rows.append(Row(marker, pacing.MARKER_TOPIC, partition, 0))


@dataclass(frozen=True)
class JobOutput:
    releases: dict[tuple[str, int], Release]
    dead_letters: list[DeadLetter]
    seconds: float
    #: the ModelRelease records as the job emitted them (for the SDK's reader)
    release_values: list[bytes] = field(default_factory=list)

    def versions(self, model_id: str) -> list[int]:
        return sorted(v for m, v in self.releases if m == model_id)

    def dead_letter(self, source: Envelope) -> DeadLetter:
        """The one dead letter for the input record at `source`'s coordinates."""
        found = [
            d
            for d in self.dead_letters
            if (d["source_topic"], d["source_partition"], d["source_offset"])
            == (source.topic, source.partition, source.offset)
        ]
        where = (source.topic, source.partition, source.offset)
        assert len(found) == 1, f"{len(found)} dead letters for {where}"
        assert found[0]["original"] == source.value
        return found[0]


def _as_bytes(value: Any) -> bytes:
    """Collected byte[] values arrive as lists of signed ints."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return np.asarray(value, dtype=np.int8).tobytes()


def run_job(
    feed: Feed, config: JobConfig, *, name: str = "fedstream-job-tier", bundle_size: int = 1
) -> JobOutput:
    """Run `topology` on `feed.rows` in a mini-cluster until the input is exhausted.

    `bundle_size` 1 (the default): each record is processed (and its outputs sent on)
    before the next one enters, so a pacing sleep really separates records in time; it
    costs ~50 ms a record. Larger bundles are for many records; they are still flushed
    every 100 ms, well within a pacing sleep."""
    conf = flink_configuration(config, local=True)
    conf.set_string("python.fn-execution.bundle.size", str(bundle_size))
    conf.set_string("python.fn-execution.bundle.time", "100")
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    rows = env.from_collection(feed.rows, type_info=INPUT_ROW)
    paced = (
        rows.key_by(lambda row: row[2], key_type=Types.INT())
        .flat_map(pacing.Pace(), output_type=INPUT_ROW)
        .uid("test-pacing")
        .name("test pacing")
    )
    releases, dead_letters = topology(paced, config)
    # Collected as they are: a Python operator after topology's outputs would be chained
    # into them by PyFlink and collide with their uids. The record type tells them apart.
    started = time.monotonic()
    values: list[bytes] = []
    with releases.union(dead_letters).execute_and_collect(name) as results:
        values.extend(_as_bytes(row[1]) for row in results)  # KEYED: (key, value)
    seconds = time.monotonic() - started
    kinds = [decode(v).name for v in values]
    assert set(kinds) <= {"ModelRelease", "DeadLetter"}, set(kinds)
    pairs = list(zip(kinds, values, strict=True))
    return JobOutput(
        releases=read_releases(v for k, v in pairs if k == "ModelRelease"),
        dead_letters=read_dead_letters(v for k, v in pairs if k == "DeadLetter"),
        seconds=seconds,
        release_values=[v for k, v in pairs if k == "ModelRelease"],
    )


def absorbed(output: JobOutput, model_id: str) -> list[str]:
    """Every update_id in the model's releases, in version order."""
    return [
        uid
        for version in output.versions(model_id)
        for uid in output.releases[model_id, version].lineage["update_ids"]
    ]


def coordinates(envelopes: Iterable[Envelope]) -> set[tuple[str, int, int]]:
    return {(e.topic, e.partition, e.offset) for e in envelopes}
