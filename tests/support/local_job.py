"""The aggregation job's logic without Flink: `route` + one `ModelProcess` per model.

`InMemoryJob` does what `flink_functions.AggregateFunction` does around `ModelProcess`,
on plain dicts instead of Flink keyed state: for every record it restores the model's
process from its persisted form (`RegisteredModel.to_state`, model state bytes, window
bytes, the seen-id map), hands it the record, and persists the result again. So a test driving
it exercises the same serialization round trip as the job after every record, and
`snapshot()` / `InMemoryJob.from_snapshot()` stand in for a checkpoint and a recovery.

Timers are processing-time deadlines in seconds; `advance(now)` fires every model whose
deadline has passed (a Flink timer fires at its timestamp, i.e. `now >= deadline`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

from fedstream.pipelines.model_process import (
    DictSeenIds,
    Envelope,
    ModelProcess,
    Output,
    RegisteredModel,
    route,
)
from tests.support.records import CONTROL_TOPIC, UPDATES_TOPIC

__all__ = ["InMemoryJob", "StoredModel"]


@dataclass
class StoredModel:
    """One model's keyed state, in the forms the Flink job keeps it."""

    registration: bytes | None = None  # RegisteredModel.to_state()
    state: bytes | None = None
    buffer: bytes | None = None
    seen: dict[str, int] = field(default_factory=dict)


@dataclass
class InMemoryJob:
    models_topic_max_bytes: int = 16 * 1024 * 1024
    dedupe_versions: int = 64
    updates_topic: str = UPDATES_TOPIC
    control_topic: str = CONTROL_TOPIC
    stores: dict[str, StoredModel] = field(default_factory=dict)
    #: every output so far, in order
    outputs: list[Output] = field(default_factory=list)
    #: the envelope of the last record sent
    last: Envelope | None = None
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
        routed = route(envelope, self.updates_topic, self.control_topic)
        if routed.dead is not None:
            return self._emit([routed.dead])
        assert routed.model_id is not None
        process = self.process(routed.model_id)
        if topic == self.control_topic:
            outputs = process.on_registration(envelope)
        else:
            outputs = process.on_update(envelope, now)
        self._persist(routed.model_id, process)
        return self._emit(outputs)

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
                out += process.on_timer(now)
                self._persist(model_id, process)
        return self._emit(out)

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
        return cls(models_topic_max_bytes, dedupe_versions, stores=copy.deepcopy(snapshot))

    # -- output -----------------------------------------------------------------------
    def _emit(self, outputs: list[Output]) -> list[Output]:
        self.outputs += outputs
        return outputs

    def values(self, kind: str) -> list[bytes]:
        """The values of every output so far of `kind` ("release" or "dead_letter")."""
        return [o.value for o in self.outputs if o.kind == kind]
