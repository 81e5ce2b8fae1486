"""Hostile traffic (issue 8): each case is generated at a small size, analyzed, and checked for the limit or
anomaly it should hit, the packet accounting, and the rows a user would expect. Full sizes, with time and
peak memory: ``bench/hostile.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import analyzer
import analyzer.flows.connections as connections
from analyzer.capture.pcapfile import open_capture
from analyzer.http.http1 import MAX_HEADER_BYTES
from analyzer.http.transactions import MAX_PENDING_REQUESTS
from analyzer.pipeline import Session

from . import generate as g


@pytest.fixture
def tmp(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path  # (files are generated, never committed)


def accounted(a: analyzer.Analysis, made: g.Made) -> dict[str, int]:
    """The summary accounts for every packet written; returns the anomaly counts."""
    s = a.summary
    assert s["packets_read"] == made.packets
    assert s["packets_read"] == s["packets_analyzed"] + sum(s["packets_skipped"].values())
    assert s["packets_skipped"] == {} and s["reader_skipped"] == {}
    assert s["connections"] == len(a.connections) and s["transactions"] == len(a.transactions)
    counts: dict[str, int] = s["anomalies"]
    return counts


def tracked_peak(path: Path, chunk_packets: int) -> tuple[int, analyzer.Analysis]:
    """Analyze with a session, returning the most connections its tracker held after any chunk. The queue
    of closed connections by age stays within twice their number (plus a few) at every chunk."""
    reader = open_capture(path, chunk_packets=chunk_packets)
    session = Session()
    session.start_capture(path.name)
    peak = 0
    for batch in reader.batches():
        session.feed(batch)
        tracker = session.tracker
        assert tracker is not None
        peak = max(peak, len(tracker.active))
        assert all(not cn.finished for cn in tracker.closing.values())
        assert len(tracker._closing_order) <= 2 * len(tracker.closing) + 65
        assert {cid for *_, cid in tracker._closing_order} >= set(tracker.closing)
    reader.close()
    session.end_capture(reader.stats)
    return peak, session.result()


# ---------------------------------------------------------------------------------------------- SYN flood

def _check_flood_rows(a: analyzer.Analysis, n: int) -> None:
    c = a.connections
    assert len(c) == n + 1
    real = c[c["requests"] > 0]
    assert len(real) == 1  # the real connection lived through the flood as one connection
    r = real.iloc[0]
    assert (r["requests"], r["close_by"], r["close_reason"], bool(r["syn_seen"])) == (2, "client", "fin", True)
    assert list(a.transactions["status"]) == [200, 200]
    flood = c[c["requests"] == 0]
    assert len(flood) == n
    assert flood["syn_seen"].all()
    assert set(flood["close_by"]) == {"open"} and set(flood["close_reason"]) == {"capture_end"}
    assert (flood["client_packets"] == 1).all() and (flood["server_packets"] == 1).all()
    assert set(flood["protocol"]) == {"unknown"}
    assert flood["handshake_rtt_ms"].isna().all()
    assert (flood["syn_to_synack_ms"].round(3) == 0.3).all()
    assert c["uid"].is_unique


def test_syn_flood_half_open_connections_each_get_a_row(tmp: Path) -> None:
    n = 20_000
    made = g.syn_flood(tmp / "syn.pcap", n)
    a = analyzer.analyze(made.path)
    assert accounted(a, made) == {}  # under MAX_TRACKED_CONNECTIONS: nothing is cut short
    _check_flood_rows(a, n)


def test_syn_flood_over_the_tracking_limit_is_bounded_and_reported(tmp: Path, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    n, cap, chunk = 30_000, 4_000, 8_192
    monkeypatch.setattr(connections, "MAX_TRACKED_CONNECTIONS", cap)
    made = g.syn_flood(tmp / "syn.pcap", n)
    peak, a = tracked_peak(made.path, chunk)
    assert peak <= cap + chunk  # the limit is checked after every chunk
    counts = accounted(a, made)
    assert set(counts) == {"tracked_connections_limit"}
    evicted = counts["tracked_connections_limit"]
    assert n - cap <= evicted <= n  # at most `cap` were still tracked at the end, and finished then
    _check_flood_rows(a, n)  # finished early, the half-open rows are the same
    an = a.anomalies
    limited = set(an.loc[an["name"] == "tracked_connections_limit", "uid"])
    assert len(limited) == evicted
    c = a.connections.set_index("uid")
    assert (c.loc[sorted(limited), "requests"] == 0).all()  # only half-open ones, never the real connection
    assert an["detail"].str.contains("half-open").all()


def test_syn_flood_eviction_passes_free_a_quarter_of_the_limit(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pass over the tracked connections (a pass looks at every one) finishes connections until a
    quarter of the limit is free, so a flood of n connections costs about (n - cap) / (cap / 4) passes, not
    one per chunk."""
    n, cap, chunk = 30_000, 4_000, 1_024  # 512 new connections per chunk: 58 chunks
    monkeypatch.setattr(connections, "MAX_TRACKED_CONNECTIONS", cap)
    after: list[int] = []
    bound = connections.ConnectionTracker._bound

    def counted(self: connections.ConnectionTracker, now: int) -> None:
        over = len(self.active) > cap
        bound(self, now)
        if over:
            after.append(len(self.active))

    monkeypatch.setattr(connections.ConnectionTracker, "_bound", counted)
    made = g.syn_flood(tmp / "syn.pcap", n)
    peak, a = tracked_peak(made.path, chunk)
    assert peak <= cap
    assert after and all(left <= cap - cap // 4 for left in after)
    assert len(after) <= (n - cap) // (cap // 4) + 1  # 26 passes, where one per chunk would be 50
    assert accounted(a, made).keys() == {"tracked_connections_limit"}
    _check_flood_rows(a, n)


def test_syn_flood_stale_half_open_connections_are_finished_without_anomaly(tmp: Path) -> None:
    # 2,000 SYNs at 4 per second: 500 s of capture; a half-open connection is dropped after HALF_OPEN_IDLE_NS
    n, rate = 2_000, 4
    made = g.syn_flood(tmp / "slow.pcap", n, rate_per_s=rate)
    peak, a = tracked_peak(made.path, chunk_packets=256)
    idle_s = (connections.HALF_OPEN_IDLE_NS + connections.IDLE_SCAN_NS) / 1e9
    assert peak <= rate * idle_s + 256 < n
    assert accounted(a, made) == {}
    _check_flood_rows(a, n)  # the real connection, idle 500 s with data, was kept


# ------------------------------------------------------------------------------------- tiny connections

def test_tiny_connections_each_get_their_row_and_transaction(tmp: Path) -> None:
    n = 20_000
    made = g.tiny_connections(tmp / "tiny.pcap", n)
    a = analyzer.analyze(made.path)
    assert accounted(a, made) == {}
    c, t = a.connections, a.transactions
    assert len(c) == n and len(t) == n
    assert (c["requests"] == 1).all() and set(c["close_by"]) == {"client"} and set(c["close_reason"]) == {"fin"}
    assert (c["client_packets"] == 4).all() and (c["server_packets"] == 3).all()
    assert set(t["status"]) == {200} and (t["response_body_bytes"] == 2).all()
    assert c["uid"].is_unique


def test_closed_connections_finished_early_at_the_limit_keep_their_rows(tmp: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    n = 6_000
    made = g.tiny_connections(tmp / "tiny.pcap", n)
    full = analyzer.analyze(made.path)
    monkeypatch.setattr(connections, "MAX_TRACKED_CONNECTIONS", 500)
    peak, a = tracked_peak(made.path, chunk_packets=2_048)
    assert peak <= 500 + 2_048
    assert accounted(a, made) == {}  # closed connections finished early are not cut short: no anomaly
    pd.testing.assert_frame_equal(a.connections, full.connections)
    pd.testing.assert_frame_equal(a.transactions, full.transactions)


def test_connection_churn_does_not_linger(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond ``MAX_CLOSING_CONNECTIONS`` closed connections, those settled for ``CLOSING_SETTLE_NS`` are
    finished without waiting ``LINGER_NS``: the tracker holds a bounded number, and the rows are the same."""
    n = 6_000
    made = g.tiny_connections(tmp / "tiny.pcap", n, spacing_ns=200_000)  # 1.2 s of churn
    monkeypatch.setattr(connections, "MAX_CLOSING_CONNECTIONS", 10**9)  # every closed connection lingers
    unbounded, full = tracked_peak(made.path, chunk_packets=2_048)
    monkeypatch.setattr(connections, "MAX_CLOSING_CONNECTIONS", 300)
    monkeypatch.setattr(connections, "CLOSING_SETTLE_NS", 50_000_000)
    peak, a = tracked_peak(made.path, chunk_packets=2_048)
    assert unbounded == n and peak < 300 + 2_048  # settled for 50 ms: 250 connections; a chunk adds ~290
    assert accounted(a, made) == {}
    pd.testing.assert_frame_equal(a.connections, full.connections)
    pd.testing.assert_frame_equal(a.transactions, full.transactions)


def test_many_clients_keep_the_report_per_pair_rows_bounded(tmp: Path) -> None:
    """One connection from each of thousands of clients: every (client, server) pair counts in the what-if's
    totals, but only the pairs with the most requests keep their 24 policy rows (a million clients made 24
    million rows and 11 GB before), and the report says how many pairs it lists of how many."""
    from analyzer import metrics
    from analyzer.metrics.whatif import WHATIF_MAX_REQUESTS, WHATIF_TIMEOUTS_S, WHATIF_TOP_PAIRS
    from analyzer.report.html import HOSTS_MAX_ROWS, render_report

    n = WHATIF_TOP_PAIRS + 500
    made = g.many_clients(tmp / "clients.pcap", n)
    a = analyzer.analyze(made.path)
    assert accounted(a, made) == {}
    assert a.connections["client_ip"].nunique() == n and len(a.transactions) == n
    m = metrics.compute_all(a)
    policies = len(WHATIF_TIMEOUTS_S) * len(WHATIF_MAX_REQUESTS)
    assert len(m.whatif) == WHATIF_TOP_PAIRS * policies
    assert set(m.whatif_totals["pairs"]) == {n} and set(m.whatif_totals["transactions"]) == {n}
    assert len(m.pools) == n  # one pool per client and host: per connection, like the tables
    page = render_report(a, "many clients")
    assert f"The {HOSTS_MAX_ROWS} pairs with the most requests of {n:,}." in page


# -------------------------------------------------------------------------------------------- huge header

def test_huge_header_block_is_skipped_and_the_request_still_counts(tmp: Path) -> None:
    made = g.huge_header(tmp / "huge.pcap", header_bytes=3 << 20)
    a = analyzer.analyze(made.path)
    assert accounted(a, made) == {"oversized_header": 1}
    detail = a.anomalies["detail"].iloc[0]
    assert str(MAX_HEADER_BYTES) in detail
    t = a.transactions
    assert list(zip(t["target"], t["status"], strict=True)) == [("/huge", 431), ("/x", 200)]
    assert a.connections["requests"].iloc[0] == 2
    assert a.connections["client_bytes"].iloc[0] == made.facts["header_bytes"] + len(g.REQUEST)


# ------------------------------------------------------------------------------------------ endless chunks

@pytest.mark.parametrize(("body", "size"), [(3_000_000, 1), (40_000_000, 1 << 20), (2_000_000, 7)])
def test_endless_chunked_body_is_counted_not_kept(tmp: Path, body: int, size: int) -> None:
    made = g.endless_chunked(tmp / "chunked.pcap", body, chunk_size=size)
    a = analyzer.analyze(made.path)
    assert accounted(a, made) == {"truncated_message": 1}  # the response never ended
    t = a.transactions.iloc[0]
    assert t["status"] == 200 and not t["response_complete"]
    assert t["response_body_bytes"] == made.facts["body_bytes"]
    c = a.connections.iloc[0]
    assert (c["close_by"], c["close_reason"]) == ("open", "capture_end")
    assert c["server_bytes"] == made.facts["body_bytes"] + len(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")


# ----------------------------------------------------------------------------------- overlapping segments

def test_overlapping_segments_with_different_bytes_keep_the_first_copy(tmp: Path) -> None:
    n = 2_000
    made = g.overlap_conflict(tmp / "overlap.pcap", n)
    a = analyzer.analyze(made.path)
    assert accounted(a, made) == {"overlap_conflict": n}
    assert set(a.transactions["target"]) == {"/first"}  # the first copy captured wins
    assert len(a.transactions) == n and set(a.transactions["status"]) == {200}
    details = set(a.anomalies["detail"])
    assert details == {f"client→server: {made.facts['conflicting_segments']} segment(s) carried other bytes "
                       f"({made.facts['differing_bytes']} differing) where an earlier copy had been captured; "
                       "the first copy was kept"}
    assert (a.connections["client_bytes"] == len(b"GET /first HTTP/1.1\r\nHost: hostile.test\r\n\r\n")).all()


def _tables_by_chunk(path: Path, sizes: tuple[int, ...]) -> tuple[analyzer.Analysis, list[analyzer.Analysis]]:
    whole = analyzer.analyze(path)
    cut = [analyzer.analyze(path, chunk_packets=k) for k in sizes]
    for k, a in zip(sizes, cut, strict=True):
        for name in ("connections", "transactions", "anomalies"):
            pd.testing.assert_frame_equal(getattr(whole, name), getattr(a, name), obj=f"{name} @ {k}")
    return whole, cut


def test_overlap_conflicts_do_not_depend_on_chunk_ends(tmp: Path) -> None:
    """Copies on either side of a chunk's end are compared as within one chunk: each direction keeps its
    unacknowledged bytes across chunk ends (one packet per chunk: every copy is in another chunk)."""
    n = 40
    made = g.overlap_conflict(tmp / "overlap.pcap", n)
    whole, _ = _tables_by_chunk(made.path, (1, 2, 3, 7, 64))
    assert accounted(whole, made) == {"overlap_conflict": n}


def test_copies_of_acknowledged_bytes_are_not_compared(tmp: Path) -> None:
    """Zeek's rule: a later copy is compared over the bytes its receiver had not acknowledged when it was
    captured. The server acknowledges the request's first half, then a copy of the whole request that
    differs in that half only is no conflict, and a copy of the second half with other bytes is one."""
    good = b"GET /first HTTP/1.1\r\nHost: hostile.test\r\n\r\n"
    evil = b"GET /evil! HTTP/1.1\r\nHost: hostile.test\r\n\r\n"
    half, q, r = len(good) // 2, len(good), len(g.RESPONSE)
    assert good[half:] == evil[half:] and good[:half] != evil[:half]
    tail = b"Z" * (q - half)
    tpl = [g.Pkt(True, g.SYN, 0, None, b"", 0), g.Pkt(False, g.SYN | g.ACK, 0, 1, b"", 100_000),
           g.Pkt(True, g.ACK, 1, 1, b"", 200_000), g.Pkt(True, g.ACK | g.PSH, 1, 1, good, 210_000),
           g.Pkt(False, g.ACK, 1, 1 + half, b"", 215_000),  # the first half acknowledged
           g.Pkt(True, g.ACK | g.PSH, 1, 1, evil, 220_000),  # differs below the ACK only: not compared there
           g.Pkt(True, g.ACK | g.PSH, 1 + half, 1, tail, 230_000),  # above it: a conflict
           g.Pkt(False, g.ACK | g.PSH, 1, 1 + q, g.RESPONSE, 400_000),
           g.Pkt(True, g.ACK | g.PSH, 1, 1 + r, evil, 450_000),  # everything acknowledged: not compared
           g.Pkt(True, g.FIN | g.ACK, 1 + q, 1 + r, b"", 500_000),
           g.Pkt(False, g.FIN | g.ACK, 1 + r, 2 + q, b"", 600_000), g.Pkt(True, g.ACK, 2 + q, 2 + r, b"", 700_000)]
    n = 5
    made = g.Made(tmp / "t.pcap", g._write_template(tmp / "t.pcap", tpl, n, 1_000_000))
    whole, _ = _tables_by_chunk(made.path, (1, 3, 5))
    assert accounted(whole, made) == {"overlap_conflict": n}
    assert set(whole.anomalies["detail"]) == {
        f"client→server: 1 segment(s) carried other bytes ({q - half} differing) where an earlier copy had been "
        "captured; the first copy was kept"}
    assert set(whole.transactions["target"]) == {"/first"}


def test_bytes_kept_for_later_copies_stay_within_their_budget(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``overlaps.MAX_KEPT_BYTES`` bounds the bytes kept over all directions at every chunk end; a direction
    that kept less because of it gets ``overlap_check_limit``, and nothing stays kept at the end."""
    from analyzer.flows import overlaps

    n = 30
    made = g.overlap_conflict(tmp / "overlap.pcap", n, spacing_ns=10_000)  # many requests in flight at once
    budget = 100  # about two requests' bytes
    monkeypatch.setattr(overlaps, "MAX_KEPT_BYTES", budget)
    reader = open_capture(made.path, chunk_packets=4)
    session = Session()
    session.start_capture(made.path.name)
    most = 0
    for batch in reader.batches():
        session.feed(batch)
        tracker = session.tracker
        assert tracker is not None
        kept = sum(len(st.kept) for cn in tracker.active.values() for st in cn.dirs)
        assert kept == tracker.kept_bytes <= budget
        most = max(most, kept)
    reader.close()
    session.end_capture(reader.stats)
    assert session.tracker is None or session.tracker.kept_bytes == 0
    a = session.result()
    counts = accounted(a, made)
    assert most > budget // 2
    assert 0 < counts["overlap_check_limit"] < n
    assert 0 < counts["overlap_conflict"] < n  # copies of bytes not kept are not compared


def test_identical_retransmissions_are_no_conflict(tmp: Path) -> None:
    # the request, a retransmitted copy of it and a partial copy, all with the same bytes
    tpl = [g.Pkt(True, g.SYN, 0, None, b"", 0), g.Pkt(False, g.SYN | g.ACK, 0, 1, b"", 100_000),
           g.Pkt(True, g.ACK | g.PSH, 1, 1, g.REQUEST, 200_000), g.Pkt(True, g.ACK | g.PSH, 1, 1, g.REQUEST, 300_000),
           g.Pkt(True, g.ACK | g.PSH, 10, 1, g.REQUEST[9:20], 310_000),
           g.Pkt(False, g.ACK | g.PSH, 1, 1 + len(g.REQUEST), g.RESPONSE, 400_000)]
    made = g.Made(tmp / "t.pcap", g._write_template(tmp / "t.pcap", tpl, 3, 1_000_000))
    a = analyzer.analyze(made.path)
    assert accounted(a, made) == {}
    assert len(a.transactions) == 3


# ----------------------------------------------------------------------------------- absurd Content-Length

def test_absurd_content_length_values_are_reported(tmp: Path) -> None:
    made = g.absurd_content_length(tmp / "cl.pcap", repeat=2)
    a = analyzer.analyze(made.path)
    bad = made.facts["bad_values"]
    # each bad value twice (request and response); the valid 15-digit length never ends
    assert accounted(a, made) == {"bad_content_length": 2 * bad, "truncated_message": made.facts["huge_valid"]}
    t = a.transactions
    assert len(t) == made.facts["connections"]
    post = t[t["method"] == "POST"]
    assert len(post) == bad
    assert (post["request_body_bytes"] == 0).all()  # a request without a valid length has no body
    assert (post["response_body_bytes"] == 4).all() and post["response_complete"].all()  # read until close
    huge = t[t["method"] == "GET"]
    assert (huge["response_body_bytes"] == 2).all() and not huge["response_complete"].any()
    assert set(a.anomalies.loc[a.anomalies["name"] == "bad_content_length", "detail"]) == {
        v.decode() for v in g.ABSURD_LENGTHS}


# --------------------------------------------------------------------------------------- pipelined flood

def test_pipelined_flood_stops_queueing_and_keeps_counting(tmp: Path) -> None:
    n = 60_000
    made = g.pipelined_flood(tmp / "pipe.pcap", n)
    a = analyzer.analyze(made.path)
    assert accounted(a, made) == {"excessive_pipelining": 1}
    detail = a.anomalies["detail"].iloc[0]
    assert str(MAX_PENDING_REQUESTS) in detail
    c = a.connections.iloc[0]
    assert c["requests"] == n and c["client_bytes"] == made.facts["stream_bytes"]
    t = a.transactions
    assert len(t) == n and t["status"].isna().all()
    assert list(t["target"].iloc[:3]) == ["/0", "/1", "/2"]
    assert np.array_equal(t["trans_depth"].to_numpy(), np.arange(1, n + 1))


def test_a_pipelined_flood_in_one_chunk_is_parsed_a_round_at_a_time(tmp: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The flood's packets are one chunk. Fed in rounds of ``ROUND_BYTES``, the requests waiting for a response
    never exceed ``MAX_PENDING_REQUESTS`` by more than one round's requests (fed whole, all 60,000 would
    wait at once), and the rows are those of the flood fed a packet at a time."""
    from analyzer.http import transactions

    monkeypatch.setattr(transactions, "MAX_PENDING_REQUESTS", 1_000)
    monkeypatch.setattr(connections, "ROUND_BYTES", 64 << 10)
    n = 60_000
    made = g.pipelined_flood(tmp / "pipe.pcap", n)
    most = {"pending": 0, "held": 0}
    feed = transactions.Http1Connection.feed

    def watched(conn: transactions.Http1Connection, direction: int, chunk: Any) -> None:
        feed(conn, direction, chunk)
        most["pending"] = max(most["pending"], len(conn.pending))
        most["held"] = max(most["held"], len(conn.exchanges))

    monkeypatch.setattr(transactions.Http1Connection, "feed", watched)
    a = analyzer.analyze(made.path)
    per_round = (64 << 10) // len(b"GET /0 HTTP/1.1\r\nHost: hostile.test\r\n\r\n") + 1
    assert 1_000 < most["pending"] <= 1_000 + per_round
    assert most["held"] <= 2 * (1_000 + per_round)  # the others are packed
    assert accounted(a, made) == {"excessive_pipelining": 1}
    assert len(a.transactions) == n and a.transactions["status"].isna().all()
    one_by_one = analyzer.analyze(made.path, chunk_packets=1)
    pd.testing.assert_frame_equal(one_by_one.transactions, a.transactions)
    pd.testing.assert_frame_equal(one_by_one.anomalies, a.anomalies)


# ------------------------------------------------------------------------------- long keep-alive connection

def test_keepalive_marathon_pairs_every_exchange_whatever_the_chunks(tmp: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """One keep-alive connection, exchanges one after the other: every request paired with its response,
    whether a chunk feeds ten times ``MAX_PENDING_REQUESTS`` requests before their responses (one chunk) or
    a few; packed as they finish (``PACK_EVERY``), with the rows of exchanges kept whole."""
    from analyzer.http import transactions

    monkeypatch.setattr(transactions, "MAX_PENDING_REQUESTS", 100)
    monkeypatch.setattr(transactions, "PACK_BLOCK", 64)
    n = 1_000
    made = g.keepalive_marathon(tmp / "marathon.pcap", n)
    a = analyzer.analyze(made.path)  # one chunk
    assert accounted(a, made) == {}
    t = a.transactions
    assert len(t) == n and (t["status"] == 200).all() and t["response_complete"].all()
    assert list(t["target"]) == [f"/{i:03d}" for i in range(n)]
    assert np.array_equal(t["trans_depth"].to_numpy(), np.arange(1, n + 1))
    assert int(t["reused"].sum()) == n - 1 and (t["idle_before_ms"].iloc[1:].round(6) == 0.05).all()
    c = a.connections.iloc[0]
    assert (c["requests"], c["pipelined_max"], c["close_by"]) == (n, 1, "open")
    for chunk_packets in (64, 2001):
        cut = analyzer.analyze(made.path, chunk_packets=chunk_packets)
        pd.testing.assert_frame_equal(cut.transactions, t, obj=f"transactions @ {chunk_packets}")
    monkeypatch.setattr(transactions, "PACK_EVERY", 1_000_000)  # never packed: the same rows
    pd.testing.assert_frame_equal(analyzer.analyze(made.path).transactions, t)


# ----------------------------------------------------------------------------------- the segment log in all

class LogWatch:
    """What the segment log is given: the most rows it held after any append, and each connection's frames
    (by tracker serial, in the order logged)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from analyzer.flows import tcpanalysis

        self.most = 0
        self.frames: dict[int, list[int]] = {}
        append = tcpanalysis.SegmentLog.append

        def watched(log: tcpanalysis.SegmentLog, cols: dict[str, np.ndarray]) -> None:
            append(log, cols)
            self.most = max(self.most, log.rows)
            for serial, frame in zip(np.asarray(cols["serial"]).tolist(), np.asarray(cols["frame"]).tolist(),
                                     strict=True):
                self.frames.setdefault(serial, []).append(frame)

        monkeypatch.setattr(tcpanalysis.SegmentLog, "append", watched)

    def clear(self) -> None:
        self.most = 0
        self.frames = {}


def test_keepalive_crowd_keeps_a_bounded_segment_log(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight load-test connections side by side, more packets than MAX_LOG_ROWS: the log never holds more;
    every connection keeps a prefix of its packets for the TCP analysis and says where it stops; HTTP is
    untouched, whatever the chunks."""
    made = g.keepalive_crowd(tmp / "crowd.pcap", 8, 500)
    watch = LogWatch(monkeypatch)
    whole = analyzer.analyze(made.path)
    assert accounted(whole, made) == {}
    every = watch.frames
    cap = 2_000
    monkeypatch.setattr(connections, "MAX_LOG_ROWS", cap)
    for chunk_packets in (256, 1 << 20):
        watch.clear()
        a = analyzer.analyze(made.path, chunk_packets=chunk_packets)
        assert accounted(a, made) == {"tcp_analysis_limit": 8}
        assert watch.most == cap
        for serial, frames in watch.frames.items():
            assert frames == every[serial][:len(frames)]
        http = ["uid", "trans_depth", "method", "target", "status", "ts_request_start", "ts_response_end"]
        pd.testing.assert_frame_equal(a.transactions[http], whole.transactions[http])
        known = a.transactions["warmth"].notna().groupby(a.transactions["uid"]).sum()
        assert (known > 0).all() and (known < 500).all()
        limit = a.anomalies[a.anomalies["name"] == "tcp_analysis_limit"]
        assert limit["detail"].str.startswith("MAX_LOG_ROWS (2,000 packets of all open connections)").all()


def test_a_connection_cut_from_the_segment_log_stays_cut_when_room_comes_back(
        tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long connection loses its later packets to MAX_LOG_ROWS while short connections come and go; as
    they finish the log has room again, and later short connections are logged whole, but the long one's
    log stays the prefix it had (a log with a hole would give wrong retransmissions and flights)."""
    marathon = list(g.marathon_packets(0, 600, 1_000_000, g.T0_NS, 1_000))  # 0.6 s, 1 ms apart
    tiny = list(g.replicate(g.tiny_template(), 300, 2_000_000, first=1))
    merged = g._concat([*marathon, *tiny])
    path = tmp / "mixed.pcap"
    made = g.Made(path, g._one([g._take(merged, np.argsort(merged.ts, kind="stable"))], path))
    monkeypatch.setattr(connections, "LINGER_NS", 10_000_000)  # closed connections leave the log soon
    watch = LogWatch(monkeypatch)
    whole = analyzer.analyze(path, chunk_packets=64)
    every = watch.frames
    assert accounted(whole, made) == {}
    monkeypatch.setattr(connections, "MAX_LOG_ROWS", 200)
    watch.clear()
    a = analyzer.analyze(path, chunk_packets=64)
    assert watch.most <= 200
    cut = {s for s, frames in watch.frames.items() if len(frames) < len(every[s])}
    for serial, frames in watch.frames.items():
        assert frames == every[serial][:len(frames)]
    long_serial = max(every, key=lambda s: len(every[s]))
    assert long_serial in cut and len(watch.frames[long_serial]) < 200
    # short connections that started after the long one was cut, logged whole
    cut_at = every[long_serial][len(watch.frames[long_serial])]
    assert any(frames[0] > cut_at and s not in cut for s, frames in every.items())
    assert accounted(a, made) == {"tcp_analysis_limit": len(cut) + sum(s not in watch.frames for s in every)}


@pytest.mark.parametrize("per_packet", [1, 100])
def test_h2_marathon_gives_every_stream_its_row_whatever_the_chunks(tmp: Path, per_packet: int) -> None:
    """One HTTP/2 connection with thousands of streams, one after the other or a hundred at a time: one
    transaction per stream, all answered and complete, concurrency as sent, and the same rows for any
    chunking."""
    n = 3_000
    made = g.h2_marathon(tmp / "h2.pcap", n, per_packet=per_packet)
    a = analyzer.analyze(made.path)
    assert accounted(a, made) == {}
    t = a.transactions
    assert len(t) == n and (t["status"] == 200).all()
    assert t["request_complete"].all() and t["response_complete"].all() and (t["response_body_bytes"] == 2).all()
    assert np.array_equal(t["trans_depth"].to_numpy(), np.arange(1, n + 1))
    assert int(t["pipelined"].sum()) == n - n // per_packet
    c = a.connections.iloc[0]
    assert (c["protocol"], c["requests"], c["max_concurrent_streams"], c["close_by"]) == ("h2c", n, per_packet, "open")
    for chunk_packets in (64, 1_001):
        cut = analyzer.analyze(made.path, chunk_packets=chunk_packets)
        pd.testing.assert_frame_equal(cut.transactions, t, obj=f"transactions @ {chunk_packets}")
        pd.testing.assert_frame_equal(cut.connections, a.connections, obj=f"connections @ {chunk_packets}")


def test_h2_streams_opened_in_one_chunk_are_answered_a_round_at_a_time(tmp: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """20,000 streams opened a hundred at a time, all in one chunk: fed in rounds, the connection never has
    more than a round's streams open as objects, so none is packed while open (``MAX_OPEN_STREAMS_HELD``),
    and the rows are those of the chunk fed whole."""
    from analyzer.http2 import connection

    n = 20_000
    made = g.h2_marathon(tmp / "h2.pcap", n, per_packet=100)
    most = {"streams": 0, "open_packed": 0}
    feed = connection.Http2Connection.feed

    def watched(conn: connection.Http2Connection, direction: int, chunk: Any) -> None:
        feed(conn, direction, chunk)
        most["streams"] = max(most["streams"], len(conn.streams))
        most["open_packed"] = max(most["open_packed"], conn.open_packed)

    monkeypatch.setattr(connection.Http2Connection, "feed", watched)
    monkeypatch.setattr(connection, "MAX_OPEN_STREAMS_HELD", 4_096)
    monkeypatch.setattr(connections, "ROUND_BYTES", 16 << 10)
    a = analyzer.analyze(made.path)
    assert len(a.transactions) == n and (a.transactions["status"] == 200).all()
    assert most["streams"] < 2_048 and most["open_packed"] == 0
    monkeypatch.setattr(connections, "ROUND_BYTES", 1 << 40)  # the chunk fed whole: streams packed open
    whole = analyzer.analyze(made.path)
    assert most["open_packed"] > 0
    pd.testing.assert_frame_equal(whole.transactions, a.transactions)
    pd.testing.assert_frame_equal(whole.connections, a.connections)
