"""Reading model releases from the models topic: newest first, verified, never backwards.

What a device needs from ``fl.models`` is different from what an auditor needs:

* A device that was away (asleep, offline, just installed) wants the NEWEST release of its
  model, not the hundred versions in between. `ReleaseReader.newest` therefore seeks to
  the end of the topic and looks back, doubling the window, until it holds the newest
  *complete* release: a release larger than one record arrives as several chunk records
  (`fedstream.schemas.release_chunks`), and a window that starts in the middle of them
  must be widened rather than settle for an older version or half a file.
* The evaluator wants EVERY release, in order: ``ReleaseReader(from_beginning=True)`` and
  `fetch`.

Both read with ``isolation_level="read_committed"``: the job writes releases in Kafka
transactions that commit with its checkpoints, and a release from an aborted transaction
(a job that crashed and replayed) must never reach a device. Each release is reassembled
with `assemble_release`, which checks the size and the SHA-256 of the whole ONNX file; a
mismatch raises `DigestMismatchError` and that release is never handed out. The digest
proves integrity, not origin (it travels in the same record), so each release must also
carry an Ed25519 signature (RFC 8032) over its model id, version, digest and lineage by a
key in `EdgeConfig.trusted_keys` (`fedstream.schemas.signing`); an unsigned, unknown-key
or wrongly signed release raises `InvalidSignatureError` and is never handed out. Versions
handed out by one reader only ever increase.

The reader uses no consumer group (``group_id=None``, manual assignment): every device
reads the whole topic independently, and there are no offsets to commit or rebalance.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedstream.edge.config import EdgeConfig
from fedstream.edge.connection import hidden_topic_hint, open_kafka_client
from fedstream.edge.errors import (
    BrokerUnavailableError,
    DigestMismatchError,
    EdgeError,
    InvalidReleaseError,
    InvalidSignatureError,
    TopicNotFoundError,
    UnknownModelError,
)
from fedstream.schemas import CodecError, ReleaseError, ReleaseLineage, assemble_release, decode
from fedstream.schemas.signing import SignatureError, TrustedKeys, statement_of

__all__ = ["Release", "ReleaseAssembler", "ReleaseReader", "recent_dead_letters"]

log = logging.getLogger(__name__)

_FIRST_LOOKBACK = 64  # records per partition in the first look-back window


@dataclass(frozen=True, slots=True)
class Release:
    """One verified model version: the whole ONNX file and where it came from."""

    model_id: str
    version: int
    onnx: bytes
    sha256: str
    lineage: ReleaseLineage
    created_at: int
    chunk_count: int = 1
    key_id: str | None = None  # the trusted key that signed it (None: unsigned, allowed)

    @property
    def update_ids(self) -> list[str]:
        """The updates absorbed into this version (empty for version 0)."""
        return list(self.lineage["update_ids"])

    def verify(self) -> None:
        """Re-check the digest (e.g. after the bytes were stored and read back)."""
        if hashlib.sha256(self.onnx).hexdigest() != self.sha256:
            raise DigestMismatchError(
                f"release {self.model_id!r} v{self.version}: SHA-256 does not match"
            )


class _Pending:
    """The chunks received so far of one (model, version)."""

    __slots__ = ("chunks", "count")

    def __init__(self, count: int) -> None:
        self.count = count
        self.chunks: dict[int, Mapping[str, Any]] = {}


class ReleaseAssembler:
    """Turns ModelRelease records of one model into verified `Release` objects. Pure.

    Feed it record values with `add` in topic order; `take` hands out the complete,
    verified releases newer than any handed out before (so versions never go backwards).
    A release that fails its checks is never handed out: `take` raises its error once
    (`DigestMismatchError`, `InvalidSignatureError`, `InvalidReleaseError`) at its place in
    version order, and the next call goes on. With ``newest_only`` a failure older than a
    good newer release is not raised (it is logged when found): the device has moved past
    it. `trusted_keys` are the job's release keys (none: every release is refused);
    ``allow_unsigned`` accepts releases that carry no signature (local experiments only).
    """

    def __init__(
        self,
        model_id: str,
        trusted_keys: TrustedKeys | None = None,
        *,
        allow_unsigned: bool = False,
    ) -> None:
        self.model_id = model_id
        self.trusted_keys = trusted_keys or TrustedKeys()
        self.allow_unsigned = allow_unsigned
        self.pending: dict[int, _Pending] = {}
        self.ready: dict[int, Release] = {}
        self.rejected: set[int] = set()
        self.failures: list[tuple[int, InvalidReleaseError]] = []  # (version or -1, error)
        self.delivered = -1

    def reset(self) -> None:
        """Forget everything not yet handed out (before re-reading a window)."""
        self.pending.clear()
        self.ready.clear()
        self.rejected.clear()
        self.failures.clear()

    def add(self, value: bytes | None, where: str = "?") -> None:
        """One record of the models topic (any model's; others are ignored)."""
        try:
            record = decode(value or b"", expected="ModelRelease").record
        except CodecError as error:
            # Whose it was cannot be known: an undecodable record on the models topic is
            # reported to every reader, not skipped silently.
            failure = InvalidReleaseError(f"undecodable record at {where}: {error.detail}")
            log.error("%s", failure)
            self.failures.append((-1, failure))
            return
        if record["model_id"] != self.model_id:
            return  # another model's release: not for this reader
        version = int(record["version"])
        if version <= self.delivered or version in self.rejected or version in self.ready:
            return
        count, index = int(record["chunk_count"]), int(record["chunk_index"])
        pending = self.pending.setdefault(version, _Pending(count))
        if count != pending.count or not 0 <= index < count:
            self._reject(
                version,
                InvalidReleaseError(
                    f"release {self.model_id!r} v{version}: chunk {index} of {count} does not "
                    f"fit the other chunks ({where})"
                ),
            )
            return
        pending.chunks[index] = record
        if len(pending.chunks) < pending.count:
            return
        del self.pending[version]
        try:
            onnx = assemble_release(pending.chunks.values())
        except ReleaseError as error:
            self._reject(
                version,
                DigestMismatchError(
                    f"release {self.model_id!r} v{version} rejected ({where}): {error.detail}"
                ),
            )
            return
        problem = self._signature_problem(list(pending.chunks.values()))
        if problem is not None:
            text = f"release {self.model_id!r} v{version} refused ({where}): {problem}"
            # Not remembered as rejected: a forgery must not block the genuine release
            # of the same version, which may still come.
            self._reject(version, InvalidSignatureError(text), remember=False)
            return
        self.ready[version] = Release(
            model_id=self.model_id,
            version=version,
            onnx=onnx,
            sha256=str(record["sha256"]),
            lineage=record["lineage"],
            created_at=int(record["created_at"]),
            chunk_count=count,
            key_id=record.get("key_id"),
        )

    def _signature_problem(self, chunks: list[Mapping[str, Any]]) -> str | None:
        """Why the chunks of one (digest-checked) release must not be installed, or None.

        The release is signed once; every chunk carries the same signature, key id and
        lineage (a chunk that differs could smuggle in an unsigned lineage)."""
        first = chunks[0]
        signed = ("signature", "key_id", "lineage")
        if any(c.get(k) != first.get(k) for c in chunks for k in signed):
            return "its chunks disagree on signature, key_id or lineage"
        signature, key_id = first.get("signature"), first.get("key_id")
        if signature is None and key_id is None and self.allow_unsigned:
            return None  # EdgeConfig.allow_unsigned_releases: local experiments only
        try:
            self.trusted_keys.verify(statement_of(first), signature, key_id)
        except SignatureError as error:
            hint = "" if self.trusted_keys else " (EdgeConfig.trusted_keys is empty)"
            return f"{error}{hint}"
        return None

    def take(self, *, newest_only: bool = False) -> list[Release]:
        """Ready releases newer than the last handed out, oldest first (or only the newest).

        Raises a queued failure where it falls in version order (see the class docstring).
        """
        fresh = sorted(
            (r for v, r in self.ready.items() if v > self.delivered), key=lambda r: r.version
        )
        self.ready.clear()  # anything not newer is dropped on purpose: never go backwards
        if self.failures:
            self.failures.sort(key=lambda f: f[0])
            first_bad, last_bad = self.failures[0][0], self.failures[-1][0]
            if newest_only and fresh and fresh[-1].version > last_bad:
                self.failures.clear()  # superseded by a good newer release
            else:
                before = [r for r in fresh if r.version < first_bad]
                if not before or newest_only:
                    self.ready = {r.version: r for r in fresh}
                    raise self.failures.pop(0)[1]
                self.ready = {r.version: r for r in fresh[len(before) :]}
                fresh = before
        if not fresh:
            return []
        if newest_only:
            fresh = fresh[-1:]
        self.delivered = fresh[-1].version
        for version in [v for v in self.pending if v <= self.delivered]:
            del self.pending[version]
        return fresh

    def _reject(self, version: int, error: InvalidReleaseError, *, remember: bool = True) -> None:
        self.pending.pop(version, None)
        if remember:  # the rest of its chunks are ignored
            self.rejected.add(version)
        self.failures.append((version, error))
        log.error("%s", error)


class ReleaseReader:
    """Releases of one model from the models topic (see the module docstring).

    Not thread-safe: one reader per thread (a device has one).
    """

    def __init__(self, config: EdgeConfig, model_id: str, *, from_beginning: bool = False) -> None:
        import kafka.errors as kafka_errors
        from kafka import KafkaConsumer, TopicPartition

        self.config = config
        self.model_id = model_id
        self._errors = kafka_errors
        self._consumer = open_kafka_client(
            KafkaConsumer,
            config.bootstrap,
            config.security,
            timeout_s=config.connect_timeout_s,
            what="release reader",
            client_id=config.client_id or "fedstream-edge",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=config.max_fetch_bytes,
            fetch_max_bytes=max(config.max_fetch_bytes, 52428800),
            bootstrap_timeout_ms=int(config.connect_timeout_s * 1000),
            request_timeout_ms=max(30000, int(config.connect_timeout_s * 1000) + 5000),
        )
        try:
            try:
                partitions = self._consumer.partitions_for_topic(config.models_topic)
            except kafka_errors.KafkaError as error:
                # a node refusing connections (a broker restarting) surfaced here as a raw
                # KafkaConnectionError, found by the chaos campaign: an outage, say so
                raise self._unavailable(error) from error
            if not partitions:
                raise TopicNotFoundError(
                    f"models topic {config.models_topic!r} does not exist at {config.bootstrap}"
                    f"{hidden_topic_hint(config.security)}"
                )
            self._partitions = [TopicPartition(config.models_topic, p) for p in sorted(partitions)]
            self._consumer.assign(self._partitions)
            if from_beginning:
                self._consumer.seek_to_beginning(*self._partitions)
        except BaseException:
            self._consumer.close()
            raise
        self._positioned = from_beginning
        self._assembler = ReleaseAssembler(
            model_id, config.trusted_keys, allow_unsigned=config.allow_unsigned_releases
        )

    # ------------------------------------------------------------------ public
    @property
    def version(self) -> int | None:
        """The newest version handed out so far (None before the first)."""
        delivered = self._assembler.delivered
        return None if delivered < 0 else delivered

    def skip_through(self, version: int) -> None:
        """Never hand out `version` or anything older (a reconnecting device has it)."""
        self._assembler.delivered = max(self._assembler.delivered, version)

    def newest(self, timeout_s: float) -> Release:
        """The newest complete release, waiting up to `timeout_s` for one to exist.

        The first call looks back from the end of the topic; later calls return the newest
        release that arrived since (or wait for one). Raises `UnknownModelError` when no
        newer release appears in time, `DigestMismatchError` for a corrupted one.
        """
        deadline = time.monotonic() + timeout_s
        if not self._positioned:
            # Looking back is bounded by the connect timeout, not by a short `timeout_s`:
            # "is there a release already?" must be answered even when waiting is not wanted.
            self._look_back(max(deadline, time.monotonic() + self.config.connect_timeout_s))
            self._positioned = True
        while True:
            found = self._assembler.take(newest_only=True)
            if found:
                return found[-1]
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._read(min(left, 1.0))
        delivered = self._assembler.delivered
        have = "no release" if delivered < 0 else f"no release newer than v{delivered}"
        raise UnknownModelError(
            f"{have} of model {self.model_id!r} on {self.config.models_topic!r} within "
            f"{timeout_s:g} s: is it registered (a rejected registration is on "
            f"{self.config.dlq_topic!r}) and is the aggregation job running?"
        )

    def poll_newest(self, timeout_s: float = 0.0) -> Release | None:
        """The newest release that arrived since the last call, or None (waits <= timeout)."""
        if not self._positioned:
            try:
                return self.newest(timeout_s)
            except UnknownModelError:
                return None
        found = self._assembler.take(newest_only=True)
        if not found:
            self._read(timeout_s)
            found = self._assembler.take(newest_only=True)
        return found[-1] if found else None

    def fetch(self, timeout_s: float = 1.0) -> list[Release]:
        """Every complete release that arrived since the last call, oldest first."""
        if not self._positioned:
            self._consumer.seek_to_beginning(*self._partitions)
            self._positioned = True
        found = self._assembler.take()
        if not found:
            self._read(timeout_s)
            found = self._assembler.take()
        return found

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> ReleaseReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _unavailable(self, error: Exception) -> BrokerUnavailableError:
        return BrokerUnavailableError(
            f"reading {self.config.models_topic!r} from {self.config.bootstrap}: {error}"
        )

    def _read(self, timeout_s: float) -> int:
        """One poll; returns how many records it read."""
        try:
            batches = self._consumer.poll(timeout_ms=max(0, int(timeout_s * 1000)))
        except self._errors.KafkaError as error:
            raise self._unavailable(error) from error
        count = 0
        for records in batches.values():
            for message in records:
                count += 1
                where = f"{self.config.models_topic}[{message.partition}]@{message.offset}"
                self._assembler.add(message.value, where)
        return count

    def _look_back(self, deadline: float) -> None:
        """Position at the end minus a window that holds the newest complete release."""
        try:
            ends = self._consumer.end_offsets(self._partitions)
            begins = self._consumer.beginning_offsets(self._partitions)
        except self._errors.KafkaError as error:
            raise self._unavailable(error) from error
        assembler = self._assembler
        window = _FIRST_LOOKBACK
        while True:
            assembler.reset()
            starts = {tp: max(begins[tp], ends[tp] - window) for tp in self._partitions}
            for tp, start in starts.items():
                self._consumer.seek(tp, start)
            while any(self._consumer.position(tp) < ends[tp] for tp in self._partitions):
                if time.monotonic() > deadline:
                    return  # keep what we have; later reads continue from here
                self._read(0.5)
            at_beginning = all(starts[tp] == begins[tp] for tp in self._partitions)
            newest_ready = max(assembler.ready, default=-1)
            # Done when a verified release is newer than every half-seen one (whose first
            # chunks lie before the window), or when the window is the whole topic.
            if at_beginning or newest_ready > max(assembler.pending, default=-1):
                # Incomplete releases older than the newest complete one are of no use.
                for version in [v for v in assembler.pending if v < newest_ready]:
                    del assembler.pending[version]
                return
            window *= 4


def _dead_letter_model(record: Mapping[str, Any]) -> str | None:
    """The model a dead letter is about: its model_id, else the original's (a rejected
    registration is dead-lettered whole, before its model_id was trusted)."""
    if record.get("model_id"):
        return str(record["model_id"])
    try:
        original = decode(bytes(record.get("original") or b"")).record
    except CodecError:
        return None
    value = original.get("model_id")
    return str(value) if value else None


def recent_dead_letters(
    config: EdgeConfig, model_id: str, *, lookback: int = 1000, timeout_s: float = 5.0
) -> list[dict[str, Any]]:
    """The DeadLetters of `model_id` among the last `lookback` records of the DLQ topic.

    Used to explain an `UnknownModelError`: when the job rejected a registration, the
    reason is there (BAD_REGISTRATION with a detail). Best effort: returns [] if the topic
    cannot be read.
    """
    import kafka.errors as kafka_errors
    from kafka import KafkaConsumer, TopicPartition

    found: list[dict[str, Any]] = []
    try:
        consumer = open_kafka_client(
            KafkaConsumer,
            config.bootstrap,
            config.security,
            timeout_s=config.connect_timeout_s,
            what="dead-letter reader",
            client_id=config.client_id or "fedstream-edge",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=config.max_fetch_bytes,
            bootstrap_timeout_ms=int(config.connect_timeout_s * 1000),
        )
    except EdgeError:
        return found
    try:
        partitions = consumer.partitions_for_topic(config.dlq_topic) or set()
        tps = [TopicPartition(config.dlq_topic, p) for p in sorted(partitions)]
        if not tps:
            return found
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        begins = consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(begins[tp], ends[tp] - lookback))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=500).values():
                for message in records:
                    try:
                        record = decode(message.value or b"", expected="DeadLetter").record
                    except CodecError:
                        continue  # not a dead letter: nothing to explain with it
                    if _dead_letter_model(record) == model_id:
                        found.append(record)
    except kafka_errors.KafkaError:
        pass
    finally:
        consumer.close()
    return found
