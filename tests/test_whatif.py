"""Tests of analyzer.metrics.whatif: the keep-alive what-if replay.

On the committed recordings the replay at the policy nginx was configured with (captures/record.py: each
scenario's ``keepalive_timeout`` / ``keepalive_requests``, :8081 ``keepalive_timeout 0``, :8082
``keepalive_requests 2``) must give the observed connections, per server; other policies are checked on
what the captures show (an idle gap of 1.5 s, nginx's 1 s idle closes) and on hand-built tables.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from recorder import load_record

import analyzer
import analyzer.metrics as metrics
from analyzer.metrics.whatif import keepalive_whatif, whatif_totals
from analyzer.tables import CONNECTION_COLUMNS, TRANSACTION_COLUMNS, frame_from_rows

CAPTURES = Path(__file__).resolve().parents[1] / "captures"


record = load_record()


def _seconds(nginx: str) -> float:
    """nginx's ``keepalive_timeout`` (its first value: ``"1s 1s"`` → 1.0)."""
    first = nginx.split()[0]
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", first)
    assert match, nginx
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value * 60 if match.group(2) == "m" else value


def server_policy(scenario: Any, port: int) -> tuple[float, int]:
    """(idle timeout s, max requests) nginx was configured with for ``port`` in ``scenario``."""
    if port == record.PORT_CLOSE:
        return 0.0, scenario.keepalive_requests
    if port == record.PORT_LIMIT:
        return 10.0, 2
    return _seconds(scenario.keepalive_timeout), scenario.keepalive_requests


@pytest.mark.parametrize("scenario", record.SCENARIO_LIST, ids=lambda s: s.name)
def test_replay_at_the_servers_own_policy_gives_the_observed_connections(scenario: Any) -> None:
    result = analyzer.analyze(str(CAPTURES / scenario.capture_name))
    connections, transactions = result.connections, result.transactions
    ports = sorted({int(p) for p in connections["server_port"].dropna()})
    assert ports
    for port in ports:
        timeout_s, limit = server_policy(scenario, port)
        mine = connections[connections["server_port"] == port]
        tx = transactions[transactions["uid"].isin(mine["uid"])]
        per_pair = keepalive_whatif(mine, tx, timeouts_s=(timeout_s,), max_requests=(limit,))
        assert per_pair["connections"].sum() == len(mine), (scenario.name, port, per_pair)
        assert (per_pair["new_connections"] == 0).all()
        assert per_pair["handshake_time_ms_delta"].fillna(0).eq(0).all()


def _totals(path: Path, timeouts: tuple[float, ...], limits: tuple[int | None, ...] = (None,)) -> pd.DataFrame:
    result = analyzer.analyze(str(path))
    return whatif_totals(keepalive_whatif(result.connections, result.transactions, timeouts_s=timeouts,
                                          max_requests=limits))


def test_keepalive_idle_timeout_capture() -> None:
    """nginx closed two idle connections after 1 s and the client reconnected twice (http.client, then
    curl): with 5 s or more both reconnects continue on a connection the server would have kept."""
    totals = _totals(CAPTURES / "keepalive-idle-timeout.pcap", (0.5, 1.0, 5.0, 300.0), (None, 2))
    unlimited = totals[totals["max_requests"].isna()].set_index("idle_timeout_s")
    assert unlimited.loc[1.0, "connections"] == 4 == unlimited.loc[1.0, "connections_observed"]
    assert unlimited.loc[5.0, "connections"] == 2 and unlimited.loc[300.0, "connections"] == 2
    assert unlimited.loc[5.0, "new_connections"] == -2
    assert unlimited.loc[5.0, "handshake_time_ms_delta"] < 0
    assert unlimited.loc[5.0, "handshake_round_trips_delta"] == -2.0
    # Every gap between requests is under 0.5 s: the same 4 connections.
    assert unlimited.loc[0.5, "connections"] == 4
    # At most 2 requests per connection: 3 + 4 + 2 + 3 requests need 2 + 2 + 1 + 2 connections.
    limited = totals[totals["max_requests"].fillna(-1) == 2].set_index("idle_timeout_s")
    assert limited.loc[1.0, "connections"] == 7
    assert limited.loc[1.0, "handshake_round_trips_delta"] == 3.0


