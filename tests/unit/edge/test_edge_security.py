"""`KafkaSecurity`: one settings type for every client, validated, and never showing a secret."""

from __future__ import annotations

import argparse
import re
import stat
from pathlib import Path

import pytest

from fedstream.edge import EdgeConfig, EdgeError, KafkaSecurity, SecurityConfigError
from fedstream.edge.security import add_arguments, from_arguments, write_java_properties

SECRET = "s3cr\"et\\with'quotes"


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    password = tmp_path / "user.password"
    password.write_text(SECRET + "\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    return password, ca


def test_the_default_is_sasl_ssl_and_incomplete_settings_say_what_to_set() -> None:
    with pytest.raises(SecurityConfigError, match="FEDSTREAM_KAFKA_USERNAME") as refused:
        KafkaSecurity()
    assert "PLAINTEXT, explicitly" in str(refused.value)  # no silent fall-back to anonymous
    with pytest.raises(SecurityConfigError, match="FEDSTREAM_KAFKA_PASSWORD_FILE"):
        KafkaSecurity(username="u")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"protocol": "TLS"}, "must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ({"username": "u", "password": "p", "mechanism": "GSSAPI"}, "SASL mechanism must be"),
        ({"username": "u", "password": "p", "password_file": "/x"}, "not both"),
        ({"username": "u", "password_file": "/nonexistent/pw"}, "/nonexistent/pw does not exist"),
        ({"username": "u", "password": "p", "ca_file": "/nonexistent/ca"}, "/nonexistent/ca"),
        ({"protocol": "PLAINTEXT", "username": "u"}, "does not authenticate"),
        ({"protocol": "SASL_PLAINTEXT", "username": "u", "password": "p", "ca_file": "/x"}, "TLS"),
    ],
)
def test_contradictions_are_refused(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(SecurityConfigError, match=re.escape(message)):
        KafkaSecurity(**kwargs)  # type: ignore[arg-type]


def test_errors_are_both_value_and_edge_errors() -> None:
    assert issubclass(SecurityConfigError, ValueError)
    assert issubclass(SecurityConfigError, EdgeError)


def test_plaintext_must_be_asked_for_and_then_sends_nothing_else() -> None:
    security = KafkaSecurity.plaintext()
    assert security.kafka_python_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert security.java_properties() == {"security.protocol": "PLAINTEXT"}


def test_repr_and_str_never_show_the_password(files: tuple[Path, Path]) -> None:
    password, ca = files
    in_memory = KafkaSecurity(username="u", password=SECRET, ca_file=ca)
    from_file = KafkaSecurity(username="u", password_file=password, ca_file=ca)
    for security in (in_memory, from_file):
        for text in (repr(security), str(security), security.describe(), f"{security}"):
            assert SECRET not in text and "s3cr" not in text
    assert "<hidden>" in repr(in_memory)
    assert str(password) in repr(from_file)  # where it comes from is fine to show


def test_kafka_python_kwargs_read_the_file_at_connect_time(files: tuple[Path, Path]) -> None:
    password, ca = files
    security = KafkaSecurity(username="dev-1", password_file=str(password), ca_file=str(ca))
    assert security.kafka_python_kwargs() == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "dev-1",
        "sasl_plain_password": SECRET,  # trailing newline dropped
        "ssl_check_hostname": True,
        "ssl_cafile": str(ca),
    }
    password.write_text("rotated\n")
    assert security.kafka_python_kwargs()["sasl_plain_password"] == "rotated"
    password.write_text("\n")
    with pytest.raises(SecurityConfigError, match="is empty"):
        security.kafka_python_kwargs()
    password.unlink()
    with pytest.raises(SecurityConfigError, match="cannot read the Kafka password file"):
        security.kafka_python_kwargs()


