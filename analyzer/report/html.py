"""The HTML report: one self-contained file that works offline.

This module owns the page: its sections, tables and number formats, the embedding of plotly.js (once, in
one ``<script>``) and of every chart as inert JSON (``<script type="application/json">``, drawn by one
loader script), and the escaping that keeps capture strings as text. It is the only module of
``analyzer.report`` that touches the file system (the template, read from the package, and
``write_report``). It computes the figures through ``analyzer.metrics`` and draws them with
``analyzer.report.figures``; it knows nothing of packets or protocols.

Safety rules: credentials are redacted first unless asked not to (``analyzer.report.redact``); every
string from a capture (hosts, targets, methods, anomaly details, file names, summary values) goes through
``esc`` (control characters made visible, ``html.escape``) in tables and through ``figures.safe`` in
charts; chart JSON has ``<``, ``>``, ``&``, U+2028 and U+2029 escaped as ``\\uXXXX`` so nothing in it can
close its ``<script>``.
No ``src``/``href`` points to the network; the page needs no fonts or files besides itself.
"""

from __future__ import annotations

import html
import math
import os
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline

import analyzer
from analyzer.analysis import Analysis
from analyzer.heap import release_free_memory
from analyzer.metrics import (
    BROWSER_PER_HOST_LIMIT,
    Cut,
    MetricTables,
    Read,
    compute_all_read,
    glossary,
    series_connections,
)
from analyzer.metrics.reasons import NOT_A_MISS, REASON_LABELS
from analyzer.metrics.warmth import ROUNDS_SHOWN, SIZE_BUCKETS, WARMTHS
from analyzer.report import figures
from analyzer.report.redact import printable, redact_analysis
from analyzer.tables import TABLES

HOSTS_MAX_ROWS = 200  # rows of the per-host table
ANOMALY_EXAMPLES = 3  # example rows per anomaly name
AVOIDABLE_EXAMPLES = 10  # example rows of avoidable connections
DETAIL_MAX = 300  # characters of an anomaly detail shown
CELL_MAX = 400  # characters of any capture string in a table cell (longer ones end with "…")
WARMTH_MAX_ROWS = 300  # rows of the warm/cold transfer table

#: The columns each section that draws from the tables reads, by table (the metrics read theirs:
#: ``analyzer.metrics.SUMMARY_GROUPS`` and ``TABLE_COLUMNS``). The report asks for each step's columns just
#: before it and lets them go after it (``_render``): ``analyzer report`` reads them back from its spill
#: step by step and never holds the whole tables (a million tiny connections held 770 MiB of them through
#: the report). Every section sees only these (a section that reads another column raises ``KeyError``).
SECTION_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "timeline": {
        "connections": ("uid", "client_port", "server_ip", "server_port", "protocol", "ts_start", "ts_end",
                        "requests", "idle_after_last_ms", "close_by"),
        "transactions": ("uid", "trans_depth", "method", "host", "target", "status", "ts_request_start",
                         "ts_response_end", "idle_before_ms"),
    },
    "idle": {"transactions": ("idle_before_ms",)},
    "tcp": {
        "connections": ("uid", "client_port", "ts_start", "handshake_rtt_ms", "server_bytes", "retransmissions"),
        "transactions": ("uid", "response_body_bytes", "warmth"),
        "segments": ("uid", "from_server", "ts", "payload_bytes", "bytes_in_flight", "retransmission", "round"),
    },
    "anomalies": {"anomalies": ("uid", "ts", "name", "detail")},
}
#: ``MetricTables`` the report does not draw (``compute_all``'s ``leave_out``)
UNDRAWN_METRICS = ("reasons", "costs")


def _first_rows(count: int) -> Cut:
    """The cut that keeps a table's first ``count`` rows (in new memory: ``DataFrame.take``)."""
    return lambda frame, _tables: frame.take(np.arange(min(len(frame), count)))


#: What the report draws of some ``MetricTables`` (``compute_all``'s ``drawn``): each is cut to that as soon
#: as the metrics are done with it, and its sections count its rows from ``MetricTables.rows`` (a million
#: tiny connections: 98 MiB of avoidable connections, 77 of idle-after rows, 67 of pool steps held through
#: every later step before)
DRAWN_METRICS: dict[str, Cut] = {
    "avoidable": _first_rows(AVOIDABLE_EXAMPLES),
    "pools": _first_rows(max(HOSTS_MAX_ROWS, figures.POOLS_SHOWN)),
    "pool_steps": lambda steps, tables: figures.drawn_pool_steps(tables["pools"], steps),
    "idle_after": lambda idle_after, _tables: figures.drawn_idle_after(idle_after),
}

# Keys of Analysis.summary shown in the capture-quality table (in this order); other non-metric keys are
# listed after them.
QUALITY_KEYS: tuple[str, ...] = (
    "captures", "file_format", "packets_read", "packets_analyzed", "packets_skipped", "truncated_packets",
    "reader_skipped", "reader_notes", "bytes_skipped", "bytes_unread", "kernel_drops", "ts_first", "ts_last",
    "duration_s", "connections", "connections_with_syn", "transactions",
)

_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_SCRIPT_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")


def script_json(text: str) -> str:
    """JSON text made safe inside a ``<script>`` element: ``<``, ``>``, ``&``, U+2028 and U+2029 become
    ``\\uXXXX`` escapes (they can only occur inside JSON strings, where the escape means the same)."""
    return _SCRIPT_ESCAPE_RE.sub(lambda m: _SCRIPT_ESCAPES[m.group(0)], text)


def esc(value: Any, limit: int | None = None) -> str:
    """Any value as escaped HTML text (``—`` for missing): control characters made visible and lone
    surrogates replaced (``redact.printable``), cut to ``limit`` characters when given."""
    if _missing(value):
        return "—"
    return html.escape(printable(str(value), limit), quote=True)


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (list, dict, tuple)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


# --- number formats -------------------------------------------------------------------------------------

def fmt_int(value: Any) -> str:
    if _missing(value):
        return "—"
    return f"{int(float(value)):,}"


def fmt_num(value: Any, digits: int = 2) -> str:
    if _missing(value) or not math.isfinite(float(value)):
        return "—"
    number = float(value)
    return f"{number:,.0f}" if number == int(number) and abs(number) < 1e15 else f"{number:,.{digits}f}"


def fmt_ms(value: Any) -> str:
    if _missing(value) or not math.isfinite(float(value)):
        return "—"
    number = float(value)
    if abs(number) >= 10_000:
        return f"{number / 1000:,.2f} s"
    if number == 0:
        return "0 ms"
    if abs(number) < 1:
        return f"{number:.3f} ms"
    if abs(number) < 10:
        return f"{number:.2f} ms"
    return f"{number:,.1f} ms"


def fmt_s(value: Any) -> str:
    if _missing(value) or not math.isfinite(float(value)):
        return "—"
    return f"{float(value):,.3f} s"


def fmt_ratio(value: Any) -> str:
    if _missing(value) or not math.isfinite(float(value)):
        return "—"
    return f"{float(value) * 100:.1f} %"


