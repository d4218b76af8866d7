"""The fleet's data: scikit-learn's digits, split non-IID across devices with Dirichlet(alpha).

Digits (1797 8x8 images, 10 classes) ships inside the scikit-learn wheel, so a run never
downloads anything. A stratified held-out split is the evaluator's test set; the rest is
dealt out to devices the way FL papers simulate label skew (Hsu et al. 2019): for each
class, the shares of the devices are drawn from Dirichlet(alpha, ..., alpha) and that
class's examples are cut accordingly. Small alpha (0.1) gives devices that see one or two
classes; large alpha (100) approaches IID.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["FleetData", "dirichlet_split", "load_fleet_data"]


def dirichlet_split(
    labels: NDArray[np.integer[Any]],
    num_devices: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_samples: int = 1,
    max_attempts: int = 1000,
) -> list[NDArray[np.int64]]:
    """Indices of `labels` for each device: a partition (every index exactly once).

    Redraws (up to `max_attempts`) until every device has at least `min_samples`; raises
    ValueError if that is impossible or too unlikely for these parameters.
    """
    if num_devices < 1 or alpha <= 0:
        raise ValueError("need num_devices >= 1 and alpha > 0")
    if num_devices * min_samples > len(labels):
        raise ValueError(
            f"{len(labels)} examples cannot give {num_devices} devices {min_samples} each"
        )
    classes = np.unique(labels)
    for _ in range(max_attempts):
        shards: list[list[NDArray[np.int64]]] = [[] for _ in range(num_devices)]
        for cls in classes:
            members = np.flatnonzero(labels == cls).astype(np.int64)
            rng.shuffle(members)
            shares = rng.dirichlet(np.full(num_devices, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for device, part in enumerate(np.split(members, cuts)):
                shards[device].append(part)
        result = [np.sort(np.concatenate(parts)) for parts in shards]
        if min(len(r) for r in result) >= min_samples:
            return result
    raise ValueError(
        f"no Dirichlet({alpha}) split gave each of {num_devices} devices {min_samples} examples "
        f"in {max_attempts} attempts; raise alpha or lower min_samples"
    )


@dataclass(frozen=True)
class FleetData:
    """Train/test arrays (features scaled to [0, 1]) and each device's train indices."""

    x_train: NDArray[np.float32]
    y_train: NDArray[np.int64]
    x_test: NDArray[np.float32]
    y_test: NDArray[np.int64]
    shards: list[NDArray[np.int64]]

    def device(self, index: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        shard = self.shards[index]
        return self.x_train[shard], self.y_train[shard]

    def label_histogram(self) -> NDArray[np.int64]:
        """[device, class] counts (for the report)."""
        classes = int(self.y_train.max()) + 1
        return np.stack([np.bincount(self.y_train[s], minlength=classes) for s in self.shards])


def load_fleet_data(
    num_devices: int,
    *,
    alpha: float = 0.5,
    seed: int = 0,
    test_fraction: float = 0.2,
    min_samples: int = 10,
) -> FleetData:
    """Digits, a stratified test split, and a Dirichlet(alpha) split of the rest."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    rng = np.random.default_rng(seed)
    shards = dirichlet_split(y_train, num_devices, alpha, rng, min_samples=min_samples)
    return FleetData(x_train, y_train, x_test, y_test, shards)
