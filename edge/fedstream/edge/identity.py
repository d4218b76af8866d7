"""Deterministic update ids, and the per-model round counter they are made from.

The job drops an update whose ``update_id`` it has already absorbed (README.md, "What
the job guarantees"). That only protects against double counting if a device that
crashes after sending, restarts and sends the same work again uses the *same* id. A
random UUID would not; a name-based UUID (RFC 4122 version 5) of what identifies
the work does: (device, model, base version, local round). The round counter advances
only after the broker acknowledged a send, and can be persisted, so after a crash the
re-sent round gets the id of the round that may already have arrived.

A persisted round is also sent as the update's `sequence` (0, 1, 2, ... per model; see
`EdgeClient(sequenced=...)`): the job keeps a small window of each device's sequences and
recognises a re-send by it, so it needs no staleness cut. A round is counted once: if a
crash hits after the broker took the update but before the counter advanced, the next
update of that round (even one trained from a newer base) is refused as DUPLICATE rather
than counted as a second update of the round.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path

__all__ = ["UPDATE_ID_NAMESPACE", "RoundCounter", "make_update_id"]

#: Namespace of fedstream update ids (uuid5 of the project URL; never change it: ids
#: computed by older SDKs must stay reproducible).
UPDATE_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://fedstream.io/update-id")


def make_update_id(device_id: str, model_id: str, base_version: int, round_index: int) -> str:
    """The update id of round `round_index` of `device_id` on `model_id` from `base_version`.

    Pure function of its arguments; fields are length-prefixed so that no two different
    tuples can produce the same name (``("a-b", "c")`` vs ``("a", "b-c")``).
    """
    if base_version < 0 or round_index < 0:
        raise ValueError("base_version and round_index must be >= 0")
    name = f"{len(device_id)}:{device_id}|{len(model_id)}:{model_id}|{base_version}|{round_index}"
    return str(uuid.uuid5(UPDATE_ID_NAMESPACE, name))


class RoundCounter:
    """How many updates this device has had acknowledged, per model.

    With a `path`, the counts survive restarts: they are written atomically (temporary file
    plus rename) after each `advance`, so a crash leaves either the old or the new count,
    never a torn file.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        if self._path is not None and self._path.exists():
            loaded = json.loads(self._path.read_text(encoding="utf-8"))
            if not isinstance(loaded, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in loaded.items()
            ):
                raise ValueError(f"{self._path}: not a round-counter file")
            self._counts = dict(loaded)

    def current(self, model_id: str) -> int:
        """The round the next update of `model_id` belongs to."""
        with self._lock:
            return self._counts.get(model_id, 0)

    def advance(self, model_id: str) -> int:
        """Mark the current round as delivered; returns the next round."""
        with self._lock:
            self._counts[model_id] = self._counts.get(model_id, 0) + 1
            if self._path is not None:
                tmp = self._path.with_name(self._path.name + ".tmp")
                tmp.write_text(json.dumps(self._counts, sort_keys=True), encoding="utf-8")
                os.replace(tmp, self._path)
            return self._counts[model_id]
