"""The device gate's decisions (`DeviceGate`), without Flink: pass, refuse, or wait.

The refusals: revoked, unsigned, never registered (after the grace), beyond the pending
bound, tampered; the race: updates that arrive before their device's registry entry pass
once it comes, in order; a broken registry record is dead-lettered and changes nothing.
"""

from __future__ import annotations

import numpy as np

from fedstream.pipelines.device_gate import (
    DeviceGate,
    DeviceState,
    Passed,
    authenticate,
    joined_entry,
    route_device_key,
)
from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.model_process import Envelope, Output
from fedstream.schemas import decode, encode
from fedstream.schemas.update_signing import RegisteredKey
from tests.support.devices import DEVICES_TOPIC, device_key_bytes
from tests.support.records import UPDATES_TOPIC, update_bytes

GATE = DeviceGate(grace_seconds=5.0, max_pending=2)


def env(value: bytes, offset: int = 0, topic: str = UPDATES_TOPIC) -> Envelope:
    return Envelope(value, topic, 0, offset)


def upd(uid: str, device: str = "gate-dev", **kw: object) -> Envelope:
    return env(update_bytes("m", uid, np.ones(3), device_id=device, **kw), offset=hash(uid) % 999)  # type: ignore[arg-type]


def tampered(value: bytes, **changes: object) -> bytes:
    """A signed update with fields changed after signing (the signature kept)."""
    record = decode(value).record
    record.update(changes)
    return encode("GradientUpdate", record)


def reasons(outputs: list[Passed | Output]) -> list[str]:
    return [o.reason if isinstance(o, Output) else "PASSED" for o in outputs]


def registered(device: str = "gate-dev", status: str = "ACTIVE") -> DeviceState:
    state = DeviceState()
    assert (
        GATE.on_device_key(state, env(device_key_bytes(device, status=status), 0, DEVICES_TOPIC))
        == []
    )
    return state


def test_an_authentic_update_passes_unchanged() -> None:
    state = registered()
    source = upd("a")
    assert GATE.on_update(state, source, 0.0) == [Passed(source)]


def test_revoked_unsigned_and_tampered_updates_are_refused_at_once() -> None:
    revoked = registered(status="REVOKED")
    out = GATE.on_update(revoked, upd("r"), 0.0)
    assert reasons(out) == ["UNAUTHENTICATED"]
    letter = decode(out[0].value).record  # type: ignore[union-attr]
    assert "'gate-dev'" in letter["detail"] and letter["update_id"] == "r"
    assert letter["model_id"] == "m" and letter["original"] == upd("r").value
    state = registered()
    assert reasons(GATE.on_update(state, upd("u", sign=False), 0.0)) == ["UNAUTHENTICATED"]
    record = decode(upd("t").value).record
    record["base_version"] = 5
    tampered = env(encode("GradientUpdate", record))
    assert reasons(GATE.on_update(state, tampered, 0.0)) == ["UNAUTHENTICATED"]


def test_updates_before_the_registry_entry_wait_and_pass_in_order_when_it_comes() -> None:
    state = DeviceState()
    first, second = upd("w1", "late-dev"), upd("w2", "late-dev")
    assert GATE.on_update(state, first, 10.0) == []
    assert GATE.on_update(state, second, 11.0) == []
    assert state.deadline == 15.0
    entry = env(device_key_bytes("late-dev"), 0, DEVICES_TOPIC)
    assert GATE.on_device_key(state, entry) == [Passed(first), Passed(second)]
    assert state.pending == [] and state.deadline is None
    assert GATE.on_timer(state, 15.0) == []


def test_waiting_is_bounded_in_count_and_in_time() -> None:
    state = DeviceState()
    for uid in ("p1", "p2"):
        assert GATE.on_update(state, upd(uid, "never-dev"), 0.0) == []
    over = GATE.on_update(state, upd("p3", "never-dev"), 1.0)  # past max_pending: at once
    assert reasons(over) == ["UNAUTHENTICATED"]
    assert GATE.on_timer(state, 4.9) == []
    late = GATE.on_timer(state, 5.0)
    assert reasons(late) == ["UNAUTHENTICATED", "UNAUTHENTICATED"]
    assert "within 5 s" in decode(late[0].value).record["detail"]  # type: ignore[union-attr]
    assert state.pending == [] and state.deadline is None


