"""HAR 1.2 export: the transactions as a HTTP Archive that browser tools open.

This module owns the mapping of the record tables onto HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/):
one entry per transaction, ``connection`` = the connection's ``uid`` (so tools group requests by
connection), ``timings.connect`` and ``timings.ssl`` = the connection's TCP and TLS handshakes on the first
request of a connection whose handshake was captured and -1 on reused connections (as browsers write
them), ``send`` / ``wait`` / ``receive`` from the message times. Only the headers the analyzer keeps are
listed (Host, User-Agent, Connection, Content-Type): the others were not recorded. Values are taken as
they are: the caller redacts first (``analyzer.report.redact``; ``analyzer export`` does by default).
``har_document`` is pure; ``write_har`` writes the file. It knows nothing of packets or parsing.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import analyzer
from analyzer.analysis import Analysis
from analyzer.metrics.frames import floats, positions, texts

HAR_VERSION = "1.2"


def _iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 with milliseconds and a UTC offset (HAR's startedDateTime)."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")


def _ms(value: float) -> float:
    """A duration for ``timings``: rounded to µs, -1 when unknown or negative."""
    return round(float(value), 3) if math.isfinite(value) and value >= 0 else -1


def _int(value: Any, missing: int = -1) -> int:
    try:
        return missing if value is None or pd.isna(value) else int(value)
    except (TypeError, ValueError):
        return missing


def _url(scheme: str, host: str | None, server: str, target: str | None) -> str:
    target = target or "/"
    if "://" in target[:16]:  # absolute form (a proxy request)
        return target
    if target.startswith("/"):
        return f"{scheme}://{host or server}{target}"
    return f"{scheme}://{host or server}/{target}" if target != "*" else f"{scheme}://{host or server}"


def _header(name: str, value: Any) -> list[dict[str, str]]:
    return [] if value is None or (not isinstance(value, str) and pd.isna(value)) else \
        [{"name": name, "value": str(value)}]


def _query(url: str) -> list[dict[str, str]]:
    from urllib.parse import parse_qsl, urlsplit

    try:
        query = urlsplit(url).query
    except ValueError:
        return []
    return [{"name": k, "value": v} for k, v in parse_qsl(query, keep_blank_values=True)]


def har_document(analysis: Analysis) -> dict[str, Any]:
    """``analysis`` as a HAR 1.2 document (a JSON-safe dict): ``log.version``, ``log.creator``, one page
    per capture and one entry per transaction, in order of request start."""
    conns, tx = analysis.connections, analysis.transactions
    found = positions(texts(conns["uid"]), texts(tx["uid"]))
    known = found >= 0
    at = np.maximum(found, 0)

    def conn_col(name: str, kind: str = "float") -> Any:
        if len(conns) == 0 or name not in conns:
            return np.full(len(tx), math.nan if kind == "float" else None, dtype=float if kind == "float"
                           else object)
        if kind == "float":
            values = floats(conns[name])
            return np.where(known, values[at], math.nan)
        objects = np.array(texts(conns[name]) if kind == "text" else
                           conns[name].astype("boolean").fillna(False).to_numpy(dtype=bool).tolist(),
                           dtype=object)
        return np.where(known, objects[at], None)

    rtt = conn_col("handshake_rtt_ms")
    tls_ms = conn_col("tls_handshake_ms")
    is_tls = conn_col("tls", "bool")
    syn_seen = conn_col("syn_seen", "bool")
    req_start = floats(tx["ts_request_start"])
    req_end = floats(tx["ts_request_end"])
    resp_start = floats(tx["ts_response_start"])
    resp_end = floats(tx["ts_response_end"])
    depth = floats(tx["trans_depth"])
    estimated = tx["estimated"].astype("boolean").fillna(False).to_numpy(dtype=bool) if "estimated" in tx \
        else np.zeros(len(tx), dtype=bool)
    captures = (analysis.summary or {}).get("captures") or []
    names = [Path(str(c)).name for c in (captures if isinstance(captures, (list, tuple)) else [captures])]
    first_ts = np.nanmin(req_start) if len(tx) and not np.isnan(req_start).all() else \
        float((analysis.summary or {}).get("ts_first") or 0.0)
    page = {"startedDateTime": _iso(float(first_ts)), "id": "page_1",
            "title": ", ".join(names) or "capture", "pageTimings": {"onContentLoad": -1, "onLoad": -1}}
    records = tx.to_dict("records")
    entries: list[tuple[float, int, dict[str, Any]]] = []
    for i, row in enumerate(records):
        first_on_new = bool(syn_seen[i]) and depth[i] == 1 and math.isfinite(rtt[i])
        tls_i = bool(is_tls[i])
        ssl = _ms(tls_ms[i]) if first_on_new and tls_i else -1
        connect = _ms(rtt[i] + (tls_ms[i] if tls_i and math.isfinite(tls_ms[i]) else 0.0)) if first_on_new else -1
        send = _ms((req_end[i] - req_start[i]) * 1000.0)
        wait = _ms((resp_start[i] - (req_end[i] if math.isfinite(req_end[i]) else req_start[i])) * 1000.0)
        receive = _ms((resp_end[i] - resp_start[i]) * 1000.0)
        start = req_start[i] if math.isfinite(req_start[i]) else resp_start[i]
        if not math.isfinite(start):
            start = float(first_ts)
        started = start - (connect / 1000.0 if connect > 0 else 0.0)
        total = sum(v for v in (connect, send, wait, receive) if v > 0)
        scheme = "https" if tls_i else "http"
        server = f"{row.get('server_ip') or '?'}:{_int(row.get('server_port'), 0)}"
        host = row.get("host") if isinstance(row.get("host"), str) else None
        url = _url(scheme, host, server, row.get("target") if isinstance(row.get("target"), str) else None)
        version = row.get("http_version") if isinstance(row.get("http_version"), str) else ""
        response_version = row.get("response_version") if isinstance(row.get("response_version"), str) \
            else version
        request_headers = (_header("Host", host) + _header("User-Agent", row.get("user_agent"))
                           + _header("Connection", row.get("request_connection")))
        response_headers = (_header("Content-Type", row.get("content_type"))
                            + _header("Connection", row.get("response_connection")))
        body_in = _int(row.get("request_body_bytes"))
        body_out = _int(row.get("response_body_bytes"))
        entry: dict[str, Any] = {
            "pageref": "page_1",
            "startedDateTime": _iso(started),
            "time": round(total, 3),
            "request": {
                "method": str(row["method"]) if isinstance(row.get("method"), str) else "",
                "url": url, "httpVersion": version, "cookies": [], "headers": request_headers,
                "queryString": _query(url), "headersSize": -1, "bodySize": body_in,
            },
            "response": {
                "status": _int(row.get("status"), 0),
                "statusText": str(row["reason"]) if isinstance(row.get("reason"), str) else "",
                "httpVersion": response_version or "", "cookies": [], "headers": response_headers,
                "content": {"size": max(body_out, 0),
                            "mimeType": str(row["content_type"]) if isinstance(row.get("content_type"), str)
                            else ""},
                "redirectURL": "", "headersSize": -1, "bodySize": body_out,
            },
            "cache": {},
            "timings": {"blocked": -1, "dns": -1, "connect": connect, "send": max(send, 0),
                        "wait": max(wait, 0), "receive": max(receive, 0), "ssl": ssl},
            "serverIPAddress": str(row["server_ip"]) if isinstance(row.get("server_ip"), str) else "",
            "connection": str(row["uid"]) if isinstance(row.get("uid"), str) else "",
        }
        if estimated[i]:
            entry["_estimated"] = True
            entry["comment"] = "estimated from TLS record sizes and times (not decrypted)"
        entries.append((start, i, entry))
    entries.sort(key=lambda item: (item[0], item[1]))
    return {"log": {
        "version": HAR_VERSION,
        "creator": {"name": "analyzer", "version": analyzer.__version__},
        "pages": [page],
        "entries": [entry for _, _, entry in entries],
        "comment": "From a packet capture: only the Host, User-Agent, Connection and Content-Type headers "
                   "are kept; timings.connect and ssl are -1 on reused connections.",
    }}


def write_har(analysis: Analysis, path: str | os.PathLike[str]) -> None:
    """Write ``har_document(analysis)`` to ``path`` as UTF-8 JSON, creating missing parent folders."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(har_document(analysis), indent=1, ensure_ascii=False, allow_nan=False) + "\n",
                      encoding="utf-8")
