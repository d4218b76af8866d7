"""A device's own counters: what it sent, re-sent and failed to send, and which releases
it installed or refused. Plain integers behind a small API (`EdgeClient.stats`), so a
device can report them however it reports anything (a log line, its own telemetry);
the SDK exports nothing by itself and opens no port.

A *retry* is a send of a round whose previous attempt failed: the same update id and
sequence go out again (`EdgeClient.send_update` advances nothing on failure), and the job
absorbs it at most once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["DeviceStats"]


@dataclass
class DeviceStats:
    """Counters since the client was created (not persisted)."""

    sent: int = 0  # updates the broker acknowledged
    retried: int = 0  # sends of a round whose previous attempt failed
    failed: int = 0  # sends that raised (nothing advanced; the round is sent again)
    releases_installed: int = 0
    releases_refused: int = 0  # bad digest or signature: never installed
    _failed_rounds: set[tuple[str, int]] = field(default_factory=set, repr=False)

    def attempt(self, model_id: str, round_index: int) -> None:
        """A send of `round_index` of `model_id` starts."""
        if (model_id, round_index) in self._failed_rounds:
            self.retried += 1

    def delivered(self, model_id: str, round_index: int) -> None:
        self.sent += 1
        self._failed_rounds.discard((model_id, round_index))

    def send_failed(self, model_id: str, round_index: int) -> None:
        self.failed += 1
        self._failed_rounds.add((model_id, round_index))

    def snapshot(self) -> dict[str, int]:
        """The counters by name (for a log line or a device's own telemetry)."""
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}
