"""The job's first check of every update: is it signed by its device's registered key?

Plain Python over bytes, per device (the job keys this step by device_id; the PyFlink
shell is `flink_functions.DeviceGateFunction`). A device's state is its newest registry
entry (a `DeviceKey` from the compacted devices topic) and a short list of updates that
arrived before any entry did. Every update leaves as either *passed* (on to its model,
unchanged) or a dead letter `UNAUTHENTICATED` naming the claimed device; nothing of a
refused update reaches a model, so it cannot change one.

**The race.** The registry and the updates are different topics, and nothing orders one
Kafka topic against another: a device registered just before it sends (or a job reading
both topics from the beginning) may see the device's first updates before its entry. So an
update of a device with no entry yet waits, up to `max_pending` per device and
`grace_seconds` from the first one, for the entry; if it arrives, the waiting updates are
verified in order, else they are refused when the grace ends. An update of a device with
a REVOKED entry, an unsigned update, or one beyond `max_pending` is refused at once. This
bounds the wait (one timer per unknown device) and the state (`max_pending` updates per
device id seen in the last `grace_seconds`). Operators should still register a device
before it starts sending; the grace only absorbs the reordering between the two topics.

**Fragments.** An update too large for one Kafka record comes as signed `RecordFragment`s
(`fedstream.schemas.fragments`), keyed here by their signer. Each is verified against the
device's entry before a byte of it is stored (`reassembly.Reassembler`: one assembly in
flight per device, in order, bounded by `limits`); the whole update then takes the path of
any update (`_decide`). A fragment of a device with no usable entry is refused at once
(UNAUTHENTICATED), it does not wait for the entry like a whole update: waiting would keep
up to a record's worth of unverified bytes per claimed device id, which anyone able to
write the topic could claim. The SDK reports the refusal in the dead letters; the device
sends again once registered.

**The join.** A registered device's updates mostly skip this step: the JVM keeps each
device's newest well-formed registry record too (`io.fedstream.flink.DeviceJoin`) and
sends an update of a device it knows straight to the aggregate operator with that record
attached, which calls the same `authenticate` (`joined_entry` parses the record). What
the JVM does not know (no record yet, a record from before the join existed, a broken
newest record, fragments) still comes here, and every registry record does, so this
state stays complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.model_process import Envelope, Output, dead_letter, route
from fedstream.pipelines.reassembly import Assembly, FragmentStore, Reassembler
from fedstream.schemas import CodecError, decode
from fedstream.schemas.update_signing import (
    RegisteredKey,
    RegistryEntryError,
    entry_problem,
    registered_public_key,
    verify_update,
)

__all__ = [
    "DeviceGate",
    "DeviceState",
    "Passed",
    "authenticate",
    "joined_entry",
    "route_device_key",
]

UPDATE = "GradientUpdate"
DEVICE_KEY = "DeviceKey"


@dataclass(frozen=True, slots=True)
class Passed:
    """An authentic update (or an unsigned one a legacy fleet allows), on to its model."""

    envelope: Envelope
    #: its model, when the gate read it (an update assembled from fragments); else the
    #: caller knows it from routing
    model_id: str | None = None
    #: the decoded GradientUpdate when `authenticate` decoded it in this process, so that
    #: the aggregate, verifying a joined update itself, does not decode it a second time
    #: (a copy of the whole delta: about 1 ms at 1M parameters)
    record: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass
class DeviceState:
    """One device's state in the gate: its registry entry and its waiting updates."""

    entry: RegisteredKey | None = None
    pending: list[Envelope] = field(default_factory=list)
    #: when the waiting updates are refused (seconds of processing time); None: none wait
    deadline: float | None = None
    #: the update being assembled from fragments, if any (its data is in a FragmentStore)
    assembly: Assembly | None = None


def route_device_key(
    envelope: Envelope, limits: InputLimits, dlq_max_bytes: int | None = None
) -> tuple[str | None, Output | None]:
    """(device_id, None) for a registry record to key by, or (None, its dead letter)."""
    try:
        record = decode(envelope.value, expected=DEVICE_KEY).record
    except CodecError as error:
        return None, dead_letter(envelope, error, max_bytes=dlq_max_bytes)
    device_id = str(record["device_id"])
    problem = limits.id_problem("device_id", device_id)
    if problem is not None:
        return None, dead_letter(envelope, "BAD_FIELD", problem, max_bytes=dlq_max_bytes)
    return device_id, None


