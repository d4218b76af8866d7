"""Reassembling releases from chunks: digest checked, versions never go backwards."""

from __future__ import annotations

import hashlib
import random

import pytest

from fedstream.edge import DigestMismatchError, InvalidReleaseError, Release, ReleaseAssembler
from fedstream.schemas import ModelRelease, encode, release_chunks
from tests.unit.edge.edge_support import lineage


def chunks(model_id: str, version: int, onnx: bytes, size: int = 7) -> list[ModelRelease]:
    return release_chunks(
        model_id=model_id,
        version=version,
        onnx=onnx,
        lineage=lineage(version - 1 if version else None, (f"u{version}",)),
        created_at=1,
        max_chunk_bytes=size,
    )


def values(records: list[ModelRelease]) -> list[bytes]:
    return [encode("ModelRelease", r) for r in records]


def test_chunks_in_any_order_make_one_verified_release() -> None:
    blob = bytes(range(50))
    parts = values(chunks("m", 3, blob))
    assert len(parts) == 8
    random.Random(0).shuffle(parts)
    assembler = ReleaseAssembler("m")
    for part in parts[:-1]:
        assembler.add(part)
        assert assembler.take() == []  # incomplete: nothing yet
    assembler.add(parts[-1])
    (release,) = assembler.take()
    assert isinstance(release, Release)
    assert (release.version, release.onnx, release.chunk_count) == (3, blob, 8)
    assert release.sha256 == hashlib.sha256(blob).hexdigest()
    assert release.update_ids == ["u3"]
    release.verify()


def test_digest_mismatch_is_raised_and_never_handed_out() -> None:
    bad = chunks("m", 1, b"the real model bytes")
    bad[1] = {**bad[1], "onnx": b"X" * len(bad[1]["onnx"])}  # corrupted in transit
    assembler = ReleaseAssembler("m")
    for value in values(bad) + values(chunks("m", 2, b"good")):
        assembler.add(value)
    with pytest.raises(DigestMismatchError, match="v1 rejected"):
        assembler.take()
    assert [r.version for r in assembler.take()] == [2]  # the next good one still comes


def test_versions_never_go_backwards() -> None:
    assembler = ReleaseAssembler("m")
    for value in values(chunks("m", 5, b"five")):
        assembler.add(value)
    assert [r.version for r in assembler.take()] == [5]
    for version in (3, 5, 4):  # late, duplicate, older
        for value in values(chunks("m", version, b"old")):
            assembler.add(value)
    assert assembler.take() == []
    assembler.delivered = 9  # e.g. after a reconnect (skip_through)
    for value in values(chunks("m", 8, b"eight")):
        assembler.add(value)
    assert assembler.take() == []


def test_newest_only_skips_the_versions_in_between() -> None:
    assembler = ReleaseAssembler("m")
    for version in range(4):
        for value in values(chunks("m", version, b"v%d" % version)):
            assembler.add(value)
    assert [r.version for r in assembler.take(newest_only=True)] == [3]
    assert assembler.take() == []


def test_other_models_are_ignored_and_garbage_is_reported() -> None:
    assembler = ReleaseAssembler("m")
    for value in values(chunks("other", 7, b"theirs")):
        assembler.add(value)
    assert assembler.take() == []
    assembler.add(b"\xc3\x01garbage", "models[0]@12")
    with pytest.raises(InvalidReleaseError, match=r"undecodable record at models\[0\]@12"):
        assembler.take()


def test_chunks_that_disagree_are_rejected() -> None:
    parts = chunks("m", 1, b"0123456789abcdef", size=4)
    parts[2] = {**parts[2], "chunk_count": 5}
    assembler = ReleaseAssembler("m")
    for value in values(parts):
        assembler.add(value)
    with pytest.raises(InvalidReleaseError, match="does not fit"):
        assembler.take()
    assert assembler.take() == []


def test_failures_are_raised_in_version_order() -> None:
    bad = chunks("m", 1, b"bytes of version one")
    bad[0] = {**bad[0], "onnx": b"?" * len(bad[0]["onnx"])}
    records = values(chunks("m", 0, b"zero")) + values(bad) + values(chunks("m", 2, b"two"))
    auditor, device = ReleaseAssembler("m"), ReleaseAssembler("m")
    for value in records:
        auditor.add(value)
        device.add(value)
    # every release in order: 0, then the failure of 1, then 2
    assert [r.version for r in auditor.take()] == [0]
    with pytest.raises(DigestMismatchError, match="v1"):
        auditor.take()
    assert [r.version for r in auditor.take()] == [2]
    # a device wants the newest: the corrupted v1 is superseded by a good v2
    assert [r.version for r in device.take(newest_only=True)] == [2]
