"""The server's state for one model: flat params, version, server-optimizer state.

Immutable by construction (frozen, arrays held as read-only views) so a state handed to
the ONNX release step or kept as "last released" cannot be changed by a later window.
Serialized with the same framed format as the accumulator (`binary_format.py`).

Two fields exist for particular settings and are empty otherwise:

- `history` (FedAsync with `fedasync_rule` MIX_WITH_BASE): the parameters of the last
  `max_staleness` versions, version -> params, so an update can be mixed with its own base
  (Xie et al. 2019). Bounded by the aggregator to max_staleness entries, i.e. at most
  max_staleness x num_params x 4 bytes, and checkpointed with the rest of the state.
- `concurrency` (FedBuff with `window.adaptive`): the smoothed estimate of updates in
  flight that sets the next window's size (`windows.next_adaptive_count`).

Format 2 adds both; format 1 (no history, no estimate) is still read.
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
FORMAT_VERSION = 2


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


def _kept(name: str, value: object, num_params: int) -> FloatVector:
    """A history entry: as `_frozen`, but an entry that is already a read-only float32
    view of the right shape (a previous state's params) is kept as it is, so carrying
    max_staleness entries into the next state costs no new views."""
    if (
        isinstance(value, np.ndarray)
        and not value.flags.writeable
        and value.base is not None
        and value.dtype == np.float32
        and value.shape == (num_params,)
    ):
        return value
    return _frozen(name, value, num_params)


def _past_version(key: object, version: int) -> int:
    if isinstance(key, bool) or not isinstance(key, int | np.integer) or not 0 <= key < version:
        raise ValueError(f"history keys must be past versions in [0, {version}); got {key!r}")
    return int(key)


@dataclass(frozen=True, eq=False, slots=True)  # slots: no weakrefs, no hidden holders
class ModelState:
    """params: the flat float32 parameter vector; version: number of server updates
    applied so far (staleness is measured in these); optimizer_state: the server
    optimizer's named vectors (empty before its first step, or for SGD); history and
    concurrency: see the module docstring."""

    params: FloatVector
    version: int = 0
    optimizer_state: Mapping[str, FloatVector] = field(default_factory=dict)
    history: Mapping[int, FloatVector] = field(default_factory=dict)
    concurrency: float | None = None

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
        history = {
            _past_version(v, int(self.version)): _kept(f"history[{v!r}]", p, params.shape[0])
            for v, p in dict(self.history).items()
        }
        if self.concurrency is not None and not (
            isinstance(self.concurrency, float | int) and 0 < self.concurrency < float("inf")
        ):
            raise ValueError(f"concurrency must be a finite number > 0; got {self.concurrency!r}")
        object.__setattr__(self, "params", params)  # normalise the frozen fields
        object.__setattr__(self, "version", int(self.version))
        object.__setattr__(self, "optimizer_state", MappingProxyType(opt))
        object.__setattr__(self, "history", MappingProxyType(dict(sorted(history.items()))))
        if self.concurrency is not None:
            object.__setattr__(self, "concurrency", float(self.concurrency))

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
            and self.history.keys() == other.history.keys()
            and all(np.array_equal(v, other.history[k]) for k, v in self.history.items())
            and self.concurrency == other.concurrency
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
        w.array(np.asarray(list(self.history), dtype=np.int64))
        for past in self.history.values():
            w.array(past)
        w.optional_f64(self.concurrency)
        return seal(MAGIC, FORMAT_VERSION, w)

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelState:
        """Raises a `binary_format.StateFormatError` subclass on damaged or foreign bytes."""
        format_version, r = unseal(data, MAGIC, (1, FORMAT_VERSION))
        version = r.i64()
        params = r.array()
        names = r.texts()
        opt = {name: r.array() for name in names}
        history: dict[int, FloatVector] = {}
        concurrency = None
        if format_version >= 2:
            versions = r.array()
            if versions.dtype != np.int64 or versions.ndim != 1:
                raise MalformedPayloadError("history versions are not an int64 vector")
            history = {int(v): r.array() for v in versions}
            if len(history) != len(versions):
                raise MalformedPayloadError("history names a version twice")
            concurrency = r.optional_f64()
        r.finish()
        try:
            return cls(params, version, opt, history, concurrency)
        except ValueError as exc:
            raise MalformedPayloadError(f"decoded model state is invalid: {exc}") from exc
