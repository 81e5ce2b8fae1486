"""Why each new connection was opened: the reason a connection to a server was not reused.

This module owns the ``new_connection_reason`` metric (``DEFINITIONS``): for every connection whose opening
was captured, why the client opened it instead of sending its request on an earlier connection to the same
server, and which reason accounts for most new connections (the report's headline). Pure functions over
the ``connections`` and ``transactions`` tables of ``analyzer.tables`` plus the results of
``reuse.avoidable_connections`` and ``closerace.close_races``; no I/O, no clock. It knows nothing of packets
or parsing: a connection's end comes from ``ts_end``/``close_by``/``close_reason``/``idle_after_last_ms``,
the announcements from each transaction's ``keep_alive`` and ``Connection`` headers, which the HTTP layer's
one reuse decision recorded.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import numpy as np
import pandas as pd

from analyzer.metrics.closerace import close_races
from analyzer.metrics.frames import (
    endpoints,
    equals,
    flags,
    floats,
    grouped_order,
    json_float,
    known_false,
    pair_codes,
    positions,
    texts,
)
from analyzer.metrics.idle import IMMEDIATE_CLOSE_MS
from analyzer.metrics.reuse import avoidable_connections

# Reasons, in the order the classifier tries them (the first that applies is the connection's reason).
FIRST_CONNECTION = "first_connection"  # no earlier connection from this client to this server
OPENED_BEFORE_CAPTURE = "opened_before_capture"  # its opening was not captured: not judged
CLOSE_RACE_RETRY = "close_race_retry"
IDLE_CONNECTION_UNUSED = "idle_connection_unused"
PARALLEL = "parallel_requests"
CLIENT_CONNECTION_CLOSE = "client_connection_close"
HTTP10 = "http10_no_keep_alive"
SERVER_MAX_REQUESTS = "server_max_requests"
SERVER_CONNECTION_CLOSE = "server_connection_close"
NOT_PERSISTENT = "response_not_persistent"
SERVER_IDLE_CLOSE = "server_idle_close"
SERVER_GOAWAY = "server_goaway"
SERVER_RESET = "server_reset"
CLIENT_CLOSED_IDLE = "client_closed_idle"
CLIENT_CLOSED_AFTER_USE = "client_closed_after_use"
UNKNOWN = "unknown"

_LOOP_BLOCK = 65_536  # connections whose order is made a Python list at once (a million: 36 MB)

# Tie-break order of the reasons (as listed in the definition).
REASON_ORDER = (CLOSE_RACE_RETRY, IDLE_CONNECTION_UNUSED, PARALLEL, CLIENT_CONNECTION_CLOSE, HTTP10,
                SERVER_MAX_REQUESTS, SERVER_CONNECTION_CLOSE, NOT_PERSISTENT, SERVER_GOAWAY, SERVER_RESET,
                SERVER_IDLE_CLOSE, CLIENT_CLOSED_AFTER_USE, CLIENT_CLOSED_IDLE, UNKNOWN, FIRST_CONNECTION,
                OPENED_BEFORE_CAPTURE)
NOT_A_MISS = frozenset({FIRST_CONNECTION, OPENED_BEFORE_CAPTURE})  # not a new connection that reuse could save

# What each reason means, for the report's reasons table (plain text; the glossary holds the full rule).
REASON_LABELS: dict[str, str] = {
    SERVER_IDLE_CLOSE: "the server closed the previous connection after it sat idle",
    CLIENT_CONNECTION_CLOSE: "the client asked to close (Connection: close in its request)",
    HTTP10: "HTTP/1.0 without keep-alive",
    SERVER_CONNECTION_CLOSE: "the server asked to close (Connection: close in its response)",
    SERVER_MAX_REQUESTS: "the server closed after its advertised Keep-Alive max requests",
    NOT_PERSISTENT: "the response could not keep the connection (body delimited by the close)",
    PARALLEL: "every open connection to the server was busy (parallel requests)",
    IDLE_CONNECTION_UNUSED: "an idle, reusable connection was open but not used (client pool miss)",
    CLIENT_CLOSED_IDLE: "the client closed a reusable connection after it sat idle (its pool's idle limit or "
                        "size)",
    CLIENT_CLOSED_AFTER_USE: "the client closed a reusable connection as soon as its response arrived (no "
                             "connection pool)",
    CLOSE_RACE_RETRY: "a retry of a request caught by the server's close of the previous connection",
    SERVER_GOAWAY: "the server ended the previous HTTP/2 connection with GOAWAY",
    SERVER_RESET: "the server reset the previous connection",
    UNKNOWN: "the previous connection's end was not seen",
    FIRST_CONNECTION: "first connection from this client to this server",
    OPENED_BEFORE_CAPTURE: "opened before the capture started (not judged)",
}

DEFINITIONS: dict[str, str] = {
    "new_connection_reason": (
        "Why a connection was opened instead of reusing an earlier one. Connections are grouped by client IP "
        "and server IP:port and ordered by their start; only connections whose opening was captured (SYN, "
        "or QUIC Initial) are judged (`opened_before_capture` otherwise). The first of a group is "
        "`first_connection`. A later connection C gets the first reason that applies: `close_race_retry` (C "
        "carried the retry of a close race); `idle_connection_unused` (C is a new connection avoidable: an "
        "idle, reusable connection was open); `parallel_requests` (another connection of the group was "
        "still open and usable when C opened, so it was busy: a request in flight or not yet answered). "
        "Otherwise the previous connection P is the one of the group that stopped being usable last before "
        "C opened (usable until its close, or until the first exchange that announced the close: the "
        "request's start for a client announcement, the response's start for a server's), and C's reason is "
        "how P stopped: `client_connection_close` (a request with `Connection: close`), "
        "`http10_no_keep_alive` (HTTP/1.0 without keep-alive on either side), `server_max_requests` "
        "(`Connection: close` in the response to P's request number `Keep-Alive: max=`), "
        "`server_connection_close` (other `Connection: close` in a response), `response_not_persistent` "
        "(a response whose body ended with the close), `server_goaway` (HTTP/2 GOAWAY from the server), "
        "`server_reset` (the server's RST), `server_idle_close` (the server's FIN after P sat idle and "
        "usable), `client_closed_after_use` (the client closed P, still usable, less than 50 ms after "
        "its last response ended: it keeps no pool), `client_closed_idle` (the client closed P, still usable, "
        "later: its pool's idle limit or size), else `unknown`. New connections that reuse could have "
        "saved are all but `first_connection` and `opened_before_capture`; the headline names the reason "
        "of most of them (`top_reuse_blocker`; ties go to the reason listed first here). No peer tool defines it."
    ),
}

_COLUMNS: dict[str, str] = {
    "uid": "string", "client_ip": "string", "server": "string", "ts_start": "float64", "reason": "string",
    "previous_uid": "string", "previous_requests": "Int64", "previous_idle_ms": "float64",
    "gap_ms": "float64", "open_at_start": "Int64",
}


def _empty(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in columns.items()})


def _has_token(values: pd.Series, token: str) -> np.ndarray:
    text = values.astype("string").str.lower()
    return text.str.contains(rf"(?:^|[\s,]){token}(?:$|[\s,])", regex=True).fillna(False).to_numpy(dtype=bool)


def _announcements(connections: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    """Per connection (one row each, in table order): the first transaction that announced the end of the
    connection (``keep_alive`` false), with who announced it and when (``ts_announced``; NaN and False
    without one), and the connection's transaction count."""
    n = len(connections)
    found = positions(connections["uid"], transactions["uid"]) if len(transactions) else np.zeros(0, np.int64)
    known = found >= 0
    conn = found[known]
    depth = floats(transactions["trans_depth"])[known]
    req = floats(transactions["ts_request_start"])[known]
    order = grouped_order(conn, depth, req)
    rows = np.flatnonzero(known)[order]  # transaction rows by connection, depth, request start
    conn = conn[order]
    closing = known_false(transactions["keep_alive"])[rows]
    # the first closing transaction of each connection
    closing_rows, closing_conn = rows[closing], conn[closing]
    firsts = np.append(True, closing_conn[1:] != closing_conn[:-1])[:closing_conn.size]
    first, at = closing_rows[firsts], closing_conn[firsts]

    def column(values: np.ndarray, fill: object) -> np.ndarray:
        out = np.full(n, fill, dtype=values.dtype)
        out[at] = values
        return out

    tx = transactions.iloc[first]  # the columns read of those transactions only, not of every one
    counts = np.bincount(conn, minlength=n).astype(float)
    client_close = column(_has_token(tx["request_connection"], "close"), False)
    req_at = column(floats(tx["ts_request_start"]), np.nan)
    resp_at = column(floats(tx["ts_response_start"]), np.nan)
    when = np.where(client_close, req_at, np.where(np.isnan(resp_at), req_at, resp_at))
    return pd.DataFrame({
        "depth": column(floats(tx["trans_depth"]), np.nan),
        "client_close": client_close,
        "server_close": column(_has_token(tx["response_connection"], "close"), False),
        "client_keep": column(_has_token(tx["request_connection"], "keep-alive"), False),
        "server_keep": column(_has_token(tx["response_connection"], "keep-alive"), False),
        "http10": column(equals(tx["http_version"], "HTTP/1.0") | equals(tx["response_version"], "HTTP/1.0"),
                         False),
        "ts_announced": when,
        "transactions": np.where(counts > 0, counts, np.nan),  # NaN: none
    })


