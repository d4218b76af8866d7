"""Producing records to Kafka the way a device must: idempotent, acknowledged, bounded.

Settings and why:

* ``enable_idempotence=True`` and ``acks="all"``: a retry after a lost acknowledgement
  never writes the record twice, and an acknowledged record is on every in-sync replica.
  (Duplicates across a device *crash* are handled one level up, by deterministic
  update ids and the round counter sent as `sequence`; idempotence only covers one
  producer session.)
* ``retries`` bounded and ``delivery_timeout_ms`` = the configured send timeout: a device
  must learn about an outage (`BrokerUnavailableError`) instead of buffering forever;
  ``retry_backoff_ms`` up to 1 s, so the retries outlast a leader election.
* gzip compression: the only codec kafka-python supports without an extra package.
* ``allow_auto_create_topics=False``: a typo in a topic name is an error, not a new topic.
* The connection is authenticated with ``config.security`` (`KafkaSecurity`), and a
  refused one raises `AuthenticationError` at once (`open_kafka_client`), never a
  bootstrap timeout.
* Size is checked *before* sending against the smaller of the producer's
  ``max_request_size`` and the topic's ``max.message.bytes`` (read once from the broker),
  so an oversized update fails at once with `PayloadTooLargeError` naming both numbers,
  instead of as an opaque broker error after the retries.
* A record larger than that (a large model's update or registration) is sent in signed
  fragments (`send_record`, `fedstream.schemas.fragments`): same key, so one partition and
  in order; the job puts it back together. Only more than `max_fragments` pieces, or no
  key to sign them with, is `PayloadTooLargeError`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from fedstream.edge.config import EdgeConfig
from fedstream.edge.connection import hidden_topic_hint, open_kafka_client
from fedstream.edge.errors import (
    BrokerUnavailableError,
    DeliveryError,
    PayloadTooLargeError,
    TopicNotFoundError,
)
from fedstream.schemas.fragments import encoded_fragments
from fedstream.schemas.signing import ReleaseSigner

__all__ = ["RECORD_OVERHEAD", "Delivery", "RecordProducer", "topic_max_message_bytes"]

log = logging.getLogger(__name__)

#: Bytes a record batch adds around one record's key and value (batch header 61 bytes,
#: record framing and varints): the margin kept below the size limits.
RECORD_OVERHEAD = 128


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where the broker stored an acknowledged record."""

    topic: str
    partition: int
    offset: int


def _kafka_errors() -> Any:
    import kafka.errors

    return kafka.errors


def topic_max_message_bytes(config: EdgeConfig, topic: str) -> int | None:
    """The topic's ``max.message.bytes``; None when the broker won't say (no permission).

    Raises `TopicNotFoundError` if the topic does not exist and `BrokerUnavailableError`
    if no broker answers.
    """
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    errors = _kafka_errors()
    admin = open_kafka_client(
        KafkaAdminClient,
        config.bootstrap,
        config.security,
        timeout_s=config.connect_timeout_s,
        what="admin client",
        client_id=config.client_id or "fedstream-edge",
        bootstrap_timeout_ms=int(config.connect_timeout_s * 1000),
        request_timeout_ms=int(config.connect_timeout_s * 1000),
    )
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, ["max.message.bytes"])
        answer = admin.describe_configs([resource], config_filter="all")
    except errors.UnknownTopicOrPartitionError as error:
        raise TopicNotFoundError(
            f"topic {topic!r} does not exist at {config.bootstrap}"
            f"{hidden_topic_hint(config.security)}"
        ) from error
    except errors.AuthorizationError:
        log.warning(
            "not allowed to read the config of topic %r; checking sizes against "
            "max_request_size only",
            topic,
        )
        return None
    except (errors.KafkaTimeoutError, errors.KafkaConnectionError) as error:
        # a node refusing connections (a broker restarting) surfaced as a raw
        # KafkaConnectionError, found by the chaos campaign: an outage, say so
        raise BrokerUnavailableError(
            f"broker at {config.bootstrap} did not answer: {error}"
        ) from error
    finally:
        admin.close()
    entry = answer.get("topic", {}).get(topic) or {}
    if not entry:
        raise TopicNotFoundError(
            f"topic {topic!r} does not exist at {config.bootstrap}"
            f"{hidden_topic_hint(config.security)}"
        )
    value = entry.get("max.message.bytes", {}).get("value")
    return int(value) if value is not None else None


