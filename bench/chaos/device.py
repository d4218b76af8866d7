"""One simulated device of the campaign, as a process of its own (so it can be SIGKILLed).

    python -m bench.chaos.device --device-id d3 --state DIR --model-id M --params 36 ...

It uses the SDK as a device does (`EdgeClient`: idempotent producer, deterministic update
ids from the persisted `RoundCounter`, the round sent as the update's `sequence` (the job
recognises a re-send by it), every update signed with the device's registered key
(--device-key, registered by the operator before the device starts), signed releases
verified before use) and sends
synthetic deltas, so the machine's CPU goes to the faults rather than to training. What
makes a restarted device re-send *the same* update is kept in DIR:

* rounds.json  the SDK's RoundCounter (advanced only after the broker's ack);
* pending.json the base version of the round in flight, written before it is sent: the
  update id is a function of (device, model, base version, round), and the delta and
  sample count are drawn from (seed, device, round), so the re-send is byte for byte the
  same update (but for created_at);
* acked.jsonl  one line per acknowledged update (what the oracle calls *sent*).

A file DIR/crash-after-ack makes the device SIGKILL itself inside `RoundCounter.advance`,
after the broker acknowledged the update but before the new round was persisted: the
crash the deterministic ids exist for. DIR/stop ends the device after its current send.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedstream.edge import EdgeClient, EdgeConfig
from fedstream.edge.errors import EdgeError
from fedstream.edge.identity import RoundCounter

CRASH_MARK = "crash-after-ack"
STOP_MARK = "stop"


class CrashingRoundCounter(RoundCounter):
    """The SDK's counter, which dies (SIGKILL) on `advance` while the crash mark exists."""

    def __init__(self, path: Path, mark: Path) -> None:
        super().__init__(path)
        self._mark = mark

    def advance(self, model_id: str) -> int:
        if self._mark.exists():
            self._mark.unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().advance(model_id)


def update_content(
    seed: int, device_id: str, round_index: int, size: int
) -> tuple[npt.NDArray[np.float32], int]:
    """The delta and sample count of one round: a pure function, so a re-send is the same."""
    rng = np.random.default_rng([seed, zlib.crc32(device_id.encode()), round_index])
    return rng.normal(scale=0.01, size=size).astype(np.float32), int(rng.integers(1, 50))


def run(args: argparse.Namespace) -> int:
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    config = EdgeConfig(
        bootstrap=args.bootstrap,
        updates_topic=args.updates_topic,
        control_topic=args.control_topic,
        models_topic=args.models_topic,
        dlq_topic=args.dlq_topic,
        send_timeout_s=20.0,
        retries=10,
        device_key_file=args.device_key,
    )
    # sequenced: the persisted round is the update's sequence, so the job recognises a
    # re-send by it (DUPLICATE) with no staleness cut
    client = EdgeClient(
        config, device_id=args.device_id, model_id=args.model_id, install_sessions=False,
        sequenced=True,
    )  # fmt: skip
    client.rounds = CrashingRoundCounter(state / "rounds.json", state / CRASH_MARK)
    pending_file, acked = state / "pending.json", state / "acked.jsonl"
    release = None
    while release is None:  # a broker outage at start: wait it out, as a device would
        try:
            release = client.wait_for_model(timeout_s=300)
        except EdgeError as error:
            print(f"{args.device_id}: no model yet ({error})", file=sys.stderr, flush=True)
            client.disconnect()
            time.sleep(1.0)
    period = 1.0 / args.rate
    with acked.open("a", encoding="utf-8") as log:
        while not (state / STOP_MARK).exists():
            started = time.monotonic()
            round_index = client.rounds.current(args.model_id)
            pending = json.loads(pending_file.read_text()) if pending_file.exists() else None
            if pending is not None and pending["round"] == round_index:
                base = int(pending["base_version"])  # the round in flight when we died
            else:
                try:
                    release = client.refresh(0.0) or release
                except EdgeError as error:
                    print(f"{args.device_id}: no refresh ({error})", file=sys.stderr, flush=True)
                base = release.version
                tmp = pending_file.with_suffix(".tmp")
                tmp.write_text(json.dumps({"round": round_index, "base_version": base}))
                os.replace(tmp, pending_file)
            delta, samples = update_content(args.seed, args.device_id, round_index, args.params)
            try:
                sent = client.send_update(delta, base_version=base, num_samples=samples)
            except EdgeError as error:  # an outage: the next loop re-sends the same round
                print(f"{args.device_id}: send failed ({error})", file=sys.stderr, flush=True)
                time.sleep(1.0)
                continue
            log.write(json.dumps({"update_id": sent.update_id, "round": round_index}) + "\n")
            log.flush()
            time.sleep(max(0.0, period - (time.monotonic() - started)))
    client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device-id", required=True)
    parser.add_argument("--state", required=True, help="the device's persistent folder")
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--device-key", required=True, help="its registered Ed25519 key (PEM)")
    parser.add_argument("--params", type=int, required=True, help="size of the flat delta")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=5.0, help="updates per second at most")
    parser.add_argument("--bootstrap", required=True)
    for topic in ("updates", "control", "models", "dlq"):
        parser.add_argument(f"--{topic}-topic", default=f"fl.{topic}")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