def test_java_properties_carry_a_quoted_jaas_line_and_a_pem_truststore(
    files: tuple[Path, Path],
) -> None:
    password, ca = files
    props = KafkaSecurity(username='odd"user', password_file=password, ca_file=ca).java_properties()
    assert props["security.protocol"] == "SASL_SSL"
    assert props["sasl.mechanism"] == "SCRAM-SHA-512"
    assert props["sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="odd\\"user" password="s3cr\\"et\\\\with\'quotes";'
    )
    assert props["ssl.truststore.type"] == "PEM"
    assert props["ssl.truststore.location"] == str(ca.resolve())
    plain = KafkaSecurity(mechanism="plain", username="u", password="p").java_properties()
    assert plain["sasl.mechanism"] == "PLAIN"
    assert plain["sasl.jaas.config"].startswith("org.apache.kafka.common.security.plain.")
    assert "ssl.truststore.location" not in plain  # no CA file: the JVM's own trust store


def test_java_properties_files_are_private_and_escaped(tmp_path: Path) -> None:
    target = tmp_path / "client.properties"
    target.write_text("old")
    target.chmod(0o644)
    write_java_properties(target, {"a.b": "x=y\\z", "c": " lead\nnext"})
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == "a.b=x=y\\\\z\nc=\\ lead\\nnext\n"


def test_from_env_prefers_the_password_file(files: tuple[Path, Path]) -> None:
    password, ca = files
    env = {
        "FEDSTREAM_KAFKA_USERNAME": "job",
        "FEDSTREAM_KAFKA_PASSWORD_FILE": str(password),
        "FEDSTREAM_KAFKA_PASSWORD": "ignored",
        "FEDSTREAM_KAFKA_CA_FILE": str(ca),
    }
    security = KafkaSecurity.from_env(env)
    assert (security.username, security.password_file, security.ca_file) == ("job", password, ca)
    assert security.resolve_password() == SECRET
    del env["FEDSTREAM_KAFKA_PASSWORD_FILE"]
    assert KafkaSecurity.from_env(env).resolve_password() == "ignored"
    assert KafkaSecurity.from_env({"FEDSTREAM_KAFKA_SECURITY_PROTOCOL": "plaintext"}).protocol == (
        "PLAINTEXT"
    )
    with pytest.raises(SecurityConfigError, match="FEDSTREAM_KAFKA_USERNAME"):
        KafkaSecurity.from_env({})


def test_edge_config_takes_its_security_from_the_environment(
    files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    password, ca = files
    for name in ("SECURITY_PROTOCOL", "SASL_MECHANISM", "PASSWORD"):
        monkeypatch.delenv(f"FEDSTREAM_KAFKA_{name}", raising=False)
    monkeypatch.setenv("FEDSTREAM_KAFKA_USERNAME", "cam-17")
    monkeypatch.setenv("FEDSTREAM_KAFKA_PASSWORD_FILE", str(password))
    monkeypatch.setenv("FEDSTREAM_KAFKA_CA_FILE", str(ca))
    assert EdgeConfig().security == KafkaSecurity(
        username="cam-17", password_file=password, ca_file=ca
    )
    monkeypatch.delenv("FEDSTREAM_KAFKA_USERNAME")
    with pytest.raises(SecurityConfigError, match="needs a Kafka username"):
        EdgeConfig()


def test_command_line_flags_round_trip_without_the_password(
    files: tuple[Path, Path],
) -> None:
    password, ca = files
    security = KafkaSecurity(username="admin", password_file=password, ca_file=ca)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = security.arguments()
    assert SECRET not in " ".join(flags)
    assert from_arguments(parser.parse_args(flags), environ={}) == security
    # flags override the environment, the environment fills the rest
    env = {"FEDSTREAM_KAFKA_USERNAME": "other", "FEDSTREAM_KAFKA_CA_FILE": str(ca)}
    parsed = parser.parse_args(["--username", "admin", "--password-file", str(password)])
    assert from_arguments(parsed, environ=env) == security
    assert "--password " not in parser.format_help()  # only --password-file exists
