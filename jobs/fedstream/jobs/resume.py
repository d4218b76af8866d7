"""Which checkpoint a starting job restores, so that no release is lost or published twice.

**Resume by default.** A job restores the newest retained checkpoint under
`checkpoint.dir` unless told `--from-scratch`; a fresh start re-reads fl.control from the
beginning and publishes every model again from version 0, which devices (they never go
backwards) would ignore. So a fresh start is refused while the models topic already holds
releases, whether it was asked for (`--from-scratch`) or happens because no checkpoint
exists (lost checkpoints): the message says which models and what to do.

**No silent gap.** The KafkaSink commits the transaction a checkpoint pre-committed only
after that checkpoint completes; a job killed in between restores the checkpoint and
commits it then. When it stayed down longer than the transaction's `transaction.timeout.ms`,
the broker has aborted that transaction, and Flink's committer (flink-connector-kafka
`KafkaCommitter`: `InvalidTxnStateException` / `ProducerFencedException` are "known
reasons") only logs it and goes on: the releases of that checkpoint are gone while the
restored state is past them, a permanent version gap. The connector names the transaction
a checkpoint N pre-committed `<prefix>-<subtask>-<N>` (naming strategy INCREMENTING), so
before Flink starts we ask the transaction coordinator (DescribeTransactions) what became
of it, for both sinks:

- committed (or empty, or still open with time left): restore that checkpoint;
- aborted (or about to be): restoring it would leave the gap. The sound recovery is the
  previous retained checkpoint whose transactions are committed: fl.models holds exactly
  what its state released, and the updates absorbed since are re-read from fl.updates and
  absorbed again (offsets are in the checkpoint), so the lost versions are published anew,
  contiguous, each update counted once. The skipped checkpoint is renamed `lost-chk-N`
  (its transactional ids are reused by the next run, so it must never be judged again);
- no such checkpoint (all retained ones lost, or the coordinator no longer knows the ids:
  `transactional.id.expiration.ms`): refuse to start, naming the checkpoint, the
  transaction, the models and versions at stake, and what to do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from fedstream.jobs.config import JobConfig

#: An open transaction restored with less time than this left may be aborted before the
#: committer reaches it (the job needs tens of seconds to start): treated as lost.
START_MARGIN_MS = 60_000
#: Subtask ids probed beyond the configured parallelism (a job restored at a lower one).
_MAX_SUBTASKS = 128
SINK_ROLES = ("models", "dlq")


class ResumeRefusedError(RuntimeError):
    """The job must not start: the message says what happened and what to do."""


class Fate(Enum):
    """What became of the transaction a checkpoint pre-committed."""

    COMMITTED = "committed"
    PENDING = "open, committed when restored"
    LOST = "aborted by the broker"
    UNKNOWN = "unknown to the broker"


@dataclass(frozen=True)
class Transaction:
    transactional_id: str
    fate: Fate
    detail: str


@dataclass(frozen=True)
class Checkpoint:
    path: Path

    @property
    def number(self) -> int:
        return int(self.path.name.split("-")[1])


def checkpoint_root(config: JobConfig) -> Path:
    uri = config.checkpoint.dir
    if not uri.startswith("file://"):
        raise ResumeRefusedError(
            f"checkpoint.dir {uri} is not a file:// URI: resuming needs to list its "
            "checkpoints; pass --resume-from PATH or --from-scratch"
        )
    return Path(uri.removeprefix("file://"))


def retained(config: JobConfig) -> list[Checkpoint]:
    """The completed checkpoints (`chk-N/_metadata`) of the newest run, newest first.

    Only the newest run's: a run restored from checkpoint N numbers its own from N + 1 and
    reuses the transactional ids, so an older run's checkpoints cannot be judged by them."""
    found = [p.parent for p in checkpoint_root(config).glob("*/chk-*/_metadata")]
    if not found:
        return []
    newest = max(found, key=lambda p: (p.stat().st_mtime, int(p.name.split("-")[1])))
    run = newest.parent
    same_run = [Checkpoint(p) for p in found if p.parent == run]
    return sorted(same_run, key=lambda c: c.number, reverse=True)


def sink_prefix(config: JobConfig, role: str) -> str:
    """The transactional-id prefix of a sink (aggregation_job._sink)."""
    return f"{config.kafka.transactional_id_prefix}-{role}"


