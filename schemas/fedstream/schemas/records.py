"""Typed shapes of the records (TypedDicts) and helpers that belong to the contract.

The TypedDicts describe what `codec.encode` takes and `codec.decode` returns: plain dicts
with Python ints for Avro int/long (``created_at`` is milliseconds since the epoch, UTC),
floats for float/double, ``bytes`` for bytes, the Avro symbol (UPPERCASE ``str``) for enums
and ``None`` for the null branch of an optional field. They are only type hints; the
.avsc files stay the single source of truth and the codec validates against them.

Helpers here are the pieces every producer and consumer must do the same way:

* `aggregation_to_avro` / `aggregation_from_avro`: the Python `AggregationConfig.to_dict()`
  form (lowercase enum strings) <-> the Avro AggregationSettings record (UPPERCASE
  symbols). Missing keys take the schema's defaults; unknown keys or symbols are errors,
  so the two sides cannot drift apart silently.
* `make_dead_letter`: a DeadLetter from a `CodecError` (or a reason) and the source offset.
* `release_chunks` / `assemble_release`: split an ONNX file over several ModelRelease
  records and put it back together, checking size and SHA-256.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypedDict

from fedstream.schemas.errors import (
    CodecError,
    DeadLetterReason,
    EncodeError,
    ReleaseError,
)

__all__ = [
    "AGGREGATION_ENUM_FIELDS",
    "AggregationSettings",
    "DeadLetter",
    "DeviceKey",
    "GradientUpdate",
    "ModelRegistration",
    "ModelRelease",
    "ParameterSpec",
    "ReleaseLineage",
    "ServerOptimizerSettings",
    "StalenessSettings",
    "TensorPayload",
    "UpdateMetrics",
    "WindowSettings",
    "aggregation_from_avro",
    "aggregation_to_avro",
    "assemble_release",
    "default_aggregation_settings",
    "make_dead_letter",
    "release_chunks",
]


class TensorPayload(TypedDict):
    encoding: str  # "FP32" | "FP16" | "INT8" | "TOPK"
    dtype: str  # "float32"
    shape: list[int]
    data: bytes
    scale: float
    indices: bytes


class UpdateMetrics(TypedDict):
    loss: float | None
    steps: int | None
    duration_ms: int | None


class GradientUpdate(TypedDict):
    update_id: str
    device_id: str
    model_id: str
    base_version: int
    num_samples: int
    created_at: int
    delta: TensorPayload
    metrics: UpdateMetrics | None
    sequence: int | None
    key_id: str | None
    signature: bytes | None


class ParameterSpec(TypedDict):
    name: str
    shape: list[int]


class StalenessSettings(TypedDict):
    function: str  # "CONSTANT" | "POLYNOMIAL" | "HINGE"
    a: float
    b: float


class WindowSettings(TypedDict):
    count: int | None
    seconds: float | None
    adaptive: bool


class ServerOptimizerSettings(TypedDict):
    name: str  # "SGD" | "MOMENTUM" | "ADAM" | "YOGI"
    learning_rate: float
    momentum: float
    beta1: float
    beta2: float
    epsilon: float


class AggregationSettings(TypedDict):
    mode: str  # "FEDBUFF" | "FEDASYNC"
    staleness: StalenessSettings
    max_staleness: int | None
    window: WindowSettings
    server_optimizer: ServerOptimizerSettings
    fedasync_mixing: float
    fedasync_rule: str  # "ADD_DELTA" | "MIX_WITH_BASE"
    normalization: str  # "WEIGHT_SUM" | "COUNT"
    weight_by_samples: bool
    clip_norm: float | None
    reducer: str  # "MEAN" | "TRIMMED_MEAN" | "MEDIAN"
    trim_fraction: float
    dp_noise_multiplier: float | None
    seed: int | None


class ModelRegistration(TypedDict):
    model_id: str
    onnx_template: bytes
    parameters: list[ParameterSpec]
    initial_parameters: TensorPayload
    aggregation: AggregationSettings
    created_at: int
    owner_key_id: str | None
    signature: bytes | None


class ReleaseLineage(TypedDict):
    parent_version: int | None
    update_ids: list[str]
    device_ids: list[str]
    num_updates: int
    num_samples: int
    staleness_min: int
    staleness_max: int
    staleness_mean: float
    total_weight: float


class ModelRelease(TypedDict):
    model_id: str
    version: int
    onnx: bytes
    chunk_index: int
    chunk_count: int
    onnx_size: int
    sha256: str
    lineage: ReleaseLineage
    created_at: int
    signature: bytes | None  # Ed25519 over signing.release_statement; None: unsigned
    key_id: str | None


class DeviceKey(TypedDict):
    device_id: str
    key_id: str
    public_key: bytes  # raw 32-byte Ed25519 public key
    status: str  # "ACTIVE" | "REVOKED"
    created_at: int


class DeadLetter(TypedDict):
    original: bytes
    source_topic: str
    source_partition: int
    source_offset: int
    reason: str  # a DeadLetterReason symbol
    detail: str
    model_id: str | None
    update_id: str | None
    created_at: int
    original_truncated: bool
    original_size: int | None


#: Longest `detail` and id strings a dead letter carries (longer ones are cut, marked "...");
#: four of them take at most 32 KiB of UTF-8, so any limit of 33 KiB leaves room.
DEAD_LETTER_TEXT_LIMIT: Final = 2048
#: Room in a DeadLetter for everything but `original` and the texts (Avro framing, ints).
_DEAD_LETTER_OVERHEAD: Final = 256


# ---------------------------------------------------------------- aggregation settings

#: Paths (within AggregationSettings) of the enum fields: UPPERCASE in Avro, lowercase in
#: the Python config.
AGGREGATION_ENUM_FIELDS: Final[tuple[tuple[str, ...], ...]] = (
    ("mode",),
    ("staleness", "function"),
    ("server_optimizer", "name"),
    ("reducer",),
    ("fedasync_rule",),
    ("normalization",),
)


def _aggregation_field() -> Mapping[str, Any]:
    from fedstream.schemas.registry import default_registry

    schema = default_registry().get("ModelRegistration").schema
    return next(f for f in schema["fields"] if f["name"] == "aggregation")


def _enum_symbols(path: tuple[str, ...]) -> list[str]:
    node: Any = _aggregation_field()["type"]
    for key in path:
        field = next(f for f in node["fields"] if f["name"] == key)
        node = field["type"]
    return list(node["symbols"])


def default_aggregation_settings() -> AggregationSettings:
    """The AggregationSettings defaults, read from ModelRegistration.avsc (Avro form)."""
    default: AggregationSettings = copy.deepcopy(_aggregation_field()["default"])
    return default


def _merge(defaults: dict[str, Any], given: Mapping[str, Any], path: str) -> None:
    for key, value in given.items():
        if key not in defaults:
            raise EncodeError(f"unknown aggregation setting {path}{key!r}")
        if isinstance(defaults[key], dict):
            if not isinstance(value, Mapping):
                raise EncodeError(f"aggregation setting {path}{key} must be a mapping")
            _merge(defaults[key], value, f"{path}{key}.")
        else:
            defaults[key] = value


def _map_enums(settings: dict[str, Any], upper: bool) -> None:
    for path in AGGREGATION_ENUM_FIELDS:
        parent = settings
        for key in path[:-1]:
            parent = parent[key]
        value = parent[path[-1]]
        name = ".".join(path)
        if not isinstance(value, str):
            raise EncodeError(f"aggregation setting {name} must be a string, got {value!r}")
        symbols = _enum_symbols(path)
        if value.upper() not in symbols:
            allowed = [s.lower() if upper else s for s in symbols]  # in the caller's case
            raise EncodeError(f"aggregation setting {name}={value!r}; expected one of {allowed}")
        parent[path[-1]] = value.upper() if upper else value.lower()


def aggregation_to_avro(config: Mapping[str, Any]) -> AggregationSettings:
    """Python config dict (lowercase enums, keys as in AggregationSettings) -> Avro record.

    Keys left out take the schema default; an unknown key or enum value raises
    `EncodeError`. Enum values may be any ``str`` (including a ``StrEnum``), in any case.
    """
    settings: dict[str, Any] = dict(default_aggregation_settings())
    _merge(settings, config, "")
    _map_enums(settings, upper=True)
    return settings  # type: ignore[return-value]  # shape checked by _merge


def aggregation_from_avro(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Avro AggregationSettings record -> Python config dict with lowercase enum strings."""
    out: dict[str, Any] = copy.deepcopy(dict(settings))
    _map_enums(out, upper=False)
    return out


