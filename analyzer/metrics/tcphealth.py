"""TCP health: loss signals and round-trip times of the connections, per host and per capture.

This module owns the TCP-health metrics of the glossary (``DEFINITIONS``) and their aggregation per host
(``tcp_health_table``) and over all connections (``tcp_health_totals``). Pure pandas over the
``connections`` table of ``analyzer.tables``; no I/O, no clock. It counts nothing itself: the per-connection
counts and RTT samples come from the TCP layer (``analyzer.flows.tcpanalysis``, compared with tshark there).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analyzer.metrics.frames import floats, object_strings, texts
from analyzer.metrics.hosts import connection_hosts

DEFINITIONS: dict[str, str] = {
    "retransmissions_by_kind": (
        "Segments of either direction carrying data, SYN or FIN (keep-alive probes excepted) that start "
        "below the highest sequence number already sent, classified in Wireshark's order "
        "(`tcp_analyze_sequence_number`): `spurious` when all of their data had already been acknowledged, "
        "`fast` when the receiver had sent at least 2 duplicate ACKs of that sequence number, the last less "
        "than 20 ms before, `out of order` when sent less than the handshake RTT (or 3 ms) after the "
        "highest segment (not a retransmission), otherwise a plain retransmission (`other`: mostly "
        "retransmission timeouts). `retransmissions` is Wireshark's `tcp.analysis.retransmission` count: "
        "fast, spurious and other together."
    ),
    "tcp_window_signals": (
        "Per connection, both directions: `dup_acks` (Wireshark's `tcp.analysis.duplicate_ack`: no "
        "payload, same window, ACK and sequence number as the previous packet of that direction), "
        "`zero_window` (a window of 0 advertised, the receiver's buffer full), `window_full` (a data segment "
        "reaching exactly the right edge of the receiver's advertised window: the sender was limited by the "
        "receiver, not the network; unknown without the SYNs' window scale) and `keep_alives` (TCP "
        "keep-alive probes: not loss)."
    ),
    "rtt_ms": (
        "RTT samples of a connection (`rtt_min_ms`, `rtt_median_ms`, `rtt_max_ms`, `rtt_samples`): a server "
        "data segment to the first client ACK acknowledging exactly its end (Wireshark's "
        "`tcp.analysis.ack_rtt`), with Karn's rule (no sample for resent data or across a retransmission). "
        "It measures capture point → client → capture point: the path RTT when captured at the server, "
        "only the client's ACK delay when captured at the client; `handshake_rtt_ms` is the full RTT "
        "anywhere. Per host: the smallest `rtt_min_ms`, the median of the connections' `rtt_median_ms`, "
        "and the sum of the samples."
    ),
    "capture_point": (
        "Where the capture was taken, per connection, from the halves of its handshake: SYN → SYN/ACK is "
        "the round trip from the capture point to the server, SYN/ACK → ACK the one to the client; when "
        "one half is more than 4 times the other the capture sits at that end (`client` or `server`), "
        "else `middle`; `unknown` without a captured handshake. Per host the counts of each are listed."
    ),
    "tcp_health_table": (
        "Per host (and for all connections): connections, connections with at least one retransmission, "
        "packets (both directions), retransmissions and their kinds (fast, spurious, other), out-of-order "
        "segments, duplicate ACKs, zero-window and window-full events, keep-alive probes, the RTT samples "
        "(smallest, median of the per-connection medians, count), the median handshake RTT and the capture "
        "points. Counts are sums over the host's connections where known (unknown when none is)."
    ),
}

_COUNT_COLUMNS = ("retransmissions", "fast_retransmissions", "spurious_retransmissions", "out_of_order",
                  "dup_acks", "zero_window", "window_full", "keep_alives")

_HEALTH_COLUMNS: dict[str, str] = {
    "host": "string", "connections": "int64", "connections_with_retransmissions": "int64",
    "packets": "Int64", "retransmissions": "Int64", "fast_retransmissions": "Int64",
    "spurious_retransmissions": "Int64", "other_retransmissions": "Int64", "out_of_order": "Int64",
    "dup_acks": "Int64", "zero_window": "Int64", "window_full": "Int64", "keep_alives": "Int64",
    "rtt_min_ms": "float64", "rtt_median_ms": "float64", "rtt_samples": "Int64",
    "handshake_rtt_ms_median": "float64", "capture_points": "string",
}


def _health(connections: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """The health columns aggregated under ``labels`` (one per connection), unsorted."""
    if connections.empty:
        return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in _HEALTH_COLUMNS.items()})
    frame = pd.DataFrame({name: floats(connections[name]) for name in _COUNT_COLUMNS})
    frame["other_retransmissions"] = np.clip(frame["retransmissions"] - frame["fast_retransmissions"]
                                             - frame["spurious_retransmissions"], 0, None)
    frame["packets"] = floats(connections["client_packets"]) + floats(connections["server_packets"])
    frame["with_retx"] = (frame["retransmissions"] > 0).astype(np.int64)
    frame["rtt_min_ms"] = floats(connections["rtt_min_ms"])
    frame["rtt_median_ms"] = floats(connections["rtt_median_ms"])
    frame["rtt_samples"] = floats(connections["rtt_samples"])
    frame["handshake_rtt_ms"] = floats(connections["handshake_rtt_ms"])
    frame["host"] = np.array(labels, dtype=object)
    point = object_strings(connections["capture_point"].astype("string"))
    frame["capture_point"] = np.where(pd.isna(point), "unknown", point)
    groups = frame.groupby("host", sort=True)
    summed = ["packets", *_COUNT_COLUMNS, "other_retransmissions", "rtt_samples"]
    result = groups[summed].sum(min_count=1)
    result["connections"] = groups.size()
    result["connections_with_retransmissions"] = groups["with_retx"].sum()
    result["rtt_min_ms"] = groups["rtt_min_ms"].min()
    result["rtt_median_ms"] = groups["rtt_median_ms"].median()
    result["handshake_rtt_ms_median"] = groups["handshake_rtt_ms"].median()
    points = frame.groupby(["host", "capture_point"]).size().reset_index(name="n")
    points = points.sort_values(["host", "n", "capture_point"], ascending=[True, False, True], kind="stable")
    listed = {str(host): ", ".join(f"{p} {n}" for p, n in zip(part["capture_point"], part["n"], strict=True))
              for host, part in points.groupby("host", sort=False)}
    result["capture_points"] = [listed.get(str(h)) for h in result.index]
    result = result.reset_index()
    return result[list(_HEALTH_COLUMNS)].astype(_HEALTH_COLUMNS)


def tcp_health_table(connections: pd.DataFrame, transactions: pd.DataFrame, *,
                     conn_hosts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Loss signals and RTTs per host (``DEFINITIONS['tcp_health_table']``, ``['retransmissions_by_kind']``,
    ``['tcp_window_signals']``, ``['rtt_ms']``, ``['capture_point']``; hosts as in
    ``hosts.DEFINITIONS['host']``).

    Columns: ``host``, ``connections``, ``connections_with_retransmissions``, ``packets``,
    ``retransmissions``, ``fast_retransmissions``, ``spurious_retransmissions``, ``other_retransmissions``
    (retransmissions − fast − spurious), ``out_of_order``, ``dup_acks``, ``zero_window``, ``window_full``,
    ``keep_alives`` (sums, ``<NA>`` when unknown for every connection), ``rtt_min_ms`` (smallest),
    ``rtt_median_ms`` (median of the connections' medians), ``rtt_samples`` (sum),
    ``handshake_rtt_ms_median`` and ``capture_points`` (``"client 3, unknown 1"``: most first). Sorted by
    retransmissions (most first, unknown last), connections (most first), host. ``conn_hosts``
    (``connection_hosts``) is computed when not given.
    """
    if conn_hosts is None:
        conn_hosts = connection_hosts(connections, transactions)
    labels = [str(h) for h in texts(conn_hosts["host"])]
    result = _health(connections, labels)
    result = result.assign(_r=-floats(result["retransmissions"]), _c=-result["connections"])
    result = result.sort_values(["_r", "_c", "host"], kind="stable", na_position="last")
    return result.drop(columns=["_r", "_c"]).reset_index(drop=True)


def tcp_health_totals(connections: pd.DataFrame, label: str = "all connections") -> pd.DataFrame:
    """The columns of ``tcp_health_table`` over all connections, in one row with host ``label`` (no row
    without connections)."""
    return _health(connections, [label] * len(connections)).reset_index(drop=True)
