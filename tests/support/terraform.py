"""Terraform as the tests use it: the binary and CLI config from infra/terraform/tools.sh,
and module folders copied out of the repository (Terraform writes its lock file and data
beside a root module; a test run must leave the work tree as it found it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.stack import REPO

TERRAFORM_DIR = REPO / "infra" / "terraform"
TOOLS_SH = TERRAFORM_DIR / "tools.sh"
PROVISION_SH = TERRAFORM_DIR / "provision.sh"
# building OpenTofu from source takes ~8 min on 2 cores; `make test` builds it beforehand
TOOLS_TIMEOUT_S = 1800


@dataclass(frozen=True)
class TerraformTools:
    binary: Path
    cli_config: Path

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment that runs this terraform offline against the provider mirror."""
        return {
            **(os.environ if base is None else base),
            "TF_CLI_CONFIG_FILE": str(self.cli_config),
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
        }

    def run(
        self, *args: str, cwd: Path, env: dict[str, str], timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), f"-chdir={cwd}", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def terraform_tools() -> TerraformTools:
    """Find or build terraform/tofu and the kafka provider (tools.sh); fail, never skip."""
    try:
        done = subprocess.run(
            [str(TOOLS_SH), "ensure"], capture_output=True, text=True, timeout=TOOLS_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"infra/terraform/tools.sh did not finish within {TOOLS_TIMEOUT_S} s "
            "(building OpenTofu and the kafka provider from the Go module proxy)",
            pytrace=False,
        )
    found = dict(
        line.split("=", 1) for line in done.stdout.splitlines() if "=" in line and line[0] != "#"
    )
    if done.returncode != 0 or "FEDSTREAM_TF" not in found:
        pytest.fail(
            "infra/terraform/tools.sh could not find or build terraform and the kafka "
            f"provider (exit {done.returncode}); it needs Go on PATH and the Go module "
            f"proxy:\n{done.stderr[-4000:]}",
            pytrace=False,
        )
    return TerraformTools(Path(found["FEDSTREAM_TF"]), Path(found["TF_CLI_CONFIG_FILE"]))


def copy_config(into: Path) -> Path:
    """Copy infra/terraform's modules and local root into `into`; returns the copy's root."""
    target = into / "terraform"
    for part in ("modules", "local"):
        shutil.copytree(
            TERRAFORM_DIR / part,
            target / part,
            ignore=shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "*.tfstate*"),
        )
    return target
