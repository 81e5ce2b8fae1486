"""The report's charts: one function per chart, metric DataFrames in, ``plotly.graph_objects.Figure`` out.

This module owns how each chart looks (traces, axes, hover text, caps on what is drawn). It knows the
columns of ``analyzer.tables`` and of the ``analyzer.metrics`` results, but computes no metric itself and
does no I/O: ``analyzer.report.html`` embeds the figures in the page.

Every string that comes from a capture (hosts, targets, methods, reasons) is HTML-escaped before it goes
into a figure: plotly renders a subset of HTML tags in text and hover labels, and turns entities back into
plain characters, so escaped text is shown literally and never interpreted.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyzer.metrics.frames import endpoints, floats, positions, texts
from analyzer.report.redact import printable

TIMELINE_MAX_CONNECTIONS = 300  # rows of the timeline; more are sampled evenly by start time
TIMELINE_MAX_REQUESTS = 20_000  # request marks drawn on the sampled rows; more are sampled evenly
ECDF_MAX_POINTS = 2_000  # points per cumulative-distribution line
HISTOGRAM_LINEAR_MAX = 40  # requests-per-connection axis is linear up to this count, categorical above
HANDSHAKE_MAX_HOSTS = 20  # bars per series in the handshake chart
TEXT_MAX = 120  # characters of a capture string shown in a hover label

CLOSE_COLORS: dict[str, str] = {"server": "#d62728", "client": "#1f77b4", "open": "#2ca02c",
                                "unknown": "#7f7f7f"}
CLOSE_NAMES: dict[str, str] = {"server": "closed by server", "client": "closed by client",
                               "open": "open at capture end", "unknown": "closer unknown"}
FONT = dict(family="system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif", size=13)


def safe(value: Any, limit: int = TEXT_MAX) -> str:
    """A capture string made safe for plotly text: control characters made visible, shortened to ``limit``
    characters (``redact.printable``), HTML-escaped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    try:
        if pd.isna(value):
            return "—"
    except (TypeError, ValueError):
        pass
    return html.escape(printable(str(value), limit), quote=True)