def test_shaped_bulk_idle_gap_splits_a_connection() -> None:
    """The warm connection idles 1.5 s before its third request: a 1 s timeout needs one more connection."""
    totals = _totals(CAPTURES / "shaped-bulk.pcap.gz", (1.0, 5.0)).set_index("idle_timeout_s")
    assert totals.loc[1.0, "connections"] == 3 and totals.loc[5.0, "connections"] == 2
    assert totals.loc[1.0, "new_connections"] == 1 and totals.loc[1.0, "handshake_round_trips_delta"] == 1.0


# --- hand-built tables ----------------------------------------------------------------------------------

T0 = 1_700_000_000.0


def _conn(uid: str, port: int, start: float, end: float, close_by: str, rtt: float = 10.0) -> dict[str, Any]:
    return {"uid": uid, "client_ip": "10.0.0.1", "client_port": port, "server_ip": "192.0.2.1",
            "server_port": 80, "transport": "tcp", "protocol": "http/1.1", "tls": False, "syn_seen": True,
            "ts_start": T0 + start, "ts_end": T0 + end, "handshake_rtt_ms": rtt, "close_by": close_by,
            "close_reason": "fin"}


def _tx(uid: str, depth: int, req: float, end: float, idle_ms: float | None, keep_alive: bool = True,
        request_connection: str | None = None, response_connection: str | None = None) -> dict[str, Any]:
    return {"uid": uid, "trans_depth": depth, "method": "GET", "target": "/", "http_version": "HTTP/1.1",
            "status": 200, "ts_request_start": T0 + req, "ts_request_end": T0 + req,
            "ts_response_start": T0 + end, "ts_response_end": T0 + end, "idle_before_ms": idle_ms,
            "keep_alive": keep_alive, "reused": depth > 1, "request_connection": request_connection,
            "response_connection": response_connection, "server_ip": "192.0.2.1", "server_port": 80}


