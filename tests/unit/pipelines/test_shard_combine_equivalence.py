"""A sharded model releases what the unsharded core releases from the same updates.

Random windows of updates (base versions around the bound, sample counts, clipping on or
off, COUNT and WEIGHT_SUM, SGD/momentum/Adam/Yogi, DP noise, adaptive windows) are split
over S = 1..4 shards in a random assignment, each shard flushing when its partial is full,
and the partials are merged in a random order and tree; `combine` must release what an
`Aggregator` fed the same updates in the lineage's order releases, window after window.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstream.pipelines.aggregator import Aggregator
from fedstream.pipelines.config import AggregationConfig
from fedstream.pipelines.model_state import ModelState
from fedstream.pipelines.partial_window import PartialFullError, PartialWindow
from fedstream.pipelines.shard_combine import CombinedWindow, combine, fold_partial
from fedstream.pipelines.update import ClientUpdate

# The only difference is the order of the float32 additions (see the exact test below).
# Over 20,000 examples the parameters differed by at most 1e-6 relative plus 0.35 float32
# ulps of the largest delta element; the bound allows 1e-6 relative plus 4 such ulps.
RTOL, ULPS = 1e-6, 4


@dataclass(frozen=True)
class Window:
    updates: list[ClientUpdate]
    shard_of: list[int]  # the shard of each update
    order_seed: int  # permutes and groups the partials before combining


@st.composite
def configs(draw: st.DrawFn) -> AggregationConfig:
    clip = draw(st.sampled_from([None, 0.5, 2.0]))
    dp = clip is not None and draw(st.booleans())
    optimizer = draw(st.sampled_from(["sgd", "momentum", "adam", "yogi"]))
    lr = draw(st.sampled_from([0.1, 1.0])) if optimizer in ("sgd", "momentum") else 0.01
    adaptive = draw(st.booleans())
    return AggregationConfig.from_dict(
        {
            "normalization": draw(st.sampled_from(["count", "weight_sum"])),
            "weight_by_samples": (not dp) and draw(st.booleans()),
            "clip_norm": clip,
            "dp_noise_multiplier": 0.3 if dp else None,
            "seed": 7,
            "max_staleness": draw(st.integers(0, 4)),
            "staleness": {"function": draw(st.sampled_from(["polynomial", "hinge", "constant"]))},
            "server_optimizer": {"name": optimizer, "learning_rate": lr},
            "window": {"count": 5, "seconds": 10.0, "adaptive": adaptive},
        }
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[AggregationConfig, int, int, list[Window], int]:
    config = draw(configs())
    p = draw(st.integers(1, 12))
    shards = draw(st.integers(1, 4))
    limit = config.max_staleness
    assert limit is not None
    windows = []
    for w in range(draw(st.integers(1, 3))):
        k = draw(st.integers(1, 10))
        # staleness offsets from the window's version: -1 is a future base, > limit stale
        offsets = draw(st.lists(st.integers(-1, limit + 2), min_size=k, max_size=k))
        samples = draw(st.lists(st.integers(1, 100), min_size=k, max_size=k))
        updates = [
            ClientUpdate(f"w{w}u{i}", -o, n, np.zeros(0, np.float32), device_id=f"d{i % 3}")
            for i, (o, n) in enumerate(zip(offsets, samples, strict=True))
        ]
        shard_of = draw(st.lists(st.integers(0, shards - 1), min_size=k, max_size=k))
        windows.append(Window(updates, shard_of, draw(st.integers(0, 2**31))))
    return config, p, shards, windows, draw(st.integers(0, 2**31))


def materialize(u: ClientUpdate, version: int, rng: np.random.Generator, p: int) -> ClientUpdate:
    """The update with its base relative to `version` (kept >= 0) and a random delta."""
    delta = (rng.standard_normal(p) * rng.choice([0.1, 1.0, 5.0])).astype(np.float32)
    base = max(0, version + u.base_version)
    return ClientUpdate(u.update_id, base, u.num_samples, delta, u.device_id)


def shard_partials(
    config: AggregationConfig, p: int, updates: list[ClientUpdate], shard_of: list[int]
) -> list[PartialWindow]:
    """Every partial the shards emit: each shard adds its updates in arrival order and
    flushes whenever the next update's base version does not fit."""
    out: list[PartialWindow] = []
    for shard in sorted(set(shard_of)):
        partial = PartialWindow.for_config(config, p)
        for t, (u, s) in enumerate(zip(updates, shard_of, strict=True)):
            if s != shard:
                continue
            if not partial.has_room_for(u.base_version):
                out.append(partial)
                partial = partial.empty()
            assert partial.try_add(u, float(t)) is None
        out.append(partial)
    return out


def shuffle_and_merge(partials: list[PartialWindow], seed: int) -> list[PartialWindow]:
    """The partials in a random order, random neighbours merged (where the cap allows)."""
    rnd = random.Random(seed)
    pool = partials[:]
    rnd.shuffle(pool)
    for _ in range(rnd.randint(0, len(pool))):
        if len(pool) < 2:
            break
        i = rnd.randrange(len(pool) - 1)
        try:
            merged = pool[i].merge(pool[i + 1])
        except PartialFullError:
            continue
        pool[i : i + 2] = [merged]
    return pool