# ---------------------------------------------------------------- dead letters


def make_dead_letter(
    original: bytes,
    *,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    error: CodecError | DeadLetterReason | str,
    detail: str | None = None,
    created_at: int,
    model_id: str | None = None,
    update_id: str | None = None,
    max_bytes: int | None = None,
) -> DeadLetter:
    """A DeadLetter record for `original`.

    `error` is either the `CodecError` that rejected it (its reason and detail are used) or
    a reason (symbol), in which case `detail` should say why.

    A dead letter must always fit its topic, or the sink would fail the job on the very
    record it was meant to contain: texts are cut to `DEAD_LETTER_TEXT_LIMIT` characters,
    and with `max_bytes` (the dead-letter topic's message limit) an original that would not
    fit is cut to its first bytes, with `original_truncated` and `original_size` set.
    """
    if isinstance(error, CodecError):
        reason = error.reason
        text = error.detail if detail is None else detail
    else:
        try:
            reason = DeadLetterReason(str(error).upper())
        except ValueError:
            raise EncodeError(f"unknown dead-letter reason {error!r}") from None
        text = detail or ""
    texts = [_cut(t) for t in (source_topic, text, model_id or "", update_id or "")]
    kept = bytes(original)
    if max_bytes is not None:
        room = max_bytes - _DEAD_LETTER_OVERHEAD - sum(len(t.encode()) for t in texts)
        if room < 0:
            raise EncodeError(f"max_bytes {max_bytes} leaves no room for a dead letter")
        kept = kept[:room]
    truncated = len(kept) < len(original)
    return {
        "original": kept,
        "source_topic": texts[0],
        "source_partition": source_partition,
        "source_offset": source_offset,
        "reason": reason.value,
        "detail": texts[1],
        "model_id": None if model_id is None else texts[2],
        "update_id": None if update_id is None else texts[3],
        "created_at": created_at,
        "original_truncated": truncated,
        "original_size": len(original) if truncated else None,
    }


