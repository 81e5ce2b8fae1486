"""The report in a real browser: Debian's chromium driven by playwright, headless, with no network.

Skips when the ``playwright`` package or ``/usr/bin/chromium`` is missing (``tools/install-system-deps.sh``
installs chromium; playwright's own browser downloads are never used). Every request that is not a
``file:`` URL is aborted and recorded: the page must attempt none. Screenshots go to the test's tmp_path
(``REPORT_SCREENSHOTS=DIR`` keeps copies there to look at).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hostile_capture import write_hostile_capture

import analyzer
from analyzer.analysis import Analysis
from analyzer.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
CAPTURES = Path(__file__).resolve().parents[1] / "captures"

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        yield instance
        instance.close()


class Loaded:
    """A report opened in a fresh context: console messages, page errors, dialogs, network attempts."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.network: list[str] = []
        self.context = browser.new_context(viewport={"width": 1300, "height": 900}, java_script_enabled=True)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._dialog)
        self.page.goto(path.as_uri(), wait_until="load")
        self.page.wait_for_function("document.querySelectorAll('.chart').length === "
                                    "document.querySelectorAll('.chart .main-svg, .chart svg').length || "
                                    "document.querySelectorAll('.chart').length <= "
                                    "document.querySelectorAll('.chart svg.main-svg').length", timeout=30_000)

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith("file:"):
            route.continue_()
        else:
            self.network.append(url)
            route.abort()

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def close(self) -> None:
        self.context.close()


