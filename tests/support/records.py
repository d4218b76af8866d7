"""Build the records the job consumes and read back what it produces, for any test tier.

Input side: `update_bytes` / `update_record` (GradientUpdate), `registration_bytes` /
`owner_registration_record` (ModelRegistration, built from ONNX bytes the way the job's own
`fedstream.jobs.registration` does, with field overrides for invalid registrations) and a
few deliberately broken values (`garbage`, `unknown_schema`). Output side:
`read_releases` reassembles chunked ModelRelease records (checking size and SHA-256) and
`read_dead_letters` decodes DeadLetter records.

Everything is plain bytes in and out, so the same helpers serve the pure job logic
(`ModelProcess`), the mini-cluster job tier and the Kafka integration tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fedstream.jobs.registration import registration_from_onnx
from fedstream.pipelines.config import AggregationConfig
from fedstream.pipelines.onnx_release import read_initializers
from fedstream.schemas import (
    MAGIC,
    DeadLetter,
    GradientUpdate,
    ReleaseLineage,
    assemble_release,
    decode,
    default_registry,
    encode,
    pack,
)
from fedstream.schemas.registration_signing import sign_registration
from fedstream.schemas.signing import ReleaseSigner
from tests.support.devices import signed_bytes
from tests.support.owner_key import owner_signer

__all__ = [
    "CONTROL_TOPIC",
    "CREATED_AT",
    "F32",
    "UPDATES_TOPIC",
    "Release",
    "as_written_by",
    "flat_params",
    "garbage",
    "owner_registration_record",
    "read_dead_letters",
    "read_releases",
    "registration_bytes",
    "unknown_schema",
    "update_bytes",
    "update_record",
]

#: The default topic names of `fedstream.jobs.config.TopicsConfig`.
UPDATES_TOPIC = "fl.updates"
CONTROL_TOPIC = "fl.control"
#: A fixed timestamp (2026-01-01T00:00:00.123Z) so encoded test records are reproducible.
CREATED_AT = 1_767_225_600_123

F32 = npt.NDArray[np.float32]


# ------------------------------------------------------------------------------ input


def update_record(
    model_id: str,
    update_id: str,
    delta: npt.ArrayLike,
    *,
    base_version: int = 0,
    num_samples: int = 1,
    device_id: str = "device-0",
    encoding: str = "FP32",
    created_at: int = CREATED_AT,
    sequence: int | None = None,
) -> GradientUpdate:
    """A GradientUpdate record; `delta` is the flat parameter vector (any real dtype)."""
    return {
        "update_id": update_id,
        "device_id": device_id,
        "model_id": model_id,
        "base_version": base_version,
        "num_samples": num_samples,
        "created_at": created_at,
        "delta": pack(np.asarray(delta, dtype=np.float32).reshape(-1), encoding),
        "metrics": None,
        "sequence": sequence,
        "key_id": None,
        "signature": None,
    }


def update_bytes(
    model_id: str,
    update_id: str,
    delta: npt.ArrayLike,
    *,
    base_version: int = 0,
    num_samples: int = 1,
    device_id: str = "device-0",
    encoding: str = "FP32",
    created_at: int = CREATED_AT,
    sign: bool = True,
    sequence: int | None = None,
) -> bytes:
    """The encoded GradientUpdate (see `update_record`), as a device produces it: signed
    by the device's test key (`tests.support.devices`) unless `sign` is False."""
    record = update_record(
        model_id,
        update_id,
        delta,
        base_version=base_version,
        num_samples=num_samples,
        device_id=device_id,
        encoding=encoding,
        created_at=created_at,
        sequence=sequence,
    )
    return signed_bytes(record) if sign else encode("GradientUpdate", record)


