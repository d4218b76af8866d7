"""One model over two shards (`runtime.model_shards = 2`) at parallelism 2, in the real
topology: partial windows per device shard, combined per model (README, "Scaling out one
model"), next to a FedAsync model whose updates the shards forward unsharded.

What must hold: every update is absorbed exactly once across the releases; re-sends and a
stale update are dead-lettered as without shards; and every release's parameters equal
the unsharded core (`Aggregator`) replayed over the updates its lineage lists, in order
(float32 tolerance: a partial sums its updates before they are weighed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from kafka.partitioner.default import murmur2

from tests.job.harness import Feed, JobOutput, absorbed, job_config, run_job
from tests.support.onnx_models import linear_model
from tests.support.records import F32, flat_params
from tests.support.replay import Sent, replay, replay_windows

pytestmark = [
    pytest.mark.flink,
    pytest.mark.filterwarnings("ignore:.*deprecated - use:DeprecationWarning"),
]

SHARDS = 2
ONNX = {"fb": linear_model(4, 3, seed=1), "fa": linear_model(6, 2, seed=2)}
AGGREGATION: dict[str, dict[str, Any]] = {
    # a hybrid window: count windows close at K = 4 or beyond, the rest by time
    "fb": {
        "window": {"count": 4, "seconds": 1.0},
        "staleness": {"function": "polynomial", "a": 0.5},
        "weight_by_samples": True,
        "max_staleness": 2,
        "server_optimizer": {"name": "momentum", "learning_rate": 0.5, "momentum": 0.9},
    },
    "fa": {"mode": "fedasync", "window": {"count": 1}, "fedasync_mixing": 0.5},
}
DEVICES = [f"dev-{i}" for i in range(6)]


def shard_of(device: str) -> int:
    return int(murmur2(device.encode()) & 0x7FFFFFFF) % SHARDS


def delta(model: str, i: int) -> F32:
    size = flat_params(ONNX[model]).size
    return np.random.default_rng([ord(model[1]), i]).standard_normal(size).astype(np.float32)


@pytest.fixture(scope="module")
def sent() -> dict[str, list[tuple[Sent, str, int]]]:
    """Per model: (update, device, sequence), in sending order. fb: 3 rounds over 6
    devices, each round from the version the previous rounds reach; fa: 4 updates."""
    fb = [
        (Sent(f"fb{r}-{d}", r, 1 + (r + d) % 5, delta("fb", 10 * r + d)), DEVICES[d], r + 1)
        for r in range(2)
        for d in range(len(DEVICES))
    ]
    # one device: its updates take one shard's path to the model key, in order
    fa = [(Sent(f"fa{i}", 0, 1, delta("fa", i)), DEVICES[0], i + 1) for i in range(4)]
    return {"fb": fb, "fa": fa}


@pytest.fixture(scope="module")
def output(
    sent: dict[str, list[tuple[Sent, str, int]]], tmp_path_factory: pytest.TempPathFactory
) -> JobOutput:
    assert {shard_of(d) for d in DEVICES} == set(range(SHARDS))  # both shards are used
    feed = Feed(partitions=2)
    for model in ("fb", "fa"):
        feed.register(model, ONNX[model], AGGREGATION[model])

    def send(model: str, s: Sent, device: str, seq: int) -> None:
        feed.update(
            model,
            s.update_id,
            s.delta,
            base_version=s.base_version,
            num_samples=s.num_samples,
            device_id=device,
            sequence=seq,
        )

    for i, (s, device, seq) in enumerate(sent["fb"]):
        send("fb", s, device, seq)
        if i < len(sent["fa"]):
            send("fa", *sent["fa"][i])
        if i % len(DEVICES) == len(DEVICES) - 1:
            feed.sleep(1.5)  # the round's partials and window close (timers)
    s, device, seq = sent["fb"][0]
    send("fb", s, device, seq)  # a re-send: DUPLICATE on its shard
    send("fa", *sent["fa"][0])  # a re-send: DUPLICATE on the model key
    # Each round ends in two windows (one at K = 4 or 5 updates, the rest by time): version
    # 4 by now, so base 0 is past max_staleness 2 -> STALE at the combiner. (Round 1's
    # updates, from version 1, are 1 or 2 behind when their partials are folded.)
    send("fb", Sent("late", 0, 1, delta("fb", 99)), DEVICES[1], 9)
    feed.sleep(2.5)
    config = job_config(
        tmp_path_factory.mktemp("job-tier-shards"), parallelism=2, **{"runtime.model_shards": 2}
    )
    return run_job(feed, config, name="job-tier-shards")


def test_every_update_is_absorbed_exactly_once(
    sent: dict[str, list[tuple[Sent, str, int]]], output: JobOutput
) -> None:
    fb = absorbed(output, "fb")
    assert sorted(fb) == sorted(s.update_id for s, _, _ in sent["fb"])
    assert absorbed(output, "fa") == [s.update_id for s, _, _ in sent["fa"]]


def test_sharded_releases_equal_the_unsharded_core_over_their_lineage(
    sent: dict[str, list[tuple[Sent, str, int]]], output: JobOutput
) -> None:
    by_id = {s.update_id: s for s, _, _ in sent["fb"]}
    versions = output.versions("fb")
    assert versions == list(range(len(versions))) and len(versions) >= 3
    windows = [
        [by_id[u] for u in output.releases["fb", v].lineage["update_ids"]] for v in versions[1:]
    ]
    expected = replay_windows(AGGREGATION["fb"], flat_params(ONNX["fb"]), windows)
    for version in versions:
        np.testing.assert_allclose(
            output.releases["fb", version].params(), expected[version], rtol=1e-5, atol=1e-6
        )


def test_a_model_that_cannot_be_split_is_aggregated_as_without_shards(
    sent: dict[str, list[tuple[Sent, str, int]]], output: JobOutput
) -> None:
    expected = replay(AGGREGATION["fa"], flat_params(ONNX["fa"]), [s for s, _, _ in sent["fa"]])
    assert output.versions("fa") == sorted(expected)
    for version, params in expected.items():
        np.testing.assert_allclose(output.releases["fa", version].params(), params, atol=1e-6)


def test_re_sends_and_a_stale_update_are_dead_lettered(output: JobOutput) -> None:
    letters = sorted(
        (d["reason"], d["model_id"] or "", d["update_id"] or "") for d in output.dead_letters
    )
    assert letters == [
        ("DUPLICATE", "fa", "fa0"),
        ("DUPLICATE", "fb", "fb0-0"),
        ("STALE", "fb", "late"),
    ]
