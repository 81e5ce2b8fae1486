"""Records: a finished connection (TCP facts + its protocol handler) → table rows.

One row per connection, one per transaction, one per anomaly (DESIGN.md §3). It joins what the flows layer
measured with what the HTTP layer parsed, and nothing else: no packets, no I/O.
"""

from __future__ import annotations

from typing import Any

from analyzer.flows.connections import Connection, connection_uid
from analyzer.http.transactions import Http1Connection, SealedHttp1


def _ms(a_ns: int | None, b_ns: int | None) -> float | None:
    if a_ns is None or b_ns is None:
        return None
    return (b_ns - a_ns) / 1e6


def connection_records(conn: Connection) -> tuple[dict[str, Any], list[tuple[Any, ...]], list[dict[str, Any]]]:
    """(connection row, transaction rows as tuples in TRANSACTION_COLUMNS order, anomaly rows)."""
    uid = connection_uid(conn)
    (cip, cport), (sip, sport) = conn.endpoint(0), conn.endpoint(1)
    handler = conn.handler
    assert isinstance(handler, (Http1Connection, SealedHttp1)), "the pipeline gives connections an HTTP handler"
    tx_rows, facts = handler.transaction_rows(uid, sip, sport)
    c, s = conn.dirs
    close_ns = conn.close_ns
    if conn.rst_ns is not None and (close_ns == conn.rst_ns):
        close_reason = "rst"
        close_by = "client" if conn.rst_dir == 0 else "server" if conn.rst_dir == 1 else "unknown"
    elif close_ns is not None:
        close_reason = "fin"
        close_by = "client" if close_ns == c.fin_ns else "server"
    else:
        close_reason, close_by = "capture_end", "open"
    irtt = conn.irtt_ns / 1e6 if conn.irtt_ns is not None else None
    syn_half = synack_half = None
    if conn.syn_ns is not None and conn.synack_ns is not None and conn.synack_ns >= conn.syn_ns:
        syn_half = _ms(conn.syn_ns, conn.synack_ns)
        if conn.ack_ns is not None:
            synack_half = _ms(conn.synack_ns, conn.ack_ns)
    last_resp = facts["last_response_end_ns"]
    idle_after_last = None
    if last_resp is not None and close_ns is not None and close_ns >= last_resp:
        idle_after_last = (close_ns - last_resp) / 1e6
    protocol = facts["protocol"]
    row = {
        "uid": uid,
        "client_ip": cip,
        "client_port": cport,
        "server_ip": sip,
        "server_port": sport,
        "transport": "tcp",
        "protocol": protocol,
        "tls": True if protocol == "tls" else None if protocol == "unknown" else False,
        "syn_seen": conn.syn_seen,
        "ts_start": conn.ts_start_ns / 1e9,
        "ts_end": conn.ts_end_ns / 1e9,
        "handshake_rtt_ms": irtt,
        "syn_to_synack_ms": syn_half,
        "synack_to_ack_ms": synack_half,
        "requests": facts["requests"],
        "pipelined_max": facts["pipelined_max"],
        "idle_max_ms": facts["idle_max_ms"],
        "idle_after_last_ms": idle_after_last,
        "close_by": close_by,
        "close_reason": close_reason,
        "client_bytes": c.payload_bytes + c.gap_bytes,  # sequence space, as Zeek's orig_bytes
        "server_bytes": s.payload_bytes + s.gap_bytes,
        "client_packets": c.packets,
        "server_packets": s.packets,
        "retransmissions": c.retransmissions + s.retransmissions,
        "max_bytes_in_flight": s.max_bytes_in_flight if s.max_bytes_in_flight >= 0 else None,
        "max_bytes_in_flight_client": c.max_bytes_in_flight if c.max_bytes_in_flight >= 0 else None,
        "gap_bytes": c.gap_bytes + s.gap_bytes,
        "client_from": conn.client_from,
        "keep_alive_timeout_s": facts["keep_alive_timeout_s"],
        "keep_alive_max": facts["keep_alive_max"],
        "first_frame": conn.first_frame,
    }
    anomalies: list[dict[str, Any]] = []
    start_s = conn.ts_start_ns / 1e9
    if not conn.syn_seen:
        anomalies.append({"uid": uid, "ts": start_s, "name": "midstream_start",
                          "detail": f"no SYN seen; client chosen by {conn.client_from}"})
    for d, name in ((c, "client→server"), (s, "server→client")):
        if d.gaps:
            anomalies.append({"uid": uid, "ts": start_s, "name": "seq_gap",
                              "detail": f"{name}: {d.gaps} hole(s), {d.gap_bytes - d.truncated_bytes} bytes "
                                        "not in the capture"})
        if d.truncated:
            anomalies.append({"uid": uid, "ts": start_s, "name": "truncated_caplen",
                              "detail": f"{name}: {d.truncated} packet(s) cut by the snaplen, "
                                        f"{d.truncated_bytes} bytes not captured"})
    if conn.held_limit_hit:
        anomalies.append({"uid": uid, "ts": start_s, "name": "held_bytes_limit",
                          "detail": "more than MAX_HELD_BYTES_PER_STREAM bytes waited behind a hole; "
                                    "it was declared a gap"})
    for ts_ns, name, detail in handler.anomalies():
        anomalies.append({"uid": uid, "ts": ts_ns / 1e9, "name": name, "detail": detail})
    return row, tx_rows, anomalies
