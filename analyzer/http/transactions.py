"""HTTP/1 on one connection: two parsers, request/response pairing, and the reuse decision.

It owns: pairing responses with requests in order (a FIFO of pending requests, as Zeek does: the n-th final
response answers the n-th request; 1xx responses are interim), the transaction rows of DESIGN.md §3
(``trans_depth``, ``pipelined``, ``idle_before_ms``, ``keep_alive``, ...), the per-connection HTTP facts
(protocol, ``pipelined_max``, advertised ``Keep-Alive``), and **the one place that decides whether a
connection may carry another request** (``connection_persists``). It knows streams and times, never packets.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analyzer.flows.stream import StreamChunk
from analyzer.http.http1 import REQUEST, RESPONSE, Http1Parser, Message, keep_alive_params

CLIENT = 0
SERVER = 1

MAX_PENDING_REQUESTS = 10_000  # requests waiting for a response before we call it a flood (and stop queueing)


def connection_persists(request: Message | None, response: Message | None) -> bool | None:
    """May this connection carry another request after this exchange? (RFC 9112 §9.3, both sides.)

    - a ``close`` token in either side's Connection header ends it;
    - a response delimited by the close of the connection, or a switch to another protocol (101,
      CONNECT tunnel), ends it for HTTP;
    - HTTP/1.1 (or later) is persistent by default;
    - HTTP/1.0 is persistent only when the client asked for ``keep-alive`` and the server agreed (its
      response carries ``keep-alive``, whatever its version).
    ``None`` when the response is unknown (not captured).
    """
    if response is None:
        return None
    resp_tokens = response.connection_tokens()
    req_tokens = request.connection_tokens() if request is not None else frozenset()
    if "close" in resp_tokens or "close" in req_tokens:
        return False
    if response.framing in ("close", "tunnel"):
        return False
    req_version = request.version if request is not None else response.version
    if req_version in ("HTTP/1.0", "HTTP/0.9"):
        client_wants = "keep-alive" in req_tokens
        return client_wants and "keep-alive" in resp_tokens
    if response.version == "HTTP/1.0":
        return "keep-alive" in resp_tokens
    return True


@dataclass(slots=True)
class Exchange:
    request: Message | None
    response: Message | None = None
    interim: int = 0


@dataclass(slots=True)
class Http1Connection:
    """Both directions of one connection. Feed chunks with ``feed(direction, chunk)``; then ``finish()``."""

    exchanges: list[Exchange] = field(default_factory=list)
    pending: deque[Exchange] = field(default_factory=deque)
    keep_alive_timeout_s: float | None = None
    keep_alive_max: int | None = None
    parsers: tuple[Http1Parser, Http1Parser] = field(init=False)
    flood_reported: bool = False

    def __post_init__(self) -> None:
        self.parsers = (
            Http1Parser(REQUEST, self._on_request_head, _ignore),
            Http1Parser(RESPONSE, self._on_response_head, self._on_response_end),
        )
        self.parsers[RESPONSE].expect_http09 = self._next_is_http09

    def _next_is_http09(self) -> bool:
        return bool(self.pending) and self.pending[0].request is not None and (
            self.pending[0].request.version == "HTTP/0.9")

    def feed(self, direction: int, chunk: StreamChunk) -> None:
        self.parsers[direction].feed(chunk)

    # -------------------------------------------------------------------------------------- callbacks
    def _on_request_head(self, msg: Message) -> str | None:
        ex = Exchange(msg)
        self.exchanges.append(ex)
        if len(self.pending) < MAX_PENDING_REQUESTS:
            self.pending.append(ex)
        elif not self.flood_reported:
            self.flood_reported = True
            self.parsers[REQUEST].anomalies.append(
                (msg.ts_start_ns, "excessive_pipelining", f"more than {MAX_PENDING_REQUESTS} requests pending"))
        return None

    def _on_response_head(self, msg: Message) -> str | None:
        status = msg.status or 0
        if 100 <= status < 200 and status != 101 and msg.version != "HTTP/0.9":
            if self.pending:
                self.pending[0].interim += 1
            return None
        if self.pending:
            ex = self.pending.popleft()
            ex.response = msg
        else:
            ex = Exchange(None, msg)
            self.exchanges.append(ex)
            self.parsers[RESPONSE].anomalies.append(
                (msg.ts_start_ns, "response_before_request",
                 f"status {msg.status} with no outstanding request"))
        timeout, maximum = keep_alive_params(msg.headers.get("keep-alive"))
        if timeout is not None:
            self.keep_alive_timeout_s = timeout
        if maximum is not None:
            self.keep_alive_max = maximum
        method = ex.request.method if ex.request is not None else None
        if (status == 101 or (method == "CONNECT" and 200 <= status < 300)):
            self.parsers[REQUEST].switch_to_tunnel()
        return method

    def _on_response_end(self, msg: Message) -> None:
        return None

    # ----------------------------------------------------------------------------------------- results
    @property
    def protocol(self) -> str:
        for parser in self.parsers:
            if parser.protocol:
                return parser.protocol
        versions = [ex.request.version for ex in self.exchanges if ex.request is not None and ex.request.version]
        versions += [ex.response.version for ex in self.exchanges if ex.response is not None and ex.response.version]
        if not versions:
            return "unknown"
        if any(v == "HTTP/1.1" for v in versions):
            return "http/1.1"
        if any(v == "HTTP/1.0" for v in versions):
            return "http/1.0"
        return "http/0.9" if all(v == "HTTP/0.9" for v in versions) else "unknown"

    def anomalies(self) -> list[tuple[int, str, str]]:
        return self.parsers[REQUEST].anomalies + self.parsers[RESPONSE].anomalies

    def transaction_rows(self, uid: str, server_ip: str, server_port: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Rows for the transactions table, and connection-level HTTP facts."""
        exchanges = self.exchanges
        n = len(exchanges)
        req_start = np.full(n, np.nan)
        resp_end = np.full(n, np.nan)
        for i, ex in enumerate(exchanges):
            if ex.request is not None:
                req_start[i] = ex.request.ts_start_ns
            if ex.response is not None and ex.response.ts_end_ns is not None:
                resp_end[i] = ex.response.ts_end_ns
        rows: list[dict[str, Any]] = []
        for i, ex in enumerate(exchanges):
            req, resp = ex.request, ex.response
            idle_ms: float | None = None
            pipelined: bool | None = None
            if i > 0 and req is not None:
                prev_end = resp_end[i - 1]
                if not np.isnan(prev_end):
                    delta = (req.ts_start_ns - prev_end) / 1e6
                    pipelined = delta < 0
                    idle_ms = max(delta, 0.0)
            elif i == 0 and req is not None:
                pipelined = False
            rows.append({
                "uid": uid,
                "trans_depth": i + 1,
                "method": req.method if req else None,
                "host": req.headers.get("host") if req else None,
                "target": req.target if req else None,
                "http_version": (req.version if req else resp.version if resp else None),
                "response_version": resp.version if resp else None,
                "status": resp.status if resp else None,
                "reason": resp.reason if resp else None,
                "ts_request_start": req.ts_start_ns / 1e9 if req else None,
                "ts_request_end": (req.ts_end_ns / 1e9 if req and req.ts_end_ns is not None else None),
                "ts_response_start": resp.ts_start_ns / 1e9 if resp else None,
                "ts_response_end": (resp.ts_end_ns / 1e9 if resp and resp.ts_end_ns is not None else None),
                "request_body_bytes": req.body_bytes if req else None,
                "response_body_bytes": resp.body_bytes if resp else None,
                "idle_before_ms": idle_ms,
                "pipelined": pipelined,
                "reused": i > 0,
                "keep_alive": connection_persists(req, resp),
                "request_connection": (req.headers.get("connection", "").lower() or None) if req else None,
                "response_connection": (resp.headers.get("connection", "").lower() or None) if resp else None,
                "user_agent": req.headers.get("user-agent") if req else None,
                "content_type": resp.headers.get("content-type") if resp else None,
                "interim_responses": ex.interim,
                "request_complete": req.complete if req else None,
                "response_complete": resp.complete if resp else None,
                "server_ip": server_ip,
                "server_port": server_port,
            })
        facts = {
            "requests": sum(1 for ex in exchanges if ex.request is not None),
            "pipelined_max": pipelined_max(req_start, resp_end),
            "protocol": self.protocol,
            "keep_alive_timeout_s": self.keep_alive_timeout_s,
            "keep_alive_max": self.keep_alive_max,
            "last_response_end_ns": (float(np.nanmax(resp_end)) if n and not np.all(np.isnan(resp_end))
                                     else None),
            "idle_max_ms": _idle_max(rows),
        }
        return rows, facts


