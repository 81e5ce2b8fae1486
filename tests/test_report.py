"""Tests of analyzer.report: the self-contained HTML report, its charts, its escaping, the terminal summary.

The analyses come from tests/test_metrics.py (``sample_analysis``: figures computed by hand there).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.offline
import pytest
from rich.console import Console
from test_metrics import T0, empty_analysis, sample_analysis, with_missing_rows

from analyzer.analysis import Analysis
from analyzer.metrics import (
    flight_rounds,
    host_table,
    idle_after_last,
    infer_idle_timeouts,
    requests_per_connection_histogram,
    series_connections,
)
from analyzer.metrics import glossary as metric_glossary
from analyzer.report import figures, print_summary, render_report, write_report
from analyzer.report.html import script_json
from analyzer.tables import (
    ANOMALY_COLUMNS,
    CONNECTION_COLUMNS,
    TABLES,
    TRANSACTION_COLUMNS,
    empty_frame,
    frame_from_rows,
)

EVIL = "<script>alert(1)</script>"
EVIL_IMG = '<img src=x onerror="document.title=\'pwned\'">'
BIF_TITLE = "Bytes in flight (server → client)"
ROUNDS_TITLE = "Flight bytes per round: cold, warm and cooled responses"
WHATIF_TITLE = "Keep-alive what-if: other server idle timeouts and request limits"
CHART_TITLES = ("Requests per connection", "Why new connections were opened", "Connection timeline", "Idle gaps",
                "Handshake overhead per host",
                WHATIF_TITLE, "Parallel connections per client and host", "Protocol mix", BIF_TITLE, ROUNDS_TITLE)


class _Page(HTMLParser):
    """Collects the tags, attributes and script bodies of a page as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._in_script: dict[str, str | None] | None = None
        self._buffer: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script, self._buffer = dict(attrs), []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._in_script is not None:
            self.scripts.append((self._in_script, "".join(self._buffer)))
            self._in_script = None

    def handle_data(self, data: str) -> None:
        if self._in_script is not None:
            self._buffer.append(data)


def parse(document: str) -> _Page:
    page = _Page()
    page.feed(document)
    page.close()
    return page


def hostile_analysis() -> Analysis:
    """The sample capture with hostile strings in every capture-derived field the report shows."""
    analysis = sample_analysis()
    tx = analysis.transactions
    tx.loc[0, "target"] = "/search?q=" + EVIL
    tx.loc[1, "method"] = EVIL
    tx.loc[2, "user_agent"] = EVIL
    tx.loc[tx["uid"] == "b1", "host"] = "legacy" + EVIL_IMG
    tx.loc[tx["uid"] == "b2", "host"] = "legacy" + EVIL_IMG
    tx.loc[tx["uid"] == "b3", "host"] = "legacy" + EVIL_IMG
    analysis.anomalies.loc[0, "detail"] = "</script><script>alert(2)</script>" + EVIL_IMG
    analysis.anomalies.loc[1, "name"] = "weird" + EVIL
    analysis.summary["anomalies"] = analysis.anomalies["name"].value_counts().to_dict()  # what it counts
    analysis.summary["captures"] = [EVIL + ".pcap"]
    analysis.summary["packets_skipped"] = {EVIL: 6, "non_tcp_udp": 4}
    analysis.summary["file_format"] = EVIL_IMG
    return analysis


@pytest.fixture(scope="module")
def document() -> str:
    return render_report(sample_analysis(), "Sample capture")


@pytest.fixture(scope="module")
def hostile() -> str:
    return render_report(hostile_analysis(), "Title " + EVIL)


def chart_figures(document: str) -> list[dict[str, Any]]:
    page = parse(document)
    return [json.loads(body) for attrs, body in page.scripts if attrs.get("type") == "application/json"]


# --- the file ---------------------------------------------------------------------------------------------

def test_write_report_writes_one_self_contained_file(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "report.html"
    write_report(sample_analysis(), target, title="Sample capture")
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]
    assert target.read_text(encoding="utf-8") == render_report(sample_analysis(), "Sample capture")


def test_default_title_names_the_capture(tmp_path: Path) -> None:
    target = tmp_path / "r.html"
    write_report(sample_analysis(), target)
    assert "<title>HTTP connection reuse — sample.pcap</title>" in target.read_text(encoding="utf-8")


def test_plotly_js_embedded_exactly_once(document: str) -> None:
    plotly_js = plotly.offline.get_plotlyjs()
    assert document.count(plotly_js[:2000]) == 1
    assert document.count(plotly_js[-2000:]) == 1
    assert len(re.findall(r"plotly\.js v\d+\.\d+\.\d+", document)) == 1
    executable = [body for attrs, body in parse(document).scripts if attrs.get("type") != "application/json"]
    assert sum(plotly_js[:2000] in body for body in executable) == 1
    assert len(executable) == 3  # the "js" class flag, plotly.js, the chart loader


def test_no_network_loads(document: str) -> None:
    page = parse(document)
    for tag, attrs in page.tags:
        for name in ("src", "href", "data", "action", "poster", "srcset"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "ftp:")), (tag, name, value)
        if tag == "link":
            raise AssertionError(f"<link> in the page: {attrs}")
        if tag == "script":
            assert "src" not in attrs
    style = document[document.index("<style>"): document.index("</style>")]
    assert "url(" not in style and "@import" not in style and "@font-face" not in style


def test_every_chart_present(document: str) -> None:
    charts = chart_figures(document)
    assert [c["layout"]["title"]["text"] for c in charts] == list(CHART_TITLES)
    for chart in charts:
        assert chart["data"], chart["layout"]["title"]
    page = parse(document)
    containers = {attrs.get("id") for tag, attrs in page.tags
                  if tag == "div" and attrs.get("class") == "chart"}
    targets = {attrs.get("data-target") for attrs, _ in page.scripts
               if attrs.get("type") == "application/json"}
    assert containers == targets == {f"chart-{i}" for i in range(1, len(CHART_TITLES) + 1)}


