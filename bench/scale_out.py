"""Scaling out one model: parallelism 1 (model_shards 1) against parallelism 2 (model_shards 2).

Issue 13's measurement of README "Scaling out one model": one FedBuff model, on a running
standalone Flink cluster of two TaskManagers with one slot each, so that the sharded job's
two subtasks run in two JVMs (start it with
`FEDSTREAM_FLINK_TASKMANAGERS=2 FEDSTREAM_FLINK_SLOTS=1 infra/local/flink.sh start`). The
broker is the benchmark's own (`bench.kafka_stack.broker`, as for bench.throughput).

For `--runs` pairs (the order flips every pair, so a drift of the machine hits both), each
variant is submitted fresh (`bench.cluster_job.ClusterJob`), warmed up until its JIT
settles (`bench.throughput.warm_up`), and drains one backlog of n updates committed in one
transaction (`bench.job_session`), n sized from its warm-up rate so the run lasts about
`--seconds`. Measured as bench.throughput measures: updates/s until the release holding the
last update is visible to read_committed consumers, and CPU per update (here: every thread
of the cluster's daemons, `ClusterJob.cpu`, which includes the other, idle slot). The
benchmark's 16 devices split over the shards by murmur2 of their ids (`shard_split`), so
the shards' loads are not equal; the result files say how they split.

Results: bench/results/scale_out_<params>[_<name>].json (every run) and .md.

    python -m bench.scale_out --params 1000000          # 3 pairs of 60 s runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.job_session import Burst

__all__ = ["VARIANTS", "Variant", "main", "markdown", "shard_split", "summary"]

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Variant:
    """One way to run the model: its job parallelism and shards per model."""

    name: str
    parallelism: int
    shards: int

    def overrides(self) -> dict[str, str]:
        return {
            "runtime.parallelism": str(self.parallelism),
            "runtime.model_shards": str(self.shards),
        }


VARIANTS = (
    Variant("parallelism 1, model_shards 1", 1, 1),
    Variant("parallelism 2, model_shards 2", 2, 2),
)


def shard_split(devices: list[str], shards: int) -> list[int]:
    """How many of `devices` each shard gets (murmur2, as `io.fedstream.flink.ShardKey`)."""
    from kafka.partitioner.default import murmur2

    counts = Counter(int(murmur2(d.encode()) & 0x7FFFFFFF) % shards for d in devices)
    return [counts[s] for s in range(shards)]


def summary(runs: dict[str, list[Burst]]) -> dict[str, Any]:
    """Per variant the median (range) of updates/s and CPU ms per update; the speedup of
    the last variant over the first (throughput ratio) and its CPU ratio."""
    from bench.throughput_stats import spread

    out: dict[str, Any] = {}
    for name, bursts in runs.items():
        out[name] = {
            "updates_per_s": asdict(spread([b.updates_per_s for b in bursts])),
            "cpu_ms_per_update": asdict(spread([b.cpu_ms_per_update for b in bursts])),
        }
    first, last = (out[v.name] for v in (VARIANTS[0], VARIANTS[-1]))
    out["speedup"] = last["updates_per_s"]["median"] / first["updates_per_s"]["median"]
    out["cpu_ratio"] = last["cpu_ms_per_update"]["median"] / first["cpu_ms_per_update"]["median"]
    return out


def markdown(s: dict[str, Any], args: dict[str, Any], split: list[int], machine: str) -> str:
    """The summary as the README's table."""
    from bench.throughput_stats import Spread

    def text(d: dict[str, Any], digits: int) -> str:
        return Spread(d["median"], d["low"], d["high"], tuple(d["values"])).text(digits)

    rows = [
        f"| one model, {args['params']:,} fp32 params, window {args['window']}, "
        f"median (range) of {args['runs']} runs | updates/s | CPU ms/update |",
        "|---|---:|---:|",
        *(
            f"| {v.name} | {text(s[v.name]['updates_per_s'], 1)} "
            f"| {text(s[v.name]['cpu_ms_per_update'], 2)} |"
            for v in VARIANTS
        ),
        "",
        f"- speedup (updates/s, sharded / unsharded): {s['speedup']:.2f}; CPU per update: "
        f"{s['cpu_ratio']:.2f}x",
        f"- devices per shard (murmur2 of the 16 bench devices): {' / '.join(map(str, split))}",
        "",
        f"Command: `python -m bench.scale_out {' '.join(args['argv'])}`; two TaskManagers, one "
        f"slot each; checkpoints every {args['checkpoint_interval_ms']} ms; {machine}.",
        "",
    ]
    return "\n".join(rows)


