"""``ragtriage report``: one self-contained HTML file (plotly, JS inlined) that works offline.

Tier distribution, score histograms, cost and latency over time, and the
worst traces with why each one is there and links into Phoenix, plus one link that opens the report's
failing traces in Phoenix, already filtered. Every piece of text from the data
is escaped; the page loads nothing from the network.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ragtriage.dashboards.agreement import audit_agreement, human_agreement
from ragtriage.dashboards.sources import EvalRecord
from ragtriage.export.links import EVALUATION_LAG_S, FAILING, traces_url
from ragtriage.metrics_registry import SCORES
from ragtriage.stats import TierStats

_TIER_ORDER = ("cache", "deterministic", "local", "heavy", "none")
_TIER_COLORS = {
    "cache": "#4e79a7",
    "deterministic": "#59a14f",
    "local": "#edc948",
    "heavy": "#e15759",
    "none": "#b07aa1",
}
_VERDICT_RANK = {"fail": 0, "uncertain": 1, "pass": 2}
_PREDICTION_NAMES = {"hallucinated": "fail", "faithful": "pass", "undecided": "undecided"}
_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2328;background:#fff}
h1{margin:0 0 4px}.sub{color:#57606a;margin:0 0 16px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 16px;min-width:140px}
.card b{display:block;font-size:22px}.grid{display:grid;grid-template-columns:1fr 1fr;gap:12px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border-bottom:1px solid #d0d7de;padding:4px 6px;
text-align:left;vertical-align:top}td.q{max-width:420px}.fail{color:#cf222e;font-weight:600}
"""


def write_report(
    records: Sequence[EvalRecord],
    out: str | Path,
    *,
    title: str = "ragtriage evaluation report",
    source: str = "",
    phoenix_project_url: str | None = None,
    worst: int = 20,
) -> Path:
    """Render ``records`` into ``out`` and return its path."""
    path = Path(out)
    path.write_text(
        render_report(records, title=title, source=source, phoenix_project_url=phoenix_project_url, worst=worst),
        encoding="utf-8",
    )
    return path


