"""The registry join in the JVM (`io.fedstream.flink.DeviceJoin`) on the real job.

A registered device's updates skip the Python device gate: the join attaches the
device's newest registry record and the aggregate operator verifies the update against it
with the gate's own `authenticate`. What the join does not know goes through the gate as
before. Checked here: the join accepts only registry records the gate accepts; on a
mini-cluster it sends past the gate only the updates of devices whose newest record it
holds; in the whole job, a revoked key, a forged signature, an update before its device's
record and a broken re-registration end exactly as they do in the gate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyflink.common import Row, Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.java_gateway import get_gateway
from pyflink.util.java_utils import add_jars_to_context_class_loader

from fedstream.jobs.aggregation_job import _device_join, device_key_layout, flink_configuration
from fedstream.jobs.runtime import jar_url, job_jars
from fedstream.pipelines.flink_functions import ROUTED
from fedstream.schemas import CodecError, decode, encode
from fedstream.schemas.update_signing import RegisteredKey, RegistryEntryError
from tests.job.harness import Feed, JobOutput, absorbed, job_config, run_job
from tests.support.devices import DEVICES_TOPIC, device_key_bytes
from tests.support.onnx_models import linear_model
from tests.support.records import update_bytes

pytestmark = pytest.mark.flink

MAX_ID = 64
ONNX = linear_model()
#: what the test model's parameters take (`linear_model`: a 4x3 weight and 3 biases)
SIZE = 15


@pytest.fixture(scope="module")
def join() -> Any:
    add_jars_to_context_class_loader([jar_url(jar) for jar in job_jars()])
    jvm = get_gateway().jvm
    tag = jvm.org.apache.flink.util.OutputTag(
        "device-gate", jvm.org.apache.flink.api.common.typeinfo.Types.STRING
    )
    return jvm.io.fedstream.flink.DeviceJoin(tag, *device_key_layout(), MAX_ID)


def gate_accepts(value: bytes, device: str) -> bool:
    """Whether the gate takes `value` as `device`'s registry entry (`on_device_key`)."""
    try:
        entry = RegisteredKey.from_record(decode(value, expected="DeviceKey").record)
    except (CodecError, RegistryEntryError):
        return False
    return entry.device_id == device


def broken(device: str, **changes: Any) -> bytes:
    record: Any = decode(device_key_bytes(device)).record
    record.update(changes)
    return encode("DeviceKey", record)


def test_the_join_keeps_only_entries_the_gate_accepts(join: Any) -> None:
    good = device_key_bytes("dev-a")
    assert join.usable(good, "dev-a") and gate_accepts(good, "dev-a")
    revoked = device_key_bytes("dev-a", status="REVOKED")
    assert join.usable(revoked, "dev-a")  # kept: the aggregate refuses its updates
    refused = {
        "another device's record": (good, "dev-b"),
        "a short key": (broken("dev-a", public_key=b"short"), "dev-a"),
        "a key id not the key's": (broken("dev-a", key_id="0123456789abcdef"), "dev-a"),
        "garbage": (b"\xc3\x01" + bytes(20), "dev-a"),
        "an update": (update_bytes("m", "u", [0.5]), "device-0"),
    }
    for case, (value, device) in refused.items():
        assert not join.usable(value, device), case
        assert not gate_accepts(value, device) or case == "an update", case


def test_a_damaged_record_the_join_keeps_is_one_the_gate_keeps(join: Any) -> None:
    """Every byte of a registry record set to four values: stricter than the gate is safe
    (the gate path decides), laxer is not."""
    good = device_key_bytes("dev-h")
    kept = 0
    for at in range(len(good)):
        for byte in (0x00, 0x01, 0x02, 0x03, 0x7F, 0x80, 0xFF):
            value = bytearray(good)
            value[at] = byte
            if join.usable(bytes(value), "dev-h"):
                kept += 1
                assert gate_accepts(bytes(value), "dev-h"), (at, byte)
    assert kept > 0  # e.g. another created_at, or REVOKED for ACTIVE


def routed(value: bytes, device: str, model: str = "m", offset: int = 0) -> Row:
    """A ROUTED row as the pre-route makes it (kind from the topic the value is for)."""
    kind = "device" if decode(value).name == "DeviceKey" else "update"
    topic = DEVICES_TOPIC if kind == "device" else "fl.updates"
    return Row("" if kind == "device" else model, kind, value, topic, 0, offset, device)


