"""Tests of analyzer.metrics on a hand-built capture whose figures are computed by hand below.

The capture (``sample_analysis``), client 10.0.0.1, times relative to T0:
  api.example 192.0.2.10:80, HTTP/1.1 keep-alive, server advertises timeout=2:
    a1  SYN at 0.000, iRTT 10 ms; requests at 0.010, 0.530 (idle 500), 1.560 (idle 1000);
        server FIN 2003 ms after the last response.
    a2  SYN at 0.300 while a1 is idle since 0.030 -> avoidable (a1, idle 270 ms); iRTT 12; requests at 0.312,
        0.900 (idle 500); server FIN after 2001 ms.
    a3  SYN at 1.000 while a1 (idle since 0.560) and a2 (idle since 0.950) are idle -> avoidable, reusable a2
        (stays idle the longest), idle 50 ms; iRTT 14; one request; server FIN after 1200 ms (an outlier).
    a4  no SYN seen (midstream), handshake imputed from the server median (10, 12, 14, 11 -> 11.5);
        requests at 4.000 (depth, reuse and keep-alive unknown) and 4.500 (idle 450, reused); open at
        capture end.
    a5  SYN at 4.200, iRTT 11, never used (0 requests), client FIN: not avoidable because a4's first
        response has keep_alive unknown.
  legacy.example 192.0.2.20:80, HTTP/1.0, one request per connection, Connection: close:
    b1, b2, b3  iRTT 40, 44, 42; b1/b2 closed by the server right after the response, b3 by a client RST.
  secure.example 198.51.100.5:443, TLS, not decrypted (requests unknown):
    c1  iRTT 20 + TLS 1.2 45 ms (3 round trips); c2 no SYN (TCP imputed 20) + TLS 1.3 25 ms (2 round trips).

TCP facts (``TCP``, ``TX_TCP``; figures of the warmth and TCP-health tests):
  responses (body, warmth, rounds, TTFB ms, transfer ms): a1 1000 cold 1 10 0, 40000 warm 2 12 15,
    40000 cooled 4 11 35; a2 40000 cold 4 14 40, 1000 warm 1 9 0; a3 200000 cold 6 16 70; a4 1000 unknown,
    1000 warm 1 8 0 (depth unknown: its flight cannot be joined); b1 1000 cold 1 40 0.5; b2 1000 cold 1 44
    0.4; b3 size unknown, cold, TTFB 42.
  flights (``flight_rows``): a1#1 1300; a1#2 14000, 27000; a1#3 4000, 8000, 16000, 13000; a2#1 4000, 8000,
    16000, 13000; a2#2 1300; a3#1 4000, 8000, 16000, 32000, 64000, 76000; a4 (no depth) 1200; b1 1200;
    b2 1100; b3 1000 (size unknown).
  connections: a1 3 retransmissions (1 fast, 1 spurious), 1 out of order, 4 dup ACKs, 1 window full,
    50 packets, RTT 9.5 / 10.2 ms, 12 samples, client side; a2 none, 22 packets, RTT 11.0 / 12.4, 5 samples;
    a3 2 retransmissions (other), 2 dup ACKs, 1 zero window, 17 packets, RTT 13.0 / 14.0, 3 samples;
    a4 8 packets, capture point unknown; a5 5 packets; b1..b3 10 packets each, RTT 39 / 40, 43 / 44,
    41 / 42, 1 sample each, capture points middle, middle, server; c1, c2 nothing known.
  segments (``segment_rows``, server → client unless said): a1 at 15 ms 1300 in flight, then 535, 535.2,
    545 (retransmission), 550 ms; a3 at 30, 31, 45, 46 ms; b1 at 60 ms; a4 one of unknown bytes in flight;
    a1 and a2 client segments.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import analyzer.metrics as metrics
from analyzer.analysis import Analysis
from analyzer.tables import (
    ANOMALY_COLUMNS,
    CONNECTION_COLUMNS,
    FLIGHT_COLUMNS,
    SEGMENT_COLUMNS,
    TABLES,
    TRANSACTION_COLUMNS,
    empty_frame,
    frame_from_rows,
)

T0 = 1_700_000_000.0
CLIENT = "10.0.0.1"
API, LEGACY, SECURE = "192.0.2.10", "192.0.2.20", "198.51.100.5"


def _conn(uid: str, port: int, server: str, server_port: int, start: float, end: float, **extra: Any
          ) -> dict[str, Any]:
    row: dict[str, Any] = {"uid": uid, "client_ip": CLIENT, "client_port": port, "server_ip": server,
                           "server_port": server_port, "transport": "tcp", "tls": False, "syn_seen": True,
                           "ts_start": T0 + start, "ts_end": T0 + end, "close_reason": "fin"}
    row.update(extra)
    return row


def _tx(uid: str, depth: int | None, host: str, server: str, req: float, resp_end: float, *,
        idle: float | None = None, reused: bool | None = None, keep_alive: bool | None = True,
        version: str = "HTTP/1.1", target: str = "/", status: int = 200, method: str = "GET",
        tcp: tuple[Any, ...] = (1000, None, None, None, None)) -> dict[str, Any]:
    body, warmth, rounds, ttfb, transfer = tcp
    return {"response_body_bytes": body, "warmth": warmth, "rounds": rounds, "ttfb_ms": ttfb,
            "transfer_ms": transfer, "uid": uid, "trans_depth": depth, "method": method, "host": host, "target": target,
            "http_version": version, "status": status, "ts_request_start": T0 + req,
            "ts_request_end": T0 + req + 0.001, "ts_response_start": T0 + resp_end - 0.005,
            "ts_response_end": T0 + resp_end, "idle_before_ms": idle,
            "reused": (depth is not None and depth > 1) if reused is None and depth is not None else reused,
            "pipelined": False, "keep_alive": keep_alive, "server_ip": server,
            "server_port": 443 if server == SECURE else 80}


# uid -> (retransmissions, fast, spurious, out of order, dup ACKs, zero window, window full, client packets,
#         server packets, rtt min, rtt median, rtt samples, capture point, server bytes)
TCP: dict[str, tuple[Any, ...]] = {
    "a1": (3, 1, 1, 1, 4, 0, 1, 20, 30, 9.5, 10.2, 12, "client", 100_000),
    "a2": (0, 0, 0, 0, 0, 0, 0, 10, 12, 11.0, 12.4, 5, "client", 45_000),
    "a3": (2, 0, 0, 0, 2, 1, 0, 8, 9, 13.0, 14.0, 3, "client", 210_000),
    "a4": (0, 0, 0, 0, 0, 0, 0, 4, 4, None, None, 0, "unknown", 2_000),
    "a5": (0, 0, 0, 0, 0, 0, 0, 3, 2, None, None, 0, "client", 0),
    "b1": (0, 0, 0, 0, 0, 0, 0, 5, 5, 39.0, 40.0, 1, "middle", 1_500),
    "b2": (0, 0, 0, 0, 0, 0, 0, 5, 5, 43.0, 44.0, 1, "middle", 1_400),
    "b3": (0, 0, 0, 0, 0, 0, 0, 5, 5, 41.0, 42.0, 1, "server", None),
}
_TCP_NAMES = ("retransmissions", "fast_retransmissions", "spurious_retransmissions", "out_of_order", "dup_acks",
              "zero_window", "window_full", "client_packets", "server_packets", "rtt_min_ms", "rtt_median_ms",
              "rtt_samples", "capture_point", "server_bytes")


def connection_rows() -> list[dict[str, Any]]:
    rows = _connection_rows()
    for row in rows:
        if row["uid"] in TCP:
            row.update(zip(_TCP_NAMES, TCP[row["uid"]], strict=True))
    return rows


def _connection_rows() -> list[dict[str, Any]]:
    api = {"protocol": "http/1.1", "keep_alive_timeout_s": 2.0}
    return [
        _conn("a1", 50001, API, 80, 0.000, 3.604, handshake_rtt_ms=10.0, requests=3, close_by="server",
              idle_after_last_ms=2003.0, **api),
        _conn("a2", 50002, API, 80, 0.300, 2.952, handshake_rtt_ms=12.0, requests=2, close_by="server",
              idle_after_last_ms=2001.0, **api),
        _conn("a3", 50003, API, 80, 1.000, 2.301, handshake_rtt_ms=14.0, requests=1, close_by="server",
              idle_after_last_ms=1200.0, **api),
        _conn("a4", 50004, API, 80, 4.000, 4.600, syn_seen=False, requests=2, close_by="open",
              close_reason="capture_end", **api),
        _conn("a5", 50005, API, 80, 4.200, 4.900, handshake_rtt_ms=11.0, requests=0, close_by="client",
              protocol="unknown"),
        _conn("b1", 50010, LEGACY, 80, 5.000, 5.101, handshake_rtt_ms=40.0, requests=1, close_by="server",
              idle_after_last_ms=0.5, protocol="http/1.0"),
        _conn("b2", 50011, LEGACY, 80, 5.200, 5.301, handshake_rtt_ms=44.0, requests=1, close_by="server",
              idle_after_last_ms=0.4, protocol="http/1.0"),
        _conn("b3", 50012, LEGACY, 80, 5.400, 5.501, handshake_rtt_ms=42.0, requests=1, close_by="client",
              close_reason="rst", idle_after_last_ms=1.0, protocol="http/1.0"),
        _conn("c1", 50020, SECURE, 443, 6.000, 7.000, handshake_rtt_ms=20.0, protocol="tls", tls=True,
              tls_version="TLS 1.2", sni="Secure.Example", tls_handshake_ms=45.0, close_by="client"),
        _conn("c2", 50021, SECURE, 443, 6.500, 7.000, syn_seen=False, protocol="tls", tls=True,
              tls_version="TLS 1.3", tls_resumed=False, sni="secure.example", tls_handshake_ms=25.0,
              close_by="unknown", close_reason=None),
    ]


# per transaction row: (response_body_bytes, warmth, rounds, ttfb_ms, transfer_ms)
TX_TCP: list[tuple[Any, ...]] = [
    (1000, "cold", 1, 10.0, 0.0), (40000, "warm", 2, 12.0, 15.0), (40000, "cooled", 4, 11.0, 35.0),
    (40000, "cold", 4, 14.0, 40.0), (1000, "warm", 1, 9.0, 0.0), (200000, "cold", 6, 16.0, 70.0),
    (1000, None, None, None, None), (1000, "warm", 1, 8.0, 0.0),
    (1000, "cold", 1, 40.0, 0.5), (1000, "cold", 1, 44.0, 0.4), (None, "cold", None, 42.0, None),
]


def transaction_rows() -> list[dict[str, Any]]:
    api, legacy = "api.example", "legacy.example"
    t = TX_TCP
    return [
        _tx("a1", 1, api, API, 0.010, 0.030, tcp=t[0]),
        _tx("a1", 2, api, API, 0.530, 0.560, idle=500.0, tcp=t[1]),
        _tx("a1", 3, api, API, 1.560, 1.600, idle=1000.0, target="/three", tcp=t[2]),
        _tx("a2", 1, api, API, 0.312, 0.400, tcp=t[3]),
        _tx("a2", 2, api, API, 0.900, 0.950, idle=500.0, tcp=t[4]),
        _tx("a3", 1, "API.example", API, 1.014, 1.100, tcp=t[5]),
        _tx("a4", None, api, API, 4.000, 4.050, keep_alive=None, tcp=t[6]),
        _tx("a4", None, api, API, 4.500, 4.550, idle=450.0, reused=True, tcp=t[7]),
        _tx("b1", 1, legacy, LEGACY, 5.040, 5.100, keep_alive=False, version="HTTP/1.0", tcp=t[8]),
        _tx("b2", 1, legacy, LEGACY, 5.244, 5.300, keep_alive=False, version="HTTP/1.0", tcp=t[9]),
        _tx("b3", 1, legacy, LEGACY, 5.442, 5.500, keep_alive=False, version="HTTP/1.0", status=404, tcp=t[10]),
    ]


def flight_rows() -> list[dict[str, Any]]:
    flights = [("a1", 1, "cold", [1300]), ("a1", 2, "warm", [14000, 27000]),
               ("a1", 3, "cooled", [4000, 8000, 16000, 13000]), ("a2", 1, "cold", [4000, 8000, 16000, 13000]),
               ("a2", 2, "warm", [1300]), ("a3", 1, "cold", [4000, 8000, 16000, 32000, 64000, 76000]),
               ("a4", None, "warm", [1200]), ("b1", 1, "cold", [1200]), ("b2", 1, "cold", [1100]),
               ("b3", 1, "cold", [1000])]
    return [{"uid": uid, "trans_depth": depth, "warmth": warmth, "round": r, "bytes": size, "packets": 1}
            for uid, depth, warmth, sizes in flights for r, size in enumerate(sizes, start=1)]


def segment_rows() -> list[dict[str, Any]]:
    def seg(uid: str, ms: float, bif: int | None, *, start: float, server: bool = True, retx: bool = False,
            rnd: int = 1) -> dict[str, Any]:
        return {"uid": uid, "from_server": server, "ts": T0 + start + ms / 1000, "seq_end": 0,
                "payload_bytes": 1448, "bytes_in_flight": bif, "retransmission": retx, "round": rnd}

    return [
        seg("a1", 10.0, 77, start=0.0, server=False, rnd=0), seg("a1", 15.0, 1300, start=0.0),
        seg("a1", 535.0, 1448, start=0.0), seg("a1", 535.2, 2896, start=0.0),
        seg("a1", 545.0, 1448, start=0.0, retx=True, rnd=2), seg("a1", 550.0, 4344, start=0.0, rnd=2),
        seg("a2", 12.0, 80, start=0.3, server=False, rnd=0),
        seg("a3", 30.0, 1448, start=1.0), seg("a3", 31.0, 2896, start=1.0),
        seg("a3", 45.0, 2896, start=1.0, rnd=2), seg("a3", 46.0, 5792, start=1.0, rnd=2),
        seg("a4", 10.0, None, start=4.0),
        seg("b1", 60.0, 1500, start=5.0),
    ]


def anomaly_rows() -> list[dict[str, Any]]:
    return [
        {"uid": "a4", "ts": T0 + 4.0, "name": "midstream_start", "detail": "first packet without SYN"},
        {"uid": None, "ts": None, "name": "truncated_caplen", "detail": None},
    ]


def sample_summary() -> dict[str, Any]:
    return {"captures": ["sample.pcap"], "file_format": "pcap", "packets_read": 120, "packets_analyzed": 110,
            "packets_skipped": {"non_ip": 6, "non_tcp_udp": 4}, "truncated_packets": 1,
            "reader_skipped": {}, "kernel_drops": 0, "ts_first": T0, "ts_last": T0 + 7.0,
            "duration_s": 7.0, "connections": 10, "connections_with_syn": 8, "transactions": 11,
            "anomalies": {"midstream_start": 1, "truncated_caplen": 1}}


def sample_analysis() -> Analysis:
    return Analysis(connections=frame_from_rows(connection_rows(), CONNECTION_COLUMNS),
                    transactions=frame_from_rows(transaction_rows(), TRANSACTION_COLUMNS),
                    anomalies=frame_from_rows(anomaly_rows(), ANOMALY_COLUMNS),
                    summary=sample_summary(),
                    flights=frame_from_rows(flight_rows(), FLIGHT_COLUMNS),
                    segments=frame_from_rows(segment_rows(), SEGMENT_COLUMNS))


def empty_analysis() -> Analysis:
    return Analysis(connections=empty_frame(CONNECTION_COLUMNS),
                    transactions=empty_frame(TRANSACTION_COLUMNS), anomalies=empty_frame(ANOMALY_COLUMNS),
                    summary={})


def with_missing_rows(analysis: Analysis) -> Analysis:
    """``analysis`` plus a connection, a transaction and an anomaly with every nullable field missing."""
    return Analysis(
        connections=pd.concat([analysis.connections, frame_from_rows([{"uid": "z1"}], CONNECTION_COLUMNS),
                               frame_from_rows([{}], CONNECTION_COLUMNS)], ignore_index=True),
        transactions=pd.concat([analysis.transactions, frame_from_rows([{"uid": "z1"}], TRANSACTION_COLUMNS),
                                frame_from_rows([{}], TRANSACTION_COLUMNS)], ignore_index=True),
        anomalies=pd.concat([analysis.anomalies, frame_from_rows([{}], ANOMALY_COLUMNS)], ignore_index=True),
        summary=analysis.summary,
        flights=pd.concat([analysis.flights, frame_from_rows([{}], FLIGHT_COLUMNS)], ignore_index=True),
        segments=pd.concat([analysis.segments, frame_from_rows([{"uid": "z1"}, {}], SEGMENT_COLUMNS)],
                           ignore_index=True))


@pytest.fixture
def sample() -> Analysis:
    return sample_analysis()


# --- reuse -----------------------------------------------------------------------------------------------

def test_connection_requests(sample: Analysis) -> None:
    requests = metrics.connection_requests(sample.connections, sample.transactions)
    assert str(requests.dtype) == "Int64"
    assert requests.tolist()[:8] == [3, 2, 1, 2, 0, 1, 1, 1]
    assert requests.isna().tolist()[8:] == [True, True]  # encrypted, nothing visible


def test_requests_missing_column_falls_back_to_transaction_rows(sample: Analysis) -> None:
    connections = sample.connections.copy()
    connections["requests"] = pd.array([None] * len(connections), dtype="Int64")
    requests = metrics.connection_requests(connections, sample.transactions)
    assert requests.tolist()[:8] == [3, 2, 1, 2, 0, 1, 1, 1]


def test_requests_per_connection_histogram(sample: Analysis) -> None:
    hist = metrics.requests_per_connection_histogram(sample.connections, sample.transactions)
    assert hist["requests"].tolist() == [0, 1, 2, 3]
    assert hist["connections"].tolist() == [1, 4, 2, 1]
    assert hist["share"].tolist() == pytest.approx([1 / 8, 4 / 8, 2 / 8, 1 / 8])


def test_transaction_reused_falls_back_to_depth() -> None:
    rows = [{"uid": "x", "trans_depth": 1}, {"uid": "x", "trans_depth": 2}, {"uid": "x", "reused": True},
            {"uid": "x", "reused": False, "trans_depth": 5}, {"uid": "x"}]
    frame = frame_from_rows(rows, TRANSACTION_COLUMNS)
    assert metrics.transaction_reused(frame).tolist() == [False, True, True, False, False]


def test_reuse_stats(sample: Analysis) -> None:
    stats = metrics.reuse_stats(sample.connections, sample.transactions)
    assert stats == {
        "connections": 10, "connections_counted": 8, "connections_http": 7, "connections_unused": 1,
        "connections_single_request": 4, "connections_reused": 3, "transactions": 11,
        "transactions_reused": 4, "reuse_ratio": round(4 / 11, 6),
        "requests_per_connection_mean": round(11 / 7, 3), "requests_per_connection_median": 1.0,
        "requests_per_connection_max": 3,
    }


def test_avoidable_connections(sample: Analysis) -> None:
    avoidable = metrics.avoidable_connections(sample.connections, sample.transactions)
    assert avoidable["uid"].tolist() == ["a2", "a3"]
    assert avoidable["reusable_uid"].tolist() == ["a1", "a2"]
    assert avoidable["idle_for_ms"].tolist() == pytest.approx([270.0, 50.0])
    assert avoidable["server"].tolist() == ["192.0.2.10:80"] * 2
    assert avoidable["client_ip"].tolist() == [CLIENT] * 2


def test_avoidable_needs_idle_open_and_keep_alive() -> None:
    """Each condition of the definition on its own: D busy, D closed, D announced close, C without SYN,
    another client address, another server port; and the boundary (response end == C's SYN counts)."""
    base = [_conn("d", 1, API, 80, 0.0, 10.0, close_by="server")]
    tx = [_tx("d", 1, "h", API, 0.1, 1.0), _tx("d", 2, "h", API, 3.0, 4.0, idle=2000.0)]

    def judged(candidate: dict[str, Any], transactions: list[dict[str, Any]] = tx) -> list[str]:
        conns = frame_from_rows([*base, candidate], CONNECTION_COLUMNS)
        frame = metrics.avoidable_connections(conns, frame_from_rows(transactions, TRANSACTION_COLUMNS))
        return frame["uid"].tolist()

    assert judged(_conn("c", 2, API, 80, 2.0, 5.0)) == ["c"]  # d idle 1.0 .. 3.0
    assert judged(_conn("c", 2, API, 80, 1.0, 5.0)) == ["c"]  # boundary: response ended at that instant
    assert judged(_conn("c", 2, API, 80, 0.5, 5.0)) == []  # d busy with its first request
    assert judged(_conn("c", 2, API, 80, 3.5, 5.0)) == []  # d busy with its second request
    assert judged(_conn("c", 2, API, 80, 0.05, 5.0)) == []  # d has not finished a response yet
    assert judged(_conn("c", 2, API, 80, 11.0, 12.0)) == []  # d closed
    assert judged(_conn("c", 2, API, 80, 6.0, 7.0)) == ["c"]  # d idle after its last response, still open
    assert judged(_conn("c", 2, API, 80, 2.0, 5.0, syn_seen=False)) == []
    assert judged(_conn("c", 2, API, 8080, 2.0, 5.0)) == []
    assert judged({**_conn("c", 2, API, 80, 2.0, 5.0), "client_ip": "10.0.0.2"}) == []
    closing = [_tx("d", 1, "h", API, 0.1, 1.0, keep_alive=False)]
    assert judged(_conn("c", 2, API, 80, 2.0, 5.0), closing) == []


_INSTANTS = st.sampled_from([0.0, 1.0, 1.5, 2.0, 3.0, 4.0])  # few: openings on interval bounds, ties of ends


@settings(max_examples=300, deadline=None)
@given(conns=st.lists(st.tuples(st.sampled_from([API, API, LEGACY]), st.sampled_from([CLIENT, CLIENT, "10.0.0.2"]),
                                _INSTANTS, st.sampled_from([2.0, 4.0, 9.0]), st.sampled_from([True, True, False]),
                                st.booleans()), min_size=2, max_size=6),
       exchanges=st.lists(st.tuples(st.integers(0, 5), _INSTANTS, st.sampled_from([0.5, 1.0]),
                                    st.sampled_from([True, True, False])), max_size=16))
def test_avoidable_connections_read_only_the_intervals_holding_an_opening(
        conns: list[tuple[str, str, float, float, bool, bool]], exchanges: list[tuple[int, float, float, bool]]
) -> None:
    """``avoidable_connections`` leaves out the idle intervals in which no connection of their key opened
    (``_holding_an_open``); the table (which connections, their reusable connection and its idle time) is
    what every interval gives."""
    from unittest import mock

    from analyzer.metrics import reuse

    rows = [{**_conn(f"c{i}", 50000 + i, server, 80, start, start + length, syn_seen=syn,
                     close_by="open" if still_open else "server"), "client_ip": client}
            for i, (server, client, start, length, syn, still_open) in enumerate(conns)]
    txs = [_tx(f"c{k % len(conns)}", depth, "h", conns[k % len(conns)][0], conns[k % len(conns)][2] + req,
               conns[k % len(conns)][2] + req + took, keep_alive=keep)
           for depth, (k, req, took, keep) in enumerate(exchanges, start=1)]
    connections = frame_from_rows(rows, CONNECTION_COLUMNS)
    transactions = frame_from_rows(txs, TRANSACTION_COLUMNS)
    every = mock.patch.object(reuse, "_holding_an_open", lambda keys, *_: np.ones(len(keys), dtype=bool))
    with every:
        expected = metrics.avoidable_connections(connections, transactions)
    pd.testing.assert_frame_equal(metrics.avoidable_connections(connections, transactions), expected)


# --- idle --------------------------------------------------------------------------------------------------

def test_idle_before_stats(sample: Analysis) -> None:
    assert metrics.idle_before_stats(sample.transactions) == {
        "idle_gaps": 4, "idle_gaps_pipelined": 0, "idle_before_ms_median": 500.0,
        "idle_before_ms_p90": 850.0, "idle_before_ms_max": 1000.0}


def test_idle_before_stats_leaves_out_pipelined() -> None:
    frame = frame_from_rows([{"idle_before_ms": v} for v in (None, -3.0, 10.0, 30.0)], TRANSACTION_COLUMNS)
    stats = metrics.idle_before_stats(frame)
    assert stats["idle_gaps"] == 2 and stats["idle_gaps_pipelined"] == 1
    assert stats["idle_before_ms_median"] == 20.0


def test_idle_after_last(sample: Analysis) -> None:
    idle = metrics.idle_after_last(sample.connections, sample.transactions).set_index("uid")
    assert idle.loc["a1", "idle_after_last_ms"] == 2003.0
    samples = idle.index[idle["timeout_sample"]].tolist()
    assert samples == ["a1", "a2", "a3"]  # b1, b2 announced Connection: close; b3 by the client
    assert idle.loc["b1", "closed_after_close"] and not idle.loc["a1", "closed_after_close"]


def test_infer_idle_timeouts(sample: Analysis) -> None:
    timeouts = metrics.infer_idle_timeouts(sample.connections, sample.transactions)
    assert timeouts["server"].tolist() == ["192.0.2.10:80"]
    row = timeouts.iloc[0]
    # samples 2003, 2001, 1200: median 2001 +- max(3 * MAD 2, 10 % = 200.3) keeps 2003 and 2001.
    assert row["samples"] == 2 and row["outliers"] == 1
    assert row["timeout_s"] == pytest.approx(2.002)
    assert (row["min_s"], row["max_s"]) == pytest.approx((2.001, 2.003))
    assert row["spread_s"] == pytest.approx(0.002)
    assert row["advertised_timeout_s"] == 2.0
    assert row["difference_s"] == pytest.approx(0.002)


def test_infer_idle_timeouts_advertised_only_and_client_side(sample: Analysis) -> None:
    connections = sample.connections.copy()
    connections.loc[connections["uid"] == "b1", "keep_alive_timeout_s"] = 5.0
    timeouts = metrics.infer_idle_timeouts(connections, sample.transactions).set_index("server")
    assert timeouts.loc["192.0.2.20:80", "samples"] == 0
    assert math.isnan(timeouts.loc["192.0.2.20:80", "timeout_s"])
    assert timeouts.loc["192.0.2.20:80", "advertised_timeout_s"] == 5.0
    client = metrics.infer_idle_timeouts(connections, sample.transactions, closed_by="client")
    # a5 (client FIN) has no idle-after-last; b3 closed with RST; c1 has none either.
    assert client.set_index("server").loc["192.0.2.10:80", "samples"] == 0


def test_immediate_server_closes_are_not_timeouts(sample: Analysis) -> None:
    connections = sample.connections.copy()
    connections.loc[connections["uid"] == "a3", "idle_after_last_ms"] = 0.016  # closed right after
    timeouts = metrics.infer_idle_timeouts(connections, sample.transactions)
    row = timeouts.iloc[0]
    assert (row["samples"], row["outliers"], row["immediate_closes"]) == (2, 0, 1)
    assert row["timeout_s"] == pytest.approx(2.002)
    idle = metrics.idle_after_last(connections, sample.transactions).set_index("uid")
    assert not idle.loc["a3", "timeout_sample"]


# --- handshake ---------------------------------------------------------------------------------------------

def test_handshake_costs(sample: Analysis) -> None:
    costs = metrics.handshake_costs(sample.connections).set_index("uid")
    assert costs["tcp_source"].tolist() == ["measured"] * 3 + ["server_median"] + ["measured"] * 5 + [
        "server_median"]
    assert costs.loc["a4", "tcp_handshake_ms"] == 11.5  # median of 10, 12, 14, 11
    assert costs.loc["c1", "setup_ms"] == 65.0 and costs.loc["c1", "setup_round_trips"] == 3.0
    assert costs.loc["c2", "setup_ms"] == 45.0 and costs.loc["c2", "setup_round_trips"] == 2.0
    assert costs.loc["b1", "tls_round_trips"] == 0.0


def test_handshake_excluded_without_server_median() -> None:
    rows = [_conn("x", 1, "192.0.2.99", 80, 0.0, 1.0, syn_seen=False),
            {**_conn("q", 2, "192.0.2.99", 443, 0.0, 1.0), "transport": "udp", "handshake_rtt_ms": 5.0}]
    costs = metrics.handshake_costs(frame_from_rows(rows, CONNECTION_COLUMNS))
    assert costs["tcp_source"].tolist() == ["excluded", "excluded"]
    assert costs["setup_ms"].isna().all()


def test_handshake_totals(sample: Analysis) -> None:
    assert metrics.handshake_totals(sample.connections, sample.transactions) == {
        "handshake_connections_measured": 8, "handshake_connections_imputed": 2,
        "handshake_connections_excluded": 0, "handshake_rtt_ms_median": 17.0,
        "handshake_time_ms_total": 294.5, "tls_handshake_time_ms_total": 70.0,
        "handshake_round_trips_paid": 13.0,
        "handshake_time_ms_saved": 43.5,  # a1: 2 x 10, a2: 12, a4: 11.5
        "handshake_round_trips_saved": 4.0,
        "handshake_time_ms_one_per_request": 219.6,  # api: 8 x 58.5 / 5, legacy: 3 x 42
        "handshake_round_trips_one_per_request": 11.0,
    }


def test_handshake_overhead_per_server(sample: Analysis) -> None:
    overhead = metrics.handshake_overhead(sample.connections, sample.transactions).set_index("server")
    assert overhead.index.tolist() == ["192.0.2.10:80", "192.0.2.20:80", "198.51.100.5:443"]
    api = overhead.loc["192.0.2.10:80"]
    assert (api["connections"], api["connections_imputed"], api["transactions"]) == (5, 1, 8)
    assert api["handshake_time_ms"] == pytest.approx(58.5)
    assert api["handshake_time_ms_saved"] == pytest.approx(43.5)
    assert api["handshake_time_ms_one_per_request"] == pytest.approx(93.6)
    assert api["handshake_rtt_ms_median"] == pytest.approx(11.5)
    secure = overhead.loc["198.51.100.5:443"]
    assert secure["transactions"] == 0 and math.isnan(secure["handshake_time_ms_saved"])


# --- hosts ---------------------------------------------------------------------------------------------

def test_connection_hosts(sample: Analysis) -> None:
    hosts = metrics.connection_hosts(sample.connections, sample.transactions).set_index("uid")
    assert hosts.loc["a3", "host_header"] == "api.example"  # lower-cased
    assert hosts.loc["a5", "host_header"] == "api.example"  # no request: the server's most common Host
    assert hosts.loc["c1", "host"] == "secure.example (198.51.100.5:443)"  # from the SNI


def test_connection_hosts_mode_rules() -> None:
    """A connection's Host header is the one most of its requests carried, ties alphabetical first (case
    and blanks ignored); a connection without requests or SNI takes its server's most common Host (ties
    the same), and one whose server has none stays without."""
    conns = frame_from_rows([_conn("m1", 1001, API, 80, 0.0, 1.0), _conn("m2", 1002, API, 80, 1.0, 2.0),
                             _conn("m3", 1003, API, 80, 2.0, 3.0), _conn("m4", 1004, LEGACY, 80, 3.0, 4.0),
                             _conn("m5", 1005, LEGACY, 80, 4.0, 5.0)], CONNECTION_COLUMNS)
    txs = frame_from_rows([
        _tx("m1", 1, "zeta.example", API, 0.1, 0.2), _tx("m1", 2, "Alpha.example ", API, 0.3, 0.4),
        _tx("m1", 3, "zeta.example", API, 0.5, 0.6),  # zeta 2, alpha 1
        _tx("m2", 1, "zeta.example", API, 1.1, 1.2), _tx("m2", 2, "beta.example", API, 1.3, 1.4),  # a tie
        _tx("m4", 1, " ", LEGACY, 3.1, 3.2),  # blank: no Host
    ], TRANSACTION_COLUMNS)
    hosts = metrics.connection_hosts(conns, txs).set_index("uid")["host_header"]
    # m3: API's requests carry zeta 3 times, beta and alpha once each
    assert hosts.to_dict() == {"m1": "zeta.example", "m2": "beta.example", "m3": "zeta.example",
                               "m4": None, "m5": None}

def test_host_table(sample: Analysis) -> None:
    table = metrics.host_table(sample.connections, sample.transactions)
    assert table["host"].tolist() == ["api.example (192.0.2.10:80)", "legacy.example (192.0.2.20:80)",
                                      "secure.example (198.51.100.5:443)"]
    api, legacy, secure = (table.iloc[i] for i in range(3))
    assert (api["connections"], api["requests"], api["connections_reused"]) == (5, 8, 3)
    assert api["requests_per_connection"] == 2.0 and api["reuse_ratio"] == 0.5
    assert api["new_connections_avoidable"] == 2 and api["idle_before_ms_median"] == 500.0
    assert (api["closes_by_server"], api["closes_by_client"]) == (3, 1)
    assert api["handshake_time_ms"] == pytest.approx(58.5)
    assert api["handshake_time_ms_saved"] == pytest.approx(43.5)
    assert api["idle_timeout_s"] == pytest.approx(2.002)
    assert api["http_versions"] == "HTTP/1.1"
    assert (legacy["connections"], legacy["requests"], legacy["reuse_ratio"]) == (3, 3, 0.0)
    assert legacy["requests_per_connection"] == 1.0 and legacy["closes_by_server"] == 2
    assert legacy["handshake_time_ms"] == 126.0 and legacy["handshake_time_ms_one_per_request"] == 126.0
    assert legacy["http_versions"] == "HTTP/1.0" and math.isnan(legacy["idle_timeout_s"])
    assert secure["requests"] == 0 and math.isnan(secure["reuse_ratio"])
    assert secure["handshake_time_ms"] == 110.0 and secure["handshake_round_trips"] == 5.0


# --- summary, glossary ---------------------------------------------------------------------------------

def test_summary_metrics(sample: Analysis) -> None:
    summary = metrics.summary_metrics(sample)
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    expected = {
        "connections": 10, "transactions": 11, "reuse_ratio": 0.363636, "requests_per_connection_mean": 1.571,
        "requests_per_connection_max": 3, "connections_reused": 3, "new_connections_avoidable": 2,
        "closes_by_server": 5, "closes_by_client": 3, "closes_unknown": 1, "connections_open_at_end": 1,
        "handshake_time_ms_total": 294.5, "handshake_round_trips_paid": 13.0,
        "handshake_round_trips_saved": 4.0, "idle_before_ms_median": 500.0, "hosts": 3,
        "inferred_server_idle_timeouts": [{
            "server": "192.0.2.10:80", "timeout_s": 2.002, "samples": 2, "outliers": 1,
            "immediate_closes": 0, "min_s": 2.001,
            "max_s": 2.003, "spread_s": 0.002, "advertised_timeout_s": 2.0}],
    }
    assert {key: summary[key] for key in expected} == expected


def _check_scalar_types(value: Any) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _check_scalar_types(item)
    elif isinstance(value, list):
        for item in value:
            _check_scalar_types(item)
    else:
        assert value is None or type(value) in (int, float, str), (value, type(value))
        assert not (isinstance(value, float) and not math.isfinite(value))


def test_summary_metrics_empty() -> None:
    summary = metrics.summary_metrics(empty_analysis())
    _check_scalar_types(summary)
    assert summary["connections"] == 0 and summary["transactions"] == 0
    assert summary["reuse_ratio"] is None and summary["requests_per_connection_mean"] is None
    assert summary["new_connections_avoidable"] == 0 and summary["inferred_server_idle_timeouts"] == []
    assert summary["handshake_time_ms_total"] == 0.0 and summary["handshake_rtt_ms_median"] is None
    assert summary["hosts"] == 0


def test_every_function_on_empty_tables() -> None:
    empty = empty_analysis()
    c, t = empty.connections, empty.transactions
    assert metrics.connection_requests(c, t).empty
    assert metrics.requests_per_connection_histogram(c, t).empty
    assert metrics.avoidable_connections(c, t).empty
    assert metrics.idle_after_last(c, t).empty
    assert metrics.infer_idle_timeouts(c, t).empty
    assert metrics.handshake_costs(c).empty
    assert metrics.transaction_costs(c, t).empty
    assert metrics.handshake_overhead(c, t).empty
    assert metrics.connection_hosts(c, t).empty
    assert metrics.host_table(c, t).empty
    assert list(metrics.host_table(c, t).columns)[:3] == ["host", "host_header", "server"]


def test_missing_values_everywhere(sample: Analysis) -> None:
    """All-missing rows change nothing but the counts they belong to."""
    messy = with_missing_rows(sample)
    summary = metrics.summary_metrics(messy)
    _check_scalar_types(summary)
    clean = metrics.summary_metrics(sample)
    assert summary["connections"] == 12 and summary["transactions"] == 13
    assert summary["new_connections_avoidable"] == clean["new_connections_avoidable"]
    assert summary["inferred_server_idle_timeouts"] == clean["inferred_server_idle_timeouts"]
    assert summary["handshake_time_ms_total"] == clean["handshake_time_ms_total"]
    assert summary["handshake_connections_excluded"] == 2
    assert summary["transactions_reused"] == clean["transactions_reused"]
    table = metrics.host_table(messy.connections, messy.transactions)
    assert "?:?" in table["host"].tolist()


def test_every_column_missing_in_a_one_row_table() -> None:
    one = Analysis(connections=frame_from_rows([{}], CONNECTION_COLUMNS),
                   transactions=frame_from_rows([{}], TRANSACTION_COLUMNS),
                   anomalies=frame_from_rows([{}], ANOMALY_COLUMNS))
    summary = metrics.summary_metrics(one)
    _check_scalar_types(summary)
    assert summary["connections"] == 1 and summary["transactions"] == 1 and summary["reuse_ratio"] == 0.0


def test_nan_timestamps_do_not_break_avoidable(sample: Analysis) -> None:
    transactions = sample.transactions.copy()
    transactions.loc[0, "ts_response_end"] = np.nan  # a1's first response never finished
    avoidable = metrics.avoidable_connections(sample.connections, transactions)
    assert avoidable["uid"].tolist() == ["a3"]  # a2 opened while a1's state was unknown


def test_glossary_covers_every_definition_and_names_peers() -> None:
    glossary = metrics.glossary()
    for name in ("requests_per_connection", "reuse_ratio", "new_connections_avoidable", "idle_before_ms",
                 "inferred_server_idle_timeout", "handshake_rtt_ms", "handshake_saved_by_reuse", "host"):
        assert name in glossary
    assert all(text.strip() and "\n" not in text for text in glossary.values())
    assert "Wireshark" in glossary["handshake_rtt_ms"] and "Zeek" in glossary["reuse_ratio"]


@pytest.mark.parametrize(("function", "names"), [
    (metrics.connection_requests, ["requests_per_connection"]),
    (metrics.avoidable_connections, ["new_connections_avoidable"]),
    (metrics.infer_idle_timeouts, ["inferred_server_idle_timeout"]),
    (metrics.handshake_costs, ["handshake_rtt_ms", "connection_setup_cost"]),
    (metrics.host_table, ["per_host_table", "host"]),
    (metrics.size_bucket, ["size_bucket"]),
    (metrics.flight_rounds, ["flight_bytes_by_round", "size_bucket", "rounds"]),
    (metrics.warmth_transfers, ["warmth_transfer_table", "ttfb_ms", "transfer_ms", "rounds", "host"]),
    (metrics.warmth_stats, ["warmth", "ttfb_ms", "transfer_ms", "rounds"]),
    (metrics.series_connections, ["bytes_in_flight_series"]),
    (metrics.tcp_health_table, ["tcp_health_table", "retransmissions_by_kind", "tcp_window_signals", "rtt_ms",
                                "capture_point"]),
])
def test_docstrings_point_at_their_definitions(function: Any, names: list[str]) -> None:
    doc = function.__doc__ or ""
    for name in names:
        assert f"['{name}']" in doc


def test_glossary_defines_the_tcp_metrics_and_names_peers() -> None:
    glossary = metrics.glossary()
    names = list(glossary)
    for name in ("warmth", "rounds", "ttfb_ms", "transfer_ms", "size_bucket", "flight_bytes_by_round",
                 "warmth_transfer_table", "bytes_in_flight_series", "retransmissions_by_kind",
                 "tcp_window_signals", "rtt_ms", "capture_point", "tcp_health_table"):
        assert name in glossary
    assert names.index("host") < names.index("warmth") < names.index("tcp_health_table")  # reading order
    assert "Wireshark" in glossary["retransmissions_by_kind"] and "tcptrace" in glossary["rounds"]
    assert "20" in glossary["bytes_in_flight_series"] and "series_connections_left_out" in glossary[
        "bytes_in_flight_series"]


def test_docs_metrics_md_is_generated_from_the_glossary() -> None:
    path = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
    assert path.read_text(encoding="utf-8") == metrics.glossary_markdown(), (
        "docs/metrics.md is stale: run `python -m analyzer.metrics > docs/metrics.md`")


def test_host_label_drops_a_host_header_that_only_repeats_the_address() -> None:
    from analyzer.metrics.hosts import host_label

    assert host_label("127.0.0.1:8080", "127.0.0.1:8080") == "127.0.0.1:8080"
    assert host_label("127.0.0.1:8080", "127.0.0.1") == "127.0.0.1:8080"
    assert host_label("[::1]:8080", "[::1]:8080") == "[::1]:8080"
    assert host_label("[::1]:8080", "localhost:8080") == "localhost:8080 ([::1]:8080)"
    assert host_label("192.0.2.1:80", None) == "192.0.2.1:80"


# --- warm vs cold -------------------------------------------------------------------------------------------

API_HOST, LEGACY_HOST = "api.example (192.0.2.10:80)", "legacy.example (192.0.2.20:80)"


def test_size_bucket_edges() -> None:
    sizes = pd.array([0, 16383, 16384, 131071, 131072, 1048575, 1048576, 10**9, None, -1], dtype="Int64")
    assert metrics.size_bucket(pd.Series(sizes)).tolist() == [
        "< 16 KiB", "< 16 KiB", "16–128 KiB", "16–128 KiB", "128 KiB–1 MiB", "128 KiB–1 MiB", "≥ 1 MiB",
        "≥ 1 MiB", None, None]


def test_flight_rounds(sample: Analysis) -> None:
    rounds = metrics.flight_rounds(sample.transactions, sample.flights)
    got = [(r["size_bucket"], r["warmth"], r["round"], r["responses"], r["flight_bytes_median"],
            r["responses_total"]) for r in rounds.to_dict("records")]
    assert got == [
        # a1#1 1300, b1 1200, b2 1100 (b3: size unknown; a4: depth unknown, so not joined)
        ("< 16 KiB", "cold", 1, 3, 1200.0, 3),
        ("< 16 KiB", "warm", 1, 1, 1300.0, 1),
        *[("16–128 KiB", "cold", r, 1, b, 1) for r, b in enumerate([4000.0, 8000.0, 16000.0, 13000.0], 1)],
        ("16–128 KiB", "warm", 1, 1, 14000.0, 1), ("16–128 KiB", "warm", 2, 1, 27000.0, 1),
        *[("16–128 KiB", "cooled", r, 1, b, 1) for r, b in enumerate([4000.0, 8000.0, 16000.0, 13000.0], 1)],
        *[("128 KiB–1 MiB", "cold", r, 1, b, 1)
          for r, b in enumerate([4000.0, 8000.0, 16000.0, 32000.0, 64000.0, 76000.0], 1)],
    ]


def test_flight_rounds_caps_rounds_and_takes_medians() -> None:
    """Round r counts only the responses that reached it; the total counts every response of the group;
    an ambiguous (uid, trans_depth) is left out; unknown warmth is left out."""
    tx = frame_from_rows([
        {"uid": "x", "trans_depth": 1, "response_body_bytes": 20_000},
        {"uid": "y", "trans_depth": 1, "response_body_bytes": 30_000},
        {"uid": "z", "trans_depth": 1, "response_body_bytes": 40_000},
        {"uid": "d", "trans_depth": 1, "response_body_bytes": 20_000},
        {"uid": "d", "trans_depth": 1, "response_body_bytes": 900_000},
    ], TRANSACTION_COLUMNS)
    fl = frame_from_rows([
        {"uid": "x", "trans_depth": 1, "warmth": "cold", "round": 1, "bytes": 1000},
        {"uid": "x", "trans_depth": 1, "warmth": "cold", "round": 2, "bytes": 2000},
        {"uid": "x", "trans_depth": 1, "warmth": "cold", "round": 3, "bytes": 4000},
        {"uid": "y", "trans_depth": 1, "warmth": "cold", "round": 1, "bytes": 3000},
        {"uid": "y", "trans_depth": 1, "warmth": "cold", "round": 2, "bytes": 5000},
        {"uid": "z", "trans_depth": 1, "warmth": None, "round": 1, "bytes": 7000},
        {"uid": "d", "trans_depth": 1, "warmth": "warm", "round": 1, "bytes": 9000},
    ], FLIGHT_COLUMNS)
    rounds = metrics.flight_rounds(tx, fl, max_rounds=2)
    assert rounds[["round", "responses", "flight_bytes_median", "responses_total"]].values.tolist() == [
        [1, 2, 2000.0, 2], [2, 2, 3500.0, 2]]
    assert set(rounds["warmth"]) == {"cold"} and set(rounds["size_bucket"]) == {"16–128 KiB"}


def test_warmth_transfers(sample: Analysis) -> None:
    table = metrics.warmth_transfers(sample.connections, sample.transactions)
    got = [(r["host"], r["size_bucket"], r["warmth"], r["responses"], r["ttfb_ms_median"],
            r["transfer_ms_median"], r["rounds_median"]) for r in table.to_dict("records")]
    assert got == [
        (API_HOST, "< 16 KiB", "cold", 1, 10.0, 0.0, 1.0),
        (API_HOST, "< 16 KiB", "warm", 2, 8.5, 0.0, 1.0),  # a2#2 and a4's second (depth unknown)
        (API_HOST, "16–128 KiB", "cold", 1, 14.0, 40.0, 4.0),
        (API_HOST, "16–128 KiB", "warm", 1, 12.0, 15.0, 2.0),
        (API_HOST, "16–128 KiB", "cooled", 1, 11.0, 35.0, 4.0),
        (API_HOST, "128 KiB–1 MiB", "cold", 1, 16.0, 70.0, 6.0),
        (LEGACY_HOST, "< 16 KiB", "cold", 2, 42.0, 0.45, 1.0),  # b3: size unknown
    ]


def test_warmth_stats(sample: Analysis) -> None:
    assert metrics.warmth_stats(sample.transactions) == {
        "responses_cold": 6, "responses_warm": 3, "responses_cooled": 1, "responses_warmth_unknown": 1,
        "ttfb_ms_median_cold": 28.0,  # 10, 14, 16, 40, 42, 44
        "transfer_ms_median_cold": 0.5,  # 0, 0.4, 0.5, 40, 70 (b3 unknown)
        "rounds_median_cold": 1.0,
        "ttfb_ms_median_warm": 9.0, "transfer_ms_median_warm": 0.0, "rounds_median_warm": 1.0,
        "ttfb_ms_median_cooled": 11.0, "transfer_ms_median_cooled": 35.0, "rounds_median_cooled": 4.0,
    }
    summary = metrics.summary_metrics(sample)
    assert summary["responses_cold"] == 6 and summary["ttfb_ms_median_cold"] == 28.0


def test_series_connections(sample: Analysis) -> None:
    picks = metrics.series_connections(sample.connections, sample.transactions, sample.segments)
    # largest: a3 (210 kB); most retransmissions: a1 (3); cooled: a1 (taken); cold: a3, a1 (taken), b1.
    # a2 has only client segments, a4 only one of unknown bytes in flight: not candidates.
    assert picks[["uid", "reason"]].values.tolist() == [["a3", "largest"], ["a1", "retransmissions"],
                                                       ["b1", "cold"]]
    assert picks["server_segments"].tolist() == [4, 5, 1]
    assert picks["host"].tolist() == [API_HOST, API_HOST, LEGACY_HOST]
    assert picks[["cold", "warm", "cooled"]].values.tolist() == [[1, 0, 0], [1, 1, 1], [1, 0, 0]]
    two = metrics.series_connections(sample.connections, sample.transactions, sample.segments,
                                     max_connections=2)
    assert two["uid"].tolist() == ["a3", "a1"]


def test_series_connections_round_robin_order() -> None:
    """The four rankings take turns: largest, retransmissions, cooled, cold, largest, ..."""
    conns = frame_from_rows([
        {"uid": u, "server_bytes": b, "retransmissions": r}
        for u, b, r in (("big1", 900, 0), ("big2", 800, 0), ("lossy", 10, 7), ("lossy2", 20, 1),
                        ("cool", 30, 0), ("coldest", 40, 0))], CONNECTION_COLUMNS)
    tx = frame_from_rows([{"uid": "cool", "trans_depth": 2, "warmth": "cooled", "response_body_bytes": 5},
                          {"uid": "coldest", "trans_depth": 1, "warmth": "cold", "response_body_bytes": 99},
                          {"uid": "big1", "trans_depth": 1, "warmth": "cold", "response_body_bytes": 50}],
                         TRANSACTION_COLUMNS)
    segs = frame_from_rows([{"uid": u, "from_server": True, "bytes_in_flight": 1, "ts": T0}
                            for u in ("big1", "big2", "lossy", "lossy2", "cool", "coldest")], SEGMENT_COLUMNS)
    picks = metrics.series_connections(conns, tx, segs)
    assert picks[["uid", "reason"]].values.tolist() == [
        ["big1", "largest"], ["lossy", "retransmissions"], ["cool", "cooled"], ["coldest", "cold"],
        ["big2", "largest"], ["lossy2", "retransmissions"]]


def test_transaction_hosts(sample: Analysis) -> None:
    """A transaction belongs to its connection's host; one whose connection is unknown to its own server
    and Host header."""
    extra = frame_from_rows([{"uid": "zz", "host": "Other.Example", "server_ip": "192.0.2.99", "server_port": 8080}],
                            TRANSACTION_COLUMNS)
    transactions = pd.concat([sample.transactions, extra], ignore_index=True)
    hosts = metrics.transaction_hosts(sample.connections, transactions).tolist()
    assert hosts[5] == API_HOST  # a3's request named "API.example"
    assert hosts[:8] == [API_HOST] * 8 and hosts[8:11] == [LEGACY_HOST] * 3
    assert hosts[11] == "other.example (192.0.2.99:8080)"


# --- TCP health ---------------------------------------------------------------------------------------------

_HEALTH_FIGURES = ["connections", "connections_with_retransmissions", "packets", "retransmissions",
                   "fast_retransmissions", "spurious_retransmissions", "other_retransmissions", "out_of_order",
                   "dup_acks", "zero_window", "window_full", "rtt_samples"]


def test_tcp_health_table(sample: Analysis) -> None:
    health = metrics.tcp_health_table(sample.connections, sample.transactions)
    assert health["host"].tolist() == [API_HOST, LEGACY_HOST, "secure.example (198.51.100.5:443)"]
    api, legacy, secure = (health.iloc[i] for i in range(3))
    assert [api[c] for c in _HEALTH_FIGURES] == [5, 2, 102, 5, 1, 1, 3, 1, 6, 1, 1, 20]
    assert health["keep_alives"].isna().all()  # not in the sample: unknown, not 0
    assert (api["rtt_min_ms"], api["rtt_median_ms"], api["handshake_rtt_ms_median"]) == (9.5, 12.4, 11.5)
    assert api["capture_points"] == "client 4, unknown 1"
    assert [legacy[c] for c in _HEALTH_FIGURES] == [3, 0, 30, 0, 0, 0, 0, 0, 0, 0, 0, 3]
    assert (legacy["rtt_min_ms"], legacy["rtt_median_ms"], legacy["handshake_rtt_ms_median"]) == (39.0, 42.0,
                                                                                                   42.0)
    assert legacy["capture_points"] == "middle 2, server 1"
    # nothing known about the TLS connections: unknown, not 0
    assert secure["connections"] == 2 and secure["connections_with_retransmissions"] == 0
    assert secure[["packets", "retransmissions", "dup_acks", "rtt_samples"]].isna().all()
    assert math.isnan(secure["rtt_min_ms"]) and secure["handshake_rtt_ms_median"] == 20.0
    assert secure["capture_points"] == "unknown 2"


def test_tcp_health_totals(sample: Analysis) -> None:
    total = metrics.tcp_health_totals(sample.connections).iloc[0]
    assert total["host"] == "all connections"
    assert [total[c] for c in _HEALTH_FIGURES] == [10, 2, 132, 5, 1, 1, 3, 1, 6, 1, 1, 23]
    assert total["rtt_min_ms"] == 9.5
    assert total["rtt_median_ms"] == 27.0  # median of 10.2, 12.4, 14, 40, 42, 44
    assert total["handshake_rtt_ms_median"] == 17.0
    assert total["capture_points"] == "client 4, unknown 3, middle 2, server 1"


def test_tcp_metrics_on_empty_tables() -> None:
    empty = empty_analysis()
    c, t = empty.connections, empty.transactions
    assert metrics.tcp_health_table(c, t).empty and metrics.tcp_health_totals(c).empty
    assert metrics.flight_rounds(t, empty.flights).empty
    assert metrics.warmth_transfers(c, t).empty
    assert metrics.series_connections(c, t, empty.segments).empty
    stats = metrics.warmth_stats(t)
    assert stats["responses_cold"] == 0 and stats["transfer_ms_median_cold"] is None
    assert list(metrics.tcp_health_table(c, t).columns)[:3] == ["host", "connections",
                                                                "connections_with_retransmissions"]


def test_tcp_metrics_with_missing_values(sample: Analysis) -> None:
    messy = with_missing_rows(sample)
    c, t = messy.connections, messy.transactions
    assert metrics.flight_rounds(t, messy.flights).equals(metrics.flight_rounds(sample.transactions,
                                                                                 sample.flights))
    assert metrics.warmth_transfers(c, t).equals(metrics.warmth_transfers(sample.connections,
                                                                          sample.transactions))
    picks = metrics.series_connections(c, t, messy.segments)
    assert picks["uid"].tolist() == ["a3", "a1", "b1"]
    health = metrics.tcp_health_table(c, t).set_index("host")
    assert health.loc["?:?", "connections"] == 2


def test_texts_and_endpoints_share_one_string_per_distinct_value() -> None:
    """A million rows with a few addresses cost a million pointers, not a million strings (metric memory)."""
    from analyzer.metrics.frames import endpoints, pair_codes, texts

    out = texts(pd.Series(["10.0.0.1"] * 3 + [None], dtype="string"))
    assert out == ["10.0.0.1"] * 3 + [None] and out[0] is out[1] is out[2]
    assert texts(pd.Series([7, None, 7], dtype="Int64")) == ["7", None, "7"]
    eps = endpoints(pd.Series(["10.0.0.1", "::1", "10.0.0.1", None], dtype="string"),
                    pd.Series([80, 443, 80, None], dtype="Int64"))
    assert eps == ["10.0.0.1:80", "[::1]:443", "10.0.0.1:80", "?:?"] and eps[0] is eps[2]
    assert pair_codes(["a", "b", "a", None, None], ["x", "x", "x", "y", "y"]).tolist() == [0, 1, 0, 2, 2]


_KEYS = st.lists(st.one_of(st.none(), st.sampled_from(["", "a", "b", "C1", "C2", "ü", "x" * 40])), max_size=40)


@settings(max_examples=200, deadline=None)
@given(keys=_KEYS, queries=_KEYS)
def test_positions_finds_the_first_equal_key(keys: list[str | None], queries: list[str | None]) -> None:
    """``positions`` (Arrow ``index_in``) is the first index of each query among the keys, -1 for a missing
    or absent one, whether the columns come as Series or as lists."""
    from analyzer.metrics.frames import positions

    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key is not None:
            first.setdefault(key, i)
    expected = [first.get(q, -1) if q is not None else -1 for q in queries]
    assert positions(keys, queries).tolist() == expected
    series = positions(pd.Series(keys, dtype="string"), pd.Series(queries, dtype=object))
    assert series.dtype == np.int64 and series.tolist() == expected


@settings(max_examples=200, deadline=None)
@given(first=_KEYS, data=st.data())
def test_pair_codes_of_series_equal_those_of_lists(first: list[str | None], data: st.DataObject) -> None:
    """Factorizing a string column as it is (no ``str`` per row) numbers the pairs as the object path
    does: in order of first appearance, a missing value a value of its own."""
    from analyzer.metrics.frames import pair_codes

    second = data.draw(st.lists(st.sampled_from(["x", "y", None]), min_size=len(first), max_size=len(first)))
    expected = pair_codes(first, second).tolist()
    assert pair_codes(pd.Series(first, dtype="string"), second).tolist() == expected
    assert pair_codes(first, pd.Series(second, dtype="string")).tolist() == expected
    labels = [f"{a}|{b}" for a, b in zip(first, second, strict=True)]
    assert expected == pd.factorize(pd.Series(labels, dtype=object))[0].tolist()


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.sampled_from(["", "a", "b", "10.0.0.1", "10.0.0.10", "::1", "ü", "€", "𝄞"]),
                                 st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=6)),
                       max_size=40))
