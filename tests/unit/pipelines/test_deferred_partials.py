"""A shard's open partial written once per checkpoint (`deferred_windows`, shards).

The sharded shells of `test_shard_function_state.Pipeline` on dict-backed keyed state;
`snapshot` plays the barrier (the flush `FlushingKeyedProcessOperator` calls under each
key, then a copy of the state). Model "a" has K = 4 over 2 shards, so a shard sends its
partial on at 2 updates: the first of each pair may wait unsaved. The real operator runs
the sharded SIGKILL test of `test_job_exactly_once.py`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedstream.pipelines.deferred_windows import UnsavedWindowError
from fedstream.pipelines.partial_window import PartialWindow
from fedstream.schemas import decode
from tests.support.records import CONTROL_TOPIC, UPDATES_TOPIC, registration_bytes, update_bytes
from tests.unit.pipelines.test_shard_function_state import (
    AGGREGATION,
    ONNX,
    Pipeline,
    shard_key,
    summary,
)

#: two devices of the same shard of model "a"
DEVICE = "d0"
KEY = shard_key("a", DEVICE)
OTHER, WARM = [f"d{i}" for i in range(1, 64) if shard_key("a", f"d{i}") == KEY][:2]


def started(*, defer: bool = True, live: int = 8, count: int = 4) -> Pipeline:
    """Both models registered, model a's window of `count` updates; then one partial of
    KEY sent on by device WARM (a key's first partial is always written: the live cache
    keeps only what state has a generation for)."""
    pipeline = Pipeline(live, defer=defer)
    for offset, model in enumerate(sorted(ONNX)):
        aggregation = {**AGGREGATION[model]}
        if model == "a":
            aggregation["window"] = {"count": count}
        value = registration_bytes(model, ONNX[model], aggregation)
        pipeline.send(value, CONTROL_TOPIC, offset, 0)
    for i in range(-(-count // 2)):
        update(pipeline, 100 + i, WARM, sequence=i + 1)
    assert partial(pipeline) is None
    return pipeline


def update(
    pipeline: Pipeline, i: int, device: str = DEVICE, *, sequence: int | None = None
) -> list[tuple[str, bytes]]:
    delta = np.random.default_rng(i).standard_normal(15).astype(np.float32)
    value = update_bytes("a", f"a{i}", delta, device_id=device, sequence=sequence or i + 1)
    return pipeline.send(value, UPDATES_TOPIC, i, 10 * i)


def partial(pipeline: Pipeline) -> Any:
    return pipeline.shard_store.values.get(("partial", KEY))


def held(shards: dict[Any, Any]) -> list[str]:
    """The update ids in the partial of KEY in the shard state `shards`."""
    window = PartialWindow.from_bytes(bytes(shards[("partial", KEY)]))
    return sorted(e.update_id for b in window.base_versions for e in window.entries(b))


def without_generation(values: dict[Any, Any]) -> dict[Any, Any]:
    return {k: v for k, v in values.items() if k[0] != "generation"}


def test_a_partial_is_written_at_the_flush_and_then_equals_a_per_update_write() -> None:
    deferred, plain = started(), started(defer=False)
    update(deferred, 0)
    update(plain, 0)
    assert partial(deferred) is None and partial(plain) is not None  # not written per update
    shards, _ = deferred.snapshot()
    assert shards[("partial", KEY)] == partial(plain)
    assert without_generation(shards) == without_generation(plain.shard_store.values)


def test_a_restore_after_the_flush_keeps_the_unsaved_update() -> None:
    deferred, plain = started(), started(defer=False)
    update(deferred, 0)
    checkpoint = deferred.snapshot()
    update(deferred, 1, OTHER)  # lost with the memory at the restore, replayed below
    deferred.restore(checkpoint)
    deferred.open()
    got = update(deferred, 1, OTHER) + update(deferred, 2) + update(deferred, 3, OTHER)
    expected = update(plain, 0) + update(plain, 1, OTHER) + update(plain, 2)
    expected += update(plain, 3, OTHER)
    assert summary(got) == summary(expected)
    assert "a0" in decode(got[-1][1]).record["lineage"]["update_ids"]


def test_the_update_that_sends_the_partial_on_leaves_nothing_unsaved() -> None:
    deferred = started()
    update(deferred, 0)
    update(deferred, 1, OTHER)  # the second of the pair: the partial goes on, state cleared
    assert partial(deferred) is None
    before = dict(deferred.shard_store.values)
    deferred.snapshot()
    assert deferred.shard_store.values == before


def test_a_failure_before_the_partial_changed_keeps_the_unsaved_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """K = 6: a shard sends its partial on at 3 updates, so the second may fail unsaved."""
    deferred = started(count=6)
    update(deferred, 0)
    with monkeypatch.context() as patch:  # fails before the partial changes
        patch.setattr(
            "fedstream.pipelines.shard_process.to_client_update",
            lambda *a: (_ for _ in ()).throw(OSError("x")),
        )
        (letter,) = update(deferred, 1, OTHER)
    assert decode(letter[1]).record["reason"] == "INTERNAL"
    update(deferred, 2)
    shards, _ = deferred.snapshot()
    assert held(shards) == ["a0", "a2"]


def test_a_failure_after_the_unsaved_partial_changed_fails_the_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the in-place add the partial in memory is neither the old nor the new one,
    and the state is older still: only a restart from the checkpoint is consistent."""
    deferred = started(count=6)
    update(deferred, 0)
    monkeypatch.setattr(
        "fedstream.pipelines.shard_process.mark_absorbed",
        lambda *a: (_ for _ in ()).throw(OSError("x")),
    )
    with pytest.raises(UnsavedWindowError, match=KEY):
        update(deferred, 1, OTHER)


def test_unsaved_partials_are_bounded_by_the_live_cache() -> None:
    """live=0: no live cache, so nothing may wait unsaved."""
    deferred = started(live=0)
    update(deferred, 0)
    assert partial(deferred) is not None
