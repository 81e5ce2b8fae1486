"""Idle gaps on connections, and the idle timeouts they reveal.

This module owns the idle-gap metrics of the glossary (``DEFINITIONS``): the gaps between a response and
the next request on a connection (``transactions.idle_before_ms``), the idle time after the last response
until the close (``connections.idle_after_last_ms``), and the inference of a server's effective keep-alive
timeout from the connections it closed. Pure functions over the tables of ``analyzer.tables``; no I/O, no
clock. It does not know how the gaps were measured (that is the TCP/HTTP layers' job).
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
    grouped_order,
    json_float,
    known_false,
    last_of_group,
    positions,
)

# An idle-after-last value belongs to the timeout cluster when it lies within
# max(CLUSTER_MADS × MAD, CLUSTER_RELATIVE × median) of the median of the server's samples.
CLUSTER_MADS = 3.0
CLUSTER_RELATIVE = 0.10
# A close this soon after the last response is not an idle timeout firing but an unannounced close right
# after the response (no Connection: close); such closes are counted apart. No server is configured with a
# keep-alive timeout this short (nginx's and Apache's are whole seconds by default).
IMMEDIATE_CLOSE_MS = 50.0

DEFINITIONS: dict[str, str] = {
    "idle_before_ms": (
        "Idle gap before a request: on one connection, the end of the previous response (its last byte) to "
        "the start of this request (its first byte), in milliseconds, as seen at the capture point. Missing "
        "for the first request of a connection. Pipelined requests (sent before the previous response "
        "ended) have no idle gap: their negative values are left out of the statistics and counted as "
        "pipelined. Zeek and Wireshark have no field for it; it is the gap tcptrace's time-sequence graphs "
        "show between the two bursts."
    ),
    "idle_after_last_ms": (
        "Idle time after the last response: on one connection, the end of the last response to the first "
        "FIN or RST that closed it, in milliseconds, with who closed it (`close_by`: the side that sent "
        "the first FIN or RST, which Zeek's conn.log `history` shows as the order of its F/f and R/r "
        "letters). Missing when the connection "
        "carried no complete response or was still open at capture end."
    ),
    "inferred_server_idle_timeout": (
        "The keep-alive timeout a server actually enforces, inferred per server IP:port from the "
        "connections it closed while idle: connections closed by the server with a FIN (`close_by` server, "
        "`close_reason` fin) after a last response that left the connection usable (`keep_alive` not "
        "false, so closes announced with `Connection: close` are excluded), using their idle-after-last "
        "times. Closes less than 50 ms after the last response are not a timer firing: they are counted "
        "apart as immediate (unannounced) closes. Of the rest, samples farther than max(3 × MAD, 10 % of "
        "the median) from the median are outliers (an "
        "early close by a reload or a request limit); the estimate is the median of the remaining cluster, "
        "reported with the number of samples, outliers and the cluster's min, max and spread (max − min). "
        "Compared with the `Keep-Alive: timeout=` the server advertised (median over its connections) when "
        "it did. Servers close on a timer tick, so the estimate usually sits slightly above the configured "
        "value. No peer tool infers it."
    ),
}


def idle_before_stats(transactions: pd.DataFrame) -> dict[str, Any]:
    """Statistics of the idle gaps before requests, as JSON-safe scalars (milliseconds).

    Definition (``DEFINITIONS['idle_before_ms']``): on one connection, the end of the previous response to
    the start of this request; missing for the first request. Negative values are pipelined requests and
    are left out of the statistics (counted in ``idle_gaps_pipelined``).

    Keys: ``idle_gaps`` (count of gaps >= 0), ``idle_gaps_pipelined``, ``idle_before_ms_median``,
    ``idle_before_ms_p90``, ``idle_before_ms_max`` (None without gaps).
    """
    values = floats(transactions["idle_before_ms"])
    values = values[~np.isnan(values)]
    gaps = values[values >= 0]
    return {
        "idle_gaps": int(gaps.size),
        "idle_gaps_pipelined": int((values < 0).sum()),
        "idle_before_ms_median": json_float(np.median(gaps)) if gaps.size else None,
        "idle_before_ms_p90": json_float(np.quantile(gaps, 0.9)) if gaps.size else None,
        "idle_before_ms_max": json_float(gaps.max()) if gaps.size else None,
    }


def _last_keep_alive_false(connections: pd.DataFrame, transactions: pd.DataFrame) -> np.ndarray:
    """Per connection: True when its last transaction (by request start) is known not to keep it alive."""
    if transactions.empty or connections.empty:
        return np.zeros(len(connections), dtype=bool)
    found = positions(connections["uid"], transactions["uid"])
    known = found >= 0
    conn = found[known]
    order = grouped_order(conn, floats(transactions["trans_depth"])[known],
                          floats(transactions["ts_request_start"])[known])
    conn, closing = conn[order], known_false(transactions["keep_alive"])[known][order]
    last = last_of_group(conn)
    result = np.zeros(len(connections), dtype=bool)
    result[conn[last]] = closing[last]
    return result


def idle_after_last(connections: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    """Per connection: the idle time after its last response until the close, and who closed.

    Definition (``DEFINITIONS['idle_after_last_ms']``): end of the last response to the first FIN/RST,
    with ``close_by`` the side that sent it. Columns: ``uid``, ``server`` (ip:port), ``close_by``,
    ``close_reason``, ``idle_after_last_ms``, ``closed_after_close`` (the last response said the connection
    would not be kept alive, so the close was announced, not a timeout), ``timeout_sample`` (counts towards
    the server idle-timeout inference: closed by the server with a FIN, not announced, at least
    ``IMMEDIATE_CLOSE_MS`` after the last response).
    One row per connection, in table order.
    """
    idle = floats(connections["idle_after_last_ms"])
    announced = _last_keep_alive_false(connections, transactions)
    by_server = equals(connections["close_by"], "server") & equals(connections["close_reason"], "fin")
    with np.errstate(invalid="ignore"):
        sample = by_server & ~announced & ~np.isnan(idle) & (idle >= IMMEDIATE_CLOSE_MS)
    return pd.DataFrame({
        "uid": connections["uid"].astype("string").array,
        "server": pd.array(endpoints(connections["server_ip"], connections["server_port"]), dtype="string"),
        "close_by": connections["close_by"].astype("string").array,
        "close_reason": connections["close_reason"].astype("string").array,
        "idle_after_last_ms": idle,
        "closed_after_close": announced,
        "timeout_sample": sample,
    })


def _positions_by(labels: list[str]) -> dict[str, np.ndarray]:
    """label -> positions (ascending) of the rows carrying it."""
    if not labels:
        return {}
    grouped = pd.Series(np.arange(len(labels))).groupby(np.array(labels, dtype=object)).indices
    return {str(label): np.asarray(positions) for label, positions in grouped.items()}


def _cluster(values_ms: np.ndarray) -> np.ndarray:
    """The samples within the timeout cluster (see ``CLUSTER_MADS`` and ``CLUSTER_RELATIVE``)."""
    median = float(np.median(values_ms))
    mad = float(np.median(np.abs(values_ms - median)))
    tolerance = max(CLUSTER_MADS * mad, CLUSTER_RELATIVE * abs(median))
    return values_ms[np.abs(values_ms - median) <= tolerance]


def infer_idle_timeouts(connections: pd.DataFrame, transactions: pd.DataFrame,
                        closed_by: str = "server") -> pd.DataFrame:
    """Infer each server's effective keep-alive (idle) timeout from the connections it closed while idle.

    Definition (``DEFINITIONS['inferred_server_idle_timeout']``): per server IP:port, the idle-after-last
    times of connections closed by the server with a FIN after a last response that left the connection
    usable (``keep_alive`` not false). Closes less than ``IMMEDIATE_CLOSE_MS`` (50 ms) after the last
    response are counted apart (``immediate_closes``). Of the rest, samples farther than max(3 × MAD, 10 %
    of the median) from the median are outliers; the estimate is the median of the remaining cluster.
    Compared with the advertised ``Keep-Alive: timeout=`` (median of ``keep_alive_timeout_s`` over the
    server's connections).

    ``closed_by="client"`` applies the same rule to connections the client closed (its pool's idle
    timeout); the advertised columns then still describe the server.

    Columns: ``server``, ``samples`` (in the cluster), ``outliers``, ``immediate_closes``, ``timeout_s``
    (estimate, NaN without samples), ``min_s``,
    ``max_s``, ``spread_s`` (max − min of the cluster), ``advertised_timeout_s`` and ``difference_s``
    (estimate − advertised). One row per server with at least one sample, immediate close or advertised
    timeout, sorted by samples (descending) then server.
    """
    columns = {"server": "string", "samples": "int64", "outliers": "int64", "immediate_closes": "int64",
               "timeout_s": "float64", "min_s": "float64", "max_s": "float64", "spread_s": "float64",
               "advertised_timeout_s": "float64", "difference_s": "float64"}
    servers = endpoints(connections["server_ip"], connections["server_port"])
    idle = floats(connections["idle_after_last_ms"])
    announced = _last_keep_alive_false(connections, transactions)
    closer = equals(connections["close_by"], closed_by) & equals(connections["close_reason"], "fin")
    with np.errstate(invalid="ignore"):
        sample = closer & ~announced & ~np.isnan(idle) & (idle >= 0)
    advertised = floats(connections["keep_alive_timeout_s"])
    rows: list[dict[str, Any]] = []
    groups = _positions_by(servers)
    for server in sorted(groups):
        mine = groups[server]
        values = idle[mine[sample[mine]]]
        immediate = int((values < IMMEDIATE_CLOSE_MS).sum())
        values = values[values >= IMMEDIATE_CLOSE_MS]
        announced_s = advertised[mine]
        announced_s = announced_s[~np.isnan(announced_s)]
        advertised_s = float(np.median(announced_s)) if announced_s.size else math.nan
        if values.size == 0 and immediate == 0 and math.isnan(advertised_s):
            continue
        if values.size:
            cluster = _cluster(values)
            timeout = float(np.median(cluster)) / 1000.0
            low, high = float(cluster.min()) / 1000.0, float(cluster.max()) / 1000.0
        else:
            cluster = values
            timeout = low = high = math.nan
        rows.append({"server": server, "samples": int(cluster.size),
                     "outliers": int(values.size - cluster.size), "immediate_closes": immediate,
                     "timeout_s": timeout, "min_s": low, "max_s": high, "spread_s": high - low,
                     "advertised_timeout_s": advertised_s, "difference_s": timeout - advertised_s})
    if not rows:
        return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in columns.items()})
    frame = pd.DataFrame(rows, columns=list(columns)).astype(columns)
    order = np.lexsort((frame["server"].to_numpy(dtype=object), -frame["samples"].to_numpy()))
    return frame.iloc[order].reset_index(drop=True)


def timeouts_for_summary(timeouts: pd.DataFrame) -> list[dict[str, Any]]:
    """``infer_idle_timeouts`` rows with at least one sample as JSON-safe dicts (seconds, 6 decimals)."""
    result: list[dict[str, Any]] = []
    for row in timeouts.to_dict("records"):
        if int(row["samples"]) == 0:
            continue
        result.append({
            "server": str(row["server"]),
            "timeout_s": json_float(row["timeout_s"], 6),
            "samples": int(row["samples"]),
            "outliers": int(row["outliers"]),
            "immediate_closes": int(row["immediate_closes"]),
            "min_s": json_float(row["min_s"], 6),
            "max_s": json_float(row["max_s"], 6),
            "spread_s": json_float(row["spread_s"], 6),
            "advertised_timeout_s": json_float(row["advertised_timeout_s"], 6),
        })
    return result
