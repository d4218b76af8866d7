"""A lightweight fleet on a virtual clock, aggregated by the job's real core.

`bench.learning` drives the real job and a thread-per-device fleet: faithful, but 20
devices already load this 2-core machine. To sweep fleets of 10 to 500 devices, and to
run each protocol long enough for sync FedAvg to reach a fixed accuracy, this module
simulates the devices instead and keeps everything that decides *learning*:

* the server is `fedstream.pipelines.aggregator.Aggregator` (the pure core the Flink job
  runs per model: validation, staleness weights, windows, FedAsync mixing, optimizers);
* updates go through the SDK's `DeltaCompressor` (error feedback) and the Avro codec, so
  compression is exactly what devices send, and bytes are encoded GradientUpdate records
  (as if signed: a 64-byte signature and a key id are included);
* time is virtual: a device's round takes its compute time (log-uniform speed spread,
  log-normal jitter), devices drop out mid-round and come back, uplink and aggregation
  are instantaneous. Time to accuracy is in simulated seconds, so two protocols compare
  on the same fleet whatever else the machine is doing.

Lightweight devices, shared data: a device is a label mix (Dirichlet(alpha) over the 10
digit classes, Hsu et al. 2019), a speed, an RNG and its compressor; every round it draws
`local_samples` examples of its mix from one shared training pool (scikit-learn's digits)
and runs `local_steps` of minibatch SGD on a 64-32-10 MLP in numpy (the same shape as
the fleet simulator's torch model, no torch needed). 500 devices cost a few MB.

Protocols (as in `fedstream.edge.simulator.fleet`): "sync" waits for every device each
version (K = N, constant weight); "async" trains on the newest release whenever one is
newer than the last it used. An optional outage (`Outage`) makes the server deaf for a
while: devices finish their round, their updates queue, and the whole backlog arrives
when the server returns, all based on the pre-outage version.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedstream.edge.compression import DeltaCompressor
from fedstream.pipelines.aggregator import Aggregator
from fedstream.pipelines.config import AggregationConfig
from fedstream.pipelines.model_state import ModelState
from fedstream.pipelines.update import ClientUpdate
from fedstream.schemas import encode, unpack

__all__ = [
    "Data",
    "Outage",
    "SimResult",
    "SimSettings",
    "load_data",
    "simulate",
]

F32 = npt.NDArray[np.float32]
IN, HIDDEN, OUT = 64, 32, 10
NUM_PARAMS = HIDDEN * IN + HIDDEN + OUT * HIDDEN + OUT


# ---------------------------------------------------------------------- data and model
@dataclass(frozen=True)
class Data:
    """The shared pool: training examples grouped by class, and a held-out test set."""

    pool: F32  # training examples sorted by class
    starts: npt.NDArray[np.int64]  # first row of each class in `pool`
    counts: npt.NDArray[np.int64]  # rows of each class
    test_x: F32
    test_y: npt.NDArray[np.int64]

    def draw(self, classes: npt.NDArray[np.int64], rng: np.random.Generator) -> F32:
        """One random example of each class in `classes` (with replacement)."""
        rows = self.starts[classes] + (rng.random(len(classes)) * self.counts[classes]).astype(
            np.int64
        )
        drawn: F32 = self.pool[rows]
        return drawn


def load_data(seed: int) -> Data:
    """Digits scaled to [0, 1], a stratified 20 % test split drawn with `seed`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in range(OUT):
        members = np.flatnonzero(y == c)
        test[rng.choice(members, size=len(members) // 5, replace=False)] = True
    order = np.argsort(y[~test], kind="stable")
    pool, labels = x[~test][order], y[~test][order]
    counts = np.bincount(labels, minlength=OUT).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return Data(pool, starts, counts, x[test], y[test])


def init_params(seed: int) -> F32:
    """He-style initial weights for the MLP, flat (W1, b1, W2, b2)."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((HIDDEN, IN)) * math.sqrt(2.0 / IN)
    w2 = rng.standard_normal((OUT, HIDDEN)) * math.sqrt(2.0 / HIDDEN)
    parts = [w1.ravel(), np.zeros(HIDDEN), w2.ravel(), np.zeros(OUT)]
    flat: F32 = np.concatenate(parts).astype(np.float32)
    return flat


def _unflat(p: F32) -> tuple[F32, F32, F32, F32]:
    a = HIDDEN * IN
    b = a + HIDDEN
    c = b + OUT * HIDDEN
    return p[:a].reshape(HIDDEN, IN), p[a:b], p[b:c].reshape(OUT, HIDDEN), p[c:]


def accuracy(params: F32, x: F32, y: npt.NDArray[np.int64]) -> float:
    w1, b1, w2, b2 = _unflat(params)
    hidden = np.maximum(x @ w1.T + b1, 0.0)
    return float(np.mean(np.argmax(hidden @ w2.T + b2, axis=1) == y))


def sgd_step(params: F32, x: F32, y: npt.NDArray[np.int64], lr: float) -> None:
    """One cross-entropy SGD step on a minibatch, in place."""
    w1, b1, w2, b2 = _unflat(params)
    pre = x @ w1.T + b1
    hidden = np.maximum(pre, 0.0)
    logits = hidden @ w2.T + b2
    logits -= logits.max(axis=1, keepdims=True)
    prob = np.exp(logits)
    prob /= prob.sum(axis=1, keepdims=True)
    prob[np.arange(len(y)), y] -= 1.0
    prob /= len(y)
    grad_hidden = (prob @ w2) * (pre > 0)
    w2 -= lr * (prob.T @ hidden)
    b2 -= lr * prob.sum(axis=0)
    w1 -= lr * (grad_hidden.T @ x)
    b1 -= lr * grad_hidden.sum(axis=0)


# ---------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Outage:
    """The server hears nothing in [start_s, start_s + duration_s); the queue then arrives."""

    start_s: float
    duration_s: float


@dataclass(frozen=True)
class SimSettings:
    """One run: fleet, local training, protocol (aggregation settings as registered)."""

    devices: int = 20
    seed: int = 0
    alpha: float = 0.5
    base_delay_s: float = 0.3
    speed_spread: float = 10.0
    jitter: float = 0.1
    dropout_prob: float = 0.05
    offline_s: tuple[float, float] = (1.0, 4.0)
    local_samples: int = 64
    local_steps: int = 8
    batch_size: int = 16
    lr: float = 0.1
    protocol: str = "async"  # or "sync"
    aggregation: dict[str, Any] = field(default_factory=dict)
    compression: str = "none"
    topk_fraction: float = 0.05
    duration_s: float = 60.0
    eval_every_s: float = 0.5
    stop_at: float | None = None  # end the run once this accuracy is reached
    max_updates: int | None = None  # CPU budget: end the run after this many updates
    outage: Outage | None = None


@dataclass
class SimResult:
    """Accuracy on the evaluation grid and what the fleet sent."""

    times: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    updates_sent: int = 0
    updates_absorbed: int = 0
    rejected: int = 0
    bytes_sent: int = 0
    stalenesses: list[int] = field(default_factory=list)
    window_sizes: list[int] = field(default_factory=list)
    versions: int = 0

    def time_to(self, target: float) -> float | None:
        return next(
            (t for t, a in zip(self.times, self.accuracies, strict=True) if a >= target), None
        )

    @property
    def final_accuracy(self) -> float:
        return self.accuracies[-1] if self.accuracies else float("nan")

    @property
    def mean_staleness(self) -> float:
        return float(np.mean(self.stalenesses)) if self.stalenesses else 0.0


# ---------------------------------------------------------------------- the fleet
@dataclass
class _Device:
    index: int
    mix: npt.NDArray[np.float64]
    delay_s: float
    rng: np.random.Generator
    compressor: DeltaCompressor
    base_version: int = -1  # the release the device last trained on
    base_params: F32 | None = None
    busy: bool = False


def _devices(s: SimSettings) -> list[_Device]:
    rng = np.random.default_rng([s.seed, 1])
    speeds = np.exp(rng.uniform(0.0, math.log(s.speed_spread), s.devices))
    return [
        _Device(
            i,
            rng.dirichlet(np.full(OUT, s.alpha)),
            s.base_delay_s * float(speeds[i]),
            np.random.default_rng([s.seed, 2, i]),
            DeltaCompressor(s.compression, topk_fraction=s.topk_fraction),
        )
        for i in range(s.devices)
    ]


def _local_round(s: SimSettings, data: Data, device: _Device, start: F32) -> F32:
    """The device's delta after `local_steps` SGD steps on a fresh draw of its mix."""
    classes = device.rng.choice(OUT, size=s.local_samples, p=device.mix)
    x = data.draw(classes, device.rng)
    params = start.copy()
    for step in range(s.local_steps):
        lo = (step * s.batch_size) % s.local_samples
        sl = slice(lo, lo + s.batch_size)
        sgd_step(params, x[sl], classes[sl].astype(np.int64), s.lr)
    delta: F32 = params - start
    return delta


def _wire(device: _Device, delta: F32, base: int, n: int) -> tuple[F32, int]:
    """(what the server decodes, encoded record size) for one update."""
    prepared = device.compressor.prepare(delta)
    device.compressor.commit(prepared)
    record = {
        "update_id": f"d{device.index}-{base}-{n}",
        "device_id": f"d{device.index}",
        "model_id": "sim",
        "base_version": base,
        "num_samples": n,
        "created_at": 0,
        "delta": prepared.payload,
        "metrics": None,
        "sequence": n,
        "key_id": "0" * 16,
        "signature": bytes(64),
    }
    size = len(encode("GradientUpdate", record))
    decoded = unpack(prepared.payload, expected_shape=[delta.size]).reshape(-1)
    return decoded.astype(np.float32), size


class _Run:
    """The event loop of one simulation (see `simulate`)."""

    def __init__(self, s: SimSettings, data: Data) -> None:
        self.s, self.data = s, data
        aggregation = dict(s.aggregation)
        if s.protocol == "sync":
            aggregation |= {"window": {"count": s.devices}, "staleness": {"function": "constant"}}
        self.agg = Aggregator(
            AggregationConfig.from_dict(aggregation), ModelState(init_params(s.seed), 0)
        )
        self.devices = _devices(s)
        self.events: list[tuple[float, int, str, int]] = []
        self.seq = 0
        self.backlog: list[tuple[int, F32, int]] = []
        self.result = SimResult()
        self.rounds = 0

    def push(self, t: float, kind: str, index: int) -> None:
        heapq.heappush(self.events, (t, self.seq, kind, index))
        self.seq += 1

    def down(self, t: float) -> bool:
        o = self.s.outage
        return o is not None and o.start_s <= t < o.start_s + o.duration_s

    def start_idle(self, t: float) -> None:
        """Every idle, online device with a release newer than its last starts a round."""
        version = self.agg.state.version
        for device in self.devices:
            if not device.busy and device.base_version < version:
                self.start(t, device)

    def start(self, t: float, device: _Device) -> None:
        device.busy = True
        device.base_version = self.agg.state.version
        device.base_params = self.agg.state.params
        if device.rng.random() < self.s.dropout_prob:
            away = device.rng.uniform(*self.s.offline_s)
            self.push(t + device.delay_s * device.rng.random() + away, "back", device.index)
            return
        took = device.delay_s * float(np.exp(device.rng.normal(0.0, self.s.jitter)))
        self.push(t + took, "done", device.index)

    def finish(self, t: float, device: _Device) -> None:
        assert device.base_params is not None
        delta = _local_round(self.s, self.data, device, device.base_params)
        self.rounds += 1
        decoded, size = _wire(device, delta, device.base_version, self.rounds)
        self.result.updates_sent += 1
        self.result.bytes_sent += size
        device.busy = False
        if self.down(t):
            self.backlog.append((device.base_version, decoded, self.rounds))
            return
        self.deliver(t, device.base_version, decoded, self.rounds)

    def deliver(self, t: float, base: int, delta: F32, n: int) -> None:
        update = ClientUpdate(f"u{n}", base, self.s.local_samples, delta)
        staleness = self.agg.state.version - base
        if self.agg.try_add(update, t) is not None:
            self.result.rejected += 1
            return
        self.result.updates_absorbed += 1
        self.result.stalenesses.append(staleness)
        if self.agg.buffer.count == 1 and self.agg.deadline() is not None:
            self.push(self.agg.deadline() or t, "timer", self.agg.state.version)
        self.close_if_due(t)

    def close_if_due(self, t: float) -> None:
        """Close the window if its count or time bound is reached (the job's timer)."""
        if self.agg.should_close(t):
            self.result.window_sizes.append(self.agg.buffer.count)
            self.agg.close()

    def drain(self, t: float) -> None:
        """The server is back: the queued updates arrive, in the order they were sent."""
        queued, self.backlog = self.backlog, []
        for base, delta, n in queued:
            self.deliver(t, base, delta, n)

    def evaluate(self, t: float) -> float:
        acc = accuracy(self.agg.state.params, self.data.test_x, self.data.test_y)
        self.result.times.append(round(t, 3))
        self.result.accuracies.append(acc)
        return acc

    def run(self) -> SimResult:
        s = self.s
        self.push(0.0, "eval", -1)
        if s.outage is not None:
            self.push(s.outage.start_s + s.outage.duration_s, "drain", -1)
        self.start_idle(0.0)
        while self.events:
            t, _, kind, index = heapq.heappop(self.events)
            if t > s.duration_s:
                break
            if kind == "eval":
                if s.stop_at is not None and self.evaluate(t) >= s.stop_at:
                    break
                if s.stop_at is None:
                    self.evaluate(t)
                self.push(t + s.eval_every_s, "eval", -1)
                continue
            if kind == "done":
                self.finish(t, self.devices[index])
                if s.max_updates is not None and self.result.updates_sent >= s.max_updates:
                    self.evaluate(t)
                    break
            elif kind == "back":  # its round was lost: it trains again on the newest
                self.devices[index].busy = False
                self.devices[index].base_version = -1
            elif kind == "drain":
                self.drain(t)
            elif kind == "timer" and index == self.agg.state.version and not self.down(t):
                self.close_if_due(t)
            if not self.down(t):
                self.start_idle(t)
        self.result.versions = self.agg.state.version
        return self.result


def simulate(s: SimSettings, data: Data | None = None) -> SimResult:
    """Run one simulated fleet (see the module docstring); deterministic per settings."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _Run(s, load_data(s.seed) if data is None else data).run()
