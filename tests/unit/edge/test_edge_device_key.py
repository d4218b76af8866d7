"""EdgeConfig's device key: loaded once from a file (or $FEDSTREAM_DEVICE_KEY_FILE), with
errors that name the file and never its contents, and never shown in a repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedstream.edge import EdgeConfig, KafkaSecurity
from fedstream.schemas.signing import write_key_pair
from fedstream.schemas.update_signing import DEVICE_KEY_NAME, ENV_DEVICE_KEY
from tests.support.foreign_keys import write_ec_key

PLAIN = KafkaSecurity(protocol="PLAINTEXT")


def test_a_configured_key_is_loaded_and_its_repr_shows_no_secret(tmp_path: Path) -> None:
    private, _public, key_id = write_key_pair(tmp_path, DEVICE_KEY_NAME)
    config = EdgeConfig(security=PLAIN, device_key_file=private)
    assert config.device_signer is not None and config.device_signer.key_id == key_id
    pem = private.read_text()
    assert "PRIVATE" not in repr(config) and pem not in repr(config)
    assert key_id in repr(config.device_signer)


def test_the_key_file_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private, _, key_id = write_key_pair(tmp_path, DEVICE_KEY_NAME)
    monkeypatch.setenv(ENV_DEVICE_KEY, str(private))
    signer = EdgeConfig(security=PLAIN).device_signer
    assert signer is not None and signer.key_id == key_id
    monkeypatch.delenv(ENV_DEVICE_KEY)
    assert EdgeConfig(security=PLAIN).device_signer is None


def test_bad_key_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"device_key_file: .*missing\.key does not exist"):
        EdgeConfig(security=PLAIN, device_key_file=tmp_path / "missing.key")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key at all, secret-ish text")
    with pytest.raises(ValueError, match="not an unencrypted PEM") as info:
        EdgeConfig(security=PLAIN, device_key_file=garbage)
    assert "secret-ish" not in str(info.value)
    ec = write_ec_key(tmp_path / "ec.key")
    with pytest.raises(ValueError, match="not an Ed25519 key"):
        EdgeConfig(security=PLAIN, device_key_file=ec)
