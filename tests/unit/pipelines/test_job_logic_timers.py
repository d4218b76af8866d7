"""The contract between the Flink shell's processing-time timers (integer milliseconds) and
`ModelProcess` windows (float seconds): the timer registered for a window's deadline must
close that window when it fires, whatever the float rounding of ms / 1000.

(The shell used to truncate the deadline to milliseconds; for about 1 window in 25 the
timer's time was then just before the deadline, the window stayed open and the same past
timer was registered again and refired in a loop until the next record arrived.)
"""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fedstream.pipelines.flink_functions import timer_millis
from fedstream.pipelines.model_process import Envelope, ModelProcess
from tests.support.onnx_models import linear_model
from tests.support.records import CONTROL_TOPIC, UPDATES_TOPIC, registration_bytes, update_bytes

ONNX = linear_model()


@settings(max_examples=300, deadline=None)
@given(
    first_ms=st.integers(1_600_000_000_000, 2_000_000_000_000),
    seconds=st.one_of(st.sampled_from([0.3, 0.5, 1.0, 1.5, 2.0]), st.floats(0.001, 3600.0)),
)
@example(first_ms=1_767_225_600_123, seconds=0.3)
@example(first_ms=1_673_412_706_049, seconds=1.9)  # deadline * 1000 rounds down
def test_the_timer_for_a_deadline_closes_the_window(first_ms: int, seconds: float) -> None:
    process = ModelProcess(16 << 20, 8)
    registration = registration_bytes("m", ONNX, {"window": {"count": None, "seconds": seconds}})
    process.on_registration(Envelope(registration, CONTROL_TOPIC, 0, 0))
    now = first_ms / 1000.0  # what the shell passes: current_processing_time() / 1000
    update = update_bytes("m", "u", np.ones(15, np.float32))
    assert process.on_update(Envelope(update, UPDATES_TOPIC, 0, 0), now) == []
    deadline = process.deadline()
    assert deadline is not None
    millis = timer_millis(deadline)
    assert millis / 1000.0 >= deadline
    assert (millis - 1) / 1000.0 < deadline  # the millisecond before would be too early
    assert [o.kind for o in process.on_timer(millis / 1000.0)] == ["release"]
