"""The job's Java partitioner puts a model's release chunks where Kafka's default
partitioner puts the key `model_id` (murmur2), whatever the chunk index."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from kafka.partitioner.default import murmur2

from fedstream.jobs.runtime import connector_jar, keys_jar
from fedstream.schemas import release_key

PARTITIONER = "io.fedstream.flink.ModelPartitioner"


def _java_partition(key: bytes, partitions: int) -> int:
    import pyflink

    dist = sorted((Path(pyflink.__file__).parent / "lib").glob("flink-dist-*.jar"))[-1]
    classpath = ":".join(str(p) for p in (keys_jar(), connector_jar(), dist))
    out = subprocess.run(
        [
            "java",
            "-cp",
            classpath,
            "io.fedstream.flink.ModelPartitioner",
            key.decode(),
            str(partitions),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(out.stdout)


@pytest.mark.parametrize(
    ("model_id", "index"), [("m1", 0), ("m1", 7), ("digits-linear", 3), ("a#b", 12), ("ü-模型", 1)]
)
def test_chunks_go_to_the_partition_of_their_model_id(model_id: str, index: int) -> None:
    expected = (murmur2(model_id.encode()) & 0x7FFFFFFF) % 12
    assert _java_partition(release_key(model_id, index), 12) == expected
