"""Our bytes, read and re-written by the Java reference implementation (avro-tools 1.12.2).

This is the independent check of the wire contract: fastavro writing and reading its own
bytes proves little. For every sample record (every record type, every tensor encoding)
the Java side:

* renders our body as JSON with avro-tools' ``fragtojson`` (BinaryFragmentToJsonTool), which
  we compare field by field with the record we encoded;
* turns that JSON back into binary with ``jsontofrag``, which must equal our body byte for
  byte;
* decodes our complete single-object bytes (header included) with
  ``org.apache.avro.message.BinaryMessageDecoder`` (which checks our CRC-64 fingerprint)
  and re-encodes them with ``BinaryMessageEncoder``: again byte-identical to ours;
* for a GradientUpdate written with history/1, resolves it to the current schema exactly
  as our decoder does;
* prints the fingerprint of every .avsc (``fingerprint`` tool) for comparison with ours.

All Java work runs in ONE JVM (a single-file Java program calling the avro-tools classes),
because a JVM start per call would cost about half a second each.
The jar comes from Maven (infra/local/pom.xml, ``make jars``); without it the test fails,
it never skips, so a CI without Java cannot pass silently.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedstream.schemas import HEADER_SIZE, decode, default_registry, encode
from fedstream.schemas.fingerprint import fingerprint_bytes
from tests.support.records import as_written_by

REPO = Path(__file__).resolve().parents[3]
SCHEMA_DIR = REPO / "schemas"
AVRO_TOOLS = REPO / "infra" / "local" / ".lib" / "avro" / "avro-tools-1.12.2.jar"

BATCH_JAVA = r"""
import java.io.*;
import java.nio.ByteBuffer;
import java.nio.file.*;
import java.util.*;
import org.apache.avro.Schema;
import org.apache.avro.generic.*;
import org.apache.avro.message.*;
import org.apache.avro.tool.*;

/** Runs avro-tools commands listed one per line (tab-separated) in one JVM. */
public class Batch {
  public static void main(String[] argv) throws Exception {
    for (String line : Files.readAllLines(Paths.get(argv[0]))) {
      if (line.isEmpty()) continue;
      String[] p = line.split("\t");
      String out = p[1];
      List<String> args = Arrays.asList(p).subList(2, p.length);
      int rc;
      InputStream in = System.in;
      try (PrintStream o = new PrintStream(new FileOutputStream(out));
           PrintStream e = new PrintStream(new FileOutputStream(out + ".err"))) {
        try {
          switch (p[0]) {
            case "fragtojson": rc = new BinaryFragmentToJsonTool().run(in, o, e, args); break;
            case "jsontofrag": rc = new JsonToBinaryFragmentTool().run(in, o, e, args); break;
            case "fingerprint": rc = new SchemaFingerprintTool().run(in, o, e, args); break;
            case "singleobject": rc = singleObject(o, args); break;
            default: throw new IllegalArgumentException(p[0]);
          }
        } catch (Exception ex) {
          ex.printStackTrace(e);
          rc = 99;
        }
      }
      Files.writeString(Paths.get(out + ".rc"), Integer.toString(rc));
    }
  }

