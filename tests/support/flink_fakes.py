"""Fakes of the PyFlink runtime for the job's function shells: keyed state in a dict.

`Store.key` is the current key; `FakeContext` is both the RuntimeContext `open` gets and
the per-record context (timer service, current key). Timers are not fired: a test calls
`on_timer` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakeContext", "FakeMapState", "FakeMetrics", "FakeValueState", "Store"]


@dataclass
class Store:
    values: dict[tuple[str, str], Any] = field(default_factory=dict)
    key: str = ""
    #: processing time (ms) the context reports
    now_ms: int = 0


class FakeValueState:
    def __init__(self, store: Store, name: str) -> None:
        self._store, self._name = store, name

    def value(self) -> Any:
        return self._store.values.get((self._name, self._store.key))

    def update(self, value: Any) -> None:
        self._store.values[self._name, self._store.key] = value

    def clear(self) -> None:
        self._store.values.pop((self._name, self._store.key), None)


class FakeMapState:
    def __init__(self, store: Store, name: str) -> None:
        self._store, self._name = store, name

    def _map(self) -> dict[str, int]:
        found: dict[str, int] = self._store.values.setdefault((self._name, self._store.key), {})
        return found

    def contains(self, key: str) -> bool:
        return key in self._map()

    def get(self, key: str) -> Any:
        return self._map().get(key)

    def put(self, key: str, value: int) -> None:
        self._map()[key] = value

    def remove(self, key: str) -> None:
        del self._map()[key]

    def items(self) -> list[tuple[str, int]]:
        return list(self._map().items())


class FakeMetrics:
    def add_group(self, name: str, extra: str | None = None) -> FakeMetrics:
        return self

    def counter(self, name: str) -> Any:
        return type("Counter", (), {"inc": lambda self, n=1: None})()

    def distribution(self, name: str) -> Any:
        return type("Distribution", (), {"update": lambda self, v: None})()


class FakeContext:
    """RuntimeContext (for `open`) and the per-record context, in one."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get_state(self, descriptor: Any) -> FakeValueState:
        return FakeValueState(self._store, descriptor.name)

    def get_map_state(self, descriptor: Any) -> FakeMapState:
        return FakeMapState(self._store, descriptor.name)

    def get_metrics_group(self) -> FakeMetrics:
        return FakeMetrics()

    def timer_service(self) -> FakeContext:
        return self

    def current_processing_time(self) -> int:
        return self._store.now_ms

    def register_processing_time_timer(self, millis: int) -> None:
        pass

    def get_current_key(self) -> str:
        return self._store.key
