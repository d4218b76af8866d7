"""The simulator's outputs: a JSON report, PNG plots and a one-line summary."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fedstream.edge.simulator.data import FleetData
from fedstream.edge.simulator.fleet import FleetSettings, RunResult

__all__ = ["summary_line", "write_plots", "write_report"]


def comparison(runs: list[RunResult], target: float | None) -> dict[str, Any]:
    """Async vs sync time-to-target (when both runs are there)."""
    by_mode = {r.mode: r for r in runs}
    if target is None or "async" not in by_mode or "sync" not in by_mode:
        return {}
    t_async = by_mode["async"].time_to(target)
    t_sync = by_mode["sync"].time_to(target)
    speedup = t_sync / t_async if t_async and t_sync else None
    return {
        "target_accuracy": target,
        "async_time_to_target_s": t_async,
        "sync_time_to_target_s": t_sync,
        "sync_over_async": speedup,
    }


def write_report(
    out: Path,
    settings: FleetSettings,
    data: FleetData,
    runs: list[RunResult],
    target: float | None,
    extra: dict[str, Any] | None = None,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "settings": {**asdict(settings), "offline_s": list(settings.offline_s)},
        "data": {
            "train": len(data.y_train),
            "test": len(data.y_test),
            "samples_per_device": [len(s) for s in data.shards],
            "labels_per_device": data.label_histogram().tolist(),
        },
        "runs": {r.mode: r.to_json(target) for r in runs},
        "comparison": comparison(runs, target),
        **(extra or {}),
    }
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path


def write_plots(out: Path, runs: list[RunResult], target: float | None) -> list[Path]:
    """accuracy_vs_time.png and staleness_hist.png (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run in runs:
        ts = [p.t for p in run.timeline]
        acc = [p.accuracy for p in run.timeline]
        ax.step(ts, acc, where="post", label=f"{run.mode} (K={run.window})")
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.0%}")
    ax.set_xlabel("wall-clock time since the devices started (s)")
    ax.set_ylabel("test accuracy (onnxruntime)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(f"fedstream fleet: {runs[0].settings.devices} devices, digits")
    fig.tight_layout()
    paths.append(out / "accuracy_vs_time.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.2))
    values = [r.staleness() for r in runs]
    top = max((max(v, default=0) for v in values), default=0)
    bins = [b - 0.5 for b in range(top + 2)]
    for run, stale in zip(runs, values, strict=True):
        ax.hist(stale, bins=bins, alpha=0.6, label=f"{run.mode} ({len(stale)} updates)")
    ax.set_xlabel("staleness of absorbed updates (versions)")
    ax.set_ylabel("updates")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out / "staleness_hist.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _fmt_time(seconds: float | None) -> str:
    return "not reached" if seconds is None else f"{seconds:.1f} s"


def summary_line(runs: list[RunResult], target: float | None) -> str:
    parts = []
    for run in runs:
        s = run.summary(target)
        if s["final_version"] is None:
            parts.append(f"{run.mode}: no release")
            continue
        parts.append(
            f"{run.mode}: best acc {s['best_accuracy']:.3f} at {s['best_at_s']:.1f} s "
            f"(v{s['final_version']}, {s['updates_absorbed']} updates absorbed, "
            f"mean staleness {s['mean_staleness']:.2f})"
        )
    line = " | ".join(parts)
    cmp = comparison(runs, target)
    if cmp:
        ratio = cmp["sync_over_async"]
        line += (
            f" | time to {target:.0%}: async {_fmt_time(cmp['async_time_to_target_s'])}, "
            f"sync {_fmt_time(cmp['sync_time_to_target_s'])}"
            + (f" ({ratio:.1f}x)" if ratio else "")
        )
    elif target is not None and runs:
        line += f" | time to {target:.0%}: {_fmt_time(runs[0].time_to(target))}"
    return line
