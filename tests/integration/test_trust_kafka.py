"""Who may change a model, end to end: a real broker, one real job, the SDK and the CLI.

One job (trusting two model owners through `[trust] owner_keys`) serves both tests, each on
models of its own, so the suite pays for one job start.

Registrations: a model registered with the CLI (`fedstream register --owner-key-file`) by
the first owner is released; an unsigned registration, one signed by an unknown key, and
the second owner's registration of the first owner's model id are each dead-lettered with
their reason, and none of them creates or changes a model.

Updates: the operator makes device key pairs and registers them (`fedstream devices keygen
/ register / revoke`, as the admin); devices sign with `EdgeConfig.device_key_file`. An
update signed by a key the registry does not know, or by a revoked one, goes to the DLQ as
UNAUTHENTICATED with the claimed device, and the model does not change (a window of two
such updates would have made version 1); a registered device then trains end to end and
the release's lineage names it. No key material reaches a dead letter or the job's log.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka import KafkaProducer

from fedstream.edge import EdgeClient, EdgeConfig
from fedstream.jobs import cli
from fedstream.jobs.config import load
from fedstream.jobs.launcher import REPO, JobProcess
from fedstream.jobs.topics import ensure_topics
from fedstream.schemas import registration_key
from fedstream.schemas.signing import load_signing_key, raw_public_key, write_key_pair
from fedstream.schemas.update_signing import DEVICE_KEY_NAME
from tests.support.job_runner import JobTopics, edge_config, job_process, job_signing_key
from tests.support.kafka_io import dead_letters, releases, wait_for
from tests.support.onnx_models import linear_model
from tests.support.owner_key import owner_private_key, owner_public_key
from tests.support.records import flat_params, owner_registration_record, registration_bytes
from tests.support.stack import Broker

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]


@dataclass
class TrustJob:
    """The shared job, its topics, its folder and the owners' keys."""

    job: JobProcess
    topics: JobTopics
    folder: Path
    keys: dict[str, Path]

    def settings(self, broker: Broker) -> dict[str, str]:
        return {**self.topics.overrides(), **broker.job_overrides()}

    def refused(self, broker: Broker, models: set[str]) -> list[dict[str, Any]]:
        """The dead letters of `models` (the other test's models share the DLQ)."""
        assert self.job.alive(), f"the job died:\n{self.job.log_tail()}"
        return [d for d in dead_letters(broker, self.topics.dlq) if d["model_id"] in models]

    def released(self, broker: Broker, model: str) -> list[int]:
        return [r.version for r in releases(broker, self.topics.models) if r.model_id == model]


@pytest.fixture(scope="module")
def trust_job(kafka_broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrustJob]:
    folder = tmp_path_factory.mktemp("trust")
    second, second_public, _ = write_key_pair(folder / "keys", "second-owner")
    unknown, _, _ = write_key_pair(folder / "keys", "unknown-owner")
    keys = {"second": second, "second.pub": second_public, "unknown": unknown}
    topics = JobTopics()
    ensure_topics(load(overrides={**topics.overrides(), **kafka_broker.job_overrides()}))
    job = job_process(
        kafka_broker,
        folder / "checkpoints",
        topics,
        folder / "job.log",
        **{
            "trust.owner_keys": f"{owner_public_key()},{second_public}",
            "trust.registration_grace_ms": "2000",
        },
    )
    job.start()
    try:
        yield TrustJob(job, topics, folder, keys)
    finally:
        job.kill()