def render_report(
    records: Sequence[EvalRecord],
    *,
    title: str = "ragtriage evaluation report",
    source: str = "",
    phoenix_project_url: str | None = None,
    worst: int = 20,
) -> str:
    """The report as one HTML string (about 5 MB, most of it the inlined plotly.js)."""
    require_plotly()
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    figures = [_tier_figure(records), _score_figure(records), _cost_figure(records), _latency_figure(records)]
    divs = [
        pio.to_html(fig, full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True})
        for fig in figures
    ]
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    e = html.escape
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<link rel="icon" href="data:,"><meta name="viewport" content="width=device-width,initial-scale=1">
<style>{_STYLE}</style><script>{get_plotlyjs()}</script></head>
<body><h1>{e(title)}</h1><p class="sub">{e(source)} &middot; generated {generated}</p>
{_cards(records)}
{_agreement(records)}
<div class="grid">{"".join(f"<div>{d}</div>" for d in divs)}</div>
<h2>Worst traces</h2>{_failing_link(records, phoenix_project_url)}{_worst_table(records, phoenix_project_url, worst)}
</body></html>
"""


def require_plotly() -> None:
    """Raise ``ImportError`` with the one line that fixes it when plotly (the ``report`` extra) is missing."""
    try:
        import plotly.io
        import plotly.offline  # noqa: F401
    except ImportError:
        raise ImportError("the report needs plotly, in the report extra: pip install 'ragtriage[report]'") from None


def _cards(records: Sequence[EvalRecord]) -> str:
    n = len(records)
    decided = [r for r in records if r.tier != "none"]
    heavy = sum(r.tier == "heavy" for r in decided) / len(decided) if decided else 0.0
    fails = sum(r.verdict == "fail" for r in records)
    cost = sum(r.cost_usd for r in records)
    items = [
        ("evaluations", f"{n}"),
        ("failed", f"{fails} ({fails / n:.0%})" if n else "0"),
        ("heavy-vector share", f"{heavy:.0%}"),
        ("judge spend", f"${cost:.4f}"),
        ("cost per evaluation", f"${cost / n:.6f}" if n else "-"),
    ]
    cards = "".join(f'<div class="card">{html.escape(k)}<b>{html.escape(v)}</b></div>' for k, v in items)
    return f'<div class="cards">{cards}</div>'


def _agreement(records: Sequence[EvalRecord]) -> str:
    """Audits (each cheaper tier against the tier above) and human labels (every tier and metric against people)."""
    e = html.escape
    audits = {t: a for t, a in audit_agreement(records).items() if a.audits or a.undecided}
    people = human_agreement(records)
    if not audits and not people["tiers"]["all"].n:
        return (
            '<h2>Agreement</h2><p class="sub">No audited or human-labelled traces in this source (audits: '
            "RAGTRIAGE_AUDIT_RATE; labels: <code>human_verdict</code> in Phoenix).</p>"
        )
    parts = ["<h2>Agreement</h2>"]
    if audits:
        rows = "".join(
            f"<tr><td>{e(t)}</td><td>{a.audits}</td><td>{_share(a.agreement, a.agreement_interval)}</td>"
            f"<td>{a.fails}</td><td>{_share(a.fail_precision, a.fail_precision_interval)}</td>"
            f"<td>{a.undecided}</td></tr>"
            for t, a in audits.items()
        )
        parts.append(
            "<h3>Each tier against its auditor (audit samples)</h3><table><tr><th>tier</th><th>audits</th>"
            "<th>agreement (95% CI)</th><th>fails audited</th><th>precision of fail (95% CI)</th>"
            f"<th>auditor undecided</th></tr>{rows}</table>"
        )
    if people["tiers"]["all"].n:
        groups = [("tier", people["tiers"]), ("metric", people["metrics"]), ("auditor", people["auditor"])]
        rows = "".join(_human_row(kind, stats) for kind, group in groups for stats in group.values())
        parts.append(
            "<h3>Against human labels (<code>human_verdict</code>)</h3><table><tr><th></th><th>name</th>"
            "<th>labelled</th><th>decided</th><th>precision of fail</th><th>recall of fail</th>"
            f"<th>Cohen's kappa</th><th>confusion (human &rarr; ragtriage)</th></tr>{rows}</table>"
        )
    return "".join(parts)


def _human_row(kind: str, stats: TierStats) -> str:
    m = stats.metrics()
    confusion = "; ".join(
        f"{'fail' if label == 'hallucinated' else 'pass'} &rarr; "
        + ", ".join(f"{_PREDICTION_NAMES[p]} {c}" for p, c in row.items() if c)
        for label, row in stats.confusion.items()
        if any(row.values())
    )
    cells = [
        kind,
        html.escape(stats.tier),
        str(m["n"]),
        str(m["decided"]),
        _share(m["precision"], m["precision_interval"]),
        _share(m["recall"], m["recall_interval"]),
        _number(m["kappa"], m["kappa_interval"]),
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + f"<td>{confusion}</td></tr>"


def _share(value: float | None, interval: Sequence[float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0%}" + (f" ({interval[0]:.0%}&ndash;{interval[1]:.0%})" if interval else "")


def _number(value: float | None, interval: Sequence[float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" + (f" ({interval[0]:.2f}&ndash;{interval[1]:.2f})" if interval else "")


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {"title": {"text": title}, "height": 360, "margin": {"l": 50, "r": 20, "t": 50, "b": 50}, **extra}


def _tier_figure(records: Sequence[EvalRecord]) -> Any:
    import plotly.graph_objects as go

    counts = Counter(r.tier for r in records)
    tiers = [t for t in _TIER_ORDER if counts.get(t)] or list(_TIER_ORDER[:4])
    bars = go.Bar(
        x=tiers, y=[counts.get(t, 0) for t in tiers], marker_color=[_TIER_COLORS[t] for t in tiers], name="tier"
    )
    return go.Figure(bars, layout=_layout("Deciding tier", yaxis_title="evaluations"))


def _score_figure(records: Sequence[EvalRecord]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(
        layout=_layout("Score distributions", barmode="overlay", xaxis_title="score", xaxis_range=[0, 1.02])
    )
    for name in SCORES:
        values = [r.scores[name] for r in records if name in r.scores]
        fig.add_trace(go.Histogram(x=values, name=name, opacity=0.6, xbins={"start": 0, "end": 1.0001, "size": 0.05}))
    return fig


def _x(records: Sequence[EvalRecord]) -> tuple[list[Any], str]:
    """Time when every record has one, else evaluation order (a JSONL of bare results has no time)."""
    if records and all(r.time is not None for r in records):
        return [r.time for r in records], "time"
    return list(range(1, len(records) + 1)), "evaluation #"


def _cost_figure(records: Sequence[EvalRecord]) -> Any:
    import plotly.graph_objects as go

    x, label = _x(records)
    running, total = [], 0.0
    for r in records:
        total += r.cost_usd
        running.append(total)
    fig = go.Figure(layout=_layout("Judge cost over time", xaxis_title=label, yaxis_title="USD per evaluation"))
    fig.add_trace(go.Scatter(x=x, y=[r.cost_usd for r in records], mode="markers", name="per evaluation"))
    fig.add_trace(go.Scatter(x=x, y=running, mode="lines", name="cumulative", yaxis="y2"))
    fig.update_layout(yaxis2={"title": "cumulative USD", "overlaying": "y", "side": "right"})
    return fig


def _latency_figure(records: Sequence[EvalRecord]) -> Any:
    import plotly.graph_objects as go

    x, label = _x(records)
    fig = go.Figure(layout=_layout("Evaluation latency over time", xaxis_title=label, yaxis_title="ms"))
    for tier in _TIER_ORDER:
        points = [(xi, r.latency_ms) for xi, r in zip(x, records, strict=True) if r.tier == tier]
        if points:
            xs, ys = zip(*points, strict=True)
            fig.add_trace(
                go.Scatter(x=list(xs), y=list(ys), mode="markers", name=tier, marker_color=_TIER_COLORS[tier])
            )
    return fig


def _badness(record: EvalRecord) -> tuple[int, float, int]:
    """Fails first, then the lowest verdict score; judge errors before clean uncertain results."""
    lowest = min(
        (record.scores[n] for n in ("faithfulness", "relevance", "answer_quality") if n in record.scores), default=1.0
    )
    return (_VERDICT_RANK.get(record.verdict, 1), lowest, 0 if record.status != "ok" else 1)


def _why(record: EvalRecord) -> str:
    """Why the trace is where it is: what the tiers found (the verdict's explanation), else its lowest score."""
    if record.explanation:
        return record.explanation
    if record.scores:
        name, value = min(record.scores.items(), key=lambda item: item[1])
        return f"lowest score: {name} {value:.2f}"
    return ""


def _failing_link(records: Sequence[EvalRecord], project_url: str | None) -> str:
    """The report's failing traces in Phoenix: filtered on the verdict, ``answer``, over its time range (from a
    little before its first record: a JSONL's times may be evaluation times, which lag their traces)."""
    fails = sum(r.verdict == "fail" for r in records)
    if not project_url or not fails:
        return ""
    times = [r.time for r in records if r.time is not None]
    start = min(times) - timedelta(seconds=EVALUATION_LAG_S) if len(times) == len(records) else None
    end = max(times) + timedelta(seconds=1) if start is not None else None
    url = html.escape(traces_url(project_url, FAILING, start, end))
    return f'<p><a href="{url}" target="_blank" rel="noopener">Open the {fails} failing traces in Phoenix</a></p>'


def _worst_table(records: Sequence[EvalRecord], project_url: str | None, worst: int) -> str:
    e = html.escape
    rows = sorted(records, key=_badness)[:worst]
    if not rows:
        return "<p>No evaluations.</p>"
    names = list(SCORES)
    columns = ["verdict", "why", "trace", "tier", "status", *names, "cost", "ms", "question"]
    head = "".join(f"<th>{e(h)}</th>" for h in columns)
    body = []
    for r in rows:
        trace = e(r.trace_id or "-")
        if project_url and r.trace_id:
            trace = f'<a href="{e(f"{project_url}/traces/{r.trace_id}")}" target="_blank" rel="noopener">{trace}</a>'
        scores = "".join(f"<td>{r.scores[n]:.2f}</td>" if n in r.scores else "<td>-</td>" for n in names)
        verdict_class = ' class="fail"' if r.verdict == "fail" else ""
        body.append(
            f'<tr><td{verdict_class}>{e(r.verdict)}</td><td class="q">{e(_why(r)[:500])}</td><td>{trace}</td>'
            f"<td>{e(r.tier)}</td><td>{e(r.status)}</td>{scores}<td>${r.cost_usd:.6f}</td><td>{r.latency_ms:.1f}</td>"
            f'<td class="q">{e(r.question[:300])}</td></tr>'
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
