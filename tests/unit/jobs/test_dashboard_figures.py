"""The dashboard's pure parts: the Prometheus text format as Flink's reporter writes it,
per-model figures summed over operator instances, rates across a restart, and the page
(escaped, self-contained, every figure readable)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from fedstream.jobs.dashboard.figures import History, model_figures
from fedstream.jobs.dashboard.kafka_feed import TopicView
from fedstream.jobs.dashboard.page import Evaluation, PageState, render
from fedstream.jobs.dashboard.prometheus import parse

SCOPE = "flink_taskmanager_job_task_operator_fedstream_model"
#: as Flink's reporter writes them: every scope variable a label, a trailing comma
SCRAPE = f"""# HELP {SCOPE}_updates_absorbed updates_absorbed (scope: ...)
# TYPE {SCOPE}_updates_absorbed gauge
{SCOPE}_updates_absorbed{{model="m1",operator_name="aggregate",subtask_index="0",}} 4.0
{SCOPE}_updates_absorbed{{model="m1",operator_name="aggregate",subtask_index="1",}} 2.0
{SCOPE}_reason_updates_refused{{model="m1",reason="DUPLICATE",subtask_index="0",}} 1.0
{SCOPE}_reason_updates_refused{{model="m1",reason="DUPLICATE",subtask_index="1",}} 2.0
{SCOPE}_reason_updates_refused{{model="-",reason="UNDECODABLE",}} 1.0
{SCOPE}_bucket_staleness{{model="m1",bucket="0",}} 5.0
{SCOPE}_bucket_staleness{{model="m1",bucket="inf",}} 1.0
{SCOPE}_version{{model="m1",}} 7.0
{SCOPE}_window_fill{{model="m1",}} 2.0
{SCOPE}_releases{{model="m1",}} 8.0
{SCOPE}_release_bytes{{model="m1",}} 8000.0
{SCOPE}_release_latency_ms_sum{{model="m1",}} 7000.0
{SCOPE}_bucket_release_latency{{model="m1",bucket="1000",}} 7.0
flink_jobmanager_numRunningJobs{{host="x",}} 1.0
"""


def test_figures_sum_operator_instances() -> None:
    figures = model_figures(parse(SCRAPE))
    m1 = figures["m1"]
    assert m1.absorbed == 6
    assert m1.refused == {"DUPLICATE": 3} and m1.refused_total == 3
    assert m1.staleness == {"0": 5, "inf": 1}
    assert (m1.version, m1.window_fill, m1.releases, m1.release_bytes) == (7, 2, 8, 8000)
    assert m1.mean_latency_ms == 1000.0
    assert figures["-"].refused == {"UNDECODABLE": 1}
    assert set(figures) == {"-", "m1"}


def test_label_values_are_unescaped() -> None:
    (sample,) = parse('x{model="a\\\\b\\"c\\nd",z="1" ,} 2 1700000000\n')
    assert sample.labels == {"model": 'a\\b"c\nd', "z": "1"} and sample.value == 2.0


@given(st.text(max_size=200))
def test_any_text_parses_without_raising(text: str) -> None:
    parse(text)


def test_rates_per_second_and_a_restart_counts_from_zero() -> None:
    history = History()
    for t, absorbed in ((0.0, 0), (2.0, 10), (4.0, 30), (6.0, 4)):  # then the job restarted
        line = (
            f'{SCOPE}_updates_absorbed{{model="m1",operator_name="aggregate",subtask_index="0",}}'
        )
        scrape = SCRAPE.replace(f"{line} 4.0", f"{line} {absorbed}")
        history.add(t, model_figures(parse(scrape)))
    rates = [r.absorbed for r in history.rates("m1")]
    assert rates == [5.0, 10.0, 3.0]


def _state(model_id: str) -> PageState:
    figures = model_figures(parse(SCRAPE.replace('model="m1"', f'model="{model_id}"')))
    topics = TopicView()
    topics.add_release(
        {
            "model_id": model_id,
            "chunk_index": 0,
            "version": 3,
            "created_at": 1_700_000_000_000,
            "onnx_size": 100,
            "lineage": {"num_updates": 2},
        }
    )
    topics.add_dead_letter(
        {"reason": "DUPLICATE", "created_at": 1, "model_id": model_id, "detail": "<b>x</b>"}
    )
    evaluations = {model_id: [Evaluation(1_700_000_000_000, 3, 0.5)]}
    return PageState("http://x/metrics", 5, figures, {}, topics, evaluations, now=1.7e9)


def test_page_shows_every_figure_and_fetches_nothing() -> None:
    page = render(_state("m1"))
    shown = dict(re.findall(r'data-figure="([^"]+)" data-model="m1">([^<]*)<', page))
    assert shown["version"] == "7" and shown["absorbed"] == "6"
    assert shown["refused_DUPLICATE"] == "3" and shown["accuracy"] == "0.500"
    assert 'data-figure="dlq_DUPLICATE">1<' in page
    # offline: no script, no stylesheet or image from anywhere
    assert "<script" not in page and 'http-equiv="refresh"' in page
    assert not re.search(r'(src|href)="', page)


def test_page_escapes_what_devices_and_owners_control() -> None:
    hostile = '<img src=x onerror="alert(1)">'
    page = render(_state(hostile))
    assert "<img" not in page and "&lt;img" in page
    assert "<b>x</b>" not in page
