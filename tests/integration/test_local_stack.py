"""The local stack scripts behave as an operator expects: idempotent, clear, never obscure."""

from __future__ import annotations

import socket
import subprocess

from tests.support.stack import KAFKA_SH, Broker


def _kafka(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KAFKA_SH), command], env=env, capture_output=True, text=True, timeout=120
    )


def test_second_start_reports_the_running_broker(kafka_broker: Broker) -> None:
    again = _kafka("start", kafka_broker.env)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert kafka_broker.bootstrap in again.stdout
    status = _kafka("status", kafka_broker.env)
    assert status.returncode == 0 and "running" in status.stdout


def test_start_refuses_a_port_taken_by_something_else(
    kafka_broker: Broker, tmp_path: object
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {
            **kafka_broker.env,
            "FEDSTREAM_KAFKA_PORT": str(port),
            "FEDSTREAM_KAFKA_DIR": str(tmp_path),
        }
        done = _kafka("start", env)
    assert done.returncode != 0
    assert f"port {port} is already in use" in done.stderr


def test_stop_when_not_running_is_a_no_op(tmp_path: object) -> None:
    import os

    env = {**os.environ, "FEDSTREAM_KAFKA_DIR": str(tmp_path), "FEDSTREAM_KAFKA_PORT": "1"}
    done = _kafka("stop", env)
    assert done.returncode == 0
    assert "not running" in done.stdout
