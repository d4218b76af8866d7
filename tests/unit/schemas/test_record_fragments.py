"""The pure core of fragmented records (`fedstream.schemas.fragments`): split, sign, verify.

Properties: any bytes cut at any size put back together in order are the original; every
fragment fits the data size asked for and its encoded record fits the overhead estimate;
each fragment verifies under its key only, and changing any covered field (or the data)
breaks the signature.
"""

from __future__ import annotations

import functools

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstream.schemas import decode, encode
from fedstream.schemas.fragments import (
    FRAGMENT,
    FRAGMENT_DOMAIN,
    fragment_count,
    fragment_overhead,
    fragment_problem,
    fragment_statement,
    is_fragment,
    split_record,
)
from fedstream.schemas.signing import RELEASE_DOMAIN, ReleaseSigner, key_id_of
from fedstream.schemas.update_signing import UPDATE_DOMAIN


@functools.cache
def signer(name: str = "a") -> ReleaseSigner:
    key = Ed25519PrivateKey.generate()
    return ReleaseSigner(key, key_id_of(key.public_key()))


@settings(max_examples=60, deadline=None)
@given(value=st.binary(max_size=3000), size=st.integers(1, 700))
def test_split_then_join_is_the_original(value: bytes, size: int) -> None:
    fragments = split_record(value, record_id="u", signer="dev", key=signer(), max_data_bytes=size)
    assert len(fragments) == fragment_count(len(value), size)
    assert b"".join(f["data"] for f in fragments) == value
    assert [f["index"] for f in fragments] == list(range(len(fragments)))
    assert all(len(f["data"]) <= size for f in fragments)
    assert {(f["count"], f["total_bytes"]) for f in fragments} == {(len(fragments), len(value))}
    overhead = fragment_overhead("u", "dev", signer().key_id)
    for fragment in fragments:
        assert len(encode(FRAGMENT, fragment)) <= overhead + len(fragment["data"])
        assert fragment_problem(fragment, signer().key.public_key()) is None


def test_an_empty_record_is_one_empty_fragment() -> None:
    (only,) = split_record(b"", record_id="u", signer="d", key=signer(), max_data_bytes=5)
    assert (only["count"], only["total_bytes"], only["data"]) == (1, 0, b"")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("record_id", "other"),
        ("signer", "other"),
        ("key_id", "0" * 16),
        ("index", 1),
        ("count", 4),
        ("total_bytes", 99),
        ("whole_sha256", bytes(32)),
        ("data", b"forged"),
    ],
)
def test_changing_any_covered_field_breaks_the_signature(field: str, value: object) -> None:
    fragment = split_record(b"x" * 20, record_id="u", signer="d", key=signer(), max_data_bytes=8)[0]
    tampered = {**fragment, field: value}
    problem = fragment_problem(tampered, signer().key.public_key())
    assert problem is not None and "does not verify" in problem


def test_another_key_or_a_cut_signature_does_not_verify() -> None:
    fragment = split_record(b"abc", record_id="u", signer="d", key=signer(), max_data_bytes=8)[0]
    other = signer("b").key.public_key()
    assert "does not verify" in str(fragment_problem(fragment, other))
    cut = {**fragment, "signature": fragment["signature"][:10]}
    assert "10 bytes" in str(fragment_problem(cut, signer().key.public_key()))


def test_the_statement_has_its_own_domain() -> None:
    fragment = split_record(b"abc", record_id="u", signer="d", key=signer(), max_data_bytes=8)[0]
    statement = fragment_statement(fragment)
    assert statement.startswith(FRAGMENT_DOMAIN)
    assert not statement.startswith(UPDATE_DOMAIN) and not statement.startswith(RELEASE_DOMAIN)


def test_fragments_are_recognised_by_fingerprint_and_round_trip() -> None:
    fragment = split_record(b"abc", record_id="u", signer="d", key=signer(), max_data_bytes=2)[1]
    value = encode(FRAGMENT, fragment)
    assert is_fragment(value)
    assert decode(value, expected=FRAGMENT).record == fragment
    assert not is_fragment(b"") and not is_fragment(b"\xc3\x01" + bytes(8))
