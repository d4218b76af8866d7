"""The aggregation job: fl.updates + fl.control -> per-model windows -> fl.models / fl.dlq.

    Kafka (read_committed)  key_by(device_id)     key_by(model_id)    KafkaSink EXACTLY_ONCE
    fl.updates ┐           registry join ─ known ─> aggregate ──┬─> fl.models (releases)
    fl.devices ├─ route ─> (JVM) └─ rest ─> gate ─┘ (verify)    │
    fl.control ┘   └──── undecodable, UNAUTHENTICATED ──────────┴─> fl.dlq (dead letters)

Every update is verified against its device's registry entry before it can change a
model: an update of a device whose newest registry record the JVM's join holds goes to
the aggregate with that record attached and is verified there; everything else (every
registry record, devices not known yet, fragments) is verified by the Python device gate
(`_device_join`; README.md, "Signed updates").

With `runtime.model_shards` S > 1 a shard operator sits between the join (and the gate)
and the aggregate, keyed by `model_id#shard` (murmur2 of the device id mod S): it
verifies the joined updates itself and absorbs a FedBuff model's updates into partial
windows, which the aggregate combines (`_shard`; README, "Scaling out one model"). S = 1
is the topology above.

Every output record carries its Kafka key (`fedstream.schemas.keys`): a release chunk
`<model_id>#<chunk_index>`, partitioned by model id, so fl.models can be compacted and
keep each model's newest complete release; a dead letter its model id (none when the
record named no model). PyFlink's sink takes keys only through Java serialization
schemas: `io.fedstream.flink.RowBytes` and `ModelPartitioner` (jobs/java, built by
`make jars`). The splits by kind and the keying run in the JVM too (`RowKindFilter`,
`KeyedBytes`, `KeyByField`), and so does routing the common records (`UpdateRouter`: a
well-formed update or device key is keyed from its first Avro strings; anything else goes
to the Python route, which writes its dead letter), and so does the registry join
(`DeviceJoin`): a registered device's update crosses into Python once (the aggregate)
instead of eleven times (once for every Python lambda in between), and no union task
receives every update only to drop it.

The source is the Kafka connector's table source in `raw` format, converted to a DataStream:
it is the same KafkaSource underneath, and it also hands over each record's topic, partition
and offset, which a DeadLetter must carry. Records become visible downstream only when the
checkpoint that covers them completes (two-phase commit of the sink's transactions), so the
release latency floor is the checkpoint interval.

Runs unchanged in a local mini-cluster (`fedstream run`) and on a cluster (`fedstream
submit`: `flink run -py jobs/fedstream/jobs/aggregation_job.py -- --config ...`).
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

from pyflink.common import Configuration, Types
from pyflink.datastream import DataStream, KeyedStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment

from fedstream.jobs.config import JobConfig, load
from fedstream.jobs.jvm_scratch import use_private_tmpdir
from fedstream.jobs.runtime import jar_url, job_jars, use_metrics_reporter

JOB_NAME = "fedstream-aggregation"
PROMETHEUS_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
#: Bytes of a Kafka record batch besides one record's value (header, key, varints), generous.
_BATCH_OVERHEAD = 1024
BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())
#: What both sinks write: a Kafka record's key (empty: none) and value.
KEYED = Types.ROW_NAMED(["key", "value"], [BYTES, BYTES])


#: The local mini-cluster's network buffer size and pool (`flink_configuration`).
LOCAL_NETWORK_SEGMENT = "1mb"
LOCAL_NETWORK_MEMORY = "256mb"


def flink_configuration(
    config: JobConfig, *, local: bool, restore_from: str | None = None
) -> Configuration:
    """The Flink settings the job needs, from our config (PyFlink 2.2 has no setters)."""
    conf = Configuration()
    conf.set_string("pipeline.jars", ";".join(jar_url(jar) for jar in job_jars()))
    conf.set_string("pipeline.name", JOB_NAME)
    conf.set_string("parallelism.default", str(config.runtime.parallelism))
    conf.set_string("state.backend.type", config.checkpoint.backend)
    conf.set_string("execution.checkpointing.dir", config.checkpoint.dir)
    conf.set_string("execution.checkpointing.interval", f"{config.checkpoint.interval_ms}ms")
    conf.set_string("execution.checkpointing.mode", config.checkpoint.mode)
    conf.set_string(
        "execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION"
    )
    conf.set_string("execution.checkpointing.num-retained", "3")
    # Bounded restarts: with checkpointing on, the default retries forever and a job that
    # keeps failing would loop silently (measured with PyFlink 2.2).
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", str(config.runtime.restart_attempts))
    conf.set_string("restart-strategy.fixed-delay.delay", f"{config.runtime.restart_delay_ms}ms")
    conf.set_string("python.execution-mode", config.runtime.python_execution_mode)
    # Big records: a bundle of 400 KB updates must not exhaust the task heap.
    conf.set_string("python.fn-execution.bundle.size", "100")
    # Chained operators hand a record on without a deep copy (Flink copies every record
    # between chained operators by default: each update's 0.4-4 MB bytes several times per
    # task). Safe here: no operator keeps or mutates a record it was given; the Python
    # operators convert theirs into new objects, the JVM ones (jobs/java) only read.
    conf.set_string("pipeline.object-reuse", "true")
    folders = [str(p) for p in source_folders()]
    if local:
        # In a mini-cluster the workers are this very interpreter's environment; thread mode
        # finds pemja only through python.pythonpath. Our code is put on that path where it
        # is, not shipped: thread mode keeps one interpreter per JVM, so modules imported
        # by one job stay imported for the next, and python.files copies would be deleted
        # with the job that made them (a later job then failed to import a module no
        # earlier job had loaded: "No module named fedstream.pipelines.shard_function").
        conf.set_string("python.executable", sys.executable)
        conf.set_string("python.client.executable", sys.executable)
        paths = [sysconfig.get_paths()["purelib"], *folders]
        conf.set_string("python.pythonpath", os.pathsep.join(paths))
        # Updates are records of 0.4-40 MB: in Flink's default 32 KB network buffers each
        # spans a dozen or more buffers, each handed between tasks on its own, and is
        # gathered into a fresh array. 1 MB buffers took 0.2 ms of framework work off
        # each 100k update and raised the rate ~15% (README, "Performance"); the pool is
        # sized so that parallelism 2 still finds its buffers (64 MB of 1 MB ones did not).
        # A standalone or Kubernetes cluster takes these from its own configuration.
        conf.set_string("taskmanager.memory.segment-size", LOCAL_NETWORK_SEGMENT)
        conf.set_string("taskmanager.memory.network.min", LOCAL_NETWORK_MEMORY)
        conf.set_string("taskmanager.memory.network.max", LOCAL_NETWORK_MEMORY)
    else:
        # Ship our own code to the Python workers the way PyFlink documents (python.files,
        # the config form of `flink run -pyfs`): each folder is put on the workers'
        # sys.path, where the three halves of the `fedstream` namespace package meet again.
        conf.set_string("python.files", ",".join(folders))
    if restore_from:
        conf.set_string("execution.state-recovery.path", restore_from)
    ports = config.metrics.ports()
    if local and ports is not None:
        # the mini-cluster's reporter; its jar joins the classpath (`use_metrics_reporter`)
        conf.set_string("metrics.reporter.prom.factory.class", PROMETHEUS_FACTORY)
        conf.set_string("metrics.reporter.prom.port", "-".join(map(str, sorted(set(ports)))))
        # model ids as they are (escaped), not with every character but [a-zA-Z0-9:_]
        # replaced: the dashboard joins them with the ids on the topics
        conf.set_string("metrics.reporter.prom.filterLabelValueCharacters", "false")
    return conf


def source_folders() -> list[Path]:
    """The folders holding the job's code (schemas/, pipelines/, jobs/ of the repo)."""
    import fedstream.pipelines
    import fedstream.schemas

    here = Path(__file__).resolve().parents[2]  # jobs/
    return [
        Path(fedstream.schemas.__file__).resolve().parents[2],
        Path(fedstream.pipelines.__file__).resolve().parents[2],
        here,
    ]


