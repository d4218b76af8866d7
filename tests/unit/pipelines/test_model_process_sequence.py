"""Per-device dedupe in `ModelProcess`: sequenced updates by their device's window,
unsequenced ones by (device_id, update_id), never a staleness cut for sequenced ones.

The issue this answers: under repeated job restarts most updates were refused as STALE by
the dedupe horizon although the model sets no `max_staleness`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.model_process import DictSeenIds, Envelope, ModelProcess, Output
from fedstream.pipelines.sequence_window import DictWindowStore, SequenceWindow
from fedstream.schemas import DeadLetter
from tests.support.local_job import InMemoryJob
from tests.support.onnx_models import linear_model
from tests.support.records import (
    CONTROL_TOPIC,
    UPDATES_TOPIC,
    read_dead_letters,
    read_releases,
    registration_bytes,
    update_bytes,
)

ONNX = linear_model(inputs=4, outputs=3, seed=0)  # 15 parameters
BIG = 16 * 1024 * 1024


def delta(seed: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).standard_normal(15).astype(np.float32)


def registered(
    *, dedupe_versions: int = 4, width: int = 16, limits: InputLimits | None = None, **agg: Any
) -> ModelProcess:
    process = ModelProcess(BIG, dedupe_versions, limits=limits or InputLimits())
    process.sequence_window = width
    value = registration_bytes("m", ONNX, agg or {"window": {"count": 1}})
    assert [o.kind for o in process.on_registration(Envelope(value, CONTROL_TOPIC, 0, 0))]
    return process


def send(
    process: ModelProcess,
    uid: str,
    *,
    seq: int | None,
    base: int = 0,
    device: str = "d1",
    seed: int = 0,
) -> list[Output]:
    value = update_bytes("m", uid, delta(seed), base_version=base, device_id=device, sequence=seq)
    return process.on_update(Envelope(value, UPDATES_TOPIC, 0, 0), 0.0)


def absorbed(outputs: list[Output]) -> bool:
    return all(o.kind == "release" for o in outputs)


def refused(outputs: list[Output], reason: str) -> DeadLetter:
    assert [o.kind for o in outputs] == ["dead_letter"], outputs
    (letter,) = read_dead_letters([outputs[0].value])
    assert letter["reason"] == reason, letter["detail"]
    return letter


def advance(process: ModelProcess, versions: int, device: str = "busy") -> None:
    """Other traffic: `versions` releases from a fresh device."""
    start = process.version
    for i in range(versions):
        uid = f"{device}-{start + i}"
        assert absorbed(send(process, uid, seq=start + i, base=process.version, device=device))


def test_a_resent_sequenced_update_is_a_duplicate_in_and_after_its_window() -> None:
    process = registered(window={"count": 2})
    assert send(process, "u0", seq=0) == []  # open window
    refused(send(process, "u0", seq=0), "DUPLICATE")
    # a re-send under another update id (a device's id scheme changed) is still caught
    letter = refused(send(process, "other-id", seq=0), "DUPLICATE")
    assert "sequence 0 of device 'd1'" in letter["detail"]
    assert len(read_releases(o.value for o in send(process, "u1", seq=1))) == 1  # closes
    refused(send(process, "u1", seq=1), "DUPLICATE")
    assert process.aggregator is not None and process.aggregator.buffer.count == 0


def test_a_very_stale_sequenced_update_is_absorbed_without_max_staleness() -> None:
    process = registered(dedupe_versions=4)
    advance(process, 50)
    assert absorbed(send(process, "late", seq=0, base=0))  # staleness 50 > horizon 4
    assert process.last_staleness == 50
    refused(send(process, "late", seq=0, base=0), "DUPLICATE")
    # an unsequenced update that stale is still cut by the horizon, as before
    letter = refused(send(process, "legacy", seq=None, base=0, device="old"), "STALE")
    assert "without a sequence" in letter["detail"]


def test_max_staleness_still_refuses_a_sequenced_update() -> None:
    process = registered(dedupe_versions=100, window={"count": 1}, max_staleness=3)
    advance(process, 5)
    letter = refused(send(process, "late", seq=0, base=0), "STALE")
    assert "max_staleness 3" in letter["detail"]
    assert absorbed(send(process, "late", seq=0, base=4))  # not marked by the refusal


def test_a_sequence_below_the_window_is_too_old_and_out_of_order_is_fine() -> None:
    process = registered(width=8)
    for seq in (0, 2, 9):
        assert absorbed(send(process, f"u{seq}", seq=seq, base=process.version))
    assert absorbed(send(process, "u3", seq=3, base=process.version))  # inside 2..9
    letter = refused(send(process, "u1", seq=1, base=process.version), "SEQUENCE_TOO_OLD")
    assert "below its window (2..9" in letter["detail"]
    refused(send(process, "u2", seq=2), "DUPLICATE")


def test_devices_have_their_own_sequences() -> None:
    process = registered()
    assert absorbed(send(process, "a0", seq=0, device="a"))
    assert absorbed(send(process, "b0", seq=0, device="b"))
    # a device jumping far ahead only moves its own window
    assert absorbed(send(process, "a-far", seq=10**12, device="a"))
    assert absorbed(send(process, "b1", seq=1, device="b"))
    refused(send(process, "a1", seq=1, device="a"), "SEQUENCE_TOO_OLD")


def test_another_devices_copy_of_an_update_id_does_not_block_the_real_one() -> None:
    """Unsequenced dedupe is per device too: an attacker sending the victim's next update
    id first no longer gets the victim's real update refused as DUPLICATE."""
    process = registered(window={"count": 3})
    assert send(process, "victim-next", seq=None, device="mallory", seed=1) == []
    assert send(process, "victim-next", seq=None, device="victim", seed=2) == []
    assert process.aggregator is not None and process.aggregator.buffer.count == 2
    assert list(process.aggregator.buffer.update_ids) == ["victim-next", "victim-next"]
    refused(send(process, "victim-next", seq=None, device="victim", seed=2), "DUPLICATE")


