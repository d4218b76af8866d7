"""Terraform provisions the secured broker for real: topics, SCRAM users and ACLs.

One secured broker of our own (infra/local/kafka.sh: SASL_SSL, SCRAM-SHA-512,
StandardAuthorizer, allow.everyone.if.no.acl.found=false) on ports 39092/39093, one
`provision.sh apply` of infra/terraform/local (the kafka module), then real kafka-python
clients of every role prove the ACL matrix: what each may do works, everything else is
refused by the broker. A second plan must find nothing to change, invalid values must be
refused at plan time with their message, and destroy must leave no topic, user or ACL.

The tests run in file order on one module-scoped stack (one broker start, one apply/plan/
destroy cycle: the run shares 2 cores with the rest of the suite).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import (
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ConfigResource,
    ConfigResourceType,
    ResourcePatternFilter,
    ResourceType,
)
from kafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailedError,
)

from fedstream.edge.security import KafkaSecurity
from fedstream.jobs.launcher import JobProcess
from fedstream.schemas import decode, registration_key
from tests.support.devices import device_key_bytes
from tests.support.job_runner import job_signing_key
from tests.support.onnx_models import linear_model
from tests.support.owner_key import owner_public_key
from tests.support.records import (
    Release,
    flat_params,
    read_releases,
    registration_bytes,
    update_bytes,
)
from tests.support.stack import KAFKA_SH
from tests.support.terraform import PROVISION_SH, TOOLS_TIMEOUT_S, terraform_tools

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.slow,
    # the first run on a machine without terraform builds OpenTofu (~8 min) in the fixture
    pytest.mark.timeout(TOOLS_TIMEOUT_S + 600),
]

PORT = int(os.environ.get("FEDSTREAM_TEST_TF_KAFKA_PORT", "39092"))
TOPICS = {
    "updates": "fl.updates",
    "control": "fl.control",
    "models": "fl.models",
    "dlq": "fl.dlq",
    "devices": "fl.devices",
}
ROLES = ("job", "device", "owner", "auditor")
TXN_PREFIX = "fedstream-aggregator"
MiB = 1024 * 1024

# The ACL matrix of infra/terraform/modules/acl-matrix (README.md), written out again here
# as the specification the broker's ACLs must equal: (principal, type, pattern, name, op).
_RW = {
    "Read": ("Read", "Describe"),
    "Write": ("Write", "Describe"),
    "Write+": ("Write", "Describe", "DescribeConfigs"),  # the SDK reads max.message.bytes
}
EXPECTED_ACLS = {
    (f"User:{role}", rtype, pattern, name, op)
    for role, rtype, pattern, name, ops in [
        ("job", "TOPIC", "LITERAL", "fl.updates", _RW["Read"]),
        ("job", "TOPIC", "LITERAL", "fl.control", _RW["Read"]),
        ("job", "TOPIC", "LITERAL", "fl.models", ("Read", "Write", "Describe")),
        ("job", "TOPIC", "LITERAL", "fl.dlq", _RW["Write"]),
        ("job", "TOPIC", "LITERAL", "fl.devices", _RW["Read"]),
        ("job", "GROUP", "LITERAL", "fedstream-aggregator", ("Read",)),
        ("job", "TRANSACTIONAL_ID", "PREFIXED", TXN_PREFIX, ("Write", "Describe")),
        ("device", "TOPIC", "LITERAL", "fl.updates", _RW["Write+"]),
        ("device", "TOPIC", "LITERAL", "fl.models", _RW["Read"]),
        ("device", "GROUP", "PREFIXED", "fedstream-device", ("Read",)),
        ("owner", "TOPIC", "LITERAL", "fl.control", _RW["Write+"]),
        ("owner", "TOPIC", "LITERAL", "fl.models", _RW["Read"]),
        *[("auditor", "TOPIC", "LITERAL", t, _RW["Read"]) for t in TOPICS.values()],
        ("auditor", "GROUP", "PREFIXED", "fedstream-auditor", ("Read",)),
    ]
    for op in ops
}


@dataclass
class Stack:
    env: dict[str, str]
    credentials: Path
    bootstrap: str
    timings: dict[str, float] = field(default_factory=dict)
    printed: list[str] = field(default_factory=list)  # everything provision.sh printed
    destroyed: bool = False

    def provision(
        self, command: str, extra: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        done = subprocess.run(
            [str(PROVISION_SH), command],
            env={**self.env, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        label = command if not extra else f"{command} ({', '.join(sorted(extra))})"
        self.timings[label] = time.monotonic() - start
        self.printed.append(done.stdout + done.stderr)
        return done

    def security(self, role: str) -> dict[str, Any]:
        return KafkaSecurity(
            username=role,
            password_file=self.credentials / f"{role}.password",
            ca_file=self.credentials / "ca.pem",
        ).kafka_python_kwargs()

    def admin(self) -> KafkaAdminClient:
        return KafkaAdminClient(
            bootstrap_servers=self.bootstrap, request_timeout_ms=30000, **self.security("admin")
        )

    def producer(self, role: str, **config: Any) -> KafkaProducer:
        return KafkaProducer(
            bootstrap_servers=self.bootstrap,
            max_block_ms=20000,
            request_timeout_ms=20000,
            **self.security(role),
            **config,
        )

    def produce(self, role: str, topic: str, value: bytes, key: bytes = b"m", **config: Any) -> int:
        """Send one record as `role`; the offset, or the broker's refusal raised. Keyed:
        control and models are compacted, and refuse records without a key."""
        producer = self.producer(role, **config)
        try:
            return int(producer.send(topic, value, key=key).get(timeout=30).offset)
        finally:
            producer.close(timeout=10)

    def read(self, role: str, topic: str, group: str | None = None) -> list[bytes]:
        """Every committed record of `topic` (all partitions), read as `role`."""
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            isolation_level="read_committed",
            request_timeout_ms=30000,
            **self.security(role),
        )
        try:
            partitions = [
                TopicPartition(topic, p)
                for p in sorted(consumer.partitions_for_topic(topic) or {0})
            ]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            ends = consumer.end_offsets(partitions)
            values: list[bytes] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(
                consumer.position(p) < ends[p] for p in partitions
            ):
                for records in consumer.poll(timeout_ms=1000).values():
                    values.extend(r.value for r in records)
            if group is not None:
                consumer.commit()
            return values
        finally:
            consumer.close()


def _brokers_of(kafka_dir: Path) -> list[int]:
    """Pids of broker JVMs running from `kafka_dir` (this fixture's own, unique folder)."""
    marker = f"{kafka_dir}/node-".encode()
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes() and b"kafka.Kafka" in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def _end_brokers_of(kafka_dir: Path) -> None:
    """Stop what kafka.sh may have lost track of: a start that gave up on a node it had
    launched leaves the JVM running without a pid file, holding this test's ports."""
    pids = _brokers_of(kafka_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while pids and time.monotonic() < deadline:
        time.sleep(0.5)
        pids = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _start_broker(env: dict[str, str], kafka_dir: Path) -> None:
    for attempt in (1, 2):
        started = subprocess.run(
            [str(KAFKA_SH), "start"], env=env, capture_output=True, text=True, timeout=300
        )
        if started.returncode == 0:
            return
        _end_brokers_of(kafka_dir)
        if attempt == 2:
            _fail("kafka.sh start (twice)", started)


def _fail(what: str, done: subprocess.CompletedProcess[str]) -> None:
    pytest.fail(
        f"{what} failed (exit {done.returncode}):\n{done.stdout[-6000:]}\n{done.stderr[-4000:]}",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    terraform_tools()  # fails with a clear message if terraform/the provider cannot be built
    kafka_dir = tmp_path_factory.mktemp("tf-kafka")
    env = {
        **os.environ,
        "FEDSTREAM_KAFKA_PORT": str(PORT),
        "FEDSTREAM_KAFKA_CONTROLLER_PORT": str(PORT + 1),
        "FEDSTREAM_KAFKA_NODES": "1",
        "FEDSTREAM_KAFKA_DIR": str(kafka_dir),
    }
    env.pop("FEDSTREAM_TF_STATE_DIR", None)  # the default: <kafka dir>/terraform
    stack = Stack(env, kafka_dir / "credentials", f"127.0.0.1:{PORT}")
    try:
        _start_broker(env, kafka_dir)
        applied = stack.provision("apply")
        if applied.returncode != 0:
            _fail("provision.sh apply", applied)
        yield stack
    finally:
        try:
            if not stack.destroyed and (kafka_dir / "terraform" / "terraform.tfstate").exists():
                stack.provision("destroy")
        finally:
            subprocess.run([str(KAFKA_SH), "stop"], env=env, capture_output=True, timeout=180)
            _end_brokers_of(kafka_dir)
        print(f"\nterraform timings (s): { {k: round(v, 1) for k, v in stack.timings.items()} }")


def test_apply_wrote_credentials_outside_the_repo_and_no_secret_in_state(stack: Stack) -> None:
    state = stack.credentials.parent / "terraform" / "terraform.tfstate"
    assert state.is_file(), "the state lives in the stack's run folder"
    text = state.read_text()
    for role in ROLES:
        password_file = stack.credentials / f"{role}.password"
        assert password_file.stat().st_mode & 0o777 == 0o600
        password = password_file.read_text().strip()
        assert len(password) == 48
        assert password not in text, f"the {role} password leaked into the state"
        assert (stack.credentials / f"{role}.properties").stat().st_mode & 0o777 == 0o600
        assert (
            f"FEDSTREAM_KAFKA_USERNAME={role}\n" in (stack.credentials / f"{role}.env").read_text()
        )
    assert "TF_VAR" not in text


def test_topics_users_and_acls_are_exactly_the_module(stack: Stack) -> None:
    admin = stack.admin()
    try:
        described = {t["name"]: t for t in admin.describe_topics(list(TOPICS.values()))}
        assert {name: len(t["partitions"]) for name, t in described.items()} == {
            "fl.updates": 2,
            "fl.control": 1,
            "fl.models": 1,
            "fl.dlq": 1,
            "fl.devices": 1,
        }
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in TOPICS.values()]
        configs = {
            name: {key: entry["value"] for key, entry in entries.items()}
            for name, entries in admin.describe_configs(resources)["topic"].items()
        }
        assert configs["fl.control"]["retention.ms"] == "-1"
        assert configs["fl.models"]["retention.ms"] == "-1"
        assert configs["fl.updates"]["retention.ms"] == "604800000"
        assert configs["fl.dlq"]["retention.ms"] == "2592000000"
        assert configs["fl.models"]["cleanup.policy"] == "compact"
        assert configs["fl.control"]["cleanup.policy"] == "compact"
        assert configs["fl.devices"]["cleanup.policy"] == "compact"
        assert configs["fl.devices"]["retention.ms"] == "-1"
        assert configs["fl.updates"]["max.message.bytes"] == str(16 * MiB)
        assert configs["fl.dlq"]["max.message.bytes"] == str(17 * MiB)

        users = admin.describe_user_scram_credentials()
        assert set(users) == {"admin", *ROLES}
        for role in ROLES:
            infos = users[role]["credential_infos"]
            assert [(i["mechanism"].name, i["iterations"]) for i in infos] == [
                ("SCRAM_SHA_512", 8192)
            ], infos

        assert _acls(admin) == EXPECTED_ACLS
    finally:
        admin.close()


def _acls(admin: KafkaAdminClient) -> set[tuple[str, str, str, str, str]]:
    everything = ACLFilter(
        principal=None,
        host="*",
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
    acls, error = admin.describe_acls(everything)
    assert error.errno == 0, error
    found = set()
    for acl in acls:
        assert acl.permission_type == ACLPermissionType.ALLOW
        names = {"DESCRIBE": "Describe", "READ": "Read", "WRITE": "Write"}
        operation = {**names, "DESCRIBE_CONFIGS": "DescribeConfigs"}.get(
            acl.operation.name, acl.operation.name
        )
        found.add(
            (
                acl.principal,
                acl.resource_pattern.resource_type.name,
                acl.resource_pattern.pattern_type.name,
                acl.resource_pattern.resource_name,
                operation,
            )
        )
    return found


def test_clients_without_valid_credentials_get_nothing(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    ca = str(stack.credentials / "ca.pem")
    caplog.set_level(logging.ERROR, logger="kafka")
    anonymous: list[dict[str, Any]] = [
        {"security_protocol": "SSL", "ssl_cafile": ca},  # TLS but no SASL
        {"security_protocol": "PLAINTEXT"},
        KafkaSecurity(
            username="device", password="not-the-password-000", ca_file=ca
        ).kafka_python_kwargs(),
        KafkaSecurity(
            username="nobody", password="not-the-password-000", ca_file=ca
        ).kafka_python_kwargs(),
    ]
    for settings in anonymous:
        with pytest.raises(KafkaError):
            producer = KafkaProducer(
                bootstrap_servers=stack.bootstrap,
                bootstrap_timeout_ms=5000,
                max_block_ms=5000,
                **settings,
            )
            try:
                producer.send(TOPICS["updates"], b"anonymous").get(timeout=10)
            finally:
                producer.close(timeout=5)
    assert "SaslAuthenticationFailedError" in caplog.text
    # the same broker, with the device's real password, answers at once
    assert stack.produce("device", TOPICS["updates"], b"authenticated") >= 0


def test_job_uses_its_transactional_ids_and_nothing_else(stack: Stack) -> None:
    producer = stack.producer("job", transactional_id=f"{TXN_PREFIX}-0-{uuid.uuid4().hex[:6]}")
    try:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(TOPICS["models"], b"release-1", key=b"m#0")
        producer.send(TOPICS["dlq"], b"dead-letter-1", key=b"m")
        producer.commit_transaction()
    finally:
        producer.close(timeout=10)
    assert b"release-1" in stack.read("device", TOPICS["models"])
    assert b"dead-letter-1" in stack.read("auditor", TOPICS["dlq"])

    outsider = stack.producer("job", transactional_id="someone-else-0")
    try:
        with pytest.raises(TransactionalIdAuthorizationFailedError):
            outsider.init_transactions()
    finally:
        outsider.close(timeout=5)
    for topic in (TOPICS["updates"], TOPICS["devices"]):
        with pytest.raises(TopicAuthorizationFailedError):
            stack.produce("job", topic, b"job must write neither updates nor device keys")
    # its consumer group, and no other
    stack.read("job", TOPICS["updates"], group="fedstream-aggregator")
    with pytest.raises(GroupAuthorizationFailedError):
        stack.read("job", TOPICS["updates"], group="not-the-job-group")


def test_device_sends_updates_and_reads_models_only(stack: Stack) -> None:
    # an idempotent producer (kafka-python's default) without IdempotentWrite on the
    # cluster: Write on the topic is enough since Kafka 3.0 (KIP-679)
    assert stack.produce("device", TOPICS["updates"], b"update-1") >= 0
    stack.read("device", TOPICS["models"])
    stack.read("device", TOPICS["models"], group="fedstream-device-42")
    # nor the device registry: a device that could would register keys for other devices
    for topic in (TOPICS["models"], TOPICS["control"], TOPICS["dlq"], TOPICS["devices"]):
        with pytest.raises(TopicAuthorizationFailedError):
            stack.produce("device", topic, b"forged", key=b"device-0")
    with pytest.raises(TopicAuthorizationFailedError):
        stack.read("device", TOPICS["updates"])


def test_owner_registers_on_control(stack: Stack) -> None:
    assert stack.produce("owner", TOPICS["control"], b"registration-1") >= 0
    stack.read("owner", TOPICS["models"])
    for topic in (TOPICS["updates"], TOPICS["devices"]):
        with pytest.raises(TopicAuthorizationFailedError):
            stack.produce("owner", topic, b"owner must send neither updates nor device keys")
    with pytest.raises(TopicAuthorizationFailedError):
        stack.read("owner", TOPICS["dlq"])


def test_auditor_reads_everything_and_writes_nothing(stack: Stack) -> None:
    seen = {role: stack.read("auditor", topic) for role, topic in TOPICS.items()}
    assert b"registration-1" in seen["control"]
    assert b"update-1" in seen["updates"]
    assert b"release-1" in seen["models"]
    stack.read("auditor", TOPICS["control"], group="fedstream-auditor-weekly")
    # idempotent producers need Write on some topic: the auditor has none anywhere (kafka-
    # python wraps the broker's ClusterAuthorizationFailed in a plain KafkaError)
    with pytest.raises(KafkaError, match="ClusterAuthorizationFailed"):
        stack.produce("auditor", TOPICS["dlq"], b"forged")
    for topic in TOPICS.values():
        with pytest.raises(TopicAuthorizationFailedError):
            stack.produce("auditor", topic, b"forged", enable_idempotence=False, acks=1)


def test_the_job_principal_runs_the_whole_job(stack: Stack, tmp_path: Path) -> None:
    """The real aggregation job logs in as `job` on the provisioned topics (no topic
    creation, its group, its transactional ids): an owner registers, a device sends a
    window of updates, and a device reads the committed releases (versions 0 and 1)."""
    credentials = stack.credentials
    job = JobProcess(
        {
            "kafka.bootstrap": stack.bootstrap,
            "kafka.username": "job",
            "kafka.password_file": str(credentials / "job.password"),
            "kafka.ca_file": str(credentials / "ca.pem"),
            "checkpoint.dir": (tmp_path / "checkpoints").as_uri(),
            "checkpoint.interval_ms": "1000",
            "runtime.restart_attempts": "0",
            "signing.key_file": str(job_signing_key(tmp_path)),
            "trust.owner_keys": str(owner_public_key()),
        },
        tmp_path / "job.log",
        create_topics=False,
    )
    onnx = linear_model(4, 3, seed=5)
    model = f"tf-{uuid.uuid4().hex[:6]}"
    job.start()
    try:
        value = registration_bytes(model, onnx, {"window": {"count": 3}})
        stack.produce("owner", TOPICS["control"], value, key=registration_key(model))
        # as a real device does: train (send) only from a released version
        _await_releases(stack, model, versions={0}, job=job)
        # the operator (admin) registers the device's key; the device signs its updates
        stack.produce("admin", TOPICS["devices"], device_key_bytes("device-0"), key=b"device-0")
        deltas = [np.full(15, 0.1 * (i + 1), np.float32) for i in range(3)]
        for i, delta in enumerate(deltas):
            stack.produce("device", TOPICS["updates"], update_bytes(model, f"{model}-u{i}", delta))
        releases = _await_releases(stack, model, versions={0, 1}, job=job)
    finally:
        job.kill()
    lineage = releases[model, 1].lineage
    assert sorted(lineage["update_ids"]) == [f"{model}-u{i}" for i in range(3)]
    assert lineage["device_ids"] == ["device-0"] * 3
    np.testing.assert_allclose(
        flat_params(releases[model, 1].onnx), flat_params(onnx) + np.mean(deltas, axis=0), rtol=1e-6
    )


def _await_releases(
    stack: Stack, model: str, *, versions: set[int], job: JobProcess, timeout: float = 180
) -> dict[tuple[str, int], Release]:
    """The model's releases as a device reads them (read_committed), once all `versions`
    are there; fails with the job's log if the job dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        assert job.alive(), f"the job died:\n{job.log_tail()}"
        values = [v for v in stack.read("device", TOPICS["models"]) if v[:2] == b"\xc3\x01"]
        found = read_releases(v for v in values if decode(v).record["model_id"] == model)
        if versions <= {version for _, version in found}:
            return found
        assert time.monotonic() < deadline, f"no releases {versions}:\n{job.log_tail()}"
        time.sleep(2)


def test_invalid_values_are_refused_at_plan_time(stack: Stack) -> None:
    done = stack.provision(
        "plan",
        {
            "TF_VAR_updates_partitions": "0",
            "TF_VAR_replication_factor": "2",  # the local cluster has one broker
            "TF_VAR_updates_retention_ms": "-2",
        },
    )
    assert done.returncode == 1, done.stdout + done.stderr
    output = " ".join((done.stdout + done.stderr).split())
    assert "running plan again" not in output, "only a transient broker error is retried"
    assert "updates_partitions must be a whole number >= 1." in output
    assert "replication_factor cannot exceed broker_count" in output
    assert "updates_retention_ms must be -1 (keep forever) or a positive number" in output


def _flaky_terraform(folder: Path, failures: int) -> tuple[Path, Path]:
    """The real terraform behind a wrapper whose first `failures` plans fail the way the
    provider's client does when it loses its connection race (provision.sh, "Transient
    broker errors"); the race itself cannot be triggered on purpose. Returns the wrapper
    and the file that counts its plans."""
    real = terraform_tools().binary
    count = folder / "plans"
    wrapper = folder / "terraform"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        'if [[ " $* " == *" plan "* ]]; then\n'
        f'  n=$(( $(cat "{count}" 2>/dev/null || echo 0) + 1 )); echo "$n" >"{count}"\n'
        f"  if ((n <= {failures})); then\n"
        '    echo "Error: kafka: broker not connected" >&2; exit 1\n'
        "  fi\n"
        "fi\n"
        f'exec "{real}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper, count


def test_a_transient_broker_error_is_retried(stack: Stack, tmp_path: Path) -> None:
    wrapper, count = _flaky_terraform(tmp_path, failures=1)
    done = stack.provision("plan", {"FEDSTREAM_TERRAFORM": str(wrapper)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "running plan again, attempt 2 of 3" in done.stdout
    assert "No changes." in done.stdout and count.read_text().strip() == "2"


def test_a_lasting_broker_error_fails_after_the_attempts(stack: Stack, tmp_path: Path) -> None:
    wrapper, count = _flaky_terraform(tmp_path, failures=99)
    extra = {"FEDSTREAM_TERRAFORM": str(wrapper), "FEDSTREAM_TF_ATTEMPTS": "2"}
    done = stack.provision("plan", extra)
    assert done.returncode == 1, done.stdout + done.stderr
    assert count.read_text().strip() == "2" and "kafka: broker not connected" in done.stdout


def test_second_plan_reports_no_changes(stack: Stack) -> None:
    done = stack.provision("plan")
    if done.returncode != 0:
        _fail("provision.sh plan (expected exit 0: no changes)", done)
    assert "No changes." in done.stdout


def test_destroy_leaves_no_topic_user_or_acl(stack: Stack) -> None:
    done = stack.provision("destroy")
    if done.returncode != 0:
        _fail("provision.sh destroy", done)
    stack.destroyed = True
    admin = stack.admin()
    try:
        assert not set(TOPICS.values()) & set(admin.list_topics())
        assert set(admin.describe_user_scram_credentials()) == {"admin"}
        assert _acls(admin) == set()
    finally:
        admin.close()
    # provision.sh printed what it did (apply, four plans, destroy), never a secret
    assert len(stack.printed) == 6 and "Destroy complete!" in stack.printed[-1]
    secrets = [(stack.credentials / f"{r}.password").read_text().strip() for r in (*ROLES, "admin")]
    for output in stack.printed:
        assert not [s for s in secrets if s in output]