def _login(config: JobConfig) -> dict[str, str]:
    """The Kafka client properties that log the source and sinks in (the connector's
    relocated login module class). Built on the client: the workers never import the SDK."""
    from fedstream.edge.security import FLINK_CONNECTOR_SHADED_PREFIX

    return config.kafka.security().java_properties(FLINK_CONNECTOR_SHADED_PREFIX)


def _sql(text: str) -> str:
    """A SQL string literal's content (single quotes doubled)."""
    return text.replace("'", "''")


def _source_ddl(config: JobConfig) -> str:
    """The Kafka table source. Its ``properties.*`` carry the login (security protocol,
    SASL mechanism, JAAS line with the password, PEM truststore): they end up in the job
    graph, which is the job's own, and never on a command line."""
    k, t = config.kafka, config.topics
    login = "".join(
        f"\n          'properties.{key}' = '{_sql(value)}',"
        for key, value in _login(config).items()
    )
    return f"""
        CREATE TEMPORARY TABLE fedstream_input (
          `value` BYTES,
          `topic` STRING METADATA VIRTUAL,
          `partition` INT METADATA VIRTUAL,
          `offset` BIGINT METADATA VIRTUAL
        ) WITH (
          'connector' = 'kafka',
          'topic' = '{t.updates};{t.control};{t.devices}',
          'properties.bootstrap.servers' = '{k.bootstrap}',{login}
          'properties.group.id' = '{k.group_id}',
          'properties.isolation.level' = 'read_committed',
          'properties.max.partition.fetch.bytes' = '{t.updates_max_message_bytes}',
          'scan.startup.mode' = 'earliest-offset',
          'format' = 'raw'
        )"""


