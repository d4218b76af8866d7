"""Per-device re-send detection by sequence number, in bounded memory.

Why: remembering absorbed update ids only for the last N versions forces a staleness cut
(an update older than the horizon could be a re-send nobody remembers, so it had to be
refused as STALE). Under repeated job restarts that cut threw away most of the fleet's
work although the model sets no `max_staleness`. A device numbers its updates for a
model 0, 1, 2, ... (`GradientUpdate.sequence`, the SDK's persisted round counter, the
same number on a re-send), so a re-send can be recognised by that number, whatever the
update's staleness.

The structure is the anti-replay window of IPsec (RFC 4303, section 3.4.3; RFC 6479):
per (model, device) a high-water mark `high` (the largest sequence absorbed) and a bitmap
of the `width` sequences `high - width + 1 .. high`, one bit each (set: absorbed).
A sequence is
- NEW when above `high`, or inside the window with its bit clear (an update that
  arrived out of order);
- DUPLICATE when inside the window with its bit set;
- TOO_OLD when at or below `high - width`: it can no longer be told from a re-send.

State per device and model: 8 bytes (the mark, int64) + width / 8 bytes (the bitmap),
136 bytes at the default width of 1024; it never grows with the number of updates, and
needs no pruning by version. Devices send in order, so a sequence falls out of the window
only when the device has had `width` later updates absorbed meanwhile.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "DEFAULT_WIDTH",
    "DictWindowStore",
    "SequenceWindow",
    "Verdict",
    "WindowStore",
    "check_width",
]

#: Default window width (runtime.sequence_window): 8 + 128 bytes per device and model.
DEFAULT_WIDTH = 1024
_MARK = struct.Struct("<q")
_EMPTY = -1  # the mark of a window that absorbed nothing


class Verdict(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    TOO_OLD = "too_old"


def check_width(width: int) -> int:
    """`width` if it is a valid window width (a positive multiple of 8), else ValueError."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 8 or width % 8:
        raise ValueError(f"sequence window width must be a multiple of 8 >= 8, got {width!r}")
    return width


@dataclass
class SequenceWindow:
    """One device's window for one model (see the module docstring).

    `bits`: bit i set <=> sequence `high - i` was absorbed, for i in [0, width)."""

    width: int
    high: int = _EMPTY
    bits: int = 0

    def __post_init__(self) -> None:
        check_width(self.width)

    def check(self, sequence: int) -> Verdict:
        if sequence < 0:
            raise ValueError(f"sequence must be >= 0, got {sequence}")
        if sequence > self.high:
            return Verdict.NEW
        back = self.high - sequence
        if back >= self.width:
            return Verdict.TOO_OLD
        return Verdict.DUPLICATE if self.bits >> back & 1 else Verdict.NEW

    def mark(self, sequence: int) -> None:
        """Record `sequence` as absorbed; ValueError unless `check(sequence)` is NEW."""
        verdict = self.check(sequence)
        if verdict is not Verdict.NEW:
            raise ValueError(f"sequence {sequence} is {verdict.value}, not new")
        if sequence > self.high:
            shift = sequence - self.high
            # A jump past the whole window forgets it (the shift is capped to stay small).
            self.bits = (self.bits << min(shift, self.width)) & ((1 << self.width) - 1)
            self.high = sequence
        self.bits |= 1 << (self.high - sequence)

    def to_bytes(self) -> bytes:
        """8 bytes of mark (little-endian int64) + width / 8 bytes of bitmap (little-endian)."""
        return _MARK.pack(self.high) + self.bits.to_bytes(self.width // 8, "little")

    @classmethod
    def from_bytes(cls, data: bytes, width: int) -> SequenceWindow:
        """The window in `data`, at most `width` wide.

        A window stored wider than `width` (the setting was lowered) is cut to `width`:
        the sequences that fall out become TOO_OLD, never NEW. One stored narrower keeps
        its own width, since nothing is known about the sequences beyond it."""
        check_width(width)
        if len(data) < _MARK.size + 1:
            raise ValueError(f"a sequence window has at least 9 bytes, got {len(data)}")
        (high,) = _MARK.unpack_from(data)
        if high < _EMPTY:
            raise ValueError(f"a sequence window's mark must be >= -1, got {high}")
        stored = (len(data) - _MARK.size) * 8
        kept = min(stored, width)
        bits = int.from_bytes(data[_MARK.size :], "little") & ((1 << kept) - 1)
        return cls(kept, high, bits)


class WindowStore(Protocol):
    """One model's windows by device id (a dict in tests, Flink MapState in the job)."""

    def get(self, device_id: str) -> bytes | None: ...

    def put(self, device_id: str, window: bytes, *, new: bool) -> None:
        """Store `window`; `new`: the device had none (so the store counts it)."""

    def count(self) -> int:
        """How many devices have a window."""


@dataclass
class DictWindowStore:
    """`WindowStore` over a mutable mapping."""

    entries: MutableMapping[str, bytes] = field(default_factory=dict)

    def get(self, device_id: str) -> bytes | None:
        return self.entries.get(device_id)

    def put(self, device_id: str, window: bytes, *, new: bool) -> None:
        self.entries[device_id] = window

    def count(self) -> int:
        return len(self.entries)
