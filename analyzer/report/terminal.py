"""The terminal summary of ``analyzer summary``: the key figures as rich tables.

This module owns what the terminal shows and how: headline figures, capture quality with skip reasons,
the top hosts, warm vs cold responses, anomalies by name and the inferred server idle timeouts. It
computes the figures through ``analyzer.metrics`` and writes only to the ``rich.console.Console`` it is
given. Capture strings are wrapped in ``rich.text.Text`` so that ``[...]`` in them is shown as text, never
parsed as rich markup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from analyzer.analysis import Analysis
from analyzer.metrics import summary_tables_read
from analyzer.metrics.warmth import WARMTHS
from analyzer.report.html import fmt_int, fmt_ms, fmt_num, fmt_ratio, fmt_s, fmt_ts
from analyzer.report.redact import printable, redact_analysis

TOP_HOSTS = 10
TEXT_MAX = 200  # characters of a capture string in a cell


def _t(value: Any) -> Text:
    """A cell as plain text (no markup), ``—`` for missing."""
    if value is None:
        return Text("—")
    try:
        if not isinstance(value, (list, dict, tuple)) and pd.isna(value):
            return Text("—")
    except (TypeError, ValueError):
        pass
    return Text(printable(str(value), TEXT_MAX))


def headline_table(key: dict[str, Any]) -> Table:
    """Headline figures from ``metrics.summary_metrics``."""
    table = Table(title="HTTP connection reuse", show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    table.add_column("detail", style="dim")
    rows = [
        ("Connections", fmt_int(key["connections"]),
         f"{fmt_int(key['connections_reused'])} carried >1 request, "
         f"{fmt_int(key['connections_unused'])} none"),
        ("Requests", fmt_int(key["transactions"]),
         f"per connection mean {fmt_num(key['requests_per_connection_mean'])}, "
         f"max {fmt_int(key['requests_per_connection_max'])}"),
        ("Reuse ratio", fmt_ratio(key["reuse_ratio"]),
         f"{fmt_int(key['transactions_reused'])} reused requests"),
        ("New connections avoidable", fmt_int(key["new_connections_avoidable"]),
         "opened while an idle reusable connection was open"),
        ("Biggest reason for new connections", str(key.get("top_reuse_blocker") or "none"),
         (f"{fmt_int(key['top_reuse_blocker_connections'])} of {fmt_int(key['new_connections'])} new "
          f"connections: {key.get('top_reuse_blocker_evidence')}") if key.get("top_reuse_blocker") else
         "no connection reopened to a server already used"),
        ("Handshake time spent", fmt_ms(key["handshake_time_ms_total"]),
         f"{fmt_num(key['handshake_round_trips_paid'])} round trips"),
        ("Handshake time saved by reuse", fmt_ms(key["handshake_time_ms_saved"]),
         f"{fmt_num(key['handshake_round_trips_saved'])} round trips"),
        ("One connection per request", fmt_ms(key["handshake_time_ms_one_per_request"]),
         f"{fmt_num(key['handshake_round_trips_one_per_request'])} round trips"),
        ("Median idle gap before a request", fmt_ms(key["idle_before_ms_median"]),
         f"{fmt_int(key['idle_gaps'])} gaps"),
        ("Closed by server / client / open", f"{fmt_int(key['closes_by_server'])} / "
         f"{fmt_int(key['closes_by_client'])} / {fmt_int(key['connections_open_at_end'])}", ""),
    ]
    for label, value, detail in rows:
        table.add_row(Text(label), Text(value), Text(detail))
    return table


def quality_table(summary: dict[str, Any]) -> Table:
    """Packets read, analyzed, skipped by reason, and the capture files."""
    table = Table(title="Capture quality", show_header=False, title_justify="left")
    table.add_column("item")
    table.add_column("value", justify="right")
    captures = summary.get("captures")
    if isinstance(captures, (list, tuple)) and captures:
        table.add_row(Text("captures"), Text(printable(", ".join(str(c) for c in captures))))
    for name in ("file_format", "packets_read", "packets_analyzed", "truncated_packets", "kernel_drops",
                 "bytes_skipped", "bytes_unread"):
        if name in summary:
            value = summary[name]
            shown = fmt_int(value) if isinstance(value, (int, float)) else _t(value).plain
            table.add_row(Text(name.replace("_", " ")), Text(shown))
    for group in ("packets_skipped", "reader_skipped", "reader_notes"):
        skipped = summary.get(group)
        if isinstance(skipped, dict):
            total = sum(int(v) for v in skipped.values() if isinstance(v, (int, float)))
            table.add_row(Text(group.replace("_", " ")), Text(fmt_int(total)))
            for reason, count in sorted(skipped.items(), key=lambda item: str(item[0])):
                table.add_row(Text(f"  {reason}"), _t(fmt_int(count) if isinstance(count, (int, float))
                                                      else count))
    for name in ("ts_first", "ts_last"):
        if summary.get(name) is not None:
            table.add_row(Text(name.replace("_", " ")), Text(fmt_ts(summary[name])))
    return table


def hosts_table(hosts: pd.DataFrame, top: int = TOP_HOSTS) -> Table:
    """The ``top`` hosts by requests (``hosts``: ``metrics.host_table``)."""
    title = f"Hosts (top {top} of {len(hosts)})" if len(hosts) > top else "Hosts"
    table = Table(title=title, title_justify="left")
    for name, justify in (("host", "left"), ("conns", "right"), ("requests", "right"), ("req/conn", "right"),
                          ("reuse", "right"), ("avoidable", "right"), ("idle before", "right"),
                          ("closed srv/cli", "right"), ("handshakes", "right"), ("idle timeout", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in hosts.head(top).to_dict("records"):
        table.add_row(_t(r["host"]), Text(fmt_int(r["connections"])), Text(fmt_int(r["requests"])),
                      Text(fmt_num(r["requests_per_connection"])), Text(fmt_ratio(r["reuse_ratio"])),
                      Text(fmt_int(r["new_connections_avoidable"])), Text(fmt_ms(r["idle_before_ms_median"])),
                      Text(f"{fmt_int(r['closes_by_server'])}/{fmt_int(r['closes_by_client'])}"),
                      Text(fmt_ms(r["handshake_time_ms"])), Text(fmt_s(r["idle_timeout_s"])))
    return table


def warmth_table(key: dict[str, Any]) -> Table:
    """Cold, warm and cooled responses: count and median TTFB, transfer time and rounds (from
    ``metrics.warmth_stats``, all response sizes), and how many were of unknown warmth."""
    unknown = key.get("responses_warmth_unknown")
    table = Table(title="Warm vs cold responses", title_justify="left",
                  caption=f"{fmt_int(unknown)} of unknown warmth; all sizes (the report compares by size)",
                  caption_justify="left")
    for name in ("warmth", "responses", "median TTFB", "median transfer", "median rounds"):
        table.add_column(name, justify="left" if name == "warmth" else "right")
    for warmth in WARMTHS:
        table.add_row(Text(warmth), Text(fmt_int(key.get(f"responses_{warmth}"))),
                      Text(fmt_ms(key.get(f"ttfb_ms_median_{warmth}"))),
                      Text(fmt_ms(key.get(f"transfer_ms_median_{warmth}"))),
                      Text(fmt_num(key.get(f"rounds_median_{warmth}"), 1)))
    return table


def protocols_table(mix: pd.DataFrame, key: dict[str, Any]) -> Table:
    """Connections and transactions per protocol (``metrics.protocol_mix``), with TLS resumption."""
    table = Table(title="Protocols", title_justify="left")
    for name in ("protocol", "connections", "transactions", "estimated"):
        table.add_column(name, justify="left" if name == "protocol" else "right")
    for r in mix.to_dict("records"):
        table.add_row(_t(r["protocol"]), Text(fmt_int(r["connections"])), Text(fmt_int(r["transactions"])),
                      Text(fmt_int(r["transactions_estimated"])))
    if key.get("tls_connections"):
        table.caption = (f"TLS: {fmt_int(key['tls_connections'])} connections, {fmt_int(key['tls_resumed'])} "
                         f"resumed ({fmt_ratio(key['tls_resumption_ratio'])} of those known)")
    return table


def anomalies_table(analysis: Analysis) -> Table:
    """Anomaly counts by name (from the table, else from ``summary['anomalies']``)."""
    names = analysis.anomalies["name"]
    counts = {str(k): int(v) for k, v in names.value_counts(dropna=False).items()} if len(names) else {}
    if not counts and isinstance(analysis.summary.get("anomalies"), dict):
        counts = {str(k): int(v) for k, v in analysis.summary["anomalies"].items()}
    table = Table(title="Anomalies", title_justify="left")
    table.add_column("anomaly")
    table.add_column("count", justify="right")
    for name, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        table.add_row(_t(name), Text(fmt_int(count)))
    if not counts:
        table.add_row(Text("none"), Text("0"))
    return table


def timeouts_table(timeouts: pd.DataFrame) -> Table:
    """Inferred server idle timeouts next to the advertised ones (``metrics.infer_idle_timeouts``)."""
    table = Table(title="Server idle timeouts", title_justify="left")
    for name in ("server", "idle closes", "outliers", "immediate", "inferred", "min – max", "advertised"):
        table.add_column(name, justify="left" if name == "server" else "right")
    for r in timeouts.to_dict("records"):
        table.add_row(_t(r["server"]), Text(fmt_int(r["samples"])), Text(fmt_int(r["outliers"])),
                      Text(fmt_int(r["immediate_closes"])),
                      Text(fmt_s(r["timeout_s"])), Text(f"{fmt_s(r['min_s'])} – {fmt_s(r['max_s'])}"),
                      Text(fmt_s(r["advertised_timeout_s"])))
    return table


def print_summary(analysis: Analysis, console: Console) -> None:
    """Print the key figures of ``analysis`` to ``console`` as rich tables: headline, capture quality with
    skip reasons, the top hosts, the protocol mix, warm vs cold responses when any response's warmth is
    known, anomalies by name, and server idle timeouts when any were inferred or advertised. Credentials in
    capture strings are redacted (``redact.redact_analysis``); control characters are shown as escapes."""
    def read(columns: Mapping[str, Sequence[str]]) -> Analysis:  # only these, read back from a spill
        return redact_analysis(analysis.held(columns))

    # the figures ``analyze`` computed (from the tables before redaction, as ``analyzer export`` writes them);
    # the tables a group of columns at a time (``summary_tables_read``)
    m = summary_tables_read(read, known=analysis.summary)
    console.print(headline_table(m.summary))
    console.print(quality_table(analysis.summary or {}))
    console.print(hosts_table(m.hosts))
    console.print(protocols_table(m.protocols, m.summary))
    if any(m.summary.get(f"responses_{warmth}") for warmth in WARMTHS):
        console.print(warmth_table(m.summary))
    console.print(anomalies_table(analysis))
    timeouts = timeouts_table(m.timeouts)
    if timeouts.row_count:
        console.print(timeouts)
