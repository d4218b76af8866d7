"""A model registered and trained only through fragmented records, in the job's logic
without Flink (`InMemoryJob` with the device gate): the registry reassembles the owner's
registration, the gate each device's update, and the release equals initial + the mean
of the deltas, exactly as for records that came whole. A forged fragment in between is
refused and changes nothing."""

from __future__ import annotations

import numpy as np

from fedstream.pipelines.device_gate import DeviceGate
from fedstream.schemas import encode
from fedstream.schemas.fragments import FRAGMENT, split_record
from fedstream.schemas.signing import ReleaseSigner, TrustedKeys
from tests.support.devices import DEVICES_TOPIC, device_key_bytes, device_signer
from tests.support.local_job import InMemoryJob
from tests.support.onnx_models import linear_model
from tests.support.owner_key import owner_public_key, owner_signer
from tests.support.records import (
    CONTROL_TOPIC,
    UPDATES_TOPIC,
    flat_params,
    read_dead_letters,
    read_releases,
    registration_bytes,
    update_bytes,
)

ONNX = linear_model(60, 50, seed=2)


def fragmented(value: bytes, record_id: str, signer: str, key: ReleaseSigner) -> list[bytes]:
    parts = split_record(value, record_id=record_id, signer=signer, key=key, max_data_bytes=4000)
    assert len(parts) > 2
    return [encode(FRAGMENT, part) for part in parts]


def test_a_model_registered_and_trained_in_fragments() -> None:
    job = InMemoryJob(owner_keys=TrustedKeys.from_files(owner_public_key()), gate=DeviceGate())
    for device in ("fj-a", "fj-b"):
        job.send(device_key_bytes(device), DEVICES_TOPIC)
    owner = owner_signer()
    registration = registration_bytes("fj", ONNX, {"window": {"count": 2}})
    job.send_all(fragmented(registration, "fj", owner.key_id, owner), CONTROL_TOPIC)
    assert set(read_releases(job.values("release"))) == {("fj", 0)}

    forged = split_record(
        b"\xc3\x01" + bytes(50), record_id="x", signer="fj-a", key=owner, max_data_bytes=10
    )[0]
    job.send(encode(FRAGMENT, forged), UPDATES_TOPIC)

    initial = flat_params(ONNX)
    deltas = [np.full(initial.size, 0.5 * (i + 1), np.float32) for i in range(2)]
    for i, (device, delta) in enumerate(zip(("fj-a", "fj-b"), deltas, strict=True)):
        value = update_bytes("fj", f"u{i}", delta, device_id=device)
        job.send_all(fragmented(value, f"u{i}", device, device_signer(device)), UPDATES_TOPIC)
    released = read_releases(job.values("release"))
    np.testing.assert_allclose(
        flat_params(released["fj", 1].onnx), initial + np.mean(deltas, axis=0), rtol=1e-6
    )
    (letter,) = read_dead_letters(job.values("dead_letter"))
    assert letter["reason"] == "UNAUTHENTICATED" and letter["update_id"] == "x"
