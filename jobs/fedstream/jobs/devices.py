"""The device registry, operated from a shell: device key pairs, register, revoke, list.

The registry is the compacted devices topic (`topics.devices`): one `DeviceKey` record per
device, Kafka key = device_id, so the topic keeps each device's newest entry and the job
(which reads it from the beginning) always knows every device's current key. Writing it is
an operator's right (the admin principal; devices have no ACL on it: Terraform's
acl-matrix), never a device's: a device that could write it could register a key for any
device id.

Only public keys travel: `keygen` writes the private key to a 0600 file for the device and
prints nothing of it; `register` reads a PEM public key file.

`InMemoryDevices` is a simulated fleet whose keys never touch a disk (the benchmarks and the
tests): each device's key is generated on first use and kept in memory; it signs that
device's updates and writes the registry record an operator would publish for it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedstream.jobs.config import JobConfig
from fedstream.schemas import DeviceKey, decode, encode
from fedstream.schemas.signing import ReleaseSigner, key_id_of, load_public_key, write_key_pair
from fedstream.schemas.update_signing import DEVICE_KEY_NAME, device_key_record, sign_update

__all__ = ["InMemoryDevices", "enroll", "generate", "list_devices", "register", "revoke"]


class InMemoryDevices:
    """Device identities held in this process's memory only (never written anywhere):
    one Ed25519 key per device id, generated on first use."""

    def __init__(self) -> None:
        self.signers: dict[str, ReleaseSigner] = {}

    def signer(self, device_id: str) -> ReleaseSigner:
        """The key of `device_id` (generated once)."""
        if device_id not in self.signers:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            key = Ed25519PrivateKey.generate()
            self.signers[device_id] = ReleaseSigner(key, key_id_of(key.public_key()))
        return self.signers[device_id]

    def signed(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """`record` (a GradientUpdate) signed by its device's key."""
        return sign_update(record, self.signer(str(record["device_id"])))

    def signed_bytes(self, record: Mapping[str, Any]) -> bytes:
        """The encoded, signed GradientUpdate."""
        return encode("GradientUpdate", self.signed(record))

    def key_bytes(self, device_id: str, *, status: str = "ACTIVE", created_at: int) -> bytes:
        """The encoded DeviceKey record registering (or, status REVOKED, revoking) the
        device's key, as the operator writes it to the registry."""
        public = self.signer(device_id).key.public_key()
        record = device_key_record(device_id, public, status=status, created_at=created_at)
        return encode("DeviceKey", record)


def generate(out: Path) -> tuple[Path, Path, str]:
    """A device key pair in `out`: device.key (PKCS#8 PEM, 0600, for the device's
    `EdgeConfig.device_key_file`) and device.pub (for `register`); never overwrites."""
    return write_key_pair(out, DEVICE_KEY_NAME)


def _publish(config: JobConfig, record: DeviceKey) -> None:
    from kafka import KafkaProducer

    from fedstream.jobs.kafka_clients import kafka_client

    producer = kafka_client(KafkaProducer, config, what="device registry producer", acks="all")
    try:
        value = encode("DeviceKey", record)
        producer.send(config.topics.devices, value, key=record["device_id"].encode()).get(
            timeout=30
        )
    finally:
        producer.close()


def register(config: JobConfig, device_id: str, public_key_file: Path) -> DeviceKey:
    """Register (or rotate to) the key in `public_key_file` for `device_id`: from now on
    only updates signed with it are accepted from that device."""
    if not device_id:
        raise ValueError("device_id must not be empty")
    key = load_public_key(public_key_file)
    record = device_key_record(device_id, key, created_at=int(time.time() * 1000))
    _publish(config, record)
    return record


def revoke(config: JobConfig, device_id: str) -> DeviceKey:
    """Revoke the device's registered key: every later update of it is refused until a
    new key is registered. The entry keeps the key (so an auditor sees which one)."""
    current = list_devices(config).get(device_id)
    if current is None:
        raise LookupError(f"device {device_id!r} is not registered on {config.topics.devices}")
    record: DeviceKey = {
        **current,
        "status": "REVOKED",
        "created_at": int(time.time() * 1000),
    }
    _publish(config, record)
    return record


def list_devices(config: JobConfig) -> dict[str, DeviceKey]:
    """Every device's newest registry entry (what compaction keeps)."""
    from fedstream.jobs.kafka_read import read_topic

    out: dict[str, DeviceKey] = {}
    for value in read_topic(config.kafka.bootstrap, config.topics.devices, config.kafka.security()):
        record: DeviceKey = decode(value, expected="DeviceKey").record  # type: ignore[assignment]
        out[record["device_id"]] = record
    return out


def enroll(config: JobConfig, folder: Path, device_ids: list[str]) -> None:
    """A simulated fleet's identities (the demo, benchmarks): each device's key pair in
    folder/<device_id>/ (created once, kept across runs), registered by the operator
    `config` logs in as. The simulator's `--device-keys folder` signs with them."""
    from kafka import KafkaProducer

    from fedstream.jobs.kafka_clients import kafka_client

    producer = kafka_client(KafkaProducer, config, what="device registry producer", acks="all")
    try:
        for device_id in device_ids:
            public = folder / device_id / f"{DEVICE_KEY_NAME}.pub"
            if not public.exists():
                generate(folder / device_id)
            record = device_key_record(
                device_id, load_public_key(public), created_at=int(time.time() * 1000)
            )
            producer.send(
                config.topics.devices, encode("DeviceKey", record), key=device_id.encode()
            )
        producer.flush(timeout=30)
    finally:
        producer.close()
