"""The smallest real PyFlink job over Kafka: copy a topic's records to another topic.

It exists to prove the plumbing of the foundation (connector jar, KafkaSource with
`read_committed`, KafkaSink, `flink run -py` on the standalone cluster) independently of the
aggregation job. The source is bounded at the offsets that are latest when the job starts,
so the job ends by itself.

    flink run -py jobs/fedstream/jobs/topic_copy.py --bootstrap 127.0.0.1:9092 \
        --source in-topic --sink out-topic [--username U --password-file F --ca-file CA]

Kafka security: the FEDSTREAM_KAFKA_* environment (`KafkaSecurity.from_env`, e.g.
``eval "$(infra/local/kafka.sh env)"``), overridden by the flags. The password is read from
a file (or FEDSTREAM_KAFKA_PASSWORD), never taken from the command line.
"""

from __future__ import annotations

import argparse
import sys

from pyflink.common import Configuration, Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)

from fedstream.edge import security as kafka_security
from fedstream.jobs.runtime import connector_jar, jar_url


def build(
    env: StreamExecutionEnvironment,
    bootstrap: str,
    source: str,
    sink: str,
    security: kafka_security.KafkaSecurity,
) -> None:
    # into the job graph, never onto a command line
    login = security.java_properties(kafka_security.FLINK_CONNECTOR_SHADED_PREFIX)
    source_builder = KafkaSource.builder()
    sink_builder = KafkaSink.builder()
    for key, value in login.items():
        source_builder = source_builder.set_property(key, value)
        sink_builder = sink_builder.set_property(key, value)
    kafka_source = (
        source_builder.set_bootstrap_servers(bootstrap)
        .set_topics(source)
        .set_group_id(f"fedstream-topic-copy-{source}")
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_bounded(KafkaOffsetsInitializer.latest())
        .set_value_only_deserializer(SimpleStringSchema())
        .set_property("isolation.level", "read_committed")
        .build()
    )
    kafka_sink = (
        sink_builder.set_bootstrap_servers(bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(sink)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .build()
    )
    (
        env.from_source(kafka_source, WatermarkStrategy.no_watermarks(), "topic-source")
        .uid("topic-copy-source")
        .map(lambda value: f"copied:{value}", output_type=Types.STRING())
        .uid("topic-copy-map")
        .name("prefix")
        .sink_to(kafka_sink)
        .uid("topic-copy-sink")
        .name("topic-sink")
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    kafka_security.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        security = kafka_security.from_arguments(args)
    except kafka_security.SecurityConfigError as error:
        parser.error(str(error))
    config = Configuration()
    config.set_string("pipeline.jars", jar_url(connector_jar()))
    env = StreamExecutionEnvironment.get_execution_environment(config)
    build(env, args.bootstrap, args.source, args.sink, security)
    env.execute(f"fedstream-topic-copy-{args.source}")


if __name__ == "__main__":
    main(sys.argv[1:])