def _layout(fig: go.Figure, title: str, height: int = 420) -> go.Figure:
    """Common look: title top left, legend in a row between the title and the plot."""
    fig.update_layout(template="plotly_white", height=height, font=FONT, hoverlabel=dict(align="left"),
                      title=dict(text=title, x=0, xanchor="left", y=1, yanchor="top", pad=dict(t=12, l=4)),
                      margin=dict(l=60, r=30, t=100, b=50),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
    return fig


def empty_figure(title: str, message: str) -> go.Figure:
    """A figure with no data and ``message`` in its middle (``message`` is escaped)."""
    fig = go.Figure()
    fig.add_annotation(text=safe(message, 300), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font=dict(size=15, color="#666"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height=260)


def requests_histogram_figure(histogram: pd.DataFrame) -> go.Figure:
    """Bar chart of requests per connection from ``metrics.requests_per_connection_histogram``."""
    title = "Requests per connection"
    if histogram.empty:
        return empty_figure(title, "No connection with a known request count.")
    requests = histogram["requests"].to_numpy(dtype=int)
    counts = histogram["connections"].to_numpy(dtype=int)
    shares = histogram["share"].to_numpy(dtype=float)
    colors = ["#bbbbbb" if r == 0 else ("#ff7f0e" if r == 1 else "#1f77b4") for r in requests]
    fig = go.Figure(go.Bar(
        x=requests, y=counts, marker_color=colors,
        customdata=np.round(shares * 100, 1),
        hovertemplate="%{x} request(s): %{y} connection(s) (%{customdata} %)<extra></extra>"))
    axis_title = "requests carried by the connection (grey: unused, orange: one request only)"
    if requests.max() <= HISTOGRAM_LINEAR_MAX:
        fig.update_xaxes(title_text=axis_title, tickformat="d", dtick=1,
                         range=[-0.5, float(requests.max()) + 0.5])
    else:  # a linear axis would make the bars invisible: one category per count that occurs
        fig.update_xaxes(title_text=axis_title + "; only the counts that occur", type="category",
                         categoryorder="array", categoryarray=[str(r) for r in requests])
        fig.data[0].x = [str(r) for r in requests]
    fig.update_yaxes(title_text="connections", rangemode="tozero", tickformat=",d",
                     dtick=1 if counts.max() <= 8 else None)
    return _layout(fig, title, height=380)


def reasons_figure(reasons: pd.DataFrame) -> go.Figure:
    """Horizontal bars: new connections per reason, from ``metrics.reason_table`` (the connections that are
    not misses — first to their server, opened before the capture — in grey)."""
    title = "Why new connections were opened"
    if reasons.empty:
        return empty_figure(title, "No connection whose opening was captured.")
    ordered = reasons.iloc[::-1]  # plotly draws the first bar at the bottom
    names = [str(r) for r in ordered["reason"]]
    grey = {"first_connection", "opened_before_capture"}
    fig = go.Figure(go.Bar(
        y=names, x=ordered["connections"].to_numpy(dtype=int), orientation="h",
        marker_color=["#bbbbbb" if name in grey else "#d62728" for name in names],
        customdata=[printable(str(label), TEXT_MAX) for label in ordered["label"]],
        hovertemplate="%{y}: %{x} connection(s)<br>%{customdata}<extra></extra>"))
    most = int(ordered["connections"].max())
    fig.update_xaxes(title_text="connections (red: could have reused an earlier connection)",
                     rangemode="tozero", tickformat=",d", dtick=1 if most <= 8 else None)
    fig.update_yaxes(type="category", automargin=True)
    return _layout(fig, title, height=max(220, 60 + 32 * len(names)))


def timeline_sample(connections: pd.DataFrame, max_connections: int = TIMELINE_MAX_CONNECTIONS
                    ) -> pd.DataFrame:
    """The connections the timeline draws: all of them sorted by start, or ``max_connections`` of them
    evenly spaced over that order when there are more."""
    ordered = connections.assign(_start=floats(connections["ts_start"])).sort_values(
        "_start", kind="stable", na_position="last").drop(columns="_start")
    if len(ordered) <= max_connections:
        return ordered
    picks = np.unique(np.linspace(0, len(ordered) - 1, max_connections).round().astype(int))
    return ordered.iloc[picks]


def _unique(labels: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    result = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        result.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return result


def _fmt_ms(value: float) -> str:
    if math.isnan(value):
        return "—"
    if abs(value) >= 1000:
        return f"{value / 1000:.3f} s"
    return f"{value:.3f} ms" if abs(value) < 1 else f"{value:.1f} ms"


def timeline_figure(connections: pd.DataFrame, transactions: pd.DataFrame,
                    max_connections: int = TIMELINE_MAX_CONNECTIONS,
                    max_requests: int = TIMELINE_MAX_REQUESTS) -> go.Figure:
    """Connection timeline: one row per connection (client port → server), a bar from its first to its last
    packet coloured by who closed it, a dark segment from each request's start to its response's end, and
    a mark at each request start (hover: method, target, status, idle before). The space between segments
    is the idle time. At most ``max_connections`` rows (``timeline_sample``) and ``max_requests`` marks."""
    title = "Connection timeline"
    shown = timeline_sample(connections, max_connections)
    start = floats(shown["ts_start"])
    end = floats(shown["ts_end"])
    keep = ~np.isnan(start)
    shown, start, end = shown[keep], start[keep], end[keep]
    if shown.empty:
        return empty_figure(title, "No connection with a known start time.")
    end = np.where(np.isnan(end) | (end < start), start, end)
    t0 = float(start.min())
    servers = endpoints(shown["server_ip"], shown["server_port"])
    ports = [("?" if p is None else p) for p in texts(shown["client_port"])]
    labels = _unique([f":{port} → {server}" for port, server in zip(ports, servers, strict=True)])
    uids = texts(shown["uid"])
    row_of = {uid: label for uid, label in zip(uids, labels, strict=True) if uid is not None}
    close = [c if c in CLOSE_COLORS else "unknown" for c in texts(shown["close_by"])]
    idle_after = floats(shown["idle_after_last_ms"])
    requests = texts(shown["requests"])
    protocols = texts(shown["protocol"])
    fig = go.Figure()
    for kind in CLOSE_COLORS:
        mask = np.array([c == kind for c in close], dtype=bool)
        if not mask.any():
            continue
        hover = [
            f"<b>{safe(label)}</b><br>uid {safe(uid)} · {safe(proto)}<br>{safe(req)} request(s)<br>"
            f"{(e - s):.3f} s from first to last packet<br>{CLOSE_NAMES[kind]}, idle after last response "
            f"{_fmt_ms(ia)}"
            for label, uid, proto, req, s, e, ia in zip(
                np.array(labels)[mask], np.array(uids, dtype=object)[mask],
                np.array(protocols, dtype=object)[mask], np.array(requests, dtype=object)[mask],
                start[mask], end[mask], idle_after[mask], strict=True)]
        fig.add_trace(go.Bar(
            y=np.array(labels)[mask], x=np.maximum(end[mask] - start[mask], 1e-4), base=start[mask] - t0,
            orientation="h", name=CLOSE_NAMES[kind], marker=dict(color=CLOSE_COLORS[kind], opacity=0.35),
            hovertext=hover, hoverinfo="text", width=0.7))

    tx = transactions
    if len(tx):
        tx = tx[[uid in row_of for uid in texts(tx["uid"])]]
    if len(tx) > max_requests:
        tx = tx.iloc[np.unique(np.linspace(0, len(tx) - 1, max_requests).round().astype(int))]
    if len(tx):
        rows = [row_of[str(uid)] for uid in texts(tx["uid"])]
        req = floats(tx["ts_request_start"]) - t0
        resp = floats(tx["ts_response_end"]) - t0
        seg_x: list[float | None] = []
        seg_y: list[str | None] = []
        for row, a, b in zip(rows, req, resp, strict=True):
            if not (math.isnan(a) or math.isnan(b)) and b >= a:
                seg_x += [a, b, None]
                seg_y += [row, row, None]
        if seg_x:
            fig.add_trace(go.Scatter(x=seg_x, y=seg_y, mode="lines", name="request → response end",
                                     line=dict(color="#333333", width=5), hoverinfo="skip"))
        idle = floats(tx["idle_before_ms"])
        hover = [
            f"<b>{safe(m, 20)} {safe(t)}</b><br>status {safe(s)} · depth {safe(d)}<br>"
            f"idle before {_fmt_ms(i)}<br>host {safe(h)}"
            for m, t, s, d, i, h in zip(texts(tx["method"]), texts(tx["target"]), texts(tx["status"]),
                                        texts(tx["trans_depth"]), idle, texts(tx["host"]), strict=True)]
        has_start = ~np.isnan(req)
        fig.add_trace(go.Scatter(
            x=req[has_start], y=np.array(rows, dtype=object)[has_start], mode="markers", name="request start",
            marker=dict(symbol="line-ns-open", size=14, color="#000000", line=dict(width=2)),
            hovertext=np.array(hover, dtype=object)[has_start], hoverinfo="text"))
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=labels, autorange="reversed",
                     tickfont=dict(size=10, family="ui-monospace, SFMono-Regular, Menlo, monospace"))
    fig.update_xaxes(title_text="seconds since the first connection shown", zeroline=False)
    fig.update_layout(barmode="overlay", bargap=0.2)
    return _layout(fig, title, height=max(320, 150 + 18 * len(labels)))


def _ecdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step points of the empirical CDF (starting at 0 at the smallest value), at most ECDF_MAX_POINTS."""
    values = np.sort(values)
    y = np.arange(1, values.size + 1) / values.size
    if values.size > ECDF_MAX_POINTS:
        picks = np.unique(np.linspace(0, values.size - 1, ECDF_MAX_POINTS).round().astype(int))
        values, y = values[picks], y[picks]
    return np.concatenate([values[:1], values]), np.concatenate([[0.0], y])


def drawn_idle_after(idle_after: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``idle_after`` (``metrics.idle_after_last``) that ``idle_gap_figure`` reads: the timeout
    samples, in new memory (the report keeps only these: ``html.DRAWN_METRICS``)."""
    return idle_after[idle_after["timeout_sample"].to_numpy(dtype=bool)]


def idle_gap_figure(transactions: pd.DataFrame, idle_after: pd.DataFrame, timeouts: pd.DataFrame
                    ) -> go.Figure:
    """Cumulative distribution of idle gaps: ``idle_before_ms`` between requests (non-pipelined), and the
    idle time after the last response of connections the server closed while idle (``idle_after`` from
    ``metrics.idle_after_last``, its ``timeout_sample`` rows), with each inferred server idle timeout
    (``metrics.infer_idle_timeouts``) as a vertical dashed line. Logarithmic x axis when the gaps span more
    than two decades (gaps of 0 ms cannot be drawn there and are counted in the axis title)."""
    title = "Idle gaps"
    before = floats(transactions["idle_before_ms"])
    before = before[~np.isnan(before) & (before >= 0)]
    after = floats(idle_after["idle_after_last_ms"])[idle_after["timeout_sample"].to_numpy(dtype=bool)] \
        if len(idle_after) else np.zeros(0)
    after = after[~np.isnan(after)]
    lines = [(str(s), float(t) * 1000.0, int(n))
             for s, t, n in zip(timeouts["server"], timeouts["timeout_s"], timeouts["samples"], strict=True)
             if n > 0 and not math.isnan(float(t))]
    if before.size == 0 and after.size == 0 and not lines:
        return empty_figure(title, "No idle gap: no connection carried a second request or was closed idle.")
    everything = np.concatenate([before, after, np.array([ms for _, ms, _ in lines])])
    positive = everything[everything > 0]
    use_log = positive.size > 0 and positive.max() > 100 * positive.min()
    zeros = int((everything <= 0).sum()) if use_log else 0
    fig = go.Figure()
    for values, name, color in ((before, "between requests (idle_before_ms)", "#1f77b4"),
                                (after, "after the last response, server closed (idle_after_last_ms)",
                                 "#d62728")):
        drawn = values[values > 0] if use_log else values
        if drawn.size == 0:
            continue
        x, y = _ecdf(values)
        if use_log:
            keep = x > 0
            x, y = x[keep], y[keep]
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line_shape="hv", name=f"{name}, n={values.size}",
                                 line=dict(color=color, width=2),
                                 hovertemplate="%{x:,.3~f} ms: %{y:.1%} of gaps are shorter or equal"
                                               "<extra></extra>"))
    palette = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    for k, (server, ms, samples) in enumerate(lines[:5]):
        fig.add_trace(go.Scatter(
            x=[ms, ms], y=[0, 1], mode="lines",
            line=dict(color=palette[k % len(palette)], dash="dash", width=2),
            name=f"inferred idle timeout {safe(server)}: {ms / 1000:.3f} s ({samples} closes)",
            hovertemplate=f"{safe(server)}: server idle timeout ≈ {ms / 1000:.3f} s<extra></extra>"))
    axis_title = "idle gap (ms)"
    if use_log:
        axis_title += ", logarithmic" + (f"; {zeros} gap(s) of 0 ms not drawn" if zeros else "")
    # A little room on both sides, so that lines at the extremes (often the timeout) stay visible.
    if use_log:
        x_range = [math.log10(float(positive.min())) - 0.1, math.log10(float(positive.max())) + 0.1]
    else:
        low, high = float(everything.min()), float(everything.max())
        pad = max(high - low, abs(high), 1.0) * 0.03
        x_range = [low - pad, high + pad]
    fig.update_xaxes(title_text=axis_title, type="log" if use_log else "linear", range=x_range)
    fig.update_yaxes(title_text="fraction of gaps ≤ x", range=[0, 1.02], tickformat=".0%")
    return _layout(fig, title, height=440)


