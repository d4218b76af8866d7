"""The job's assembler of fragmented records (`reassembly.Reassembler`), without Flink.

Property: any record cut at any size and fed in order comes out whole, with the last
fragment's coordinates, and leaves nothing in the store. Every refusal, shown refusing
with its reason: a bad signature or no key (nothing stored, nothing displaced), a gap, a
duplicate, a fragment disagreeing with fragment 0, a declared size or count over the
limits, a wrong whole digest, and a new record dropping an incomplete one.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.model_process import Envelope
from fedstream.pipelines.reassembly import Assembly, DictFragmentStore, Reassembler, Taken
from fedstream.schemas import decode, encode
from fedstream.schemas.fragments import FRAGMENT, fragment_statement, split_record
from fedstream.schemas.signing import ReleaseSigner, key_id_of

TOPIC = "fl.updates"
LIMITS = InputLimits(max_record_bytes=10_000, max_fragments=50)


@functools.cache
def signer(name: str = "device") -> ReleaseSigner:
    key = Ed25519PrivateKey.generate()
    return ReleaseSigner(key, key_id_of(key.public_key()))


def key_of(_fragment: Mapping[str, Any]) -> Ed25519PublicKey:
    return signer().key.public_key()


def pieces(value: bytes, size: int, record_id: str = "u1") -> list[dict[str, Any]]:
    return split_record(value, record_id=record_id, signer="dev", key=signer(), max_data_bytes=size)


def resigned(fragment: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """`fragment` with `changes`, signed again by the device: authentic, but wrong."""
    changed = {**fragment, **changes}
    changed["signature"] = signer().sign(fragment_statement(changed))
    return changed


class Feeder:
    """One signer's assembly and store, fed fragment by fragment."""

    def __init__(self, limits: InputLimits = LIMITS) -> None:
        self.assembler = Reassembler(limits)
        self.store = DictFragmentStore()
        self.assembly: Assembly | None = None
        self.offset = 0

    def feed(self, fragment: Mapping[str, Any], key: Any = key_of) -> Taken:
        self.offset += 1
        envelope = Envelope(encode(FRAGMENT, fragment), TOPIC, 2, self.offset)
        taken = self.assembler.take(self.assembly, envelope, key, self.store)
        self.assembly = taken.assembly
        return taken

    def feed_all(self, fragments: list[dict[str, Any]]) -> list[Taken]:
        return [self.feed(f) for f in fragments]


def letters(taken: Taken) -> list[tuple[str, str]]:
    return [(o.reason, decode(o.value).record["detail"]) for o in taken.letters]


@settings(max_examples=60, deadline=None)
@given(value=st.binary(max_size=4000), size=st.integers(100, 1500))
def test_fragments_in_order_give_the_whole_record(value: bytes, size: int) -> None:
    feeder = Feeder()
    results = feeder.feed_all(pieces(value, size))
    assert all(not t.letters for t in results)
    assert all(t.whole is None for t in results[:-1])
    whole = results[-1].whole
    assert whole == Envelope(value, TOPIC, 2, feeder.offset)
    assert feeder.assembly is None and feeder.store.pieces == {}


@settings(max_examples=40, deadline=None)
@given(value=st.binary(min_size=300, max_size=2000), data=st.data())
def test_any_other_order_never_yields_a_record(value: bytes, data: st.DataObject) -> None:
    fragments = pieces(value, 100)
    order = data.draw(st.permutations(range(len(fragments))))
    if list(order) == sorted(order):
        return
    feeder = Feeder()
    results = [feeder.feed(fragments[i]) for i in order]
    assert all(t.whole is None for t in results)
    assert any(t.letters for t in results)


def test_a_bad_signature_or_no_key_stores_and_displaces_nothing() -> None:
    feeder = Feeder()
    first, second, _ = pieces(b"x" * 250, 100)
    feeder.feed(first)
    stored = dict(feeder.store.pieces)
    forged = {**pieces(b"y" * 50, 100, "evil")[0], "signature": bytes(64)}
    assert letters(feeder.feed(forged))[0][0] == "UNAUTHENTICATED"
    taken = feeder.feed(second, key=lambda _f: "device 'dev' is not registered")
    assert letters(taken) == [
        ("UNAUTHENTICATED", "fragment 1 of 'u1' ('dev'): device 'dev' is not registered")
    ]
    assert feeder.store.pieces == stored and feeder.assembly is not None
    assert feeder.assembly.received == 1  # the assembly in flight is untouched


