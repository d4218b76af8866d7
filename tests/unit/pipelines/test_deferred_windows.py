"""The aggregate's open window written once per checkpoint (`deferred_windows`).

On the dict-backed fakes of keyed state; `flush` plays `FlushingKeyedProcessOperator`,
which calls `on_timer(FLUSH_TIMESTAMP)` under each touched key before a barrier. The real
operator is exercised end to end by the SIGKILL tests of `test_job_exactly_once.py`.
"""

from __future__ import annotations

from typing import Any

import pytest

import fedstream.pipelines.model_process as model_process
from fedstream.pipelines.deferred_windows import (
    FLUSH_TIMESTAMP,
    DeferredWindows,
    UnsavedWindowError,
)
from fedstream.pipelines.flink_functions import AggregateFunction
from fedstream.schemas import decode
from tests.support.flink_fakes import FakeContext, Store
from tests.support.onnx_models import linear_model
from tests.support.records import CONTROL_TOPIC, UPDATES_TOPIC, registration_bytes, update_bytes
from tests.unit.pipelines.test_flink_functions_state import delta, send, summary

ONNX = linear_model(4, 3, seed=1)
WIDE = {"window": {"count": 4}}


def started(models: list[str], live_models: int = 8, *, defer: bool = True) -> Any:
    store = Store()
    function = AggregateFunction(16 << 20, 64, live_models=live_models, defer_window_writes=defer)
    function.open(FakeContext(store))
    for offset, model in enumerate(models):
        send(function, store, registration_bytes(model, ONNX, WIDE), CONTROL_TOPIC, offset)
    return function, store


def update(function: Any, store: Store, model: str, uid: str, offset: int) -> Any:
    value = update_bytes(model, uid, delta("a", uid))
    return send(function, store, value, UPDATES_TOPIC, offset)


def flush(function: Any, store: Store, *models: str) -> None:
    for model in models:
        store.key = model
        assert list(function.on_timer(FLUSH_TIMESTAMP, FakeContext(store))) == []


def without_generation(store: Store) -> dict[Any, Any]:
    """The keyed state but the live cache's generation counter (fewer writes, fewer bumps)."""
    return {k: v for k, v in store.values.items() if k[0] != "generation"}


def window(store: Store, model: str) -> Any:
    return store.values.get(("window", model))


def test_a_window_is_written_at_the_flush_and_then_equals_a_per_update_write() -> None:
    deferred, store = started(["a"])
    plain, reference = started(["a"], defer=False)
    empty = window(store, "a")
    for offset, uid in enumerate(["u1", "u2"]):
        update(deferred, store, "a", uid, offset)
        update(plain, reference, "a", uid, offset)
        assert window(store, "a") == empty  # not written per update
    assert window(reference, "a") != empty
    flush(deferred, store, "a")
    assert window(store, "a") == window(reference, "a")
    assert without_generation(store) == without_generation(reference)  # dedupe state too


def test_a_checkpoint_after_the_flush_restores_every_absorbed_update() -> None:
    deferred, store = started(["a"])
    plain, reference = started(["a"], defer=False)
    for offset, uid in enumerate(["u1", "u2", "u3"]):
        update(deferred, store, "a", uid, offset)
    flush(deferred, store, "a")
    deferred.open(FakeContext(store))  # a restore: the memory is gone, the state is not
    for offset, uid in enumerate(["u1", "u2", "u3", "u4"]):
        expected = update(plain, reference, "a", uid, offset)
    got = update(deferred, store, "a", "u4", 3)
    assert summary(got) == summary(expected)
    assert [kind for kind, _ in got] == ["release"]


def test_the_update_that_closes_a_window_writes_it_with_the_new_version() -> None:
    deferred, store = started(["a"])
    for offset, uid in enumerate(["u1", "u2", "u3"]):
        update(deferred, store, "a", uid, offset)
    update(deferred, store, "a", "u4", 3)  # closes: written at once, nothing left unsaved
    saved = dict(store.values)
    flush(deferred, store, "a")
    assert store.values == saved


def test_unsaved_windows_are_bounded_by_the_live_cache() -> None:
    """live_models=1: model a waits unsaved (and stays in memory), model b, past the
    bound, is written after each update as without deferral."""
    deferred, store = started(["a", "b"], live_models=1)
    empty_a, empty_b = window(store, "a"), window(store, "b")
    update(deferred, store, "a", "u1", 0)
    update(deferred, store, "b", "v1", 1)
    assert window(store, "a") == empty_a and window(store, "b") != empty_b
    update(deferred, store, "a", "u2", 2)
    update(deferred, store, "a", "u3", 3)
    (release,) = update(deferred, store, "a", "u4", 4)  # a's live window kept u1..u3
    plain, reference = started(["a"], defer=False)
    for offset, uid in enumerate(["u1", "u2", "u3", "u4"]):
        expected = update(plain, reference, "a", uid, offset)
    assert summary([release]) == summary(expected)


def test_a_failure_before_the_window_changed_keeps_the_unsaved_updates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deferred, store = started(["a"])
    update(deferred, store, "a", "u1", 0)
    with monkeypatch.context() as patch:  # fails before the window changes
        patch.setattr(
            "fedstream.pipelines.model_process.to_client_update",
            lambda *a: (_ for _ in ()).throw(OSError("x")),
        )
        (letter,) = update(deferred, store, "a", "u2", 1)
    assert decode(letter[1]).record["reason"] == "INTERNAL"
    update(deferred, store, "a", "u3", 2)
    update(deferred, store, "a", "u4", 3)
    (release,) = update(deferred, store, "a", "u5", 4)
    assert sorted(decode(release[1]).record["lineage"]["update_ids"]) == ["u1", "u3", "u4", "u5"]


def test_a_failure_after_the_unsaved_window_changed_fails_the_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the in-place sum the window in memory is neither the old nor the new one, and
    the state is older still: only a restart from the checkpoint is consistent."""
    deferred, store = started(["a"])
    update(deferred, store, "a", "u1", 0)
    monkeypatch.setattr(
        model_process.DictSeenIds, "add", lambda *a: (_ for _ in ()).throw(OSError("x"))
    )
    with pytest.raises(UnsavedWindowError, match="'a'"):
        update(deferred, store, "a", "u2", 1)


def test_without_the_flushing_operator_nothing_is_deferred() -> None:
    plain, store = started(["a"], defer=False)
    empty = window(store, "a")
    update(plain, store, "a", "u1", 0)
    assert window(store, "a") != empty


def test_the_bookkeeping() -> None:
    unsaved = DeferredWindows(1)
    assert unsaved.defer("a") and unsaved.defer("a") and not unsaved.defer("b")
    assert "a" in unsaved and len(unsaved) == 1
    unsaved.saved("a")
    assert "a" not in unsaved and unsaved.defer("b")
    assert not DeferredWindows(0).defer("a")
    live = {"b": 1, "c": 2, "d": 3}  # oldest first; b is unsaved
    unsaved.trim(live, 1)
    assert live == {"b": 1}
    with pytest.raises(ValueError, match="limit"):
        DeferredWindows(-1)
