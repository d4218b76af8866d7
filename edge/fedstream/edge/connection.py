"""Opening Kafka clients with security, and saying clearly why a connection was refused.

kafka-python 3.0 reports every failed bootstrap the same way: after the whole bootstrap
timeout it raises ``KafkaTimeoutError('Unable to bootstrap from ...')``, whether the broker
is down, refused the password, does not know the user, or presented a certificate that the
configured CA did not sign (measured against the local stack). The real cause only reaches
its log. A device must instead be told at once what to fix, so before a client is built,
`check_broker` talks to one bootstrap server the way the client will (TCP, TLS with the
configured CA and hostname check, ApiVersions, SaslHandshake, SASL authentication) and
turns a refusal into an `AuthenticationError` that names the setting to check. That costs
one round of handshakes (milliseconds), is done once per process and (servers, settings),
and is repeated when a client later fails, to explain that failure.

A broker that does not answer at all is left to the client's own bootstrap timeout (a
device may start before its broker), so `BrokerUnavailableError` keeps its meaning.

The check speaks four request types of the Kafka protocol with the stdlib (`socket`,
`ssl`) in their oldest versions that Kafka 4 still serves (ApiVersions v0, SaslHandshake
v1, SaslAuthenticate v0); SCRAM itself is kafka-python's `ScramClient`, the code the real
client runs.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from fedstream.edge.errors import AuthenticationError, BrokerUnavailableError
from fedstream.edge.security import ENV_CA_FILE, ENV_PROTOCOL, KafkaSecurity

__all__ = ["check_broker", "hidden_topic_hint", "open_kafka_client"]

T = TypeVar("T")

_API_VERSIONS, _SASL_HANDSHAKE, _SASL_AUTHENTICATE = 18, 17, 36
_UNSUPPORTED_SASL_MECHANISM, _ILLEGAL_SASL_STATE = 33, 34
_CLIENT_ID = b"fedstream-check"

# (servers, settings, in-memory password): settings compare without their password
_verified: set[tuple[str, KafkaSecurity, str | None]] = set()
_verified_lock = threading.Lock()


class _ClosedError(Exception):
    """The broker closed the connection before answering."""


class _UnreachableError(Exception):
    """No TCP connection to the server."""


def _servers(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        out.append((host.strip("[]"), int(port)))
    return out


def _tls_context(security: KafkaSecurity) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(security.ca_file) if security.ca_file else None)
    context.check_hostname = True
    return context


class _Wire:
    """A blocking connection that exchanges framed Kafka requests (header v1)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.correlation = 0

    def call(self, api_key: int, version: int, body: bytes) -> bytes:
        self.correlation += 1
        header = struct.pack(">hhih", api_key, version, self.correlation, len(_CLIENT_ID))
        payload = header + _CLIENT_ID + body
        try:
            self.sock.sendall(struct.pack(">i", len(payload)) + payload)
            size = struct.unpack(">i", self._read(4))[0]
            data = self._read(size)
        except (ConnectionError, ssl.SSLError, TimeoutError) as error:
            raise _ClosedError(str(error)) from error
        if struct.unpack_from(">i", data)[0] != self.correlation:
            raise _ClosedError("answer out of order (not a Kafka broker?)")
        return data[4:]

    def _read(self, count: int) -> bytes:
        chunks = b""
        while len(chunks) < count:
            chunk = self.sock.recv(count - len(chunks))
            if not chunk:
                raise ConnectionResetError("connection closed by the broker")
            chunks += chunk
        return chunks


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def _connect(host: str, port: int, security: KafkaSecurity, timeout_s: float) -> _Wire:
    """TCP (+ TLS) to one server; raises _UnreachableError or AuthenticationError."""
    where = f"{host}:{port}"
    try:
        raw = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as error:
        raise _UnreachableError(f"{where}: {error}") from error
    if not security.uses_tls:
        return _Wire(raw)
    try:
        return _Wire(_tls_context(security).wrap_socket(raw, server_hostname=host))
    except ssl.SSLCertVerificationError as error:
        raw.close()
        trust = f"the CA file {security.ca_file}" if security.ca_file else "the system's CAs"
        raise AuthenticationError(
            f"TLS: the certificate of the Kafka broker at {where} is not trusted by {trust} "
            f"({error.verify_message}); check {ENV_CA_FILE} / ca_file: it must hold the CA "
            "that signed the broker's certificate (local stack: "
            "infra/local/.run/kafka/credentials/ca.pem of the running stack)"
        ) from None
    except (ssl.SSLError, ConnectionError, TimeoutError) as error:
        raw.close()
        raise AuthenticationError(
            f"TLS handshake with the Kafka broker at {where} failed ({error}): the listener "
            f"may not speak TLS; check the security protocol ({security.protocol}, "
            f"{ENV_PROTOCOL})"
        ) from None


