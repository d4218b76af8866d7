"""Update compression with error feedback, kept on the device.

An update is one flat float32 vector; the codec can ship it as FP32, FP16, INT8 or TOPK
(`fedstream.schemas.pack`). The lossy encodings throw information away; error feedback
(Seide et al. 2014; Stich et al., "Sparsified SGD with Memory", 2018) keeps what was lost
in a residual on the device and adds it to the next delta, so over rounds nothing is lost,
only delayed. Without it top-k with a small k biases training towards the few coordinates
that are large in every round.

The residual is the exact difference between what the device wanted to send and what the
server will decode (`unpack` of the very payload sent), so the server-side view and the
device-side bookkeeping can never drift apart. Compression is two-phase: `prepare` computes
the payload and the next residual without changing anything, `commit` adopts the residual
once the broker acknowledged the record. A failed send (broker down, payload too large)
therefore leaves the residual as it was.
"""

from __future__ import annotations

import enum
import math
import threading
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedstream.schemas import TensorPayload, pack, unpack

__all__ = ["Compression", "DeltaCompressor", "PreparedDelta"]


class Compression(enum.StrEnum):
    """How a delta is encoded on the wire."""

    NONE = "none"  # FP32, exact
    FP16 = "fp16"  # half the bytes, relative error 2^-11
    INT8 = "int8"  # a quarter of the bytes, error <= max|x| / 254
    TOPK = "topk"  # only the k largest magnitudes (8 bytes each)


_ENCODING = {
    Compression.NONE: "FP32",
    Compression.FP16: "FP16",
    Compression.INT8: "INT8",
    Compression.TOPK: "TOPK",
}


@dataclass(frozen=True, slots=True)
class PreparedDelta:
    """A compressed delta ready to send, and the residual to keep if it is delivered."""

    payload: TensorPayload
    residual: NDArray[np.float32] | None
    size: int


class DeltaCompressor:
    """Compresses successive deltas of one model, carrying the error-feedback residual.

    `topk_fraction` is the share of coordinates TOPK keeps (at least one). With
    `error_feedback=False` the residual is never kept (each round is compressed alone).
    """

    def __init__(
        self,
        method: Compression | str = Compression.NONE,
        *,
        topk_fraction: float = 0.1,
        error_feedback: bool = True,
    ) -> None:
        try:
            self.method = Compression(str(method).lower())
        except ValueError:
            known = [c.value for c in Compression]
            raise ValueError(f"unknown compression {method!r}; expected one of {known}") from None
        if not 0.0 < topk_fraction <= 1.0:
            raise ValueError(f"topk_fraction must be in (0, 1], got {topk_fraction}")
        self.topk_fraction = topk_fraction
        self.error_feedback = error_feedback
        self._residual: NDArray[np.float32] | None = None
        self._lock = threading.Lock()

    @property
    def residual(self) -> NDArray[np.float32] | None:
        """What earlier rounds could not send yet (None when nothing is owed)."""
        with self._lock:
            return None if self._residual is None else self._residual.copy()

    def prepare(self, delta: ArrayLike) -> PreparedDelta:
        """Compress `delta` (+ the residual); changes no state (see `commit`)."""
        x = np.asarray(delta, dtype=np.float32).reshape(-1)
        with self._lock:
            owed = self._residual
        if owed is not None:
            if owed.shape != x.shape:
                raise ValueError(
                    f"delta has {x.size} values but the residual has {owed.size}: the model's "
                    "layout changed; call reset() first"
                )
            x = x + owed
        if self.method is Compression.TOPK:
            k = max(1, math.ceil(self.topk_fraction * x.size)) if x.size else 0
            payload = pack(x, "TOPK", k=k)
        else:
            payload = pack(x, _ENCODING[self.method])
        residual: NDArray[np.float32] | None = None
        if self.error_feedback and self.method is not Compression.NONE:
            sent = unpack(payload, expected_shape=[x.size]).reshape(-1)
            residual = (x - sent).astype(np.float32)
        return PreparedDelta(payload, residual, x.size)

    def commit(self, prepared: PreparedDelta) -> None:
        """Adopt the residual of a delivered delta."""
        with self._lock:
            self._residual = prepared.residual

    def reset(self) -> None:
        """Forget the residual (e.g. after the model was re-registered with a new layout)."""
        with self._lock:
            self._residual = None
