"""The benchmark sends a record larger than a Kafka record as the SDK does (signed
fragments), and its plain aggregator puts them back together before it sums."""

from __future__ import annotations

import os

from bench.bench_fleet import RECORD_ROOM, BenchFleet, bench_delta, record_values
from bench.plain_aggregator import _whole
from fedstream.schemas import decode
from fedstream.schemas.fragments import FRAGMENT, fragment_problem, is_fragment


def test_a_record_that_fits_goes_whole() -> None:
    fleet = BenchFleet()
    (value,) = fleet.records("m", "u", 0, 0, bench_delta(1000))
    assert not is_fragment(value) and _whole(value, []) == value


def test_a_large_record_goes_in_signed_fragments_that_join_back() -> None:
    fleet = BenchFleet()
    key = fleet.identities.signer("device-0")
    value = os.urandom(RECORD_ROOM + RECORD_ROOM // 2)
    values = record_values(value, "u", "device-0", key)
    assert len(values) == 2 and all(len(v) <= RECORD_ROOM for v in values)
    public = key.key.public_key()
    assert all(
        fragment_problem(decode(v, expected=FRAGMENT).record, public) is None for v in values
    )
    pieces: list[bytes] = []
    assert _whole(values[0], pieces) is None
    assert _whole(values[1], pieces) == value and not pieces
