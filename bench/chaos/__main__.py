"""`make chaos`: python -m bench.chaos [--updates N] [--faults N] [--seed S] [--out DIR]

Starts a stack of its own in --work (ports from FEDSTREAM_KAFKA_PORT, FEDSTREAM_FLINK_REST_PORT
and FEDSTREAM_FLINK_RPC_PORT), runs the campaign, stops everything, writes DIR/chaos.json
and DIR/chaos.md; exits 1 when the oracle finds an update lost or doubled, a gap in the
versions or parameters that differ from its recomputation.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from bench.chaos.campaign import Campaign, Settings
from bench.chaos.report import passed, write
from bench.chaos.stack import Ports
from tests.support.stack import REPO


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--faults", type=int, default=20)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--rate", type=float, default=3.0, help="updates/s per device")
    parser.add_argument(
        "--dedupe-versions", type=int, help="the job's runtime.dedupe_versions (default: 64)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--work", type=Path, default=REPO / "infra" / "local" / ".run" / "chaos")
    args = parser.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)  # a fresh stack: the oracle reads all of it
    ports = Ports(
        kafka=int(os.environ.get("FEDSTREAM_KAFKA_PORT", "9192")),
        flink_rest=int(os.environ.get("FEDSTREAM_FLINK_REST_PORT", "8181")),
        flink_rpc=int(os.environ.get("FEDSTREAM_FLINK_RPC_PORT", "6223")),
    )
    settings = Settings(
        updates=args.updates, faults=args.faults, devices=args.devices, rate=args.rate,
        seed=args.seed, dedupe_versions=args.dedupe_versions,
    )  # fmt: skip
    result = Campaign(args.work, ports, settings, say=lambda m: print(m, flush=True)).run()
    json_path, md_path = write(result, args.out)
    print(md_path.read_text())
    print(f"chaos: wrote {json_path} and {md_path}")
    return 0 if passed(result) else 1


if __name__ == "__main__":
    sys.exit(main())
