"""fedstream against the plain kafka-python + numpy aggregator, in the steady state, same broker.

For one update size (fp32 parameters), in one run on one local broker (issue 13's method):

1. **Warm up** the job until the JVM's JIT settles: backlog bursts until the JIT compiler
   threads take under 3% of the job's CPU over a burst (or `--max-warmup-s` passed); the
   warm-up's time and updates are reported, and the JIT's share of every measured run.
2. **Alternate** `--runs` rounds (default 5): the plain aggregator drains a backlog of n
   updates from a fresh topic, then the same loop verifying each update's signature (the
   like-for-like baseline: fedstream verifies every update; `--no-verifying` skips it),
   then fedstream drains n updates committed in one transaction (the order flips every
   round, so a drift of the machine hits all alike).
   n is sized from the warm-up's rate, then per system from its own last run, so that
   every run after a system's first lasts about `--seconds` (default 60). fedstream's time
   runs from the commit until the release holding the last update is *visible* to a
   read_committed consumer (what devices see); the plain aggregator's until it has
   consumed the last update and flushed its models. CPU per update: the job's whole
   process group (/proc, every thread) against the benchmark process (the aggregator).
3. **Latency**: updates offered at half the median fedstream throughput for `--seconds`,
   each one timed from its send until its release is visible; p50 / p99. Where it goes:
   each release's wait from built to visible, and the checkpoints that completed
   meanwhile, from the job's Flink log (`bench.checkpoint_log`). On one machine the job's
   checkpoints share the broker's disk unless `--checkpoint-dir` puts them elsewhere (as
   object storage does in production): the broker's fsync of every rolled segment then
   stalls them (at 1M, ~2 s every ~20 s).

`--unsigned` runs a legacy fleet instead (unsigned updates, `trust.allow_unsigned_updates`
on, no verifying loop): what the job costs without the signature check, against the plain
loop, which never makes it.

Medians and spreads go to bench/results/throughput_<params>.json (every run's raw numbers)
and .md. `--quick` is a few-second smoke run of the whole method (tiny model, short runs).

    python -m bench.throughput --params 100000          # the issue's run: 5 pairs of 60 s
    python -m bench.throughput --params 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from bench.job_session import Burst, JobSession, job_session, log
from bench.kafka_stack import broker
from bench.plain_aggregator import PlainRun, plain_run
from bench.throughput_stats import jit_settled, percentile, spread

__all__ = ["REPO", "exit_on_sigterm", "job_overrides", "log", "machine", "main"]

REPO = Path(__file__).resolve().parents[1]


@dataclass
class WarmUp:
    """The bursts it took until the JIT settled."""

    bursts: list[Burst] = field(default_factory=list)
    seconds: float = 0.0
    settled: bool = False

    @property
    def updates(self) -> int:
        return sum(b.updates for b in self.bursts)


@dataclass
class Measured:
    """Everything one benchmark run measured, raw."""

    args: dict[str, Any]
    warmup: WarmUp
    plain: list[PlainRun] = field(default_factory=list)
    #: the plain loop that also verifies every signature (`plain_run(..., entry)`)
    verifying: list[PlainRun] = field(default_factory=list)
    fedstream: list[Burst] = field(default_factory=list)
    latency: Burst | None = None
    offered_per_s: float = 0.0
    job_rss_mb: float = 0.0
    checkpoint_bytes: int = 0


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `finally` blocks stop the job and the broker."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def warm_up(session: JobSession, burst: int, max_seconds: float) -> WarmUp:
    """Backlog bursts until one runs with the JIT settled (`jit_settled`), or time is up."""
    result, start = WarmUp(), time.perf_counter()
    while not result.settled and time.perf_counter() - start < max_seconds:
        done = session.backlog(burst)
        result.bursts.append(done)
        result.settled = jit_settled(done.jit_cpu_s, done.job_cpu_s)
        log(
            f"warm-up burst {len(result.bursts)}: {done.updates_per_s:.0f} updates/s, "
            f"JIT {done.jit_cpu_s / max(done.job_cpu_s, 1e-9):.1%} of the job's CPU"
        )
    result.seconds = time.perf_counter() - start
    return result


def run_size(rate: float, seconds: float, window: int, minimum: int) -> int:
    """Updates for a run of about `seconds` at `rate`, a whole number of windows."""
    n = max(minimum, int(rate * seconds))
    return max(window, n - n % window)


def alternate(session: JobSession, out: Measured, runs: int, count: int) -> None:
    """`runs` rounds of plain aggregator (and verifying plain loop) and fedstream drains,
    order flipped every round.

    All start at `count` (sized from the warm-up); after each run a system's next size
    follows its own measured rate, so every run after its first lasts about `--seconds`."""
    a = out.args
    params, window = a["params"], a["window"]
    plain_values = session.fleet.records("plain", "plain", 0, 0, session.delta)
    entries = {"plain": None, "verifying": session.fleet.entry("device-0")}
    kept = {"plain": out.plain, "verifying": out.verifying}
    systems = ("plain", "verifying", "fedstream") if a["verifying"] else ("plain", "fedstream")
    counts = dict.fromkeys(systems, count)
    for r in range(runs):
        for system in systems if r % 2 == 0 else systems[::-1]:
            if system in kept:
                entry = entries[system]
                done = plain_run(session.kafka, plain_values, params, counts[system], window, entry)
                kept[system].append(done)
                rate, cpu, seconds = done.updates_per_s, done.cpu_ms_per_update, done.seconds
            else:
                burst = session.backlog(counts[system])
                out.fedstream.append(burst)
                rate, cpu, seconds = burst.updates_per_s, burst.cpu_ms_per_update, burst.visible_s
            log(f"run {r + 1}: {system} {rate:.0f}/s, {cpu:.2f} ms, {seconds:.0f} s")
            counts[system] = run_size(rate, a["seconds"], window, a["min_updates"])


def measure(args: argparse.Namespace) -> Measured:
    """The whole method on a fresh broker: warm-up, alternating runs, latency."""
    extra = job_overrides(args.job_set)
    extra["checkpoint.interval_ms"] = str(args.checkpoint_interval_ms)
    root = args.checkpoint_dir
    with (
        broker(args.port) as kafka,
        job_session(
            kafka,
            args.params,
            args.window,
            extra,
            checkpoint_root=root,
            window_seconds=args.window_seconds,
        ) as session,
    ):
        out = Measured(
            vars(args) | {"out": str(args.out), "checkpoint_dir": root and str(root)},
            warm_up(session, args.warmup_burst, args.max_warmup_s),
        )
        rate = out.warmup.bursts[-1].updates_per_s
        count = run_size(rate, args.seconds, args.window, args.min_updates)
        log(f"steady state after {out.warmup.seconds:.0f} s; runs of {count} updates")
        alternate(session, out, args.runs, count)
        out.offered_per_s = 0.5 * spread([b.updates_per_s for b in out.fedstream]).median
        n = run_size(out.offered_per_s, args.seconds, args.window, args.window * 5)
        log(f"latency: {n} updates offered at {out.offered_per_s:.0f}/s")
        out.latency = session.paced(n, out.offered_per_s)
        out.job_rss_mb, out.checkpoint_bytes = session.rss_mb(), session.checkpoint_bytes()
    return out


def run_seconds(m: Measured) -> str:
    """The measured run lengths, "plain / fedstream" medians (runs are sized, not timed)."""
    plain = spread([p.seconds for p in m.plain]).median
    fed = spread([b.visible_s for b in m.fedstream]).median
    return f"{plain:.0f} / {fed:.0f}"


def _verifying(m: Measured, fed_rate: float, fed_cpu: float) -> dict[str, Any]:
    """The verifying loop's medians and fedstream's ratios to them (none: not measured)."""
    if not m.verifying:
        return {}
    rate = spread([p.updates_per_s for p in m.verifying])
    cpu = spread([p.cpu_ms_per_update for p in m.verifying])
    return {
        "verifying_updates_per_s": asdict(rate),
        "verifying_cpu_ms_per_update": asdict(cpu),
        "cpu_ratio_vs_verifying": fed_cpu / cpu.median,
        "throughput_ratio_vs_verifying": fed_rate / rate.median,
    }


def summary(m: Measured) -> dict[str, Any]:
    """Medians, spreads and the issue's three ratios."""
    plain_rate = spread([p.updates_per_s for p in m.plain])
    plain_cpu = spread([p.cpu_ms_per_update for p in m.plain])
    fed_rate = spread([b.updates_per_s for b in m.fedstream])
    fed_built = spread([b.updates / b.built_s for b in m.fedstream])
    fed_cpu = spread([b.cpu_ms_per_update for b in m.fedstream])
    jit = spread([b.jit_cpu_s / b.job_cpu_s for b in m.fedstream])
    assert m.latency is not None
    lat = m.latency.latencies_ms
    total_updates = m.warmup.updates + sum(b.updates for b in m.fedstream)
    return {
        "plain_updates_per_s": asdict(plain_rate),
        "plain_cpu_ms_per_update": asdict(plain_cpu),
        "fedstream_visible_updates_per_s": asdict(fed_rate),
        "fedstream_built_updates_per_s": asdict(fed_built),
        "fedstream_cpu_ms_per_update": asdict(fed_cpu),
        "fedstream_jit_cpu_share": asdict(jit),
        "cpu_ratio": fed_cpu.median / plain_cpu.median,
        "throughput_ratio": fed_rate.median / plain_rate.median,
        "latency_offered_per_s": m.offered_per_s,
        "latency_ms_p50": percentile(lat, 50),
        "latency_ms_p99": percentile(lat, 99),
        "latency_target_ms": m.args["checkpoint_interval_ms"] + 1000,
        **_waits(m.latency),
        "warmup_seconds": m.warmup.seconds,
        "warmup_updates": m.warmup.updates,
        "warmup_settled": m.warmup.settled,
        "warmup_share_of_updates": m.warmup.updates / total_updates,
        "job_rss_mb": m.job_rss_mb,
        "checkpoint_bytes_per_param_byte": m.checkpoint_bytes / (m.args["params"] * 4),
    } | _verifying(m, fed_rate.median, fed_cpu.median)


