"""Records: finished connections (TCP facts + their protocol handlers + their packet rows) → table rows.

One row per connection, one per transaction, one per anomaly (DESIGN.md §3), one per response flight, and
the per-packet series. It joins what the flows layer measured (including the sequence analysis of
``flows.tcpanalysis``, run once for all connections of a batch) with what the HTTP layer parsed, and nothing
else: no I/O.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analyzer.dispatch import ConnectionHandler
from analyzer.flows import tcpanalysis
from analyzer.flows.connections import MAX_TRACKED_CONNECTIONS, Connection, connection_uid
from analyzer.flows.packets import SYN
from analyzer.http.rows import TransactionRows
from analyzer.http.transactions import Http1Connection, SealedHttp1
from analyzer.tables import HTTP_TRANSACTION_COLUMNS, TCP_TRANSACTION_COLUMNS

CAPTURE_POINT_RATIO = 4.0  # one handshake half this many times the other: the capture sits at that end
_TX = {name: i for i, name in enumerate(HTTP_TRANSACTION_COLUMNS)}
assert tuple(TCP_TRANSACTION_COLUMNS) == ("warmth", "rounds", "peak_bytes_in_flight", "ttfb_ms", "transfer_ms",
                                          "sender_idle_ms"), "batch_records appends them in this order"


def _ms(a_ns: int | None, b_ns: int | None) -> float | None:
    if a_ns is None or b_ns is None:
        return None
    return (b_ns - a_ns) / 1e6


def capture_point(server_rtt_ms: float | None, client_rtt_ms: float | None) -> str:
    """Where the capture sits, from the handshake halves: SYN → SYN/ACK is the round trip from the capture
    point to the server, SYN/ACK → ACK the one to the client. The end with the much shorter half is near."""
    if server_rtt_ms is None or client_rtt_ms is None or server_rtt_ms < 0 or client_rtt_ms < 0:
        return "unknown"
    if server_rtt_ms > CAPTURE_POINT_RATIO * client_rtt_ms:
        return "client"
    if client_rtt_ms > CAPTURE_POINT_RATIO * server_rtt_ms:
        return "server"
    return "middle"


@dataclass(slots=True)
class BatchRecords:
    connections: list[dict[str, Any]] = field(default_factory=list)
    transactions: Iterator[tuple[Any, ...]] = field(default_factory=lambda: iter(()))  # read once
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    flights: dict[str, np.ndarray] = field(default_factory=dict)
    segments: dict[str, np.ndarray] = field(default_factory=dict)
    segments_left_out: int = 0  # connections with data segments whose series did not fit the budget


#: Rows whose responses are looked at together for the TCP analysis (``batch_records``).
_SPAN_GROUP = 65_536

#: The connection columns of ``tcpanalysis.TcpResults`` counted per connection, in the rows' column order.
_TCP_COUNT_COLUMNS = ("retransmissions", "fast_retransmissions", "spurious_retransmissions", "out_of_order",
                      "dup_acks", "zero_window", "window_full", "keep_alives")


def _nan_if_negative(v: np.ndarray) -> np.ndarray:
    """-1 (unknown) → NaN, for a nullable integer column built from arrays."""
    return np.where(v >= 0, v, np.nan)


def batch_records(conns: list[Connection], rows: dict[str, np.ndarray], keep_segments: int = 0) -> BatchRecords:
    """Records of connections finished together, with their per-packet ``rows`` (``SegmentLog.pop``).
    ``keep_segments``: how many per-packet series rows the caller still wants (0: none). The transactions
    come as they are read (``BatchRecords.transactions``), each connection's rows let go as they are made."""
    out = BatchRecords()
    n = len(conns)
    uids: list[str] = []
    conn_rows: list[dict[str, Any]] = []
    tx_rows: list[TransactionRows | None] = []
    # the responses the TCP analysis places (those with a span, sent while the connection was logged): their
    # connection, row (in it) and span, in row order; found ``_SPAN_GROUP`` rows at a time (a batch's arrays
    # per row are those of the placed responses, bounded by the segment log, not of every row)
    parts: list[tuple[np.ndarray, ...]] = []
    starts, ends, seen_s = array("q"), array("q"), array("d")  # the group's rows' spans and response times
    counts: list[int] = []  # the group's connections' rows
    limits_s: list[float] = []  # per connection: the segment log's end (NaN: the whole connection logged)

    def place() -> None:
        nonlocal starts, ends, seen_s
        first_conn = len(conn_rows) - len(counts)
        span_start, span_end = np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)
        seen = np.array(seen_s, dtype=np.float64)
        starts, ends, seen_s = array("q"), array("q"), array("d")
        row_conn = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        limit_s = np.array(limits_s, dtype=np.float64)[row_conn]
        reaches = ~np.isnan(limit_s) & (np.isnan(seen) | (seen >= limit_s))  # still sent after the log's end
        placed = np.nonzero((span_start >= 0) & ~reaches)[0]
        first_row = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        conn = row_conn[placed]
        parts.append((conn + first_conn, placed - first_row[conn], span_start[placed], span_end[placed]))
        counts.clear()
        limits_s.clear()

    for conn in conns:
        row, txs, anomalies = _connection_records(conn)
        uids.append(row["uid"])
        conn_rows.append(row)
        tx_rows.append(txs)
        out.anomalies.extend(anomalies)
        txs.span_parts(starts, ends, seen_s)
        counts.append(len(txs))
        limits_s.append(conn.log_limit_ns / 1e9 if conn.log_limit_ns is not None else float("nan"))
        if len(starts) >= _SPAN_GROUP:
            place()
    if counts:
        place()

    def joined(k: int) -> np.ndarray:
        return np.concatenate([part[k] for part in parts]) if parts else np.zeros(0, dtype=np.int64)

    span_conn, span_row = joined(0), joined(1)  # the transaction row (in its connection) of each span, in order

    def ns(v: int | None) -> int:
        return v if v is not None else -1

    inputs = tcpanalysis.ConnInputs(
        serials=np.array([cn.serial for cn in conns], dtype=np.int64),
        client_is_lo=np.array([cn.client_is_lo for cn in conns], dtype=bool),
        syn_seen=np.array([cn.syn_seen for cn in conns], dtype=bool),
        irtt_ns=np.array([ns(cn.irtt_ns) for cn in conns], dtype=np.int64),
        server_rtt_ns=np.array([round(r["syn_to_synack_ms"] * 1e6) if r["syn_to_synack_ms"] is not None else -1
                                for r in conn_rows], dtype=np.int64),
    )
    spans = tcpanalysis.Spans(span_conn, joined(2), joined(3))
    parts.clear()
    res = tcpanalysis.analyze(rows, inputs, spans)
    # per connection (each result column made a list once: no numpy scalar per connection and column)
    tcp_columns = {name: getattr(res, name).tolist() for name in _TCP_COUNT_COLUMNS}
    tcp_columns["initial_window_bytes"] = [v if v >= 0 else None for v in res.initial_window_bytes.tolist()]
    for name in ("rtt_min_ms", "rtt_median_ms", "rtt_max_ms"):
        tcp_columns[name] = [None if v != v else v for v in getattr(res, name).tolist()]
    tcp_columns["rtt_samples"] = res.rtt_samples.tolist()
    names = tuple(tcp_columns)
    for row, values in zip(conn_rows, zip(*tcp_columns.values(), strict=True), strict=True):
        row.update(zip(names, values, strict=True))
        row["capture_point"] = capture_point(row["syn_to_synack_ms"], row["synack_to_ack_ms"])
    out.connections = conn_rows
    out.transactions = _transactions(tx_rows, uids, span_conn, span_row, res)
    # flights
    f_span = res.flight_span
    f_conn = spans.conn[f_span] if len(f_span) else f_span
    depth = span_row + 1
    out.flights = {
        "uid": np.array(uids, dtype=object)[f_conn] if n else np.zeros(0, dtype=object),
        "trans_depth": depth[f_span] if len(f_span) else f_span,
        "warmth": res.warmth[f_span] if len(f_span) else np.zeros(0, dtype=object),
        "round": res.flight_round,
        "ts_start": res.flight_ts_start / 1e9,
        "ts_end": res.flight_ts_end / 1e9,
        "bytes": res.flight_bytes,
        "packets": res.flight_packets,
        "peak_bytes_in_flight": _nan_if_negative(res.flight_peak_bif),
    }
    out.segments, out.segments_left_out = _segments(rows, res, np.array(uids, dtype=object), keep_segments)
    return out