def handshake_figure(hosts: pd.DataFrame, max_hosts: int = HANDSHAKE_MAX_HOSTS) -> go.Figure:
    """Per host (from ``metrics.host_table``): handshake time spent (paid) next to the time reuse saved, and
    as a mark what one connection per request would have cost. The ``max_hosts`` hosts with the most
    handshake time (paid + saved)."""
    title = "Handshake overhead per host"
    if hosts.empty:
        return empty_figure(title, "No host.")
    paid = np.nan_to_num(hosts["handshake_time_ms"].to_numpy(dtype=float))
    saved = np.nan_to_num(hosts["handshake_time_ms_saved"].to_numpy(dtype=float))
    would = hosts["handshake_time_ms_one_per_request"].to_numpy(dtype=float)
    order = np.argsort(-(paid + saved), kind="stable")[:max_hosts]
    order = order[(paid + saved)[order] > 0]
    if order.size == 0:
        return empty_figure(title, "No handshake with a known duration.")
    labels = _unique([safe(h, 60) for h in np.array(texts(hosts["host"]), dtype=object)[order]])
    paid_rt = hosts["handshake_round_trips"].to_numpy(dtype=float)[order]
    saved_rt = hosts["handshake_round_trips_saved"].to_numpy(dtype=float)[order]
    fig = go.Figure()
    fig.add_trace(go.Bar(y=labels, x=paid[order], orientation="h", name="spent in handshakes",
                         marker_color="#d62728", customdata=np.nan_to_num(paid_rt),
                         hovertemplate="%{y}<br>spent %{x:,.3~f} ms in %{customdata:.0f} round trips"
                                       "<extra></extra>"))
    fig.add_trace(go.Bar(y=labels, x=saved[order], orientation="h", name="saved by reuse",
                         marker_color="#2ca02c", customdata=np.nan_to_num(saved_rt),
                         hovertemplate="%{y}<br>reuse saved %{x:,.3~f} ms, %{customdata:.0f} round trips"
                                       "<extra></extra>"))
    fig.add_trace(go.Scatter(y=labels, x=would[order], mode="markers", name="one connection per request",
                             marker=dict(symbol="diamond", size=10, color="#000000"),
                             hovertemplate="%{y}<br>one connection per request: %{x:,.3~f} ms"
                                           "<extra></extra>"))
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=labels, autorange="reversed")
    fig.update_xaxes(title_text="handshake time (ms, TCP + TLS)", rangemode="tozero")
    fig.update_layout(barmode="group")
    return _layout(fig, title, height=max(300, 140 + 44 * len(labels)))


