"""Where an update's CPU goes in the running job: our Python, and the framework around it.

One model, one local broker, the real job (thread mode), warmed up like
`bench.throughput`; then a backlog of updates is timed twice over:

* every thread of the job from /proc, grouped (`job_profile.ThreadCpu`): the Kafka
  fetcher, the source task, the device gate's task, the aggregate's task, sinks, GC, JIT;
* inside the two Python operators, our code's own thread CPU per call
  (`profiling.OperatorProfile`, mode ``time``: cheap enough not to change the speed).

A Python operator's task thread minus our code in it is the framework's work per update:
Flink's network stack (an update record spans many 32 KB network buffers and is gathered
into a fresh array), pemja converting the row into Python objects and the result back,
PyFlink's wrappers, and the keyed serialization towards the next task. `--cprofile` adds a
second job under cProfile for attribution inside our code (slower: read its shares, not
its totals). Writes bench/results/profile_<params>[_name].json and .md.

    python -m bench.profile_job --params 100000
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.job_profile import python_breakdown, thread_group
from bench.job_session import Burst, JobSession, job_session, log
from bench.kafka_stack import broker
from bench.throughput import REPO, exit_on_sigterm, machine, warm_up
from fedstream.pipelines.profiling import DUMP_EVERY_S, MODE_VAR, read_times

__all__ = ["main"]

#: the Python operators and the thread group of the task each runs in (the device gate is
#: chained into the JVM's device join, which hands it the rare update: `DeviceJoin`)
OPERATORS = {"device_gate": thread_group("join device"), "aggregate": thread_group("aggregate")}


@contextmanager
def profiled_job(
    kafka: Any, args: argparse.Namespace, mode: str
) -> Iterator[tuple[JobSession, Path]]:
    """A warmed-up job whose Python operators profile themselves in `mode`, and the
    folder they write to."""
    folder = Path(tempfile.mkdtemp(prefix=f"fedstream-profile-{mode}-"))
    extra = {"checkpoint.interval_ms": str(args.checkpoint_interval_ms)}
    os.environ[MODE_VAR] = mode  # the job's process inherits it at start
    try:
        with job_session(kafka, args.params, args.window, extra, profile_dir=folder) as session:
            warmed = warm_up(session, args.warmup_burst, args.max_warmup_s)
            log(f"{mode}: warmed up in {warmed.seconds:.0f} s (JIT settled: {warmed.settled})")
            yield session, folder
    finally:
        os.environ.pop(MODE_VAR, None)


def settle() -> None:
    """Wait until every operator has written what it measured (they write on a call at
    most every DUMP_EVERY_S; the per-call averages below divide by the calls written)."""
    time.sleep(DUMP_EVERY_S + 0.5)


def time_split(kafka: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Thread CPU per group and our Python per call, over one backlog burst."""
    with profiled_job(kafka, args, "time") as (session, folder):
        settle()
        before = read_times(folder)
        burst = session.backlog(args.updates)
        settle()
        after = read_times(folder)
    return _split(burst, before, after)


def _split(
    burst: Burst, before: dict[str, tuple[float, int]], after: dict[str, tuple[float, int]]
) -> dict[str, Any]:
    per_update = {group: 1000 * s / burst.updates for group, s in burst.cpu_s.items()}
    operators = {}
    for operator, group in OPERATORS.items():
        (seconds, calls), (s0, c0) = after[operator], before.get(operator, (0.0, 0))
        seconds, calls = seconds - s0, calls - c0
        ours = 1000 * seconds / max(calls, 1)  # one call per update (timers are rare)
        task = per_update.get(group, 0.0)
        operators[operator] = {"task_ms": task, "python_ms": ours, "framework_ms": task - ours}
    return {
        "updates": burst.updates,
        "updates_per_s": burst.updates_per_s,
        "job_cpu_ms_per_update": burst.cpu_ms_per_update,
        "thread_groups_ms_per_update": per_update,
        "operators": operators,
    }


def cprofile_shares(kafka: Any, args: argparse.Namespace) -> dict[str, Any]:
    """cProfile's breakdown of our code per operator, and its costliest functions."""
    with profiled_job(kafka, args, "cprofile") as (session, folder):
        session.backlog(args.updates)
        settle()
    top = {}
    for operator in OPERATORS:
        files = sorted(str(f) for f in folder.glob(f"{operator}-*.pstats"))
        if files:
            raw = pstats.Stats(*files).stats  # type: ignore[attr-defined]
            rows = sorted(raw.items(), key=lambda kv: -kv[1][2])[:12]  # by own time
            top[operator] = [f"{Path(f[0]).name}:{f[2]} {row[2]:.2f} s" for f, row in rows]
    return {"breakdown_ms_per_record": python_breakdown(folder), "top_functions": top}


def markdown(result: dict[str, Any], args: argparse.Namespace) -> str:
    split = result["time"]
    lines = [
        f"| {args.params:,} params, {split['updates']:,} updates at "
        f"{split['updates_per_s']:.0f}/s | task thread | our Python | framework |",
        "|---|---:|---:|---:|",
    ]
    for operator, row in split["operators"].items():
        lines.append(
            f"| {operator} | {row['task_ms']:.3f} | {row['python_ms']:.3f} "
            f"| {row['framework_ms']:.3f} |"
        )
    lines += [
        "",
        f"CPU ms per update by thread group (whole job {split['job_cpu_ms_per_update']:.2f} ms):",
        "",
    ]
    groups = sorted(split["thread_groups_ms_per_update"].items(), key=lambda kv: -kv[1])
    lines += [f"- {group}: {ms:.3f}" for group, ms in groups]
    lines += ["", f"Command: `python -m bench.profile_job {' '.join(args.argv)}`; {machine()}.", ""]
    return "\n".join(lines)


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--params", type=int, default=100_000)
    add("--window", type=int, default=10)
    add("--updates", type=int, default=6000, help="updates in the timed burst")
    add("--warmup-burst", type=int, default=300)
    add("--max-warmup-s", type=float, default=120.0)
    add("--checkpoint-interval-ms", type=int, default=1000)
    add("--cprofile", action="store_true", help="also a cProfile run (attribution in our code)")
    add("--port", type=int, default=int(os.environ.get("FEDSTREAM_KAFKA_PORT", "49092")))
    add("--name", default="", help="suffix of the result files")
    add("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else []
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = arguments(argv if argv is not None else sys.argv[1:])
    exit_on_sigterm()
    with broker(args.port) as kafka:
        result: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
        result["time"] = time_split(kafka, args)
        if args.cprofile:
            result["cprofile"] = cprofile_shares(kafka, args)
    stem = f"profile_{args.params}" + (f"_{args.name}" if args.name else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    text = markdown(result, args)
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
