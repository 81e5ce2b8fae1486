"""Warm vs cold: how the server's congestion window shaped its responses (DESIGN.md §4, cwnd growth).

This module owns the warmth metrics of the glossary (``DEFINITIONS``): the response size buckets, the
flight bytes per round of cold, warm and cooled responses of similar size, their transfer times per host
and size bucket, the capture-wide warmth figures of the summary, and which connections the report's
bytes-in-flight chart offers. Pure pandas over the ``transactions``, ``flights`` and ``segments`` tables of
``analyzer.tables``; no I/O, no clock. It measures nothing itself: warmth, rounds, flights, TTFB and
transfer times come from the TCP layer (``analyzer.flows.tcpanalysis``, where they are defined in full).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analyzer.metrics.frames import equals, floats, json_float, positions
from analyzer.metrics.hosts import connection_hosts, transaction_hosts

WARMTHS: tuple[str, ...] = ("cold", "warm", "cooled")
# (label, lowest body size included, first size excluded), in bytes of response_body_bytes
SIZE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("< 16 KiB", 0, 16 * 1024),
    ("16–128 KiB", 16 * 1024, 128 * 1024),
    ("128 KiB–1 MiB", 128 * 1024, 1024 * 1024),
    ("≥ 1 MiB", 1024 * 1024, math.inf),
)
ROUNDS_SHOWN = 8  # rounds (flights) per response compared in flight_rounds
SERIES_MAX_CONNECTIONS = 20  # connections offered by the bytes-in-flight chart
SERIES_REASONS: tuple[str, ...] = ("largest", "retransmissions", "cooled", "cold")

DEFINITIONS: dict[str, str] = {
    "warmth": (
        "Whether a response started with the server's congestion window cold or warm, from the server's "
        "packets: `cold` for the first transaction of a connection whose handshake was captured (slow start "
        "from the initial window); `cooled` for a later response before which the server had sent nothing "
        "for longer than its retransmission timeout, estimated as RTT + 200 ms (Linux then restarts slow "
        "start, `tcp_slow_start_after_idle`); `warm` for the other later responses (they inherit the window "
        "the earlier ones opened); unknown on the first transaction of a connection seen without its "
        "handshake. The idle time behind the decision is the column `sender_idle_ms`. No peer tool labels "
        "responses this way; the idle restart is RFC 5681 §4.1 and RFC 7661."
    ),
    "rounds": (
        "Round trips (flights) a response took: its data segments grouped by ACK clock. The first new-data "
        "segment of the response opens round 1; a later new-data segment opens the next round when an ACK "
        "of data of the current round had already reached the server (captured at least half the capture "
        "point → server → capture point round trip earlier, so a capture at the client keeps the tail of a "
        "burst in its round). In slow start a flight doubles each round; with the pipe full flights stay "
        "the same size. Retransmitted segments count in the round in which they were sent. A flight's "
        "bytes are the payload bytes of its segments (HTTP headers included). tcptrace's initial window is "
        "the first flight of a connection (`initial_window_bytes`); Wireshark has no field for rounds."
    ),
    "ttfb_ms": (
        "Time to first byte of a response: from the end of its request (its start when the end is unknown) "
        "to the capture of the response's first byte, in milliseconds at the capture point. Near the client "
        "it includes one round trip plus the server's think time; near the server only the think time. "
        "Negative when the server began to answer before the request was complete (an early response, for "
        "example to a request body it does not read). Wireshark's `http.time` instead ends at the last "
        "byte of the response."
    ),
    "transfer_ms": (
        "Transfer time of a response: from its first byte to its last byte, as captured (0 for a response "
        "in one segment). With a cold window a large response needs more rounds, so it grows with size and "
        "RTT; compare warmth only within one size bucket."
    ),
    "size_bucket": (
        "Responses are compared within buckets of their body size (`response_body_bytes`, after transfer "
        "decoding as on the wire: chunked framing removed, content encoding kept): < 16 KiB, 16–128 KiB, "
        "128 KiB–1 MiB and ≥ 1 MiB (KiB = 1024 bytes). Responses of unknown body size are left out of the "
        "bucketed figures."
    ),
    "flight_bytes_by_round": (
        "Per size bucket, warmth and round index r (1 to 8): the median over the responses that reached "
        "round r of the bytes of their r-th flight, and how many responses reached it. Responses of unknown "
        "warmth or size are left out. Cold responses should start near the initial window and double per "
        "round; warm ones start larger; cooled ones look cold again when the server restarted slow start "
        "after idle."
    ),
    "warmth_transfer_table": (
        "Per host, size bucket and warmth: the number of responses, and the medians of their `ttfb_ms`, "
        "`transfer_ms` and `rounds` (each over the responses where it is known). Responses of unknown "
        "warmth or body size are left out. A response belongs to its connection's host."
    ),
    "bytes_in_flight_series": (
        "The bytes-in-flight chart draws, for one server → client data segment after another, Wireshark's "
        "`tcp.bif_seq_based` (the column `max_bytes_in_flight` is its maximum) against the time since the "
        "connection's first packet; retransmitted segments are marked. It offers at most 20 connections, "
        "picked in turn from four rankings: the most server bytes, the most retransmissions, the largest "
        "cooled response, the largest cold response. The per-packet series is kept for a bounded number of "
        "packets (whole connections, in the order they finish); connections left out are counted in "
        "the summary (`series_connections_left_out`)."
    ),
}


def _bucket_index(body_bytes: pd.Series) -> np.ndarray:
    """The position in ``SIZE_BUCKETS`` of each body size; -1 for unknown (missing or negative) sizes."""
    values = floats(body_bytes)
    edges = np.array([high for _, _, high in SIZE_BUCKETS[:-1]])
    index = np.searchsorted(edges, np.nan_to_num(values, nan=-1.0), side="right").astype(np.int64)
    return np.where(np.isnan(values) | (values < 0), -1, index)


def size_bucket(body_bytes: pd.Series) -> np.ndarray:
    """The size bucket label (``SIZE_BUCKETS``, ``DEFINITIONS['size_bucket']``) of each body size, as an
    object array with None for unknown (missing or negative) sizes."""
    index = _bucket_index(body_bytes)
    labels = np.array([label for label, _, _ in SIZE_BUCKETS] + [None], dtype=object)
    return np.asarray(labels[index], dtype=object)  # -1 picks the trailing None


_ROUND_COLUMNS: dict[str, str] = {"size_bucket": "string", "warmth": "string", "round": "int64",
                                  "responses": "int64", "flight_bytes_median": "float64",
                                  "responses_total": "int64"}


def _response_keys(uids: pd.Series, depths: pd.Series, known_uids: pd.Series) -> np.ndarray:
    """One int64 per row from (uid, trans_depth): the position of the uid's first row in ``known_uids`` and
    the depth; -1 when either is unknown. The uids are matched as Arrow strings (``positions``): on a
    million transactions and flights, an index of ``str`` objects set the peak of the report's metrics
    (+288 MiB over this function)."""
    depth = floats(depths)
    position = positions(known_uids, uids)
    ok = (position >= 0) & ~np.isnan(depth) & (depth >= 0) & (depth < 2**31)
    return np.where(ok, position.astype(np.int64) * 2**31 + np.nan_to_num(depth).astype(np.int64), -1)


def _once(keys: np.ndarray) -> np.ndarray:
    """Per row: whether its key appears in no other row (``~Series.duplicated(keep=False)``), by sorting."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    single = np.ones(len(keys), dtype=bool)
    same = ordered[1:] == ordered[:-1]
    single[1:] &= ~same
    single[:-1] &= ~same
    once = np.empty(len(keys), dtype=bool)
    once[order] = single
    return once


