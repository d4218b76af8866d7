"""The job's per-model logic without Flink: `route` and `ModelProcess`.

Registration and version 0, every dead-letter reason, dedupe (also across windows and a
persist/restore), count/time/hybrid windows, lineage, staleness weighting against an
offline replay through `Aggregator` (tests/support/replay.py), independent models, release
chunking and the bounded seen-set. `InMemoryJob` (tests/support/local_job.py) persists each
model to bytes after every record, as the Flink shell does, wherever a test drives more
than one step.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstream.pipelines.binary_format import StateFormatError
from fedstream.pipelines.config import AggregationConfig, Normalization
from fedstream.pipelines.model_process import (
    DictSeenIds,
    Envelope,
    ModelProcess,
    Output,
    RegisteredModel,
    route,
)
from fedstream.schemas import (
    DeadLetter,
    aggregation_to_avro,
    assemble_release,
    decode,
    encode,
    pack,
)
from tests.support.local_job import InMemoryJob
from tests.support.onnx_models import linear_model
from tests.support.records import (
    CONTROL_TOPIC,
    F32,
    UPDATES_TOPIC,
    Release,
    flat_params,
    garbage,
    read_dead_letters,
    read_releases,
    registration_bytes,
    unknown_schema,
    update_bytes,
    update_record,
)
from tests.support.replay import Sent, replay

ONNX = linear_model(inputs=4, outputs=3, seed=0)  # W (4, 3) and b (3,): 15 parameters
SIZE = 15
INITIAL = flat_params(ONNX)
BIG = 16 * 1024 * 1024


def delta(seed: int, size: int = SIZE) -> F32:
    return np.random.default_rng(seed).standard_normal(size).astype(np.float32)


def envelope(value: bytes, topic: str = UPDATES_TOPIC, offset: int = 0) -> Envelope:
    return Envelope(value, topic, 3, offset)


def registered(
    model_id: str = "m", *, dedupe_versions: int = 8, max_bytes: int = BIG, **aggregation: Any
) -> ModelProcess:
    process = ModelProcess(max_bytes, dedupe_versions)
    outputs = process.on_registration(
        envelope(registration_bytes(model_id, ONNX, aggregation), CONTROL_TOPIC)
    )
    assert [o.kind for o in outputs] == ["release"]
    return process


def update(
    uid: str, seed: int = 0, *, base: int = 0, n: int = 1, model_id: str = "m", offset: int = 0
) -> Envelope:
    value = update_bytes(model_id, uid, delta(seed), base_version=base, num_samples=n)
    return envelope(value, offset=offset)


def releases(outputs: list[Output]) -> dict[tuple[str, int], Release]:
    assert all(o.kind == "release" for o in outputs), outputs
    return read_releases(o.value for o in outputs)


def only_release(outputs: list[Output]) -> Release:
    found = releases(outputs)
    assert len(found) == 1, found.keys()
    return next(iter(found.values()))


def only_dead(outputs: list[Output], source: Envelope, reason: str) -> DeadLetter:
    """The single dead letter in `outputs`, checked to carry `source` verbatim."""
    assert [o.kind for o in outputs] == ["dead_letter"], outputs
    (letter,) = read_dead_letters([outputs[0].value])
    assert letter["reason"] == reason == outputs[0].reason, letter["detail"]
    assert letter["original"] == source.value
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        source.topic,
        source.partition,
        source.offset,
    )
    assert letter["detail"]
    return letter


# --------------------------------------------------------------------- registration


def test_registration_releases_version_0_that_runs_in_onnxruntime() -> None:
    process = ModelProcess(BIG, 8)
    outputs = process.on_registration(envelope(registration_bytes("m", ONNX), CONTROL_TOPIC))
    release = only_release(outputs)
    assert (release.model_id, release.version, release.chunk_count) == ("m", 0, 1)
    assert outputs[0].key == b"m#0"  # model id and chunk index: compaction keeps each chunk
    assert hashlib.sha256(release.onnx).hexdigest() == release.sha256
    np.testing.assert_array_equal(release.params(), INITIAL)
    lineage = release.lineage
    assert lineage["parent_version"] is None and lineage["update_ids"] == []
    assert (lineage["num_updates"], lineage["num_samples"]) == (0, 0)
    session = ort.InferenceSession(release.onnx, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    (y,) = session.run(None, {"x": x})
    np.testing.assert_allclose(y, x @ INITIAL[:12].reshape(4, 3) + INITIAL[12:], rtol=1e-5)
    assert process.version == 0


def test_the_same_registration_resent_is_a_no_op() -> None:
    value = registration_bytes("m", ONNX, {"window": {"count": 2}})
    process = ModelProcess(BIG, 8)
    process.on_registration(envelope(value, CONTROL_TOPIC))
    process.on_update(update("u1"), 0.0)
    assert process.on_registration(envelope(value, CONTROL_TOPIC, offset=1)) == []
    assert process.aggregator is not None and process.aggregator.buffer.count == 1


def test_a_different_registration_of_a_registered_model_is_refused() -> None:
    process = registered(window={"count": 2})
    other = envelope(registration_bytes("m", ONNX, {"window": {"count": 5}}), CONTROL_TOPIC, 7)
    letter = only_dead(process.on_registration(other), other, "BAD_REGISTRATION")
    assert "already registered" in letter["detail"] and letter["model_id"] == "m"
    assert process.registration is not None
    assert process.registration.config.window.count == 2


def _int_initializer_template() -> bytes:
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(ONNX)
    model.graph.initializer.append(numpy_helper.from_array(np.arange(3, dtype=np.int64), "idx"))
    data: bytes = model.SerializeToString()
    return data


def _bad_registration(case: str) -> bytes:
    if case == "garbage onnx":
        return registration_bytes(
            "m", ONNX, replace={"onnx_template": b"\x08\x07not an ONNX model"}
        )
    if case == "unknown initializer":
        params = [{"name": "W", "shape": [4, 3]}, {"name": "bias", "shape": [3]}]
        return registration_bytes("m", ONNX, replace={"parameters": params})
    if case == "shape mismatch":
        params = [{"name": "W", "shape": [3, 4]}, {"name": "b", "shape": [3]}]
        return registration_bytes("m", ONNX, replace={"parameters": params})
    if case == "initial size mismatch":
        initial = pack(np.zeros(14), "FP32")
        return registration_bytes("m", ONNX, replace={"initial_parameters": initial})
    if case == "non-finite initial":
        initial = pack(np.full(15, np.nan, np.float32), "FP32")
        return registration_bytes("m", ONNX, replace={"initial_parameters": initial})
    if case == "invalid window":
        invalid = aggregation_to_avro({"window": {"count": 0}})
        return registration_bytes("m", ONNX, replace={"aggregation": invalid})
    if case == "dp without clipping":
        invalid = aggregation_to_avro({"dp_noise_multiplier": 1.0})
        return registration_bytes("m", ONNX, replace={"aggregation": invalid})
    if case == "int initializer":
        return registration_bytes("m", _int_initializer_template(), parameter_names=["W", "idx"])
    raise AssertionError(case)


BAD_REGISTRATIONS = {
    "garbage onnx": "not an ONNX model",
    "unknown initializer": "unknown initializer",
    "shape mismatch": "shape",
    "initial size mismatch": "BAD_SHAPE",
    "non-finite initial": "NON_FINITE",
    "invalid window": "window.count",
    "dp without clipping": "requires clip_norm",
    "int initializer": "int64",
}


@pytest.mark.parametrize("case", sorted(BAD_REGISTRATIONS))
def test_bad_registration_is_dead_lettered_and_leaves_the_model_unregistered(case: str) -> None:
    bad = envelope(_bad_registration(case), CONTROL_TOPIC, offset=4)
    assert route(bad, UPDATES_TOPIC, CONTROL_TOPIC).model_id == "m"
    process = ModelProcess(BIG, 8)
    letter = only_dead(process.on_registration(bad), bad, "BAD_REGISTRATION")
    assert BAD_REGISTRATIONS[case] in letter["detail"]
    assert letter["model_id"] == "m"  # read from the record, though it failed its checks
    assert process.registration is None and process.version == -1
    assert process.state_bytes() == (None, None)
    # the model can still be registered properly afterwards
    good = envelope(registration_bytes("m", ONNX), CONTROL_TOPIC, offset=5)
    assert only_release(process.on_registration(good)).version == 0


def test_registration_state_round_trips_without_the_weights() -> None:
    for onnx in (ONNX, linear_model(inputs=64, outputs=32, seed=3), linear_model(5, 7)):
        model, initial = RegisteredModel.from_bytes(registration_bytes("m", onnx))
        state = model.to_state()
        assert RegisteredModel.from_state(state) == model
        assert len(state) < 1000 + len(onnx) - 4 * initial.size  # weights are not kept
    with pytest.raises(StateFormatError):
        RegisteredModel.from_state(state[:-1])


def test_a_model_saved_before_step_5_keeps_its_weighted_mean(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """State written by a job from before schema step 5 has no `normalization`: restored,
    the model keeps the weighted mean it was registered with, not the new default."""
    model, _ = RegisteredModel.from_bytes(registration_bytes("m", ONNX))
    assert model.config.normalization is Normalization.COUNT  # what a new model gets
    to_dict = AggregationConfig.to_dict

    def before_step_5(self: AggregationConfig) -> dict[str, Any]:
        return {k: v for k, v in to_dict(self).items() if k != "normalization"}

    monkeypatch.setattr(AggregationConfig, "to_dict", before_step_5)
    old_state = model.to_state()
    monkeypatch.undo()
    restored = RegisteredModel.from_state(old_state)
    assert restored.config.normalization is Normalization.WEIGHT_SUM
    assert restored.config == replace(model.config, normalization=Normalization.WEIGHT_SUM)


# --------------------------------------------------------------------- routing


def test_route_keys_decodable_records_by_model() -> None:
    up = envelope(update_bytes("model-a", "u", delta(0)))
    assert route(up, UPDATES_TOPIC, CONTROL_TOPIC).model_id == "model-a"
    reg = envelope(registration_bytes("model-b", ONNX), CONTROL_TOPIC)
    assert route(reg, UPDATES_TOPIC, CONTROL_TOPIC).model_id == "model-b"


VALID_UPDATE = update_bytes("m", "u", delta(0))
UNDELIVERABLE = {
    "garbage": (garbage(), UPDATES_TOPIC, "UNDECODABLE", "magic"),
    "empty": (b"", UPDATES_TOPIC, "UNDECODABLE", "empty"),
    "truncated header": (VALID_UPDATE[:6], UPDATES_TOPIC, "UNDECODABLE", "truncated"),
    "truncated body": (VALID_UPDATE[:-7], UPDATES_TOPIC, "UNDECODABLE", "truncated"),
    "trailing bytes": (VALID_UPDATE + b"\x00", UPDATES_TOPIC, "UNDECODABLE", "trailing"),
    "unknown schema": (unknown_schema(), UPDATES_TOPIC, "UNKNOWN_SCHEMA", "fingerprint"),
    "registration on updates": (
        registration_bytes("m", ONNX),
        UPDATES_TOPIC,
        "WRONG_RECORD_TYPE",
        "expected a GradientUpdate",
    ),
    "update on control": (VALID_UPDATE, CONTROL_TOPIC, "WRONG_RECORD_TYPE", "ModelRegistration"),
    "other topic": (VALID_UPDATE, "fl.elsewhere", "OTHER", "unexpected topic"),
    "empty model_id": (update_bytes("", "u", delta(0)), UPDATES_TOPIC, "BAD_FIELD", "model_id"),
    "long model_id": (
        update_bytes("m" * 257, "u", delta(0)),
        UPDATES_TOPIC,
        "BAD_FIELD",
        "model_id has 257 bytes",
    ),
}


@pytest.mark.parametrize("case", sorted(UNDELIVERABLE))
def test_route_dead_letters_what_it_cannot_key(case: str) -> None:
    value, topic, reason, detail = UNDELIVERABLE[case]
    source = Envelope(value, topic, 1, 99)
    routed = route(source, UPDATES_TOPIC, CONTROL_TOPIC)
    assert routed.model_id is None and routed.dead is not None
    letter = only_dead([routed.dead], source, reason)
    assert detail in letter["detail"]
    assert letter["model_id"] is None and letter["update_id"] is None


def test_on_update_is_total_even_for_bytes_route_would_have_refused() -> None:
    process = registered()
    for value, reason in ((garbage(), "UNDECODABLE"), (unknown_schema(), "UNKNOWN_SCHEMA")):
        source = envelope(value, offset=5)
        only_dead(process.on_update(source, 0.0), source, reason)


# --------------------------------------------------------------------- update dead letters


def test_update_before_registration_is_unknown_model() -> None:
    process = ModelProcess(BIG, 8)
    source = update("u1", model_id="ghost", offset=12)
    letter = only_dead(process.on_update(source, 0.0), source, "UNKNOWN_MODEL")
    assert (letter["model_id"], letter["update_id"]) == ("ghost", "u1")
    assert "ghost" in letter["detail"]


def _record(**changes: Any) -> bytes:
    record: Any = update_record("m", "bad", delta(0), base_version=2, num_samples=5)
    for key, value in changes.items():
        if key in record["delta"]:
            record["delta"][key] = value
        else:
            record[key] = value
    return encode("GradientUpdate", record)


BAD_UPDATES: dict[str, tuple[bytes, str, str]] = {
    "short delta": (_record(delta=pack(np.zeros(14), "FP32")), "BAD_SHAPE", "[14]"),
    "2-d delta": (_record(delta=pack(np.zeros((3, 5)), "FP32")), "BAD_SHAPE", "[3, 5]"),
    "data of the wrong length": (_record(data=b"\x00" * 8), "BAD_SHAPE", "needs 60 bytes"),
    "float64 dtype": (_record(dtype="float64"), "BAD_DTYPE", "float64"),
    "NaN": (_record(delta=pack(np.full(15, np.nan), "FP32")), "NON_FINITE", "NaN"),
    "inf in fp16": (_record(delta=pack(np.full(15, np.inf), "FP16")), "NON_FINITE", "infinity"),
    "zero samples": (_record(num_samples=0), "BAD_NUM_SAMPLES", "num_samples"),
    "negative samples": (_record(num_samples=-3), "BAD_NUM_SAMPLES", "-3"),
    "future base": (_record(base_version=3), "FUTURE_VERSION", "base_version 3"),
    "bad int8 scale": (_record(delta=pack(delta(0), "INT8"), scale=0.0), "UNDECODABLE", "scale"),
    "max_staleness": (_record(base_version=0), "STALE", "max_staleness 1"),
    "negative base": (_record(base_version=-2), "BAD_FIELD", "base_version -2 is negative"),
    "samples past the limit": (_record(num_samples=2**62), "BAD_NUM_SAMPLES", "limit"),
    "norm past the limit": (_record(delta=pack(delta(0) + 1e6, "FP32")), "BAD_FIELD", "norm"),
    "long device_id": (_record(device_id="d" * 300), "BAD_FIELD", "device_id has 300 bytes"),
    "negative sequence": (_record(sequence=-1), "BAD_FIELD", "sequence -1 is outside"),
    "sequence past the limit": (_record(sequence=10**15 + 1), "BAD_FIELD", "sequence 1000"),
    "sequence without device": (_record(sequence=0, device_id=""), "BAD_FIELD", "device_id"),
    "sequenced max_staleness": (_record(base_version=0, sequence=9), "STALE", "max_staleness 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPDATES))
def test_invalid_update_is_dead_lettered_and_changes_nothing(case: str) -> None:
    process = registered(dedupe_versions=3, window={"count": 1}, max_staleness=1)
    for version in (1, 2):  # advance to version 2
        assert process.on_update(update(f"warm{version}", base=version - 1), 0.0)
    assert process.version == 2
    state_before = process.state_bytes()
    value, reason, detail = BAD_UPDATES[case]
    source = envelope(value, offset=31)
    letter = only_dead(process.on_update(source, 1.0), source, reason)
    assert detail in letter["detail"]
    assert (letter["model_id"], letter["update_id"]) == ("m", "bad")
    assert process.state_bytes() == state_before
    assert ("device-0", "bad") not in process.seen
    # a valid update is still accepted afterwards
    assert only_release(process.on_update(update("good", base=2), 2.0)).version == 3


def test_duplicate_in_the_open_window_is_refused_and_not_counted() -> None:
    process = registered(window={"count": 3})
    first = update("u1", seed=1, offset=0)
    assert process.on_update(first, 0.0) == []
    again = update("u1", seed=1, offset=1)
    letter = only_dead(process.on_update(again, 0.0), again, "DUPLICATE")
    assert letter["update_id"] == "u1"
    # the same id with different content is still a duplicate
    other = update("u1", seed=2, offset=2)
    only_dead(process.on_update(other, 0.0), other, "DUPLICATE")
    assert process.aggregator is not None and process.aggregator.buffer.count == 1


def test_an_update_decoded_by_its_signature_check_is_not_decoded_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The aggregate verifies a joined update itself (`flink_functions.joined_check`) and
    hands on the record that check decoded: the window gets the same release as from
    the bytes, and the bytes are not decoded a second time."""
    sources = [update(f"u{i}", seed=i, offset=i) for i in range(2)]
    from_bytes = registered(window={"count": 2})
    expected = [from_bytes.on_update(source, 0.0) for source in sources]

    def decoded_twice(value: bytes) -> None:
        raise AssertionError("the update was decoded a second time")

    given_records = registered(window={"count": 2})
    records = [decode(source.value).record for source in sources]
    monkeypatch.setattr("fedstream.pipelines.model_process.read_update", decoded_twice)
    got = [given_records.on_update(s, 0.0, r) for s, r in zip(sources, records, strict=True)]
    assert got[0] == expected[0] == []
    assert only_release(got[1]).params().tolist() == only_release(expected[1]).params().tolist()