def owner_registration_record(
    model_id: str,
    onnx_bytes: bytes,
    aggregation: AggregationConfig | Mapping[str, Any] | None = None,
    *,
    parameter_names: Sequence[str] | None = None,
    replace: Mapping[str, Any] | None = None,
    owner: ReleaseSigner | Literal["test"] | None = "test",
) -> dict[str, Any]:
    """A ModelRegistration record for `onnx_bytes` (trainable initializers by default),
    signed by `owner` (the tests' model owner by default; None: unsigned).

    `replace` overwrites whole fields afterwards (`parameters`, `aggregation` in Avro form,
    `onnx_template`, ...), to build registrations the job must refuse; they are signed
    after the change, so the job refuses them for what they hold, not for the signature.
    """
    record = registration_from_onnx(model_id, onnx_bytes, parameter_names, aggregation)
    record["created_at"] = CREATED_AT
    unknown = sorted(set(replace or {}) - set(record))
    if unknown:
        raise KeyError(f"not ModelRegistration fields: {unknown}")
    record.update(replace or {})
    signer = owner_signer() if owner == "test" else owner
    return record if signer is None else sign_registration(record, signer)


def registration_bytes(
    model_id: str,
    onnx_bytes: bytes,
    aggregation: AggregationConfig | Mapping[str, Any] | None = None,
    *,
    parameter_names: Sequence[str] | None = None,
    replace: Mapping[str, Any] | None = None,
    owner: ReleaseSigner | Literal["test"] | None = "test",
) -> bytes:
    """The encoded ModelRegistration (see `owner_registration_record`)."""
    record = owner_registration_record(
        model_id,
        onnx_bytes,
        aggregation,
        parameter_names=parameter_names,
        replace=replace,
        owner=owner,
    )
    return encode("ModelRegistration", record)


def garbage(size: int = 32, seed: int = 0) -> bytes:
    """Bytes that are not single-object Avro (they do not start with C3 01)."""
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    return b"\x00" + data[1:] if data[:2] == MAGIC else data


def unknown_schema(body: bytes = b"\x02\x04") -> bytes:
    """A well-formed single-object header whose writer fingerprint no schema has."""
    return MAGIC + (0x0123_4567_89AB_CDEF).to_bytes(8, "little") + body


# ------------------------------------------------------------------------------ output


@dataclass(frozen=True)
class Release:
    """One model version, reassembled from its ModelRelease chunk(s) and verified."""

    model_id: str
    version: int
    onnx: bytes
    sha256: str
    lineage: ReleaseLineage
    chunk_count: int
    signature: bytes | None = None
    key_id: str | None = None

    def params(self, names: Sequence[str] = ("W", "b")) -> F32:
        """The released weights, flattened in `names` order (the registration's layout)."""
        return flat_params(self.onnx, names)


def read_releases(values: Iterable[bytes]) -> dict[tuple[str, int], Release]:
    """Decode ModelRelease records and reassemble each (model_id, version).

    Fails (AssertionError / ReleaseError) on a missing or duplicated chunk, a bad digest,
    or chunks of one release that disagree on their lineage.
    """
    chunks: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for value in values:
        record = decode(value, expected="ModelRelease").record
        chunks.setdefault((record["model_id"], record["version"]), []).append(record)
    out: dict[tuple[str, int], Release] = {}
    for key, parts in chunks.items():
        blob = assemble_release(parts)
        first = parts[0]
        assert all(p["lineage"] == first["lineage"] for p in parts), f"{key}: lineage differs"
        assert hashlib.sha256(blob).hexdigest() == first["sha256"]
        out[key] = Release(
            model_id=key[0],
            version=key[1],
            onnx=blob,
            sha256=first["sha256"],
            lineage=first["lineage"],
            chunk_count=first["chunk_count"],
            signature=first.get("signature"),
            key_id=first.get("key_id"),
        )
    return out


def read_dead_letters(values: Iterable[bytes]) -> list[DeadLetter]:
    """Decode DeadLetter records, in order."""
    out: list[DeadLetter] = []
    for value in values:
        record: Any = decode(value, expected="DeadLetter").record
        out.append(record)
    return out


def flat_params(onnx_bytes: bytes, names: Sequence[str] = ("W", "b")) -> F32:
    """The named initializers of an ONNX model as one flat float32 vector, in order."""
    arrays = read_initializers(onnx_bytes, names)
    return np.concatenate([arrays[n].astype(np.float32).reshape(-1) for n in names])


def as_written_by(name: str, version: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """`record` cut to the fields of schema `version` of `name`, as an older device wrote it."""
    return default_registry().get(name, version).project(record)