def test_a_gap_drops_the_assembly_and_a_duplicate_is_refused() -> None:
    fragments = pieces(b"z" * 350, 100)
    feeder = Feeder()
    feeder.feed_all(fragments[:2])
    duplicate = feeder.feed(fragments[1])
    assert [r for r, _ in letters(duplicate)] == ["BAD_FIELD"]
    assert "duplicate" in letters(duplicate)[0][1] and feeder.assembly is not None
    gap = letters(feeder.feed(fragments[3]))
    assert [r for r, _ in gap] == ["BAD_FIELD", "BAD_FIELD"]
    assert "fragments 2..3 never came" in gap[0][1] and "out of order" in gap[1][1]
    assert feeder.assembly is None and feeder.store.pieces == {}


def test_a_new_record_drops_the_incomplete_one_as_one_dead_letter() -> None:
    feeder = Feeder()
    feeder.feed(pieces(b"a" * 300, 100, "old")[0])
    taken = feeder.feed(pieces(b"b" * 300, 100, "new")[0])
    ((reason, detail),) = letters(taken)
    assert reason == "BAD_FIELD" and "'old'" in detail and "fragments 1..2 never came" in detail
    letter = decode(taken.letters[0].value).record
    assert letter["update_id"] == "old" and letter["source_offset"] == 1
    assert letter["original"] == b""  # it names fragment 0, carries none of the bytes
    assert feeder.assembly is not None and feeder.assembly.record_id == "new"
    assert set(feeder.store.pieces) == {0}


def test_a_fragment_that_is_not_first_starts_nothing() -> None:
    feeder = Feeder()
    taken = feeder.feed(pieces(b"a" * 300, 100)[1])
    assert [r for r, _ in letters(taken)] == ["BAD_FIELD"]
    assert feeder.assembly is None and feeder.store.pieces == {}


def test_fragments_disagreeing_with_fragment_0_are_refused() -> None:
    first, second, _third = pieces(b"q" * 300, 100)
    for changes in ({"count": 4}, {"total_bytes": 301}, {"whole_sha256": bytes(32)}):
        feeder = Feeder()
        feeder.feed(first)
        ((reason, detail),) = letters(feeder.feed(resigned(second, **changes)))
        assert reason == "BAD_FIELD" and "disagrees with fragment 0" in detail
    feeder = Feeder()
    feeder.feed(first)
    too_much = letters(feeder.feed(resigned(second, data=b"q" * 250)))
    assert "more than the declared total_bytes" in too_much[0][1]


def test_a_wrong_whole_digest_is_refused_when_complete() -> None:
    value = b"w" * 250
    wrong = hashlib.sha256(b"other").digest()
    fragments = [resigned(f, whole_sha256=wrong) for f in pieces(value, 100)]
    feeder = Feeder()
    results = feeder.feed_all(fragments)
    assert results[-1].whole is None
    assert "SHA-256" in letters(results[-1])[0][1]
    assert feeder.assembly is None and feeder.store.pieces == {}


def test_declared_size_and_count_are_bounded_before_anything_is_stored() -> None:
    feeder = Feeder(InputLimits(max_record_bytes=1000, max_fragments=3))
    big = letters(feeder.feed(pieces(b"b" * 1001, 600)[0]))
    assert "limits.max_record_bytes" in big[0][1]
    many = letters(feeder.feed(pieces(b"m" * 400, 100)[0]))
    assert "limits.max_fragments" in many[0][1]
    assert feeder.assembly is None and feeder.store.pieces == {}


def test_a_resend_from_fragment_0_restarts_the_assembly() -> None:
    fragments = pieces(b"r" * 300, 100)
    feeder = Feeder()
    feeder.feed_all(fragments[:2])
    results = feeder.feed_all(fragments)
    assert "never came" in letters(results[0])[0][1]
    assert results[-1].whole is not None and results[-1].whole.value == b"r" * 300


def test_the_assembly_survives_its_state_form() -> None:
    feeder = Feeder()
    feeder.feed(pieces(b"s" * 300, 100)[0])
    assert feeder.assembly is not None
    assert Assembly.from_state(feeder.assembly.to_state()) == feeder.assembly
