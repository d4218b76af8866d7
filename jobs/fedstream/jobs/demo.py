"""`make demo`: fedstream end to end on one machine.

1. the local Kafka broker (infra/local/kafka.sh; reused if one already runs), secured:
   the job and the fleet log in with the [kafka] principal of jobs/config/local.toml (the
   stack's admin; a provisioned deployment sets kafka.username / password_file),
2. the aggregation job in a Flink mini-cluster (EXACTLY_ONCE checkpoints),
3. a simulated fleet (fedstream.edge.simulator): 20 devices with a 10x speed spread,
   dropouts and non-IID digits, first asynchronous (FedBuff), then synchronous FedAvg on the
   same fleet and data, each device running every release with onnxruntime,
4. a report: accuracy vs time for both, staleness histogram, one-line summary.

Each run uses topics of its own (demo-<run>-...), so a re-run never re-reads an older run.
Everything it started is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from fedstream.edge.errors import EdgeError
from fedstream.jobs.config import ConfigError, load
from fedstream.jobs.kafka_clients import check_kafka
from fedstream.jobs.launcher import REPO, JobProcess
from fedstream.jobs.topics import ensure_topics

KAFKA_SH = REPO / "infra" / "local" / "kafka.sh"


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def stack_overrides() -> dict[str, str]:
    """Follow the local stack when FEDSTREAM_KAFKA_PORT / FEDSTREAM_KAFKA_DIR move it (the
    config's defaults name port 9092 and infra/local/.run/kafka): the demo starts that
    stack, so its job and fleet must connect to it and log in with its credentials."""
    out: dict[str, str] = {}
    if port := os.environ.get("FEDSTREAM_KAFKA_PORT"):
        out["kafka.bootstrap"] = f"127.0.0.1:{port}"
    if folder := os.environ.get("FEDSTREAM_KAFKA_DIR"):
        credentials = Path(folder).resolve() / "credentials"
        out["kafka.password_file"] = str(credentials / "admin.password")
        out["kafka.ca_file"] = str(credentials / "ca.pem")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--duration", type=float, default=150.0, help="max seconds per run")
    parser.add_argument("--target-accuracy", type=float, default=0.9)
    parser.add_argument("--out", type=Path, default=REPO / "demo-report")
    parser.add_argument("--keep-broker", action="store_true", help="leave the broker running")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a job config key, e.g. the principal the job and the fleet log in as: "
        "--set kafka.username=job --set kafka.password_file=PATH (default: the stack's admin)",
    )
    args = parser.parse_args(argv)

    run = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
    work = REPO / "infra" / "local" / ".run" / "demo" / run
    work.mkdir(parents=True, exist_ok=True)
    overrides = {
        "topics.updates": f"demo-{run}-updates",
        "topics.control": f"demo-{run}-control",
        "topics.models": f"demo-{run}-models",
        "topics.dlq": f"demo-{run}-dlq",
        "kafka.group_id": f"demo-{run}",
        "kafka.transactional_id_prefix": f"demo-{run}",
        "checkpoint.dir": (work / "checkpoints").as_uri(),
        "checkpoint.interval_ms": "1000",
        **stack_overrides(),
    }
    for pair in args.set:
        key, sep, value = pair.partition("=")
        if not sep:
            parser.error(f"--set expects section.key=value, got {pair!r}")
        overrides[key] = value
    config = load(overrides=overrides)
    say(f"Kafka broker at {config.kafka.bootstrap}")
    was_running = subprocess.run([str(KAFKA_SH), "status"], capture_output=True).returncode == 0
    subprocess.run([str(KAFKA_SH), "start"], check=True)
    job = JobProcess(overrides, work / "job.log")
    fleet: subprocess.Popen[bytes] | None = None

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        check_kafka(config)  # a refused login ends the demo here, in one line
        ensure_topics(config)
        say(f"aggregation job in a local mini-cluster (log: {job.log})")
        job.start()
        say(f"fleet of {args.devices} devices: async (FedBuff) then sync (FedAvg)")
        fleet = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedstream.edge.simulator",
                "--bootstrap",
                config.kafka.bootstrap,
                # the job's principal and CA (paths only; the local stack's admin for now)
                *config.kafka.security().arguments(),
                "--updates-topic",
                config.topics.updates,
                "--control-topic",
                config.topics.control,
                "--models-topic",
                config.topics.models,
                "--dlq-topic",
                config.topics.dlq,
                "--devices",
                str(args.devices),
                "--mode",
                "both",
                "--duration",
                str(args.duration),
                "--target-accuracy",
                str(args.target_accuracy),
                "--out",
                str(args.out),
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        code = fleet.wait()
        if not job.alive():
            print(f"the job died; its log:\n{job.log_tail()}", file=sys.stderr)
            return 1
        if code == 0:
            say(f"report: {args.out}/ (report.json, accuracy_vs_time.png, staleness_hist.png)")
        return code
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    except (ConfigError, EdgeError) as error:  # bad credentials, no broker
        print(f"demo: {error}", file=sys.stderr)
        return 2
    finally:
        if fleet is not None and fleet.poll() is None:
            fleet.terminate()
            fleet.wait(timeout=30)
        job.kill()
        if not was_running and not args.keep_broker:
            subprocess.run([str(KAFKA_SH), "stop"], check=False)


if __name__ == "__main__":
    sys.exit(main())