def _places(keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For each query, the position of the equal key among ``keys`` (distinct), -1 when none
    (``pd.Index(keys).get_indexer``), by a sorted copy."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    at = np.minimum(np.searchsorted(ordered, queries), max(len(ordered) - 1, 0))
    if not len(ordered):
        return np.full(len(queries), -1, dtype=np.int64)
    return np.where(ordered[at] == queries, order[at], -1).astype(np.int64)


def flight_rounds(transactions: pd.DataFrame, flights: pd.DataFrame, max_rounds: int = ROUNDS_SHOWN
                  ) -> pd.DataFrame:
    """Median flight bytes per round of cold, warm and cooled responses, per size bucket
    (``DEFINITIONS['flight_bytes_by_round']``, ``['size_bucket']``, ``['rounds']``).

    Flights are joined to their response by (uid, trans_depth); a response's size bucket comes from its
    ``response_body_bytes``. Responses of unknown warmth, unknown or ambiguous key (two transactions with
    the same uid and trans_depth), or unknown body size are left out.

    Columns: ``size_bucket``, ``warmth``, ``round`` (1 .. ``max_rounds``), ``responses`` (responses of that
    bucket and warmth with a flight at that round), ``flight_bytes_median`` (median bytes of that flight
    over them) and ``responses_total`` (responses of that bucket and warmth with any flight). Sorted by
    bucket (small first), warmth (cold, warm, cooled), round.
    """
    empty = pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in _ROUND_COLUMNS.items()})
    if flights.empty or transactions.empty:
        return empty
    # keys matched and grouped by sorting int64 arrays, not by hash tables over them: on 1,200,000 responses
    # and flights this step set the peak of the report's metrics, 495 MiB above its columns; 344 so
    tx_key = _response_keys(transactions["uid"], transactions["trans_depth"], transactions["uid"])
    bucket_index = _bucket_index(transactions["response_body_bytes"])
    unique_key = _once(tx_key) & (tx_key >= 0) & (bucket_index >= 0)
    responses = tx_key[unique_key]  # distinct
    response_bucket = bucket_index[unique_key]
    del tx_key, bucket_index, unique_key

    order = positions(list(WARMTHS), flights["warmth"])  # the position in WARMTHS, -1 for none of them
    warmth = np.where(order >= 0, order, np.nan)
    rounds = floats(flights["round"])
    found = _places(responses, _response_keys(flights["uid"], flights["trans_depth"], transactions["uid"]))
    keep = (found >= 0) & ~np.isnan(warmth) & (rounds >= 1)
    if not keep.any():
        return empty
    fl = pd.DataFrame({"response": found[keep], "b": response_bucket[found[keep]],
                       "w": warmth[keep].astype(np.int64), "round": rounds[keep].astype(np.int64),
                       "bytes": floats(flights["bytes"])[keep]})
    del found, keep, warmth, rounds, order
    totals = fl.drop_duplicates("response").groupby(["b", "w"]).size().rename("responses_total")
    shown = fl[fl["round"] <= max_rounds]
    del fl
    # per (response, warmth, round): its flights' bytes summed (NaN when none is known), one int key per group
    width = max_rounds + 1
    group = (shown["response"].to_numpy() * len(WARMTHS) + shown["w"].to_numpy()) * width + shown["round"].to_numpy()
    flight_bytes = shown["bytes"].to_numpy(dtype=float)
    del shown
    by_group = np.argsort(group, kind="stable")
    group, flight_bytes = group[by_group], flight_bytes[by_group]
    starts = np.flatnonzero(np.append(True, group[1:] != group[:-1])) if group.size else np.zeros(0, np.int64)
    known = ~np.isnan(flight_bytes)
    summed = np.add.reduceat(np.where(known, flight_bytes, 0.0), starts) if starts.size else np.zeros(0)
    any_known = np.logical_or.reduceat(known, starts) if starts.size else np.zeros(0, dtype=bool)
    response_w, round_of = np.divmod(group[starts], width)
    response, w = np.divmod(response_w, len(WARMTHS))
    per_response = pd.DataFrame({"b": response_bucket[response], "w": w, "round": round_of,
                                 "bytes": np.where(any_known, summed, np.nan)})
    result = per_response.groupby(["b", "w", "round"], as_index=False).agg(
        responses=("bytes", "size"), flight_bytes_median=("bytes", "median"))
    result = result.join(totals, on=["b", "w"]).sort_values(["b", "w", "round"], kind="stable")
    labels = [label for label, _, _ in SIZE_BUCKETS]
    result["size_bucket"] = [labels[i] for i in result["b"]]
    result["warmth"] = [WARMTHS[i] for i in result["w"]]
    return result[list(_ROUND_COLUMNS)].astype(_ROUND_COLUMNS).reset_index(drop=True)