#: Transactions whose TCP columns are made into lists at once (``_transactions``).
_WINDOW = 8192


def _transactions(tx_rows: list[TransactionRows | None], uids: list[str], span_conn: np.ndarray,
                  span_row: np.ndarray, res: tcpanalysis.TcpResults) -> Iterator[tuple[Any, ...]]:
    """The transaction rows of a batch: the HTTP columns, then the TCP ones of the placed responses (spans
    in row order), connection by connection. Each connection's rows are let go as they are read, and the
    per-span results are made Python values ``_WINDOW`` spans at a time (a connection with a million
    responses holds neither its rows as tuples nor its results as lists)."""
    n_spans = len(span_row)
    k = 0  # the next span (spans follow the transactions' order)
    base = 0  # the span the window starts at
    window: tuple[list[Any], ...] = ([], [], [], [], [], [])
    for i, txs in enumerate(tx_rows):
        tx_rows[i] = None
        assert txs is not None
        for j, tx in enumerate(txs.drain(uids[i])):
            if k - base >= len(window[0]) and k < n_spans:
                base, stop = k, k + _WINDOW
                window = (span_conn[base:stop].tolist(), span_row[base:stop].tolist(),
                          res.warmth[base:stop].tolist(),
                          [r if r > 0 else None for r in res.rounds[base:stop].tolist()],
                          [v if v >= 0 else None for v in res.peak_bytes_in_flight[base:stop].tolist()],
                          [None if v != v else v for v in res.sender_idle_ms[base:stop].tolist()])
            w = k - base
            if k < n_spans and window[1][w] == j and window[0][w] == i:
                warmth, rounds, peak, idle = window[2][w], window[3][w], window[4][w], window[5][w]
                k += 1
            else:
                warmth = rounds = peak = idle = None
            yield (*tx, warmth, rounds, peak, *_ttfb_transfer(tx), idle)
        del txs


