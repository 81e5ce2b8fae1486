"""Security and privacy of the report, the terminal summary and the exports, on a hostile capture.

The capture (``hostile_capture.write_hostile_capture``) is crafted in the test's tmp_path: ``<script>``
and ``<img onerror>`` in the URI, Host, User-Agent and TLS SNI, a plotly hover template, control
characters, invalid UTF-8, an overlong URI, cookies, an Authorization header, a token in a query string,
a password in a URL and a cookie quoted in an anomaly detail.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import plotly.offline
import pytest
from hostile_capture import PWN, SECRETS, write_hostile_capture
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from test_report import parse
from typer.testing import CliRunner

import analyzer
from analyzer.cli import app
from analyzer.report import print_summary, render_report
from analyzer.report.redact import REDACTED, printable, redact_headers, redact_text

# The secrets the tables hold (the Cookie and Authorization headers themselves are not recorded).
TABLE_SECRETS = ("TOKENSECRET42", "URLPASSWORD42", "ANOMA")
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_hostile_capture(tmp_path_factory.mktemp("hostile") / "hostile.pcap")


@pytest.fixture(scope="module")
def analysis(hostile: Path) -> analyzer.Analysis:
    result = analyzer.analyze(str(hostile))
    assert len(result.transactions) == 3 and PWN in result.transactions["target"].iloc[0]
    assert result.connections["sni"].dropna().tolist() == [PWN]
    assert "ANOMALYCOOKIE42"[:5] in str(result.anomalies["detail"].iloc[0])
    return result


def _check_inert(document: str) -> None:
    page = parse(document)
    # Every script is ours: the class switch, plotly.js, the loader, or inert JSON chart data.
    for attrs, body in page.scripts:
        if attrs.get("type") == "application/json":
            assert "<" not in body and ">" not in body  # \u003c escapes only
            continue
        assert "__pwned" not in body, body[:200]
    assert not any(tag == "img" for tag, _ in page.tags)
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            if name in ("src", "href"):
                assert value is not None and not value.lower().startswith(("javascript:", "http:", "https:", "//"))
    assert not CONTROL.search(document.replace(plotly.offline.get_plotlyjs(), ""))  # plotly.js has two
    document.encode("utf-8")  # no lone surrogates
    assert "A" * 1000 not in document  # the overlong target is cut


def test_report_is_inert_and_redacted(analysis: analyzer.Analysis) -> None:
    document = render_report(analysis, "hostile " + PWN)
    _check_inert(document)
    for secret in TABLE_SECRETS:
        assert secret not in document
    assert REDACTED in document
    assert "&lt;script&gt;window.__pwned" in document  # shown as text
    assert r"window.__pwned=3\\x1" in document  # control characters made visible (JSON-escaped backslash)


def test_no_redact_keeps_values_but_stays_inert(analysis: analyzer.Analysis) -> None:
    document = render_report(analysis, "hostile", redact=False)
    _check_inert(document)
    assert "TOKENSECRET42" in document and "URLPASSWORD42" in document


def test_cli_report_and_exports_redact_by_default(hostile: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "r.html"
    assert runner.invoke(app, ["report", str(hostile), "-o", str(out), "-q"]).exit_code == 0
    _check_inert(out.read_text(encoding="utf-8"))
    for fmt, target in (("json", tmp_path / "x.json"), ("har", tmp_path / "x.har"), ("csv", tmp_path / "csv")):
        result = runner.invoke(app, ["export", str(hostile), "--format", fmt, "-o", str(target)])
        assert result.exit_code == 0, result.output
        files = sorted(target.glob("*")) if target.is_dir() else [target]
        text = "".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
        for secret in TABLE_SECRETS:
            assert secret not in text, (fmt, secret)
        assert REDACTED in text
    assert runner.invoke(app, ["export", str(hostile), "--format", "json", "-o", str(tmp_path / "raw.json"),
                               "--no-redact"]).exit_code == 0
    raw = json.loads((tmp_path / "raw.json").read_text())
    assert any("TOKENSECRET42" in (t["target"] or "") for t in raw["transactions"])
    assert runner.invoke(app, ["report", str(hostile), "-o", str(tmp_path / "raw.html"), "-q",
                               "--no-redact"]).exit_code == 0
    assert "URLPASSWORD42" in (tmp_path / "raw.html").read_text(encoding="utf-8")


def test_terminal_summary_prints_no_control_characters(analysis: analyzer.Analysis) -> None:
    console = Console(record=True, width=200, force_terminal=False, color_system=None)
    print_summary(analysis, console)
    text = console.export_text()
    assert "\x1b" not in text and "\x07" not in text and "\x00" not in text


def test_redact_text_and_headers() -> None:
    assert redact_text("Cookie: a=b; c=d\r\nHost: x") == f"Cookie: {REDACTED}\r\nHost: x"
    assert redact_text("authorization:Basic Zm9v") == f"authorization:{REDACTED}"
    assert redact_text("GET http://u:p@h/x?token=1&y=2&key=") == f"GET http://{REDACTED}@h/x?token={REDACTED}&y=2&key="
    assert redact_text("/a?monkey=1") == "/a?monkey=1"  # only whole parameter names
    assert redact_headers([("Set-Cookie", "s=1"), ("Location", "/x?sid=9"), ("Host", "h")]) == [
        ("Set-Cookie", REDACTED), ("Location", f"/x?sid={REDACTED}"), ("Host", "h")]
    for secret in SECRETS:
        assert secret not in redact_text(f"Cookie: {secret}")


def test_printable() -> None:
    assert printable("a\x1b[2Jb\x00\t\n") == "a\\x1b[2Jb\\x00\t\n"
    assert printable("x\u2028y\x85") == "x\\u2028y\\x85"
    assert printable("\udcff") == "\ufffd"
    assert printable("abcdef", 4) == "abc…"


_FRAGMENTS = ["Cookie", "COOKIE", "set-cookie", "Authorization", "x-Api-Key", "apikey", "Token", "token=", ": ",
              ":", "=", "&", "?", "@", "http://", "u:p@", "a", "Z", " ", "\r\n", "ſet-cookie", "\u212aey", "é",
              "x-auth-token", "key", "/p?sid=1", "-", "_"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=12), st.lists(st.sampled_from(_FRAGMENTS), max_size=12))
def test_redact_text_skips_no_match(head: list[str], tail: list[str]) -> None:
    """The quick checks in ``redact_text`` (header names, ``@``) only skip what the regular expressions
    would not change: the result is that of the three substitutions applied unconditionally."""
    import analyzer.report.redact as r

    text = "".join(head) + "".join(tail)
    expected = r._HEADER_RE.sub(lambda m: f"{m.group('name')}{m.group('sep')}{REDACTED}", text)
    expected = r._USERINFO_RE.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", expected)
    expected = r._PARAM_RE.sub(r._param, expected)
    assert redact_text(text) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(st.sampled_from(_FRAGMENTS), max_size=6).map("".join)), max_size=20),
       st.sampled_from(["string", "object"]))
def test_redacting_a_column_redacts_each_value(values: list[str | None], dtype: str) -> None:
    """A column is redacted value by value (missing values stay missing, its dtype stays), and a column
    with nothing to hide is handed back as it is, not copied (a million rows a column)."""
    import pandas as pd

    from analyzer.report.redact import _redact_column, redact_frame

    frame = pd.DataFrame({"target": pd.Series(values, dtype=dtype), "n": range(len(values))})
    out = redact_frame(frame, ["target", "absent"])
    expected = [None if v is None else redact_text(v) for v in values]
    assert [None if pd.isna(v) else v for v in out["target"]] == expected
    assert out["target"].dtype == frame["target"].dtype and out["n"].tolist() == frame["n"].tolist()
    column = frame["target"]
    if expected == values:
        assert _redact_column(column) is column
