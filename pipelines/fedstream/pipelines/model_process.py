"""Everything the streaming job does for one model, as plain Python over bytes.

The PyFlink function (`flink_functions.py`) is a thin shell: it loads this object's state
from Flink keyed state, hands it one input record (or a timer), writes the state back and
emits what comes out. Keeping the logic here means the job's behaviour (dead-letter
reasons, dedupe, window closing, release chunking) is tested without a cluster, and an
offline replay of a release's lineage runs the very same code.

State per model, and why each piece is bounded:
- the registration record (ONNX template, parameter layout, aggregation settings): fixed;
- the model state (params, version, optimizer moments): 1x params (+1x momentum, +2x Adam/Yogi);
- the open window: 1x params for the mean reducer (running sum), K x params for the robust
  reducers (they need every buffered delta), nothing for FedAsync;
- the update_ids absorbed in the last `dedupe_versions` releases (`SeenIds`): an update
  whose base version is older than that horizon is refused as `stale`, so a re-sent update
  is always either found there (`duplicate`) or refused; the set never grows with the
  number of updates processed, only with the window size times the horizon.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedstream.pipelines.accumulator import Accumulator
from fedstream.pipelines.aggregator import Aggregator, ClosedWindow
from fedstream.pipelines.binary_format import Writer, seal, unseal
from fedstream.pipelines.config import AggregationConfig, Mode
from fedstream.pipelines.lineage import Lineage
from fedstream.pipelines.model_state import ModelState
from fedstream.pipelines.update import ClientUpdate
from fedstream.schemas import (
    CodecError,
    DeadLetterReason,
    ParameterLayout,
    aggregation_from_avro,
    decode,
    encode,
    make_dead_letter,
    release_chunks,
    unpack,
)

__all__ = [
    "DictSeenIds",
    "Envelope",
    "ModelProcess",
    "Output",
    "RegisteredModel",
    "Routed",
    "SeenIds",
    "route",
]

UPDATE = "GradientUpdate"
REGISTRATION = "ModelRegistration"
# Room for the ModelRelease fields other than the ONNX chunk and the lineage ids.
_RELEASE_OVERHEAD = 4096
_REGISTRATION_MAGIC = b"FSRG"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One input record with its Kafka coordinates (they go into any DeadLetter)."""

    value: bytes
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Output:
    """A record to produce: `kind` is "release" or "dead_letter", `key` the Kafka key."""

    kind: str
    key: bytes
    value: bytes
    reason: str = ""  # the dead-letter reason code, for metrics


def dead_letter(
    envelope: Envelope,
    reason: CodecError | DeadLetterReason | str,
    detail: str | None = None,
    *,
    model_id: str | None = None,
    update_id: str | None = None,
) -> Output:
    record = make_dead_letter(
        envelope.value,
        source_topic=envelope.topic,
        source_partition=envelope.partition,
        source_offset=envelope.offset,
        error=reason,
        detail=detail,
        created_at=now_ms(),
        model_id=model_id,
        update_id=update_id,
    )
    value = encode("DeadLetter", record)
    return Output("dead_letter", (model_id or "").encode(), value, record["reason"])


@dataclass(frozen=True, slots=True)
class Routed:
    """The stateless first step: which model a record is for, or its dead letter."""

    model_id: str | None
    dead: Output | None


def route(envelope: Envelope, updates_topic: str, control_topic: str) -> Routed:
    """Decode just enough to key the record by model; anything undecodable is dead here.

    Updates belong on the updates topic and registrations on the control topic; a record
    of another type (or on the wrong topic) is dead-lettered as WRONG_RECORD_TYPE.
    """
    expected = UPDATE if envelope.topic == updates_topic else REGISTRATION
    if envelope.topic not in (updates_topic, control_topic):
        return Routed(None, dead_letter(envelope, "OTHER", f"unexpected topic {envelope.topic}"))
    try:
        decoded = decode(envelope.value, expected=expected)
    except CodecError as error:
        return Routed(None, dead_letter(envelope, error))
    model_id = str(decoded.record["model_id"])
    if not model_id:
        return Routed(None, dead_letter(envelope, "OTHER", "empty model_id"))
    return Routed(model_id, None)


class SeenIds(Protocol):
    """The dedupe set: update_id -> version of the model when it was absorbed."""

    def __contains__(self, update_id: object) -> bool: ...

    def add(self, update_id: str, version: int) -> None: ...

    def prune(self, older_than: int) -> None: ...


@dataclass
class DictSeenIds:
    """`SeenIds` over any mutable mapping (a dict in tests, Flink MapState in the job)."""

    entries: MutableMapping[str, int] = field(default_factory=dict)

    def __contains__(self, update_id: object) -> bool:
        return update_id in self.entries

    def add(self, update_id: str, version: int) -> None:
        self.entries[update_id] = version

    def prune(self, older_than: int) -> None:
        stale = [k for k, v in self.entries.items() if v < older_than]
        for key in stale:
            del self.entries[key]


