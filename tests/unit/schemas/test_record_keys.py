"""Kafka keys of registrations and release chunks (compacted topics keep one per key)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedstream.schemas import model_of_release_key, registration_key, release_key


def test_keys_of_a_model() -> None:
    assert registration_key("m1") == b"m1"
    assert [release_key("m1", i) for i in range(3)] == [b"m1#0", b"m1#1", b"m1#2"]
    with pytest.raises(ValueError, match="chunk_index"):
        release_key("m1", -1)


@given(st.text(min_size=1, max_size=64), st.integers(min_value=0, max_value=10**6))
def test_a_release_key_names_its_model_whatever_the_id(model_id: str, index: int) -> None:
    # a '#' (or digits after one) inside the model id never confuses the split
    assert model_of_release_key(release_key(model_id, index)) == model_id
    assert release_key(model_id, index) != release_key(model_id, index + 1)


@pytest.mark.parametrize("key", [b"m1", b"m1#", b"m1#x", b""])
def test_what_is_not_a_release_key_is_refused(key: bytes) -> None:
    with pytest.raises(ValueError, match="not a release key"):
        model_of_release_key(key)
