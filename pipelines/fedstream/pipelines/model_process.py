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
- a sharded model only, until its registration arrives: the shards' partials that came
  first (`held_partials`, at most MAX_HELD_PARTIALS; `on_partial`);
- dedupe, always per device (one device can never get another's update refused):
  - a *sequenced* update (`GradientUpdate.sequence`, schema v4 SDKs) is recognised by its
    device's `SequenceWindow` (`sequence_window.py`): a high-water mark plus a bitmap of
    the last `sequence_window` sequences, 8 + W/8 bytes per device, at most
    `limits.max_devices_per_model` devices. A re-send is `DUPLICATE`, a sequence below the
    window `SEQUENCE_TOO_OLD`; staleness plays no part, so only the registration's
    `max_staleness` refuses an update as `STALE`. No pruning needed: bounded by devices;
  - an *unsequenced* update (older SDKs) by its (device_id, update_id) in `SeenIds`, the
    ids absorbed in the last `dedupe_versions` releases: an update whose base version is
    older than that horizon is refused as `STALE`, so a re-send is always either found
    (`DUPLICATE`) or refused; the set grows only with the window size times the horizon.
  Both are written only once an update is absorbed, last, so a failure leaves no trace.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fedstream.pipelines.accumulator import Accumulator
from fedstream.pipelines.aggregator import Aggregator, ClosedWindow
from fedstream.pipelines.binary_format import Writer, seal, unseal
from fedstream.pipelines.config import AggregationConfig, Mode, Normalization
from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.lineage import Lineage
from fedstream.pipelines.mixing import check_history_bound
from fedstream.pipelines.model_state import ModelState
from fedstream.pipelines.partial_window import PartialWindow
from fedstream.pipelines.sequence_window import (
    DEFAULT_WIDTH,
    DictWindowStore,
    WindowStore,
)
from fedstream.pipelines.shard_combine import fold_partial
from fedstream.pipelines.update_intake import (
    UPDATE,
    Sequenced,
    field_problem,
    mark_absorbed,
    read_update,
    sequence_check,
    to_client_update,
)
from fedstream.pipelines.validation import finite_squared_norm
from fedstream.schemas import (
    CodecError,
    DeadLetterReason,
    ParameterLayout,
    aggregation_from_avro,
    decode,
    encode,
    make_dead_letter,
    release_chunks,
    release_key,
    unpack,
)
from fedstream.schemas.fragments import FRAGMENT, is_fragment

if TYPE_CHECKING:
    from fedstream.schemas.signing import ReleaseSigner

__all__ = [
    "NO_SOURCE",
    "Contained",
    "DictSeenIds",
    "Envelope",
    "ModelProcess",
    "Output",
    "RegisteredModel",
    "Routed",
    "SeenIds",
    "WindowCloseError",
    "contain",
    "route",
    "seen_key",
]

REGISTRATION = "ModelRegistration"
# Room for the ModelRelease fields other than the ONNX chunk and the lineage ids.
_RELEASE_OVERHEAD = 4096
_REGISTRATION_MAGIC = b"FSRG"
#: Partials a model key holds while its registration is on its way (each at most
#: `partial_window.MAX_PARTIAL_BASES` params-sized sums).
MAX_HELD_PARTIALS = 16


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
    max_bytes: int | None = None,
) -> Output:
    """A dead letter for `envelope`; `max_bytes` (the DLQ's message limit) bounds its size."""
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
        max_bytes=max_bytes,
    )
    value = encode("DeadLetter", record)
    return Output("dead_letter", (model_id or "").encode(), value, record["reason"])


class NamesModel(Protocol):
    """What names a model in its dead letters: its registration once it has one, else
    the id it runs for; and the dead-letter topic's size limit."""

    registration: RegisteredModel | None
    model_id: str | None
    dlq_max_bytes: int | None


def model_letter(
    process: NamesModel,
    envelope: Envelope,
    reason: CodecError | str,
    detail: str | None,
    update_id: str | None,
) -> Output:
    """The dead letter of `envelope` for the model `process` runs (the model key's or a
    shard's), naming the model and bounded to the DLQ's limit."""
    named = process.registration.model_id if process.registration else process.model_id
    return dead_letter(
        envelope,
        reason,
        detail,
        model_id=named,
        update_id=update_id,
        max_bytes=process.dlq_max_bytes,
    )


