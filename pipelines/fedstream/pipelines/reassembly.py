"""Putting a fragmented record back together, one signer at a time.

The job's side of `fedstream.schemas.fragments` (IP-style fragmentation of an encoded
record, RFC 791): the device gate runs it per device for updates, the registry operator
per owner key for registrations. Plain Python over bytes; the Flink shells keep the
`Assembly` (a few small fields) in one state entry and each fragment's data in a
`FragmentStore` entry of its own, written once (never a growing list rewritten per
fragment).

Rules, and why:
- a fragment is verified (`fragment_problem`) before anything of it is stored, and only
  under a key the caller looked up for its signer: an unauthenticated fragment takes no
  state and displaces nothing (UNAUTHENTICATED);
- at most ONE assembly in flight per signer: a fragment of another record drops the
  incomplete one (one dead letter, BAD_FIELD, naming the fragments that never came), so
  the state of a signer is bounded by one record, `limits.max_record_bytes`;
- in order only: Kafka keeps a partition's order and the SDK sends in order, so index 0
  starts an assembly (also a re-send of the same record), the next index continues it,
  and anything else (a gap, a duplicate, a fragment disagreeing with fragment 0 on count,
  size, digest or key) is a dead letter; a gap also drops the assembly, which could never
  complete;
- the declared `count` and `total_bytes` are checked against `limits` at fragment 0,
  before anything is stored, and no fragment may bring more bytes than declared;
- the last fragment in: the whole record must have exactly `total_bytes` and
  `whole_sha256`; it then goes on as an `Envelope` with the last fragment's coordinates,
  to the very path a record that came in one piece takes.
The store is cleared whenever an assembly completes or is dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.model_process import Envelope, Output, dead_letter
from fedstream.schemas import CodecError, decode
from fedstream.schemas.fragments import FRAGMENT, fragment_problem

__all__ = [
    "Assembly",
    "DictFragmentStore",
    "FragmentStore",
    "Reassembler",
    "Taken",
    "assembly_problem",
    "declared_problem",
]


@dataclass(frozen=True, slots=True)
class Assembly:
    """One record being put together: what its fragment 0 declared, and how far it got."""

    record_id: str
    key_id: str
    count: int
    total_bytes: int
    whole_sha256: bytes
    #: fragments stored so far (the next expected index)
    received: int
    #: their bytes
    size: int
    #: where fragment 0 came from (what a dead letter of a dropped assembly names)
    topic: str
    partition: int
    offset: int

    def to_state(self) -> tuple[Any, ...]:
        """Builtins only: stable to pickle into Flink state across job versions."""
        return (
            self.record_id,
            self.key_id,
            self.count,
            self.total_bytes,
            self.whole_sha256,
            self.received,
            self.size,
            self.topic,
            self.partition,
            self.offset,
        )

    @classmethod
    def from_state(cls, raw: tuple[Any, ...] | list[Any]) -> Assembly:
        return cls(*raw)


class FragmentStore(Protocol):
    """Where one signer's fragment data waits (a Flink MapState in the job)."""

    def put(self, index: int, data: bytes) -> None: ...

    def get(self, index: int) -> bytes: ...

    def clear(self, count: int) -> None:
        """Forget indices 0 .. count-1."""


@dataclass
class DictFragmentStore:
    """`FragmentStore` in a dict (tests, the in-memory job)."""

    pieces: dict[int, bytes] = field(default_factory=dict)

    def put(self, index: int, data: bytes) -> None:
        self.pieces[index] = data

    def get(self, index: int) -> bytes:
        return self.pieces[index]

    def clear(self, count: int) -> None:
        for index in range(count):
            self.pieces.pop(index, None)


@dataclass(frozen=True, slots=True)
class Taken:
    """What one fragment did: the assembly to keep (None: none in flight), its dead
    letters (the fragment's own, an assembly it dropped), and the whole record when it
    was the last piece."""

    assembly: Assembly | None
    letters: list[Output]
    whole: Envelope | None = None


def declared_problem(fragment: Mapping[str, Any], limits: InputLimits) -> str | None:
    """Why what fragment 0 declares cannot be assembled within `limits`, or None."""
    count, total = int(fragment["count"]), int(fragment["total_bytes"])
    if not 1 <= count <= limits.max_fragments:
        return f"count {count} is outside [1, {limits.max_fragments}] (limits.max_fragments)"
    if not 0 <= total <= limits.max_record_bytes:
        return (
            f"total_bytes {total} is outside [0, {limits.max_record_bytes}] "
            "(limits.max_record_bytes)"
        )
    if len(bytes(fragment["whole_sha256"])) != 32:
        return "whole_sha256 is not 32 bytes"
    return None


def assembly_problem(assembly: Assembly, fragment: Mapping[str, Any]) -> str | None:
    """Why `fragment` (of the assembly's record) cannot be its next piece, or None."""
    index = int(fragment["index"])
    declared = (fragment["key_id"], fragment["count"], fragment["total_bytes"])
    if declared != (assembly.key_id, assembly.count, assembly.total_bytes) or bytes(
        fragment["whole_sha256"]
    ) != bytes(assembly.whole_sha256):
        return "it disagrees with fragment 0 on key_id, count, total_bytes or whole_sha256"
    if index < assembly.received:
        return f"duplicate: fragments 0..{assembly.received - 1} are in already"
    if index > assembly.received:
        return f"out of order: fragment {assembly.received} is the next one expected"
    if assembly.size + len(fragment["data"]) > assembly.total_bytes:
        return f"it brings more than the declared total_bytes {assembly.total_bytes}"
    return None


