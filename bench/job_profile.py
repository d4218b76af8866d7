"""Where an update's time goes inside the job: CPU per thread, and inside our Python.

Two views of the same run, both in CPU ms per update:

* `ThreadCpu`: every thread of the job's process group (the JVM's task threads, Kafka
  clients, GC, JIT, the Python client) from /proc, before and after the updates flow. In
  thread mode our Python runs *inside* the task threads, so a task thread's CPU is its
  Java work plus its Python work.
* `python_breakdown`: the operators' own cProfile statistics (thread CPU time, written
  when FEDSTREAM_PROFILE_DIR is set, see `fedstream.pipelines.profiling`), split into
  what the per-update path does: decode, Flink state reads and writes (calls into the
  JVM), our state (de)serialization, the aggregation math, closing windows/releases.

Subtracting the second from the first separates the framework from our code.
"""

from __future__ import annotations

import os
import pstats
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "AGGREGATE_CATEGORIES",
    "GATE_CATEGORIES",
    "ROUTE_CATEGORIES",
    "ThreadCpu",
    "group_rss_mb",
    "python_breakdown",
    "thread_group",
]

_TICKS = os.sysconf("SC_CLK_TCK")

# (thread-name prefix, group): /proc's comm keeps the first 15 characters of the name.
_GROUPS = (
    ("Source Data Fet", "Kafka source fetcher"),
    (
        "Source:",
        "source task: Kafka records -> route (JVM; Python for the rare record) -> keyed shuffle",
    ),
    ("aggregate", "aggregate task (Python) -> release sink"),
    ("verify device", "device gate task (Python: verify signatures) -> keyed shuffle"),
    (
        "join device",
        "device join task (JVM; the Python gate for the rare update) -> keyed shuffle",
    ),
    ("dlq-", "dead-letter sink task"),
    ("kafka-producer", "Kafka producer I/O (sinks)"),
    ("GC Thread", "JVM garbage collection"),
    ("G1 ", "JVM garbage collection"),
    ("C1 CompilerThre", "JVM JIT compilers"),
    ("C2 CompilerThre", "JVM JIT compilers"),
    ("Checkpoint", "checkpointing"),
    ("AsyncOperations", "checkpointing"),
    ("python", "Python worker processes / client"),
)


def thread_group(name: str) -> str:
    """A human group for a thread's /proc comm name."""
    return next((group for prefix, group in _GROUPS if name.startswith(prefix)), "other")


def group_processes(pgid: int) -> list[Path]:
    """The /proc folders of the processes in process group `pgid` (the job client, its
    JVM and any Python workers: `JobProcess` starts them in a group of their own)."""
    found: list[Path] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid:
                found.append(entry)
        except (OSError, ProcessLookupError):
            continue  # ended meanwhile
    return found


def group_rss_mb(pgid: int) -> float:
    """Resident memory of a process group, in MB."""
    kib = 0
    for entry in group_processes(pgid):
        try:
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kib += int(line.split()[1])
        except OSError:
            continue
    return kib / 1024


@dataclass(frozen=True)
class ThreadCpu:
    """CPU seconds of every thread of a process group, keyed by (pid, tid)."""

    threads: dict[tuple[int, int], tuple[str, float]]

    @classmethod
    def snapshot(cls, pgid: int) -> ThreadCpu:
        return cls.of_processes(group_processes(pgid))

    @classmethod
    def of_processes(cls, processes: list[Path]) -> ThreadCpu:
        """The threads of the processes at these /proc folders (e.g. a cluster's daemons)."""
        threads: dict[tuple[int, int], tuple[str, float]] = {}
        for entry in processes:
            pid = int(entry.name)
            try:
                for task in (entry / "task").iterdir():
                    stat = (task / "stat").read_text()
                    name = stat[stat.index("(") + 1 : stat.rindex(")")]
                    fields = stat[stat.rindex(")") + 2 :].split()
                    # utime, stime: fields 14 and 15 of stat, 12 and 13 after the name
                    seconds = (int(fields[11]) + int(fields[12])) / _TICKS
                    threads[(pid, int(task.name))] = (name, seconds)
            except (OSError, ValueError):
                continue  # a thread or process that ended meanwhile
        return cls(threads)

    def since(self, before: ThreadCpu) -> dict[str, float]:
        """CPU seconds per thread group between `before` and this snapshot."""
        out: dict[str, float] = defaultdict(float)
        for key, (name, seconds) in self.threads.items():
            previous = before.threads.get(key, (name, 0.0))[1]
            out[thread_group(name)] += seconds - previous
        return dict(out)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat, all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / _TICKS