@dataclass(frozen=True, slots=True)
class Routed:
    """The stateless first step: which model a record is for, or its dead letter."""

    model_id: str | None
    dead: Output | None
    #: an update's claimed device (the job's device gate is keyed by it), a fragment's
    #: signer (a registration fragment's: its owner key id); "" otherwise
    device_id: str = ""


#: What a dead letter names as its source when no input record caused it (a timer).
NO_SOURCE = Envelope(b"", "", -1, -1)


def route(
    envelope: Envelope,
    updates_topic: str,
    control_topic: str,
    limits: InputLimits | None = None,
    dlq_max_bytes: int | None = None,
) -> Routed:
    """Decode just enough to key the record by model; anything undecodable is dead here.

    Updates belong on the updates topic and registrations on the control topic; a record
    of another type (or on the wrong topic) is dead-lettered as WRONG_RECORD_TYPE. A
    model_id outside `limits` (empty, too long), or an update's too long device_id, is a
    BAD_FIELD: each would be a state key.
    """
    limits = limits or InputLimits()

    def dead(reason: CodecError | str, detail: str | None = None) -> Routed:
        return Routed(None, dead_letter(envelope, reason, detail, max_bytes=dlq_max_bytes))

    expected = UPDATE if envelope.topic == updates_topic else REGISTRATION
    if envelope.topic not in (updates_topic, control_topic):
        return dead("OTHER", f"unexpected topic {envelope.topic}")
    if is_fragment(envelope.value):
        return _route_fragment(envelope, expected == UPDATE, limits, dlq_max_bytes)
    try:
        decoded = decode(envelope.value, expected=expected)
    except CodecError as error:
        return dead(error)
    model_id = str(decoded.record["model_id"])
    problem = limits.id_problem("model_id", model_id)
    if problem is not None:  # an id out of bounds is named nowhere, not even in a letter
        return dead("BAD_FIELD", problem)
    device_id = str(decoded.record.get("device_id", ""))
    if expected == UPDATE:  # a state key of the device gate
        problem = limits.id_problem("device_id", device_id, required=False)
    if problem is not None:
        letter = dead_letter(
            envelope, "BAD_FIELD", problem, model_id=model_id, max_bytes=dlq_max_bytes
        )
        return Routed(None, letter)
    return Routed(model_id, None, device_id if expected == UPDATE else "")


def _route_fragment(
    envelope: Envelope, update: bool, limits: InputLimits, dlq_max_bytes: int | None
) -> Routed:
    """A piece of a large record (`fedstream.schemas.fragments`): an update's goes to its
    signer's device gate (device_id = signer; its model is known once it is whole), a
    registration's to the registry under its model id (record_id). Both ids are state
    keys, so both are bounded like any id."""
    try:
        record = decode(envelope.value, expected=FRAGMENT).record
    except CodecError as error:
        return Routed(None, dead_letter(envelope, error, max_bytes=dlq_max_bytes))
    record_id, signer = str(record["record_id"]), str(record["signer"])
    problem = limits.id_problem("record_id", record_id) or limits.id_problem("signer", signer)
    if problem is not None:
        return Routed(None, dead_letter(envelope, "BAD_FIELD", problem, max_bytes=dlq_max_bytes))
    return Routed("" if update else record_id, None, signer)


def readable_model_id(value: bytes) -> str | None:
    """The model id of a registration that decodes (and may still fail its checks), or
    None: what a BAD_REGISTRATION dead letter names as its model."""
    try:
        model_id = decode(value, expected=REGISTRATION).record["model_id"]
    except CodecError:
        return None
    return str(model_id) or None


