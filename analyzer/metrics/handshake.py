"""Handshake overhead: what opening connections cost, what reuse saved, what no reuse would have cost.

This module owns the handshake metrics of the glossary (``DEFINITIONS``, after DESIGN.md §4): the setup
cost of each connection (TCP handshake plus TLS handshake, in time and round trips), and its aggregation
per server, per any grouping (``analyzer.metrics.hosts`` groups by host) and per capture. Pure functions
over the tables of ``analyzer.tables``; no I/O, no clock. It does not measure anything itself: the RTTs
come from the TCP layer (``handshake_rtt_ms``) and the TLS layer (``tls_handshake_ms``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from analyzer.metrics.frames import (
    endpoints,
    equals,
    flags,
    floats,
    json_float,
    known_false,
    positions,
    texts,
)
from analyzer.metrics.reuse import transaction_reused

DEFINITIONS: dict[str, str] = {
    "handshake_rtt_ms": (
        "TCP handshake RTT of a connection, Wireshark's iRTT (`tcp.analysis.initial_rtt`): from the most "
        "recent SYN to the first later packet, in either direction, with ACK set and SYN clear (normally the "
        "client's ACK completing the three-way handshake), as seen at the capture point; a zero difference "
        "is ignored and the next such packet used, as Wireshark does. Near the client it is the cost of one "
        "round trip; near the server it is tiny (the halves `syn_to_synack_ms` and `synack_to_ack_ms` tell "
        "which). A connection whose handshake was not captured (`syn_seen` false, or no "
        "RTT) is charged the median handshake RTT of the same server IP:port when that server has measured "
        "handshakes, and is excluded from the handshake figures otherwise (the report and summary give the "
        "counts of measured, imputed and excluded connections). UDP (QUIC) connections have no TCP "
        "handshake and are excluded."
    ),
    "connection_setup_cost": (
        "Time and round trips a connection spent before it could carry its first request: the TCP handshake "
        "(one round trip, `handshake_rtt_ms` as above) plus, for TLS connections, the TLS handshake "
        "(`tls_handshake_ms`: ClientHello to the client's first application data record; 2 round trips "
        "for a full TLS 1.2 handshake, 1 for TLS 1.3 or a resumed session). A TLS handshake of unknown "
        "duration or version adds nothing (counted as unknown)."
    ),
    "handshake_time_paid": (
        "Handshake time spent (ms) and round trips paid: the sum of the connection setup cost over the "
        "connections of a host or capture that have one (measured or imputed)."
    ),
    "handshake_saved_by_reuse": (
        "Handshake time and round trips reuse saved: for every reused transaction, the setup cost of the "
        "connection that carried it — the handshake a new connection would have paid for that request "
        "(DESIGN.md §4: reused transactions × their connection's cost)."
    ),
    "handshake_one_connection_per_request": (
        "What one new connection per request would have cost: for every transaction, the mean setup cost of "
        "the connections to its server IP:port (transactions × mean handshake cost per server); "
        "transactions to a server with no known setup cost are left out. Compare with the time paid: the "
        "difference is roughly what reuse saved."
    ),
}


def _tls_round_trips(tls: pd.Series, version: pd.Series, resumed: pd.Series,
                     observed: pd.Series | None = None) -> np.ndarray:
    """Round trips of each TLS handshake: ``observed`` (the TLS layer's count, which knows
    HelloRetryRequest and 0-RTT) where known, else from the version and resumption."""
    is_tls = flags(tls)
    is_resumed = flags(resumed)
    seen = floats(observed) if observed is not None else np.full(len(tls), math.nan)
    rounds = np.full(len(tls), math.nan)
    for i, text in enumerate(texts(version)):
        if is_tls[i] and not math.isnan(seen[i]):
            rounds[i] = seen[i]
        elif not is_tls[i]:
            rounds[i] = 0.0
        elif is_resumed[i] or (text is not None and "1.3" in text):
            rounds[i] = 1.0
        elif text is not None and any(tag in text.lower() for tag in ("1.0", "1.1", "1.2", "ssl")):
            rounds[i] = 2.0
    return rounds


def handshake_costs(connections: pd.DataFrame) -> pd.DataFrame:
    """Per connection: its setup cost (TCP handshake + TLS handshake) in ms and round trips.

    Definitions (``DEFINITIONS['handshake_rtt_ms']``, ``['connection_setup_cost']``): the TCP handshake
    costs one round trip of ``handshake_rtt_ms`` (Wireshark's iRTT). When the handshake was not captured
    (``syn_seen`` false or no RTT) the median measured handshake RTT of the same server IP:port is used;
    without one the connection is excluded (UDP connections always are). A TLS connection adds
    ``tls_handshake_ms`` and its round trips: the TLS layer's ``tls_round_trips`` (which knows
    HelloRetryRequest and 0-RTT), else 2 (TLS 1.2 full) or 1 (TLS 1.3, resumed); unknown adds nothing.

    Columns (one row per connection, in table order): ``uid``, ``server``, ``tcp_handshake_ms`` (used
    value, NaN when excluded), ``tcp_source`` (``measured`` | ``server_median`` | ``excluded``),
    ``tls_handshake_ms``, ``tls_round_trips`` (0 for plain TCP, NaN unknown), ``setup_ms`` and
    ``setup_round_trips`` (NaN when excluded).
    """
    servers = endpoints(connections["server_ip"], connections["server_port"])
    rtt = floats(connections["handshake_rtt_ms"])
    udp = equals(connections["transport"], "udp")
    with np.errstate(invalid="ignore"):
        measured = ~known_false(connections["syn_seen"]) & ~udp & np.isfinite(rtt) & (rtt >= 0)
    medians: dict[str, float] = {}
    if measured.any():
        frame = pd.DataFrame({"server": np.array(servers, dtype=object)[measured], "rtt": rtt[measured]})
        medians = {str(k): float(v) for k, v in frame.groupby("server")["rtt"].median().items()}
    imputed_values = np.array([medians.get(server, math.nan) for server in servers], dtype=float)
    imputed = ~measured & ~udp & ~np.isnan(imputed_values)
    tcp = np.where(measured, rtt, np.where(imputed, imputed_values, math.nan))
    source = np.array(["measured", "server_median", "excluded"], dtype=object)[
        np.where(measured, 0, np.where(imputed, 1, 2))]  # three str objects shared by every row

    is_tls = flags(connections["tls"])
    tls_ms = floats(connections["tls_handshake_ms"])
    tls_ms = np.where(is_tls, tls_ms, math.nan)
    tls_rounds = _tls_round_trips(connections["tls"], connections["tls_version"], connections["tls_resumed"],
                                  connections.get("tls_round_trips"))
    included = ~np.isnan(tcp)
    setup_ms = np.where(included, tcp + np.nan_to_num(tls_ms, nan=0.0), math.nan)
    setup_rounds = np.where(included, 1.0 + np.nan_to_num(tls_rounds, nan=0.0), math.nan)
    return pd.DataFrame({
        "uid": connections["uid"].astype("string").array,
        "server": pd.array(servers, dtype="string"),
        "tcp_handshake_ms": tcp,
        "tcp_source": pd.array(source, dtype="string"),
        "tls_handshake_ms": tls_ms,
        "tls_round_trips": tls_rounds,
        "setup_ms": setup_ms,
        "setup_round_trips": setup_rounds,
    }, index=connections.index)


def transaction_costs(connections: pd.DataFrame, transactions: pd.DataFrame,
                      costs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per transaction: the handshake its reuse saved and what a connection of its own would have cost.

    Definitions (``DEFINITIONS['handshake_saved_by_reuse']``, ``['handshake_one_connection_per_request']``):
    a reused transaction saved the setup cost of the connection that carried it; any transaction on its own
    connection would have cost the mean setup cost of its server's connections.

    Columns (one row per transaction, in table order): ``uid``, ``server`` (the connection's, else the
    transaction's own server columns; categorical), ``reused``, ``saved_ms``, ``saved_round_trips`` (0 when
    not reused, NaN when its connection has no known cost), ``one_per_request_ms``, ``one_per_request_round_trips``
    (NaN when the server has no known cost). ``costs`` is ``handshake_costs(connections)`` when given.
    """
    costs = handshake_costs(connections) if costs is None else costs
    found = positions(costs["uid"], transactions["uid"])
    known = found >= 0
    at = np.maximum(found, 0)
    codes, names = _server_codes(costs, transactions, found)
    server_mean = costs.groupby("server")[["setup_ms", "setup_round_trips"]].mean().reindex(names)
    if len(costs):
        conn_ms = np.where(known, costs["setup_ms"].to_numpy(dtype=float)[at], math.nan)
        conn_rounds = np.where(known, costs["setup_round_trips"].to_numpy(dtype=float)[at], math.nan)
    else:
        conn_ms = conn_rounds = np.full(len(transactions), math.nan)
    reused = transaction_reused(transactions)
    return pd.DataFrame({
        "uid": transactions["uid"].astype("string").array,
        "server": pd.Categorical.from_codes(codes, categories=pd.Index(names, dtype="string")),
        "reused": reused,
        "saved_ms": np.where(reused, conn_ms, 0.0),
        "saved_round_trips": np.where(reused, conn_rounds, 0.0),
        "one_per_request_ms": server_mean["setup_ms"].to_numpy(dtype=float)[codes],
        "one_per_request_round_trips": server_mean["setup_round_trips"].to_numpy(dtype=float)[codes],
    }, index=transactions.index)


