"""[metrics] prometheus_port: a port, a range, or nothing; what the job hands Flink."""

from __future__ import annotations

import pytest

from fedstream.jobs.config import ConfigError, JobConfig


def test_port_range_and_off() -> None:
    assert JobConfig().metrics.ports() is None  # off without a config file
    on = JobConfig().with_overrides({"metrics.prometheus_port": 9249})  # typed as a number
    assert on.metrics.ports() == (9249, 9249)
    ranged = JobConfig().with_overrides({"metrics.prometheus_port": "9249-9259"})
    assert ranged.metrics.ports() == (9249, 9259)


@pytest.mark.parametrize("bad", ["x", "0", "9259-9249", "70000", "1-2-3"])
def test_bad_ports_name_the_key(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.prometheus_port"):
        JobConfig().with_overrides({"metrics.prometheus_port": bad})


def test_the_job_configures_the_reporter_only_with_a_port() -> None:
    from fedstream.jobs.aggregation_job import PROMETHEUS_FACTORY, flink_configuration

    def reporter(config: JobConfig) -> dict[str, str]:
        conf = flink_configuration(config, local=True).to_dict()
        return {k: v for k, v in conf.items() if k.startswith("metrics.reporter.prom.")}

    assert reporter(JobConfig()) == {}
    shown = reporter(JobConfig().with_overrides({"metrics.prometheus_port": "9300-9301"}))
    assert shown["metrics.reporter.prom.factory.class"] == PROMETHEUS_FACTORY
    assert shown["metrics.reporter.prom.port"] == "9300-9301"
    assert shown["metrics.reporter.prom.filterLabelValueCharacters"] == "false"