def _record_serializer(topic: str, *, by_model: bool) -> KafkaRecordSerializationSchema:
    """KEYED rows -> Kafka records: field 0 the key, field 1 the value; `by_model`: every
    release chunk of a model in the partition of its model id (`ModelPartitioner`)."""
    jvm = get_gateway().jvm
    keys = jvm.io.fedstream.flink
    builder = (
        jvm.org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema.builder()
        .setTopic(topic)
        .setKeySerializationSchema(keys.RowBytes(0))
        .setValueSerializationSchema(keys.RowBytes(1))
    )
    if by_model:
        builder = builder.setPartitioner(keys.ModelPartitioner())
    return KafkaRecordSerializationSchema(builder.build())


def _sink(config: JobConfig, topic: str, role: str, max_bytes: int) -> KafkaSink:
    k = config.kafka
    builder = KafkaSink.builder()
    for key, value in _login(config).items():
        builder = builder.set_property(key, value)
    return (
        builder.set_bootstrap_servers(k.bootstrap)
        .set_record_serializer(_record_serializer(topic, by_model=role == "models"))
        .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
        # stable across restarts: Flink aborts the lingering transactions of this prefix
        .set_transactional_id_prefix(f"{k.transactional_id_prefix}-{role}")
        .set_property("transaction.timeout.ms", str(k.transaction_timeout_ms))
        .set_property("max.request.size", str(max_bytes + 65536))
        .build()
    )


#: What the source hands to `topology`: a Kafka record's value and coordinates.
INPUT_ROW = Types.ROW_NAMED(
    ["value", "topic", "partition", "offset"], [BYTES, Types.STRING(), Types.INT(), Types.LONG()]
)