class WindowCloseError(Exception):
    """Closing a window failed (`reason` INTERNAL) or produced a non-finite model
    (NON_FINITE_AGGREGATE). The caller rolls the model back to its persisted state and
    discards the window (`ModelProcess.discard_window`), so the model keeps working."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        #: the update whose arrival closed the window (None for a timer)
        self.update_id: str | None = None


@dataclass(frozen=True, slots=True)
class Contained:
    """What `contain` made of one event: the outputs, and which process to keep.

    `replacement`: None when the event ran; else the model as re-read from its persisted
    state, to use instead of the handled process (drop any live copy of that one).
    `persist`: whether to write the (replacement) process back."""

    outputs: list[Output]
    replacement: ModelProcess | None = None
    persist: bool = True


def contain(
    handle: Callable[[], list[Output]],
    reload: Callable[[], ModelProcess],
    envelope: Envelope | None,
    model_id: str,
) -> Contained:
    """Run one event of one model so that no failure leaves that record and that model.

    On `WindowCloseError` the model is rolled back (`reload` reads the persisted state),
    its open window is discarded to the DLQ, and the rolled-back model is persisted. On any
    other exception nothing is persisted: the model keeps the state it had before this
    record, which goes to the DLQ as INTERNAL with the exception text, and the job goes on.
    """
    try:
        # Overflow is detected (a window's aggregate is checked for finiteness) and must
        # not warn: a Python warning written from a PyFlink thread-mode operator hung the
        # job for good (seen with numpy's "overflow encountered in multiply").
        with np.errstate(all="ignore"):
            return Contained(handle())
    except WindowCloseError as error:
        fresh = reload()
        outputs = []
        if envelope is not None:
            outputs.append(
                fresh.refuse(envelope, error.reason, error.detail, update_id=error.update_id)
            )
        return Contained(outputs + fresh.discard_window(error.reason, error.detail), fresh)
    except Exception as error:
        fresh = reload()
        text = f"{type(error).__name__}: {error}"
        return Contained([fresh.refuse(envelope or NO_SOURCE, "INTERNAL", text)], fresh, False)


def seen_key(device_id: str, update_id: str) -> str:
    """The dedupe set's key of a device's update id: a JSON pair, so no two different
    (device, id) pairs share a key, and none equals a bare update id that does not
    itself look like one (what job versions before per-device dedupe stored)."""
    return json.dumps([device_id, update_id], ensure_ascii=False)


class SeenIds(Protocol):
    """The dedupe set of unsequenced updates: (device_id, update_id) -> version of the
    model when it was absorbed."""

    def __contains__(self, device_update: object) -> bool: ...

    def add(self, device_id: str, update_id: str, version: int) -> None: ...

    def prune(self, older_than: int) -> None: ...


@dataclass
class DictSeenIds:
    """`SeenIds` over any mutable mapping (a dict in tests, Flink MapState in the job).

    Keys are `seen_key(device_id, update_id)`. A bare update id (what state written
    before dedupe was per device holds) still counts as seen for any device until it is
    pruned after `dedupe_versions` releases, so an upgrade never lets a re-send through."""

    entries: MutableMapping[str, int] = field(default_factory=dict)

    def __contains__(self, device_update: object) -> bool:
        if not isinstance(device_update, tuple) or len(device_update) != 2:
            return False
        device_id, update_id = device_update
        return seen_key(device_id, update_id) in self.entries or update_id in self.entries

    def add(self, device_id: str, update_id: str, version: int) -> None:
        self.entries[seen_key(device_id, update_id)] = version

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
        check_history_bound(config, layout.size)
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
        settings = json.loads(r.text())
        # saved before schema step 5: the model keeps the weighted mean it was registered with
        settings.setdefault("normalization", Normalization.WEIGHT_SUM.value)
        config = AggregationConfig.from_dict(settings)
        layout = ParameterLayout([(n, tuple(shape)) for n, shape in json.loads(r.text())])
        size = r.i64()
        template = r.array().astype("<i8").tobytes()[:size]
        r.finish()
        return cls(model_id, config, layout, template, digest)


@dataclass
class ModelProcess:
    """One model's job logic. The caller persists `registration`, `state`, `buffer`,
    `seen` and `windows` (the last two are written through, as the update is absorbed).

    Times (`now`) are seconds of processing time; `deadline()` says when a timer must fire.
    `limits` bounds every field a device controls; `dlq_max_bytes` (the dead-letter
    topic's message limit) bounds every dead letter, so each one fits its topic.
    """

    models_topic_max_bytes: int
    dedupe_versions: int
    registration: RegisteredModel | None = None
    aggregator: Aggregator | None = None
    seen: SeenIds = field(default_factory=DictSeenIds)
    limits: InputLimits = field(default_factory=InputLimits)
    dlq_max_bytes: int | None = None
    #: the key this process runs for (names the model in dead letters before registration)
    model_id: str | None = None
    #: for metrics: staleness of the last accepted update, fill time of the last window
    last_staleness: int | None = None
    last_fill_seconds: float | None = None
    #: for metrics: the staleness of each update partials added to the window (the caller
    #: empties it before an event)
    partial_stalenesses: list[int] = field(default_factory=list)
    #: partials (FSPW bytes) that came before the registration; the caller persists them
    held_partials: list[bytes] = field(default_factory=list)
    #: signs every release (Ed25519, `fedstream.schemas.signing`); None: unsigned releases,
    #: which devices refuse by default (only tests of the unsigned path use that)
    signer: ReleaseSigner | None = None
    #: per-device sequence windows (`sequence_window.py`) and their width
    windows: WindowStore = field(default_factory=DictWindowStore)
    sequence_window: int = DEFAULT_WIDTH

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
        limits: InputLimits | None = None,
        dlq_max_bytes: int | None = None,
        model_id: str | None = None,
        signer: ReleaseSigner | None = None,
        windows: WindowStore | None = None,
        sequence_window: int = DEFAULT_WIDTH,
    ) -> ModelProcess:
        """A process over a model's persisted state."""
        aggregator = None
        if registration is not None and state is not None:
            aggregator = Aggregator(
                registration.config,
                ModelState.from_bytes(state),
                Accumulator.from_bytes(buffer) if buffer is not None else None,
            )
        return cls(
            models_topic_max_bytes,
            dedupe_versions,
            registration,
            aggregator,
            seen,
            limits or InputLimits(),
            dlq_max_bytes,
            model_id,
            signer=signer,
            windows=DictWindowStore() if windows is None else windows,
            sequence_window=sequence_window,
        )

    # -- events -----------------------------------------------------------------------
    def on_registration(self, envelope: Envelope, now: float | None = None) -> list[Output]:
        """Register the model and release its version 0; then fold the partials held for
        it (`on_partial`), at clock `now` (default: the wall clock)."""
        if self.model_id is None:  # a refusal names the model whenever it can be read
            self.model_id = readable_model_id(envelope.value)
        if self.registration is not None:
            if self.registration.digest == hashlib.sha256(envelope.value).hexdigest():
                return []  # the same registration re-sent (producer retry): nothing to do
            return [
                self.refuse(
                    envelope,
                    "BAD_REGISTRATION",
                    f"model {self.registration.model_id!r} is already registered "
                    f"(version {self.version}); register a new model_id instead",
                )
            ]
        try:
            model, initial = RegisteredModel.from_bytes(envelope.value)
        except CodecError as error:
            return [self.refuse(envelope, "BAD_REGISTRATION", f"{error.reason}: {error.detail}")]
        except ValueError as error:  # OnnxTemplateError is a ValueError
            return [self.refuse(envelope, "BAD_REGISTRATION", str(error))]
        self.registration = model
        self.aggregator = Aggregator(model.config, ModelState(initial, 0))
        try:
            outputs = self._release(None)
        except ValueError as error:  # OnnxTemplateError from materialize
            # The template cannot hold the weights (e.g. a named initializer is an int
            # tensor): refuse the registration instead of failing the job on every restart.
            self.registration, self.aggregator = None, None
            return [self.refuse(envelope, "BAD_REGISTRATION", str(error))]
        held, self.held_partials = self.held_partials, []
        clock = time.time() if now is None else now
        for data in held:
            outputs += self.on_partial(data, clock)
        return outputs

    def on_update(
        self, envelope: Envelope, now: float, record: dict[str, Any] | None = None
    ) -> list[Output]:
        """Absorb or refuse one update; `record`: its decoded GradientUpdate when the
        caller decoded it already (verifying its signature), else it is decoded here."""
        try:
            record = read_update(envelope.value) if record is None else record
        except CodecError as error:  # route() decoded it once already; keep this total
            return [self.refuse(envelope, error)]
        update_id = str(record["update_id"])
        if self.model_id is None:
            self.model_id = str(record["model_id"])

        def refuse(reason: CodecError | str, detail: str | None = None) -> list[Output]:
            return [self.refuse(envelope, reason, detail, update_id=update_id)]

        problem = field_problem(record, self.limits)
        if problem is not None:  # a too-long id is cut in the dead letter
            return refuse("BAD_FIELD", problem)

        if self.registration is None or self.aggregator is None:
            return refuse("UNKNOWN_MODEL", f"model {self.model_id!r} is not registered")
        device_id = str(record["device_id"])
        version = self.version
        lag = version - int(record["base_version"])
        sequenced: Sequenced | None = None
        if record.get("sequence") is None:
            if (device_id, update_id) in self.seen:
                return refuse("DUPLICATE", f"update {update_id!r} was already absorbed")
            if lag > self.dedupe_versions:
                return refuse(
                    "STALE",
                    f"staleness {lag} exceeds the dedupe horizon of {self.dedupe_versions} "
                    "versions for updates without a sequence (a re-send that old could "
                    "not be recognised)",
                )
        else:
            sequenced, refusal = sequence_check(
                windows=self.windows,
                seen=self.seen,
                limits=self.limits,
                width=self.sequence_window,
                model_id=self.model_id,
                device_id=device_id,
                sequence=int(record["sequence"]),
                update_id=update_id,
            )
            if refusal is not None:
                return refuse(*refusal)
        try:
            update = to_client_update(record, self.registration.layout.size)
        except CodecError as error:
            return refuse(error)
        rejection = self.aggregator.try_add(update, now, self.limits)
        if rejection is not None:
            return refuse(rejection.reason.value.upper(), rejection.detail)
        outputs = []
        if self.aggregator.should_close(now) or self._window_full():
            try:
                outputs = self._close(now)
            except WindowCloseError as error:
                error.update_id = update_id
                raise
        # Written last: a failure above leaves no trace of this update in the dedupe state.
        if sequenced is None:
            self.seen.add(device_id, update_id, version)
        else:
            mark_absorbed(self.windows, device_id, sequenced)
        self.last_staleness = lag
        return outputs

    def on_partial(self, data: bytes, now: float) -> list[Output]:
        """Fold a shard's partial window (FSPW bytes, `shard_process.py`) into the open
        window at the model's current version, then close it if it must.

        A partial that arrives before the model's registration (which reaches the shards
        and the model key on two paths) is held, up to MAX_HELD_PARTIALS, and folded as
        soon as the registration is in (`on_registration`); beyond that its updates are
        refused UNKNOWN_MODEL.

        Base versions out of range are refused as a whole, one dead letter per update
        (STALE, FUTURE_VERSION: `shard_combine.fold_partial`); so is every update of a
        partial the model cannot take (no registration: UNKNOWN_MODEL; built for another
        parameter count or weighting: INTERNAL). The dead letters have no source record
        (the update's bytes stayed on its shard) and name the update and the model. A
        count window closes at the first fold that brings it to K or more updates, so it
        may hold up to K - 1 + ceil(K / S) (README, "Scaling out one model")."""
        partial = PartialWindow.from_bytes(data)
        ids = [e.update_id for b in partial.base_versions for e in partial.entries(b)]
        if self.registration is None or self.aggregator is None:
            if len(self.held_partials) < MAX_HELD_PARTIALS:
                self.held_partials = [*self.held_partials, data]
                return []
            detail = (
                f"model {self.model_id!r} is not registered, and {MAX_HELD_PARTIALS} "
                "partials already wait for its registration"
            )
            return [self.refuse(NO_SOURCE, "UNKNOWN_MODEL", detail, update_id=u) for u in ids]
        try:
            rejections = fold_partial(self.aggregator, partial)
        except ValueError as error:  # checked before anything is folded
            return [self.refuse(NO_SOURCE, "INTERNAL", str(error), update_id=u) for u in ids]
        outputs = [
            self.refuse(NO_SOURCE, r.reason.value.upper(), r.detail, update_id=r.update_id)
            for r in rejections
        ]
        refused = {r.update_id for r in rejections}
        version = self.version
        absorbed = [
            version - b
            for b in partial.base_versions
            for e in partial.entries(b)
            if e.update_id not in refused
        ]
        self.partial_stalenesses += absorbed
        if absorbed:
            self.last_staleness = max(absorbed)
            if self.aggregator.should_close(now) or self._window_full():
                outputs += self._close(now)
        return outputs

    def on_timer(self, now: float) -> list[Output]:
        if self.aggregator is not None and self.aggregator.should_close(now):
            return self._close(now)
        return []

    def refuse(
        self,
        envelope: Envelope,
        reason: CodecError | str,
        detail: str | None = None,
        *,
        update_id: str | None = None,
    ) -> Output:
        """The dead letter of `envelope` for this model (bounded to the DLQ's limit)."""
        return model_letter(self, envelope, reason, detail, update_id)

    def discard_window(self, reason: str, detail: str) -> list[Output]:
        """Empty the open window, with a dead letter (no original bytes: the window keeps
        only sums) naming each update it held, so none disappears silently."""
        if self.aggregator is None:
            return []
        buffer = self.aggregator.buffer
        text = f"discarded with its window: {detail}"
        outputs = [self.refuse(NO_SOURCE, reason, text, update_id=u) for u in buffer.update_ids]
        buffer.clear()
        return outputs

    def _window_full(self) -> bool:
        """Every window closes at `limits.max_window_updates`, whatever its kind: a time
        window could otherwise grow a release's lineage past its topic's limit."""
        assert self.aggregator is not None
        return self.aggregator.buffer.count >= self.limits.max_window_updates

    # -- queries ----------------------------------------------------------------------
    @property
    def version(self) -> int:
        return -1 if self.aggregator is None else self.aggregator.state.version

    def deadline(self) -> float | None:
        return None if self.aggregator is None else self.aggregator.deadline()

    def closes_with_next(self, now: float) -> bool:
        """True if one more absorbed update at `now` would close the open window, by the
        window's own rule or by `limits.max_window_updates` (`_window_full`)."""
        if self.aggregator is None:
            return False
        full = self.aggregator.buffer.count + 1 >= self.limits.max_window_updates
        return full or self.aggregator.closes_with_next(now)

    def state_bytes(self) -> tuple[bytes | None, bytes | None]:
        """(model state, open window) in their versioned binary formats."""
        if self.aggregator is None:
            return None, None
        return self.aggregator.state.to_bytes(), self.aggregator.buffer.to_bytes()

    # -- releases ---------------------------------------------------------------------
    def _close(self, now: float) -> list[Output]:
        """Close the window and build its release; `WindowCloseError` if that fails or
        the new model is not finite (it is then never released: see `contain`)."""
        assert self.aggregator is not None
        total_weight = self.aggregator.buffer.total_weight
        first = self.aggregator.buffer.first_added_at
        self.last_fill_seconds = None if first is None else max(0.0, now - first)
        try:
            closed = self.aggregator.close()
            finite = finite_squared_norm(closed.state.params) is not None
            # FedAsync advances the version once per absorbed update, FedBuff once per window.
            fedasync = self.aggregator.config.mode is Mode.FEDASYNC
            parent = closed.state.version - (closed.lineage.count if fedasync else 1)
            outputs = self._release(closed, total_weight, parent) if finite else []
        except Exception as error:
            raise WindowCloseError("INTERNAL", f"{type(error).__name__}: {error}") from error
        if not finite:
            raise WindowCloseError(
                "NON_FINITE_AGGREGATE",
                f"the window's aggregate made version {closed.state.version} non-finite",
            )
        self.seen.prune(older_than=closed.state.version - self.dedupe_versions)
        return outputs

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
        ids = lineage["update_ids"] + lineage["device_ids"]
        room -= sum(len(u.encode()) + 8 for u in ids)  # UTF-8 bytes
        digest = hashlib.sha256(onnx_bytes).hexdigest()  # once: signed, and on every chunk
        signature, key_id = self._sign(model.model_id, state.version, onnx_bytes, digest, lineage)
        records = release_chunks(
            model_id=model.model_id,
            version=state.version,
            onnx=onnx_bytes,
            lineage=lineage,  # type: ignore[arg-type]
            created_at=now_ms(),
            max_chunk_bytes=max(room, 1024),
            signature=signature,
            key_id=key_id,
            sha256=digest,
        )
        # one key per chunk: compaction keeps every chunk of the newest release (schemas.keys)
        return [
            Output(
                "release", release_key(r["model_id"], r["chunk_index"]), encode("ModelRelease", r)
            )
            for r in records
        ]

    def _sign(
        self, model_id: str, version: int, onnx: bytes, digest: str, lineage: dict[str, Any]
    ) -> tuple[bytes | None, str | None]:
        """(signature, key id) of the release, once over the whole file's digest `digest`
        (a chunked release carries it on every chunk); (None, None) without a signer."""
        if self.signer is None:
            return None, None
        from fedstream.schemas.signing import release_statement

        statement = release_statement(
            model_id=model_id,
            version=version,
            onnx_size=len(onnx),
            sha256=digest,
            lineage=lineage,
        )
        return self.signer.sign(statement), self.signer.key_id


def _lineage(
    closed: ClosedWindow | None, parent: int | None, total_weight: float
) -> dict[str, Any]:
    """The ReleaseLineage record; version 0 (no window closed) absorbed nothing."""
    lineage = closed.lineage if closed is not None else Lineage.of([], [], 0)
    return {
        "parent_version": parent if closed is not None else None,
        "update_ids": list(lineage.update_ids),
        "device_ids": list(lineage.device_ids),
        "num_updates": lineage.count,
        "num_samples": lineage.total_samples,
        "staleness_min": lineage.staleness_min,
        "staleness_max": lineage.staleness_max,
        "staleness_mean": lineage.staleness_mean,
        "total_weight": float(total_weight),
    }
