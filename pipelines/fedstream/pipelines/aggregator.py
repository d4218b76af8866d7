"""The one object the Flink job drives per model: validate, add, close.

    agg = Aggregator(config, ModelState.from_bytes(b), Accumulator.from_bytes(buf))
    rejection = agg.try_add(update, now)       # None, or route to the DLQ with .reason
    if agg.should_close(now):                  # else register a timer at agg.deadline()
        closed = agg.close()                   # closed.state (new version), closed.lineage
    # persist agg.state.to_bytes() and agg.buffer.to_bytes()

Modes:

- FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation",
  AISTATS 2022): each accepted delta is weighted by s(staleness) (times num_samples if
  `weight_by_samples`), optionally clipped, and buffered. At close the pseudo-gradient is
  the weighted sum divided by `normalization`'s divisor (optionally with DP noise, or a
  robust reducer), the server optimizer applies it (FedOpt, Reddi et al. 2021) and the
  version increments by one. COUNT (the default) is the paper's Algorithm 1: the sum is
  divided by the undiscounted weight (K, or sum n_i with `weight_by_samples`), so the
  staleness discount survives even when every update is equally stale (the backlog after
  an outage), and with all staleness 0 and K = number of devices it is exactly
  synchronous FedAvg. WEIGHT_SUM (sum w_i d_i / sum w_i) is a true weighted mean, whose
  discount cancels in such a window; bench.learning_sweep measured both (README). A
  robust reducer's estimate is scaled by sum w_i / the same divisor. With `window.adaptive` the next
  window's K follows the measured concurrency (`windows.next_adaptive_count`; Papaya,
  Huba et al., MLSys 2022, sizes its buffer by concurrency the same way).

- FedAsync (Xie, Koyejo, Gupta, "Asynchronous Federated Optimization", 2019): every
  accepted update is mixed in immediately with a_t = fedasync_mixing * s(staleness), and
  the version increments per update (the paper's t counts server updates); the window
  then only decides when a release is published and `close` snapshots the state.
  `fedasync_rule` MIX_WITH_BASE is the paper's x <- (1 - a_t) x + a_t (x_base + delta),
  x_base the parameters of the update's base version, kept in `ModelState.history` for
  the last max_staleness versions (required, so the memory is max_staleness x params x 4
  bytes; a base missing from a restored pre-history state falls back to the next rule).
  ADD_DELTA re-bases the delta on the current model, x <- x + a_t delta: FedBuff with
  K = 1 and SGD at rate a_t, no history, but n updates in flight from about one base step
  ~n a_t deltas, which diverges at the paper's a = 0.6 on a 20-device fleet.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import cast

import numpy as np

from fedstream.pipelines.accumulator import Accumulator, DeltaAccumulator, make_accumulator
from fedstream.pipelines.clipping import clip_factor
from fedstream.pipelines.config import AggregationConfig, FedAsyncRule, Mode, WindowConfig
from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.lineage import Lineage
from fedstream.pipelines.mixing import (
    check_history_bound,
    mix_with_base,
    prune_history,
    sample_weight,
    window_divisor,
)
from fedstream.pipelines.model_state import ModelState
from fedstream.pipelines.optimizers import optimizer_from_config
from fedstream.pipelines.privacy import add_gaussian_noise, noise_stddev
from fedstream.pipelines.staleness import staleness, staleness_weight_from_config
from fedstream.pipelines.update import ClientUpdate, FloatVector
from fedstream.pipelines.validation import (
    Rejection,
    UpdateRejectedError,
    check_update,
    validate_update,
)
from fedstream.pipelines.windows import (
    adaptive_count,
    next_adaptive_count,
    window_deadline,
    window_should_close,
)

__all__ = ["Aggregator", "ClosedWindow"]


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """The outcome of `Aggregator.close`: the state to release and what it absorbed."""

    state: ModelState
    lineage: Lineage


class Aggregator:
    """Aggregation for one model: a `ModelState` plus its open window (`Accumulator`).

    Clock values (`now`) are seconds on whatever clock the caller uses consistently
    (event or processing time); the core never reads a clock itself.
    """

    def __init__(
        self, config: AggregationConfig, state: ModelState, buffer: Accumulator | None = None
    ) -> None:
        self._config = config
        self._staleness_weight = staleness_weight_from_config(config.staleness)
        self._optimizer = optimizer_from_config(config.server_optimizer)
        check_history_bound(config, state.num_params)
        if config.mode is Mode.FEDBUFF:
            self._optimizer.prepare_state(state.optimizer_state, state.num_params)
        fresh = make_accumulator(config, state.num_params)
        if buffer is None:
            buffer = fresh
        elif not fresh.same_kind(buffer):
            raise ValueError(
                f"buffer is a {buffer.describe()} but the config needs a {fresh.describe()}"
            )
        self._state = state
        self._buffer = buffer
        self._work: FloatVector | None = None  # pseudo-gradient buffer, reused per close

    @property
    def config(self) -> AggregationConfig:
        return self._config

    @property
    def state(self) -> ModelState:
        """The current model state (in FedAsync, already including mixed-in updates)."""
        return self._state

    @property
    def buffer(self) -> Accumulator:
        """The open window; persist it with `to_bytes` alongside the state."""
        return self._buffer

    def staleness_of(self, update: ClientUpdate) -> int:
        return staleness(self._state.version, update.base_version)

    def staleness_weight(self, base_version: int) -> float:
        """s(current version - base_version): the discount of an update from that base
        (a sharded model's combine step applies it per base version)."""
        return self._staleness_weight(staleness(self._state.version, base_version))

    def weight(self, update: ClientUpdate) -> float:
        """Aggregation weight: s(staleness), times num_samples if `weight_by_samples`."""
        w = self.staleness_weight(update.base_version)
        return w * sample_weight(self._config.weight_by_samples, update.num_samples)

    def validate(self, update: ClientUpdate) -> Rejection | None:
        """Why `update` cannot be aggregated now (reason code for the DLQ), or None."""
        return validate_update(
            update,
            num_params=self._state.num_params,
            current_version=self._state.version,
            max_staleness=self._config.max_staleness,
        )

    def try_add(
        self, update: ClientUpdate, now: float, limits: InputLimits | None = None
    ) -> Rejection | None:
        """Validate then absorb `update` at clock `now`; returns the rejection if refused.

        `limits` adds the job's bounds on untrusted input (sample count, delta norm)."""
        checked = check_update(
            update,
            num_params=self._state.num_params,
            current_version=self._state.version,
            max_staleness=self._config.max_staleness,
            limits=limits,
        )
        if isinstance(checked, Rejection):
            return checked
        self._absorb(update, now, squared_norm=checked)
        return None

    def add(self, update: ClientUpdate, now: float) -> None:
        """Like `try_add`, but raises `UpdateRejectedError` for an invalid update."""
        rejection = self.try_add(update, now)
        if rejection is not None:
            raise UpdateRejectedError(rejection)

    def _absorb(self, update: ClientUpdate, now: float, *, squared_norm: float) -> None:
        delta = cast(FloatVector, update.delta)
        s = self.staleness_of(update)
        scale = clip_factor(squared_norm, self._config.clip_norm)
        if self._config.mode is Mode.FEDASYNC:
            alpha = self._config.fedasync_mixing * self._staleness_weight(s)
            base = self._state.history.get(update.base_version)
            if self._config.fedasync_rule is FedAsyncRule.MIX_WITH_BASE and (
                base is not None or s == 0
            ):
                self._state = self._mix_with_base(base, delta, alpha, scale)
            else:
                self._state = self._mix(delta, alpha * scale)
            weight = alpha
        else:
            weight = self.weight(update)
        self._buffer.add(
            delta,
            weight,
            update_id=update.update_id,
            device_id=update.device_id,
            staleness=s,
            num_samples=update.num_samples,
            now=now,
            scale=scale,
        )

    def _mix_with_base(
        self, base: FloatVector | None, delta: FloatVector, alpha: float, scale: float
    ) -> ModelState:
        """FedAsync, the paper's rule; the current params join the bounded history."""
        state = self._state
        scaled = delta if scale == 1.0 else np.multiply(delta, scale, dtype=np.float32)
        params = mix_with_base(state.params, state.params if base is None else base, scaled, alpha)
        keep = self._config.max_staleness
        assert keep is not None  # AggregationConfig refuses MIX_WITH_BASE without it
        history = prune_history(
            {**state.history, state.version: state.params}, state.version + 1, keep
        )
        return ModelState(params, state.version + 1, state.optimizer_state, history)

    def _mix(self, delta: FloatVector, multiplier: float) -> ModelState:
        """FedAsync: x <- x + multiplier * delta, in place when the state is private."""
        private = self._private_arrays()  # before binding the state to a local
        state = self._state
        if private is None:
            params = np.multiply(delta, multiplier, dtype=np.float32)
            params += state.params
            opt: Mapping[str, FloatVector] = state.optimizer_state
        else:
            params, opt = private
            if self._work is None:
                self._work = np.empty(state.num_params, dtype=np.float32)
            np.multiply(delta, multiplier, out=self._work)
            params += self._work
        return ModelState(params, state.version + 1, opt)

    def should_close(self, now: float) -> bool:
        """True if the open window must close at clock `now` (never when it is empty)."""
        return window_should_close(
            self.window_policy(), self._buffer.count, self._buffer.first_added_at, now
        )

    def closes_with_next(self, now: float) -> bool:
        """True if one more update absorbed at clock `now` would close the window (what
        `should_close` would say after it): the job saves a window it holds unsaved before
        such an update (`deferred_windows`)."""
        first = self._buffer.first_added_at
        return window_should_close(
            self.window_policy(), self._buffer.count + 1, now if first is None else first, now
        )

    def window_policy(self) -> WindowConfig:
        """The window in force: the configured one, with an adaptive window's current K."""
        window = self._config.window
        if not window.adaptive or self._state.concurrency is None:
            return window
        return replace(window, count=adaptive_count(self._state.concurrency))

    def deadline(self) -> float | None:
        """When a time/hybrid window closes (for a Flink timer); None if no timer needed."""
        return window_deadline(self._config.window, self._buffer.first_added_at)

    def close(self, rng: np.random.Generator | None = None) -> ClosedWindow:
        """Close the window: apply it (FedBuff) or snapshot (FedAsync); start a new one.

        `rng` draws the DP noise. Without one, the noise is seeded from
        (config.seed, new version) when a seed is configured, so a replayed window after
        recovery draws the same noise, and from OS entropy otherwise.

        The previous `ModelState` is never modified while anything outside this object
        can still reach it; if nothing can (the usual case in the job, which persists
        bytes), its arrays are reused in place for the new state instead of allocating
        params-sized arrays on every close (see `_private_arrays`).
        """
        buffer = self._buffer
        if buffer.count == 0:
            raise ValueError("cannot close an empty window (check should_close first)")
        lineage = buffer.lineage()
        if self._config.mode is Mode.FEDBUFF:
            assert isinstance(buffer, DeltaAccumulator)
            self._state = self._apply(buffer, rng, self._next_concurrency(buffer))
        buffer.clear()
        return ClosedWindow(self._state, lineage)

    def _next_concurrency(self, buffer: Accumulator) -> float | None:
        """An adaptive window's updated concurrency estimate (None: not adaptive)."""
        if not self._config.window.adaptive:
            return None
        mean_staleness = sum(buffer.stalenesses) / buffer.count
        estimate, _ = next_adaptive_count(self._state.concurrency, buffer.count, mean_staleness)
        return estimate

    def _apply(
        self,
        buffer: DeltaAccumulator,
        rng: np.random.Generator | None,
        concurrency: float | None,
    ) -> ModelState:
        num_params, version = self._state.num_params, self._state.version
        if self._work is None:
            self._work = np.empty(num_params, dtype=np.float32)
        pseudo_gradient = buffer.result(out=self._work)
        undiscounted = buffer.total_samples if self._config.weight_by_samples else buffer.count
        divisor = window_divisor(self._config.normalization, buffer.total_weight, undiscounted)
        if divisor > 0 and divisor != buffer.total_weight:
            # result() is the (robust) weighted mean, ~ sum / W; the divisor replaces W.
            pseudo_gradient *= np.float32(buffer.total_weight / divisor)
        z, clip = self._config.dp_noise_multiplier, self._config.clip_norm
        if z is not None and clip is not None and buffer.total_weight > 0:
            if rng is None:
                seed = self._config.seed
                rng = np.random.default_rng(None if seed is None else [seed, version + 1])
            # N(0, (zC)^2) on the weighted sum == N(0, (zC/D)^2) on the sum / divisor D.
            add_gaussian_noise(pseudo_gradient, noise_stddev(z, clip) / divisor, rng)
        private = self._private_arrays()  # before binding the state to a local
        if private is None:
            state = self._state
            params, opt = self._optimizer.step(state.params, pseudo_gradient, state.optimizer_state)
        else:
            params, opt = private
            if not opt:
                opt = dict(self._optimizer.prepare_state(opt, num_params))
            self._optimizer.step_in_place(params, pseudo_gradient, opt)
        return ModelState(params, version + 1, opt, concurrency=concurrency)

    def _private_arrays(self) -> tuple[FloatVector, dict[str, FloatVector]] | None:
        """The writable arrays behind `self._state` if no one else can reach them.

        Copy-on-write by reference count (the test numpy itself uses to reuse
        temporaries): the state object, its optimizer-state mapping and each array view
        must be referenced only by their container, and each view's memory owner only
        by the view. Any outside holder (a kept `ClosedWindow`, `state.params`, the array
        the state was built from) raises a count, and we allocate instead. Counts include
        this frame's references; `test_core_aggregator.py` pins every case.
        """
        if not _REFCOUNTS_RELIABLE:
            return None
        # self.__dict__ + getrefcount's argument
        if sys.getrefcount(self._state) != 2:
            return None
        state = self._state
        if sys.getrefcount(state.optimizer_state) != 2:  # the state's field + argument
            return None
        params = _owner_if_private(state.params)
        if params is None:
            return None
        opt: dict[str, FloatVector] = {}
        for key in list(state.optimizer_state):
            owner = _owner_if_private(state.optimizer_state[key])
            if owner is None:
                return None
            opt[key] = owner
        return params, opt


# CPython reference counts are exact in the versions the project supports; newer
# interpreters borrow references on the stack, which would make the counts unreliable.
_REFCOUNTS_RELIABLE = sys.implementation.name == "cpython" and sys.version_info < (3, 14)


def _owner_if_private(view: FloatVector) -> FloatVector | None:
    """The writable memory owner of `view` if only its container refers to `view`
    and only `view` refers to the owner, else None."""
    # container + this parameter + getrefcount's argument
    if sys.getrefcount(view) != 3:
        return None
    owner = view.base
    if (
        not isinstance(owner, np.ndarray)
        or not owner.flags.owndata
        or not owner.flags.writeable
        or owner.dtype != np.float32
        or owner.shape != view.shape
    ):
        return None
    # view.base + local `owner` + getrefcount's argument
    if sys.getrefcount(owner) != 3:
        return None
    return owner
