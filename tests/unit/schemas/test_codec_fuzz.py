"""Whatever bytes arrive, decode (and unpack) raise nothing but CodecError."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fedstream.schemas import (
    BadMagicError,
    CodecError,
    TruncatedError,
    UnknownSchemaError,
    decode,
    default_registry,
    unpack,
)

FUZZ = settings(max_examples=300, deadline=None)
HEADERS = [default_registry().get(name).header for name in default_registry().names]
HEADERS += [v.header for v in default_registry().history("GradientUpdate")]


def _decode_fully(data: bytes) -> None:
    """Decode and, for updates and registrations, unpack the tensor: the job's full path."""
    try:
        decoded = decode(data)
        record: dict[str, Any] = decoded.record
        for key in ("delta", "initial_parameters"):
            if key in record:
                unpack(record[key], require_finite=True)
    except CodecError:
        pass


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    _decode_fully(data)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_after_magic(data: bytes) -> None:
    _decode_fully(b"\xc3\x01" + data)


@FUZZ
@given(st.sampled_from(HEADERS), st.binary(max_size=400))
def test_random_body_for_every_known_schema(header: bytes, body: bytes) -> None:
    _decode_fully(header + body)


@FUZZ
@given(st.data())
def test_bit_flips(encoded_samples: dict[str, bytes], data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(sorted(encoded_samples.values())))
    flips = data.draw(st.lists(st.integers(0, len(original) * 8 - 1), min_size=1, max_size=4))
    mutated = bytearray(original)
    for bit in flips:
        mutated[bit // 8] ^= 1 << (bit % 8)
    if mutated[:2] == original[:2] and mutated[2:10] != original[2:10]:
        try:
            decode(bytes(mutated))
        except UnknownSchemaError:
            return
        raise AssertionError("a corrupted fingerprint must be an unknown schema")
    _decode_fully(bytes(mutated))


@FUZZ
@given(st.data())
def test_overwritten_bytes(encoded_samples: dict[str, bytes], data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(sorted(encoded_samples.values())))
    start = data.draw(st.integers(10, len(original) - 1))
    patch = data.draw(st.binary(min_size=1, max_size=16))
    _decode_fully(original[:start] + patch + original[start + len(patch) :])


def test_every_truncation_is_reported_as_truncated(encoded_samples: dict[str, bytes]) -> None:
    for label, original in encoded_samples.items():
        for end in range(len(original)):
            try:
                decode(original[:end])
            except BadMagicError:
                assert end == 0, label
            except TruncatedError:
                assert end > 0, label
            else:
                raise AssertionError(f"{label}: prefix of {end} bytes decoded")
