"""Device identities for tests: the one place that makes a device key, registers it, signs.

The job requires signed updates by default, so every test that feeds it updates needs its
devices' keys in the job's registry. `device_signer(device_id)` is that device's Ed25519
key, generated on first use and kept in this process's memory only (never written to the
repository or a log); `signed` / `signed_bytes` sign a GradientUpdate with it, and
`device_key_bytes` is the DeviceKey registry record an operator would write for it (or,
with status REVOKED, the one that revokes it). `register_devices` writes those records to
a real broker's devices topic, as the operator's CLI does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fedstream.jobs.devices import InMemoryDevices
from fedstream.schemas.signing import ReleaseSigner, write_key_pair
from fedstream.schemas.update_signing import DEVICE_KEY_NAME

__all__ = [
    "DEVICES_TOPIC",
    "device_key_bytes",
    "device_key_file",
    "device_signer",
    "enroll_fleet",
    "enrolled",
    "register_devices",
    "signed",
    "signed_bytes",
]

#: The default devices topic of `fedstream.jobs.config.TopicsConfig`.
DEVICES_TOPIC = "fl.devices"
#: Fixed registry timestamp, so test records are reproducible apart from the keys.
REGISTERED_AT = 1_767_225_600_000

#: This process's test devices (`fedstream.jobs.devices.InMemoryDevices`).
_DEVICES = InMemoryDevices()


def device_signer(device_id: str) -> ReleaseSigner:
    """The test key of `device_id` (generated once per process, in memory)."""
    return _DEVICES.signer(device_id)


def device_key_file(folder: Path, device_id: str) -> Path:
    """A device key pair on disk (folder/<device_id>/device.key, 0600, and .pub), for the
    SDK's `EdgeConfig.device_key_file`; its signer replaces the in-memory one."""
    from fedstream.schemas.signing import load_signing_key

    directory = folder / device_id
    private = directory / f"{DEVICE_KEY_NAME}.key"
    if not private.exists():
        write_key_pair(directory, DEVICE_KEY_NAME)
    _DEVICES.signers[device_id] = load_signing_key(private)
    return private


def signed(record: Mapping[str, Any]) -> dict[str, Any]:
    """`record` (a GradientUpdate) signed by its device's test key."""
    return _DEVICES.signed(record)


def signed_bytes(record: Mapping[str, Any]) -> bytes:
    """The encoded, signed GradientUpdate."""
    return _DEVICES.signed_bytes(record)


def device_key_bytes(device_id: str, *, status: str = "ACTIVE") -> bytes:
    """The encoded DeviceKey record registering (or revoking) the device's test key."""
    return _DEVICES.key_bytes(device_id, status=status, created_at=REGISTERED_AT)


def register_devices(
    broker: Any, topic: str, device_ids: Iterable[str], *, status: str = "ACTIVE"
) -> None:
    """Write the devices' registry records to `topic` on `broker` (as its admin, the
    operator), keyed by device id, and wait until the broker has them."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**broker.client_kwargs(), acks="all")
    try:
        for device_id in device_ids:
            value = device_key_bytes(device_id, status=status)
            producer.send(topic, value, key=device_id.encode()).get(timeout=30)
    finally:
        producer.close()


def enrolled(broker: Any, topic: str, folder: Path, device_id: str) -> Path:
    """A device key file for the SDK (`EdgeConfig.device_key_file`), registered on `topic`:
    what an operator does for a real device before it starts sending."""
    key = device_key_file(folder, device_id)
    register_devices(broker, topic, [device_id])
    return key


def enroll_fleet(broker: Any, topic: str, folder: Path, device_ids: Iterable[str]) -> Path:
    """Key files for many SDK devices (folder/<device_id>/device.key, the simulator's
    `--device-keys` layout), all registered on `topic`; returns `folder`."""
    ids = list(device_ids)
    for device_id in ids:
        device_key_file(folder, device_id)
    register_devices(broker, topic, ids)
    return folder
