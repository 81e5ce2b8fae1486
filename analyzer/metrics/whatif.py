"""Keep-alive what-if: how many connections (and handshakes) other server keep-alive policies would need.

This module owns the replay of the observed requests against other server idle timeouts and max-requests
limits (``DEFINITIONS``). Pure functions over the ``connections`` and ``transactions`` tables of
``analyzer.tables`` and the per-connection handshake costs of ``analyzer.metrics.handshake``; no I/O, no
clock. It knows nothing of packets or parsing, nor how the result is drawn; it does not decide whether a
connection could carry another request (``transactions.keep_alive``, decided by the HTTP layer, is read).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.metrics.frames import (
    endpoints,
    equals,
    first_valid,
    floats,
    grouped_order,
    known_false,
    last_of_group,
    last_valid,
    positions,
    sorted_codes,
)
from analyzer.metrics.handshake import handshake_costs
from analyzer.tables import arrow_strings

WHATIF_TIMEOUTS_S: tuple[float, ...] = (1.0, 5.0, 15.0, 60.0, 75.0, 300.0)  # nginx 75 s, Apache 5 s, ...
WHATIF_MAX_REQUESTS: tuple[int | None, ...] = (None, 1000, 100, 10)  # None: no limit; nginx 1000, Apache 100

DEFINITIONS: dict[str, str] = {
    "keepalive_whatif": (
        "Replay of the observed requests against a server idle timeout T and a max-requests limit M, per "
        "(client IP, server IP:port) pair. Requests keep their observed times and the client keeps its "
        "choices: what it closed itself (client FIN or RST, `Connection: close` in the request, HTTP/1.0 "
        "without keep-alive), the connections it ran in parallel and the ones it left unused. Only what the "
        "server decided is replayed: (1) on each connection a request whose idle gap before it "
        "(`idle_before_ms`) exceeds T, or that would be the (M+1)-th on the connection, needs a new "
        "connection; (2) a connection the server closed while it was still usable (a FIN or RST from the "
        "server after a response that kept it alive, or a response saying `Connection: close` to a request "
        "that did not) stays open in the replay until T after its last response; a later connection of the "
        "same pair, opened after that real close (a reconnect the server caused), whose first request "
        "starts before that expiry, continues on it instead (the most recently used such connection; up to M "
        "requests) and saves a connection. Connections without transactions are kept as they are. At the "
        "server's own timeout and limit the replay gives the observed connections. Requests left unanswered "
        "on a connection the server closed (`close_race`) are left out: their retry is replayed instead. "
        "One client pool per "
        "client IP is assumed (processes on one address are not told apart), so savings are an upper bound "
        "of what the real clients would reuse. The handshake time and round trips gained or lost are the "
        "difference in connections times the mean connection setup cost of that server in this capture "
        "(`connection_setup_cost`); servers without a known cost count connections only. Timeouts tried: "
        "1, 5, 15, 60, 75 and 300 s; limits: none, 1000 (nginx's default), 100 (Apache's), 10. No peer "
        "tool computes it."
    ),
}

_PAIR_COLUMNS: dict[str, str] = {
    "client_ip": "string", "server": "string", "idle_timeout_s": "float64", "max_requests": "Int64",
    "transactions": "int64", "connections_observed": "int64", "connections": "int64",
    "new_connections": "int64", "setup_ms_mean": "float64", "setup_round_trips_mean": "float64",
    "handshake_time_ms_delta": "float64", "handshake_round_trips_delta": "float64",
}
_TOTAL_COLUMNS: dict[str, str] = {
    "idle_timeout_s": "float64", "max_requests": "Int64", "pairs": "int64", "transactions": "int64",
    "connections_observed": "int64", "connections": "int64", "new_connections": "int64",
    "handshake_time_ms_delta": "float64", "handshake_round_trips_delta": "float64",
    "connections_without_cost": "int64",
}


def _empty(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in columns.items()})


def _server_released(connections: pd.DataFrame, transactions: pd.DataFrame) -> np.ndarray:
    """Per connection: the server ended it while the client could still have used it (see DEFINITIONS)."""
    n = len(connections)
    if n == 0:
        return np.zeros(0, dtype=bool)
    by_server = equals(connections["close_by"], "server")
    if transactions.empty:
        return by_server
    def contains_close(column: str) -> np.ndarray:
        if column not in transactions:
            return np.zeros(len(transactions), dtype=bool)
        return np.asarray(transactions[column].astype("string").str.lower().str.contains("close", regex=False)
                          .fillna(False).to_numpy(dtype=bool), dtype=bool)

    found = positions(connections["uid"], transactions["uid"])
    known = found >= 0
    conn = found[known]
    order = grouped_order(conn, floats(transactions["trans_depth"])[known],
                          floats(transactions["ts_request_start"])[known])
    rows = np.flatnonzero(known)[order]
    conn = conn[order]
    last = last_of_group(conn)
    rows, conn = rows[last], conn[last]  # each connection's last transaction
    closing = known_false(transactions["keep_alive"])[rows]
    v10 = transactions["http_version"].astype("string").eq("HTTP/1.0").fillna(False).to_numpy(dtype=bool)[rows]
    # The server's announced close: its response said close to an HTTP/1.1 request that did not ask for it.
    announced_by_server = closing & contains_close("response_connection")[rows] \
        & ~contains_close("request_connection")[rows] & ~v10
    released = np.array(connections["uid"].notna().to_numpy(dtype=bool))  # no transaction: released
    released[conn] = ~closing | announced_by_server
    return by_server & released


def _prepare(connections: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    """One row per transaction of a known connection, in connection order: connection position, gap.
    Requests left unanswered on a connection the server closed (close races) are left out: the server did
    not serve them there, and the client's retry is a transaction of its own."""
    found = positions(connections["uid"], transactions["uid"])
    by_server = equals(connections["close_by"], "server")
    unanswered = np.isnan(floats(transactions["ts_response_start"])) & np.isnan(floats(transactions["status"]))
    casualty = unanswered & np.where(found >= 0, by_server[np.maximum(found, 0)], False) if len(found) \
        else np.zeros(0, dtype=bool)
    found = np.where(casualty, -1, found)
    frame = pd.DataFrame({
        "conn": found,
        "depth": floats(transactions["trans_depth"]),
        "req": floats(transactions["ts_request_start"]),
        "end": floats(transactions["ts_response_end"]),
        "gap_ms": floats(transactions["idle_before_ms"]),
        "closing": known_false(transactions["keep_alive"]),
    })
    frame = frame[frame["conn"] >= 0]
    frame = frame.sort_values(["conn", "depth", "req"], kind="stable", na_position="first")
    frame["first"] = ~frame["conn"].duplicated()
    return frame.reset_index(drop=True)


