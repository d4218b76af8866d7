"""The JVM's pre-route (`io.fedstream.flink.UpdateRouter`) against the Python codec.

The router keys an update (a device key) from its header and first Avro strings without
decoding the rest. It must never key a record differently from what the full decode says,
and must leave everything it cannot read plainly to the Python route (kind "raw"). Checked
here on the real class, through PyFlink's JVM gateway, for random ids and for records
damaged anywhere in their first bytes; the job tier's scenarios
(`test_job_tier_scenarios.plan_header_damage`) run the same damage through the whole job.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader
from hypothesis import given, settings
from hypothesis import strategies as st
from pyflink.java_gateway import get_gateway
from pyflink.util.java_utils import add_jars_to_context_class_loader

from fedstream.jobs.aggregation_job import _leading_strings
from fedstream.jobs.devices import InMemoryDevices
from fedstream.jobs.runtime import jar_url, job_jars
from fedstream.schemas import HEADER_SIZE, decode, default_registry, encode
from fedstream.schemas.fragments import FRAGMENT, encoded_fragments
from tests.support.devices import device_key_bytes
from tests.support.records import update_record

pytestmark = pytest.mark.flink

UPDATES, DEVICES, CONTROL = "fl.updates", "fl.devices", "fl.control"
MAX_ID = 16
#: a reader of just the leading ids: what the router must agree with
IDS = parse_schema(
    {
        "type": "record",
        "name": "Ids",
        "fields": [{"name": n, "type": "string"} for n in ("update_id", "device_id", "model_id")],
    }
)
ids_text = st.text(st.characters(codec="utf-8"), max_size=8)


@pytest.fixture(scope="module")
def router() -> Any:
    add_jars_to_context_class_loader([jar_url(jar) for jar in job_jars()])
    return get_gateway().jvm.io.fedstream.flink.UpdateRouter(
        UPDATES,
        _leading_strings("GradientUpdate", ("update_id", "device_id", "model_id")),
        _leading_strings("RecordFragment", ("record_id", "signer")),
        DEVICES,
        _leading_strings("DeviceKey", ("device_id",)),
        MAX_ID,
    )


def keys(router: Any, value: bytes, topic: str = UPDATES) -> tuple[str, str, str]:
    kind, model_id, device_id = router.keys(value, topic)
    return str(kind), str(model_id), str(device_id)


def reference(value: bytes) -> tuple[str, str, str]:
    """What the router must say of a value on the updates topic, from fastavro."""
    known = {default_registry().get("GradientUpdate").header}
    known |= {v.header for v in default_registry().history("GradientUpdate")}
    if value[:HEADER_SIZE] not in known:
        return ("raw", "", "")
    try:
        ids = schemaless_reader(io.BytesIO(value[HEADER_SIZE:]), IDS, None)
    except Exception:
        return ("raw", "", "")
    assert isinstance(ids, dict)
    fits = all(len(str(ids[k]).encode()) <= MAX_ID for k in ids)
    if not fits or not ids["model_id"]:
        return ("raw", "", "")
    return ("update", str(ids["model_id"]), str(ids["device_id"]))


def update(model_id: str, device_id: str, update_id: str = "u") -> bytes:
    record: Any = update_record(model_id, update_id, [0.5, 1.5], device_id=device_id)
    return encode("GradientUpdate", record)


def test_every_update_version_with_leading_ids_is_taken() -> None:
    """All GradientUpdate versions start with the three ids, so none falls back by mistake."""
    taken = _leading_strings("GradientUpdate", ("update_id", "device_id", "model_id"))
    assert len(taken.split(",")) == 1 + len(default_registry().history("GradientUpdate"))
    assert len(_leading_strings("DeviceKey", ("device_id",)).split(",")) >= 1


@settings(max_examples=200, deadline=None)
@given(model_id=ids_text, device_id=ids_text, update_id=ids_text)
def test_ids_are_read_as_the_codec_reads_them(
    router: Any, model_id: str, device_id: str, update_id: str
) -> None:
    value = update(model_id, device_id, update_id)
    assert keys(router, value) == reference(value)


@settings(max_examples=300, deadline=None)
@given(
    model_id=ids_text,
    at=st.integers(0, 40),
    junk=st.binary(min_size=1, max_size=4),
    cut=st.booleans(),
)
def test_damaged_headers_never_key_wrongly(
    router: Any, model_id: str, at: int, junk: bytes, cut: bool
) -> None:
    value = update(model_id, "device-0")
    damaged = value[:at] if cut else value[:at] + junk + value[at + len(junk) :]
    assert keys(router, damaged) == reference(damaged)


def test_other_topics_and_records_go_to_the_python_route(router: Any) -> None:
    value = update("m", "device-0")
    assert keys(router, value, CONTROL) == ("raw", "", "")
    assert keys(router, value, DEVICES) == ("raw", "", "")  # an update is no device key
    assert keys(router, b"") == ("raw", "", "")
    assert keys(router, update("m" * (MAX_ID + 1), "d")) == ("raw", "", "")
    assert keys(router, update("m", "d" * (MAX_ID + 1))) == ("raw", "", "")
    assert keys(router, update("m", "")) == ("update", "m", "")  # the gate refuses it


def test_device_keys_are_keyed_by_their_device_id(router: Any) -> None:
    value = device_key_bytes("device-7")
    assert keys(router, value, DEVICES) == ("device", "", "device-7")
    assert keys(router, value, UPDATES) == ("raw", "", "")


def test_fragments_of_large_updates_are_keyed_by_their_signer(router: Any) -> None:
    """A fragment goes to its signer's gate, which verifies it and puts the update back
    together; one with an empty or too long signer or record id goes to the Python route."""
    key = InMemoryDevices().signer("device-3")
    _count, pieces = encoded_fragments(
        bytes(3000), 1000, record_id="u-1", signer="device-3", key=key
    )
    first = next(pieces)
    assert keys(router, first) == ("update", "", "device-3")
    assert keys(router, first, CONTROL) == ("raw", "", "")
    record = decode(first, expected=FRAGMENT).record
    for record_id, signer in (("", "device-3"), ("u-1", ""), ("u" * (MAX_ID + 1), "d")):
        bad = encode(FRAGMENT, {**record, "record_id": record_id, "signer": signer})
        assert keys(router, bad) == ("raw", "", ""), (record_id, signer)