def _segments(rows: dict[str, np.ndarray], res: tcpanalysis.TcpResults, uids: np.ndarray, budget: int
              ) -> tuple[dict[str, np.ndarray], int]:
    """The per-packet series of data segments, whole connections only, within ``budget`` rows; and the
    number of connections with data segments left out."""
    by_c = res.row_order  # analyze()'s per-row outputs follow this order of the input rows
    seglen = rows["seglen"][by_c]
    data = np.nonzero(seglen > 0)[0]
    if not len(data):
        return {}, 0
    per_conn = np.bincount(res.row_conn[data], minlength=len(uids))
    fits = np.cumsum(per_conn) <= budget
    left_out = int(np.count_nonzero((per_conn > 0) & ~fits))
    data = data[fits[res.row_conn[data]]]
    if not len(data):
        return {}, left_out
    bif = rows["bif"][by_c][data]
    return {
        "uid": uids[res.row_conn[data]],
        "from_server": res.row_dir[data] == 1,
        "ts": rows["ts"][by_c][data] / 1e9,
        "frame": rows["frame"][by_c][data],
        "seq_end": rows["seq"][by_c][data] + seglen[data] + ((rows["flags"][by_c][data] & SYN) != 0),
        "payload_bytes": seglen[data],
        "bytes_in_flight": _nan_if_negative(bif),
        "retransmission": res.row_retransmission[data],
        "round": res.row_round[data],
    }, left_out


