"""Clear, typed errors for what can go wrong on a device, raised before damage is done."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest

from fedstream.edge import (
    BrokerUnavailableError,
    EdgeClient,
    EdgeConfig,
    EdgeError,
    KafkaSecurity,
    PayloadTooLargeError,
    RecordProducer,
    ReleaseReader,
)
from fedstream.edge.producer import topic_max_message_bytes
from fedstream.schemas.signing import write_key_pair


def free_port() -> int:
    """A local port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def nowhere() -> EdgeConfig:
    return EdgeConfig(
        bootstrap=f"127.0.0.1:{free_port()}",
        connect_timeout_s=1.0,
        security=KafkaSecurity.plaintext(),  # nothing listens: only reachability is tested
    )


def test_unreachable_broker_for_the_producer(nowhere: EdgeConfig) -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match="no Kafka broker answered"):
        RecordProducer(nowhere)
    assert time.monotonic() - started < 10


def test_unreachable_broker_for_the_reader_and_topic_lookup(nowhere: EdgeConfig) -> None:
    with pytest.raises(BrokerUnavailableError):
        ReleaseReader(nowhere, "m")
    with pytest.raises(BrokerUnavailableError):
        topic_max_message_bytes(nowhere, "fl.updates")


def test_unreachable_broker_for_the_client(nowhere: EdgeConfig) -> None:
    with EdgeClient(nowhere, device_id="d", model_id="m") as client:
        with pytest.raises(EdgeError):  # a subclass; callers can catch the family
            client.wait_for_model(timeout_s=1)
        with pytest.raises(BrokerUnavailableError):
            client.send_update(np.zeros(3), base_version=0, num_samples=1)
        assert client.rounds.current("m") == 0  # nothing advanced


def test_bad_updates_fail_before_touching_the_network(nowhere: EdgeConfig) -> None:
    client = EdgeClient(nowhere, device_id="d", model_id="m")
    with pytest.raises(ValueError, match="num_samples"):
        client.send_update(np.zeros(3), base_version=0, num_samples=0)
    with pytest.raises(ValueError, match="NaN"):
        client.send_update(np.array([1.0, np.nan]), base_version=0, num_samples=3)


def test_payload_error_carries_the_numbers() -> None:
    error = PayloadTooLargeError("too big", size=10, limit=5)
    assert (error.size, error.limit) == (10, 5) and isinstance(error, EdgeError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bootstrap": "localhost"},
        {"bootstrap": "host:port"},
        {"models_topic": ""},
        {"send_timeout_s": 0},
        {"retries": -1},
        {"compression_type": "brotli"},
        {"max_request_size": 0},
    ],
)
def test_config_is_validated(kwargs: dict[str, object]) -> None:
    # valid security, so that the field under test is what gets refused
    EdgeConfig(security=KafkaSecurity.plaintext())
    with pytest.raises(ValueError) as refused:
        EdgeConfig(security=KafkaSecurity.plaintext(), **kwargs)  # type: ignore[arg-type]
    assert "security" not in str(refused.value).lower()


def test_client_needs_ids(nowhere: EdgeConfig) -> None:
    with pytest.raises(ValueError):
        EdgeClient(nowhere, device_id="", model_id="m")


def test_owner_key_file_is_loaded_once_and_checked(tmp_path: Path) -> None:
    private, public, key_id = write_key_pair(tmp_path, "owner-signing")
    config = EdgeConfig(security=KafkaSecurity.plaintext(), owner_key_file=private)
    assert config.owner_signer is not None and config.owner_signer.key_id == key_id
    assert "PRIVATE" not in repr(config)
    for wrong in (public, tmp_path / "missing.key"):
        with pytest.raises(ValueError, match=r"owner_key_file: .*fedstream keygen --owner"):
            EdgeConfig(security=KafkaSecurity.plaintext(), owner_key_file=wrong)