def _api_versions(wire: _Wire, where: str, security: KafkaSecurity) -> None:
    try:
        wire.call(_API_VERSIONS, 0, b"")
    except _ClosedError:
        hint = (
            "it probably requires TLS: use SASL_SSL"
            if not security.uses_tls
            else "is it a Kafka listener?"
        )
        raise AuthenticationError(
            f"the Kafka broker at {where} closed the connection on a {security.protocol} "
            f"request; {hint} (check {ENV_PROTOCOL})"
        ) from None


def _handshake(wire: _Wire, mechanism: str) -> tuple[int, list[str]]:
    """SaslHandshake v1: (error code, the mechanisms the listener enables)."""
    answer = wire.call(_SASL_HANDSHAKE, 1, _string(mechanism))
    error, count = struct.unpack_from(">hi", answer)
    offered, at = [], 6
    for _ in range(max(count, 0)):
        (length,) = struct.unpack_from(">h", answer, at)
        offered.append(answer[at + 2 : at + 2 + length].decode())
        at += 2 + length
    return error, offered


def _authenticate(wire: _Wire, token: bytes) -> tuple[int, str, bytes]:
    """SaslAuthenticate v0: (error code, error message, server bytes)."""
    answer = wire.call(_SASL_AUTHENTICATE, 0, struct.pack(">i", len(token)) + token)
    error, length = struct.unpack_from(">hh", answer)
    at = 4 + max(length, 0)
    message = answer[4:at].decode(errors="replace") if length > 0 else ""
    (size,) = struct.unpack_from(">i", answer, at)
    return error, message, answer[at + 4 : at + 4 + max(size, 0)]


def _sasl(wire: _Wire, where: str, security: KafkaSecurity) -> None:
    try:
        error, offered = _handshake(wire, security.mechanism)
    except _ClosedError:
        raise AuthenticationError(
            f"the Kafka broker at {where} closed the connection on a SASL handshake: its "
            f"listener may not use SASL; check the security protocol ({security.protocol}, "
            f"{ENV_PROTOCOL})"
        ) from None
    if error == _UNSUPPORTED_SASL_MECHANISM:
        raise AuthenticationError(
            f"the Kafka broker at {where} does not enable SASL mechanism {security.mechanism} "
            f"(it offers {', '.join(offered) or 'none'}); check sasl_mechanism"
        )
    if error == _ILLEGAL_SASL_STATE:
        raise AuthenticationError(
            f"the Kafka broker at {where} does not use SASL on this listener; check the "
            f"security protocol ({security.protocol}, {ENV_PROTOCOL})"
        )
    if error:
        raise AuthenticationError(f"SASL handshake with {where} failed (Kafka error {error})")
    try:
        refused = _exchange(wire, security)
    except _ClosedError:
        refused = "the broker closed the connection"
    if refused:
        source = (
            f"the password file {security.password_file}"
            if security.password_file
            else "the password"
        )
        raise AuthenticationError(
            f"the Kafka broker at {where} refused user {security.username!r} "
            f"({security.mechanism}): {refused}; check the username and {source} (an unknown "
            "user and a wrong password look the same to a client, on purpose)"
        )


