"""fedstream's device SDK: take part in federated learning from a device.

Inference-only API (numpy, fastavro, kafka-python, onnxruntime; no torch)::

    from fedstream.edge import EdgeClient, EdgeConfig

    security = KafkaSecurity(username="cam-17", password_file="/etc/fedstream/kafka.password",
                             ca_file="/etc/fedstream/ca.pem")    # or KafkaSecurity.from_env()
    trusted = TrustedKeys.from_files("/etc/fedstream/job-signing.pub")  # the job's key(s)
    config = EdgeConfig(bootstrap="broker:9092", security=security, trusted_keys=trusted)
    with EdgeClient(config, device_id="cam-17", model_id="digits") as client:
        client.wait_for_model(timeout_s=30)       # newest release, signature and digest
                                                  # checked, installed
        logits = client.predict(batch)            # lock-free; hot-swapped on refresh()
        client.refresh()                          # install a newer release if there is one

Training devices add `fedstream.edge.training` (``pip install 'fedstream-edge[train]'``):
`register_torch_model`, `LocalTrainer` (local SGD, delta against the base release) and
`EdgeClient.send_update` (compression with error feedback, idempotent producer,
deterministic update ids). `fedstream.edge.simulator` runs a whole fleet.

Every failure is an `EdgeError`: `AuthenticationError` (refused credentials, untrusted
broker certificate), `BrokerUnavailableError`, `TopicNotFoundError`,
`PayloadTooLargeError`, `UnknownModelError`, `DigestMismatchError`,
`InvalidSignatureError` (unsigned, untrusted or forged release: never installed), ...

The SDK never imports fedstream.pipelines or fedstream.jobs (the server side), only the
wire contract `fedstream.schemas`, which it ships with.
"""

from fedstream.edge.client import EdgeClient, SentUpdate
from fedstream.edge.compression import Compression, DeltaCompressor, PreparedDelta
from fedstream.edge.config import EdgeConfig
from fedstream.edge.connection import check_broker
from fedstream.edge.errors import (
    AuthenticationError,
    BrokerUnavailableError,
    DeliveryError,
    DigestMismatchError,
    EdgeError,
    InvalidReleaseError,
    InvalidSignatureError,
    ModelMismatchError,
    NoModelLoadedError,
    PayloadTooLargeError,
    TopicNotFoundError,
    UnknownModelError,
)
from fedstream.edge.identity import RoundCounter, make_update_id
from fedstream.edge.producer import Delivery, RecordProducer
from fedstream.edge.releases import Release, ReleaseAssembler, ReleaseReader
from fedstream.edge.runtime import LoadedModel, ModelRuntime, Prediction
from fedstream.edge.security import KafkaSecurity, SecurityConfigError
from fedstream.edge.stats import DeviceStats
from fedstream.schemas.registration import registration_record
from fedstream.schemas.signing import TrustedKeys

__all__ = [
    "AuthenticationError",
    "BrokerUnavailableError",
    "Compression",
    "Delivery",
    "DeliveryError",
    "DeltaCompressor",
    "DeviceStats",
    "DigestMismatchError",
    "EdgeClient",
    "EdgeConfig",
    "EdgeError",
    "InvalidReleaseError",
    "InvalidSignatureError",
    "KafkaSecurity",
    "LoadedModel",
    "ModelMismatchError",
    "ModelRuntime",
    "NoModelLoadedError",
    "PayloadTooLargeError",
    "Prediction",
    "PreparedDelta",
    "RecordProducer",
    "Release",
    "ReleaseAssembler",
    "ReleaseReader",
    "RoundCounter",
    "SecurityConfigError",
    "SentUpdate",
    "TopicNotFoundError",
    "TrustedKeys",
    "UnknownModelError",
    "check_broker",
    "make_update_id",
    "registration_record",
]
