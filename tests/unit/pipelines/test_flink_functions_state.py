"""`AggregateFunction`, the Flink shell around `ModelProcess`, without Flink.

It runs on dict-backed fakes of the keyed state against `InMemoryJob` (the job's logic
restored from bytes for every record): random interleavings of two models'
registrations, updates, duplicates and bad records, with "restores" at random points, in
which the keyed state goes back to an earlier snapshot and the records after it are
replayed, as after a failure (`open` runs again on the same instance, so anything the
function kept in memory across it would show). Releases and dead letters must equal the
reference's. A cheap guard for any change to how the shell reads and writes state.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedstream.pipelines.model_process as model_process
from fedstream.pipelines.deferred_windows import FLUSH_TIMESTAMP
from fedstream.pipelines.flink_functions import (
    KIND_REGISTRATION,
    KIND_UPDATE,
    AggregateFunction,
)
from fedstream.pipelines.model_process import Envelope, route
from fedstream.schemas import decode
from tests.support.flink_fakes import FakeContext, Store
from tests.support.local_job import InMemoryJob
from tests.support.onnx_models import linear_model
from tests.support.records import (
    CONTROL_TOPIC,
    UPDATES_TOPIC,
    flat_params,
    read_releases,
    registration_bytes,
    update_bytes,
)

ONNX = {
    "a": linear_model(4, 3, seed=1),
    "b": linear_model(3, 2, seed=2),
    "c": linear_model(3, 2, seed=3),
    "d": linear_model(2, 2, seed=4),
}
AGGREGATION: dict[str, dict[str, Any]] = {
    "a": {"window": {"count": 2}, "server_optimizer": {"name": "adam", "learning_rate": 0.1}},
    "b": {"mode": "fedasync", "window": {"count": 3}},
    # issue 15: the version history and the concurrency estimate live in the model state
    "c": {
        "mode": "fedasync",
        "fedasync_rule": "mix_with_base",
        "max_staleness": 2,
        "window": {"count": 2},
    },
    "d": {
        "window": {"count": 2, "seconds": 3600.0, "adaptive": True},
        "normalization": "count",
    },
}


def send(
    function: AggregateFunction, store: Store, value: bytes, topic: str, offset: int
) -> list[tuple[str, bytes]]:
    """Route one record and, if it has a model, hand it to the function under its key."""
    envelope = Envelope(value, topic, 0, offset)
    routed = route(envelope, UPDATES_TOPIC, CONTROL_TOPIC)
    if routed.dead is not None:
        return [("dead_letter", routed.dead.value)]
    assert routed.model_id is not None
    store.key = routed.model_id
    kind = KIND_UPDATE if topic == UPDATES_TOPIC else KIND_REGISTRATION
    row = (routed.model_id, kind, value, topic, 0, offset)
    return [(r[0], r[1]) for r in function.process_element(row, FakeContext(store))]


def summary(values: list[tuple[str, bytes]]) -> tuple[dict[Any, Any], list[Any]]:
    """Releases as {(model, version): (params, update ids)}; dead letters as (reason, offset)."""
    releases = read_releases(v for k, v in values if k == "release")
    out = {
        key: (flat_params(r.onnx).tobytes(), list(r.lineage["update_ids"]))
        for key, r in releases.items()
    }
    letters = [decode(v).record for k, v in values if k == "dead_letter"]
    return out, sorted((str(d["reason"]), int(d["source_offset"])) for d in letters)


# -- the property ---------------------------------------------------------------------
@st.composite
def records(draw: st.DrawFn) -> list[tuple[bytes, str]]:
    """Registrations, updates (sequenced per device or not), re-sends, garbage."""
    out: list[tuple[bytes, str]] = []
    registered: set[str] = set()
    sent: list[bytes] = []
    sequences: Counter[tuple[str, str]] = Counter()
    for i in range(draw(st.integers(1, 24))):
        model = draw(st.sampled_from(sorted(AGGREGATION)))
        choice = draw(st.integers(0, 9))
        if (model not in registered and choice < 3) or choice == 0:
            out.append((registration_bytes(model, ONNX[model], AGGREGATION[model]), CONTROL_TOPIC))
            registered.add(model)
        elif choice == 1 and sent:  # a re-send
            out.append((draw(st.sampled_from(sent)), UPDATES_TOPIC))
        elif choice == 2:
            out.append((b"\x00 not avro", UPDATES_TOPIC))
        else:
            update_id = f"{model}{i}"
            base = draw(st.integers(0, 2))
            device = draw(st.sampled_from(["d0", "d1"]))
            sequence = None
            if draw(st.booleans()):  # sequenced, sometimes skipping a number
                sequence = sequences[model, device] + draw(st.integers(0, 2))
                sequences[model, device] = sequence + 1
            value = update_bytes(
                model,
                update_id,
                delta(model, update_id),
                base_version=base,
                device_id=device,
                sequence=sequence,
            )
            out.append((value, UPDATES_TOPIC))
            sent.append(value)
    return out


def delta(model: str, update_id: str) -> np.ndarray[Any, Any]:
    size = flat_params(ONNX[model]).size
    seed = [ord(c) for c in update_id]
    return np.random.default_rng(seed).standard_normal(size).astype(np.float32)


@settings(max_examples=80, deadline=None)
@given(
    records(),
    st.lists(st.tuples(st.integers(0, 24), st.integers(0, 24)), max_size=2),
    st.sampled_from([0, 1, 8]),
    st.booleans(),
    st.booleans(),
)
def test_the_shell_computes_what_the_job_logic_does_across_restores(
    inputs: list[tuple[bytes, str]],
    restores: list[tuple[int, int]],
    live: int,
    reopen: bool,
    defer: bool,
) -> None:
    """`live`: models kept in memory (0: every record read from state; 1: two models
    evict each other). `reopen=False` rolls the state back under a function that keeps
    its memory (Flink always re-runs `open`; the generation check must cope anyway).
    `defer`: windows written once per checkpoint (`deferred_windows`), so every snapshot
    is taken after the flush the JVM operator calls before a barrier; and a restore
    re-runs `open`, as in Flink (the unsaved windows are memory that a restore drops)."""
    reopen = reopen or defer
    reference = InMemoryJob()
    expected: list[tuple[str, bytes]] = []
    for value, topic in inputs:
        expected += [(o.kind, o.value) for o in reference.send(value, topic)]

    seen: Counter[str] = Counter()
    offsets = []  # per topic, as InMemoryJob counts them
    for _, topic in inputs:
        offsets.append(seen[topic])
        seen[topic] += 1
    store = Store()
    function = AggregateFunction(16 << 20, 64, live_models=live, defer_window_writes=defer)
    function.open(FakeContext(store))
    got: list[tuple[str, bytes]] = []
    snapshots: dict[int, tuple[dict[Any, Any], int]] = {}
    position, pending = 0, sorted((max(a, b), min(a, b)) for a, b in restores)
    checkpoints = {back for _, back in pending}  # only where a restore goes back to
    while position < len(inputs):
        if position in checkpoints:
            if defer:  # the barrier: every model's unsaved window is written first
                for model in sorted(AGGREGATION):
                    store.key = model
                    assert list(function.on_timer(FLUSH_TIMESTAMP, FakeContext(store))) == []
            snapshots[position] = (copy.deepcopy(store.values), len(got))
        if pending and pending[0][0] == position:
            # A failure at `position`; restore the snapshot taken before record `back`:
            # the state goes back, and so does the output (the sink's open transaction
            # is aborted), then the records from `back` on are replayed.
            _, back = pending.pop(0)
            store.values, kept = copy.deepcopy(snapshots[back][0]), snapshots[back][1]
            del got[kept:]
            if reopen:
                function.open(FakeContext(store))
            position = back
            continue
        value, topic = inputs[position]
        got += send(function, store, value, topic, offsets[position])
        position += 1
    assert summary(got) == summary(expected)


def test_state_rolled_back_under_a_live_model_is_read_again() -> None:
    """The live model is at v1, the state goes back to before v1 without `open` running:
    the generation in state no longer matches, so the function must read the state, and
    the replayed update closes the window exactly as the first time."""
    store = Store()
    function = AggregateFunction(16 << 20, 64, live_models=8)
    function.open(FakeContext(store))
    first = update_bytes("a", "a1", delta("a", "a1"))
    second = update_bytes("a", "a2", delta("a", "a2"))
    send(function, store, registration_bytes("a", ONNX["a"], AGGREGATION["a"]), CONTROL_TOPIC, 0)
    send(function, store, first, UPDATES_TOPIC, 0)
    before_close = copy.deepcopy(store.values)
    closed = send(function, store, second, UPDATES_TOPIC, 1)
    assert [kind for kind, _ in closed] == ["release"]
    store.values = before_close  # a restore that keeps the function's memory
    replayed = send(function, store, second, UPDATES_TOPIC, 1)
    assert summary(replayed) == summary(closed)


def test_a_failure_in_the_shell_is_contained_and_the_live_model_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failure closing a live model's window: the update goes to the DLQ as INTERNAL,
    the live copy (which the failed close had already advanced in place) is dropped, the
    model is read back from state, and its next window closes from the state it had."""
    store = Store()
    function = AggregateFunction(16 << 20, 64, live_models=8)
    function.open(FakeContext(store))
    send(function, store, registration_bytes("a", ONNX["a"], AGGREGATION["a"]), CONTROL_TOPIC, 0)
    send(function, store, update_bytes("a", "a1", delta("a", "a1")), UPDATES_TOPIC, 0)
    state_before = copy.deepcopy(store.values)
    real_release = model_process.ModelProcess._release
    monkeypatch.setattr(
        model_process.ModelProcess, "_release", lambda *a, **k: (_ for _ in ()).throw(OSError("x"))
    )
    out = send(function, store, update_bytes("a", "a2", delta("a", "a2")), UPDATES_TOPIC, 1)
    letters = [decode(v).record for kind, v in out]
    assert {(d["update_id"], d["reason"]) for d in letters} == {
        ("a1", "INTERNAL"),
        ("a2", "INTERNAL"),
    }
    assert store.values[("model", "a")] == state_before[("model", "a")]  # no new version
    monkeypatch.setattr(model_process.ModelProcess, "_release", real_release)
    send(function, store, update_bytes("a", "a3", delta("a", "a3")), UPDATES_TOPIC, 2)
    (release,) = send(function, store, update_bytes("a", "a4", delta("a", "a4")), UPDATES_TOPIC, 3)
    reference = InMemoryJob()
    reference.send(registration_bytes("a", ONNX["a"], AGGREGATION["a"]), CONTROL_TOPIC)
    for uid in ("a3", "a4"):
        reference.send(update_bytes("a", uid, delta("a", uid)))
    assert summary([release]) == summary([(o.kind, o.value) for o in reference.outputs[1:]])