def test_duplicate_after_the_window_closed_is_refused() -> None:
    process = registered(window={"count": 2})
    process.on_update(update("u1", 1), 0.0)
    assert only_release(process.on_update(update("u2", 2), 0.0)).version == 1
    for offset, uid in enumerate(("u1", "u2")):
        again = update(uid, offset=10 + offset)
        only_dead(process.on_update(again, 0.0), again, "DUPLICATE")
    assert process.aggregator is not None and process.aggregator.buffer.count == 0


def test_duplicate_after_persist_and_restore_is_refused() -> None:
    process = registered(window={"count": 2})
    process.on_update(update("u1", 1), 0.0)
    process.on_update(update("u2", 2), 0.0)  # closes: version 1
    process.on_update(update("u3", 3, base=1), 0.0)  # open window holds u3
    assert isinstance(process.seen, DictSeenIds)
    seen = dict(process.seen.entries)
    state, buffer = process.state_bytes()
    restored = ModelProcess.restore(
        models_topic_max_bytes=BIG,
        dedupe_versions=8,
        registration=process.registration,
        state=state,
        buffer=buffer,
        seen=DictSeenIds(seen),
    )
    assert restored.version == 1
    for uid in ("u1", "u2", "u3"):
        again = update(uid)
        only_dead(restored.on_update(again, 0.0), again, "DUPLICATE")
    release = only_release(restored.on_update(update("u4", 4, base=1), 0.0))
    assert release.lineage["update_ids"] == ["u3", "u4"]


