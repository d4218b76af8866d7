"""What a release absorbed: the provenance record that goes into `ModelRelease`.

The chaos tests prove exactly-once counting from this record (every update_id appears in
exactly one release), so it lists every absorbed update_id rather than just a count, and
the device of each (parallel to the ids): with signed updates required (`[trust]`), the
device gate verified each one, so they are identities, not claims.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Lineage"]


@dataclass(frozen=True, slots=True)
class Lineage:
    update_ids: tuple[str, ...]
    count: int
    total_samples: int
    staleness_min: int
    staleness_max: int
    staleness_mean: float
    #: the device of each update, parallel to update_ids ("" where none was recorded)
    device_ids: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        update_ids: Sequence[str],
        stalenesses: Sequence[int],
        total_samples: int,
        device_ids: Sequence[str] | None = None,
    ) -> Lineage:
        if len(update_ids) != len(stalenesses):
            raise ValueError("update_ids and stalenesses must have the same length")
        devices = tuple(device_ids) if device_ids is not None else ("",) * len(update_ids)
        if len(devices) != len(update_ids):
            raise ValueError("update_ids and device_ids must have the same length")
        n = len(stalenesses)
        return cls(
            update_ids=tuple(update_ids),
            count=n,
            total_samples=total_samples,
            staleness_min=min(stalenesses, default=0),
            staleness_max=max(stalenesses, default=0),
            staleness_mean=sum(stalenesses) / n if n else 0.0,
            device_ids=devices,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "update_ids": list(self.update_ids),
            "count": self.count,
            "total_samples": self.total_samples,
            "staleness_min": self.staleness_min,
            "staleness_max": self.staleness_max,
            "staleness_mean": self.staleness_mean,
            "device_ids": list(self.device_ids),
        }
