"""One shard of a sharded model, as plain Python over bytes (README, "Scaling out one model").

With `runtime.model_shards` S > 1 a model's updates are keyed by `model_id#shard`, the
shard a hash of the device id, so each shard sees all the updates of its devices and
none of the others'. A shard does the per-update work of the model in parallel: the
version-free checks (`update_intake`, the very code `ModelProcess.on_update` runs), the
device's sequence window (shard-local, hence exact), and the params-sized multiply-add
into a `PartialWindow` (FedBuff's weighted sum split per base version, Nguyen et al.,
AISTATS 2022; exact because s(v - b) is constant within a window). It sends the partial
on to the model's key (`ModelProcess.on_partial`, which weighs and combines it) when the
partial holds ceil(K / S) updates of a count-K window, when `flush_seconds` have passed
since its first update (a timer), or when it cannot take another base version.

What a shard does not absorb goes on to the model's key unchanged ("forward"), where it
is handled exactly as without shards:
- every update of a model whose config cannot be split (`check_shardable`: FedAsync,
  median, trimmed mean);
- an update of a model the shard holds no registration for (the model key dead-letters
  it UNKNOWN_MODEL, or absorbs it if its registration got there first);
- an unsequenced update (SDKs before schema v4): its dedupe horizon is counted in model
  versions, which only the model key knows.
The device of a forwarded update (in the last two cases) is marked DIRECT in the shard's
window store: its later updates are forwarded too, so each device's dedupe state lives
in exactly one place, and a re-send can never be absorbed both by the shard and by the
model key. Refusals are the dead letters the unsharded job writes, with the same reasons.

State per key (model, shard), all of it Flink keyed state: the registration (fixed), the
open partial (at most `partial_window.partial_base_cap` params-sized sums), and per
device a sequence window (8 + W/8 bytes) or the DIRECT mark, at most
`limits.max_devices_per_model` devices per shard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.model_process import (
    Envelope,
    Output,
    RegisteredModel,
    model_letter,
)
from fedstream.pipelines.partial_window import PartialFullError, PartialWindow, check_shardable
from fedstream.pipelines.sequence_window import DEFAULT_WIDTH, DictWindowStore, WindowStore
from fedstream.pipelines.update import ClientUpdate
from fedstream.pipelines.update_intake import (
    field_problem,
    mark_absorbed,
    read_update,
    sequence_check,
    to_client_update,
)
from fedstream.schemas import CodecError

__all__ = ["DIRECT", "FORWARD", "PARTIAL", "ShardProcess", "shardable"]

#: Output kinds: the input update goes on to the model key as it came; a partial window.
FORWARD, PARTIAL = "forward", "partial"
#: A device's mark in the window store: its updates go to the model key (module docstring).
DIRECT = b""
_FORWARD = Output(FORWARD, b"", b"")


def shardable(registration: RegisteredModel | None) -> bool:
    """Whether a shard absorbs the model's updates (False: it forwards them)."""
    if registration is None:
        return False
    try:
        check_shardable(registration.config)
    except ValueError:
        return False
    return True