def test_sections_present(document: str) -> None:
    for anchor in ("headline", "reuse", "timeline", "idle", "handshake", "hosts", "protocols", "tcp", "tcp-health",
                   "anomalies", "quality", "glossary"):
        assert f'<section id="{anchor}">' in document


# --- values -------------------------------------------------------------------------------------------------

def test_summary_values_appear(document: str) -> None:
    for text in ("36.4 %",  # reuse ratio 4/11
                 "294.5 ms",  # handshake time paid
                 "43.5 ms",  # saved by reuse
                 "219.6 ms",  # one connection per request
                 "2.002 s",  # inferred server idle timeout
                 "500.0 ms",  # median idle gap
                 "api.example (192.0.2.10:80)", "legacy.example (192.0.2.20:80)",
                 "midstream_start", "first packet without SYN", "non_ip: 6", "non_tcp_udp: 4",
                 "Every packet is accounted for: 120 read = 110 analyzed + 10 skipped",
                 "2023-11-14 22:13:20.000 UTC", "sample.pcap"):
        assert text in document, text
    cards = re.findall(r'<div class="label">([^<]+)</div><div class="value">([^<]+)</div>', document)
    values = dict(cards)
    assert values["Connections"] == "10" and values["Requests"] == "11"
    assert values["New connections avoidable"] == "2"
    assert values["Inferred server idle timeout"] == "2.002 s"


def test_packets_that_do_not_add_up_are_flagged() -> None:
    analysis = sample_analysis()
    analysis.summary["packets_analyzed"] = 100
    assert "Packets do not add up: 120 read, 100 analyzed, 10 skipped (difference 10)" in render_report(
        analysis, "x")


def test_glossary_in_report(document: str) -> None:
    for name in metric_glossary():
        assert f'id="def-{name}"' in document


def test_timeline_hover_has_method_target_status(document: str) -> None:
    timeline = _chart(document, "Connection timeline")
    marks = next(trace for trace in timeline["data"] if trace.get("name") == "request start")
    assert any("GET /three" in text and "status 200" in text for text in marks["hovertext"])
    assert len(marks["hovertext"]) == 11


def test_idle_chart_draws_the_inferred_timeout(document: str) -> None:
    idle = _chart(document, "Idle gaps")
    line = next(trace for trace in idle["data"] if trace["name"].startswith("inferred idle timeout"))
    assert line["x"] == [pytest.approx(2002.0), pytest.approx(2002.0)]


# --- escaping ---------------------------------------------------------------------------------------------

def test_capture_strings_are_escaped_in_tables(hostile: str) -> None:
    page = parse(hostile)
    expected_scripts = 3 + len(CHART_TITLES)
    assert len(page.scripts) == expected_scripts  # nothing injected a <script>
    assert not any(tag == "img" for tag, _ in page.tags)
    outside_plotly = hostile.replace(plotly.offline.get_plotlyjs(), "")
    assert EVIL not in outside_plotly and "<img" not in outside_plotly
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in hostile  # shown as text
    assert "legacy&lt;img src=x onerror=&quot;document.title=&#x27;pwned&#x27;&quot;&gt;" in hostile
    assert "<title>Title &lt;script&gt;alert(1)&lt;/script&gt;</title>" in hostile


def test_capture_strings_cannot_break_out_of_chart_json(hostile: str) -> None:
    page = parse(hostile)
    for attrs, body in page.scripts:
        if attrs.get("type") == "application/json":
            assert "<" not in body and ">" not in body and "&" not in body
    # A browser ends a script element at the first "</script": the JSON blocks must not contain one.
    blocks = re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', hostile, flags=re.S)
    assert len(blocks) == len(CHART_TITLES)
    charts = [json.loads(block) for block in blocks]
    text = json.dumps(charts)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # the hostile target, escaped for plotly
    assert EVIL not in text
    # the hostile Host header reaches the bytes-in-flight dropdown (b1 is offered), escaped
    bif = next(c for c in charts if c["layout"]["title"]["text"] == BIF_TITLE)
    labels = [b["label"] for b in bif["layout"]["updatemenus"][0]["buttons"]]
    assert any("legacy&lt;img src=x" in label for label in labels), labels
    assert "<img" not in text


def test_script_json() -> None:
    raw = json.dumps({"a": "</script><!-- & \u2028\u2029"}, ensure_ascii=False)
    safe = script_json(raw)
    assert not set(safe) & {"<", ">", "&", "\u2028", "\u2029"}
    assert json.loads(safe) == json.loads(raw)


# --- robustness --------------------------------------------------------------------------------------------

def test_empty_analysis_renders() -> None:
    document = render_report(empty_analysis(), "Empty")
    charts = chart_figures(document)
    assert len(charts) == len(CHART_TITLES)
    assert "No connection with a known request count." in json.dumps(charts)
    assert "No host." in document and "None recorded." in document and "No capture summary." in document
    by_title = {c["layout"]["title"]["text"]: c for c in charts}
    for title, message in ((BIF_TITLE, "No server data segment with known bytes in flight was captured."),
                           (ROUNDS_TITLE, "No response of known warmth and size has flights.")):
        assert not by_title[title]["data"]
        assert [a["text"] for a in by_title[title]["layout"]["annotations"]] == [message]
    assert "No server data segment with known bytes in flight was captured (or the analysis" in document
    assert "No response of known warmth and body size has flights: nothing to compare." in document
    assert "No response of known warmth and body size.</p>" in document
    assert '<section id="tcp-health"><h2>TCP health</h2><p class="note">No connection.</p>' in document


