"""Per-model figures from scrapes of the job's metrics (`fedstream.pipelines.job_metrics`).

The reporter names a metric by its scope: a counter `c` of model m's group is
`..._fedstream_model_c{model="m"}`, and one under a further key group (reason, bucket)
`..._fedstream_model_<key>_c{model="m",<key>="..."}`. Every operator instance has its own
counters (labels task, subtask, ...), so a model's figure is the sum over them. Counters
start again at 0 when the job restarts (they are the running tasks', not checkpointed);
rates treat a drop as such a restart.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from fedstream.jobs.dashboard.prometheus import Sample

__all__ = ["History", "ModelFigures", "Rate", "model_figures"]

_MARK = "fedstream_model_"
#: plain counters: metric name -> ModelFigures attribute
_LEVELS = {
    "updates_absorbed": "absorbed",
    "version": "version",
    "window_fill": "window_fill",
    "releases": "releases",
    "release_bytes": "release_bytes",
}


@dataclass
class ModelFigures:
    """One model's figures at one scrape."""

    model_id: str
    absorbed: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    staleness: dict[str, int] = field(default_factory=dict)  # bucket upper bound -> updates
    version: int = 0
    window_fill: int = 0
    releases: int = 0
    release_bytes: int = 0
    latency: dict[str, int] = field(default_factory=dict)  # bucket (ms) -> releases
    latency_sum_ms: int = 0

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())

    @property
    def mean_latency_ms(self) -> float | None:
        timed = sum(self.latency.values())
        return self.latency_sum_ms / timed if timed else None


def _add(figures: ModelFigures, metric: str, labels: dict[str, str], value: int) -> None:
    """Fold one sample (`metric`: the name after `fedstream_model_`) into `figures`."""
    if "reason" in labels and metric.endswith("updates_refused"):
        reason = labels["reason"]
        figures.refused[reason] = figures.refused.get(reason, 0) + value
    elif "bucket" in labels and metric.endswith("staleness"):
        figures.staleness[labels["bucket"]] = figures.staleness.get(labels["bucket"], 0) + value
    elif "bucket" in labels and metric.endswith("release_latency"):
        figures.latency[labels["bucket"]] = figures.latency.get(labels["bucket"], 0) + value
    elif metric in _LEVELS:
        attribute = _LEVELS[metric]
        setattr(figures, attribute, getattr(figures, attribute) + value)
    elif metric == "release_latency_ms_sum":
        figures.latency_sum_ms += value


def model_figures(samples: Iterable[Sample]) -> dict[str, ModelFigures]:
    """Model id -> its figures, summed over the operator instances that report it."""
    models: dict[str, ModelFigures] = {}
    for sample in samples:
        model = sample.labels.get("model")
        _scope, mark, metric = sample.name.rpartition(_MARK)
        if model is None or not mark:
            continue
        figures = models.setdefault(model, ModelFigures(model))
        _add(figures, metric, sample.labels, round(sample.value))
    return dict(sorted(models.items()))


@dataclass(frozen=True, slots=True)
class Rate:
    """Updates per second between two scrapes: absorbed, and refused by reason."""

    t: float
    absorbed: float
    refused: dict[str, float]


def _delta(now: int, before: int) -> int:
    return now if now < before else now - before  # a drop: the job restarted from 0


class History:
    """The scrapes of the last `keep` refreshes, for rates over time."""

    def __init__(self, keep: int = 360) -> None:
        self._scrapes: deque[tuple[float, dict[str, ModelFigures]]] = deque(maxlen=keep)

    def add(self, t: float, figures: dict[str, ModelFigures]) -> None:
        self._scrapes.append((t, figures))

    def latest(self) -> dict[str, ModelFigures]:
        return self._scrapes[-1][1] if self._scrapes else {}

    def rates(self, model_id: str) -> list[Rate]:
        out = []
        pairs = zip(list(self._scrapes), list(self._scrapes)[1:], strict=False)
        for (t0, before), (t1, now) in pairs:
            if t1 <= t0 or model_id not in now:
                continue
            old = before.get(model_id, ModelFigures(model_id))
            new = now[model_id]
            refused = {
                reason: _delta(count, old.refused.get(reason, 0)) / (t1 - t0)
                for reason, count in new.refused.items()
            }
            out.append(Rate(t1, _delta(new.absorbed, old.absorbed) / (t1 - t0), refused))
        return out
