"""`pip install ./edge` gives a device the SDK and the codec, without PyFlink, Beam or Java,
and without torch unless it asks for the `train` extra.

Builds the real wheel, checks what is inside and what it depends on, then installs it into
a brand-new virtualenv (dependencies from the pip cache or PyPI) and runs the
inference-only API there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("apache-flink", "apache-beam", "pyflink", "apache_flink", "apache_beam")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(REPO / "edge")]
    subprocess.run([*command, "-w", str(out)], check=True, timeout=600)
    (built,) = out.glob("fedstream_edge-*.whl")
    return built


def test_wheel_holds_the_sdk_and_the_codec_only(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "fedstream/edge/__init__.py" in names
    assert "fedstream/edge/simulator/__main__.py" in names
    assert "fedstream/edge/py.typed" in names
    assert "fedstream/schemas/__init__.py" in names and "fedstream/schemas/codec.py" in names
    # every schema of the source tree, current and history, single-sourced into avsc/
    source = REPO / "schemas"
    wanted = {f"fedstream/schemas/avsc/{p.name}" for p in source.glob("*.avsc")}
    wanted |= {
        f"fedstream/schemas/avsc/{p.relative_to(source).as_posix()}"
        for p in (source / "history").rglob("*.avsc")
    }
    assert len(wanted) >= 5 and wanted <= names
    assert not [n for n in names if n.startswith(("fedstream/pipelines", "fedstream/jobs"))]
    assert "fedstream/__init__.py" not in names  # PEP 420 namespace, shared with the server
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_metadata_has_no_server_dependencies_and_torch_only_as_extra(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = archive.read(metadata_name).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")]  # fmt: skip
    assert not [r for r in requires if r.lower().startswith(SERVER_ONLY)]
    base = [r for r in requires if "extra ==" not in r]
    assert {r.split("=")[0].split("<")[0].split(">")[0] for r in base} == {
        "numpy", "fastavro", "kafka-python", "crc32c", "onnxruntime", "cryptography",
    }  # fmt: skip
    torch = [r for r in requires if r.startswith("torch")]
    assert torch and all("extra ==" in r for r in torch)
    assert any("extra == 'train'" in r for r in torch)
    assert "Requires-Python: <3.12,>=3.11" in metadata


def test_fresh_virtualenv_runs_inference_api_without_torch(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    script = textwrap.dedent(
        """
        import importlib, sys
        import numpy as np
        from fedstream.edge import (
            DeltaCompressor, EdgeClient, EdgeConfig, KafkaSecurity, ModelRuntime, ReleaseReader,
            make_update_id,
        )
        from fedstream.schemas import decode, default_registry, encode, unpack
        import fedstream.schemas

        assert "site-packages" in fedstream.schemas.__file__, fedstream.schemas.__file__
        assert len(default_registry().names) >= 4  # the packaged .avsc files load
        delta = np.linspace(-1, 1, 100, dtype=np.float32)
        prepared = DeltaCompressor("int8").prepare(delta)
        record = {
            "update_id": make_update_id("dev", "m", 0, 0), "device_id": "dev", "model_id": "m",
            "base_version": 0, "num_samples": 5, "created_at": 0,
            "delta": prepared.payload, "metrics": None,
            "sequence": None, "key_id": None, "signature": None,
        }
        back = decode(encode("GradientUpdate", record), expected="GradientUpdate").record
        assert np.abs(unpack(back["delta"], expected_shape=[100]) - delta).max() < 0.01
        login = KafkaSecurity(username="dev", password="not-a-real-one")  # system CAs
        assert "not-a-real-one" not in repr(login)
        EdgeClient(EdgeConfig(security=login), device_id="dev", model_id="m")  # lazy: no broker
        from fedstream.edge import InvalidSignatureError, TrustedKeys
        from fedstream.schemas.signing import write_key_pair
        import tempfile
        _key, pub, key_id = write_key_pair(tempfile.mkdtemp())
        assert TrustedKeys.from_files(pub).key_ids == [key_id]  # release checks work installed
        import onnxruntime
        for name in ("torch", "pyflink", "apache_beam", "fedstream.pipelines", "fedstream.jobs"):
            try:
                importlib.import_module(name)
            except ImportError:
                continue
            raise SystemExit(f"{name} is importable in an inference-only install")
        try:
            import fedstream.edge.training
        except ImportError as error:
            assert "fedstream-edge[train]" in str(error), error
        else:
            raise SystemExit("fedstream.edge.training imported without torch")
        print("inference-only OK")
        """
    )
    run = subprocess.run(
        [str(python), "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "inference-only OK" in run.stdout