def _replay(prepared: pd.DataFrame, n_connections: int, pair_codes: np.ndarray, ts_start: np.ndarray,
            ts_end: np.ndarray, released: np.ndarray, timeout_s: float, max_requests: int | None
            ) -> np.ndarray:
    """Connections needed per real connection (aligned with the connections; may be 0 when it was merged
    into an earlier one) under ``timeout_s`` and ``max_requests``."""
    needed = np.ones(n_connections, dtype=np.int64)  # connections without transactions stay as they are
    if prepared.empty:
        return needed
    limit = max_requests if max_requests is not None else np.iinfo(np.int64).max
    conn = prepared["conn"].to_numpy(dtype=np.int64)
    first = prepared["first"].to_numpy(dtype=bool)
    with np.errstate(invalid="ignore"):
        breaks = first | (prepared["gap_ms"].to_numpy(dtype=float) > timeout_s * 1000.0)
    # segments: runs of requests on one connection without a timeout between them. The rows are in
    # connection order, so segments and connections are runs of rows, reduced by position instead of by two
    # pandas ``groupby``s per policy (with the pairs numbered by code, below: the what-if over a million
    # clients peaked 734 -> 454 MiB above its input, 13.9 -> 6.6 s)
    seg_start = np.flatnonzero(breaks)
    seg_length = np.diff(np.append(seg_start, len(conn)))
    seg_needed = -(-seg_length // limit)  # ceil(length / M)
    seg_first_req = first_valid(prepared["req"].to_numpy(dtype=float), seg_start)
    seg_last_end = np.fmax.reduceat(prepared["end"].to_numpy(dtype=float), seg_start)  # max, NaN ignored
    conn_start = np.flatnonzero(first[seg_start])  # the first segment of each connection
    conn_end = np.append(conn_start[1:], len(seg_start))
    conn_pos = conn[seg_start[conn_start]]
    needed[conn_pos] = np.add.reduceat(seg_needed, conn_start)

    # Merges: a reconnect after a server-side close continues on the replayed connection that is still open.
    pair_has_release = np.zeros(int(pair_codes.max(initial=-1)) + 1, dtype=bool)
    pair_has_release[pair_codes[released]] = True
    if not pair_has_release.any():
        return needed
    candidate = np.flatnonzero(pair_has_release[pair_codes[conn_pos]])
    candidate = candidate[np.lexsort((conn_pos[candidate], ts_start[conn_pos[candidate]]))]
    columns = zip(conn_pos[candidate].tolist(), first_valid(seg_first_req, conn_start)[candidate].tolist(),
                  seg_length[conn_start[candidate]].tolist(), seg_length[conn_end[candidate] - 1].tolist(),
                  (conn_end - conn_start)[candidate].tolist(),
                  last_valid(seg_last_end, conn_start)[candidate].tolist(), strict=True)
    open_tails: dict[int, list[tuple[float, int, float]]] = {}  # pair -> (last_end, requests, real end)
    for pos, first_req, first_length, last_length, segments, conn_last_end in columns:
        pair = int(pair_codes[pos])
        tails = open_tails.setdefault(pair, [])
        start = ts_start[pos]
        if tails:  # candidates come in start order and a first request never precedes its connection's start:
            # a tail that expired before this start can never be continued again (keeps the loop linear)
            tails[:] = [t for t in tails if t[0] + timeout_s >= start]
        chosen = -1
        best_end = -math.inf
        for k, (last_end, count, real_end) in enumerate(tails):
            if (count < limit and real_end <= start and not math.isnan(first_req)
                    and last_end <= first_req <= last_end + timeout_s and last_end > best_end):
                chosen, best_end = k, last_end
        tail_count = last_length
        if chosen >= 0:
            count = tails.pop(chosen)[1]
            merged = count + first_length
            needed[pos] -= int(-(-first_length // limit)) - (int(-(-merged // limit)) - 1)
            if segments == 1:
                tail_count = merged
        if released[pos] and not math.isnan(conn_last_end):
            tail_count = (tail_count - 1) % limit + 1
            tails.append((conn_last_end, tail_count, float(ts_end[pos])))
    return needed


def keepalive_whatif(connections: pd.DataFrame, transactions: pd.DataFrame,
                     timeouts_s: Sequence[float] = WHATIF_TIMEOUTS_S,
                     max_requests: Sequence[int | None] = WHATIF_MAX_REQUESTS,
                     costs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The keep-alive what-if per (client IP, server IP:port) pair and policy (``DEFINITIONS``).

    One row per pair and (timeout, limit) of ``timeouts_s`` × ``max_requests`` (``None``: no limit):
    ``client_ip``, ``server``, ``idle_timeout_s``, ``max_requests`` (``<NA>`` for no limit),
    ``transactions``, ``connections_observed``, ``connections`` (replayed), ``new_connections``
    (replayed − observed: negative when fewer would be opened), ``setup_ms_mean`` and
    ``setup_round_trips_mean`` (the server's mean connection setup cost, NaN when unknown),
    ``handshake_time_ms_delta`` and ``handshake_round_trips_delta`` (new connections × that cost).
    Sorted by pair, then timeout, then limit (no limit first). ``costs`` is ``handshake_costs`` (of
    which only ``setup_ms`` and ``setup_round_trips`` are read, by position).
    Its size is pairs × policies (24): for many pairs (a million clients), ``keepalive_whatif_top``.
    """
    return _sorted_pairs(list(_policy_parts(connections, transactions, timeouts_s, max_requests, costs)))


#: Pairs whose rows ``keepalive_whatif_top`` keeps (the report lists at most 200).
WHATIF_TOP_PAIRS = 1_000


def keepalive_whatif_top(connections: pd.DataFrame, transactions: pd.DataFrame,
                         costs: pd.DataFrame | None = None, top_pairs: int = WHATIF_TOP_PAIRS,
                         timeouts_s: Sequence[float] = WHATIF_TIMEOUTS_S,
                         max_requests: Sequence[int | None] = WHATIF_MAX_REQUESTS
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(per_pair, totals)``: the rows of ``keepalive_whatif`` of the ``top_pairs`` pairs with the most
    requests (ties in pair order), and ``whatif_totals`` over every pair, the same as
    ``whatif_totals(keepalive_whatif(...))``. Memory follows the pairs, not pairs × policies: the policies
    are replayed one at a time (a million half-open connections from as many clients made 24 million
    per-pair rows, 11 GB, in ``analyzer report``)."""
    kept: list[pd.DataFrame] = []
    totals: list[pd.DataFrame] = []
    top: np.ndarray | None = None
    for part in _policy_parts(connections, transactions, timeouts_s, max_requests, costs):
        if top is None:  # every part has the pairs in the same order, with the same request counts
            top = np.sort(np.argsort(-part["transactions"].to_numpy(dtype=np.int64), kind="stable")[:top_pairs])
        totals.append(whatif_totals(part))
        kept.append(part.iloc[top])
    if not totals:
        return _empty(_PAIR_COLUMNS), _empty(_TOTAL_COLUMNS)
    total = pd.concat(totals, ignore_index=True)
    limit_rank = total["max_requests"].fillna(-1).to_numpy(dtype=np.int64)
    total = total.iloc[np.lexsort((limit_rank, total["idle_timeout_s"].to_numpy()))].reset_index(drop=True)
    return _sorted_pairs(kept), total.astype(_TOTAL_COLUMNS)


def _sorted_pairs(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The per-policy parts as one table, sorted by pair, then timeout, then limit (no limit first)."""
    if not parts:
        return _empty(_PAIR_COLUMNS)
    result = pd.concat(parts, ignore_index=True).astype(_PAIR_COLUMNS)
    limit_rank = result["max_requests"].fillna(-1).to_numpy(dtype=np.int64)
    order = np.lexsort((limit_rank, result["idle_timeout_s"].to_numpy(), result["server"].to_numpy(dtype=object),
                        result["client_ip"].to_numpy(dtype=object)))
    return result.iloc[order].reset_index(drop=True)


def _policy_parts(connections: pd.DataFrame, transactions: pd.DataFrame, timeouts_s: Sequence[float],
                  max_requests: Sequence[int | None], costs: pd.DataFrame | None) -> Iterator[pd.DataFrame]:
    """One table per policy (timeout, limit), one row per pair in (client IP, server) order, typed
    ``_PAIR_COLUMNS``."""
    if connections.empty:
        return
    costs = handshake_costs(connections) if costs is None else costs
    # the pairs by code, not by name: a pair's client and server ranks among the sorted distinct names, so
    # that the pairs in code order are in (client IP, server) order, the order of the finished table (named
    # by Python strings, once per connection, per pair and per column: a quarter million clients' what-if
    # peaked 183 MiB above its input, 136 now)
    clients = arrow_strings(connections["client_ip"])
    clients = pc.if_else(pc.fill_null(pc.equal(clients, ""), True), pa.scalar("?", pa.large_string()), clients)
    client_code, client_names = sorted_codes(clients)  # a missing or empty client IP: "?"
    del clients
    server_code, server_names = sorted_codes(arrow_strings(endpoints(connections["server_ip"],
                                                                     connections["server_port"])))
    pair_ids, pair_codes = np.unique(client_code * len(server_names) + server_code, return_inverse=True)
    pair_codes = np.asarray(pair_codes, dtype=np.int64).reshape(-1)
    pair_client, pair_server = np.divmod(pair_ids, len(server_names))
    del client_code, pair_ids
    ts_start = floats(connections["ts_start"])
    ts_end = floats(connections["ts_end"])
    ts_end = np.where(np.isnan(ts_end), math.inf, ts_end)
    released = _server_released(connections, transactions)
    prepared = _prepare(connections, transactions)
    tx_per_conn = np.bincount(prepared["conn"].to_numpy(dtype=np.int64), minlength=len(connections)) \
        if len(prepared) else np.zeros(len(connections), dtype=np.int64)
    mean = pd.DataFrame({"server": server_code, "ms": costs["setup_ms"].to_numpy(dtype=float),
                         "rt": costs["setup_round_trips"].to_numpy(dtype=float)}).groupby("server").mean()
    n_pairs = len(pair_client)
    observed = np.bincount(pair_codes, minlength=n_pairs)
    tx_counts = np.bincount(pair_codes, weights=tx_per_conn, minlength=n_pairs).astype(np.int64)
    setup_ms = mean["ms"].reindex(pair_server).to_numpy(dtype=float)
    setup_rt = mean["rt"].reindex(pair_server).to_numpy(dtype=float)
    client_col = pd.array(client_names.take(pa.array(pair_client)), dtype="string")
    server_col = pd.array(server_names.take(pa.array(pair_server)), dtype="string")
    for timeout in timeouts_s:
        for limit in max_requests:
            needed = _replay(prepared, len(connections), pair_codes, ts_start, ts_end, released,
                             float(timeout), limit)
            replayed = np.bincount(pair_codes, weights=needed, minlength=n_pairs).astype(np.int64)
            delta = replayed - observed
            yield pd.DataFrame({
                "client_ip": client_col, "server": server_col, "idle_timeout_s": float(timeout),
                "max_requests": pd.array([limit] * n_pairs, dtype="Int64"), "transactions": tx_counts,
                "connections_observed": observed, "connections": replayed, "new_connections": delta,
                "setup_ms_mean": setup_ms, "setup_round_trips_mean": setup_rt,
                "handshake_time_ms_delta": delta * setup_ms, "handshake_round_trips_delta": delta * setup_rt,
            }).astype(_PAIR_COLUMNS)


def whatif_totals(per_pair: pd.DataFrame) -> pd.DataFrame:
    """``keepalive_whatif`` summed over pairs: one row per (timeout, limit) with ``idle_timeout_s``,
    ``max_requests``, ``pairs``, ``transactions``, ``connections_observed``, ``connections``,
    ``new_connections``, ``handshake_time_ms_delta``, ``handshake_round_trips_delta`` (sums over pairs with
    a known cost) and ``connections_without_cost`` (replayed connections to servers without a known setup
    cost). Sorted by timeout, then limit (no limit first)."""
    if per_pair.empty:
        return _empty(_TOTAL_COLUMNS)
    frame = per_pair.assign(
        _limit=per_pair["max_requests"].fillna(-1).astype("int64"),
        _nocost=np.where(np.isnan(per_pair["setup_ms_mean"].to_numpy(dtype=float)),
                         per_pair["connections"].to_numpy(dtype=np.int64), 0),
        pairs=1)
    sums = frame.groupby(["idle_timeout_s", "_limit"], sort=True).agg(
        pairs=("pairs", "sum"), transactions=("transactions", "sum"),
        connections_observed=("connections_observed", "sum"), connections=("connections", "sum"),
        new_connections=("new_connections", "sum"),
        handshake_time_ms_delta=("handshake_time_ms_delta", lambda s: s.sum(min_count=1)),
        handshake_round_trips_delta=("handshake_round_trips_delta", lambda s: s.sum(min_count=1)),
        connections_without_cost=("_nocost", "sum")).reset_index()
    sums["max_requests"] = pd.array([None if v < 0 else int(v) for v in sums["_limit"]], dtype="Int64")
    return sums[list(_TOTAL_COLUMNS)].astype(_TOTAL_COLUMNS).reset_index(drop=True)


def whatif_for_summary(totals: pd.DataFrame) -> list[dict[str, Any]]:
    """``whatif_totals`` rows as JSON-safe dicts (for exports and the terminal)."""
    result: list[dict[str, Any]] = []
    for row in totals.to_dict("records"):
        limit = row["max_requests"]
        result.append({
            "idle_timeout_s": float(row["idle_timeout_s"]),
            "max_requests": None if pd.isna(limit) else int(limit),
            "connections": int(row["connections"]),
            "new_connections": int(row["new_connections"]),
            "handshake_time_ms_delta": None if pd.isna(row["handshake_time_ms_delta"])
            else round(float(row["handshake_time_ms_delta"]), 3),
        })
    return result
