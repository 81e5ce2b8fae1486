"""Protocol mix and TLS: which protocols carried the traffic, how often TLS sessions were resumed, and how
many streams HTTP/2 connections carried.

This module owns the protocol metrics of the glossary (``DEFINITIONS``). Pure functions over the
``connections`` and ``transactions`` tables of ``analyzer.tables`` (their ``protocol``, ``tls*`` and
``estimated`` columns, filled by the protocol layers); no I/O, no clock. It does not know how a protocol
was recognised.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analyzer.metrics.frames import flags, floats, json_float, known_false, positions, texts

PROTOCOL_ORDER = ("http/1.0", "http/1.1", "h2c", "h2", "h3", "tls", "http/0.9", "unknown")

DEFINITIONS: dict[str, str] = {
    "protocol_mix": (
        "Connections and transactions per protocol (the connections' `protocol` column): `http/1.0`, "
        "`http/1.1`, `h2c` (HTTP/2 over cleartext, by prior knowledge or after an `Upgrade: h2c`), `h2` "
        "(HTTP/2 over TLS, from ALPN), `h3` (a QUIC connection whose client offered HTTP/3), `tls` (encrypted "
        "and not decrypted, with no visible ALPN: TLS 1.3 encrypts the selection), `unknown` (no protocol "
        "recognised, e.g. no payload). A TLS connection whose "
        "ServerHello selected `http/1.1` counts as `http/1.1`. Transactions of undecrypted TLS connections "
        "are estimates (`estimated_transactions`)."
    ),
    "estimated_transactions": (
        "Transactions of encrypted connections without keys, estimated from TLS application-data record "
        "bursts: a client burst and the server burst after it are one exchange. Exact for HTTP/1.1 without "
        "pipelining; meaningless for HTTP/2, so connections known to be `h2` get none (their request count "
        "is unknown). Their method, target, status and sizes are unknown; the host is the SNI."
    ),
    "tls_resumption_ratio": (
        "TLS connections whose handshake resumed an earlier session, divided by TLS connections whose "
        "resumption is known (a ServerHello was captured). Resumed: TLS 1.3 with a pre-shared key accepted; "
        "TLS <= 1.2 when the server echoed the client's session id or sent no certificate (an abbreviated "
        "handshake, as with session tickets). A resumed handshake costs one round trip less (TLS 1.2) and no "
        "certificate; 0-RTT costs none. Wireshark shows the same facts as `tls.handshake.extension.type` "
        "and the session id fields; no peer tool reports the ratio."
    ),
    "streams_per_h2_connection": (
        "Requests (client-initiated streams that sent a request; pushed streams are not counted) per HTTP/2 "
        "connection (`h2c`, or `h2` decrypted), and the most streams open at once on one connection "
        "(`max_concurrent_streams`: what the connection actually used, not the SETTINGS limit). HTTP/2's "
        "reuse is many streams on one connection."
    ),
}


def _label(protocols: pd.Series) -> list[str]:
    return [p if p else "unknown" for p in texts(protocols)]


def _counts(values: np.ndarray) -> dict[str, int]:
    return {str(k): int(v) for k, v in pd.Series(values, dtype=object).value_counts(sort=False).items()}


def protocol_mix(connections: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    """Per protocol (``DEFINITIONS['protocol_mix']``): ``protocol``, ``connections``, ``transactions``,
    ``transactions_estimated``; one row per protocol seen, in ``PROTOCOL_ORDER`` (others after)."""
    labels = np.array(_label(connections["protocol"]), dtype=object)
    conn_counts = _counts(labels)
    found = positions(connections["uid"], transactions["uid"])
    tx_labels = np.where(found >= 0, labels[np.maximum(found, 0)], "unknown") if len(labels) \
        else np.full(len(found), "unknown", dtype=object)
    tx_counts = _counts(tx_labels)
    estimated = flags(transactions["estimated"]) if len(transactions) else np.zeros(0, dtype=bool)
    est_counts = _counts(tx_labels[estimated])
    names = sorted(set(conn_counts) | set(tx_counts),
                   key=lambda p: (PROTOCOL_ORDER.index(p) if p in PROTOCOL_ORDER else len(PROTOCOL_ORDER), p))
    return pd.DataFrame({
        "protocol": pd.array(names, dtype="string"),
        "connections": np.array([conn_counts.get(p, 0) for p in names], dtype=np.int64),
        "transactions": np.array([tx_counts.get(p, 0) for p in names], dtype=np.int64),
        "transactions_estimated": np.array([est_counts.get(p, 0) for p in names], dtype=np.int64),
    })


def tls_by_host(connections: pd.DataFrame, conn_hosts: pd.DataFrame) -> pd.DataFrame:
    """Per host with TLS connections: ``host``, ``tls_connections``, ``resumed``, ``resumption_known``,
    ``resumption_ratio`` (``DEFINITIONS['tls_resumption_ratio']``), ``versions`` (e.g. "TLS 1.3 ×4"),
    ``tls_handshake_ms_median``; most TLS connections first."""
    is_tls = flags(connections["tls"])
    if not is_tls.any():
        return pd.DataFrame({"host": pd.array([], dtype="string"), "tls_connections": [], "resumed": [],
                             "resumption_known": [], "resumption_ratio": [], "versions": [],
                             "tls_handshake_ms_median": []})
    frame = pd.DataFrame({
        "host": np.array(texts(conn_hosts["host"]), dtype=object)[is_tls],
        "resumed": flags(connections["tls_resumed"])[is_tls],
        "known": (flags(connections["tls_resumed"]) | known_false(connections["tls_resumed"]))[is_tls],
        "version": np.array([v or "unknown" for v in texts(connections["tls_version"])], dtype=object)[is_tls],
        "ms": floats(connections["tls_handshake_ms"])[is_tls],
    })
    rows = []
    for host, g in frame.groupby("host", sort=True):
        known = int(g["known"].sum())
        resumed = int(g["resumed"].sum())
        versions = g["version"].value_counts()
        rows.append({
            "host": str(host), "tls_connections": len(g), "resumed": resumed, "resumption_known": known,
            "resumption_ratio": resumed / known if known else float("nan"),
            "versions": ", ".join(f"{v} ×{n}" for v, n in sorted(versions.items(), key=lambda kv: (-kv[1], kv[0]))),
            "tls_handshake_ms_median": float(np.nanmedian(g["ms"])) if np.isfinite(g["ms"]).any() else float("nan"),
        })
    out = pd.DataFrame(rows).sort_values(["tls_connections", "host"], ascending=[False, True], kind="stable")
    return out.reset_index(drop=True)


def protocol_stats(connections: pd.DataFrame, transactions: pd.DataFrame) -> dict[str, Any]:
    """JSON-safe figures: ``protocols`` ({protocol: connections}), ``transactions_estimated``,
    ``tls_connections``, ``tls_resumed``, ``tls_decrypted`` (with a key log), ``tls_resumption_ratio``,
    ``tls_versions`` ({version: n}),
    ``h2_connections``, ``h2_requests_per_connection_mean``, ``h2_requests_per_connection_max``,
    ``h2_max_concurrent_streams`` (definitions in ``DEFINITIONS``)."""
    mix = protocol_mix(connections, transactions)
    is_tls = flags(connections["tls"])
    resumed = flags(connections["tls_resumed"]) & is_tls
    known = (resumed | known_false(connections["tls_resumed"])) & is_tls
    versions: dict[str, int] = {}
    for v, t in zip(texts(connections["tls_version"]), is_tls.tolist(), strict=True):
        if t:
            versions[v or "unknown"] = versions.get(v or "unknown", 0) + 1
    protocols = _label(connections["protocol"])
    is_h2 = np.array([p in ("h2c", "h2") for p in protocols], dtype=bool)
    requests = floats(connections["requests"])[is_h2]
    requests = requests[~np.isnan(requests)]
    streams = floats(connections["max_concurrent_streams"])[is_h2]
    streams = streams[~np.isnan(streams)]
    estimated = flags(transactions["estimated"]) if len(transactions) else np.zeros(0, dtype=bool)
    return {
        "protocols": {str(p): int(n) for p, n in zip(mix["protocol"], mix["connections"], strict=True)},
        "transactions_estimated": int(estimated.sum()),
        "tls_connections": int(is_tls.sum()),
        "tls_resumed": int(resumed.sum()),
        "tls_decrypted": int((flags(connections["tls_decrypted"]) & is_tls).sum()),
        "tls_resumption_ratio": json_float(resumed.sum() / known.sum()) if known.any() else None,
        "tls_versions": dict(sorted(versions.items())),
        "h2_connections": int(is_h2.sum()),
        "h2_requests_per_connection_mean": json_float(requests.mean()) if len(requests) else None,
        "h2_requests_per_connection_max": int(requests.max()) if len(requests) else None,
        "h2_max_concurrent_streams": int(streams.max()) if len(streams) else None,
    }