_TRANSFER_COLUMNS: dict[str, str] = {"host": "string", "size_bucket": "string", "warmth": "string",
                                     "responses": "int64", "ttfb_ms_median": "float64",
                                     "transfer_ms_median": "float64", "rounds_median": "float64"}


def warmth_transfers(connections: pd.DataFrame, transactions: pd.DataFrame, *,
                     conn_hosts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Transfer times of cold, warm and cooled responses per host and size bucket
    (``DEFINITIONS['warmth_transfer_table']``, ``['ttfb_ms']``, ``['transfer_ms']``, ``['rounds']``).

    Columns: ``host`` (``DEFINITIONS['host']``), ``size_bucket``, ``warmth``, ``responses``,
    ``ttfb_ms_median``, ``transfer_ms_median``, ``rounds_median`` (NaN when none is known). Responses of
    unknown warmth or body size are left out. Sorted by the host's responses (most first), host, bucket
    (small first), warmth (cold, warm, cooled). ``conn_hosts`` (``connection_hosts``) is computed when not
    given.
    """
    empty = pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in _TRANSFER_COLUMNS.items()})
    if transactions.empty:
        return empty
    # grouped by codes (host, bucket, warmth), named after: on 1,200,000 responses a frame of a ``str`` per
    # row and key took 0.8 s and 316 MiB above its columns
    hosts = transaction_hosts(connections, transactions, conn_hosts)
    bucket = _bucket_index(transactions["response_body_bytes"])
    warmth = positions(list(WARMTHS), transactions["warmth"])  # the position in WARMTHS, -1 for none of them
    host_codes, host_names = pd.factorize(hosts)  # -1: none
    kept = (bucket >= 0) & (warmth >= 0) & (host_codes >= 0)
    if not kept.any():
        return empty
    frame = pd.DataFrame({
        "host": host_codes[kept], "bucket": bucket[kept], "warmth": warmth[kept],
        "ttfb": floats(transactions["ttfb_ms"])[kept],
        "transfer": floats(transactions["transfer_ms"])[kept],
        "rounds": floats(transactions["rounds"])[kept],
    })
    del hosts, bucket, warmth, host_codes, kept
    result = frame.groupby(["host", "bucket", "warmth"], as_index=False).agg(
        responses=("warmth", "size"), ttfb_ms_median=("ttfb", "median"),
        transfer_ms_median=("transfer", "median"), rounds_median=("rounds", "median"))
    del frame
    bucket_names = np.array([label for label, _, _ in SIZE_BUCKETS], dtype=object)
    result = result.assign(host=np.asarray(host_names, dtype=object)[result["host"].to_numpy()],
                           size_bucket=bucket_names[result["bucket"].to_numpy()],
                           warmth=np.array(WARMTHS, dtype=object)[result["warmth"].to_numpy()],
                           _b=result["bucket"], _w=result["warmth"])
    per_host = result.groupby("host")["responses"].transform("sum")
    result = result.assign(_n=-per_host)
    result = result.sort_values(["_n", "host", "_b", "_w"], kind="stable")
    return result[list(_TRANSFER_COLUMNS)].astype(_TRANSFER_COLUMNS).reset_index(drop=True)


def warmth_stats(transactions: pd.DataFrame) -> dict[str, Any]:
    """Capture-wide warmth figures as JSON-safe scalars (``DEFINITIONS['warmth']``, ``['ttfb_ms']``,
    ``['transfer_ms']``, ``['rounds']``), over all response sizes.

    Keys: ``responses_cold``, ``responses_warm``, ``responses_cooled``, ``responses_warmth_unknown``; and
    for each warmth W: ``ttfb_ms_median_W``, ``transfer_ms_median_W`` (ms rounded to µs) and
    ``rounds_median_W`` (None without a known value).
    """
    # a mask per warmth, compared as the column is (a ``str`` per row took 2.6 s and 260 MiB on 1,200,000 rows)
    mask = {name: equals(transactions["warmth"], name) for name in WARMTHS}
    ttfb, transfer, rounds = (floats(transactions[c]) for c in ("ttfb_ms", "transfer_ms", "rounds"))
    out: dict[str, Any] = {}
    known = np.zeros(len(transactions), dtype=bool)
    for name in WARMTHS:
        known |= mask[name]
        out[f"responses_{name}"] = int(mask[name].sum())
    out["responses_warmth_unknown"] = int((~known).sum())
    for name in WARMTHS:
        for key, values in (("ttfb_ms_median", ttfb), ("transfer_ms_median", transfer),
                            ("rounds_median", rounds)):
            chosen = values[mask[name]]
            chosen = chosen[~np.isnan(chosen)]
            out[f"{key}_{name}"] = json_float(np.median(chosen)) if chosen.size else None
    return out


_SERIES_COLUMNS: dict[str, str] = {"uid": "string", "reason": "string", "host": "string",
                                   "client_port": "Int64", "server_bytes": "Int64", "retransmissions": "Int64",
                                   "server_segments": "int64", "cold": "int64", "warm": "int64",
                                   "cooled": "int64"}


def series_connections(connections: pd.DataFrame, transactions: pd.DataFrame, segments: pd.DataFrame, *,
                       conn_hosts: pd.DataFrame | None = None,
                       max_connections: int = SERIES_MAX_CONNECTIONS) -> pd.DataFrame:
    """The connections the bytes-in-flight chart offers (``DEFINITIONS['bytes_in_flight_series']``).

    Candidates are the connections with at least one server → client segment of known bytes in flight in
    ``segments``. They are
    picked in turn from four rankings until ``max_connections`` are picked or the rankings are exhausted:
    ``largest`` (most ``server_bytes``), ``retransmissions`` (most retransmissions, only connections with
    some), ``cooled`` (largest cooled response body, only connections with one), ``cold`` (largest cold
    response body, likewise); each ranking skips connections already picked; ties go to the connection
    that comes first in the connections table.

    Columns (in pick order: the first is the one shown first): ``uid``, ``reason`` (the ranking that
    picked it), ``host``, ``client_port``, ``server_bytes``, ``retransmissions``, ``server_segments``
    (server → client segments of known bytes in flight in the series), and ``cold``, ``warm``,
    ``cooled`` (its responses of each warmth).
    """
    empty = pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in _SERIES_COLUMNS.items()})
    if segments.empty or max_connections <= 0:
        return empty
    # candidates by position, their uids kept as Arrow strings: 250,000 tiny connections, each a candidate,
    # took 2.4-3.1 s and a 100 MiB peak as a frame of one ``str`` per uid and host, 0.6-0.8 s so
    from_server = segments["from_server"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    drawable = from_server & segments["bytes_in_flight"].notna().to_numpy(dtype=bool)
    counts = segments["uid"][drawable].astype("string").dropna().value_counts(sort=False)
    if counts.empty:
        return empty
    uids = counts.index
    n = len(uids)
    row = positions(connections["uid"], uids)
    known = row >= 0
    take = np.maximum(row, 0)

    def conn_column(name: str) -> np.ndarray:
        values = floats(connections[name])
        return np.where(known, values[take] if values.size else np.nan, np.nan)

    order = np.where(known, row, len(connections) + np.arange(n))
    server_bytes, retransmissions = conn_column("server_bytes"), conn_column("retransmissions")
    by_warmth: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # warmth → (responses, largest body or -1)
    if len(transactions):
        cand = positions(uids, transactions["uid"].astype("string"))
        warmth = transactions["warmth"].astype("string")
        body = floats(transactions["response_body_bytes"])
    for name in WARMTHS:
        responses, largest = np.zeros(n, dtype=np.int64), np.full(n, -1.0)
        if len(transactions):
            mine = (warmth == name).fillna(False).to_numpy(dtype=bool) & (cand >= 0)
            np.add.at(responses, cand[mine], 1)
            np.fmax.at(largest, cand[mine], body[mine])  # NaN bodies are not sizes
        by_warmth[name] = (responses, largest)
    by_bytes = np.nan_to_num(server_bytes, nan=-1.0)
    by_retx = np.nan_to_num(retransmissions, nan=0.0)

    def ranking(among: np.ndarray, *descending: np.ndarray) -> list[int]:
        """The candidates of ``among`` by each of ``descending`` in turn, largest first, then by ``order``."""
        chosen = np.flatnonzero(among)
        keys = (order[chosen], *(-k[chosen] for k in reversed(descending)))
        return chosen[np.lexsort(keys)].tolist()

    everyone = np.ones(n, dtype=bool)
    queues = [ranking(everyone, by_bytes), ranking(by_retx > 0, by_retx, by_bytes),
              ranking(by_warmth["cooled"][0] > 0, by_warmth["cooled"][1]),
              ranking(by_warmth["cold"][0] > 0, by_warmth["cold"][1])]
    picked: dict[int, str] = {}
    cursors = [0] * len(queues)
    limit = min(max_connections, n)
    while len(picked) < limit and any(c < len(q) for c, q in zip(cursors, queues, strict=True)):
        for k, queue in enumerate(queues):
            while cursors[k] < len(queue) and queue[cursors[k]] in picked:
                cursors[k] += 1
            if cursors[k] < len(queue) and len(picked) < limit:
                picked[queue[cursors[k]]] = SERIES_REASONS[k]
                cursors[k] += 1
    at = np.fromiter(picked, dtype=np.int64, count=len(picked))
    if conn_hosts is None:
        conn_hosts = connection_hosts(connections, transactions)
    host_of = conn_hosts["host"].astype("string")
    hosts = [host_of.iloc[int(r)] if k else None for r, k in zip(row[at], known[at], strict=True)]
    result = pd.DataFrame({
        "uid": uids[at], "reason": list(picked.values()), "host": hosts,
        "client_port": conn_column("client_port")[at], "server_bytes": server_bytes[at],
        "retransmissions": retransmissions[at], "server_segments": counts.to_numpy(dtype=np.int64)[at],
        **{name: by_warmth[name][0][at] for name in WARMTHS}})
    return result.astype(_SERIES_COLUMNS)
