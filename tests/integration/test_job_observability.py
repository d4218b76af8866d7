"""Metrics, the dashboard and poison pills against one real run: the real job, the real
broker, Kafka source and sinks included (one job for all of it: the suite's time budget).

The job runs with its Prometheus endpoint on a free port and no restart allowed (any
escaped failure kills it). A known mix is sent:

- model alpha (window 3): 6 signed updates from base 0 (3 absorbed 0 versions behind, 3 one
  behind: versions 1 and 2), then a re-send of one of them (DUPLICATE);
- model beta (window 2): 2 updates (version 1);
- model victim (window 2): the issue's reproducer, two well-formed updates with
  num_samples near 2**62 (both BAD_NUM_SAMPLES: they must neither stop the job nor keep
  another model from releasing, and victim never leaves version 0);
- the largest record fl.updates accepts (just under 16 MiB, not Avro): UNDECODABLE, no
  model, and its dead letter fits the DLQ whole (the DLQ has headroom) through the
  transactional sink.

Then:

- the dead letters on fl.dlq are exactly those;
- a scrape of the endpoint shows Flink's own metrics and, per model, exactly those counts
  (absorbed, refused by reason, staleness buckets, version, releases, window fill, one
  update->release time per window);
- `fedstream dashboard` (the console script) serves the page; headless Chromium (Debian's
  `chromium`, installed by `make browser`) renders it, and the figures in the rendered DOM
  are the same numbers, the dead letters' reasons read from fl.dlq (read_committed), and the
  accuracy an evaluator published. Its screenshot is written to the test's folder, and to
  docs/dashboard.png (the README's picture) when FEDSTREAM_UPDATE_SCREENSHOT=1, so a test
  run leaves the checkout clean.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer

from fedstream.jobs.config import load
from fedstream.jobs.dashboard.figures import ModelFigures, model_figures
from fedstream.jobs.dashboard.prometheus import Sample, scrape
from fedstream.jobs.launcher import JobProcess
from fedstream.jobs.topics import ensure_topics
from fedstream.schemas import registration_key
from tests.support.devices import register_devices
from tests.support.job_runner import JobTopics, job_process
from tests.support.kafka_io import dead_letters, releases, wait_for
from tests.support.onnx_models import linear_model
from tests.support.records import registration_bytes, update_bytes
from tests.support.stack import Broker

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = REPO / "docs" / "dashboard.png"
ONNX = linear_model(4, 3, seed=5)
SIZE = 15
MiB = 1024 * 1024
#: not Avro; just fits fl.updates (16 MiB)
HUGE = b"\x00" + bytes(16 * MiB - 4096)
#: what Debian's package installs (`make browser`); no browser is ever downloaded
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: flags that work headless in a closed network (no background connections refused)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Run:
    def __init__(self, job: JobProcess, topics: JobTopics, metrics_url: str) -> None:
        self.job, self.topics, self.metrics_url = job, topics, metrics_url


@pytest.fixture(scope="module")
def run(kafka_broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The job with a metrics endpoint, after the mix above went through it."""
    work = tmp_path_factory.mktemp("observability")
    topics = JobTopics()
    ensure_topics(load(overrides={**topics.overrides(), **kafka_broker.job_overrides()}))
    port = free_port()
    job = job_process(
        kafka_broker,
        work / "checkpoints",
        topics,
        work / "job.log",
        **{"metrics.prometheus_port": str(port)},
    )
    job.start()
    url = f"http://127.0.0.1:{port}/metrics"

    def diagnostics() -> str:
        try:
            ours = [
                f"{s.name} {s.labels.get('model')} {s.value}"
                for s in scrape(url)
                if "fedstream" in s.name
            ]
        except OSError as error:
            ours = [f"no scrape: {error}"]
        letters = [(d["reason"], d["detail"][:80]) for d in dead_letters(kafka_broker, topics.dlq)]
        return "\n".join([job.log_tail(), *ours, f"dead letters: {letters}"])

    try:
        _send_the_mix(kafka_broker, job, topics, diagnostics)
        yield Run(job, topics, url)
    finally:
        job.kill()