def test_sorted_codes_rank_as_python_sorts_str(values: list[str]) -> None:
    """``sorted_codes`` (Arrow, no ``str`` per row): the codes and names of ``pd.factorize(sort=True)``,
    ranked in the order Python sorts ``str`` (code points: an address before its longer namesakes,
    characters beyond the BMP after the others)."""
    import pyarrow as pa

    from analyzer.metrics.frames import sorted_codes

    codes, names = sorted_codes(pa.array(values, type=pa.large_string()))
    expected_codes, expected_names = pd.factorize(np.array(values, dtype=object), sort=True)
    assert codes.dtype == np.int64 and codes.tolist() == expected_codes.tolist()
    assert names.to_pylist() == sorted(set(values)) == list(expected_names)


@settings(max_examples=300, deadline=None)
@given(runs=st.lists(st.lists(st.sampled_from([math.nan, 0.0, -1.5, 2.0, 7.25]), min_size=1, max_size=5),
                     max_size=8))
def test_first_and_last_valid_of_runs_are_groupby_first_and_last(runs: list[list[float]]) -> None:
    """``first_valid`` and ``last_valid`` over runs of rows give what pandas' ``groupby`` ``first`` and
    ``last`` give (NaN skipped; NaN for a run of NaN only); ``np.fmax.reduceat`` its ``max``: the keep-alive
    what-if reduces its segments so."""
    from analyzer.metrics.frames import first_valid, last_valid

    values = np.array([v for run in runs for v in run], dtype=float)
    starts = np.cumsum([0, *(len(run) for run in runs)])[:-1].astype(np.int64)
    groups = pd.Series(values).groupby(np.repeat(np.arange(len(runs)), [len(run) for run in runs]))
    expected_first = groups.first().to_numpy(dtype=float) if runs else np.zeros(0)
    expected_last = groups.last().to_numpy(dtype=float) if runs else np.zeros(0)
    np.testing.assert_array_equal(first_valid(values, starts), expected_first)
    np.testing.assert_array_equal(last_valid(values, starts), expected_last)
    if runs:
        np.testing.assert_array_equal(np.fmax.reduceat(values, starts), groups.max().to_numpy(dtype=float))


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 3), st.sampled_from([math.nan, 0.0, 1.0, 2.0]),
                               st.sampled_from([math.nan, -1.0, 5.0])), max_size=30),
       nan_first=st.booleans())
