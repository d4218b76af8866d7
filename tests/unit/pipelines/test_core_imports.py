"""The aggregation core stays pure: numpy only; onnx only in onnx_release; never pyflink,
kafka or avro. (The thin PyFlink functions that share the package are not the core.)"""

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
    "reducers",
    "staleness",
    "update",
    "validation",
    "windows",
]
FORBIDDEN = {"pyflink", "kafka", "avro", "fastavro", "torch", "pickle"}


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
    assert "onnx" not in roots or module == "onnx_release"
    assert not {r for r in roots if r.startswith("fedstream.")}
    allowed = {"numpy", "onnx", "fedstream", "__future__"} | set(sys.stdlib_module_names)
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