def test_without_grace_an_unknown_device_is_refused_at_once() -> None:
    gate = DeviceGate(grace_seconds=0.0)
    assert reasons(gate.on_update(DeviceState(), upd("g", "nobody"), 0.0)) == ["UNAUTHENTICATED"]


def test_a_revocation_after_waiting_updates_refuses_them() -> None:
    state = DeviceState()
    GATE.on_update(state, upd("x", "rev-dev"), 0.0)
    revocation = env(device_key_bytes("rev-dev", status="REVOKED"), 0, DEVICES_TOPIC)
    assert reasons(GATE.on_device_key(state, revocation)) == ["UNAUTHENTICATED"]


def test_legacy_fleets_pass_unsigned_updates_but_still_check_signed_ones() -> None:
    legacy = DeviceGate(allow_unsigned=True, grace_seconds=0.0)
    unsigned = upd("l", "legacy-dev", sign=False)
    assert legacy.on_update(DeviceState(), unsigned, 0.0) == [Passed(unsigned)]
    assert reasons(legacy.on_update(DeviceState(), upd("s", "legacy-dev"), 0.0)) == [
        "UNAUTHENTICATED"
    ]


def test_broken_registry_records_are_dead_lettered_and_change_nothing() -> None:
    state = registered()
    record = decode(device_key_bytes("gate-dev")).record
    record["public_key"] = b"short"
    out = GATE.on_device_key(state, env(encode("DeviceKey", record), 1, DEVICES_TOPIC))
    assert reasons(out) == ["BAD_FIELD"]
    assert state.entry is not None and state.entry.active
    garbage = GATE.on_device_key(state, env(b"\x00junk", 2, DEVICES_TOPIC))
    assert reasons(garbage) == ["UNDECODABLE"]


def test_an_unexpected_failure_stays_with_its_record() -> None:
    source = upd("boom")
    letter = decode(GATE.internal(source, RuntimeError("injected")).value).record
    assert letter["reason"] == "INTERNAL" and "RuntimeError: injected" in letter["detail"]
    assert letter["original"] == source.value


def test_route_keys_registry_records_by_device_and_bounds_the_id() -> None:
    limits = InputLimits(max_id_length=16)
    device, dead = route_device_key(env(device_key_bytes("gate-dev"), 0, DEVICES_TOPIC), limits)
    assert (device, dead) == ("gate-dev", None)
    long_id, dead = route_device_key(env(device_key_bytes("x" * 17), 0, DEVICES_TOPIC), limits)
    assert long_id is None and dead is not None and dead.reason == "BAD_FIELD"


def test_a_joined_update_is_decided_as_the_gate_decides_it() -> None:
    """The aggregate's check of an update the JVM joined to its device's registry record
    (`joined_entry` + `authenticate`) gives the gate's verdicts, and fails closed on a
    record the gate would not take."""
    entry = joined_entry(device_key_bytes("gate-dev"))
    assert isinstance(entry, RegisteredKey)
    source = upd("j")
    passed = authenticate(source, entry, False, None)
    assert passed == GATE.on_update(registered(), source, 0.0)[0]
    assert isinstance(passed, Passed) and passed.record == decode(source.value).record
    forged = env(tampered(source.value, num_samples=7))
    refused = authenticate(forged, entry, False, None)
    assert isinstance(refused, Output) and refused.reason == "UNAUTHENTICATED"
    revoked = joined_entry(device_key_bytes("gate-dev", status="REVOKED"))
    assert reasons([authenticate(source, revoked, False, None)]) == ["UNAUTHENTICATED"]
    record = decode(device_key_bytes("gate-dev")).record
    record["key_id"] = "0123456789abcdef"
    unusable = joined_entry(encode("DeviceKey", record))
    assert isinstance(unusable, str) and "not the key's id" in unusable
    letter = authenticate(source, unusable, True, None)
    assert isinstance(letter, Output) and letter.reason == "UNAUTHENTICATED"
    assert "unusable" in decode(letter.value).record["detail"]
