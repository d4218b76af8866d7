"""Bounds on every field a device or model owner controls, checked where a record enters.

Why: a field that is only checked for its type can still stop the job. Two well-formed
updates with `num_samples` near 2**62 made the release lineage's sum leave the Avro long
range, so encoding the release raised inside the operator, Flink restarted on the same
records until it gave up, and every model stopped. A bound at the entrance turns such a
record into one dead letter; the sums stay far inside their types (`check_sums_fit`
proves the margins for the configured bounds, so the job refuses to start with
bounds that could overflow).

The defaults are generous for real fleets and tight for the types:
- ids (model_id, update_id, device_id) of at most 256 bytes of UTF-8: a key, a state entry
  and a lineage entry each; a release lists every id of its window;
- `num_samples` in [1, 10**9]: a window of `max_window_updates` updates sums to at most
  10**13, far below 2**63 (Avro long) and exact in a float64 weight;
- a delta's L2 norm of at most 10**6 (parameter deltas are usually well below 10): with
  sample weights of at most 10**9, every term of the float32 running sum stays below
  10**15 and the sum of a full window below 10**20, far from float32's 3.4e38, and the
  squared gradients in Adam/Yogi's moments stay below 10**12;
- `max_window_updates` 10,000: every window closes by then, whatever its kind (a time
  window could otherwise collect without bound), so a release's lineage stays a few MB;
- `max_models` 1,000 registered models per job: keyed state grows with it;
- `max_devices_per_model` 100,000 devices with a sequence window per model: each window
  is 8 + runtime.sequence_window / 8 bytes (136 at the default 1024) plus its device id,
  so one model's windows stay below about 40 MB (`sequence_window.py`);
- `sequence` in [0, 10**15]: a device sending 1,000 updates a second needs 30,000 years
  to reach it, and every sequence difference stays far inside an int64;
- a fragmented record (`fedstream.schemas.fragments`: an update or registration too large
  for one Kafka record) of at most `max_record_bytes` (256 MiB: a 10M-parameter model's
  40 MB update six times over, and a registration with its template and initial weights)
  in at most `max_fragments` pieces (1,024): both are checked at a record's first
  fragment, from what it declares, before anything is stored, so one device's assembly
  in flight never holds more than `max_record_bytes` of job state, and a record cut into
  tiny pieces cannot make the job keep thousands of state entries for it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["InputLimits", "check_sums_fit"]

_AVRO_LONG_MAX = 2**63 - 1
_FLOAT32_MAX = 3.4028234663852886e38
_INT_LIMITS = (
    "max_id_length",
    "max_num_samples",
    "max_window_updates",
    "max_models",
    "max_devices_per_model",
    "max_sequence",
    "max_record_bytes",
    "max_fragments",
)


@dataclass(frozen=True, slots=True)
class InputLimits:
    """The job's bounds on untrusted input (see the module docstring for the why)."""

    max_id_length: int = 256
    max_num_samples: int = 10**9
    max_delta_norm: float = 1e6
    max_window_updates: int = 10_000
    max_models: int = 1_000
    max_devices_per_model: int = 100_000
    max_sequence: int = 10**15
    max_record_bytes: int = 256 * 1024 * 1024
    max_fragments: int = 1024

    def __post_init__(self) -> None:
        for name in _INT_LIMITS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"limits.{name} must be an int >= 1, got {value!r}")
        norm = self.max_delta_norm
        if isinstance(norm, bool) or not isinstance(norm, int | float) or not 0 < norm < 1e15:
            raise ValueError(f"limits.max_delta_norm must be in (0, 1e15), got {norm!r}")
        check_sums_fit(self)

    def id_problem(self, field: str, value: str, *, required: bool = True) -> str | None:
        """Why the id `value` of `field` is out of bounds (too long, or empty when
        `required`), or None."""
        if not value and required:
            return f"{field} is empty"
        size = len(value.encode())
        if size > self.max_id_length:
            return f"{field} has {size} bytes of UTF-8 (limit {self.max_id_length})"
        return None

    def sequence_problem(self, sequence: int | None) -> str | None:
        """Why an update's `sequence` is out of bounds, or None (null is allowed)."""
        if sequence is not None and not 0 <= sequence <= self.max_sequence:
            return f"sequence {sequence} is outside [0, {self.max_sequence}]"
        return None


def check_sums_fit(limits: InputLimits) -> None:
    """Raise ValueError if a full window at these bounds could overflow a sum's type.

    The lineage's `num_samples` is an Avro long; the running weighted sum of deltas is
    float32, with each element of a term at most weight x norm.
    """
    samples = limits.max_window_updates * limits.max_num_samples
    if samples > _AVRO_LONG_MAX:
        raise ValueError(
            f"limits: max_window_updates x max_num_samples = {samples} exceeds the Avro "
            "long range of a release's num_samples"
        )
    weighted = float(samples) * limits.max_delta_norm
    if weighted > _FLOAT32_MAX / 1e6:  # keep six orders of magnitude of headroom
        raise ValueError(
            f"limits: a full window could sum to {weighted:.3g}, too close to the float32 "
            "range; lower max_delta_norm, max_num_samples or max_window_updates"
        )