def _fate(description: Any, now_ms: int) -> tuple[Fate, str]:
    from kafka.admin._transactions import TransactionState as S

    state = description.state
    if state in (S.COMPLETE_COMMIT, S.EMPTY, S.PREPARE_COMMIT):
        return Fate.COMMITTED, state.value
    if state is S.ONGOING:
        left = description.transaction_start_time_ms + description.transaction_timeout_ms - now_ms
        if left > START_MARGIN_MS:
            return Fate.PENDING, f"open, {left // 1000} s before its timeout"
        return Fate.LOST, f"open, {max(left, 0) // 1000} s before its timeout"
    return Fate.LOST, state.value


def transactions_of(admin: Any, config: JobConfig, checkpoint: Checkpoint) -> list[Transaction]:
    """The fate of every sink transaction `checkpoint` pre-committed, as the broker says."""
    from kafka.errors import TransactionalIdNotFoundError

    out: list[Transaction] = []
    now_ms = int(time.time() * 1000)
    for role in SINK_ROLES:
        for subtask in range(_MAX_SUBTASKS):
            tid = f"{sink_prefix(config, role)}-{subtask}-{checkpoint.number}"
            try:
                description = admin.describe_transactions([tid])[tid]
            except TransactionalIdNotFoundError:
                if subtask < config.runtime.parallelism:
                    out.append(Transaction(tid, Fate.UNKNOWN, "no such transactional id"))
                    continue
                break
            out.append(Transaction(tid, *_fate(description, now_ms)))
    return out


def _models_sound(config: JobConfig, transactions: list[Transaction]) -> bool | None:
    """True: every release transaction is committed or pending; False: one is lost;
    None: the broker does not know one of them."""
    mine = [t for t in transactions if t.transactional_id.startswith(sink_prefix(config, "models"))]
    if any(t.fate is Fate.LOST for t in mine):
        return False
    if any(t.fate is Fate.UNKNOWN for t in mine):
        return None
    return True


def _describe(transactions: list[Transaction]) -> str:
    return "; ".join(f"{t.transactional_id}: {t.fate.value} ({t.detail})" for t in transactions)


def newest_versions(config: JobConfig, *, committed: bool = True) -> dict[str, int]:
    """Per model, the newest release version on the models topic (read_committed, or
    every record the log still holds, aborted ones included); records that are not
    releases are skipped."""
    from fedstream.jobs.kafka_read import read_topic
    from fedstream.schemas import CodecError, decode

    newest: dict[str, int] = {}
    values = read_topic(
        config.kafka.bootstrap,
        config.topics.models,
        config.kafka.security(),
        isolation="read_committed" if committed else "read_uncommitted",
    )
    for value in values:
        if value is None:  # a tombstone
            continue
        try:
            record = decode(value, expected="ModelRelease").record
        except CodecError:  # not a release: no version of anything
            continue
        model, version = str(record["model_id"]), int(record["version"])
        newest[model] = max(version, newest.get(model, -1))
    return newest


def lost_versions(config: JobConfig) -> str:
    """'m1: v6-v8 never committed (newest committed v5)' for every model whose log holds
    release records newer than its newest committed one (aborted or open transactions)."""
    committed = newest_versions(config)
    written = newest_versions(config, committed=False)
    parts = []
    for model, top in sorted(written.items()):
        base = committed.get(model, -1)
        if top > base:
            parts.append(f"{model}: v{base + 1}-v{top} not committed (newest committed v{base})")
    return ", ".join(parts) or "none found in the log"


def _set_aside(checkpoint: Checkpoint) -> Path:
    target = checkpoint.path.with_name(f"lost-{checkpoint.path.name}")
    checkpoint.path.rename(target)
    return target


def _refuse_fresh(config: JobConfig, why: str) -> None:
    """A fresh start would publish every registered model again from version 0."""
    published = newest_versions(config)
    if not published:
        return
    models = ", ".join(f"{m} (v{v})" for m, v in sorted(published.items())[:10])
    more = f" and {len(published) - 10} more" if len(published) > 10 else ""
    raise ResumeRefusedError(
        f"{why}, but {config.topics.models} already holds releases of {models}{more}. "
        "A fresh job would publish every model again from version 0, and devices, which "
        "never go backwards, would ignore it. Resume from the job's checkpoints "
        "(checkpoint.dir, or --resume-from PATH), or start over on new topics "
        "(topics.*) or, on the local stack, delete these topics first."
    )


