"""Compare an ``Analysis`` of a corpus capture with its tshark oracle (../shared/corpus/oracle/*.json).

Per TCP connection (matched by its two endpoints and start time): syn_seen, requests by protocol (HTTP/1
requests, HTTP/2 request streams, TLS: SNI, version, selected ALPN, resumption, and estimated exchanges
against what tshark decrypted), the handshake RTT (Wireshark's tcp.analysis.initial_rtt) and the loss
classes; per QUIC connection: SNI, offered ALPN, version, resumption, datagrams, Initial → ServerHello.
Returns a list of human-readable disagreements.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from analyzer.quic import quic_version_name

CORPUS = Path(os.environ.get("ANALYZER_CORPUS", Path(__file__).resolve().parents[3] / "shared" / "corpus"))


def _ep(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def load_oracle(rel: str) -> dict[str, Any]:
    return json.loads((CORPUS / "oracle" / (rel + ".json")).read_text())


def match_connections(oracle: dict[str, Any], connections: pd.DataFrame) -> list[tuple[dict[str, Any], Any]]:
    """Pairs (oracle tcp entry, our connection row or None), matching endpoints then start time."""
    first_epoch = float(oracle.get("first_packet_epoch") or 0.0)
    ours: dict[frozenset[tuple[str, int]], list[Any]] = defaultdict(list)
    for row in connections.itertuples(index=False):
        if row.transport != "tcp":
            continue
        key = frozenset({(row.client_ip, int(row.client_port)), (row.server_ip, int(row.server_port))})
        ours[key].append(row)
    for rows in ours.values():
        rows.sort(key=lambda r: r.ts_start)
    pairs = []
    for entry in oracle["tcp"]:
        key = frozenset({_ep(entry["client"]), _ep(entry["server"])})
        cands = ours.get(key, [])
        start = first_epoch + entry["first_ts"]
        best = None
        for r in cands:
            if best is None or abs(r.ts_start - start) < abs(best.ts_start - start):
                best = r
        if best is not None:
            cands.remove(best)
        pairs.append((entry, best))
    return pairs


def disagreements(rel: str, connections: pd.DataFrame) -> list[str]:
    oracle = load_oracle(rel)
    out = []
    pairs = match_connections(oracle, connections)
    matched = sum(1 for _, r in pairs if r is not None)
    n_ours = int((connections["transport"] == "tcp").sum())
    if matched != len(oracle["tcp"]) or n_ours != len(oracle["tcp"]):
        out.append(f"tcp connections: oracle {len(oracle['tcp'])}, ours {n_ours}, matched {matched}")
    for entry, row in pairs:
        if row is None:
            continue
        sid = entry["tcp_stream"]
        if bool(row.syn_seen) != bool(entry["syn_seen"]):
            out.append(f"stream {sid}: syn_seen oracle {entry['syn_seen']} ours {row.syn_seen}")
        out.extend(_protocol_disagreements(sid, entry, row))
        irtt = entry.get("tcp_initial_rtt_s")
        ours_irtt = row.handshake_rtt_ms
        if irtt is not None:
            if pd.isna(ours_irtt) or abs(ours_irtt - irtt * 1000) > 0.002:
                out.append(f"stream {sid}: iRTT oracle {irtt * 1000:.3f} ms ours {ours_irtt}")
        elif not pd.isna(ours_irtt):
            out.append(f"stream {sid}: iRTT oracle none ours {ours_irtt:.3f}")
        analysis = entry.get("tcp_analysis") or {}
        for oracle_name, ours_name in TCP_ANALYSIS_COLUMNS.items():
            if oracle_name in analysis and int(getattr(row, ours_name)) != int(analysis[oracle_name]):
                out.append(f"stream {sid}: {oracle_name} oracle {analysis[oracle_name]} "
                           f"ours {getattr(row, ours_name)}")
    return out


def _value(v: Any) -> Any:
    return None if pd.isna(v) else v


def _true(v: Any) -> bool:
    return not pd.isna(v) and bool(v)


def _protocol_disagreements(sid: int, entry: dict[str, Any], row: Any) -> list[str]:
    """Requests per connection, by protocol: HTTP/1 (tshark's http.request count), HTTP/2 (client streams
    that sent HEADERS), TLS (SNI, version, selected ALPN; requests only as an estimate, against what tshark
    decrypted with the keylog, when it did)."""
    out = []
    o_tls = entry.get("tls")
    o_h1 = (entry.get("http1") or {}).get("requests", 0)
    o_h2 = (entry.get("http2") or {}).get("client_streams_with_headers_frame", 0)
    ours_req = None if pd.isna(row.requests) else int(row.requests)
    if o_tls and o_tls.get("client_hellos"):
        o_sni = (o_tls.get("sni") or [None])[0]
        if o_sni != _value(row.sni):
            out.append(f"stream {sid}: sni oracle {o_sni} ours {_value(row.sni)}")
        o_ver = o_tls.get("version")
        if o_ver is not None and o_ver != _value(row.tls_version):
            out.append(f"stream {sid}: tls version oracle {o_ver} ours {_value(row.tls_version)}")
        if o_tls.get("server_hellos"):  # tshark: TLS 1.3 PSK, or TLS <= 1.2 without a Certificate message
            hint = o_tls.get("resumption_hint")
            o_resumed = hint is not None and "capture gap" not in hint
            if o_resumed != _true(row.tls_resumed):
                out.append(f"stream {sid}: tls resumed oracle {o_resumed} ours {_value(row.tls_resumed)}")
        o_alpn = o_tls.get("alpn_selected")
        ours_alpn = _value(row.alpn)
        if ours_alpn is not None and o_alpn != ours_alpn:  # TLS 1.3 selects in encrypted extensions
            out.append(f"stream {sid}: alpn oracle {o_alpn} ours {ours_alpn}")
    if _true(row.tls) and not _true(row.tls_decrypted):
        truth = o_h1 or o_h2
        if truth and ours_req != truth:  # tshark decrypted it: our estimate (or unknown, for h2) against that
            out.append(f"stream {sid}: tls requests (decrypted by the oracle) {truth} ours {ours_req}")
        return out
    if row.protocol in ("h2c", "h2") or o_h2:
        if ours_req != o_h2:
            out.append(f"stream {sid}: http2 requests oracle {o_h2} ours {ours_req}")
        return out
    if ours_req != o_h1:
        out.append(f"stream {sid}: http1 requests oracle {o_h1} ours {ours_req}")
    return out


def quic_disagreements(rel: str, connections: pd.DataFrame) -> list[str]:
    """Per QUIC connection of the oracle (matched by endpoints): SNI, offered ALPN, version, datagrams per
    direction, and client Initial → server's first packet (tshark: → ServerHello, in the same datagram)."""
    oracle = load_oracle(rel)
    out = []
    ours: dict[frozenset[tuple[str, int]], list[Any]] = defaultdict(list)
    for row in connections.itertuples(index=False):
        if row.transport == "udp":
            ours[frozenset({(row.client_ip, int(row.client_port)), (row.server_ip, int(row.server_port))})].append(row)
    entries = oracle.get("quic") or []
    n_ours = sum(len(v) for v in ours.values())
    if n_ours != len(entries):
        out.append(f"quic connections: oracle {len(entries)}, ours {n_ours}")
    for entry in entries:
        qid = entry["quic_connection"]
        cands = ours.get(frozenset({_ep(entry["client"]), _ep(entry["server"])}), [])
        if not cands:
            out.append(f"quic {qid}: not found")
            continue
        row = cands.pop(0)
        if (row.client_ip, int(row.client_port)) != _ep(entry["client"]):
            out.append(f"quic {qid}: client oracle {entry['client']} ours {row.client_ip}:{row.client_port}")
        o_sni = (entry.get("sni") or [None])[0]
        if o_sni != _value(row.sni):
            out.append(f"quic {qid}: sni oracle {o_sni} ours {_value(row.sni)}")
        o_alpn = ",".join(entry.get("alpn_offered") or []) or None
        if o_alpn != _value(row.alpn_offered):
            out.append(f"quic {qid}: alpn offered oracle {o_alpn} ours {_value(row.alpn_offered)}")
        versions = [int(v, 16) for v in entry.get("versions") or []]
        if versions and quic_version_name(versions[0]) != _value(row.quic_version):
            out.append(f"quic {qid}: version oracle {quic_version_name(versions[0])} ours {_value(row.quic_version)}")
        if "psk_selected" in entry and bool(entry["psk_selected"]) != _true(row.tls_resumed):
            out.append(f"quic {qid}: resumed (psk) oracle {entry['psk_selected']} ours {_value(row.tls_resumed)}")
        packets = entry.get("packets") or {}
        for o_key, ours_val in (("c2s", row.client_packets), ("s2c", row.server_packets)):
            if o_key in packets and int(packets[o_key]) != int(ours_val):
                out.append(f"quic {qid}: {o_key} datagrams oracle {packets[o_key]} ours {ours_val}")
        o_rtt = entry.get("client_initial_to_server_hello_s")
        if o_rtt is not None and (pd.isna(row.handshake_rtt_ms) or abs(row.handshake_rtt_ms - o_rtt * 1000) > 0.002):
            out.append(f"quic {qid}: initial→server hello oracle {o_rtt * 1000:.3f} ms ours {row.handshake_rtt_ms}")
    return out


