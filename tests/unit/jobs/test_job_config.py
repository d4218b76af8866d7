"""The job's config file: defaults, overrides and the errors an operator sees."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from fedstream.jobs.aggregation_job import parse_overrides
from fedstream.jobs.config import DEFAULT_CONFIG, ConfigError, JobConfig, from_dict, load


def test_the_shipped_local_config_loads() -> None:
    config = load(DEFAULT_CONFIG)
    assert config.topics.updates == "fl.updates"
    assert config.runtime.python_execution_mode == "thread"
    assert config.checkpoint.mode == "EXACTLY_ONCE"


def test_overrides_replace_single_keys_and_coerce_numbers() -> None:
    config = JobConfig().with_overrides({"kafka.bootstrap": "h:1", "topics.partitions": "4"})
    assert config.kafka.bootstrap == "h:1"
    assert config.topics.partitions == 4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kafka": {"bogus": 1}}, "unknown key kafka.bogus"),
        ({"nope": {}}, "unknown section [nope]"),
        ({"topics": {"partitions": "two"}}, "topics.partitions must be an integer"),
        ({"topics": {"partitions": 0}}, "topics.partitions must be > 0"),
        ({"topics": {"models": "fl.updates"}}, "five distinct names"),
        ({"kafka": {"bootstrap": "localhost"}}, "host:port"),
        ({"checkpoint": {"backend": "memory"}}, "hashmap or rocksdb"),
        ({"checkpoint": {"mode": "AT_LEAST_ONCE"}}, "must be EXACTLY_ONCE"),
        ({"checkpoint": {"dir": "/tmp/x"}}, "must be a URI"),
        ({"kafka": {"transaction_timeout_ms": 1000}}, "transaction_timeout_ms must exceed"),
        ({"runtime": {"python_execution_mode": "fast"}}, "thread or process"),
        ({"runtime": {"live_models": -1}}, "runtime.live_models must be >= 0"),
        ({"runtime": {"window_writes": "never"}}, "window_writes must be checkpoint or update"),
        ({"trust": {"allow_unsigned_updates": "yes"}}, "must be true or false"),
        ({"trust": {"registration_grace_ms": -1}}, "registration_grace_ms must be >= 0"),
        ({"trust": {"max_pending_per_device": 0}}, "max_pending_per_device must be > 0"),
        ({"topics": {"devices": "fl.dlq"}}, "five distinct names"),
        ({"runtime": {"sequence_window": 12}}, "runtime.sequence_window must be a multiple of 8"),
        ({"runtime": {"sequence_window": 0}}, "runtime.sequence_window must be a multiple of 8"),
        ({"limits": {"max_devices_per_model": 0}}, "limits.max_devices_per_model must be"),
        ({"limits": {"max_sequence": -1}}, "limits.max_sequence must be"),
        ({"runtime": {"model_shards": 0}}, "runtime.model_shards must be in 1..64"),
        ({"runtime": {"model_shards": 65}}, "runtime.model_shards must be in 1..64"),
        ({"runtime": {"shard_flush_ms": 0}}, "runtime.shard_flush_ms must be > 0"),
    ],
)
def test_invalid_values_name_the_key(data: dict[str, dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(data)


def test_signed_updates_are_required_unless_a_legacy_fleet_opts_out() -> None:
    assert load(DEFAULT_CONFIG).trust.allow_unsigned_updates is False
    assert JobConfig().trust.allow_unsigned_updates is False
    legacy = JobConfig().with_overrides({"trust.allow_unsigned_updates": "true"})
    assert legacy.trust.allow_unsigned_updates is True
    with pytest.raises(ConfigError, match="must be true or false"):
        JobConfig().with_overrides({"trust.allow_unsigned_updates": "1"})


def test_unknown_override_and_missing_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown configuration key 'kafka\.nope'"):
        JobConfig().with_overrides({"kafka.nope": 1})
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(bad)


def test_parse_overrides_requires_key_value() -> None:
    assert parse_overrides(["a.b=3", "c.d=x=y"]) == {"a.b": 3, "c.d": "x=y"}
    with pytest.raises(SystemExit, match=r"section\.key=value"):
        parse_overrides(["novalue"])


def test_retained_checkpoints_are_the_newest_runs_completed_ones(tmp_path: Path) -> None:
    from fedstream.jobs.resume import ResumeRefusedError, retained

    def config(uri: str) -> JobConfig:
        return load(overrides={"checkpoint.dir": uri})

    assert retained(config(tmp_path.as_uri())) == []
    for job, n in (("a", 3), ("a", 12), ("b", 5), ("c", 2)):
        (tmp_path / job / f"chk-{n}").mkdir(parents=True)
    for job, n in (("a", 12), ("a", 3), ("c", 2)):
        (tmp_path / job / f"chk-{n}" / "_metadata").write_bytes(b"x")
    os.utime(tmp_path / "c" / "chk-2", (500, 500))
    os.utime(tmp_path / "a" / "chk-3", (1000, 1000))
    os.utime(tmp_path / "a" / "chk-12", (2000, 2000))
    # chk-5 of job b is newer but was never completed (no _metadata): not a restore point;
    # run c is older: its checkpoint numbers may be reused by run a's transactions
    found = retained(config(tmp_path.as_uri()))
    assert [c.path for c in found] == [tmp_path / "a" / "chk-12", tmp_path / "a" / "chk-3"]
    assert [c.number for c in found] == [12, 3]
    with pytest.raises(ResumeRefusedError, match="file://"):
        retained(config("s3://bucket/checkpoints"))


# ---------------------------------------------------------------- Kafka security keys
def test_security_defaults_point_at_the_local_stack_admin() -> None:
    kafka = load(DEFAULT_CONFIG).kafka
    assert (kafka.security_protocol, kafka.sasl_mechanism, kafka.username) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "admin",
    )
    assert kafka.password_file == "infra/local/.run/kafka/credentials/admin.password"
    assert kafka.ca_file == "infra/local/.run/kafka/credentials/ca.pem"
    assert JobConfig().kafka == kafka  # the dataclass defaults are the shipped file's


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kafka": {"security_protocol": "TLS"}}, "kafka.security_protocol must be one of"),
        ({"kafka": {"sasl_mechanism": "GSSAPI"}}, "kafka.sasl_mechanism must be one of"),
        ({"kafka": {"username": ""}}, "kafka.username must not be empty with SASL_SSL"),
        ({"kafka": {"password_file": 3}}, "kafka.password_file must be a string"),
    ],
)
def test_invalid_security_values_name_the_key(
    data: dict[str, dict[str, object]], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(data)


def test_security_resolves_paths_against_the_repository_root(tmp_path: Path) -> None:
    from fedstream.jobs.config import REPO_ROOT

    password = tmp_path / "job.password"
    password.write_text("pw\n")
    config = JobConfig().with_overrides(
        {"kafka.password_file": str(password), "kafka.ca_file": "", "kafka.username": "job"}
    )
    security = config.kafka.security()
    assert security.password_file == password and security.ca_file is None
    assert security.resolve_password() == "pw"
    relative = JobConfig().with_overrides({"kafka.password_file": "no/such/file"})
    with pytest.raises(ConfigError, match=re.escape(str(REPO_ROOT / "no/such/file"))):
        relative.kafka.security()


def test_an_empty_password_file_key_takes_the_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = JobConfig().with_overrides({"kafka.password_file": "", "kafka.ca_file": ""})
    monkeypatch.delenv("FEDSTREAM_KAFKA_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="FEDSTREAM_KAFKA_PASSWORD"):
        config.kafka.security()
    monkeypatch.setenv("FEDSTREAM_KAFKA_PASSWORD", "from-env")
    assert config.kafka.security().resolve_password() == "from-env"
    assert "from-env" not in repr(config) and "from-env" not in repr(config.kafka.security())


def test_plaintext_ignores_the_credential_keys() -> None:
    config = JobConfig().with_overrides({"kafka.security_protocol": "PLAINTEXT"})
    assert config.kafka.security().kafka_python_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_limits_are_validated_with_the_key_named() -> None:
    config = JobConfig().with_overrides({"limits.max_models": "3", "limits.max_delta_norm": "10.5"})
    assert (config.limits.max_models, config.limits.max_delta_norm) == (3, 10.5)
    assert config.limits.input_limits().max_models == 3
    with pytest.raises(ConfigError, match=r"limits.max_models must be an int >= 1"):
        JobConfig().with_overrides({"limits.max_models": 0})
    with pytest.raises(ConfigError, match=r"limits.max_delta_norm must be a number"):
        JobConfig().with_overrides({"limits.max_delta_norm": "big"})
    with pytest.raises(ConfigError, match="Avro long"):
        JobConfig().with_overrides({"limits.max_num_samples": 2**62})


def test_message_sizes_must_hold_any_dead_letter_and_lineage() -> None:
    with pytest.raises(ConfigError, match="dlq_max_message_bytes must be >= 65536"):
        JobConfig().with_overrides({"topics.dlq_max_message_bytes": 1000})
    with pytest.raises(ConfigError, match="largest lineage"):
        JobConfig().with_overrides({"topics.models_max_message_bytes": 1_000_000})
