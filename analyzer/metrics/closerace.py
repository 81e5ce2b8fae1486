"""Close races: requests sent on a connection the server was closing, and the client's retry.

This module owns the close-race metric (``DEFINITIONS``): which transactions were caught by the server's
close of a keep-alive connection, and whether and how fast the client sent the same request again on a new
connection. Pure functions over the ``connections`` and ``transactions`` tables of ``analyzer.tables``; no
I/O, no clock. It knows nothing of packets: the server's close instant comes from the connection's
``idle_after_last_ms`` (last response end → first FIN or RST) and its side from ``close_by``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analyzer.metrics.frames import endpoints, equals, flags, floats, positions, texts

RACE_MIN_WINDOW_MS = 1.0  # the race window is one handshake RTT, at least this (capture clocks, loopback)
RETRY_MAX_S = 60.0  # a retry is the same request on a new connection within this time

DEFINITIONS: dict[str, str] = {
    "close_race": (
        "A request caught by the server's close of a keep-alive connection: on a connection the server "
        "closed (`close_by` server, FIN or RST, at the instant `idle_after_last_ms` after its last response), "
        "a request whose first byte was captured no earlier than one RTT before that close (the handshake "
        "RTT, at least 1 ms: the client cannot have seen the FIN yet, or sent it anyway) and that got no "
        "complete response, a response cut by the close, or a 408 (Request Timeout); a 408 on a connection "
        "the server then closed counts wherever it falls. The client retried when the same method and "
        "target was sent as the first request of a later connection from the same client IP to the same "
        "server within 60 s (`retry_delay_ms`: race request start → retry start). Browsers and HTTP clients "
        "retry idempotent requests silently; a POST caught this way is lost or, if retried, possibly done "
        "twice. No peer tool reports it."
    ),
}

_COLUMNS: dict[str, str] = {
    "uid": "string", "trans_depth": "Int64", "client_ip": "string", "server": "string", "method": "string",
    "target": "string", "ts_request_start": "float64", "ts_server_close": "float64",
    "request_after_close_ms": "float64", "window_ms": "float64", "outcome": "string", "retried": "boolean",
    "retry_uid": "string", "retry_delay_ms": "float64",
}


def close_races(connections: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    """The close races of a capture (``DEFINITIONS['close_race']``), one row per racing request.

    Columns: ``uid``, ``trans_depth``, ``client_ip``, ``server`` (ip:port), ``method``, ``target``,
    ``ts_request_start``, ``ts_server_close``, ``request_after_close_ms`` (request start − server close:
    negative when the request was sent first), ``window_ms`` (the race window used), ``outcome``
    (``no_response``, ``incomplete_response`` or ``408``), ``retried``, ``retry_uid`` and
    ``retry_delay_ms`` (null when not retried). Sorted by request start.
    """
    empty = pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in _COLUMNS.items()})
    if connections.empty or transactions.empty:
        return empty
    by_server = equals(connections["close_by"], "server")
    if not by_server.any():
        return empty
    found = positions(connections["uid"], transactions["uid"])
    known = found >= 0
    at = np.maximum(found, 0)
    resp_end = floats(transactions["ts_response_end"])
    frame = pd.DataFrame({"conn": np.where(known, found, -1), "end": resp_end})
    last_end = frame[frame["conn"] >= 0].groupby("conn")["end"].max()
    conn_last = np.full(len(connections), math.nan)
    conn_last[last_end.index.to_numpy(dtype=np.int64)] = last_end.to_numpy(dtype=float)
    close_ts = conn_last + floats(connections["idle_after_last_ms"]) / 1000.0
    window_ms = np.fmax(floats(connections["handshake_rtt_ms"]), RACE_MIN_WINDOW_MS)

    req = floats(transactions["ts_request_start"])
    status = floats(transactions["status"])
    has_response = ~np.isnan(floats(transactions["ts_response_start"])) | ~np.isnan(status)
    complete = flags(transactions["response_complete"]) if "response_complete" in transactions \
        else has_response
    tx_closed = np.where(known, by_server[at], False)
    tx_close = np.where(known, close_ts[at], math.nan)
    tx_window = np.where(known, window_ms[at], math.nan)
    with np.errstate(invalid="ignore"):
        after_ms = (req - tx_close) * 1000.0
        in_window = after_ms >= -tx_window
        unanswered = ~has_response
        cut = has_response & ~complete & ~(status == 408)
        timeout_408 = status == 408
        race = tx_closed & ((in_window & (unanswered | cut)) | timeout_408)
    race &= ~flags(transactions["estimated"]) if "estimated" in transactions else True
    picks = np.flatnonzero(race)
    if picks.size == 0:
        return empty
    outcome = np.where(timeout_408, "408", np.where(unanswered, "no_response", "incomplete_response"))
    conn_uids = texts(connections["uid"])  # only when there are races: a str per connection
    clients = np.array(texts(connections["client_ip"]), dtype=object)
    servers = np.array(endpoints(connections["server_ip"], connections["server_port"]), dtype=object)
    methods = texts(transactions["method"])
    targets = texts(transactions["target"])
    depth = floats(transactions["trans_depth"])
    conn_start = floats(connections["ts_start"])
    # Retries: first requests of connections, keyed by (client, server, method, target).
    firsts = np.flatnonzero(known & (depth == 1) & ~np.isnan(req))
    first_keys: dict[tuple[Any, ...], list[tuple[float, int]]] = {}
    for i in firsts.tolist():
        key = (clients[at[i]], servers[at[i]], methods[i], targets[i])
        first_keys.setdefault(key, []).append((req[i], i))
    rows: list[dict[str, Any]] = []
    for i in picks.tolist():
        c = at[i]
        key = (clients[c], servers[c], methods[i], targets[i])
        retry_uid, delay = None, math.nan
        for ts, j in sorted(first_keys.get(key, [])):
            if at[j] != c and ts > req[i] and ts - req[i] <= RETRY_MAX_S and conn_start[at[j]] >= conn_start[c]:
                retry_uid, delay = conn_uids[at[j]], (ts - req[i]) * 1000.0
                break
        rows.append({
            "uid": conn_uids[c], "trans_depth": None if math.isnan(depth[i]) else int(depth[i]),
            "client_ip": clients[c], "server": servers[c], "method": methods[i], "target": targets[i],
            "ts_request_start": req[i], "ts_server_close": tx_close[i], "request_after_close_ms": after_ms[i],
            "window_ms": tx_window[i], "outcome": str(outcome[i]), "retried": retry_uid is not None,
            "retry_uid": retry_uid, "retry_delay_ms": delay,
        })
    result = pd.DataFrame(rows, columns=list(_COLUMNS)).astype(_COLUMNS)
    return result.sort_values("ts_request_start", kind="stable").reset_index(drop=True)


def close_race_stats(races: pd.DataFrame) -> dict[str, Any]:
    """Counts of ``close_races``: ``close_races``, ``close_races_retried``, ``close_race_retry_ms_median``
    (None without retries), JSON-safe."""
    delays = races["retry_delay_ms"].to_numpy(dtype=float) if len(races) else np.zeros(0)
    delays = delays[~np.isnan(delays)]
    return {"close_races": len(races),
            "close_races_retried": int(flags(races["retried"]).sum()) if len(races) else 0,
            "close_race_retry_ms_median": round(float(np.median(delays)), 3) if delays.size else None}
