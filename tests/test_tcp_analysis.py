"""TCP sequence analysis (analyzer/flows/tcpanalysis.py).

- Loss classes the oracle does not carry (duplicate ACKs, zero window, window full, keep-alives) agree with
  tshark per connection on corpus files; retransmission kinds are compared over the whole corpus in
  test_corpus.py (the oracle has them).
- Flights, initial window and warmth on simulated slow start, seen from the server and from the client:
  the ACK clock must be read causally at either capture point.
- Property: splitting a segment into back-to-back pieces, or sending it whole, gives the same flights.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import analyzer
from analyzer.flows.packets import ACK, SYN
from analyzer.flows.tcpanalysis import LOG_DTYPES, NO_VALUE, ConnInputs, Spans, analyze

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
TSHARK_FIELDS = {
    "dup_acks": "tcp.analysis.duplicate_ack",
    "zero_window": "tcp.analysis.zero_window",
    "window_full": "tcp.analysis.window_full",
    "keep_alives": "tcp.analysis.keep_alive",
    "retransmissions": "tcp.analysis.retransmission",
    "out_of_order": "tcp.analysis.out_of_order",
}
FILES = [
    CORPUS / "arkime" / "wireshark-retrans.pcap",  # duplicate ACKs, fast and spurious retransmissions
    CORPUS / "zeek" / "http" / "206_example_b.pcap",  # zero window, out of order
    CORPUS / "ndpi" / "1kxun.pcap",  # keep-alives
    CORPUS / "zeek" / "http" / "m57-long-49583-80.pcap",
    CORPUS / "chrissanders" / "http_espn_fail.pcapng",
    ROOT / "captures" / "pipelining.pcap",
]


def _tshark_counts(path: Path) -> dict[frozenset[str], Counter[str]]:
    args = ["tshark", "-n", "-r", str(path), "-Y", "tcp", "-T", "fields", "-e", "tcp.stream", "-e", "tcp.srcport",
            "-e", "tcp.dstport"]
    for field in TSHARK_FIELDS.values():
        args += ["-e", field]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    counts: dict[frozenset[str], Counter[str]] = defaultdict(Counter)
    for line in out.splitlines():
        parts = line.split("\t")
        if not parts[0] or "," in parts[0]:
            continue  # tunnelled TCP in TCP
        key = frozenset(parts[1:3])
        for name, value in zip(TSHARK_FIELDS, parts[3:], strict=True):
            counts[key][name] += bool(value)
    return counts


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_loss_classes_agree_with_tshark(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} not available")
    tshark = _tshark_counts(path)
    result = analyzer.analyze(str(path))
    ours: dict[frozenset[str], Counter[str]] = defaultdict(Counter)
    for row in result.connections.itertuples():
        key = frozenset({str(row.client_port), str(row.server_port)})
        for name in TSHARK_FIELDS:
            ours[key][name] += int(getattr(row, name))
    for key in set(tshark) | set(ours):
        for name in TSHARK_FIELDS:
            assert ours[key][name] == tshark[key][name], (sorted(key), name)


# ------------------------------------------------------------------------------------------ simulation
MSS = 1000
RTT_NS = 10_000_000


def _slow_start(capture_at: str, rounds: int = 3, iw: int = 10, response_segments: int | None = None,
                second_response_after_ns: int | None = None) -> tuple[dict[str, np.ndarray], ConnInputs, Spans]:
    """One connection: a request, then a response sent in slow start (each ACK of one segment releases two),
    optionally a second request/response later. Timestamps as seen at ``capture_at`` (server or client)."""
    total = response_segments if response_segments is not None else iw * (2 ** rounds - 1)
    # (ts at the server, ts at the client) per event; events: ("data" seq) from server, ("ack" value) from client
    events: list[tuple[int, int, str, int, int]] = []  # (ts_server, ts_client, kind, value, length)
    half = RTT_NS // 2
    events.append((half, 0, "req", 0, 100))  # request sent by the client at 0, reaches the server at RTT/2
    t0 = half + 100_000

    def serve(start_seg: int, start_ts: int) -> int:
        # send times only; a segment's number is given when it leaves, so numbers follow send order
        queue = [start_ts + i * 1000 for i in range(min(iw, total))]
        scheduled = len(queue)
        seg = start_seg
        last_ts = start_ts
        while queue:
            queue.sort()
            ts = queue.pop(0)
            events.append((ts, ts + half, "data", seg * MSS, MSS))
            ack_ts_client = ts + half + 500
            ack_ts_server = ack_ts_client + half
            events.append((ack_ts_server, ack_ts_client, "ack", (seg + 1) * MSS, 0))
            seg += 1
            last_ts = max(last_ts, ts)
            for k in range(2):
                if scheduled < total:
                    queue.append(ack_ts_server + 1000 * (k + 1))
                    scheduled += 1
        return last_ts

    last = serve(0, t0)
    spans = [(0, total * MSS)]
    if second_response_after_ns is not None:
        t1 = last + second_response_after_ns
        events.append((t1 - half + 2 * half, t1 - half, "req", 100, 100))
        serve(total, t1 + 2 * half)
        spans.append((total * MSS, 2 * total * MSS))
    at_server = capture_at == "server"
    events.sort(key=lambda e: (e[0] if at_server else e[1]))
    n = len(events) + 3
    rows: dict[str, np.ndarray] = {k: np.zeros(n, dtype=t) for k, t in LOG_DTYPES.items()}
    # handshake (SYN, SYN/ACK, ACK) before everything
    ts_syn = -3 * RTT_NS
    hs = [(True, ts_syn, SYN, -1, NO_VALUE), (False, ts_syn + (RTT_NS if not at_server else 1000), SYN | ACK, -1, 0),
          (True, ts_syn + RTT_NS + (1000 if not at_server else 0), ACK, 0, 0)]
    for i, (lo, ts, flags, seq, ack) in enumerate(hs):
        rows["lo"][i], rows["ts"][i], rows["flags"][i], rows["seq"][i], rows["ack"][i] = lo, ts, flags, seq, ack
        rows["ack_raw"][i] = ack + 1000 if ack != NO_VALUE else -1
    max_ack = 0
    for i, (ts_s, ts_c, kind, value, length) in enumerate(events, start=3):
        rows["ts"][i] = ts_s if at_server else ts_c
        rows["flags"][i] = ACK
        if kind == "data":
            rows["lo"][i], rows["seq"][i], rows["seglen"][i], rows["ack"][i] = False, value, length, 200
            rows["bif"][i] = value + length - max_ack
        else:
            rows["lo"][i], rows["seq"][i], rows["seglen"][i] = True, value if kind == "req" else 200, length
            rows["ack"][i] = value if kind == "ack" else max_ack
            max_ack = max(max_ack, int(rows["ack"][i]))
            rows["bif"][i] = -1
        rows["ack_raw"][i] = int(rows["ack"][i]) + 1000
        rows["win"][i] = 65535
    rows["serial"][:] = 7
    rows["wscale"][:] = -1
    rows["tsval"][:] = -1
    rows["tsecr"][:] = -1
    server_rtt = 1000 if at_server else RTT_NS
    conns = ConnInputs(np.array([7]), np.array([True]), np.array([True]), np.array([RTT_NS + 1000]),
                       np.array([server_rtt]))
    sp = Spans(np.zeros(len(spans), dtype=np.int64), np.array([s for s, _ in spans]), np.array([e for _, e in spans]))
    return rows, conns, sp


@pytest.mark.parametrize("capture_at", ["server", "client"])
def test_slow_start_flights_double_and_the_initial_window_is_the_first(capture_at: str) -> None:
    rows, conns, spans = _slow_start(capture_at)
    res = analyze(rows, conns, spans)
    sizes = res.flight_bytes[res.flight_span == 0].tolist()
    assert sizes == [10 * MSS, 20 * MSS, 40 * MSS]
    assert res.rounds.tolist() == [3]
    assert res.initial_window_bytes.tolist() == [10 * MSS]
    assert res.warmth.tolist() == ["cold"]
    assert res.retransmissions.tolist() == [0]


@pytest.mark.parametrize(("idle_ns", "warmth"), [(50_000_000, "warm"), (1_000_000_000, "cooled")])
def test_a_reused_response_is_warm_or_cooled_by_the_server_idle_time(idle_ns: int, warmth: str) -> None:
    rows, conns, spans = _slow_start("server", rounds=2, second_response_after_ns=idle_ns)
    res = analyze(rows, conns, spans)
    assert res.warmth.tolist() == ["cold", warmth]
    assert res.sender_idle_ms[1] == pytest.approx(idle_ns / 1e6 + RTT_NS / 1e6, rel=0.05)


def test_rtt_samples_follow_karn_and_measure_capture_to_client() -> None:
    rows, conns, spans = _slow_start("server")
    res = analyze(rows, conns, spans)
    # at the server every data segment is acknowledged RTT + 500 ns later
    assert res.rtt_samples[0] == 70
    assert res.rtt_min_ms[0] == pytest.approx(RTT_NS / 1e6 + 0.0005)
    assert res.rtt_max_ms[0] == pytest.approx(RTT_NS / 1e6 + 0.0005)
    # resend one segment: the samples around it disappear (Karn), the counts say retransmission
    resent = rows["seglen"] > 0
    first_data = int(np.nonzero(resent & ~rows["lo"])[0][5])
    dup = {k: np.insert(v, first_data + 1, v[first_data]) for k, v in rows.items()}
    dup["ts"][first_data + 1] += 10
    res2 = analyze(dup, conns, spans)
    assert res2.retransmissions[0] == 1
    assert res2.rtt_samples[0] < 70


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=MSS - 1), min_size=1, max_size=30),
       st.sampled_from(["server", "client"]))
def test_splitting_segments_does_not_change_flights(cuts: list[int], capture_at: str) -> None:
    rows, conns, spans = _slow_start(capture_at)
    base = analyze(rows, conns, spans)
    data = np.nonzero((rows["seglen"] > 0) & ~rows["lo"])[0]
    # split some data segments at `cut` into two back-to-back pieces (same time, same ACK)
    chosen = sorted({int(data[c % len(data)]) for c in range(len(cuts))})
    parts = []
    last = 0
    for i, cut in zip(chosen, cuts, strict=False):
        parts.append({k: v[last:i] for k, v in rows.items()})
        a = {k: v[i:i + 1].copy() for k, v in rows.items()}
        b = {k: v[i:i + 1].copy() for k, v in rows.items()}
        a["seglen"][0] = cut
        b["seq"][0] += cut
        b["seglen"][0] -= cut
        a["bif"][0] -= MSS - cut
        parts += [a, b]
        last = i + 1
    parts.append({k: v[last:] for k, v in rows.items()})
    split = {k: np.concatenate([p[k] for p in parts]) for k in rows}
    res = analyze(split, conns, spans)
    assert res.flight_bytes.tolist() == base.flight_bytes.tolist()
    assert res.flight_round.tolist() == base.flight_round.tolist()
    assert res.rounds.tolist() == base.rounds.tolist()
    assert res.initial_window_bytes.tolist() == base.initial_window_bytes.tolist()
    assert res.peak_bytes_in_flight.tolist() == base.peak_bytes_in_flight.tolist()
    assert res.warmth.tolist() == base.warmth.tolist()


@pytest.mark.parametrize("chunk_packets", [64, 262_144])
def test_one_endless_connection_keeps_a_bounded_segment_log(monkeypatch: pytest.MonkeyPatch,
                                                            chunk_packets: int) -> None:
    """Beyond MAX_LOG_ROWS_PER_CONNECTION packets a connection's later packets leave the TCP analysis
    (anomaly ``tcp_analysis_limit``): what was computed before the limit stays exact, what needs later
    packets is unknown, and HTTP is untouched."""
    from analyzer.flows import connections

    path = str(ROOT / "captures" / "shaped-bulk.pcap.gz")
    whole = analyzer.analyze(path, chunk_packets=chunk_packets)
    limit = 500  # the capture has connections of 870 and 459 packets
    monkeypatch.setattr(connections, "MAX_LOG_ROWS_PER_CONNECTION", limit)
    capped = analyzer.analyze(path, chunk_packets=chunk_packets)

    big = whole.connections.loc[(whole.connections.client_packets + whole.connections.server_packets) > limit]
    assert len(big) == 1
    uid = big.uid.iloc[0]
    hits = capped.anomalies[capped.anomalies.name == "tcp_analysis_limit"]
    assert hits.uid.tolist() == [uid]
    limit_s = float(hits.ts.iloc[0])
    http_cols = ["uid", "trans_depth", "method", "target", "status", "ts_request_start", "ts_response_end",
                 "response_body_bytes", "ttfb_ms", "transfer_ms"]
    assert capped.transactions[http_cols].equals(whole.transactions[http_cols])
    tcp_cols = ["warmth", "rounds", "peak_bytes_in_flight"]
    for (_, before), (_, after) in zip(whole.transactions.iterrows(), capped.transactions.iterrows(), strict=True):
        if before.uid == uid and before.ts_response_end >= limit_s:
            assert after[tcp_cols].isna().all(), after
        else:
            assert after[tcp_cols].equals(before[tcp_cols]), (before, after)
    assert (capped.transactions.uid == uid).sum() > capped.transactions.loc[
        capped.transactions.uid == uid, "warmth"].notna().sum() > 0  # some known, some cut
    series = capped.segments[capped.segments.uid == uid]
    full = whole.segments[(whole.segments.uid == uid) & (whole.segments.ts < limit_s)]
    assert 0 < len(series) <= limit
    same = [c for c in series.columns if c != "round"]  # the cut response's segments belong to no flight
    assert series[same].reset_index(drop=True).equals(full[same].reset_index(drop=True))
    other = whole.connections.uid != uid
    assert capped.connections.loc[other].reset_index(drop=True).equals(
        whole.connections.loc[other].reset_index(drop=True))


@pytest.mark.parametrize("chunk_packets", [64, 262_144])
def test_the_segment_log_over_all_open_connections_is_bounded(monkeypatch: pytest.MonkeyPatch,
                                                              chunk_packets: int) -> None:
    """Past MAX_LOG_ROWS packets held in the segment log over all open connections, a chunk's packets are
    logged in capture order while there is room; a connection that loses one loses its later ones (anomaly
    ``tcp_analysis_limit``, saying which limit). The log never holds more; HTTP is untouched; what was
    computed before a connection's limit stays exact; the other connections are as before."""
    from analyzer.flows import connections, tcpanalysis

    path = str(ROOT / "captures" / "shaped-bulk.pcap.gz")
    logged: list[np.ndarray] = []
    held: list[int] = []
    append = tcpanalysis.SegmentLog.append

    def watched(self: tcpanalysis.SegmentLog, cols: dict[str, np.ndarray]) -> None:
        append(self, cols)
        logged.append(np.asarray(cols["frame"]))
        held.append(self.rows)

    monkeypatch.setattr(tcpanalysis.SegmentLog, "append", watched)
    whole = analyzer.analyze(path, chunk_packets=chunk_packets)
    all_frames = np.sort(np.concatenate(logged))
    cap = 1000  # the capture's two connections overlap, with 870 and 459 packets
    monkeypatch.setattr(connections, "MAX_LOG_ROWS", cap)
    logged.clear()
    held.clear()
    capped = analyzer.analyze(path, chunk_packets=chunk_packets)

    assert max(held) == cap
    kept_frames = np.sort(np.concatenate(logged))
    assert set(kept_frames.tolist()) <= set(all_frames.tolist())
    if chunk_packets > len(all_frames):  # one chunk: exactly the first packets in capture order
        assert kept_frames.tolist() == all_frames[:cap].tolist()
    hits = capped.anomalies[capped.anomalies.name == "tcp_analysis_limit"]
    assert len(hits) == 1
    assert hits.detail.iloc[0].startswith("MAX_LOG_ROWS (1,000 packets of all open connections) reached (")
    uid, limit_s = hits.uid.iloc[0], float(hits.ts.iloc[0])
    assert capped.summary["packets_analyzed"] == whole.summary["packets_analyzed"]
    http_cols = ["uid", "trans_depth", "method", "target", "status", "ts_request_start", "ts_response_end",
                 "response_body_bytes", "ttfb_ms", "transfer_ms"]
    assert capped.transactions[http_cols].equals(whole.transactions[http_cols])
    tcp_cols = ["warmth", "rounds", "peak_bytes_in_flight"]
    cut = 0
    for (_, before), (_, after) in zip(whole.transactions.iterrows(), capped.transactions.iterrows(), strict=True):
        if before.uid == uid and before.ts_response_end >= limit_s:
            assert after[tcp_cols].isna().all(), after
            cut += 1
        else:
            assert after[tcp_cols].equals(before[tcp_cols]), (before, after)
    assert cut > 0
    series = capped.segments[capped.segments.uid == uid]
    full = whole.segments[(whole.segments.uid == uid) & (whole.segments.ts < limit_s)]
    same = [c for c in series.columns if c != "round"]
    assert series[same].reset_index(drop=True).equals(full[same].reset_index(drop=True))
    other = whole.connections.uid != uid
    assert capped.connections.loc[other].reset_index(drop=True).equals(
        whole.connections.loc[other].reset_index(drop=True))


