"""Reassembling releases from chunks: signature and digest checked, versions never go
backwards."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedstream.edge import (
    DigestMismatchError,
    InvalidReleaseError,
    InvalidSignatureError,
    Release,
    ReleaseAssembler,
)
from fedstream.schemas import ModelRelease, encode, release_chunks
from fedstream.schemas.signing import ReleaseSigner, TrustedKeys, key_id_of, statement_of
from tests.unit.edge.edge_support import lineage


def new_signer() -> ReleaseSigner:
    key = Ed25519PrivateKey.generate()
    return ReleaseSigner(key, key_id_of(key.public_key()))


JOB_KEY = new_signer()
TRUSTED = TrustedKeys([JOB_KEY.key.public_key()])


def chunks(
    model_id: str,
    version: int,
    onnx: bytes,
    size: int = 7,
    signer: ReleaseSigner | None = JOB_KEY,
) -> list[ModelRelease]:
    """A release as the job writes it: signed once (by `signer`), on every chunk."""
    records = release_chunks(
        model_id=model_id,
        version=version,
        onnx=onnx,
        lineage=lineage(version - 1 if version else None, (f"u{version}",)),
        created_at=1,
        max_chunk_bytes=size,
    )
    if signer is None:
        return records
    signature = signer.sign(statement_of(records[0]))
    return [{**r, "signature": signature, "key_id": signer.key_id} for r in records]


def values(records: list[ModelRelease]) -> list[bytes]:
    return [encode("ModelRelease", r) for r in records]


def test_chunks_in_any_order_make_one_verified_release() -> None:
    blob = bytes(range(50))
    parts = values(chunks("m", 3, blob))
    assert len(parts) == 8
    random.Random(0).shuffle(parts)
    assembler = ReleaseAssembler("m", TRUSTED)
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
    assembler = ReleaseAssembler("m", TRUSTED)
    for value in values(bad) + values(chunks("m", 2, b"good")):
        assembler.add(value)
    with pytest.raises(DigestMismatchError, match="v1 rejected"):
        assembler.take()
    assert [r.version for r in assembler.take()] == [2]  # the next good one still comes


def test_versions_never_go_backwards() -> None:
    assembler = ReleaseAssembler("m", TRUSTED)
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
    assembler = ReleaseAssembler("m", TRUSTED)
    for version in range(4):
        for value in values(chunks("m", version, b"v%d" % version)):
            assembler.add(value)
    assert [r.version for r in assembler.take(newest_only=True)] == [3]
    assert assembler.take() == []


def test_other_models_are_ignored_and_garbage_is_reported() -> None:
    assembler = ReleaseAssembler("m", TRUSTED)
    for value in values(chunks("other", 7, b"theirs")):
        assembler.add(value)
    assert assembler.take() == []
    assembler.add(b"\xc3\x01garbage", "models[0]@12")
    with pytest.raises(InvalidReleaseError, match=r"undecodable record at models\[0\]@12"):
        assembler.take()


def test_chunks_that_disagree_are_rejected() -> None:
    parts = chunks("m", 1, b"0123456789abcdef", size=4)
    parts[2] = {**parts[2], "chunk_count": 5}
    assembler = ReleaseAssembler("m", TRUSTED)
    for value in values(parts):
        assembler.add(value)
    with pytest.raises(InvalidReleaseError, match="does not fit"):
        assembler.take()
    assert assembler.take() == []


def test_failures_are_raised_in_version_order() -> None:
    bad = chunks("m", 1, b"bytes of version one")
    bad[0] = {**bad[0], "onnx": b"?" * len(bad[0]["onnx"])}
    records = values(chunks("m", 0, b"zero")) + values(bad) + values(chunks("m", 2, b"two"))
    auditor, device = ReleaseAssembler("m", TRUSTED), ReleaseAssembler("m", TRUSTED)
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


# -- signatures (Ed25519, RFC 8032): forged, unknown-key and unsigned releases -------------
def test_release_carries_the_key_that_signed_it() -> None:
    assembler = ReleaseAssembler("m", TRUSTED)
    for value in values(chunks("m", 1, b"one")):
        assembler.add(value)
    (release,) = assembler.take()
    assert release.key_id == JOB_KEY.key_id


@pytest.mark.parametrize(
    ("forge", "message"),
    [
        (lambda: chunks("m", 7, b"forged model", signer=None), "not signed"),
        (lambda: chunks("m", 7, b"forged model", signer=new_signer()), "unknown key"),
        (  # a forger's signature under the job's key id
            lambda: [
                {**r, "key_id": JOB_KEY.key_id}
                for r in chunks("m", 7, b"forged model", signer=new_signer())
            ],
            "does not verify",
        ),
        (  # the job's signature of v1 re-used on a forged v7 with a correct digest
            lambda: [
                {**f, "signature": g["signature"]}
                for f, g in zip(
                    chunks("m", 7, b"forged", 100), chunks("m", 1, b"forged", 100), strict=True
                )
            ],
            "does not verify",
        ),
        (  # the lineage of a signed release rewritten
            lambda: [
                {**r, "lineage": lineage(6, ("u7", "evil"))} for r in chunks("m", 7, b"model")
            ],
            "does not verify",
        ),
        (  # one chunk with another (unsigned) lineage
            lambda: [
                {**r, "lineage": lineage(6, ("evil",))} if r["chunk_index"] == 1 else r
                for r in chunks("m", 7, b"a longer model file")
            ],
            "disagree",
        ),
    ],
    ids=["unsigned", "unknown-key", "wrong-key", "replayed-signature", "lineage", "chunk"],
)
def test_a_forged_release_is_refused_and_never_handed_out(
    forge: Callable[[], list[ModelRelease]], message: str
) -> None:
    assembler = ReleaseAssembler("m", TRUSTED)
    for value in values(chunks("m", 1, b"genuine")):
        assembler.add(value)
    assert [r.version for r in assembler.take()] == [1]
    for value in values(forge()):
        assembler.add(value)
    with pytest.raises(InvalidSignatureError, match=message):
        assembler.take(newest_only=True)
    assert assembler.take(newest_only=True) == [] and assembler.delivered == 1
    # the next genuine release still comes
    for value in values(chunks("m", 8, b"genuine eight")):
        assembler.add(value)
    assert [r.version for r in assembler.take(newest_only=True)] == [8]


def test_a_forgery_does_not_block_the_genuine_release_of_its_version() -> None:
    assembler = ReleaseAssembler("m", TRUSTED)
    for value in values(chunks("m", 3, b"forged", signer=new_signer())):
        assembler.add(value)
    with pytest.raises(InvalidSignatureError):
        assembler.take()
    for value in values(chunks("m", 3, b"genuine")):
        assembler.add(value)
    (release,) = assembler.take()
    assert (release.version, release.onnx) == (3, b"genuine")


def test_invalid_signature_is_an_invalid_release() -> None:
    assert issubclass(InvalidSignatureError, InvalidReleaseError)


def test_tampered_onnx_bytes_are_refused_even_when_signed() -> None:
    parts = chunks("m", 2, b"the signed model bytes")
    parts[0] = {**parts[0], "onnx": b"X" * len(parts[0]["onnx"])}
    assembler = ReleaseAssembler("m", TRUSTED)
    for value in values(parts):
        assembler.add(value)
    with pytest.raises(DigestMismatchError):
        assembler.take()


def test_no_trusted_keys_installs_nothing_by_default() -> None:
    for records in (chunks("m", 1, b"signed"), chunks("m", 1, b"unsigned", signer=None)):
        assembler = ReleaseAssembler("m")
        for value in values(records):
            assembler.add(value)
        with pytest.raises(InvalidSignatureError, match="trusted_keys is empty"):
            assembler.take()


def test_unsigned_releases_only_with_the_explicit_opt_out() -> None:
    assembler = ReleaseAssembler("m", allow_unsigned=True)
    for value in values(chunks("m", 1, b"unsigned", signer=None)):
        assembler.add(value)
    assert [r.key_id for r in assembler.take()] == [None]
    # a signed release is still verified: a forger's key is refused
    for value in values(chunks("m", 2, b"forged", signer=new_signer())):
        assembler.add(value)
    with pytest.raises(InvalidSignatureError, match="unknown key"):
        assembler.take()


def test_rotation_trusting_old_and_new_keys() -> None:
    new = new_signer()
    device = ReleaseAssembler("m", TrustedKeys([JOB_KEY.key.public_key(), new.key.public_key()]))
    for value in values(chunks("m", 1, b"old key")) + values(chunks("m", 2, b"new", signer=new)):
        device.add(value)
    assert [(r.version, r.key_id) for r in device.take()] == [
        (1, JOB_KEY.key_id),
        (2, new.key_id),
    ]