def _server_codes(costs: pd.DataFrame, transactions: pd.DataFrame, found: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Per transaction, its server as a code into the returned names: its connection's (``found``: the
    connection's row in ``costs``, -1 when unknown), else its own server columns. A code per row and a name
    per server, not a ``str`` per row: 1,200,000 transactions of twenty connections peaked 407 MiB above
    their columns in ``transaction_costs`` and took 5.4 s, 170 MiB and 0.24 s so (``analyzer export``'s
    metrics)."""
    conn_codes, conn_names = pd.factorize(np.asarray(texts(costs["server"]), dtype=object))
    codes = np.full(len(transactions), -1, dtype=np.int64)
    known = found >= 0
    codes[known] = conn_codes[found[known]]
    names: dict[str, int] = {str(name): i for i, name in enumerate(conn_names.tolist())}
    unknown = np.flatnonzero(~known)
    if unknown.size:  # a transaction without a known connection: its own server columns name it
        own = endpoints(transactions["server_ip"].iloc[unknown], transactions["server_port"].iloc[unknown])
        own_codes, own_names = pd.factorize(np.asarray(own, dtype=object))
        remap = np.array([names.setdefault(str(name), len(names)) for name in own_names.tolist()], dtype=np.int64)
        codes[unknown] = remap[own_codes]
    return codes, list(names)


_OVERHEAD_COLUMNS: dict[str, str] = {
    "connections": "int64", "connections_measured": "int64", "connections_imputed": "int64",
    "connections_excluded": "int64", "handshake_rtt_ms_median": "float64", "handshake_time_ms": "float64",
    "handshake_round_trips": "float64", "transactions": "int64", "transactions_reused": "int64",
    "handshake_time_ms_saved": "float64", "handshake_round_trips_saved": "float64",
    "handshake_time_ms_one_per_request": "float64", "handshake_round_trips_one_per_request": "float64",
}


def _named(labels: Sequence[str | None] | np.ndarray) -> np.ndarray:
    """``labels`` as an object array, a missing or empty one as ``?`` (compared at C speed, not a row at a time)."""
    named = np.array(labels, dtype=object)
    if named.size:
        named[pd.isna(named) | (named == "")] = "?"
    return named


def overhead_by(costs: pd.DataFrame, connection_labels: Sequence[str | None] | np.ndarray,
                per_transaction: pd.DataFrame, transaction_labels: Sequence[str | None] | np.ndarray,
                label: str) -> pd.DataFrame:
    """Aggregate per-connection ``costs`` and ``per_transaction`` costs under arbitrary group labels.

    ``connection_labels`` and ``transaction_labels`` are aligned with the rows of ``costs`` and
    ``per_transaction``; the result has one row per label (column ``label``) with the columns of
    ``handshake_overhead``; a missing label is grouped as ``?``. Sums skip NaN (excluded connections
    and servers without a known cost).
    """
    conn = pd.DataFrame({
        label: _named(connection_labels),
        "connections": 1,
        "connections_measured": equals(costs["tcp_source"], "measured").astype(int),
        "connections_imputed": equals(costs["tcp_source"], "server_median").astype(int),
        "connections_excluded": equals(costs["tcp_source"], "excluded").astype(int),
        "measured_rtt": np.where(equals(costs["tcp_source"], "measured"),
                                 costs["tcp_handshake_ms"].to_numpy(dtype=float), math.nan),
        "handshake_time_ms": costs["setup_ms"].to_numpy(dtype=float),
        "handshake_round_trips": costs["setup_round_trips"].to_numpy(dtype=float),
    })
    trans = pd.DataFrame({
        label: _named(transaction_labels),
        "transactions": 1,
        "transactions_reused": per_transaction["reused"].to_numpy(dtype=bool).astype(int),
        "handshake_time_ms_saved": per_transaction["saved_ms"].to_numpy(dtype=float),
        "handshake_round_trips_saved": per_transaction["saved_round_trips"].to_numpy(dtype=float),
        "handshake_time_ms_one_per_request": per_transaction["one_per_request_ms"].to_numpy(dtype=float),
        "handshake_round_trips_one_per_request":
            per_transaction["one_per_request_round_trips"].to_numpy(dtype=float),
    })
    conn_sums = conn.drop(columns=["measured_rtt"]).groupby(label).sum(min_count=1)
    conn_sums["handshake_rtt_ms_median"] = conn.groupby(label)["measured_rtt"].median()
    trans_sums = trans.groupby(label).sum(min_count=1)
    joined = conn_sums.join(trans_sums, how="outer")
    labels = sorted(str(v) for v in joined.index)
    joined = joined.reindex(labels)
    result = pd.DataFrame({label: pd.array(labels, dtype="string")})
    for name, dtype in _OVERHEAD_COLUMNS.items():
        values = joined[name].to_numpy(dtype=float) if name in joined else np.full(len(labels), math.nan)
        if dtype == "int64":
            values = np.nan_to_num(values, nan=0.0)
        result[name] = values.astype(dtype)
    return result


def handshake_overhead(connections: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    """Handshake overhead per server IP:port.

    Definitions: ``DEFINITIONS['handshake_time_paid']``, ``['handshake_saved_by_reuse']``,
    ``['handshake_one_connection_per_request']`` (see ``handshake_costs`` for a connection's cost).

    Columns: ``server``, ``connections``, ``connections_measured``, ``connections_imputed``,
    ``connections_excluded``, ``handshake_rtt_ms_median`` (of measured handshakes),
    ``handshake_time_ms`` and ``handshake_round_trips`` (paid), ``transactions``, ``transactions_reused``,
    ``handshake_time_ms_saved``, ``handshake_round_trips_saved``, ``handshake_time_ms_one_per_request``,
    ``handshake_round_trips_one_per_request``. Sorted by server.
    """
    costs = handshake_costs(connections)
    per_transaction = transaction_costs(connections, transactions, costs)
    return overhead_by(costs, texts(costs["server"]), per_transaction, texts(per_transaction["server"]),
                       "server")


def handshake_totals(connections: pd.DataFrame, transactions: pd.DataFrame, *,
                     costs: pd.DataFrame | None = None,
                     per_transaction: pd.DataFrame | None = None) -> dict[str, Any]:
    """Capture-wide handshake figures as JSON-safe scalars (ms rounded to µs, round trips to 3 decimals).

    Definitions: ``DEFINITIONS`` of this module. Keys: ``handshake_connections_measured``,
    ``handshake_connections_imputed``, ``handshake_connections_excluded``, ``handshake_rtt_ms_median``
    (measured handshakes, None without any), ``handshake_time_ms_total`` (paid, TCP + TLS),
    ``tls_handshake_time_ms_total`` (its TLS part), ``handshake_round_trips_paid``,
    ``handshake_time_ms_saved``, ``handshake_round_trips_saved``, ``handshake_time_ms_one_per_request``,
    ``handshake_round_trips_one_per_request``. ``costs`` (``handshake_costs``) and ``per_transaction``
    (``transaction_costs``) are computed when not given.
    """
    costs = handshake_costs(connections) if costs is None else costs
    if per_transaction is None:
        per_transaction = transaction_costs(connections, transactions, costs)
    source = costs["tcp_source"]
    measured = equals(source, "measured")
    rtt = costs["tcp_handshake_ms"].to_numpy(dtype=float)[measured]
    included = ~np.isnan(costs["setup_ms"].to_numpy(dtype=float))
    tls_part = np.nan_to_num(costs["tls_handshake_ms"].to_numpy(dtype=float)[included], nan=0.0)

    def total(values: pd.Series | np.ndarray, ndigits: int) -> float | None:
        return json_float(float(np.nansum(np.asarray(values, dtype=float))), ndigits)

    return {
        "handshake_connections_measured": int(measured.sum()),
        "handshake_connections_imputed": int(equals(source, "server_median").sum()),
        "handshake_connections_excluded": int(equals(source, "excluded").sum()),
        "handshake_rtt_ms_median": json_float(np.median(rtt)) if rtt.size else None,
        "handshake_time_ms_total": total(costs["setup_ms"], 3),
        "tls_handshake_time_ms_total": total(tls_part, 3),
        "handshake_round_trips_paid": total(costs["setup_round_trips"], 3),
        "handshake_time_ms_saved": total(per_transaction["saved_ms"], 3),
        "handshake_round_trips_saved": total(per_transaction["saved_round_trips"], 3),
        "handshake_time_ms_one_per_request": total(per_transaction["one_per_request_ms"], 3),
        "handshake_round_trips_one_per_request": total(per_transaction["one_per_request_round_trips"], 3),
    }

