"""``analyzer compare BEFORE AFTER -o diff.html`` on two committed captures."""

from __future__ import annotations

from pathlib import Path

from test_report import parse
from typer.testing import CliRunner

import analyzer
from analyzer.cli import app
from analyzer.report.compare import render_compare

CAPTURES = Path(__file__).resolve().parents[1] / "captures"


def test_compare_cli_writes_deltas(tmp_path: Path) -> None:
    out = tmp_path / "diff.html"
    result = CliRunner().invoke(app, ["compare", str(CAPTURES / "keepalive-idle-timeout.pcap"),
                                      str(CAPTURES / "close-race.pcap"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 → 11 connections" in result.output
    document = out.read_text(encoding="utf-8")
    page = parse(document)
    assert sum(1 for attrs, _ in page.scripts if attrs.get("type") == "application/json") == 1
    assert "keepalive-idle-timeout.pcap" in document and "close-race.pcap" in document
    # connections 4 → 11 (+7, worse), close races 0 → 5 (worse).
    assert '<span class="bad">+7 (+175 %)</span>' in document
    assert '<span class="bad">+5</span>' in document
    # the biggest reason for new connections: idle_connection_unused (tied with the other two, listed
    # first) → close_race_retry
    assert ('biggest reason for new connections</td><td class="text">idle_connection_unused</td>'
            '<td class="text">close_race_retry</td><td class="text">changed</td>') in document


def test_compare_same_capture_has_no_change() -> None:
    a = analyzer.analyze(str(CAPTURES / "http10-and-close.pcap"))
    document = render_compare(a, a, "x", "x")
    assert 'class="bad"' not in document.split('id="key"')[1].split("</section>")[0]
    assert "no change" in document
