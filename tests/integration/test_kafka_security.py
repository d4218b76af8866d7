"""The secured local stack: every client must log in, over TLS, and a refused login says why.

Against the session's real broker (infra/local/kafka.sh: SASL_SSL, SCRAM-SHA-512,
StandardAuthorizer without allow-everyone): anonymous clients are refused, TLS is really
on the wire, a wrong password, an unknown user and a wrong CA each fail at once with an
`AuthenticationError` that names what to check (from the SDK and from the CLI), an
authenticated user without ACLs sees nothing, and the admin password shows up in no
process's arguments and no broker log.
"""

from __future__ import annotations

import re
import socket
import ssl
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka import KafkaAdminClient
from kafka.admin import UserScramCredentialDeletion, UserScramCredentialUpsertion

from fedstream.edge import (
    AuthenticationError,
    EdgeClient,
    EdgeConfig,
    KafkaSecurity,
    RecordProducer,
    ReleaseReader,
    TopicNotFoundError,
    check_broker,
)
from tests.support.secrets import command_lines, files_containing, watch_command_lines
from tests.support.stack import KAFKA_SH, REPO, Broker

pytestmark = pytest.mark.kafka

#: A refused login must be reported well before the clients' 30 s connect timeout.
QUICK_S = 5.0


def admin_password(broker: Broker) -> str:
    return (broker.credentials / "admin.password").read_text().strip()


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that did not sign the broker's certificate (made with openssl, like the stack's)."""
    folder = tmp_path_factory.mktemp("foreign-ca")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.pem"),
            "-days", "2", "-subj", "/CN=not the fedstream stack CA",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return folder / "ca.pem"


def bad_login(
    broker: Broker, case: str, foreign_ca: Path, folder: Path
) -> tuple[KafkaSecurity, str]:
    """Settings that must be refused, and what the error must say."""
    wrong = folder / "wrong.password"
    wrong.write_text("not-the-password\n")
    good = broker.security
    if case == "wrong password":
        return (
            KafkaSecurity(username="admin", password_file=wrong, ca_file=good.ca_file),
            r"refused user 'admin' \(SCRAM-SHA-512\).*check the username and the password file",
        )
    if case == "unknown user":
        user = f"ghost-{uuid.uuid4().hex[:6]}"
        return (
            KafkaSecurity(username=user, password_file=wrong, ca_file=good.ca_file),
            rf"refused user '{user}'.*check the username",
        )
    assert case == "wrong CA"
    return (
        KafkaSecurity(username="admin", password_file=good.password_file, ca_file=foreign_ca),
        r"certificate of the Kafka broker at 127\.0\.0\.1:\d+ is not trusted by the CA file",
    )


CASES = ["wrong password", "unknown user", "wrong CA"]


# ---------------------------------------------------------------- TLS and anonymous access
def test_the_client_port_speaks_tls_with_a_certificate_of_the_stacks_ca(
    kafka_broker: Broker,
) -> None:
    host, port = kafka_broker.bootstrap.rsplit(":", 1)
    trusted = ssl.create_default_context(cafile=str(kafka_broker.credentials / "ca.pem"))
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        trusted.wrap_socket(raw, server_hostname=host) as tls,
    ):
        certificate = tls.getpeercert()
        assert tls.version() in ("TLSv1.3", "TLSv1.2")
    assert certificate is not None
    assert ("IP Address", "127.0.0.1") in certificate["subjectAltName"]
    # the system's CAs do not vouch for it: trust comes from the stack's ca.pem only
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname=host)


@pytest.mark.parametrize(
    "login",
    [
        {"security_protocol": "PLAINTEXT"},
        {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
         "sasl_plain_username": "admin", "sasl_plain_password": "x"},
        {"security_protocol": "SSL"},  # TLS without SASL: anonymous over TLS
        {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
         "sasl_plain_username": "", "sasl_plain_password": ""},
    ],
    ids=["plaintext", "sasl-without-tls", "tls-without-sasl", "sasl-without-credentials"],
)  # fmt: skip
def test_anonymous_kafka_python_clients_get_nothing(
    kafka_broker: Broker, topic: str, login: dict[str, Any]
) -> None:
    if login["security_protocol"].endswith("SSL"):
        login = {**login, "ssl_cafile": str(kafka_broker.credentials / "ca.pem")}
    with pytest.raises(Exception) as refused:  # whatever kafka-python makes of it: no access
        admin = KafkaAdminClient(
            bootstrap_servers=kafka_broker.bootstrap,
            bootstrap_timeout_ms=4000,
            request_timeout_ms=4000,
            **login,
        )
        try:
            admin.list_topics()
        finally:
            admin.close()
    assert topic not in str(refused.value)


@pytest.mark.parametrize(
    ("protocol", "message"),
    [
        ("PLAINTEXT", "closed the connection on a PLAINTEXT request; it probably requires TLS"),
        ("SSL", "requires SASL authentication (SCRAM-SHA-512) but the client uses SSL"),
    ],
)
def test_the_sdk_says_what_the_listener_wants(
    kafka_broker: Broker, protocol: str, message: str
) -> None:
    ca = kafka_broker.credentials / "ca.pem" if protocol == "SSL" else None
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as refused:
        check_broker(kafka_broker.bootstrap, KafkaSecurity(protocol, ca_file=ca), timeout_s=10)
    assert message in str(refused.value)
    assert time.monotonic() - started < QUICK_S


def test_the_admin_login_works(kafka_broker: Broker) -> None:
    check_broker(kafka_broker.bootstrap, kafka_broker.security, timeout_s=10)  # no exception


# ---------------------------------------------------------------- bad credentials: SDK
@pytest.mark.parametrize("case", CASES)
def test_bad_credentials_fail_fast_in_the_sdk_saying_what_to_check(
    kafka_broker: Broker,
    topic_factory: Callable[..., str],
    foreign_ca: Path,
    tmp_path: Path,
    case: str,
) -> None:
    security, expected = bad_login(kafka_broker, case, foreign_ca, tmp_path)
    config = EdgeConfig(
        bootstrap=kafka_broker.bootstrap,
        security=security,
        updates_topic=topic_factory("updates"),
        models_topic=topic_factory("models"),
        connect_timeout_s=30,  # a timeout would show: each case must be far quicker
        send_timeout_s=30,
    )
    attempts: list[Callable[[], object]] = [
        lambda: RecordProducer(config),
        lambda: ReleaseReader(config, "m"),
        lambda: EdgeClient(config, device_id="d", model_id="m").send_update(
            np.zeros(3), base_version=0, num_samples=1
        ),
        lambda: EdgeClient(config, device_id="d", model_id="m").wait_for_model(timeout_s=1),
    ]
    for attempt in attempts:
        started = time.monotonic()
        with pytest.raises(AuthenticationError, match=expected) as refused:
            attempt()
        assert time.monotonic() - started < QUICK_S, f"{case}: took too long"
        assert admin_password(kafka_broker) not in str(refused.value)


# ---------------------------------------------------------------- bad credentials: CLI
def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedstream.jobs.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def login_overrides(broker: Broker, security: KafkaSecurity) -> list[str]:
    settings = {
        "kafka.bootstrap": broker.bootstrap,
        "kafka.username": str(security.username),
        "kafka.password_file": str(security.password_file),
        "kafka.ca_file": str(security.ca_file),
    }
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


@pytest.mark.parametrize("case", CASES)
def test_bad_credentials_end_a_cli_command_in_one_clear_line(
    kafka_broker: Broker, foreign_ca: Path, tmp_path: Path, case: str
) -> None:
    security, expected = bad_login(kafka_broker, case, foreign_ca, tmp_path)
    started = time.monotonic()
    done = cli("dead-letters", *login_overrides(kafka_broker, security))
    took = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedstream dead-letters: "), done.stderr
    assert re.search(expected, lines[0]), lines[0]
    assert took < 20, f"{case}: {took:.1f} s"
    assert admin_password(kafka_broker) not in done.stdout + done.stderr


def test_the_job_refuses_to_start_with_a_wrong_password(
    kafka_broker: Broker, foreign_ca: Path, tmp_path: Path
) -> None:
    security, _ = bad_login(kafka_broker, "wrong password", foreign_ca, tmp_path)
    done = cli("run", *login_overrides(kafka_broker, security), timeout=120)
    assert done.returncode != 0
    assert "fedstream: the Kafka broker at" in done.stderr and "refused user 'admin'" in done.stderr
    assert "Traceback" not in done.stderr  # one line, before any Flink machinery


def test_the_cli_works_with_the_right_credentials(kafka_broker: Broker, topic: str) -> None:
    login = login_overrides(kafka_broker, kafka_broker.security)
    done = cli("dead-letters", *login, "--set", f"topics.dlq={topic}")
    assert done.returncode == 0, done.stderr
    assert "no dead letters" in done.stdout
    missing = cli("dead-letters", *login, "--set", f"topics.dlq=missing-{uuid.uuid4().hex}")
    assert missing.returncode == 2 and "does not exist" in missing.stderr, missing.stderr


# ---------------------------------------------------------------- authorization
@pytest.fixture
def acl_less_user(kafka_broker: Broker) -> Iterator[KafkaSecurity]:
    """A fresh SCRAM user with no ACL at all (created as admin, password only in memory)."""
    user, password = f"no-acl-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    admin = KafkaAdminClient(**kafka_broker.client_kwargs())
    admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(user, "SCRAM-SHA-512", password)]
    )
    security = KafkaSecurity(
        username=user, password=password, ca_file=kafka_broker.credentials / "ca.pem"
    )
    deadline = time.monotonic() + 30
    while True:  # the credential reaches the broker's cache through the metadata log
        try:
            check_broker(kafka_broker.bootstrap, security, timeout_s=5)
            break
        except AuthenticationError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        yield security
    finally:
        admin.alter_user_scram_credentials([UserScramCredentialDeletion(user, "SCRAM-SHA-512")])
        admin.close()


def test_an_authenticated_user_without_acls_sees_no_topic(
    kafka_broker: Broker, topic: str, acl_less_user: KafkaSecurity
) -> None:
    config = EdgeConfig(
        bootstrap=kafka_broker.bootstrap, security=acl_less_user, connect_timeout_s=10
    )
    with pytest.raises(TopicNotFoundError, match="has no ACL to see it"):
        RecordProducer(config).send(topic, b"x")
    admin = KafkaAdminClient(**kafka_broker.client_kwargs())
    assert topic in admin.list_topics()  # it exists: the user is simply not allowed to see it
    admin.close()


# ---------------------------------------------------------------- secrets
def test_the_password_is_in_no_command_line_and_no_broker_log(kafka_broker: Broker) -> None:
    password = admin_password(kafka_broker)
    # a tool run by the script, watched while it runs: it logs in from admin.properties
    tool = subprocess.Popen(
        [str(KAFKA_SH), "topic", f"cmdline-{uuid.uuid4().hex[:6]}"],
        env=kafka_broker.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = watch_command_lines(tool)
    assert tool.wait() == 0, tool.stderr.read() if tool.stderr else ""
    assert any("TopicCommand" in line and "--command-config" in line for line in seen)
    # the broker's own JVM, and everything running now
    folder = kafka_broker.env["FEDSTREAM_KAFKA_DIR"]
    now = command_lines().values()
    assert any("kafka.Kafka" in line and folder in line for line in now)
    leaks = [line for line in [*seen, *now] if password in line]
    assert not leaks, "the admin password is in a process's arguments"
    logs = kafka_broker.log_dir
    assert (logs / "server.log").stat().st_size > 0
    assert files_containing(logs, password) == []


def test_secret_files_are_private_and_the_trust_anchor_is_readable(kafka_broker: Broker) -> None:
    folder = Path(kafka_broker.env["FEDSTREAM_KAFKA_DIR"])
    private = [
        folder / "credentials" / "admin.password",
        folder / "credentials" / "admin.properties",
        folder / "tls" / "ca.key",
        folder / "tls" / "broker.pem",
        folder / "node-1" / "server.properties",
    ]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((folder / "credentials").stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "credentials" / "ca.pem").stat().st_mode) == 0o644
    # where the secrets are: only the files that must hold them
    holders = {
        p.relative_to(folder) for p in files_containing(folder, admin_password(kafka_broker))
    }
    assert holders == {
        Path("credentials/admin.password"),
        Path("credentials/admin.properties"),
        Path("node-1/server.properties"),
    }


def test_kafka_sh_env_gives_paths_and_no_secret(kafka_broker: Broker) -> None:
    done = subprocess.run(
        [str(KAFKA_SH), "env"], env=kafka_broker.env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0
    assert (
        f"FEDSTREAM_KAFKA_PASSWORD_FILE={kafka_broker.credentials / 'admin.password'}"
        in done.stdout
    )
    assert "FEDSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL" in done.stdout
    assert admin_password(kafka_broker) not in done.stdout
    started = subprocess.run(
        [str(KAFKA_SH), "start"], env=kafka_broker.env, capture_output=True, text=True, timeout=60
    )
    assert str(kafka_broker.credentials) in started.stdout  # start says where they live
    assert admin_password(kafka_broker) not in started.stdout + started.stderr
