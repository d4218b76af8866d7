"""The simulator's seeded setup: Dirichlet split, device speeds, aggregation settings."""

from __future__ import annotations

import numpy as np
import pytest

from fedstream.edge.simulator.data import dirichlet_split, load_fleet_data
from fedstream.edge.simulator.fleet import (
    MODES,
    FleetSettings,
    aggregation_for,
    device_profiles,
    digits_mlp,
)
from fedstream.pipelines.config import AggregationConfig
from fedstream.schemas import aggregation_from_avro, aggregation_to_avro

LABELS = np.repeat(np.arange(10), 100)


def test_split_is_a_partition() -> None:
    shards = dirichlet_split(LABELS, 8, 0.5, np.random.default_rng(0), min_samples=5)
    assert len(shards) == 8
    everything = np.concatenate(shards)
    assert sorted(everything.tolist()) == list(range(len(LABELS)))
    assert min(len(s) for s in shards) >= 5


def test_split_is_reproducible_from_the_seed() -> None:
    a = dirichlet_split(LABELS, 8, 0.5, np.random.default_rng(3))
    b = dirichlet_split(LABELS, 8, 0.5, np.random.default_rng(3))
    c = dirichlet_split(LABELS, 8, 0.5, np.random.default_rng(4))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def _skew(alpha: float) -> float:
    """Mean share of a device's most frequent label (1.0 = one label per device)."""
    shares = []
    for seed in range(5):
        for shard in dirichlet_split(LABELS, 10, alpha, np.random.default_rng(seed)):
            counts = np.bincount(LABELS[shard], minlength=10)
            shares.append(counts.max() / counts.sum())
    return float(np.mean(shares))


def test_small_alpha_is_skewed_large_alpha_is_nearly_iid() -> None:
    assert _skew(0.1) > 0.5
    assert _skew(1000.0) < 0.2
    assert _skew(0.1) > _skew(1.0) > _skew(1000.0)


def test_impossible_split_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot give"):
        dirichlet_split(LABELS, 100, 0.5, np.random.default_rng(0), min_samples=11)
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_split(LABELS, 4, 0.0, np.random.default_rng(0))


def test_fleet_data_is_digits_with_a_held_out_split() -> None:
    data = load_fleet_data(8, alpha=0.5, seed=0)
    assert data.x_train.shape[1] == 64 and data.x_train.dtype == np.float32
    assert len(data.y_train) + len(data.y_test) == 1797
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0
    assert sum(len(s) for s in data.shards) == len(data.y_train)
    assert data.label_histogram().shape == (8, 10)
    x, y = data.device(3)
    assert len(x) == len(y) == len(data.shards[3])


def test_device_speeds_span_the_spread_in_a_seeded_order() -> None:
    settings = FleetSettings(devices=10, base_delay_s=0.2, speed_spread=10.0, seed=1)
    profiles = device_profiles(settings)
    delays = [p.delay_s for p in profiles]
    assert min(delays) == pytest.approx(0.2) and max(delays) == pytest.approx(2.0)
    assert delays != sorted(delays)  # speed is not tied to the device index
    assert delays == [p.delay_s for p in device_profiles(settings)]
    assert len({p.device_id for p in profiles}) == 10


def test_sync_is_fedavg_async_is_fedbuff() -> None:
    settings = FleetSettings(devices=12)
    sync = aggregation_to_avro(aggregation_for("sync", settings))
    assert sync["window"]["count"] == 12 and sync["staleness"]["function"] == "CONSTANT"
    fedbuff = aggregation_to_avro(aggregation_for("async", settings))
    assert fedbuff["window"]["count"] == 3 and fedbuff["staleness"]["function"] == "POLYNOMIAL"
    with pytest.raises(ValueError, match="mode"):
        aggregation_for("gossip", settings)


def test_fedasync_is_a_constant_mixing_per_update() -> None:
    settings = FleetSettings(devices=12, fedasync_mixing=0.4)
    fedasync = aggregation_to_avro(aggregation_for("fedasync", settings))
    assert fedasync["mode"] == "FEDASYNC" and fedasync["window"]["count"] == 1
    assert fedasync["staleness"]["function"] == "CONSTANT"
    assert fedasync["fedasync_mixing"] == pytest.approx(0.4)
    assert fedasync["weight_by_samples"] is False
    assert settings.window("fedasync") == 1


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_passes_the_jobs_validation(mode: str) -> None:
    """What the job would do with the registration: its own config check must accept it."""
    config = AggregationConfig.from_dict(
        aggregation_from_avro(aggregation_to_avro(aggregation_for(mode, FleetSettings())))
    )
    assert config.window.count == FleetSettings().window(mode)


def test_initial_model_is_deterministic() -> None:
    a, b = digits_mlp(32, seed=4), digits_mlp(32, seed=4)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb and bool((pa == pb).all())
