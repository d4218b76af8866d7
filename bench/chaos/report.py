"""The campaign's result as JSON (everything, schedule included) and a short markdown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def passed(result: dict[str, Any]) -> bool:
    """No update lost or doubled, versions contiguous, every version's params recomputed."""
    v = result["verdict"]
    return bool(
        v["lost"] == 0
        and v["doubled"] == 0
        and v["versions_contiguous"]
        and v["params_equal"]
        and v["conflicting_copies"] == 0
        and v["absorbed_without_record"] == 0
    )


def markdown(result: dict[str, Any]) -> str:
    v, s = result["verdict"], result["settings"]
    lines = [
        "# Chaos campaign",
        "",
        f"{len(result['faults'])} faults over {v['sent']} acknowledged updates from "
        f"{s['devices']} devices (seed {s['seed']}), 3 brokers (RF 3, min ISR 2), "
        f"JobManager + 2 TaskManagers, checkpoints every {s['checkpoint_ms']} ms; "
        f"{result['duration_s']:.0f} s in all. **{'PASS' if passed(result) else 'FAIL'}**",
        "",
        "| check | result |",
        "|---|---|",
        f"| lost (sent, neither absorbed nor refused) | {v['lost']} |",
        f"| doubled (absorbed more than once) | {v['doubled']} |",
        f"| re-sent ids (several copies on the topic), absorbed once | "
        f"{v['resent_ids']}, {v['resent_absorbed_once']} |",
        f"| versions contiguous | {v['versions_contiguous']} ({v['versions']} versions) |",
        f"| params equal to the numpy recomputation | {v['params_equal']} "
        f"(max rel. error {v['params_max_rel_error']:.2e}) |",
        f"| refused by reason | {v['refused_by_reason'] or 'none'} |",
        f"| sent updates refused for bookkeeping (STALE not by max_staleness: "
        f"{v['stale_bookkeeping']}, SEQUENCE_TOO_OLD: {v['sequence_too_old']}) | "
        f"{v['bookkeeping_refused_ids']} ({100 * v['bookkeeping_refused_fraction']:.2f} %) |",
        f"| devices that exited on their own (restarted) | {result['device_crashes']} |",
        f"| fault to next completed checkpoint | median {_s(result['recovery_s']['median'])}, "
        f"max {_s(result['recovery_s']['max'])}, none: {result['recovery_s']['unrecovered']} |",
        "",
        "| # | fault | trigger | observed | to next checkpoint |",
        "|---|---|---|---|---|",
    ]
    for e in result["faults"]:
        lines.append(
            f"| {e['index'] + 1} | {e['kind']} | {e['trigger']} | {e['observed']} | "
            f"{_s(e['to_next_checkpoint_s'])} |"
        )
    return "\n".join(lines) + "\n"


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def write(result: dict[str, Any], out: Path, name: str = "chaos") -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    md_path.write_text(markdown(result))
    return json_path, md_path
