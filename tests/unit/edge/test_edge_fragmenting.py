"""The SDK sends records larger than their topic in signed fragments (`send_record`).

No broker: a `RecordProducer` whose topic limit is small and whose `send` records what
it would produce. A record that fits goes out whole; a larger update goes out as signed
fragments with the model's key that the job's assembler puts back into the very bytes
`EdgeClient.send_update` encoded; no key, or more than `max_fragments` pieces, is
`PayloadTooLargeError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedstream.edge import EdgeClient, EdgeConfig
from fedstream.edge.errors import PayloadTooLargeError
from fedstream.edge.producer import Delivery, RecordProducer
from fedstream.edge.security import KafkaSecurity
from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.model_process import Envelope
from fedstream.pipelines.reassembly import DictFragmentStore, Reassembler
from fedstream.schemas import decode
from fedstream.schemas.fragments import is_fragment
from fedstream.schemas.signing import TrustedKeys, load_signing_key, write_key_pair
from fedstream.schemas.update_signing import DEVICE_KEY_NAME

LIMIT = 50_000
PLAIN = KafkaSecurity(protocol="PLAINTEXT")


class FakeProducer(RecordProducer):
    """`RecordProducer` without Kafka: a fixed topic limit, sends kept in a list."""

    def __init__(self, config: EdgeConfig) -> None:  # no super(): no broker
        self.config = config
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    def limit(self, topic: str) -> int:
        return LIMIT

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> Delivery:
        size = len(value) + len(key or b"")
        if size > LIMIT:  # as the real producer: refused before anything is sent
            raise PayloadTooLargeError(f"record of {size} bytes", size=size, limit=LIMIT)
        self.sent.append((topic, value, key))
        return Delivery(topic, 0, len(self.sent) - 1)


@pytest.fixture
def device_key(tmp_path: Path) -> Path:
    private, _public, _ = write_key_pair(tmp_path, DEVICE_KEY_NAME)
    return private


def client(key: Path | None, **config: Any) -> tuple[EdgeClient, FakeProducer]:
    edge = EdgeConfig(security=PLAIN, device_key_file=key, trusted_keys=TrustedKeys(), **config)
    device = EdgeClient(edge, device_id="dev-1", model_id="big")
    producer = FakeProducer(edge)
    device._producer = producer
    return device, producer


def test_a_small_update_goes_out_whole(device_key: Path) -> None:
    device, producer = client(device_key)
    device.send_update(np.ones(100), base_version=0, num_samples=1)
    ((_, value, key),) = producer.sent
    assert key == b"big" and not is_fragment(value)


def test_a_large_update_goes_out_in_signed_fragments_that_reassemble(device_key: Path) -> None:
    device, producer = client(device_key)
    sent = device.send_update(np.arange(40_000), base_version=0, num_samples=3)
    assert len(producer.sent) == sent.size // LIMIT + 1 >= 4
    assert all(is_fragment(v) and k == b"big" for _, v, k in producer.sent)
    assert sent.delivery.offset == len(producer.sent) - 1  # the last fragment's
    signer = load_signing_key(device_key)
    public = signer.key.public_key()
    assembler, store, assembly = Reassembler(InputLimits()), DictFragmentStore(), None
    for offset, (topic, value, _) in enumerate(producer.sent):
        taken = assembler.take(assembly, Envelope(value, topic, 0, offset), lambda _: public, store)
        assert not taken.letters
        assembly = taken.assembly
    assert taken.whole is not None
    update = decode(taken.whole.value, expected="GradientUpdate").record
    assert update["update_id"] == sent.update_id and update["num_samples"] == 3
    assert len(taken.whole.value) == sent.size


def test_no_key_or_too_many_fragments_is_too_large(device_key: Path) -> None:
    unsigned, _ = client(None)
    with pytest.raises(PayloadTooLargeError, match=r"configure a key .* signed fragments"):
        unsigned.send_update(np.ones(40_000), base_version=0, num_samples=1)
    bounded, producer = client(device_key, max_fragments=2)
    with pytest.raises(PayloadTooLargeError, match="max_fragments 2"):
        bounded.send_update(np.ones(40_000), base_version=0, num_samples=1)
    assert producer.sent == []
    assert bounded.rounds.current("big") == 0  # nothing advanced: the same update again