def test_resend_beyond_the_dedupe_horizon_is_stale_not_counted_again() -> None:
    process = registered(dedupe_versions=2, window={"count": 1})
    process.on_update(update("old", 0, base=0), 0.0)
    for version in range(1, 4):
        process.on_update(update(f"u{version}", version, base=version), 0.0)
    assert process.version == 4 and ("device-0", "old") not in process.seen  # pruned
    again = update("old", 0, base=0)
    letter = only_dead(process.on_update(again, 0.0), again, "STALE")
    assert "dedupe horizon" in letter["detail"]


# --------------------------------------------------------------------- windows


def test_count_window_closes_exactly_at_k() -> None:
    K = 4
    process = registered(window={"count": K})
    for i in range(K - 1):
        assert process.on_update(update(f"a{i}", i), float(i)) == []
    assert process.on_timer(1e9) == []  # no time bound: timers never close it
    assert process.deadline() is None
    release = only_release(process.on_update(update("a3", 3), 3.0))
    assert release.version == 1 and release.lineage["num_updates"] == K
    for i in range(K - 1):
        assert process.on_update(update(f"b{i}", 10 + i, base=1), 0.0) == []
    assert only_release(process.on_update(update("b3", 13, base=1), 0.0)).version == 2


def test_time_window_closes_on_the_timer_at_its_deadline_not_before() -> None:
    process = registered(window={"count": None, "seconds": 2.0})
    assert process.deadline() is None and process.on_timer(100.0) == []  # empty: no release
    assert process.on_update(update("u1", 1), 100.0) == []
    assert process.on_update(update("u2", 2), 101.5) == []
    assert process.deadline() == 102.0  # from the FIRST update
    assert process.on_timer(101.999) == []
    release = only_release(process.on_timer(102.0))
    assert release.version == 1 and release.lineage["update_ids"] == ["u1", "u2"]
    assert process.last_fill_seconds == pytest.approx(2.0)
    assert process.deadline() is None and process.on_timer(200.0) == []
    # next window: its own deadline; an update arriving after it closes on arrival
    assert process.on_update(update("u3", 3, base=1), 300.0) == []
    assert process.deadline() == 302.0
    late = only_release(process.on_update(update("u4", 4, base=1), 302.5))
    assert late.lineage["update_ids"] == ["u3", "u4"]