def _ttfb_transfer(tx: tuple[Any, ...]) -> tuple[float | None, float | None]:
    req_start, req_end = tx[_TX["ts_request_start"]], tx[_TX["ts_request_end"]]
    resp_start, resp_end = tx[_TX["ts_response_start"]], tx[_TX["ts_response_end"]]
    sent = req_end if req_end is not None else req_start
    ttfb = (resp_start - sent) * 1e3 if sent is not None and resp_start is not None else None
    transfer = (resp_end - resp_start) * 1e3 if resp_start is not None and resp_end is not None else None
    return ttfb, transfer


def _h2_columns(facts: dict[str, Any]) -> dict[str, Any]:
    """HTTP/2 connection facts (``Http2Connection.transaction_rows``) as connection columns."""
    if "settings" not in facts:
        return {}
    goaway = facts.get("goaway") or {}
    return {
        "h2_max_streams_setting": (facts["settings"].get("server") or {}).get("MAX_CONCURRENT_STREAMS"),
        "h2_goaway_by": goaway.get("by"),
        "h2_goaway_error": goaway.get("error"),
        "h2_goaway_last_stream": goaway.get("last_stream_id"),
        "h2_pushed_streams": facts.get("pushed_streams"),
        "h2_reset_streams": facts.get("reset_streams"),
    }


