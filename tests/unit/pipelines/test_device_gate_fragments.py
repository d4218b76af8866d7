"""The device gate on fragmented updates (`DeviceGate.on_fragment`), without Flink.

A large update in fragments passes whole, with its model, once its device's registered
key verified every piece; fragments of an unregistered or revoked device, or signed by
another key, are refused before anything is stored; a whole update assembled from
authentic fragments still passes the update checks (another device's update, assembled
under this device, is refused); dead letters stay within the DLQ's bound.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedstream.pipelines.device_gate import DeviceGate, DeviceState, Passed
from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.model_process import Envelope, Output, dead_letter
from fedstream.pipelines.reassembly import DictFragmentStore
from fedstream.schemas import decode, encode
from fedstream.schemas.fragments import FRAGMENT, fragment_statement, split_record
from tests.support.devices import DEVICES_TOPIC, device_key_bytes, device_signer
from tests.support.records import UPDATES_TOPIC, update_bytes

DLQ_BYTES = 70_000
GATE = DeviceGate(grace_seconds=5.0, max_pending=2, dlq_max_bytes=DLQ_BYTES)


def registered(device: str, status: str = "ACTIVE") -> DeviceState:
    state = DeviceState()
    GATE.on_device_key(
        state, Envelope(device_key_bytes(device, status=status), DEVICES_TOPIC, 0, 0)
    )
    return state


def fragments(
    value: bytes, device: str, *, size: int = 100_000, by: str | None = None
) -> list[Envelope]:
    parts = split_record(
        value,
        record_id="big-1",
        signer=device,
        key=device_signer(by or device),
        max_data_bytes=size,
    )
    return [Envelope(encode(FRAGMENT, p), UPDATES_TOPIC, 1, 10 + i) for i, p in enumerate(parts)]


def feed(state: DeviceState, envelopes: list[Envelope]) -> list[Passed | Output]:
    store = DictFragmentStore()
    out: list[Passed | Output] = []
    for envelope in envelopes:
        out += GATE.on_fragment(state, envelope, store)
    assert store.pieces == {} or state.assembly is not None
    return out


def letter(output: Passed | Output) -> dict[str, Any]:
    assert isinstance(output, Output)
    record: dict[str, Any] = decode(output.value).record
    return record


def big_update(device: str) -> bytes:
    return update_bytes("big-model", "big-1", np.ones(60_000), device_id=device)


def test_a_fragmented_update_passes_whole_with_its_model() -> None:
    value = big_update("frag-dev")
    parts = fragments(value, "frag-dev")
    assert len(parts) == 3
    out = feed(registered("frag-dev"), parts)
    assert out == [Passed(Envelope(value, UPDATES_TOPIC, 1, 12), "big-model")]


def test_fragments_of_unregistered_or_revoked_devices_are_refused_unstored() -> None:
    for state, why in (
        (DeviceState(), "is not registered"),
        (registered("frag-rev", "REVOKED"), "is revoked"),
    ):
        device = "frag-rev" if state.entry else "frag-none"
        out = feed(state, fragments(big_update(device), device))
        assert [o.reason for o in out if isinstance(o, Output)] == ["UNAUTHENTICATED"] * 3
        assert why in letter(out[0])["detail"] and state.assembly is None


def test_fragments_signed_by_another_key_are_refused() -> None:
    state = registered("frag-victim")
    forged = fragments(big_update("frag-victim"), "frag-victim", by="frag-attacker")
    out = feed(state, forged)
    assert all(letter(o)["reason"] == "UNAUTHENTICATED" for o in out)
    assert "is not the registered key" in letter(out[0])["detail"]
    # the attacker names the victim's key id: the signature itself does not verify
    record = decode(forged[0].value).record
    record["key_id"] = device_signer("frag-victim").key_id
    record["signature"] = device_signer("frag-attacker").sign(fragment_statement(record))
    named = Envelope(encode(FRAGMENT, record), UPDATES_TOPIC, 1, 9)
    (refused,) = GATE.on_fragment(state, named, DictFragmentStore())
    assert "does not verify" in letter(refused)["detail"]
    assert state.assembly is None


def test_another_devices_update_assembled_here_is_refused_whole() -> None:
    state = registered("frag-b")
    foreign = big_update("frag-a")  # device a's update, in fragments signed by device b
    out = feed(state, fragments(foreign, "frag-b"))
    (refused,) = out
    record = letter(refused)
    assert record["reason"] == "UNAUTHENTICATED" and "'frag-a'" in record["detail"]
    assert record["original_truncated"] and record["original_size"] == len(foreign)
    assert len(refused.value) <= DLQ_BYTES  # type: ignore[union-attr]


def test_an_assembled_record_that_is_not_an_update_is_refused() -> None:
    state = registered("frag-c")
    out = feed(state, fragments(device_key_bytes("frag-c"), "frag-c", size=40))
    assert [letter(o)["reason"] for o in out] == ["WRONG_RECORD_TYPE"]


def test_limits_apply_to_the_declared_size() -> None:
    gate = DeviceGate(limits=InputLimits(max_record_bytes=100_000))
    state = DeviceState()
    gate.on_device_key(state, Envelope(device_key_bytes("frag-d"), DEVICES_TOPIC, 0, 0))
    out = gate.on_fragment(state, fragments(big_update("frag-d"), "frag-d")[0], DictFragmentStore())
    assert "max_record_bytes" in letter(out[0])["detail"] and state.assembly is None


def test_a_dead_letter_of_a_40_mb_record_fits_the_dlq() -> None:
    whole = Envelope(b"\xc3\x01" + bytes(40 * 2**20), UPDATES_TOPIC, 0, 7)
    output = dead_letter(whole, "UNAUTHENTICATED", "x" * 5000, max_bytes=17 * 2**20 - 1024)
    assert len(output.value) <= 17 * 2**20 - 1024
    record = decode(output.value).record
    assert record["original_truncated"] and record["original_size"] == len(whole.value)
