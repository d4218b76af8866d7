"""`fedstream register` of a registration larger than the control topic takes: its
signed fragments (`cli._registration_values`), which the job's assembler puts back into
the very bytes; unsigned, or beyond `limits.max_fragments`, it says why instead."""

from __future__ import annotations

from fedstream.jobs import cli
from fedstream.jobs.config import load
from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.model_process import Envelope
from fedstream.pipelines.reassembly import DictFragmentStore, Reassembler
from fedstream.schemas.fragments import is_fragment
from tests.support.owner_key import owner_signer

VALUE = b"\xc3\x01" + bytes(range(256)) * 1000  # 256 KB
LIMIT = {"topics.updates_max_message_bytes": 70_000}


def test_a_small_registration_goes_out_whole() -> None:
    config = load(overrides={})
    assert cli._registration_values(config, VALUE, b"m", "m", owner_signer()) == [VALUE]


def test_a_large_registration_goes_out_in_owner_signed_fragments() -> None:
    config = load(overrides=LIMIT)
    values = cli._registration_values(config, VALUE, b"m", "m", owner_signer())
    assert isinstance(values, list) and len(values) == 4
    assert all(is_fragment(v) and len(v) <= 70_000 - 1024 for v in values)
    public = owner_signer().key.public_key()
    assembler, store, assembly = Reassembler(InputLimits(), "model_id"), DictFragmentStore(), None
    for offset, value in enumerate(values):
        envelope = Envelope(value, "fl.control", 0, offset)
        taken = assembler.take(assembly, envelope, lambda _: public, store)
        assembly = taken.assembly
    assert taken.whole is not None and taken.whole.value == VALUE


def test_unsigned_or_too_many_fragments_say_why() -> None:
    config = load(overrides=LIMIT)
    assert "unsigned" in str(cli._registration_values(config, VALUE, b"m", "m", None))
    bounded = load(overrides={**LIMIT, "limits.max_fragments": 3})
    assert "limit 3" in str(cli._registration_values(bounded, VALUE, b"m", "m", owner_signer()))