def topology(rows: DataStream, config: JobConfig) -> tuple[DataStream, DataStream]:
    """Route and aggregate `rows` (INPUT_ROW): returns (releases, dead letters), each a
    stream of KEYED rows (Kafka key, encoded record). Sources and sinks stay outside, so
    the job tier of the tests runs exactly this on in-memory input. Every operator has a
    stable uid."""
    # Imported here so `--help` and config errors don't pay for loading the core.
    from fedstream.pipelines.flink_functions import (
        EMITTED,
        JOINED,
        KIND_DEAD,
        KIND_DEVICE,
        KIND_PARTIAL,
        KIND_REGISTRATION,
        KIND_UPDATE,
        RAW,
        ROUTED,
        AggregateFunction,
        DeviceGateFunction,
        RegistryFunction,
        RouteFunction,
    )

    limits = config.limits.input_limits()
    # a dead letter's value must leave room for the Kafka record batch around it
    dlq_bytes = config.topics.dlq_max_message_bytes - _BATCH_OVERHEAD
    pre_routed = _pre_route(rows, config.topics, limits.max_id_length)
    routed = (
        _kinds(pre_routed, 1, (RAW,), "raw", "not pre-routed")
        .map(
            RouteFunction(
                config.topics.updates,
                config.topics.control,
                limits,
                dlq_bytes,
                config.topics.devices,
            ),
            output_type=ROUTED,
        )
        .uid("route")
        .name("decode and route")
    )
    # Registrations meet under one key to be authenticated, bound to their owner and
    # counted against limits.max_models.
    owner_paths = config.trust.owner_key_paths()
    owner_keys = None if owner_paths is None else [str(p) for p in owner_paths]
    admitted = (
        _kinds(routed, 1, (KIND_REGISTRATION,), "registrations", "registrations")
        .key_by(lambda r: "", key_type=Types.STRING())
        .process(RegistryFunction(limits, dlq_bytes, owner_keys), output_type=ROUTED)
        .uid("registry")
        .name("admit models")
    )
    # Before anything else, every update meets its device's registry entry (keyed by
    # device_id) and counts only if it is authentic (README.md, "Signed updates"): in the
    # JVM's join, which attaches the entry for the aggregate (or the shard) to verify, or
    # in the Python gate for what the join does not know (`_device_join`). Routing,
    # splitting by kind and keying happen in the JVM (`_pre_route`, `_kinds`, `_key_by`):
    # a registered device's update crosses into Python once. Updates and device keys both
    # come from the pre-route, so a device's key and its updates reach the join (and the
    # gate) in the order they were read.
    # Every split is applied on its branch before any union, so it chains into the task
    # that produced the row: a union (or an operator after one) is a task of its own that
    # every update would be serialized to, only to be dropped.
    to_gate = [
        _kinds(pre_routed, 1, (KIND_UPDATE, KIND_DEVICE), "pre-routed", "pre-routed"),
        _kinds(routed, 1, (KIND_UPDATE, KIND_DEVICE), "updates-and-devices", "updates and keys"),
    ]
    shards = config.runtime.model_shards
    keyed, joined = _device_join(to_gate, limits.max_id_length)
    gated = (
        keyed.process(DeviceGateFunction(_device_gate(config, dlq_bytes)), output_type=ROUTED)
        .uid("device-gate")
        .name("verify device signatures")
    )
    dead_on_arrival = [
        _keyed_bytes(_kinds(stream, 1, (KIND_DEAD,), uid, "undecodable"), -1, 2)
        for stream, uid in (
            (routed, "undecodable"),
            (admitted, "undecodable-registry"),
            (gated, "unauthenticated"),
        )
    ]
    registrations = _padded(
        _kinds(admitted, 1, (KIND_DEAD,), "decodable", "decodable", keep=False), JOINED
    )
    updates = [_padded(_kinds(gated, 1, (KIND_UPDATE,), "updates", "updates"), JOINED), joined]
    # thread mode: open windows (and shards' partials) written once per checkpoint
    flushing = (
        config.runtime.python_execution_mode == "thread"
        and config.runtime.window_writes == "checkpoint"
    )
    if shards > 1:
        sharded = _shard(updates, registrations, config, limits, dlq_bytes, flushing=flushing)
        to_models = _kinds(
            sharded, 1, (KIND_UPDATE, KIND_PARTIAL), f"shard-out-{shards}", "to models"
        )
        refused = _kinds(sharded, 1, (KIND_DEAD,), f"shard-refused-{shards}", "refused by shards")
        dead_on_arrival.append(_keyed_bytes(refused, -1, 2))
        updates = [_padded(to_models, JOINED)]
    aggregate = AggregateFunction(
        config.topics.models_max_message_bytes,
        config.runtime.dedupe_versions,
        config.runtime.live_models,
        limits,
        dlq_bytes,
        str(config.signing.key_path()),
        config.runtime.sequence_window,
        config.trust.allow_unsigned_updates,
        defer_window_writes=flushing,
    )
    emitted = (
        _process(_key_by(0, *updates, registrations), aggregate, EMITTED, flushing=flushing)
        .uid("aggregate")
        .name("aggregate per model")
    )
    releases = _keyed_bytes(_kinds(emitted, 0, ("release",), "releases", "releases"), 2, 1)
    rejected = _keyed_bytes(
        _kinds(emitted, 0, ("release",), "rejected", "rejected", keep=False), 2, 1
    )
    return releases, rejected.union(*dead_on_arrival)


