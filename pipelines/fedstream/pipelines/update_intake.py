"""The version-free checks of one incoming update, shared by the model and its shards.

An update is decoded, its ids and counters are bounded (`field_problem`), a sequenced
update meets its device's sequence window (`sequence_check`: re-sends, sequences below
the window, the device limit), and its delta is unpacked (`to_client_update`). None of
that depends on the model's version, so the unsharded model (`model_process.ModelProcess`)
and a shard of a sharded model (`shard_process.ShardProcess`) run the very same code; only
the version-dependent checks (staleness, the dedupe horizon of unsequenced updates) stay
with whoever knows the version. The device's window is marked (`mark_absorbed`) only
once the update is absorbed, last, so a failure leaves no trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.sequence_window import SequenceWindow, Verdict, WindowStore
from fedstream.pipelines.update import ClientUpdate
from fedstream.schemas import decode, unpack

__all__ = [
    "UPDATE",
    "Sequenced",
    "field_problem",
    "mark_absorbed",
    "read_update",
    "sequence_check",
    "to_client_update",
]

UPDATE = "GradientUpdate"


class _Seen(Protocol):
    def __contains__(self, device_update: object) -> bool: ...


@dataclass(frozen=True, slots=True)
class Sequenced:
    """A sequenced update's device window, to be marked once the update is absorbed."""

    sequence: int
    window: SequenceWindow
    new: bool  # the device had no window yet


def read_update(value: bytes) -> dict[str, Any]:
    """The decoded GradientUpdate record; raises CodecError (the route decoded it once
    already, but the check stays total)."""
    return decode(value, expected=UPDATE).record


def field_problem(record: dict[str, Any], limits: InputLimits) -> str | None:
    """Why a decoded update's ids, base_version or sequence are out of bounds, or None."""
    for name in ("update_id", "device_id"):
        # device_id may be empty until updates are signed by a device identity
        problem = limits.id_problem(name, str(record[name]), required=name != "device_id")
        if problem is not None:
            return problem
    if int(record["base_version"]) < 0:
        return f"base_version {record['base_version']} is negative"
    sequence = record.get("sequence")
    if sequence is not None and not record["device_id"]:
        return "a sequenced update needs a device_id (sequences are counted per device)"
    return limits.sequence_problem(sequence)


def sequence_check(
    *,
    windows: WindowStore,
    seen: _Seen,
    limits: InputLimits,
    width: int,
    model_id: str | None,
    device_id: str,
    sequence: int,
    update_id: str,
) -> tuple[Sequenced | None, tuple[str, str] | None]:
    """The device's window for a sequenced update, or why the update is refused:
    a re-send (DUPLICATE), a sequence below the window (SEQUENCE_TOO_OLD), or a new
    device past `limits.max_devices_per_model` (OTHER: no reason code names it).

    A device without a window yet may have sent this update before its SDK numbered
    updates (the one in flight across an SDK upgrade): its update id is looked up in
    `seen` then. Once a device has a window, all it sends is sequenced."""
    stored = windows.get(device_id)
    if stored is None:
        if (device_id, update_id) in seen:
            return None, ("DUPLICATE", f"update {update_id!r} was already absorbed")
        devices = windows.count()
        if devices >= limits.max_devices_per_model:
            return None, (
                "OTHER",
                f"device limit: model {model_id!r} already tracks {devices} devices "
                f"(limits.max_devices_per_model), so device {device_id!r} cannot be "
                "deduplicated",
            )
        window = SequenceWindow(width)
    else:
        window = SequenceWindow.from_bytes(stored, width)
    verdict = window.check(sequence)
    if verdict is Verdict.DUPLICATE:
        return None, (
            "DUPLICATE",
            f"sequence {sequence} of device {device_id!r} was already absorbed",
        )
    if verdict is Verdict.TOO_OLD:
        return None, (
            "SEQUENCE_TOO_OLD",
            f"sequence {sequence} of device {device_id!r} is below its window "
            f"({window.high - window.width + 1}..{window.high}, runtime.sequence_window)",
        )
    return Sequenced(sequence, window, stored is None), None


def to_client_update(record: dict[str, Any], num_params: int) -> ClientUpdate:
    """The update with its delta unpacked (a read-only view where the encoding allows);
    raises CodecError. Finiteness is not checked here: the content check every update
    then passes (`validation.check_content`) proves it with the norm it computes anyway
    (NON_FINITE either way), so the delta's bytes are read once less."""
    delta = unpack(record["delta"], expected_shape=[num_params], writable=False)
    return ClientUpdate(
        update_id=str(record["update_id"]),
        base_version=int(record["base_version"]),
        num_samples=int(record["num_samples"]),
        delta=delta.reshape(-1),
        device_id=str(record["device_id"]),
    )


def mark_absorbed(windows: WindowStore, device_id: str, sequenced: Sequenced) -> None:
    """Record a sequenced update as absorbed in its device's window."""
    sequenced.window.mark(sequenced.sequence)
    windows.put(device_id, sequenced.window.to_bytes(), new=sequenced.new)
