"""The local stack scripts behave as an operator expects: idempotent, clear, never obscure."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

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


def _kafka_args(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KAFKA_SH), *args], env=env, capture_output=True, text=True, timeout=120
    )


def _fresh_env(folder: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "FEDSTREAM_KAFKA_DIR": str(folder),
        "FEDSTREAM_KAFKA_PORT": "19142",  # nothing is started on these: every case is refused
        "FEDSTREAM_KAFKA_CONTROLLER_PORT": "19143",
        "FEDSTREAM_KAFKA_NODES": "1",
        **extra,
    }


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        (["start"], {"FEDSTREAM_KAFKA_NODES": "2"}, "must be 1, 3 or 5"),
        (["start"], {"FEDSTREAM_KAFKA_CONTROLLER_PORT": "19144"}, "port 19144 is used twice"),
        (["start-node", "1"], {}, "no cluster in"),
        (["stop-node", "3"], {}, "node must be 1..1, got '3'"),
        (["topic", "t"], {}, "no credentials in"),
        (["bogus"], {}, "usage:"),
    ],
)
def test_misuse_is_refused_with_a_clear_message(
    tmp_path: Path, args: list[str], extra: dict[str, str], message: str
) -> None:
    env = _fresh_env(tmp_path, **extra)
    if extra.get("FEDSTREAM_KAFKA_CONTROLLER_PORT") == "19144":
        env["FEDSTREAM_KAFKA_NODES"] = "3"  # node 2's client port = node 1's controller port
    done = _kafka_args(args, env)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert not (tmp_path / "credentials").exists()  # refused before creating anything


def test_a_folder_of_the_old_unsecured_layout_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.properties").write_text("cluster.id=x\n")
    done = _kafka_args(["start"], _fresh_env(tmp_path))
    assert done.returncode != 0
    assert "older, unsecured layout" in done.stderr and "remove" in done.stderr