def unsharded(agg: Aggregator, combined: CombinedWindow, updates: list[ClientUpdate]) -> set[Any]:
    """Feed `agg` the window's updates in the combined lineage's order (rejected ones
    after); returns its rejections as (id, reason)."""
    by_id = {u.update_id: u for u in updates}
    order = list(combined.closed.lineage.update_ids) if combined.closed else []
    order += [r.update_id for r in combined.rejections]
    rejected = set()
    for t, uid in enumerate(order):
        rejection = agg.try_add(by_id[uid], float(t))
        if rejection is not None:
            rejected.add((rejection.update_id, rejection.reason, rejection.detail))
    return rejected


def assert_same_state(got: ModelState, want: ModelState, delta_scale: float) -> None:
    atol = ULPS * float(np.finfo(np.float32).eps) * delta_scale
    assert got.version == want.version
    np.testing.assert_allclose(got.params, want.params, rtol=RTOL, atol=atol)
    assert got.optimizer_state.keys() == want.optimizer_state.keys()
    for key, value in want.optimizer_state.items():
        np.testing.assert_allclose(got.optimizer_state[key], value, rtol=RTOL, atol=atol)
    assert got.concurrency == pytest.approx(want.concurrency)


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_sharded_release_equals_the_unsharded_core(
    scenario: tuple[AggregationConfig, int, int, list[Window], int],
) -> None:
    config, p, _, windows, seed = scenario
    rng = np.random.default_rng(seed)
    state = ModelState(rng.standard_normal(p).astype(np.float32), version=3)
    reference = Aggregator(config, state)
    delta_scale = 0.0
    for window in windows:
        updates = [materialize(u, state.version, rng, p) for u in window.updates]
        delta_scale = max([delta_scale, *(float(np.abs(u.delta).max()) for u in updates)])
        partials = shard_partials(config, p, updates, window.shard_of)
        combined = combine(config, state, shuffle_and_merge(partials, window.order_seed))

        rejected = unsharded(reference, combined, updates)
        assert rejected == {(r.update_id, r.reason, r.detail) for r in combined.rejections}
        if combined.closed is None:
            assert reference.buffer.count == 0
            continue
        want = reference.close()
        assert combined.closed.lineage == want.lineage
        assert_same_state(combined.closed.state, want.state, delta_scale)
        state = combined.closed.state


@settings(max_examples=60, deadline=None)
@given(
    shards=st.integers(1, 4),
    k=st.integers(1, 12),
    seed=st.integers(0, 2**31),
    by_samples=st.booleans(),
)
def test_exact_for_integer_deltas_without_discount(
    shards: int, k: int, seed: int, by_samples: bool
) -> None:
    """With integer deltas and weights every float32 sum is exact, so the sharded and
    unsharded releases are bit for bit equal: any difference is the order of additions."""
    config = AggregationConfig.from_dict(
        {
            "weight_by_samples": by_samples,
            "staleness": {"function": "constant"},
            "normalization": "weight_sum",
            "max_staleness": 2,
        }
    )
    rng = np.random.default_rng(seed)
    state = ModelState(np.zeros(6, np.float32), version=5)
    updates = [
        ClientUpdate(
            f"u{i}",
            int(rng.integers(3, 6)),
            int(rng.integers(1, 9)),
            rng.integers(-50, 50, 6).astype(np.float32),
        )
        for i in range(k)
    ]
    shard_of = [int(s) for s in rng.integers(0, shards, k)]
    partials = shard_partials(config, 6, updates, shard_of)
    combined = combine(config, state, shuffle_and_merge(partials, seed))
    reference = Aggregator(config, state)
    unsharded(reference, combined, updates)
    assert combined.closed is not None
    got, want = combined.closed.state.params, reference.close().state.params
    # the weighted sum is exact; the mean is one multiply by the same 1/W in both
    np.testing.assert_array_equal(got, want)


def test_fold_partial_starts_the_window_at_the_earliest_arrival() -> None:
    config = AggregationConfig.from_dict({"window": {"count": 10, "seconds": 5.0}})
    agg = Aggregator(config, ModelState(np.zeros(2, np.float32), version=1))
    partial = PartialWindow.for_config(config, 2)
    partial.add(ClientUpdate("a", 1, 1, np.ones(2, np.float32)), now=7.0)
    partial.add(ClientUpdate("b", 0, 1, np.ones(2, np.float32)), now=3.0)
    agg.add(ClientUpdate("c", 1, 1, np.ones(2, np.float32)), now=4.0)
    assert fold_partial(agg, partial) == []
    assert agg.buffer.count == 3 and agg.deadline() == 8.0
    assert agg.buffer.stalenesses == (0, 1, 0)  # c, then base 0 (b), then base 1 (a)
