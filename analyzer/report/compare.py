"""``analyzer compare``: two analyses side by side (before and after a change) with the deltas that matter.

This module owns the comparison page: which figures are compared (``KEY_FIGURES``), how a delta is shown,
and the per-host comparison. It reuses the page template, escaping and number formats of
``analyzer.report.html`` and the metrics of ``analyzer.metrics``; it computes no metric itself and knows
nothing of packets. ``write_compare`` is its only file access.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

import analyzer
from analyzer.analysis import Analysis
from analyzer.metrics import MetricTables, compute_all
from analyzer.report import figures
from analyzer.report.html import (
    HOSTS_MAX_ROWS,
    Cell,
    _Charts,
    _plotly_js,
    _template,
    esc,
    fmt_int,
    fmt_ms,
    fmt_num,
    fmt_ratio,
    num_sorted,
    table,
    txt,
)
from analyzer.report.redact import redact_analysis

# (summary key, label, format, lower is better)
KEY_FIGURES: tuple[tuple[str, str, str, bool], ...] = (
    ("connections", "connections", "int", True),
    ("transactions", "requests", "int", False),
    ("reuse_ratio", "reuse ratio", "ratio", False),
    ("requests_per_connection_mean", "requests per connection (mean)", "num", False),
    ("connections_reused", "connections reused (> 1 request)", "int", False),
    ("new_connections", "new connections to a server already used", "int", True),
    ("new_connections_avoidable", "new connections avoidable", "int", True),
    ("handshake_time_ms_total", "time spent in handshakes", "ms", True),
    ("handshake_round_trips_paid", "handshake round trips paid", "num", True),
    ("handshake_time_ms_saved", "handshake time saved by reuse", "ms", False),
    ("handshake_rtt_ms_median", "median handshake RTT", "ms", True),
    ("idle_before_ms_median", "median idle gap before a request", "ms", False),
    ("closes_by_server", "closes by the server", "int", True),
    ("closes_by_client", "closes by the client", "int", False),
    ("close_races", "close races", "int", True),
)


def _fmt(value: Any, kind: str) -> str:
    return {"int": fmt_int, "ratio": fmt_ratio, "ms": fmt_ms}.get(kind, fmt_num)(value)


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def _delta(before: Any, after: Any, kind: str, lower_better: bool) -> tuple[str, str]:
    """(escaped delta text, css class): ``ok`` when it moved the good way, ``bad`` the other way."""
    b, a = _number(before), _number(after)
    if math.isnan(b) or math.isnan(a):
        return "—", ""
    diff = a - b
    if diff == 0:
        return "no change", ""
    if kind == "ratio":
        text = f"{diff * 100:+.1f} points"
    elif kind == "ms":
        text = ("+" if diff > 0 else "−") + fmt_ms(abs(diff))
    elif kind == "int":
        text = f"{int(diff):+,}"
    else:
        text = f"{diff:+,.2f}"
    if b != 0:
        text += f" ({diff / abs(b) * 100:+.0f} %)"
    good = (diff < 0) == lower_better
    return esc(text), "ok" if good else "bad"


def _key_table(before: dict[str, Any], after: dict[str, Any]) -> str:
    rows: list[list[Cell]] = []
    for key, label, kind, lower in KEY_FIGURES:
        text, cls = _delta(before.get(key), after.get(key), kind, lower)
        rows.append([txt(label), (esc(_fmt(before.get(key), kind)), "num"), (esc(_fmt(after.get(key), kind)), "num"),
                     (f'<span class="{cls}">{text}</span>' if cls else text, "num")])
    blockers = [str(side.get("top_reuse_blocker") or "none") for side in (before, after)]
    rows.append([txt("biggest reason for new connections"), txt(blockers[0]), txt(blockers[1]),
                 txt("same" if blockers[0] == blockers[1] else "changed")])
    return table([("", ""), ("before", "num"), ("after", "num"), ("change", "num")], rows)


def _host_frame(m: MetricTables) -> pd.DataFrame:
    return m.hosts.set_index("host")[["connections", "requests", "reuse_ratio", "new_connections_avoidable",
                                      "handshake_time_ms", "idle_timeout_s"]]


def _hosts_table(before: MetricTables, after: MetricTables) -> tuple[str, pd.DataFrame]:
    b, a = _host_frame(before), _host_frame(after)
    joined = b.add_suffix("_before").join(a.add_suffix("_after"), how="outer")
    joined["_requests"] = joined[["requests_before", "requests_after"]].fillna(0).sum(axis=1)
    joined = joined.sort_values("_requests", ascending=False, kind="stable")
    rows: list[list[Cell]] = []
    for host, r in joined.head(HOSTS_MAX_ROWS).iterrows():
        cells: list[Cell] = [txt(host)]
        for name, kind, lower in (("connections", "int", True), ("requests", "int", False),
                                  ("reuse_ratio", "ratio", False), ("new_connections_avoidable", "int", True),
                                  ("handshake_time_ms", "ms", True), ("idle_timeout_s", "num", False)):
            before_v, after_v = r[f"{name}_before"], r[f"{name}_after"]
            text, cls = _delta(before_v, after_v, kind, lower)
            cells += [num_sorted(esc(_fmt(before_v, kind)), before_v), num_sorted(esc(_fmt(after_v, kind)), after_v),
                      (f'<span class="{cls}">{text}</span>' if cls else text, "num")]
        rows.append(cells)
    headers = [("host", "")]
    for label in ("connections", "requests", "reuse ratio", "avoidable", "handshake time", "server idle timeout s"):
        headers += [(f"{label} before", "num"), (f"{label} after", "num"), ("change", "num")]
    return table(headers, rows, sortable=True), joined


def _hosts_figure(joined: pd.DataFrame, max_hosts: int = 15) -> go.Figure:
    title = "Connections per host, before and after"
    if joined.empty:
        return figures.empty_figure(title, "No host in either capture.")
    top = joined.head(max_hosts)
    labels = [figures.safe(h, 60) for h in top.index]
    fig = go.Figure()
    for side, color in (("before", "#7f7f7f"), ("after", "#1f77b4")):
        fig.add_trace(go.Bar(y=labels, x=np.nan_to_num(top[f"connections_{side}"].to_numpy(dtype=float)),
                             orientation="h", name=side, marker_color=color,
                             hovertemplate=f"%{{y}}<br>{side}: %{{x:,}} connections<extra></extra>"))
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=labels, autorange="reversed")
    fig.update_xaxes(title_text="connections", rangemode="tozero")
    fig.update_layout(barmode="group")
    return figures._layout(fig, title, height=max(300, 140 + 40 * len(labels)))


def render_compare(before: Analysis, after: Analysis, before_name: str, after_name: str,
                   redact: bool = True) -> str:
    """The comparison page of two analyses as one self-contained HTML document (plotly.js embedded)."""
    if redact:
        before, after = redact_analysis(before), redact_analysis(after)
    mb, ma = compute_all(before, with_whatif=False), compute_all(after, with_whatif=False)
    chart = _Charts()
    hosts_html, joined = _hosts_table(mb, ma)
    title = f"Compare: {before_name} → {after_name}"
    body = "".join([
        f"<header><h1>{esc(title)}</h1>",
        f'<p class="lead">before: {esc(before_name)} · after: {esc(after_name)}. Green: better, red: worse.</p>'
        '<nav><a href="#key">Key figures</a><a href="#hosts">Hosts</a></nav></header>',
        '<section id="key"><h2>Key figures</h2>', _key_table(mb.summary, ma.summary), "</section>",
        '<section id="hosts"><h2>Hosts</h2>', chart(_hosts_figure(joined), "Connections per host"), hosts_html,
        '<p class="note">Hosts as in the report (Host header and server address); a host missing on one side '
        "shows —.</p></section>",
        f"<footer>Generated by analyzer {html.escape(analyzer.__version__)} · self-contained: works offline."
        "</footer>",
    ])
    return _template().substitute(title=esc(title), version=esc(analyzer.__version__), body=body,
                                  plotlyjs=_plotly_js())


def write_compare(before: Analysis, after: Analysis, before_name: str, after_name: str,
                  path: str | os.PathLike[str], redact: bool = True) -> None:
    """Write ``render_compare`` to ``path`` (UTF-8), creating missing parent folders."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_compare(before, after, before_name, after_name, redact), encoding="utf-8")