  /** args: input file, current schema, older schemas... Decodes, re-encodes with current. */
  static int singleObject(PrintStream o, List<String> args) throws Exception {
    Schema current = new Schema.Parser().parse(new File(args.get(1)));
    BinaryMessageDecoder<GenericRecord> decoder =
        new BinaryMessageDecoder<>(GenericData.get(), current);
    for (String old : args.subList(2, args.size())) {
      decoder.addSchema(new Schema.Parser().parse(new File(old)));
    }
    GenericRecord record = decoder.decode(Files.readAllBytes(Paths.get(args.get(0))));
    ByteBuffer buf =
        new BinaryMessageEncoder<GenericRecord>(GenericData.get(), current).encode(record);
    byte[] bytes = new byte[buf.remaining()];
    buf.get(bytes);
    o.write(bytes);
    return 0;
  }
}
"""


@dataclass
class JavaRun:
    work: Path
    ours: dict[str, bytes]  # label -> our single-object bytes

    def output(self, name: str) -> bytes:
        rc = (self.work / f"{name}.rc").read_text()
        err = (self.work / f"{name}.err").read_text(errors="replace")
        assert rc == "0", f"avro-tools {name} failed (rc {rc}):\n{err}"
        return (self.work / name).read_bytes()


def _history_files(name: str) -> list[str]:
    return [str(v.path) for v in default_registry().history(name)]


@pytest.fixture(scope="module")
def java(tmp_path_factory: pytest.TempPathFactory, samples: dict[str, Any]) -> JavaRun:
    if not AVRO_TOOLS.is_file():
        pytest.fail(
            f"{AVRO_TOOLS} is missing: run `make jars` (resolves it with Maven from "
            "infra/local/pom.xml)"
        )
    java_bin = shutil.which("java")
    if java_bin is None:
        pytest.fail("`java` (JDK 17) is not on PATH; it is needed for the Avro interop test")
    work = tmp_path_factory.mktemp("java_avro")
    ours: dict[str, bytes] = {}
    jobs: list[list[str]] = []

    def add(label: str, name: str, data: bytes, writer_avsc: Path, history: list[str]) -> None:
        ours[label] = data
        (work / f"{label}.body").write_bytes(data[HEADER_SIZE:])
        (work / f"{label}.full").write_bytes(data)
        frag = ["--no-pretty", "--schema-file", str(writer_avsc)]
        jobs.append(["fragtojson", f"{label}.json", *frag, str(work / f"{label}.body")])
        jobs.append(["jsontofrag", f"{label}.back", *frag[1:], str(work / f"{label}.json")])
        current = str(SCHEMA_DIR / f"{name}.avsc")
        jobs.append(["singleobject", f"{label}.so", str(work / f"{label}.full"), current, *history])

    for label, (name, record) in samples.items():
        add(label, name, encode(name, record), SCHEMA_DIR / f"{name}.avsc", _history_files(name))
    _, update = samples["update-INT8"]
    v1 = default_registry().get("GradientUpdate", "1")
    old = as_written_by("GradientUpdate", "1", update)
    add(
        "update-v1",
        "GradientUpdate",
        encode("GradientUpdate", old, writer_version="1"),
        v1.path,
        _history_files("GradientUpdate"),
    )

    avsc = sorted(SCHEMA_DIR.glob("*.avsc")) + sorted(SCHEMA_DIR.glob("history/*/*.avsc"))
    for i, path in enumerate(avsc):  # one call per file: the tool shares one parser
        jobs.append(["fingerprint", f"fp{i}.txt", str(path)])

    (work / "jobs.txt").write_text("\n".join("\t".join(job) for job in jobs) + "\n")
    (work / "Batch.java").write_text(BATCH_JAVA)
    proc = subprocess.run(
        [java_bin, "-cp", str(AVRO_TOOLS), "Batch.java", "jobs.txt"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return JavaRun(work, ours)


def _names(schema: Any, found: dict[str, Any], namespace: str = "") -> None:
    if isinstance(schema, list):
        for branch in schema:
            _names(branch, found, namespace)
    elif isinstance(schema, dict):
        kind = schema["type"]
        if kind in ("record", "enum", "fixed"):
            ns = schema.get("namespace", namespace)
            found[f"{ns}.{schema['name']}"] = schema
            for field in schema.get("fields", []):
                _names(field["type"], found, ns)
        elif kind == "array":
            _names(schema["items"], found, namespace)
        elif isinstance(kind, dict | list):
            _names(kind, found, namespace)


def _from_json(schema: Any, value: Any, names: dict[str, Any]) -> Any:
    """Avro JSON encoding (as Java prints it) -> the Python value fastavro would give."""
    if isinstance(schema, str):
        if schema in names or f"io.fedstream.{schema}" in names:
            return _from_json(names.get(schema) or names[f"io.fedstream.{schema}"], value, names)
        if schema == "bytes":
            return value.encode("latin-1")  # Avro JSON: one char per byte, ISO-8859-1
        if schema == "float":
            return np.float32(value)
        return value
    if isinstance(schema, list):
        if value is None:
            return None
        ((branch, inner),) = value.items()
        return _from_json(branch, inner, names)
    kind = schema["type"]
    if kind == "record":
        return {f["name"]: _from_json(f["type"], value[f["name"]], names) for f in schema["fields"]}
    if kind == "array":
        return [_from_json(schema["items"], v, names) for v in value]
    if kind == "enum":
        return value
    return _from_json(kind, value, names)


def _normalize_floats(schema: Any, value: Any, names: dict[str, Any]) -> Any:
    """Our record with Avro floats as float32, for comparison with the Java side."""
    if isinstance(schema, str):
        target = names.get(schema) or names.get(f"io.fedstream.{schema}")
        if target is not None:
            return _normalize_floats(target, value, names)
        return np.float32(value) if schema == "float" else value
    if isinstance(schema, list):
        if value is None:
            return None
        for branch in schema:
            if branch != "null":
                return _normalize_floats(branch, value, names)
    kind = schema["type"]
    if kind == "record":
        return {
            f["name"]: _normalize_floats(f["type"], value[f["name"]], names)
            for f in schema["fields"]
        }
    if kind == "array":
        return [_normalize_floats(schema["items"], v, names) for v in value]
    if kind == "enum":
        return value
    return _normalize_floats(kind, value, names)


def _json_check(java: JavaRun, label: str, name: str, record: Any, writer: Path) -> None:
    schema = json.loads(writer.read_text())
    names: dict[str, Any] = {}
    _names(schema, names)
    rendered = json.loads(java.output(f"{label}.json").decode("utf-8"))
    assert _from_json(schema, rendered, names) == _normalize_floats(schema, record, names)


def test_fragtojson_reads_our_bodies(java: JavaRun, samples: dict[str, Any]) -> None:
    for label, (name, record) in samples.items():
        _json_check(java, label, name, record, SCHEMA_DIR / f"{name}.avsc")


def test_jsontofrag_rewrites_identical_bodies(java: JavaRun) -> None:
    for label, data in java.ours.items():
        assert java.output(f"{label}.back") == data[HEADER_SIZE:], label


def test_java_single_object_codec_round_trips_our_bytes(
    java: JavaRun, samples: dict[str, Any]
) -> None:
    for label in samples:
        assert java.output(f"{label}.so") == java.ours[label], label


def test_java_resolves_old_writer_like_we_do(java: JavaRun, samples: dict[str, Any]) -> None:
    old_bytes = java.ours["update-v1"]
    v1 = default_registry().get("GradientUpdate", "1")
    record = as_written_by("GradientUpdate", "1", samples["update-INT8"][1])
    _json_check(java, "update-v1", "GradientUpdate", record, v1.path)
    # Java: decode with history/1 registered, re-encode with the current schema.
    ours_resolved = encode("GradientUpdate", decode(old_bytes, "GradientUpdate").record)
    assert java.output("update-v1.so") == ours_resolved


def test_fingerprints_match_java(java: JavaRun) -> None:
    avsc = sorted(SCHEMA_DIR.glob("*.avsc")) + sorted(SCHEMA_DIR.glob("history/*/*.avsc"))
    registry = default_registry()
    ours = {
        v.path: v.fingerprint
        for n in registry.names
        for v in [registry.get(n), *registry.history(n)]
    }
    for i, path in enumerate(avsc):
        hex_fp, file_name = java.output(f"fp{i}.txt").decode().split()
        assert Path(file_name) == path
        # avro-tools prints the 8 header bytes (little-endian) in hex
        assert hex_fp == fingerprint_bytes(ours[path]).hex(), path.name
