"""Where a device finds the broker and the topics, and how patient it is.

Topic names and size limits are configuration, never literals (README.md, "The wire
contract"); the defaults match the job's `jobs/config/local.toml`, so a device and a job
started with no configuration talk to each other on the local stack.

How the device authenticates is `security` (`KafkaSecurity`): by default it is read from
the ``FEDSTREAM_KAFKA_*`` environment (`KafkaSecurity.from_env`), and building an
`EdgeConfig` without credentials for a SASL listener is an error that says what to set.

Which releases it installs is `trusted_keys`: the job's Ed25519 public keys (one or more,
for rotation), by default the PEM files named in ``FEDSTREAM_TRUSTED_KEYS``
(`TrustedKeys.from_env`). A device trusting no key installs nothing, and an unsigned
release is refused unless `allow_unsigned_releases` is set, which is meant for local
experiments only (anyone who can write the models topic can then forge a model).

A model owner's client also has `owner_key_file`, the Ed25519 private key its
registrations are signed with (by default the PEM file named in
``FEDSTREAM_OWNER_KEY_FILE``); the job acts only on registrations signed by an owner key it
trusts. Devices need none.

Who the device is, is `device_key_file`: its Ed25519 private key (PKCS#8 PEM, 0600;
`fedstream devices keygen`), by default the file named in ``FEDSTREAM_DEVICE_KEY_FILE``.
Every update is signed with it, and the job accepts only updates signed by the key an
operator registered for the device. The key is read once, here, and never logged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from fedstream.edge.security import KafkaSecurity
from fedstream.schemas.registration_signing import owner_key_from_env
from fedstream.schemas.signing import ReleaseSigner, SigningKeyError, TrustedKeys, load_signing_key
from fedstream.schemas.update_signing import device_key_from_env

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "EdgeConfig"]

#: The job's default topic limit (topics.updates_max_message_bytes / models_...).
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """Connection, topic and timeout settings shared by everything a device does."""

    bootstrap: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, ``host:port[,host:port]``."""
    security: KafkaSecurity = field(default_factory=KafkaSecurity.from_env)
    """Protocol, SASL credentials and CA (default: from the FEDSTREAM_KAFKA_* environment)."""
    updates_topic: str = "fl.updates"
    control_topic: str = "fl.control"
    models_topic: str = "fl.models"
    dlq_topic: str = "fl.dlq"
    connect_timeout_s: float = 10.0
    """How long to wait for the first broker answer before `BrokerUnavailableError`."""
    send_timeout_s: float = 30.0
    """How long one send may take, retries included, before `BrokerUnavailableError`."""
    retries: int = 5
    """Producer retries for transient broker errors (bounded: a device must hear about an
    outage instead of buffering forever). Safe with idempotence: no duplicates."""
    compression_type: str | None = "gzip"
    """Kafka batch compression. gzip needs no extra package in kafka-python (lz4 and
    snappy do); None disables it. Float deltas compress little, Avro framing does."""
    max_request_size: int = DEFAULT_MAX_MESSAGE_BYTES
    """Largest record the producer sends; the topic's own limit is checked too."""
    max_fragments: int = 1024
    """Most fragments one record may be sent in when it is larger than its topic takes
    (a large model's update or registration; the job's limits.max_fragments); beyond,
    `PayloadTooLargeError`."""
    max_fetch_bytes: int = DEFAULT_MAX_MESSAGE_BYTES + 65536
    """Largest release record the consumer must be able to fetch (models topic limit)."""
    client_id: str | None = None
    """Kafka client id (shows up in broker logs and quotas); defaults to the device id."""
    trusted_keys: TrustedKeys = field(default_factory=TrustedKeys.from_env)
    """The job's release-signing public keys (`TrustedKeys.from_files("job-signing.pub")`,
    or several, to rotate the job's key). Releases signed by any other key, or not at all,
    are refused with `InvalidSignatureError`. Default: the files in $FEDSTREAM_TRUSTED_KEYS
    (os.pathsep-separated); unset, none, so nothing is installed."""
    allow_unsigned_releases: bool = False
    """Install releases that carry no signature (a job without a key). Local experiments
    only: it lets anyone who can write the models topic install a model. A release that
    is signed is always verified."""
    owner_key_file: str | os.PathLike[str] | None = field(default_factory=owner_key_from_env)
    """A model owner's Ed25519 private key file (PKCS#8 PEM, `fedstream keygen --owner`):
    `register` signs with it, and the job refuses registrations no trusted owner signed.
    Default: $FEDSTREAM_OWNER_KEY_FILE; None: registrations go out unsigned."""
    owner_signer: ReleaseSigner | None = field(default=None, init=False, repr=False, compare=False)
    """The key loaded from `owner_key_file` (its repr shows the key id only)."""
    device_key_file: str | os.PathLike[str] | None = field(default_factory=device_key_from_env)
    """The device's Ed25519 private key file (PKCS#8 PEM, `fedstream devices keygen`);
    every update is signed with it. Default: $FEDSTREAM_DEVICE_KEY_FILE; None: updates are
    unsigned, which a job accepts only with trust.allow_unsigned_updates (legacy fleets)."""
    device_signer: ReleaseSigner | None = field(default=None, init=False, repr=False, compare=False)
    """The key loaded from `device_key_file` (its repr shows the key id only)."""

    def __post_init__(self) -> None:
        servers = [s.strip() for s in self.bootstrap.split(",")]
        if not self.bootstrap or not all(s.rpartition(":")[2].isdigit() for s in servers):
            raise ValueError(f"bootstrap must be host:port[,host:port], got {self.bootstrap!r}")
        topics = (self.updates_topic, self.control_topic, self.models_topic, self.dlq_topic)
        if not all(topics):
            raise ValueError("topic names must not be empty")
        for name in ("connect_timeout_s", "send_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.compression_type not in (None, "gzip", "lz4", "snappy", "zstd"):
            raise ValueError(f"unknown compression_type {self.compression_type!r}")
        if self.max_request_size <= 0 or self.max_fetch_bytes <= 0 or self.max_fragments <= 0:
            raise ValueError("max_request_size, max_fetch_bytes and max_fragments must be > 0")
        object.__setattr__(self, "owner_signer", _signer("owner_key_file", self.owner_key_file))
        object.__setattr__(self, "device_signer", _signer("device_key_file", self.device_key_file))


_KEYGEN = {
    "owner_key_file": "fedstream keygen --owner",
    "device_key_file": "fedstream devices keygen",
}


def _signer(name: str, path: str | os.PathLike[str] | None) -> ReleaseSigner | None:
    """The key in `path` (None: no key), or ValueError naming the field and the file,
    never its contents."""
    if path is None:
        return None
    try:
        return load_signing_key(path)
    except SigningKeyError as error:
        raise ValueError(f"{name}: {error} (create a pair: {_KEYGEN[name]})") from None
