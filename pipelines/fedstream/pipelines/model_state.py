"""The server's state for one model: flat params, version, server-optimizer state.

Immutable by construction (frozen, arrays held as read-only views) so a state handed to
the ONNX release step or kept as "last released" cannot be changed by a later window.
Serialized with the same framed format as the accumulator (`binary_format.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from fedstream.pipelines.binary_format import MalformedPayloadError, Writer, seal, unseal
from fedstream.pipelines.update import FloatVector

__all__ = ["ModelState"]

MAGIC = b"FSMS"
FORMAT_VERSION = 1


def _frozen(name: str, value: object, num_params: int | None) -> FloatVector:
    if not isinstance(value, np.ndarray) or value.dtype != np.float32 or value.ndim != 1:
        found = (
            f"{value.dtype} array of shape {value.shape}"
            if isinstance(value, np.ndarray)
            else type(value).__name__
        )
        raise ValueError(f"{name} must be a 1-D float32 array; got {found}")
    if num_params is not None and value.shape != (num_params,):
        raise ValueError(f"{name} has shape {value.shape}, expected ({num_params},)")
    view = value.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True, eq=False, slots=True)  # slots: no weakrefs, no hidden holders
class ModelState:
    """params: the flat float32 parameter vector; version: number of server updates
    applied so far (staleness is measured in these); optimizer_state: the server
    optimizer's named vectors (empty before its first step, or for SGD)."""

    params: FloatVector
    version: int = 0
    optimizer_state: Mapping[str, FloatVector] = field(default_factory=dict)

    def __post_init__(self) -> None:
        params = _frozen("params", self.params, None)
        if params.shape[0] < 1:
            raise ValueError("params must hold at least one value")
        if isinstance(self.version, bool) or not isinstance(self.version, int | np.integer):
            raise ValueError(f"version must be an int; got {self.version!r}")
        if self.version < 0:
            raise ValueError(f"version must be >= 0; got {self.version}")
        opt = {
            str(k): _frozen(f"optimizer_state[{k!r}]", v, params.shape[0])
            for k, v in dict(self.optimizer_state).items()
        }
        object.__setattr__(self, "params", params)  # normalise the frozen fields
        object.__setattr__(self, "version", int(self.version))
        object.__setattr__(self, "optimizer_state", MappingProxyType(opt))

    @property
    def num_params(self) -> int:
        return int(self.params.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelState):
            return NotImplemented
        return (
            self.version == other.version
            and np.array_equal(self.params, other.params, equal_nan=True)
            and self.optimizer_state.keys() == other.optimizer_state.keys()
            and all(
                np.array_equal(v, other.optimizer_state[k], equal_nan=True)
                for k, v in self.optimizer_state.items()
            )
        )

    __hash__ = None  # type: ignore[assignment]

    def to_bytes(self) -> bytes:
        w = Writer()
        w.i64(self.version)
        w.array(self.params)
        names = sorted(self.optimizer_state)
        w.texts(names)
        for name in names:
            w.array(self.optimizer_state[name])
        return seal(MAGIC, FORMAT_VERSION, w)

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelState:
        """Raises a `binary_format.StateFormatError` subclass on damaged or foreign bytes."""
        _version, r = unseal(data, MAGIC, (FORMAT_VERSION,))
        version = r.i64()
        params = r.array()
        names = r.texts()
        opt = {name: r.array() for name in names}
        r.finish()
        try:
            return cls(params, version, opt)
        except ValueError as exc:
            raise MalformedPayloadError(f"decoded model state is invalid: {exc}") from exc