def _pre_route(rows: DataStream, topics: Any, max_id_bytes: int) -> DataStream:
    """ROUTED rows from INPUT_ROW rows, in the JVM (`io.fedstream.flink.UpdateRouter`): a
    well-formed update (device key) is keyed from its header and first Avro strings without
    crossing into Python; every other record leaves as kind RAW for the Python route.
    Stateless."""
    gateway = get_gateway()
    router = gateway.jvm.io.fedstream.flink.UpdateRouter(
        topics.updates,
        _leading_strings("GradientUpdate", ("update_id", "device_id", "model_id")),
        _leading_strings("RecordFragment", ("record_id", "signer")),
        topics.devices,
        _leading_strings("DeviceKey", ("device_id",)),
        max_id_bytes,
    )
    return DataStream(rows._j_data_stream.map(router).uid("pre-route").name("key updates"))


def _leading_strings(record: str, names: tuple[str, ...]) -> str:
    """The writer fingerprints (16 hex digits, comma-separated) of every version of
    `record`, current and historical, whose first fields are the strings `names`: the
    versions whose ids the JVM's pre-route may read."""
    return _leading_fields(record, tuple((name, "string") for name in names))


def _leading_fields(record: str, fields: tuple[tuple[str, str], ...]) -> str:
    """The writer fingerprints (as `_leading_strings`) of every version of `record` whose
    first fields are `fields` ((name, Avro type) pairs)."""
    from fedstream.schemas import default_registry

    registry = default_registry()
    return ",".join(
        f"{entry.fingerprint:016x}"
        for entry in [registry.get(record), *registry.history(record)]
        if [(f["name"], f["type"]) for f in entry.schema["fields"][: len(fields)]] == list(fields)
    )


def device_key_layout() -> tuple[str, int]:
    """What `io.fedstream.flink.DeviceJoin` may read whole: the writer fingerprints (as
    `_leading_strings`) of the DeviceKey versions whose fields are exactly the current
    version's, and how many symbols its status enum has."""
    from fedstream.schemas import default_registry

    current = default_registry().get("DeviceKey").schema["fields"]
    layout = [(f["name"], f["type"]) for f in current]
    status = next(f["type"] for f in current if f["name"] == "status")
    return _leading_fields("DeviceKey", tuple(layout)), len(status["symbols"])


def _kinds(
    stream: DataStream,
    field: int,
    kinds: tuple[str, ...],
    uid: str,
    name: str,
    *,
    keep: bool = True,
) -> DataStream:
    """The rows of `stream` whose string `field` is one of `kinds` (`keep=False`: is none of
    them), filtered in the JVM (`io.fedstream.flink.RowKindFilter`): a Python filter would
    cross every update into Python and back once more. Stateless; the uids are those of
    the Python filters it replaced."""
    keys = get_gateway().jvm.io.fedstream.flink
    java = stream._j_data_stream.filter(keys.RowKindFilter(field, ",".join(kinds), keep))
    return DataStream(java.uid(uid).name(name))