def test_hybrid_window_closes_at_whichever_comes_first() -> None:
    process = registered(window={"count": 3, "seconds": 2.0})
    # count first
    process.on_update(update("c1", 1), 0.0)
    process.on_update(update("c2", 2), 0.1)
    assert process.deadline() == 2.0
    count_first = only_release(process.on_update(update("c3", 3), 0.2))
    assert count_first.lineage["update_ids"] == ["c1", "c2", "c3"]
    assert process.deadline() is None
    assert process.on_timer(2.0) == []  # the stale timer of the closed window does nothing
    # time first
    process.on_update(update("t1", 4, base=1), 10.0)
    process.on_update(update("t2", 5, base=1), 11.0)
    assert process.on_timer(11.9) == []
    time_first = only_release(process.on_timer(12.0))
    assert time_first.lineage["update_ids"] == ["t1", "t2"] and time_first.version == 2


# --------------------------------------------------------------------- lineage, replay


def test_lineage_records_what_each_release_absorbed() -> None:
    job = InMemoryJob(dedupe_versions=8)
    settings = {"window": {"count": 3}, "staleness": {"function": "constant"}}
    job.send(registration_bytes("m", ONNX, settings), CONTROL_TOPIC)
    plan = [("a", 0, 10), ("b", 0, 20), ("c", 0, 30), ("d", 1, 5), ("e", 0, 7), ("f", 1, 1)]
    for i, (uid, base, n) in enumerate(plan):
        job.send(update_bytes("m", uid, delta(i), base_version=base, num_samples=n))
    found = read_releases(job.values("release"))
    assert sorted(found) == [("m", 0), ("m", 1), ("m", 2)]
    one, two = found["m", 1].lineage, found["m", 2].lineage
    assert one["update_ids"] == ["a", "b", "c"] and two["update_ids"] == ["d", "e", "f"]
    assert (one["parent_version"], two["parent_version"]) == (0, 1)
    assert (one["num_updates"], one["num_samples"], two["num_samples"]) == (3, 60, 13)
    assert (one["staleness_min"], one["staleness_max"], one["staleness_mean"]) == (0, 0, 0.0)
    assert (two["staleness_min"], two["staleness_max"]) == (0, 1)
    assert two["staleness_mean"] == pytest.approx(1 / 3)
    assert one["total_weight"] == pytest.approx(3.0)


