"""One-way imports: the SDK never reaches into the server side, and inference needs no torch.

Checked twice: statically (every import statement in edge/, so an import hidden in a
function that no test runs is caught too) and dynamically (what importing the inference
API actually loads).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

EDGE = Path(__file__).resolve().parents[3] / "edge" / "fedstream" / "edge"
NEVER = ("fedstream.pipelines", "fedstream.jobs", "pyflink", "apache_beam", "tests")
#: torch and onnx only where training happens
TRAINING_ONLY = ("torch", "onnx", "onnxscript", "sklearn", "matplotlib")
TRAINING_MODULES = {"training.py", "simulator"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_edge_sources_never_import_the_server_side() -> None:
    files = sorted(EDGE.rglob("*.py"))
    assert len(files) > 10
    offenders = {
        f"{path.relative_to(EDGE)}: {name}"
        for path in files
        for name in imported_modules(path)
        if _matches(name, NEVER)
    }
    assert not offenders


def test_torch_only_in_training_modules() -> None:
    offenders = set()
    for path in EDGE.rglob("*.py"):
        relative = path.relative_to(EDGE)
        if relative.parts[0] in TRAINING_MODULES:
            continue
        offenders |= {
            f"{relative}: {n}" for n in imported_modules(path) if _matches(n, TRAINING_ONLY)
        }
    assert not offenders


def test_no_fedstream_init_anywhere_in_edge() -> None:
    assert not (EDGE.parent / "__init__.py").exists()  # PEP 420 namespace


def test_importing_the_inference_api_loads_no_torch_and_no_server_code() -> None:
    code = (
        "import sys, json\n"
        "import fedstream.edge as e\n"
        "from fedstream.edge import EdgeClient, ReleaseReader, ModelRuntime\n"
        "import fedstream.edge.client, fedstream.edge.producer, fedstream.edge.releases\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    forbidden = NEVER + TRAINING_ONLY
    assert not [m for m in loaded if _matches(m, forbidden)]
    assert "fedstream.schemas" in loaded
