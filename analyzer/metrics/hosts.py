"""Per-host view: the reuse, idle and handshake metrics broken down by host.

This module owns what a *host* is (``DEFINITIONS['host']``) and the per-host table the report and the
terminal summary show. It combines the other metric modules and adds nothing new to measure. Pure
functions over the tables of ``analyzer.tables``; no I/O, no clock.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analyzer.metrics.frames import (
    endpoints,
    equals,
    floats,
    pair_codes,
    positions,
    shared_strings,
    texts,
)
from analyzer.metrics.handshake import handshake_costs, overhead_by, transaction_costs
from analyzer.metrics.idle import infer_idle_timeouts
from analyzer.metrics.reuse import avoidable_connections, connection_requests, transaction_reused

DEFINITIONS: dict[str, str] = {
    "host": (
        "A host is a server IP:port plus the HTTP Host header its requests named (lower-cased, as sent, so "
        "a port in the header stays). A connection belongs to one host: the Host header most of its "
        "requests carried (ties: alphabetical first), else its TLS SNI, else the Host header most common "
        "among all requests to the same server IP:port, else the server IP:port alone. All requests of a "
        "connection count for its host. Hosts are labelled \"name (ip:port)\", or \"ip:port\" when there "
        "is no name or the Host header only repeats the server's address. The Host header is Zeek's "
        "http.log `host` and Wireshark's `http.host`."
    ),
    "per_host_table": (
        "Per host: connections, requests (transactions), requests per connection (mean over its connections "
        "that carried at least one), reuse ratio, connections reused (> 1 request), new connections "
        "avoidable, median idle gap before a request (non-pipelined), closes by server and by client, "
        "handshake time and round trips paid and saved by reuse, the handshake time one connection per "
        "request would have cost, and the server's inferred idle timeout."
    ),
}


def host_names(hosts: pd.Series) -> np.ndarray:
    """Host headers stripped and lower-cased, as an object array with None for missing or blank: one ``str``
    per distinct name (``shared_strings``; a million requests to a few hosts made a million ``str`` before:
    about 70 MB)."""
    if len(hosts) == 0:
        return np.zeros(0, dtype=object)
    codes, uniques = pd.factorize(hosts.astype("string"))  # each distinct header cleaned once, not each row
    cleaned = pd.Series(uniques, dtype="string").str.strip().str.lower()
    names = np.array([*shared_strings(cleaned.where(cleaned != "", None)).tolist(), None], dtype=object)
    return np.asarray(names[codes], dtype=object)  # code -1 (missing): the last, None


def _modes(keys: np.ndarray, hosts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each integer key (``keys``; rows with a negative key are skipped) the most frequent of its rows'
    ``hosts`` (an object array of ``str``; ``None`` rows are skipped), ties alphabetical first: the keys
    that have one, ascending, and their host. By integer codes, not a ``dict`` or a groupby of strings:
    ``connection_hosts`` of a million tiny connections peaked 430 MiB above its input in 2.9 s that way,
    308 MiB in 1.6 s this way."""
    keys = np.asarray(keys, dtype=np.int64)
    named = ~pd.isna(hosts) & (keys >= 0)
    keys, hosts = keys[named], hosts[named]
    if not len(keys):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
    codes, uniques = pd.factorize(hosts)
    alphabetical = np.argsort(np.asarray(uniques, dtype=object), kind="stable")
    rank = np.empty(len(uniques), dtype=np.int64)
    rank[alphabetical] = np.arange(len(uniques))
    pairs, counts = np.unique(keys * len(uniques) + rank[codes], return_counts=True)
    key_of, rank_of = np.divmod(pairs, len(uniques))
    order = np.lexsort((rank_of, -counts, key_of))  # per key: most rows first, then alphabetical
    key_of, rank_of = key_of[order], rank_of[order]
    first = np.append(True, key_of[1:] != key_of[:-1])
    return key_of[first], np.asarray(uniques, dtype=object)[alphabetical][rank_of[first]]


