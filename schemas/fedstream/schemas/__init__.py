"""fedstream's wire contract: the Avro schemas (``schemas/*.avsc``) and their codec.

Imported by the job, the pipelines and the edge SDK (which vendors it), so it depends on
nothing but the standard library, fastavro and numpy: no pyflink, kafka, torch or onnx.

Typical use::

    from fedstream.schemas import decode, encode, pack, unpack, ParameterLayout

    layout = ParameterLayout.from_registration(registration["parameters"])
    value = encode("GradientUpdate", {..., "delta": pack(layout.flatten(params), "INT8")})
    update = decode(value, expected="GradientUpdate").record
    delta = unpack(update["delta"], expected_shape=[layout.size], require_finite=True)

Every failure is a `CodecError` with a dead-letter `reason` and a `detail`.
"""

from fedstream.schemas.codec import (
    HEADER_SIZE,
    MAGIC,
    Codec,
    Decoded,
    decode,
    default_codec,
    encode,
    read_fingerprint,
)
from fedstream.schemas.compat import check_compatible
from fedstream.schemas.errors import (
    BadDtypeError,
    BadMagicError,
    BadShapeError,
    CodecError,
    DeadLetterReason,
    EncodeError,
    InvalidBodyError,
    LayoutError,
    NonFiniteError,
    ReleaseError,
    SchemaError,
    TrailingBytesError,
    TruncatedError,
    UndecodableError,
    UnknownSchemaError,
    WrongRecordTypeError,
)
from fedstream.schemas.fingerprint import crc64_avro, schema_fingerprint
from fedstream.schemas.keys import model_of_release_key, registration_key, release_key
from fedstream.schemas.layout import ParameterLayout
from fedstream.schemas.records import (
    DEAD_LETTER_TEXT_LIMIT,
    AggregationSettings,
    DeadLetter,
    DeviceKey,
    GradientUpdate,
    ModelRegistration,
    ModelRelease,
    ParameterSpec,
    ReleaseLineage,
    TensorPayload,
    UpdateMetrics,
    aggregation_from_avro,
    aggregation_to_avro,
    assemble_release,
    default_aggregation_settings,
    make_dead_letter,
    release_chunks,
)
from fedstream.schemas.registry import (
    NAMESPACE,
    SchemaRegistry,
    SchemaVersion,
    default_registry,
)
from fedstream.schemas.tensors import TensorEncoding, pack, unpack

__all__ = [
    "DEAD_LETTER_TEXT_LIMIT",
    "HEADER_SIZE",
    "MAGIC",
    "NAMESPACE",
    "AggregationSettings",
    "BadDtypeError",
    "BadMagicError",
    "BadShapeError",
    "Codec",
    "CodecError",
    "DeadLetter",
    "DeadLetterReason",
    "Decoded",
    "DeviceKey",
    "EncodeError",
    "GradientUpdate",
    "InvalidBodyError",
    "LayoutError",
    "ModelRegistration",
    "ModelRelease",
    "NonFiniteError",
    "ParameterLayout",
    "ParameterSpec",
    "ReleaseError",
    "ReleaseLineage",
    "SchemaError",
    "SchemaRegistry",
    "SchemaVersion",
    "TensorEncoding",
    "TensorPayload",
    "TrailingBytesError",
    "TruncatedError",
    "UndecodableError",
    "UnknownSchemaError",
    "UpdateMetrics",
    "WrongRecordTypeError",
    "aggregation_from_avro",
    "aggregation_to_avro",
    "assemble_release",
    "check_compatible",
    "crc64_avro",
    "decode",
    "default_aggregation_settings",
    "default_codec",
    "default_registry",
    "encode",
    "make_dead_letter",
    "model_of_release_key",
    "pack",
    "read_fingerprint",
    "registration_key",
    "release_chunks",
    "release_key",
    "schema_fingerprint",
    "unpack",
]