def test_grouped_order_is_a_stable_sort_by_group_then_keys(rows: list[tuple[int, float, float]],
                                                           nan_first: bool) -> None:
    from analyzer.metrics.frames import grouped_order, last_of_group

    frame = pd.DataFrame(rows, columns=["g", "k1", "k2"]).astype({"g": "int64", "k1": "float64", "k2": "float64"})
    expected = frame.sort_values(["g", "k1", "k2"], kind="stable",
                                 na_position="first" if nan_first else "last").index.to_numpy()
    order = grouped_order(frame["g"].to_numpy(), frame["k1"].to_numpy(), frame["k2"].to_numpy(),
                          nan_first=nan_first)
    assert order.tolist() == expected.tolist()
    groups = frame["g"].to_numpy()[order]
    last = last_of_group(groups)
    assert groups[last].tolist() == sorted(set(groups.tolist()))
    assert all(groups[i] != groups[i + 1] for i in np.flatnonzero(last[:-1]))


def test_summary_columns_are_table_columns_and_include_the_optional_reads() -> None:
    """``SUMMARY_COLUMNS`` names columns of the tables; those the metrics read only when present (so a
    missing one would go unnoticed: ``handshake_costs``' ``tls_round_trips``, ``close_races``'
    ``response_complete`` and ``estimated``) are among them."""
    for name, columns in metrics.SUMMARY_COLUMNS.items():
        assert len(set(columns)) == len(columns) and set(columns) <= set(TABLES[name]), name
    assert "tls_round_trips" in metrics.SUMMARY_COLUMNS["connections"]
    assert {"response_complete", "estimated"} <= set(metrics.SUMMARY_COLUMNS["transactions"])


