"""``fedstream-simulator``: run a fleet against a running job and report.

The job must already be running and the broker reachable (the simulator only talks to
Kafka, like real devices). Example, on the local stack with the job's default topics::

    eval "$(infra/local/kafka.sh env)"      # credentials of the local stack (paths only)
    fedstream-simulator --bootstrap 127.0.0.1:9092 --devices 20 \\
        --mode both --target-accuracy 0.9 --duration 180 --out fleet-report

Kafka security comes from the FEDSTREAM_KAFKA_* environment (`KafkaSecurity.from_env`);
the flags below override it. The password is only ever read from a file or from
FEDSTREAM_KAFKA_PASSWORD, never from a flag (arguments are visible to every local user).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import uuid
from pathlib import Path

from fedstream.edge import security
from fedstream.schemas.registration_signing import owner_key_from_env


def arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="fedstream-simulator",
        description="Simulate a heterogeneous fleet of fedstream devices (digits, non-IID) "
        "against a running aggregation job; compare async (FedBuff) with sync (FedAvg) "
        "or FedAsync.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    k = p.add_argument_group("Kafka (the job must be running)")
    k.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    security.add_arguments(k)
    k.add_argument(
        "--owner-username",
        help="register the models as this principal (a model owner: devices may not write "
        "the control topic); default: the principal above",
    )
    k.add_argument("--owner-password-file", help="the owner principal's password file")
    k.add_argument(
        "--owner-key-file",
        help="the model owner's Ed25519 private key (PEM) the registrations are signed with "
        "(default: $FEDSTREAM_OWNER_KEY_FILE; the job refuses unsigned registrations)",
    )
    k.add_argument("--updates-topic", default="fl.updates")
    k.add_argument("--control-topic", default="fl.control")
    k.add_argument("--models-topic", default="fl.models")
    k.add_argument("--dlq-topic", default="fl.dlq")
    k.add_argument(
        "--model-id",
        default=None,
        help="model id prefix (default digits-<random>); each run registers <prefix>-<mode>",
    )
    r = p.add_argument_group("run")
    r.add_argument(
        "--mode",
        choices=["async", "sync", "fedasync", "both"],
        default="both",
        help="async = FedBuff, sync = FedAvg, fedasync = FedAsync (constant mixing weight), "
        "both = async + sync",
    )
    r.add_argument("--duration", type=float, default=180.0, help="max seconds per run")
    r.add_argument(
        "--target-accuracy",
        type=float,
        default=0.9,
        help="stop a run when a release reaches it (0 = run for --duration)",
    )
    r.add_argument("--out", type=Path, default=Path("fleet-report"), help="output folder")
    r.add_argument("--progress-every", type=float, default=5.0, help="seconds between lines")
    r.add_argument("--quiet", action="store_true", help="only the summary line")
    r.add_argument(
        "--evaluations",
        type=Path,
        help="append every accuracy measured to this JSON-lines file "
        "(fedstream dashboard --evaluations plots it)",
    )
    f = p.add_argument_group("fleet")
    f.add_argument("--devices", type=int, default=20)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label-skew parameter")
    f.add_argument("--base-delay", type=float, default=0.3, help="fastest compute time (s)")
    f.add_argument("--speed-spread", type=float, default=10.0, help="slowest / fastest")
    f.add_argument("--dropout", type=float, default=0.05, help="dropout chance per round")
    f.add_argument(
        "--offline",
        type=float,
        nargs=2,
        default=(1.0, 4.0),
        metavar=("MIN", "MAX"),
        help="seconds a dropped device stays away",
    )
    f.add_argument("--network-delay", type=float, default=0.0, help="mean uplink delay (s)")
    f.add_argument(
        "--device-keys",
        type=Path,
        help="folder of the devices' private keys, DIR/<device_id>/device.key (device ids "
        "async-dev-000, sync-dev-000, ...), registered by an operator; each device signs "
        "its updates with its own",
    )
    t = p.add_argument_group("training")
    t.add_argument("--local-epochs", type=int, default=2)
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--window", type=int, default=None, help="async K (default devices // 4)")
    t.add_argument("--server-lr", type=float, default=1.0)
    t.add_argument(
        "--fedasync-mixing", type=float, default=0.6, help="FedAsync's constant weight a"
    )
    t.add_argument(
        "--fedasync-rule",
        choices=["mix_with_base", "add_delta"],
        default="mix_with_base",
        help="FedAsync: the paper's (1-a) x + a (x_base + delta), or x + a delta",
    )
    t.add_argument("--compression", choices=["none", "fp16", "int8", "topk"], default="none")
    t.add_argument("--topk-fraction", type=float, default=0.1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    # Heavy imports after argument parsing: --help stays instant.
    from fedstream.edge.config import EdgeConfig
    from fedstream.edge.errors import EdgeError
    from fedstream.edge.simulator.data import load_fleet_data
    from fedstream.edge.simulator.fleet import FleetRun, FleetSettings, RunResult
    from fedstream.edge.simulator.report import summary_line, write_plots, write_report

    def say(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    try:
        kafka = security.from_arguments(args)
    except EdgeError as error:
        print(f"simulator: {error}", file=sys.stderr)
        return 2
    owner = kafka
    if args.owner_username:
        owner = security.KafkaSecurity(
            kafka.protocol,
            kafka.mechanism,
            args.owner_username,
            args.owner_password_file,
            kafka.ca_file,
        )
    config = EdgeConfig(
        bootstrap=args.bootstrap,
        security=kafka,
        updates_topic=args.updates_topic,
        control_topic=args.control_topic,
        models_topic=args.models_topic,
        dlq_topic=args.dlq_topic,
        owner_key_file=None,  # devices sign no registrations; the owner's connection does
    )
    settings = FleetSettings(
        devices=args.devices,
        alpha=args.alpha,
        seed=args.seed,
        base_delay_s=args.base_delay,
        speed_spread=args.speed_spread,
        dropout_prob=args.dropout,
        offline_s=(args.offline[0], args.offline[1]),
        network_delay_s=args.network_delay,
        local_epochs=args.local_epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        async_window=args.window,
        server_lr=args.server_lr,
        fedasync_mixing=args.fedasync_mixing,
        fedasync_rule=args.fedasync_rule,
        compression=args.compression,
        topk_fraction=args.topk_fraction,
    )
    target = args.target_accuracy or None
    prefix = args.model_id or f"digits-{uuid.uuid4().hex[:8]}"
    data = load_fleet_data(settings.devices, alpha=settings.alpha, seed=settings.seed)
    modes = ["async", "sync"] if args.mode == "both" else [args.mode]
    say(
        f"fedstream fleet: {settings.devices} devices, Dirichlet({settings.alpha}), "
        f"compute {settings.base_delay_s:g}-{settings.base_delay_s * settings.speed_spread:g} s, "
        f"dropout {settings.dropout_prob:g}/round, modes {', '.join(modes)}, "
        f"bootstrap {config.bootstrap}"
    )
    runs: list[RunResult] = []
    started = time.monotonic()
    for mode in modes:
        run = FleetRun(
            config,
            settings,
            data,
            mode=mode,
            model_id=f"{prefix}-{mode}",
            progress=say,
            progress_every_s=args.progress_every,
            owner=dataclasses.replace(
                config, security=owner, owner_key_file=args.owner_key_file or owner_key_from_env()
            ),
            device_keys=args.device_keys,
            evaluations=args.evaluations,
        )
        try:
            runs.append(run.run(duration_s=args.duration, target_accuracy=target))
        except EdgeError as error:
            print(f"fedstream fleet: {mode} run failed: {error}", file=sys.stderr)
            return 1
    extra = {"wall_clock_s": round(time.monotonic() - started, 1), "model_id_prefix": prefix}
    report = write_report(args.out, settings, data, runs, target, extra)
    plots = write_plots(args.out, runs, target)
    say(f"wrote {report} and {', '.join(str(p) for p in plots)}")
    print(summary_line(runs, target), flush=True)
    problems = [e for r in runs for e in r.errors]
    for problem in problems:
        print(f"fedstream fleet: error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