# tshark's tcp.analysis.* frame counts per stream → our per-connection columns (analyzer/flows/tcpanalysis.py)
TCP_ANALYSIS_COLUMNS = {
    "retransmission": "retransmissions",
    "fast_retransmission": "fast_retransmissions",
    "spurious_retransmission": "spurious_retransmissions",
    "out_of_order": "out_of_order",
}


def zeek_disagreements(rel: str, connections: pd.DataFrame, transactions: pd.DataFrame) -> list[str]:
    """Per connection in Zeek's http.log baselines: Zeek's max_trans_depth vs our transactions count."""
    oracle = load_oracle(rel)
    zeek = oracle.get("zeek") or {}
    pairs = dict((e["tcp_stream"], r) for e, r in match_connections(oracle, connections))
    per_uid = transactions.groupby("uid").size().to_dict() if len(transactions) else {}
    out: set[str] = set()
    for baseline in zeek.get("baselines", []):
        for log in baseline["logs"]:
            if log.get("kind") != "http":
                continue
            for zc in log["connections"]:
                sid = zc.get("tshark_id")
                row = pairs.get(sid) if sid is not None else None
                if row is None:
                    out.add(f"zeek {zc['uid']}: no matching connection")
                    continue
                ours = int(per_uid.get(row.uid, 0))
                if zc.get("max_trans_depth") is None:
                    continue  # Zeek logged no trans_depth for it
                if ours != int(zc["max_trans_depth"]):
                    out.add(f"stream {sid}: zeek transactions {zc['max_trans_depth']} ours {ours}")
    return sorted(out)
