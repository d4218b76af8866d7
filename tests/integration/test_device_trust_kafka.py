"""Signed updates end to end: a real broker, the real job, the SDK and the operator's CLI.

The operator makes device key pairs and registers them (`fedstream devices keygen /
register / revoke`, as the admin); devices sign with `EdgeConfig.device_key_file`. An
update signed by a key the registry does not know, or by a revoked one, goes to the DLQ as
UNAUTHENTICATED with the claimed device, and the model does not change (a window of two
such updates would have made version 1); a registered device then trains end to end and
the release's lineage names it. No key material reaches a dead letter or the job's log.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedstream.edge import EdgeClient, EdgeConfig
from fedstream.jobs import cli
from fedstream.jobs.launcher import JobProcess
from fedstream.schemas.signing import load_signing_key, raw_public_key
from fedstream.schemas.update_signing import DEVICE_KEY_NAME
from tests.support.job_runner import JobTopics, job_process, job_signing_key, trusted
from tests.support.kafka_io import dead_letters, releases, wait_for
from tests.support.onnx_models import linear_model
from tests.support.records import flat_params, registration_record
from tests.support.stack import Broker

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]

ONNX = linear_model(4, 3, seed=11)
INITIAL = flat_params(ONNX)
SIZE = INITIAL.size
MODEL = "trusted-model"


def operator(broker: Broker, topics: JobTopics, *args: str) -> str:
    """`fedstream <args>` as the operator (the stack's admin); its standard output."""
    sets = {**broker.job_overrides(), **topics.overrides()}
    argv = [*args, *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(argv) == 0, out.getvalue()
    return out.getvalue()


@pytest.fixture
def running(kafka_broker: Broker, tmp_path: Path) -> Iterator[tuple[JobProcess, JobTopics]]:
    topics = JobTopics()
    job = job_process(
        kafka_broker,
        tmp_path / "checkpoints",
        topics,
        tmp_path / "job.log",
        **{"trust.registration_grace_ms": "2000"},
    )
    job.start()
    try:
        yield job, topics
    finally:
        job.kill()


def test_only_registered_active_devices_change_the_model(
    kafka_broker: Broker, tmp_path: Path, running: tuple[JobProcess, JobTopics]
) -> None:
    job, topics = running
    keys = tmp_path / "keys"
    for device in ("good", "revoked", "stranger"):
        assert "private key" in operator(
            kafka_broker, topics, "devices", "keygen", "--out", str(keys / device)
        )
    for device in ("good", "revoked"):  # the stranger's key is never registered
        public = keys / device / f"{DEVICE_KEY_NAME}.pub"
        operator(kafka_broker, topics, "devices", "register", "--device-id", device,
                 "--public-key-file", str(public))  # fmt: skip
    operator(kafka_broker, topics, "devices", "revoke", "--device-id", "revoked")
    listing = operator(kafka_broker, topics, "devices", "list")
    assert "good" in listing and "REVOKED" in listing and "stranger" not in listing

    def config(device: str) -> EdgeConfig:
        return EdgeConfig(
            bootstrap=kafka_broker.bootstrap,
            security=kafka_broker.security,
            updates_topic=topics.updates,
            control_topic=topics.control,
            models_topic=topics.models,
            dlq_topic=topics.dlq,
            trusted_keys=trusted(job_signing_key(tmp_path)),
            device_key_file=keys / device / f"{DEVICE_KEY_NAME}.key",
        )

    with EdgeClient(config("good"), device_id="good", model_id=MODEL) as owner:
        registration: Any = registration_record(MODEL, ONNX, {"window": {"count": 2}})
        owner.register(registration)
        assert owner.wait_for_model(timeout_s=180).version == 0
    # two updates that would close a window of two, from a revoked and an unknown key
    for device in ("revoked", "stranger"):
        with EdgeClient(config(device), device_id=device, model_id=MODEL) as client:
            client.send_update(np.full(SIZE, 5.0, np.float32), base_version=0, num_samples=1)

    def refused() -> list[dict[str, object]]:
        return [d for d in dead_letters(kafka_broker, topics.dlq) if d["model_id"] == MODEL]

    wait_for(lambda: len(refused()) == 2, 120, "two dead letters", job.log_tail)
    letters = {str(d["detail"]).split("'")[1]: d for d in refused()}
    assert set(letters) == {"revoked", "stranger"}
    assert all(d["reason"] == "UNAUTHENTICATED" for d in letters.values())
    assert "revoked" in str(letters["revoked"]["detail"])
    assert "not registered" in str(letters["stranger"]["detail"])
    assert [r.version for r in releases(kafka_broker, topics.models)] == [0]  # unchanged

    deltas = [np.full(SIZE, 0.1 * (i + 1), np.float32) for i in range(2)]
    with EdgeClient(config("good"), device_id="good", model_id=MODEL) as good:
        for delta in deltas:
            good.send_update(delta, base_version=0, num_samples=1)
        wait_for(
            lambda: any(r.version == 1 for r in releases(kafka_broker, topics.models)),
            120,
            "version 1",
            job.log_tail,
        )
    v1 = next(r for r in releases(kafka_broker, topics.models) if r.version == 1)
    assert v1.lineage["device_ids"] == ["good", "good"]
    np.testing.assert_allclose(flat_params(v1.onnx), INITIAL + np.mean(deltas, axis=0), rtol=1e-6)

    # no key material in dead letters or the job's log: only public key ids
    log = (tmp_path / "job.log").read_bytes()
    for name in ("good", "revoked", "stranger"):
        key_file = keys / name / f"{DEVICE_KEY_NAME}.key"
        secret = key_file.read_bytes()
        raw = raw_public_key(load_signing_key(key_file).key.public_key())
        assert secret not in log and raw not in log
        for letter in refused():
            assert raw.hex() not in str(letter["detail"])
            assert secret.decode() not in str(letter["detail"])
