"""Which subtask of a keyed operator a model lands on: Flink's key-group assignment.

`key_by(model_id)` sends a model to subtask
``keyGroup * parallelism // maxParallelism`` with
``keyGroup = murmurHash(key.hashCode()) % maxParallelism`` (Flink's
`KeyGroupRangeAssignment`, `MathUtils.murmurHash`; the key is a Java String). Two models
only run in parallel if they land on different subtasks, so the parallelism benchmark
picks model ids that do (checked against Flink's own per-subtask record counts).
"""

from __future__ import annotations

__all__ = ["java_string_hash", "murmur_hash", "subtask_of"]

_MASK = 0xFFFFFFFF


def _int32(value: int) -> int:
    value &= _MASK
    return value - (1 << 32) if value & 0x80000000 else value


def _rotl(value: int, bits: int) -> int:
    value &= _MASK
    return ((value << bits) | (value >> (32 - bits))) & _MASK


def java_string_hash(text: str) -> int:
    """`String.hashCode()`: h = 31 h + c over the UTF-16 code units, in int32."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & _MASK
    return _int32(h)


def murmur_hash(code: int) -> int:
    """Flink's `MathUtils.murmurHash(int)`: non-negative."""
    h = (code * 0xCC9E2D51) & _MASK
    h = _rotl(h, 15)
    h = (h * 0x1B873593) & _MASK
    h = _rotl(h, 13)
    h = (h * 5 + 0xE6546B64) & _MASK
    h ^= 4
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    signed = _int32(h)
    if signed >= 0:
        return signed
    return -signed if signed != -(1 << 31) else 0


def subtask_of(key: str, parallelism: int, max_parallelism: int = 128) -> int:
    """The subtask index a String key is processed by (default max parallelism: 128)."""
    group = murmur_hash(java_string_hash(key)) % max_parallelism
    return group * parallelism // max_parallelism
