"""Cost of the aggregation core against the bare numpy it wraps.

One round = K `Aggregator.try_add` calls (validation, staleness weight, optional clip,
weighted add into the running sum) + `close` (weighted mean, server optimizer step, new
version). The baseline does the same arithmetic as hand-written, in-place numpy with
preallocated buffers and no validation: the floor the core could reach. Rounds of the
two alternate so machine noise hits both alike; we report the median per round.

    .venv/bin/python bench/core_bench.py [--params 1000000] [--k 10] [--rounds 40]

Writes bench/results/core_bench.json. Target: core / numpy <= 1.5 for every case.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedstream.pipelines.aggregator import Aggregator
from fedstream.pipelines.config import AggregationConfig, ServerOptimizerConfig, WindowConfig
from fedstream.pipelines.model_state import ModelState
from fedstream.pipelines.update import ClientUpdate

F32 = npt.NDArray[np.float32]
RESULTS = Path(__file__).resolve().parent / "results" / "core_bench.json"
TARGET = 1.5


def make_core_round(
    config: AggregationConfig, deltas: list[F32], stalenesses: list[int]
) -> Callable[[], None]:
    params = np.zeros(deltas[0].shape[0], dtype=np.float32)
    agg = Aggregator(config, ModelState(params, version=max(stalenesses)))

    def run() -> None:
        v = agg.state.version
        for i, (delta, s) in enumerate(zip(deltas, stalenesses, strict=True)):
            update = ClientUpdate(f"u{v}-{i}", v - s, 32, delta)
            if agg.try_add(update, now=float(i)) is not None:
                raise AssertionError("benchmark update rejected")
        if not agg.should_close(now=float(len(deltas))):
            raise AssertionError("window did not close")
        agg.close()

    return run


def make_numpy_round(
    optimizer: str, clip_norm: float | None, deltas: list[F32], stalenesses: list[int]
) -> Callable[[], None]:
    n = deltas[0].shape[0]
    params = np.zeros(n, dtype=np.float32)
    total = np.empty(n, dtype=np.float32)
    scratch = np.empty(n, dtype=np.float32)
    m = np.zeros(n, dtype=np.float32)
    v = np.full(n, 1e-6, dtype=np.float32)
    lr, b1, b2, tau = 1.0, 0.9, 0.99, 1e-3

    def run() -> None:
        weight_sum = 0.0
        for i, (delta, s) in enumerate(zip(deltas, stalenesses, strict=True)):
            w = (1.0 + s) ** -0.5
            mult = w
            if clip_norm is not None:
                norm = math.sqrt(float(np.dot(delta, delta)))
                mult *= min(1.0, clip_norm / norm)
            if i == 0:
                np.multiply(delta, mult, out=total)
            else:
                np.multiply(delta, mult, out=scratch)
                np.add(total, scratch, out=total)
            weight_sum += w
        np.multiply(total, 1.0 / weight_sum, out=total)  # pseudo-gradient
        if optimizer == "sgd":
            np.multiply(total, lr, out=total)
            np.add(params, total, out=params)
        else:  # adam
            np.multiply(m, b1, out=m)
            np.multiply(total, 1.0 - b1, out=scratch)
            np.add(m, scratch, out=m)
            np.square(total, out=scratch)
            np.multiply(scratch, 1.0 - b2, out=scratch)
            np.multiply(v, b2, out=v)
            np.add(v, scratch, out=v)
            np.sqrt(v, out=scratch)
            np.add(scratch, tau, out=scratch)
            np.divide(m, scratch, out=scratch)
            np.multiply(scratch, lr, out=scratch)
            np.add(params, scratch, out=params)

    return run


def time_pair(
    core: Callable[[], None], base: Callable[[], None], rounds: int
) -> tuple[list[float], list[float]]:
    for _ in range(3):  # warm up: page in buffers, lazily allocated scratch
        core()
        base()
    core_s: list[float] = []
    base_s: list[float] = []
    for _ in range(rounds):
        for fn, out in ((core, core_s), (base, base_s)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return core_s, base_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    deltas = [rng.standard_normal(args.params, dtype=np.float32) * 0.01 for _ in range(args.k)]
    stalenesses = [i % 4 for i in range(args.k)]  # non-unit staleness weights
    window = WindowConfig(count=args.k)
    cases: list[tuple[str, AggregationConfig, str, float | None]] = [
        ("fedbuff_sgd", AggregationConfig(window=window), "sgd", None),
        (
            "fedbuff_sgd_clip",
            AggregationConfig(window=window, clip_norm=1.0),
            "sgd",
            1.0,
        ),
        (
            "fedbuff_adam",
            AggregationConfig(window=window, server_optimizer=ServerOptimizerConfig(name="adam")),  # type: ignore[arg-type]
            "adam",
            None,
        ),
    ]
    rows: list[dict[str, Any]] = []
    for name, config, optimizer, clip in cases:
        core_s, base_s = time_pair(
            make_core_round(config, deltas, stalenesses),
            make_numpy_round(optimizer, clip, deltas, stalenesses),
            args.rounds,
        )
        core_ms = statistics.median(core_s) * 1e3
        base_ms = statistics.median(base_s) * 1e3
        rows.append(
            {
                "case": name,
                "core_ms_median": round(core_ms, 3),
                "numpy_ms_median": round(base_ms, 3),
                "core_ms_min": round(min(core_s) * 1e3, 3),
                "numpy_ms_min": round(min(base_s) * 1e3, 3),
                "ratio": round(core_ms / base_ms, 3),
            }
        )

    print(f"params={args.params:,} K={args.k} rounds={args.rounds} (median ms per round)")
    print(f"{'case':<18} {'core ms':>9} {'numpy ms':>9} {'ratio':>6}  ok")
    for r in rows:
        ok = "yes" if r["ratio"] <= TARGET else "NO"
        print(
            f"{r['case']:<18} {r['core_ms_median']:>9.2f} {r['numpy_ms_median']:>9.2f} "
            f"{r['ratio']:>6.2f}  {ok}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "core_bench",
        "params": args.params,
        "k": args.k,
        "rounds": args.rounds,
        "target_ratio": TARGET,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cases": rows,
        "all_within_target": all(r["ratio"] <= TARGET for r in rows),
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
