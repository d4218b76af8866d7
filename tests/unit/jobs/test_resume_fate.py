"""What a checkpoint's pre-committed transaction state means for restoring it."""

from __future__ import annotations

import pytest
from kafka.admin._transactions import TransactionDescription, TransactionState

from fedstream.jobs.resume import START_MARGIN_MS, Fate, _fate

NOW = 1_000_000_000


def described(state: TransactionState, started: int = NOW, timeout: int = 900_000) -> object:
    return TransactionDescription(1, state, 7, 0, timeout, started, set())


@pytest.mark.parametrize(
    ("state", "fate"),
    [
        (TransactionState.COMPLETE_COMMIT, Fate.COMMITTED),
        (TransactionState.PREPARE_COMMIT, Fate.COMMITTED),
        (TransactionState.EMPTY, Fate.COMMITTED),  # the checkpoint wrote nothing there
        (TransactionState.COMPLETE_ABORT, Fate.LOST),  # the broker's timeout, or a fence
        (TransactionState.PREPARE_ABORT, Fate.LOST),
        (TransactionState.PREPARE_EPOCH_FENCE, Fate.LOST),
        (TransactionState.DEAD, Fate.LOST),
    ],
)
def test_settled_transactions(state: TransactionState, fate: Fate) -> None:
    assert _fate(described(state), NOW)[0] is fate


def test_an_open_transaction_is_committed_on_restore_only_with_time_left() -> None:
    roomy = described(TransactionState.ONGOING, started=NOW - 1000, timeout=900_000)
    assert _fate(roomy, NOW) == (Fate.PENDING, "open, 899 s before its timeout")
    # the committer reaches it only once the job runs: under a minute left is too late
    tight = described(TransactionState.ONGOING, started=NOW, timeout=START_MARGIN_MS)
    assert _fate(tight, NOW)[0] is Fate.LOST