def _send_the_mix(
    broker: Broker, job: JobProcess, topics: JobTopics, diagnostics: Callable[[], str]
) -> None:
    producer = KafkaProducer(**broker.client_kwargs(), acks="all", max_request_size=17 * MiB)
    try:
        for model, window in (("alpha", 3), ("beta", 2), ("victim", 2)):
            value = registration_bytes(model, ONNX, {"window": {"count": window}})
            producer.send(topics.control, value, key=registration_key(model))
        producer.flush()

        def versions() -> set[tuple[str, int]]:
            assert job.alive(), f"the job died:\n{job.log_tail()}"
            return {(r.model_id, r.version) for r in releases(broker, topics.models)}

        # updates for a model the job has not registered yet would be UNKNOWN_MODEL
        models = {("alpha", 0), ("beta", 0), ("victim", 0)}
        wait_for(lambda: models <= versions(), 120, "version 0 of every model", diagnostics)
        register_devices(broker, topics.devices, ["device-0"])
        for i in range(6):
            producer.send(topics.updates, update_bytes("alpha", f"a{i}", np.full(SIZE, 0.01)))
        for i in range(2):
            producer.send(topics.updates, update_bytes("beta", f"b{i}", np.full(SIZE, 0.02)))
        for i in range(2):
            big = update_bytes("victim", f"big{i}", np.ones(SIZE), num_samples=2**62 + i)
            producer.send(topics.updates, big)
        producer.send(topics.updates, HUGE)
        producer.flush()
        wait_for(
            lambda: {("alpha", 2), ("beta", 1)} <= versions(),
            120,
            "alpha v2, beta v1",
            diagnostics,
        )
        # a re-send of an absorbed update (unsequenced: recognised by its update id)
        producer.send(topics.updates, update_bytes("alpha", "a0", np.full(SIZE, 0.01)))
        producer.flush()
        wait_for(
            lambda: len(dead_letters(broker, topics.dlq)) >= 4, 60, "4 dead letters", diagnostics
        )
    finally:
        producer.close()


def test_poison_pills_are_dead_lettered_and_the_job_goes_on(run: Run, kafka_broker: Broker) -> None:
    letters = dead_letters(kafka_broker, run.topics.dlq)
    by_reason = sorted((d["reason"], d["update_id"]) for d in letters)
    assert by_reason == [
        ("BAD_NUM_SAMPLES", "big0"),
        ("BAD_NUM_SAMPLES", "big1"),
        ("DUPLICATE", "a0"),
        ("UNDECODABLE", None),
    ]
    (big,) = [d for d in letters if d["reason"] == "UNDECODABLE"]
    assert big["original"] == HUGE and not big["original_truncated"]  # the DLQ had room
    versions = {(r.model_id, r.version) for r in releases(kafka_broker, run.topics.models)}
    assert ("beta", 1) in versions and ("alpha", 2) in versions
    assert not any(m == "victim" and v > 0 for m, v in versions)
    assert run.job.alive()


def _figures(url: str) -> tuple[list[Sample], dict[str, ModelFigures]]:
    samples = scrape(url)
    return samples, model_figures(samples)


def test_metrics_endpoint_counts_what_was_sent(run: Run) -> None:
    deadline = time.monotonic() + 30
    while True:  # the counters lead the committed topics; one scrape may precede the last
        samples, figures = _figures(run.metrics_url)
        if figures.get("alpha") and figures["alpha"].refused.get("DUPLICATE"):
            break
        assert time.monotonic() < deadline, f"no DUPLICATE counted: {figures}"
        time.sleep(1)
    names = {s.name for s in samples}
    # Flink's own metrics are exported beside ours
    assert any(n.endswith("_numRecordsIn") for n in names), sorted(names)[:40]
    assert any("lastCheckpointDuration" in n for n in names)

    alpha, beta = figures["alpha"], figures["beta"]
    assert alpha.absorbed == 6 and beta.absorbed == 2
    assert alpha.staleness == {"0": 3, "1": 3}
    assert beta.staleness == {"0": 2}
    assert alpha.refused == {"DUPLICATE": 1} and not beta.refused
    assert figures["victim"].refused == {"BAD_NUM_SAMPLES": 2}
    assert figures["victim"].absorbed == 0 and figures["victim"].version == 0
    assert figures["-"].refused == {"UNDECODABLE": 1}
    assert (alpha.version, alpha.releases, alpha.window_fill) == (2, 3, 0)
    assert (beta.version, beta.releases, beta.window_fill) == (1, 2, 0)
    # an update->release time for each window release, none for the registration's v0
    assert sum(alpha.latency.values()) == 2 and sum(beta.latency.values()) == 1
    assert alpha.release_bytes > 3 * len(ONNX) // 2