@dataclass(frozen=True)
class RegisteredModel:
    """A validated registration: what the job needs to aggregate and release a model.

    In keyed state it is kept in its own compact, versioned form (`to_state`): the ONNX
    template without the trainable weights (`materialize` refills them at each release)
    and no initial parameters, so a model's state holds one copy of its weights, not three.
    """

    model_id: str
    config: AggregationConfig
    layout: ParameterLayout
    template: bytes  # trainable initializers stripped
    digest: str  # sha256 of the registration record as received, to recognise a re-send

    @classmethod
    def from_bytes(cls, value: bytes) -> tuple[RegisteredModel, np.ndarray[Any, Any]]:
        """Decode and check a registration; raises ValueError/CodecError with the reason."""
        from fedstream.pipelines.onnx_release import read_initializers, strip_initializers

        record = decode(value, expected=REGISTRATION).record
        layout = ParameterLayout.from_registration(record["parameters"])
        initial = unpack(
            record["initial_parameters"], expected_shape=[layout.size], require_finite=True
        )
        config = AggregationConfig.from_dict(aggregation_from_avro(record["aggregation"]))
        template = bytes(record["onnx_template"])
        present = read_initializers(template, layout.names)
        for name, shape in layout:
            if tuple(present[name].shape) != shape:
                raise ValueError(
                    f"parameter {name!r} has shape {shape} but the ONNX template's "
                    f"initializer has {tuple(present[name].shape)}"
                )
        model = cls(
            str(record["model_id"]),
            config,
            layout,
            strip_initializers(template, layout.names),
            hashlib.sha256(value).hexdigest(),
        )
        return model, np.ascontiguousarray(initial, dtype=np.float32).reshape(-1)

    def to_state(self) -> bytes:
        w = Writer()
        w.text(self.model_id)
        w.text(self.digest)
        w.text(json.dumps(self.config.to_dict(), sort_keys=True))
        w.text(json.dumps([[name, list(shape)] for name, shape in self.layout]))
        # The format holds no uint8 arrays: the template travels as little-endian int64
        # words (zero-padded), after its exact length.
        w.i64(len(self.template))
        padded = self.template + bytes(-len(self.template) % 8)
        w.array(np.frombuffer(padded, dtype="<i8"))
        return seal(_REGISTRATION_MAGIC, 1, w)

    @classmethod
    def from_state(cls, data: bytes) -> RegisteredModel:
        """Raises a `binary_format.StateFormatError` subclass on damaged or foreign bytes."""
        _version, r = unseal(data, _REGISTRATION_MAGIC, (1,))
        model_id, digest = r.text(), r.text()
        config = AggregationConfig.from_dict(json.loads(r.text()))
        layout = ParameterLayout([(n, tuple(shape)) for n, shape in json.loads(r.text())])
        size = r.i64()
        template = r.array().astype("<i8").tobytes()[:size]
        r.finish()
        return cls(model_id, config, layout, template, digest)


