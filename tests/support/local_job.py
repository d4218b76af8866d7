"""The aggregation job's logic without Flink: `route` + one `ModelProcess` per model.

`InMemoryJob` does what `flink_functions.AggregateFunction` does around `ModelProcess`,
on plain dicts instead of Flink keyed state: for every record it restores the model's
process from its persisted form (`RegisteredModel.to_state`, model state bytes, window
bytes, the seen-id map, the devices' sequence windows), hands it the record, and persists
the result again. So a test driving it exercises the same serialization round trip as
the job after every record, and `snapshot()` / `InMemoryJob.from_snapshot()` stand in
for a checkpoint and a recovery.

Timers are processing-time deadlines in seconds; `advance(now)` fires every model whose
deadline has passed (a Flink timer fires at its timestamp, i.e. `now >= deadline`).
Like the job, it admits registrations against `limits.max_models` (`admit_registration`)
and runs every event through `contain`, so a failure stays with its record and model;
with a `gate`, every update first passes the job's device gate (`DeviceGate`, its
registry records on `devices_topic`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

from fedstream.pipelines.admission import admit_registration, take_registration_fragment
from fedstream.pipelines.device_gate import DeviceGate, DeviceState, Passed, route_device_key
from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.model_process import (
    DictSeenIds,
    Envelope,
    ModelProcess,
    Output,
    RegisteredModel,
    contain,
    route,
)
from fedstream.pipelines.reassembly import Assembly, DictFragmentStore
from fedstream.pipelines.sequence_window import DEFAULT_WIDTH, DictWindowStore
from fedstream.schemas.fragments import is_fragment
from fedstream.schemas.signing import TrustedKeys
from tests.support.devices import DEVICES_TOPIC
from tests.support.records import CONTROL_TOPIC, UPDATES_TOPIC

__all__ = ["InMemoryJob", "StoredModel"]


@dataclass
class StoredModel:
    """One model's keyed state, in the forms the Flink job keeps it."""

    registration: bytes | None = None  # RegisteredModel.to_state()
    state: bytes | None = None
    buffer: bytes | None = None
    seen: dict[str, int] = field(default_factory=dict)
    windows: dict[str, bytes] = field(default_factory=dict)  # device -> sequence window