def connection_hosts(connections: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    """Per connection: its server, Host header and host label (see ``DEFINITIONS['host']``).

    The Host header most of its requests carried (lower-cased; ties: alphabetical first), else its TLS
    SNI, else the most common Host header among all requests to the same server IP:port, else none.

    Columns (one row per connection, in table order): ``uid``, ``server`` (ip:port), ``host_header``
    (``<NA>`` when none) and ``host`` (``"name (ip:port)"``, or ``"ip:port"`` without a name).
    """
    n = len(connections)
    conn_servers = np.array(endpoints(connections["server_ip"], connections["server_port"]), dtype=object)
    found = positions(connections["uid"], transactions["uid"])
    tx_hosts = host_names(transactions["host"])
    headers = np.full(n, None, dtype=object)
    carried = found >= 0
    conns, names = _modes(found[carried], tx_hosts[carried])  # connection row → its requests' Host
    headers[conns] = names
    if n:
        sni = connections["sni"].astype("string").str.strip().str.lower()
        sni_names = shared_strings(sni.where(sni != "", None))
        headers = np.where(pd.isna(headers), sni_names, headers)
        unnamed = np.flatnonzero(pd.isna(headers))
        if unnamed.size and len(transactions):
            tx_servers = _transaction_servers(transactions, found, conn_servers)
            server_codes, servers = pd.factorize(tx_servers)
            with_mode, mode = _modes(server_codes, tx_hosts)
            server_mode = np.full(len(servers) + 1, None, dtype=object)  # last: a server without requests
            server_mode[with_mode] = mode
            code = pd.Index(servers).get_indexer(conn_servers[unnamed])
            headers[unnamed] = server_mode[code]  # -1: the last, None
        headers[pd.isna(headers)] = None
    # one label per distinct (server, header) pair, shared by its connections
    pairs = pair_codes(conn_servers, headers)
    first = np.unique(pairs, return_index=True)[1] if n else np.zeros(0, dtype=np.int64)
    labels = np.array([host_label(conn_servers[i], headers[i]) for i in first.tolist()], dtype=object)
    return pd.DataFrame({
        "uid": connections["uid"].astype("string").array,
        "server": pd.array(conn_servers, dtype="string"),
        "host_header": pd.array(headers, dtype="string"),
        "host": pd.array(labels[pairs] if n else labels, dtype="string"),
    }, index=connections.index)


def _transaction_servers(transactions: pd.DataFrame, found: np.ndarray, conn_servers: np.ndarray) -> np.ndarray:
    """Per transaction, its connection's server (``found``: the connection's row, -1 when unknown), else its own
    server columns: one ``str`` per server."""
    servers = np.empty(len(found), dtype=object)
    known = found >= 0
    servers[known] = conn_servers[found[known]]
    unknown = np.flatnonzero(~known)
    if unknown.size:
        servers[unknown] = endpoints(transactions["server_ip"].iloc[unknown], transactions["server_port"].iloc[unknown])
    return servers


def host_label(server: str, host_header: str | None) -> str:
    """``"name (ip:port)"``; ``"ip:port"`` without a Host header or when the header only names the server's
    own address (``127.0.0.1:8080`` or ``127.0.0.1`` for server ``127.0.0.1:8080``)."""
    if not host_header:
        return server
    address = server.rsplit(":", 1)[0]
    if host_header in (server, address, address.strip("[]")):
        return server
    return f"{host_header} ({server})"


def transaction_hosts(connections: pd.DataFrame, transactions: pd.DataFrame,
                      conn_hosts: pd.DataFrame | None = None) -> np.ndarray:
    """Per transaction: its host label (``DEFINITIONS['host']``) as an object array of ``str``.

    A transaction belongs to its connection's host; one without a known connection to
    ``host_label(its own server, its Host header)``. ``conn_hosts`` (``connection_hosts``) is computed
    when not given."""
    if conn_hosts is None:
        conn_hosts = connection_hosts(connections, transactions)
    conn_host = np.array([str(h) for h in texts(conn_hosts["host"])], dtype=object)
    found = positions(conn_hosts["uid"], transactions["uid"])
    if found.size == 0:
        return np.zeros(0, dtype=object)
    labels = np.full(found.size, None, dtype=object)
    if conn_host.size:
        labels[found >= 0] = conn_host[found[found >= 0]]
    missing = np.flatnonzero(found < 0)
    if missing.size:
        own = endpoints(transactions["server_ip"].iloc[missing], transactions["server_port"].iloc[missing])
        names = host_names(transactions["host"].iloc[missing])
        labels[missing] = [host_label(server, name) for server, name in zip(own, names.tolist(), strict=True)]
    return np.asarray(labels, dtype=object)


_HOST_COLUMNS: dict[str, str] = {
    "host": "string", "host_header": "string", "server": "string", "connections": "int64",
    "requests": "int64", "requests_per_connection": "float64", "reuse_ratio": "float64",
    "connections_reused": "int64", "new_connections_avoidable": "int64", "idle_before_ms_median": "float64",
    "closes_by_server": "int64", "closes_by_client": "int64", "handshake_time_ms": "float64",
    "handshake_round_trips": "float64", "handshake_time_ms_saved": "float64",
    "handshake_round_trips_saved": "float64", "handshake_time_ms_one_per_request": "float64",
    "idle_timeout_s": "float64", "http_versions": "string",
}


def _host_labels(conn_hosts: pd.DataFrame, transactions: pd.DataFrame
                 ) -> tuple[list[str], np.ndarray, dict[str, tuple[str | None, str]]]:
    """Each connection's host label, each transaction's (its connection's; one without a known
    connection its own) as an object array of shared ``str``, and per label its Host header and server, in
    order of first appearance: the rows of ``host_table``. Only the transactions without a known connection
    are named one by one (1,200,000 transactions of twenty connections went through a Python list of their
    connections' rows)."""
    conn_host = [str(h) for h in texts(conn_hosts["host"])]
    info: dict[str, tuple[str | None, str]] = {}
    for label, header, server in zip(conn_host, texts(conn_hosts["host_header"]), texts(conn_hosts["server"]),
                                     strict=True):
        info.setdefault(label, (header, str(server)))
    found = positions(conn_hosts["uid"], transactions["uid"])
    trans_host = np.empty(found.size, dtype=object)
    known = found >= 0
    if conn_host:
        trans_host[known] = np.array(conn_host, dtype=object)[found[known]]
    unknown = np.flatnonzero(~known)
    if unknown.size:
        own_servers = endpoints(transactions["server_ip"].iloc[unknown], transactions["server_port"].iloc[unknown])
        names = host_names(transactions["host"].iloc[unknown])
        for j, own, name in zip(unknown.tolist(), own_servers, names.tolist(), strict=True):
            label = host_label(own, name)
            info.setdefault(label, (name, own))
            trans_host[j] = label
    return conn_host, trans_host, info


def host_count(connections: pd.DataFrame, transactions: pd.DataFrame,
               conn_hosts: pd.DataFrame | None = None) -> int:
    """The number of rows of ``host_table`` (the summary's ``hosts``), without the table and the metrics
    it gathers. ``conn_hosts`` (``connection_hosts``) is computed when not given."""
    hosts = connection_hosts(connections, transactions) if conn_hosts is None else conn_hosts
    return len(_host_labels(hosts, transactions)[2])


def flag_avoidable(connections: pd.DataFrame, avoidable: pd.DataFrame) -> np.ndarray:
    """Per connection (in table order): 1 when it is one of ``avoidable`` (``avoidable_connections``), else
    0: what ``host_table`` reads of them."""
    rows = positions(connections["uid"], avoidable["uid"])
    flags = np.zeros(len(connections), dtype=int)
    flags[rows[rows >= 0]] = 1
    return flags


def host_table(connections: pd.DataFrame, transactions: pd.DataFrame, *,
               costs: pd.DataFrame | None = None, per_transaction: pd.DataFrame | None = None,
               avoidable: pd.DataFrame | None = None, timeouts: pd.DataFrame | None = None,
               conn_hosts: pd.DataFrame | None = None, avoidable_flags: np.ndarray | None = None) -> pd.DataFrame:
    """The per-host table (``DEFINITIONS['per_host_table']``; hosts as ``DEFINITIONS['host']``).

    Columns: ``host`` (label), ``host_header``, ``server``, ``connections``, ``requests`` (transactions),
    ``requests_per_connection`` (mean over connections that carried >= 1), ``reuse_ratio`` (NaN without
    requests), ``connections_reused`` (> 1 request), ``new_connections_avoidable``,
    ``idle_before_ms_median`` (gaps >= 0), ``closes_by_server``, ``closes_by_client``,
    ``handshake_time_ms`` and ``handshake_round_trips`` (paid), ``handshake_time_ms_saved``,
    ``handshake_round_trips_saved``, ``handshake_time_ms_one_per_request``, ``idle_timeout_s`` (the
    server's inferred idle timeout, NaN when not inferred) and ``http_versions`` (the request versions seen,
    comma-separated). Sorted by requests, then connections (both descending), then host.

    ``costs`` (``handshake_costs``), ``per_transaction`` (``transaction_costs``), ``avoidable``
    (``avoidable_connections``; or instead ``avoidable_flags``, its ``flag_avoidable``), ``timeouts``
    (``infer_idle_timeouts``) and ``conn_hosts`` (``connection_hosts``) are computed when not given.
    """
    hosts = connection_hosts(connections, transactions) if conn_hosts is None else conn_hosts
    conn_host, trans_host, info = _host_labels(hosts, transactions)
    if not info:
        return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in _HOST_COLUMNS.items()})

    costs = handshake_costs(connections) if costs is None else costs
    if per_transaction is None:
        per_transaction = transaction_costs(connections, transactions, costs)
    overhead = overhead_by(costs, conn_host, per_transaction, trans_host, "host").set_index("host")

    requests = floats(connection_requests(connections, transactions))
    if avoidable_flags is None:
        avoidable_flags = flag_avoidable(connections, avoidable if avoidable is not None
                                         else avoidable_connections(connections, transactions))
    conn_frame = pd.DataFrame({
        "host": np.array(conn_host, dtype=object),
        "carrying": np.where(requests >= 1, requests, math.nan),
        "reused": (requests > 1).astype(int),
        "avoidable": avoidable_flags,
        "by_server": equals(connections["close_by"], "server").astype(int),
        "by_client": equals(connections["close_by"], "client").astype(int),
    })
    conn_groups = conn_frame.groupby("host")
    idle = floats(transactions["idle_before_ms"])
    trans_frame = pd.DataFrame({
        "host": trans_host,
        "reused": transaction_reused(transactions).astype(int),
        "idle": np.where(idle >= 0, idle, math.nan),
    })
    trans_groups = trans_frame.groupby("host")
    if timeouts is None:
        timeouts = infer_idle_timeouts(connections, transactions)
    timeout_of = {str(s): float(t) for s, t in zip(timeouts["server"], timeouts["timeout_s"], strict=True)}

    def per(groups: Any, column: str, how: str) -> dict[str, float]:
        if len(groups.obj) == 0:
            return {}
        return {str(k): float(v) for k, v in getattr(groups[column], how)().items()}

    carrying_mean = per(conn_groups, "carrying", "mean")
    reused_conns = per(conn_groups, "reused", "sum")
    avoidable_n = per(conn_groups, "avoidable", "sum")
    by_server = per(conn_groups, "by_server", "sum")
    by_client = per(conn_groups, "by_client", "sum")
    reused_trans = per(trans_groups, "reused", "sum")
    idle_median = per(trans_groups, "idle", "median")
    version_sets: dict[str, set[str]] = {}
    if len(trans_host):  # each distinct (host, version) pair once, not each transaction
        host_codes, hosts_seen = pd.factorize(trans_host)
        version_codes, versions_seen = pd.factorize(transactions["http_version"].astype("string"))
        named = (host_codes >= 0) & (version_codes >= 0)
        width = len(versions_seen)
        for pair in np.unique(host_codes[named].astype(np.int64) * width + version_codes[named]).tolist():
            h, v = divmod(pair, width)
            if versions_seen[v]:
                version_sets.setdefault(str(hosts_seen[h]), set()).add(str(versions_seen[v]))
    versions = {host: ", ".join(sorted(found)) for host, found in version_sets.items()}

    rows: list[dict[str, Any]] = []
    for label, (header, server) in info.items():
        row: dict[Any, Any] | None = overhead.loc[label].to_dict() if label in overhead.index else None
        n_requests = int(row["transactions"]) if row is not None else 0
        rows.append({
            "host": label, "host_header": header, "server": server,
            "connections": int(row["connections"]) if row is not None else 0,
            "requests": n_requests,
            "requests_per_connection": carrying_mean.get(label, math.nan),
            "reuse_ratio": reused_trans.get(label, 0.0) / n_requests if n_requests else math.nan,
            "connections_reused": int(reused_conns.get(label, 0)),
            "new_connections_avoidable": int(avoidable_n.get(label, 0)),
            "idle_before_ms_median": idle_median.get(label, math.nan),
            "closes_by_server": int(by_server.get(label, 0)),
            "closes_by_client": int(by_client.get(label, 0)),
            "handshake_time_ms": float(row["handshake_time_ms"]) if row is not None else math.nan,
            "handshake_round_trips": float(row["handshake_round_trips"]) if row is not None else math.nan,
            "handshake_time_ms_saved": float(row["handshake_time_ms_saved"]) if row is not None else math.nan,
            "handshake_round_trips_saved":
                float(row["handshake_round_trips_saved"]) if row is not None else math.nan,
            "handshake_time_ms_one_per_request":
                float(row["handshake_time_ms_one_per_request"]) if row is not None else math.nan,
            "idle_timeout_s": timeout_of.get(server, math.nan),
            "http_versions": versions.get(label),
        })
    frame = pd.DataFrame(rows, columns=list(_HOST_COLUMNS)).astype(_HOST_COLUMNS)
    frame = frame.sort_values(["requests", "connections", "host"], ascending=[False, False, True],
                              kind="stable")
    return frame.reset_index(drop=True)
