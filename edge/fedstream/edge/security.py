"""How a Kafka client proves who it is, and checks whom it talks to: one settings type.

Every Python client of fedstream (the device SDK, the job's CLI and topic tools, the Flink
job's connector properties, the simulator, the benchmarks, the tests) builds its Kafka
security settings from `KafkaSecurity`, so there is one place that knows the protocol,
the SASL mechanism, where the password comes from and which CA to trust, and one place
that validates them with messages naming what to fix.

The local stack (``infra/local/kafka.sh``) serves SASL_SSL with SCRAM-SHA-512 and a CA of
its own; ``kafka.sh env`` prints the matching environment for `KafkaSecurity.from_env`.

Secrets: the password is read from a file (``password_file``) or, when there is no file,
from the environment (``FEDSTREAM_KAFKA_PASSWORD``) or a constructor argument. It is never
part of `repr`/`str`, never logged, and the Java properties that carry it are written to
files readable by the owner only (`write_java_properties`), never passed as arguments.

Unsecured PLAINTEXT stays possible for a broker that has no security, but only when asked
for explicitly (``KafkaSecurity.plaintext()`` or ``FEDSTREAM_KAFKA_SECURITY_PROTOCOL=
PLAINTEXT``): the default is SASL_SSL, and an incomplete SASL_SSL setting is an error, not a
silent fall-back to anonymous.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedstream.edge.errors import EdgeError

__all__ = [
    "ENV_CA_FILE",
    "ENV_MECHANISM",
    "ENV_PASSWORD",
    "ENV_PASSWORD_FILE",
    "ENV_PROTOCOL",
    "ENV_USERNAME",
    "FLINK_CONNECTOR_SHADED_PREFIX",
    "MECHANISMS",
    "PROTOCOLS",
    "KafkaSecurity",
    "SecurityConfigError",
    "add_arguments",
    "from_arguments",
    "write_java_properties",
]

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")

ENV_PROTOCOL = "FEDSTREAM_KAFKA_SECURITY_PROTOCOL"
ENV_MECHANISM = "FEDSTREAM_KAFKA_SASL_MECHANISM"
ENV_USERNAME = "FEDSTREAM_KAFKA_USERNAME"
ENV_PASSWORD_FILE = "FEDSTREAM_KAFKA_PASSWORD_FILE"
ENV_PASSWORD = "FEDSTREAM_KAFKA_PASSWORD"
ENV_CA_FILE = "FEDSTREAM_KAFKA_CA_FILE"

#: Where flink-sql-connector-kafka relocates the Kafka client classes it bundles.
FLINK_CONNECTOR_SHADED_PREFIX = "org.apache.flink.kafka.shaded."

_LOGIN_MODULES = {
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
}


class SecurityConfigError(EdgeError, ValueError):
    """The Kafka security settings are incomplete or contradict each other (or the password
    file cannot be read). A ValueError like every other configuration error, and an
    `EdgeError` because a device may hit it when it (re)connects."""


def _path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None or str(value) == "" else Path(value)


def _jaas_quote(value: str) -> str:
    """A JAAS option value in double quotes (backslash and quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True, repr=False, init=False)