def new_connection_reasons(connections: pd.DataFrame, transactions: pd.DataFrame, *,
                           avoidable: pd.DataFrame | None = None,
                           races: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every connection's ``new_connection_reason`` (see ``DEFINITIONS``), in table order.

    Columns: ``uid``, ``client_ip``, ``server`` (ip:port), ``ts_start``, ``reason``, ``previous_uid`` (P,
    for reasons that come from the previous connection; for ``idle_connection_unused`` the idle
    connection that could have been reused), ``previous_requests`` (requests P carried),
    ``previous_idle_ms`` (P's idle time before its close, ``idle_after_last_ms``; for
    ``idle_connection_unused`` how long the reusable connection had been idle), ``gap_ms`` (P stopped
    being usable → C opened) and ``open_at_start`` (connections of the group still usable when C opened).
    ``avoidable`` and ``races`` are ``avoidable_connections`` and ``close_races`` when already computed.
    """
    if connections.empty:
        return _empty(_COLUMNS)
    if avoidable is None:
        avoidable = avoidable_connections(connections, transactions)
    if races is None:
        races = close_races(connections, transactions)
    n = len(connections)
    uids = connections["uid"].astype("string")
    clients = connections["client_ip"].astype("string")
    servers = np.array(endpoints(connections["server_ip"], connections["server_port"]), dtype=object)
    ts_start = floats(connections["ts_start"])
    ts_end = floats(connections["ts_end"])
    still_open = equals(connections["close_by"], "open") | equals(connections["close_reason"], "capture_end")
    ts_end = np.where(still_open | np.isnan(ts_end), math.inf, ts_end)
    judged = flags(connections["syn_seen"]) & ~np.isnan(ts_start)

    announced = _announcements(connections, transactions)
    ts_announced = announced["ts_announced"].to_numpy(dtype=float)
    has_announcement = ~np.isnan(ts_announced)
    usable_until = np.where(has_announcement, np.minimum(ts_announced, ts_end), ts_end)

    # per connection row: could it have reused an idle connection, which one (its row; -1: none), idle how long
    could_reuse = np.zeros(n, dtype=bool)
    avoidable_idle = np.full(n, np.nan)
    avoidable_by = np.full(n, -1, dtype=np.int64)
    if len(avoidable):
        row = positions(uids, avoidable["uid"])
        mine = row >= 0
        could_reuse[row[mine]] = True
        avoidable_idle[row[mine]] = floats(avoidable["idle_for_ms"])[mine]
        avoidable_by[row[mine]] = positions(uids, avoidable["reusable_uid"])[mine]
    retried = np.zeros(n, dtype=bool)
    if len(races):
        retry_row = positions(uids, races["retry_uid"])
        retried[retry_row[retry_row >= 0]] = True
    idle_after = floats(connections["idle_after_last_ms"])
    requests = floats(connections["requests"])
    requests = np.where(np.isnan(requests), announced["transactions"].to_numpy(dtype=float), requests)
    close_by = texts(connections["close_by"])
    close_reason = texts(connections["close_reason"])
    goaway_server = equals(connections["h2_goaway_by"], "server")
    ka_max = floats(connections["keep_alive_max"])

    client_close, server_close, client_keep, server_keep, http10 = (
        announced[column].to_numpy(dtype=bool)
        for column in ("client_close", "server_close", "client_keep", "server_keep", "http10"))
    closing_depth = announced["depth"].to_numpy(dtype=float)
    del announced

    reason = np.full(n, UNKNOWN, dtype=object)
    previous = np.full(n, -1, dtype=np.int64)
    previous_idle = np.full(n, np.nan)
    gap = np.full(n, np.nan)
    open_at_start = np.full(n, -1, dtype=np.int64)
    # One pass over each (client, server) group in order of start. ``usable`` is a min-heap of the earlier
    # members' "usable until"; what leaves it (usable until <= this start) can no longer carry a request, and
    # of those the one usable last is the previous connection P. O(n log n) in all.
    key_codes = pair_codes(clients, servers)
    order = np.lexsort((np.arange(n), np.where(np.isnan(ts_start), math.inf, ts_start), key_codes))
    current_key = -1
    usable: list[tuple[float, float, int]] = []
    best: tuple[float, float, int] | None = None
    for c in (c for block in range(0, n, _LOOP_BLOCK) for c in order[block:block + _LOOP_BLOCK].tolist()):
        if key_codes[c] != current_key:
            current_key, usable, best = int(key_codes[c]), [], None
            first = True
        else:
            first = False
        start = float(ts_start[c])
        while usable and usable[0][0] <= start:
            left = heapq.heappop(usable)
            if best is None or left[:2] > best[:2]:
                best = left
        heapq.heappush(usable, (float(usable_until[c]), start, c))
        if not judged[c]:
            reason[c] = OPENED_BEFORE_CAPTURE
            continue
        if first:
            reason[c] = FIRST_CONNECTION
            continue
        open_at_start[c] = len(usable) - 1
        if best is not None:
            p = best[2]
            previous[c] = p
            previous_idle[c] = idle_after[p]
            gap[c] = (start - usable_until[p]) * 1000.0
        if retried[c]:
            reason[c] = CLOSE_RACE_RETRY
        elif could_reuse[c]:
            reason[c] = IDLE_CONNECTION_UNUSED
        elif open_at_start[c] > 0:
            reason[c] = PARALLEL
        elif best is not None:
            p = best[2]
            reason[c] = _how_it_ended(bool(has_announcement[p]), bool(client_close[p]), bool(server_close[p]),
                                      bool(client_keep[p]), bool(server_keep[p]), bool(http10[p]),
                                      float(closing_depth[p]), float(ka_max[p]), close_by[p], close_reason[p],
                                      bool(goaway_server[p]), float(idle_after[p]))
    unused = reason == IDLE_CONNECTION_UNUSED
    # evidence of an unused idle connection: that connection, in place of the previous one
    previous = np.where(unused, avoidable_by, previous)
    previous_idle = np.where(unused, avoidable_idle, previous_idle)
    gap[unused] = np.nan
    previous_requests = np.where(previous >= 0, requests[np.maximum(previous, 0)], np.nan)
    previous_uid = uids.iloc[np.maximum(previous, 0)].array if n else uids.array
    previous_uid[previous < 0] = pd.NA
    # each column made in its final type, and kept apart (``copy=False``: no 2-D block of the float columns,
    # no ``astype`` of the whole frame: a million tiny connections, this function's peak 232 -> 194 MB)
    no_request = np.isnan(previous_requests)
    return pd.DataFrame({
        "uid": uids.array, "client_ip": clients.array, "server": pd.array(servers, dtype="string"),
        "ts_start": ts_start, "reason": pd.array(reason, dtype="string"), "previous_uid": previous_uid,
        "previous_requests": pd.arrays.IntegerArray(np.where(no_request, 0, previous_requests).astype(np.int64),
                                                    no_request),
        "previous_idle_ms": previous_idle, "gap_ms": gap,
        "open_at_start": pd.arrays.IntegerArray(np.maximum(open_at_start, 0), open_at_start < 0),
    }, copy=False)


def _how_it_ended(announced: bool, client_close: bool, server_close: bool, client_keep: bool,
                  server_keep: bool, http10: bool, closing_depth: float, keep_alive_max: float,
                  close_by: str | None, close_reason: str | None, goaway_server: bool,
                  idle_after_ms: float) -> str:
    """The reason the previous connection stopped being usable (see ``DEFINITIONS``)."""
    if announced:
        if client_close:
            return CLIENT_CONNECTION_CLOSE
        if http10 and not (client_keep and server_keep):
            return HTTP10
        if server_close:
            if not math.isnan(keep_alive_max) and closing_depth >= keep_alive_max:
                return SERVER_MAX_REQUESTS
            return SERVER_CONNECTION_CLOSE
        return NOT_PERSISTENT
    if goaway_server:
        return SERVER_GOAWAY
    if close_by == "server":
        return SERVER_RESET if close_reason == "rst" else SERVER_IDLE_CLOSE
    if close_by == "client":
        return CLIENT_CLOSED_AFTER_USE if idle_after_ms < IMMEDIATE_CLOSE_MS else CLIENT_CLOSED_IDLE
    return UNKNOWN


_TABLE_COLUMNS: dict[str, str] = {
    "reason": "string", "label": "string", "connections": "int64", "share": "float64", "servers": "int64",
    "top_server": "string", "top_server_connections": "int64", "previous_requests_median": "float64",
    "previous_idle_ms_median": "float64", "gap_ms_median": "float64", "open_at_start_max": "float64",
    "example_uid": "string", "evidence": "string",
}


def _duration(ms: float) -> str:
    if math.isnan(ms):
        return "unknown"
    return f"{ms:.0f} ms" if abs(ms) < 1000 else f"{ms / 1000:.1f} s"


def _count(value: float) -> str:
    return "unknown" if math.isnan(value) else f"{value:g}"


def _evidence(reason: str, rows: pd.DataFrame, top_server: str, top_count: int,
              timeouts: pd.DataFrame | None) -> str:
    """One sentence of evidence for a reason, from its connections' rows (plain text, not escaped)."""
    n = len(rows)
    idle_ms = float(np.nanmedian(rows["previous_idle_ms"].to_numpy(dtype=float))) \
        if rows["previous_idle_ms"].notna().any() else math.nan
    prev_requests = float(np.nanmedian(rows["previous_requests"].to_numpy(dtype=float, na_value=np.nan))) \
        if rows["previous_requests"].notna().any() else math.nan
    gap_ms = float(np.nanmedian(rows["gap_ms"].to_numpy(dtype=float))) if rows["gap_ms"].notna().any() \
        else math.nan
    where = f"{top_count} of {n} to {top_server}" if n > 1 else f"to {top_server}"
    if reason == SERVER_IDLE_CLOSE:
        text = f"{where}; the previous connection was closed by the server after a median {_duration(idle_ms)} idle"
        if timeouts is not None and len(timeouts):
            row = timeouts[timeouts["server"] == top_server]
            if len(row) and not math.isnan(float(row["timeout_s"].iloc[0])):
                text += f" (inferred idle timeout {float(row['timeout_s'].iloc[0]):g} s"
                advertised = float(row["advertised_timeout_s"].iloc[0])
                text += f", advertised {advertised:g} s)" if not math.isnan(advertised) else ")"
        return text + f"; the next connection opened a median {_duration(gap_ms)} after the close"
    if reason in (SERVER_CONNECTION_CLOSE, SERVER_MAX_REQUESTS, CLIENT_CONNECTION_CLOSE, HTTP10, NOT_PERSISTENT):
        what = {SERVER_CONNECTION_CLOSE: "the server's response said Connection: close",
                SERVER_MAX_REQUESTS: "the server closed at its Keep-Alive max",
                CLIENT_CONNECTION_CLOSE: "the client's request said Connection: close",
                HTTP10: "the exchange was HTTP/1.0 without keep-alive",
                NOT_PERSISTENT: "the response body was delimited by the close"}[reason]
        return (f"{where}; the previous connection carried a median {_count(prev_requests)} request(s) and "
                f"ended because {what}; the next connection opened a median {_duration(gap_ms)} later")
    if reason == PARALLEL:
        most = rows["open_at_start"].max()
        return (f"{where}; opened while up to {int(most) if pd.notna(most) else 0} other connection(s) to the "
                f"server were open and busy")
    if reason == IDLE_CONNECTION_UNUSED:
        return f"{where}; an idle, reusable connection had been idle a median {_duration(idle_ms)}"
    if reason == CLIENT_CLOSED_AFTER_USE:
        return (f"{where}; the client closed the previous, still usable connection a median {_duration(idle_ms)} "
                f"after its last response; the next connection opened a median {_duration(gap_ms)} later")
    if reason == CLIENT_CLOSED_IDLE:
        return (f"{where}; the client closed the previous, still usable connection after a median "
                f"{_duration(idle_ms)} idle; the next connection opened a median {_duration(gap_ms)} later")
    if reason == CLOSE_RACE_RETRY:
        return f"{where}; the client resent a request the server's close had caught"
    if reason in (SERVER_RESET, SERVER_GOAWAY):
        return f"{where}; the next connection opened a median {_duration(gap_ms)} after it"
    return where


def reason_table(reasons: pd.DataFrame, timeouts: pd.DataFrame | None = None) -> pd.DataFrame:
    """The reasons of ``new_connection_reasons`` counted, with evidence, one row per reason that occurs.

    Columns: ``reason``, ``label`` (``REASON_LABELS``), ``connections``, ``share`` (of the new connections
    reuse could have saved; NaN for ``first_connection`` and ``opened_before_capture``), ``servers``
    (distinct), ``top_server`` and ``top_server_connections``, ``previous_requests_median``,
    ``previous_idle_ms_median``, ``gap_ms_median``, ``open_at_start_max``, ``example_uid`` (the reason's
    first connection) and ``evidence`` (one sentence, plain text). Sorted: new connections by count
    (descending, ties in the order of ``DEFINITIONS``), then the connections that are not misses.
    ``timeouts`` (``infer_idle_timeouts``) adds the inferred timeout to ``server_idle_close``'s evidence.
    """
    if reasons.empty:
        return _empty(_TABLE_COLUMNS)
    misses = int((~reasons["reason"].isin(NOT_A_MISS)).sum())
    rank = {name: i for i, name in enumerate(REASON_ORDER)}
    rows: list[dict[str, Any]] = []
    for name, group in reasons.groupby("reason", sort=False):
        group = group.sort_values("ts_start", kind="stable")
        per_server = group["server"].value_counts(sort=True)
        top_server = str(per_server.index[0]) if len(per_server) else ""
        top_count = int(per_server.iloc[0]) if len(per_server) else 0

        def median(column: str, frame: pd.DataFrame = group) -> float:
            values = frame[column].to_numpy(dtype=float, na_value=np.nan)
            return float(np.nanmedian(values)) if (~np.isnan(values)).any() else math.nan

        opened = group["open_at_start"].to_numpy(dtype=float, na_value=np.nan)
        rows.append({
            "reason": name, "label": REASON_LABELS.get(str(name), str(name)), "connections": len(group),
            "share": len(group) / misses if misses and name not in NOT_A_MISS else math.nan,
            "servers": int(group["server"].nunique()), "top_server": top_server,
            "top_server_connections": top_count,
            "previous_requests_median": median("previous_requests"),
            "previous_idle_ms_median": median("previous_idle_ms"), "gap_ms_median": median("gap_ms"),
            "open_at_start_max": float(np.nanmax(opened)) if (~np.isnan(opened)).any() else math.nan,
            "example_uid": group["uid"].iloc[0],
            "evidence": _evidence(str(name), group, top_server, top_count, timeouts)
            if name not in NOT_A_MISS else "",
        })
    frame = pd.DataFrame(rows, columns=list(_TABLE_COLUMNS))
    frame["_miss"] = ~frame["reason"].isin(NOT_A_MISS)
    frame["_rank"] = frame["reason"].map(rank).fillna(len(rank))
    frame = frame.sort_values(["_miss", "connections", "_rank"], ascending=[False, False, True], kind="stable")
    return frame.drop(columns=["_miss", "_rank"]).reset_index(drop=True).astype(_TABLE_COLUMNS)


def reason_stats(table: pd.DataFrame) -> dict[str, Any]:
    """Summary keys from ``reason_table``: ``new_connections`` (connections reuse could have saved: all but
    ``first_connection`` and ``opened_before_capture``), ``new_connection_reasons`` (reason → connections,
    misses first by count), ``top_reuse_blocker`` (the reason of most new connections, None without any),
    ``top_reuse_blocker_connections``, ``top_reuse_blocker_share`` and ``top_reuse_blocker_evidence``."""
    misses = table[~table["reason"].isin(NOT_A_MISS)] if len(table) else table
    counts = {str(r): int(c) for r, c in zip(table["reason"], table["connections"], strict=True)}
    top = misses.iloc[0] if len(misses) else None
    return {
        "new_connections": int(misses["connections"].sum()) if len(misses) else 0,
        "new_connection_reasons": counts,
        "top_reuse_blocker": str(top["reason"]) if top is not None else None,
        "top_reuse_blocker_connections": int(top["connections"]) if top is not None else 0,
        "top_reuse_blocker_share": json_float(top["share"], 6) if top is not None else None,
        "top_reuse_blocker_evidence": str(top["evidence"]) if top is not None else None,
    }