def test_sequence_windows_live_in_keyed_state_with_their_device_count() -> None:
    """Each device's window is one MapState entry of 8 + W/8 bytes, the device count a
    ValueState beside it; a failed update writes neither; a restore brings back both."""
    store = Store()
    function = AggregateFunction(16 << 20, 64, sequence_window=64)
    function.open(FakeContext(store))
    send(function, store, registration_bytes("a", ONNX["a"], AGGREGATION["a"]), CONTROL_TOPIC, 0)

    def update(uid: str, device: str, sequence: int, offset: int) -> list[tuple[str, bytes]]:
        value = update_bytes("a", uid, delta("a", uid), device_id=device, sequence=sequence)
        return send(function, store, value, UPDATES_TOPIC, offset)

    update("a1", "d0", 0, 0)
    checkpoint = copy.deepcopy(store.values)
    update("a2", "d1", 0, 1)
    windows = store.values[("sequence_windows", "a")]
    assert {k: len(v) for k, v in windows.items()} == {"d0": 16, "d1": 16}
    assert store.values[("sequence_devices", "a")] == 2
    bad = update_bytes("a", "x", np.zeros(3, np.float32), device_id="d2", sequence=0)
    send(function, store, bad, UPDATES_TOPIC, 2)  # BAD_SHAPE: no window for d2
    assert "d2" not in windows and store.values[("sequence_devices", "a")] == 2
    store.values = checkpoint  # a restore: the window closed by a2 and d1's mark go back
    function.open(FakeContext(store))
    assert store.values[("sequence_devices", "a")] == 1
    assert [kind for kind, _ in update("a2", "d1", 0, 1)] == ["release"]
    assert [decode(v).record["reason"] for _, v in update("a2", "d1", 0, 1)] == ["DUPLICATE"]