@dataclass(frozen=True)
class Reassembler:
    """The rules above for one kind of record: `names` says how a dead letter names the
    record ("update_id" for updates, "model_id" for registrations)."""

    limits: InputLimits
    names: str = "update_id"
    dlq_max_bytes: int | None = None

    def take(
        self,
        current: Assembly | None,
        envelope: Envelope,
        key_for: Callable[[Mapping[str, Any]], Ed25519PublicKey | str],
        store: FragmentStore,
    ) -> Taken:
        """Take the fragment in `envelope`, given the signer's assembly in flight,
        `current`; `key_for(fragment)` is the key its signer signs with (a str: why there
        is none)."""
        try:
            fragment = decode(envelope.value, expected=FRAGMENT).record
        except CodecError as error:  # route() decoded it already; keep this total
            return Taken(current, [dead_letter(envelope, error, max_bytes=self.dlq_max_bytes)])
        key = key_for(fragment)
        problem = key if isinstance(key, str) else fragment_problem(fragment, key)
        if problem is not None:  # nothing of it is stored, nothing is displaced
            return Taken(current, [self._letter(envelope, fragment, "UNAUTHENTICATED", problem)])
        letters: list[Output] = []
        index = int(fragment["index"])
        if current is not None and (
            current.record_id != fragment["record_id"] or index == 0
        ):  # another record (or this one again from the start): the old one never completes
            letters.append(self._dropped(current, fragment))
            store.clear(current.count)
            current = None
        if current is None:
            problem = (
                f"fragment {index} cannot start an assembly (fragment 0 does)"
                if index != 0
                else declared_problem(fragment, self.limits)
            )
            if problem is None:
                current = Assembly(
                    str(fragment["record_id"]),
                    str(fragment["key_id"]),
                    int(fragment["count"]),
                    int(fragment["total_bytes"]),
                    bytes(fragment["whole_sha256"]),
                    0,
                    0,
                    envelope.topic,
                    envelope.partition,
                    envelope.offset,
                )
                problem = assembly_problem(current, fragment)
                current = None if problem is not None else current
        else:
            problem = assembly_problem(current, fragment)
            if problem is not None and index > current.received:  # a gap: never completes
                letters.append(self._dropped(current, fragment))
                store.clear(current.count)
                current = None
        if problem is not None:
            letters.append(self._letter(envelope, fragment, "BAD_FIELD", problem))
            return Taken(current, letters)
        assert current is not None
        data = bytes(fragment["data"])
        store.put(index, data)
        current = replace(current, received=current.received + 1, size=current.size + len(data))
        if current.received < current.count:
            return Taken(current, letters)
        return self._finish(current, envelope, fragment, store, letters)

    def _finish(
        self,
        assembly: Assembly,
        envelope: Envelope,
        fragment: Mapping[str, Any],
        store: FragmentStore,
        letters: list[Output],
    ) -> Taken:
        whole = b"".join(store.get(i) for i in range(assembly.count))
        store.clear(assembly.count)
        if len(whole) != assembly.total_bytes:
            problem = f"assembled {len(whole)} bytes, declared {assembly.total_bytes}"
        elif hashlib.sha256(whole).digest() != assembly.whole_sha256:
            problem = "the SHA-256 of the assembled record is not whole_sha256"
        else:
            coordinates = (envelope.topic, envelope.partition, envelope.offset)
            return Taken(None, letters, Envelope(whole, *coordinates))
        letters.append(self._letter(envelope, fragment, "BAD_FIELD", problem))
        return Taken(None, letters)

    def _letter(
        self, envelope: Envelope, fragment: Mapping[str, Any], reason: str, problem: str
    ) -> Output:
        who = f"fragment {fragment['index']} of {fragment['record_id']!r} ({fragment['signer']!r})"
        detail = problem if problem.startswith("fragment") else f"{who}: {problem}"
        return dead_letter(
            envelope,
            reason,
            detail,
            max_bytes=self.dlq_max_bytes,
            **self._naming(str(fragment["record_id"])),
        )

    def _dropped(self, assembly: Assembly, fragment: Mapping[str, Any]) -> Output:
        """The dead letter of an incomplete assembly that will never complete: it names
        fragment 0's coordinates and carries none of the bytes."""
        source = Envelope(b"", assembly.topic, assembly.partition, assembly.offset)
        missing = f"{assembly.received}..{assembly.count - 1}"
        detail = (
            f"record {assembly.record_id!r} of {fragment['signer']!r} dropped incomplete: "
            f"fragments {missing} never came (fragment {fragment['index']} of "
            f"{fragment['record_id']!r} came instead)"
        )
        return dead_letter(
            source,
            "BAD_FIELD",
            detail,
            max_bytes=self.dlq_max_bytes,
            **self._naming(assembly.record_id),
        )

    def _naming(self, record_id: str) -> dict[str, str | None]:
        """The dead letter's model_id and update_id for a record of this kind."""
        if self.names == "model_id":
            return {"model_id": record_id, "update_id": None}
        return {"model_id": None, "update_id": record_id}