@dataclass(frozen=True)
class DeviceGate:
    """The gate's decisions; settings from the job's `[trust]` section."""

    allow_unsigned: bool = False
    grace_seconds: float = 10.0
    max_pending: int = 16
    dlq_max_bytes: int | None = None
    limits: InputLimits = field(default_factory=InputLimits)

    def on_device_key(self, state: DeviceState, envelope: Envelope) -> list[Passed | Output]:
        """A registry record: the device's entry from now on; waiting updates are decided."""
        try:
            state.entry = RegisteredKey.from_record(
                decode(envelope.value, expected=DEVICE_KEY).record
            )
        except CodecError as error:
            return [dead_letter(envelope, error, max_bytes=self.dlq_max_bytes)]
        except RegistryEntryError as error:
            return [dead_letter(envelope, "BAD_FIELD", str(error), max_bytes=self.dlq_max_bytes)]
        waiting, state.pending, state.deadline = state.pending, [], None
        return [self._decide(state, e) for e in waiting]

    def on_update(
        self, state: DeviceState, envelope: Envelope, now: float
    ) -> list[Passed | Output]:
        """An update: passed, refused, or (no entry yet, signed) kept waiting."""
        if state.entry is None and self._may_wait(state, envelope):
            state.pending.append(envelope)
            if state.deadline is None:
                state.deadline = now + self.grace_seconds
            return []
        return [self._decide(state, envelope)]

    def on_fragment(
        self, state: DeviceState, envelope: Envelope, store: FragmentStore
    ) -> list[Passed | Output]:
        """A piece of a large update: verified, then kept (`store`) or refused; the last
        piece passes the whole update through `_decide` like any update."""
        taken = Reassembler(self.limits, "update_id", self.dlq_max_bytes).take(
            state.assembly, envelope, lambda fragment: self._fragment_key(state, fragment), store
        )
        state.assembly = taken.assembly
        outputs: list[Passed | Output] = list(taken.letters)
        if taken.whole is not None:
            whole = taken.whole
            routed = route(whole, whole.topic, "", self.limits, self.dlq_max_bytes)
            if routed.dead is not None:
                outputs.append(routed.dead)
            else:
                decided = self._decide(state, whole)
                if isinstance(decided, Passed):
                    decided = Passed(whole, routed.model_id)
                outputs.append(decided)
        return outputs

    @staticmethod
    def _fragment_key(state: DeviceState, fragment: Mapping[str, Any]) -> Ed25519PublicKey | str:
        """The device's key to verify a fragment with, or why there is none."""
        entry = state.entry
        problem = entry_problem(entry, str(fragment["signer"]), str(fragment["key_id"]))
        if problem is not None:
            waits = " (a fragment does not wait for it)" if entry is None else ""
            return problem + waits
        assert entry is not None
        return registered_public_key(bytes(entry.public_key))

    def on_timer(self, state: DeviceState, now: float) -> list[Passed | Output]:
        """The grace is over: the updates still waiting are refused (no entry came)."""
        if state.deadline is None or now < state.deadline:
            return []
        waiting, state.pending, state.deadline = state.pending, [], None
        note = f" (no registry entry within {self.grace_seconds:g} s)"
        return [self._decide(state, e, note) for e in waiting]

    def internal(self, envelope: Envelope, error: Exception) -> Output:
        """The dead letter of a record whose handling raised unexpectedly: the failure
        stays with that record (INTERNAL, with the exception), the device's state is
        not written, and the job goes on (as `model_process.contain` does for models)."""
        detail = f"{type(error).__name__}: {error}"
        return dead_letter(envelope, "INTERNAL", detail, max_bytes=self.dlq_max_bytes)

    def _may_wait(self, state: DeviceState, envelope: Envelope) -> bool:
        if self.grace_seconds <= 0 or len(state.pending) >= self.max_pending:
            return False
        try:
            record = decode(envelope.value, expected=UPDATE).record
        except CodecError:
            return False
        return record.get("signature") is not None  # an unsigned update has nothing to wait for

    def _decide(self, state: DeviceState, envelope: Envelope, note: str = "") -> Passed | Output:
        return authenticate(envelope, state.entry, self.allow_unsigned, self.dlq_max_bytes, note)


def authenticate(
    envelope: Envelope,
    entry: RegisteredKey | str | None,
    allow_unsigned: bool,
    dlq_max_bytes: int | None,
    note: str = "",
) -> Passed | Output:
    """The update in `envelope` passed if `verify_update` finds it authentic against its
    device's registry `entry` (a str: why the device has no usable one), else its
    UNAUTHENTICATED dead letter (`note` appended to the reason): the one decision of the
    gate and of the aggregate operator, which verifies the updates the JVM joined to
    their entry (`joined_entry`)."""
    try:
        record = decode(envelope.value, expected=UPDATE).record
    except CodecError as error:  # route() decoded it once already; keep this total
        return dead_letter(envelope, error, max_bytes=dlq_max_bytes)
    if isinstance(entry, str):
        problem: str | None = entry
    else:
        problem = verify_update(record, entry, allow_unsigned=allow_unsigned)
    if problem is None:
        return Passed(envelope, record=record)
    return dead_letter(
        envelope,
        "UNAUTHENTICATED",
        problem + note,
        model_id=str(record["model_id"]),
        update_id=str(record["update_id"]),
        max_bytes=dlq_max_bytes,
    )


@lru_cache(maxsize=4096)
def joined_entry(raw: bytes) -> RegisteredKey | str:
    """The registry entry a DeviceKey record (the bytes `io.fedstream.flink.DeviceJoin`
    attaches to an update) makes, or why it makes none. The join checked its key and key
    id already; this checks them again and fails closed: an entry the gate would not
    accept vouches for nothing. Cached per record: a device sends many updates under one
    entry."""
    try:
        return RegisteredKey.from_record(decode(raw, expected=DEVICE_KEY).record)
    except (CodecError, RegistryEntryError) as error:
        return f"the registry entry is unusable: {error}"
