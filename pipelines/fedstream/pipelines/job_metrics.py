"""fedstream's own metrics, per model, through the metric group Flink gives each operator.

Flink's Prometheus reporter (configured by the job: `[metrics]` in jobs/config/local.toml)
exports every metric registered here, with each `add_group(key, value)` as a label: the
absorbed-update counter of model m1 is scraped as
`flink_taskmanager_job_task_operator_fedstream_model_updates_absorbed{model="m1",...}`.

Only counters are used, and they are only ever touched from the operator's own thread.
PyFlink's gauges call back into Python from the reporter's JVM thread, and its
distributions export no buckets; in thread mode a call into the interpreter from a foreign
thread is exactly what the job must never risk. So a value that goes up and down (current
version, window fill) is a counter moved by the difference to what it last showed, and a
distribution is a histogram of counters, one per bucket (non-cumulative; the upper bound
is the `bucket` label, `inf` for the last).

Pure apart from the metric group it is handed (any object with PyFlink's `add_group` and
`counter`), so it is unit-tested on a recording group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "LATENCY_BUCKETS_MS",
    "NO_MODEL",
    "STALENESS_BUCKETS",
    "Counter",
    "MetricGroup",
    "ModelMetrics",
    "bucket",
]

#: Upper bounds of the staleness histogram (versions behind the model when absorbed).
STALENESS_BUCKETS: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64, 128)
#: Upper bounds of the update->release time histogram, in milliseconds.
LATENCY_BUCKETS_MS: tuple[int, ...] = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000)
#: The model label of a refusal whose record named no readable model.
NO_MODEL = "-"


class Counter(Protocol):
    def inc(self, n: int = 1) -> None: ...


class MetricGroup(Protocol):
    def add_group(self, name: str, extra: str | None = None) -> MetricGroup: ...

    def counter(self, name: str) -> Counter: ...


def bucket(value: float, bounds: Sequence[int]) -> str:
    """The label of the first bucket whose upper bound holds `value` (`inf` past the last)."""
    for bound in bounds:
        if value <= bound:
            return str(bound)
    return "inf"


@dataclass
class _Level:
    """A counter shown as a level: moved by the difference to the value it shows."""

    counter: Counter
    shown: int = 0

    def set(self, value: int) -> None:
        if value != self.shown:
            self.counter.inc(value - self.shown)
            self.shown = value


@dataclass
class _Model:
    group: MetricGroup
    counters: dict[tuple[str, str, str], Counter] = field(default_factory=dict)
    levels: dict[str, _Level] = field(default_factory=dict)

    def count(self, name: str, n: int = 1, label: tuple[str, str] | None = None) -> None:
        key, value = label or ("", "")
        counter = self.counters.get((name, key, value))
        if counter is None:
            group = self.group.add_group(key, value) if key else self.group
            counter = self.counters[(name, key, value)] = group.counter(name)
        counter.inc(n)

    def level(self, name: str, value: int) -> None:
        if name not in self.levels:
            self.levels[name] = _Level(self.group.counter(name))
        self.levels[name].set(value)


class ModelMetrics:
    """The metrics of every model one operator instance sees, created on first use.

    The number of models is bounded by `limits.max_models`, the reasons by the DeadLetter
    enum and the buckets by the constants above, so the label sets stay bounded however
    hostile the input."""

    def __init__(self, root: MetricGroup) -> None:
        self._root = root.add_group("fedstream")
        self._models: dict[str, _Model] = {}

    def _model(self, model_id: str | None) -> _Model:
        name = model_id or NO_MODEL
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = _Model(self._root.add_group("model", name))
        return model

    def absorbed(self, model_id: str, staleness: int) -> None:
        """An update went into the model's open window, `staleness` versions behind."""
        model = self._model(model_id)
        model.count("updates_absorbed")
        model.count("staleness", label=("bucket", bucket(staleness, STALENESS_BUCKETS)))

    def refused(self, model_id: str | None, reason: str) -> None:
        """A record was dead-lettered with `reason` (`None`: no model could be read)."""
        self._model(model_id).count("updates_refused", label=("reason", reason))

    def window(self, model_id: str, version: int, fill: int) -> None:
        """The model's current version and the updates waiting in its open window."""
        model = self._model(model_id)
        model.level("version", version)
        model.level("window_fill", fill)

    def released(self, model_id: str, size_bytes: int, latency_seconds: float | None) -> None:
        """A release was emitted: `size_bytes` on the models topic; `latency_seconds` the
        time since its window's first update arrived (None for the registration's
        version 0, which no update caused)."""
        model = self._model(model_id)
        model.count("releases")
        model.count("release_bytes", size_bytes)
        if latency_seconds is not None:
            millis = round(latency_seconds * 1000)
            model.count("release_latency_ms_sum", millis)
            model.count("release_latency", label=("bucket", bucket(millis, LATENCY_BUCKETS_MS)))
