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
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import analyzer.metrics as metrics
from analyzer.analysis import Analysis
from analyzer.tables import (
    ANOMALY_COLUMNS,
    CONNECTION_COLUMNS,
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
        version: str = "HTTP/1.1", target: str = "/", status: int = 200, method: str = "GET"
        ) -> dict[str, Any]:
    return {"uid": uid, "trans_depth": depth, "method": method, "host": host, "target": target,
            "http_version": version, "status": status, "ts_request_start": T0 + req,
            "ts_request_end": T0 + req + 0.001, "ts_response_start": T0 + resp_end - 0.005,
            "ts_response_end": T0 + resp_end, "idle_before_ms": idle,
            "reused": (depth is not None and depth > 1) if reused is None and depth is not None else reused,
            "pipelined": False, "keep_alive": keep_alive, "server_ip": server,
            "server_port": 443 if server == SECURE else 80, "response_body_bytes": 1000}


def connection_rows() -> list[dict[str, Any]]:
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


def transaction_rows() -> list[dict[str, Any]]:
    api, legacy = "api.example", "legacy.example"
    return [
        _tx("a1", 1, api, API, 0.010, 0.030),
        _tx("a1", 2, api, API, 0.530, 0.560, idle=500.0),
        _tx("a1", 3, api, API, 1.560, 1.600, idle=1000.0, target="/three"),
        _tx("a2", 1, api, API, 0.312, 0.400),
        _tx("a2", 2, api, API, 0.900, 0.950, idle=500.0),
        _tx("a3", 1, "API.example", API, 1.014, 1.100),
        _tx("a4", None, api, API, 4.000, 4.050, keep_alive=None),
        _tx("a4", None, api, API, 4.500, 4.550, idle=450.0, reused=True),
        _tx("b1", 1, legacy, LEGACY, 5.040, 5.100, keep_alive=False, version="HTTP/1.0"),
        _tx("b2", 1, legacy, LEGACY, 5.244, 5.300, keep_alive=False, version="HTTP/1.0"),
        _tx("b3", 1, legacy, LEGACY, 5.442, 5.500, keep_alive=False, version="HTTP/1.0", status=404),
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
                    summary=sample_summary())


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
        summary=analysis.summary)


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
])
def test_docstrings_point_at_their_definitions(function: Any, names: list[str]) -> None:
    doc = function.__doc__ or ""
    for name in names:
        assert f"['{name}']" in doc


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
