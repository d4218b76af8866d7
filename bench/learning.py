"""Learning efficiency: sync FedAvg vs FedBuff vs FedAsync vs FedBuff + int8, same fleet.

One broker, one aggregation job (thread mode, EXACTLY_ONCE checkpoints every second) and,
for every seed, the same simulated fleet (`fedstream.edge.simulator`: 20 devices with a
10x compute-speed spread, dropouts, non-IID digits) and the same data, run four times:

* **sync FedAvg** (McMahan et al., AISTATS 2017): a version when every device has
  reported, so every round waits for the slowest device;
* **FedBuff** (Nguyen et al., AISTATS 2022): a version every K = devices/2 updates, stale
  updates discounted by (1 + s)^-0.5;
* **FedAsync** (Xie, Koyejo, Gupta, 2019) with a *constant* weight a = 0.6, a release per
  update, by the paper's rule x <- (1 - a) x + a (x_base + delta) (the job keeps the last
  `FleetSettings.fedasync_max_staleness` versions) and, for contrast, by the re-based
  rule x <- x + a * delta the job used before (`fedasync_rule` "add_delta");
* **FedBuff + int8**: FedBuff with 8-bit quantised updates (per-tensor scale);
* **FedBuff + top-5% + EF**: the 5% largest coordinates (TOPK: float32 value + int32
  index) with the SDK's error feedback (Stich et al., NeurIPS 2018; Karimireddy et al.,
  ICML 2019), ~8.8x fewer bytes than FP32.

Every run lasts the same fixed time (no early stop), so final accuracies compare. Per seed
the target is the sync run's final accuracy; each variant reports the wall-clock time to
reach it, final and best accuracy, updates and bytes sent, releases, staleness and the
dead letters the job wrote for its model. The variant order rotates with the seed, so no
variant always runs first (on a warmer JVM, or a fuller models topic).

Bytes are the encoded GradientUpdate records the devices produced (Avro, before Kafka's
own gzip batch compression), the figure a device's uplink budget is about.

FedAsync advances the version once per update, so its staleness in versions is about the
number of updates the fleet sent while a device trained: tens. The SDK sends each
update's round as its `sequence`, so the job dedupes per device without a staleness cut;
only an unsequenced update older than `runtime.dedupe_versions` (default 64) is refused
as STALE. This benchmark still sets 1024 (results stay comparable with runs before
sequences) and reports the dead letters to prove no variant lost updates.

Why the re-based FedAsync collapses at the paper's a = 0.6: it adds each delta to the
current model, so the ~20 updates in flight from nearly the same base add up to a step of
about 20 * 0.6 local deltas. The paper's rule mixes each with its own base instead.
`--variants` runs a subset (e.g. `--variants fedbuff fedasync`); the fleet-size sweep and
the outage backlog are in `bench.learning_sweep` (simulated fleets, up to 500 devices).

    python -m bench.learning --seeds 3 --duration 38
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.kafka_stack import BenchKafka, broker, signing_keys
from bench.throughput import REPO, exit_on_sigterm, log, machine
from fedstream.edge.config import EdgeConfig
from fedstream.edge.simulator.data import load_fleet_data
from fedstream.edge.simulator.fleet import FleetRun, FleetSettings, RunResult
from fedstream.schemas.signing import TrustedKeys

FIGURE = REPO / "docs" / "bench-learning-accuracy-vs-time.png"
DEDUPE_VERSIONS = 1024
CHECKPOINT_INTERVAL_MS = 1000


@dataclass(frozen=True)
class Variant:
    """One protocol under test: a simulator mode plus the devices' update compression."""

    key: str
    label: str
    mode: str
    compression: str = "none"
    fedasync_rule: str = "mix_with_base"
    topk_fraction: float = 0.05
    fedasync_staleness_exponent: float | None = None
    window: int | None = None
    """FedBuff's K (None: the fleet's default, a quarter of the devices)."""

    def settings(self, fleet: FleetSettings) -> FleetSettings:
        return replace(
            fleet,
            async_window=self.window or fleet.async_window,
            compression=self.compression,
            fedasync_rule=self.fedasync_rule,
            topk_fraction=self.topk_fraction,
            fedasync_staleness_exponent=self.fedasync_staleness_exponent,
        )


