"""Learning efficiency on simulated fleets of 10 to 500 devices (`bench.fleet_sim`).

Three experiments, each over seeds 0..n-1 (mean ± sample std), every variant on the
same fleet and data per seed:

1. **variants** (20 devices, 10x speed spread): sync FedAvg, FedBuff (fixed K, both
   normalisations, adaptive K), FedAsync (the paper's rule with constant, polynomial and
   hinge schedules, and the old re-based rule), FedBuff with int8 and with top-k + error
   feedback. Every run lasts the same simulated time, long enough for sync FedAvg to reach
   the target accuracy, so final accuracies compare and time to target is a real ratio.
2. **fleet sweep**: sync, FedBuff K = 10, FedBuff adaptive and FedAsync for 10 to 500
   devices; each run stops once it reaches the target (or at the horizon).
3. **outage**: the server is down for a while and the fleet's queued updates (all based on
   the pre-outage version) arrive at once: FedBuff with normalisation by the weight sum
   vs by K.

    python -m bench.learning_sweep --seeds 3

Time is simulated seconds (see `bench.fleet_sim`); BLAS is limited to one thread so the
runs share the machine politely and stay deterministic.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.fleet_sim import Data, Outage, SimResult, SimSettings, load_data, simulate
from bench.learning import Stat

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
FIGURES = REPO / "docs"
TARGET = 0.90


@dataclass(frozen=True)
class Variant:
    """A protocol: the simulator's mode, the registered aggregation, the compression."""

    key: str
    label: str
    protocol: str = "async"
    aggregation: Mapping[str, Any] = field(default_factory=dict)
    compression: str = "none"
    topk_fraction: float = 0.05

    def settings(self, base: SimSettings) -> SimSettings:
        return replace(
            base,
            protocol=self.protocol,
            aggregation=dict(self.aggregation),
            compression=self.compression,
            topk_fraction=self.topk_fraction,
        )


def _fedasync(rule: str, staleness: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "mode": "fedasync",
        "fedasync_rule": rule,
        "max_staleness": 1024,
        "fedasync_mixing": 0.6,
        "window": {"count": 1},
        "staleness": dict(staleness),
    }


#: the adaptive window's time bound (liveness when K overshoots; see WindowConfig)
ADAPTIVE_SECONDS = 5.0
CONSTANT = {"function": "constant"}
POLY = {"function": "polynomial", "a": 0.5}
HINGE = {"function": "hinge", "a": 10.0, "b": 4.0}
SYNC = Variant("sync", "sync FedAvg", "sync")
FEDBUFF = Variant(
    "fedbuff",
    "FedBuff K=10, ÷Σw",
    aggregation={"window": {"count": 10}, "normalization": "weight_sum"},
)
FEDBUFF_K = Variant(
    "fedbuff-count",
    "FedBuff K=10, ÷K",
    aggregation={"window": {"count": 10}, "normalization": "count"},
)
ADAPTIVE = Variant(
    "fedbuff-adaptive",
    "FedBuff adaptive K, ÷Σw",
    aggregation={
        "window": {"count": 10, "seconds": ADAPTIVE_SECONDS, "adaptive": True},
        "normalization": "weight_sum",
    },
)
ADAPTIVE_K = Variant(
    "fedbuff-adaptive-count",
    "FedBuff adaptive K, ÷K",
    aggregation={
        "window": {"count": 10, "seconds": ADAPTIVE_SECONDS, "adaptive": True},
        "normalization": "count",
    },
)
FEDASYNC = Variant(
    "fedasync-poly", "FedAsync a=0.6, poly", aggregation=_fedasync("mix_with_base", POLY)
)
VARIANTS: tuple[Variant, ...] = (
    SYNC,
    FEDBUFF,
    FEDBUFF_K,
    ADAPTIVE,
    ADAPTIVE_K,
    Variant(
        "fedasync-const",
        "FedAsync a=0.6, constant",
        aggregation=_fedasync("mix_with_base", CONSTANT),
    ),
    FEDASYNC,
    Variant(
        "fedasync-hinge",
        "FedAsync a=0.6, hinge(10, 4)",
        aggregation=_fedasync("mix_with_base", HINGE),
    ),
    Variant(
        "fedasync-add-delta",
        "FedAsync a=0.6, constant, x+a·Δ (old rule)",
        aggregation=_fedasync("add_delta", CONSTANT),
    ),
    Variant(
        "fedbuff-int8", "FedBuff K=10 + int8", aggregation=FEDBUFF.aggregation, compression="int8"
    ),
    Variant(
        "fedbuff-topk5",
        "FedBuff K=10 + top-5% + EF",
        aggregation=FEDBUFF.aggregation,
        compression="topk",
        topk_fraction=0.05,
    ),
)
SWEEP_VARIANTS = (SYNC, FEDBUFF, FEDBUFF_K, ADAPTIVE, ADAPTIVE_K, FEDASYNC)
OUTAGE_VARIANTS = (FEDBUFF, FEDBUFF_K, ADAPTIVE, ADAPTIVE_K)


