"""Test harness around `fedstream.jobs.launcher.JobProcess`: unique names, test defaults."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedstream.edge import EdgeConfig
from fedstream.jobs.launcher import JobProcess
from fedstream.schemas.signing import PRIVATE_KEY_FILE, TrustedKeys, write_key_pair
from tests.support.owner_key import owner_public_key
from tests.support.stack import Broker


def job_signing_key(folder: Path) -> Path:
    """The job's release key for a test: folder/signing/job-signing.key (created once; its
    public half, job-signing.pub, next to it, is what devices trust)."""
    key = folder / "signing" / PRIVATE_KEY_FILE
    if not key.exists():
        write_key_pair(key.parent)
    return key


def trusted(*keys: Path) -> TrustedKeys:
    """Devices' trust in the given job keys (their .pub files)."""
    return TrustedKeys.from_files(*(k.with_suffix(".pub") for k in keys))


@dataclass
class JobTopics:
    """Unique topic, group and transactional-id names, so tests never see each other."""

    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def updates(self) -> str:
        return f"updates-{self.suffix}"

    @property
    def control(self) -> str:
        return f"control-{self.suffix}"

    @property
    def models(self) -> str:
        return f"models-{self.suffix}"

    @property
    def dlq(self) -> str:
        return f"dlq-{self.suffix}"

    @property
    def devices(self) -> str:
        return f"devices-{self.suffix}"

    def overrides(self) -> dict[str, str]:
        return {
            "topics.updates": self.updates,
            "topics.control": self.control,
            "topics.models": self.models,
            "topics.dlq": self.dlq,
            "topics.devices": self.devices,
            "kafka.group_id": f"fedstream-{self.suffix}",
            "kafka.transactional_id_prefix": f"fedstream-{self.suffix}",
        }


def edge_config(broker: Broker, topics: JobTopics, *job_keys: Path, **extra: Any) -> EdgeConfig:
    """A device's configuration on `broker` (as its admin) for the job's `topics`, trusting
    releases signed by `job_keys` (several while the job's key rotates)."""
    return EdgeConfig(
        bootstrap=broker.bootstrap,
        security=broker.security,
        updates_topic=topics.updates,
        control_topic=topics.control,
        models_topic=topics.models,
        dlq_topic=topics.dlq,
        trusted_keys=trusted(*job_keys),
        **extra,
    )


def job_process(
    broker: Broker, checkpoint_dir: Path, topics: JobTopics, log: Path, **settings: str
) -> JobProcess:
    """The job on `broker` (as its admin) with its own topics, 1 s checkpoints, no silent
    restarts, and releases signed by `job_signing_key(checkpoint_dir.parent)` unless
    `settings` name another signing.key_file."""
    overrides = {
        **broker.job_overrides(),
        "signing.key_file": str(job_signing_key(checkpoint_dir.parent)),
        "trust.owner_keys": str(owner_public_key()),
        "checkpoint.dir": checkpoint_dir.as_uri(),
        "checkpoint.interval_ms": "1000",
        "runtime.restart_attempts": "0",
        # no Prometheus endpoint unless the test asks for one on a free port (runs beside
        # each other must not contend for the config's 9249)
        "metrics.prometheus_port": "",
        **topics.overrides(),
        # the config's mode (thread) unless the run asks for the other one
        **(
            {"runtime.python_execution_mode": os.environ["FEDSTREAM_TEST_PYTHON_MODE"]}
            if "FEDSTREAM_TEST_PYTHON_MODE" in os.environ
            else {}
        ),
        **settings,
    }
    return JobProcess(overrides, log)
