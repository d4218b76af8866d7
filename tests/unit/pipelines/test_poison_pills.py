"""No record, however crafted, stops the job or harms another model (job logic, no Flink).

Each test drives `InMemoryJob` (the job's per-record logic with state persisted to bytes
after every record, plus the registry and `contain`, as the Flink shell runs them) with a
crafted input next to a healthy model, and checks: the crafted record is dead-lettered
with its reason, the model it targets keeps the state it had, and the healthy model goes
on releasing. The same records go through the real job in tests/job/test_job_tier_poison.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import fedstream.pipelines.model_process as model_process
import fedstream.pipelines.update_intake as update_intake
from fedstream.pipelines.limits import InputLimits
from fedstream.schemas import decode, encode
from tests.support.local_job import InMemoryJob
from tests.support.onnx_models import linear_model
from tests.support.records import (
    CONTROL_TOPIC,
    F32,
    read_dead_letters,
    registration_bytes,
    update_bytes,
    update_record,
)

ONNX = linear_model(inputs=4, outputs=3, seed=0)  # 15 parameters
SIZE = 15


def delta(seed: int, scale: float = 1.0) -> F32:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(SIZE) * scale).astype(np.float32)


def job_with(*models: str, limits: InputLimits | None = None, **aggregation: Any) -> InMemoryJob:
    job = InMemoryJob(limits=limits or InputLimits())
    for model_id in models:
        job.send(registration_bytes(model_id, ONNX, aggregation), CONTROL_TOPIC)
    return job


def reasons(job: InMemoryJob) -> list[str]:
    return [d["reason"] for d in read_dead_letters(job.values("dead_letter"))]


def healthy_model_still_releases(job: InMemoryJob, model_id: str = "healthy") -> None:
    before = job.process(model_id).version
    for i in range(2):
        job.send(update_bytes(model_id, f"h-{before}-{i}", delta(i), base_version=before))
    assert job.process(model_id).version == before + 1


def test_two_updates_with_huge_sample_counts_are_refused_not_fatal() -> None:
    """The reproducer: num_samples near 2**62 twice made the release's sum overflow."""
    job = job_with("victim", "healthy", window={"count": 2}, weight_by_samples=True)
    state = job.process("victim").state_bytes()
    for i in range(2):
        job.send(update_bytes("victim", f"big{i}", delta(i), num_samples=2**62 - i))
    assert reasons(job) == ["BAD_NUM_SAMPLES", "BAD_NUM_SAMPLES"]
    assert job.process("victim").state_bytes() == state
    healthy_model_still_releases(job)
    healthy_model_still_releases(job, "victim")


def test_a_non_finite_aggregate_is_never_released_and_its_window_is_dead_lettered() -> None:
    # Finite deltas within the limits, but a server learning rate that overflows float32.
    job = job_with(
        "blowup",
        "healthy",
        window={"count": 2},
        server_optimizer={"name": "sgd", "learning_rate": 1e38},
    )
    state = job.process("blowup").state_bytes()
    releases = len(job.values("release"))
    job.send(update_bytes("blowup", "first", delta(1, 100.0)))
    job.send(update_bytes("blowup", "second", delta(2, 100.0)))
    assert len(job.values("release")) == releases  # nothing released
    letters = read_dead_letters(job.values("dead_letter"))
    assert {(d["update_id"], d["reason"]) for d in letters} == {
        ("first", "NON_FINITE_AGGREGATE"),
        ("second", "NON_FINITE_AGGREGATE"),
    }
    assert all(d["model_id"] == "blowup" for d in letters)
    process = job.process("blowup")
    assert process.state_bytes()[0] == state[0]  # the model kept its parameters
    assert process.aggregator is not None and process.aggregator.buffer.count == 0
    healthy_model_still_releases(job)