def test_the_join_sends_only_known_devices_updates_past_the_gate(tmp_path: Path) -> None:
    """DeviceJoin alone on a mini-cluster: which rows skip the gate (kind "signed", with
    the record attached) and which go to it (every registry record; the updates of a
    device with no usable record; a fragment)."""
    key = device_key_bytes("known")
    rows = [
        routed(update_bytes("m", "early", [0.5], device_id="known"), "known"),
        routed(key, "known"),
        routed(update_bytes("m", "joined", [0.5], device_id="known"), "known", offset=1),
        routed(update_bytes("m", "fragment", [0.5], device_id="known"), "known", "", 2),
        routed(update_bytes("m", "stranger", [0.5], device_id="other"), "other"),
        routed(broken("known", key_id="0123456789abcdef"), "known", offset=1),
        routed(update_bytes("m", "after-broken", [0.5], device_id="known"), "known", offset=3),
    ]
    env = StreamExecutionEnvironment.get_execution_environment(
        flink_configuration(job_config(tmp_path), local=True)
    )
    env.set_parallelism(1)
    to_gate, joined = _device_join([env.from_collection(rows, type_info=ROUTED)], MAX_ID)
    where = to_gate.map(lambda r: f"gate {r[1]} {r[5]}", Types.STRING()).union(
        joined.map(lambda r: f"{r[1]} {r[5]} {bytes(r[7]) == key}", Types.STRING())
    )
    with where.execute_and_collect("device-join-routing") as results:
        seen = sorted(results)
    assert seen == sorted(
        [
            "gate update 0",  # early: no record yet
            "gate device 0",
            "signed 1 True",  # joined, with the device's record
            "gate update 2",  # a fragment (no model id until whole)
            "gate update 0",  # stranger
            "gate device 1",  # the broken record: to the gate, and forgotten here
            "gate update 3",  # after-broken: the gate's older entry decides
        ]
    )


@pytest.fixture(scope="module", params=[1, 2], ids=["unsharded", "two-shards"])
def joined(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> JobOutput:
    """One job: device-0's updates (sequenced, so that two shards sum them; one forged), a
    device revoked between two updates, a device whose first update comes before its
    registry record, and one whose newest record is broken. Twice: with one key per
    model, and with two shards, which verify the joined updates themselves."""
    tmp = tmp_path_factory.mktemp("device-join")
    feed = Feed()
    # count or time, whichever first (as in test_job_tier_shards): with two shards the
    # count a window reaches depends on when each shard's partial arrives, so a last window
    # short of the count is closed by its time bound within the final sleep
    feed.register("m", ONNX, {"window": {"count": 4, "seconds": 1.0}})
    forged: Any = decode(update_bytes("m", "forged", np.ones(SIZE))).record
    forged["num_samples"] = 99
    for i in range(7):
        feed.update("m", f"d{i}", np.full(SIZE, 0.1 * i), sequence=i)
    feed.raw(encode("GradientUpdate", forged))
    feed.update("m", "r0", np.ones(SIZE), device_id="rev")
    feed.device("rev", status="REVOKED")
    feed.update("m", "r1", np.ones(SIZE), device_id="rev")
    feed.raw(update_bytes("m", "late0", np.ones(SIZE), device_id="late"))  # waits in the gate
    feed.device("late")
    feed.update("m", "late1", np.ones(SIZE), device_id="late")
    feed.update("m", "b0", np.ones(SIZE), device_id="brk")
    feed.raw(broken("brk", key_id="0123456789abcdef"), DEVICES_TOPIC)
    feed.update("m", "b1", np.ones(SIZE), device_id="brk")  # the gate's older entry decides
    feed.sleep(3.0)
    config = job_config(tmp, **{"runtime.model_shards": request.param})
    return run_job(feed, config, name="device-join")


def test_joined_updates_are_verified_and_absorbed(joined: JobOutput) -> None:
    assert sorted(absorbed(joined, "m")) == sorted(
        [f"d{i}" for i in range(7)] + ["r0", "late0", "late1", "b0", "b1"]
    )
    refused = {
        d["update_id"] or "": d for d in joined.dead_letters if d["reason"] == "UNAUTHENTICATED"
    }
    assert sorted(refused) == ["forged", "r1"]
    assert "does not verify" in refused["forged"]["detail"]
    assert "revoked" in refused["r1"]["detail"] and "'rev'" in refused["r1"]["detail"]
    assert all(d["model_id"] == "m" for d in refused.values())
    bad_fields = [d for d in joined.dead_letters if d["reason"] == "BAD_FIELD"]
    assert [d["source_topic"] for d in bad_fields] == [DEVICES_TOPIC]  # the broken record