def test_series_left_out_is_said() -> None:
    """No per-packet series kept (bounded): the chart and the page say so instead of drawing nothing."""
    analysis = sample_analysis()
    analysis.segments = analysis.segments.iloc[0:0]
    analysis.summary["series_connections_left_out"] = 7
    document = render_report(analysis, "Left out")
    bif = next(c for c in chart_figures(document) if c["layout"]["title"]["text"] == BIF_TITLE)
    assert not bif["data"]
    assert bif["layout"]["annotations"][0]["text"] == (
        "The per-packet series was not kept: 7 connection(s) were left out to bound memory.")
    assert "The per-packet series was not kept: 7 connection(s) were left out to bound memory" in document
    # some kept, some left out: drawn, and the page says what is missing
    partial = sample_analysis()
    partial.summary["series_connections_left_out"] = 2
    assert "The per-packet series was not kept for 2 connection(s)" in render_report(partial, "Partial")
    assert "was not kept" not in render_report(sample_analysis(), "All kept")


def test_missing_values_render() -> None:
    document = render_report(with_missing_rows(sample_analysis()), "Missing")
    assert len(chart_figures(document)) == len(CHART_TITLES)
    assert "?:?" in document


def _many_connections(n: int) -> Analysis:
    conns = [{"uid": f"c{i}", "client_ip": "10.0.0.1", "client_port": 20000 + i, "server_ip": "192.0.2.1",
              "server_port": 80, "syn_seen": True, "ts_start": T0 + i, "ts_end": T0 + i + 0.5,
              "handshake_rtt_ms": 1.0, "requests": 1, "close_by": "client", "close_reason": "fin"}
             for i in range(n)]
    txs = [{"uid": f"c{i}", "trans_depth": 1, "method": "GET", "target": "/", "status": 200,
            "ts_request_start": T0 + i + 0.01, "ts_response_end": T0 + i + 0.02, "reused": False,
            "keep_alive": True, "server_ip": "192.0.2.1", "server_port": 80} for i in range(n)]
    base = empty_analysis()
    return Analysis(connections=frame_from_rows(conns, CONNECTION_COLUMNS),
                    transactions=frame_from_rows(txs, TRANSACTION_COLUMNS), anomalies=base.anomalies)


def test_timeline_is_sampled_and_says_so() -> None:
    document = render_report(_many_connections(350), "Many")
    assert "Showing 300 of 350 connections, sampled evenly by start time." in document
    timeline = _chart(document, "Connection timeline")
    assert len(timeline["layout"]["yaxis"]["categoryarray"]) == 300
    assert timeline["layout"]["yaxis"]["categoryarray"][0] == ":20000 → 192.0.2.1:80"
    assert timeline["layout"]["yaxis"]["categoryarray"][-1] == ":20349 → 192.0.2.1:80"


# --- TCP: warm vs cold ----------------------------------------------------------------------------------------

def _chart(document: str, title: str) -> dict[str, Any]:
    return next(c for c in chart_figures(document) if c["layout"]["title"]["text"] == title)


def _values(array: Any) -> list[Any]:
    """A trace array from plotly's JSON (plain list or base64-typed array) as a list."""
    if isinstance(array, dict):
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"])).tolist()
    return list(array)


def test_bytes_in_flight_chart(document: str) -> None:
    bif = _chart(document, BIF_TITLE)
    # picks: a3 (largest), a1 (retransmissions), b1 (cold); one trace each, the first visible
    assert [t["visible"] for t in bif["data"]] == [True, False, False]
    names = [t["name"] for t in bif["data"]]
    assert names == [":50003 → api.example (192.0.2.10:80) · largest",
                     ":50001 → api.example (192.0.2.10:80) · retransmissions",
                     ":50010 → legacy.example (192.0.2.20:80) · cold"]
    a3, a1, b1 = bif["data"]
    assert _values(a3["x"]) == [30.0, 31.0, 45.0, 46.0]  # ms since a3's first packet
    assert _values(a3["y"]) == [1448, 2896, 2896, 5792]
    # a1: the 520 ms pause (> 2 x its 10 ms handshake RTT) breaks the line; the retransmission is a red x
    x = _values(a1["x"])
    assert x[0] == 15.0 and (x[1] is None or math.isnan(x[1]))
    assert [v for v in x[2:]] == [535.0, 535.2, 545.0, 550.0]
    assert a1["marker"]["symbol"] == ["circle", "circle", "circle", "circle", "x", "circle"]
    assert a1["text"][4] == "retransmission"
    assert b1["marker"]["symbol"] == "circle"  # no retransmission: one marker style
    menu = bif["layout"]["updatemenus"][0]
    assert menu["active"] == 0 and [b["label"] for b in menu["buttons"]] == names
    assert [b["args"][0]["visible"] for b in menu["buttons"]] == [[True, False, False], [False, True, False],
                                                                 [False, False, True]]
    assert "3 connection(s) to pick from" in document


def test_bytes_in_flight_chart_is_capped_and_thinned() -> None:
    """Many connections and long series: at most 20 traces, each thinned to the point budget while
    keeping its retransmissions and its highest value."""
    n_conn, per_conn = 30, 3000
    conns = frame_from_rows([{"uid": f"c{i}", "client_port": 1000 + i, "server_ip": "192.0.2.1", "server_port": 80,
                              "ts_start": T0, "server_bytes": 10_000 - i, "handshake_rtt_ms": 1.0}
                             for i in range(n_conn)], CONNECTION_COLUMNS)
    segs = pd.DataFrame({
        "uid": pd.array(np.repeat([f"c{i}" for i in range(n_conn)], per_conn), dtype="string"),
        "from_server": pd.array(np.ones(n_conn * per_conn, dtype=bool), dtype="boolean"),
        "ts": T0 + np.tile(np.arange(per_conn) * 1e-4, n_conn),
        "seq_end": pd.array(np.zeros(n_conn * per_conn, dtype=int), dtype="Int64"),
        "payload_bytes": pd.array(np.full(n_conn * per_conn, 1448), dtype="Int64"),
        "bytes_in_flight": pd.array(np.tile(np.arange(per_conn) % 97 * 10, n_conn), dtype="Int64"),
        "retransmission": pd.array(np.tile(np.arange(per_conn) == 1234, n_conn), dtype="boolean"),
        "round": pd.array(np.ones(n_conn * per_conn, dtype=int), dtype="Int64"),
    })
    segs.loc[2500, "bytes_in_flight"] = 99_999  # c0's peak
    empty = empty_frame(TRANSACTION_COLUMNS)
    picks = series_connections(conns, empty, segs)
    assert picks["uid"].tolist() == [f"c{i}" for i in range(20)]  # most server bytes first
    fig = figures.bytes_in_flight_figure(segs, picks, conns, max_points=500)
    assert len(fig.data) == 20
    for trace in fig.data:
        assert len(trace.x) <= 500 and "(" in trace.name and f"of {per_conn:,} segments" in trace.name
    c0 = fig.data[0]
    assert c0.name.startswith(":1000 → 192.0.2.1:80 · largest (")
    assert 99_999 in list(c0.y) and "x" in list(c0.marker.symbol)


