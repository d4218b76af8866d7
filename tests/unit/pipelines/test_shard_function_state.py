"""`ShardFunction` feeding `AggregateFunction`, the Flink shells of a sharded model, without
Flink: keyed state in dicts (`tests.support.flink_fakes`), records keyed as the job keys
them (model#murmur2(device) mod S for updates, every shard key for registrations).

With "restores" at random points (both operators' state back to an earlier snapshot, the
output after it dropped, as the sink's aborted transaction would, and the records after it
replayed), with and without the live partials cache and with or without `open` running
again, the releases and dead letters must equal one run without any restore: nothing the
shells keep in memory may survive a restore, and a partial is in state exactly when it is
in a checkpoint. With `defer` both shells write their open windows once per checkpoint
(`deferred_windows`): each snapshot is taken after the flush the JVM operator calls
before a barrier.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2

from fedstream.pipelines.deferred_windows import FLUSH_TIMESTAMP
from fedstream.pipelines.flink_functions import (
    KIND_DEAD,
    KIND_PARTIAL,
    KIND_REGISTRATION,
    KIND_UPDATE,
    AggregateFunction,
)
from fedstream.pipelines.model_process import Envelope, route
from fedstream.pipelines.shard_function import ShardFunction
from fedstream.schemas import decode
from tests.support.flink_fakes import FakeContext, Store
from tests.support.onnx_models import linear_model
from tests.support.records import (
    CONTROL_TOPIC,
    UPDATES_TOPIC,
    flat_params,
    read_releases,
    registration_bytes,
    update_bytes,
)

SHARDS = 2
ONNX = {"a": linear_model(4, 3, seed=1), "q": linear_model(3, 2, seed=2)}
AGGREGATION: dict[str, dict[str, Any]] = {
    "a": {
        "window": {"count": 4},
        "staleness": {"function": "polynomial", "a": 0.5},
        "weight_by_samples": True,
        "server_optimizer": {"name": "adam", "learning_rate": 0.1},
    },
    "q": {"mode": "fedasync", "window": {"count": 1}},  # forwarded by its shards
}
DEVICES = ["d0", "d1", "d2", "d3"]


def shard_key(model: str, device: str) -> str:
    return f"{model}#{int(murmur2(device.encode()) & 0x7FFFFFFF) % SHARDS}"


class Pipeline:
    """The two operators, each with its keyed state, wired as `aggregation_job._shard`."""

    def __init__(self, live: int, *, defer: bool = False) -> None:
        self.shard_store, self.model_store = Store(), Store()
        self.shard = ShardFunction(SHARDS, 250, live_partials=live, defer_partial_writes=defer)
        self.model = AggregateFunction(16 << 20, 64, live_models=live, defer_window_writes=defer)
        self.open()

    def open(self) -> None:
        self.shard.open(FakeContext(self.shard_store))
        self.model.open(FakeContext(self.model_store))

    def snapshot(self) -> tuple[Any, Any]:
        """A checkpoint: every key's unsaved window written first, as before a barrier
        (a no-op unless deferring), then both stores copied."""
        for store, function, keys in (
            (self.shard_store, self.shard, [f"{m}#{s}" for m in ONNX for s in range(SHARDS)]),
            (self.model_store, self.model, list(ONNX)),
        ):
            for key in keys:
                store.key = key
                assert list(function.on_timer(FLUSH_TIMESTAMP, FakeContext(store))) == []
        return copy.deepcopy(self.shard_store.values), copy.deepcopy(self.model_store.values)

    def restore(self, snapshot: tuple[Any, Any]) -> None:
        self.shard_store.values, self.model_store.values = copy.deepcopy(snapshot)

    def send(
        self, value: bytes, topic: str, offset: int, now_ms: int, *, late: bool = False
    ) -> list[tuple[str, bytes]]:
        """One record; `late`: a registration reaches only the shards (its path to the
        model key lags: send it again with `to_model`)."""
        self.shard_store.now_ms = self.model_store.now_ms = now_ms
        routed = route(Envelope(value, topic, 0, offset), UPDATES_TOPIC, CONTROL_TOPIC)
        if routed.dead is not None:
            return [("dead_letter", routed.dead.value)]
        assert routed.model_id is not None
        model = routed.model_id
        kind = KIND_UPDATE if topic == UPDATES_TOPIC else KIND_REGISTRATION
        row = (model, kind, value, topic, 0, offset, routed.device_id)
        if kind == KIND_REGISTRATION:
            for shard in range(SHARDS):
                self.shard_store.key = f"{model}#{shard}"
                list(self.shard.process_element(row, FakeContext(self.shard_store)))
            return [] if late else self._to_model(row)
        self.shard_store.key = shard_key(model, routed.device_id)
        rows = list(self.shard.process_element(row, FakeContext(self.shard_store)))
        return self._onwards(rows)

    def flush(self, now_ms: int) -> list[tuple[str, bytes]]:
        """Every shard's flush timer fires."""
        self.shard_store.now_ms = self.model_store.now_ms = now_ms
        out = []
        for key in sorted({k for _, k in self.shard_store.values}):
            self.shard_store.key = key
            out += self._onwards(list(self.shard.on_timer(now_ms, FakeContext(self.shard_store))))
        return out

    def _onwards(self, rows: list[Any]) -> list[tuple[str, bytes]]:
        out = []
        for row in rows:
            if row[1] == KIND_DEAD:
                out.append(("dead_letter", bytes(row[2])))
            else:
                assert row[1] in (KIND_UPDATE, KIND_PARTIAL)
                out += self._to_model(tuple(row))
        return out

    def to_model(self, value: bytes, offset: int) -> list[tuple[str, bytes]]:
        """A registration reaches the model key (after `send(..., late=True)`)."""
        model = str(decode(value).record["model_id"])
        return self._to_model((model, KIND_REGISTRATION, value, CONTROL_TOPIC, 0, offset, ""))

    def _to_model(self, row: tuple[Any, ...]) -> list[tuple[str, bytes]]:
        self.model_store.key = row[0]
        rows = self.model.process_element(row, FakeContext(self.model_store))
        return [(r[0], bytes(r[1])) for r in rows]


