"""The console scripts: declared once in the pyprojects, written as launchers that run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fedstream.jobs.console_scripts import PYPROJECTS, entry_points, install


def test_both_commands_are_declared() -> None:
    found = entry_points(PYPROJECTS)
    assert found["fedstream"][0] == "fedstream.jobs.cli:main"
    assert found["fedstream-simulator"][0] == "fedstream.edge.simulator.__main__:main"


def test_installed_launchers_run_with_help(tmp_path: Path) -> None:
    written = install(tmp_path, sys.executable)
    assert {p.name for p in written} == {"fedstream", "fedstream-simulator"}
    for path in written:
        done = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"usage: {path.name}" in done.stdout
    help_text = subprocess.run(
        [str(tmp_path / "fedstream"), "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for command in ("dashboard", "status", "register", "submit", "dead-letters"):
        assert command in help_text