def _keyed_bytes(stream: DataStream, key_field: int, value_field: int) -> DataStream:
    """KEYED sink rows (key, value) from two BYTES fields of `stream`'s rows (`key_field`
    -1: no key), in the JVM (`io.fedstream.flink.KeyedBytes`). Stateless."""
    keys = get_gateway().jvm.io.fedstream.flink
    return DataStream(stream._j_data_stream.map(keys.KeyedBytes(key_field, value_field)))


def _shard(
    updates: list[DataStream],
    registrations: DataStream,
    config: JobConfig,
    limits: Any,
    dlq_bytes: int,
    *,
    flushing: bool,
) -> DataStream:
    """The shards of every model (runtime.model_shards S > 1; README, "Scaling out one
    model"): updates (JOINED rows: the gate's, then the join's) keyed by `model_id#shard`
    (`io.fedstream.flink.ShardKey`, murmur2 of the device id mod S), registrations fanned
    out to all S keys (`ShardFanout`), both in the JVM; `ShardFunction` verifies the
    joined updates and absorbs updates into partial windows (`flushing`: in the operator
    that writes them once per checkpoint, as `_process` says). Out: ROUTED rows for the
    model's key (forwarded updates, KIND_PARTIAL) and KIND_DEAD rows. The uids name S, so
    a checkpoint of another S > 1 does not restore (Flink refuses the unclaimed state)."""
    from fedstream.pipelines.flink_functions import ROUTED
    from fedstream.pipelines.shard_function import ShardFunction

    shards = config.runtime.model_shards
    jvm = get_gateway().jvm
    pair_type = Types.ROW([Types.STRING(), registrations.get_type()]).get_java_type_info()
    fanned_out = registrations._j_data_stream.flatMap(jvm.io.fedstream.flink.ShardFanout(0, shards))
    pairs = [
        DataStream(
            stream._j_data_stream.map(jvm.io.fedstream.flink.ShardKey(0, 6, shards))
            .returns(pair_type)
            .uid(uid)
            .name("key by shard")
        )
        for stream, uid in zip(
            updates, (f"shard-key-{shards}", f"shard-key-joined-{shards}"), strict=True
        )
    ]
    pairs.append(
        DataStream(
            fanned_out.returns(pair_type).uid(f"shard-fanout-{shards}").name("to every shard")
        )
    )
    function = ShardFunction(
        shards,
        config.runtime.shard_flush_ms,
        limits,
        dlq_bytes,
        config.runtime.sequence_window,
        config.runtime.live_models,
        config.trust.allow_unsigned_updates,
        defer_partial_writes=flushing,
    )
    return (
        _process(_keyed(pairs, registrations), function, ROUTED, flushing=flushing)
        .uid(f"shard-{shards}")
        .name("shard updates")
    )


def _key_by(field: int, *streams: DataStream) -> KeyedStream:
    """The union of `streams` (rows of one type) keyed by their string `field`: what
    `stream.key_by(lambda r: r[field], key_type=Types.STRING())` does, with the key built
    in the JVM on each branch (`io.fedstream.flink.KeyByField`) instead of in PyFlink's
    Python `AddKey` operator. Same Row(key, row) layout and key type ROW(STRING), so the
    same key groups, and keyed state of checkpoints from before restores unchanged."""
    gateway = get_gateway()
    row_type = streams[0].get_type()
    pair_type = Types.ROW([Types.STRING(), row_type]).get_java_type_info()
    with_keys = [
        DataStream(
            s._j_data_stream.map(gateway.jvm.io.fedstream.flink.KeyByField(field)).returns(
                pair_type
            )
        )
        for s in streams
    ]
    return _keyed(with_keys, streams[0])


def _padded(stream: DataStream, row_type: Any) -> DataStream:
    """`stream`'s rows padded with null fields to `row_type`, a wider row type that begins
    with theirs (`io.fedstream.flink.PadRow`, in the JVM). Stateless."""
    width = len(row_type.get_field_types())
    padded = stream._j_data_stream.map(get_gateway().jvm.io.fedstream.flink.PadRow(width))
    return DataStream(padded.returns(row_type.get_java_type_info()))


