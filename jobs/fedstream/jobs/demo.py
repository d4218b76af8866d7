"""`make demo`: fedstream end to end on one machine, as an operator would run it.

1. the local Kafka broker (infra/local/kafka.sh; reused if one already runs), secured
   (SASL_SSL/SCRAM, its own CA),
2. provisioned with Terraform (infra/terraform/provision.sh apply: the fl.* topics, one
   SCRAM principal per role, least-privilege ACLs), idempotent,
3. the aggregation job in a Flink mini-cluster (EXACTLY_ONCE checkpoints) as the `job`
   principal, resuming from the previous demo's checkpoint when there is one, signing
   its releases with [signing] key_file (created on the first run),
4. the devices' identities: an Ed25519 key pair per device in infra/local/.run/demo/devices
   (created once), registered by the operator (admin) in the device registry before any
   device starts, so every update is signed and verified,
5. a simulated fleet (fedstream.edge.simulator): 20 devices with a 10x speed spread,
   dropouts and non-IID digits, as the `device` principal (models registered as `owner`,
   signed with the model owner's key the job trusts, [trust] owner_keys),
   first asynchronous (FedBuff), then synchronous FedAvg on the same fleet and data, each
   device running every release with onnxruntime once its signature verifies under the
   job's public key (FEDSTREAM_TRUSTED_KEYS),
6. a report: accuracy vs time for both, staleness histogram, one-line summary;
   meanwhile `fedstream dashboard` (as the read-only `auditor` principal) serves the live
   page at http://127.0.0.1:$FEDSTREAM_DASHBOARD_PORT/ (9250; the job's metrics endpoint
   is [metrics] prometheus_port, 9249, or $FEDSTREAM_METRICS_PORT), its URL printed first.

Each run registers models of its own (digits-<random>-<mode>). Everything it started is
stopped at the end, also on Ctrl-C. `make clean` (a new broker and topics) starts the job
afresh; removing only infra/local/.run/demo is refused, since fl.models holds the releases.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from fedstream.edge.errors import EdgeError
from fedstream.jobs.cli import ensure_local_keys
from fedstream.jobs.config import ConfigError, JobConfig, load
from fedstream.jobs.devices import enroll
from fedstream.jobs.kafka_clients import check_kafka
from fedstream.jobs.launcher import REPO, JobProcess
from fedstream.schemas.signing import ENV_TRUSTED_KEYS

KAFKA_SH = REPO / "infra" / "local" / "kafka.sh"
PROVISION_SH = REPO / "infra" / "terraform" / "provision.sh"


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def stack() -> tuple[str, Path]:
    """Bootstrap and credentials folder of the local stack the demo starts; both follow
    FEDSTREAM_KAFKA_PORT / FEDSTREAM_KAFKA_DIR, as kafka.sh and provision.sh do."""
    port = os.environ.get("FEDSTREAM_KAFKA_PORT", "9092")
    folder = Path(
        os.environ.get("FEDSTREAM_KAFKA_DIR", REPO / "infra" / "local" / ".run" / "kafka")
    )
    return f"127.0.0.1:{port}", folder.resolve() / "credentials"


def principal(credentials: Path, role: str) -> dict[str, str]:
    """Job config overrides that log in as one of the provisioned roles (files only)."""
    return {
        "kafka.username": role,
        "kafka.password_file": str(credentials / f"{role}.password"),
        "kafka.ca_file": str(credentials / "ca.pem"),
    }


def dashboard_command(
    config: JobConfig, credentials: Path, evaluations: Path, port: str
) -> list[str] | None:
    """`fedstream dashboard` as the read-only `auditor` (paths only on the command line,
    never a secret); None when the job has no metrics endpoint."""
    ports = config.metrics.ports()
    if ports is None:
        return None
    command = [sys.executable, "-m", "fedstream.jobs.cli", "dashboard", "--port", port]
    command += ["--metrics-url", f"http://127.0.0.1:{ports[0]}/metrics"]
    command += ["--evaluations", str(evaluations)]
    command += ["--set", f"kafka.bootstrap={config.kafka.bootstrap}"]
    for key, value in principal(credentials, "auditor").items():
        command += ["--set", f"{key}={value}"]
    for key in ("models", "dlq"):
        command += ["--set", f"topics.{key}={getattr(config.topics, key)}"]
    return command


def start_dashboard(
    config: JobConfig, credentials: Path, evaluations: Path
) -> subprocess.Popen[bytes] | None:
    """The dashboard on $FEDSTREAM_DASHBOARD_PORT (9250), its URL printed."""
    port = os.environ.get("FEDSTREAM_DASHBOARD_PORT", "9250")
    command = dashboard_command(config, credentials, evaluations, port)
    if command is None:
        say("no dashboard: metrics.prometheus_port is empty")
        return None
    say(f"dashboard: http://127.0.0.1:{port}/  (live while the demo runs)")
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)


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
        help="override a job config key, e.g. --set checkpoint.interval_ms=2000 "
        "(the job logs in as the provisioned 'job' principal)",
    )
    args = parser.parse_args(argv)

    bootstrap, credentials = stack()
    work = REPO / "infra" / "local" / ".run" / "demo"
    work.mkdir(parents=True, exist_ok=True)
    overrides = {
        "kafka.bootstrap": bootstrap,
        **principal(credentials, "job"),
        **(
            {"metrics.prometheus_port": os.environ["FEDSTREAM_METRICS_PORT"]}
            if "FEDSTREAM_METRICS_PORT" in os.environ
            else {}
        ),
        "checkpoint.dir": (work / "checkpoints").as_uri(),
        "checkpoint.interval_ms": "1000",
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
    say("provisioning topics, principals and ACLs with Terraform (infra/terraform/provision.sh)")
    subprocess.run([str(PROVISION_SH), "apply"], check=True)
    job = JobProcess(overrides, work / "job.log", create_topics=False)
    fleet: subprocess.Popen[bytes] | None = None
    dashboard: subprocess.Popen[bytes] | None = None
    evaluations = work / "evaluations.jsonl"

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        check_kafka(config)  # a refused login ends the demo here, in one line
        ensure_local_keys(config)
        public_key = config.signing.key_path().with_suffix(".pub")
        owner_key = (config.trust.owner_key_paths() or [public_key])[0].with_suffix(".key")
        say(f"aggregation job in a local mini-cluster as 'job' (log: {job.log})")
        job.start()  # resumes the last demo's checkpoint, if any
        dashboard = start_dashboard(config, credentials, evaluations)
        keys = work / "devices"
        say(f"registering {args.devices} device keys as the operator (keys in {keys})")
        operator = load(overrides={**overrides, **principal(credentials, "admin")})
        ids = [f"{mode}-dev-{i:03d}" for mode in ("async", "sync") for i in range(args.devices)]
        enroll(operator, keys, ids)  # the simulator's device ids, per mode
        say(f"fleet of {args.devices} devices as 'device': async (FedBuff) then sync (FedAvg)")
        device = load(overrides={**overrides, **principal(credentials, "device")}).kafka.security()
        fleet = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedstream.edge.simulator",
                "--bootstrap",
                config.kafka.bootstrap,
                # paths only: no secret ever goes on a command line
                *device.arguments(),
                "--owner-username",
                "owner",
                "--owner-password-file",
                str(credentials / "owner.password"),
                "--owner-key-file",  # registrations signed by the owner key the job trusts
                str(owner_key),
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
                "--device-keys",
                str(keys),
                "--evaluations",
                str(evaluations),
            ],
            cwd=REPO,
            # the devices install only releases signed by the job's key
            env={**os.environ, "PYTHONUNBUFFERED": "1", ENV_TRUSTED_KEYS: str(public_key)},
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
        for child in (fleet, dashboard):
            if child is not None and child.poll() is None:
                child.terminate()
                child.wait(timeout=30)
        job.kill()
        if not was_running and not args.keep_broker:
            subprocess.run([str(KAFKA_SH), "stop"], check=False)


if __name__ == "__main__":
    sys.exit(main())
