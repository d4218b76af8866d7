"""The job's configuration: one validated TOML file plus command-line overrides.

Topic names, partitions, size limits, group id and bootstrap servers are configuration,
never literals in the wiring (DESIGN.md, "The contract"). Validation happens once, here,
with messages that name the key, so a bad deployment fails before any Flink machinery
starts.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# jobs/config/local.toml in the repository; fedstream/jobs/config/local.toml in the wheel
_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "config" / "local.toml",
    Path(__file__).resolve().parent / "config" / "local.toml",
)
DEFAULT_CONFIG = next((p for p in _CANDIDATES if p.is_file()), _CANDIDATES[0])


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str = "127.0.0.1:9092"
    group_id: str = "fedstream-aggregator"
    transactional_id_prefix: str = "fedstream-aggregator"
    transaction_timeout_ms: int = 900_000


@dataclass(frozen=True)
class TopicsConfig:
    updates: str = "fl.updates"
    control: str = "fl.control"
    models: str = "fl.models"
    dlq: str = "fl.dlq"
    partitions: int = 2
    models_max_message_bytes: int = 16 * 1024 * 1024
    updates_max_message_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class CheckpointConfig:
    interval_ms: int = 2000
    dir: str = "file:///tmp/fedstream/checkpoints"
    backend: str = "hashmap"
    mode: str = "EXACTLY_ONCE"


@dataclass(frozen=True)
class RuntimeConfig:
    parallelism: int = 1
    # PyFlink's thread mode (embedded CPython, pemja): 472 vs 172 updates/s for process
    # mode, 3.4 vs 9.5 ms of job CPU per update, release latency p50 2.6 vs 4.2 s
    # (bench.throughput, 100k fp32 params, 2 cores). It needs a job that never imports
    # `onnx`, whose nanobind extension aborts the JVM in pemja threads (onnx_release edits
    # the bytes itself).
    python_execution_mode: str = "thread"
    restart_attempts: int = 3
    restart_delay_ms: int = 2000
    dedupe_versions: int = 64
    # Models whose aggregator stays in Python memory between records, per subtask (each
    # about 2x its parameters); the rest are read from Flink state per record. 0 = none.
    live_models: int = 8


@dataclass(frozen=True)
class JobConfig:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

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
            if isinstance(current, int) and isinstance(value, str):
                try:  # overrides typed on a command line arrive as text
                    value = int(value)
                except ValueError:
                    raise ConfigError(f"{dotted} must be an integer, got {value!r}") from None
            sections[section][key] = value
        return from_dict(sections)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: dataclasses.asdict(getattr(self, f.name)) for f in _fields(self)}


_SECTIONS: dict[str, type] = {
    "kafka": KafkaConfig,
    "topics": TopicsConfig,
    "checkpoint": CheckpointConfig,
    "runtime": RuntimeConfig,
}


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
            if expected is int and (isinstance(item, bool) or not isinstance(item, int)):
                raise ConfigError(f"{name}.{key} must be an integer, got {item!r}")
            if expected is str and not isinstance(item, str):
                raise ConfigError(f"{name}.{key} must be a string, got {item!r}")
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
    names = {"updates": topics.updates, "control": topics.control}
    names |= {"models": topics.models, "dlq": topics.dlq}
    for key, value in names.items():
        if not value:
            raise ConfigError(f"topics.{key} must not be empty")
    if len(set(names.values())) != len(names):
        raise ConfigError(f"topics must be four distinct names, got {names}")
    _positive("topics.partitions", topics.partitions)
    _positive("topics.models_max_message_bytes", topics.models_max_message_bytes)
    _positive("topics.updates_max_message_bytes", topics.updates_max_message_bytes)
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
    if runtime.live_models < 0:
        raise ConfigError("runtime.live_models must be >= 0")