def _large_analysis(n_conn: int = 20_000, per_conn: int = 5, n_segments: int = 300_000) -> Analysis:
    """A synthetic capture of n_conn x per_conn transactions (1 to 9 flights each), 400 hosts, and a
    per-packet series of n_segments rows."""
    rng = np.random.default_rng(7)
    n_tx = n_conn * per_conn
    uids = np.array([f"C{i:07d}" for i in range(n_conn)], dtype=object)
    servers = np.array([f"192.0.2.{i % 200}" for i in range(n_conn)], dtype=object)
    start = T0 + np.arange(n_conn) * 0.01

    def ints(values: Any) -> Any:
        return pd.array(values, dtype="Int64")

    conns = pd.DataFrame({name: pd.Series([None] * n_conn, dtype=dtype)
                          for name, dtype in CONNECTION_COLUMNS.items()})
    conns = conns.assign(
        uid=pd.array(uids, dtype="string"), client_ip="10.0.0.1", client_port=ints(np.arange(n_conn) % 60000),
        server_ip=pd.array(servers, dtype="string"), server_port=ints(np.full(n_conn, 80)), transport="tcp",
        protocol="http/1.1", ts_start=start, ts_end=start + 5, syn_seen=pd.array(np.ones(n_conn, bool)),
        handshake_rtt_ms=rng.uniform(5, 50, n_conn), requests=ints(np.full(n_conn, per_conn)), close_by="client",
        rtt_min_ms=rng.uniform(1, 5, n_conn), rtt_median_ms=rng.uniform(5, 10, n_conn),
        capture_point=pd.array(rng.choice(["client", "server"], n_conn), dtype="string"),
        **{name: ints(rng.integers(0, 5, n_conn)) for name in (
            "retransmissions", "fast_retransmissions", "spurious_retransmissions", "out_of_order", "dup_acks",
            "zero_window", "window_full", "keep_alives", "client_packets", "server_packets", "rtt_samples",
            "server_bytes")})
    depth = np.tile(np.arange(1, per_conn + 1), n_conn)
    rounds = rng.integers(1, 10, n_tx)
    warmth = np.where(depth == 1, "cold", rng.choice(["warm", "cooled"], n_tx))
    tx = pd.DataFrame({name: pd.Series([None] * n_tx, dtype=dtype) for name, dtype in TRANSACTION_COLUMNS.items()})
    tx = tx.assign(
        uid=pd.array(np.repeat(uids, per_conn), dtype="string"), trans_depth=ints(depth), method="GET",
        host=pd.array([f"h{i % 400}.example" for i in range(n_tx)], dtype="string"), target="/",
        status=ints(np.full(n_tx, 200)), server_ip=pd.array(np.repeat(servers, per_conn), dtype="string"),
        server_port=ints(np.full(n_tx, 80)), ts_request_start=np.repeat(start, per_conn) + depth * 0.5,
        response_body_bytes=ints(rng.integers(100, 2_000_000, n_tx)), warmth=pd.array(warmth, dtype="string"),
        rounds=ints(rounds), ttfb_ms=rng.uniform(1, 100, n_tx), transfer_ms=rng.uniform(0, 500, n_tx),
        reused=pd.array(depth > 1), keep_alive=pd.array(np.ones(n_tx, bool)))
    tx["ts_response_end"] = tx["ts_request_start"] + 0.1
    n_fl = int(rounds.sum())
    flights = pd.DataFrame({
        "uid": pd.array(np.repeat(tx["uid"].to_numpy(dtype=object), rounds), dtype="string"),
        "trans_depth": ints(np.repeat(depth, rounds)), "warmth": pd.array(np.repeat(warmth, rounds), dtype="string"),
        "round": ints(np.concatenate([np.arange(1, r + 1) for r in rounds])), "ts_start": np.zeros(n_fl),
        "ts_end": np.zeros(n_fl), "bytes": ints(rng.integers(1000, 100_000, n_fl)), "packets": ints(np.ones(n_fl, int)),
        "peak_bytes_in_flight": ints(np.ones(n_fl, int))})
    owner = np.sort(rng.integers(0, n_conn, n_segments))
    segments = pd.DataFrame({
        "uid": pd.array(uids[owner], dtype="string"), "from_server": pd.array(rng.random(n_segments) < 0.8),
        "ts": start[owner] + rng.random(n_segments) * 5, "seq_end": ints(np.zeros(n_segments, int)),
        "payload_bytes": ints(np.full(n_segments, 1448)), "bytes_in_flight": ints(rng.integers(0, 100_000, n_segments)),
        "retransmission": pd.array(rng.random(n_segments) < 0.01), "round": ints(np.ones(n_segments, int))})
    return Analysis(conns, tx, empty_frame(ANOMALY_COLUMNS), {"series_connections_left_out": 0},
                    flights=flights, segments=segments)


