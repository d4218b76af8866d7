"""Fuzzing through the real job: generated bad records among valid updates (1,500 in
`make test`, 10,000 in `make fuzz`).

One job run in a mini-cluster (the job's exact topology; only the Kafka source and sinks
are replaced) with no restarts allowed, so any exception that escaped a record would fail
the run. Its input: two healthy models' valid updates, interleaved with `tests.support.fuzz`
records (random bytes, truncations, bit flips, which mostly break the device's signature,
boundary values in every numeric field,
very long strings, wrong shapes, dtypes and encodings, unknown models, broken
registrations), plus the crafted poison pills of issue "no input stops the job": two updates
with num_samples near 2**62, a model whose window aggregate overflows, and a registration
past the job's model limit. The reference is the job logic itself run record by record
(`InMemoryJob`): the real job must dead-letter the same records with the same reasons and
release the same parameters, and every release must be finite.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import numpy as np
import pytest

from fedstream.pipelines.device_gate import DeviceGate
from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.model_process import Envelope
from fedstream.schemas import decode
from fedstream.schemas.signing import TrustedKeys
from tests.job.harness import Feed, JobOutput, absorbed, job_config, run_job
from tests.support.devices import DEVICES_TOPIC, device_key_bytes
from tests.support.fuzz import Bad, bad_records
from tests.support.local_job import InMemoryJob
from tests.support.onnx_models import linear_model
from tests.support.records import (
    CONTROL_TOPIC,
    flat_params,
    read_releases,
    registration_bytes,
    update_bytes,
)

pytestmark = [
    pytest.mark.flink,
    pytest.mark.filterwarnings("ignore:.*deprecated - use:DeprecationWarning"),
]

#: FEDSTREAM_FUZZ_COUNT: records per run; `make fuzz` runs the 10,000-record campaign
BAD_COUNT = int(os.environ.get("FEDSTREAM_FUZZ_COUNT", "1500"))
ONNX = linear_model(4, 3, seed=3)
SIZE = flat_params(ONNX).size
MAX_MODELS = 4
AGGREGATION: dict[str, dict[str, Any]] = {
    "a": {"window": {"count": 5}},
    "b": {"window": {"count": 4}, "server_optimizer": {"name": "adam", "learning_rate": 0.05}},
    "victim": {"window": {"count": 2}, "weight_by_samples": True},
    "blowup": {"window": {"count": 2}, "server_optimizer": {"name": "sgd", "learning_rate": 1e38}},
}


def plan() -> tuple[list[tuple[bytes, str]], list[Bad], set[int]]:
    """The input, in order (value, topic); the bad records; positions that must die."""
    rng = np.random.default_rng(2026)
    records: list[tuple[bytes, str]] = [(device_key_bytes("device-0"), DEVICES_TOPIC)]
    records += [(registration_bytes(m, ONNX, agg), CONTROL_TOPIC) for m, agg in AGGREGATION.items()]
    records.append((registration_bytes("one-too-many", ONNX), CONTROL_TOPIC))
    bad = list(bad_records(rng, ["a", "b"], SIZE, ONNX, BAD_COUNT))
    # registrations first: they reach the models through the registry, not in line
    registrations = [b for b in bad if b.topic == CONTROL_TOPIC]
    updates = [b for b in bad if b.topic != CONTROL_TOPIC]
    must_die = set()
    for b in registrations:
        if b.must_die:
            must_die.add(len(records))
        records.append((b.value, b.topic))
    poison = [
        update_bytes("victim", f"huge{i}", np.ones(SIZE, np.float32), num_samples=2**62 + i)
        for i in range(2)
    ] + [update_bytes("blowup", f"over{i}", np.full(SIZE, 50.0, np.float32)) for i in range(2)]
    for i, b in enumerate(updates):
        # one valid update per 20 bad ones: bit flips no longer yield valid updates (the
        # signature breaks), so the healthy models' windows fill from these alone
        if i % 20 == 0:
            model = "ab"[(i // 20) % 2]
            delta = rng.standard_normal(SIZE).astype(np.float32) * 0.1
            records.append((update_bytes(model, f"ok-{i}", delta, base_version=0), "fl.updates"))
        if i % (len(updates) // 5) == 0 and poison:
            records.append((poison.pop(0), "fl.updates"))
        if b.must_die:
            must_die.add(len(records))
        records.append((b.value, b.topic))
    return records, bad, must_die


@pytest.fixture(scope="module")
def fuzzed(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[JobOutput, InMemoryJob, list[Envelope], set[int]]:
    records, _, must_die = plan()
    limits = InputLimits(max_models=MAX_MODELS)
    # no grace: an update whose device id a flip changed is refused at once, as by the
    # reference (a bounded job run ends before a grace timer could fire)
    config = job_config(
        tmp_path_factory.mktemp("job-tier-fuzz"),
        **{"limits.max_models": MAX_MODELS, "trust.registration_grace_ms": 0},
    )
    feed = Feed(partitions=1)
    envelopes = [feed.raw(value, topic) for value, topic in records]
    reference = InMemoryJob(
        limits=limits,
        dlq_max_bytes=config.topics.dlq_max_message_bytes - 1024,
        owner_keys=TrustedKeys.from_files(*config.trust.owner_key_paths() or []),
        gate=DeviceGate(
            grace_seconds=0.0, dlq_max_bytes=config.topics.dlq_max_message_bytes - 1024
        ),
    )
    for value, topic in records:
        reference.send(value, topic)
    output = run_job(
        feed,
        config,
        name="job-tier-fuzz",
        bundle_size=int(os.environ.get("FEDSTREAM_FUZZ_BUNDLE", "200")),
    )
    return output, reference, envelopes, must_die


def test_every_bad_record_is_dead_lettered_with_the_reference_reason(
    fuzzed: tuple[JobOutput, InMemoryJob, list[Envelope], set[int]],
) -> None:
    output, reference, envelopes, must_die = fuzzed
    assert len(must_die) > 0.8 * BAD_COUNT

    def by_source(letters: list[Any]) -> Counter[tuple[str, int, int, str]]:
        return Counter(
            (d["source_topic"], d["source_partition"], d["source_offset"], d["reason"])
            for d in letters
        )

    expected = [decode(v).record for v in reference.values("dead_letter")]
    assert by_source(output.dead_letters) == by_source(expected)
    dead_at = {(d["source_topic"], d["source_offset"]) for d in output.dead_letters}
    for position in must_die:
        assert (envelopes[position].topic, envelopes[position].offset) in dead_at
    reasons = Counter(d["reason"] for d in output.dead_letters)
    for reason in (
        "UNDECODABLE",
        "BAD_FIELD",
        "BAD_NUM_SAMPLES",
        "UNKNOWN_MODEL",
        "BAD_SHAPE",
        "NON_FINITE",
        "BAD_REGISTRATION",
        "MODEL_LIMIT",
        "NON_FINITE_AGGREGATE",
        "UNAUTHENTICATED",  # a bit flip in a signed update or registration
    ):
        assert reasons[reason] > 0, reason
    assert reasons["INTERNAL"] == 0


def test_valid_updates_are_absorbed_once_and_every_release_is_finite(
    fuzzed: tuple[JobOutput, InMemoryJob, list[Envelope], set[int]],
) -> None:
    output, reference, _, _ = fuzzed
    expected = read_releases(reference.values("release"))
    assert sorted(output.releases) == sorted(expected)
    for key, release in output.releases.items():
        params = flat_params(release.onnx)
        assert np.isfinite(params).all(), key
        np.testing.assert_array_equal(params, flat_params(expected[key].onnx))
    for model in ("a", "b", "victim"):
        ids = absorbed(output, model)
        assert len(ids) == len(set(ids))
        assert output.versions(model) == list(range(len(output.versions(model))))
    assert len(output.versions("a")) > 5 and len(output.versions("b")) > 5
    assert output.versions("blowup") == [0]  # its only window was not finite: never released