def test_summary_groups_read_summary_columns_and_the_optional_reads() -> None:
    """Each group of the summary's figures (``SUMMARY_GROUPS``, read one after the other) names summary
    columns, and the optional reads are in the group that reads them: ``tls_round_trips`` with the
    handshakes (``rest``), ``response_complete`` and ``estimated`` with the close races (``lifecycle``).
    A column a group's metric reads unconditionally and the group lacks raises ``KeyError`` in every test
    of ``summary_metrics``, which reads by group."""
    for group in metrics.SUMMARY_GROUPS.values():
        for name, columns in group.items():
            assert len(set(columns)) == len(columns) and set(columns) <= set(metrics.SUMMARY_COLUMNS[name]), name
    assert "tls_round_trips" in metrics.SUMMARY_GROUPS["rest"]["connections"]
    assert {"response_complete", "estimated"} <= set(metrics.SUMMARY_GROUPS["lifecycle"]["transactions"])


def test_summary_metrics_read_one_group_at_a_time(sample: Analysis) -> None:
    """``summary_metrics_read`` asks for each group's columns in turn and gives the figures of all the
    columns at once (``compute_all``'s)."""
    asked: list[dict[str, tuple[str, ...]]] = []

    def read(columns: dict[str, tuple[str, ...]]) -> Analysis:
        asked.append(columns)
        return metrics._only_columns(sample, columns)

    assert metrics.summary_metrics_read(read) == metrics.compute_all(sample, with_whatif=False).summary
    assert asked == [metrics.group_columns(group, keep=False) for group in metrics.SUMMARY_GROUPS]


