"""Generated bad input for the job: every way a record can be wrong, reproducibly.

`bad_records(rng, models, count)` yields `Bad(value, topic, kind, must_die)`:
`must_die` is True for records that no correct job may accept (random bytes, truncations,
out-of-bound or wrong fields, unknown models, crafted registrations); bit flips of valid
records are False, since a flip inside a delta's bytes can leave a valid update (almost
always its signature no longer verifies: UNAUTHENTICATED). Wrong fields are signed by
their device after the change, so they get past the device gate to the check they test.
Which dead-letter reason each gets is decided by the job logic itself (`InMemoryJob`,
the reference the fuzz tests compare the real job against).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedstream.schemas import encode, pack
from fedstream.schemas.registration_signing import sign_registration
from tests.support.devices import signed_bytes
from tests.support.owner_key import owner_signer
from tests.support.records import (
    CONTROL_TOPIC,
    UPDATES_TOPIC,
    owner_registration_record,
    update_bytes,
    update_record,
)

__all__ = ["Bad", "bad_records"]

LONG = 2**63 - 1
#: boundary values for every long field of a GradientUpdate
LONG_EDGES = (-(2**63), -1, 0, 2**31, 2**62, LONG)


@dataclass(frozen=True)
class Bad:
    value: bytes
    topic: str
    kind: str
    must_die: bool = True


def _valid(rng: np.random.Generator, model: str, size: int, i: int) -> dict[str, Any]:
    delta = rng.standard_normal(size).astype(np.float32)
    return dict(update_record(model, f"fuzz-{i}", delta))


def _boundary(rng: np.random.Generator, model: str, size: int, i: int) -> Bad:
    record = _valid(rng, model, size, i)
    field = str(rng.choice(["base_version", "num_samples", "sequence"]))
    edges = [e for e in LONG_EDGES if not (field == "base_version" and e == 0)]
    edges = [e for e in edges if not (field == "num_samples" and 0 < e <= 10**9)]
    edges = [e for e in edges if not (field == "sequence" and 0 <= e <= 10**15)]
    record[field] = int(rng.choice(edges))
    return Bad(signed_bytes(record), UPDATES_TOPIC, f"boundary {field}")


def _long_string(rng: np.random.Generator, model: str, size: int, i: int) -> Bad:
    record = _valid(rng, model, size, i)
    field = str(rng.choice(["model_id", "update_id", "device_id"]))
    record[field] = str(rng.choice(["x", "é", "🦀"])) * int(rng.integers(300, 5_000))
    return Bad(signed_bytes(record), UPDATES_TOPIC, f"long {field}")


def _wrong_tensor(rng: np.random.Generator, model: str, size: int, i: int) -> Bad:
    record = _valid(rng, model, size, i)
    delta = record["delta"]
    choice = int(rng.integers(0, 7))
    if choice == 0:
        record["delta"] = pack(np.zeros(size + int(rng.integers(1, 9)), np.float32), "FP32")
    elif choice == 1:
        delta["shape"] = [int(rng.choice([-1, 0, 2**40, LONG]))]
    elif choice == 2:
        delta["dtype"] = str(rng.choice(["float64", "int8", "", "x" * 5000]))
    elif choice == 3:
        delta["data"] = delta["data"][: int(rng.integers(0, len(delta["data"])))]
    elif choice == 4:
        record["delta"] = pack(np.full(size, np.nan, np.float32), str(rng.choice(["FP32", "FP16"])))
    elif choice == 5:
        record["delta"] = pack(np.ones(size, np.float32), "INT8")
        record["delta"]["scale"] = float(rng.choice([0.0, -1.0, np.inf, np.nan]))
    else:
        topk = pack(np.arange(size, dtype=np.float32), "TOPK", k=3)
        topk["indices"] = np.array([5, 2, size + 7], "<i4").tobytes()
        record["delta"] = topk
    return Bad(signed_bytes(record), UPDATES_TOPIC, f"tensor {choice}")


def _unknown_model(rng: np.random.Generator, model: str, size: int, i: int) -> Bad:
    delta = rng.standard_normal(size).astype(np.float32)
    return Bad(update_bytes(f"ghost-{i % 7}", f"fuzz-{i}", delta), UPDATES_TOPIC, "unknown model")


def _bad_registration(rng: np.random.Generator, onnx: bytes, i: int) -> Bad:
    record = owner_registration_record(f"reg-{i}", onnx, owner=None)
    choice = int(rng.integers(0, 3))
    if choice == 0:
        record["onnx_template"] = bytes(rng.integers(0, 256, 64, dtype=np.uint8))
    elif choice == 1:
        template = bytearray(record["onnx_template"])
        template[int(rng.integers(0, len(template)))] ^= 0xFF
        record["onnx_template"] = bytes(template[: int(rng.integers(1, len(template)))])
    else:
        record["initial_parameters"] = pack(np.full(3, np.inf, np.float32), "FP32")
    # signed by the trusted owner after the damage: refused for what it holds
    signed = sign_registration(record, owner_signer())
    return Bad(encode("ModelRegistration", signed), CONTROL_TOPIC, f"registration {choice}")


def bad_records(
    rng: np.random.Generator, models: Sequence[str], size: int, onnx: bytes, count: int
) -> Iterator[Bad]:
    """`count` bad records for models of `size` parameters (registered from `onnx`)."""
    structured = (_boundary, _long_string, _wrong_tensor, _unknown_model)
    for i in range(count):
        model = str(rng.choice(list(models)))
        kind = int(rng.integers(0, 8))
        valid = update_bytes(model, f"fuzz-{i}", rng.standard_normal(size).astype(np.float32))
        if kind == 0:
            yield Bad(
                bytes(rng.integers(0, 256, int(rng.integers(0, 200)), np.uint8)),
                UPDATES_TOPIC,
                "random bytes",
            )
        elif kind == 1:
            yield Bad(valid[: int(rng.integers(0, len(valid)))], UPDATES_TOPIC, "truncated")
        elif kind == 2:
            flipped = bytearray(valid)
            for _ in range(int(rng.integers(1, 4))):
                flipped[int(rng.integers(0, len(flipped)))] ^= 1 << int(rng.integers(0, 8))
            yield Bad(bytes(flipped), UPDATES_TOPIC, "bit flip", must_die=False)
        elif kind == 3:
            yield _bad_registration(rng, onnx, i)
        else:
            yield structured[kind - 4](rng, model, size, i)
