"""The smallest real PyFlink job over Kafka: copy a topic's records to another topic.

It exists to prove the plumbing of the foundation (connector jar, KafkaSource with
`read_committed`, KafkaSink, `flink run -py` on the standalone cluster) independently of the
aggregation job. The source is bounded at the offsets that are latest when the job starts,
so the job ends by itself.

    flink run -py jobs/fedstream/jobs/topic_copy.py --bootstrap 127.0.0.1:9092 \
        --source in-topic --sink out-topic
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

from fedstream.jobs.runtime import connector_jar, jar_url


def build(env: StreamExecutionEnvironment, bootstrap: str, source: str, sink: str) -> None:
    kafka_source = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(source)
        .set_group_id(f"fedstream-topic-copy-{source}")
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_bounded(KafkaOffsetsInitializer.latest())
        .set_value_only_deserializer(SimpleStringSchema())
        .set_property("isolation.level", "read_committed")
        .build()
    )
    kafka_sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
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
    args = parser.parse_args(argv)
    config = Configuration()
    config.set_string("pipeline.jars", jar_url(connector_jar()))
    env = StreamExecutionEnvironment.get_execution_environment(config)
    build(env, args.bootstrap, args.source, args.sink)
    env.execute(f"fedstream-topic-copy-{args.source}")


if __name__ == "__main__":
    main(sys.argv[1:])
