"""The scale-out benchmark's pure parts (no broker, no cluster): the shard of a device as
the job's JVM computes it, the submit output, the summary and its table."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.cluster_job import job_id_of
from bench.job_session import Burst
from bench.scale_out import VARIANTS, arguments, markdown, shard_split, summary
from fedstream.jobs.runtime import connector_jar, keys_jar


def _java_shard(device_id: str, shards: int) -> int:
    import pyflink

    dist = sorted((Path(pyflink.__file__).parent / "lib").glob("flink-dist-*.jar"))[-1]
    classpath = ":".join(str(p) for p in (keys_jar(), connector_jar(), dist))
    out = subprocess.run(
        ["java", "-cp", classpath, "io.fedstream.flink.ShardKey", device_id, str(shards)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(out.stdout)


@pytest.mark.parametrize(("device", "shards"), [("device-0", 2), ("device-7", 2), ("dev-ü", 5)])
def test_the_benchmark_splits_devices_as_the_job_does(device: str, shards: int) -> None:
    expected = shard_split([device], shards).index(1)
    assert _java_shard(device, shards) == expected


def test_shard_split_counts_every_device_once() -> None:
    split = shard_split([f"device-{i}" for i in range(16)], 2)
    assert sum(split) == 16 and len(split) == 2


def test_job_id_is_read_from_the_submit_output() -> None:
    text = "Job has been submitted with JobID 0123456789abcdef0123456789abcdef\n"
    assert job_id_of(text) == "0123456789abcdef0123456789abcdef"
    assert job_id_of("refused") is None


def burst(rate: float, cpu_ms: float) -> Burst:
    updates = 100
    return Burst(updates, updates / rate, 1.0, [], {"python": cpu_ms * updates / 1000})


def test_summary_and_table() -> None:
    runs = {
        VARIANTS[0].name: [burst(20, 40), burst(22, 42), burst(18, 38)],
        VARIANTS[1].name: [burst(35, 45), burst(37, 47), burst(33, 43)],
    }
    s = summary(runs)
    assert s[VARIANTS[0].name]["updates_per_s"]["median"] == pytest.approx(20)
    assert s["speedup"] == pytest.approx(35 / 20)
    assert s["cpu_ratio"] == pytest.approx(45 / 40)
    args = vars(arguments(["--runs", "3"]))
    text = markdown(s, args, [9, 7], "2 cores")
    assert "| parallelism 2, model_shards 2 | 35.0 (33.0-37.0) | 45.00 (43.00-47.00) |" in text
    assert "speedup (updates/s, sharded / unsharded): 1.75" in text
    assert "9 / 7" in text