@dataclass
class ModelProcess:
    """One model's job logic. The caller persists `registration`, `state`, `buffer`, `seen`.

    Times (`now`) are seconds of processing time; `deadline()` says when a timer must fire.
    """

    models_topic_max_bytes: int
    dedupe_versions: int
    registration: RegisteredModel | None = None
    aggregator: Aggregator | None = None
    seen: SeenIds = field(default_factory=DictSeenIds)
    #: for metrics: staleness of the last accepted update, fill time of the last window
    last_staleness: int | None = None
    last_fill_seconds: float | None = None

    # -- state in and out -------------------------------------------------------------
    @classmethod
    def restore(
        cls,
        *,
        models_topic_max_bytes: int,
        dedupe_versions: int,
        registration: RegisteredModel | None,
        state: bytes | None,
        buffer: bytes | None,
        seen: SeenIds,
    ) -> ModelProcess:
        process = cls(models_topic_max_bytes, dedupe_versions, registration, None, seen)
        if registration is not None and state is not None:
            process.aggregator = Aggregator(
                registration.config,
                ModelState.from_bytes(state),
                Accumulator.from_bytes(buffer) if buffer is not None else None,
            )
        return process

    # -- events -----------------------------------------------------------------------
    def on_registration(self, envelope: Envelope) -> list[Output]:
        if self.registration is not None:
            if self.registration.digest == hashlib.sha256(envelope.value).hexdigest():
                return []  # the same registration re-sent (producer retry): nothing to do
            return [
                dead_letter(
                    envelope,
                    "BAD_REGISTRATION",
                    f"model {self.registration.model_id!r} is already registered "
                    f"(version {self.version}); register a new model_id instead",
                    model_id=self.registration.model_id,
                )
            ]
        try:
            model, initial = RegisteredModel.from_bytes(envelope.value)
        except CodecError as error:
            return [dead_letter(envelope, "BAD_REGISTRATION", f"{error.reason}: {error.detail}")]
        except ValueError as error:  # OnnxTemplateError is a ValueError
            return [dead_letter(envelope, "BAD_REGISTRATION", str(error))]
        self.registration = model
        self.aggregator = Aggregator(model.config, ModelState(initial, 0))
        try:
            return self._release(None)
        except ValueError as error:  # OnnxTemplateError from materialize
            # The template cannot hold the weights (e.g. a named initializer is an int
            # tensor): refuse the registration instead of failing the job on every restart.
            self.registration, self.aggregator = None, None
            return [dead_letter(envelope, "BAD_REGISTRATION", str(error))]

    def on_update(self, envelope: Envelope, now: float) -> list[Output]:
        try:
            record = decode(envelope.value, expected=UPDATE).record
        except CodecError as error:  # route() decoded it once already; keep this total
            return [dead_letter(envelope, error)]
        model_id, update_id = str(record["model_id"]), str(record["update_id"])

        def refuse(reason: CodecError | str, detail: str | None = None) -> list[Output]:
            return [dead_letter(envelope, reason, detail, model_id=model_id, update_id=update_id)]

        if self.registration is None or self.aggregator is None:
            return refuse("UNKNOWN_MODEL", f"model {model_id!r} is not registered")
        if update_id in self.seen:
            return refuse("DUPLICATE", f"update {update_id!r} was already absorbed")
        lag = self.version - int(record["base_version"])
        if lag > self.dedupe_versions:
            return refuse(
                "STALE",
                f"staleness {lag} exceeds the dedupe horizon of {self.dedupe_versions} "
                "versions (a re-send that old could not be recognised)",
            )
        try:
            delta = unpack(
                record["delta"], expected_shape=[self.registration.layout.size], require_finite=True
            )
        except CodecError as error:
            return refuse(error)
        update = ClientUpdate(
            update_id=update_id,
            base_version=int(record["base_version"]),
            num_samples=int(record["num_samples"]),
            delta=delta.reshape(-1),
            device_id=str(record["device_id"]),
        )
        rejection = self.aggregator.try_add(update, now)
        if rejection is not None:
            return refuse(rejection.reason.value.upper(), rejection.detail)
        self.seen.add(update_id, self.version)
        self.last_staleness = lag
        if self.aggregator.should_close(now):
            return self._close(now)
        return []

    def on_timer(self, now: float) -> list[Output]:
        if self.aggregator is not None and self.aggregator.should_close(now):
            return self._close(now)
        return []

    # -- queries ----------------------------------------------------------------------
    @property
    def version(self) -> int:
        return -1 if self.aggregator is None else self.aggregator.state.version

    def deadline(self) -> float | None:
        return None if self.aggregator is None else self.aggregator.deadline()

    def state_bytes(self) -> tuple[bytes | None, bytes | None]:
        """(model state, open window) in their versioned binary formats."""
        if self.aggregator is None:
            return None, None
        return self.aggregator.state.to_bytes(), self.aggregator.buffer.to_bytes()

    # -- releases ---------------------------------------------------------------------
    def _close(self, now: float) -> list[Output]:
        assert self.aggregator is not None
        total_weight = self.aggregator.buffer.total_weight
        first = self.aggregator.buffer.first_added_at
        self.last_fill_seconds = None if first is None else max(0.0, now - first)
        closed = self.aggregator.close()
        self.seen.prune(older_than=closed.state.version - self.dedupe_versions)
        # FedAsync advances the version once per absorbed update, FedBuff once per window.
        fedasync = self.aggregator.config.mode is Mode.FEDASYNC
        parent = closed.state.version - (closed.lineage.count if fedasync else 1)
        return self._release(closed, total_weight, parent)

    def _release(
        self, closed: ClosedWindow | None, total_weight: float = 0.0, parent: int | None = None
    ) -> list[Output]:
        model, aggregator = self.registration, self.aggregator
        assert model is not None and aggregator is not None
        state = aggregator.state
        weights = model.layout.unflatten(state.params)
        from fedstream.pipelines.onnx_release import materialize

        onnx_bytes = materialize(model.template, weights)
        lineage = _lineage(closed, parent, total_weight)
        room = self.models_topic_max_bytes - _RELEASE_OVERHEAD
        room -= sum(len(u.encode()) + 8 for u in lineage["update_ids"])  # UTF-8 bytes
        records = release_chunks(
            model_id=model.model_id,
            version=state.version,
            onnx=onnx_bytes,
            lineage=lineage,  # type: ignore[arg-type]
            created_at=now_ms(),
            max_chunk_bytes=max(room, 1024),
        )
        key = model.model_id.encode()
        return [Output("release", key, encode("ModelRelease", r)) for r in records]


def _lineage(
    closed: ClosedWindow | None, parent: int | None, total_weight: float
) -> dict[str, Any]:
    """The ReleaseLineage record; version 0 (no window closed) absorbed nothing."""
    lineage = closed.lineage if closed is not None else Lineage.of([], [], 0)
    return {
        "parent_version": parent if closed is not None else None,
        "update_ids": list(lineage.update_ids),
        "device_ids": [],
        "num_updates": lineage.count,
        "num_samples": lineage.total_samples,
        "staleness_min": lineage.staleness_min,
        "staleness_max": lineage.staleness_max,
        "staleness_mean": lineage.staleness_mean,
        "total_weight": float(total_weight),
    }
