"""The real PyFlink job (topology + keyed state + timers) in a mini-cluster, one run.

One job run (module-scoped, parallelism 1) carries several models, each exercising one
scenario; the tests below assert on the shared output:

- "count":  count window K = 3;
- "time":   time window T = 1 s, closed by the processing-time timer while input pauses;
- "hybrid": K = 3 or T = 1 s, one window closed by count and the next by time;
- "stale":  polynomial staleness weights x samples with a momentum server optimizer,
            updates from several base versions, then a stale and a future update;
- "dlq":    a representative set of bad input (and a few bad inputs for no model at all);
- "fedasync": the paper's FedAsync (mix with the base version's parameters, kept in the
            model's keyed state for max_staleness versions), updates up to 2 versions stale;
- "adaptive": FedBuff with K normalisation and a window that follows the concurrency.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedstream.edge import InvalidSignatureError, ReleaseAssembler
from fedstream.pipelines.model_process import Envelope
from fedstream.schemas import decode, encode, pack
from fedstream.schemas.signing import TrustedKeys, load_signing_key, write_key_pair
from tests.job.harness import (
    Feed,
    JobOutput,
    absorbed,
    coordinates,
    job_config,
    run_job,
)
from tests.support.devices import signed_bytes
from tests.support.job_runner import job_signing_key
from tests.support.onnx_models import linear_model
from tests.support.records import (
    CONTROL_TOPIC,
    F32,
    flat_params,
    garbage,
    registration_bytes,
    unknown_schema,
    update_bytes,
    update_record,
)
from tests.support.replay import Sent, replay

pytestmark = [
    pytest.mark.flink,
    # apache-beam's httplib2 import, not ours
    pytest.mark.filterwarnings("ignore:.*deprecated - use:DeprecationWarning"),
]

ONNX = linear_model(inputs=4, outputs=3, seed=0)
INITIAL = flat_params(ONNX)
SIZE = INITIAL.size
#: pause between phases: > the 1 s time windows, with margin for a loaded machine
PAUSE = 2.5

AGGREGATION: dict[str, dict[str, Any]] = {
    "count": {"window": {"count": 3}},
    "time": {"window": {"count": None, "seconds": 1.0}, "staleness": {"function": "constant"}},
    "hybrid": {"window": {"count": 3, "seconds": 1.0}, "staleness": {"function": "constant"}},
    "stale": {
        "window": {"count": 2},
        "staleness": {"function": "polynomial", "a": 0.5},
        "weight_by_samples": True,
        "max_staleness": 2,
        "server_optimizer": {"name": "momentum", "learning_rate": 0.5, "momentum": 0.9},
    },
    "dlq": {"window": {"count": 2}},
    "fedasync": {
        "mode": "fedasync",
        "fedasync_rule": "mix_with_base",
        "max_staleness": 2,
        "window": {"count": 1},
        "fedasync_mixing": 0.6,
    },
    "adaptive": {
        "window": {"count": 2, "seconds": 3600.0, "adaptive": True},
        "normalization": "count",
    },
}
#: (update id, base version) for the issue-15 models, in order
FEDASYNC_UPDATES = [("f0", 0), ("f1", 0), ("f2", 0), ("f3", 1), ("f4", 3)]
ADAPTIVE_UPDATES = [("a0", 0), ("a1", 0), ("a2", 0), ("a3", 1), ("a4", 1), ("a5", 3)]


def delta(seed: int) -> F32:
    return np.random.default_rng(seed).standard_normal(SIZE).astype(np.float32)


@dataclass
class Plan:
    """The input of the run and what it must produce."""

    feed: Feed = field(default_factory=lambda: Feed(partitions=3))
    accepted: dict[str, list[Sent]] = field(default_factory=dict)
    rejected: dict[Envelope, str] = field(default_factory=dict)
    _seed: int = 0

    def accept(self, model: str, uid: str, base: int = 0, n: int = 1) -> Envelope:
        self._seed += 1
        sent = Sent(uid, base, n, delta(self._seed))
        self.accepted.setdefault(model, []).append(sent)
        return self.feed.update(model, uid, sent.delta, base_version=base, num_samples=n)

    def resend(self, model: str, uid: str, reason: str = "DUPLICATE") -> Envelope:
        sent = next(s for s in self.accepted[model] if s.update_id == uid)
        source = self.feed.update(model, uid, sent.delta, base_version=sent.base_version)
        self.rejected[source] = reason
        return source

    def reject(self, source: Envelope, reason: str) -> Envelope:
        self.rejected[source] = reason
        return source


def bad_update(**changes: Any) -> bytes:
    record: Any = update_record("dlq", "bad", delta(0))
    for key, value in changes.items():
        (record["delta"] if key in record["delta"] else record)[key] = value
    return signed_bytes(record)  # authentic: the job must find what else is wrong


def tampered(value: bytes, **changes: Any) -> bytes:
    """A signed update with fields changed after signing (the signature kept)."""
    record: Any = decode(value).record
    record.update(changes)
    return encode("GradientUpdate", record)


def plan_unauthenticated(p: Plan, dlq: int) -> None:
    """Updates the device gate must refuse, for a model they would otherwise change."""
    feed = p.feed
    feed.device("revoked-dev")
    feed.device("revoked-dev", status="REVOKED")
    feed.device("other-dev")
    for value in (
        update_bytes("dlq", "r0", delta(4), device_id="revoked-dev"),  # revoked key
        update_bytes("dlq", "u0", delta(4), sign=False),  # unsigned
        tampered(update_bytes("dlq", "n0", delta(4)), num_samples=1000),  # changed after signing
        tampered(update_bytes("dlq", "i0", delta(4)), device_id="other-dev"),  # impersonation
        update_bytes("dlq", "x0", delta(4), device_id="stranger"),  # never registered
    ):
        p.reject(feed.raw(value, partition=dlq), "UNAUTHENTICATED")


def plan_header_damage(p: Plan, dlq: int) -> None:
    """Updates whose first fields (what the JVM's pre-route reads to key an update) are
    damaged or out of bounds: each must reach the Python route and its exact dead letter,
    never a model or a crash."""
    good = update_bytes("dlq", "hx", delta(5))
    at = good.index(b"\x06dlq")  # the model id: Avro length 3 (zig-zag 6), then UTF-8
    cases = {
        good[:at] + b"\x06\xffl\xfe" + good[at + 4 :]: "UNDECODABLE",  # not UTF-8
        good[:at] + b"\x01" + good[at + 1 :]: "UNDECODABLE",  # negative length
        good[:at] + b"\x80" * 11: "UNDECODABLE",  # a varint that never ends
        good[: at + 2]: "UNDECODABLE",  # truncated inside the model id
        update_bytes("", "he", delta(5)): "BAD_FIELD",  # empty model id
        update_bytes("dlq", "hd", delta(5), device_id="d" * 257): "BAD_FIELD",  # too long
    }
    for value, reason in cases.items():
        p.reject(p.feed.raw(value, partition=dlq), reason)


def plan() -> Plan:
    p = Plan()
    feed = p.feed
    for model, aggregation in AGGREGATION.items():
        feed.register(model, ONNX, aggregation)
    # -- phase 1 ----------------------------------------------------------------------
    for i in range(3):
        p.accept("count", f"c{i}")  # -> v1
    p.accept("count", "c3", base=1)
    p.accept("count", "c4", base=0)
    p.accept("count", "c5", base=1)  # -> v2
    p.accept("count", "c6", base=2)  # stays in the open window
    p.accept("time", "t0")
    p.accept("time", "t1")  # -> v1 when the timer fires during the pause
    for i in range(4):
        p.accept("hybrid", f"h{i}")  # h0..h2 -> v1 by count; h3 -> v2 by time
    for uid, base, n in [("s0", 0, 10), ("s1", 0, 30), ("s2", 1, 5), ("s3", 0, 20)]:
        p.accept("stale", uid, base, n)  # -> v1, v2
    p.accept("stale", "s4", 0, 7)  # staleness 2
    for model, updates in (("fedasync", FEDASYNC_UPDATES), ("adaptive", ADAPTIVE_UPDATES)):
        for uid, base in updates:
            p.accept(model, uid, base)
    p.accept("stale", "s5", 2, 1)  # -> v3
    p.reject(feed.update("stale", "s6", delta(6), base_version=0), "STALE")  # 3 > max 2
    p.reject(feed.update("stale", "s7", delta(7), base_version=9), "FUTURE_VERSION")
    dlq = feed.partition_of("dlq")
    p.reject(feed.raw(garbage(), partition=dlq), "UNDECODABLE")
    p.reject(feed.raw(update_bytes("dlq", "x", delta(1))[:-9], partition=dlq), "UNDECODABLE")
    plan_header_damage(p, dlq)
    p.reject(feed.raw(unknown_schema(), partition=dlq), "UNKNOWN_SCHEMA")
    p.reject(feed.raw(registration_bytes("other", ONNX), partition=dlq), "WRONG_RECORD_TYPE")
    p.reject(feed.raw(update_bytes("dlq", "y", delta(2)), CONTROL_TOPIC, dlq), "WRONG_RECORD_TYPE")
    p.reject(feed.update("ghost", "g", delta(3)), "UNKNOWN_MODEL")
    p.reject(
        feed.raw(bad_update(delta=pack(np.zeros(SIZE - 1), "FP32")), partition=dlq), "BAD_SHAPE"
    )
    p.reject(feed.raw(bad_update(dtype="float64"), partition=dlq), "BAD_DTYPE")
    p.reject(
        feed.raw(bad_update(delta=pack(np.full(SIZE, np.nan), "FP32")), partition=dlq), "NON_FINITE"
    )
    p.reject(feed.raw(bad_update(num_samples=0), partition=dlq), "BAD_NUM_SAMPLES")
    plan_unauthenticated(p, dlq)
    p.accept("dlq", "d0")
    p.resend("dlq", "d0")  # duplicate inside the open window
    p.accept("dlq", "d1")  # -> v1
    bad_onnx = registration_bytes("badreg", ONNX, replace={"onnx_template": b"not onnx"})
    p.reject(feed.raw(bad_onnx, CONTROL_TOPIC, feed.partition_of("badreg")), "BAD_REGISTRATION")
    again = registration_bytes("dlq", ONNX, {"window": {"count": 5}})
    p.reject(feed.raw(again, CONTROL_TOPIC, dlq), "BAD_REGISTRATION")
    feed.register("dlq", ONNX, AGGREGATION["dlq"])  # the same bytes again: ignored
    feed.sleep(PAUSE)
    # -- phase 2 ----------------------------------------------------------------------
    p.accept("time", "t2", base=1)  # -> v2 during the second pause
    p.resend("dlq", "d0")  # duplicate of an update already released in v1
    p.resend("count", "c1")
    p.accept("dlq", "d2", base=1)  # stays in the open window
    feed.sleep(PAUSE)
    return p


@pytest.fixture(scope="module")
def scenario() -> Plan:
    return plan()


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("job-tier")


@pytest.fixture(scope="module")
def output(scenario: Plan, job_dir: Path) -> JobOutput:
    # an unregistered device's update waits 1 s for its key, less than a PAUSE
    config = job_config(job_dir, **{"trust.registration_grace_ms": 1000})
    return run_job(scenario.feed, config, name="job-tier-scenarios")


def mean_of(sent: list[Sent]) -> F32:
    mean: F32 = np.mean([s.delta for s in sent], axis=0, dtype=np.float64).astype(np.float32)
    return mean


# ------------------------------------------------------------------------------ tests


def test_every_registered_model_released_version_0(output: JobOutput) -> None:
    for model in AGGREGATION:
        release = output.releases[model, 0]
        np.testing.assert_array_equal(release.params(), INITIAL)
        assert release.lineage["parent_version"] is None
    assert not output.versions("badreg") and not output.versions("ghost")


def test_exactly_the_expected_releases(scenario: Plan, output: JobOutput) -> None:
    expected = {"count": 2, "time": 2, "hybrid": 2, "stale": 3, "dlq": 1}
    expected |= {"fedasync": 5, "adaptive": len(_adaptive_reference(scenario)) - 1}
    assert sorted(output.releases) == sorted(
        (model, v) for model, last in expected.items() for v in range(last + 1)
    )
    for (_, version), release in output.releases.items():
        if version:
            assert release.lineage["parent_version"] == version - 1


def test_count_window(scenario: Plan, output: JobOutput) -> None:
    ids = [r.lineage["update_ids"] for v, r in sorted(_of(output, "count").items()) if v]
    assert ids == [["c0", "c1", "c2"], ["c3", "c4", "c5"]]  # c6 waits in the open window
    expected = replay(AGGREGATION["count"], INITIAL, scenario.accepted["count"])
    assert sorted(expected) == [0, 1, 2]
    for version, params in expected.items():
        np.testing.assert_allclose(output.releases["count", version].params(), params, atol=1e-6)


def test_time_window_closes_on_its_timer(scenario: Plan, output: JobOutput) -> None:
    one, two = output.releases["time", 1], output.releases["time", 2]
    assert one.lineage["update_ids"] == ["t0", "t1"]  # not closed before t1 arrived
    assert two.lineage["update_ids"] == ["t2"]
    expected = replay(AGGREGATION["time"], INITIAL, scenario.accepted["time"], close_after={1, 2})
    for version, params in expected.items():
        np.testing.assert_allclose(output.releases["time", version].params(), params, atol=1e-6)


def test_hybrid_window_closes_by_count_or_by_time(scenario: Plan, output: JobOutput) -> None:
    by_count, by_time = output.releases["hybrid", 1], output.releases["hybrid", 2]
    assert by_count.lineage["update_ids"] == ["h0", "h1", "h2"]
    assert by_time.lineage["update_ids"] == ["h3"]  # one update, closed by the timer
    expected = replay(AGGREGATION["hybrid"], INITIAL, scenario.accepted["hybrid"], close_after={3})
    assert sorted(expected) == [0, 1, 2]
    for version, params in expected.items():
        np.testing.assert_allclose(output.releases["hybrid", version].params(), params, atol=1e-6)
    # and by hand: the mean of h0..h2, then h3 alone
    h = scenario.accepted["hybrid"]
    np.testing.assert_allclose(by_count.params(), INITIAL + mean_of(h[:3]), atol=1e-6)
    np.testing.assert_allclose(by_time.params(), by_count.params() + h[3].delta, atol=1e-6)


def test_staleness_weighting_matches_an_offline_replay(scenario: Plan, output: JobOutput) -> None:
    sent = scenario.accepted["stale"]
    expected = replay(AGGREGATION["stale"], INITIAL, sent)
    assert sorted(expected) == output.versions("stale") == [0, 1, 2, 3]
    for version, params in expected.items():
        np.testing.assert_allclose(
            output.releases["stale", version].params(), params, rtol=1e-6, atol=1e-6
        )
    lineage = [output.releases["stale", v].lineage for v in (1, 2, 3)]
    assert [(x["staleness_min"], x["staleness_max"]) for x in lineage] == [(0, 0), (0, 1), (0, 2)]
    assert [x["num_samples"] for x in lineage] == [40, 25, 8]
    # weights (1 + s)^-0.5 * num_samples: v2 absorbed s2 (s = 0, n = 5), s3 (s = 1, n = 20)
    assert lineage[1]["total_weight"] == pytest.approx(5 + 20 / np.sqrt(2))


def _adaptive_reference(scenario: Plan) -> dict[int, F32]:
    return replay(AGGREGATION["adaptive"], INITIAL, scenario.accepted["adaptive"])


def test_fedasync_mixes_with_the_base_version_kept_in_keyed_state(
    scenario: Plan, output: JobOutput
) -> None:
    sent = scenario.accepted["fedasync"]
    expected = replay(AGGREGATION["fedasync"], INITIAL, sent)
    assert sorted(expected) == output.versions("fedasync") == [0, 1, 2, 3, 4, 5]
    for version, params in expected.items():
        np.testing.assert_allclose(
            output.releases["fedasync", version].params(), params, rtol=1e-6, atol=1e-6
        )
    # by hand for f2 (base 0, staleness 2): x3 = 0.4 x2 + 0.6 (1 + 2)^-0.5 ... mixed with x0
    alpha = 0.6 * 3**-0.5
    x2 = output.releases["fedasync", 2].params()
    by_hand = (1 - alpha) * x2 + alpha * (INITIAL + sent[2].delta)
    np.testing.assert_allclose(output.releases["fedasync", 3].params(), by_hand, atol=1e-6)


def test_adaptive_window_with_count_normalisation_matches_the_core(
    scenario: Plan, output: JobOutput
) -> None:
    expected = _adaptive_reference(scenario)
    assert sorted(expected) == output.versions("adaptive")
    for version, params in expected.items():
        np.testing.assert_allclose(
            output.releases["adaptive", version].params(), params, rtol=1e-6, atol=1e-6
        )
    sizes = [len(output.releases["adaptive", v].lineage["update_ids"]) for v in expected if v]
    assert sizes[0] == 2 and sizes[1:] != [2] * (len(sizes) - 1)  # K moved off its start


def test_stale_and_future_updates_are_refused(scenario: Plan, output: JobOutput) -> None:
    for source, reason in scenario.rejected.items():
        if reason in ("STALE", "FUTURE_VERSION"):
            letter = output.dead_letter(source)
            assert letter["reason"] == reason and letter["model_id"] == "stale"
    assert "s6" not in absorbed(output, "stale") and "s7" not in absorbed(output, "stale")


def test_dead_letters_carry_reason_original_and_coordinates(
    scenario: Plan, output: JobOutput
) -> None:
    for source, reason in scenario.rejected.items():
        letter = output.dead_letter(source)  # checks the original bytes too
        assert letter["reason"] == reason, (source.topic, source.offset, letter["detail"])
        assert letter["detail"]
    assert Counter(d["reason"] for d in output.dead_letters) == Counter(scenario.rejected.values())
    found = {
        (d["source_topic"], d["source_partition"], d["source_offset"]) for d in output.dead_letters
    }
    assert found == coordinates(scenario.rejected)  # nothing else was dead-lettered


def test_unauthenticated_updates_never_reach_a_model(scenario: Plan, output: JobOutput) -> None:
    """Unsigned, revoked, unregistered, tampered or impersonating updates are refused by the
    gate with the claimed device in the detail and no key material; the model they were
    for released exactly what its authentic updates make."""
    refused = [d for d in output.dead_letters if d["reason"] == "UNAUTHENTICATED"]
    assert sorted(d["update_id"] or "" for d in refused) == ["i0", "n0", "r0", "u0", "x0"]
    details = {d["update_id"]: d["detail"] for d in refused}
    assert "'revoked-dev'" in details["r0"] and "revoked" in details["r0"]
    assert "not signed" in details["u0"] and "not registered" in details["x0"]
    assert "does not verify" in details["n0"]
    assert "is not the registered key of device 'other-dev'" in details["i0"]
    assert all(d["model_id"] == "dlq" for d in refused)
    assert absorbed(output, "dlq") == ["d0", "d1"]


def test_lineage_lists_the_verified_device_of_every_update(output: JobOutput) -> None:
    for (_, version), release in output.releases.items():
        lineage = release.lineage
        assert lineage["device_ids"] == ["device-0"] * len(lineage["update_ids"]), version


def test_duplicates_are_never_counted_twice(scenario: Plan, output: JobOutput) -> None:
    for model, sent in scenario.accepted.items():
        ids = absorbed(output, model)
        assert len(ids) == len(set(ids)), model
        assert set(ids) <= {s.update_id for s in sent}
    assert absorbed(output, "dlq") == ["d0", "d1"]  # d2 still open
    duplicates = [d for d in output.dead_letters if d["reason"] == "DUPLICATE"]
    assert sorted(d["update_id"] or "" for d in duplicates) == ["c1", "d0", "d0"]


def test_every_release_is_signed_by_the_configured_key(output: JobOutput, job_dir: Path) -> None:
    """The job signs each release with signing.key_file (loaded on the worker, in thread
    mode too); the SDK's reader installs every version when it trusts that key's public
    half, and refuses every one under another key."""
    key_id = load_signing_key(job_signing_key(job_dir)).key_id
    assert {r.key_id for r in output.releases.values()} == {key_id}
    trusted = TrustedKeys.from_files(job_signing_key(job_dir).with_suffix(".pub"))
    for model in AGGREGATION:
        device = ReleaseAssembler(model, trusted)
        for value in output.release_values:
            device.add(value)
        assert [r.version for r in device.take()] == output.versions(model)
    _private, other, _ = write_key_pair(job_dir / "other")
    stranger = ReleaseAssembler("count", TrustedKeys.from_files(other))
    for value in output.release_values:
        stranger.add(value)
    with pytest.raises(InvalidSignatureError, match="unknown key"):
        stranger.take()


def test_the_run_stays_short(output: JobOutput) -> None:
    assert output.seconds < 90, output.seconds


def _of(output: JobOutput, model: str) -> dict[int, Any]:
    return {v: output.releases[model, v] for v in output.versions(model)}
