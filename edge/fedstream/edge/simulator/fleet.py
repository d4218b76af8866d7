"""One simulated fleet run against a running aggregation job.

Every device is a thread with its own `EdgeClient` (its own Kafka producer and consumer,
as a real device would have), its own non-IID shard, a compute speed of its own and a
random chance to drop out mid-round and rejoin later. An evaluator thread reads *every*
release (read_committed), measures test accuracy with onnxruntime and records it against
wall-clock time. Three modes share everything but the protocol:

* ``async`` (FedBuff, Nguyen et al., AISTATS 2022): the job closes a window after K
  updates and discounts stale ones by ``(1 + s)^-a``; a device trains on the newest
  release it has, as soon as that is newer than the one it last trained on, whatever the
  others do.
* ``sync`` (FedAvg, McMahan et al., AISTATS 2017): window K = number of devices, constant
  staleness weight; a version only appears when every device has reported, so every round
  waits for the slowest (and any offline) device.
* ``fedasync`` (FedAsync, Xie, Koyejo, Gupta, 2019): the job mixes every update into the
  model on arrival with a *constant* ``a = fedasync_mixing`` (no averaging, no staleness
  discount: what FedBuff adds over it), by the paper's rule
  ``x <- (1 - a) x + a (x_base + delta)`` (``fedasync_rule`` "mix_with_base", the job
  keeping ``fedasync_max_staleness`` versions) or the re-based ``x <- x + a * delta``
  ("add_delta"), and releases
  after every update (count window 1), so a device always gets the freshest model. The
  version advances once per update, so staleness in versions is about the number of
  updates the whole fleet sent meanwhile: tens, not ones. Devices send their round as
  the update's ``sequence``, so the job recognises re-sends per device and refuses no
  update for staleness (unless the model sets ``max_staleness``). Devices behave exactly
  as in ``async``.

In every mode a device sends at most one update per version: training twice on the same
base would only re-send nearly the same delta, counted twice.

What is seeded: the data split, the device speeds, the initial weights, each device's
shuffling and dropout draws. What is not: thread interleaving and broker/job timing, so
two runs with the same seed agree in setup and statistics, not to the millisecond.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedstream.edge.client import EdgeClient
from fedstream.edge.config import EdgeConfig
from fedstream.edge.errors import EdgeError
from fedstream.edge.releases import Release, ReleaseReader
from fedstream.edge.runtime import build_session
from fedstream.edge.simulator.data import FleetData
from fedstream.edge.training import LocalTrainer, torch_registration
from fedstream.schemas.update_signing import DEVICE_KEY_NAME

__all__ = [
    "DeviceProfile",
    "EvalPoint",
    "FleetRun",
    "FleetSettings",
    "RunResult",
    "aggregation_for",
    "device_profiles",
    "digits_mlp",
]

MODES = ("async", "sync", "fedasync")


@dataclass(frozen=True)
class FleetSettings:
    """Everything that defines a fleet (the same for every mode's run)."""

    devices: int = 20
    alpha: float = 0.5
    seed: int = 0
    base_delay_s: float = 0.3
    """Simulated compute time of one local round on the fastest device."""
    speed_spread: float = 10.0
    """Slowest device's compute time / fastest device's."""
    jitter: float = 0.1
    """Log-normal sigma of the per-round variation of a device's compute time."""
    dropout_prob: float = 0.05
    """Chance per round that a device goes offline mid-round (its work is lost)."""
    offline_s: tuple[float, float] = (1.0, 4.0)
    """How long a dropped device stays away (uniform)."""
    network_delay_s: float = 0.0
    """Mean extra uplink delay per update (exponential), 0 for none."""
    local_epochs: int = 2
    lr: float = 0.1
    batch_size: int = 16
    hidden: int = 32
    async_window: int | None = None
    """K for async (FedBuff); default max(2, devices // 4): a quarter of the devices in
    flight, measured on the real job (bench.learning, 20 devices, README "Learning
    efficiency"): K = 5 reached sync's accuracy 7.1x sooner than sync, K = 10 4.8x."""
    staleness_exponent: float = 0.5
    server_lr: float = 1.0
    fedasync_mixing: float = 0.6
    """FedAsync's constant mixing weight a (0.6: Xie et al.'s value).

    With the re-based rule ("add_delta") n updates in flight from about the same base step
    about n * a deltas: with 20 devices, 0.6 oscillates or diverges (bench.learning)."""
    fedasync_rule: str = "mix_with_base"
    """FedAsync's rule: "mix_with_base" (the paper's) or "add_delta" (re-based)."""
    fedasync_max_staleness: int = 128
    """max_staleness for "mix_with_base": the versions the job keeps (its memory bound)."""
    fedasync_staleness_exponent: float | None = None
    """FedAsync's schedule: None for the constant a, else a * (1 + s)^-exponent."""
    compression: str = "none"
    topk_fraction: float = 0.1

    def window(self, mode: str) -> int:
        """Updates per release: all devices (sync), K (async), 1 (fedasync)."""
        if mode == "sync":
            return self.devices
        if mode == "fedasync":
            return 1
        return self.async_window or max(2, self.devices // 4)


@dataclass(frozen=True)
class DeviceProfile:
    index: int
    device_id: str
    delay_s: float
    seed: int


def device_profiles(settings: FleetSettings, prefix: str = "device") -> list[DeviceProfile]:
    """Compute times log-spaced from base to base x spread, dealt out in a seeded order
    (so speed is independent of which data a device holds)."""
    n = settings.devices
    rng = np.random.default_rng([settings.seed, 1])
    exponents = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    delays = settings.base_delay_s * settings.speed_spread**exponents
    order = rng.permutation(n)
    return [
        DeviceProfile(i, f"{prefix}-{i:03d}", float(delays[order[i]]), settings.seed * 1000 + i)
        for i in range(n)
    ]


def digits_mlp(hidden: int = 32, seed: int = 0) -> torch.nn.Module:
    """The fleet's model: 64 -> hidden -> 10, ReLU, deterministic initial weights."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return torch.nn.Sequential(
            torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)
        )
    finally:
        torch.random.set_rng_state(generator_state)


def aggregation_for(mode: str, settings: FleetSettings) -> dict[str, Any]:
    """The registration's aggregation settings for a mode (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    window = {"count": settings.window(mode), "seconds": None}
    if mode == "fedasync":
        # One update at a time: no sample weighting (the job refuses it: there is nothing
        # to normalise against), the server optimizer is unused (the mixing is the step).
        return {
            "mode": "fedasync",
            "window": window,
            "staleness": (
                {"function": "constant"}
                if settings.fedasync_staleness_exponent is None
                else {"function": "polynomial", "a": settings.fedasync_staleness_exponent}
            ),
            "fedasync_mixing": settings.fedasync_mixing,
            "fedasync_rule": settings.fedasync_rule,
            "max_staleness": (
                settings.fedasync_max_staleness
                if settings.fedasync_rule == "mix_with_base"
                else None
            ),
            "weight_by_samples": False,
        }
    staleness: dict[str, Any] = (
        {"function": "constant"}
        if mode == "sync"
        else {"function": "polynomial", "a": settings.staleness_exponent}
    )
    return {
        "mode": "fedbuff",
        "window": window,
        "staleness": staleness,
        "server_optimizer": {"name": "sgd", "learning_rate": settings.server_lr},
        "weight_by_samples": True,
    }


@dataclass(frozen=True)
class EvalPoint:
    """The evaluator's view of one release."""

    t: float
    version: int
    accuracy: float
    num_updates: int
    staleness_mean: float
    staleness_max: int
    update_ids: tuple[str, ...]


@dataclass(frozen=True)
class SentRecord:
    device_id: str
    base_version: int
    t: float
    size: int


@dataclass
class RunResult:
    """What one run observed (the report is computed from this)."""

    mode: str
    model_id: str
    settings: FleetSettings
    window: int
    duration_s: float = 0.0
    stopped_by: str = ""
    timeline: list[EvalPoint] = field(default_factory=list)
    sent: dict[str, SentRecord] = field(default_factory=dict)
    events: list[tuple[float, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seen_versions: dict[str, list[int]] = field(default_factory=dict)
    bad_digests: int = 0

    def staleness(self) -> list[int]:
        """Staleness of every absorbed update: parent version - its base version.

        The parent is the release's version - 1: one version per window in FedBuff, and
        in FedAsync one per update, where the window is 1 update so the same holds.
        """
        out: list[int] = []
        for point in self.timeline:
            for update_id in point.update_ids:
                record = self.sent.get(update_id)
                if record is not None:
                    out.append(point.version - 1 - record.base_version)
        return out

    def time_to(self, accuracy: float) -> float | None:
        return next((p.t for p in self.timeline if p.accuracy >= accuracy), None)

    @property
    def best(self) -> EvalPoint | None:
        return max(self.timeline, key=lambda p: (p.accuracy, -p.t), default=None)

    @property
    def final(self) -> EvalPoint | None:
        return self.timeline[-1] if self.timeline else None

    def summary(self, target: float | None) -> dict[str, Any]:
        stale = self.staleness()
        best, final = self.best, self.final
        return {
            "mode": self.mode,
            "model_id": self.model_id,
            "window": self.window,
            "duration_s": round(self.duration_s, 2),
            "stopped_by": self.stopped_by,
            "final_version": final.version if final else None,
            "final_accuracy": final.accuracy if final else None,
            "best_accuracy": best.accuracy if best else None,
            "best_at_s": round(best.t, 2) if best else None,
            "target_accuracy": target,
            "time_to_target_s": self.time_to(target) if target is not None else None,
            "updates_sent": len(self.sent),
            "updates_absorbed": sum(p.num_updates for p in self.timeline),
            "mean_staleness": float(np.mean(stale)) if stale else 0.0,
            "max_staleness": max(stale, default=0),
            "dropouts": sum(1 for e in self.events if e[2] == "dropout"),
            "errors": list(self.errors),
            "bad_digests": self.bad_digests,
            "versions_monotonic": all(
                all(b > a for a, b in itertools.pairwise(v)) for v in self.seen_versions.values()
            ),
        }

    def to_json(self, target: float | None) -> dict[str, Any]:
        return {
            "summary": self.summary(target),
            "timeline": [
                {k: v for k, v in asdict(p).items() if k != "update_ids"} for p in self.timeline
            ],
            "staleness": self.staleness(),
            "events": [{"t": round(t, 3), "device": d, "kind": k} for t, d, k in self.events],
        }


class FleetRun:
    """One run of one mode; `run()` returns its `RunResult`."""

    def __init__(
        self,
        config: EdgeConfig,
        settings: FleetSettings,
        data: FleetData,
        *,
        mode: str,
        model_id: str,
        progress: Callable[[str], None] | None = None,
        progress_every_s: float = 5.0,
        wait_timeout_s: float = 60.0,
        owner: EdgeConfig | None = None,
        device_keys: Path | None = None,
        evaluations: Path | None = None,
    ) -> None:
        """`owner`: the connection that registers the model (a model-owner principal may
        write the control topic; devices may not), by default `config`'s. `device_keys`:
        a folder holding each device's private key as <device_id>/device.key (`fedstream
        devices keygen --out DIR/<device_id>`, registered by an operator), with which it
        signs its updates; None: every device uses `config.device_key_file`.
        `evaluations`: a file the evaluator appends each accuracy to, one JSON line
        {"model_id", "version", "accuracy", "t_ms"} (what `fedstream dashboard
        --evaluations` plots)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if len(data.shards) != settings.devices:
            raise ValueError("data has a different number of shards than devices")
        self.config = config
        self.owner = owner or config
        self.device_keys = device_keys
        self.evaluations = evaluations
        self.settings = settings
        self.data = data
        self.mode = mode
        self.model_id = model_id
        self.progress = progress
        self.progress_every_s = progress_every_s
        self.wait_timeout_s = wait_timeout_s
        self.result = RunResult(mode, model_id, settings, settings.window(mode))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._target: float | None = None

    # ------------------------------------------------------------------ driver
    def run(self, *, duration_s: float, target_accuracy: float | None = None) -> RunResult:
        """Register, run devices and evaluator until the target or the duration."""
        self._target = target_accuracy
        torch.set_num_threads(1)
        module = digits_mlp(self.settings.hidden, self.settings.seed)
        registration = torch_registration(
            self.model_id,
            module,
            torch.zeros(2, 64),
            aggregation_for(self.mode, self.settings),
        )
        with EdgeClient(
            self.owner,
            device_id=f"{self.model_id}-coordinator",
            model_id=self.model_id,
            install_sessions=False,
        ) as coordinator:
            coordinator.register(registration.record)
            coordinator.wait_for_model(self.wait_timeout_s)  # version 0 is out
        evaluator = threading.Thread(target=self._evaluate, name="evaluator", daemon=True)
        devices = [
            threading.Thread(target=self._device, args=(p,), name=p.device_id, daemon=True)
            for p in device_profiles(self.settings, prefix=f"{self.mode}-dev")
        ]
        self._t0 = time.monotonic()
        evaluator.start()
        for thread in devices:
            thread.start()
        next_progress = self.progress_every_s
        while not self._stop.wait(0.2):
            now = self._now()
            if now >= duration_s:
                self.result.stopped_by = "duration"
                break
            if self.progress and now >= next_progress:
                self.progress(self._progress_line(now))
                next_progress += self.progress_every_s
        self._stop.set()
        self.result.duration_s = self._now()
        for thread in [*devices, evaluator]:
            thread.join(timeout=self.config.send_timeout_s + 10)
            if thread.is_alive():
                self._error(f"{thread.name} did not stop within the timeout")
        if self.progress:
            self.progress(self._progress_line(self.result.duration_s))
        return self.result

    def _now(self) -> float:
        return time.monotonic() - self._t0

    def _error(self, text: str) -> None:
        with self._lock:
            self.result.errors.append(text)

    def _progress_line(self, now: float) -> str:
        with self._lock:
            last = self.result.timeline[-1] if self.result.timeline else None
            best = max((p.accuracy for p in self.result.timeline), default=0.0)
            sent = len(self.result.sent)
            drops = sum(1 for e in self.result.events if e[2] == "dropout")
        state = f"v{last.version} acc {last.accuracy:.3f} best {best:.3f}" if last else "no release"
        return f"[{self.mode}] {now:6.1f}s  {state}  sent {sent}  dropouts {drops}"

    # ------------------------------------------------------------------ evaluator
    def _evaluate(self) -> None:
        x_test, y_test = self.data.x_test, self.data.y_test
        try:
            with ReleaseReader(self.config, self.model_id, from_beginning=True) as reader:
                while not self._stop.is_set():
                    try:
                        releases = reader.fetch(0.5)
                    except EdgeError as error:  # a corrupted release: count it, go on
                        with self._lock:
                            self.result.bad_digests += 1
                        self._error(f"evaluator: {error}")
                        continue
                    for release in releases:
                        self._score(release, x_test, y_test)
        except Exception as error:
            self._error(f"evaluator: {type(error).__name__}: {error}")
            self._stop.set()

    def _score(self, release: Release, x: Any, y: Any) -> None:
        session = build_session(release.onnx)
        logits = session.run(None, {session.get_inputs()[0].name: x})[0]
        accuracy = float((np.argmax(logits, axis=1) == y).mean())
        lineage = release.lineage
        point = EvalPoint(
            t=self._now(),
            version=release.version,
            accuracy=accuracy,
            num_updates=int(lineage["num_updates"]),
            staleness_mean=float(lineage["staleness_mean"]),
            staleness_max=int(lineage["staleness_max"]),
            update_ids=tuple(lineage["update_ids"]),
        )
        with self._lock:
            self.result.timeline.append(point)
            self._publish(point)
        if self._target is not None and accuracy >= self._target:
            self.result.stopped_by = self.result.stopped_by or "target"
            self._stop.set()

    def _publish(self, point: EvalPoint) -> None:
        """Append `point` to the evaluations file (whole lines: a reader never sees half)."""
        if self.evaluations is None:
            return
        line = json.dumps(
            {
                "model_id": self.model_id,
                "version": point.version,
                "accuracy": round(point.accuracy, 6),
                "t_ms": int(time.time() * 1000),
            }
        )
        with self.evaluations.open("a") as handle:
            handle.write(line + "\n")

    # ------------------------------------------------------------------ devices
    def _device(self, profile: DeviceProfile) -> None:
        s = self.settings
        rng = np.random.default_rng(profile.seed)
        x, y = self.data.device(profile.index)
        trainer = LocalTrainer(
            digits_mlp(s.hidden, profile.seed),
            lr=s.lr,
            epochs=s.local_epochs,
            batch_size=s.batch_size,
            seed=profile.seed,
        )
        config = self.config
        if self.device_keys is not None:
            key = self.device_keys / profile.device_id / f"{DEVICE_KEY_NAME}.key"
            config = replace(config, device_key_file=key)
        client = EdgeClient(
            config,
            device_id=profile.device_id,
            model_id=self.model_id,
            compression=s.compression,
            topk_fraction=s.topk_fraction,
            install_sessions=False,
            sequenced=True,  # one client per device and model for the whole run
        )
        seen: list[int] = []
        with self._lock:
            self.result.seen_versions[profile.device_id] = seen
        stop = self._stop
        last_trained = -1
        try:
            release = self._observe(client.wait_for_model(self.wait_timeout_s), seen)
            while not stop.is_set():
                # At most one update per version and device: a device that finished before
                # a newer release is visible waits for it (in sync mode that is the round
                # barrier; in async mode only the release latency, about one checkpoint).
                newer = client.refresh(0.0)
                release = self._observe(newer, seen) if newer else release
                while release.version <= last_trained and not stop.is_set():
                    newer = client.refresh(0.5)
                    release = self._observe(newer, seen) if newer else release
                if stop.is_set():
                    break
                trainer.load_release(release)
                result = trainer.fit(x, y)
                compute = profile.delay_s * float(rng.lognormal(0.0, s.jitter))
                if rng.random() < s.dropout_prob:  # gone mid-round: the work is lost
                    if stop.wait(compute * float(rng.random())):
                        break
                    client.disconnect()
                    self._event(profile.device_id, "dropout")
                    if stop.wait(float(rng.uniform(*s.offline_s))):
                        break
                    self._event(profile.device_id, "rejoin")
                    release = self._observe(client.wait_for_model(self.wait_timeout_s), seen)
                    continue
                uplink = float(rng.exponential(s.network_delay_s)) if s.network_delay_s else 0.0
                if stop.wait(compute + uplink):
                    break
                sent = client.send_update(
                    result.delta,
                    base_version=result.base_version,
                    num_samples=result.num_samples,
                    metrics=result.metrics(),
                )
                with self._lock:
                    self.result.sent[sent.update_id] = SentRecord(
                        profile.device_id, sent.base_version, self._now(), sent.size
                    )
                last_trained = release.version
        except Exception as error:  # reported, never swallowed: the run shows it
            self._error(f"{profile.device_id}: {type(error).__name__}: {error}")
        finally:
            client.close()

    def _observe(self, release: Release, seen: list[int]) -> Release:
        """Record a release a device received (after re-checking its digest)."""
        if not seen or release.version != seen[-1]:
            try:
                release.verify()
            except EdgeError:
                with self._lock:
                    self.result.bad_digests += 1
                raise
            seen.append(release.version)
        return release

    def _event(self, device_id: str, kind: str) -> None:
        with self._lock:
            self.result.events.append((self._now(), device_id, kind))
