"""A job down longer than its sink's transaction timeout: no silent version gap.

The KafkaSink commits what checkpoint N pre-committed only once N is complete. Here the
job is frozen (SIGSTOP) the moment chk-N's `_metadata` appears, and killed if the
release transaction of N is still open: the exact state a crash between a checkpoint and
its commit leaves. With a short `transaction.timeout.ms` the broker then aborts that
transaction. Restoring chk-N would commit nothing and leave those versions missing from
the models topic for good (Flink's committer only logs the abort); `fedstream.jobs.resume`
must either recover (restore the previous checkpoint and release the lost versions
again from the re-read updates) or refuse to start with a message that says why.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient
from kafka.admin._transactions import TransactionState

from fedstream.jobs.config import load
from fedstream.jobs.launcher import REPO, JobProcess
from fedstream.jobs.topics import ensure_topics
from tests.integration.test_job_exactly_once import MODEL, WINDOW, Fleet, check_invariants
from tests.support.job_runner import JobTopics, job_process
from tests.support.kafka_io import releases, wait_for
from tests.support.onnx_models import linear_model
from tests.support.stack import Broker

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]

#: The sink's transaction timeout: above 3 checkpoint intervals + the restart delay.
TIMEOUT_MS = 8000


def _state(admin: KafkaAdminClient, transactional_id: str) -> TransactionState | None:
    from kafka.errors import TransactionalIdNotFoundError

    try:
        state: TransactionState = admin.describe_transactions([transactional_id])[
            transactional_id
        ].state
    except TransactionalIdNotFoundError:
        return None
    return state


def _crash_between_checkpoint_and_commit(
    job: JobProcess, fleet: Fleet, checkpoints: Path, topics: JobTopics, admin: KafkaAdminClient
) -> tuple[Path, set[str]]:
    """Send a window, freeze the job when the next checkpoint completes; if its release
    transaction is still open, kill the job there (else let it go on and try again).
    Returns the checkpoint whose releases were pre-committed but never committed."""
    accepted: set[str] = set()
    assert job.pid is not None
    for _attempt in range(40):
        done = {p.parent for p in checkpoints.glob("*/chk-*/_metadata")}
        newest = max(done, key=lambda p: int(p.name.split("-")[1]))
        number = int(newest.name.split("-")[1])
        accepted |= set(fleet.send(WINDOW, 0))  # one window: one release
        time.sleep(0.3)  # absorbed before the next barrier
        following = [newest.parent / f"chk-{n}" / "_metadata" for n in (number + 1, number + 2)]
        deadline = time.monotonic() + 20
        while not any(p.exists() for p in following) and time.monotonic() < deadline:
            time.sleep(0.0005)
        os.killpg(job.pid, signal.SIGSTOP)
        target = next(p.parent for p in reversed(following) if p.exists())
        tid = f"fedstream-{topics.suffix}-models-0-{target.name.split('-')[1]}"
        if _state(admin, tid) is TransactionState.ONGOING:
            job.kill()
            return target, accepted
        os.killpg(job.pid, signal.SIGCONT)
    raise AssertionError("never caught a checkpoint before its commit in 40 attempts")


def _refused_start(job: JobProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """The job started with `job`'s settings and `args`: it must refuse before Flink."""
    refused = subprocess.run(
        [sys.executable, "-m", "fedstream.jobs.aggregation_job", "--local"]
        + [a for k, v in job.overrides.items() for a in ("--set", f"{k}={v}")]
        + list(args),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0, refused.stdout
    return refused


def test_a_transaction_aborted_while_down_is_recovered_not_skipped(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    topics = JobTopics()
    ensure_topics(load(overrides={**topics.overrides(), **kafka_broker.job_overrides()}))
    checkpoints = tmp_path / "checkpoints"
    settings = {"kafka.transaction_timeout_ms": str(TIMEOUT_MS)}
    job = job_process(kafka_broker, checkpoints, topics, tmp_path / "job.log", **settings)
    fleet = Fleet(kafka_broker, topics, linear_model(inputs=8, outputs=4))
    admin = KafkaAdminClient(**kafka_broker.client_kwargs(), request_timeout_ms=30000)
    try:
        job.start()
        fleet.register(job, timeout=300)  # a job's first start is slow on a busy machine
        accepted = set(fleet.send(2 * WINDOW, 0))
        wait_for(lambda: len(releases(kafka_broker, topics.models)) >= 3, 120, "v2", job.log_tail)
        lost, more = _crash_between_checkpoint_and_commit(job, fleet, checkpoints, topics, admin)
        accepted |= more
        tid = f"fedstream-{topics.suffix}-models-0-{lost.name.split('-')[1]}"
        # down longer than the timeout: the broker aborts the pre-committed transaction
        wait_for(
            lambda: _state(admin, tid) is TransactionState.COMPLETE_ABORT,
            90,
            f"the broker to abort {tid}",
            lambda: str(_state(admin, tid)),
        )
        published = [r.version for r in releases(kafka_broker, topics.models)]
        accepted |= set(fleet.send(WINDOW, 0))  # sent while the job is down

        # Restoring that very checkpoint is refused, naming what was lost and what to do.
        refused = _refused_start(job, "--resume-from", str(lost))
        assert f"refusing to start: the releases pre-committed by {lost.name}" in refused.stderr
        assert f"{tid}: aborted by the broker (CompleteAbort)" in refused.stderr
        assert f"v{max(published) + 1}-v" in refused.stderr  # the versions at stake
        assert "--resume-from PATH" in refused.stderr and "--from-scratch" in refused.stderr
        # and so is a fresh start: it would publish the model again from version 0
        fresh = _refused_start(job, "--from-scratch")
        assert f"already holds releases of {MODEL} (v{max(published)})" in fresh.stderr

        # The default start recovers: the previous checkpoint, whose releases are on the
        # topic, and the updates since re-read and released again.
        job.start()
        accepted |= set(fleet.send(WINDOW, 0))
        found = []

        def all_absorbed() -> bool:
            nonlocal found
            assert job.alive(), job.log_tail()
            found = releases(kafka_broker, topics.models)
            return sum(int(r.lineage["num_updates"]) for r in found) >= len(accepted)

        wait_for(all_absorbed, 180, f"{len(accepted)} absorbed updates", job.log_tail)
        check_invariants(fleet, found, accepted)  # contiguous versions, each update once
        log = job.log.read_text().split("==== start")[-1]
        assert f"skipped {lost.name}: its release transaction was lost" in log
        assert (lost.parent / f"lost-{lost.name}").is_dir() and not lost.exists()
    finally:
        job.kill()
        fleet.close()
        admin.close()
