"""Tests of analyzer.report: the self-contained HTML report, its charts, its escaping, the terminal summary.

The analyses come from tests/test_metrics.py (``sample_analysis``: figures computed by hand there).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.offline
import pytest
from rich.console import Console
from test_metrics import T0, empty_analysis, sample_analysis, with_missing_rows

from analyzer.analysis import Analysis
from analyzer.metrics import glossary as metric_glossary
from analyzer.metrics import (
    host_table,
    idle_after_last,
    infer_idle_timeouts,
    requests_per_connection_histogram,
)
from analyzer.report import figures, print_summary, render_report, write_report
from analyzer.report.html import script_json
from analyzer.tables import CONNECTION_COLUMNS, TRANSACTION_COLUMNS, frame_from_rows

EVIL = "<script>alert(1)</script>"
EVIL_IMG = '<img src=x onerror="document.title=\'pwned\'">'
CHART_TITLES = ("Requests per connection", "Connection timeline", "Idle gaps", "Handshake overhead per host")


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
    assert containers == targets == {"chart-1", "chart-2", "chart-3", "chart-4"}


def test_sections_present(document: str) -> None:
    for anchor in ("headline", "reuse", "timeline", "idle", "handshake", "hosts", "anomalies", "quality",
                   "glossary"):
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
    timeline = chart_figures(document)[1]
    marks = next(trace for trace in timeline["data"] if trace.get("name") == "request start")
    assert any("GET /three" in text and "status 200" in text for text in marks["hovertext"])
    assert len(marks["hovertext"]) == 11


def test_idle_chart_draws_the_inferred_timeout(document: str) -> None:
    idle = chart_figures(document)[2]
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
    timeline = chart_figures(document)[1]
    assert len(timeline["layout"]["yaxis"]["categoryarray"]) == 300
    assert timeline["layout"]["yaxis"]["categoryarray"][0] == ":20000 → 192.0.2.1:80"
    assert timeline["layout"]["yaxis"]["categoryarray"][-1] == ":20349 → 192.0.2.1:80"


# --- figures ------------------------------------------------------------------------------------------------

def test_figure_functions_return_figures_also_when_empty() -> None:
    for analysis in (sample_analysis(), empty_analysis()):
        c, t = analysis.connections, analysis.transactions
        built = [
            figures.requests_histogram_figure(requests_per_connection_histogram(c, t)),
            figures.timeline_figure(c, t),
            figures.idle_gap_figure(t, idle_after_last(c, t), infer_idle_timeouts(c, t)),
            figures.handshake_figure(host_table(c, t)),
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


def test_print_summary_empty() -> None:
    console = Console(record=True, width=160, color_system=None)
    print_summary(empty_analysis(), console)
    assert "Reuse ratio" in console.export_text()


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
