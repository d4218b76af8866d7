"""The benchmark's devices and model: signed updates, device keys, the registration.

`DEVICES` simulated devices (keys in memory only: `fedstream.jobs.devices.InMemoryDevices`)
send the same small delta under fresh update ids, each device counting its own sequence up
across bursts as the SDK's persisted round counter does, so the job's dedupe never refuses
one. The model is one matrix `W` of about `params` fp32 values (the job only sees
initializers).
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict

import numpy as np
import numpy.typing as npt

from fedstream.jobs.devices import InMemoryDevices
from fedstream.jobs.registration import registration_bytes
from fedstream.schemas import decode, encode, pack
from fedstream.schemas.fragments import encoded_fragments
from fedstream.schemas.signing import ReleaseSigner
from fedstream.schemas.update_signing import RegisteredKey

__all__ = [
    "DEVICES",
    "RECORD_ROOM",
    "BenchFleet",
    "bench_delta",
    "model_shape",
    "onnx_model",
    "record_values",
    "registration_value",
]

#: How many devices the benchmark's updates come from (each registered, each signing).
DEVICES = 16
#: The most bytes of one record the benchmark sends (the topics take 16 MiB, less framing
#: and key): a larger update or registration goes in signed fragments, as the SDK sends it.
RECORD_ROOM = 16 * 1024 * 1024 - 4096


def record_values(value: bytes, record_id: str, signer: str, key: ReleaseSigner) -> list[bytes]:
    """The Kafka values that carry the encoded record `value`: itself when it fits one
    record, else its fragments signed by `key` (`fedstream.schemas.fragments`)."""
    if len(value) <= RECORD_ROOM:
        return [value]
    _count, pieces = encoded_fragments(
        value, RECORD_ROOM, record_id=record_id, signer=signer, key=key
    )
    return list(pieces)


class BenchFleet:
    """`DEVICES` registered devices; `update` is the next update of device `index % DEVICES`,
    signed unless `signed` is False (a legacy fleet: the job must then accept unsigned
    updates, `trust.allow_unsigned_updates`)."""

    def __init__(self, *, signed: bool = True) -> None:
        self.signed = signed
        self.identities = InMemoryDevices()
        self._sequences: defaultdict[str, itertools.count[int]] = defaultdict(itertools.count)

    def device_keys(self) -> list[tuple[str, bytes]]:
        """(device_id, DeviceKey record) of every device, as the operator registers them."""
        now = int(time.time() * 1000)
        return [
            (f"device-{i}", self.identities.key_bytes(f"device-{i}", created_at=now))
            for i in range(DEVICES)
        ]

    def entry(self, device: str) -> RegisteredKey:
        """`device`'s registry entry, as the job reads it from the devices topic."""
        value = self.identities.key_bytes(device, created_at=0)
        return RegisteredKey.from_record(decode(value, expected="DeviceKey").record)

    def records(
        self, model_id: str, update_id: str, index: int, base: int, delta: npt.NDArray[np.float32]
    ) -> list[bytes]:
        """`update` as the Kafka values that carry it (fragments when it is too large)."""
        device = f"device-{index % DEVICES}"
        value = self.update(model_id, update_id, index, base, delta)
        return record_values(value, update_id, device, self.identities.signer(device))

    def update(
        self, model_id: str, update_id: str, index: int, base: int, delta: npt.NDArray[np.float32]
    ) -> bytes:
        """An update of device `index % DEVICES` (signed unless the fleet is not), with that
        device's next sequence."""
        device = f"device-{index % DEVICES}"
        record = {
            "update_id": update_id,
            "device_id": device,
            "model_id": model_id,
            "base_version": base,
            "num_samples": 10,
            "created_at": int(time.time() * 1000),
            "delta": pack(delta, "FP32"),
            "metrics": None,
            "sequence": next(self._sequences[device]),
            "key_id": None,
            "signature": None,
        }
        if not self.signed:
            return encode("GradientUpdate", record)
        return self.identities.signed_bytes(record)


def model_shape(params: int) -> tuple[int, int]:
    """(inputs, outputs) of a one-matrix model with about `params` parameters."""
    outputs = 100 if params < 500_000 else 1000
    return max(1, params // outputs), outputs


def bench_delta(params: int) -> npt.NDArray[np.float32]:
    """The update every benchmark device sends: small, fixed, the bench model's size."""
    inputs, outputs = model_shape(params)
    rng = np.random.default_rng(0)
    return rng.normal(scale=1e-3, size=inputs * outputs).astype(np.float32)


def onnx_model(params: int) -> bytes:
    """y = x @ W with W of about `params` float32 values."""
    from onnx import TensorProto, helper, numpy_helper

    inputs, outputs = model_shape(params)
    weight = np.zeros((inputs, outputs), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "bench",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", outputs])],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data


def registration_value(
    model_id: str,
    params: int,
    window: int,
    owner: ReleaseSigner | None = None,
    *,
    seconds: float | None = None,
) -> bytes:
    """The benchmark model's registration: plain FedBuff with a count window (closed after
    `seconds` too, when given), signed by `owner` (the job's trusted model owner) when
    given."""
    settings = {"window": {"count": window, "seconds": seconds}}
    return registration_bytes(model_id, onnx_model(params), ["W"], settings, owner)
