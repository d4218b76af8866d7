"""The job's configuration: one validated TOML file plus command-line overrides.

Topic names, partitions, size limits, group id and bootstrap servers are configuration,
never literals in the wiring (README.md, "The wire contract"). Validation happens once, here,
with messages that name the key, so a bad deployment fails before any Flink machinery
starts.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedstream.edge.security import KafkaSecurity

# jobs/config/local.toml in the repository; fedstream/jobs/config/local.toml in the wheel
_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "config" / "local.toml",
    Path(__file__).resolve().parent / "config" / "local.toml",
)
DEFAULT_CONFIG = next((p for p in _CANDIDATES if p.is_file()), _CANDIDATES[0])


#: Relative paths in the config (kafka.password_file, kafka.ca_file) are relative to this
#: folder: the repository root.
REPO_ROOT = Path(__file__).resolve().parents[3]
_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class KafkaConfig:
    """[kafka]: where the brokers are and how the job, its CLI and tools log in.

    The security keys are the job's side of `fedstream.edge.KafkaSecurity`: every Kafka
    client the job side builds (the Flink source and sinks, the topic and CLI clients)
    takes them from `security()`. The defaults match the local stack (infra/local/kafka.sh)
    as its admin principal; a deployment sets its own principal (e.g. Terraform's job user).
    """

    # host:port[,host:port] of the brokers
    bootstrap: str = "127.0.0.1:9092"
    # the source's consumer group (offsets live in Flink checkpoints; this is for tools)
    group_id: str = "fedstream-aggregator"
    # prefix of the sinks' transactional ids (+ "-models" / "-dlq"): one per deployment,
    # stable across restarts, so a restarted job aborts its own lingering transactions
    transactional_id_prefix: str = "fedstream-aggregator"
    # the sinks' transaction timeout: below the broker's transaction.max.timeout.ms (the
    # local stack: 1 h), well above checkpoint interval + restart time; a job down longer
    # than this loses the releases of its last checkpoint, which `fedstream.jobs.resume`
    # detects and re-derives
    transaction_timeout_ms: int = 900_000
    # SASL_SSL | SASL_PLAINTEXT | SSL | PLAINTEXT (only for a broker without security)
    security_protocol: str = "SASL_SSL"
    # SCRAM-SHA-512 | SCRAM-SHA-256 | PLAIN
    sasl_mechanism: str = "SCRAM-SHA-512"
    # the SASL principal; required with SASL_*
    username: str = "admin"
    # file holding the password (relative to the repository root, or absolute); empty: the
    # password comes from the FEDSTREAM_KAFKA_PASSWORD environment variable. Never put a
    # password itself in this file or on a command line.
    password_file: str = "infra/local/.run/kafka/credentials/admin.password"
    # PEM file of the CA that signed the brokers' certificates (relative to the repository
    # root, or absolute); empty: the system's CAs
    ca_file: str = "infra/local/.run/kafka/credentials/ca.pem"

    def security(self) -> KafkaSecurity:
        """These settings as a `KafkaSecurity`, with files resolved and checked.

        Raises `ConfigError` naming the key when a file is missing or a password is absent
        (checked here, not at load time: a config is also built where no broker exists).
        """
        from fedstream.edge.security import ENV_PASSWORD, KafkaSecurity, SecurityConfigError

        sasl = self.security_protocol.startswith("SASL_")
        password_file = _repo_path(self.password_file) if sasl else None
        try:
            return KafkaSecurity(
                protocol=self.security_protocol,
                mechanism=self.sasl_mechanism,
                username=(self.username or None) if sasl else None,
                password_file=password_file,
                password=None if password_file or not sasl else os.environ.get(ENV_PASSWORD),
                ca_file=_repo_path(self.ca_file)
                if self.security_protocol.endswith("SSL")
                else None,
            )
        except SecurityConfigError as error:
            raise ConfigError(
                f"[kafka] security (kafka.password_file, kafka.ca_file): {error}"
            ) from None


def _repo_path(value: str) -> Path | None:
    """A path from the config: absolute, or relative to the repository root."""
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


@dataclass(frozen=True)
class TopicsConfig:
    """[topics]: names and sizes (`fedstream topics` and Terraform create them so)."""

    # GradientUpdates from devices (partitioned, `partitions`)
    updates: str = "fl.updates"
    # ModelRegistrations from owners (one partition, compacted, keyed by model id)
    control: str = "fl.control"
    # ModelReleases, chunked (one partition, compacted, keyed <model_id>#<chunk>)
    models: str = "fl.models"
    # DeadLetters: every refused record with its reason (one partition)
    dlq: str = "fl.dlq"
    # the device registry (DeviceKey records keyed by device_id; compacted): written by
    # operators, read by the job
    devices: str = "fl.devices"
    # partitions of the updates topic
    partitions: int = 2
    # max.message.bytes of the models topic: a bigger release is split into chunks
    models_max_message_bytes: int = 16 * 1024 * 1024
    # max.message.bytes of the updates and control topics (the largest update/registration)
    updates_max_message_bytes: int = 16 * 1024 * 1024
    # A dead letter carries the original record: the DLQ needs headroom over the updates
    # topic, or the dead letter of a maximal update is cut (original_truncated).
    dlq_max_message_bytes: int = 17 * 1024 * 1024


@dataclass(frozen=True)
class CheckpointConfig:
    """[checkpoint]: Flink's checkpoints, which also commit the sinks' transactions."""

    # how often; also the release latency floor (a release is visible when its checkpoint
    # completes)
    interval_ms: int = 2000
    # where retained checkpoints go (a URI); `fedstream run` / `submit` resume from here.
    # Not on a broker's disk: its fsync of each rolled log segment stalls the checkpoints'
    # writes for seconds, and releases wait for them (README, Troubleshooting)
    dir: str = "file:///tmp/fedstream/checkpoints"
    # hashmap (state on the heap) | rocksdb (on disk, for many or large models)
    backend: str = "hashmap"
    # EXACTLY_ONCE (what the guarantees need) | AT_LEAST_ONCE
    mode: str = "EXACTLY_ONCE"


#: The most shards of one model (`runtime.model_shards`): beyond the combine step's
#: saturation (README, "Scaling out one model": about sqrt(K t / m) shards).
MAX_MODEL_SHARDS = 64


@dataclass(frozen=True)
class RuntimeConfig:
    """[runtime]: how the job runs."""

    # parallelism of every operator (models are spread over subtasks by key)
    parallelism: int = 1
    # PyFlink's thread mode (embedded CPython, pemja): 472 vs 172 updates/s for process
    # mode, 3.4 vs 9.5 ms of job CPU per update, release latency p50 2.6 vs 4.2 s
    # (bench.throughput, 100k fp32 params, 2 cores). It needs a job that never imports
    # `onnx`, whose nanobind extension aborts the JVM in pemja threads (onnx_release edits
    # the bytes itself).
    python_execution_mode: str = "thread"
    # fixed-delay restarts after a failure (bounded: a job that keeps failing must end,
    # not loop silently), this many, this far apart; each restart restores the checkpoint
    restart_attempts: int = 3
    restart_delay_ms: int = 2000
    # Unsequenced updates (devices before schema v4): update ids are remembered for this
    # many versions, and an older base version is refused as STALE.
    dedupe_versions: int = 64
    # Sequenced updates: per device, the last N sequence numbers are remembered
    # (8 + N / 8 bytes per device and model); a multiple of 8.
    sequence_window: int = 1024
    # Models whose aggregator stays in Python memory between records, per subtask (each
    # about 2x its parameters); the rest are read from Flink state per record. 0 = none.
    live_models: int = 8
    # When a model's open window (and a shard's open partial) is written to Flink state:
    # "checkpoint" = once, just before each checkpoint barrier (thread mode:
    # io.fedstream.flink.FlushingKeyedProcessOperator; at most live_models windows wait
    # unsaved, the rest are written per update), "update" = after every absorbed update,
    # as in PyFlink's own operator (and always in process mode). Checkpoints of either
    # restore into both.
    window_writes: str = "checkpoint"
    # Shards per model (README, "Scaling out one model"): 1 = one key per model, as before
    # (same operators, uids and state). S > 1: a FedBuff "mean" model's updates are
    # validated, deduplicated and summed by S keyed shards (model_id#shard, by the device
    # id's murmur2), whose partial windows the model's key combines. Changing it needs a
    # fresh state: a checkpoint of S > 1 does not restore with another S (the shard's uid
    # names S); one of S = 1 does, but the models registered before it stay unsharded.
    model_shards: int = 1
    # A shard flushes its partial window this long after its first update at the latest
    # (also when it holds ceil(K / model_shards) updates of a count-K window, or is full).
    shard_flush_ms: int = 250


@dataclass(frozen=True)
class LimitsConfig:
    """Bounds on every field a device or model owner controls (see
    `fedstream.pipelines.limits` for why each default is safe for the types)."""

    # bytes of UTF-8 in model_id, update_id, device_id (each is a state key)
    max_id_length: int = 256
    # an update's num_samples must be in [1, this] (BAD_NUM_SAMPLES)
    max_num_samples: int = 10**9
    # L2 norm of an update's delta (BAD_FIELD beyond)
    max_delta_norm: float = 1e6
    # every window closes by this many updates, whatever its kind
    max_window_updates: int = 10_000
    # registered models per job (MODEL_LIMIT beyond)
    max_models: int = 1_000
    # devices with a sequence window per model (OTHER "device limit" beyond)
    max_devices_per_model: int = 100_000
    # an update's sequence must be in [0, this]
    max_sequence: int = 10**15
    # bytes of a whole record sent in fragments (an update or registration of a large model)
    max_record_bytes: int = 256 * 1024 * 1024
    # fragments of one such record
    max_fragments: int = 1024

    def __post_init__(self) -> None:
        self.input_limits()  # validates

    def input_limits(self) -> Any:
        """The core's `InputLimits` (imported late: the config loads without the core)."""
        from fedstream.pipelines.limits import InputLimits

        try:
            return InputLimits(**dataclasses.asdict(self))
        except ValueError as error:
            raise ConfigError(str(error)) from None


@dataclass(frozen=True)
class SigningConfig:
    """[signing]: the job's Ed25519 release key (RFC 8032; `fedstream.schemas.signing`).

    Every release is signed with it, and devices install only releases signed by a key
    they trust. The file is a PKCS#8 PEM private key (`fedstream keygen --out DIR` writes
    DIR/job-signing.key, 0600, and DIR/job-signing.pub for the devices); the job reads it
    on its workers, from this path: the key never travels in the job graph, arguments or
    logs. `fedstream run` (the local stack) creates the pair here when it is missing.
    """

    # path of the private key (relative to the repository root, or absolute)
    key_file: str = "infra/local/.run/signing/job-signing.key"

    def key_path(self) -> Path:
        """The key file's absolute path (`ConfigError` when the key is empty)."""
        path = _repo_path(self.key_file)
        if path is None:
            raise ConfigError(
                "signing.key_file must name the job's Ed25519 private key (PEM); "
                "create one with `fedstream keygen --out DIR`"
            )
        return path

    def check(self) -> str:
        """Load the key once, before Flink starts; its key id, or `ConfigError` naming
        the key and the file (never its contents) when it is missing or not Ed25519 PEM."""
        from fedstream.schemas.signing import SigningKeyError, load_signing_key

        try:
            return load_signing_key(self.key_path()).key_id
        except SigningKeyError as error:
            raise ConfigError(f"signing.key_file: {error}") from None


@dataclass(frozen=True)
class TrustConfig:
    """[trust]: whose records the job believes (schemas/README.md, "Signed updates" and
    "Signed registrations").

    Secure by default. Every update must be signed by its device's ACTIVE key in the
    device registry (`topics.devices`), else it is dead-lettered as UNAUTHENTICATED
    before anything else looks at it; a release's lineage device_ids are then verified
    identities. `allow_unsigned_updates = true` is the opt-out for legacy fleets: unsigned
    updates are accepted and their device ids in lineage are only what the devices
    claimed (a signed update is still verified). A registration creates a model and
    decides what its devices install, so the job acts only on registrations signed by one
    of `owner_keys` (PEM Ed25519 public keys of the model owners) and refuses the rest as
    UNAUTHENTICATED; a model belongs to the key that registered it.
    `allow_unsigned_registrations = true` turns that off for a closed test bed (Kafka ACLs
    are then the only fence).
    """

    allow_unsigned_updates: bool = False
    # how long an update of a device with no registry entry yet waits for one (the
    # registry and the updates are different topics: nothing orders them); 0: no wait
    registration_grace_ms: int = 10_000
    # at most this many updates wait per device; the next ones are refused at once
    max_pending_per_device: int = 16
    # PEM public keys of the model owners (relative to the repository root, or absolute)
    owner_keys: list[str] = field(
        default_factory=lambda: ["infra/local/.run/signing/owner-signing.pub"]
    )
    allow_unsigned_registrations: bool = False

    def owner_key_paths(self) -> list[Path] | None:
        """The owner key files, or None when unsigned registrations are accepted."""
        if self.allow_unsigned_registrations:
            return None
        paths = [_repo_path(p) for p in self.owner_keys]
        if not paths or None in paths:
            raise ConfigError(
                "trust.owner_keys must name the model owners' public keys (PEM); create a "
                "pair with `fedstream keygen --owner --out DIR`"
            )
        return [p for p in paths if p is not None]

    def check(self) -> list[str]:
        """Load the owner keys once, before Flink starts: their key ids (empty when unsigned
        registrations are accepted), or `ConfigError` naming the file that is wrong."""
        from fedstream.schemas.signing import SigningKeyError, TrustedKeys

        paths = self.owner_key_paths()
        try:
            return [] if paths is None else TrustedKeys.from_files(*paths).key_ids
        except SigningKeyError as error:
            raise ConfigError(f"trust.owner_keys: {error}") from None


@dataclass(frozen=True)
class MetricsConfig:
    """[metrics]: the job's Prometheus endpoint (Flink's reporter, `flink-metrics-prometheus`,
    a plugin resolved by infra/local/pom.xml): Flink's own metrics and fedstream's per
    model (`fedstream.pipelines.job_metrics`), at http://<host>:<port>/metrics.

    Set by the job for its local mini-cluster (`fedstream run`, the demo, the tests); a
    standalone cluster reports from its own configuration (infra/local/flink.sh,
    FEDSTREAM_FLINK_METRICS_PORT), where reporters are the cluster's, not a job's."""

    # a port, or a range "9249-9259" (the first free one is taken); "" = no endpoint (the
    # default without a config file; jobs/config/local.toml sets 9249)
    prometheus_port: str = ""

    def ports(self) -> tuple[int, int] | None:
        """(first, last) port, or None when the endpoint is off."""
        text = self.prometheus_port.strip()
        if not text:
            return None
        first, _, last = text.partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            low, high = 0, -1
        if not 1 <= low <= high <= 65535:
            raise ConfigError(
                "metrics.prometheus_port must be a port, a range like 9249-9259, or empty "
                f"(no endpoint), got {self.prometheus_port!r}"
            )
        return low, high


@dataclass(frozen=True)
class JobConfig:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def __post_init__(self) -> None:
        _validate(self)

    def with_overrides(self, overrides: dict[str, Any]) -> JobConfig:
        """A copy with dotted keys replaced: {"kafka.bootstrap": "host:9092"}."""
        sections = {f.name: dataclasses.asdict(getattr(self, f.name)) for f in _fields(self)}
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if section not in sections or key not in sections[section]:
                raise ConfigError(f"unknown configuration key {dotted!r}")
            current = sections[section][key]
            if isinstance(current, list) and isinstance(value, str):
                value = [item for item in value.split(",") if item]  # a,b on a command line
            elif isinstance(current, bool):
                value = _boolean(dotted, value)
            elif isinstance(current, str) and isinstance(value, int):
                value = str(value)  # a port typed on a command line reads as a number
            elif isinstance(current, int | float) and isinstance(value, str):
                kind = type(current)
                try:  # overrides typed on a command line arrive as text
                    value = kind(value)
                except ValueError:
                    noun = "an integer" if kind is int else "a number"
                    raise ConfigError(f"{dotted} must be {noun}, got {value!r}") from None
            sections[section][key] = value
        return from_dict(sections)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: dataclasses.asdict(getattr(self, f.name)) for f in _fields(self)}