@dataclass
class ShardProcess:
    """One shard's logic. The caller persists `registration` and `partial` (None: empty);
    `windows` is written through, as an update is absorbed. Times are seconds."""

    shards: int
    flush_seconds: float
    registration: RegisteredModel | None = None
    partial: PartialWindow | None = None
    windows: WindowStore = field(default_factory=DictWindowStore)
    limits: InputLimits = field(default_factory=InputLimits)
    dlq_max_bytes: int | None = None
    sequence_window: int = DEFAULT_WIDTH
    #: the model this shard belongs to (names it in dead letters)
    model_id: str | None = None
    #: whether the last event changed `partial` (the caller writes it back then)
    partial_changed: bool = False

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError(f"shards must be >= 1, got {self.shards}")
        if not (math.isfinite(self.flush_seconds) and self.flush_seconds > 0):
            raise ValueError(f"flush_seconds must be > 0, got {self.flush_seconds}")

    # -- events -------------------------------------------------------------------------
    def on_registration(self, envelope: Envelope) -> list[Output]:
        """Keep the first registration the model key accepts too: it decodes, passes
        `RegisteredModel.from_bytes` and its template takes the initial weights (what
        `ModelProcess.on_registration` checks before its version 0). The model key
        dead-letters the others, so nothing is refused here."""
        if self.registration is not None:
            return []
        from fedstream.pipelines.onnx_release import materialize

        try:
            model, initial = RegisteredModel.from_bytes(envelope.value)
            materialize(model.template, model.layout.unflatten(initial))
        except (CodecError, ValueError):  # OnnxTemplateError is a ValueError
            return []
        self.registration, self.model_id = model, model.model_id
        return []

    def on_update(
        self, envelope: Envelope, now: float, record: dict[str, Any] | None = None
    ) -> list[Output]:
        """Absorb, refuse or forward one update (module docstring); `record`: its decoded
        GradientUpdate when the caller decoded it already, else it is decoded here."""
        self.partial_changed = False
        try:
            record = read_update(envelope.value) if record is None else record
        except CodecError as error:
            return [self.refuse(envelope, error)]
        update_id, device_id = str(record["update_id"]), str(record["device_id"])
        if self.model_id is None:
            self.model_id = str(record["model_id"])
        problem = field_problem(record, self.limits)
        if problem is not None:
            return [self.refuse(envelope, "BAD_FIELD", problem, update_id)]
        if self.registration is not None and not shardable(self.registration):
            return [_FORWARD]
        if (
            self.registration is None
            or record.get("sequence") is None
            or self.windows.get(device_id) == DIRECT
        ):
            self._go_direct(device_id)
            return [_FORWARD]
        sequenced, refusal = sequence_check(
            windows=self.windows,
            seen=(),  # a device with updates absorbed elsewhere is DIRECT
            limits=self.limits,
            width=self.sequence_window,
            model_id=self.model_id,
            device_id=device_id,
            sequence=int(record["sequence"]),
            update_id=update_id,
        )
        if refusal is not None:
            return [self.refuse(envelope, *refusal, update_id)]
        try:
            update = to_client_update(record, self.registration.layout.size)
        except CodecError as error:
            return [self.refuse(envelope, error, None, update_id)]
        outputs, rejection = self._add(update, now)
        if rejection is not None:
            return [*outputs, self.refuse(envelope, *rejection, update_id)]
        # Written last: a failure above leaves no trace of this update in the dedupe state.
        assert sequenced is not None
        mark_absorbed(self.windows, device_id, sequenced)
        self.partial_changed = True
        if self.partial is not None and self.partial.count >= self.flush_count():
            outputs += self.flush()
        return outputs

    def on_timer(self, now: float) -> list[Output]:
        """Flush the partial if its time has come."""
        self.partial_changed = False
        deadline = self.deadline()
        return self.flush() if deadline is not None and now >= deadline else []

    def flush(self) -> list[Output]:
        """The open partial as a PARTIAL output for the model key (none if empty)."""
        partial, self.partial = self.partial, None
        if partial is None or partial.count == 0:
            return []
        self.partial_changed = True
        key = (self.model_id or "").encode()
        return [Output(PARTIAL, key, partial.to_bytes())]

    # -- queries ------------------------------------------------------------------------
    def flush_count(self) -> int:
        """A partial goes on once it holds this many updates: ceil(K / S) of a count-K
        window (an adaptive window's configured K), else of `limits.max_window_updates`."""
        assert self.registration is not None
        count = self.registration.config.window.count
        cap = self.limits.max_window_updates
        return max(1, min(math.ceil((count or cap) / self.shards), cap))

    def flushes_with_next(self) -> bool:
        """Whether the next update may send the open partial on (it reaches the flush
        count, or names a base version the full partial has no room for): the step a
        caller must not run on a partial that state does not hold yet
        (`deferred_windows`). False without a registration: the update is forwarded."""
        if self.registration is None:
            return False
        partial = self.partial
        count = 0 if partial is None else partial.count
        full = partial is not None and len(partial.base_versions) >= partial.settings.max_bases
        return full or count + 1 >= self.flush_count()

    def deadline(self) -> float | None:
        """When the open partial must go on: `flush_seconds` (at most the window's own
        seconds) after its first update; None while it is empty."""
        first = None if self.partial is None else self.partial.first_added_at
        if first is None or self.registration is None:
            return None
        seconds = self.registration.config.window.seconds
        return first + min(self.flush_seconds, seconds or math.inf)

    # -- helpers ------------------------------------------------------------------------
    def _add(self, update: ClientUpdate, now: float) -> tuple[list[Output], tuple[str, str] | None]:
        """Absorb `update` into the open partial (flushing first when it is full)."""
        assert self.registration is not None
        if self.partial is None:
            self.partial = PartialWindow.for_config(
                self.registration.config, self.registration.layout.size
            )
        outputs: list[Output] = []
        try:
            rejection = self.partial.try_add(update, now, limits=self.limits)
        except PartialFullError:
            outputs = self.flush()
            self.partial = PartialWindow.for_config(
                self.registration.config, self.registration.layout.size
            )
            rejection = self.partial.try_add(update, now, limits=self.limits)
        if rejection is None:
            return outputs, None
        return outputs, (rejection.reason.value.upper(), rejection.detail)

    def _go_direct(self, device_id: str) -> None:
        """Mark the device DIRECT (if it has no window yet and the store has room: at the
        limit no new device ever gets a window, so its updates stay where they go)."""
        if self.windows.get(device_id) is None and (
            self.windows.count() < self.limits.max_devices_per_model
        ):
            self.windows.put(device_id, DIRECT, new=True)

    def refuse(
        self,
        envelope: Envelope,
        reason: CodecError | str,
        detail: str | None = None,
        update_id: str | None = None,
    ) -> Output:
        return model_letter(self, envelope, reason, detail, update_id)