class KafkaSecurity:
    """Security settings of one Kafka client. Validated on construction.

    ``protocol``: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (default). ``mechanism``: the
    SASL mechanism, SCRAM-SHA-512 (default), SCRAM-SHA-256 or PLAIN. ``username`` and one of
    ``password_file`` (read at connect time, trailing newline dropped) or ``password`` are
    required with SASL. ``ca_file``: PEM file of the CA(s) that signed the brokers'
    certificates; None trusts the system's CAs. Hostnames are always verified.
    """

    protocol: str = "SASL_SSL"
    mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    password: str | None = field(default=None, compare=False)

    def __init__(
        self,
        protocol: str = "SASL_SSL",
        mechanism: str = "SCRAM-SHA-512",
        username: str | None = None,
        password_file: str | os.PathLike[str] | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        password: str | None = None,
    ) -> None:
        # written out (not generated) to accept str paths and lower-case names, stored
        # normalized, and to validate once
        for name, value in (
            ("protocol", str(protocol).upper()),
            ("mechanism", str(mechanism).upper()),
            ("username", username),
            ("password_file", _path(password_file)),
            ("ca_file", _path(ca_file)),
            ("password", password),
        ):
            object.__setattr__(self, name, value)
        self._validate()

    # ------------------------------------------------------------------ building
    @classmethod
    def plaintext(cls) -> KafkaSecurity:
        """No TLS, no authentication: only for a broker that has no security at all."""
        return cls(protocol="PLAINTEXT")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSecurity:
        """Settings from ``FEDSTREAM_KAFKA_*`` variables (see `kafka.sh env`).

        SECURITY_PROTOCOL (default SASL_SSL), SASL_MECHANISM (default SCRAM-SHA-512),
        USERNAME, PASSWORD_FILE (preferred) or PASSWORD, CA_FILE.
        """
        env = os.environ if environ is None else environ
        password_file = env.get(ENV_PASSWORD_FILE) or None
        return cls(
            protocol=env.get(ENV_PROTOCOL) or "SASL_SSL",
            mechanism=env.get(ENV_MECHANISM) or "SCRAM-SHA-512",
            username=env.get(ENV_USERNAME) or None,
            password_file=_path(password_file),
            ca_file=_path(env.get(ENV_CA_FILE) or None),
            password=None if password_file else (env.get(ENV_PASSWORD) or None),
        )

    # ------------------------------------------------------------------ properties
    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol.endswith("SSL")

    def describe(self) -> str:
        """A one-line summary for messages (never the password)."""
        who = f" as {self.username!r}" if self.uses_sasl else ""
        how = f"/{self.mechanism}" if self.uses_sasl else ""
        trust = f", CA {self.ca_file}" if self.ca_file else ""
        return f"{self.protocol}{how}{who}{trust}"

    def __repr__(self) -> str:
        secret = (
            f"password_file={str(self.password_file)!r}"
            if self.password_file
            else f"password={'<hidden>' if self.password else None}"
        )
        return (
            f"KafkaSecurity(protocol={self.protocol!r}, mechanism={self.mechanism!r}, "
            f"username={self.username!r}, {secret}, "
            f"ca_file={str(self.ca_file) if self.ca_file else None!r})"
        )

    __str__ = __repr__

    # ------------------------------------------------------------------ secrets
    def resolve_password(self) -> str:
        """The password: from ``password_file`` (read now, so a rotated file is picked up)
        or the one given. Raises `SecurityConfigError` if it cannot be read or is empty."""
        if self.password_file is None:
            if not self.password:
                raise SecurityConfigError(f"no password for Kafka user {self.username!r}")
            return self.password
        try:
            text = self.password_file.read_text(encoding="utf-8")
        except OSError as error:
            raise SecurityConfigError(
                f"cannot read the Kafka password file {self.password_file} "
                f"({error.strerror or error}); check {ENV_PASSWORD_FILE} / password_file"
            ) from None
        password = text.rstrip("\r\n")
        if not password:
            raise SecurityConfigError(f"the Kafka password file {self.password_file} is empty")
        return password

    # ------------------------------------------------------------------ client settings
    def kafka_python_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python 3.0 clients (producer, consumer, admin)."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_sasl:
            kwargs["sasl_mechanism"] = self.mechanism
            kwargs["sasl_plain_username"] = self.username
            kwargs["sasl_plain_password"] = self.resolve_password()
        if self.uses_tls:
            kwargs["ssl_check_hostname"] = True
            if self.ca_file is not None:
                kwargs["ssl_cafile"] = str(self.ca_file)
        return kwargs

    def java_properties(self, shaded_prefix: str = "") -> dict[str, str]:
        """Properties for Java clients (Flink's Kafka connector, Kafka's command-line tools).

        Carries the password inside ``sasl.jaas.config``: hand it over in a 0600 file
        (`write_java_properties`) or inside a job graph, never as a process argument.
        `shaded_prefix` is prepended to the JAAS login module's class name for a client
        whose Kafka classes are relocated: ``flink-sql-connector-kafka`` shades them under
        `FLINK_CONNECTOR_SHADED_PREFIX` (measured: the plain name gives "No LoginModule
        found for org.apache.kafka.common.security.scram.ScramLoginModule").
        """
        props = {"security.protocol": self.protocol}
        if self.uses_sasl:
            assert self.username is not None  # checked by _validate
            props["sasl.mechanism"] = self.mechanism
            props["sasl.jaas.config"] = (
                f"{shaded_prefix}{_LOGIN_MODULES[self.mechanism]} required "
                f"username={_jaas_quote(self.username)} "
                f"password={_jaas_quote(self.resolve_password())};"
            )
        if self.uses_tls and self.ca_file is not None:
            props["ssl.truststore.type"] = "PEM"
            props["ssl.truststore.location"] = str(self.ca_file.resolve())
        return props

    def arguments(self) -> list[str]:
        """These settings as the flags of `add_arguments`, for a child process.

        Paths only: a password that is not in a file must reach the child through its
        environment (FEDSTREAM_KAFKA_PASSWORD), never through its arguments.
        """
        flags = ["--security-protocol", self.protocol]
        if self.uses_sasl:
            flags += ["--username", str(self.username)]
        if self.password_file is not None:
            flags += ["--password-file", str(self.password_file.resolve())]
        if self.ca_file is not None:
            flags += ["--ca-file", str(self.ca_file.resolve())]
        return flags

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise SecurityConfigError(
                f"Kafka security protocol must be one of {', '.join(PROTOCOLS)}, "
                f"got {self.protocol!r} (check {ENV_PROTOCOL})"
            )
        if self.uses_sasl:
            self._validate_sasl()
        elif self.username or self.password or self.password_file:
            raise SecurityConfigError(
                f"a Kafka username/password is set but protocol {self.protocol} does not "
                "authenticate; use SASL_SSL (or drop the credentials)"
            )
        if self.ca_file is not None:
            if not self.uses_tls:
                raise SecurityConfigError(
                    f"ca_file is set but protocol {self.protocol} does not use TLS; use SASL_SSL"
                )
            if not self.ca_file.is_file():
                raise SecurityConfigError(
                    f"the Kafka CA file {self.ca_file} does not exist (check {ENV_CA_FILE} / "
                    "ca_file; the local stack writes it to "
                    "infra/local/.run/kafka/credentials/ca.pem when it starts)"
                )

    def _validate_sasl(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise SecurityConfigError(
                f"SASL mechanism must be one of {', '.join(MECHANISMS)}, got "
                f"{self.mechanism!r} (check {ENV_MECHANISM})"
            )
        if not self.username:
            raise SecurityConfigError(
                f"{self.protocol} needs a Kafka username: set {ENV_USERNAME} (or "
                "KafkaSecurity(username=...)); an unsecured broker needs "
                f"{ENV_PROTOCOL}=PLAINTEXT, explicitly"
            )
        if self.password_file is not None and self.password is not None:
            raise SecurityConfigError("give a Kafka password or a password file, not both")
        if self.password_file is None and not self.password:
            raise SecurityConfigError(
                f"Kafka user {self.username!r} needs a password: set {ENV_PASSWORD_FILE} "
                f"(a file holding it) or {ENV_PASSWORD}"
            )
        if self.password_file is not None and not self.password_file.is_file():
            raise SecurityConfigError(
                f"the Kafka password file {self.password_file} does not exist "
                f"(check {ENV_PASSWORD_FILE} / password_file)"
            )


def write_java_properties(path: str | os.PathLike[str], properties: Mapping[str, str]) -> Path:
    """Write Java client properties to `path`, readable by the owner only (0600).

    For Kafka's tools (``--command-config``, ``--producer.config``...): their properties
    carry the password, which must never be a command-line argument. Values are escaped
    the way `java.util.Properties` reads them.
    """
    target = Path(path)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when the file existed with wider permissions
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        for key, value in properties.items():
            handle.write(f"{_escape_property(key)}={_escape_property(value)}\n")
    return target


def _escape_property(text: str) -> str:
    """Escape for java.util.Properties: backslash, line breaks, and leading spaces."""
    out = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return "\\ " + out[1:] if out.startswith(" ") else out


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Command-line flags for the security settings (defaults: the environment).

    There is deliberately no password flag: arguments are visible to every local user
    (/proc/PID/cmdline); the password comes from a file or FEDSTREAM_KAFKA_PASSWORD.
    """
    parser.add_argument(
        "--security-protocol", help=f"SASL_SSL, SASL_PLAINTEXT, SSL or PLAINTEXT (${ENV_PROTOCOL})"
    )
    parser.add_argument("--username", help=f"SASL user (${ENV_USERNAME})")
    parser.add_argument("--password-file", help=f"file holding the password (${ENV_PASSWORD_FILE})")
    parser.add_argument("--ca-file", help=f"CA certificate(s), PEM (${ENV_CA_FILE})")


def from_arguments(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> KafkaSecurity:
    """`KafkaSecurity.from_env`, with the flags of `add_arguments` (when given) on top."""
    flags = {
        ENV_PROTOCOL: args.security_protocol,
        ENV_USERNAME: args.username,
        ENV_PASSWORD_FILE: args.password_file,
        ENV_CA_FILE: args.ca_file,
    }
    base = os.environ if environ is None else environ
    return KafkaSecurity.from_env({**base, **{k: v for k, v in flags.items() if v}})