# --- protocols ------------------------------------------------------------------------------------------

def protocol_figure(mix: pd.DataFrame) -> go.Figure:
    """Connections and transactions per protocol (``metrics.protocol_mix``), estimated transactions of
    undecrypted TLS shown apart."""
    title = "Protocol mix"
    if mix.empty:
        return empty_figure(title, "No connection.")
    labels = [safe(p, 30) for p in texts(mix["protocol"])]
    tx = mix["transactions"].to_numpy(dtype=float)
    est = mix["transactions_estimated"].to_numpy(dtype=float)
    fig = go.Figure()
    fig.add_trace(go.Bar(x=labels, y=mix["connections"].to_numpy(dtype=float), name="connections",
                         marker_color="#1f77b4", hovertemplate="%{x}: %{y:,} connections<extra></extra>"))
    fig.add_trace(go.Bar(x=labels, y=tx - est, name="transactions", marker_color="#2ca02c",
                         hovertemplate="%{x}: %{y:,} transactions parsed<extra></extra>"))
    fig.add_trace(go.Bar(x=labels, y=est, name="transactions (estimated from TLS records)",
                         marker_color="#98df8a",
                         hovertemplate="%{x}: %{y:,} transactions estimated<extra></extra>"))
    fig.update_xaxes(type="category", title_text="protocol")
    fig.update_yaxes(title_text="count", rangemode="tozero")
    fig.update_layout(barmode="group")
    return _layout(fig, title, height=360)