def test_summary_tables_read_one_group_at_a_time(sample: Analysis) -> None:
    """``summary_tables_read`` (``analyzer summary``) asks for the connection-lifecycle group's columns, then
    the rest group's, then the protocol mix's (after the summary's groups when it computes the figures), and
    its tables are ``compute_all``'s."""
    asked: list[dict[str, tuple[str, ...]]] = []

    def read(columns: dict[str, tuple[str, ...]]) -> Analysis:
        asked.append(columns)
        return metrics._only_columns(sample, columns)

    every = metrics.compute_all(sample, with_whatif=False)
    tables_of = [metrics.group_columns("lifecycle", keep=True), metrics.group_columns("rest", keep=True),
                 metrics.TABLE_COLUMNS["protocols"]]
    for known in ({"packets_read": 3, **every.summary}, None):
        asked.clear()
        tables = metrics.summary_tables_read(read, known=known)
        figures_of = [] if known else [metrics.group_columns(group, keep=False) for group in metrics.SUMMARY_GROUPS]
        assert asked == figures_of + tables_of
        assert tables.summary == every.summary
        pd.testing.assert_frame_equal(tables.hosts, every.hosts)
        pd.testing.assert_frame_equal(tables.protocols, every.protocols)
        pd.testing.assert_frame_equal(tables.timeouts, every.timeouts)
    assert len(every.hosts) and len(every.timeouts) and len(every.protocols)


