"""Connection reuse: requests per connection, the reuse ratio, and new connections that were avoidable.

This module owns the reuse metrics of the glossary (``DEFINITIONS``). It reads the ``connections`` and
``transactions`` tables of ``analyzer.tables`` and returns DataFrames or dicts; it performs no I/O and
reads no clock. It does not know how connections or transactions were reconstructed (packets, TCP,
HTTP parsing) and does not decide whether a connection *may* be reused — that decision is recorded by
the HTTP layer in ``transactions.keep_alive``, which is only read here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.metrics.frames import (
    endpoints,
    equals,
    flags,
    floats,
    json_float,
    json_int,
    pair_codes,
    positions,
)

DEFINITIONS: dict[str, str] = {
    "requests_per_connection": (
        "Number of HTTP transactions (request/response pairs, or HTTP/2 streams) a connection carried: "
        "the connection's `requests` column, or when that is missing the number of its transaction rows. "
        "Encrypted connections that were not decrypted with neither a request count nor transaction rows "
        "(HTTP/2 inside TLS, or no application data) count as unknown and are left out; the others count "
        "their estimated transactions (`estimated_transactions`). "
        "The mean, median and maximum are taken over connections that carried "
        "at least one request; connections that carried none are counted separately as unused. Equals the "
        "highest `trans_depth` of a connection in Zeek's http.log and the m of Wireshark's "
        "\"HTTP request n/m\" (`http.request_number` is n)."
    ),
    "reuse_ratio": (
        "Reused transactions divided by all transactions. A transaction is reused when it is not the first "
        "on its connection (column `reused`; when that is missing, `trans_depth` > 1, as Zeek's "
        "trans_depth); a transaction whose position is unknown counts as not reused. 0 means every request "
        "paid for a new connection, values near 1 mean a few connections carried everything."
    ),
    "connections_reused": (
        "Connections that carried more than one request (requests per connection > 1)."
    ),
    "new_connections_avoidable": (
        "A connection C is avoidable when, at the instant C was opened (its first SYN, so only connections "
        "whose SYN was captured are judged), another connection D from the same client IP to the same "
        "server IP and port was idle and reusable: D had finished at least one response at or before that "
        "instant, the last such response left D usable (`keep_alive` true, so `Connection: close` and "
        "HTTP/1.0 without keep-alive never qualify), D's next request (if any) started strictly after that "
        "instant, and D was still open (it ended strictly later, or was open at the end of the capture). "
        "It counts pool misses: the client opened a connection while an idle one to the same server sat "
        "unused. The capture cannot tell processes on one client address apart, and for multiplexed "
        "protocols (HTTP/2) a busy connection could also have been used, so this is a lower bound for "
        "those. No peer tool defines it."
    ),
}


def transaction_reused(transactions: pd.DataFrame) -> np.ndarray:
    """Per transaction: whether it was reused (see ``DEFINITIONS['reuse_ratio']``) as a bool array.

    The ``reused`` column where known, otherwise ``trans_depth > 1``; unknown counts as not reused.
    """
    reused = transactions["reused"].astype("boolean")
    depth = floats(transactions["trans_depth"])
    from_depth = pd.array(np.where(np.isnan(depth), False, depth > 1), dtype="boolean")
    filled = reused.fillna(pd.Series(from_depth, index=transactions.index))
    return flags(filled)


def _requests_array(connections: pd.DataFrame, transactions: pd.DataFrame) -> np.ndarray:
    found = positions(connections["uid"], transactions["uid"])
    seen = np.bincount(found[found >= 0], minlength=len(connections)).astype(float)
    declared = floats(connections["requests"])
    value = np.where(np.isnan(declared), seen, declared)
    encrypted = flags(connections["tls"]) & ~flags(connections["tls_decrypted"])
    value[encrypted & (value == 0) & (seen == 0)] = math.nan
    return value


def connection_requests(connections: pd.DataFrame, transactions: pd.DataFrame) -> pd.Series:
    """Requests per connection, aligned with ``connections`` (``Int64``, ``<NA>`` when unknown).

    Definition (``DEFINITIONS['requests_per_connection']``): the number of HTTP transactions a connection
    carried: the connection's ``requests`` column, or when that is missing the number of its transaction
    rows. Encrypted connections that were not decrypted, with neither a request count nor transaction rows,
    count as unknown. Matches the highest ``trans_depth`` of a connection in Zeek's http.log and the m of
    Wireshark's "HTTP request n/m".
    """
    values = _requests_array(connections, transactions)
    return pd.Series(pd.array(values, dtype="Int64"), index=connections.index, name="requests")


def requests_per_connection_histogram(connections: pd.DataFrame,
                                      transactions: pd.DataFrame) -> pd.DataFrame:
    """The distribution of requests per connection as a table.

    Columns: ``requests`` (a request count, including 0 for unused connections), ``connections`` (how many
    connections carried exactly that many) and ``share`` (fraction of the connections with a known count).
    One row per count that occurs, ascending; connections with an unknown count are left out. See
    ``connection_requests`` for the definition.
    """
    values = _requests_array(connections, transactions)
    values = values[~np.isnan(values)].astype(np.int64)
    if values.size == 0:
        return pd.DataFrame({"requests": pd.Series([], dtype="int64"),
                             "connections": pd.Series([], dtype="int64"),
                             "share": pd.Series([], dtype="float64")})
    counts, occurrences = np.unique(values, return_counts=True)
    return pd.DataFrame({"requests": counts.astype("int64"), "connections": occurrences.astype("int64"),
                         "share": occurrences / values.size})


def reuse_stats(connections: pd.DataFrame, transactions: pd.DataFrame) -> dict[str, Any]:
    """Reuse figures of a capture as JSON-safe scalars.

    Definitions (``DEFINITIONS``): *requests per connection* — transactions a connection carried (see
    ``connection_requests``); mean, median and max over connections that carried at least one request.
    *Reuse ratio* — reused transactions / transactions, a transaction being reused when it is not the first
    on its connection (``reused``, else ``trans_depth`` > 1; unknown counts as not reused), as Zeek's
    trans_depth. *Connections reused* — connections that carried more than one request.

    Keys: ``connections``, ``connections_counted`` (request count known), ``connections_http`` (carried
    >= 1 request), ``connections_unused`` (carried 0), ``connections_single_request``,
    ``connections_reused`` (> 1), ``transactions``, ``transactions_reused``, ``reuse_ratio`` (None without
    transactions), ``requests_per_connection_mean``, ``requests_per_connection_median``,
    ``requests_per_connection_max`` (None without connections carrying requests).
    """
    values = _requests_array(connections, transactions)
    known = values[~np.isnan(values)]
    carrying = known[known >= 1]
    reused = transaction_reused(transactions)
    n_transactions = len(transactions)
    return {
        "connections": len(connections),
        "connections_counted": int(known.size),
        "connections_http": int(carrying.size),
        "connections_unused": int((known == 0).sum()),
        "connections_single_request": int((known == 1).sum()),
        "connections_reused": int((known > 1).sum()),
        "transactions": n_transactions,
        "transactions_reused": int(reused.sum()),
        "reuse_ratio": json_float(reused.sum() / n_transactions, 6) if n_transactions else None,
        "requests_per_connection_mean": json_float(carrying.mean(), 3) if carrying.size else None,
        "requests_per_connection_median": json_float(np.median(carrying), 3) if carrying.size else None,
        "requests_per_connection_max": json_int(carrying.max()) if carrying.size else None,
    }


def idle_intervals(connections: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    """The intervals during which each connection sat idle and reusable.

    One row per interval: ``uid``, ``start`` (a response end, epoch s) and ``end`` (the next request start
    on the connection, else the connection's end — infinity when it was still open at capture end).
    Only intervals after a transaction whose ``keep_alive`` is true, whose response end is known, and that
    are not empty (a pipelined next request gives none). Used by ``avoidable_connections``.
    """
    conn, start, stop = _idle_intervals(connections, transactions)
    uids = connections["uid"].astype("string").iloc[conn] if len(conn) else pd.Series([], dtype="string")
    return pd.DataFrame({"uid": uids.array, "start": start, "end": stop})


def _idle_intervals(connections: pd.DataFrame,
                    transactions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``idle_intervals`` as arrays: each interval's connection (its row), start and end; ordered by the
    connection's uid, then the request that ends it."""
    none = (np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))
    if connections.empty or transactions.empty:
        return none
    still_open = equals(connections["close_by"], "open") | equals(connections["close_reason"], "capture_end")
    open_until = np.where(still_open, math.inf, floats(connections["ts_end"]))
    found = positions(connections["uid"], transactions["uid"])
    rows = np.flatnonzero(found >= 0)
    if not rows.size:
        return none
    conn = found[rows]
    del found
    # by uid (as the strings sort), then request start, missing last; lexsort is stable, so requests that
    # start together keep the table's order (two sort keys fewer: 1,200,000 exchanges on 20
    # connections, 105 -> 86 MiB at its peak)
    uid_rank = np.empty(len(connections), dtype=np.int64)
    uid_rank[np.asarray(pc.sort_indices(pa.array(connections["uid"].astype("string[pyarrow]").array)))] = \
        np.arange(len(connections))
    req = floats(transactions["ts_request_start"])[rows]
    order = np.lexsort((np.where(np.isnan(req), np.inf, req), uid_rank[conn]))
    rows, conn, req = rows[order], conn[order], req[order]
    del order
    start = floats(transactions["ts_response_end"])[rows]
    keep_alive = flags(transactions["keep_alive"])[rows]
    del rows
    is_last = np.append(conn[1:] != conn[:-1], True)
    next_req = np.append(req[1:], math.nan)
    until = open_until[conn]
    with np.errstate(invalid="ignore"):
        stop = np.where(is_last, until, np.minimum(next_req, until))
        valid = keep_alive & ~np.isnan(start) & (stop > start)
    return conn[valid], start[valid], stop[valid]