VARIANTS: tuple[Variant, ...] = (
    Variant("sync", "sync FedAvg", "sync"),
    Variant("fedbuff", "FedBuff (staleness-weighted)", "async"),
    Variant("fedbuff-k10", "FedBuff K=10 (staleness-weighted)", "async", window=10),
    Variant("fedasync", "FedAsync (constant, paper's rule)", "fedasync"),
    Variant(
        "fedasync-poly",
        "FedAsync (a·(1+s)^-0.5, paper's rule)",
        "fedasync",
        fedasync_staleness_exponent=0.5,
    ),
    Variant(
        "fedasync-add-delta", "FedAsync (constant, x + a·delta)", "fedasync", "none", "add_delta"
    ),
    Variant("fedbuff-int8", "FedBuff + int8", "async", "int8"),
    Variant("fedbuff-topk5", "FedBuff + top-5% + EF", "async", "topk"),
)
BASELINE = "sync"


# ---------------------------------------------------------------------- pure parts
def rotated(variants: Sequence[Variant], index: int) -> list[Variant]:
    """The run order for the `index`-th seed: the list rotated left by `index`."""
    if not variants:
        return []
    k = index % len(variants)
    return [*variants[k:], *variants[:k]]


def bytes_until(sent: Sequence[tuple[float, int]], until: float | None) -> int | None:
    """Bytes of the (t, size) updates sent at or before `until` (None: never reached)."""
    if until is None:
        return None
    return sum(size for t, size in sent if t <= until)


