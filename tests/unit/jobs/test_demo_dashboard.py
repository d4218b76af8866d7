"""`make demo`'s dashboard: as the read-only auditor, on the job's endpoint, no secret in
its arguments (other local users can read them)."""

from __future__ import annotations

from pathlib import Path

from fedstream.jobs.cli import parser
from fedstream.jobs.config import JobConfig
from fedstream.jobs.demo import dashboard_command


def test_dashboard_runs_as_auditor_on_the_jobs_endpoint(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "auditor.password").write_text("s3cret-never-shown\n")
    config = JobConfig().with_overrides({"metrics.prometheus_port": "9311-9312"})
    command = dashboard_command(config, credentials, tmp_path / "evals.jsonl", "9312")
    assert command is not None
    assert "s3cret-never-shown" not in " ".join(command)
    args = parser().parse_args(command[command.index("dashboard") :])
    assert args.metrics_url == "http://127.0.0.1:9311/metrics" and args.port == 9312
    sets = dict(pair.split("=", 1) for pair in args.set)
    assert sets["kafka.username"] == "auditor"
    assert sets["kafka.password_file"] == str(credentials / "auditor.password")
    assert sets["topics.models"] == config.topics.models


def test_no_dashboard_without_an_endpoint(tmp_path: Path) -> None:
    assert dashboard_command(JobConfig(), tmp_path, tmp_path / "e", "9250") is None