_SECTIONS: dict[str, type] = {
    "kafka": KafkaConfig,
    "topics": TopicsConfig,
    "checkpoint": CheckpointConfig,
    "runtime": RuntimeConfig,
    "limits": LimitsConfig,
    "signing": SigningConfig,
    "trust": TrustConfig,
    "metrics": MetricsConfig,
}


def _boolean(name: str, value: Any) -> bool:
    """A boolean key's value: a TOML boolean, or true/false typed on a command line."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _fields(config: JobConfig) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(config)


def from_dict(data: dict[str, Any]) -> JobConfig:
    """Build and validate a JobConfig from parsed TOML (sections of key/values)."""
    sections: dict[str, Any] = {}
    for name, value in data.items():
        if name not in _SECTIONS:
            raise ConfigError(f"unknown section [{name}]; expected one of {sorted(_SECTIONS)}")
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] must be a table of keys")
        cls = _SECTIONS[name]
        known = {f.name: f for f in dataclasses.fields(cls)}
        for key, item in value.items():
            if key not in known:
                raise ConfigError(f"unknown key {name}.{key}; expected one of {sorted(known)}")
            expected = type(getattr(cls(), key))
            if expected is bool and not isinstance(item, bool):
                raise ConfigError(f"{name}.{key} must be true or false, got {item!r}")
            if expected is int and (isinstance(item, bool) or not isinstance(item, int)):
                raise ConfigError(f"{name}.{key} must be an integer, got {item!r}")
            if expected is float and (isinstance(item, bool) or not isinstance(item, int | float)):
                raise ConfigError(f"{name}.{key} must be a number, got {item!r}")
            if expected is str and not isinstance(item, str):
                raise ConfigError(f"{name}.{key} must be a string, got {item!r}")
            if expected is list and not (
                isinstance(item, list) and all(isinstance(i, str) for i in item)
            ):
                raise ConfigError(f"{name}.{key} must be a list of strings, got {item!r}")
        sections[name] = cls(**value)
    return JobConfig(**sections)


def load(path: Path | None = None, overrides: dict[str, Any] | None = None) -> JobConfig:
    """Read a TOML config file (default: jobs/config/local.toml) and apply overrides."""
    source = path or DEFAULT_CONFIG
    try:
        with source.open("rb") as handle:
            parsed = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {source} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {source} is not valid TOML: {error}") from None
    config = from_dict(parsed)
    return config.with_overrides(overrides) if overrides else config


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


def _validate_message_sizes(config: JobConfig) -> None:
    """Every dead letter and every release must fit its topic, whatever the input."""
    topics, limits = config.topics, config.limits
    if topics.dlq_max_message_bytes < 64 * 1024:
        raise ConfigError(
            "topics.dlq_max_message_bytes must be >= 65536 (a dead letter's texts alone "
            f"may take 32 KiB), got {topics.dlq_max_message_bytes}"
        )
    # a release lists an id (+ a device id) for every update of its window
    lineage = 2 * limits.max_window_updates * (limits.max_id_length + 8)
    if topics.models_max_message_bytes < lineage + 64 * 1024:
        raise ConfigError(
            f"topics.models_max_message_bytes ({topics.models_max_message_bytes}) must exceed "
            f"the largest lineage ({lineage} bytes at limits.max_window_updates x "
            "limits.max_id_length) by 64 KiB"
        )


def _validate_security(kafka: KafkaConfig) -> None:
    """The security keys' values (files are checked when a client needs them)."""
    if kafka.security_protocol not in _SECURITY_PROTOCOLS:
        raise ConfigError(
            f"kafka.security_protocol must be one of {', '.join(_SECURITY_PROTOCOLS)}, "
            f"got {kafka.security_protocol!r}"
        )
    if kafka.sasl_mechanism not in _SASL_MECHANISMS:
        raise ConfigError(
            f"kafka.sasl_mechanism must be one of {', '.join(_SASL_MECHANISMS)}, "
            f"got {kafka.sasl_mechanism!r}"
        )
    if kafka.security_protocol.startswith("SASL_") and not kafka.username:
        raise ConfigError(f"kafka.username must not be empty with {kafka.security_protocol}")