def test_fedasync_lineage_names_the_previous_release_as_parent() -> None:
    process = registered(mode="fedasync", window={"count": 3})
    outputs: list[Output] = []
    for i in range(3):
        outputs += process.on_update(update(f"u{i}", i), float(i))
    release = only_release(outputs)
    assert release.version == 3  # one version per mixed-in update
    assert release.lineage["parent_version"] == 0  # the release the window started from
    assert release.lineage["staleness_max"] == 2


def test_release_params_equal_an_offline_replay_with_staleness_weights() -> None:
    config = {
        "window": {"count": 3},
        "staleness": {"function": "polynomial", "a": 0.5},
        "weight_by_samples": True,
        "server_optimizer": {"name": "momentum", "learning_rate": 0.5, "momentum": 0.9},
    }
    job = InMemoryJob(dedupe_versions=8)
    job.send(registration_bytes("m", ONNX, config), CONTROL_TOPIC)
    plan = [(0, 10), (0, 20), (0, 5), (1, 8), (0, 8), (1, 3), (0, 4), (2, 9), (1, 1)]
    sent = [Sent(f"u{i}", base, n, delta(i)) for i, (base, n) in enumerate(plan)]
    for uid, base, n, d in sent:
        outputs = job.send(update_bytes("m", uid, d, base_version=base, num_samples=n))
        assert all(o.kind == "release" for o in outputs)
    found = read_releases(job.values("release"))
    expected = replay(config, INITIAL, sent)
    assert sorted(v for _, v in found) == sorted(expected) == [0, 1, 2, 3]
    for version, params in expected.items():
        np.testing.assert_array_equal(found["m", version].params(), params)
    # and an independent check of the weighting in window 2: (1+s)^-1/2 * num_samples,
    # divided by the undiscounted weight sum n_i (normalization COUNT, the default)
    w = np.array([8 * 1.0, 8 * 2**-0.5, 3 * 1.0])
    pseudo = (w[:, None] * np.stack([delta(3), delta(4), delta(5)])).sum(0) / (8 + 8 + 3)
    first = (expected[1] - INITIAL) / 0.5  # momentum buffer after window 1 (it started at 0)
    step = 0.5 * (0.9 * first + pseudo)
    np.testing.assert_allclose(expected[2], expected[1] + step, rtol=1e-5, atol=1e-6)