@pytest.mark.parametrize("window", [1, 8192])
def test_tcp_columns_go_to_the_rows_of_their_own_connection(tmp_path: Path, window: int,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections finished together (all open at the capture's end), two whose requests were never answered
    between two whose responses were: the TCP columns go to the answered ones' rows, in their order, and the
    unanswered rows have none (``records._transactions`` matches each response's span to its connection
    and row, its results made lists ``window`` spans at a time)."""
    from hostile_capture import _Connection, _response, _Writer

    from analyzer import records

    monkeypatch.setattr(records, "_WINDOW", window)

    w = _Writer(tmp_path / "batch.pcap")
    unanswered_1, answered_1, unanswered_2, answered_2 = (_Connection(w, port, 80)
                                                          for port in (40001, 40002, 40003, 40004))
    for c in (unanswered_1, answered_1, unanswered_2, answered_2):
        c.client(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
    for c in (answered_1, answered_2):
        c.server(_response(b"one"))
        c.client(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        c.server(_response(b"two"))
    w.close()
    result = analyzer.analyze(tmp_path / "batch.pcap")
    txs = result.transactions
    by_port = {int(port): txs[txs["uid"] == uid] for port, uid in
               zip(result.connections["client_port"], result.connections["uid"], strict=True)}
    for port in (40001, 40003):
        assert by_port[port]["warmth"].isna().all() and by_port[port]["rounds"].isna().all()
    for port in (40002, 40004):
        assert by_port[port]["warmth"].tolist() == ["cold", "warm"]
        assert by_port[port]["rounds"].tolist() == [1, 1]


@settings(max_examples=150, deadline=None)
@given(chunks=st.lists(st.lists(st.integers(0, 5), max_size=12), max_size=30),
       pops=st.lists(st.lists(st.integers(0, 5), max_size=3), max_size=6), max_chunks=st.integers(4, 12))
def test_segment_log_pops_the_rows_of_its_connections_in_capture_order(
        chunks: list[list[int]], pops: list[list[int]], max_chunks: int) -> None:
    """Rows appended chunk by chunk (serials) come back out by connection, in the order appended, and what
    is left stays; many remnants are merged (at most ``MAX_LOG_CHUNKS`` kept) without changing the order."""
    from analyzer.flows import tcpanalysis

    old = tcpanalysis.MAX_LOG_CHUNKS
    tcpanalysis.MAX_LOG_CHUNKS = max_chunks
    try:
        log = tcpanalysis.SegmentLog()
        every: list[tuple[int, int]] = []  # (serial, frame) in capture order
        for serials in chunks:
            frames = list(range(len(every), len(every) + len(serials)))
            every += list(zip(serials, frames, strict=True))
            # one buffer for every column of the chunk, as the tracker's columns may be
            block = np.zeros((len(LOG_DTYPES), len(serials)), dtype=np.int64)
            block[0], block[1] = serials, frames
            log.append({k: block[0] if k == "serial" else block[1] if k == "frame" else block[2]
                        for k in LOG_DTYPES})
        for popped in pops:
            got = log.pop(np.array(popped, dtype=np.int64))
            want = [(s, f) for s, f in every if s in popped]
            assert list(zip(got["serial"].tolist(), got["frame"].tolist(), strict=True)) == want
            every = [(s, f) for s, f in every if s not in popped]
            assert log.rows == len(every)
            assert len(log._chunks) <= max_chunks
        rest = log.pop(np.arange(6, dtype=np.int64))
        assert list(zip(rest["serial"].tolist(), rest["frame"].tolist(), strict=True)) == every
    finally:
        tcpanalysis.MAX_LOG_CHUNKS = old


def test_merging_the_segment_log_lets_each_chunk_go_as_it_is_merged() -> None:
    """200 chunks whose columns share one buffer each, popped down to remnants and merged: the merge holds
    a few chunks' worth more than the log at most (it held all of it twice: a chunk's buffer is freed only
    when every column of it is let go)."""
    import tracemalloc

    from analyzer.flows import tcpanalysis

    log = tcpanalysis.SegmentLog()
    per_chunk = 20_000
    tracemalloc.start()
    try:
        for i in range(200):
            block = np.zeros((len(LOG_DTYPES), per_chunk), dtype=np.int64)
            block[0, : per_chunk // 10] = 1  # a tenth of each chunk belongs to connection 1
            block[1] = np.arange(i * per_chunk, (i + 1) * per_chunk)
            log.append({k: block[0] if k == "serial" else block[1] if k == "frame" else block[2]
                        for k in LOG_DTYPES})
            del block
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        log.pop(np.array([1], dtype=np.int64))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rest_bytes = 200 * per_chunk * 9 // 10 * sum(np.dtype(t).itemsize for t in LOG_DTYPES.values())
    assert len(log._chunks) <= tcpanalysis.MAX_LOG_CHUNKS and log.rows == 200 * per_chunk * 9 // 10
    assert peak - before < rest_bytes // 4, f"{(peak - before) / rest_bytes:.2f} of the log's size on top"