def _validate(config: JobConfig) -> None:
    kafka, topics, checkpoint, runtime = (
        config.kafka,
        config.topics,
        config.checkpoint,
        config.runtime,
    )
    if not kafka.bootstrap or any(":" not in s for s in kafka.bootstrap.split(",")):
        raise ConfigError(f"kafka.bootstrap must be host:port[,host:port], got {kafka.bootstrap!r}")
    for name in ("group_id", "transactional_id_prefix"):
        if not getattr(kafka, name):
            raise ConfigError(f"kafka.{name} must not be empty")
    _validate_security(kafka)
    config.metrics.ports()
    names = {"updates": topics.updates, "control": topics.control}
    names |= {"models": topics.models, "dlq": topics.dlq, "devices": topics.devices}
    for key, value in names.items():
        if not value:
            raise ConfigError(f"topics.{key} must not be empty")
    if len(set(names.values())) != len(names):
        raise ConfigError(f"topics must be five distinct names, got {names}")
    _positive("topics.partitions", topics.partitions)
    _positive("topics.models_max_message_bytes", topics.models_max_message_bytes)
    _positive("topics.updates_max_message_bytes", topics.updates_max_message_bytes)
    _validate_message_sizes(config)
    _positive("checkpoint.interval_ms", checkpoint.interval_ms)
    if checkpoint.backend not in ("hashmap", "rocksdb"):
        raise ConfigError(
            f"checkpoint.backend must be hashmap or rocksdb, got {checkpoint.backend!r}"
        )
    if checkpoint.mode != "EXACTLY_ONCE":
        raise ConfigError("checkpoint.mode must be EXACTLY_ONCE (releases rely on it)")
    if "://" not in checkpoint.dir:
        raise ConfigError(f"checkpoint.dir must be a URI (file:///...), got {checkpoint.dir!r}")
    # The sink's transactions stay open from one checkpoint to the next: a timeout shorter
    # than a few intervals would abort them under load and lose releases.
    if kafka.transaction_timeout_ms < 3 * checkpoint.interval_ms + runtime.restart_delay_ms:
        raise ConfigError(
            "kafka.transaction_timeout_ms must exceed 3 checkpoint intervals plus the restart "
            f"delay ({kafka.transaction_timeout_ms} ms is too short)"
        )
    _positive("runtime.parallelism", runtime.parallelism)
    if runtime.python_execution_mode not in ("thread", "process"):
        raise ConfigError(
            f"runtime.python_execution_mode must be thread or process, "
            f"got {runtime.python_execution_mode!r}"
        )
    if runtime.restart_attempts < 0:
        raise ConfigError("runtime.restart_attempts must be >= 0")
    _positive("runtime.dedupe_versions", runtime.dedupe_versions)
    if runtime.sequence_window < 8 or runtime.sequence_window % 8:
        raise ConfigError(
            f"runtime.sequence_window must be a multiple of 8 >= 8, got {runtime.sequence_window}"
        )
    if runtime.live_models < 0:
        raise ConfigError("runtime.live_models must be >= 0")
    if runtime.window_writes not in ("checkpoint", "update"):
        raise ConfigError(
            f"runtime.window_writes must be checkpoint or update, got {runtime.window_writes!r}"
        )
    if not 1 <= runtime.model_shards <= MAX_MODEL_SHARDS:
        raise ConfigError(
            f"runtime.model_shards must be in 1..{MAX_MODEL_SHARDS}, got {runtime.model_shards}"
        )
    _positive("runtime.shard_flush_ms", runtime.shard_flush_ms)
    if config.trust.registration_grace_ms < 0:
        raise ConfigError("trust.registration_grace_ms must be >= 0")
    _positive("trust.max_pending_per_device", config.trust.max_pending_per_device)