class RecordProducer:
    """One idempotent Kafka producer for a device; thread-safe (kafka-python's is)."""

    def __init__(self, config: EdgeConfig) -> None:
        from kafka import KafkaProducer

        self.config = config
        send_ms = int(config.send_timeout_s * 1000)
        # request timeout below the delivery timeout so that retries fit inside it
        request_ms = max(1000, send_ms // max(1, config.retries + 1))
        # Leadership moves (a new topic, a broker fail-over) take seconds, not the default
        # 100 ms x retries: a fresh topic under load failed 5 quick retries with
        # NotLeaderForPartition. Spread the retries over part of the send timeout.
        backoff_ms = max(100, min(1000, send_ms // (4 * max(1, config.retries + 1))))
        self._producer = open_kafka_client(
            KafkaProducer,
            config.bootstrap,
            config.security,
            timeout_s=config.connect_timeout_s,
            what="producer",
            client_id=config.client_id or "fedstream-edge",
            enable_idempotence=True,
            acks="all",
            compression_type=config.compression_type,
            retries=config.retries,
            retry_backoff_ms=backoff_ms,
            delivery_timeout_ms=send_ms,
            request_timeout_ms=min(request_ms, send_ms),
            max_block_ms=send_ms,
            max_request_size=config.max_request_size,
            allow_auto_create_topics=False,
            bootstrap_timeout_ms=int(config.connect_timeout_s * 1000),
            linger_ms=0,
        )
        self._topic_limits: dict[str, int | None] = {}
        self._limits_lock = threading.Lock()

    def _topic_limit(self, topic: str) -> int | None:
        with self._limits_lock:
            if topic not in self._topic_limits:
                self._topic_limits[topic] = topic_max_message_bytes(self.config, topic)
            return self._topic_limits[topic]

    def limit(self, topic: str) -> int:
        """Largest key + value (bytes) a record on `topic` may have."""
        topic_limit = self._topic_limit(topic)
        limits = [self.config.max_request_size] + ([topic_limit] if topic_limit else [])
        return min(limits) - RECORD_OVERHEAD

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> Delivery:
        """Send one record and wait for the acknowledgement (at most ``send_timeout_s``)."""
        size = len(value) + (len(key) if key else 0)
        limit = self.limit(topic)
        if size > limit:
            raise PayloadTooLargeError(
                f"record of {size} bytes exceeds the limit of {limit} bytes for topic "
                f"{topic!r} (max.message.bytes {self._topic_limit(topic) or 'unknown'}, "
                f"producer max_request_size {self.config.max_request_size}, less "
                f"{RECORD_OVERHEAD} bytes of framing): compress the update (fp16, int8, topk) "
                "or raise both limits",
                size=size,
                limit=limit,
            )
        errors = _kafka_errors()
        try:
            future = self._producer.send(topic, value=value, key=key)
            meta = future.get(timeout=self.config.send_timeout_s + 1.0)
        except errors.MessageSizeTooLargeError as error:
            raise PayloadTooLargeError(
                f"broker refused a record of {size} bytes for topic {topic!r} as too large "
                f"({error})",
                size=size,
                limit=limit,
            ) from error
        except (errors.KafkaTimeoutError, errors.KafkaConnectionError) as error:
            raise BrokerUnavailableError(
                f"record for {topic!r} not acknowledged within {self.config.send_timeout_s:g} s "
                f"by {self.config.bootstrap} ({error}); it may or may not have arrived, a "
                "re-send with the same update id is safe"
            ) from error
        except errors.RetriableError as error:
            raise BrokerUnavailableError(
                f"record for {topic!r} failed after {self.config.retries} retries: {error}"
            ) from error
        except errors.KafkaError as error:
            raise DeliveryError(f"broker refused the record for {topic!r}: {error}") from error
        return Delivery(meta.topic, meta.partition, meta.offset)

    def send_record(
        self,
        topic: str,
        value: bytes,
        key: bytes,
        *,
        record_id: str,
        signer: str,
        signing_key: ReleaseSigner | None,
    ) -> Delivery:
        """Send a whole encoded record: as it is when it fits `topic`, else in fragments
        signed by `signing_key` (`signer` names it: the device id of an update, the
        owner key id of a registration), one acknowledged send after another.

        Returns the Delivery of the record, or of its last fragment: the job acts on the
        record once that one is in. A failed fragment raises like `send`; sending the
        record again starts over from fragment 0 (the job drops the incomplete one).
        """
        limit = self.limit(topic)
        if len(value) + len(key) <= limit:
            return self.send(topic, value, key)
        if signing_key is None:  # fragments must be signed: say why it cannot go whole
            try:
                return self.send(topic, value, key)
            except PayloadTooLargeError as error:
                raise PayloadTooLargeError(
                    f"{error}; or configure a key (EdgeConfig.device_key_file for updates, "
                    "owner_key_file for registrations) to send it in signed fragments",
                    size=error.size,
                    limit=error.limit,
                ) from None
        count, pieces = encoded_fragments(
            value, limit - len(key), record_id=record_id, signer=signer, key=signing_key
        )
        if count > self.config.max_fragments:
            raise PayloadTooLargeError(
                f"record of {len(value)} bytes would need {count} fragments for topic "
                f"{topic!r}, more than max_fragments {self.config.max_fragments}: compress "
                "it or raise the topic's limit",
                size=len(value),
                limit=limit * self.config.max_fragments,
            )
        log.debug("sending %d bytes to %s in %d fragments", len(value), topic, count)
        delivery = None
        for index, piece in enumerate(pieces):
            delivery = self.send(topic, piece, key)
            log.debug("fragment %d/%d of %s acknowledged", index + 1, count, record_id)
        assert delivery is not None  # there is always at least one fragment
        return delivery

    def close(self, timeout_s: float = 5.0) -> None:
        self._producer.close(timeout=timeout_s)

    def __enter__(self) -> RecordProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