def _frames(conns: list[dict[str, Any]], txs: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return frame_from_rows(conns, CONNECTION_COLUMNS), frame_from_rows(txs, TRANSACTION_COLUMNS)


def _needed(conns: pd.DataFrame, txs: pd.DataFrame, timeout: float, limit: int | None = None) -> int:
    return int(keepalive_whatif(conns, txs, timeouts_s=(timeout,), max_requests=(limit,))["connections"].sum())


def test_reconnect_after_server_idle_close_merges_only_when_the_timeout_allows() -> None:
    # a: two requests, server closes it 2 s after the last response; b: the client reconnects at 2.5 s.
    conns, txs = _frames(
        [_conn("a", 1000, 0.0, 2.11, "server"), _conn("b", 1001, 2.5, 2.7, "client")],
        [_tx("a", 1, 0.01, 0.05, None), _tx("a", 2, 0.06, 0.11, 10.0), _tx("b", 1, 2.51, 2.55, None),
         _tx("b", 2, 2.6, 2.65, 50.0)])
    assert _needed(conns, txs, 2.0) == 2  # the server's own timeout: as observed
    assert _needed(conns, txs, 3.0) == 1  # b continues on a (first request 2.4 s after a's last response)
    assert _needed(conns, txs, 3.0, 3) == 2  # but a 3-request limit splits the four requests in two
    assert _needed(conns, txs, 0.04) == 3  # the 50 ms gap on b exceeds a 40 ms timeout


def test_client_closes_and_parallel_connections_are_kept() -> None:
    # a: closed by the client; b opened after it: the client chose a new connection, not the server.
    # c: opened while d (server-closed later) was still open: a parallel connection, kept.
    conns, txs = _frames(
        [_conn("a", 1000, 0.0, 0.2, "client"), _conn("b", 1001, 0.5, 0.7, "client"),
         _conn("d", 1002, 1.0, 4.0, "server"), _conn("c", 1003, 1.5, 1.7, "client")],
        [_tx("a", 1, 0.01, 0.05, None), _tx("b", 1, 0.51, 0.55, None), _tx("d", 1, 1.01, 1.05, None),
         _tx("c", 1, 1.51, 1.55, None)])
    assert _needed(conns, txs, 300.0) == 4


def test_announced_closes_request_vs_server() -> None:
    # a's response said close to a request that did not: the server's request limit (merge allowed).
    # b asked for close itself: the client's choice (no merge into b).
    conns, txs = _frames(
        [_conn("a", 1000, 0.0, 0.2, "server"), _conn("x", 1001, 0.3, 0.4, "client"),
         _conn("b", 1002, 1.0, 1.2, "server"), _conn("y", 1003, 1.3, 1.4, "client")],
        [_tx("a", 1, 0.01, 0.05, None, keep_alive=False, response_connection="close"),
         _tx("x", 1, 0.31, 0.35, None),
         _tx("b", 1, 1.01, 1.05, None, keep_alive=False, request_connection="close",
             response_connection="close"),
         _tx("y", 1, 1.31, 1.35, None)])
    assert _needed(conns, txs, 10.0) == 3  # x continues on a; y needs its own


def test_pairs_are_named_and_ordered_as_python_orders_their_names() -> None:
    """One row per (client IP, server IP:port) pair, in the order Python sorts the two names (a missing or
    empty client IP is ``?``; ``10.0.0.1`` before ``10.0.0.10``; IPv6 servers in brackets), with each pair's
    own counts and its server's mean setup cost: the pairs are numbered by Arrow, not by Python strings."""
    from analyzer.metrics.frames import endpoint
    from analyzer.metrics.handshake import handshake_costs

    clients = ["10.0.0.10", "10.0.0.1", None, "", "::1", "10.0.0.1", "fe80::1", "10.0.0.10", "10.0.0.2"]
    servers = [("192.0.2.1", 80), ("192.0.2.1", 8080), ("2001:db8::2", 443), ("192.0.2.1", 80),
               ("192.0.2.1", None), ("192.0.2.1", 80), ("2001:db8::2", 443), ("192.0.2.1", 8080),
               ("198.51.100.7", 80)]
    conns, txs = [], []
    for i, (client, (server_ip, port)) in enumerate(zip(clients, servers, strict=True)):
        uid = f"c{i}"
        conns.append({**_conn(uid, 1000 + i, float(i), float(i) + 0.5, "client", rtt=5.0 + i),
                      "client_ip": client, "server_ip": server_ip, "server_port": port})
        txs += [_tx(uid, d, i + 0.01 * d, i + 0.01 * d + 0.005, None if d == 1 else 5.0) for d in range(1, i % 3 + 2)]
    connections, transactions = _frames(conns, txs)
    per_pair = keepalive_whatif(connections, transactions, timeouts_s=(5.0,), max_requests=(None,))

    key = [(c or "?", endpoint(ip, port)) for c, (ip, port) in zip(clients, servers, strict=True)]
    setup = handshake_costs(connections)["setup_ms"].to_numpy(dtype=float)
    expected = []
    for pair in sorted(set(key)):
        mine = [i for i, k in enumerate(key) if k == pair]
        same_server = [setup[i] for i, k in enumerate(key) if k[1] == pair[1]]
        expected.append((*pair, len(mine), sum(i % 3 + 1 for i in mine), sum(same_server) / len(same_server)))
    got = list(zip(per_pair["client_ip"], per_pair["server"], per_pair["connections_observed"],
                   per_pair["transactions"], per_pair["setup_ms_mean"], strict=True))
    assert [g[:4] for g in got] == [e[:4] for e in expected]
    assert [g[4] for g in got] == pytest.approx([e[4] for e in expected])
    assert [g[:2] for g in got[:3]] == [("10.0.0.1", "192.0.2.1:80"), ("10.0.0.1", "192.0.2.1:8080"),
                                        ("10.0.0.10", "192.0.2.1:80")]
    assert got[-4][:2] == ("::1", "192.0.2.1:?") and [g[0] for g in got[-3:]] == ["?", "?", "fe80::1"]


def test_empty_and_missing_values() -> None:
    empty_c, empty_t = _frames([], [])
    assert keepalive_whatif(empty_c, empty_t).empty and whatif_totals(keepalive_whatif(empty_c, empty_t)).empty
    one_c = frame_from_rows([{}], CONNECTION_COLUMNS)
    one_t = frame_from_rows([{}], TRANSACTION_COLUMNS)
    per_pair = keepalive_whatif(one_c, one_t)
    assert (per_pair["connections"] == 1).all() and (per_pair["new_connections"] == 0).all()


def test_defined_in_the_glossary_and_computed_by_compute_all() -> None:
    assert "keepalive_whatif" in metrics.glossary()
    assert "keepalive_whatif" in (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    result = analyzer.analyze(str(CAPTURES / "keepalive-idle-timeout.pcap"))
    tables = metrics.compute_all(result)
    assert len(tables.whatif_totals) == len(metrics.whatif.WHATIF_TIMEOUTS_S) * len(
        metrics.whatif.WHATIF_MAX_REQUESTS)
    assert set(tables.whatif_totals["connections_observed"]) == {4}


WHATIF_SAMPLES = ("keepalive-idle-timeout.pcap", "pipelining.pcap", "http10-and-close.pcap", "close-race.pcap",
                  "h2c.pcap")


@pytest.mark.parametrize("top", [1, 2, 1000])
def test_the_top_pairs_and_the_totals_are_those_of_the_whole_table(top: int) -> None:
    """``keepalive_whatif_top`` replays one policy at a time: its rows are the whole table's rows of the pairs
    with the most requests, and its totals those of the whole table, to the last bit."""
    from analyzer.metrics.whatif import keepalive_whatif_top

    for name in WHATIF_SAMPLES:
        a = analyzer.analyze(str(CAPTURES / name))
        whole = keepalive_whatif(a.connections, a.transactions)
        per_pair, totals = keepalive_whatif_top(a.connections, a.transactions, top_pairs=top)
        pd.testing.assert_frame_equal(totals, whatif_totals(whole), obj=f"totals {name}")
        pairs = whole.drop_duplicates(["client_ip", "server"])
        ranked = pairs.iloc[(-pairs["transactions"].to_numpy()).argsort(kind="stable")][:top]
        chosen = set(zip(ranked["client_ip"], ranked["server"], strict=True))
        expected = whole[[(c, s) in chosen for c, s in zip(whole["client_ip"], whole["server"], strict=True)]]
        pd.testing.assert_frame_equal(per_pair, expected.reset_index(drop=True), obj=f"pairs {name}")


def test_a_flood_of_clients_keeps_the_top_pairs_only(tmp_path: Path) -> None:
    """A SYN flood from as many spoofed clients: every pair counts in the totals, only the pairs with the
    most requests keep their rows (the whole table would be pairs × 24 policies: 11 GB for a million)."""
    from analyzer.metrics.whatif import WHATIF_TOP_PAIRS, keepalive_whatif_top
    from analyzer.report.html import HOSTS_MAX_ROWS
    from tests.hostile import generate

    assert HOSTS_MAX_ROWS <= WHATIF_TOP_PAIRS  # the report's per-pair table lists rows the metrics kept
    made = generate.syn_flood(tmp_path / "syn.pcap", 300)
    a = analyzer.analyze(str(made.path))
    per_pair, totals = keepalive_whatif_top(a.connections, a.transactions, top_pairs=10)
    policies = len(metrics.whatif.WHATIF_TIMEOUTS_S) * len(metrics.whatif.WHATIF_MAX_REQUESTS)
    assert len(per_pair) == 10 * policies
    assert set(totals["pairs"]) == {301} and set(totals["connections_observed"]) == {301}
    assert per_pair["client_ip"].iloc[0] == "10.1.0.0"  # the one client that made requests comes first
    pd.testing.assert_frame_equal(totals, whatif_totals(keepalive_whatif(a.connections, a.transactions)))
    tables = metrics.compute_all(a)
    assert len(tables.whatif) == min(WHATIF_TOP_PAIRS, 301) * policies
    pd.testing.assert_frame_equal(tables.whatif_totals, totals)
