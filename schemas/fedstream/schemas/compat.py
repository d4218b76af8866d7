"""A structural check that a schema change keeps old and new data readable.

fastavro's schema resolution (write with the old schema, read with the new) is the real
test of backward compatibility, and the tests run it. But resolution only fails on the
data it happens to see: an enum symbol nobody used, or a union branch never taken, slips
through. This checker walks both schemas instead and reports, as readable sentences:

* a field added without a default (new readers cannot read old data: backward),
* a field removed that had no default in the old schema (old readers, e.g. devices not yet
  upgraded, cannot read new data: forward),
* enum symbols removed while the new enum has no ``default`` (old data holding them is
  unreadable),
* a type changed other than by an Avro promotion (int -> long -> float -> double,
  string <-> bytes), a renamed named type (without an alias), a fixed size changed,
* union branches of the old schema that match nothing in the new one.

It is stricter than plain backward compatibility on purpose: fedstream's producers and
consumers (devices, job) upgrade independently, so both directions matter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["check_compatible"]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
# writer type -> reader types it may be read as (Avro spec, "Schema Resolution")
_PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


@dataclass(frozen=True)
class _Node:
    kind: str  # a primitive name, "record", "enum", "fixed", "array", "map", "union"
    schema: Any
    name: str = ""  # full name of a named type
    namespace: str | None = None  # enclosing namespace for names used inside


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _collect(schema: Any, namespace: str | None, names: dict[str, _Node]) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _collect(branch, namespace, names)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in _NAMED:
            full = _full_name(str(schema["name"]), schema.get("namespace", namespace))
            ns = full.rpartition(".")[0] or None
            names[full] = _Node(str(kind), schema, full, ns)
            for f in schema.get("fields", []):
                _collect(f.get("type"), ns, names)
        elif kind in ("array", "map"):
            _collect(schema.get("items", schema.get("values")), namespace, names)
        elif isinstance(kind, dict | list):
            _collect(kind, namespace, names)


class _Checker:
    def __init__(self, old: Any, new: Any) -> None:
        self.old_names: dict[str, _Node] = {}
        self.new_names: dict[str, _Node] = {}
        _collect(old, None, self.old_names)
        _collect(new, None, self.new_names)
        self.in_progress: set[tuple[str, str]] = set()

    def node(self, schema: Any, namespace: str | None, names: Mapping[str, _Node]) -> _Node:
        if isinstance(schema, list):
            return _Node("union", schema, namespace=namespace)
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return _Node(schema, schema)
            full = _full_name(schema, namespace)
            if full in names:
                return names[full]
            if schema in names:
                return names[schema]
            return _Node("unknown", schema, full)
        if isinstance(schema, dict):
            kind = schema.get("type")
            if isinstance(kind, dict | list):
                return self.node(kind, namespace, names)
            if kind in _NAMED:
                full = _full_name(str(schema["name"]), schema.get("namespace", namespace))
                return names[full]
            if kind in _PRIMITIVES:
                return _Node(str(kind), schema)  # e.g. a logicalType annotation: ignored
            if kind in ("array", "map"):
                return _Node(str(kind), schema, namespace=namespace)
            if isinstance(kind, str):  # a named reference written as {"type": "Name"}
                return self.node(kind, namespace, names)
        return _Node("unknown", schema)

    def compare(self, w: _Node, r: _Node, path: str) -> list[str]:
        if w.kind == "union" or r.kind == "union":
            return self.compare_union(w, r, path)
        if w.kind in _PRIMITIVES and r.kind in _PRIMITIVES:
            if w.kind == r.kind or r.kind in _PROMOTIONS.get(w.kind, frozenset()):
                return []
            return [f"{path}: type changed from {w.kind} to {r.kind}"]
        if w.kind != r.kind:
            return [f"{path}: type changed from {w.name or w.kind} to {r.name or r.kind}"]
        if w.kind in _NAMED:
            aliases = {_full_name(a, r.namespace) for a in r.schema.get("aliases", [])}
            if w.name != r.name and w.name not in aliases:
                return [f"{path}: named type {w.name} renamed to {r.name} without an alias"]
            key = (w.name, r.name)
            if key in self.in_progress:  # recursive type: already being compared
                return []
            self.in_progress.add(key)
            try:
                if w.kind == "enum":
                    return self.compare_enum(w, r, path)
                if w.kind == "fixed":
                    if w.schema.get("size") != r.schema.get("size"):
                        return [f"{path}: fixed {w.name} size changed"]
                    return []
                return self.compare_record(w, r, path)
            finally:
                self.in_progress.discard(key)
        if w.kind in ("array", "map"):
            inner = "items" if w.kind == "array" else "values"
            return self.compare(
                self.node(w.schema[inner], w.namespace, self.old_names),
                self.node(r.schema[inner], r.namespace, self.new_names),
                f"{path}[]",
            )
        return [f"{path}: cannot compare {w.kind} with {r.kind}"]

    def compare_union(self, w: _Node, r: _Node, path: str) -> list[str]:
        w_branches = (
            [self.node(b, w.namespace, self.old_names) for b in w.schema]
            if w.kind == "union"
            else [w]
        )
        r_branches = (
            [self.node(b, r.namespace, self.new_names) for b in r.schema]
            if r.kind == "union"
            else [r]
        )
        problems = []
        for wb in w_branches:
            # Avro picks the first reader branch that matches; structurally, some must.
            if not any(not self.compare(wb, rb, path) for rb in r_branches):
                label = wb.name or wb.kind
                problems.append(f"{path}: old union branch {label} matches nothing in the new type")
        return problems

    def compare_enum(self, w: _Node, r: _Node, path: str) -> list[str]:
        removed = [s for s in w.schema["symbols"] if s not in r.schema["symbols"]]
        if removed and "default" not in r.schema:
            return [f"{path}: enum {r.name} removed symbols {removed} and has no default symbol"]
        return []

    def compare_record(self, w: _Node, r: _Node, path: str) -> list[str]:
        problems: list[str] = []
        w_fields = {f["name"]: f for f in w.schema["fields"]}
        matched: set[str] = set()
        for rf in r.schema["fields"]:
            names = [rf["name"], *rf.get("aliases", [])]
            wf = next((w_fields[n] for n in names if n in w_fields), None)
            field_path = f"{path}.{rf['name']}"
            if wf is None:
                if "default" not in rf:
                    problems.append(f"{field_path}: field added without a default")
                continue
            matched.add(wf["name"])
            problems += self.compare(
                self.node(wf["type"], w.namespace, self.old_names),
                self.node(rf["type"], r.namespace, self.new_names),
                field_path,
            )
        for name, wf in w_fields.items():
            if name not in matched and "default" not in wf:
                problems.append(
                    f"{path}.{name}: field removed, but it had no default in the old schema "
                    "(readers still on the old schema cannot read new data)"
                )
        return problems


def check_compatible(old: Mapping[str, Any] | Any, new: Mapping[str, Any] | Any) -> list[str]:
    """Problems that make data of `old` unreadable with `new` or vice versa; [] if none.

    Both arguments are JSON schemas as loaded from .avsc files.
    """
    checker = _Checker(old, new)
    w = checker.node(old, None, checker.old_names)
    r = checker.node(new, None, checker.new_names)
    return checker.compare(w, r, w.name.rpartition(".")[2] or w.kind)