def fmt_ts(value: Any) -> str:
    """An epoch-seconds instant as UTC ISO text (other values as they are)."""
    if _missing(value):
        return "—"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if 0 < number < 1e11:
        return datetime.fromtimestamp(number, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    return str(value)


# --- HTML pieces ----------------------------------------------------------------------------------------

# (escaped HTML, css class: "num" | "text" | "") or (escaped HTML, css class, sort key as plain text)
Cell = tuple[str, str] | tuple[str, str, str]


def num(text: str) -> Cell:
    return (text, "num")


def txt(value: Any) -> Cell:
    return (esc(value, CELL_MAX), "text")


def sort_key(value: Any) -> str:
    """The sort key of a number for a sortable table: its ``repr`` (``""`` for missing: sorted last)."""
    if _missing(value):
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return repr(number) if math.isfinite(number) else ""


def num_sorted(text: str, value: Any) -> Cell:
    """A numeric cell shown as ``text`` (pre-escaped) and sorted by ``value``."""
    return (text, "num", sort_key(value))


def _cells(row: Sequence[Cell]) -> str:
    out = []
    for cell in row:
        key = f' data-sort="{html.escape(cell[2], quote=True)}"' if len(cell) > 2 else ""
        out.append(f'<td class="{cell[1]}"{key}>{cell[0]}</td>')
    return "".join(out)


def table(headers: Sequence[tuple[str, str]], rows: Iterable[Sequence[Cell]], caption: str = "",
          row_classes: Sequence[str] | None = None, sortable: bool = False,
          foot: Sequence[Sequence[Cell]] = ()) -> str:
    """An HTML table; ``headers`` are (label, css class) with plain-text labels, cells are pre-escaped.

    ``sortable``: each header is a button that sorts the body rows by that column (the page's script:
    by the cells' ``data-sort`` keys, numerically when both keys are numbers, missing keys last; again
    to reverse). ``foot`` rows (totals) stay below, unsorted."""
    if sortable:
        head = "".join(f'<th class="{cls}" scope="col" aria-sort="none"><button type="button" class="sort">'
                       f"{html.escape(label)}</button></th>" for label, cls in headers)
    else:
        head = "".join(f'<th class="{cls}" scope="col">{html.escape(label)}</th>' for label, cls in headers)
    body = []
    for i, row in enumerate(rows):
        row_class = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{row_class}>{_cells(row)}</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    footer = ("<tfoot>" + "".join(f'<tr class="total">{_cells(row)}</tr>' for row in foot) + "</tfoot>"
              if foot else "")
    cls = ' class="sortable"' if sortable else ""
    return (f'<div class="table-wrap"><table{cls}>{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody>{footer}</table></div>")


def card(label: str, value: str, detail: str = "", bad: bool = False, wide: bool = False) -> str:
    """A headline card; ``value`` and ``detail`` are pre-escaped HTML. ``wide`` spans the whole row."""
    cls = "card" + (" bad" if bad else "") + (" wide" if wide else "")
    return (f'<div class="{cls}"><div class="label">{html.escape(label)}</div>'
            f'<div class="value">{value}</div><div class="detail">{detail}</div></div>')


class _Charts:
    """Numbers the chart containers and renders each figure as inert JSON next to its container."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fig: go.Figure, caption: str) -> str:
        self.count += 1
        chart_id = f"chart-{self.count}"
        data = script_json(pio.to_json(fig, validate=False, pretty=False))
        return (f'<figure class="figure" aria-label="{html.escape(caption)}">'
                f'<div class="chart" id="{chart_id}"></div>'
                f'<p class="nojs">Chart “{html.escape(caption)}” needs JavaScript; the tables carry the same '
                f"figures.</p>"
                f'<script type="application/json" class="chart-data" data-target="{chart_id}">{data}</script>'
                f"</figure>")


def _glossary_html(definitions: dict[str, str]) -> str:
    items = []
    for name, text in definitions.items():
        body = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))
        items.append(f'<dt id="def-{html.escape(name)}"><code>{html.escape(name)}</code></dt><dd>{body}</dd>')
    return f'<dl class="glossary">{"".join(items)}</dl>'


def _summary_value(value: Any) -> str:
    if isinstance(value, dict):
        if not value:
            return "none"
        return "<br>".join(f"{esc(k)}: {esc(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "<br>".join(esc(v) for v in value) if value else "none"
    if isinstance(value, float):
        return esc(fmt_num(value, 6))
    if isinstance(value, int) and not isinstance(value, bool):
        return esc(fmt_int(value))
    return esc(value)


def _int_or_none(value: Any) -> int | None:
    try:
        return None if _missing(value) else int(value)
    except (TypeError, ValueError):
        return None


# --- sections -------------------------------------------------------------------------------------------

def _blocker_card(key: dict[str, Any], reasons: pd.DataFrame) -> str:
    """The headline's widest card: the reason most new connections were opened, with its evidence."""
    label = "Biggest reason connections were not reused"
    top = key.get("top_reuse_blocker")
    if not top:
        return card(label, "none", "no connection was opened to a server that an earlier connection from the "
                    "same client had used", wide=True)
    new = int(key["new_connections"])
    count = int(key["top_reuse_blocker_connections"])
    others = reasons[~reasons["reason"].isin(sorted(NOT_A_MISS)) & (reasons["reason"] != top)].head(3)
    rest = "".join(f" · then <code>{esc(r['reason'])}</code> ({fmt_int(r['connections'])})"
                   for r in others.to_dict("records"))
    value = f"{esc(REASON_LABELS.get(str(top), str(top)))} <code>{esc(top)}</code>"
    detail = (f"{fmt_int(count)} of {fmt_int(new)} new connections ({esc(fmt_ratio(key['top_reuse_blocker_share']))})"
              f" · evidence: {esc(key.get('top_reuse_blocker_evidence') or '')}{rest} · "
              '<a href="#reasons">all reasons</a>')
    return card(label, value, detail, bad=True, wide=True)


def _headline(key: dict[str, Any], timeouts: pd.DataFrame, reasons: pd.DataFrame) -> str:
    inferred = timeouts[timeouts["samples"] > 0] if len(timeouts) else timeouts
    if len(inferred):
        first = inferred.iloc[0]
        advertised = first["advertised_timeout_s"]
        detail = (f"{esc(first['server'])} · {fmt_int(first['samples'])} idle close(s), spread "
                  f"{esc(fmt_ms(float(first['spread_s']) * 1000))}"
                  + (f" · advertised {esc(fmt_s(advertised))}" if not _missing(advertised) else "")
                  + (f" · {len(inferred) - 1} more server(s) below" if len(inferred) > 1 else ""))
        timeout_card = card("Inferred server idle timeout", esc(fmt_s(first["timeout_s"])), detail)
    else:
        timeout_card = card("Inferred server idle timeout", "—",
                            "no server closed an idle, still-usable connection")
    avoidable = int(key["new_connections_avoidable"])
    return '<div class="cards">' + "".join([
        _blocker_card(key, reasons),
        card("Connections", esc(fmt_int(key["connections"])),
             f"{fmt_int(key['connections_reused'])} carried more than one request · "
             f"{fmt_int(key['connections_single_request'])} one · {fmt_int(key['connections_unused'])} none"),
        card("Requests", esc(fmt_int(key["transactions"])),
             f"per connection: mean {esc(fmt_num(key['requests_per_connection_mean']))}, "
             f"max {esc(fmt_int(key['requests_per_connection_max']))}"),
        card("Reuse ratio", esc(fmt_ratio(key["reuse_ratio"])),
             f"{fmt_int(key['transactions_reused'])} of {fmt_int(key['transactions'])} requests used an "
             f"already open connection"),
        card("New connections avoidable", esc(fmt_int(avoidable)),
             "opened while an idle, reusable connection to the same server was open", bad=avoidable > 0),
        card("Time spent in handshakes", esc(fmt_ms(key["handshake_time_ms_total"])),
             f"{esc(fmt_num(key['handshake_round_trips_paid']))} round trips paid · reuse saved "
             f"{esc(fmt_ms(key['handshake_time_ms_saved']))} "
             f"({esc(fmt_num(key['handshake_round_trips_saved']))} round trips)"),
        card("One connection per request", esc(fmt_ms(key["handshake_time_ms_one_per_request"])),
             f"{esc(fmt_num(key['handshake_round_trips_one_per_request']))} round trips of handshakes"),
        card("Idle gap before a request", esc(fmt_ms(key["idle_before_ms_median"])),
             f"median of {fmt_int(key['idle_gaps'])} gaps · p90 {esc(fmt_ms(key['idle_before_ms_p90']))}"),
        timeout_card,
    ]) + "</div>"


def _reuse_section(m: MetricTables, chart: _Charts) -> str:
    histogram = m.histogram
    hist_table = table(
        [("requests on the connection", "num"), ("connections", "num"), ("share", "num")],
        [[num(fmt_int(r)), num(fmt_int(n)), num(fmt_ratio(s))] for r, n, s in zip(
            histogram["requests"], histogram["connections"], histogram["share"], strict=True)])
    avoidable = m.avoidable
    parts = ['<section id="reuse"><h2>Requests per connection</h2>',
             chart(figures.requests_histogram_figure(histogram), "Requests per connection"),
             f"<details><summary>As a table</summary>{hist_table}</details>",
             _reasons_part(m, chart),
             "<h3>New connections that were avoidable</h3>"]
    count = _rows(m, "avoidable")
    if not count:
        parts.append('<p class="note">None: no connection was opened while an idle, reusable connection '
                     "from the same client to the same server was open.</p>")
    else:
        first = f" (first {AVOIDABLE_EXAMPLES} shown)" if count > AVOIDABLE_EXAMPLES else ""
        parts.append(f'<p class="note">{fmt_int(count)} connection(s) were opened while an idle, '
                     f"reusable connection from the same client to the same server was open{first}.</p>")
        rows = [[txt(fmt_ts(r["ts_start"])), txt(r["uid"]), txt(r["client_ip"]), txt(r["server"]),
                 txt(r["reusable_uid"]), num(fmt_ms(r["idle_for_ms"]))]
                for r in avoidable.head(AVOIDABLE_EXAMPLES).to_dict("records")]
        parts.append(table([("opened", ""), ("connection", ""), ("client", ""), ("server", ""),
                            ("idle connection it could have reused", ""), ("idle for", "num")], rows))
    parts.append("</section>")
    return "".join(parts)


def _reasons_part(m: MetricTables, chart: _Charts) -> str:
    reasons = m.reason_table
    parts = ['<h3 id="reasons">Why new connections were opened</h3>',
             '<p class="note">Each connection whose opening was captured is compared with the earlier '
             "connections from the same client to the same server: the first reason that applies is its "
             'reason (definition: <a href="#def-new_connection_reason">new_connection_reason</a>). Red bars '
             "are connections that reusing an earlier connection could have saved.</p>",
             chart(figures.reasons_figure(reasons), "Why new connections were opened")]
    if len(reasons):
        rows = [[(f"<code>{esc(r['reason'])}</code><br>{esc(r['label'])}", "text"),
                 num(fmt_int(r["connections"])), num(fmt_ratio(r["share"])), num(fmt_int(r["servers"])),
                 txt(r["top_server"]), txt(r["evidence"] or "—"), txt(r["example_uid"])]
                for r in reasons.to_dict("records")]
        parts.append(table([("reason", ""), ("connections", "num"), ("share of new", "num"),
                            ("servers", "num"), ("most affected server", ""), ("evidence", ""),
                            ("example connection", "")], rows))
    return "".join(parts)


def _timeline_section(analysis: Analysis, chart: _Charts) -> str:
    total = len(analysis.connections)
    cap = figures.TIMELINE_MAX_CONNECTIONS
    note = (f"Showing {cap:,} of {total:,} connections, sampled evenly by start time."
            if total > cap else f"All {total:,} connection(s).")
    note += (" Each row is one connection (client port → server): the bar runs from its first to its last "
             "packet and is coloured by who closed it; dark segments run from a request's start to its "
             "response's end, ticks mark request starts (hover for method, target and status). The space "
             "between segments is idle time.")
    figure = figures.timeline_figure(analysis.connections, analysis.transactions)
    return ('<section id="timeline"><h2>Connection timeline</h2>'
            f'<p class="note">{html.escape(note)}</p>' + chart(figure, "Connection timeline") + "</section>")


def _idle_section(analysis: Analysis, m: MetricTables, chart: _Charts) -> str:
    key, timeouts = m.summary, m.timeouts
    rows = [[txt(r["server"]), num(fmt_int(r["samples"])), num(fmt_int(r["outliers"])),
             num(fmt_int(r["immediate_closes"])), num(fmt_s(r["timeout_s"])),
             num(f"{fmt_s(r['min_s'])} – {fmt_s(r['max_s'])}"),
             num(fmt_s(r["advertised_timeout_s"])), num(fmt_s(r["difference_s"]))]
            for r in timeouts.to_dict("records")]
    parts = ['<section id="idle"><h2>Idle gaps and server idle timeouts</h2>',
             f'<p class="note">{fmt_int(key["idle_gaps"])} idle gap(s) between requests, median '
             f"{esc(fmt_ms(key['idle_before_ms_median']))}, "
             f"p90 {esc(fmt_ms(key['idle_before_ms_p90']))}, max "
             f"{esc(fmt_ms(key['idle_before_ms_max']))}; {fmt_int(key['idle_gaps_pipelined'])} pipelined "
             f"request(s) had none. Connections closed by the server: {fmt_int(key['closes_by_server'])}, "
             f"by the client: {fmt_int(key['closes_by_client'])}, open at capture end: "
             f"{fmt_int(key['connections_open_at_end'])}.</p>",
             chart(figures.idle_gap_figure(analysis.transactions, m.idle_after, timeouts), "Idle gaps"),
             "<h3>Inferred server idle timeouts</h3>"]
    if rows:
        parts.append(table([("server", ""), ("idle closes", "num"), ("outliers", "num"),
                            ("immediate closes (< 50 ms)", "num"),
                            ("inferred timeout", "num"), ("cluster min – max", "num"),
                            ("advertised (Keep-Alive)", "num"), ("inferred − advertised", "num")], rows))
    else:
        parts.append('<p class="note">No server closed an idle, still-usable connection with a FIN, and no '
                     "server advertised a Keep-Alive timeout.</p>")
    parts.append("</section>")
    return "".join(parts)


def _handshake_section(key: dict[str, Any], hosts: pd.DataFrame, chart: _Charts) -> str:
    rows = [
        [txt("time spent in handshakes (TCP + TLS)"), num(fmt_ms(key["handshake_time_ms_total"])),
         num(fmt_num(key["handshake_round_trips_paid"]))],
        [txt("of which TLS"), num(fmt_ms(key["tls_handshake_time_ms_total"])), num("")],
        [txt("saved by reuse"), num(fmt_ms(key["handshake_time_ms_saved"])),
         num(fmt_num(key["handshake_round_trips_saved"]))],
        [txt("one connection per request would have cost"),
         num(fmt_ms(key["handshake_time_ms_one_per_request"])),
         num(fmt_num(key["handshake_round_trips_one_per_request"]))],
    ]
    note = (f"Median TCP handshake RTT {esc(fmt_ms(key['handshake_rtt_ms_median']))}. Handshakes measured: "
            f"{fmt_int(key['handshake_connections_measured'])}; not captured and charged the server's median "
            f"RTT: {fmt_int(key['handshake_connections_imputed'])}; excluded (no SYN and no measured "
            f"handshake to the same server, or UDP): {fmt_int(key['handshake_connections_excluded'])}.")
    return ('<section id="handshake"><h2>Handshake overhead</h2>'
            + table([("", ""), ("time", "num"), ("round trips", "num")], rows)
            + f'<p class="note">{note}</p>'
            + chart(figures.handshake_figure(hosts), "Handshake overhead per host")
            + "</section>")


def _close_race_section(m: MetricTables) -> str:
    races, key = m.races, m.summary
    parts = ['<section id="races"><h2>Close races</h2>']
    if races.empty:
        parts.append('<p class="note">None: no request was caught by the server closing its connection '
                     '(<a href="#def-close_race">definition</a>).</p></section>')
        return "".join(parts)
    parts.append(f'<p class="note bad">{fmt_int(key["close_races"])} request(s) were sent on a connection the '
                 f"server was closing and got no response (or a 408); {fmt_int(key['close_races_retried'])} "
                 f"were retried on a new connection, median {esc(fmt_ms(key['close_race_retry_ms_median']))} "
                 "later. A server idle timeout longer than the client's (or a client that drops idle "
                 'connections first) avoids them (<a href="#def-close_race">definition</a>).</p>')
    rows = [[txt(fmt_ts(r["ts_request_start"])), txt(r["uid"]), txt(r["server"]), txt(r["method"]),
             txt(r["target"]),
             num_sorted(esc(fmt_ms(r["request_after_close_ms"])), r["request_after_close_ms"]),
             txt(r["outcome"]), txt("yes" if r["retried"] else "no"), txt(r["retry_uid"]),
             num_sorted(esc(fmt_ms(r["retry_delay_ms"])), r["retry_delay_ms"])]
            for r in races.head(HOSTS_MAX_ROWS).to_dict("records")]
    if len(races) > HOSTS_MAX_ROWS:
        parts.append(f'<p class="note">The first {HOSTS_MAX_ROWS} of {len(races):,}.</p>')
    parts.append(table([("request sent", ""), ("connection", ""), ("server", ""), ("method", ""), ("target", ""),
                        ("after the server's close", "num"), ("outcome", ""), ("retried", ""),
                        ("retry connection", ""), ("retried after", "num")], rows, sortable=True))
    parts.append("</section>")
    return "".join(parts)


def _whatif_section(m: MetricTables, chart: _Charts) -> str:
    totals, per_pair = m.whatif_totals, m.whatif
    parts = ['<section id="whatif"><h2>Keep-alive what-if</h2>']
    if totals.empty:
        return ("".join(parts) + '<p class="note">No connection to replay.</p>'
                + chart(figures.whatif_figure(totals, m.timeouts), "Keep-alive what-if") + "</section>")
    observed = int(totals["connections_observed"].iloc[0])
    unlimited = totals[totals["max_requests"].isna()].sort_values("idle_timeout_s")
    counts = unlimited["connections"].to_numpy(dtype=np.int64)
    best = unlimited.iloc[int(counts.argmin())] if len(unlimited) else None
    worst = unlimited.iloc[int(counts.argmax())] if len(unlimited) else None
    bits = [f"The {fmt_int(totals['transactions'].iloc[0])} observed requests of "
            f"{fmt_int(totals['pairs'].iloc[0])} (client, server) pair(s) replayed against other server idle "
            f"timeouts and request limits; {fmt_int(observed)} connection(s) were observed."]
    if best is not None and worst is not None:
        bits.append(f"Without a request limit the replay needs between {fmt_int(best['connections'])} "
                    f"(idle timeout {esc(fmt_num(best['idle_timeout_s']))} s, "
                    f"{esc(fmt_ms(best['handshake_time_ms_delta']))} of handshakes) and "
                    f"{fmt_int(worst['connections'])} connections (idle timeout "
                    f"{esc(fmt_num(worst['idle_timeout_s']))} s, "
                    f"{esc(fmt_ms(worst['handshake_time_ms_delta']))}), with the handshake costs measured in "
                    "this capture.")
    bits.append('Only what the server decides is replayed; the client keeps its own closes and parallel '
                'connections (<a href="#def-keepalive_whatif">how</a>).')
    parts.append(f'<p class="note">{" ".join(bits)}</p>')
    parts.append(chart(figures.whatif_figure(totals, m.timeouts), "Keep-alive what-if"))
    rows = [[num_sorted(esc(fmt_num(r["idle_timeout_s"])) + " s", r["idle_timeout_s"]),
             (esc(figures.limit_label(r["max_requests"])), "text",
              "" if _missing(r["max_requests"]) else str(int(r["max_requests"]))),
             num_sorted(fmt_int(r["connections"]), r["connections"]),
             num_sorted(esc(f"{int(r['new_connections']):+,}"), r["new_connections"]),
             num_sorted(esc(fmt_ms(r["handshake_time_ms_delta"])), r["handshake_time_ms_delta"]),
             num_sorted(esc(fmt_num(r["handshake_round_trips_delta"])), r["handshake_round_trips_delta"])]
            for r in totals.to_dict("records")]
    parts.append("<details><summary>As a table</summary>" + table(
        [("idle timeout", "num"), ("request limit", ""), ("connections", "num"), ("vs observed", "num"),
         ("handshake time vs observed", "num"), ("round trips vs observed", "num")], rows, sortable=True)
        + "</details>")
    pairs = per_pair[per_pair["max_requests"].isna()]
    if len(pairs):
        wide = pairs.pivot_table(index=["client_ip", "server"], columns="idle_timeout_s", values="connections",
                                 aggfunc="first")
        info = pairs.drop_duplicates(["client_ip", "server"]).set_index(["client_ip", "server"])
        info = info.loc[wide.index]
        order = (-info["transactions"].to_numpy()).argsort(kind="stable")
        columns = list(wide.columns)
        pair_rows = []
        for i in order[:HOSTS_MAX_ROWS]:
            client, server = wide.index[i]
            r = info.iloc[i]
            pair_rows.append([txt(client), txt(server), num_sorted(fmt_int(r["transactions"]), r["transactions"]),
                              num_sorted(fmt_int(r["connections_observed"]), r["connections_observed"]),
                              num_sorted(esc(fmt_ms(r["setup_ms_mean"])), r["setup_ms_mean"])]
                             + [num_sorted(fmt_int(wide.iloc[i][c]), wide.iloc[i][c]) for c in columns])
        parts.append("<h3>Per (client, server) pair, without a request limit</h3>")
        all_pairs = int(totals["pairs"].iloc[0])  # (``m.whatif`` holds the pairs with the most requests only)
        if all_pairs > HOSTS_MAX_ROWS:
            parts.append(f'<p class="note">The {HOSTS_MAX_ROWS} pairs with the most requests of '
                         f"{all_pairs:,}.</p>")
        parts.append(table([("client", ""), ("server", ""), ("requests", "num"), ("connections observed", "num"),
                            ("mean setup cost", "num")]
                           + [(f"connections at {fmt_num(c)} s", "num") for c in columns], pair_rows,
                           sortable=True))
    parts.append("</section>")
    return "".join(parts)


def _rows(m: MetricTables, name: str) -> int:
    """The rows table ``name`` had as made (``MetricTables.rows``; before the report's cut)."""
    return int(m.rows.get(name, len(getattr(m, name))))


def _pools_section(summary: Mapping[str, Any], m: MetricTables, chart: _Charts) -> str:
    pools, key, count = m.pools, m.summary, _rows(m, "pools")
    parts = ['<section id="pools"><h2>Connection pools</h2>',
             chart(figures.pool_figure(pools, m.pool_steps, BROWSER_PER_HOST_LIMIT,
                                       summary.get("ts_first")),
                   "Connections each client had open to each host at once, over time, for the pools of largest "
                   f"peak (at most {figures.POOLS_SHOWN}); the dashed line is a browser's limit of "
                   f"{BROWSER_PER_HOST_LIMIT} per host.")]
    if not count:
        return "".join(parts) + '<p class="note">No connection.</p></section>'
    over = key.get("pools_over_browser_limit") or 0
    parts.append(f'<p class="note">At most {fmt_int(key.get("max_parallel_connections"))} connections open at '
                 f"once from one client to one host; {fmt_int(over)} of {fmt_int(count)} pools went above a "
                 f"browser's {BROWSER_PER_HOST_LIMIT} "
                 '(<a href="#def-parallel_connections">definition</a>).</p>')
    shown = pools.head(HOSTS_MAX_ROWS)
    parts.append(table(
        [("client", ""), ("host", ""), ("connections", "num"), ("peak open", "num"), ("mean open", "num"),
         (f"time above {BROWSER_PER_HOST_LIMIT}", "num")],
        [[txt(r["client_ip"]), txt(r["host"]), num(fmt_int(r["connections"])), num(fmt_int(r["max_parallel"])),
          num(fmt_num(r["mean_parallel"])), num(fmt_s(r["seconds_over_limit"]))] for r in shown.to_dict("records")],
        caption="Pools per client and host" + (f" (the {HOSTS_MAX_ROWS} of largest peak of {count})"
                                               if count > HOSTS_MAX_ROWS else "")))
    parts.append("</section>")
    return "".join(parts)


def _protocols_section(key: dict[str, Any], m: MetricTables, chart: _Charts) -> str:
    mix, tls_hosts = m.protocols, m.tls_hosts
    parts = ['<section id="protocols"><h2>Protocols and TLS</h2>', chart(figures.protocol_figure(mix), "Protocol mix")]
    if mix.empty:
        return "".join(parts) + '<p class="note">No connection.</p></section>'
    parts.append(table([("protocol", ""), ("connections", "num"), ("transactions", "num"),
                        ("of which estimated", "num")],
                       [[txt(r["protocol"]), num(fmt_int(r["connections"])), num(fmt_int(r["transactions"])),
                         num(fmt_int(r["transactions_estimated"]))] for r in mix.to_dict("records")],
                       caption="Connections and transactions per protocol"))
    bits = []
    if key.get("tls_connections"):
        bits.append(f"{fmt_int(key['tls_connections'])} TLS connections, {fmt_int(key['tls_resumed'])} resumed "
                    f"(<a href=\"#def-tls_resumption_ratio\">resumption ratio</a> "
                    f"{esc(fmt_ratio(key['tls_resumption_ratio']))}); {fmt_int(key['tls_decrypted'])} decrypted "
                    "with a key log.")
    if key.get("h2_connections"):
        bits.append(f"{fmt_int(key['h2_connections'])} HTTP/2 connections: "
                    f"{esc(fmt_num(key['h2_requests_per_connection_mean']))} requests per connection on average, "
                    f"at most {fmt_int(key['h2_requests_per_connection_max'])}; at most "
                    f"{fmt_int(key['h2_max_concurrent_streams'])} streams open at once "
                    '(<a href="#def-streams_per_h2_connection">definition</a>).')
    if key.get("transactions_estimated"):
        bits.append(f"{fmt_int(key['transactions_estimated'])} transactions of encrypted connections are "
                    'estimated from TLS record bursts (<a href="#def-estimated_transactions">how</a>): no keys.')
    if bits:
        parts.append(f'<p class="note">{" ".join(bits)}</p>')
    if len(tls_hosts):
        shown = tls_hosts.head(HOSTS_MAX_ROWS)
        parts.append(table(
            [("host", ""), ("TLS connections", "num"), ("resumed", "num"), ("resumption ratio", "num"),
             ("versions", ""), ("median TLS handshake", "num")],
            [[txt(r["host"]), num(fmt_int(r["tls_connections"])), num(fmt_int(r["resumed"])),
              num(fmt_ratio(r["resumption_ratio"])), txt(r["versions"]), num(fmt_ms(r["tls_handshake_ms_median"]))]
             for r in shown.to_dict("records")],
            caption="TLS per host"))
    parts.append("</section>")
    return "".join(parts)


def _hosts_section(hosts: pd.DataFrame) -> str:
    shown = hosts.head(HOSTS_MAX_ROWS)
    def with_rt(ms: Any, round_trips: Any) -> str:
        return esc(fmt_ms(ms)) + ("" if _missing(round_trips) else f" ({esc(fmt_num(round_trips))} RT)")

    rows = [[txt(r["host"]), num(fmt_int(r["connections"])), num(fmt_int(r["requests"])),
             num(fmt_num(r["requests_per_connection"])), num(fmt_ratio(r["reuse_ratio"])),
             num(fmt_int(r["connections_reused"])), num(fmt_int(r["new_connections_avoidable"])),
             num(fmt_ms(r["idle_before_ms_median"])),
             num(f"{fmt_int(r['closes_by_server'])} / {fmt_int(r['closes_by_client'])}"),
             num(with_rt(r["handshake_time_ms"], r["handshake_round_trips"])),
             num(with_rt(r["handshake_time_ms_saved"], r["handshake_round_trips_saved"])),
             num(fmt_ms(r["handshake_time_ms_one_per_request"])), num(fmt_s(r["idle_timeout_s"])),
             txt(r["http_versions"])]
            for r in shown.to_dict("records")]
    note = (f'<p class="note">The {HOSTS_MAX_ROWS} hosts with the most requests of {len(hosts):,}.</p>'
            if len(hosts) > HOSTS_MAX_ROWS else "")
    if not rows:
        return '<section id="hosts"><h2>Hosts</h2><p class="note">No host.</p></section>'
    return ('<section id="hosts"><h2>Hosts</h2>' + note + table(
        [("host", ""), ("connections", "num"), ("requests", "num"), ("requests / conn.", "num"),
         ("reuse ratio", "num"), ("conns. reused", "num"), ("avoidable", "num"),
         ("median idle before", "num"), ("closed by server / client", "num"),
         ("handshakes paid", "num"), ("saved by reuse", "num"), ("one conn. per request", "num"),
         ("server idle timeout", "num"), ("HTTP", "")], rows)
        + '<p class="note">RT: round trips. Definitions: <a href="#def-per_host_table">glossary</a>.</p>'
        + "</section>")


def _tcp_section(analysis: Analysis, m: MetricTables, chart: _Charts) -> str:
    key = m.summary
    summary = analysis.summary or {}
    left_out = _int_or_none(summary.get("series_connections_left_out")) or 0
    counts = ", ".join(f"{fmt_int(key.get(f'responses_{w}'))} {w}" for w in WARMTHS)
    parts = ['<section id="tcp"><h2>TCP: warm vs cold</h2>',
             f'<p class="note">Responses: {counts}; {fmt_int(key.get("responses_warmth_unknown"))} of unknown '
             "warmth (the first response of a connection seen without its handshake, or no response data). "
             "A cold response starts from the server's initial congestion window, a warm one inherits the "
             "window earlier responses opened, a cooled one follows an idle time longer than the "
             'retransmission timeout, after which the server may restart slow start (<a href="#def-warmth">'
             "warmth</a>, <a href=\"#def-rounds\">rounds</a>).</p>",
             "<h3>Bytes in flight over time</h3>"]
    picks = series_connections(analysis.connections, analysis.transactions, analysis.segments,
                               conn_hosts=m.conn_hosts)
    if picks.empty:
        if left_out:
            parts.append(f'<p class="note bad">The per-packet series was not kept: {fmt_int(left_out)} '
                         "connection(s) were left out to bound memory, none can be drawn.</p>")
        else:
            parts.append('<p class="note">No server data segment with known bytes in flight was captured '
                         "(or the analysis was made without the per-packet series): nothing to draw.</p>")
    else:
        parts.append(f'<p class="note">{fmt_int(len(picks))} connection(s) to pick from in the menu at the '
                     "top right: in turn the ones with the most server bytes, the most retransmissions, the "
                     "largest cooled response and the largest cold response "
                     '(<a href="#def-bytes_in_flight_series">which ones</a>). Each point is one data segment '
                     "of the server, red crosses are retransmissions. In slow start the steps double per "
                     "round trip; a drop to near zero followed by a slow climb is a restart.</p>")
        if left_out:
            parts.append(f'<p class="note bad">The per-packet series was not kept for {fmt_int(left_out)} '
                         "connection(s) (bounded to keep memory in check): they are not offered here.</p>")
    parts.append(chart(figures.bytes_in_flight_figure(analysis.segments, picks, analysis.connections,
                                                      left_out=left_out), "Bytes in flight over time"))
    rounds = m.rounds
    parts.append("<h3>Flight bytes per round</h3>")
    if rounds.empty:
        parts.append('<p class="note">No response of known warmth and body size has flights: nothing to '
                     "compare.</p>")
    else:
        parts.append(f'<p class="note">The first {ROUNDS_SHOWN} rounds (flights) of responses of similar '
                     "size: the median bytes of round r over the responses that reached it "
                     '(<a href="#def-flight_bytes_by_round">definition</a>). Later rounds have fewer '
                     "responses: hover for the count.</p>")
    parts.append(chart(figures.flight_rounds_figure(rounds, ROUNDS_SHOWN), "Flight bytes per round"))
    if not rounds.empty:
        round_rows = [[txt(r["size_bucket"]), txt(r["warmth"]), num(fmt_int(r["round"])),
                       num(f"{fmt_int(r['responses'])} of {fmt_int(r['responses_total'])}"),
                       num(fmt_int(r["flight_bytes_median"]))] for r in rounds.to_dict("records")]
        parts.append("<details><summary>As a table</summary>" + table(
            [("response size", ""), ("warmth", ""), ("round", "num"), ("responses that reached it", "num"),
             ("median flight bytes", "num")], round_rows) + "</details>")
    parts.append("<h3>Transfer times by warmth, per host and response size</h3>")
    transfers = m.transfers
    if transfers.empty:
        parts.append('<p class="note">No response of known warmth and body size.</p>')
    else:
        bucket_rank = {label: i for i, (label, _, _) in enumerate(SIZE_BUCKETS)}
        rows = [[txt(r["host"]), (esc(r["size_bucket"]), "text", str(bucket_rank.get(r["size_bucket"], ""))),
                 (esc(r["warmth"]), "text", str(WARMTHS.index(r["warmth"]) if r["warmth"] in WARMTHS else "")),
                 num_sorted(fmt_int(r["responses"]), r["responses"]),
                 num_sorted(esc(fmt_ms(r["ttfb_ms_median"])), r["ttfb_ms_median"]),
                 num_sorted(esc(fmt_ms(r["transfer_ms_median"])), r["transfer_ms_median"]),
                 num_sorted(esc(fmt_num(r["rounds_median"], 1)), r["rounds_median"])]
                for r in transfers.head(WARMTH_MAX_ROWS).to_dict("records")]
        if len(transfers) > WARMTH_MAX_ROWS:
            parts.append(f'<p class="note">The first {WARMTH_MAX_ROWS} of {len(transfers):,} rows (hosts with '
                         "the most responses first).</p>")
        parts.append(table([("host", ""), ("response size", ""), ("warmth", ""), ("responses", "num"),
                            ("median TTFB", "num"), ("median transfer", "num"), ("median rounds", "num")],
                           rows, sortable=True))
        parts.append('<p class="note">Click a column header to sort. TTFB: request end → first response '
                     "byte; transfer: first → last response byte (<a href=\"#def-warmth_transfer_table\">"
                     "definitions</a>).</p>")
    parts.append("</section>")
    return "".join(parts)


def _health_cells(r: Mapping[Any, Any]) -> list[Cell]:
    def count(name: str) -> Cell:
        return num_sorted(fmt_int(r[name]), r[name])

    return [txt(r["host"]), count("connections"), count("connections_with_retransmissions"), count("packets"),
            count("retransmissions"), count("fast_retransmissions"), count("spurious_retransmissions"),
            count("other_retransmissions"), count("out_of_order"), count("dup_acks"), count("zero_window"),
            count("window_full"), num_sorted(esc(fmt_ms(r["rtt_min_ms"])), r["rtt_min_ms"]),
            num_sorted(esc(fmt_ms(r["rtt_median_ms"])), r["rtt_median_ms"]), count("rtt_samples"),
            num_sorted(esc(fmt_ms(r["handshake_rtt_ms_median"])), r["handshake_rtt_ms_median"]),
            txt(r["capture_points"])]


def _tcp_health_section(m: MetricTables) -> str:
    health = m.health
    if health.empty:
        return '<section id="tcp-health"><h2>TCP health</h2><p class="note">No connection.</p></section>'
    shown = health.head(HOSTS_MAX_ROWS)
    note = (f'<p class="note">The {HOSTS_MAX_ROWS} hosts with the most retransmissions of {len(health):,}.</p>'
            if len(health) > HOSTS_MAX_ROWS else "")
    rows = [_health_cells(r) for r in shown.to_dict("records")]
    foot = [_health_cells(r) for r in m.health_totals.to_dict("records")]
    headers = [("host", ""), ("conns.", "num"), ("conns. with retransmissions", "num"), ("packets", "num"),
               ("retransmissions", "num"), ("fast", "num"), ("spurious", "num"), ("other", "num"),
               ("out of order", "num"), ("dup ACKs", "num"), ("zero window", "num"), ("window full", "num"),
               ("RTT min", "num"), ("RTT median", "num"), ("RTT samples", "num"), ("handshake RTT median", "num"),
               ("capture point", "")]
    totals = m.health_totals.to_dict("records")
    client_note = ""
    if totals and str(totals[0]["capture_points"] or "").startswith("client"):
        client_note = (" Most connections were captured near the client: there the RTT samples only measure the "
                       "client's ACK delay; the handshake RTT is the path's round trip.")
    return ('<section id="tcp-health"><h2>TCP health</h2>' + note
            + table(headers, rows, sortable=True, foot=foot)
            + '<p class="note">Per host, both directions. Retransmissions are Wireshark\'s count; fast, spurious '
              "and other are its kinds (other: mostly timeouts). RTT samples run from a server data segment to "
              f"the client's ACK of it (capture point → client → capture point).{client_note} Definitions: "
              '<a href="#def-retransmissions_by_kind">retransmissions</a>, '
              '<a href="#def-tcp_window_signals">window signals</a>, <a href="#def-rtt_ms">RTT</a>, '
              '<a href="#def-capture_point">capture point</a>.</p></section>')


def anomaly_examples(anomalies: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``anomalies`` the report shows: the first ``ANOMALY_EXAMPLES`` of each name, in the table's
    order (with a fresh index). It keeps the same rows of a table as of its blocks one after the other and
    then of what they kept (``Analysis.in_memory(rows=)``): ``analyzer report`` reads back only these (a
    SYN flood of a million: 840,000 rows, 190 MiB held through the report)."""
    first = anomalies.groupby("name", dropna=False, sort=False).cumcount().to_numpy() < ANOMALY_EXAMPLES
    return anomalies[first].reset_index(drop=True)


def _anomalies_section(analysis: Analysis) -> str:
    frame = analysis.anomalies
    # names counted and examples picked by column, not by row: a SYN flood brings a million anomaly rows
    codes, uniques = pd.factorize(frame["name"], use_na_sentinel=True)  # missing names are -1
    labels = [*("(unnamed)" if _missing(v) else str(v) for v in uniques.tolist()), "(unnamed)"]
    place = np.where(np.asarray(codes, dtype=np.int64) < 0, len(labels) - 1, codes)  # missing: the last label
    counts: dict[str, int] = {}
    if isinstance(analysis.summary.get("anomalies"), dict) and analysis.summary["anomalies"]:
        # the summary counts every row; the table may hold only the examples (``anomaly_examples``)
        counts = {str(k): _int_or_none(v) or 0 for k, v in analysis.summary["anomalies"].items()}
    else:
        for label, count in zip(labels, np.bincount(place, minlength=len(labels)).tolist(), strict=True):
            if count:
                counts[label] = counts.get(label, 0) + count
    if not counts:
        return '<section id="anomalies"><h2>Anomalies</h2><p class="note">None recorded.</p></section>'
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    parts = ['<section id="anomalies"><h2>Anomalies</h2>',
             table([("anomaly", ""), ("count", "num")], [[txt(n), num(fmt_int(k))] for n, k in ordered])]
    examples = []
    if len(frame):
        row_label = np.array(labels, dtype=object)[place]
        for name, _ in ordered:
            for r in np.flatnonzero(row_label == name)[:ANOMALY_EXAMPLES].tolist():
                detail = frame["detail"].iloc[r]
                if not _missing(detail) and len(str(detail)) > DETAIL_MAX:
                    detail = str(detail)[: DETAIL_MAX - 1] + "…"
                examples.append([txt(name), txt(fmt_ts(frame["ts"].iloc[r])), txt(frame["uid"].iloc[r]), txt(detail)])
    if examples:
        parts.append(f"<h3>Examples (up to {ANOMALY_EXAMPLES} per anomaly)</h3>")
        parts.append(table([("anomaly", ""), ("time", ""), ("connection", ""), ("detail", "")], examples))
    parts.append("</section>")
    return "".join(parts)


def _quality_section(summary: dict[str, Any], metric_keys: set[str]) -> str:
    labels = {
        "captures": "capture files", "file_format": "file format", "packets_read": "packets read",
        "packets_analyzed": "packets analyzed", "packets_skipped": "packets skipped, by reason",
        "truncated_packets": "truncated packets (captured shorter than on the wire, still analyzed)",
        "reader_skipped": "records skipped by the reader, by reason",
        "reader_notes": "records kept with a fix or a note (timestamps, caplen), by reason",
        "bytes_skipped": "bytes of damaged records passed over (the reader resynchronized after them)",
        "bytes_unread": "bytes left unread at the end (damage the reader could not get past)",
        "kernel_drops": "dropped by the kernel",
        "ts_first": "first packet", "ts_last": "last packet", "duration_s": "duration (s)",
        "connections": "connections", "connections_with_syn": "connections with a SYN seen",
        "transactions": "transactions",
    }
    rows: list[list[Cell]] = []
    for name in QUALITY_KEYS:
        if name not in summary:
            continue
        value = summary[name]
        shown = esc(fmt_ts(value)) if name in ("ts_first", "ts_last") else _summary_value(value)
        rows.append([txt(labels[name]), (shown, "text")])
    read = _int_or_none(summary.get("packets_read"))
    analyzed = _int_or_none(summary.get("packets_analyzed"))
    skipped = summary.get("packets_skipped")
    check = ""
    if read is not None and analyzed is not None and isinstance(skipped, dict):
        skipped_total = sum(_int_or_none(v) or 0 for v in skipped.values())
        if read == analyzed + skipped_total:
            check = (f'<p class="note ok">Every packet is accounted for: {read:,} read = {analyzed:,} '
                     f"analyzed + {skipped_total:,} skipped.</p>")
        else:
            check = (f'<p class="note bad">Packets do not add up: {read:,} read, {analyzed:,} analyzed, '
                     f"{skipped_total:,} skipped (difference {read - analyzed - skipped_total:,}).</p>")
    others = [[txt(name), (_summary_value(value), "text")] for name, value in summary.items()
              if name not in QUALITY_KEYS and name not in metric_keys and name != "anomalies"]
    body = table([("", ""), ("value", "")], rows) if rows else '<p class="note">No capture summary.</p>'
    extra = (f"<h3>Other summary values</h3>{table([('key', ''), ('value', '')], others)}" if others else "")
    return f'<section id="quality"><h2>Capture quality</h2>{check}{body}{extra}</section>'


_NAV = (("headline", "Headline"), ("reuse", "Requests per connection"), ("timeline", "Timeline"),
        ("idle", "Idle gaps"), ("races", "Close races"), ("handshake", "Handshakes"),
        ("whatif", "Keep-alive what-if"), ("hosts", "Hosts"), ("pools", "Connection pools"),
        ("protocols", "Protocols and TLS"),
        ("tcp", "TCP warm vs cold"), ("tcp-health", "TCP health"), ("anomalies", "Anomalies"),
        ("quality", "Capture quality"), ("glossary", "Glossary"))


@lru_cache(maxsize=1)
def _template() -> string.Template:
    text = resources.files("analyzer.report").joinpath("template.html").read_text(encoding="utf-8")
    return string.Template(text)


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    return plotly.offline.get_plotlyjs()


def render_report(analysis: Analysis, title: str, redact: bool = True) -> str:
    """The report of ``analysis`` as one self-contained HTML document (plotly.js embedded once, no
    network loads). ``title`` is shown as given (escaped). Metrics are computed from the tables; the
    capture-quality section reads ``analysis.summary``. ``redact`` (the default) hides credentials in
    capture strings first (``redact.redact_analysis``: cookies, authorization values, URL passwords and
    tokens)."""
    return _render(analysis, title, redact)[0]


def _render(source: Analysis, title: str, redact: bool) -> tuple[str, dict[str, Any]]:
    """``render_report``'s document and the key figures it shows (``summary_metrics``' keys). The tables are
    read from ``source`` a step at a time (``report_reader``), each step's columns let go after it."""
    read = report_reader(source, redact)
    m = compute_all_read(read, leave_out=UNDRAWN_METRICS, drawn=DRAWN_METRICS)
    key, timeouts, hosts = m.summary, m.timeouts, m.hosts
    chart = _Charts()
    summary = source.summary or {}
    captures = summary.get("captures") or []
    listed = captures if isinstance(captures, (list, tuple)) else [captures]
    captures_text = ", ".join(str(x) for x in listed)
    lead_bits = [f"Capture: {esc(captures_text)}" if captures_text else ""]
    if summary.get("ts_first") is not None:
        lead_bits.append(f"{esc(fmt_ts(summary.get('ts_first')))} → {esc(fmt_ts(summary.get('ts_last')))}")
    if summary.get("duration_s") is not None:
        lead_bits.append(f"{esc(fmt_num(summary.get('duration_s'), 3))} s")
    nav = "".join(f'<a href="#{anchor}">{html.escape(label)}</a>' for anchor, label in _NAV)
    parts = [
        f"<header><h1>{esc(title)}</h1>",
        f'<p class="lead">{" · ".join(bit for bit in lead_bits if bit)}</p>' if any(lead_bits) else "",
        f"<nav>{nav}</nav></header>",
        '<noscript><p class="note">JavaScript is off: the charts are not drawn; every figure is also in the '
        "tables.</p></noscript>",
        '<section id="headline"><h2>Headline</h2>', _headline(key, timeouts, m.reason_table), "</section>",
        _reuse_section(m, chart)]
    # the heap's free pages handed back before the sections that make large temporaries, and each table that
    # can still be large once cut (DRAWN_METRICS) let go once drawn: the idle-after timeout samples and the
    # drawn pools' steps can be a row per connection (a million tiny connections: 67 MiB of pool steps)
    release_free_memory()
    parts += [_timeline_section(read(SECTION_COLUMNS["timeline"]), chart),
              _idle_section(read(SECTION_COLUMNS["idle"]), m, chart)]
    m = m.without("idle_after")
    parts += [_close_race_section(m), _handshake_section(key, hosts, chart), _whatif_section(m, chart),
              _hosts_section(hosts), _pools_section(summary, m, chart)]
    m = m.without("pools", "pool_steps")
    parts.append(_protocols_section(key, m, chart))
    release_free_memory()
    parts += [
        _tcp_section(read(SECTION_COLUMNS["tcp"]), m, chart),
        _tcp_health_section(m),
        _anomalies_section(read(SECTION_COLUMNS["anomalies"])),
        _quality_section(summary, set(key)),
        '<section id="glossary"><h2>Glossary</h2>', _glossary_html(glossary()), "</section>",
        f"<footer>Generated by analyzer {esc(analyzer.__version__)} · self-contained: works offline."
        "</footer>",
    ]
    body = "".join(parts)
    return _template().substitute(title=esc(title), version=esc(analyzer.__version__), body=body,
                                  plotlyjs=_plotly_js()), key


def report_reader(source: Analysis, redact: bool = True) -> Read:
    """The report's ``Read``: ``source`` with only the columns asked for, by table (a table not named comes
    as its rows without columns). Each call reads its tables back from ``source``'s spill, if it has one,
    and of a spilled anomaly table only the rows the report shows (``report_rows``; the summary counts them
    all). ``redact`` hides credentials in the capture strings it gives (``redact.redact_analysis``)."""
    examples = {name: keep for name, keep in report_rows().items() if name in source.spilled}

    def read(columns: Mapping[str, Sequence[str]]) -> Analysis:
        asked = {name: tuple(columns.get(name, ())) for name in TABLES}
        tables = source.in_memory(asked, {name: keep for name, keep in examples.items() if asked[name]})
        return redact_analysis(tables) if redact else tables

    return read


def report_rows() -> dict[str, Callable[[pd.DataFrame], pd.DataFrame]]:
    """The rows of each table the report reads, where it reads fewer than all (the anomalies' examples; the
    summary counts them all): for ``Analysis.in_memory``."""
    return {"anomalies": anomaly_examples}


def default_title(analysis: Analysis, path: str | os.PathLike[str] | None = None) -> str:
    """``"HTTP connection reuse — <capture names>"``, else the report file's stem."""
    captures = (analysis.summary or {}).get("captures")
    if isinstance(captures, (list, tuple)) and captures:
        names = [Path(str(c)).name for c in captures]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return f"HTTP connection reuse — {shown}"
    if path is not None:
        return f"HTTP connection reuse — {Path(path).stem}"
    return "HTTP connection reuse"


def write_report(analysis: Analysis, path: str | os.PathLike[str], title: str | None = None,
                 redact: bool = True) -> dict[str, Any]:
    """Write ``render_report(analysis, title, redact)`` to ``path`` (UTF-8), creating missing parent
    folders; the key figures it shows are returned (``summary_metrics``' keys: ``analyzer report``
    computes them only here). The title defaults to ``default_title``."""
    target = Path(path)
    document, key = _render(analysis, title if title is not None else default_title(analysis, target), redact)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(document, encoding="utf-8")
    return key