def _keep(shot: Path) -> None:
    keep = os.environ.get("REPORT_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "keepalive.html"
    write_report(analyzer.analyze(str(CAPTURES / "keepalive-idle-timeout.pcap")), out)
    return out


def test_page_loads_charts_render_no_errors_no_network(browser: Any, demo_report: Path, tmp_path: Path) -> None:
    loaded = Loaded(browser, demo_report)
    try:
        page = loaded.page
        charts = page.eval_on_selector_all(".chart", "nodes => nodes.map(n => [n.id, !!n.querySelector('svg.main-svg'),"
                                                     " n.textContent.includes('could not be drawn')])")
        assert len(charts) >= 8
        assert all(has_svg and not failed for _, has_svg, failed in charts), charts
        assert page.eval_on_selector_all(".nojs", "ns => ns.filter(n => n.offsetParent !== null).length") == 0
        assert page.locator("#whatif .chart svg.main-svg").count() >= 1
        assert loaded.errors == [] and loaded.dialogs == [] and loaded.network == []
        shot = tmp_path / "report-top.png"
        page.screenshot(path=str(shot))
        _keep(shot)
        whatif = tmp_path / "report-whatif.png"
        page.locator("#whatif").screenshot(path=str(whatif))
        _keep(whatif)
        assert shot.stat().st_size > 10_000 and whatif.stat().st_size > 10_000
    finally:
        loaded.close()


def test_table_sorts_by_clicking_and_by_keyboard(browser: Any, demo_report: Path) -> None:
    loaded = Loaded(browser, demo_report)
    try:
        page = loaded.page
        table = page.locator("#whatif table.sortable").first
        page.locator("#whatif details summary").first.click()  # the totals table is in a <details>
        column = 2  # connections
        header = table.locator("thead th").nth(column)

        def keys() -> list[float]:
            return [float(v) for v in table.locator(f"tbody tr td:nth-child({column + 1})").evaluate_all(
                "cells => cells.map(c => c.getAttribute('data-sort'))")]

        header.locator("button").click()
        assert header.get_attribute("aria-sort") == "ascending"
        assert keys() == sorted(keys())
        # Keyboard: Tab reaches the sort buttons, Enter sorts again (descending).
        header.locator("button").focus()
        assert page.evaluate("document.activeElement.tagName") == "BUTTON"
        page.keyboard.press("Enter")
        assert header.get_attribute("aria-sort") == "descending"
        assert keys() == sorted(keys(), reverse=True)
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.closest('th') !== null")
        # The navigation links are reachable and move to their section.
        page.locator('nav a[href="#whatif"]').focus()
        page.keyboard.press("Enter")
        assert page.evaluate("location.hash") == "#whatif"
        assert loaded.errors == [] and loaded.network == []
    finally:
        loaded.close()


def test_hostile_capture_never_runs_script(browser: Any, tmp_path: Path) -> None:
    capture = write_hostile_capture(tmp_path / "hostile.pcap")
    for redact in (True, False):
        out = tmp_path / f"hostile-{redact}.html"
        write_report(analyzer.analyze(str(capture)), out, redact=redact)
        loaded = Loaded(browser, out)
        try:
            page = loaded.page
            # Hover every request mark of the timeline, so that plotly renders the hover labels.
            for box in page.locator("#timeline .chart .points path").all()[:6]:
                box.hover(force=True)
            assert page.evaluate("window.__pwned") is None
            assert loaded.dialogs == [] and loaded.network == [] and loaded.errors == []
            assert page.locator("img").count() == 0
            assert "<script>window.__pwned" in page.locator("#hosts").inner_text()  # shown as text
            shot = tmp_path / f"hostile-{redact}.png"
            page.locator("#hosts").screenshot(path=str(shot))
            _keep(shot)
        finally:
            loaded.close()


def test_compare_page_renders(browser: Any, tmp_path: Path) -> None:
    from analyzer.report.compare import write_compare

    out = tmp_path / "compare.html"
    write_compare(analyzer.analyze(str(CAPTURES / "keepalive-idle-timeout.pcap")),
                  analyzer.analyze(str(CAPTURES / "close-race.pcap")), "before.pcap", "after.pcap", out)
    loaded = Loaded(browser, out)
    try:
        assert loaded.page.locator(".chart svg.main-svg").count() >= 1
        assert loaded.errors == [] and loaded.network == [] and loaded.dialogs == []
        shot = tmp_path / "compare.png"
        loaded.page.screenshot(path=str(shot), full_page=True)
        _keep(shot)
    finally:
        loaded.close()


def _replicated(frame: pd.DataFrame, copies: int, spacing_s: float) -> pd.DataFrame:
    """``copies`` copies of a table, copy k shifted by k × ``spacing_s`` with its own uids, client ports
    and (every third copy apart) client addresses."""
    out = pd.concat([frame] * copies, ignore_index=True)
    copy = np.repeat(np.arange(copies), len(frame))
    for column in out.columns:
        if column.startswith("ts"):
            out[column] = out[column] + copy * spacing_s
    out["uid"] = out["uid"] + pd.array([f"-{k}" for k in copy], dtype="string")
    if "client_port" in out:
        out["client_port"] = pd.array((out["client_port"].to_numpy(dtype="int64") + copy) % 65536, dtype="Int64")
    if "client_ip" in out:
        out["client_ip"] = pd.array([f"10.{(k >> 8) & 255}.{k & 255}.1" for k in copy // 3], dtype="string")
    return out


def test_report_of_100k_transactions_loads_and_says_what_it_samples(browser: Any, tmp_path: Path) -> None:
    """100,008 transactions on 33,336 connections (8,334 time-shifted copies of a recording): the page stays
    a few MB, every chart draws, tables and the timeline are capped and say so. Times are printed, not
    asserted (bench material): about 20 s to render and 5 s to load on a 2-core machine."""
    source = analyzer.analyze(str(CAPTURES / "keepalive-idle-timeout.pcap"))
    copies = 8334
    big = Analysis(connections=_replicated(source.connections, copies, 5.0),
                   transactions=_replicated(source.transactions, copies, 5.0), anomalies=source.anomalies,
                   summary=dict(source.summary), flights=_replicated(source.flights, copies, 5.0),
                   segments=_replicated(source.segments, copies, 5.0))
    assert len(big.transactions) == 100_008
    out = tmp_path / "big.html"
    began = time.perf_counter()
    write_report(big, out)
    rendered = time.perf_counter() - began
    size_mb = out.stat().st_size / 1e6
    assert size_mb < 20, size_mb
    began = time.perf_counter()
    loaded = Loaded(browser, out)
    try:
        page = loaded.page
        print(f"100k transactions: render {rendered:.1f} s, {size_mb:.1f} MB, load {time.perf_counter() - began:.1f} s")
        charts = page.eval_on_selector_all(".chart", "nodes => nodes.map(n => !!n.querySelector('svg.main-svg'))")
        assert len(charts) >= 8 and all(charts)
        assert loaded.errors == [] and loaded.network == [] and loaded.dialogs == []
        assert page.locator("tr").count() < 5_000  # tables are capped, not 100k rows
        text = page.locator("#timeline").inner_text()
        assert "of 33,336 connections, sampled evenly by start time" in text
        headline = page.locator("#headline").inner_text()
        assert "33,336" in headline and "100,008" in headline
        shot = tmp_path / "big-top.png"
        page.screenshot(path=str(shot))
        _keep(shot)
    finally:
        loaded.close()
