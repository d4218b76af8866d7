"""A scratch folder of its own for a local job's JVM, removed even after a SIGKILL.

The mini-cluster's JVM writes to `java.io.tmpdir`: the table planner unpacks itself there
(`flink-table-planner_<uuid>.jar`, 44 MB per start), and Flink's blob store, execution
graph store and Python worker folders follow it (`io.tmp.dirs` defaults to it). The JVM
deletes them only when it exits normally. A job that is SIGKILLed (as the recovery tests
and the chaos campaign do on purpose, and as the kernel's OOM killer does) leaves them
behind: 44 MB or more per kill, which filled a test machine's disk.

So each local job runs its JVM with `<tmp>/fedstream-jvm-<uid>/<pid>`, removed when the
job's client exits, and every start first removes the folders of processes that no
longer exist: what a killed job left is gone by the next start.
"""

from __future__ import annotations

import atexit
import os
import shutil
import stat
import tempfile
from pathlib import Path

__all__ = ["folder_of", "sweep", "use_private_tmpdir"]


def _root(base: Path | None = None) -> Path:
    """This user's folder of job folders (one per user: others cannot write into it)."""
    return (base or Path(tempfile.gettempdir())) / f"fedstream-jvm-{os.getuid()}"


def folder_of(pid: int, base: Path | None = None) -> Path:
    """The scratch folder of the local job whose client is process `pid`."""
    return _root(base) / str(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process with that pid: alive
        return True
    return True


def sweep(base: Path | None = None) -> list[Path]:
    """Remove the folders of jobs whose client no longer runs; the removed folders."""
    root = _root(base)
    if not root.is_dir():
        return []
    removed = []
    for folder in root.iterdir():
        if folder.name.isdigit() and not _alive(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _own_root(base: Path | None) -> Path:
    """The user's root folder, created private; refused when it is not this user's own
    directory (a symlink or someone else's folder planted in a shared /tmp)."""
    root = _root(base)
    root.mkdir(mode=0o700, exist_ok=True)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise RuntimeError(f"{root} is not a directory owned by this user; remove it")
    root.chmod(0o700)  # private even when an older release or a test made it wider
    return root


def use_private_tmpdir(base: Path | None = None) -> Path:
    """Give the JVM this process is about to start a scratch folder of its own (through
    `JVM_ARGS`, which PyFlink adds to the JVM's command line), after sweeping the folders
    of dead jobs. Call before the first PyFlink call that starts the JVM."""
    root = _own_root(base)
    sweep(base)
    mine = root / str(os.getpid())
    mine.mkdir(mode=0o700, exist_ok=True)
    atexit.register(shutil.rmtree, mine, ignore_errors=True)
    args = os.environ.get("JVM_ARGS", "")
    os.environ["JVM_ARGS"] = f"{args} -Djava.io.tmpdir={mine}".strip()
    return mine
