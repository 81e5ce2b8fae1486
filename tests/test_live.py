"""Live capture (``analyzer live``, ``analyzer.capture.live``, the live dashboard, the Session hooks).

Unit tests (no privilege): the pcap writer round-trips a committed capture exactly; ``Session.snapshot``
and ``Session.forget_finished``; the dashboard's figures and rendering.

End-to-end tests (``netns``: root, nginx, curl, ``ip netns``; skipped with the reason otherwise): in a network
namespace created per test (loopback only), nginx and ``analyzer live -i lo`` run, record.py's clients drive
known traffic (HTTP/1.0 and 1.1 keep-alive, ``Connection: close``, pipelining, IPv6, a connection still open
at the end), the capture is stopped with SIGINT, and its tables must equal the clients' truth and
``analyzer export`` of the pcap written with ``--write`` (which tshark must read, agreeing with the truth).
Also: SIGINT in the middle of traffic, ``--count``, ``--duration``, ``--interval``, and the errors.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

import analyzer
from analyzer.capture.batch import PacketBatch
from analyzer.capture.pcapfile import open_capture
from analyzer.pipeline import Session

live_netns = pytest.importorskip("live_netns")
record = live_netns.record

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "captures" / "pipelining.pcap"
TABLES = ("connections", "transactions", "anomalies", "flights")
ACCOUNT = ("packets_read", "packets_analyzed", "packets_skipped", "truncated_packets", "connections",
           "transactions")


def _batches(path: Path, chunk_packets: int = 50) -> list[PacketBatch]:
    with open_capture(path, chunk_packets=chunk_packets) as reader:
        return list(reader.batches())


# --- no privilege needed ---------------------------------------------------------------------------------


def test_pcap_writer_round_trips_exactly(tmp_path: Path) -> None:
    pytest.importorskip("scapy")
    from analyzer.capture.live import PcapWriter

    batches = _batches(SAMPLE)
    out = tmp_path / "copy.pcap"
    writer = PcapWriter(out, int(batches[0].linktype[0]))
    for b in batches:
        writer.write(b)
    writer.close()
    again = _batches(out)
    for name in ("ts_ns", "caplen", "wirelen", "frame"):
        assert np.array_equal(np.concatenate([getattr(b, name) for b in batches]),
                              np.concatenate([getattr(b, name) for b in again])), name
    a, b = analyzer.analyze(SAMPLE), analyzer.analyze(out)
    for table in TABLES:
        left, right = getattr(a, table), getattr(b, table)
        if "capture" in left.columns:  # the file name, which differs by construction
            left, right = left.drop(columns="capture"), right.drop(columns="capture")
        assert left.equals(right), table


def test_session_snapshot_and_forget_finished() -> None:
    batches = _batches(SAMPLE, chunk_packets=20)
    full = analyzer.analyze(SAMPLE)
    s = Session()
    s.start_capture("sample")
    for b in batches:
        s.feed(b)
    from analyzer.capture.batch import ReaderStats

    running = ReaderStats(file_format="live", packets_read=sum(map(len, batches)))
    snap = s.snapshot(running)
    assert snap.summary["packets_read"] == running.packets_read
    assert snap.summary["open_connections"] >= 0
    assert s.packets_read == 0 and s.tracker is not None  # unchanged: the capture goes on
    s.end_capture(running)
    assert len(s.conn_rows) == len(full.connections) >= 2
    dropped = s.forget_finished(1)
    assert dropped == len(full.connections) - 1
    res = s.result()
    assert len(res.connections) == 1
    assert res.summary["connections_forgotten"] == dropped
    assert res.summary["transactions_forgotten"] + len(res.transactions) == len(full.transactions)
    assert set(res.transactions["uid"]) <= set(res.connections["uid"])
    assert s.forget_finished(5) == 0


def test_dashboard_figures_and_render() -> None:
    from analyzer.report.live_dashboard import CaptureHealth, DashboardState

    batches = _batches(SAMPLE, chunk_packets=20)
    s = Session()
    s.start_capture("sample")
    state = DashboardState(window_s=60)
    for i, b in enumerate(batches):
        s.feed(b)
        state.update(s, CaptureHealth(packets=(i + 1) * 20, iface="lo"), now_s=100.0 + i)
    figures = state.update(s, CaptureHealth(packets=999, iface="lo"), now_s=100.0 + len(batches))
    assert figures["connections_started"] == 2
    assert figures["open"] + figures["closing"] == 2  # closed connections wait LINGER_NS before finishing
    assert figures["open_requests"] >= 0
    s.end_capture(_stats(batches))
    figures = state.update(s, CaptureHealth(packets=999, iface="lo"), now_s=200.0)
    assert figures["finished_window"] == 2 and figures["finished_total"] == 2
    full = analyzer.analyze(SAMPLE)
    assert figures["requests_per_connection"] == pytest.approx(len(full.transactions) / 2)
    assert figures["reuse_ratio"] == pytest.approx((len(full.transactions) - 2) / len(full.transactions))
    assert figures["top_hosts"][0][1] == len(full.transactions)
    console = Console(file=io.StringIO(), width=100, force_terminal=False)
    console.print(state.render())
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "reuse ratio" in text and "top hosts" in text
    assert state.update(s, CaptureHealth(), now_s=1000.0)["finished_window"] == 0  # left the window


def _stats(batches: list[PacketBatch]) -> Any:
    from analyzer.capture.batch import ReaderStats

    return ReaderStats(file_format="live", packets_read=sum(map(len, batches)))


# --- real traffic in a network namespace ---------------------------------------------------------------

needs_netns = pytest.mark.skipif(live_netns.missing_requirements() is not None,
                                 reason=str(live_netns.missing_requirements()))


def _json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _assert_same_as_pcap(live: dict[str, Any], pcap: Path, tmp: Path) -> dict[str, Any]:
    offline = record.run_analyzer_export(pcap, tmp / "offline.json")
    assert {c["capture"] for c in live["connections"]} <= {"live:lo"}
    assert {c["capture"] for c in offline["connections"]} <= {pcap.name}
    for table in TABLES:
        rows = [[{k: v for k, v in row.items() if k != "capture"} for row in tables[table]]
                for tables in (live, offline)]  # the capture's name: the interface vs the file
        assert rows[0] == rows[1], f"{table}: live differs from the pcap written with --write"
    for key in ACCOUNT:
        assert live["summary"][key] == offline["summary"][key], key
    return offline


def _tshark_packets(pcap: Path) -> int:
    tshark = record.find_tool("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed (tools/install-system-deps.sh)")
    done = subprocess.run([tshark, "-r", str(pcap), "-T", "fields", "-e", "frame.number"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "cut short" not in done.stderr and "appears to be damaged" not in done.stderr, done.stderr
    return len(done.stdout.split())


@pytest.mark.netns
@needs_netns
def test_live_tables_equal_truth_and_pcap(tmp_path: Path) -> None:
    pcap, html, out = tmp_path / "live.pcap", tmp_path / "live.html", tmp_path / "live.json"
    with live_netns.namespace() as ns:
        live_netns.start_nginx(ns, tmp_path, "pipelining")
        proc = live_netns.start_live(ns, ["-i", "lo", "--filter", "tcp", "-w", str(pcap), "-o", str(html),
                                          "--json", str(out)])
        truth_conns: list[dict[str, Any]] = []
        for scenario in ("http10-and-close", "pipelining"):
            client = live_netns.run_client(ns, scenario, tmp_path)
            truth_conns += client.wait_truth()["connections"]
            client.close()
        still_open = live_netns.run_client(ns, "ipv6-pcapng", tmp_path)  # one connection open at the end
        truth_conns += still_open.wait_truth()["connections"]
        time.sleep(0.3)
        code, stdout, stderr = live_netns.finish_live(proc)
        still_open.close()
    assert code == 0, stderr
    assert "kernel drops 0, own drops 0" in stdout, stdout
    live = _json(out)
    truth = {"connections": truth_conns}
    assert len(truth_conns) == 11  # 6 + 2 + 3
    assert record.compare_with_truth(live, truth) == []
    assert any(c["close_by"] == "open" for c in live["connections"])
    s = live["summary"]
    assert s["file_format"] == "live" and s["captures"] == ["live:lo"]
    assert s["kernel_drops"] == 0 and s["live_own_drops"] == 0
    assert s["packets_read"] == s["packets_analyzed"] + sum(s["packets_skipped"].values())
    _assert_same_as_pcap(live, pcap, tmp_path)
    assert _tshark_packets(pcap) == s["packets_read"]
    assert record.verify_with_tshark(pcap, truth) == []
    page = html.read_text()
    assert page.startswith("<!doctype html") or "<html" in page[:500]


@pytest.mark.netns
@needs_netns
def test_sigint_during_traffic_gives_complete_report_and_pcap(tmp_path: Path) -> None:
    pcap, html, out = tmp_path / "mid.pcap", tmp_path / "mid.html", tmp_path / "mid.json"
    with live_netns.namespace() as ns:
        live_netns.start_nginx(ns, tmp_path, "pipelining")
        proc = live_netns.start_live(ns, ["-i", "lo", "-w", str(pcap), "-o", str(html), "--json", str(out),
                                          "--interval", "0.5"])
        url = f"http://127.0.0.1:{record.PORT_MAIN}/medium.bin?n=[1-100000]"
        close_url = f"http://127.0.0.1:{record.PORT_CLOSE}/small.txt?n=[1-100000]"
        # paced (--rate) so that nothing is dropped: then the report must equal the pcap exactly
        load = [ns.popen([record._tool("curl"), "-s", "--rate", "40/s", "-o", "/dev/null", u],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for u in (url, close_url)]
        deadline = time.monotonic() + 15  # a report takes 1.5-2 s to render on this 2-core machine
        while not html.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert html.is_file(), "--interval wrote no report while capturing"
        assert all(p.poll() is None for p in load), "the traffic ended before the SIGINT"
        code, _, stderr = live_netns.finish_live(proc)  # while curl is still sending
        for p in load:
            record._stop(p, signal.SIGTERM, 5)
    assert code == 0, stderr
    live = _json(out)
    s = live["summary"]
    assert s["transactions"] > 50 and s["connections"] > 10
    assert s["kernel_drops"] == 0
    assert s["packets_read"] == s["packets_analyzed"] + sum(s["packets_skipped"].values())
    assert s["live_own_drops"] == 0
    assert any(c["close_by"] == "open" for c in live["connections"])  # the keep-alive one, cut mid-traffic
    offline = _assert_same_as_pcap(live, pcap, tmp_path)
    assert _tshark_packets(pcap) == offline["summary"]["packets_read"]
    assert "</html>" in html.read_text()[-200:]


@pytest.mark.netns
@needs_netns
def test_count_and_duration_stop_by_themselves(tmp_path: Path) -> None:
    pcap, out = tmp_path / "count.pcap", tmp_path / "count.json"
    with live_netns.namespace() as ns:
        live_netns.start_nginx(ns, tmp_path, "pipelining")
        proc = live_netns.start_live(ns, ["-i", "lo", "--count", "25", "-w", str(pcap), "-o",
                                          str(tmp_path / "count.html"), "--json", str(out)])
        ns.run([record._tool("curl"), "-s", "-o", "/dev/null",
                f"http://127.0.0.1:{record.PORT_MAIN}/small.txt?n=[1-20]"])
        code, _, stderr = live_netns.finish_live(proc, sig=None, timeout_s=30)
        assert code == 0, stderr
        assert _json(out)["summary"]["packets_read"] == 25
        assert sum(len(b) for b in _batches(pcap)) == 25
        started = time.monotonic()
        proc = live_netns.start_live(ns, ["-i", "lo", "--duration", "1", "-o", str(tmp_path / "d.html"), "-q"])
        code, _, stderr = live_netns.finish_live(proc, sig=None, timeout_s=30)
        assert code == 0, stderr
        assert time.monotonic() - started < 15
        assert (tmp_path / "d.html").is_file()


@pytest.mark.netns
@needs_netns
@pytest.mark.parametrize(("args", "prefix", "message"), [
    (["-i", "nosuch0"], [], "analyzer: error: nosuch0: no such network interface"),
    (["-i", "lo", "--filter", "tcp port nonsense"], [], "analyzer: error: bad capture filter 'tcp port nonsense'"),
    (["-i", "lo"], ["setpriv", "--inh-caps=-all", "--bounding-set=-net_raw"],
     "analyzer: error: lo: no permission to capture (needs root or CAP_NET_RAW)"),
], ids=["missing-interface", "bad-filter", "no-cap-net-raw"])
def test_errors_are_one_line_and_exit_2(args: list[str], prefix: list[str], message: str, tmp_path: Path) -> None:
    if prefix and record.find_tool(prefix[0]) is None:
        pytest.skip(f"{prefix[0]} is not installed")
    with live_netns.namespace() as ns:
        done = ns.run([*prefix, *record.analyzer_command(), "live", *args, "-o", str(tmp_path / "x.html")],
                      cwd=ROOT)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert not (tmp_path / "x.html").exists()
