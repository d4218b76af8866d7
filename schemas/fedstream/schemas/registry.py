"""Loads the .avsc files (current and historical) and indexes them by fingerprint.

Where the files are: in a source checkout they are the top of the ``schemas/`` folder, three
levels above this file (``schemas/fedstream/schemas/registry.py``); in an installed wheel
they are packaged next to this module in ``avsc/``. The packaged folder wins when it exists,
so an installed copy never picks up stray files from site-packages. There is deliberately no
copy of the .avsc files in the source tree: the build copies them into the wheel.

Layout of a schema folder::

    GradientUpdate.avsc, ModelRelease.avsc, ...   the current schemas, one record per file,
                                                   file stem == record name
    history/<n>/<Record>.avsc                      earlier versions (n = 1, 2, ...), read-only

A reader accepts data written with any of these (historical data is resolved to the current
schema) and rejects every other fingerprint. Loading fails fast (`SchemaError`) on anything
inconsistent: a file whose name is not its record, a shared named type (TensorPayload)
that differs between files, a historical version the current schema cannot read.

No logical types: implementations disagree on whether ``logicalType`` belongs in the
Parsing Canonical Form (Java and fastavro drop it; the ``avro`` Python package 1.12.2 and
older Rust releases keep it), so an annotated schema would have a different fingerprint in
different languages and single-object readers would reject each other's data. Loading
refuses them; timestamps are plain ``long`` milliseconds (see schemas/README.md).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro import parse_schema

from fedstream.schemas.errors import SchemaError
from fedstream.schemas.fingerprint import canonical_form, schema_fingerprint
from fedstream.schemas.validation import Check, compile_validator

__all__ = [
    "NAMESPACE",
    "SchemaRegistry",
    "SchemaVersion",
    "default_registry",
    "default_schema_dir",
]

#: Avro namespace of every fedstream record.
NAMESPACE = "io.fedstream"

_NAMED = ("record", "enum", "fixed", "error")


@dataclass(frozen=True, eq=False)
class SchemaVersion:
    """One schema file: current (`version` None) or historical (`version` "1", "2", ...)."""

    name: str
    """Short record name, e.g. ``GradientUpdate``."""
    version: str | None
    path: Path
    schema: Mapping[str, Any] = field(repr=False)
    """The JSON exactly as in the file (with docs and defaults)."""
    fingerprint: int
    parsed: Any = field(repr=False)
    """fastavro's parsed schema, for reading and writing."""
    validator: Check = field(repr=False)
    """Checks a record before it is written (see `validation`)."""

    @property
    def full_name(self) -> str:
        return f"{NAMESPACE}.{self.name}"

    @property
    def field_names(self) -> tuple[str, ...]:
        """The record's top-level fields, in schema order."""
        return tuple(str(f["name"]) for f in self.schema["fields"])

    def project(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """`record` cut to this version's fields: what a writer of this version wrote."""
        return {name: record[name] for name in self.field_names if name in record}

    @property
    def header(self) -> bytes:
        """The 10-byte single-object header for data written with this schema."""
        return b"\xc3\x01" + self.fingerprint.to_bytes(8, "little")


def default_schema_dir() -> Path:
    """The folder holding the current .avsc files (packaged ``avsc/`` first, then source)."""
    here = Path(__file__).resolve()
    candidates = (here.parent / "avsc", here.parents[2])
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.avsc")):
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise SchemaError(
        f"no .avsc files found (looked in {tried}); the Avro schemas are part of the "
        "source tree (schemas/*.avsc) and must be packaged into fedstream/schemas/avsc/ "
        "in a wheel"
    )


def _has_key(node: Any, key: str) -> bool:
    if isinstance(node, dict):
        return key in node or any(_has_key(v, key) for v in node.values())
    if isinstance(node, list):
        return any(_has_key(v, key) for v in node)
    return False


def _named_types(schema: Any, namespace: str | None = None) -> Iterator[tuple[str, Any]]:
    """Yield (full name, definition) of every named type defined inside `schema`."""
    if isinstance(schema, list):
        for branch in schema:
            yield from _named_types(branch, namespace)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind in _NAMED:
        name = str(schema["name"])
        ns = schema.get("namespace", namespace)
        full = name if "." in name or not ns else f"{ns}.{name}"
        yield full, schema
        namespace = full.rpartition(".")[0] or None
        for f in schema.get("fields", []):
            yield from _named_types(f.get("type"), namespace)
    elif kind in ("array", "map"):
        yield from _named_types(schema.get("items", schema.get("values")), namespace)
    elif isinstance(kind, dict | list):
        yield from _named_types(kind, namespace)


def _load_file(path: Path, version: str | None) -> SchemaVersion:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"cannot read schema {path}: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise SchemaError(f"{path}: top level must be a record schema")
    if schema.get("namespace") != NAMESPACE or "." in str(schema.get("name", "")):
        raise SchemaError(f"{path}: record must be in namespace {NAMESPACE!r} with a short name")
    if _has_key(schema, "logicalType"):
        raise SchemaError(
            f"{path}: uses a logicalType; logical types make the fingerprint depend on the "
            "Avro implementation (see schemas/README.md), use a plain type and document units"
        )
    if schema["name"] != path.stem:
        raise SchemaError(f"{path}: file name must be the record name {schema['name']!r}")
    try:
        parsed = parse_schema(schema, named_schemas={})
        fingerprint = schema_fingerprint(schema)
        validator = compile_validator(schema)
    except Exception as exc:  # fastavro raises several unrelated types for a bad schema
        raise SchemaError(f"{path}: invalid Avro schema: {exc}") from exc
    return SchemaVersion(
        name=str(schema["name"]),
        version=version,
        path=path,
        schema=schema,
        fingerprint=fingerprint,
        parsed=parsed,
        validator=validator,
    )


class SchemaRegistry:
    """The current schemas plus their history, indexed by name and by fingerprint.

    Immutable after construction and safe to share between threads.
    """

    def __init__(self, current: list[SchemaVersion], history: list[SchemaVersion]) -> None:
        self._current: dict[str, SchemaVersion] = {}
        self._by_fingerprint: dict[int, SchemaVersion] = {}
        self._history: dict[str, list[SchemaVersion]] = {}
        for entry in current:
            if entry.name in self._current:
                raise SchemaError(f"record {entry.name} defined twice")
            self._current[entry.name] = entry
            self._by_fingerprint[entry.fingerprint] = entry
        self._check_shared_types(current)
        for entry in history:
            if entry.name not in self._current:
                raise SchemaError(
                    f"{entry.path}: historical schema of {entry.name}, which has no current "
                    "schema (a reader needs a current schema to resolve old data to)"
                )
            self._history.setdefault(entry.name, []).append(entry)
            known = self._by_fingerprint.get(entry.fingerprint)
            if known is None:
                self._by_fingerprint[entry.fingerprint] = entry
            elif known.name != entry.name:  # pragma: no cover - needs a 64-bit collision
                raise SchemaError(f"fingerprint collision: {known.path} and {entry.path}")

    @classmethod
    def load(cls, directory: Path | str | None = None) -> SchemaRegistry:
        """Load ``<directory>/*.avsc`` and ``<directory>/history/<n>/*.avsc``.

        Also checks (`compat.check_compatible`) that every historical version can be
        read with the current schema, so a bad schema change fails at start-up, not by
        dead-lettering every old record.
        """
        from fedstream.schemas.compat import check_compatible  # compat imports us

        root = Path(directory) if directory is not None else default_schema_dir()
        files = sorted(root.glob("*.avsc"))
        if not files:
            raise SchemaError(f"no .avsc files in {root}")
        current = [_load_file(p, None) for p in files]
        history: list[SchemaVersion] = []
        history_root = root / "history"
        if history_root.is_dir():
            dirs = [d for d in history_root.iterdir() if d.is_dir()]
            for d in dirs:
                if not d.name.isdigit():
                    raise SchemaError(f"{d}: history folders are named 1, 2, 3, ...")
            for d in sorted(dirs, key=lambda d: int(d.name)):
                history.extend(_load_file(p, d.name) for p in sorted(d.glob("*.avsc")))
        registry = cls(current, history)
        for entry in history:
            problems = check_compatible(entry.schema, registry.get(entry.name).schema)
            if problems:
                raise SchemaError(
                    f"{entry.path} cannot be read with the current {entry.name} schema: "
                    + "; ".join(problems)
                )
        return registry

    @staticmethod
    def _check_shared_types(current: list[SchemaVersion]) -> None:
        # A named type defined inline in several files must be the same type everywhere,
        # or one name would mean two things on the wire.
        seen: dict[str, tuple[Path, Any]] = {}
        for entry in current:
            for full, definition in _named_types(entry.schema):
                if full in seen:
                    path, other = seen[full]
                    if other != definition:
                        raise SchemaError(
                            f"named type {full} differs between {path.name} and "
                            f"{entry.path.name}; shared types must be identical copies"
                        )
                else:
                    seen[full] = (entry.path, definition)

    @property
    def names(self) -> tuple[str, ...]:
        """Short names of the current top-level records, sorted."""
        return tuple(sorted(self._current))

    def get(self, name: str, version: str | None = None) -> SchemaVersion:
        """The current schema of `name` (short or full name), or a historical `version`."""
        short = name.removeprefix(NAMESPACE + ".")
        entry = self._current.get(short)
        if entry is None:
            raise SchemaError(f"unknown record type {name!r}; known: {', '.join(self.names)}")
        if version is None:
            return entry
        for old in self._history.get(short, []):
            if old.version == version:
                return old
        raise SchemaError(f"no historical version {version!r} of {short}")

    def history(self, name: str) -> list[SchemaVersion]:
        """Historical versions of `name`, oldest first (may be empty)."""
        return list(self._history.get(self.get(name).name, []))

    def lookup(self, fingerprint: int) -> SchemaVersion | None:
        """The schema (current or historical) with this writer fingerprint, if any."""
        return self._by_fingerprint.get(fingerprint)

    def canonical_form(self, name: str) -> str:
        return canonical_form(self.get(name).schema)


@functools.cache
def default_registry() -> SchemaRegistry:
    """The registry of `default_schema_dir()`, loaded once per process."""
    return SchemaRegistry.load()
