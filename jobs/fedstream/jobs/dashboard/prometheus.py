"""Prometheus' text exposition format (version 0.0.4), read into plain samples.

Only what a scrape of Flink's reporter holds: `# HELP` / `# TYPE` comments, and sample
lines `name{label="value",...} number [timestamp]`. Label values may hold escaped quotes,
backslashes and newlines (model ids are device-controlled text).
"""

from __future__ import annotations

import math
import re
import urllib.request
from dataclasses import dataclass

__all__ = ["Sample", "parse", "scrape"]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\})')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def _unescape(text: str) -> str:
    return re.sub(r"\\[\\\"n]", lambda m: _ESCAPES[m.group(0)], text)


def _sample(line: str) -> Sample | None:
    match = _NAME.match(line)
    if match is None:
        return None
    name, rest = match.group(0), line[match.end() :]
    labels: dict[str, str] = {}
    if rest.startswith("{"):
        position = 1
        while True:  # label pairs, each followed by "," or "}" (Flink's end with ",}")
            while rest[position : position + 1].isspace():
                position += 1
            if rest[position : position + 1] == "}":
                position += 1
                break
            label = _LABEL.match(rest, position)
            if label is None:
                return None
            labels[label.group(1)] = _unescape(label.group(2))
            position = label.end()
            if label.group(3) == "}":
                break
        rest = rest[position:]
    fields = rest.split()
    if not fields:
        return None
    try:
        value = float(fields[0])
    except ValueError:
        return None
    return Sample(name, labels, value) if not math.isnan(value) else None


def parse(text: str) -> list[Sample]:
    """Every sample of a scrape; malformed lines are skipped."""
    samples = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            sample = _sample(line)
            if sample is not None:
                samples.append(sample)
    return samples


def scrape(url: str, timeout_s: float = 5.0) -> list[Sample]:
    """GET `url` (a /metrics endpoint) and parse it; OSError when it cannot be reached."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return parse(response.read().decode("utf-8", errors="replace"))
