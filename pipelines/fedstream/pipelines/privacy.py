"""Gaussian mechanism for the buffered (FedBuff) mode.

DP-FedAvg (McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private Recurrent
Language Models", ICLR 2018): clip every update to L2 norm C, sum them, add N(0, (z C)^2)
to each coordinate of the sum, with z the noise multiplier. Buffered asynchronous
aggregation keeps exactly such a sum, which is what makes FedBuff (Nguyen et al., AISTATS
2022) compatible with this mechanism. Weights are <= 1 (staleness discounts only:
`AggregationConfig` forbids sample weights with DP), so one device changes the weighted
sum by at most C, the sensitivity the noise is calibrated to.

Adding noise of std z C to the sum and then dividing by the total weight W is the same as
adding noise of std z C / W to the mean, which is what `add_gaussian_noise` is given; the
privacy accounting (epsilon over rounds) is out of scope here.

The RNG is passed in, never created globally, so tests are deterministic and a restored
job that replays a window draws the same noise.
"""

from __future__ import annotations

import numpy as np

from fedstream.pipelines.update import FloatVector

__all__ = ["add_gaussian_noise", "noise_stddev"]


def noise_stddev(noise_multiplier: float, clip_norm: float) -> float:
    """Std of the Gaussian noise added to the sum of clipped updates: z * C."""
    if noise_multiplier < 0 or clip_norm <= 0:
        raise ValueError(
            f"need noise_multiplier >= 0 and clip_norm > 0; got {noise_multiplier}, {clip_norm}"
        )
    return noise_multiplier * clip_norm


def add_gaussian_noise(vector: FloatVector, stddev: float, rng: np.random.Generator) -> None:
    """vector += N(0, stddev^2) per coordinate, in place. stddev == 0 leaves it untouched."""
    if stddev < 0:
        raise ValueError(f"stddev must be >= 0; got {stddev}")
    if stddev == 0:
        return
    noise = rng.standard_normal(vector.shape[0], dtype=np.float32)
    noise *= np.float32(stddev)
    vector += noise
