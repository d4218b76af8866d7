"""The errors a device can get from the SDK, one class per thing that can go wrong.

A device runs unattended, so every failure must say what happened and what to check, and
none may be swallowed: the SDK raises one of these instead of logging and carrying on.
They all derive from `EdgeError`, so a device loop can catch the family in one place and
still tell a broker outage (retry later) from a payload that will never fit (fix the
configuration or compress harder).
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BrokerUnavailableError",
    "DeliveryError",
    "DigestMismatchError",
    "EdgeError",
    "InvalidReleaseError",
    "InvalidSignatureError",
    "ModelMismatchError",
    "NoModelLoadedError",
    "PayloadTooLargeError",
    "TopicNotFoundError",
    "UnknownModelError",
]


class EdgeError(Exception):
    """Base of every error raised by `fedstream.edge`."""


class BrokerUnavailableError(EdgeError):
    """No Kafka broker answered within the configured time (bootstrap, metadata or ack).

    Retriable: the device should keep its update and try again later. Because update ids
    are deterministic, a re-send of an update that did arrive is dropped by the job.
    """


class AuthenticationError(EdgeError):
    """The broker refused this client's credentials, or the client refused the broker.

    Wrong password, unknown user, a SASL mechanism the broker does not enable, a broker
    certificate the configured CA did not sign, or a security protocol the listener does
    not speak. Not retriable: the message names the setting to fix (`KafkaSecurity`).
    """


class TopicNotFoundError(EdgeError):
    """The topic does not exist on the broker (fedstream never auto-creates topics), or,
    with an authorizer, the principal has no ACL to see it: Kafka reports both the same."""


class PayloadTooLargeError(EdgeError):
    """A record is larger than the topic (or the producer) accepts.

    Not retriable: the same bytes will never fit. Compress the update (fp16, int8, top-k),
    or raise the topic's ``max.message.bytes`` and the producer's ``max_request_size``.
    """

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class DeliveryError(EdgeError):
    """The broker refused a record for a reason that retrying will not fix."""


class UnknownModelError(EdgeError):
    """No release of the model appeared within the timeout: it was never registered, its
    registration was rejected (see the dead-letter topic), or the job is not running."""


class InvalidReleaseError(EdgeError):
    """A record on the models topic could not be used as a release (undecodable, or its
    chunks disagree). The release is skipped, never installed."""


class DigestMismatchError(InvalidReleaseError):
    """A release's reassembled ONNX bytes do not match its size or SHA-256 digest: it was
    corrupted (or tampered with) and is never installed."""


class InvalidSignatureError(InvalidReleaseError):
    """A release is unsigned, signed by a key this device does not trust, or its Ed25519
    signature (RFC 8032) does not verify over its model id, version, digest and lineage:
    it may be a forgery by anyone able to write the models topic, and is never installed.
    Configure the job's public key(s) in `EdgeConfig.trusted_keys`."""


class ModelMismatchError(EdgeError):
    """A release does not fit the local model: a parameter is missing, has another shape,
    or the local model has trainable parameters the ONNX graph does not expose."""


class NoModelLoadedError(EdgeError):
    """Inference was asked for before any release was installed."""
