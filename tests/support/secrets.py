"""Looking for a secret where it must never be: process arguments and log files."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def command_lines() -> dict[int, str]:
    """Every readable /proc/PID/cmdline right now (arguments joined by spaces)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if raw:
            found[int(entry.name)] = raw.replace(b"\0", b" ").decode(errors="replace")
    return found


def watch_command_lines(process: subprocess.Popen[str], poll_s: float = 0.005) -> list[str]:
    """The command lines of every process seen while `process` runs (polled): the short-
    lived JVMs a script starts are caught in the act, not only what is left afterwards."""
    seen: dict[tuple[int, str], None] = {}
    while process.poll() is None:
        for pid, line in command_lines().items():
            seen[pid, line] = None
        time.sleep(poll_s)
    return [line for _, line in seen]


def files_containing(folder: Path, secret: str) -> list[Path]:
    """The files under `folder` whose bytes contain `secret`."""
    needle = secret.encode()
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]