def _waits(b: Burst) -> dict[str, float]:
    """Where a paced update's latency goes: until its release was built (the window's
    fill and the job's queue), then the release's wait from built to visible, and the
    checkpoints that completed meanwhile (their duration, and the time from one
    completion to the next; 0: none logged)."""
    durations = [c.duration_ms for c in b.checkpoints]
    done = [c.completed_at for c in b.checkpoints]
    gaps = [(later - earlier) * 1000 for earlier, later in pairwise(done)]

    def p(values: list[float], q: float) -> float:
        return percentile(values, q) if values else 0.0

    return {
        "latency_to_built_ms_p50": p(b.to_built_ms, 50),
        "latency_to_built_ms_p99": p(b.to_built_ms, 99),
        "latency_release_wait_ms_p50": p(b.release_waits_ms, 50),
        "latency_release_wait_ms_p99": p(b.release_waits_ms, 99),
        "latency_checkpoints": len(durations),
        "latency_checkpoint_ms_p50": p(durations, 50),
        "latency_checkpoint_ms_p99": p(durations, 99),
        "latency_checkpoint_ms_max": max(durations, default=0.0),
        "latency_checkpoint_every_ms_p50": p(gaps, 50),
        "latency_checkpoint_every_ms_p99": p(gaps, 99),
    }