def test_summary_metrics_refuse_tables_left_on_disk(sample: Analysis, tmp_path: Path) -> None:
    """A spilled analysis' DataFrames are empty: its metrics come from ``Analysis.held`` (``pipeline.
    metric_keys`` reads back only ``SUMMARY_COLUMNS``), never silently from the empty frames."""
    from analyzer.pipeline import metric_keys
    from analyzer.spill import Spill

    spill = Spill(tmp_path)
    spilled = {name: spill.table(name, TABLES[name]) for name in ("connections", "transactions")}
    for name, table in spilled.items():
        table.append(getattr(sample, name))
    on_disk = Analysis(empty_frame(CONNECTION_COLUMNS), empty_frame(TRANSACTION_COLUMNS), sample.anomalies,
                       spilled=dict(spilled))
    with pytest.raises(ValueError, match="held"):
        metrics.summary_metrics(on_disk)
    with pytest.raises(ValueError, match="held"):
        metrics.compute_all(on_disk)
    assert metric_keys(on_disk) == metrics.summary_metrics(sample)
    some = on_disk.held(metrics.SUMMARY_COLUMNS)
    assert not some.spilled and list(some.connections) == [c for c in CONNECTION_COLUMNS
                                                             if c in metrics.SUMMARY_COLUMNS["connections"]]
    pd.testing.assert_frame_equal(some.transactions, sample.transactions[list(some.transactions)])
    pd.testing.assert_frame_equal(on_disk.held().connections, sample.connections)