def test_an_unexpected_error_is_contained_to_its_record_and_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any exception in one record's processing (here: the tensor decoder, made to fail
    for one model) becomes an INTERNAL dead letter; the model keeps its state."""
    job = job_with("victim", "healthy", window={"count": 2})
    job.send(update_bytes("victim", "before", delta(0)))
    state = job.process("victim").state_bytes()
    real_unpack = update_intake.unpack  # type: ignore[attr-defined]

    def failing_unpack(payload: Any, **kwargs: Any) -> Any:
        if len(payload["data"]) == 4 * SIZE and payload["data"] == delta(7).tobytes():
            raise RuntimeError("decoder bug")
        return real_unpack(payload, **kwargs)

    monkeypatch.setattr(update_intake, "unpack", failing_unpack)
    crafted = update_bytes("victim", "crafted", delta(7))
    job.send(crafted)
    (letter,) = read_dead_letters(job.values("dead_letter"))
    assert (letter["reason"], letter["model_id"], letter["original"]) == (
        "INTERNAL",
        "victim",
        crafted,
    )
    assert "RuntimeError: decoder bug" in letter["detail"]
    assert job.process("victim").state_bytes() == state
    assert "crafted" not in job.stores["victim"].seen
    healthy_model_still_releases(job)
    job.send(update_bytes("victim", "after", delta(1)))  # the victim's window goes on
    assert job.process("victim").version == 1


def test_a_failing_release_discards_the_window_and_the_model_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = job_with("victim", "healthy", window={"count": 2})
    job.send(update_bytes("victim", "a", delta(0)))
    real_release = model_process.ModelProcess._release

    def failing_release(self: model_process.ModelProcess, *args: Any, **kw: Any) -> Any:
        if self.model_id == "victim":
            raise OSError("disk full")
        return real_release(self, *args, **kw)

    monkeypatch.setattr(model_process.ModelProcess, "_release", failing_release)
    job.send(update_bytes("victim", "b", delta(1)))
    letters = read_dead_letters(job.values("dead_letter"))
    assert {(d["update_id"], d["reason"]) for d in letters} == {
        ("a", "INTERNAL"),
        ("b", "INTERNAL"),
    }
    assert all("OSError: disk full" in d["detail"] for d in letters)
    assert job.process("victim").version == 0
    healthy_model_still_releases(job)
    monkeypatch.setattr(model_process.ModelProcess, "_release", real_release)
    healthy_model_still_releases(job, "victim")


def test_models_past_the_limit_are_refused() -> None:
    job = job_with("m0", "m1", limits=InputLimits(max_models=2))
    job.send(registration_bytes("m2", ONNX), CONTROL_TOPIC)
    (letter,) = read_dead_letters(job.values("dead_letter"))
    assert (letter["reason"], letter["model_id"]) == ("MODEL_LIMIT", "m2")
    job.send(registration_bytes("m0", ONNX), CONTROL_TOPIC)  # a re-send: no new slot, no letter
    job.send(b"\xc3\x01 not a registration", CONTROL_TOPIC)  # invalid: takes no slot
    assert reasons(job) == ["MODEL_LIMIT", "UNKNOWN_SCHEMA"]
    assert job.registered == {"m0", "m1"}


def test_every_window_closes_at_the_window_limit() -> None:
    """A time window collects until its deadline; the limit closes it first."""
    job = job_with(
        "m", limits=InputLimits(max_window_updates=3), window={"count": None, "seconds": 60}
    )
    for i in range(3):
        job.send(update_bytes("m", f"u{i}", delta(i)))
    assert job.process("m").version == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"update_id": "u" * 100_000}, "BAD_FIELD"),
        ({"device_id": "é" * 200}, "BAD_FIELD"),
        ({"base_version": -(2**63)}, "BAD_FIELD"),
        ({"num_samples": 2**63 - 1}, "BAD_NUM_SAMPLES"),
        ({"model_id": "m" * 10_000}, "BAD_FIELD"),
    ],
)
def test_out_of_bound_fields_are_dead_lettered_within_the_dlq_limit(
    change: dict[str, Any], reason: str
) -> None:
    job = job_with("m")
    job.dlq_max_bytes = 64 * 1024
    record: dict[str, Any] = dict(update_record("m", "u", delta(0)))
    record.update(change)
    job.send(encode("GradientUpdate", record))
    letters = job.values("dead_letter")
    assert [decode(v).record["reason"] for v in letters] == [reason]
    assert all(len(v) <= 64 * 1024 for v in letters)
    # the letter names its model whenever the model id itself is within bounds
    named = None if "model_id" in change else "m"
    assert [decode(v).record["model_id"] for v in letters] == [named]
