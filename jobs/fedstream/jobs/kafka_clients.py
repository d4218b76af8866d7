"""The job side's Kafka clients (topic setup, CLI, tools), logged in from ``[kafka]``.

One way to build them, so that every client authenticates with the config's principal
(`KafkaConfig.security`) and a refused login fails at once with a message that names what
to check (`fedstream.edge.connection`), instead of kafka-python's bootstrap timeout.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

from fedstream.edge.connection import check_broker, open_kafka_client
from fedstream.edge.errors import BrokerUnavailableError
from fedstream.jobs.config import JobConfig

__all__ = ["check_kafka", "kafka_client"]

T = TypeVar("T")

#: Seconds a job-side client waits for its first broker answer.
CONNECT_TIMEOUT_S = 30.0


def kafka_client(factory: Callable[..., T], config: JobConfig, *, what: str, **settings: Any) -> T:
    """A kafka-python client (`factory`: KafkaProducer, KafkaConsumer, KafkaAdminClient)
    on the config's brokers, as the config's principal."""
    return open_kafka_client(
        factory,
        config.kafka.bootstrap,
        config.kafka.security(),
        timeout_s=CONNECT_TIMEOUT_S,
        what=what,
        bootstrap_timeout_ms=int(CONNECT_TIMEOUT_S * 1000),
        **settings,
    )


def check_kafka(config: JobConfig, timeout_s: float = 10.0) -> None:
    """Log in once before Flink starts, so bad credentials fail here and say why.

    Raises `AuthenticationError` (and `ConfigError` for missing files). A broker that is
    not reachable from here is only reported: the job's own clients wait for it, and a
    cluster may reach brokers that the submitting machine cannot.
    """
    try:
        check_broker(config.kafka.bootstrap, config.kafka.security(), timeout_s)
    except BrokerUnavailableError as error:
        print(f"fedstream: warning: {error}", file=sys.stderr, flush=True)