# --- connection pools ------------------------------------------------------------------------------------

POOLS_SHOWN = 8  # pools drawn in the parallel-connections chart (largest peak first)
POOL_COLORS: tuple[str, ...] = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                                "#17becf")
POOL_MAX_STEPS = 4_000  # steps drawn per pool; a longer history is thinned (its peak kept)


def drawn_pool_steps(pools: pd.DataFrame, steps: pd.DataFrame, shown: int = POOLS_SHOWN) -> pd.DataFrame:
    """The rows of ``steps`` (``metrics.pool_timeline``) that ``pool_figure`` reads: those of the first
    ``shown`` pools, and the earliest step of all (the chart's time origin when the capture's first packet
    time is not given), in new memory (the report keeps only these: ``html.DRAWN_METRICS``)."""
    keep = np.zeros(len(steps), dtype=bool)
    if pools.empty or steps.empty:
        return steps[keep]
    for client, host in zip(pools["client_ip"].head(shown), pools["host"].head(shown), strict=True):
        keep |= ((steps["client_ip"] == client) & (steps["host"] == host)).to_numpy(dtype=bool)
    ts = floats(steps["ts"])
    if not np.isnan(ts).all():
        keep[int(np.nanargmin(ts))] = True
    return steps[keep]


def pool_figure(pools: pd.DataFrame, steps: pd.DataFrame, limit: int, ts_origin: float | None,
                shown: int = POOLS_SHOWN) -> go.Figure:
    """Connections open at once per (client, host) over time (``metrics.pool_timeline``), for the pools of
    largest peak (``metrics.connection_pools`` order), with a browser's per-host ``limit`` marked."""
    title = "Parallel connections per client and host"
    if pools.empty or steps.empty:
        return empty_figure(title, "No connection.")
    origin = ts_origin if ts_origin is not None else float(np.nanmin(floats(steps["ts"])))
    fig = go.Figure()
    colors = itertools.cycle(POOL_COLORS)
    for row in pools.head(shown).to_dict("records"):
        mine = steps[(steps["client_ip"] == row["client_ip"]) & (steps["host"] == row["host"])]
        if len(mine) > POOL_MAX_STEPS:
            keep = np.unique(np.concatenate([np.linspace(0, len(mine) - 1, POOL_MAX_STEPS).astype(int),
                                             np.nonzero(mine["open"].to_numpy() == row["max_parallel"])[0][:1]]))
            mine = mine.iloc[keep]
        label = f"{safe(row['client_ip'], 40)} → {safe(row['host'], 60)}"
        fig.add_trace(go.Scatter(x=floats(mine["ts"]) - origin, y=mine["open"].to_numpy(dtype=float),
                                 mode="lines", line_shape="hv", name=label, line=dict(color=next(colors)),
                                 hovertemplate=f"{label}<br>%{{x:.3f}} s: %{{y}} open<extra></extra>"))
    fig.add_hline(y=limit, line_dash="dash", line_color="#888",
                  annotation_text=f"a browser's limit: {limit} per host", annotation_position="top left")
    fig.update_xaxes(title_text="seconds since the capture's first packet")
    fig.update_yaxes(title_text="connections open", rangemode="tozero")
    legend_rows = (min(len(pools), shown) + 1) // 2
    return _layout(fig, title, height=420 + 20 * legend_rows).update_layout(margin=dict(t=80 + 22 * legend_rows))


# --- TCP: warm vs cold ----------------------------------------------------------------------------------

WARMTH_COLORS: dict[str, str] = {"cold": "#1f77b4", "warm": "#d62728", "cooled": "#9467bd"}
SERIES_MAX_POINTS = 2_000  # points per connection in the bytes-in-flight chart; more are thinned
RETRANSMISSION_COLOR = "#d62728"
SEGMENT_COLOR = "#1f77b4"
SERIES_PAUSE_MS = 200.0  # a pause that breaks the bytes-in-flight line when the handshake RTT is unknown


