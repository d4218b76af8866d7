"""What a device sends, as the core sees it: a flat float32 delta and its provenance.

The job decodes the Avro `GradientUpdate` (any payload encoding) into this object; the core
never sees Avro. Parameters are ONE flat 1-D float32 vector per model; the mapping from named
tensors to that vector lives with the job and the edge SDK.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["ClientUpdate", "FloatVector"]

FloatVector = npt.NDArray[np.float32]
"""A flat 1-D float32 vector: model parameters, a delta, an optimizer moment."""


@dataclass(frozen=True, slots=True)
class ClientUpdate:
    """One device's contribution.

    `delta = w_local - w_base` points in the improving direction (FedOpt convention,
    Reddi et al. 2021), so the server *adds* it. `base_version` is the model version the
    device trained from; staleness is measured against it. Nothing is validated here: the
    job builds this from untrusted bytes, so `validation.validate_update` does the checking
    and returns a typed rejection instead of raising deep inside numpy.
    """

    update_id: str
    base_version: int
    num_samples: int
    delta: npt.NDArray[np.generic]
    device_id: str = ""