# ---------------------------------------------------------------------- one run
def run_row(variant: Variant, base: SimSettings, data: Data, target: float) -> dict[str, Any]:
    """Simulate one variant and reduce it to its numbers (JSON-ready)."""
    started = time.process_time()
    result = simulate(variant.settings(base), data)
    return {
        "variant": variant.key,
        "devices": base.devices,
        "seed": base.seed,
        **metrics(result, target),
        "cpu_s": round(time.process_time() - started, 2),
        "curve": [result.times, result.accuracies],
    }


def metrics(result: SimResult, target: float) -> dict[str, Any]:
    sizes = result.window_sizes
    return {
        "time_to_target_s": result.time_to(target),
        "final_accuracy": result.final_accuracy,
        "best_accuracy": max(result.accuracies),
        "updates_sent": result.updates_sent,
        "updates_absorbed": result.updates_absorbed,
        "rejected": result.rejected,
        "bytes_per_update": result.bytes_sent / max(result.updates_sent, 1),
        "mean_staleness": result.mean_staleness,
        "versions": result.versions,
        "mean_window": sum(sizes) / len(sizes) if sizes else None,
        "last_window": sizes[-1] if sizes else None,
    }


def summarise(rows: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """{metric: Stat as a dict} over `rows` (None values left out), plus the count."""
    rows = list(rows)
    out: dict[str, Any] = {"runs": len(rows)}
    out["reached"] = sum(1 for r in rows if r["time_to_target_s"] is not None)
    for key in keys:
        stat = Stat.of([float(r[key]) for r in rows if r.get(key) is not None])
        out[key] = None if stat is None else asdict(stat)
    return out


SUMMARY_KEYS = (
    "time_to_target_s",
    "final_accuracy",
    "best_accuracy",
    "updates_sent",
    "bytes_per_update",
    "mean_staleness",
    "mean_window",
    "versions",
    "rejected",
    "cpu_s",
)


def cell(stat: Mapping[str, Any] | None, digits: int = 1) -> str:
    return "-" if stat is None else Stat(**stat).format(digits)


# ---------------------------------------------------------------------- experiments
def experiment_variants(
    seeds: int, duration: float, devices: int, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    rows = []
    for seed in range(seeds):
        data = load_data(seed)
        base = SimSettings(devices=devices, seed=seed, duration_s=duration)
        for variant in VARIANTS:
            rows.append(run_row(variant, base, data, TARGET))
            log(_line(rows[-1]))
    return rows


def experiment_sweep(args: argparse.Namespace, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Each run stops at the target, the horizon or `--max-updates` (a CPU budget); every
    row is also appended to learning_sim_sweep_rows.jsonl as it completes."""
    rows = []
    partial = args.out / "learning_sim_sweep_rows.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seeds):
        data = load_data(seed)
        for devices in args.sizes:
            base = SimSettings(
                devices=devices,
                seed=seed,
                duration_s=args.horizon,
                stop_at=TARGET,
                max_updates=args.max_updates,
            )
            for variant in SWEEP_VARIANTS:
                rows.append(run_row(variant, base, data, TARGET))
                log(_line(rows[-1]))
                with partial.open("a") as f:
                    f.write(json.dumps(rows[-1]) + "\n")
    return rows


def experiment_outage(
    seeds: int, devices: int, outage: Outage, duration: float, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    rows = []
    for seed in range(seeds):
        data = load_data(seed)
        base = SimSettings(devices=devices, seed=seed, duration_s=duration, outage=outage)
        for variant in OUTAGE_VARIANTS:
            row = run_row(variant, base, data, TARGET)
            row |= outage_metrics(row["curve"], outage)
            rows.append(row)
            log(_line(row) + f" dip {row['accuracy_drop']:.3f}")
    return rows


def outage_metrics(curve: Sequence[Sequence[float]], outage: Outage) -> dict[str, Any]:
    """Accuracy just before the backlog arrives, the lowest after it, and the drop."""
    times, accs = curve
    back = outage.start_s + outage.duration_s
    before = [a for t, a in zip(times, accs, strict=True) if t < back]
    after = [a for t, a in zip(times, accs, strict=True) if back <= t <= back + 5.0]
    low = min(after) if after else float("nan")
    return {
        "accuracy_before_backlog": before[-1],
        "lowest_after_backlog": low,
        "accuracy_drop": before[-1] - low,
    }


def _line(row: Mapping[str, Any]) -> str:
    t = row["time_to_target_s"]
    return (
        f"{row['devices']:>3} dev seed {row['seed']} {row['variant']:<24} "
        f"t{TARGET:.0%} {'-' if t is None else f'{t:6.1f}'} final {row['final_accuracy']:.3f} "
        f"staleness {row['mean_staleness']:.1f} cpu {row['cpu_s']:.1f}s"
    )


# ---------------------------------------------------------------------- report
def by(rows: Iterable[Mapping[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[Any]]:
    out: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        out.setdefault(tuple(row[k] for k in keys), []).append(row)
    return out


def speedup(rows: Sequence[Mapping[str, Any]], key: str, baseline: str) -> Stat | None:
    """Per seed: baseline's time to target / the variant's; over seeds."""
    times = {(r["seed"], r["variant"]): r["time_to_target_s"] for r in rows}
    ratios = [
        times[s, baseline] / times[s, key]
        for s in {r["seed"] for r in rows}
        if times.get((s, key)) and times.get((s, baseline))
    ]
    return Stat.of(ratios)


def variants_table(rows: list[dict[str, Any]]) -> str:
    labels = {v.key: v.label for v in VARIANTS}
    lines = [
        f"| variant | time to {TARGET:.0%} (s) | speed-up vs sync | reached | final acc "
        "| best acc | bytes/update | mean staleness | mean K |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (key,), group in by(rows, "variant").items():
        s = summarise(group, SUMMARY_KEYS)
        ratio = speedup(rows, key, SYNC.key)
        lines.append(
            f"| {labels[key]} | {cell(s['time_to_target_s'])} "
            f"| {'-' if ratio is None else ratio.format(1)} | {s['reached']}/{s['runs']} "
            f"| {cell(s['final_accuracy'], 3)} | {cell(s['best_accuracy'], 3)} "
            f"| {cell(s['bytes_per_update'], 0)} | {cell(s['mean_staleness'])} "
            f"| {cell(s['mean_window'])} |"
        )
    return "\n".join(lines)


def sweep_table(rows: list[dict[str, Any]]) -> str:
    labels = {v.key: v.label for v in SWEEP_VARIANTS}
    lines = [
        f"| devices | variant | time to {TARGET:.0%} (s) | speed-up vs sync | reached "
        "| mean staleness | mean K | updates | CPU s/run |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (devices, key), group in sorted(by(rows, "devices", "variant").items(), key=_order):
        s = summarise(group, SUMMARY_KEYS)
        ratio = speedup([r for r in rows if r["devices"] == devices], key, SYNC.key)
        lines.append(
            f"| {devices} | {labels[key]} | {cell(s['time_to_target_s'])} "
            f"| {'-' if ratio is None else ratio.format(1)} | {s['reached']}/{s['runs']} "
            f"| {cell(s['mean_staleness'])} | {cell(s['mean_window'])} "
            f"| {cell(s['updates_sent'], 0)} | {cell(s['cpu_s'])} |"
        )
    return "\n".join(lines)


def _order(item: tuple[tuple[Any, ...], Any]) -> tuple[int, int]:
    (devices, key), _ = item
    return devices, [v.key for v in SWEEP_VARIANTS].index(key)


def outage_table(rows: list[dict[str, Any]]) -> str:
    labels = {v.key: v.label for v in OUTAGE_VARIANTS}
    keys = (*SUMMARY_KEYS, "accuracy_before_backlog", "lowest_after_backlog", "accuracy_drop")
    lines = [
        "| variant | acc. before backlog | lowest within 5 s after | drop "
        f"| time to {TARGET:.0%} (s) | final acc |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (key,), group in by(rows, "variant").items():
        s = summarise(group, keys)
        lines.append(
            f"| {labels[key]} | {cell(s['accuracy_before_backlog'], 3)} "
            f"| {cell(s['lowest_after_backlog'], 3)} | {cell(s['accuracy_drop'], 3)} "
            f"| {cell(s['time_to_target_s'])} | {cell(s['final_accuracy'], 3)} |"
        )
    return "\n".join(lines)


def plot_curves(path: Path, rows: list[dict[str, Any]], keys: Sequence[str], title: str) -> None:
    """Accuracy vs simulated time, mean over seeds, for the variants in `keys`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = {v.key: v.label for v in VARIANTS}
    fig, ax = plt.subplots(figsize=(8, 5))
    for key in keys:
        curves = [r["curve"] for r in rows if r["variant"] == key]
        length = min(len(c[0]) for c in curves)
        mean = np.mean([c[1][:length] for c in curves], axis=0)
        ax.plot(curves[0][0][:length], mean, label=labels[key])
    ax.axhline(TARGET, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel="simulated time (s)", ylabel="test accuracy", ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sweep(path: Path, rows: list[dict[str, Any]]) -> None:
    """Time to target vs fleet size (log-log), mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant in SWEEP_VARIANTS:
        points = []
        for (devices,), group in sorted(
            by([r for r in rows if r["variant"] == variant.key], "devices").items()
        ):
            stat = Stat.of([r["time_to_target_s"] for r in group if r["time_to_target_s"]])
            if stat is not None:
                points.append((devices, stat.mean, stat.std))
        if points:
            xs, ys, es = zip(*points, strict=True)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=variant.label)
    ax.set(
        xscale="log", yscale="log", xlabel="devices", ylabel=f"time to {TARGET:.0%} (simulated s)"
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------- main
def arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.learning_sweep",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--devices", type=int, default=20, help="fleet of the variants experiment")
    p.add_argument("--duration", type=float, default=200.0, help="simulated s per variant run")
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500])
    p.add_argument("--horizon", type=float, default=600.0, help="sweep: give up after (s)")
    p.add_argument("--max-updates", type=int, default=40_000, help="sweep: CPU budget per run")
    p.add_argument("--outage-devices", type=int, default=100)
    p.add_argument("--outage", type=float, nargs=2, default=[20.0, 10.0], help="start, length")
    p.add_argument("--outage-duration", type=float, default=60.0)
    p.add_argument(
        "--only",
        choices=["variants", "sweep", "outage"],
        nargs="+",
        default=["variants", "sweep", "outage"],
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


Log = Callable[[str], None]


def section_variants(args: argparse.Namespace, report: dict[str, Any], log: Log) -> str:
    rows = experiment_variants(args.seeds, args.duration, args.devices, log)
    report["variants"] = rows
    plot_curves(
        FIGURES / "bench-learning-sim-variants.png",
        rows,
        [v.key for v in VARIANTS if v.compression == "none"],
        f"{args.devices} simulated devices, mean over {args.seeds} seeds",
    )
    title = f"## Variants, {args.devices} devices, {args.duration:g} simulated s per run"
    return f"{title}\n\n{variants_table(rows)}"


def section_sweep(args: argparse.Namespace, report: dict[str, Any], log: Log) -> str:
    rows = experiment_sweep(args, log)
    report["sweep"] = rows
    plot_sweep(FIGURES / "bench-learning-sim-sweep.png", rows)
    return f"## Fleet sweep (each run stops at {TARGET:.0%})\n\n{sweep_table(rows)}"


def section_outage(args: argparse.Namespace, report: dict[str, Any], log: Log) -> str:
    outage = Outage(*args.outage)
    rows = experiment_outage(args.seeds, args.outage_devices, outage, args.outage_duration, log)
    report["outage"] = rows
    down = f"{outage.start_s:g}-{outage.start_s + outage.duration_s:g} s"
    title = f"## Outage, {args.outage_devices} devices, server down {down}"
    return f"{title}\n\n{outage_table(rows)}"


SECTIONS = {"variants": section_variants, "sweep": section_sweep, "outage": section_outage}


def write_report(args: argparse.Namespace, report: dict[str, Any], text: str) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    name = "learning_sim" + "".join(f"_{o}" for o in args.only if len(args.only) < 3)
    (args.out / f"{name}.json").write_text(json.dumps(report) + "\n")
    (args.out / f"{name}.md").write_text(text + "\n")


def main(argv: list[str] | None = None) -> None:
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    args = arguments(argv)
    started = time.monotonic()

    def log(line: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {line}", flush=True)

    report: dict[str, Any] = {"target": TARGET, "args": {k: str(v) for k, v in vars(args).items()}}
    with threadpool_limits(1):
        sections = [SECTIONS[name](args, report, log) for name in args.only]
    header = (
        f"Simulated fleets (bench.fleet_sim), {args.seeds} seeds, target {TARGET:.0%}; "
        f"wall time {time.monotonic() - started:.0f} s. Mean ± sample std over seeds."
    )
    text = header + "\n\n" + "\n\n".join(sections)
    write_report(args, report, text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
