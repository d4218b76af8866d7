"""The per-device sequence window against a reference that remembers every sequence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstream.pipelines.sequence_window import (
    DictWindowStore,
    SequenceWindow,
    Verdict,
    check_width,
)


class Reference:
    """Every absorbed sequence in a set, with the same window rule."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.seen: set[int] = set()

    def check(self, sequence: int) -> Verdict:
        if self.seen and sequence <= max(self.seen) - self.width:
            return Verdict.TOO_OLD
        return Verdict.DUPLICATE if sequence in self.seen else Verdict.NEW

    def mark(self, sequence: int) -> None:
        self.seen.add(sequence)


widths = st.sampled_from([8, 16, 64, 1024])
# mostly near each other (re-sends, out of order), sometimes far jumps
sequences = st.one_of(st.integers(0, 80), st.integers(0, 10**15))


@settings(max_examples=300, deadline=None)
@given(widths, st.lists(sequences, max_size=120), st.booleans())
def test_window_agrees_with_the_reference(width: int, seqs: list[int], reload: bool) -> None:
    """Every check agrees; a NEW sequence is marked (and the window optionally goes
    through its byte form in between, as through Flink state)."""
    window, reference = SequenceWindow(width), Reference(width)
    for sequence in seqs:
        verdict = window.check(sequence)
        assert verdict is reference.check(sequence), (sequence, window)
        if verdict is Verdict.NEW:
            window.mark(sequence)
            reference.mark(sequence)
        if reload:
            window = SequenceWindow.from_bytes(window.to_bytes(), width)


@given(widths, st.lists(st.integers(0, 3000), max_size=60))
def test_encoding_is_8_plus_width_over_8_bytes_and_round_trips(width: int, seqs: list[int]) -> None:
    window = SequenceWindow(width)
    for sequence in seqs:
        if window.check(sequence) is Verdict.NEW:
            window.mark(sequence)
        data = window.to_bytes()
        assert len(data) == 8 + width // 8
        assert SequenceWindow.from_bytes(data, width) == window


@given(st.lists(st.integers(0, 300), max_size=60), st.integers(0, 400))
def test_a_narrower_setting_never_turns_a_seen_sequence_new(seqs: list[int], probe: int) -> None:
    """Lowering runtime.sequence_window cuts stored windows: what falls out is TOO_OLD."""
    wide = SequenceWindow(256)
    for sequence in seqs:
        if wide.check(sequence) is Verdict.NEW:
            wide.mark(sequence)
    narrow = SequenceWindow.from_bytes(wide.to_bytes(), 64)
    assert narrow.width == 64
    if wide.check(probe) is not Verdict.NEW:
        assert narrow.check(probe) is not Verdict.NEW
    # and a wider setting keeps the stored width: nothing beyond it is known
    assert SequenceWindow.from_bytes(narrow.to_bytes(), 1024).width == 64


def test_the_three_verdicts() -> None:
    window = SequenceWindow(8)
    assert window.check(0) is Verdict.NEW
    window.mark(5)
    assert window.check(3) is Verdict.NEW  # out of order, inside the window
    window.mark(3)
    assert window.check(3) is Verdict.DUPLICATE
    assert window.check(5) is Verdict.DUPLICATE
    window.mark(13)  # 5 is now exactly `width` behind
    assert window.check(5) is Verdict.TOO_OLD
    assert window.check(6) is Verdict.NEW
    with pytest.raises(ValueError, match="duplicate"):
        window.mark(13)
    with pytest.raises(ValueError, match="too_old"):
        window.mark(0)
    with pytest.raises(ValueError, match=">= 0"):
        window.check(-1)


@pytest.mark.parametrize("width", [0, 7, 12, -8, True])
def test_widths_must_be_positive_multiples_of_8(width: int) -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        check_width(width)


@pytest.mark.parametrize("data", [b"", b"\x00" * 8, b"\xfe" + b"\xff" * 7 + b"\x00"])
def test_damaged_window_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="sequence window"):
        SequenceWindow.from_bytes(data, 64)


def test_dict_store_counts_devices() -> None:
    store = DictWindowStore()
    store.put("d1", b"x", new=True)
    store.put("d1", b"y", new=False)
    store.put("d2", b"z", new=True)
    assert store.count() == 2 and store.get("d1") == b"y" and store.get("d3") is None