def _holding_an_open(keys: np.ndarray, starts: np.ndarray, ends: np.ndarray, open_keys: np.ndarray,
                     open_ts: np.ndarray) -> np.ndarray:
    """Per idle interval ``[start, end)`` of a (client, server) key: whether a judged connection of the same
    key opened inside it. ``avoidable_connections`` needs only those, exactly: for an opening at t it reads the
    intervals of its key begun at or before t whose end is the latest (M); when M > t each of them holds t, and
    when M <= t there is no hit with or without the others. Otherwise an interval per keep-alive exchange:
    1,200,000 exchanges on twenty connections peaked 207 MiB above their columns, 149 MiB so. The instants are
    ranked (exact comparisons of the float times), so that a key and a rank make one sortable int."""
    instants = np.unique(open_ts)
    width = len(instants) + 1
    opens = np.sort(open_keys.astype(np.int64) * width + np.searchsorted(instants, open_ts))
    base = keys.astype(np.int64) * width
    first = np.searchsorted(opens, base + np.searchsorted(instants, starts, side="left"))  # an opening >= start
    after = np.searchsorted(opens, base + np.searchsorted(instants, ends, side="left"))  # an opening >= end
    return np.asarray(after > first, dtype=bool)


def avoidable_connections(connections: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    """New connections opened while an idle, reusable connection to the same server was open.

    Definition (``DEFINITIONS['new_connections_avoidable']``): a connection C is avoidable when, at the
    instant C was opened (its first SYN, so only connections with ``syn_seen`` are judged), another
    connection D from the same client IP to the same server IP and port was idle and reusable: D had
    finished at least one response at or before that instant, the last such response left D usable
    (``keep_alive`` true), D's next request (if any) started strictly after that instant, and D was still
    open (ended strictly later, or open at capture end). A lower bound for multiplexed protocols.

    Columns: ``uid`` (C), ``client_ip``, ``server`` (ip:port), ``ts_start`` (C's open),
    ``reusable_uid`` (a D: of the idle candidates, the one that stayed idle the longest after C's open)
    and ``idle_for_ms`` (how long D had been idle when C was opened). Sorted by ``ts_start``.
    """
    columns = {"uid": "string", "client_ip": "string", "server": "string", "ts_start": "float64",
               "reusable_uid": "string", "idle_for_ms": "float64"}
    owner, iv_start, iv_end = _idle_intervals(connections, transactions)
    empty = pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in columns.items()})
    if owner.size == 0 or connections.empty:
        return empty
    clients = connections["client_ip"].astype("string")
    servers = endpoints(connections["server_ip"], connections["server_port"])
    key_codes = pair_codes(clients, servers)
    ts_start = floats(connections["ts_start"])
    judged = flags(connections["syn_seen"]) & ~np.isnan(ts_start) & connections["uid"].notna().to_numpy(dtype=bool)
    if not judged.any():
        return empty
    owner_key = key_codes[owner]
    holding = _holding_an_open(owner_key, iv_start, iv_end, key_codes[judged], ts_start[judged])
    owner, owner_key, iv_start, iv_end = owner[holding], owner_key[holding], iv_start[holding], iv_end[holding]
    # Per (client, server) key, in order of start: the latest end so far and the interval holding it.
    iv = pd.DataFrame({"key": owner_key, "start": iv_start, "end": iv_end, "conn": owner})
    iv = iv.sort_values(["key", "start"], kind="stable").reset_index(drop=True)
    iv["run_end"] = iv.groupby("key")["end"].cummax()
    own = np.where(iv["end"].to_numpy() == iv["run_end"].to_numpy(), np.arange(len(iv)), -1)
    holder = pd.Series(own).groupby(iv["key"].to_numpy()).cummax().to_numpy()
    iv["holder"] = iv["conn"].to_numpy()[holder]
    iv["holder_start"] = iv["start"].to_numpy()[holder]
    iv = iv.sort_values("start", kind="stable")

    candidates = pd.DataFrame({"key": key_codes[judged], "ts": ts_start[judged],
                               "position": np.flatnonzero(judged)}).sort_values("ts", kind="stable")
    merged = pd.merge_asof(candidates, iv[["key", "start", "run_end", "holder", "holder_start"]],
                           left_on="ts", right_on="start", by="key", direction="backward")
    run_end = merged["run_end"].to_numpy(dtype=float)
    position = merged["position"].to_numpy()
    holder_of = merged["holder"].to_numpy(dtype=float)  # NaN: no interval before
    with np.errstate(invalid="ignore"):
        hit = (run_end > merged["ts"].to_numpy()) & (holder_of != position)
    if not hit.any():
        return empty
    chosen = merged[hit]
    where = position[hit]
    uids = connections["uid"].astype("string")
    result = pd.DataFrame({
        "uid": uids.iloc[where].array,
        "client_ip": clients.iloc[where].array,
        "server": pd.array(np.array(servers, dtype=object)[where], dtype="string"),
        "ts_start": chosen["ts"].to_numpy(dtype=float),
        "reusable_uid": uids.iloc[holder_of[hit].astype(np.int64)].array,
        "idle_for_ms": (chosen["ts"].to_numpy(dtype=float) - chosen["holder_start"].to_numpy(dtype=float))
        * 1000.0,
    })
    # already by ts_start (stable): merge_asof keeps the candidates' order
    return result.astype(columns)  # the same dtypes: no copy