def _dashboard(run: Run, kafka_broker: Broker, evaluations: Path) -> subprocess.Popen[str]:
    overrides = {**kafka_broker.job_overrides(), **run.topics.overrides()}
    command = [str(REPO / ".venv/bin/fedstream"), "dashboard", "--port", "0"]
    command += ["--metrics-url", run.metrics_url, "--evaluations", str(evaluations)]
    command += ["--refresh", "60"]
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)


def _chromium(url: str, *extra: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _shown(dom: str) -> dict[tuple[str, str], str]:
    """(model, figure) -> the text the rendered page shows."""
    cells = re.findall(r'data-figure="([^"]+)" data-model="([^"]*)">([^<]*)<', dom)
    return {(model, name): text for name, model, text in cells}


def test_dashboard_shows_the_run(run: Run, kafka_broker: Broker, tmp_path: Path) -> None:
    assert Path(CHROMIUM).exists(), "chromium is missing: `make browser` installs it"
    now = int(time.time() * 1000)
    evaluations = tmp_path / "evaluations.jsonl"
    evaluations.write_text(
        "".join(
            json.dumps(
                {"model_id": "alpha", "version": v, "accuracy": a, "t_ms": now - 1000 * (3 - v)}
            )
            + "\n"
            for v, a in ((0, 0.31), (1, 0.55), (2, 0.72))
        )
    )
    dashboard = _dashboard(run, kafka_broker, evaluations)
    try:
        assert dashboard.stdout is not None
        line = dashboard.stdout.readline()
        url = re.search(r"http://\S+/", line)
        assert url, line

        # the page is rendered from the scraper's and the topic reader's state: wait for both
        def ready() -> bool:
            import urllib.request

            with urllib.request.urlopen(url.group(0) + "api/state", timeout=5) as response:
                state = json.loads(response.read())
            return (
                bool(state["models"])
                and sum(state["dead_letter_reasons"].values()) >= 3
                and len(state["versions"].get("alpha", [])) >= 3
            )

        wait_for(ready, 60, "the dashboard's first scrape and topic read", lambda: "")
        time.sleep(2.5)  # a second scrape: updates/s needs two
        dom = _chromium(url.group(0), "--dump-dom", "--virtual-time-budget=3000")
        shown = _shown(dom)
        assert shown[("alpha", "version")] == "2"
        assert shown[("alpha", "absorbed")] == "6"
        assert shown[("alpha", "refused_DUPLICATE")] == "1"
        assert shown[("beta", "absorbed")] == "2"
        assert shown[("victim", "refused_BAD_NUM_SAMPLES")] == "2"
        assert shown[("beta", "releases")] == "2"
        assert shown[("alpha", "accuracy")] == "0.720"
        for reason, count in (("UNDECODABLE", 1), ("DUPLICATE", 1), ("BAD_NUM_SAMPLES", 2)):
            assert re.search(rf'data-figure="dlq_{reason}">{count}<', dom), reason
        for chart in ("version over time", "updates/s", "staleness", "update → release time"):
            assert f'aria-label="{chart}' in dom
        screenshot = tmp_path / "dashboard.png"
        _chromium(url.group(0), f"--screenshot={screenshot}", "--window-size=1400,1250")
        assert screenshot.stat().st_size > 10_000
        if os.environ.get("FEDSTREAM_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(screenshot, DOCS_SCREENSHOT)
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
