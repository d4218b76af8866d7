"""The chaos campaign (`make chaos`) in its short form: four faults, a few hundred updates.

A stack of its own (three brokers with RF 3 / min ISR 2, Terraform's principals, a Flink
JobManager and two TaskManagers) runs the job submitted with `flink run`; devices send
through the SDK while a TaskManager is SIGKILLed before the first checkpoint, the
JobManager is SIGKILLed as a checkpoint commits (restarted, the job resubmitted from its
retained checkpoint), a broker is SIGKILLed and restarted, and a device dies between an
ack and its persisted round. The independent oracle (bench/chaos/oracle.py) must then find
nothing lost, nothing doubled, contiguous versions and parameters equal to its numpy
recomputation; and every fault must be followed by a completed checkpoint. About 6 minutes
on a loaded 2-core machine, most of it the stack's start and the JobManager's recovery.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.chaos.campaign import Campaign, Settings
from bench.chaos.report import markdown, passed, write
from bench.chaos.stack import Ports

# a stack of its own and a JobManager recovery: past the suite's 900 s on a loaded machine
pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow, pytest.mark.timeout(1800)]


def test_short_chaos_campaign_loses_and_doubles_nothing(tmp_path: Path) -> None:
    ports = Ports(
        # clear of the session broker (+0/+1) and the multi-node test (+10..+15)
        kafka=int(os.environ.get("FEDSTREAM_TEST_KAFKA_PORT", "19092")) + 20,
        flink_rest=int(os.environ.get("FEDSTREAM_TEST_FLINK_REST_PORT", "18081")) + 1,
        flink_rpc=int(os.environ.get("FEDSTREAM_TEST_FLINK_RPC_PORT", "16123")) + 1,
    )
    settings = Settings(
        updates=300,
        faults=4,
        devices=3,
        rate=3.0,
        seed=3,
        gap_s=(2.0, 4.0),
        kinds=("jobmanager", "broker", "device_crash"),
        drain_timeout_s=180,
    )
    result = Campaign(tmp_path / "stack", ports, settings).run()
    json_path, md_path = write(result, tmp_path / "results")
    verdict = result["verdict"]
    summary = f"{md_path.read_text()}\n{json.dumps(verdict, indent=1)}"

    kinds = [(e["kind"], e["trigger"]) for e in result["faults"]]
    assert kinds[0] == ("taskmanager", "before_first_checkpoint"), summary
    assert {k for k, _ in kinds} == {"taskmanager", "jobmanager", "broker", "device_crash"}
    assert ("jobmanager", "after_complete") in kinds, summary
    assert result["faults"][0]["observed"] == "completed checkpoints: 0", summary
    assert verdict["sent"] >= 300
    assert verdict["lost"] == 0 and verdict["doubled"] == 0, summary
    assert verdict["versions_contiguous"] and verdict["versions"] > 10, summary
    assert verdict["params_equal"], summary
    assert verdict["conflicting_copies"] == 0 and verdict["absorbed_without_record"] == 0
    # the device that died after an ack re-sent the same id: on the topic twice, absorbed once
    crash = next(e for e in result["faults"] if e["kind"] == "device_crash")
    assert crash["detail"].endswith("True"), summary
    assert verdict["resent_ids"] >= 1 and verdict["resent_absorbed_once"] >= 1, summary
    assert verdict["refused_by_reason"].get("DUPLICATE", 0) >= 1, summary
    assert result["recovery_s"]["unrecovered"] == 0, summary
    assert passed(result) and "PASS" in markdown(result)
    # every device is registered and every update signed: nothing UNAUTHENTICATED; the
    # devices send sequences, so refusals are re-sends (DUPLICATE by sequence) and at most
    # re-sends below a device's window (SEQUENCE_TOO_OLD, bookkeeping); no STALE at all
    # (the registration sets no max_staleness, and no dedupe horizon applies any more)
    assert set(verdict["refused_by_reason"]) <= {"DUPLICATE", "SEQUENCE_TOO_OLD"}, summary
    assert verdict["stale_bookkeeping"] == 0, summary
    assert verdict["bookkeeping_refused_fraction"] <= 0.01, summary
    # the schedule is seeded and recorded
    assert json.loads(json_path.read_text())["schedule"] == result["schedule"]
