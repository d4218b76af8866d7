"""The model owner of the tests: one Ed25519 key pair per test session, never on disk in
the repository (a fresh temporary folder), so registrations in every tier are signed the
way the job requires by default ([trust] owner_keys)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from fedstream.schemas.registration_signing import OWNER_KEY_FILE
from fedstream.schemas.signing import ReleaseSigner, load_signing_key, write_key_pair

__all__ = ["owner_private_key", "owner_public_key", "owner_signer"]


@functools.cache
def _pair() -> tuple[Path, Path]:
    private, public, _key_id = write_key_pair(
        tempfile.mkdtemp(prefix="fedstream-owner-"), OWNER_KEY_FILE
    )
    return private, public


def owner_signer() -> ReleaseSigner:
    """The tests' model-owner signing key."""
    return load_signing_key(_pair()[0])


def owner_private_key() -> Path:
    """Its private key file ($FEDSTREAM_OWNER_KEY_FILE of the whole test session)."""
    return _pair()[0]


def owner_public_key() -> Path:
    """Its public half, for the job's trust.owner_keys."""
    return _pair()[1]