def test_two_models_are_independent() -> None:
    job = InMemoryJob(dedupe_versions=8)
    job.send(registration_bytes("a", ONNX, {"window": {"count": 2}}), CONTROL_TOPIC)
    job.send(registration_bytes("b", ONNX, {"window": {"count": 3}}), CONTROL_TOPIC)
    for i in range(3):
        # the same update_id for both models is not a duplicate
        job.send(update_bytes("a", f"u{i}", delta(i)))
        job.send(update_bytes("b", f"u{i}", delta(100 + i)))
    assert not job.values("dead_letter")
    found = read_releases(job.values("release"))
    assert sorted(found) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert found["a", 1].lineage["update_ids"] == ["u0", "u1"]
    assert found["b", 1].lineage["update_ids"] == ["u0", "u1", "u2"]
    assert job.process("a").version == 1 and job.process("b").version == 1
    assert job.process("a").aggregator.buffer.count == 1  # type: ignore[union-attr]
    expected_b = INITIAL + np.mean([delta(100), delta(101), delta(102)], axis=0)
    np.testing.assert_allclose(found["b", 1].params(), expected_b, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------- chunking


BIG_ONNX = linear_model(inputs=64, outputs=32, seed=3)  # 2080 parameters, ~8.5 KB


def test_release_is_chunked_to_fit_the_models_topic_and_reassembles() -> None:
    max_bytes = 4096 + 2500
    process = ModelProcess(max_bytes, 8)
    value = registration_bytes("big", BIG_ONNX, {"window": {"count": 2}})
    outputs = process.on_registration(envelope(value, CONTROL_TOPIC))
    assert len(outputs) >= 3 and all(len(o.value) <= max_bytes for o in outputs)
    records = [decode(o.value, expected="ModelRelease").record for o in outputs]
    assert [r["chunk_index"] for r in records] == list(range(len(records)))
    assert {r["chunk_count"] for r in records} == {len(records)}
    # one Kafka key per chunk, so that a compacted topic keeps every chunk of a release
    assert [o.key for o in outputs] == [f"big#{i}".encode() for i in range(len(records))]
    blob = assemble_release(reversed(records))  # any order
    assert blob == assemble_release(records)
    np.testing.assert_array_equal(flat_params(blob), flat_params(BIG_ONNX))
    ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="have chunks"):
        assemble_release(records[:-1])
    # a later release with lineage is chunked the same way
    big_delta = np.ones(2080, np.float32)
    process.on_update(envelope(update_bytes("big", "x", big_delta)), 0.0)
    later = process.on_update(envelope(update_bytes("big", "y", big_delta)), 0.0)
    assert len(later) >= 3 and all(len(o.value) <= max_bytes for o in later)
    release = read_releases(o.value for o in later)["big", 1]
    np.testing.assert_allclose(release.params(), flat_params(BIG_ONNX) + 1, rtol=1e-6)
    assert release.lineage["update_ids"] == ["x", "y"]


