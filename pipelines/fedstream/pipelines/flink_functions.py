"""The PyFlink functions of the aggregation job: thin shells around `model_process`.

`RouteFunction` decodes each Kafka record just enough to key it by model (dead-lettering
what cannot be decoded); `RegistryFunction` (all registrations, under one key) admits new
models up to `limits.max_models`; `AggregateFunction` holds one model's state in Flink
keyed state and runs `ModelProcess` on each record and timer, through `contain`: whatever
one record or timer raises stays with it (a dead letter) and its model (rolled back to
its state in Flink), and the job goes on. With `runtime.model_shards` > 1,
`shard_function.ShardFunction` runs before it: partial windows that `AggregateFunction`
folds in (`ModelProcess.on_partial`).

Keyed state uses our own versioned binary formats (`RegisteredModel.to_state`,
`ModelState.to_bytes`, `Accumulator.to_bytes`) inside `PICKLED_BYTE_ARRAY` value
states — pickling a `bytes` object is stable across job versions, unlike pickling our
classes, and `PRIMITIVE_ARRAY(BYTE)` value states crash on first read in thread mode
(measured with PyFlink 2.2). Dedupe state is written through as an update is absorbed,
never cached: the unsequenced updates' seen set is a `MapState[str, int]` (one entry per
remembered (device, update id)); the sequenced updates' windows a `MapState[str, bytes]`
(device id -> `SequenceWindow.to_bytes()`, 8 + W/8 bytes) with the number of devices in
a `ValueState[int]` beside it, updated in the same call, so a checkpoint holds both or
neither (both are keyed state of the same operator).

Flink state stays the only source of truth, but reading a model back from it for every
record (two model-sized values through the JVM, unpickled and CRC-checked) was most of the
operator's Python time (cProfile of the job: ~75% at 1M parameters). So the
function keeps the live `Aggregator` of the last `live_models` models it touched, tagged
with a per-key *generation* counter that it bumps in state with every write. A record
reuses the live object only when the generation in state is the one it was saved with;
anything else (a restore, which also re-runs `open` and empties the cache; state written
by an older job version, without a generation) reads the model from state as before.

Both functions profile themselves when `FEDSTREAM_PROFILE_DIR` is set (`profiling.py`).
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, MapFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from fedstream.pipelines.admission import admit_registration, take_registration_fragment
from fedstream.pipelines.aggregator import Aggregator
from fedstream.pipelines.deferred_windows import (
    FLUSH_TIMESTAMP,
    DeferredWindows,
    UnsavedWindowError,
    window_mark,
)
from fedstream.pipelines.device_gate import (
    DeviceGate,
    DeviceState,
    Passed,
    authenticate,
    joined_entry,
    route_device_key,
)
from fedstream.pipelines.job_metrics import ModelMetrics
from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.model_process import (
    NO_SOURCE,
    DictSeenIds,
    Envelope,
    ModelProcess,
    Output,
    RegisteredModel,
    contain,
    dead_letter,
    route,
)
from fedstream.pipelines.profiling import OperatorProfile
from fedstream.pipelines.reassembly import Assembly
from fedstream.pipelines.sequence_window import DEFAULT_WIDTH, check_width
from fedstream.schemas.fragments import is_fragment
from fedstream.schemas.signing import TrustedKeys

if TYPE_CHECKING:
    from fedstream.schemas.signing import ReleaseSigner

KIND_UPDATE, KIND_REGISTRATION, KIND_DEAD = "update", "registration", "dead"
KIND_DEVICE = "device"
#: an update the JVM joined to its device's registry record (`io.fedstream.flink.DeviceJoin`),
#: which the aggregate verifies: the record is in field 7 (JOINED)
KIND_SIGNED = "signed"
#: a shard's partial window (FSPW bytes) for its model's key (`shard_process.py`)
KIND_PARTIAL = "partial"
#: a record the JVM's pre-route (`io.fedstream.flink.UpdateRouter`) left to `RouteFunction`
RAW = "raw"

BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())
#: (model_id, kind, value, topic, partition, offset, device_id): the routed input of the
#: device gate (keyed by device_id) and of AggregateFunction (keyed by model_id).
ROUTED = Types.ROW_NAMED(
    ["model_id", "kind", "value", "topic", "partition", "offset", "device_id"],
    [
        Types.STRING(),
        Types.STRING(),
        BYTES,
        Types.STRING(),
        Types.INT(),
        Types.LONG(),
        Types.STRING(),
    ],
)
#: ROUTED and the device's registry record (DeviceKey bytes; null but on a KIND_SIGNED row):
#: the input of AggregateFunction, where the joined updates meet the gate's
JOINED = Types.ROW_NAMED(
    [*ROUTED.get_field_names(), "device_key"], [*ROUTED.get_field_types(), BYTES]
)
#: (kind, value, key): what AggregateFunction emits, "release" or "dead_letter" records
#: with their Kafka key (`Output.key`).
EMITTED = Types.ROW_NAMED(["kind", "value", "key"], [Types.STRING(), BYTES, BYTES])


def timer_millis(deadline: float) -> int:
    """The processing-time timer (ms) for a window deadline (s): rounded UP, so that the
    timer's own time is never before the deadline. (Truncating made timestamp / 1000 fall
    short of the deadline for about 1 window in 25; on_timer then kept the window open and
    re-registered the same past timer, which refired in a loop until the next record.
    `deadline * 1000` itself rounds, so the result is checked the way it is used, in
    seconds: e.g. 1673412707.9490001 s * 1000 is exactly 1673412707949.0.)"""
    millis = math.ceil(deadline * 1000)
    while millis / 1000.0 < deadline:
        millis += 1
    return millis


def silence_warnings() -> None:
    """Turn Python warnings off in the operator's interpreter: in PyFlink's thread mode a
    warning printed from an operator (numpy's "overflow encountered in multiply") hung the
    job for good, with no log line (tests/job/test_job_tier_fuzz.py found it). Conditions
    that matter are checked explicitly instead (non-finite aggregates, input limits)."""
    warnings.simplefilter("ignore")


class RouteFunction(MapFunction):  # type: ignore[misc]
    """A RAW row (ROUTED: a Kafka record the JVM's pre-route did not key) -> ROUTED row of
    its kind; undecodable -> "dead". Well-formed updates never come here: the pre-route
    keys them from their first fields (aggregation_job `_pre_route`)."""

    def __init__(
        self,
        updates_topic: str,
        control_topic: str,
        limits: InputLimits | None = None,
        dlq_max_bytes: int | None = None,
        devices_topic: str | None = None,
    ) -> None:
        self._updates = updates_topic
        self._control = control_topic
        self._devices = devices_topic
        self._limits = limits or InputLimits()
        self._dlq_max_bytes = dlq_max_bytes

    def open(self, runtime_context: RuntimeContext) -> None:
        silence_warnings()
        self._metrics = ModelMetrics(runtime_context.get_metrics_group())
        self._profile = OperatorProfile("route")

    def close(self) -> None:
        self._profile.dump()

    def map(self, value: Row) -> Row:
        with self._profile:
            return self._route(value)

    def _route(self, value: Row) -> Row:
        envelope = _envelope(value)
        if envelope.topic == self._devices:
            device_id, dead = route_device_key(envelope, self._limits, self._dlq_max_bytes)
            if dead is not None:
                self._metrics.refused(None, dead.reason)
                return Row("", KIND_DEAD, dead.value, envelope.topic, 0, 0, "")
            return _routed_row("", KIND_DEVICE, envelope, device_id or "")
        routed = route(envelope, self._updates, self._control, self._limits, self._dlq_max_bytes)
        if routed.dead is not None:
            self._metrics.refused(routed.dead.key.decode(errors="replace"), routed.dead.reason)
            return Row("", KIND_DEAD, routed.dead.value, envelope.topic, 0, 0, "")
        kind = KIND_UPDATE if envelope.topic == self._updates else KIND_REGISTRATION
        return _routed_row(routed.model_id or "", kind, envelope, routed.device_id)


def joined_check(
    value: Row, envelope: Envelope, allow_unsigned: bool, dlq_max_bytes: int | None
) -> Passed | Output:
    """Passed (with the record it decoded) when the KIND_SIGNED row `value` (an update the
    JVM joined to its device's registry record, `io.fedstream.flink.DeviceJoin`) is
    authentic, else its dead letter: the device gate's own decision
    (`device_gate.authenticate`) against the record in field 7. Contained: a failure is
    this record's INTERNAL dead letter."""
    try:
        raw = value[7] if len(value) > 7 else None
        entry = "no registry entry came with it" if raw is None else joined_entry(bytes(raw))
        return authenticate(envelope, entry, allow_unsigned, dlq_max_bytes)
    except Exception as error:  # contained: this record only, no state was touched
        detail = f"{type(error).__name__}: {error}"
        return dead_letter(envelope, "INTERNAL", detail, max_bytes=dlq_max_bytes)


def as_passed(value: Row) -> Row:
    """An authentic update's JOINED row (KIND_SIGNED once `joined_check` passed it, or
    KIND_UPDATE from the gate) as the gate passes an update on: a ROUTED row of
    KIND_UPDATE."""
    return Row(value[0], KIND_UPDATE, *(value[i] for i in range(2, 7)))


def _routed_row(model_id: str, kind: str, envelope: Envelope, device_id: str) -> Row:
    return Row(
        model_id,
        kind,
        envelope.value,
        envelope.topic,
        envelope.partition,
        envelope.offset,
        device_id,
    )


def _envelope(row: Row) -> Envelope:
    """The input record a ROUTED row carries."""
    return Envelope(bytes(row[2] or b""), row[3], int(row[4]), int(row[5]))


class DeviceGateFunction(KeyedProcessFunction):  # type: ignore[misc]
    """Verifies every update against its device's registry entry before anything else
    (`device_gate.DeviceGate`), keyed by device_id: the registry records (KIND_DEVICE) and
    the updates of one device meet here. Passes authentic updates on as they came; a
    refused one becomes a "dead" row (UNAUTHENTICATED). An update of a device with no
    entry yet waits in state for it, up to the grace, with a processing-time timer."""

    def __init__(self, gate: DeviceGate) -> None:
        self._gate = gate

    def open(self, runtime_context: RuntimeContext) -> None:
        silence_warnings()
        # the registry entry and the waiting rows, as tuples of builtins (stable pickles)
        self._entry = runtime_context.get_state(
            ValueStateDescriptor("device_key", Types.PICKLED_BYTE_ARRAY())
        )
        self._pending = runtime_context.get_state(
            ValueStateDescriptor("pending", Types.PICKLED_BYTE_ARRAY())
        )
        self._deadline = runtime_context.get_state(ValueStateDescriptor("deadline", Types.LONG()))
        # a large update in fragments: what fragment 0 declared, and each piece's data
        self._assembly = runtime_context.get_state(
            ValueStateDescriptor("fragment_assembly", Types.PICKLED_BYTE_ARRAY())
        )
        self._pieces = FlinkFragmentStore(
            runtime_context.get_map_state(
                MapStateDescriptor("fragments", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
            )
        )
        self._metrics = ModelMetrics(runtime_context.get_metrics_group())
        self._profile = OperatorProfile("device_gate")

    def close(self) -> None:
        self._profile.dump()

    def process_element(self, value: Row, ctx: Any) -> Iterator[Row]:
        with self._profile:
            rows = self._process(value, ctx)
        yield from rows

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Row]:
        with self._profile:
            state, models, stored = self._load()
            outputs = self._gate.on_timer(state, timestamp / 1000.0)
            rows = self._save(state, models, stored, outputs, ctx, None, _current_key(ctx))
        yield from rows

    def _process(self, value: Row, ctx: Any) -> list[Row]:
        state, models, stored = self._load()
        envelope = _envelope(value)
        now = ctx.timer_service().current_processing_time() / 1000.0
        try:
            with np.errstate(all="ignore"):
                if value[1] == KIND_DEVICE:
                    outputs = self._gate.on_device_key(state, envelope)
                elif is_fragment(envelope.value):
                    outputs = self._on_fragment(state, envelope)
                else:
                    models[_coordinates(envelope)] = value[0]
                    outputs = self._gate.on_update(state, envelope, now)
        except Exception as error:  # contained: this record only, the state is not written
            self._metrics.refused(value[0] or None, "INTERNAL")
            return [Row("", KIND_DEAD, self._gate.internal(envelope, error).value, "", 0, 0, "")]
        if value[1] == KIND_DEVICE and state.entry is not None:
            e = state.entry
            self._entry.update((e.device_id, e.key_id, e.public_key, e.active))
        model_id = value[0] if value[1] == KIND_UPDATE else None
        return self._save(state, models, stored, outputs, ctx, model_id, value[6] or "")

    def _on_fragment(self, state: DeviceState, envelope: Envelope) -> list[Passed | Output]:
        """A piece of a large update: its assembly is read and written here only (a
        whole update costs no state access for it)."""
        raw = self._assembly.value()
        state.assembly = None if raw is None else Assembly.from_state(raw)
        outputs = self._gate.on_fragment(state, envelope, self._pieces)
        if state.assembly is not None:
            self._assembly.update(state.assembly.to_state())
        elif raw is not None:
            self._assembly.clear()
        return outputs

    def _load(self) -> tuple[DeviceState, dict[tuple[str, int, int], str], tuple[bool, bool]]:
        """The device's state; `models` maps a waiting update's coordinates to its model."""
        from fedstream.schemas.update_signing import RegisteredKey

        raw = self._entry.value()
        entry = None if raw is None else RegisteredKey(*raw)
        # A device with an entry has nothing waiting: its entry's arrival decided every
        # waiting update and cleared the deadline (`DeviceGate.on_device_key`), and no
        # update waits once it is there. So only an unknown device's are read.
        waiting = (self._pending.value() or []) if entry is None else []
        pending = [Envelope(v, t, p, o) for v, t, p, o, _ in waiting]
        models = {(t, p, o): m for _, t, p, o, m in waiting}
        deadline = self._deadline.value() if entry is None else None
        # `stored`: whether pending updates and a deadline are held, i.e. what `_save` may
        # have to clear (a registered device's updates wait for nothing: four JVM calls per
        # update saved)
        stored = (bool(waiting), deadline is not None)
        seconds = None if deadline is None else deadline / 1000.0
        return DeviceState(entry, pending, seconds), models, stored

    def _save(
        self,
        state: DeviceState,
        models: dict[tuple[str, int, int], str],
        stored: tuple[bool, bool],
        outputs: list[Passed | Output],
        ctx: Any,
        model_id: str | None,
        device_id: str,
    ) -> list[Row]:
        """Write the device's state back; the rows of `outputs` (a refusal is counted
        under the model its dead letter names, else `model_id`, the model of the update
        being handled: None on a timer or a registry record). A passed update carries
        `device_id` (the gate's key) on: a sharded model's shard key is built from it."""
        waiting = [
            (e.value, e.topic, e.partition, e.offset, models[_coordinates(e)])
            for e in state.pending
        ]
        had_pending, had_deadline = stored
        if waiting:
            self._pending.update(waiting)
        elif had_pending:
            self._pending.clear()
        if state.deadline is None:
            if had_deadline:
                self._deadline.clear()
        elif not had_deadline:
            millis = timer_millis(state.deadline)
            ctx.timer_service().register_processing_time_timer(millis)
            self._deadline.update(millis)
        rows = []
        for output in outputs:
            if isinstance(output, Passed):
                e = output.envelope
                model = output.model_id or models.get(_coordinates(e), "")
                rows.append(_routed_row(model, KIND_UPDATE, e, device_id))
            else:
                named = output.key.decode(errors="replace") or model_id  # the letter's model
                self._metrics.refused(named, output.reason)
                rows.append(Row("", KIND_DEAD, output.value, "", 0, 0, ""))
        return rows


def _current_key(ctx: Any) -> str:
    """The key of the event being handled, as the string it was built from (a key of
    type ROW(STRING), `aggregation_job._key_by`, may come back as a one-field row)."""
    key = ctx.get_current_key()
    return str(key[0]) if isinstance(key, Row | tuple) else str(key)


def _coordinates(envelope: Envelope) -> tuple[str, int, int]:
    return envelope.topic, envelope.partition, envelope.offset


class FlinkFragmentStore:
    """`reassembly.FragmentStore` over a Flink MapState (str -> data) of the current key:
    each fragment's data is written once, under `prefix` + its index (the registry keeps
    every owner's pieces under its one key, one prefix per owner). Without a prefix the
    key holds one signer's pieces only, and `clear` clears the whole map."""

    def __init__(self, state: Any, prefix: str = "") -> None:
        self._state = state
        self._prefix = prefix

    def put(self, index: int, data: bytes) -> None:
        self._state.put(f"{self._prefix}{index}", data)

    def get(self, index: int) -> bytes:
        return bytes(self._state.get(f"{self._prefix}{index}"))

    def clear(self, count: int) -> None:
        if not self._prefix:
            self._state.clear()
            return
        for index in range(count):
            self._state.remove(f"{self._prefix}{index}")


class RegistryFunction(KeyedProcessFunction):  # type: ignore[misc]
    """Authenticates registrations, keeps one owner per model and admits new models up to
    `limits.max_models` per job (`admission.admit_registration`; all under one key).

    Keyed state needs a key, and the bound is on how many keys the aggregate operator
    holds, which no key's state can count: so registrations, which are rare, meet under
    one constant key first. Passes ROUTED rows on; a refused one becomes a "dead" row.
    `owner_key_files`: PEM public keys of the trusted model owners (None: unsigned
    registrations are accepted); the keys are loaded on the worker, in `open`.
    """

    def __init__(
        self,
        limits: InputLimits,
        dlq_max_bytes: int | None = None,
        owner_key_files: Sequence[str] | None = None,
    ) -> None:
        self._limits = limits
        self._dlq_max_bytes = dlq_max_bytes
        self._owner_key_files = None if owner_key_files is None else list(owner_key_files)

    def open(self, runtime_context: RuntimeContext) -> None:
        silence_warnings()
        files = self._owner_key_files
        self._owner_keys = None if files is None else TrustedKeys.from_files(*files)
        self._models = runtime_context.get_map_state(
            MapStateDescriptor("registered_models", Types.STRING(), Types.BOOLEAN())
        )
        self._owners = runtime_context.get_map_state(
            MapStateDescriptor("model_owners", Types.STRING(), Types.STRING())
        )
        self._count = runtime_context.get_state(ValueStateDescriptor("model_count", Types.LONG()))
        # large registrations in fragments: per owner key id, what its fragment 0 declared
        # and (under "<owner>#<index>") each piece's data
        self._assemblies = runtime_context.get_map_state(
            MapStateDescriptor("fragment_assemblies", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
        )
        self._pieces = runtime_context.get_map_state(
            MapStateDescriptor("fragments", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
        )
        self._metrics = ModelMetrics(runtime_context.get_metrics_group())

    def _fragment(
        self, envelope: Envelope, owner: str
    ) -> tuple[tuple[str, Envelope, Row] | None, list[Row]]:
        """A piece of a large registration, under its claimed owner's assembly: the whole
        registration (model id, envelope, ROUTED row) once it is complete, and the dead
        rows of what was refused or dropped. Contained: a failure is this record's
        INTERNAL dead letter, and the owner's assembly state stays as it was."""
        raw = self._assemblies.get(owner)
        current = None if raw is None else Assembly.from_state(raw)
        store = FlinkFragmentStore(self._pieces, f"{owner}#")
        try:
            with np.errstate(all="ignore"):
                taken, routed = take_registration_fragment(
                    current, envelope, self._owner_keys, store, self._limits, self._dlq_max_bytes
                )
        except Exception as error:  # contained: this record only
            detail = f"{type(error).__name__}: {error}"
            letter = dead_letter(envelope, "INTERNAL", detail, max_bytes=self._dlq_max_bytes)
            return None, self._dead([letter])
        if taken.assembly is not None:
            self._assemblies.put(owner, taken.assembly.to_state())
        elif raw is not None:
            self._assemblies.remove(owner)
        letters = [*taken.letters, *([routed.dead] if routed and routed.dead else [])]
        if taken.whole is None or routed is None or routed.dead is not None:
            return None, self._dead(letters)
        model_id = routed.model_id or ""
        row = _routed_row(model_id, KIND_REGISTRATION, taken.whole, "")
        return (model_id, taken.whole, row), self._dead(letters)

    def _dead(self, letters: list[Output]) -> list[Row]:
        for letter in letters:
            self._metrics.refused(letter.key.decode(errors="replace") or None, letter.reason)
        return [Row("", KIND_DEAD, letter.value, "", 0, 0, "") for letter in letters]

    def process_element(self, value: Row, ctx: Any) -> Iterator[Row]:
        model_id = value[0]
        envelope = Envelope(bytes(value[2]), value[3], int(value[4]), int(value[5]))
        if is_fragment(envelope.value):
            whole, dead = self._fragment(envelope, value[6])
            yield from dead
            if whole is None:
                return
            model_id, envelope, value = whole
        count = self._count.value() or 0
        known = bool(self._models.contains(model_id))
        verdict = admit_registration(
            envelope,
            model_id,
            known=known,
            known_owner=self._owners.get(model_id) if known else None,
            registered=count,
            limits=self._limits,
            owner_keys=self._owner_keys,
            dlq_max_bytes=self._dlq_max_bytes,
        )
        if verdict.dead is not None:
            self._metrics.refused(model_id, verdict.dead.reason)
            yield Row("", KIND_DEAD, verdict.dead.value, envelope.topic, 0, 0, "")
            return
        if verdict.claims_slot:
            self._models.put(model_id, True)
            if verdict.owner is not None:
                self._owners.put(model_id, verdict.owner)
            self._count.update(count + 1)
        yield value


class _MapStateView:
    """`MutableMapping`-like view of a Flink MapState for `DictSeenIds`."""

    def __init__(self, state: Any) -> None:
        self._state = state

    def __contains__(self, key: object) -> bool:
        return bool(self._state.contains(key))

    def __setitem__(self, key: str, value: int) -> None:
        self._state.put(key, value)

    def __delitem__(self, key: str) -> None:
        self._state.remove(key)

    def items(self) -> Iterable[tuple[str, int]]:
        return list(self._state.items())


class _FlinkWindowStore:
    """`WindowStore` over a Flink MapState (device -> window) and a device count."""

    def __init__(self, windows: Any, count: Any) -> None:
        self._windows = windows
        self._count = count

    def get(self, device_id: str) -> bytes | None:
        found = self._windows.get(device_id)
        return None if found is None else bytes(found)

    def put(self, device_id: str, window: bytes, *, new: bool) -> None:
        self._windows.put(device_id, window)
        if new:
            self._count.update(self.count() + 1)

    def count(self) -> int:
        return int(self._count.value() or 0)


@dataclass(frozen=True, slots=True)
class _Loaded:
    """What `_load` read from state, which `_save` needs to know."""

    registered: bool
    generation: int | None
    #: the partials held for an unregistered model, as read (`ModelProcess.on_partial`)
    held: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class _Live:
    """A model's aggregator as of state generation `generation`."""

    generation: int
    aggregator: Aggregator


class AggregateFunction(KeyedProcessFunction):  # type: ignore[misc]
    """Per-model aggregation: registration, validation, windows (timers), releases.

    `live_models`: how many models' aggregators stay in memory between records (each
    costs about its parameters plus its open window); 0 reads every record's model from
    Flink state. `defer_window_writes`: the job runs this function in
    `FlushingKeyedProcessOperator`, which calls the flush before each checkpoint, so an
    open window may be written once per checkpoint (`deferred_windows`)."""

    def __init__(
        self,
        models_topic_max_bytes: int,
        dedupe_versions: int,
        live_models: int = 8,
        limits: InputLimits | None = None,
        dlq_max_bytes: int | None = None,
        signing_key_file: str | None = None,
        sequence_window: int = DEFAULT_WIDTH,
        allow_unsigned: bool = False,
        defer_window_writes: bool = False,
    ) -> None:
        if live_models < 0:
            raise ValueError(f"live_models must be >= 0, got {live_models}")
        self._defer = defer_window_writes
        # Only the path travels in the job graph; the key is read on the worker (`open`).
        self._signing_key_file = signing_key_file
        self._max_bytes = models_topic_max_bytes
        self._dedupe_versions = dedupe_versions
        self._sequence_window = check_width(sequence_window)
        self._live_models = live_models
        self._limits = limits or InputLimits()
        self._dlq_max_bytes = dlq_max_bytes
        self._allow_unsigned = allow_unsigned  # trust.allow_unsigned_updates, for KIND_SIGNED
        self._registrations: dict[str, RegisteredModel] = {}

    def open(self, runtime_context: RuntimeContext) -> None:
        silence_warnings()
        self._signer: ReleaseSigner | None = None
        if self._signing_key_file is not None:
            from fedstream.schemas.signing import load_signing_key

            self._signer = load_signing_key(self._signing_key_file)
        self._registration = runtime_context.get_state(
            ValueStateDescriptor("registration", Types.PICKLED_BYTE_ARRAY())
        )
        self._model = runtime_context.get_state(
            ValueStateDescriptor("model", Types.PICKLED_BYTE_ARRAY())
        )
        self._buffer = runtime_context.get_state(
            ValueStateDescriptor("window", Types.PICKLED_BYTE_ARRAY())
        )
        self._timer = runtime_context.get_state(ValueStateDescriptor("timer", Types.LONG()))
        self._held = runtime_context.get_state(
            ValueStateDescriptor("held_partials", Types.PICKLED_BYTE_ARRAY())
        )
        self._generation = runtime_context.get_state(
            ValueStateDescriptor("generation", Types.LONG())
        )
        self._seen = runtime_context.get_map_state(
            MapStateDescriptor("seen_update_ids", Types.STRING(), Types.LONG())
        )
        self._windows = _FlinkWindowStore(
            runtime_context.get_map_state(
                MapStateDescriptor("sequence_windows", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
            ),
            runtime_context.get_state(ValueStateDescriptor("sequence_devices", Types.LONG())),
        )
        # open() also runs after a restore: nothing kept from before it may be trusted.
        self._live: OrderedDict[str, _Live] = OrderedDict()
        self._unsaved = DeferredWindows(self._live_models if self._defer else 0)
        self._key_context: Any = None  # a record's context: the current key, in a flush
        self._metrics = ModelMetrics(runtime_context.get_metrics_group())
        self._profile = OperatorProfile("aggregate")

    def close(self) -> None:
        self._profile.dump()

    # -- state ------------------------------------------------------------------------
    def _load(self, model_id: str, *, fresh: bool = False) -> tuple[ModelProcess, _Loaded]:
        """The model's process: its live copy when the generation in state matches (and
        not `fresh`), else read from Flink state."""
        seen = DictSeenIds(_MapStateView(self._seen))  # type: ignore[arg-type]
        generation = self._generation.value()
        live = None if fresh else self._live.get(model_id)
        registration: RegisteredModel | None = self._registrations.get(model_id)
        if live is not None and live.generation == generation and registration is not None:
            self._live.move_to_end(model_id)
            process = self._template(registration, live.aggregator, seen, model_id)
            return process, _Loaded(True, generation)
        raw = self._registration.value()
        if registration is None and raw is not None:
            registration = RegisteredModel.from_state(raw)
            self._registrations[model_id] = registration
        process = ModelProcess.restore(
            models_topic_max_bytes=self._max_bytes,
            dedupe_versions=self._dedupe_versions,
            registration=registration if raw is not None else None,
            state=self._model.value(),
            buffer=self._buffer.value(),
            seen=seen,
            limits=self._limits,
            dlq_max_bytes=self._dlq_max_bytes,
            model_id=model_id,
            signer=self._signer,
            windows=self._windows,
            sequence_window=self._sequence_window,
        )
        held: tuple[bytes, ...] = ()
        if raw is None:  # partials may wait for the registration (a model key only)
            held = tuple(bytes(p) for p in self._held.value() or [])
            process.held_partials = list(held)
        return process, _Loaded(raw is not None, generation, held)

    def _template(
        self,
        registration: RegisteredModel,
        aggregator: Aggregator,
        seen: DictSeenIds,
        model_id: str,
    ) -> ModelProcess:
        return ModelProcess(
            self._max_bytes,
            self._dedupe_versions,
            registration,
            aggregator,
            seen,
            self._limits,
            self._dlq_max_bytes,
            model_id,
            signer=self._signer,
            windows=self._windows,
            sequence_window=self._sequence_window,
        )

    @staticmethod
    def _mark(process: ModelProcess) -> tuple[int, int]:
        """What decides which state to write back: (version, updates in the open window)."""
        return process.version, (process.aggregator.buffer.count if process.aggregator else 0)

    def _save_window(self, model_id: str, aggregator: Aggregator) -> None:
        self._buffer.update(aggregator.buffer.to_bytes())
        self._unsaved.saved(model_id)

    def _flush(self) -> None:
        """Write the current key's unsaved window (`FlushingKeyedProcessOperator`)."""
        if self._key_context is None:  # no record yet: nothing to save
            return
        model_id = str(self._key_context.get_current_key())
        if model_id in self._unsaved:
            self._save_window(model_id, self._live[model_id].aggregator)

    def _save(
        self,
        model_id: str,
        process: ModelProcess,
        ctx: Any,
        before: tuple[int, int],
        loaded: _Loaded,
        may_defer: bool,
    ) -> None:
        wrote = False
        if process.registration is not None and not loaded.registered:
            self._registration.update(process.registration.to_state())
            self._registrations[model_id] = process.registration
            wrote = True
        if tuple(process.held_partials) != loaded.held:
            if process.held_partials:
                self._held.update(list(process.held_partials))
            else:
                self._held.clear()
        after = self._mark(process)
        # A rejected update changes nothing: write back only what moved, since every write
        # of a model-sized value crosses to the JVM (and into the next checkpoint). A
        # window that only grew may wait for the flush before the checkpoint.
        if process.aggregator is not None and after != before:
            if after[0] != before[0]:
                self._model.update(process.aggregator.state.to_bytes())
            elif may_defer and loaded.generation is not None and self._unsaved.defer(model_id):
                after = before  # the live copy is the newer one until the flush
            if after != before:
                self._save_window(model_id, process.aggregator)
                wrote = True
        generation = loaded.generation
        if wrote:
            generation = (generation or 0) + 1
            self._generation.update(generation)
        self._remember(model_id, process.aggregator, generation)
        deadline = process.deadline()
        if deadline is not None:
            millis = timer_millis(deadline)
            if self._timer.value() != millis:
                ctx.timer_service().register_processing_time_timer(millis)
                self._timer.update(millis)

    def _remember(
        self, model_id: str, aggregator: Aggregator | None, generation: int | None
    ) -> None:
        if aggregator is None or generation is None or self._live_models == 0:
            self._live.pop(model_id, None)
            return
        self._live[model_id] = _Live(generation, aggregator)
        self._live.move_to_end(model_id)
        self._unsaved.trim(self._live, self._live_models)

    # -- events -----------------------------------------------------------------------
    def process_element(self, value: Row, ctx: Any) -> Iterator[Row]:
        # Rows are built before the first is handed to Flink: the profile then covers this
        # record's Python work and nothing downstream of it.
        self._key_context = ctx
        with self._profile:
            rows = self._process(value, ctx)
        yield from rows

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Row]:
        if timestamp == FLUSH_TIMESTAMP:  # not a timer: the checkpoint is coming
            self._flush()
            return
        with self._profile:
            rows = self._fire(timestamp, ctx)
        yield from rows

    def _process(self, value: Row, ctx: Any) -> list[Row]:
        model_id, kind = value[0], value[1]
        envelope = Envelope(bytes(value[2]), value[3], int(value[4]), int(value[5]))
        record = None  # the decoded update, when the signature check decoded it
        if kind == KIND_SIGNED:
            checked = joined_check(value, envelope, self._allow_unsigned, self._dlq_max_bytes)
            if not isinstance(checked, Passed):
                self._metrics.refused(model_id, checked.reason)
                return [Row(checked.kind, checked.value, checked.key)]
            record = checked.record
        process, loaded = self._load(model_id)
        now = ctx.timer_service().current_processing_time() / 1000.0
        process.partial_stalenesses = []
        if kind == KIND_REGISTRATION:  # it folds the partials held for the model, if any
            register = process.on_registration
            rows = self._run(model_id, process, loaded, ctx, envelope, lambda e: register(e, now))
            return self._count_folded(model_id, process, rows)
        if kind == KIND_PARTIAL:  # a shard's partial window: no source record of its own
            fold = process.on_partial
            rows = self._run(
                model_id, process, loaded, ctx, None, lambda _: fold(envelope.value, now)
            )
            return self._count_folded(model_id, process, rows)
        process.last_staleness = None
        # An update that leaves the window open may leave it unsaved until the flush.
        may_defer = self._unsaved.limit > 0 and not process.closes_with_next(now)
        rows = self._run(
            model_id,
            process,
            loaded,
            ctx,
            envelope,
            lambda e: process.on_update(e, now, record),
            may_defer=may_defer,
        )
        if process.last_staleness is not None:  # set only when the update was absorbed
            self._metrics.absorbed(model_id, process.last_staleness)
        return rows

    def _count_folded(self, model_id: str, process: ModelProcess, rows: list[Row]) -> list[Row]:
        """Count the updates partials added to the model's window (metrics); `rows` as is."""
        for staleness in process.partial_stalenesses:
            self._metrics.absorbed(model_id, staleness)
        return rows

    def _fire(self, timestamp: int, ctx: Any) -> list[Row]:
        self._timer.clear()
        model_id = ctx.get_current_key()
        process, loaded = self._load(model_id)
        now = timestamp / 1000.0
        deadline = process.deadline()
        if deadline is not None and timer_millis(deadline) <= timestamp:
            now = max(now, deadline)  # this is the window's own timer: its deadline has come
        return self._run(model_id, process, loaded, ctx, None, lambda _: process.on_timer(now))

    def _run(
        self,
        model_id: str,
        process: ModelProcess,
        loaded: _Loaded,
        ctx: Any,
        envelope: Envelope | None,
        handle: Callable[[Envelope], list[Output]],
        *,
        may_defer: bool = False,
    ) -> list[Row]:
        """One event of one model through `contain`, then state written back as it says.

        After a failure the live copy (which the failed event may have changed) is
        dropped and the model is re-read from Flink state, the only source of truth; a
        window still unsaved is written first unless the event may leave it so
        (`may_defer`: see `deferred_windows` for a failure then)."""
        if model_id in self._unsaved and not may_defer and process.aggregator is not None:
            self._save_window(model_id, process.aggregator)
        before = self._mark(process)
        mark = window_mark(process.aggregator)

        def reload() -> ModelProcess:
            if model_id in self._unsaved:  # state is older than the truth: keep the live one
                if window_mark(process.aggregator) != mark:
                    raise UnsavedWindowError(
                        f"a failed step changed the unsaved window of model {model_id!r}"
                    )
                return self._load(model_id)[0]
            self._live.pop(model_id, None)
            return self._load(model_id, fresh=True)[0]

        contained = contain(lambda: handle(envelope or NO_SOURCE), reload, envelope, model_id)
        kept = contained.replacement or process
        if contained.persist:
            self._save(model_id, kept, ctx, before, loaded, may_defer)
        return self._emit(model_id, contained.outputs, kept, timed=envelope is None)

    def _emit(
        self, model_id: str, outputs: list[Output], process: ModelProcess, *, timed: bool
    ) -> list[Row]:
        """The rows of `outputs`, counted in the model's metrics (`job_metrics`)."""
        released = 0
        for output in outputs:
            if output.kind == "release":
                released += len(output.value)
            else:
                self._metrics.refused(model_id, output.reason)
        if released:
            # a registration's version 0 has no update behind it; a window closed by an
            # update or its timer has the time since its first update
            opened = (
                process.last_fill_seconds if timed or process.last_staleness is not None else None
            )
            self._metrics.released(model_id, released, opened)
        if process.aggregator is not None:
            self._metrics.window(model_id, process.version, process.aggregator.buffer.count)
        return [Row(output.kind, output.value, output.key) for output in outputs]
