"""Does a checkpoint of an older job version restore into this one? (operator uids, key
groups and state formats unchanged: issue 13's topology changes were checked this way.)

    python -m bench.restore_check --old-ref main
    python -m bench.restore_check --old-ref main --reverse   # the rollback

The older version is `git archive`d into a temporary folder and run first (its folders
ahead on PYTHONPATH), on a fresh broker with one model (window K = 10): it absorbs 25
updates, so 5 wait in the open window, and is SIGKILLed once a checkpoint holds them. This
checkout's job then resumes from that checkpoint and absorbs 25 more. It passes when
versions 0-5 are released and every one of the 50 updates is in exactly one release's
lineage: the open window, the dedupe state and the device gate's keys all came through
(an update of a device whose key was lost would be refused). `--reverse` checks the
rollback instead: this checkout's job runs first and the older one resumes from its
checkpoint. Not a test (it needs two versions of the code); exit status 1 on failure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from kafka import KafkaProducer

from bench.bench_fleet import BenchFleet, bench_delta, registration_value
from bench.job_session import ReleaseWatcher, _overrides, log
from bench.kafka_stack import BenchKafka, broker, signing_keys
from fedstream.jobs.config import load
from fedstream.jobs.launcher import JobProcess
from fedstream.jobs.topics import ensure_topics
from fedstream.schemas import registration_key
from fedstream.schemas.signing import load_signing_key

REPO = Path(__file__).resolve().parents[1]
MODEL = "restore-model"


def old_checkout(ref: str, into: Path) -> str:
    """`ref` exported into `into` (sharing this checkout's JVM artifacts); its PYTHONPATH."""
    archive = subprocess.run(["git", "archive", ref], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    (into / "infra" / "local" / ".lib").symlink_to(REPO / "infra" / "local" / ".lib")
    return ":".join(str(into / part) for part in ("schemas", "pipelines", "jobs", "edge"))


class Feed:
    """Signed updates of one model to the job's topics, and the releases coming back."""

    def __init__(self, kafka: BenchKafka, overrides: dict[str, str]) -> None:
        self.config = load(overrides=overrides)
        self.fleet, self.delta = BenchFleet(), bench_delta(1000)
        self.producer = KafkaProducer(**kafka.client_kwargs(), acks="all", enable_idempotence=True)
        self.watcher = ReleaseWatcher(kafka, self.config.topics.models)

    def register(self, owner_key: Path) -> None:
        for device_id, value in self.fleet.device_keys():
            self.producer.send(self.config.topics.devices, value, key=device_id.encode())
        value = registration_value(MODEL, 1000, 10, load_signing_key(owner_key))
        self.producer.send(self.config.topics.control, value, key=registration_key(MODEL))
        self.producer.flush()

    def send(self, ids: range, prefix: str, base: int) -> list[str]:
        sent = []
        for i in ids:
            update_id = f"{prefix}-{i}"
            value = self.fleet.update(MODEL, update_id, i, base, self.delta)
            self.producer.send(self.config.topics.updates, value, key=MODEL.encode(), partition=0)
            sent.append(update_id)
        self.producer.flush()
        return sent

    def wait(self, releases: int, job: JobProcess) -> None:
        deadline = time.monotonic() + 240
        while self.watcher.count() < releases:
            if not job.alive() or time.monotonic() > deadline:
                raise SystemExit(f"only {self.watcher.count()} releases:\n{job.log_tail()}")
            time.sleep(0.2)


def start_job(overrides: dict[str, str], log_file: Path, pythonpath: str | None) -> JobProcess:
    """A job of this checkout (`pythonpath` None) or of the one exported there."""
    if pythonpath is not None:
        os.environ["PYTHONPATH"] = pythonpath
    try:
        job = JobProcess(overrides, log_file)
        job.start()
    finally:
        if pythonpath is not None:
            os.environ.pop("PYTHONPATH")
    return job


def check(kafka: BenchKafka, old_path: str, work: Path, *, reverse: bool = False) -> bool:
    keys, owner = signing_keys(work)
    overrides = _overrides(kafka, work, uuid.uuid4().hex[:8], keys, {})
    ensure_topics(load(overrides=overrides))
    feed = Feed(kafka, overrides)
    first_path, second_path = (None, old_path) if reverse else (old_path, None)
    first = start_job(overrides, work / "first.log", first_path)
    try:
        feed.register(owner)
        feed.wait(1, first)
        sent = feed.send(range(25), "a", 0)
        feed.wait(3, first)  # versions 0-2; 5 updates in the open window
        time.sleep(4)  # a checkpoint (every second) holds them
    finally:
        first.kill()
    second = start_job(overrides, work / "second.log", second_path)
    try:
        sent += feed.send(range(25, 50), "b", 2)
        feed.wait(6, second)
    finally:
        second.kill()
        feed.watcher.close()
    lineage = [u for seen in feed.watcher.holding(set(sent)) for u in seen.update_ids]
    log(f"releases: {feed.watcher.count()}; updates absorbed {len(lineage)} of {len(sent)}")
    return feed.watcher.count() == 6 and sorted(lineage) == sorted(sent)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-ref", default="main", help="git ref of the older job version")
    parser.add_argument(
        "--reverse", action="store_true", help="this job first, the older one resumes (rollback)"
    )
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("FEDSTREAM_KAFKA_PORT", "49092"))
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="fedstream-restore-check-"))
    old_path = old_checkout(args.old_ref, Path(tempfile.mkdtemp(prefix="fedstream-old-")))
    with broker(args.port) as kafka:
        passed = check(kafka, old_path, work, reverse=args.reverse)
    what = f"restore into {args.old_ref}" if args.reverse else f"restore from {args.old_ref}"
    log(f"{what}: {'PASSED' if passed else 'FAILED'} (logs in {work})")
    raise SystemExit(0 if passed else 1)


if __name__ == "__main__":
    main()
