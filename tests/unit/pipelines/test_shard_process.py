"""A sharded model as plain Python: `ShardProcess` x S feeding `ModelProcess.on_partial`.

The reference is the unsharded core: every release's parameters equal `Aggregator` fed
the updates its lineage lists (`tests.support.replay.replay_windows`), and every update
is absorbed at most once; refusals are the unsharded job's dead letters; what a shard
cannot absorb (FedAsync, an unknown model, unsequenced updates) goes on unchanged.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2

from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.model_process import MAX_HELD_PARTIALS, Envelope, ModelProcess, Output
from fedstream.pipelines.partial_window import PartialWindow
from fedstream.pipelines.sequence_window import DictWindowStore
from fedstream.pipelines.shard_process import DIRECT, FORWARD, PARTIAL, ShardProcess
from fedstream.schemas import DeadLetter
from tests.support.onnx_models import linear_model
from tests.support.records import (
    CONTROL_TOPIC,
    UPDATES_TOPIC,
    flat_params,
    read_dead_letters,
    read_releases,
    registration_bytes,
    update_bytes,
)
from tests.support.replay import Sent, replay_windows

ONNX = linear_model(inputs=4, outputs=3, seed=0)  # 15 parameters
BIG = 16 * 1024 * 1024
FEDBUFF: dict[str, Any] = {
    "window": {"count": 4},
    "staleness": {"function": "polynomial", "a": 0.5},
    "weight_by_samples": True,
}


def delta(seed: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).standard_normal(15).astype(np.float32)


def registration(aggregation: dict[str, Any] | None = None) -> Envelope:
    return Envelope(registration_bytes("m", ONNX, aggregation or FEDBUFF), CONTROL_TOPIC, 0, 0)


def shard(shards: int = 2, aggregation: dict[str, Any] | None = None, **kw: Any) -> ShardProcess:
    process = ShardProcess(shards, 0.25, **kw)
    assert process.on_registration(registration(aggregation)) == []
    return process


def update(
    uid: str, *, seq: int | None, device: str = "d1", base: int = 0, samples: int = 1, seed: int = 0
) -> Envelope:
    value = update_bytes(
        "m",
        uid,
        delta(seed),
        base_version=base,
        num_samples=samples,
        device_id=device,
        sequence=seq,
    )
    return Envelope(value, UPDATES_TOPIC, 0, 0)


def letters(outputs: list[Output]) -> list[DeadLetter]:
    return read_dead_letters(o.value for o in outputs if o.kind == "dead_letter")


def reasons(outputs: list[Output]) -> list[str]:
    return [d["reason"] for d in letters(outputs)]


# -- refusals and dedupe ---------------------------------------------------------------
def test_refusals_are_the_unsharded_dead_letters() -> None:
    s = shard()
    assert s.on_update(update("u1", seq=1), 0.0) == []
    assert reasons(s.on_update(update("u1", seq=1), 0.0)) == ["DUPLICATE"]
    wide = shard(sequence_window=8)
    for i in range(1, 11):
        wide.on_update(update(f"w{i}", seq=i), 0.0)
    assert reasons(wide.on_update(update("old", seq=1), 0.0)) == ["SEQUENCE_TOO_OLD"]
    assert reasons(s.on_update(update("", seq=2), 0.0)) == ["BAD_FIELD"]
    assert reasons(s.on_update(Envelope(b"junk", UPDATES_TOPIC, 0, 0), 0.0)) != []
    letter = letters(s.on_update(update("u9", seq=9, samples=0), 0.0))[0]
    assert (letter["reason"], letter["model_id"], letter["update_id"]) == (
        "BAD_NUM_SAMPLES",
        "m",
        "u9",
    )


def test_a_refused_update_leaves_no_trace_in_the_dedupe_state() -> None:
    s = shard()
    assert reasons(s.on_update(update("u1", seq=1, samples=0), 0.0)) == ["BAD_NUM_SAMPLES"]
    assert s.on_update(update("u1", seq=1), 0.0) == []  # the same sequence, now valid
    assert s.partial is not None and s.partial.count == 1


def test_device_limit_is_counted_per_shard() -> None:
    s = shard(limits=InputLimits(max_devices_per_model=1))
    assert s.on_update(update("a", seq=1, device="d1"), 0.0) == []
    assert reasons(s.on_update(update("b", seq=1, device="d2"), 0.0)) == ["OTHER"]


# -- flush rules -----------------------------------------------------------------------
@pytest.mark.parametrize(("shards", "every"), [(2, 2), (3, 2), (4, 1), (8, 1)])
def test_a_partial_goes_on_at_ceil_k_over_s_updates(shards: int, every: int) -> None:
    s = shard(shards)
    kinds = [
        [o.kind for o in s.on_update(update(f"u{i}", seq=i, device=f"d{i}"), 0.0)]
        for i in range(1, 7)
    ]
    assert kinds == [[PARTIAL] if i % every == 0 else [] for i in range(1, 7)]


def test_a_partial_goes_on_by_timer_and_at_most_the_window_seconds() -> None:
    s = shard()
    assert s.deadline() is None
    s.on_update(update("u1", seq=1), 10.0)
    assert s.deadline() == 10.25
    assert s.on_timer(10.2) == []
    out = s.on_timer(10.25)
    assert [o.kind for o in out] == [PARTIAL] and s.partial is None and s.deadline() is None
    assert PartialWindow.from_bytes(out[0].value).count == 1
    hybrid = shard(aggregation={"window": {"count": 4, "seconds": 0.1}})
    hybrid.on_update(update("u1", seq=1), 10.0)
    assert hybrid.deadline() == pytest.approx(10.1)


def test_a_full_partial_goes_on_before_the_update_that_does_not_fit() -> None:
    s = shard(aggregation={"window": {"count": 8}, "max_staleness": 0})
    assert s.on_update(update("u1", seq=1, base=0), 0.0) == []
    out = s.on_update(update("u2", seq=2, base=1), 0.0)  # one base version per partial
    assert [o.kind for o in out] == [PARTIAL]
    assert PartialWindow.from_bytes(out[0].value).base_versions == (0,)
    assert s.partial is not None and s.partial.base_versions == (1,)


# -- what a shard forwards -------------------------------------------------------------
@pytest.mark.parametrize(
    "aggregation",
    [{"mode": "fedasync", "window": {"count": 1}}, {"window": {"count": 4}, "reducer": "median"}],
)
def test_a_model_that_cannot_be_split_is_forwarded(aggregation: dict[str, Any]) -> None:
    s = shard(aggregation=aggregation)
    assert [o.kind for o in s.on_update(update("u1", seq=1), 0.0)] == [FORWARD]
    assert [o.kind for o in s.on_update(update("u1", seq=1), 0.0)] == [FORWARD]
    assert s.partial is None


def test_unknown_model_and_unsequenced_devices_go_direct_for_good() -> None:
    s = ShardProcess(2, 0.25)
    assert [o.kind for o in s.on_update(update("u1", seq=1, device="early"), 0.0)] == [FORWARD]
    s.on_registration(registration())
    for i, device in enumerate(["early", "legacy", "legacy", "early"]):
        seq = None if (device, i) == ("legacy", 1) else i + 5
        kinds = [o.kind for o in s.on_update(update(f"x{i}", seq=seq, device=device), 0.0)]
        assert kinds == [FORWARD]
    assert isinstance(s.windows, DictWindowStore)
    assert s.windows.entries == {"early": DIRECT, "legacy": DIRECT}
    assert s.on_update(update("y", seq=1, device="new"), 0.0) == []  # a sequenced device


def test_a_shard_keeps_the_first_registration_the_model_key_would_accept() -> None:
    s = ShardProcess(2, 0.25)
    assert s.on_registration(Envelope(b"junk", CONTROL_TOPIC, 0, 0)) == []
    assert s.registration is None
    s.on_registration(registration())
    first = s.registration
    s.on_registration(registration({"window": {"count": 9}}))  # the model key refuses it
    assert s.registration is first and first is not None
    assert first.config.window.count == 4


# -- on_partial ------------------------------------------------------------------------
def model() -> ModelProcess:
    process = ModelProcess(BIG, 64)
    assert [o.kind for o in process.on_registration(registration())] == ["release"]
    return process


def test_stale_and_future_groups_become_dead_letters_naming_update_and_model() -> None:
    s = shard(aggregation={"window": {"count": 2}, "max_staleness": 0})
    target = ModelProcess(BIG, 64)
    target.on_registration(registration({"window": {"count": 2}, "max_staleness": 0}))
    [partial] = s.on_update(update("ahead", seq=1, base=3), 0.0)  # K / S = 1: at once
    letter = letters(target.on_partial(partial.value, 0.0))[0]
    assert (letter["reason"], letter["update_id"], letter["model_id"]) == (
        "FUTURE_VERSION",
        "ahead",
        "m",
    )
    assert letter["source_offset"] == -1  # no source record: its bytes stayed on the shard


def test_partials_before_the_registration_are_held_then_folded() -> None:
    """The registration reaches shards and model key on two paths: a partial that comes
    first waits for it (up to MAX_HELD_PARTIALS), then is folded as if it came after."""
    early = ModelProcess(BIG, 64, model_id="m")
    s = shard()
    sent = [update(f"u{i}", seq=i + 1, device=f"d{i}") for i in range(4)]
    outs = [o for e in sent for o in s.on_update(e, 0.0) if o.kind == PARTIAL]
    assert len(outs) == 2  # K / S = 2 updates each
    assert all(early.on_partial(o.value, 0.0) == [] for o in outs)
    assert len(early.held_partials) == 2
    out = early.on_registration(registration(), 1.0)
    assert early.held_partials == []
    releases = read_releases(o.value for o in out if o.kind == "release")
    assert sorted(releases) == [("m", 0), ("m", 1)]
    assert sorted(releases["m", 1].lineage["update_ids"]) == ["u0", "u1", "u2", "u3"]


def test_beyond_the_held_partials_an_unregistered_model_refuses_per_update() -> None:
    stranger = ModelProcess(BIG, 64, model_id="m")
    stranger.held_partials = [b"held"] * MAX_HELD_PARTIALS
    s = shard()
    s.on_update(update("u1", seq=1), 0.0)
    [partial] = s.flush()
    out = stranger.on_partial(partial.value, 0.0)
    assert [(d["reason"], d["update_id"]) for d in letters(out)] == [("UNKNOWN_MODEL", "u1")]


# -- equality with the unsharded core --------------------------------------------------
def shard_of(device: str, shards: int) -> int:
    return int(murmur2(device.encode()) & 0x7FFFFFFF) % shards


@settings(max_examples=25, deadline=None)
@given(
    shards=st.integers(2, 4),
    plan=st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 2), st.integers(1, 9), st.booleans()),
        min_size=1,
        max_size=24,
    ),
)
def test_releases_equal_the_unsharded_core_over_their_lineage(
    shards: int, plan: list[tuple[int, int, int, bool]]
) -> None:
    """Updates of 6 devices (some re-sent, some stale) through S shards, partials folded in
    the order they come out, the remaining ones flushed by their timers at the end."""
    shard_list = [shard(shards) for _ in range(shards)]
    target = model()
    sent: dict[str, Sent] = {}
    next_seq: Counter[str] = Counter()
    outputs: list[Output] = []
    for i, (device_no, lag, samples, resend) in enumerate(plan):
        device = f"d{device_no}"
        if resend and next_seq[device]:
            seq, uid = next_seq[device], f"{device}-{next_seq[device]}"
        else:
            next_seq[device] += 1
            seq, uid = next_seq[device], f"{device}-{next_seq[device]}"
        base = max(0, target.version - lag)
        envelope = update(uid, seq=seq, device=device, base=base, samples=samples, seed=i)
        sent.setdefault(uid, Sent(uid, base, samples, delta(i)))
        out = shard_list[shard_of(device, shards)].on_update(envelope, float(i))
        for o in out:
            outputs += target.on_partial(o.value, float(i)) if o.kind == PARTIAL else [o]
    for s in shard_list:
        for o in s.on_timer(1e9):
            outputs += target.on_partial(o.value, 1e9)
    releases = read_releases(o.value for o in outputs if o.kind == "release")
    windows = [
        [sent[u] for u in releases["m", v].lineage["update_ids"]]
        for v in range(1, target.version + 1)
    ]
    absorbed = [u for w in windows for u in w]
    assert len({u.update_id for u in absorbed}) == len(absorbed)  # each at most once
    assert all(len(w) >= 4 for w in windows)  # a count window closes at K or beyond
    expected = replay_windows(FEDBUFF, flat_params(ONNX), windows)
    for v in range(1, target.version + 1):
        np.testing.assert_allclose(releases["m", v].params(), expected[v], rtol=1e-5, atol=1e-6)
    refused = Counter(d["reason"] for d in letters(outputs))
    assert set(refused) <= {"DUPLICATE"}