def _check_cluster() -> None:
    from bench.cluster_job import cluster_overview

    try:
        overview = cluster_overview()
    except OSError as error:
        raise SystemExit(
            f"no Flink cluster answers ({error}); start one (module docstring)"
        ) from None
    if overview.get("taskmanagers", 0) < 2 or overview.get("slots-available", 0) < 2:
        raise SystemExit(
            f"need 2 TaskManagers with a free slot each, the cluster has {overview}: "
            "FEDSTREAM_FLINK_TASKMANAGERS=2 FEDSTREAM_FLINK_SLOTS=1 infra/local/flink.sh start"
        )


def _one_run(kafka: Any, variant: Variant, args: argparse.Namespace, size: dict[str, int]) -> Burst:
    """Submit `variant`, warm it up, drain one backlog; the job is cancelled after."""
    from bench.cluster_job import ClusterJob
    from bench.job_session import job_session, log
    from bench.throughput import job_overrides, run_size, warm_up

    def start(overrides: dict[str, str], work: Path, _profile: Path | None) -> ClusterJob:
        job = ClusterJob(overrides, work / "submit.log", dict(os.environ))
        job.start()
        return job

    extra = job_overrides(args.job_set)
    extra |= variant.overrides() | {"checkpoint.interval_ms": str(args.checkpoint_interval_ms)}
    with job_session(
        kafka, args.params, args.window, extra, start=start, window_seconds=args.window_seconds
    ) as session:
        warmed = warm_up(session, args.warmup_burst, args.max_warmup_s)
        rate = warmed.bursts[-1].updates_per_s
        n = size.get(variant.name) or run_size(rate, args.seconds, args.window, args.min_updates)
        burst = session.backlog(n)
    log(f"{variant.name}: {burst.updates_per_s:.1f} updates/s, {burst.cpu_ms_per_update:.1f} ms")
    size[variant.name] = run_size(burst.updates_per_s, args.seconds, args.window, args.min_updates)
    return burst


def measure(args: argparse.Namespace) -> dict[str, list[Burst]]:
    """`--runs` pairs of the two variants, order flipped every pair."""
    from bench.kafka_stack import broker

    _check_cluster()
    runs: dict[str, list[Burst]] = {v.name: [] for v in VARIANTS}
    size: dict[str, int] = {}
    with broker(args.port) as kafka:
        for r in range(args.runs):
            for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
                runs[variant.name].append(_one_run(kafka, variant, args, size))
    return runs


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--params", type=int, default=1_000_000)
    add("--window", type=int, default=10)
    add(
        "--window-seconds",
        type=float,
        default=1.0,
        help="the window's time bound: with shards a count window may close with more than "
        "K updates, and the updates left in the last open one are released by its timer",
    )
    add("--runs", type=int, default=3, help="pairs of runs (one of each variant)")
    add("--seconds", type=float, default=60.0, help="length of each measured run")
    add("--min-updates", type=int, default=50, help="fewest updates of a run")
    add("--warmup-burst", type=int, default=100, help="updates per warm-up burst")
    add("--max-warmup-s", type=float, default=300.0, help="warm up each job at most this long")
    add("--checkpoint-interval-ms", type=int, default=1000)
    add("--job-set", action="append", default=[], metavar="KEY=VALUE", help="job config override")
    add("--port", type=int, default=int(os.environ.get("FEDSTREAM_KAFKA_PORT", "49092")))
    add("--name", default="", help="suffix of the result files")
    add("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from bench.bench_fleet import DEVICES
    from bench.job_session import log
    from bench.throughput import exit_on_sigterm, machine

    args = arguments(argv)
    exit_on_sigterm()
    runs = measure(args)
    s = summary(runs)
    split = shard_split([f"device-{i}" for i in range(DEVICES)], VARIANTS[-1].shards)
    stem = f"scale_out_{args.params}" + (f"_{args.name}" if args.name else "")
    args.out.mkdir(parents=True, exist_ok=True)
    settings = vars(args) | {"out": str(args.out)}
    raw = {
        "summary": s,
        "args": settings,
        "machine": machine(),
        "devices_per_shard": split,
        "runs": {name: [asdict(b) for b in bursts] for name, bursts in runs.items()},
    }
    (args.out / f"{stem}.json").write_text(json.dumps(raw, indent=2, default=str))
    text = markdown(s, settings, split, machine())
    (args.out / f"{stem}.md").write_text(text)
    log(f"wrote {args.out / stem}.json and .md")
    print(text)
    return s


if __name__ == "__main__":
    main()
