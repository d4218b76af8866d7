"""The aggregation core stays pure: numpy (and crc32c, the C checksum of the state frame)
only; never onnx, pyflink, kafka or avro. (The thin PyFlink functions that share the
package are not the core.) `onnx_release` edits ONNX
bytes itself (`protobuf_wire`): onnx's nanobind extension aborts the JVM in PyFlink's
thread mode, so nothing the job runs may import it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "pipelines" / "fedstream" / "pipelines"
CORE = [
    "accumulator",
    "aggregator",
    "binary_format",
    "clipping",
    "config",
    "lineage",
    "model_state",
    "onnx_release",
    "optimizers",
    "privacy",
    "protobuf_wire",
    "reducers",
    "staleness",
    "update",
    "validation",
    "windows",
]
FORBIDDEN = {"onnx", "pyflink", "kafka", "avro", "fastavro", "torch", "pickle"}


def imported_roots(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
            if node.module.startswith("fedstream.") and not node.module.startswith(
                "fedstream.pipelines."
            ):
                roots.add(node.module)  # the core imports nothing else of fedstream
    return roots


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports(module: str) -> None:
    roots = imported_roots(module)
    assert not roots & FORBIDDEN
    assert not {r for r in roots if r.startswith("fedstream.")}
    allowed = {"numpy", "crc32c", "fedstream", "__future__"} | set(sys.stdlib_module_names)
    assert roots <= allowed, roots - allowed


def test_no_init_py_in_the_namespace_root() -> None:
    assert not (PACKAGE.parent / "__init__.py").exists()  # PEP 420 namespace `fedstream`
    assert (PACKAGE / "__init__.py").exists()


def test_importing_the_core_loads_no_heavy_dependency() -> None:
    code = (
        "import sys\n"
        "import fedstream.pipelines.aggregator, fedstream.pipelines.accumulator\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'onnx', 'pyflink', 'kafka', 'avro', 'fastavro', 'torch'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_whole_package_works_with_onnx_unimportable() -> None:
    """Every module of fedstream.pipelines (the PyFlink functions included) imports, and a
    registration's ONNX work runs, in an interpreter where `import onnx` fails."""
    from tests.support.onnx_models import linear_model

    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    code = (
        "import sys, importlib\n"
        "import numpy as np\n"
        "sys.modules['onnx'] = None  # poisoned: any import of onnx raises ImportError\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module('fedstream.pipelines.' + name)\n"
        "from fedstream.pipelines.onnx_release import (\n"
        "    materialize, read_initializers, strip_initializers)\n"
        "model = sys.stdin.buffer.read()\n"
        "w = read_initializers(model, ['W'])['W']\n"
        "stripped = strip_initializers(model, ['W', 'b'])\n"
        "release = materialize(stripped, {'W': w + 1, 'b': [0.0, 1.0, 2.0]})\n"
        "assert np.all(read_initializers(release)['W'] == w + 1)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'onnx' and sys.modules[m]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=linear_model(inputs=4, outputs=3),
        capture_output=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == "[]"