def _connection_records(conn: Connection) -> tuple[dict[str, Any], TransactionRows, list[dict[str, Any]]]:
    ends = conn.endpoint(0), conn.endpoint(1)
    uid = connection_uid(conn, ends)
    (cip, cport), (sip, sport) = ends
    handler = conn.handler
    assert isinstance(handler, (ConnectionHandler, Http1Connection, SealedHttp1)), "the pipeline's handlers"
    tx_rows, facts = handler.transaction_rows(sip, sport)
    c, s = conn.dirs
    close_ns = conn.close_ns
    if conn.rst_ns is not None and (close_ns == conn.rst_ns):
        close_reason = "rst"
        close_by = "client" if conn.rst_dir == 0 else "server" if conn.rst_dir == 1 else "unknown"
    elif close_ns is not None:
        close_reason = "fin"
        close_by = "client" if close_ns == c.fin_ns else "server"
    else:
        close_reason, close_by = "capture_end", "open"
    irtt = conn.irtt_ns / 1e6 if conn.irtt_ns is not None else None
    syn_half = synack_half = None
    if conn.syn_ns is not None and conn.synack_ns is not None and conn.synack_ns >= conn.syn_ns:
        syn_half = _ms(conn.syn_ns, conn.synack_ns)
        if conn.ack_ns is not None:
            synack_half = _ms(conn.synack_ns, conn.ack_ns)
    last_resp = facts["last_response_end_ns"]
    idle_after_last = None
    if last_resp is not None and close_ns is not None and close_ns >= last_resp:
        idle_after_last = (close_ns - last_resp) / 1e6
    protocol = facts["protocol"]
    row = {
        "uid": uid,
        "client_ip": cip,
        "client_port": cport,
        "server_ip": sip,
        "server_port": sport,
        "transport": "tcp",
        "protocol": protocol,
        "tls": False if protocol != "unknown" else None,
        "syn_seen": conn.syn_seen,
        "ts_start": conn.ts_start_ns / 1e9,
        "ts_end": conn.ts_end_ns / 1e9,
        "handshake_rtt_ms": irtt,
        "syn_to_synack_ms": syn_half,
        "synack_to_ack_ms": synack_half,
        "requests": facts["requests"],
        "pipelined_max": facts["pipelined_max"],
        "idle_max_ms": facts["idle_max_ms"],
        "idle_after_last_ms": idle_after_last,
        "close_by": close_by,
        "close_reason": close_reason,
        "client_bytes": c.payload_bytes + c.gap_bytes,  # sequence space, as Zeek's orig_bytes
        "server_bytes": s.payload_bytes + s.gap_bytes,
        "client_packets": c.packets,
        "server_packets": s.packets,
        "max_bytes_in_flight": s.max_bytes_in_flight if s.max_bytes_in_flight >= 0 else None,
        "max_bytes_in_flight_client": c.max_bytes_in_flight if c.max_bytes_in_flight >= 0 else None,
        "gap_bytes": c.gap_bytes + s.gap_bytes,
        "client_from": conn.client_from,
        "keep_alive_timeout_s": facts["keep_alive_timeout_s"],
        "keep_alive_max": facts["keep_alive_max"],
        "first_frame": conn.first_frame,
        "max_concurrent_streams": facts.get("max_concurrent_streams"),
        **_h2_columns(facts),
    }
    tls = facts.get("tls")
    if tls is not None:
        row.update(tls)
        row["tls_decrypted"] = facts.get("tls_decrypted")
    anomalies: list[dict[str, Any]] = []
    start_s = conn.ts_start_ns / 1e9
    if not conn.syn_seen:
        anomalies.append({"uid": uid, "ts": start_s, "name": "midstream_start",
                          "detail": f"no SYN seen; client chosen by {conn.client_from}"})
    for d, name in ((c, "client→server"), (s, "server→client")):
        if d.gaps:
            anomalies.append({"uid": uid, "ts": start_s, "name": "seq_gap",
                              "detail": f"{name}: {d.gaps} hole(s), {d.gap_bytes - d.truncated_bytes} bytes "
                                        "not in the capture"})
        if d.conflicts:
            anomalies.append({"uid": uid, "ts": start_s, "name": "overlap_conflict",
                              "detail": f"{name}: {d.conflicts} segment(s) carried other bytes ({d.conflict_bytes} "
                                        "differing) where an earlier copy had been captured; the first copy "
                                        "was kept"})
        if d.truncated:
            anomalies.append({"uid": uid, "ts": start_s, "name": "truncated_caplen",
                              "detail": f"{name}: {d.truncated} packet(s) cut by the snaplen, "
                                        f"{d.truncated_bytes} bytes not captured"})
    if conn.kept_limit_hit:
        anomalies.append({"uid": uid, "ts": start_s, "name": "overlap_check_limit",
                          "detail": f"at {conn.kept_limit_hit} chunk end(s), MAX_KEPT_BYTES left fewer unacknowledged "
                                    "bytes kept than were in flight: later copies of the others were not compared"})
    if conn.held_limit_hit:
        anomalies.append({"uid": uid, "ts": start_s, "name": "held_bytes_limit",
                          "detail": "more than MAX_HELD_BYTES_PER_STREAM bytes waited behind a hole; "
                                    "it was declared a gap"})
    if conn.log_limit_ns is not None:
        anomalies.append({"uid": uid, "ts": conn.log_limit_ns / 1e9, "name": "tcp_analysis_limit",
                          "detail": f"{conn.log_limit} ({conn.log_rows} packets of this connection logged): "
                                    "the TCP analysis (retransmissions, RTT, flights, warmth, series) "
                                    "covers the packets before this time only"})
    if conn.evicted_ns is not None:
        anomalies.append({"uid": uid, "ts": conn.evicted_ns / 1e9, "name": "tracked_connections_limit",
                          "detail": f"more than MAX_TRACKED_CONNECTIONS ({MAX_TRACKED_CONNECTIONS}) connections "
                                    f"at once: this {conn.evicted_state} connection was finished early; a later "
                                    "packet of its 4-tuple starts a new connection"})
    for ts_ns, name, detail in handler.anomalies():
        anomalies.append({"uid": uid, "ts": ts_ns / 1e9, "name": name, "detail": detail})
    return row, tx_rows, anomalies