@dataclass
class InMemoryJob:
    models_topic_max_bytes: int = 16 * 1024 * 1024
    dedupe_versions: int = 64
    sequence_window: int = DEFAULT_WIDTH
    updates_topic: str = UPDATES_TOPIC
    control_topic: str = CONTROL_TOPIC
    stores: dict[str, StoredModel] = field(default_factory=dict)
    limits: InputLimits = field(default_factory=InputLimits)
    dlq_max_bytes: int | None = None
    #: the models that took a registration slot (the job's registry operator state)
    registered: set[str] = field(default_factory=set)
    #: the owner key id of each model registered signed (the registry operator state)
    model_owners: dict[str, str] = field(default_factory=dict)
    #: the owner keys the job trusts; None accepts unsigned registrations
    owner_keys: TrustedKeys | None = None
    #: every output so far, in order
    outputs: list[Output] = field(default_factory=list)
    #: the device gate in front of the models (the job's secure default), or None: every
    #: update goes straight to its model (tests of the model logic alone)
    gate: DeviceGate | None = None
    devices_topic: str = DEVICES_TOPIC
    devices: dict[str, DeviceState] = field(default_factory=dict)
    #: the envelope of the last record sent
    last: Envelope | None = None
    #: fragments of large records waiting for the rest, per (topic, signer)
    fragments: dict[tuple[str, str], DictFragmentStore] = field(default_factory=dict)
    #: each owner's registration being assembled (the registry operator's state)
    assemblies: dict[str, Assembly | None] = field(default_factory=dict)
    _offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    # -- input ------------------------------------------------------------------------
    def send(
        self, value: bytes, topic: str | None = None, *, now: float = 0.0, partition: int = 0
    ) -> list[Output]:
        """Process one record (at the next offset of topic/partition); its outputs."""
        topic = self.updates_topic if topic is None else topic
        offset = self._offsets.get((topic, partition), 0)
        self._offsets[topic, partition] = offset + 1
        envelope = Envelope(value, topic, partition, offset)
        self.last = envelope
        if self.gate is not None and topic == self.devices_topic:
            device_id, dead = route_device_key(envelope, self.limits, self.dlq_max_bytes)
            if dead is not None:
                return self._emit([dead])
            state = self.devices.setdefault(device_id or "", DeviceState())
            return self._gated(self.gate.on_device_key(state, envelope), now)
        routed = route(
            envelope, self.updates_topic, self.control_topic, self.limits, self.dlq_max_bytes
        )
        if routed.dead is not None:
            return self._emit([routed.dead])
        model_id = routed.model_id
        assert model_id is not None
        if is_fragment(value):
            return self._fragment(envelope, routed.device_id, now)
        if topic == self.control_topic:
            return self._registration(envelope, model_id)
        if self.gate is not None:
            state = self.devices.setdefault(routed.device_id, DeviceState())
            return self._gated(self.gate.on_update(state, envelope, now), now)
        return self._update(envelope, now)

    def _fragment(self, envelope: Envelope, signer: str, now: float) -> list[Output]:
        """A piece of a large record: a registration's goes to its owner's assembly (the
        registry's state), an update's to its device's gate (the gate is required)."""
        store = self.fragments.setdefault((envelope.topic, signer), DictFragmentStore())
        if envelope.topic == self.updates_topic:
            assert self.gate is not None, "fragmented updates need the device gate"
            state = self.devices.setdefault(signer, DeviceState())
            return self._gated(self.gate.on_fragment(state, envelope, store), now)
        taken, routed = take_registration_fragment(
            self.assemblies.get(signer),
            envelope,
            self.owner_keys,
            store,
            self.limits,
            self.dlq_max_bytes,
        )
        self.assemblies[signer] = taken.assembly
        out = self._emit(taken.letters)
        if taken.whole is None or routed is None:
            return out
        if routed.dead is not None:
            return out + self._emit([routed.dead])
        return out + self._registration(taken.whole, routed.model_id or "")

    def _registration(self, envelope: Envelope, model_id: str) -> list[Output]:
        """The registry's admission, then the model's own registration step."""
        verdict = admit_registration(
            envelope,
            model_id,
            known=model_id in self.registered,
            known_owner=self.model_owners.get(model_id),
            registered=len(self.registered),
            limits=self.limits,
            owner_keys=self.owner_keys,
            dlq_max_bytes=self.dlq_max_bytes,
        )
        if verdict.dead is not None:
            return self._emit([verdict.dead])
        if verdict.claims_slot:
            self.registered.add(model_id)
            if verdict.owner is not None:
                self.model_owners[model_id] = verdict.owner
        process = self.process(model_id)
        return self._run(model_id, process, lambda: process.on_registration(envelope), envelope)

    def _update(self, envelope: Envelope, now: float) -> list[Output]:
        model_id = route(envelope, self.updates_topic, self.control_topic, self.limits).model_id
        assert model_id is not None
        process = self.process(model_id)
        return self._run(model_id, process, lambda: process.on_update(envelope, now), envelope)

    def _gated(self, decided: list[Passed | Output], now: float) -> list[Output]:
        """The gate's refusals, and what the passed updates made of their models."""
        out: list[Output] = []
        for item in decided:
            out += (
                self._update(item.envelope, now) if isinstance(item, Passed) else self._emit([item])
            )
        return out

    def _run(
        self,
        model_id: str,
        process: ModelProcess,
        handle: Callable[[], list[Output]],
        envelope: Envelope | None,
    ) -> list[Output]:
        """One event through `contain`, persisting what it says to persist."""
        contained = contain(handle, lambda: self.process(model_id), envelope, model_id)
        if contained.persist:
            self._persist(model_id, contained.replacement or process)
        return self._emit(contained.outputs)

    def send_all(self, values: Iterable[bytes], topic: str | None = None) -> list[Output]:
        out: list[Output] = []
        for value in values:
            out += self.send(value, topic)
        return out

    def advance(self, now: float) -> list[Output]:
        """Fire the timers of every model whose window deadline is at or before `now`."""
        out: list[Output] = []
        for model_id in sorted(self.stores):
            process = self.process(model_id)
            deadline = process.deadline()
            if deadline is not None and deadline <= now:
                out += self._run(model_id, process, partial(process.on_timer, now), None)
        return out

    # -- state ------------------------------------------------------------------------
    def process(self, model_id: str) -> ModelProcess:
        """The model's process, restored from its persisted state (edits are not kept)."""
        stored = self.stores.setdefault(model_id, StoredModel())
        registration = None
        if stored.registration is not None:
            registration = RegisteredModel.from_state(stored.registration)
        return ModelProcess.restore(
            models_topic_max_bytes=self.models_topic_max_bytes,
            dedupe_versions=self.dedupe_versions,
            registration=registration,
            state=stored.state,
            buffer=stored.buffer,
            seen=DictSeenIds(stored.seen),
            limits=self.limits,
            dlq_max_bytes=self.dlq_max_bytes,
            model_id=model_id,
            windows=DictWindowStore(stored.windows),
            sequence_window=self.sequence_window,
        )

    def _persist(self, model_id: str, process: ModelProcess) -> None:
        stored = self.stores[model_id]
        if process.registration is not None and stored.registration is None:
            stored.registration = process.registration.to_state()
        stored.state, stored.buffer = process.state_bytes()

    def snapshot(self) -> dict[str, StoredModel]:
        """A deep copy of all keyed state (what a checkpoint holds)."""
        return copy.deepcopy(self.stores)

    @classmethod
    def from_snapshot(
        cls,
        snapshot: dict[str, StoredModel],
        *,
        models_topic_max_bytes: int = 16 * 1024 * 1024,
        dedupe_versions: int = 64,
    ) -> InMemoryJob:
        registered = {m for m, stored in snapshot.items() if stored.registration is not None}
        return cls(
            models_topic_max_bytes,
            dedupe_versions,
            stores=copy.deepcopy(snapshot),
            registered=registered,
        )

    # -- output -----------------------------------------------------------------------
    def _emit(self, outputs: list[Output]) -> list[Output]:
        self.outputs += outputs
        return outputs

    def values(self, kind: str) -> list[bytes]:
        """The values of every output so far of `kind` ("release" or "dead_letter")."""
        return [o.value for o in self.outputs if o.kind == kind]