Match = Callable[[str, str], bool]


def _in(file: str, *names: str) -> Match:
    return lambda path, function: path.endswith(file) and function in names


# The per-update path of each operator, as (label, which functions belong to it). Times of
# a group are counted where the group is entered from outside it (no double counting of
# its own nested calls); groups do not nest in one another on the hot path.
ROUTE_CATEGORIES: list[tuple[str, list[Match]]] = [
    ("decode the Avro record (route)", [_in("codec.py", "decode")]),
]
AGGREGATE_CATEGORIES: list[tuple[str, list[Match]]] = [
    (
        "decode the Avro record + unpack the tensor",
        [_in("codec.py", "decode"), _in("tensors.py", "unpack")],
    ),
    (
        "Flink state reads (calls into the JVM)",
        [_in("state_impl.py", "value", "contains", "get", "items", "keys", "values", "is_empty")],
    ),
    (
        "Flink state writes (calls into the JVM)",
        [_in("state_impl.py", "update", "put", "remove", "clear", "add", "add_all")],
    ),
    (
        "our state (de)serialization (binary format, CRC)",
        [
            _in("model_state.py", "from_bytes", "to_bytes"),
            _in("accumulator.py", "from_bytes", "to_bytes"),
            _in("model_process.py", "from_state", "to_state"),
        ],
    ),
    ("aggregation math (weight, clip, accumulate)", [_in("aggregator.py", "try_add")]),
    (
        "close the window (mean, optimizer) + build the release (ONNX, encode)",
        [_in("aggregator.py", "close"), _in("model_process.py", "_release")],
    ),
]
GATE_CATEGORIES: list[tuple[str, list[Match]]] = [
    ("decode the Avro record", [_in("codec.py", "decode")]),
    (
        "verify the signature (SHA-256 of the update + Ed25519)",
        [_in("update_signing.py", "verify_update")],
    ),
    (
        "Flink state reads and writes (calls into the JVM)",
        [
            _in("state_impl.py", "value", "contains", "get", "update", "put", "remove", "clear"),
        ],
    ),
]
ENTRIES = {"route": ("_route",), "device_gate": ("_process",), "aggregate": ("_process", "_fire")}
OPERATOR_CATEGORIES = {
    "route": ROUTE_CATEGORIES,
    "device_gate": GATE_CATEGORIES,
    "aggregate": AGGREGATE_CATEGORIES,
}


def _matches(func: tuple[str, int, str], matchers: Iterable[Match]) -> bool:
    return any(m(func[0], func[2]) for m in matchers)


def _inclusive(stats: pstats.Stats, matchers: list[Match]) -> float:
    """CPU seconds spent in the matched functions, counted where entered from outside."""
    total = 0.0
    raw = stats.stats  # type: ignore[attr-defined]
    for func, (_, _, _, cumulative, callers) in raw.items():
        if not _matches(func, matchers):
            continue
        if not callers:
            total += cumulative
            continue
        for caller, edge in callers.items():
            if not _matches(caller, matchers):
                total += edge[3]
    return total


def _records(stats: pstats.Stats, function: str) -> int:
    raw = stats.stats  # type: ignore[attr-defined]
    return sum(row[1] for f, row in raw.items() if f[2] == function and "flink_functions" in f[0])


def python_breakdown(folder: Path) -> dict[str, dict[str, float]]:
    """Per operator ("route", "device_gate", "aggregate"): CPU ms per record, by category,
    plus "total" (everything our function did) and "other" (total minus the categories).

    Per record, counted from the profile itself: a killed job's last dump may be up to
    `DUMP_EVERY_S` old, so the number of records it covers is read from it."""
    out: dict[str, dict[str, float]] = {}
    for operator, categories in OPERATOR_CATEGORIES.items():
        files = sorted(folder.glob(f"{operator}-*.pstats"))
        if not files:
            continue
        stats = pstats.Stats(*(str(f) for f in files))
        records = _records(stats, ENTRIES[operator][0])
        if records == 0:
            continue
        total = _inclusive(stats, [_in("flink_functions.py", *ENTRIES[operator])])
        row = {label: _inclusive(stats, m) * 1000 / records for label, m in categories}
        row["other Python (state loading/saving glue, timers, metrics)"] = (
            total * 1000 / records - sum(row.values())
        )
        row["total"] = total * 1000 / records
        row["records profiled"] = records
        out[operator] = {k: round(v, 3) for k, v in row.items()}
    return out
