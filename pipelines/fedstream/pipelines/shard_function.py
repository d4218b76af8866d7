"""The PyFlink shell of a sharded model's shard (`shard_process.ShardProcess`).

Used only with `runtime.model_shards` > 1 (README, "Scaling out one model"); it shares the
job's row types and state helpers with `flink_functions.py`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np
from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from fedstream.pipelines.deferred_windows import (
    FLUSH_TIMESTAMP,
    DeferredWindows,
    UnsavedWindowError,
    partial_mark,
)
from fedstream.pipelines.device_gate import Passed
from fedstream.pipelines.flink_functions import (
    KIND_DEAD,
    KIND_PARTIAL,
    KIND_REGISTRATION,
    KIND_SIGNED,
    _current_key,
    _envelope,
    _FlinkWindowStore,
    as_passed,
    joined_check,
    silence_warnings,
    timer_millis,
)
from fedstream.pipelines.job_metrics import ModelMetrics
from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.model_process import NO_SOURCE, Output, RegisteredModel
from fedstream.pipelines.partial_window import PartialWindow
from fedstream.pipelines.profiling import OperatorProfile
from fedstream.pipelines.sequence_window import DEFAULT_WIDTH, check_width
from fedstream.pipelines.shard_process import FORWARD, PARTIAL, ShardProcess

__all__ = ["ShardFunction"]


class ShardFunction(KeyedProcessFunction):  # type: ignore[misc]
    """One shard of a sharded model (`shard_process.ShardProcess`), keyed by
    `model_id#shard` (runtime.model_shards > 1): registrations (fanned out to every shard
    key) and the updates of the shard's devices in (JOINED rows: those the JVM joined to
    their device's registry record, KIND_SIGNED, are verified here first); out go ROUTED
    rows for the model's key (a forwarded update as the gate passes one, or a KIND_PARTIAL
    row with the partial window's FSPW bytes) and KIND_DEAD rows (refusals, the dead
    letters the unsharded job writes).

    Keyed state: the registration (`RegisteredModel.to_state`), the open partial (FSPW,
    absent while empty), a flush timer, and the devices' sequence windows as in
    `AggregateFunction` (`sequence_windows`, `sequence_devices`). The partial is written
    back whenever it changes, so a checkpoint holds exactly what was absorbed; like
    `AggregateFunction`, the last `live_partials` partials stay in memory between records,
    reused only while the per-key generation in state is the one they were saved with
    (a restore re-runs `open` and empties that cache). `defer_partial_writes`: the job runs
    this function in `FlushingKeyedProcessOperator`, so a partial that only grew may be
    written once per checkpoint instead (`deferred_windows`)."""

    def __init__(
        self,
        shards: int,
        flush_ms: int,
        limits: InputLimits | None = None,
        dlq_max_bytes: int | None = None,
        sequence_window: int = DEFAULT_WIDTH,
        live_partials: int = 8,
        allow_unsigned: bool = False,
        defer_partial_writes: bool = False,
    ) -> None:
        self._shards = shards
        self._defer = defer_partial_writes
        self._allow_unsigned = allow_unsigned  # trust.allow_unsigned_updates, for KIND_SIGNED
        self._flush_seconds = flush_ms / 1000.0
        self._limits = limits or InputLimits()
        self._dlq_max_bytes = dlq_max_bytes
        self._sequence_window = check_width(sequence_window)
        self._live_partials = live_partials

    def open(self, runtime_context: RuntimeContext) -> None:
        silence_warnings()

        def value(name: str, kind: Any = None) -> Any:
            kind = Types.PICKLED_BYTE_ARRAY() if kind is None else kind
            return runtime_context.get_state(ValueStateDescriptor(name, kind))

        self._registration = value("registration")
        self._partial = value("partial")
        self._generation = value("generation", Types.LONG())
        self._timer = value("timer", Types.LONG())
        self._windows = _FlinkWindowStore(
            runtime_context.get_map_state(
                MapStateDescriptor("sequence_windows", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
            ),
            value("sequence_devices", Types.LONG()),
        )
        self._registrations: dict[str, tuple[bytes, RegisteredModel]] = {}
        self._live: OrderedDict[str, tuple[int, PartialWindow | None]] = OrderedDict()
        self._unsaved = DeferredWindows(self._live_partials if self._defer else 0)
        self._key_context: Any = None  # a record's context: the current key, in a flush
        self._metrics = ModelMetrics(runtime_context.get_metrics_group())
        self._profile = OperatorProfile("shard")

    def close(self) -> None:
        self._profile.dump()

    def process_element(self, value: Row, ctx: Any) -> Iterator[Row]:
        self._key_context = ctx
        with self._profile:
            rows = self._verified(value, ctx)
        yield from rows

    def _verified(self, value: Row, ctx: Any) -> list[Row]:
        """An update the JVM joined to its device's registry record is verified first (as
        the aggregate does; `joined_check`), and goes on as the gate passes one."""
        if value[1] != KIND_SIGNED:
            return self._handle(value, ctx, 0.0)
        checked = joined_check(value, _envelope(value), self._allow_unsigned, self._dlq_max_bytes)
        if isinstance(checked, Passed):
            return self._handle(as_passed(value), ctx, 0.0, checked.record)
        self._metrics.refused(value[0] or None, checked.reason)
        return [Row("", KIND_DEAD, checked.value, "", 0, 0, "")]

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Row]:
        if timestamp == FLUSH_TIMESTAMP:  # not a timer: the checkpoint is coming
            self._flush()
            return
        with self._profile:
            self._timer.clear()
            rows = self._handle(None, ctx, timestamp / 1000.0)
        yield from rows

    def _handle(
        self, value: Row | None, ctx: Any, timer: float, record: dict[str, Any] | None = None
    ) -> list[Row]:
        """One record (`value`; an update's decoded `record` when verifying it decoded it)
        or the flush timer (`value` None, `timer` its time)."""
        key = _current_key(ctx)
        process, generation = self._load(key)
        envelope = None if value is None else _envelope(value)
        now = ctx.timer_service().current_processing_time() / 1000.0
        registered = process.registration is not None
        may_defer = self._may_defer(value, process)
        if key in self._unsaved and not may_defer:  # a step that may send the partial on
            self._write_partial(key, process.partial)
        mark = partial_mark(process.partial)
        try:
            with np.errstate(all="ignore"):
                if value is None or envelope is None:
                    outputs = process.on_timer(max(now, timer))
                elif value[1] == KIND_REGISTRATION:
                    outputs = process.on_registration(envelope)
                else:
                    outputs = process.on_update(envelope, now, record)
        except Exception as error:  # contained: this event only, the state is not written
            self._forget_failed(key, process, mark)
            text = f"{type(error).__name__}: {error}"
            letter = process.refuse(envelope or NO_SOURCE, "INTERNAL", text)
            self._metrics.refused(process.model_id, letter.reason)
            return [Row("", KIND_DEAD, letter.value, "", 0, 0, "")]
        if process.registration is not None and not registered:
            raw = process.registration.to_state()
            self._registration.update(raw)
            self._registrations[key] = (raw, process.registration)
        self._save(key, process, generation, ctx, may_defer)
        return self._rows(process, value, outputs)

    def _load(self, key: str) -> tuple[ShardProcess, int | None]:
        raw = self._registration.value()
        registration = None
        if raw is not None:
            cached = self._registrations.get(key)
            if cached is None or cached[0] != raw:
                cached = (bytes(raw), RegisteredModel.from_state(bytes(raw)))
                self._registrations[key] = cached
            registration = cached[1]
        generation = self._generation.value()
        live = self._live.get(key)
        if live is not None and live[0] == generation:
            self._live.move_to_end(key)
            partial = live[1]
        else:
            stored = self._partial.value()
            partial = None if stored is None else PartialWindow.from_bytes(bytes(stored))
        process = ShardProcess(
            self._shards,
            self._flush_seconds,
            registration,
            partial,
            self._windows,
            self._limits,
            self._dlq_max_bytes,
            self._sequence_window,
            registration.model_id if registration is not None else None,
        )
        return process, generation

    def _may_defer(self, value: Row | None, process: ShardProcess) -> bool:
        """Whether this event may leave the partial unsaved until the flush: an update
        that cannot send the partial on, in a function run by the flushing operator."""
        return (
            value is not None
            and value[1] != KIND_REGISTRATION
            and self._unsaved.limit > 0
            and not process.flushes_with_next()
        )

    def _forget_failed(self, key: str, process: ShardProcess, mark: tuple[int, int]) -> None:
        """After a failed step the partial is read from state again; an unsaved one is
        kept if the step left it untouched, else only a restart is consistent."""
        if key not in self._unsaved:
            self._live.pop(key, None)
        elif partial_mark(process.partial) != mark:
            raise UnsavedWindowError(f"a failed step changed the unsaved partial of {key!r}")

    def _write_partial(self, key: str, partial: PartialWindow | None) -> None:
        if partial is None or partial.count == 0:
            self._partial.clear()
        else:
            self._partial.update(partial.to_bytes())
        self._unsaved.saved(key)

    def _flush(self) -> None:
        """Write the current key's unsaved partial (`FlushingKeyedProcessOperator`)."""
        if self._key_context is None:  # no record yet: nothing to save
            return
        key = _current_key(self._key_context)
        if key in self._unsaved:
            self._write_partial(key, self._live[key][1])

    def _save(
        self,
        key: str,
        process: ShardProcess,
        generation: int | None,
        ctx: Any,
        may_defer: bool = False,
    ) -> None:
        partial = process.partial
        # A partial that only grew may wait for the flush before the next checkpoint.
        defer = may_defer and generation is not None and partial is not None
        if process.partial_changed and not (defer and self._unsaved.defer(key)):
            self._write_partial(key, partial)
            generation = (generation or 0) + 1
            self._generation.update(generation)
        if generation is not None and self._live_partials > 0:
            self._live[key] = (generation, partial)
            self._live.move_to_end(key)
            self._unsaved.trim(self._live, self._live_partials)
        deadline = process.deadline()
        if deadline is not None:
            millis = timer_millis(deadline)
            if self._timer.value() != millis:
                ctx.timer_service().register_processing_time_timer(millis)
                self._timer.update(millis)

    def _rows(self, process: ShardProcess, value: Row | None, outputs: list[Output]) -> list[Row]:
        model_id = process.model_id or ("" if value is None else value[0])
        rows = []
        for output in outputs:
            if output.kind == FORWARD:
                assert value is not None
                rows.append(as_passed(value))
            elif output.kind == PARTIAL:
                rows.append(Row(model_id, KIND_PARTIAL, output.value, "", -1, -1, ""))
            else:
                self._metrics.refused(model_id or None, output.reason)
                rows.append(Row("", KIND_DEAD, output.value, "", 0, 0, ""))
        return rows
