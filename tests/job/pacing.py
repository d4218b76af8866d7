"""TEST-ONLY operator placed before `topology`: lets wall-clock time pass between records.

With bounded input, a processing-time timer that is still pending when the input ends
never fires, so a time window would never close. A marker row (topic `MARKER_TOPIC`,
value `b"<id>:<seconds>"`) makes the operator sleep instead of forwarding it; everything
else passes through unchanged and in order. Records are keyed by their Kafka partition
first, so each subtask sees one partition's records in offset order, as with Kafka. A
marker is sent once per partition; each subtask sleeps once per marker id.

This module holds only what runs inside the Python workers (stdlib + pyflink), and is
pickled by value, so the workers never need the `tests` package on their path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pyflink.datastream import FlatMapFunction

MARKER_TOPIC = "__fedstream_test_sleep__"


class Pace(FlatMapFunction):  # type: ignore[misc]
    def __init__(self) -> None:
        self._slept: set[str] = set()

    def flat_map(self, value: Any) -> Iterator[Any]:
        if value[1] != MARKER_TOPIC:
            yield value
            return
        marker, _, seconds = bytes(value[0]).decode().partition(":")
        if marker not in self._slept:
            self._slept.add(marker)
            time.sleep(float(seconds))