def step_hold(
    times: Sequence[float], values: Sequence[float], grid: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """A step curve (value holds until the next point) sampled at `grid` times.

    Before the first point there is no value (NaN): nothing was measured yet. `times` must
    be non-decreasing; for equal times the last value wins (it is what was seen at t).
    """
    if len(times) != len(values):
        raise ValueError("times and values differ in length")
    t = np.asarray(times, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    g = np.asarray(grid, dtype=np.float64)
    if t.size and bool(np.any(np.diff(t) < 0)):
        raise ValueError("times must be non-decreasing")
    index = np.searchsorted(t, g, side="right") - 1
    out = np.full(g.shape, np.nan)
    seen = index >= 0
    out[seen] = v[index[seen]]
    return out


@dataclass(frozen=True)
class Stat:
    """Spread over seeds of one metric (`n` values; std is the sample std, 0 for n = 1)."""

    n: int
    mean: float
    std: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(len(values), statistics.fmean(values), std, min(values), max(values))

    def format(self, digits: int = 2, scale: float = 1.0) -> str:
        mean, std = self.mean / scale, self.std / scale
        return f"{mean:.{digits}f} ± {std:.{digits}f}" if self.n > 1 else f"{mean:.{digits}f}"


#: per-run metrics aggregated over seeds (numbers; None where not applicable)
METRICS = (
    "time_to_target_s",
    "final_accuracy",
    "best_accuracy",
    "updates_sent",
    "updates_absorbed",
    "bytes_sent",
    "bytes_per_update",
    "bytes_to_target",
    "releases",
    "mean_staleness",
    "dead_letters",
)


def aggregate(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant: a `Stat` (as a dict) of each metric over seeds, plus how many runs
    reached the target. A missing (None) value is left out of its metric's `Stat`."""
    by_variant: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for run in runs:
        by_variant[str(run["variant"])].append(run)
    out: dict[str, dict[str, Any]] = {}
    for variant, rows in by_variant.items():
        summary: dict[str, Any] = {"runs": len(rows)}
        summary["reached"] = sum(1 for r in rows if r["time_to_target_s"] is not None)
        for metric in METRICS:
            stat = Stat.of([float(r[metric]) for r in rows if r.get(metric) is not None])
            summary[metric] = None if stat is None else asdict(stat)
        out[variant] = summary
    return out


def _cell(stat: Mapping[str, Any] | None, digits: int = 2, scale: float = 1.0) -> str:
    return "-" if stat is None else Stat(**stat).format(digits, scale)


def markdown(
    summary: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str], target: Stat | None
) -> str:
    """The results table: one row per variant, mean ± std over seeds."""
    target_text = "the sync run's final accuracy"
    if target is not None:
        target_text += f" (over seeds: {target.format(3)})"
    lines = [
        f"Target: {target_text}. Mean ± sample std over seeds; time to target is over the "
        "runs that reached it. Bytes: encoded update records (before Kafka's gzip).",
        "",
        "| variant | time to target (s) | reached | final acc | best acc | updates sent "
        "| MB sent | bytes/update | MB to target | releases | mean staleness | dead letters |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, row in summary.items():
        lines.append(
            f"| {labels.get(key, key)} | {_cell(row['time_to_target_s'], 1)} "
            f"| {row['reached']}/{row['runs']} | {_cell(row['final_accuracy'], 3)} "
            f"| {_cell(row['best_accuracy'], 3)} | {_cell(row['updates_sent'], 0)} "
            f"| {_cell(row['bytes_sent'], 2, 1e6)} | {_cell(row['bytes_per_update'], 0)} "
            f"| {_cell(row['bytes_to_target'], 2, 1e6)} | {_cell(row['releases'], 0)} "
            f"| {_cell(row['mean_staleness'], 1)} | {_cell(row['dead_letters'], 0)} |"
        )
    return "\n".join(lines)


def run_metrics(
    result: RunResult, target: float, dead_letters: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """One run's numbers (JSON-ready) against `target` (this seed's sync final accuracy)."""
    summary = result.summary(target)
    sent = sorted((r.t, r.size) for r in result.sent.values())
    reached = summary["time_to_target_s"]
    total = sum(size for _, size in sent)
    letters = dict(dead_letters or {})
    return {
        "model_id": result.model_id,
        "mode": result.mode,
        "compression": result.settings.compression,
        "window": result.window,
        "target_accuracy": target,
        "time_to_target_s": reached,
        "final_accuracy": summary["final_accuracy"],
        "best_accuracy": summary["best_accuracy"],
        "updates_sent": len(sent),
        "updates_absorbed": summary["updates_absorbed"],
        "bytes_sent": total,
        "bytes_per_update": total / len(sent) if sent else None,
        "bytes_to_target": bytes_until(sent, reached),
        "releases": summary["final_version"],
        "mean_staleness": summary["mean_staleness"],
        "max_staleness": summary["max_staleness"],
        "dropouts": summary["dropouts"],
        "dead_letters": sum(letters.values()),
        "dead_letter_reasons": letters,
        "errors": summary["errors"],
        "bad_digests": summary["bad_digests"],
        "versions_monotonic": summary["versions_monotonic"],
        "duration_s": summary["duration_s"],
    }


# ---------------------------------------------------------------------- the run
def job_overrides(
    kafka: BenchKafka,
    work: Path,
    suffix: str,
    keys: dict[str, str],
    dedupe_versions: int = DEDUPE_VERSIONS,
) -> dict[str, str]:
    """The job's config for this benchmark: its own topics, 1 s checkpoints, a dedupe
    horizon far above FedAsync's staleness in versions (see the module docstring), and
    `keys` (`signing_keys`): releases signed as always, registrations by a trusted owner."""
    return {
        **kafka.job_overrides(),
        "topics.updates": f"learn-{suffix}-updates",
        "topics.control": f"learn-{suffix}-control",
        "topics.models": f"learn-{suffix}-models",
        "topics.dlq": f"learn-{suffix}-dlq",
        "kafka.group_id": f"learn-{suffix}",
        "kafka.transactional_id_prefix": f"learn-{suffix}",
        "checkpoint.dir": (work / "checkpoints").as_uri(),
        "checkpoint.interval_ms": str(CHECKPOINT_INTERVAL_MS),
        "runtime.python_execution_mode": "thread",
        "runtime.dedupe_versions": str(dedupe_versions),
        "runtime.restart_attempts": "0",
        **keys,
    }


def dead_letters_by_model(kafka: BenchKafka, topic: str) -> dict[str, dict[str, int]]:
    """model_id -> reason -> count, from the job's dead-letter topic."""
    from fedstream.jobs.kafka_read import read_topic
    from fedstream.schemas import decode

    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for value in read_topic(kafka.bootstrap, topic, kafka.security):
        letter = decode(value, expected="DeadLetter").record
        counts[str(letter["model_id"])][str(letter["reason"])] += 1
    return {model: dict(reasons) for model, reasons in counts.items()}


def plot(
    path: Path,
    curves: Mapping[str, Sequence[RunResult]],
    labels: Mapping[str, str],
    duration_s: float,
    target: float | None,
) -> None:
    """Accuracy vs time: per variant the mean over seeds on a common grid (step-hold),
    shaded between the seeds' min and max; dashed: the mean sync-final target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0.0, duration_s, int(duration_s / 0.25) + 1)
    fig, ax = plt.subplots(figsize=(8, 5.0))
    for key, runs in curves.items():
        stack = np.vstack(
            [
                step_hold([p.t for p in r.timeline], [p.accuracy for p in r.timeline], grid)
                for r in runs
            ]
        )
        seen = ~np.isnan(stack).all(axis=0)
        g, s = grid[seen], stack[:, seen]
        (line,) = ax.plot(g, np.nanmean(s, axis=0), label=f"{labels[key]} (n={len(runs)})")
        ax.fill_between(
            g, np.nanmin(s, axis=0), np.nanmax(s, axis=0), color=line.get_color(), alpha=0.15
        )
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.3f}")
    ax.set_xlabel("wall-clock time since the devices started (s)")
    ax.set_ylabel("test accuracy (onnxruntime)")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, duration_s)
    ax.grid(alpha=0.3)
    ax.set_title("fedstream: accuracy vs time, mean and min-max over seeds")
    fig.legend(loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.11, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.learning",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1, each a fleet + split")
    p.add_argument("--duration", type=float, default=38.0, help="seconds per run (fixed)")
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--speed-spread", type=float, default=10.0, help="slowest / fastest")
    p.add_argument(
        "--fedasync-mixing", type=float, default=0.6, help="FedAsync's constant weight a"
    )
    p.add_argument("--warmup", type=float, default=5.0, help="unmeasured first run (s), 0: none")
    p.add_argument(
        "--dedupe-versions",
        type=int,
        default=DEDUPE_VERSIONS,
        help="the job's runtime.dedupe_versions: updates staler than this are dead-lettered "
        "as STALE (the job's own default is 64, below FedAsync's staleness)",
    )
    p.add_argument(
        "--variants", nargs="+", choices=[v.key for v in VARIANTS], help="a subset (default: all)"
    )
    p.add_argument("--port", type=int, default=49292, help="the benchmark's own broker")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--figure", type=Path, default=FIGURE)
    return p.parse_args(argv)


@dataclass
class Campaign:
    """What one benchmark run shares: its broker, job, fleet config and results so far."""

    args: argparse.Namespace
    variants: tuple[Variant, ...]
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fedstream-learn-")))
    results: dict[tuple[int, str], RunResult] = field(default_factory=dict)
    orders: dict[int, list[str]] = field(default_factory=dict)
    letters: dict[str, dict[str, int]] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)
    device_keys: Path | None = None

    @property
    def labels(self) -> dict[str, str]:
        return {v.key: v.label for v in self.variants}


def edge_config(kafka: BenchKafka, config: Any, owner: Path) -> EdgeConfig:
    """The devices' view of the benchmark's stack (the coordinator registers as `owner`)."""
    return EdgeConfig(
        bootstrap=kafka.bootstrap,
        security=kafka.security,
        updates_topic=config.topics.updates,
        control_topic=config.topics.control,
        models_topic=config.topics.models,
        dlq_topic=config.topics.dlq,
        trusted_keys=TrustedKeys.from_files(config.signing.key_path().with_suffix(".pub")),
        owner_key_file=owner,
    )


def enroll(kafka: BenchKafka, topic: str, folder: Path, devices: int) -> Path:
    """Key pairs for every simulated device (all modes' ids), registered by the operator:
    the job refuses unsigned updates (README "Signed updates")."""
    from fedstream.edge.simulator.fleet import MODES
    from tests.support.devices import enroll_fleet

    ids = [f"{mode}-dev-{i:03d}" for mode in MODES for i in range(devices)]
    return enroll_fleet(kafka, topic, folder, ids)


def run_seed(c: Campaign, edge: EdgeConfig, job: Any, seed: int) -> None:
    """Every variant once on this seed's fleet and data, in the seed's rotated order."""
    from fedstream.edge.errors import EdgeError

    args = c.args
    settings = FleetSettings(
        devices=args.devices,
        seed=seed,
        speed_spread=args.speed_spread,
        fedasync_mixing=args.fedasync_mixing,
    )
    data = load_fleet_data(settings.devices, alpha=settings.alpha, seed=seed)
    if seed == 0 and args.warmup > 0:
        log(f"warm-up run ({args.warmup:g} s, not measured; waits for the job)")
        FleetRun(
            edge,
            settings,
            data,
            mode="async",
            model_id=f"learn-{c.suffix}-warmup",
            wait_timeout_s=180.0,
        ).run(duration_s=args.warmup)
    order = rotated(c.variants, seed)
    c.orders[seed] = [v.key for v in order]
    for variant in order:
        if not job.alive():
            raise RuntimeError(f"the job died:\n{job.log_tail()}")
        log(f"seed {seed}: {variant.label}")
        run = FleetRun(
            edge,
            variant.settings(settings),
            data,
            mode=variant.mode,
            model_id=f"learn-{c.suffix}-s{seed}-{variant.key}",
            progress=_prefixed(f"s{seed} {variant.key}: "),
            progress_every_s=10.0,
            wait_timeout_s=180.0,
            device_keys=c.device_keys,
        )
        try:
            c.results[seed, variant.key] = run.run(duration_s=args.duration)
        except EdgeError as error:
            raise RuntimeError(f"{variant.label}, seed {seed}: {error}") from error
    _log_seed(c, seed)


def _log_seed(c: Campaign, seed: int) -> None:
    if BASELINE not in c.labels:
        log(f"seed {seed} done")
        return
    target = _final(c.results[seed, BASELINE])
    times = ", ".join(f"{k} {_fmt(c.results[seed, k].time_to(target))}" for k in c.labels)
    log(f"seed {seed} done; target {target:.3f}: {times}")


def run_campaign(c: Campaign) -> None:
    """Broker, job, then every seed; the dead letters are read before the job stops."""
    args = c.args
    with broker(args.port) as kafka:
        keys, owner = signing_keys(c.work)
        c.overrides = job_overrides(kafka, c.work, c.suffix, keys, args.dedupe_versions)
        from fedstream.jobs.config import load
        from fedstream.jobs.launcher import JobProcess
        from fedstream.jobs.topics import ensure_topics

        config = load(overrides=c.overrides)
        ensure_topics(config)
        c.device_keys = enroll(kafka, config.topics.devices, c.work / "devices", args.devices)
        edge = edge_config(kafka, config, owner)
        job = JobProcess(c.overrides, c.work / "job.log")
        log(f"job starting (thread mode, checkpoints every {CHECKPOINT_INTERVAL_MS} ms)")
        job.start()
        try:
            for seed in range(args.seeds):
                run_seed(c, edge, job, seed)
            log("reading dead letters")
            c.letters = dead_letters_by_model(kafka, config.topics.dlq)
        finally:
            job.kill()


def _target(c: Campaign, seed: int) -> float | None:
    return _final(c.results[seed, BASELINE]) if (seed, BASELINE) in c.results else None


def collect_runs(c: Campaign) -> list[dict[str, Any]]:
    """One JSON row per (seed, variant), against the seed's sync final accuracy."""
    runs: list[dict[str, Any]] = []
    for (seed, key), result in sorted(c.results.items()):
        target = _target(c, seed)
        row = {"seed": seed, "variant": key, "label": c.labels[key]}
        row |= run_metrics(
            result, math.inf if target is None else target, c.letters.get(result.model_id)
        )
        row["position"] = c.orders[seed].index(key)
        row["timeline"] = [[round(p.t, 3), p.version, p.accuracy] for p in result.timeline]
        runs.append(row)
    return runs


def write_outputs(c: Campaign, runs: list[dict[str, Any]], wall: float) -> None:
    """learning.json, learning.md and the figure (a subset run writes learning_<keys>.*)."""
    args = c.args
    summary = aggregate(runs)
    summary = {key: summary[key] for key in c.labels if key in summary}
    finals = [t for t in (_target(c, s) for s in c.orders) if t is not None]
    target_stat = Stat.of(finals)
    table = markdown(summary, c.labels, target_stat)
    header = (
        f"Learning efficiency, {args.devices} devices, {args.speed_spread:g}x speed spread, "
        f"{len(c.orders)} seeds x {args.duration:g} s per run; {machine()}; job in thread "
        f"mode, checkpoints every {CHECKPOINT_INTERVAL_MS} ms; bench wall time {wall:.0f} s."
    )
    print(header + "\n\n" + table, flush=True)
    subset = len(c.variants) < len(VARIANTS)
    name = "learning" + ("_" + "_".join(c.labels) if subset else "")
    settings = FleetSettings(
        devices=args.devices, speed_spread=args.speed_spread, fedasync_mixing=args.fedasync_mixing
    )
    report = {
        "machine": machine(),
        "wall_clock_s": round(wall, 1),
        "duration_s_per_run": args.duration,
        "seeds": sorted(c.orders),
        "order_per_seed": {str(s): o for s, o in c.orders.items()},
        "fleet": {**asdict(settings), "offline_s": list(settings.offline_s), "seed": "per run"},
        "job": {k: v for k, v in c.overrides.items() if not k.startswith(("topics.", "kafka."))},
        "variants": [asdict(v) for v in c.variants],
        "target": None if target_stat is None else asdict(target_stat),
        "summary": summary,
        "dead_letters_other": {
            m: r for m, r in c.letters.items() if m not in {x.model_id for x in c.results.values()}
        },
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(header + "\n\n" + table + "\n")
    figure = args.figure if not subset else args.figure.with_name(f"bench-{name}.png")
    curves = {key: [c.results[s, key] for s in sorted(c.orders)] for key in c.labels}
    target = target_stat.mean if target_stat else None
    plot(figure, curves, c.labels, args.duration, target)
    log(f"wrote {args.out / name}.json, .md and {figure}")


def main(argv: list[str] | None = None) -> None:
    args = arguments(argv)
    exit_on_sigterm()
    started = time.monotonic()
    chosen = tuple(v for v in VARIANTS if not args.variants or v.key in args.variants)
    campaign = Campaign(args, chosen)
    log(
        f"learning efficiency: {args.seeds} seeds x {len(chosen)} variants x "
        f"{args.duration:g} s, {args.devices} devices, speed spread {args.speed_spread:g}x"
    )
    run_campaign(campaign)
    write_outputs(campaign, collect_runs(campaign), time.monotonic() - started)


def _prefixed(prefix: str) -> Callable[[str], None]:
    """A progress callback: `log` with a prefix naming the run."""

    def say(line: str) -> None:
        log(prefix + line)

    return say


def _final(result: RunResult) -> float:
    final = result.final
    if final is None:
        raise RuntimeError(f"{result.model_id}: no release at all")
    return final.accuracy


def _fmt(seconds: float | None) -> str:
    return "not reached" if seconds is None or math.isnan(seconds) else f"{seconds:.1f} s"


if __name__ == "__main__":
    main()