def summary(values: list[tuple[str, bytes]]) -> tuple[dict[Any, Any], list[Any]]:
    """Releases as {(model, version): (params, update ids)}; dead letters as
    (reason, source offset, update id)."""
    releases = read_releases(v for k, v in values if k == "release")
    out = {
        key: (flat_params(r.onnx).tobytes(), list(r.lineage["update_ids"]))
        for key, r in releases.items()
    }
    letters = [decode(v).record for k, v in values if k == "dead_letter"]
    return out, sorted(
        (str(d["reason"]), int(d["source_offset"]), str(d["update_id"])) for d in letters
    )


@st.composite
def records(draw: st.DrawFn) -> list[tuple[bytes, str]]:
    """Both registrations first, then sequenced updates of 4 devices, re-sends, an
    unsequenced update now and then (its device goes direct), garbage."""
    out = [(registration_bytes(m, ONNX[m], AGGREGATION[m]), CONTROL_TOPIC) for m in ONNX]
    sent: list[bytes] = []
    sequences: Counter[tuple[str, str]] = Counter()
    for i in range(draw(st.integers(1, 30))):
        choice = draw(st.integers(0, 9))
        if choice == 0 and sent:
            out.append((draw(st.sampled_from(sent)), UPDATES_TOPIC))
            continue
        if choice == 1:
            out.append((b"\x00 not avro", UPDATES_TOPIC))
            continue
        model = draw(st.sampled_from(sorted(ONNX)))
        device = draw(st.sampled_from(DEVICES))
        sequence = None
        if choice != 2:
            sequence = sequences[model, device] + 1
            sequences[model, device] = sequence
        update_id = f"{model}{i}"
        size = flat_params(ONNX[model]).size
        delta = np.random.default_rng(i).standard_normal(size).astype(np.float32)
        value = update_bytes(
            model,
            update_id,
            delta,
            base_version=draw(st.integers(0, 1)),
            num_samples=draw(st.integers(1, 5)),
            device_id=device,
            sequence=sequence,
        )
        out.append((value, UPDATES_TOPIC))
        sent.append(value)
    return out