def series_label(pick: Mapping[Any, Any]) -> str:
    """The dropdown label of a row of ``metrics.series_connections``: ``":port → host · reason"``,
    escaped and shortened (the host comes from the capture)."""
    port = pick.get("client_port")
    port_text = "?" if port is None or pd.isna(port) else str(int(port))
    return safe(f":{port_text} → {safe_text(pick.get('host'))} · {safe_text(pick.get('reason'))}", 70)


def safe_text(value: Any) -> str:
    """A capture value as plain text (``?`` when missing); escape it with ``safe`` before plotly sees it."""
    if value is None:
        return "?"
    try:
        if pd.isna(value):
            return "?"
    except (TypeError, ValueError):
        pass
    return str(value)


def thin_series(values: np.ndarray, forced: np.ndarray, max_points: int = SERIES_MAX_POINTS) -> np.ndarray:
    """Positions (ascending) of at most about ``max_points`` of a series to draw: all of them when they fit,
    else the ``forced`` positions (up to a quarter of the budget: retransmissions) plus, in equal slices of
    the rest of the series, the highest and the lowest value of each slice (the envelope survives)."""
    n = values.size
    if n <= max_points:
        return np.arange(n)
    keep = np.flatnonzero(forced)[: max_points // 4]
    slices = max(1, (max_points - keep.size) // 2)
    edges = np.linspace(0, n, slices + 1).round().astype(int)
    picks = [keep]
    for lo, hi in itertools.pairwise(edges):
        if hi > lo:
            part = values[lo:hi]
            picks.append(np.array([lo + int(np.nanargmax(part)) if not np.isnan(part).all() else lo,
                                   lo + int(np.nanargmin(part)) if not np.isnan(part).all() else lo]))
    return np.unique(np.concatenate(picks))


def bytes_in_flight_figure(segments: pd.DataFrame, picks: pd.DataFrame, connections: pd.DataFrame,
                           left_out: int = 0, max_points: int = SERIES_MAX_POINTS) -> go.Figure:
    """Bytes in flight (server → client) of each data segment over time, one trace per connection of
    ``picks`` (``metrics.series_connections``, in its order) with a dropdown to show one at a time (the
    first is shown). x: ms since the connection's first packet (its ``ts_start``; its first segment when
    unknown); y: ``bytes_in_flight``; retransmitted segments as red crosses. The line joins segments sent
    less than two handshake RTTs apart (``SERIES_PAUSE_MS`` when the RTT is unknown). Segments of unknown bytes in
    flight are not drawn; a connection with more than ``max_points`` is thinned (``thin_series``).
    ``left_out``: connections whose series was not kept (only for the message of an empty chart)."""
    title = "Bytes in flight (server → client)"
    if picks.empty or segments.empty:
        if left_out:
            return empty_figure(title, f"The per-packet series was not kept: {left_out:,} connection(s) "
                                       "were left out to bound memory.")
        return empty_figure(title, "No server data segment with known bytes in flight was captured.")
    uids = [str(u) for u in texts(picks["uid"])]
    seg = segments[segments["from_server"].astype("boolean").fillna(False).to_numpy(dtype=bool)]
    seg = seg[seg["uid"].isin(uids)]
    # the picks' start and RTT, looked up by their uids only (a dict of every connection's: a million
    # ``str`` keys, 100-200 MiB, for at most 20 picks)
    row = positions(connections["uid"], uids)
    starts, rtts = floats(connections["ts_start"]), floats(connections["handshake_rtt_ms"])
    start_of = {uid: float(starts[r]) for uid, r in zip(uids, row.tolist(), strict=True) if r >= 0}
    rtt_of = {uid: float(rtts[r]) for uid, r in zip(uids, row.tolist(), strict=True) if r >= 0}
    groups = {str(uid): part for uid, part in seg.groupby(seg["uid"].astype(str), sort=False)}
    fig = go.Figure()
    labels: list[str] = []
    for pick in picks.to_dict("records"):
        uid = str(pick["uid"])
        part = groups.get(uid)
        if part is None:
            continue
        ts = floats(part["ts"])
        bif = floats(part["bytes_in_flight"])
        retx = part["retransmission"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        payload = floats(part["payload_bytes"])
        rounds = floats(part["round"])
        order = np.argsort(ts, kind="stable")
        ts, bif, retx, payload, rounds = ts[order], bif[order], retx[order], payload[order], rounds[order]
        first = start_of.get(uid, math.nan)
        t0 = first if not math.isnan(first) and (ts.size == 0 or first <= np.nanmin(ts)) else np.nanmin(ts)
        known = ~np.isnan(bif)
        ts, bif, retx, payload, rounds = ts[known], bif[known], retx[known], payload[known], rounds[known]
        if ts.size == 0:
            continue
        total = ts.size
        shown = thin_series(bif, retx, max_points)
        ts, bif, retx, payload, rounds = ts[shown], bif[shown], retx[shown], payload[shown], rounds[shown]
        label = series_label(pick)
        name = label + (f" ({shown.size:,} of {total:,} segments)" if shown.size < total else "")
        x = np.round((ts - t0) * 1000.0, 3)
        # The line joins segments sent close together; a pause longer than two handshake RTTs breaks it.
        pause = 2.0 * rtt_of.get(uid, math.nan)
        pause = pause if pause > 0 else SERIES_PAUSE_MS
        breaks = np.flatnonzero(np.diff(x) > pause) + 1
        x, y = np.insert(x, breaks, np.nan), np.insert(bif, breaks, np.nan)
        retx = np.insert(retx, breaks, False)
        payload, rounds = np.insert(payload, breaks, 0), np.insert(rounds, breaks, 0)
        marker: dict[str, Any] = dict(size=5, color=SEGMENT_COLOR, symbol="circle")
        if retx.any():
            marker = dict(size=np.where(retx, 10, 5).tolist(),
                          color=[RETRANSMISSION_COLOR if r else SEGMENT_COLOR for r in retx],
                          symbol=["x" if r else "circle" for r in retx])
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines+markers", name=name, connectgaps=False,
            visible=not labels, line=dict(color="#9ab8dc", width=1), marker=marker,
            customdata=np.column_stack([np.nan_to_num(payload), np.nan_to_num(rounds)]).astype(int),
            text=["retransmission" if r else "" for r in retx],
            hovertemplate=("%{x:,.3f} ms: %{y:,} bytes in flight<br>segment of %{customdata[0]:,} bytes, "
                           "round %{customdata[1]}<br>%{text}<extra></extra>")))
        labels.append(name)
    if not labels:
        return empty_figure(title, "No server data segment with known bytes in flight was captured.")
    buttons = [dict(label=label, method="update",
                    args=[{"visible": [j == i for j in range(len(labels))]}])
               for i, label in enumerate(labels)]
    fig.update_layout(
        showlegend=False,
        updatemenus=[dict(type="dropdown", direction="down", active=0, buttons=buttons, showactive=True,
                          x=1, xanchor="right", y=1.02, yanchor="bottom", pad=dict(b=4))])
    fig.update_xaxes(title_text="ms since the connection's first packet", rangemode="tozero")
    fig.update_yaxes(title_text="bytes in flight (red ×: retransmission)", rangemode="tozero",
                     tickformat=",d")
    return _layout(fig, title, height=460)


def flight_rounds_figure(rounds: pd.DataFrame, max_rounds: int = 8) -> go.Figure:
    """Median flight bytes per round of cold, warm and cooled responses (``metrics.flight_rounds``), one
    small chart per size bucket that has responses (small first), one line per warmth; logarithmic y
    axis, so slow start's doubling is a straight line. Hover: the number of responses that reached the
    round."""
    title = "Flight bytes per round: cold, warm and cooled responses"
    if rounds.empty:
        return empty_figure(title, "No response of known warmth and size has flights.")
    buckets = list(dict.fromkeys(str(b) for b in texts(rounds["size_bucket"])))
    totals = rounds.drop_duplicates(["size_bucket", "warmth"]).groupby("size_bucket")["responses_total"].sum()
    titles = [f"{b} · {int(totals.get(b, 0)):,} response(s)" for b in buckets]
    fig = make_subplots(rows=1, cols=len(buckets), shared_yaxes=True, subplot_titles=titles,
                        horizontal_spacing=0.04)
    shown: set[str] = set()
    for col, bucket in enumerate(buckets, start=1):
        part = rounds[rounds["size_bucket"] == bucket]
        for warmth, color in WARMTH_COLORS.items():
            mine = part[part["warmth"] == warmth]
            if mine.empty:
                continue
            total = int(mine["responses_total"].iloc[0])
            fig.add_trace(go.Scatter(
                x=mine["round"].to_numpy(dtype=int), y=mine["flight_bytes_median"].to_numpy(dtype=float),
                mode="lines+markers", name=warmth, legendgroup=warmth, showlegend=warmth not in shown,
                line=dict(color=color, width=2), marker=dict(size=7, color=color),
                customdata=mine["responses"].to_numpy(dtype=int),
                hovertemplate=(f"{warmth}, {bucket}<br>round %{{x}}: median %{{y:,.0f}} bytes<br>"
                               f"%{{customdata}} of {total} responses reached it<extra></extra>")),
                row=1, col=col)
            shown.add(warmth)
    fig.update_xaxes(title_text="round", dtick=1, range=[0.5, max_rounds + 0.5])
    fig.update_yaxes(type="log", tickformat="~s", dtick="D2")
    fig.update_yaxes(title_text="median flight bytes (log)", row=1, col=1)
    fig = _layout(fig, title, height=440)
    fig.update_layout(legend=dict(y=1.12), margin=dict(t=120))  # above the subplot titles
    return fig


# --- keep-alive what-if ---------------------------------------------------------------------------------

WHATIF_COLORS: tuple[str, ...] = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")
WHATIF_DASHES: tuple[str, ...] = ("solid", "dash", "dot", "dashdot", "longdash")  # equal lines stay visible


def limit_label(limit: Any) -> str:
    """A max-requests limit of ``metrics.whatif_totals`` as legend text."""
    if limit is None or pd.isna(limit):
        return "no request limit"
    return f"at most {int(limit):,} requests per connection"


def whatif_figure(totals: pd.DataFrame, timeouts: pd.DataFrame) -> go.Figure:
    """The keep-alive what-if (``metrics.whatif_totals``): connections the observed requests would need
    (left) and the handshake time gained or lost against what was observed (right), against the server idle
    timeout (logarithmic axis), one line per max-requests limit; the observed connection count as a grey
    dashed line, each inferred server idle timeout (``metrics.infer_idle_timeouts``) as a vertical line."""
    title = "Keep-alive what-if: other server idle timeouts and request limits"
    if totals.empty:
        return empty_figure(title, "No connection to replay.")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("connections needed", "handshake time vs observed (ms, + = lost)"))
    timeouts_s = sorted({float(t) for t in totals["idle_timeout_s"]})
    observed = int(totals["connections_observed"].iloc[0])
    limits = list(dict.fromkeys(None if pd.isna(v) else int(v) for v in totals["max_requests"]))
    for k, limit in enumerate(limits):
        mine = totals[totals["max_requests"].isna()] if limit is None else \
            totals[totals["max_requests"].fillna(-1).astype("int64") == limit]
        mine = mine.sort_values("idle_timeout_s")
        color = WHATIF_COLORS[k % len(WHATIF_COLORS)]
        name = limit_label(limit)
        delta = mine["new_connections"].to_numpy(dtype=float)
        fig.add_trace(go.Scatter(
            x=mine["idle_timeout_s"].to_numpy(dtype=float), y=mine["connections"].to_numpy(dtype=float),
            mode="lines+markers", name=name, legendgroup=name,
            line=dict(color=color, width=4 - k * 0.6, dash=WHATIF_DASHES[k % len(WHATIF_DASHES)]),
            marker=dict(size=9 - k, color=color), customdata=delta,
            hovertemplate=(f"idle timeout %{{x:,}} s, {name}<br>%{{y:,}} connections "
                           f"(%{{customdata:+,}} vs {observed:,} observed)<extra></extra>")), row=1, col=1)
        fig.add_trace(go.Scatter(
            x=mine["idle_timeout_s"].to_numpy(dtype=float),
            y=mine["handshake_time_ms_delta"].to_numpy(dtype=float), mode="lines+markers", name=name,
            legendgroup=name, showlegend=False,
            line=dict(color=color, width=4 - k * 0.6, dash=WHATIF_DASHES[k % len(WHATIF_DASHES)]),
            marker=dict(size=9 - k, color=color),
            customdata=mine["handshake_round_trips_delta"].to_numpy(dtype=float),
            hovertemplate=(f"idle timeout %{{x:,}} s, {name}<br>%{{y:+,.3~f}} ms of handshakes, "
                           "%{customdata:+,.0f} round trips<extra></extra>")), row=1, col=2)
    fig.add_trace(go.Scatter(x=[timeouts_s[0], timeouts_s[-1]], y=[observed, observed], mode="lines",
                             name=f"observed: {observed:,} connections",
                             line=dict(color="#7f7f7f", dash="dash", width=2),
                             hovertemplate=f"observed: {observed:,} connections<extra></extra>"), row=1, col=1)
    inferred = [(str(s), float(t)) for s, t, n in zip(timeouts["server"], timeouts["timeout_s"],
                                                       timeouts["samples"], strict=True)
                if n > 0 and not math.isnan(float(t)) and float(t) > 0][:3]
    for server, seconds in inferred:
        for col in (1, 2):
            fig.add_vline(x=seconds, line=dict(color="#9467bd", dash="dot", width=1.5), row=1, col=col)
        fig.add_annotation(x=math.log10(seconds), y=1, yref="y domain", xref="x", showarrow=False,
                           text=f"inferred {safe(server, 40)}: {seconds:.3g} s", font=dict(size=11, color="#9467bd"),
                           xanchor="left", yanchor="top")
    ticks = dict(type="log", tickvals=timeouts_s, ticktext=[f"{t:g}" for t in timeouts_s], tickangle=0,
                 title_text="server idle timeout (s, logarithmic)")
    fig.update_xaxes(**ticks)
    fig.update_yaxes(rangemode="tozero", row=1, col=1, tickformat=",d")
    fig.update_yaxes(zeroline=True, zerolinecolor="#888", row=1, col=2)
    fig = _layout(fig, title, height=460)
    fig.update_layout(legend=dict(y=1.1), margin=dict(t=130))
    return fig