def test_chunks_fit_even_with_long_non_ascii_update_ids() -> None:
    max_bytes = 4096 + 8000
    K = 40
    process = ModelProcess(max_bytes, 8)
    process.on_registration(
        envelope(registration_bytes("big", BIG_ONNX, {"window": {"count": K}}), CONTROL_TOPIC)
    )
    outputs: list[Output] = []
    for i in range(K):
        uid = f"{i:02d}" + "\N{SATELLITE}" * 40  # 4 bytes per character in UTF-8
        outputs += process.on_update(envelope(update_bytes("big", uid, np.zeros(2080))), 0.0)
    assert outputs and all(len(o.value) <= max_bytes for o in outputs)
    assert len(read_releases(o.value for o in outputs)["big", 1].lineage["update_ids"]) == K


# --------------------------------------------------------------------- bounded memory


def test_seen_set_is_pruned_to_the_dedupe_horizon() -> None:
    K, D = 3, 2
    process = registered(dedupe_versions=D, window={"count": K})
    assert isinstance(process.seen, DictSeenIds)
    sizes = []
    for i in range(60):
        base = process.version
        process.on_update(update(f"u{i}", i, base=base), 0.0)
        entries = process.seen.entries
        sizes.append(len(entries))
        assert all(v >= process.version - D for v in entries.values())
    assert process.version == 20
    assert max(sizes) <= K * (D + 1)  # bounded by window x horizon, not by 60 updates
    assert ("device-0", "u0") not in process.seen and ("device-0", "u59") in process.seen