def choose_restore(
    config: JobConfig, resume_from: str | None, *, from_scratch: bool = False
) -> str | None:
    """The checkpoint or savepoint to restore (None: a fresh start), after the checks in
    the module docstring; `ResumeRefusedError` when none is sound. Prints what it chose."""
    from kafka.admin import KafkaAdminClient

    from fedstream.jobs.kafka_clients import kafka_client

    if from_scratch:
        _refuse_fresh(config, "--from-scratch was asked for")
        say("starting from scratch (--from-scratch): checkpoints are ignored")
        return None
    if resume_from not in (None, "latest"):
        candidates = [Checkpoint(Path(str(resume_from).removeprefix("file://")))]
        explicit = True
    else:
        candidates, explicit = retained(config), False
        if not candidates:
            _refuse_fresh(config, f"there is no checkpoint in {config.checkpoint.dir}")
            say("resuming from nothing (no checkpoint yet): a fresh start")
            return None
    admin = kafka_client(KafkaAdminClient, config, what="transaction check")
    try:
        return _pick(admin, config, candidates, explicit)
    finally:
        admin.close()


def _pick(admin: Any, config: JobConfig, candidates: list[Checkpoint], explicit: bool) -> str:
    skipped: list[tuple[Checkpoint, list[Transaction]]] = []
    for checkpoint in candidates:
        if not checkpoint.path.name.startswith("chk-"):  # a savepoint: nothing pre-committed
            say(f"resuming from {checkpoint.path}")
            return str(checkpoint.path)
        transactions = transactions_of(admin, config, checkpoint)
        sound = _models_sound(config, transactions)
        if sound is None and explicit:
            say(
                f"warning: cannot tell whether {checkpoint.path} reached the topics "
                f"({_describe(transactions)}); restoring it as asked"
            )
            sound = True
        if sound:
            _warn_lost_dead_letters(config, transactions)
            for lost, lost_tx in skipped:
                target = _set_aside(lost)
                say(
                    f"skipped {lost.path.name}: its release transaction was lost "
                    f"({_describe(lost_tx)}); set aside as {target.name}. The updates "
                    "it absorbed are re-read from the updates topic and released again."
                )
            say(f"resuming from {checkpoint.path}")
            return str(checkpoint.path)
        skipped.append((checkpoint, transactions))
        if sound is None or explicit:
            break
    raise ResumeRefusedError(_refusal(config, skipped, explicit))


def _refusal(
    config: JobConfig, judged: list[tuple[Checkpoint, list[Transaction]]], explicit: bool
) -> str:
    lines = [
        "refusing to start: the releases pre-committed by "
        + ", ".join(c.path.name for c, _ in judged)
        + " never reached "
        + config.topics.models
        + " (the job was down longer than kafka.transaction_timeout_ms="
        + f"{config.kafka.transaction_timeout_ms}, and the broker aborted them), or the broker "
        "cannot say what became of them; restoring would leave a permanent version gap.",
        "transactions: " + "; ".join(_describe(t) for _, t in judged if t),
        f"models at stake: {lost_versions(config)}.",
        "What to do: restore an older checkpoint or savepoint whose releases are on the "
        "topic (--resume-from PATH; its updates are re-read and released again while "
        "fl.updates still holds them), or start over on new topics (--from-scratch).",
    ]
    if not explicit:
        lines.insert(1, f"no retained checkpoint of {config.checkpoint.dir} is sound.")
    return "\n".join(line for line in lines if not line.endswith(": "))


def _warn_lost_dead_letters(config: JobConfig, transactions: list[Transaction]) -> None:
    lost = [
        t
        for t in transactions
        if t.transactional_id.startswith(sink_prefix(config, "dlq")) and t.fate is Fate.LOST
    ]
    if lost:
        say(f"warning: dead letters of the restored checkpoint were lost: {_describe(lost)}")


def say(text: str) -> None:
    print(f"fedstream: {text}", flush=True)
