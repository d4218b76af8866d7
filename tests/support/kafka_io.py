"""Reading fedstream's output topics back the way a device or auditor does."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedstream.jobs.kafka_read import read_topic
from fedstream.schemas import assemble_release, decode
from tests.support.stack import Broker


@dataclass(frozen=True)
class Release:
    model_id: str
    version: int
    onnx: bytes
    lineage: dict[str, Any]


def releases(broker: Broker, topic: str) -> list[Release]:
    """The committed releases of every model, chunks reassembled and digests verified."""
    chunks: dict[tuple[str, int], list[dict[str, Any]]] = {}
    order: list[tuple[str, int]] = []
    for value in read_topic(broker.bootstrap, topic, broker.security):
        record = decode(value, expected="ModelRelease").record
        key = (record["model_id"], record["version"])
        if key not in chunks:
            order.append(key)
            chunks[key] = []
        chunks[key].append(record)
    out = []
    for key in order:
        parts = chunks[key]
        if len(parts) < parts[0]["chunk_count"]:
            continue  # cannot happen for committed output: chunks share one transaction
        onnx = assemble_release(parts)
        out.append(Release(key[0], key[1], onnx, dict(parts[0]["lineage"])))
    return out


def dead_letters(broker: Broker, topic: str) -> list[dict[str, Any]]:
    return [
        decode(v, expected="DeadLetter").record
        for v in read_topic(broker.bootstrap, topic, broker.security)
    ]


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, on_timeout: Callable[[], str]
) -> None:
    """Poll until `condition()`; fail with `what` and the diagnostics of `on_timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{on_timeout()}")
