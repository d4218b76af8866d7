"""Key files a loader must refuse: a readable PEM private key that is not Ed25519."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key


def write_ec_key(path: Path) -> Path:
    """An unencrypted PKCS#8 P-256 private key at `path` (well-formed, wrong algorithm)."""
    path.write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path