def pipelined_max(req_start_ns: np.ndarray, resp_end_ns: np.ndarray) -> int:
    """Most requests outstanding at once on one connection (requests answered in order).

    Request k (1-based) is outstanding with every earlier request whose response had not ended when k was
    sent. Responses are FIFO, so a missing response counts as ended when a later one ends. Exchanges
    without a request (orphan responses) are ignored. 0 when there is no request.
    """
    has_req = ~np.isnan(req_start_ns)
    if not has_req.any():
        return 0
    starts = req_start_ns[has_req]
    ends = resp_end_ns[has_req].copy()
    # a missing response ends no later than the next known one (FIFO); trailing ones never end
    filled = ends.copy()
    nxt = np.inf
    for i in range(len(filled) - 1, -1, -1):
        if np.isnan(filled[i]):
            filled[i] = nxt
        else:
            nxt = filled[i]
    done = np.maximum.accumulate(filled)  # response i cannot be complete before response i-1
    answered = np.searchsorted(done, starts, side="right")  # responses ended at or before each start
    k = np.arange(1, len(starts) + 1)
    return int(np.max(k - np.minimum(answered, k - 1)))


def _idle_max(rows: list[dict[str, Any]]) -> float | None:
    values = [r["idle_before_ms"] for r in rows if r["idle_before_ms"] is not None]
    return max(values) if values else None


def _ignore(msg: Message) -> None:
    return None