def test_summary_tables_take_figures_already_computed(sample: Analysis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given a summary that holds every figure (``metric_key_names``: what ``analyze`` gives),
    ``summary_tables`` takes them from it and does not compute them again; given one that lacks any, it
    computes them all. Either way the figures are ``summary_metrics``', in its order."""
    figures = metrics.summary_metrics(sample)
    assert tuple(figures) == metrics.metric_key_names()
    assert tuple(metrics.summary_metrics(empty_analysis())) == metrics.metric_key_names()
    computed = metrics.summary_tables(sample)
    known = {"packets_read": 12, **figures}
    partial = {k: v for k, v in known.items() if k != "reuse_ratio"}
    assert metrics.summary_tables(sample, known=partial).summary == figures  # computed: a key was missing

    def not_again(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("figures computed again")

    monkeypatch.setattr(metrics, "_summary_and_shared", not_again)
    taken = metrics.summary_tables(sample, known=known)
    assert taken.summary == figures and list(taken.summary) == list(figures)
    pd.testing.assert_frame_equal(taken.hosts, computed.hosts)
    pd.testing.assert_frame_equal(taken.protocols, computed.protocols)
    pd.testing.assert_frame_equal(taken.timeouts, computed.timeouts)
    with pytest.raises(AssertionError, match="again"):
        metrics.summary_tables(sample, known=partial)


def test_summary_tables_are_compute_alls_from_the_summary_columns_only(sample: Analysis) -> None:
    """``analyzer summary``'s tables (``summary_tables``) equal ``compute_all``'s, computed from the
    ``SUMMARY_COLUMNS`` only (what the command reads back from its spill)."""
    every = metrics.compute_all(sample, with_whatif=False)
    only = Analysis(sample.connections[[c for c in CONNECTION_COLUMNS if c in metrics.SUMMARY_COLUMNS["connections"]]],
                    sample.transactions[[c for c in TRANSACTION_COLUMNS
                                         if c in metrics.SUMMARY_COLUMNS["transactions"]]],
                    sample.anomalies, dict(sample.summary))
    tables = metrics.summary_tables(only)
    assert tables.summary == every.summary == metrics.summary_metrics(sample)
    pd.testing.assert_frame_equal(tables.hosts, every.hosts)
    pd.testing.assert_frame_equal(tables.protocols, every.protocols)
    pd.testing.assert_frame_equal(tables.timeouts, every.timeouts)
    assert len(tables.hosts) and len(tables.timeouts)


def test_compute_all_leaves_out_the_tables_it_is_told_to() -> None:
    """``compute_all(leave_out=...)``: each table named comes with its columns and no rows; the summary and
    every other table are those of ``compute_all`` without it. On captures of real traffic (nginx, Python's
    http.client and ssl) where every table has rows."""
    import analyzer

    samples = Path(__file__).resolve().parents[1] / "captures"
    real = analyzer.analyze(*(str(samples / name) for name in ("keepalive-idle-timeout.pcap", "close-race.pcap",
                                                               "tls.pcap")))
    every = metrics.compute_all(real)
    names = list(metrics.METRIC_TABLES)
    assert [n for n in names if not len(getattr(every, n))] == []
    none = metrics.compute_all(real, leave_out=names)
    assert none.summary == every.summary
    for name in names:
        assert len(getattr(none, name)) == 0, name
        assert list(getattr(none, name).columns) == list(getattr(every, name).columns), name
    report = metrics.compute_all(real, leave_out=("reasons", "costs"))
    assert report.summary == every.summary and len(report.reasons) == len(report.costs) == 0
    for name in names:
        if name not in ("reasons", "costs"):
            pd.testing.assert_frame_equal(getattr(report, name), getattr(every, name), obj=name)
    with pytest.raises(ValueError, match="summary"):
        metrics.compute_all(real, leave_out=("summary",))


def test_compute_all_keeps_what_the_caller_draws_of_a_table() -> None:
    """``compute_all(drawn=...)``: each table named comes as its cut of the whole table (a cut sees the tables
    made so far: the pools whole when their steps are cut), every other table and the summary as without it,
    and ``rows`` counts every table's rows as made. On captures of real traffic where every table has rows."""
    import analyzer

    samples = Path(__file__).resolve().parents[1] / "captures"
    real = analyzer.analyze(*(str(samples / name) for name in ("keepalive-idle-timeout.pcap", "close-race.pcap",
                                                               "tls.pcap")))
    every = metrics.compute_all(real)
    seen: dict[str, int] = {}

    def first_row(name: str) -> metrics.Cut:
        def cut(frame: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
            seen[name] = len(tables["pools"]) if name == "pool_steps" else len(frame)
            return frame.take([0])
        return cut

    drawn = ("avoidable", "pools", "pool_steps", "idle_after", "whatif")
    cut = metrics.compute_all(real, drawn={name: first_row(name) for name in drawn})
    assert cut.summary == every.summary
    assert cut.rows == every.rows == {name: len(getattr(every, name)) for name in metrics.METRIC_TABLES}
    assert seen == {**{name: len(getattr(every, name)) for name in drawn}, "pool_steps": len(every.pools)}
    for name in metrics.METRIC_TABLES:
        expected = getattr(every, name).take([0]) if name in drawn else getattr(every, name)
        pd.testing.assert_frame_equal(getattr(cut, name), expected, obj=name)
    assert all(len(getattr(every, name)) > 1 for name in drawn)
    with pytest.raises(ValueError, match="rows"):
        metrics.compute_all(real, drawn={"rows": first_row("rows")})


def test_compute_all_from_the_listed_columns_is_compute_all_from_every_column() -> None:
    """``compute_all`` hands each step only the columns it is listed with (``SUMMARY_GROUPS``,
    ``KEPT_COLUMNS``, ``TABLE_COLUMNS``): every table and the summary are those of every column at each step,
    on captures of real traffic (nginx, Python's http.client and ssl, curl over h2c, a mid-stream start),
    and the steps ask in that order."""
    import analyzer

    samples = Path(__file__).resolve().parents[1] / "captures"
    real = analyzer.analyze(*(str(samples / name) for name in (
        "keepalive-idle-timeout.pcap", "close-race.pcap", "tls.pcap", "h2c.pcap", "midstream.pcap",
        "shaped-bulk.pcap.gz")))
    asked: list[Mapping[str, Sequence[str]]] = []

    def every_column(columns: Mapping[str, Sequence[str]]) -> Analysis:
        asked.append(columns)
        return real

    whole = metrics.compute_all_read(every_column)
    listed = metrics.compute_all(real)
    assert listed.summary == whole.summary
    assert listed.rows == whole.rows == {name: len(getattr(whole, name)) for name in metrics.METRIC_TABLES}
    for name in metrics.METRIC_TABLES:
        assert len(getattr(whole, name)), name
        pd.testing.assert_frame_equal(getattr(listed, name), getattr(whole, name), obj=name)
    assert asked == [*(metrics.group_columns(group, keep=True) for group in metrics.SUMMARY_GROUPS),
                     *metrics.TABLE_COLUMNS.values()]


@given(keys=st.lists(st.integers(-2, 6), max_size=30), queries=st.lists(st.integers(-2, 8), max_size=20))
def test_once_and_places_are_duplicated_and_get_indexer(keys: list[int], queries: list[int]) -> None:
    """``flight_rounds`` matches its keys by sorting: ``_once`` is ``~duplicated(keep=False)`` and ``_places``
    of distinct keys is ``pd.Index.get_indexer``."""
    from analyzer.metrics.warmth import _once, _places

    array = np.array(keys, dtype=np.int64)
    assert _once(array).tolist() == (~pd.Series(array).duplicated(keep=False)).tolist()
    distinct = np.array(list(dict.fromkeys(keys)), dtype=np.int64)
    wanted = np.array(queries, dtype=np.int64)
    assert _places(distinct, wanted).tolist() == pd.Index(distinct).get_indexer(wanted).tolist()