def run(
    inputs: list[tuple[bytes, str]],
    live: int,
    restores: list[tuple[int, int]],
    reopen: bool,
    *,
    defer: bool = False,
) -> list[tuple[str, bytes]]:
    pipeline = Pipeline(live, defer=defer)
    offsets, seen = [], Counter[str]()
    for _, topic in inputs:
        offsets.append(seen[topic])
        seen[topic] += 1
    got: list[tuple[str, bytes]] = []
    snapshots: dict[int, tuple[Any, int]] = {}
    position, pending = 0, sorted((max(a, b), min(a, b)) for a, b in restores)
    checkpoints = {back for _, back in pending}  # only where a restore goes back to
    while position < len(inputs):
        if position in checkpoints:
            snapshots[position] = (pipeline.snapshot(), len(got))
        if pending and pending[0][0] == position:
            _, back = pending.pop(0)
            state, kept = snapshots[back]
            pipeline.restore(state)
            del got[kept:]
            if reopen:
                pipeline.open()
            position = back
            continue
        value, topic = inputs[position]
        got += pipeline.send(value, topic, offsets[position], 1000 * position)
        position += 1
    return got + pipeline.flush(10**9)


@settings(max_examples=60, deadline=None)
@given(
    records(),
    st.lists(st.tuples(st.integers(0, 32), st.integers(0, 32)), max_size=2),
    st.sampled_from([0, 1, 8]),
    st.booleans(),
    st.booleans(),
)
def test_the_sharded_shells_compute_the_same_across_restores(
    inputs: list[tuple[bytes, str]],
    restores: list[tuple[int, int]],
    live: int,
    reopen: bool,
    defer: bool,
) -> None:
    """`defer`: a restore re-runs `open`, as in Flink (unsaved windows are memory)."""
    expected = run(inputs, 0, [], True)
    got = run(inputs, live, restores, reopen or defer, defer=defer)
    assert summary(got) == summary(expected)


def test_each_update_is_absorbed_once_and_partials_combine_into_releases() -> None:
    """A plain run: 8 sequenced updates of 4 devices, each window of model a is K = 4 or
    more updates from both shards, and every update id is in exactly one release."""
    inputs = [(registration_bytes(m, ONNX[m], AGGREGATION[m]), CONTROL_TOPIC) for m in ONNX]
    for i in range(8):
        delta = np.random.default_rng(i).standard_normal(15).astype(np.float32)
        device = DEVICES[i % 4]
        inputs.append(
            (update_bytes("a", f"a{i}", delta, device_id=device, sequence=i), UPDATES_TOPIC)
        )
    releases, letters = summary(run(inputs, 8, [], True))
    assert letters == []
    windows = [ids for (model, version), (_, ids) in sorted(releases.items()) if version > 0]
    assert sorted(u for ids in windows for u in ids) == [f"a{i}" for i in range(8)]
    assert all(len(ids) >= 4 for ids in windows[:-1])
    assert {shard_key("a", d) for d in DEVICES} == {"a#0", "a#1"}


def test_partials_held_in_state_until_the_registration_reaches_the_model_key() -> None:
    """The shards have the registration, the model key not yet: the partials wait in its
    keyed state (read back from state: no live copies), and are folded when it comes."""
    pipeline = Pipeline(live=0)
    registration = registration_bytes("a", ONNX["a"], AGGREGATION["a"])
    assert pipeline.send(registration, CONTROL_TOPIC, 0, 0, late=True) == []
    early: list[tuple[str, bytes]] = []
    for i in range(4):
        delta = np.random.default_rng(i).standard_normal(15).astype(np.float32)
        value = update_bytes("a", f"a{i}", delta, device_id=DEVICES[i], sequence=1)
        early += pipeline.send(value, UPDATES_TOPIC, i, 10 * i)
    early += pipeline.flush(10**6)
    assert early == []  # held, not refused
    assert any(name == "held_partials" for name, _ in pipeline.model_store.values)
    releases, letters = summary(pipeline.to_model(registration, 0))
    assert letters == [] and sorted(releases) == [("a", 0), ("a", 1)]
    assert sorted(releases["a", 1][1]) == ["a0", "a1", "a2", "a3"]
    assert not any(name == "held_partials" for name, _ in pipeline.model_store.values)
