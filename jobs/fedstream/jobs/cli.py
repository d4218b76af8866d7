"""`fedstream`: operate the aggregation job from a shell.

    fedstream topics                     create the job's topics (local stack / dev)
    fedstream register --model-id M --onnx model.onnx [--window-count K] [...]
    fedstream run                        run the job in a local mini-cluster (foreground),
                                         resuming its newest sound checkpoint [--from-scratch]
    fedstream submit                     submit the job to a Flink cluster (`flink run -py`),
                                         resuming the same way [--resume-from PATH]
    fedstream releases --model-id M      versions of a model: time, contributors, staleness
    fedstream dead-letters               what was refused, and why
    fedstream keygen --out DIR [--owner] the job's release-signing key pair (Ed25519), or
                                         a model owner's registration-signing pair
    fedstream devices keygen --out DIR   a device's key pair (DIR/device.key 0600, device.pub)
    fedstream devices register --device-id D --public-key-file F   accept D's signed updates
    fedstream devices revoke --device-id D                         refuse D's updates
    fedstream devices list               the device registry (key ids and status)
    fedstream dashboard [--port P]       a local web page: per model version, updates/s,
                                         staleness, release latency, accuracy, dead letters
    fedstream status                     one line per model from the job's metrics endpoint

Every command reads the same config file as the job (`--config`, default
jobs/config/local.toml) and accepts `--set section.key=value` overrides. Every command logs
in to Kafka as the config's principal ([kafka] username, password_file, ca_file; the local
stack's admin by default); a refused login or a missing credentials file ends the command
with one line saying what to check (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedstream.jobs.config import ConfigError, JobConfig, load
from fedstream.schemas.registration_signing import ENV_OWNER_KEY_FILE, OWNER_KEY_FILE

if TYPE_CHECKING:
    from fedstream.schemas.signing import ReleaseSigner

REPO = Path(__file__).resolve().parents[3]
JOB_FILE = Path(__file__).resolve().parent / "aggregation_job.py"
#: Bytes a Kafka record batch adds around one record's key and value, generously.
_RECORD_FRAMING = 1024


def _config(args: argparse.Namespace) -> JobConfig:
    from fedstream.jobs.aggregation_job import parse_overrides

    return load(args.config, parse_overrides(args.set))


def _time(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def cmd_topics(args: argparse.Namespace) -> int:
    from fedstream.jobs.topics import ensure_topics

    config = _config(args)
    created = ensure_topics(config)
    print(f"topics at {config.kafka.bootstrap}: created {', '.join(created) or 'none (all exist)'}")
    return 0


def _aggregation(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = json.loads(args.aggregation.read_text()) if args.aggregation else {}
    if args.window_count is not None or args.window_seconds is not None:
        settings["window"] = {"count": args.window_count, "seconds": args.window_seconds}
    if args.mode:
        settings["mode"] = args.mode
    if args.max_staleness is not None:
        settings["max_staleness"] = args.max_staleness
    return settings


def _owner_key(config: JobConfig, path: Path | None) -> ReleaseSigner | None:
    """The model owner's signing key: --owner-key-file, else $FEDSTREAM_OWNER_KEY_FILE,
    else the private half next to the local stack's first trust.owner_keys entry. None
    only when the job accepts unsigned registrations and no key is at hand."""
    from fedstream.schemas.signing import SigningKeyError, load_signing_key

    env = os.environ.get(ENV_OWNER_KEY_FILE)
    public = config.trust.owner_key_paths() or []
    local = public[0].with_suffix(".key") if public else None
    chosen = path or (Path(env) if env else None) or (local if local and local.exists() else None)
    if chosen is None:
        if config.trust.allow_unsigned_registrations:
            return None
        raise ConfigError(
            "registrations must be signed by a model owner: pass --owner-key-file "
            f"(or set {ENV_OWNER_KEY_FILE}); create a pair with `fedstream keygen --owner`"
        )
    try:
        return load_signing_key(chosen)
    except SigningKeyError as error:
        raise ConfigError(f"owner key: {error}") from None


def cmd_register(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer

    from fedstream.jobs.kafka_clients import kafka_client
    from fedstream.jobs.registration import registration_bytes
    from fedstream.schemas import registration_key

    config = _config(args)
    names = args.params.split(",") if args.params else None
    owner = _owner_key(config, args.owner_key_file)
    value = registration_bytes(
        args.model_id, args.onnx.read_bytes(), names, _aggregation(args), owner
    )
    key = registration_key(args.model_id)
    values = _registration_values(config, value, key, args.model_id, owner)
    if isinstance(values, str):
        print(values, file=sys.stderr)
        return 1
    producer = kafka_client(
        KafkaProducer,
        config,
        what="registration producer",
        acks="all",
        max_request_size=config.topics.updates_max_message_bytes + 65536,
    )
    try:
        # keyed by model id: the control topic is compacted (fedstream.schemas.keys); in
        # order, one acknowledged record after another
        for piece in values:
            producer.send(config.topics.control, piece, key=key).get(timeout=60)
    finally:
        producer.close()
    pieces = f", in {len(values)} fragments" if len(values) > 1 else ""
    print(f"registered {args.model_id!r} ({len(value)} bytes{pieces}) on {config.topics.control}")
    return 0


def _registration_values(
    config: JobConfig, value: bytes, key: bytes, model_id: str, owner: ReleaseSigner | None
) -> list[bytes] | str:
    """The records that carry the encoded registration `value`: itself when it fits the
    control topic, else its fragments signed by `owner` (`fedstream.schemas.fragments`);
    or why it cannot be sent."""
    from fedstream.schemas.fragments import encoded_fragments

    room = config.topics.updates_max_message_bytes - _RECORD_FRAMING - len(key)
    if len(value) <= room:
        return [value]
    if owner is None:
        return f"registration is {len(value)} bytes, over the control topic's limit (unsigned)"
    count, pieces = encoded_fragments(
        value, room, record_id=model_id, signer=owner.key_id, key=owner
    )
    if count > config.limits.max_fragments:
        limit = config.limits.max_fragments
        return f"registration of {len(value)} bytes needs {count} fragments (limit {limit})"
    return list(pieces)


def _job_args(args: argparse.Namespace) -> list[str]:
    out = ["--config", str(args.config)] if args.config else []
    for pair in args.set:
        out += ["--set", pair]
    return out


def cmd_keygen(args: argparse.Namespace) -> int:
    """DIR/job-signing.key (0600, for the job's signing.key_file) and DIR/job-signing.pub
    (for the devices' trusted keys), or with --owner DIR/owner-signing.key (the owner's, for
    `register`) and .pub (for the job's trust.owner_keys); never overwrites a key."""
    from fedstream.schemas.signing import write_key_pair

    try:
        private, public, key_id = write_key_pair(
            args.out, *([OWNER_KEY_FILE] if args.owner else [])
        )
    except FileExistsError as error:
        print(f"fedstream keygen: {error.filename} exists; not replacing a key", file=sys.stderr)
        return 2
    print(f"key id {key_id}\nprivate key {private} (0600)\npublic key  {public}")
    return 0


def ensure_local_keys(config: JobConfig) -> None:
    """Create the local stack's key pairs when they do not exist yet: the job's at
    signing.key_file, and a model owner's next to the first trust.owner_keys entry
    (`fedstream run` and the demo only: a deployment provisions its keys; a new job key
    there would make every device refuse the releases)."""
    from fedstream.schemas.signing import write_key_pair

    path = config.signing.key_path()
    if not path.exists():
        if path.suffix != ".key":
            raise ConfigError(
                f"signing.key_file {path} does not exist (create it: fedstream keygen)"
            )
        _private, public, key_id = write_key_pair(path.parent, path.stem)
        print(f"fedstream: created signing key {key_id}; devices trust {public}", flush=True)
    owners = config.trust.owner_key_paths()
    if owners and not owners[0].exists() and owners[0].suffix == ".pub":
        private, _public, key_id = write_key_pair(owners[0].parent, owners[0].stem)
        print(f"fedstream: created model-owner key {key_id} ({private})", flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    from fedstream.jobs.aggregation_job import main as job_main

    ensure_local_keys(_config(args))
    job_main(["--local", "--create-topics", *_job_args(args), *_restore_args(args)])
    return 0


def _restore_args(args: argparse.Namespace) -> list[str]:
    if args.from_scratch:
        return ["--from-scratch"]
    return ["--resume-from", args.resume_from] if args.resume_from else []


def _add_restore_options(command: argparse.ArgumentParser) -> None:
    """--resume-from / --from-scratch, the job's own options (fedstream.jobs.resume)."""
    group = command.add_mutually_exclusive_group()
    group.add_argument(
        "--resume-from",
        metavar="PATH|latest",
        help="a chk-N or savepoint dir (default: the newest sound checkpoint in checkpoint.dir)",
    )
    group.add_argument(
        "--from-scratch",
        action="store_true",
        help="ignore the checkpoints (refused while the models topic holds releases)",
    )


def cmd_submit(args: argparse.Namespace) -> int:
    """`flink run -py` with our code shipped as -pyfs (what PyFlink documents), restoring
    the checkpoint `fedstream.jobs.resume` chooses (the newest sound one by default)."""
    from fedstream.jobs.aggregation_job import source_folders
    from fedstream.jobs.resume import ResumeRefusedError, choose_restore

    config = _config(args)
    try:
        restore = choose_restore(config, args.resume_from, from_scratch=args.from_scratch)
    except ResumeRefusedError as error:
        print(f"fedstream submit: {error}", file=sys.stderr)
        return 2
    # the job file decides again on the client: tell it what was chosen
    decided = ["--resume-from", restore] if restore else ["--from-scratch"]

    flink = [str(args.flink)] if args.flink else [str(REPO / "infra/local/flink.sh"), "cli"]
    command = [
        *flink,
        "run",
        "--detached",
        "--python",
        str(JOB_FILE),
        "--pyFiles",
        ",".join(str(p) for p in source_folders()),
        *(["--fromSavepoint", restore] if restore else []),
        *_job_args(args),
        *decided,
    ]
    print("$ " + " ".join(command), flush=True)
    return subprocess.call(command, cwd=REPO)


def cmd_releases(args: argparse.Namespace) -> int:
    from fedstream.jobs.kafka_read import read_topic
    from fedstream.schemas import decode

    config = _config(args)
    rows = []
    for value in read_topic(config.kafka.bootstrap, config.topics.models, config.kafka.security()):
        record = decode(value, expected="ModelRelease").record
        if record["model_id"] != args.model_id or record["chunk_index"] != 0:
            continue
        lineage = record["lineage"]
        rows.append(
            (
                record["version"],
                _time(record["created_at"]),
                lineage["num_updates"],
                lineage["num_samples"],
                f"{lineage['staleness_min']}/{lineage['staleness_mean']:.1f}/{lineage['staleness_max']}",
                f"{record['onnx_size'] / 1024:.0f} KiB",
                record["sha256"][:12],
            )
        )
    if not rows:
        print(f"no releases of {args.model_id!r} on {config.topics.models}", file=sys.stderr)
        return 1
    header = (
        "version",
        "created (UTC)",
        "updates",
        "devices",
        "staleness min/mean/max",
        "size",
        "sha256",
    )
    _table(header, rows)
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from fedstream.jobs.kafka_read import read_topic
    from fedstream.schemas import decode

    config = _config(args)
    letters = [
        decode(v, expected="DeadLetter").record
        for v in read_topic(config.kafka.bootstrap, config.topics.dlq, config.kafka.security())
    ]
    counts = Counter(str(d["reason"]) for d in letters)
    for reason, count in counts.most_common():
        example = next(d for d in letters if d["reason"] == reason)
        print(f"{reason:<18} {count:>6}  e.g. {example['detail'][:90]}")
    if not letters:
        print(f"no dead letters on {config.topics.dlq}")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    """The device registry (`fedstream.jobs.devices`); only public keys are printed."""
    from fedstream.jobs import devices

    if args.action == "keygen":
        try:
            private, public, key_id = devices.generate(args.out)
        except FileExistsError as error:
            print(
                f"fedstream devices: {error.filename} exists; not replacing a key", file=sys.stderr
            )
            return 2
        print(f"key id {key_id}\nprivate key {private} (0600)\npublic key  {public}")
        return 0
    config = _config(args)
    if args.action == "list":
        rows = [
            (d["device_id"], d["key_id"], d["status"], _time(d["created_at"]))
            for d in sorted(devices.list_devices(config).values(), key=lambda d: d["device_id"])
        ]
        _table(("device", "key id", "status", "since (UTC)"), rows)
        return 0
    if not args.device_id:
        print(f"fedstream devices {args.action}: --device-id is required", file=sys.stderr)
        return 2
    if args.action == "register":
        if args.public_key_file is None:
            print("fedstream devices register: --public-key-file is required", file=sys.stderr)
            return 2
        record = devices.register(config, args.device_id, args.public_key_file)
    else:
        try:
            record = devices.revoke(config, args.device_id)
        except LookupError as error:
            print(f"fedstream devices revoke: {error}", file=sys.stderr)
            return 1
    print(f"{record['status'].lower()}: device {args.device_id!r} key {record['key_id']}")
    return 0


def _metrics_url(config: JobConfig, url: str | None) -> str:
    """--metrics-url, else the config's own endpoint (the first port of
    metrics.prometheus_port, on this machine)."""
    if url:
        return url
    ports = config.metrics.ports()
    if ports is None:
        raise ConfigError("metrics.prometheus_port is empty: pass --metrics-url")
    return f"http://127.0.0.1:{ports[0]}/metrics"


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve the dashboard until interrupted (`fedstream.jobs.dashboard`)."""
    from fedstream.jobs.dashboard.server import Dashboard, serve

    config = _config(args)
    dashboard = Dashboard(
        config,
        _metrics_url(config, args.metrics_url),
        evaluations=args.evaluations,
        refresh_s=args.refresh,
        kafka=not args.no_kafka,
    )
    server = serve(dashboard, args.host, args.port)
    port = server.server_address[1]
    dashboard.start()
    print(
        f"fedstream dashboard: http://{args.host}:{port}/  (metrics {dashboard.metrics_url})",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        dashboard.stop()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """One scrape of the job's metrics endpoint, one row per model."""
    from fedstream.jobs.dashboard.figures import model_figures
    from fedstream.jobs.dashboard.prometheus import scrape

    config = _config(args)
    url = _metrics_url(config, args.metrics_url)
    try:
        figures = model_figures(scrape(url))
    except OSError as error:
        print(f"fedstream status: no job metrics at {url} ({error})", file=sys.stderr)
        return 1
    if not figures:
        print(f"no model has reported at {url} yet")
        return 0
    rows = [
        (
            f.model_id,
            f.version,
            f.absorbed,
            f.refused_total,
            ", ".join(f"{r} {n}" for r, n in sorted(f.refused.items())) or "-",
            f.window_fill,
            f.releases,
            "-" if f.mean_latency_ms is None else f"{f.mean_latency_ms:.0f} ms",
        )
        for f in figures.values()
    ]
    header = (
        "model",
        "version",
        "absorbed",
        "refused",
        "by reason",
        "window",
        "releases",
        "latency",
    )
    _table(header, rows)
    return 0


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


def parser() -> argparse.ArgumentParser:
    summary, _, details = __doc__.partition("\n\n")
    root = argparse.ArgumentParser(
        prog="fedstream",
        description=summary.strip("`").replace("`", ""),
        epilog="commands:\n" + details,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML config (default jobs/config/local.toml)")
    common.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    sub = root.add_subparsers(dest="command", required=True)
    sub.add_parser("topics", parents=[common], help="create the job's topics").set_defaults(
        run=cmd_topics
    )
    reg = sub.add_parser("register", parents=[common], help="register a model from ONNX")
    reg.add_argument("--model-id", required=True)
    reg.add_argument("--onnx", type=Path, required=True, help="ONNX file with embedded weights")
    reg.add_argument("--params", help="comma-separated trainable initializers (default: all float)")
    reg.add_argument("--aggregation", type=Path, help="JSON file of aggregation settings")
    reg.add_argument("--window-count", type=int)
    reg.add_argument("--window-seconds", type=float)
    reg.add_argument("--mode", choices=["fedbuff", "fedasync"])
    reg.add_argument("--max-staleness", type=int)
    reg.add_argument(
        "--owner-key-file",
        type=Path,
        help=f"the model owner's private key (or ${ENV_OWNER_KEY_FILE})",
    )
    reg.set_defaults(run=cmd_register)
    run = sub.add_parser("run", parents=[common], help="run the job in a local mini-cluster")
    _add_restore_options(run)
    run.set_defaults(run=cmd_run)
    submit = sub.add_parser("submit", parents=[common], help="submit the job to a Flink cluster")
    submit.add_argument(
        "--flink", type=Path, help="the `flink` client (default: the local stack's)"
    )
    _add_restore_options(submit)
    submit.set_defaults(run=cmd_submit)
    rel = sub.add_parser("releases", parents=[common], help="list a model's releases")
    rel.add_argument("--model-id", required=True)
    rel.set_defaults(run=cmd_releases)
    sub.add_parser("dead-letters", parents=[common], help="summarize fl.dlq").set_defaults(
        run=cmd_dead_letters
    )
    keygen = sub.add_parser("keygen", help="create a signing key pair (the job's, or an owner's)")
    keygen.add_argument("--out", type=Path, required=True, help="folder for the .key/.pub pair")
    keygen.add_argument(
        "--owner", action="store_true", help=f"a model owner's pair ({OWNER_KEY_FILE}.key/.pub)"
    )
    keygen.set_defaults(run=cmd_keygen)
    dev = sub.add_parser("devices", parents=[common], help="the device registry (signed updates)")
    dev.add_argument("action", choices=["keygen", "register", "revoke", "list"])
    dev.add_argument("--device-id")
    dev.add_argument("--public-key-file", type=Path, help="register: the device's PEM public key")
    dev.add_argument(
        "--out", type=Path, default=Path("."), help="keygen: folder for device.key/.pub"
    )
    dev.set_defaults(run=cmd_devices)
    _add_observe_commands(sub, common)
    return root


def _add_observe_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """`dashboard` and `status`: what the job is doing, from its metrics and topics."""
    metrics = argparse.ArgumentParser(add_help=False)
    metrics.add_argument(
        "--metrics-url",
        help="the job's Prometheus endpoint (default: this machine, metrics.prometheus_port)",
    )
    dash = sub.add_parser(
        "dashboard",
        parents=[common, metrics],
        help="serve a local web page of the job (no CDN, works offline)",
    )
    dash.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    dash.add_argument("--port", type=int, default=9250, help="0 takes a free port (default 9250)")
    dash.add_argument("--refresh", type=int, default=5, help="seconds between page reloads")
    dash.add_argument(
        "--evaluations",
        type=Path,
        help="an evaluator's accuracy file (JSON lines; fedstream-simulator --evaluations)",
    )
    dash.add_argument("--no-kafka", action="store_true", help="metrics only, no topic reader")
    dash.set_defaults(run=cmd_dashboard)
    status = sub.add_parser(
        "status", parents=[common, metrics], help="one line per model from the job's metrics"
    )
    status.set_defaults(run=cmd_status)


def main(argv: list[str] | None = None) -> int:
    from fedstream.edge.errors import EdgeError
    from fedstream.schemas.signing import SigningKeyError

    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except (EdgeError, ConfigError, SigningKeyError) as error:  # credentials, broker, config, key
        print(f"fedstream {args.command}: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
