"""The dashboard's HTTP server and the loop behind it.

A scraper thread reads the job's Prometheus endpoint every `scrape_every_s` (rates need a
history of scrapes) and a `KafkaFeed` follows the models and dead-letter topics; each
request renders the page from what they hold, so a page view never waits on Kafka or the
job. Binds to 127.0.0.1 by default: the page shows model ids and dead-letter details.

    GET /            the page (`page.render`)
    GET /api/state   the same figures as JSON
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedstream.jobs.dashboard.figures import History, model_figures
from fedstream.jobs.dashboard.kafka_feed import KafkaFeed, TopicView
from fedstream.jobs.dashboard.page import Evaluation, PageState, render
from fedstream.jobs.dashboard.prometheus import scrape

if TYPE_CHECKING:
    from fedstream.jobs.config import JobConfig

__all__ = ["Dashboard", "read_evaluations", "serve"]


def read_evaluations(path: Path | None) -> dict[str, list[Evaluation]]:
    """Model id -> accuracy over time, from an evaluator's JSON-lines file (the simulator's
    `--evaluations`: {"model_id", "version", "accuracy", "t_ms"} per line); lines that do
    not parse are skipped (the file may be mid-write)."""
    out: dict[str, list[Evaluation]] = {}
    if path is None or not path.is_file():
        return out
    for line in path.read_text(errors="replace").splitlines():
        try:
            item = json.loads(line)
            point = Evaluation(int(item["t_ms"]), int(item["version"]), float(item["accuracy"]))
            out.setdefault(str(item["model_id"]), []).append(point)
        except (ValueError, KeyError, TypeError):
            continue
    return out


class Dashboard:
    """Scrapes `metrics_url` and follows the config's topics (`kafka`: False for metrics
    only) until `stop`."""

    def __init__(
        self,
        config: JobConfig,
        metrics_url: str,
        *,
        evaluations: Path | None = None,
        refresh_s: int = 5,
        scrape_every_s: float = 2.0,
        kafka: bool = True,
    ) -> None:
        self.metrics_url = metrics_url
        self.refresh_s = refresh_s
        self._evaluations = evaluations
        self._every = scrape_every_s
        self._history = History()
        self._metrics_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._feed = KafkaFeed(config) if kafka else None
        self._scraper = threading.Thread(target=self._scrape_loop, name="scraper", daemon=True)

    def start(self) -> None:
        if self._feed is not None:
            self._feed.start()
        self._scraper.start()

    def stop(self) -> None:
        self._stop.set()
        if self._feed is not None:
            self._feed.stop()
        self._scraper.join(timeout=10)

    def scrape_once(self) -> None:
        try:
            samples = scrape(self.metrics_url)
        except OSError as error:
            with self._lock:
                self._metrics_error = f"metrics endpoint {self.metrics_url}: {error}"
            return
        with self._lock:
            self._history.add(time.time(), model_figures(samples))
            self._metrics_error = None

    def _scrape_loop(self) -> None:
        while not self._stop.is_set():
            self.scrape_once()
            self._stop.wait(self._every)

    def state(self) -> PageState:
        with self._lock:
            figures = self._history.latest()
            rates = {m: self._history.rates(m) for m in figures}
            errors = [self._metrics_error] if self._metrics_error else []
        topics = self._feed.view() if self._feed is not None else TopicView()
        if self._feed is not None and self._feed.error:
            errors.append(self._feed.error)
        return PageState(
            self.metrics_url,
            self.refresh_s,
            figures,
            rates,
            topics,
            read_evaluations(self._evaluations),
            errors,
        )


def _json_state(state: PageState) -> dict[str, Any]:
    return {
        "now": state.now,
        "errors": state.errors,
        "models": {
            m: {**dataclasses.asdict(f), "refused_total": f.refused_total}
            for m, f in state.figures.items()
        },
        "versions": {
            m: [[p.created_at_ms, p.version] for p in points]
            for m, points in state.topics.releases.items()
        },
        "dead_letter_reasons": dict(state.topics.dead_letter_reasons),
    }


def serve(dashboard: Dashboard, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server for `dashboard` (not yet serving: call `serve_forever`); port 0
    takes a free one (`server.server_address`)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/":
                body, kind = render(dashboard.state()).encode(), "text/html; charset=utf-8"
            elif path == "/api/state":
                body, kind = json.dumps(_json_state(dashboard.state())).encode(), "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: no line per view
            return

    return ThreadingHTTPServer((host, port), Handler)