def cli_register(settings: dict[str, str], model_id: str, onnx: Path, key: Path) -> str:
    sets = [arg for k, v in settings.items() for arg in ("--set", f"{k}={v}")]
    model = ["--model-id", model_id, "--onnx", str(onnx), "--window-count", "2"]
    command = [sys.executable, "-m", "fedstream.jobs.cli", "register", *sets, *model]
    done = subprocess.run(
        [*command, "--owner-key-file", str(key)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_only_trusted_owners_register_and_a_model_keeps_its_owner(
    kafka_broker: Broker, trust_job: TrustJob, tmp_path: Path
) -> None:
    onnx_bytes = linear_model(4, 3, seed=3)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(onnx_bytes)
    settings = trust_job.settings(kafka_broker)
    assert "registered 'owned'" in cli_register(settings, "owned", onnx, owner_private_key())
    wait_for(
        lambda: trust_job.released(kafka_broker, "owned") == [0],
        120,
        "version 0 of the owned model",
        trust_job.job.log_tail,
    )
    producer = KafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap, **kafka_broker.security.kafka_python_kwargs()
    )
    try:
        for model, owner in (
            ("anonymous", None),
            ("rogue", load_signing_key(trust_job.keys["unknown"])),
            ("owned", load_signing_key(trust_job.keys["second"])),
        ):
            value = registration_bytes(model, onnx_bytes, owner=owner)
            # keyed: the control topic is compacted and refuses unkeyed records
            control = trust_job.topics.control
            producer.send(control, value, key=registration_key(model)).get(timeout=30)
    finally:
        producer.close()

    models = {"owned", "anonymous", "rogue"}

    def refused() -> list[tuple[str, str]]:
        return sorted((d["reason"], d["model_id"]) for d in trust_job.refused(kafka_broker, models))

    expected = [
        ("OWNER_MISMATCH", "owned"),
        ("UNAUTHENTICATED", "anonymous"),
        ("UNAUTHENTICATED", "rogue"),
    ]
    wait_for(lambda: refused() == expected, 60, f"dead letters {expected}", trust_job.job.log_tail)
    assert [trust_job.released(kafka_broker, m) for m in sorted(models)] == [[], [0], []]
    key_material = [p.read_bytes() for p in trust_job.keys.values()]
    for letter in trust_job.refused(kafka_broker, models):
        assert not any(k in letter["detail"].encode() for k in key_material)


def operator(broker: Broker, topics: JobTopics, *args: str) -> str:
    """`fedstream <args>` as the operator (the stack's admin); its standard output."""
    sets = {**broker.job_overrides(), **topics.overrides()}
    argv = [*args, *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(argv) == 0, out.getvalue()
    return out.getvalue()


def enroll_devices(broker: Broker, topics: JobTopics, keys: Path) -> None:
    """Key pairs for good, revoked and stranger; good and revoked registered, revoked
    revoked; the stranger's key is never registered."""
    for device in ("good", "revoked", "stranger"):
        assert "private key" in operator(
            broker, topics, "devices", "keygen", "--out", str(keys / device)
        )
    for device in ("good", "revoked"):
        public = keys / device / f"{DEVICE_KEY_NAME}.pub"
        operator(broker, topics, "devices", "register", "--device-id", device,
                 "--public-key-file", str(public))  # fmt: skip
    operator(broker, topics, "devices", "revoke", "--device-id", "revoked")
    listing = operator(broker, topics, "devices", "list")
    assert "good" in listing and "REVOKED" in listing and "stranger" not in listing


def test_only_registered_active_devices_change_the_model(
    kafka_broker: Broker, trust_job: TrustJob, tmp_path: Path
) -> None:
    model, onnx = "trusted-model", linear_model(4, 3, seed=11)
    initial = flat_params(onnx)
    size = initial.size
    topics, keys = trust_job.topics, tmp_path / "keys"
    enroll_devices(kafka_broker, topics, keys)

    def config(device: str) -> EdgeConfig:
        job_key = job_signing_key(trust_job.folder)
        device_key = keys / device / f"{DEVICE_KEY_NAME}.key"
        return edge_config(kafka_broker, topics, job_key, device_key_file=device_key)

    with EdgeClient(config("good"), device_id="good", model_id=model) as owner:
        registration: Any = owner_registration_record(model, onnx, {"window": {"count": 2}})
        owner.register(registration)
        assert owner.wait_for_model(timeout_s=180).version == 0
    # two updates that would close a window of two, from a revoked and an unknown key
    for device in ("revoked", "stranger"):
        with EdgeClient(config(device), device_id=device, model_id=model) as client:
            client.send_update(np.full(size, 5.0, np.float32), base_version=0, num_samples=1)

    def refused() -> list[dict[str, Any]]:
        return trust_job.refused(kafka_broker, {model})

    wait_for(lambda: len(refused()) == 2, 120, "two dead letters", trust_job.job.log_tail)
    letters = {str(d["detail"]).split("'")[1]: d for d in refused()}
    assert set(letters) == {"revoked", "stranger"}
    assert all(d["reason"] == "UNAUTHENTICATED" for d in letters.values())
    assert "revoked" in str(letters["revoked"]["detail"])
    assert "not registered" in str(letters["stranger"]["detail"])
    assert trust_job.released(kafka_broker, model) == [0]  # unchanged

    deltas = [np.full(size, 0.1 * (i + 1), np.float32) for i in range(2)]
    with EdgeClient(config("good"), device_id="good", model_id=model) as good:
        for delta in deltas:
            good.send_update(delta, base_version=0, num_samples=1)
        wait_for(
            lambda: 1 in trust_job.released(kafka_broker, model),
            120,
            "version 1",
            trust_job.job.log_tail,
        )
    v1 = next(
        r for r in releases(kafka_broker, topics.models) if (r.model_id, r.version) == (model, 1)
    )
    assert v1.lineage["device_ids"] == ["good", "good"]
    np.testing.assert_allclose(flat_params(v1.onnx), initial + np.mean(deltas, axis=0), rtol=1e-6)

    # no key material in dead letters or the job's log: only public key ids
    log = (trust_job.folder / "job.log").read_bytes()
    for name in ("good", "revoked", "stranger"):
        key_file = keys / name / f"{DEVICE_KEY_NAME}.key"
        secret = key_file.read_bytes()
        raw = raw_public_key(load_signing_key(key_file).key.public_key())
        assert secret not in log and raw not in log
        for letter in refused():
            assert raw.hex() not in str(letter["detail"])
            assert secret.decode() not in str(letter["detail"])