def markdown(m: Measured, s: dict[str, Any]) -> str:
    """The summary as the README's rows."""

    def text(key: str, digits: int = 1) -> str:
        from bench.throughput_stats import Spread

        d = dict(s[key])
        return Spread(d["median"], d["low"], d["high"], tuple(d["values"])).text(digits)

    a = m.args
    return "\n".join(
        [
            f"| {a['params']:,} fp32 params, median (range) of {a['runs']} alternating runs "
            "| updates/s | CPU ms/update |",
            "|---|---:|---:|",
            f"| plain kafka-python + numpy aggregator | {text('plain_updates_per_s')} "
            f"| {text('plain_cpu_ms_per_update', 2)} |",
            *_verifying_rows(s, text),
            "| **fedstream**, until visible (read_committed) "
            f"| {text('fedstream_visible_updates_per_s')} "
            f"| {text('fedstream_cpu_ms_per_update', 2)} |",
            "| fedstream, until built (without the checkpoint wait) "
            f"| {text('fedstream_built_updates_per_s')} | |",
            "",
            f"- throughput fedstream / plain: {s['throughput_ratio']:.2f} (target ≥ 1.0)",
            f"- CPU per update fedstream / plain: {s['cpu_ratio']:.2f} (target ≤ 1.2)",
            *_verifying_ratios(s),
            f"- update → visible latency at {s['latency_offered_per_s']:.0f} updates/s offered "
            f"(half the median): p50 {s['latency_ms_p50']:,.0f} ms, "
            f"p99 {s['latency_ms_p99']:,.0f} ms "
            f"(target ≤ {s['latency_target_ms']:,} ms)",
            f"  - sent → release built (the window's fill, the job's queue): "
            f"p50 {s['latency_to_built_ms_p50']:,.0f} ms, "
            f"p99 {s['latency_to_built_ms_p99']:,.0f} ms",
            f"  - built → visible (the wait for a checkpoint and its commit): "
            f"p50 {s['latency_release_wait_ms_p50']:,.0f} ms, "
            f"p99 {s['latency_release_wait_ms_p99']:,.0f} ms; "
            f"{s['latency_checkpoints']} checkpoints completed meanwhile, taking "
            f"p50 {s['latency_checkpoint_ms_p50']:,.0f} ms, "
            f"p99 {s['latency_checkpoint_ms_p99']:,.0f} ms, "
            f"max {s['latency_checkpoint_ms_max']:,.0f} ms, one completed every "
            f"p50 {s['latency_checkpoint_every_ms_p50']:,.0f} ms "
            f"(p99 {s['latency_checkpoint_every_ms_p99']:,.0f} ms)",
            f"- warm-up: {s['warmup_seconds']:.0f} s, {s['warmup_updates']:,} updates "
            f"({s['warmup_share_of_updates']:.0%} of the job's updates), JIT settled: "
            f"{s['warmup_settled']}; JIT share of the job's CPU in the runs: "
            f"{text('fedstream_jit_cpu_share', 3)}",
            f"- job RSS {s['job_rss_mb']:,.0f} MB; checkpoint "
            f"{s['checkpoint_bytes_per_param_byte']:.2f} times the parameter bytes",
            "",
            f"Command: `python -m bench.throughput {' '.join(a['argv'])}`; "
            f"runs of {run_seconds(m)} s (median plain, fedstream); "
            f"checkpoints every {a['checkpoint_interval_ms']} ms; {machine()}.",
            "",
        ]
    )


