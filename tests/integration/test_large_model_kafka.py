"""A 10M-parameter model end to end: records larger than a Kafka record, in fragments.

One Linear layer of 3162 x 3162 (+ bias): 10,001,406 float32 parameters, 40 MB per
update and 80 MB per registration (template and initial weights), against the topics'
16 MiB `max.message.bytes`. On the secured broker, with the real job:

* the owner registers it through the SDK, which sends signed fragments; the job
  reassembles, verifies and releases version 0 (three release chunks), which a device
  installs;
* a forged fragment (claiming a registered device, signed by another key) is refused
  as UNAUTHENTICATED and changes nothing;
* two devices each send a 40 MB update (fragmented, signed); the window of two closes
  and version 1 on the device equals initial + the mean of the two deltas.

The job's process-group RSS is sampled and printed (run with -s to see it).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka import KafkaProducer

from fedstream.edge import EdgeClient
from fedstream.edge.errors import UnknownModelError
from fedstream.edge.releases import Release
from fedstream.jobs.config import load
from fedstream.jobs.topics import ensure_topics
from fedstream.schemas import encode
from fedstream.schemas.fragments import FRAGMENT, split_record
from fedstream.schemas.signing import load_signing_key, write_key_pair
from tests.support.devices import enrolled
from tests.support.job_runner import JobTopics, edge_config, job_process, job_signing_key
from tests.support.kafka_io import dead_letters, wait_for
from tests.support.onnx_models import linear_model
from tests.support.owner_key import owner_private_key
from tests.support.records import flat_params, owner_registration_record
from tests.support.stack import Broker

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]

SIDE = 3162  # W: SIDE x SIDE, b: SIDE -> 10,001,406 parameters
MODEL = "large-model"


def group_rss_mb(pgid: int | None) -> float:
    """Resident memory of every process in the job's process group, in MB."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if pgid is not None and int(stat[2]) == pgid:
            total += int(stat[21]) * os.sysconf("SC_PAGE_SIZE")
    return total / 2**20


def installed(client: EdgeClient, version: int, log: Callable[[], str]) -> Release:
    """The release `version` once the client has installed it (within 4 minutes)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        log()
        with contextlib.suppress(UnknownModelError):  # not there yet
            client.wait_for_model(timeout_s=5)
        if client.release is not None and client.release.version >= version:
            assert client.release.version == version
            return client.release
    raise AssertionError(f"no version {version} within 240 s\n{log()}")


def test_a_10m_parameter_model_trains_in_fragments(kafka_broker: Broker, tmp_path: Path) -> None:
    started = time.monotonic()
    topics = JobTopics()
    ensure_topics(load(overrides={**topics.overrides(), **kafka_broker.job_overrides()}))
    job = job_process(
        kafka_broker,
        tmp_path / "checkpoints",
        topics,
        tmp_path / "job.log",
        **{"trust.registration_grace_ms": "2000"},
    )
    devices = {d: enrolled(kafka_broker, topics.devices, tmp_path / "keys", d) for d in "ab"}
    job.start()
    peak = [0.0]

    def log() -> str:
        peak[0] = max(peak[0], group_rss_mb(job.pid))
        assert job.alive(), f"the job died:\n{job.log_tail()}"
        return job.log_tail()

    def config(device: str) -> Any:
        return edge_config(
            kafka_broker,
            topics,
            job_signing_key(tmp_path),
            device_key_file=devices[device],
            owner_key_file=owner_private_key(),
            send_timeout_s=120.0,
        )

    try:
        onnx = linear_model(SIDE, SIDE, seed=5)
        initial = flat_params(onnx)
        assert initial.size == 10_001_406
        with EdgeClient(config("a"), device_id="a", model_id=MODEL) as owner:
            registration: Any = owner_registration_record(MODEL, onnx, {"window": {"count": 2}})
            owner.register(registration)
            installed(owner, 0, log)
        registered_at = time.monotonic() - started

        # a fragment naming device a and a's key id, signed by a stranger's key
        stranger = load_signing_key(write_key_pair(tmp_path / "stranger", "x")[0])
        forged = split_record(
            b"\xc3\x01" + bytes(100), record_id="forged", signer="a", key=stranger,
            max_data_bytes=64,
        )[0]  # fmt: skip
        forged["key_id"] = load_signing_key(devices["a"]).key_id
        producer = KafkaProducer(**kafka_broker.client_kwargs(), acks="all")
        try:
            producer.send(topics.updates, encode(FRAGMENT, forged), key=MODEL.encode()).get(30)
        finally:
            producer.close()

        deltas = [np.full(initial.size, 0.01 * (i + 1), np.float32) for i in range(2)]
        for device, delta in zip("ab", deltas, strict=True):
            with EdgeClient(config(device), device_id=device, model_id=MODEL) as client:
                sent = client.send_update(delta, base_version=0, num_samples=1)
                assert sent.size > 40_000_000
            log()

        def refused() -> list[dict[str, Any]]:
            return dead_letters(kafka_broker, topics.dlq)

        wait_for(lambda: len(refused()) >= 1, 120, "the forged fragment's dead letter", log)
        (letter,) = refused()
        assert letter["reason"] == "UNAUTHENTICATED" and "does not verify" in letter["detail"]
        assert letter["update_id"] == "forged"

        with EdgeClient(config("b"), device_id="b", model_id=MODEL) as reader:
            params = flat_params(installed(reader, 1, log).onnx)
        np.testing.assert_allclose(params, initial + np.mean(deltas, axis=0), rtol=1e-6)
        assert refused() == [letter]  # nothing else was refused
        print(
            f"\n10M model: version 0 after {registered_at:.0f} s, version 1 after "
            f"{time.monotonic() - started:.0f} s; job process group peak RSS {peak[0]:.0f} MB"
        )
    finally:
        job.kill()
