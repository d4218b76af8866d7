"""Create the job's topics with their partitions and size limits (idempotent).

The local broker has `auto.create.topics.enable=false` (a typo must fail, not create a
topic), so topics are created deliberately, from the same config the job reads. In
production the Terraform modules own them; this is for the local stack, tests and demo.
"""

from __future__ import annotations

import contextlib

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from fedstream.jobs.config import JobConfig
from fedstream.jobs.kafka_clients import kafka_client

#: CreateTopics' "broker default" replication factor: every node of the local stack holds
#: a replica (1 on one node, 3 on three, with min.insync.replicas 2: kafka.sh).
BROKER_DEFAULT_REPLICATION = -1


#: fl.control and fl.models keep each model's registration and newest release forever:
#: every record there is keyed (`fedstream.schemas.keys`), so compaction drops only
#: superseded ones (older releases, re-sent registrations). Kafka refuses unkeyed records
#: on a compacted topic.
COMPACTED = {"cleanup.policy": "compact"}


def topic_specs(config: JobConfig) -> list[NewTopic]:
    """fl.updates is partitioned for device throughput; fl.models, fl.control and fl.dlq
    have one partition so every consumer sees a model's releases in version order.
    Control and models are compacted (`COMPACTED`), and so is fl.devices (one entry per
    device). Replication is the broker's default."""
    rf = BROKER_DEFAULT_REPLICATION
    t = config.topics
    big = {
        "max.message.bytes": str(max(t.models_max_message_bytes, t.updates_max_message_bytes)),
        **COMPACTED,
    }
    return [
        NewTopic(
            t.updates,
            t.partitions,
            rf,
            topic_configs={"max.message.bytes": str(t.updates_max_message_bytes)},
        ),
        NewTopic(t.control, 1, rf, topic_configs=big),
        NewTopic(
            t.models,
            1,
            rf,
            topic_configs={
                "max.message.bytes": str(t.models_max_message_bytes + 65536),
                **COMPACTED,
            },
        ),
        NewTopic(t.dlq, 1, rf, topic_configs={"max.message.bytes": str(t.dlq_max_message_bytes)}),
        # the device registry: compacted, so the newest entry per device_id stays forever
        NewTopic(t.devices, 1, rf, topic_configs=COMPACTED),
    ]


def ensure_topics(config: JobConfig) -> list[str]:
    """Create the topics that don't exist yet; returns the names created."""
    admin = kafka_client(KafkaAdminClient, config, what="topic admin", request_timeout_ms=30000)
    try:
        existing = set(admin.list_topics())
        missing = [spec for spec in topic_specs(config) if spec.name not in existing]
        if missing:
            # created concurrently by someone else: that is what we wanted
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
        return [spec.name for spec in missing]
    finally:
        admin.close()