def test_report_stays_fast_for_100k_transactions() -> None:
    import time

    analysis = _large_analysis()
    began = time.perf_counter()
    document = render_report(analysis, "large")
    elapsed = time.perf_counter() - began
    assert elapsed < 60, elapsed  # about 4 s on the 2-core machine of the README
    bif = _chart(document, BIF_TITLE)
    assert len(bif["data"]) == 20
    assert all(len(_values(t["x"])) <= figures.SERIES_MAX_POINTS + 100 for t in bif["data"])
    section = document[document.index('<section id="tcp">'): document.index('<section id="tcp-health">')]
    assert section.count("<tr>") == 1 + 96 + 1 + 300  # rounds table (4 x 3 x 8), transfer table (capped)
    assert "The first 300 of 4,159 rows" in section  # 400 hosts x 4 buckets x (cold, warm, cooled)
    health = document[document.index('<section id="tcp-health">'): document.index('<section id="anomalies">')]
    assert "The 200 hosts with the most retransmissions of 400." in health
    assert health.count("<tr") == 1 + 200 + 1  # header, capped hosts, the total
    assert len(document) < 12_000_000


def test_thin_series_keeps_forced_points_and_the_envelope() -> None:
    values = np.array([5.0, 1.0, 9.0, 2.0, 3.0, 8.0, 0.0, 4.0])
    assert figures.thin_series(values, np.zeros(8, dtype=bool), max_points=8).tolist() == list(range(8))
    forced = np.zeros(8, dtype=bool)
    forced[3] = True
    # budget 5: 1 forced + 2 slices of 4 points, each keeping its highest and lowest
    assert figures.thin_series(values, forced, max_points=5).tolist() == [1, 2, 3, 5, 6]


def test_flight_rounds_chart(document: str) -> None:
    chart = _chart(document, ROUNDS_TITLE)
    subplot_titles = [a["text"] for a in chart["layout"]["annotations"]]
    assert subplot_titles == ["< 16 KiB · 4 response(s)", "16–128 KiB · 3 response(s)",
                              "128 KiB–1 MiB · 1 response(s)"]
    lines = [(t["name"], t["xaxis"], _values(t["x"]), _values(t["y"])) for t in chart["data"]]
    assert lines[0] == ("cold", "x", [1], [1200.0])
    assert ("warm", "x2", [1, 2], [14000.0, 27000.0]) in lines
    assert ("cooled", "x2", [1, 2, 3, 4], [4000.0, 8000.0, 16000.0, 13000.0]) in lines
    assert [t["showlegend"] for t in chart["data"]] == [True, True, False, False, True, False]
    assert chart["layout"]["yaxis"]["type"] == "log"


def test_warmth_transfer_table(document: str) -> None:
    section = document[document.index('<section id="tcp">'): document.index('<section id="tcp-health">')]
    table = section[section.index("<h3>Transfer times"):]
    assert '<table class="sortable">' in table and 'aria-sort="none"><button type="button" class="sort">' in table
    rows = re.findall(r"<tr>(.*?)</tr>", table[table.index("<tbody>"):], flags=re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]
    assert cells[1] == ["api.example (192.0.2.10:80)", "&lt; 16 KiB", "warm", "2", "8.50 ms", "0 ms", "1"]
    assert cells[-1] == ["legacy.example (192.0.2.20:80)", "&lt; 16 KiB", "cold", "2", "42.0 ms", "0.450 ms",
                         "1"]
    assert '<td class="num" data-sort="8.5">8.50 ms</td>' in rows[1]
    assert '<td class="text" data-sort="2">warm</td>' in rows[2] or 'data-sort="1">warm</td>' in rows[1]


def test_tcp_health_table(document: str) -> None:
    section = document[document.index('<section id="tcp-health">'): document.index('<section id="anomalies">')]
    assert '<table class="sortable">' in section
    body = section[section.index("<tbody>"): section.index("</tbody>")]
    first = re.findall(r"<td[^>]*>(.*?)</td>", re.findall(r"<tr>(.*?)</tr>", body)[0])
    assert first == ["api.example (192.0.2.10:80)", "5", "2", "102", "5", "1", "1", "3", "1", "6", "1", "1",
                     "9.50 ms", "12.4 ms", "20", "11.5 ms", "client 4, unknown 1"]
    foot = section[section.index("<tfoot>"): section.index("</tfoot>")]
    total = re.findall(r"<td[^>]*>(.*?)</td>", foot)
    assert total[:4] == ["all connections", "10", "2", "132"] and total[-1] == (
        "client 4, unknown 3, middle 2, server 1")
    assert "— " not in total and "secure.example (198.51.100.5:443)" in body


# --- figures ------------------------------------------------------------------------------------------------

def test_figure_functions_return_figures_also_when_empty() -> None:
    for analysis in (sample_analysis(), empty_analysis()):
        c, t = analysis.connections, analysis.transactions
        built = [
            figures.requests_histogram_figure(requests_per_connection_histogram(c, t)),
            figures.timeline_figure(c, t),
            figures.idle_gap_figure(t, idle_after_last(c, t), infer_idle_timeouts(c, t)),
            figures.handshake_figure(host_table(c, t)),
            figures.bytes_in_flight_figure(analysis.segments, series_connections(c, t, analysis.segments), c),
            figures.flight_rounds_figure(flight_rounds(t, analysis.flights)),
        ]
        assert all(isinstance(fig, go.Figure) for fig in built)
        if analysis.connections.empty:
            assert all(not fig.data and fig.layout.annotations for fig in built)


def test_histogram_axis_turns_categorical_for_large_counts() -> None:
    histogram = pd.DataFrame({"requests": [1, 1000], "connections": [3, 1], "share": [0.75, 0.25]})
    fig = figures.requests_histogram_figure(histogram)
    assert fig.layout.xaxis.type == "category" and list(fig.data[0].x) == ["1", "1000"]
    small = figures.requests_histogram_figure(histogram.assign(requests=[1, 3]))
    assert small.layout.xaxis.type != "category" and small.layout.xaxis.dtick == 1