def _verifying_rows(s: dict[str, Any], text: Callable[[str, int], str]) -> list[str]:
    if "verifying_updates_per_s" not in s:
        return []
    rate, cpu = text("verifying_updates_per_s", 1), text("verifying_cpu_ms_per_update", 2)
    return [f"| the same loop verifying each signature (like for like) | {rate} | {cpu} |"]


def _verifying_ratios(s: dict[str, Any]) -> list[str]:
    if "verifying_updates_per_s" not in s:
        return []
    return [
        f"- against the verifying loop: throughput {s['throughput_ratio_vs_verifying']:.2f}, "
        f"CPU per update {s['cpu_ratio_vs_verifying']:.2f}"
    ]


def write(m: Measured, s: dict[str, Any], out: Path, stem: str) -> None:
    """Raw runs + summary (JSON) and the table (markdown) to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    raw = {
        "summary": s,
        "args": m.args,
        "machine": machine(),
        "warmup": [_burst(b) for b in m.warmup.bursts],
        "plain_runs": [asdict(p) | {"updates_per_s": p.updates_per_s} for p in m.plain],
        "verifying_runs": [asdict(p) | {"updates_per_s": p.updates_per_s} for p in m.verifying],
        "fedstream_runs": [_burst(b) for b in m.fedstream],
        "latency_run": _burst(m.latency) if m.latency else None,
    }
    (out / f"{stem}.json").write_text(json.dumps(raw, indent=2))
    (out / f"{stem}.md").write_text(markdown(m, s))
    log(f"wrote {out / stem}.json and .md")


def _burst(b: Burst) -> dict[str, Any]:
    return {
        "updates": b.updates,
        "visible_s": b.visible_s,
        "built_s": b.built_s,
        "updates_per_s": b.updates_per_s,
        "cpu_ms_per_update": b.cpu_ms_per_update,
        "cpu_s_by_thread_group": b.cpu_s,
        "latency_ms_p50": percentile(b.latencies_ms, 50),
        "latency_ms_p99": percentile(b.latencies_ms, 99),
        "release_waits_ms": b.release_waits_ms,
        "to_built_ms": b.to_built_ms,
        "checkpoints": [asdict(c) for c in b.checkpoints],
    }


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), "?")
    return f"{os.cpu_count()} cores, {cpu}"


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--params", type=int, default=100_000)
    add("--window", type=int, default=10)
    add("--runs", type=int, default=5, help="alternating rounds of plain and fedstream runs")
    add(
        "--no-verifying",
        dest="verifying",
        action="store_false",
        help="skip the plain loop that verifies signatures (the like-for-like baseline)",
    )
    add(
        "--unsigned",
        action="store_true",
        help="a legacy fleet: unsigned updates, trust.allow_unsigned_updates on, no verifying "
        "loop (the job's cost without the signature check, against the plain loop)",
    )
    add("--seconds", type=float, default=60.0, help="length of each run (and the latency run)")
    add("--min-updates", type=int, default=100, help="fewest updates of a run")
    add("--warmup-burst", type=int, default=500, help="updates per warm-up burst")
    add("--max-warmup-s", type=float, default=600.0, help="warm up at most this long")
    add("--checkpoint-interval-ms", type=int, default=1000)
    add(
        "--window-seconds",
        type=float,
        default=None,
        help="the window's time bound (default: count windows only); needed with "
        "runtime.model_shards > 1, whose count windows may close with more than K updates",
    )
    add(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="put the job's checkpoints under this folder, on another device than the "
        "broker's log (as in production: object storage); default: on the broker's disk",
    )
    add("--port", type=int, default=int(os.environ.get("FEDSTREAM_KAFKA_PORT", "49092")))
    add("--job-set", action="append", default=[], metavar="KEY=VALUE", help="job config override")
    add("--name", default="", help="suffix of the result files (a lever's variant)")
    add("--quick", action="store_true", help="a few-second smoke run: 10k params, 2 short pairs")
    add("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if args.checkpoint_dir is not None and not args.checkpoint_dir.is_dir():
        parser.error(f"--checkpoint-dir {args.checkpoint_dir}: not a folder")
    if problem := _job_set_problem(args.job_set, args.window_seconds):
        parser.error(problem)
    if args.unsigned:
        args.verifying = False
        args.job_set.append("trust.allow_unsigned_updates=true")
    if args.quick:
        args.params, args.runs, args.seconds, args.min_updates = 10_000, 2, 2.0, 20
        args.warmup_burst, args.max_warmup_s = 50, 5.0
    return args


def job_overrides(pairs: list[str]) -> dict[str, str]:
    """`--job-set KEY=VALUE` pairs as job config overrides (the last of a key wins)."""
    return dict(pair.split("=", 1) for pair in pairs)


def _job_set_problem(pairs: list[str], window_seconds: float | None) -> str | None:
    """Why `--job-set` pairs cannot run, or None. A sharded job's count window may close
    with more than K updates (the shards' partials arrive whole), so a burst cannot tell
    how many of its updates stay open: without a time bound it would wait for them forever."""
    if bad := [pair for pair in pairs if "=" not in pair]:
        return f"--job-set takes KEY=VALUE, not {bad[0]!r}"
    shards = job_overrides(pairs).get("runtime.model_shards", "1")
    if shards.strip() != "1" and window_seconds is None:
        return f"runtime.model_shards={shards} needs --window-seconds (the window's time bound)"
    return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = arguments(argv)
    exit_on_sigterm()
    measured = measure(args)
    s = summary(measured)
    stem = f"throughput_{args.params}" + (f"_{args.name}" if args.name else "")
    write(measured, s, args.out, stem)
    print(markdown(measured, s))
    return s


if __name__ == "__main__":
    main()
