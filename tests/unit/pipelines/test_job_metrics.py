"""fedstream's per-model metrics, on a metric group that records what it is given (the
shape of PyFlink's `MetricGroup`: `add_group(key, value)` labels, `counter(name)`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fedstream.pipelines.job_metrics import (
    LATENCY_BUCKETS_MS,
    NO_MODEL,
    STALENESS_BUCKETS,
    ModelMetrics,
    bucket,
)


class RecordingCounter:
    def __init__(self) -> None:
        self.count = 0

    def inc(self, n: int = 1) -> None:
        self.count += n


class RecordingGroup:
    """Counters by (labels, name), labels being the (key, value) groups on the path."""

    def __init__(
        self,
        store: dict[tuple[tuple[tuple[str, str], ...], str], RecordingCounter],
        path: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.store, self.path = store, path

    def add_group(self, name: str, extra: str | None = None) -> RecordingGroup:
        return RecordingGroup(self.store, (*self.path, (name, extra or "")))

    def counter(self, name: str) -> RecordingCounter:
        return self.store.setdefault((self.path, name), RecordingCounter())


def metrics() -> tuple[
    ModelMetrics, dict[tuple[tuple[tuple[str, str], ...], str], RecordingCounter]
]:
    store: dict[tuple[tuple[tuple[str, str], ...], str], RecordingCounter] = {}
    return ModelMetrics(RecordingGroup(store)), store


def value(store: dict, model: str, name: str, label: tuple[str, str] | None = None) -> int:  # type: ignore[type-arg]
    path = (("fedstream", ""), ("model", model), *([label] if label else []))
    counter = store.get((path, name))
    return 0 if counter is None else counter.count


def test_counts_per_model_and_reason() -> None:
    book, store = metrics()
    for staleness in (0, 0, 3, 200):
        book.absorbed("m1", staleness)
    book.absorbed("m2", 1)
    book.refused("m1", "DUPLICATE")
    book.refused("m1", "DUPLICATE")
    book.refused(None, "SCHEMA_UNKNOWN")
    assert value(store, "m1", "updates_absorbed") == 4
    assert value(store, "m2", "updates_absorbed") == 1
    assert value(store, "m1", "staleness", ("bucket", "0")) == 2
    assert value(store, "m1", "staleness", ("bucket", "4")) == 1
    assert value(store, "m1", "staleness", ("bucket", "inf")) == 1
    assert value(store, "m1", "updates_refused", ("reason", "DUPLICATE")) == 2
    assert value(store, NO_MODEL, "updates_refused", ("reason", "SCHEMA_UNKNOWN")) == 1


def test_levels_follow_the_value_up_and_down() -> None:
    book, store = metrics()
    book.window("m1", 0, 3)
    book.window("m1", 1, 0)
    book.window("m1", 1, 7)
    assert value(store, "m1", "version") == 1
    assert value(store, "m1", "window_fill") == 7


def test_releases_size_and_latency() -> None:
    book, store = metrics()
    book.released("m1", 1000, None)  # version 0: no update behind it
    book.released("m1", 1200, 0.3)
    book.released("m1", 1300, 99.0)
    assert value(store, "m1", "releases") == 3
    assert value(store, "m1", "release_bytes") == 3500
    assert value(store, "m1", "release_latency_ms_sum") == 99_300
    assert value(store, "m1", "release_latency", ("bucket", "500")) == 1
    assert value(store, "m1", "release_latency", ("bucket", "inf")) == 1


@given(st.integers(min_value=0, max_value=10**6))
def test_bucket_is_the_first_bound_holding_the_value(x: int) -> None:
    for bounds in (STALENESS_BUCKETS, LATENCY_BUCKETS_MS):
        label = bucket(x, bounds)
        if label == "inf":
            assert x > bounds[-1]
        else:
            bound = int(label)
            assert x <= bound
            assert all(b < x for b in bounds if b < bound)