def test_idle_chart_uses_a_log_axis_for_wide_ranges() -> None:
    gaps = (0.0, 0.5, 3.0, 800.0)
    transactions = frame_from_rows([{"idle_before_ms": v} for v in gaps], TRANSACTION_COLUMNS)
    empty = empty_analysis()
    fig = figures.idle_gap_figure(transactions, idle_after_last(empty.connections, empty.transactions),
                                  infer_idle_timeouts(empty.connections, empty.transactions))
    assert fig.layout.xaxis.type == "log"
    assert "1 gap(s) of 0 ms not drawn" in fig.layout.xaxis.title.text


def test_safe_shortens_and_escapes() -> None:
    assert figures.safe("<b>" + "x" * 200, limit=10) == "&lt;b&gt;xxxxxx…"  # 10 characters before escaping
    assert figures.safe(pd.NA) == "—"


# --- terminal -----------------------------------------------------------------------------------------------

def test_print_summary() -> None:
    console = Console(record=True, width=220, color_system=None)
    analysis = sample_analysis()
    analysis.transactions.loc[analysis.transactions["uid"] == "a1", "host"] = "[bold red]api[/bold red]"
    print_summary(analysis, console)
    text = console.export_text()
    for expected in ("36.4 %", "294.5 ms", "43.5 ms", "non_ip", "midstream_start", "2.002 s",
                     "[bold red]api[/bold red] (192.0.2.10:80)", "legacy.example (192.0.2.20:80)"):
        assert expected in text, expected


def test_print_summary_warm_vs_cold() -> None:
    console = Console(record=True, width=220, color_system=None)
    print_summary(sample_analysis(), console)
    text = console.export_text()
    assert "Warm vs cold responses" in text and "1 of unknown warmth" in text
    rows = {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("│ ").split("│")] for line in text.splitlines() if "│" in line)}
    assert rows["cold"] == ["6", "28.0 ms", "0.500 ms", "1"]
    assert rows["warm"] == ["3", "9.00 ms", "0 ms", "1"]
    assert rows["cooled"] == ["1", "11.0 ms", "35.0 ms", "4"]


