"""[trust]: the job acts only on registrations signed by the owner keys it is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedstream.jobs.config import ConfigError, JobConfig, from_dict, load
from fedstream.schemas.signing import write_key_pair


def test_by_default_the_local_owner_key_is_required() -> None:
    trust = load().trust
    assert trust.allow_unsigned_registrations is False
    assert trust.owner_keys == ["infra/local/.run/signing/owner-signing.pub"]


def test_owner_keys_load_and_name_their_key_ids(tmp_path: Path) -> None:
    _, first, first_id = write_key_pair(tmp_path, "a")
    _, second, second_id = write_key_pair(tmp_path, "b")
    config = JobConfig().with_overrides({"trust.owner_keys": f"{first},{second}"})
    assert config.trust.check() == sorted([first_id, second_id])


def test_a_missing_or_wrong_owner_key_file_is_a_config_error(tmp_path: Path) -> None:
    missing = JobConfig().with_overrides({"trust.owner_keys": str(tmp_path / "nope.pub")})
    with pytest.raises(ConfigError, match=r"trust.owner_keys: .*nope.pub"):
        missing.trust.check()
    private, _, _ = write_key_pair(tmp_path, "x")
    wrong = JobConfig().with_overrides({"trust.owner_keys": str(private)})
    with pytest.raises(ConfigError, match="not a PEM public key"):
        wrong.trust.check()
    with pytest.raises(ConfigError, match="must name the model owners"):
        JobConfig().with_overrides({"trust.owner_keys": []}).trust.check()


def test_unsigned_registrations_are_an_explicit_choice() -> None:
    config = JobConfig().with_overrides({"trust.allow_unsigned_registrations": "true"})
    assert config.trust.owner_key_paths() is None and config.trust.check() == []
    with pytest.raises(ConfigError, match="must be true or false"):
        JobConfig().with_overrides({"trust.allow_unsigned_registrations": "yes"})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("owner_keys", "a.pub", "must be a list of strings"),
        ("owner_keys", [1], "must be a list of strings"),
        ("allow_unsigned_registrations", 1, "must be true or false"),
        ("owner", [], "unknown key trust.owner"),
    ],
)
def test_bad_trust_values_are_refused(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict({"trust": {key: value}})
