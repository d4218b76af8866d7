"""The job's release key: [signing] key_file, checked before Flink starts; `keygen`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fedstream.jobs.cli import ensure_local_keys
from fedstream.jobs.cli import main as cli
from fedstream.jobs.config import ConfigError, JobConfig, load
from fedstream.schemas.signing import TrustedKeys, load_signing_key, write_key_pair


def with_key(path: Path | str) -> JobConfig:
    return JobConfig().with_overrides({"signing.key_file": str(path)})


def test_the_local_config_names_a_key_under_the_stack_folder() -> None:
    assert load().signing.key_file == "infra/local/.run/signing/job-signing.key"


def test_a_valid_key_gives_its_id(tmp_path: Path) -> None:
    private, _public, key_id = write_key_pair(tmp_path)
    assert with_key(private).signing.check() == key_id


def test_missing_unreadable_or_foreign_keys_stop_the_job(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"signing.key_file: .* does not exist"):
        with_key(tmp_path / "nothing.key").signing.check()
    _private, public, _ = write_key_pair(tmp_path)
    with pytest.raises(ConfigError, match=r"signing.key_file: .*not an unencrypted PEM"):
        with_key(public).signing.check()  # the public half is not the job's key
    with pytest.raises(ConfigError, match=r"signing\.key_file must name"):
        with_key("").signing.check()


def test_keygen_writes_a_private_key_only_its_owner_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["keygen", "--out", str(tmp_path / "k")]) == 0
    private, public = tmp_path / "k" / "job-signing.key", tmp_path / "k" / "job-signing.pub"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    key_id = load_signing_key(private).key_id
    assert TrustedKeys.from_files(public).key_ids == [key_id]
    printed = capsys.readouterr().out
    assert key_id in printed and private.read_text().splitlines()[1] not in printed
    # never replaces a key devices already trust
    assert cli(["keygen", "--out", str(tmp_path / "k")]) == 2
    assert load_signing_key(private).key_id == key_id


def test_the_local_run_creates_its_key_once(tmp_path: Path) -> None:
    config = with_key(tmp_path / "run" / "job-signing.key")
    ensure_local_keys(config)
    key_id = config.signing.check()
    ensure_local_keys(config)  # exists: kept
    assert config.signing.check() == key_id
    with pytest.raises(ConfigError, match="does not exist"):
        ensure_local_keys(with_key(tmp_path / "elsewhere.pem"))


def test_only_the_key_path_travels_in_the_job_graph(tmp_path: Path) -> None:
    """The aggregate function is pickled into the job graph: it holds the path, and the
    key is read on the worker (`open`)."""
    import cloudpickle  # type: ignore[import-untyped]

    from fedstream.pipelines.flink_functions import AggregateFunction

    private, _public, _ = write_key_pair(tmp_path)
    graph = cloudpickle.dumps(AggregateFunction(1 << 24, 64, signing_key_file=str(private)))
    assert str(private).encode() in graph
    body = "".join(private.read_text().splitlines()[1:-1]).encode()
    assert body not in graph and body[:16] not in graph