def _device_join(streams: list[DataStream], max_id_bytes: int) -> tuple[KeyedStream, DataStream]:
    """The registry join (`io.fedstream.flink.DeviceJoin`, uid "device-join"), keyed by
    device id: the union of `streams` (updates and registry records, ROUTED) split into
    the updates of devices whose newest registry record the JVM holds, JOINED rows of kind
    "signed" that the aggregate verifies, and the rest, keyed by device id for the device
    gate. The second is a side output re-read as keyed (it keeps the join's partitioning),
    so it needs no exchange of its own."""
    jvm = get_gateway().jvm
    from fedstream.pipelines.flink_functions import JOINED

    routed_type = streams[0].get_type()
    key_type = Types.ROW([Types.STRING()]).get_java_type_info()
    tag = jvm.org.apache.flink.util.OutputTag(
        "device-gate", Types.ROW([Types.STRING(), routed_type]).get_java_type_info()
    )
    fingerprints, symbols = device_key_layout()
    join = jvm.io.fedstream.flink.DeviceJoin(tag, fingerprints, symbols, max_id_bytes)
    joined = (
        _key_by(6, *streams)
        ._j_data_stream.process(join)
        .returns(JOINED.get_java_type_info())
        .uid("device-join")
        .name("join device keys")
    )
    to_gate = (
        jvm.org.apache.flink.streaming.api.datastream.DataStreamUtils.reinterpretAsKeyedStream(
            joined.getSideOutput(tag), jvm.KeyByKeySelector(), key_type
        )
    )
    return KeyedStream(to_gate, routed_type, streams[0]), DataStream(joined)


def _process(keyed: KeyedStream, function: Any, output_type: Any, *, flushing: bool) -> DataStream:
    """`keyed.process(function, output_type)`; `flushing` (thread mode only) runs it in
    `io.fedstream.flink.FlushingKeyedProcessOperator` (PyFlink's own thread-mode operator,
    which `KeyedStream.process` would build, plus a flush call before each checkpoint
    barrier: `fedstream.pipelines.deferred_windows`). Same state and timers, so the uid's
    checkpoints restore either way."""
    if not flushing:
        return keyed.process(function, output_type=output_type)
    from pyflink.datastream.data_stream import _create_j_data_stream_python_function_info
    from pyflink.fn_execution.flink_fn_execution_pb2 import UserDefinedDataStreamFunction
    from pyflink.util.java_utils import get_j_env_configuration

    java = keyed._j_data_stream
    operator = get_gateway().jvm.io.fedstream.flink.FlushingKeyedProcessOperator(
        get_j_env_configuration(java.getExecutionEnvironment()),
        _create_j_data_stream_python_function_info(
            function, UserDefinedDataStreamFunction.KEYED_PROCESS
        ),
        java.getTransformation().getOutputType(),
        output_type.get_java_type_info(),
    )
    return DataStream(java.transform("KEYED PROCESS", output_type.get_java_type_info(), operator))


def _keyed(pairs: list[DataStream], origin: DataStream) -> KeyedStream:
    """The union of `pairs` (JVM rows Row(key STRING, row), the rows of `origin`'s type)
    keyed by that key, as PyFlink's `key_by` keys (key type ROW(STRING))."""
    union = pairs[0].union(*pairs[1:]) if len(pairs) > 1 else pairs[0]
    keyed = union._j_data_stream.keyBy(
        get_gateway().jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info()
    )
    return KeyedStream(keyed, origin.get_type(), origin)


def _device_gate(config: JobConfig, dlq_bytes: int) -> Any:
    """The device gate's decisions, from `[trust]`."""
    from fedstream.pipelines.device_gate import DeviceGate

    trust = config.trust
    return DeviceGate(
        allow_unsigned=trust.allow_unsigned_updates,
        grace_seconds=trust.registration_grace_ms / 1000.0,
        max_pending=trust.max_pending_per_device,
        dlq_max_bytes=dlq_bytes,
        limits=config.limits.input_limits(),
    )


