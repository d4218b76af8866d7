"""The same job, submitted with `flink run -py` to the local standalone cluster."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer

from fedstream.edge import ReleaseAssembler
from fedstream.jobs.config import load
from fedstream.jobs.kafka_read import read_topic
from fedstream.jobs.registration import registration_bytes
from fedstream.jobs.topics import ensure_topics
from fedstream.schemas import pack, registration_key
from fedstream.schemas.signing import load_signing_key
from tests.support.devices import register_devices, signed_bytes
from tests.support.job_runner import JobTopics, job_signing_key, trusted
from tests.support.kafka_io import releases, wait_for
from tests.support.onnx_models import linear_model
from tests.support.owner_key import owner_public_key, owner_signer
from tests.support.secrets import files_containing
from tests.support.stack import REPO, Broker, FlinkCluster

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]


def test_submitted_job_aggregates_on_the_standalone_cluster(
    kafka_broker: Broker, flink_cluster: FlinkCluster, tmp_path: Path
) -> None:
    topics = JobTopics()
    settings = {
        **topics.overrides(),
        **kafka_broker.job_overrides(),  # as admin; the password file's path, not the password
        "checkpoint.dir": (tmp_path / "checkpoints").as_uri(),
        "checkpoint.interval_ms": "1000",
        "signing.key_file": str(job_signing_key(tmp_path)),
        "trust.owner_keys": str(owner_public_key()),
    }
    ensure_topics(load(overrides=settings))
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    submit = subprocess.run(
        [sys.executable, "-m", "fedstream.jobs.cli", "submit", *sets],
        cwd=REPO,
        env=flink_cluster.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert submit.returncode == 0, f"{submit.stdout}\n{submit.stderr}"
    match = re.search(r"JobID ([0-9a-f]{32})", submit.stdout)
    assert match, submit.stdout
    job_id = match.group(1)
    try:
        producer = KafkaProducer(**kafka_broker.client_kwargs(), acks="all")
        onnx = linear_model()
        aggregation = {"window": {"count": 3, "seconds": None}}
        value = registration_bytes("m", onnx, ["W", "b"], aggregation, owner_signer())
        producer.send(topics.control, value, key=registration_key("m"))
        producer.flush()
        logs = lambda: f"cluster logs: {flink_cluster.log_dir}"  # noqa: E731
        wait_for(lambda: bool(releases(kafka_broker, topics.models)), 120, "v0", logs)
        register_devices(kafka_broker, topics.devices, ["d"])  # the operator, before it sends
        for i in range(6):
            record = {
                "update_id": f"u{i}",
                "device_id": "d",
                "model_id": "m",
                "base_version": 0,
                "num_samples": 1,
                "created_at": 0,
                "delta": pack(np.full(15, 0.5), "FP32"),
                "metrics": None,
                "sequence": None,
                "key_id": None,
                "signature": None,
            }
            # keyed by model, as devices send: one partition, so the job sees u0..u5 in order
            producer.send(topics.updates, signed_bytes(record), key=b"m")
        producer.close()
        wait_for(
            lambda: len(releases(kafka_broker, topics.models)) == 3,
            120,
            "versions 1 and 2",
            logs,
        )
        found = releases(kafka_broker, topics.models)
        assert [r.version for r in found] == [0, 1, 2]
        # signed on the cluster's workers with the key read from signing.key_file
        key = job_signing_key(tmp_path)
        device = ReleaseAssembler("m", trusted(key))
        for value in read_topic(kafka_broker.bootstrap, topics.models, kafka_broker.security):
            device.add(value)
        key_id = load_signing_key(key).key_id
        assert [(r.version, r.key_id) for r in device.take()] == [(v, key_id) for v in range(3)]
        assert [r.lineage["update_ids"] for r in found[1:]] == [
            ["u0", "u1", "u2"],
            ["u3", "u4", "u5"],
        ]
        # the cluster's processes logged the Kafka settings, the password [hidden]
        password = (kafka_broker.credentials / "admin.password").read_text().strip()
        assert files_containing(flink_cluster.log_dir, password) == []
        assert password not in submit.stdout + submit.stderr
        # nor the release key: only its path travels (job graph, arguments)
        secret = key.read_text().splitlines()[1]  # the base64 body of the PEM
        assert files_containing(flink_cluster.log_dir, secret) == []
        assert secret not in submit.stdout + submit.stderr
    finally:
        flink_cluster.run("cancel", job_id, timeout=60)
