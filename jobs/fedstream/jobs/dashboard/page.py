"""The dashboard page: one self-contained HTML document, inline CSS and SVG, no script.

Nothing is fetched from anywhere (no CDN, no font, no script): the page works offline and
refreshes itself (`<meta http-equiv="refresh">`). Every text that comes from a record
(model ids, dead-letter details) is device- or owner-controlled and is escaped. Each
figure a test or a tool may read carries `data-figure="<name>"` (and `data-model`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from fedstream.jobs.dashboard.figures import ModelFigures, Rate
from fedstream.jobs.dashboard.kafka_feed import TopicView
from fedstream.pipelines.job_metrics import LATENCY_BUCKETS_MS, NO_MODEL, STALENESS_BUCKETS

__all__ = ["Evaluation", "PageState", "render"]

_W, _H, _PAD = 420, 160, 34
_COLORS = ("#1f77b4", "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em} h2{font-size:1.15em;margin:.2em 0}
.model{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8em;margin:1em 0}
.charts{display:flex;flex-wrap:wrap;gap:.8em} .chart{border:1px solid #eee}
table{border-collapse:collapse} td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #eee}
td.n{text-align:right;font-variant-numeric:tabular-nums} .muted{color:#777} .err{color:#b00}
svg text{font-size:10px;fill:#444}
"""


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One accuracy measurement an evaluator published (the simulator's `--evaluations`)."""

    t_ms: int
    version: int
    accuracy: float


@dataclass
class PageState:
    """Everything one rendering shows."""

    metrics_url: str
    refresh_s: int
    figures: dict[str, ModelFigures]
    rates: dict[str, list[Rate]]
    topics: TopicView
    evaluations: dict[str, list[Evaluation]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    now: float = field(default_factory=time.time)


def _scale(values: Sequence[float], low: float, high: float, size: float) -> list[float]:
    span = (high - low) or 1.0
    return [(v - low) / span * size for v in values]


def _frame(title: str, body: str, x_label: str, y_max: str) -> str:
    return (
        f'<svg class="chart" width="{_W}" height="{_H}" role="img" aria-label="{escape(title)}">'
        f'<text x="{_PAD}" y="12" style="font-weight:bold">{escape(title)}</text>'
        f'<line x1="{_PAD}" y1="{_H - 20}" x2="{_W - 8}" y2="{_H - 20}" stroke="#999"/>'
        f'<line x1="{_PAD}" y1="20" x2="{_PAD}" y2="{_H - 20}" stroke="#999"/>'
        f'<text x="2" y="26">{escape(y_max)}</text><text x="20" y="{_H - 22}">0</text>'
        f'<text x="{_W - 90}" y="{_H - 6}">{escape(x_label)}</text>{body}</svg>'
    )


def steps(points: Sequence[tuple[float, float]], until: float) -> list[tuple[float, float]]:
    """A value that holds until the next point (a version), drawn as steps up to `until`."""
    out: list[tuple[float, float]] = []
    for x, y in points:
        if out:
            out.append((x, out[-1][1]))
        out.append((x, y))
    if out and until > out[-1][0]:
        out.append((until, out[-1][1]))
    return out


def line_chart(
    title: str, series: Sequence[tuple[str, Sequence[tuple[float, float]]]], x_label: str
) -> str:
    """Lines (label, [(x, y)]) on shared axes from 0; an empty chart says so."""
    points = [p for _, line in series for p in line]
    if not points:
        return _frame(title, f'<text x="{_PAD + 10}" y="{_H / 2}">no data yet</text>', "", "")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y1 = min(xs), max(xs), max(max(ys), 1e-9)
    width, height = _W - _PAD - 10, _H - 42
    body = []
    for index, (label, line) in enumerate(series):
        color = _COLORS[index % len(_COLORS)]
        px = _scale([p[0] for p in line], x0, x1, width)
        py = _scale([p[1] for p in line], 0.0, y1, height)
        path = " ".join(f"{_PAD + x:.1f},{_H - 20 - y:.1f}" for x, y in zip(px, py, strict=True))
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>')
        body.append(
            f'<text x="{_PAD + 6 + 110 * (index % 3)}" y="{30 + 11 * (index // 3)}" '
            f'style="fill:{color}">{escape(label)}</text>'
        )
    return _frame(title, "".join(body), x_label, f"{y1:.3g}")


def bar_chart(title: str, bars: Sequence[tuple[str, int]], x_label: str) -> str:
    """Bars (label, count), labels under them."""
    top = max((count for _, count in bars), default=0)
    width = (_W - _PAD - 10) / max(len(bars), 1)
    body = []
    for index, (label, count) in enumerate(bars):
        h = 0.0 if top == 0 else count / top * (_H - 50)
        x = _PAD + index * width
        body.append(
            f'<rect x="{x + 2:.1f}" y="{_H - 20 - h:.1f}" width="{width - 4:.1f}" '
            f'height="{h:.1f}" fill="#1f77b4"><title>{escape(label)}: {count}</title></rect>'
            f'<text x="{x + 2:.1f}" y="{_H - 8}">{escape(label)}</text>'
        )
        if count:
            body.append(f'<text x="{x + 2:.1f}" y="{_H - 23 - h:.1f}">{count}</text>')
    return _frame(title, "".join(body), x_label, str(top))


def _buckets(
    counts: dict[str, int], bounds: Sequence[int], scale: float = 1.0
) -> list[tuple[str, int]]:
    """Histogram bars; a bucket's label is its upper bound divided by `scale`."""
    bars = [(f"≤{b / scale:g}", counts.get(str(b), 0)) for b in bounds]
    return [*bars, (f">{bounds[-1] / scale:g}", counts.get("inf", 0))]


def _figure(name: str, model: str, value: object) -> str:
    return (
        f"<tr><th>{escape(name.replace('_', ' '))}</th>"
        f'<td class="n" data-figure="{escape(name)}" data-model="{escape(model)}">'
        f"{escape(str(value))}</td></tr>"
    )


def _figures_table(figures: ModelFigures) -> str:
    m = figures.model_id
    mean = figures.mean_latency_ms
    rows = [
        _figure("version", m, figures.version),
        _figure("absorbed", m, figures.absorbed),
        _figure("refused", m, figures.refused_total),
        *(_figure(f"refused_{r}", m, n) for r, n in sorted(figures.refused.items())),
        _figure("window_fill", m, figures.window_fill),
        _figure("releases", m, figures.releases),
        _figure("release_bytes", m, figures.release_bytes),
        _figure("release_latency_mean_ms", m, "-" if mean is None else round(mean)),
    ]
    return f"<table>{''.join(rows)}</table>"


def _title(model_id: str) -> str:
    return "records with no readable model" if model_id == NO_MODEL else f"model {model_id}"


def _model_section(state: PageState, figures: ModelFigures) -> str:
    m = figures.model_id
    t0 = state.now
    releases = list(state.topics.releases.get(m, ()))
    versions = [((p.created_at_ms / 1000 - t0), float(p.version)) for p in releases]
    rates = state.rates.get(m, [])
    reasons = sorted({r for rate in rates for r in rate.refused})
    rate_series = [("absorbed", [(r.t - t0, r.absorbed) for r in rates])]
    rate_series += [
        (f"refused {reason}", [(r.t - t0, r.refused.get(reason, 0.0)) for r in rates])
        for reason in reasons
    ]
    charts = [
        line_chart("version over time", [("version", steps(versions, 0.0))], "s (now = 0)"),
        line_chart("updates/s", rate_series, "s (now = 0)"),
        bar_chart(
            "staleness (versions behind)", _buckets(figures.staleness, STALENESS_BUCKETS), ""
        ),
        bar_chart(
            "update → release time", _buckets(figures.latency, LATENCY_BUCKETS_MS, 1000), "s"
        ),
    ]
    evaluations = state.evaluations.get(m, [])
    if evaluations:
        accuracy = [(e.t_ms / 1000 - t0, e.accuracy) for e in evaluations]
        charts.append(line_chart("accuracy (evaluator)", [("accuracy", accuracy)], "s (now = 0)"))
        last = evaluations[-1]
        extra = _figure("accuracy", m, f"{last.accuracy:.3f}")
    else:
        extra = ""
    return (
        f'<section class="model" data-model="{escape(m)}"><h2>{escape(_title(m))}</h2>'
        f'<div class="charts"><div>{_figures_table(figures)}<table>{extra}</table></div>'
        f"{''.join(charts)}</div></section>"
    )


def _dead_letters(topics: TopicView) -> str:
    counts = "".join(
        f'<tr><td>{escape(reason)}</td><td class="n" data-figure="dlq_{escape(reason)}">'
        f"{count}</td></tr>"
        for reason, count in topics.dead_letter_reasons.most_common()
    )
    recent = "".join(
        f"<tr><td>{time.strftime('%H:%M:%S', time.gmtime(d.created_at_ms / 1000))}</td>"
        f"<td>{escape(d.model_id or '-')}</td><td>{escape(d.reason)}</td>"
        f'<td class="muted">{escape(d.detail)}</td></tr>'
        for d in reversed(topics.dead_letters)
    )
    return (
        '<section class="model"><h2>dead letters (read_committed)</h2>'
        f"<table><tr><th>reason</th><th>count</th></tr>{counts or '<tr><td>none</td></tr>'}"
        f"</table><h2>most recent</h2><table><tr><th>UTC</th><th>model</th><th>reason</th>"
        f"<th>detail</th></tr>{recent}</table></section>"
    )


def render(state: PageState) -> str:
    """The whole page."""
    models = sorted(set(state.figures) | set(state.topics.releases))
    sections = "".join(
        _model_section(state, state.figures.get(m) or ModelFigures(m)) for m in models
    )
    errors = "".join(f'<p class="err">{escape(e)}</p>' for e in state.errors)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(state.now))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{state.refresh_s}">'
        f"<title>fedstream dashboard</title><style>{_STYLE}</style></head><body>"
        f'<h1>fedstream</h1><p class="muted">{stamp} · metrics {escape(state.metrics_url)} · '
        f'<span data-figure="models">{len(models)}</span> models</p>{errors}'
        f"{sections or '<p>no model has reported yet</p>'}{_dead_letters(state.topics)}"
        "</body></html>"
    )