# --------------------------------------------------------------------- property


@settings(max_examples=60, deadline=None)
@given(
    K=st.integers(1, 4),
    D=st.integers(1, 4),
    n=st.integers(1, 10),
    order=st.lists(st.integers(0, 9), max_size=30),
    lags=st.lists(st.integers(0, 4), min_size=10, max_size=10),
)
def test_resends_in_any_interleaving_never_double_count(
    K: int, D: int, n: int, order: list[int], lags: list[int]
) -> None:
    config = {"window": {"count": K}, "staleness": {"function": "polynomial", "a": 0.5}}
    job = InMemoryJob(dedupe_versions=D)
    job.send(registration_bytes("m", ONNX, config), CONTROL_TOPIC)
    sent: dict[int, tuple[bytes, int]] = {}
    first: list[Sent] = []
    for i in [i for i in order if i < n] + list(range(n)):  # every update sent at least once
        if i in sent:
            value, base = sent[i]
            lag = job.process("m").version - base
            outputs = job.send(value)
            assert [o.kind for o in outputs] == ["dead_letter"]
            # always remembered within the horizon; beyond it, forgotten ids are stale
            allowed = {"DUPLICATE"} if lag <= D else {"DUPLICATE", "STALE"}
            assert outputs[0].reason in allowed
            continue
        base = max(0, job.process("m").version - min(lags[i], D))
        sent[i] = (update_bytes("m", f"u{i}", delta(i), base_version=base), base)
        assert all(o.kind == "release" for o in job.send(sent[i][0]))
        first.append(Sent(f"u{i}", base, 1, delta(i)))
    found = read_releases(job.values("release"))
    process = job.process("m")
    assert process.aggregator is not None
    counted = Counter(u for r in found.values() for u in r.lineage["update_ids"])
    counted.update(process.aggregator.buffer.lineage().update_ids)
    assert counted == Counter(f"u{i}" for i in range(n))  # each exactly once
    for version, params in replay(config, INITIAL, first).items():
        np.testing.assert_array_equal(found["m", version].params(), params)
