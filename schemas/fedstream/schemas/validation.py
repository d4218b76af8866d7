"""Checks a Python record against an Avro schema before fastavro writes it.

Why not fastavro's writer alone: it silently writes 2**40 or 1.5 into an Avro ``int`` (a
different number on the wire) and ``"x"`` or ``None`` into a ``boolean``. Why not
``fastavro.validation.validate``: it builds an exception object, JSON message included,
for every union branch that does not match, so it cost ~40 us for an 8-parameter
GradientUpdate, 4x the encoding itself. This validator is
compiled once per schema into closures that return the first problem as a readable
message naming the field path, or None; it covers exactly the Avro features our .avsc
files may use (records, enums, arrays, maps, unions, primitives) and refuses the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Check", "compile_validator"]

#: Returns None if `value` fits, else a message; `path` names the value in that message.
Check = Callable[[Any, str], str | None]

_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _primitive(kind: str) -> Check:
    if kind == "null":
        return lambda v, p: None if v is None else f"{p}={_show(v)} is not null"
    if kind == "boolean":
        return lambda v, p: None if isinstance(v, bool) else f"{p}={_show(v)} is not a boolean"
    if kind in _RANGES:
        low, high = _RANGES[kind]

        def check_integer(v: Any, p: str) -> str | None:
            if not isinstance(v, int) or isinstance(v, bool):
                return f"{p}={_show(v)} is not an Avro {kind} (needs an integer)"
            if not low <= v <= high:
                return f"{p}={v} is out of the Avro {kind} range"
            return None

        return check_integer
    if kind in ("float", "double"):
        return lambda v, p: (
            None
            if isinstance(v, int | float) and not isinstance(v, bool)
            else f"{p}={_show(v)} is not an Avro {kind} (needs a number)"
        )
    if kind == "string":
        return lambda v, p: None if isinstance(v, str) else f"{p}={_show(v)} is not a string"
    if kind == "bytes":
        return lambda v, p: (
            None if isinstance(v, bytes | bytearray) else f"{p}={_show(v)} is not bytes"
        )
    raise ValueError(f"unsupported Avro type {kind!r}")


class _Compiler:
    def __init__(self) -> None:
        self.named: dict[str, Check] = {}

    def compile(self, schema: Any, namespace: str | None) -> Check:
        if isinstance(schema, list):
            return self.union([self.compile(branch, namespace) for branch in schema], schema)
        if isinstance(schema, str):
            if schema in self.named:
                return self.named[schema]
            full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
            if full in self.named:
                return self.named[full]
            return _primitive(schema)
        kind = schema["type"]
        if isinstance(kind, dict | list):
            return self.compile(kind, namespace)
        if kind in ("record", "enum"):
            name = str(schema["name"])
            ns = schema.get("namespace", namespace)
            full = name if "." in name or not ns else f"{ns}.{name}"
            if kind == "enum":
                check = self.enum(list(schema["symbols"]))
            else:
                check = self.record(schema, full.rpartition(".")[0] or None, full)
            self.named[full] = check
            return check
        if kind == "array":
            return self.array(self.compile(schema["items"], namespace))
        if kind == "map":
            return self.map(self.compile(schema["values"], namespace))
        if isinstance(kind, str) and kind in self.named:
            return self.named[kind]
        return _primitive(str(kind))

    def record(self, schema: Mapping[str, Any], namespace: str | None, full: str) -> Check:
        fields: list[tuple[str, Check]] = []
        names: frozenset[str] = frozenset(f["name"] for f in schema["fields"])

        def check_record(v: Any, p: str) -> str | None:
            if not isinstance(v, Mapping):
                return f"{p}={_show(v)} is not a {full.rpartition('.')[2]} record (a mapping)"
            for name, check in fields:
                if name not in v:
                    return f"{p}.{name} is missing"
                problem = check(v[name], f"{p}.{name}")
                if problem is not None:
                    return problem
            if len(v) != len(fields):
                extra = sorted(str(k) for k in v if k not in names)
                return f"{p} has fields the schema does not: {extra}"
            return None

        # Register before compiling the fields, so a recursive type finds itself.
        self.named[full] = check_record
        for f in schema["fields"]:
            fields.append((str(f["name"]), self.compile(f["type"], namespace)))
        return check_record

    @staticmethod
    def enum(symbols: list[str]) -> Check:
        allowed = frozenset(symbols)
        return lambda v, p: (
            None
            if isinstance(v, str) and v in allowed
            else f"{p}={_show(v)} is not one of {symbols}"
        )

    @staticmethod
    def array(items: Check) -> Check:
        def check_array(v: Any, p: str) -> str | None:
            if not isinstance(v, list | tuple):
                return f"{p}={_show(v)} is not an array (a list)"
            for i, item in enumerate(v):
                problem = items(item, f"{p}[{i}]")
                if problem is not None:
                    return problem
            return None

        return check_array

    @staticmethod
    def map(values: Check) -> Check:
        def check_map(v: Any, p: str) -> str | None:
            if not isinstance(v, Mapping):
                return f"{p}={_show(v)} is not a map (a mapping)"
            for key, item in v.items():
                if not isinstance(key, str):
                    return f"{p} has a non-string key {_show(key)}"
                problem = values(item, f"{p}[{key!r}]")
                if problem is not None:
                    return problem
            return None

        return check_map

    @staticmethod
    def union(branches: list[Check], schema: list[Any]) -> Check:
        non_null = [b for b, s in zip(branches, schema, strict=True) if s != "null"]
        nullable = len(non_null) < len(branches)

        def check_union(v: Any, p: str) -> str | None:
            if v is None and nullable:
                return None
            problems = [b(v, p) for b in non_null]
            if any(problem is None for problem in problems):
                return None
            if len(non_null) == 1:  # optional field: say what is wrong with the value
                return problems[0]
            return f"{p}={_show(v)} matches no branch of the union {schema}"

        return check_union


def compile_validator(schema: Mapping[str, Any]) -> Check:
    """Compile a JSON schema (as in an .avsc file) into a `Check`.

    Raises ValueError for Avro features the contract does not use (``fixed``).
    """
    return _Compiler().compile(schema, None)