def _cut(text: str) -> str:
    """`text`, or its first characters and "..." when longer than the limit."""
    if len(text) <= DEAD_LETTER_TEXT_LIMIT:
        return text
    return text[: DEAD_LETTER_TEXT_LIMIT - 3] + "..."


# ---------------------------------------------------------------- release chunks


def release_chunks(
    *,
    model_id: str,
    version: int,
    onnx: bytes,
    lineage: ReleaseLineage,
    created_at: int,
    max_chunk_bytes: int,
    signature: bytes | None = None,
    key_id: str | None = None,
    sha256: str | None = None,
) -> list[ModelRelease]:
    """Split an ONNX file into ModelRelease records of at most `max_chunk_bytes` of ONNX.

    `max_chunk_bytes` comes from the topic's message size limit minus room for the other
    fields (lineage grows with the window size). An empty file still yields one record.
    `signature` / `key_id` (one per release, over the whole file: `fedstream.schemas.
    signing`) go on every chunk, so any chunk names the key and verification needs no
    particular one. `sha256`: the file's hex digest when the caller computed it already
    (the job signs it first), else computed here.
    """
    if max_chunk_bytes <= 0:
        raise EncodeError(f"max_chunk_bytes must be > 0, got {max_chunk_bytes}")
    digest = sha256 or hashlib.sha256(onnx).hexdigest()
    pieces = [onnx[i : i + max_chunk_bytes] for i in range(0, len(onnx), max_chunk_bytes)]
    pieces = pieces or [b""]
    return [
        {
            "model_id": model_id,
            "version": version,
            "onnx": piece,
            "chunk_index": index,
            "chunk_count": len(pieces),
            "onnx_size": len(onnx),
            "sha256": digest,
            "lineage": lineage,
            "created_at": created_at,
            "signature": signature,
            "key_id": key_id,
        }
        for index, piece in enumerate(pieces)
    ]


def assemble_release(chunks: Iterable[Mapping[str, Any]]) -> bytes:
    """Reassemble the ONNX file from all chunks of one release (in any order).

    Raises `ReleaseError` unless the chunks agree on model, version, count, size and digest,
    each index 0..count-1 appears exactly once, and the result has that size and SHA-256.
    """
    parts = list(chunks)
    if not parts:
        raise ReleaseError("no chunks")
    first = parts[0]
    keys = ("model_id", "version", "chunk_count", "onnx_size", "sha256")
    ident = tuple(first.get(k) for k in keys)
    by_index: dict[int, bytes] = {}
    for part in parts:
        if tuple(part.get(k) for k in keys) != ident:
            raise ReleaseError("chunks belong to different releases or disagree on metadata")
        index = part.get("chunk_index")
        if not isinstance(index, int) or index in by_index:
            raise ReleaseError(f"duplicate or invalid chunk_index {index!r}")
        by_index[index] = bytes(part["onnx"])
    count = first["chunk_count"]
    if sorted(by_index) != list(range(count)):
        raise ReleaseError(f"have chunks {sorted(by_index)} of {count}")
    blob = b"".join(by_index[i] for i in range(count))
    if len(blob) != first["onnx_size"]:
        raise ReleaseError(f"reassembled {len(blob)} bytes, expected {first['onnx_size']}")
    if hashlib.sha256(blob).hexdigest() != first["sha256"]:
        raise ReleaseError("SHA-256 of the reassembled ONNX file does not match")
    return blob
