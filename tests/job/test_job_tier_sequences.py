"""Per-device sequence dedupe through the real job (mini-cluster, one run).

The issue it answers: the old dedupe horizon (`runtime.dedupe_versions`, 64) refused
every update staler than 64 versions as STALE, even for a model without `max_staleness`.
Here one device ("busy") drives the model 70 versions ahead, one update per release; then
a slow device's update from version 0 (staleness 70) must be absorbed, its re-send and a
re-send of busy's first update must be refused by sequence, an unsequenced update that
stale still meets the horizon, and a sequence below busy's window (width 8) is
SEQUENCE_TOO_OLD. The job's state runs through Flink keyed state for every record.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fedstream.pipelines.model_process import Envelope
from tests.job.harness import Feed, JobOutput, absorbed, job_config, run_job
from tests.support.onnx_models import linear_model
from tests.support.records import F32, flat_params

pytestmark = [
    pytest.mark.flink,
    pytest.mark.filterwarnings("ignore:.*deprecated - use:DeprecationWarning"),
]

ONNX = linear_model(inputs=4, outputs=3, seed=0)
SIZE = flat_params(ONNX).size
AHEAD = 70  # versions busy drives the model ahead: beyond the old 64-version horizon
WIDTH = 8  # runtime.sequence_window in this run


def delta(seed: int) -> F32:
    return np.random.default_rng(seed).normal(scale=0.01, size=SIZE).astype(np.float32)


def send(feed: Feed, uid: str, device: str, seq: int | None, base: int, seed: int) -> Envelope:
    return feed.update("seq", uid, delta(seed), base_version=base, device_id=device, sequence=seq)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[JobOutput, dict[str, Envelope]]:
    feed = Feed()
    feed.register("seq", ONNX, {"window": {"count": 1}})  # one release per update
    sent = {}
    for i in range(AHEAD):  # update i is based on version i and makes version i + 1
        sent[f"busy{i}"] = send(feed, f"busy{i}", "busy", i, base=i, seed=i)
    sent["slow0"] = send(feed, "slow0", "slow", 0, base=0, seed=100)  # staleness 70
    sent["slow0 again"] = feed.raw(sent["slow0"].value, partition=0)
    # busy's update 65 (staleness 6 now) re-sent under a new id: the sequence decides
    sent["busy65 again"] = send(feed, "busy65-retry", "busy", 65, base=65, seed=65)
    sent["busy0 again"] = feed.raw(sent["busy0"].value, partition=0)  # 0 < 69 - 8
    sent["legacy"] = send(feed, "legacy0", "old", None, base=0, seed=200)  # staleness 71
    config = job_config(
        tmp_path_factory.mktemp("job-tier-seq"), **{"runtime.sequence_window": WIDTH}
    )
    return run_job(feed, config, name="job-tier-sequences"), sent


def test_updates_staler_than_the_old_horizon_are_absorbed_once(
    run: tuple[JobOutput, dict[str, Envelope]],
) -> None:
    output, _ = run
    ids = absorbed(output, "seq")
    assert Counter(ids) == Counter([f"busy{i}" for i in range(AHEAD)] + ["slow0"])
    assert output.versions("seq") == list(range(AHEAD + 2))
    slow = output.releases["seq", AHEAD + 1].lineage
    assert slow["update_ids"] == ["slow0"] and slow["staleness_max"] == AHEAD


def test_resends_are_refused_by_sequence_and_only_unsequenced_ones_go_stale(
    run: tuple[JobOutput, dict[str, Envelope]],
) -> None:
    output, sent = run
    expected = {
        "slow0 again": "DUPLICATE",
        "busy65 again": "DUPLICATE",
        "busy0 again": "SEQUENCE_TOO_OLD",
        "legacy": "STALE",
    }
    for name, reason in expected.items():
        assert output.dead_letter(sent[name])["reason"] == reason, name
    assert len(output.dead_letters) == len(expected)
    assert "dedupe horizon of 64" in output.dead_letter(sent["legacy"])["detail"]