@pytest.mark.parametrize("name", ["keepalive-idle-timeout.pcap", "close-race.pcap", "h2-tls.pcap"])
def test_print_summary_shows_the_figures_analyze_computed(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``analyzer summary`` prints the figures ``analyze`` put in the summary (those ``analyzer export``
    writes) without computing them again, and prints what computing them again would."""
    import analyzer
    from analyzer import metrics

    analysis = analyzer.analyze(str(Path(__file__).resolve().parents[1] / "captures" / name))
    assert set(metrics.metric_key_names()) <= set(analysis.summary)
    recomputed = Console(record=True, width=220, color_system=None)
    print_summary(Analysis(analysis.connections, analysis.transactions, analysis.anomalies,
                           {k: v for k, v in analysis.summary.items() if k != "reuse_ratio"}), recomputed)

    def not_again(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("figures computed again")

    monkeypatch.setattr(metrics, "_summary_and_shared", not_again)
    taken = Console(record=True, width=220, color_system=None)
    print_summary(analysis, taken)
    text = taken.export_text()
    assert text == recomputed.export_text() and "Reuse ratio" in text


def test_print_summary_empty() -> None:
    console = Console(record=True, width=160, color_system=None)
    print_summary(empty_analysis(), console)
    assert "Reuse ratio" in console.export_text()
    assert "Warm vs cold" not in console.export_text()  # nothing known: no table


# --- in a real browser --------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_in_headless_chromium(tmp_path: Path) -> None:
    """Offline, every chart draws, and the hostile strings never run (they would set the title)."""
    target = tmp_path / "report.html"
    write_report(hostile_analysis(), target, title="hostile")
    result = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--virtual-time-budget=10000", "--dump-dom", target.as_uri()],
        capture_output=True, text=True, timeout=180, check=False)
    dom = result.stdout
    assert "<title>hostile</title>" in dom and "pwned" not in dom.split("</title>")[0]
    assert dom.count('class="main-svg"') >= len(CHART_TITLES)
    assert not re.search(r'could not be drawn: [^"]', dom)  # the loader's error text, filled in


# The harness injected into a copy of the report for the interactive browser tests: it records console
# errors and warnings, uncaught errors and rejected promises from the very start, then (after the charts
# are drawn) opens the bytes-in-flight dropdown, picks its second entry, sorts the warm/cold table by
# median TTFB twice, and writes what it saw as JSON into <pre id="harness">.
_HARNESS_HEAD = """<script>
window.__harness = {errors: [], warnings: []};
(function () {
  var H = window.__harness, error = console.error, warn = console.warn;
  console.error = function () {
    H.errors.push(Array.prototype.join.call(arguments, " "));
    error.apply(console, arguments);
  };
  console.warn = function () {
    H.warnings.push(Array.prototype.join.call(arguments, " "));
    warn.apply(console, arguments);
  };
  window.addEventListener("error", function (e) { H.errors.push("uncaught: " + e.message); });
  window.addEventListener("unhandledrejection", function (e) { H.errors.push("rejected: " + e.reason); });
})();
</script>"""

_HARNESS_TAIL = """<script>
(function () {
  var H = window.__harness;
  function finish() {
    var pre = document.createElement("pre");
    pre.id = "harness";
    pre.textContent = JSON.stringify(H);
    document.body.appendChild(pre);
  }
  function click(node) { node.dispatchEvent(new MouseEvent("click", {bubbles: true, cancelable: true})); }
  function state(gd) {
    return {visible: gd.data.map(function (t) { return t.visible; }),
            traces: gd.querySelectorAll(".scatterlayer .trace").length,
            points: gd.querySelectorAll(".scatterlayer .trace .points path").length,
            header: (gd.querySelector(".updatemenu-header-group text") || {}).textContent || null};
  }
  function column(table, index) {
    return Array.prototype.map.call(table.tBodies[0].rows, function (row) { return row.cells[index].textContent; });
  }
  function step(delay, work) {
    return new Promise(function (resolve) { setTimeout(function () { work(); resolve(); }, delay); });
  }
  var gd = document.querySelector('figure[aria-label="Bytes in flight over time"] .chart');
  H.svgs = document.querySelectorAll(".main-svg").length;
  H.annotations = Array.prototype.map.call(document.querySelectorAll(".annotation-text"),
                                           function (n) { return n.textContent; });
  step(1000, function () {
    H.before = state(gd);
    var header = gd.querySelector(".updatemenu-header");
    H.has_menu = !!header;
    if (header) { click(header); }
  }).then(function () {
    return step(500, function () {
      var buttons = gd.querySelectorAll(".updatemenu-dropdown-button");
      H.buttons = Array.prototype.map.call(buttons, function (b) { return b.textContent; });
      if (buttons.length > 1) { click(buttons[1]); }
    });
  }).then(function () {
    return step(800, function () {
      H.after = state(gd);
      var table = document.querySelector("#tcp table.sortable");
      if (table) {
        var button = table.tHead.rows[0].cells[4].querySelector("button");
        button.click();
        H.ascending = column(table, 4);
        H.aria = table.tHead.rows[0].cells[4].getAttribute("aria-sort");
        button.click();
        H.descending = column(table, 4);
      }
    });
  }).catch(function (e) { H.errors.push("harness: " + e); }).then(finish);
})();
</script>"""


def _run_in_chromium(tmp_path: Path, analysis: Analysis) -> dict[str, Any]:
    """Render ``analysis``, add the harness, load it offline in headless chromium, return what the harness
    recorded."""
    import html as html_module

    document = render_report(analysis, "interactive")
    document = document.replace("<head>", "<head>" + _HARNESS_HEAD, 1)
    document = document[: document.rindex("</body>")] + _HARNESS_TAIL + "</body></html>"
    target = tmp_path / "interactive.html"
    target.write_text(document, encoding="utf-8")
    result = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--virtual-time-budget=20000", "--dump-dom", target.as_uri()],
        capture_output=True, text=True, timeout=180, check=False)
    found = re.search(r'<pre id="harness">(.*?)</pre>', result.stdout, flags=re.S)
    assert found, result.stdout[-2000:] + result.stderr[-2000:]
    recorded: dict[str, Any] = json.loads(html_module.unescape(found.group(1)))
    return recorded


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_bytes_in_flight_dropdown_switches_traces_in_chromium(tmp_path: Path) -> None:
    seen = _run_in_chromium(tmp_path, hostile_analysis())
    assert seen["errors"] == [], seen
    assert seen["svgs"] >= len(CHART_TITLES)
    # a3 is shown first (4 segments), the menu offers a3, a1, b1; picking the second shows a1 (5 segments,
    # the retransmission included) and only it
    assert seen["before"] == {"visible": [True, False, False], "traces": 1, "points": 4,
                              "header": ":50003 → api.example (192.0.2.10:80) · largest"}
    assert seen["has_menu"] and len(seen["buttons"]) == 3
    assert seen["buttons"][2].startswith(":50010 → legacy<img src=x")  # the hostile host, as text
    assert seen["after"] == {"visible": [False, True, False], "traces": 1, "points": 5,
                             "header": ":50001 → api.example (192.0.2.10:80) · retransmissions"}
    # the warm/cold table sorts numerically by median TTFB, then reverses
    assert seen["aria"] == "ascending"
    assert seen["ascending"] == ["8.50 ms", "10.0 ms", "11.0 ms", "12.0 ms", "14.0 ms", "16.0 ms", "42.0 ms"]
    assert seen["descending"] == seen["ascending"][::-1]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_empty_tcp_data_shows_messages_in_chromium(tmp_path: Path) -> None:
    analysis = sample_analysis()
    analysis.flights = analysis.flights.iloc[0:0]
    analysis.segments = analysis.segments.iloc[0:0]
    analysis.summary["series_connections_left_out"] = 4
    seen = _run_in_chromium(tmp_path, analysis)
    assert seen["errors"] == [], seen
    assert seen["svgs"] >= len(CHART_TITLES) and not seen["has_menu"]
    assert "The per-packet series was not kept: 4 connection(s) were left out to bound memory." in seen[
        "annotations"]
    assert "No response of known warmth and size has flights." in seen["annotations"]
    assert seen["before"]["traces"] == 0


# --- protocols and TLS ----------------------------------------------------------------------------------------

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def _section(document: str, anchor: str) -> str:
    start = document.index(f'<section id="{anchor}">')
    return document[start: document.index("</section>", start)]


def test_protocols_section_of_real_tls_and_h2c_captures() -> None:
    """A resumed TLS 1.3 connection (no keys) and an h2c connection after Upgrade, analyzed together."""
    paths = [CORPUS / "zeek/tls/tls13_psk_succesfull.pcap", CORPUS / "scapy/http2_h2c.pcap"]
    if not all(p.exists() for p in paths):
        pytest.skip("corpus captures missing")
    import analyzer

    analysis = analyzer.analyze(*map(str, paths))
    section = _section(render_report(analysis, "protocols"), "protocols")
    rows = re.findall(r"<tr>(.*?)</tr>", section, flags=re.S)
    cells = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r, flags=re.S) for r in rows]
    assert ["h2c", "1", "2", "0"] in cells  # protocol, connections, transactions, estimated
    assert ["tls", "1", "2", "2"] in cells
    assert any(c[:4] == ["174.138.9.219:443", "1", "1", "100.0 %"] and c[4] == "TLS 1.3 ×1" for c in cells)
    assert "1 TLS connections, 1 resumed" in section and "0 decrypted with a key log" in section
    assert "2 transactions of encrypted connections are estimated" in section
    out = Console(record=True, width=120)
    print_summary(analysis, out)
    text = out.export_text()
    assert "Protocols" in text and "TLS: 1 connections, 1 resumed" in text


def test_hostile_sni_is_inert_text() -> None:
    analysis = sample_analysis()
    analysis.connections["tls"] = pd.array([True] * len(analysis.connections), dtype="boolean")
    analysis.connections["sni"] = pd.array([EVIL] * len(analysis.connections), dtype="string")
    analysis.connections["tls_version"] = pd.array(["TLS 1.3"] * len(analysis.connections), dtype="string")
    section = _section(render_report(analysis, "x"), "protocols")
    assert EVIL not in section and "&lt;script&gt;" in section


# --- what the report reads --------------------------------------------------------------------------------------

SAMPLES = Path(__file__).resolve().parents[1] / "captures"


@pytest.mark.parametrize("names", [("keepalive-idle-timeout.pcap", "close-race.pcap", "pipelining.pcap"),
                                   ("tls.pcap", "h2c.pcap", "midstream.pcap", "http10-and-close.pcap"),
                                   ("shaped-bulk.pcap.gz", "ipv6-pcapng.pcapng")])
def test_the_report_reads_only_what_it_says(names: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    """The report reads its tables a step at a time (``report_reader``), each step only the columns it is
    listed with (``metrics.SUMMARY_GROUPS``, ``KEPT_COLUMNS``, ``TABLE_COLUMNS``, ``SECTION_COLUMNS``), has
    ``compute_all`` leave out the ``UNDRAWN_METRICS`` and lets each metric table go once drawn
    (``MetricTables.without``): the report of real captures is the same as one made from every column of
    every table at each step, with every metric table kept throughout. (So it is on the 130 sample and
    corpus captures that can be read: checked by hand when this was written.)"""
    import analyzer
    from analyzer import metrics
    from analyzer.report import html as page
    from analyzer.report.redact import redact_analysis

    analysis = analyzer.analyze(*(str(SAMPLES / name) for name in names))
    asked: list[Mapping[str, Sequence[str]]] = []
    seen: list[dict[str, list[str]]] = []
    lean_reader = page.report_reader

    def counting(source: Analysis, redact: bool = True) -> metrics.Read:
        read = lean_reader(source, redact)

        def counted(columns: Mapping[str, Sequence[str]]) -> Analysis:
            asked.append(columns)
            given = read(columns)
            seen.append({name: list(given.table(name).columns) for name in TABLES})
            return given

        return counted

    monkeypatch.setattr(page, "report_reader", counting)
    made = render_report(analysis, "same")
    steps = [*(metrics.group_columns(group, keep=True) for group in metrics.SUMMARY_GROUPS),
             *metrics.TABLE_COLUMNS.values(), *page.SECTION_COLUMNS.values()]
    assert [{k: tuple(v) for k, v in a.items()} for a in asked] == [{k: tuple(v) for k, v in s.items()}
                                                                      for s in steps]
    for columns, given in zip(asked, seen, strict=True):  # each step saw its columns, no others
        assert given == {name: [c for c in TABLES[name] if c in columns.get(name, ())] for name in TABLES}
    monkeypatch.setattr(page, "report_reader", lambda source, redact=True: lambda _columns: redact_analysis(source))
    keep_all = page.compute_all_read
    monkeypatch.setattr(page, "compute_all_read", lambda read, **_cuts: keep_all(read))
    monkeypatch.setattr(page.MetricTables, "without", lambda self, *_names: self)
    assert render_report(analysis, "same") == made


@pytest.mark.parametrize("own_clients", [False, True])
def test_the_report_draws_the_same_from_the_cut_tables(own_clients: bool, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The report's cuts (``DRAWN_METRICS``: the first avoidable connections and pools, the drawn pools'
    steps, the idle-after timeout samples) change nothing it draws, where they cut: 300 tiny connections
    (299 avoidable) from one client, or each from its own (300 pools), against the report made from the
    whole tables."""
    import analyzer
    from analyzer import metrics
    from analyzer.report import html as page
    from tests.hostile.generate import tiny_connections

    path = tmp_path / "tiny.pcap"
    tiny_connections(path, 300, own_clients=own_clients)
    analysis = analyzer.analyze(str(path))
    cut = metrics.compute_all(analysis, drawn=page.DRAWN_METRICS)
    name = "pools" if own_clients else "avoidable"
    assert len(getattr(cut, name)) < cut.rows[name] == len(getattr(metrics.compute_all(analysis), name))
    made = render_report(analysis, "cut")
    keep_all = page.compute_all_read
    monkeypatch.setattr(page, "compute_all_read", lambda read, **_cuts: keep_all(read))
    assert render_report(analysis, "cut") == made


def test_a_section_that_reads_a_column_it_does_not_list_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A section sees only its ``SECTION_COLUMNS`` (and a metric only its ``TABLE_COLUMNS``): one that reads
    another column raises ``KeyError`` in every test (here on tables held in memory; read back from a spill,
    ``SpilledTable.frame`` gives the columns asked for only, ``tests/test_spill.py``)."""
    from analyzer import metrics
    from analyzer.report import html as page

    analysis = sample_analysis()
    render_report(analysis, "fine")
    timeline = {name: tuple(c for c in columns if c != "ts_start")
                for name, columns in page.SECTION_COLUMNS["timeline"].items()}
    monkeypatch.setitem(page.SECTION_COLUMNS, "timeline", timeline)
    with pytest.raises(KeyError, match="ts_start"):
        render_report(analysis, "not listed")
    monkeypatch.undo()
    rounds = {**metrics.TABLE_COLUMNS["rounds"], "flights": ("uid", "trans_depth", "warmth", "round")}
    monkeypatch.setitem(metrics.TABLE_COLUMNS, "rounds", rounds)
    with pytest.raises(KeyError, match="bytes"):
        render_report(analysis, "not listed")