def _exchange(wire: _Wire, security: KafkaSecurity) -> str | None:
    """Run the SASL exchange; the broker's refusal message, or None when accepted."""
    assert security.username is not None  # validated by KafkaSecurity
    password = security.resolve_password()
    if security.mechanism == "PLAIN":
        token = b"\0" + security.username.encode() + b"\0" + password.encode()
        error, message, _ = _authenticate(wire, token)
        return (message or f"Kafka error {error}") if error else None
    from kafka.net.sasl.scram import ScramClient  # the client's own SCRAM implementation

    scram = ScramClient(security.username, password, security.mechanism)
    error, message, server_first = _authenticate(wire, scram.first_message())
    if error:
        return message or f"Kafka error {error}"
    scram.process_server_first_message(server_first)
    error, message, server_final = _authenticate(wire, scram.final_message())
    if error:
        return message or f"Kafka error {error}"
    try:
        scram.process_server_final_message(server_final)
    except ValueError as bad:
        return f"the broker's SCRAM proof is wrong ({bad})"
    return None


def _sasl_required(wire: _Wire, where: str, security: KafkaSecurity) -> None:
    """A client without SASL: refuse clearly when the listener requires SASL."""
    try:
        error, offered = _handshake(wire, "PLAIN")
    except _ClosedError:
        return  # the listener has no SASL: nothing to authenticate
    if error in (0, _UNSUPPORTED_SASL_MECHANISM) and offered:
        raise AuthenticationError(
            f"the Kafka broker at {where} requires SASL authentication ({', '.join(offered)}) "
            f"but the client uses {security.protocol}: use SASL_SSL with a username and "
            "password"
        )


def check_broker(bootstrap: str, security: KafkaSecurity, timeout_s: float = 10.0) -> None:
    """Connect to the first reachable bootstrap server as a client with `security` would.

    Raises `AuthenticationError` (what to check: CA, protocol, mechanism, username or
    password) when the broker refuses the client or the client cannot trust the broker,
    `BrokerUnavailableError` when no server accepts a TCP connection. Returns when the
    server accepted the client.
    """
    unreachable = []
    for host, port in _servers(bootstrap):
        where = f"{host}:{port}"
        try:
            wire = _connect(host, port, security, timeout_s)
        except _UnreachableError as error:
            unreachable.append(str(error))
            continue
        try:
            _api_versions(wire, where, security)
            if security.uses_sasl:
                _sasl(wire, where, security)
            else:
                _sasl_required(wire, where, security)
            return
        finally:
            wire.sock.close()
    raise BrokerUnavailableError(
        f"no Kafka broker answered at {bootstrap} ({'; '.join(unreachable)})"
    )


def hidden_topic_hint(security: KafkaSecurity) -> str:
    """What to add to "topic does not exist": with an authorizer, a topic the principal may
    not describe is reported exactly like a missing one (measured with a user without
    ACLs), and the device's operator must learn that it may be an ACL."""
    if not security.uses_sasl:
        return ""
    return f", or user {security.username!r} has no ACL to see it"


def _check_once(bootstrap: str, security: KafkaSecurity, timeout_s: float) -> None:
    """`check_broker`, once per process for the same servers and settings; a broker that
    is not reachable yet is left to the client's own bootstrap timeout."""
    key = (bootstrap, security, security.password)
    with _verified_lock:
        if key in _verified:
            return
    try:
        check_broker(bootstrap, security, timeout_s)
    except BrokerUnavailableError:
        return
    with _verified_lock:
        _verified.add(key)


def open_kafka_client(
    factory: Callable[..., T],
    bootstrap: str,
    security: KafkaSecurity,
    *,
    timeout_s: float,
    what: str = "Kafka client",
    **settings: Any,
) -> T:
    """``factory(bootstrap_servers=..., <security kwargs>, **settings)``, with clear errors.

    `factory` is a kafka-python client class (KafkaProducer, KafkaConsumer,
    KafkaAdminClient). Raises `AuthenticationError` for a refused or untrusted connection
    (at once, not after the bootstrap timeout) and `BrokerUnavailableError` when no broker
    answered within the client's bootstrap timeout.
    """
    import kafka.errors

    _check_once(bootstrap, security, timeout_s)
    try:
        return factory(bootstrap_servers=bootstrap, **security.kafka_python_kwargs(), **settings)
    except kafka.errors.KafkaError as error:
        with _verified_lock:
            _verified.discard((bootstrap, security, security.password))
        check_broker(bootstrap, security, timeout_s)  # raises the precise cause if it finds one
        raise BrokerUnavailableError(
            f"{what}: no Kafka broker answered at {bootstrap} within {timeout_s:g} s ({error})"
        ) from error