def test_bare_update_ids_from_older_state_still_count_as_seen() -> None:
    """State written before per-device dedupe holds bare ids: a re-send after the upgrade
    is refused (for any device) until the id is pruned."""
    process = registered()
    process.seen = DictSeenIds({"u-old": 0})
    refused(send(process, "u-old", seq=None), "DUPLICATE")
    refused(send(process, "u-old", seq=5), "DUPLICATE")  # re-sent by an upgraded SDK
    advance(process, 6)  # past dedupe_versions 4: pruned
    assert absorbed(send(process, "u-old", seq=5, base=process.version))


def test_windows_and_seen_ids_survive_a_restore() -> None:
    process = registered(window={"count": 2})
    send(process, "s0", seq=0)
    send(process, "s1", seq=1)  # closes version 1
    send(process, "legacy", seq=None, base=1, device="old")  # open window
    assert isinstance(process.windows, DictWindowStore)
    assert isinstance(process.seen, DictSeenIds)
    assert len(process.windows.entries["d1"]) == 8 + 16 // 8
    state, buffer = process.state_bytes()
    restored = ModelProcess.restore(
        models_topic_max_bytes=BIG,
        dedupe_versions=4,
        registration=process.registration,
        state=state,
        buffer=buffer,
        seen=DictSeenIds(dict(process.seen.entries)),
        windows=DictWindowStore(dict(process.windows.entries)),
        sequence_window=16,
    )
    refused(send(restored, "s0", seq=0), "DUPLICATE")
    refused(send(restored, "s1", seq=1), "DUPLICATE")
    refused(send(restored, "legacy", seq=None, base=1, device="old"), "DUPLICATE")
    assert read_releases(o.value for o in send(restored, "s2", seq=2, base=1))


def test_a_refused_update_leaves_no_mark() -> None:
    process = registered()
    bad = update_bytes("m", "u0", np.zeros(14, np.float32), device_id="d1", sequence=0)
    refused(process.on_update(Envelope(bad, UPDATES_TOPIC, 0, 0), 0.0), "BAD_SHAPE")
    assert process.windows.get("d1") is None and process.windows.count() == 0
    assert absorbed(send(process, "u0", seq=0))


def test_devices_past_the_limit_are_refused_and_known_ones_go_on() -> None:
    process = registered(limits=InputLimits(max_devices_per_model=2))
    assert absorbed(send(process, "a0", seq=0, device="a"))
    assert absorbed(send(process, "b0", seq=0, device="b"))
    letter = refused(send(process, "c0", seq=0, device="c"), "OTHER")
    assert "device limit" in letter["detail"] and "max_devices_per_model" in letter["detail"]
    assert absorbed(send(process, "a1", seq=1, device="a"))
    assert process.windows.count() == 2


def test_window_state_per_device_is_8_plus_width_over_8_bytes() -> None:
    process = registered(width=1024)
    for seq in range(0, 3000, 7):
        assert absorbed(send(process, f"u{seq}", seq=seq, base=process.version))
    assert isinstance(process.windows, DictWindowStore)
    assert [len(v) for v in process.windows.entries.values()] == [8 + 128]
    assert SequenceWindow.from_bytes(process.windows.entries["d1"], 1024).high == 2996


@settings(max_examples=60, deadline=None)
@given(
    K=st.integers(1, 4),
    n=st.integers(1, 12),
    order=st.lists(st.integers(0, 11), max_size=30),
    lags=st.lists(st.integers(0, 40), min_size=12, max_size=12),
    devices=st.integers(1, 3),
)
def test_sequenced_resends_never_double_count_nor_go_stale(
    K: int, n: int, order: list[int], lags: list[int], devices: int
) -> None:
    """Through `InMemoryJob` (state through bytes after every record): first sends are
    absorbed whatever their staleness (the horizon is 2), every re-send is a DUPLICATE."""
    job = InMemoryJob(dedupe_versions=2)
    job.send(registration_bytes("m", ONNX, {"window": {"count": K}}), CONTROL_TOPIC)
    sent: dict[int, bytes] = {}
    for i in [i for i in order if i < n] + list(range(n)):
        if i in sent:
            (letter,) = read_dead_letters(o.value for o in job.send(sent[i]))
            assert letter["reason"] == "DUPLICATE"
            continue
        base = max(0, job.process("m").version - lags[i])
        device = f"d{i % devices}"
        sent[i] = update_bytes(
            "m", f"u{i}", delta(i), base_version=base, device_id=device, sequence=i // devices
        )
        assert all(o.kind == "release" for o in job.send(sent[i]))
    process = job.process("m")
    assert process.aggregator is not None
    counted = Counter(
        u for r in read_releases(job.values("release")).values() for u in r.lineage["update_ids"]
    )
    counted.update(process.aggregator.buffer.lineage().update_ids)
    assert counted == Counter(f"u{i}" for i in range(n))
