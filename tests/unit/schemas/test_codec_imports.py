"""The codec is vendored into the edge SDK: it must import nothing heavy or server-side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("pyflink", "kafka", "torch", "onnx", "onnxruntime", "avro", "apache_beam", "pandas")


def test_import_pulls_in_only_fastavro_and_numpy() -> None:
    code = (
        "import sys, json, fedstream.schemas as s; "
        "s.default_registry(); "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    top_level = set(json.loads(out.stdout))
    assert not top_level & set(FORBIDDEN)
    assert {"fastavro", "numpy"} <= top_level


def test_fedstream_is_a_namespace_package() -> None:
    schemas_root = Path(__file__).resolve().parents[3] / "schemas"
    assert not (schemas_root / "fedstream" / "__init__.py").exists()
    assert (schemas_root / "fedstream" / "schemas" / "__init__.py").exists()