def build(env: StreamExecutionEnvironment, config: JobConfig) -> None:
    """Kafka source -> topology -> KafkaSinks (EXACTLY_ONCE)."""
    t_env = StreamTableEnvironment.create(env)
    t_env.execute_sql(_source_ddl(config))
    rows: DataStream = t_env.to_data_stream(t_env.from_path("fedstream_input"))
    releases, dead_letters = topology(rows, config)
    releases.sink_to(
        _sink(config, config.topics.models, "models", config.topics.models_max_message_bytes)
    ).uid("models-sink").name(config.topics.models)
    dead_letters.sink_to(
        _sink(config, config.topics.dlq, "dlq", config.topics.dlq_max_message_bytes)
    ).uid("dlq-sink").name(config.topics.dlq)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects section.key=value, got {pair!r}")
        out[key] = int(raw) if raw.lstrip("-").isdigit() else raw
    return out


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aggregation_job", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="TOML config (default jobs/config/local.toml)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set kafka.bootstrap=host:9092 (repeatable)",
    )
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume-from",
        metavar="PATH|latest",
        help="restore a checkpoint (chk-N) or savepoint directory; default: the newest "
        "sound checkpoint under checkpoint.dir (fedstream.jobs.resume)",
    )
    resume.add_argument(
        "--from-scratch",
        action="store_true",
        help="ignore the checkpoints and start fresh (refused while the models topic "
        "holds releases: devices would ignore versions starting again from 0)",
    )
    parser.add_argument("--local", action="store_true", help="run in an in-process mini-cluster")
    parser.add_argument(
        "--create-topics",
        action="store_true",
        help="create missing topics first (the local stack; production topics come from Terraform)",
    )
    return parser.parse_args(argv)


def _checked_config(args: argparse.Namespace) -> JobConfig:
    """The config, after one login to Kafka: bad credentials end the job here, in one line
    that says what to check, instead of as a failing Flink source after its restarts."""
    from fedstream.edge.errors import EdgeError
    from fedstream.jobs.config import ConfigError
    from fedstream.jobs.kafka_clients import check_kafka

    try:
        config = load(args.config, parse_overrides(args.set))
        key_id = config.signing.check()
        owners = config.trust.check()
        check_kafka(config)
    except (ConfigError, EdgeError) as error:
        raise SystemExit(f"fedstream: {error}") from None
    print(f"fedstream: signing releases with key {key_id}", flush=True)
    trusted = (
        f"owner keys {', '.join(owners)}"
        if owners
        else "unsigned ones (trust.allow_unsigned_registrations)"
    )
    print(f"fedstream: accepting registrations signed by {trusted}", flush=True)
    if config.trust.allow_unsigned_updates:
        print(
            "fedstream: WARNING trust.allow_unsigned_updates: unsigned updates are accepted "
            "and their device ids are unverified",
            flush=True,
        )
    return config


def main(argv: list[str] | None = None) -> None:
    args = arguments(argv)
    config = _checked_config(args)
    if args.create_topics:
        from fedstream.jobs.topics import ensure_topics

        created = ensure_topics(config)
        print(f"fedstream: topics created: {', '.join(created) or 'none (all exist)'}", flush=True)
    from fedstream.edge.errors import EdgeError
    from fedstream.jobs.resume import ResumeRefusedError, choose_restore

    try:
        restore = choose_restore(config, args.resume_from, from_scratch=args.from_scratch)
    except (ResumeRefusedError, EdgeError) as error:  # EdgeError: the checks could not run
        raise SystemExit(f"fedstream: {error}") from None
    if args.local:
        use_metrics_reporter()
        use_private_tmpdir()  # what a SIGKILL leaves in it goes at the next start
    env = StreamExecutionEnvironment.get_execution_environment(
        flink_configuration(config, local=args.local, restore_from=restore)
    )
    build(env, config)
    env.execute(JOB_NAME)


if __name__ == "__main__":
    main(sys.argv[1:])
