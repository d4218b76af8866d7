"""Kafka record keys of the control and models topics, which are compacted.

Compaction keeps the newest record of each key, forever; so the keys decide what survives:

- a registration (control topic) is keyed by its ``model_id``: each model's registration
  stays, a re-sent one replaces its identical copy;
- a release is chunked (`release_chunks`: ``chunk_index`` of ``chunk_count``) when larger
  than a record. Keyed by ``model_id`` alone, compaction would keep only the last chunk of
  the newest release, a file nobody can reassemble. So each chunk is keyed
  ``<model_id>#<chunk_index>``: compaction keeps every chunk of the newest release, and
  drops the same chunk of every older one. (A chunk whose index the newest release does
  not reach, left by an older release that had more chunks, survives too; readers skip
  it: its version has no complete set.)

In a release key the model id is what precedes the LAST ``#`` (the index is digits only),
so any model id, ``#`` included, round-trips. Partitioning is by model id (murmur2,
Kafka's default on the key ``model_id``): in the job, the Java class
`io.fedstream.flink.ModelPartitioner` (jobs/java), so that all chunks of a model stay in
one partition, in order.
"""

from __future__ import annotations

__all__ = ["model_of_release_key", "registration_key", "release_key"]

_SEPARATOR = b"#"


def registration_key(model_id: str) -> bytes:
    """The key of a ModelRegistration record: the model id (UTF-8)."""
    return model_id.encode()


def release_key(model_id: str, chunk_index: int) -> bytes:
    """The key of one ModelRelease chunk record: ``<model_id>#<chunk_index>``."""
    if chunk_index < 0:
        raise ValueError(f"chunk_index must be >= 0, got {chunk_index}")
    return model_id.encode() + _SEPARATOR + str(chunk_index).encode()


def model_of_release_key(key: bytes) -> str:
    """The model id of a release key (what the partitioner hashes); `ValueError` for a
    key that is not ``<model_id>#<digits>``."""
    head, separator, tail = key.rpartition(_SEPARATOR)
    if not separator or not tail.isdigit():
        raise ValueError(f"not a release key: {key!r}")
    return head.decode()
