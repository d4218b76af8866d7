"""Two models at parallelism 2: keyed state, timers and dedupe per model, side by side.

Each model's records come in on its own partition (as with Kafka, keyed by model_id), so
both pacing subtasks, both route subtasks and the keyed aggregation work concurrently.
Each model has its own window kind; the releases must equal an offline replay per model,
whatever the interleaving between them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.job.harness import Feed, JobOutput, absorbed, job_config, run_job
from tests.support.onnx_models import linear_model
from tests.support.records import F32, flat_params, garbage
from tests.support.replay import Sent, replay

pytestmark = [
    pytest.mark.flink,
    pytest.mark.filterwarnings("ignore:.*deprecated - use:DeprecationWarning"),
]

ONNX = {"a": linear_model(4, 3, seed=1), "b": linear_model(6, 2, seed=2)}
AGGREGATION: dict[str, dict[str, Any]] = {
    "a": {"window": {"count": 2}, "staleness": {"function": "hinge", "a": 1.0, "b": 0.0}},
    "b": {
        "window": {"count": 3, "seconds": 1.0},
        "server_optimizer": {"name": "adam", "learning_rate": 0.1},
    },
}
BASES = {"a": [0, 0, 1, 0, 2, 1], "b": [0, 0, 0, 1]}  # b: 3 by count, then 1 by time


def delta(model: str, i: int) -> F32:
    size = flat_params(ONNX[model]).size
    return np.random.default_rng([ord(model), i]).standard_normal(size).astype(np.float32)


@pytest.fixture(scope="module")
def sent() -> dict[str, list[Sent]]:
    return {
        m: [Sent(f"{m}{i}", base, i + 1, delta(m, i)) for i, base in enumerate(bases)]
        for m, bases in BASES.items()
    }


@pytest.fixture(scope="module")
def output(sent: dict[str, list[Sent]], tmp_path_factory: pytest.TempPathFactory) -> JobOutput:
    feed = Feed(partitions=2)
    for model in ("a", "b"):
        feed.register(model, ONNX[model], AGGREGATION[model])
    assert (feed.partition_of("a"), feed.partition_of("b")) == (0, 1)
    for i in range(max(len(s) for s in sent.values())):  # interleave the two models
        for model in ("a", "b"):
            if i < len(sent[model]):
                s = sent[model][i]
                feed.update(
                    model,
                    s.update_id,
                    s.delta,
                    base_version=s.base_version,
                    num_samples=s.num_samples,
                )
    for model in ("a", "b"):  # a re-send of each model's first update
        s = sent[model][0]
        feed.update(model, s.update_id, s.delta, base_version=s.base_version)
        feed.raw(garbage(seed=ord(model)), partition=feed.partition_of(model))
    feed.sleep(2.5)  # b's last window closes on its timer
    config = job_config(tmp_path_factory.mktemp("job-tier-parallel"), parallelism=2)
    return run_job(feed, config, name="job-tier-parallel")


def test_each_model_releases_what_an_offline_replay_computes(
    sent: dict[str, list[Sent]], output: JobOutput
) -> None:
    a = replay(AGGREGATION["a"], flat_params(ONNX["a"]), sent["a"])
    assert output.versions("a") == sorted(a) == [0, 1, 2, 3]
    for version, params in a.items():
        np.testing.assert_allclose(output.releases["a", version].params(), params, atol=1e-6)
    b = replay(AGGREGATION["b"], flat_params(ONNX["b"]), sent["b"], close_after={3})
    assert output.versions("b") == sorted(b) == [0, 1, 2]
    for version, params in b.items():
        np.testing.assert_allclose(output.releases["b", version].params(), params, atol=1e-6)


def test_lineage_per_model(output: JobOutput) -> None:
    assert absorbed(output, "a") == ["a0", "a1", "a2", "a3", "a4", "a5"]
    assert [output.releases["b", v].lineage["update_ids"] for v in (1, 2)] == [
        ["b0", "b1", "b2"],
        ["b3"],  # closed by time
    ]
    stalenesses = [output.releases["a", v].lineage["staleness_max"] for v in (1, 2, 3)]
    assert stalenesses == [0, 1, 1]


def test_each_model_dedupes_and_dead_letters_on_its_own(output: JobOutput) -> None:
    reasons = sorted(
        (d["reason"], d["model_id"] or "", d["source_partition"]) for d in output.dead_letters
    )
    assert reasons == [
        ("DUPLICATE", "a", 0),
        ("DUPLICATE", "b", 1),
        ("UNDECODABLE", "", 0),
        ("UNDECODABLE", "", 1),
    ]
