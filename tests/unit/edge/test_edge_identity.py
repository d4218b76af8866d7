"""Deterministic update ids: a re-send after a crash must carry the same id."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from fedstream.edge import RoundCounter, make_update_id


def test_same_inputs_same_id_and_it_is_a_uuid5() -> None:
    first = make_update_id("dev-1", "digits", 7, 3)
    assert first == make_update_id("dev-1", "digits", 7, 3)
    assert uuid.UUID(first).version == 5


@pytest.mark.parametrize(
    "other",
    [
        ("dev-2", "digits", 7, 3),
        ("dev-1", "mnist", 7, 3),
        ("dev-1", "digits", 8, 3),
        ("dev-1", "digits", 7, 4),
    ],
)
def test_any_field_changes_the_id(other: tuple[str, str, int, int]) -> None:
    assert make_update_id("dev-1", "digits", 7, 3) != make_update_id(*other)


def test_fields_cannot_run_into_each_other() -> None:
    assert make_update_id("a-b", "c", 0, 0) != make_update_id("a", "b-c", 0, 0)
    assert make_update_id("a|1", "b", 0, 0) != make_update_id("a", "1|b", 0, 0)


def test_negative_versions_are_refused() -> None:
    with pytest.raises(ValueError):
        make_update_id("d", "m", -1, 0)


def test_round_counter_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "rounds.json"
    counter = RoundCounter(path)
    assert counter.current("m") == 0
    assert counter.advance("m") == 1
    assert counter.advance("m") == 2
    assert counter.current("other") == 0
    restarted = RoundCounter(path)  # the device rebooted
    assert restarted.current("m") == 2
    assert json.loads(path.read_text()) == {"m": 2}
    assert not path.with_name("rounds.json.tmp").exists()


def test_round_counter_refuses_a_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / "rounds.json"
    path.write_text('{"m": -3}')
    with pytest.raises(ValueError, match="not a round-counter file"):
        RoundCounter(path)
