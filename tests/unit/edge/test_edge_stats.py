"""The SDK's own counters: a retry is a send of a round whose previous attempt failed."""

from __future__ import annotations

from fedstream.edge import DeviceStats


def test_a_failed_round_sent_again_is_a_retry() -> None:
    stats = DeviceStats()
    stats.attempt("m", 0)
    stats.delivered("m", 0)
    stats.attempt("m", 1)
    stats.send_failed("m", 1)
    stats.attempt("m", 1)  # the same update id and sequence again
    stats.send_failed("m", 1)
    stats.attempt("m", 1)
    stats.delivered("m", 1)
    stats.attempt("m", 1)  # delivered before: not a retry of a failure
    stats.delivered("m", 1)
    stats.attempt("other", 1)  # another model's round 1
    stats.delivered("other", 1)
    assert stats.snapshot() == {
        "sent": 4,
        "retried": 2,
        "failed": 2,
        "releases_installed": 0,
        "releases_refused": 0,
    }
