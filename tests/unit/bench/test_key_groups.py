"""Flink's key-group assignment, re-implemented for the parallelism benchmark.

Expected values were printed by Flink 2.2.1 itself (`String.hashCode`,
`MathUtils.murmurHash`, `KeyGroupRangeAssignment.assignKeyToParallelOperator(key, 128, p)`)
on this machine: see the issue 6 closing note.
"""

from __future__ import annotations

import pytest

from bench.key_groups import java_string_hash, murmur_hash, subtask_of

FLINK = [
    # key, String.hashCode, murmurHash, subtask at p=2, subtask at p=3
    ("bench-model-0", -1855053841, 1766210851, 0, 0),
    ("bench-model-1", -1855053840, 1009329415, 0, 0),
    ("bench-model-3", -1855053838, 1878253617, 0, 1),
    ("digits-async", 1419509461, 1917489875, 1, 1),
    ("héllo-ü", 289793213, 655656619, 0, 1),
    ("", 0, 593689054, 1, 2),
    ("x", 120, 2120728247, 0, 1),
]


@pytest.mark.parametrize(("key", "hash_code", "murmur", "p2", "p3"), FLINK)
def test_matches_flink(key: str, hash_code: int, murmur: int, p2: int, p3: int) -> None:
    assert java_string_hash(key) == hash_code
    assert murmur_hash(hash_code) == murmur
    assert subtask_of(key, 2) == p2
    assert subtask_of(key, 3) == p3


def test_subtask_is_in_range_for_any_parallelism() -> None:
    for parallelism in (1, 2, 5, 128):
        for i in range(200):
            assert 0 <= subtask_of(f"model-{i}", parallelism) < parallelism
