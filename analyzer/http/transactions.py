"""HTTP/1 on one connection: two parsers, request/response pairing, and the reuse decision.

It owns: pairing responses with requests in order (a FIFO of pending requests, as Zeek does: the n-th final
response answers the n-th request; 1xx responses are interim), the transaction rows of DESIGN.md §3
(``trans_depth``, ``pipelined``, ``idle_before_ms``, ``keep_alive``, ...), the per-connection HTTP facts
(protocol, ``pipelined_max``, advertised ``Keep-Alive``), and **the one place that decides whether a
connection may carry another request** (``connection_persists``). It knows streams and times, never packets.
"""

from __future__ import annotations

import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from analyzer.flows.stream import StreamChunk
from analyzer.http.http1 import REQUEST, RESPONSE, START, Http1Parser, Message, keep_alive_params

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
    if request is None:  # the request was not captured: the response alone says what happened
        return response.version != "HTTP/1.0" or "keep-alive" in resp_tokens
    if request.version in ("HTTP/1.0", "HTTP/0.9"):
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


@dataclass(slots=True, weakref_slot=True)
class Http1Connection:
    """Both directions of one connection. Feed chunks with ``feed(direction, chunk)``; then ``finish()``."""

    exchanges: list[Exchange] = field(default_factory=list)
    pending: deque[Exchange] = field(default_factory=deque)
    keep_alive_timeout_s: float | None = None
    keep_alive_max: int | None = None
    parsers: tuple[Http1Parser, Http1Parser] = field(init=False)
    flood_reported: bool = False
    settled: bool = False  # a message was parsed or a direction showed another protocol (``may_switch``)
    upgraded_to: str | None = None  # protocol switched to by a 101 (h2c)
    upgrade: tuple[Message, Message] | None = None  # (request, 101 response) of an h2c Upgrade
    switch_request: Message | None = None  # an Upgrade: h2c or CONNECT request whose response is not in yet
    tunnel: tuple[Message, Message] | None = None  # (CONNECT request, its 2xx response): a tunnel follows

    def __post_init__(self) -> None:
        # the parsers call back through a weak proxy: no reference cycle, so a finished connection is freed
        # at once by reference counting instead of waiting for (and costing) the cyclic garbage collector
        me = weakref.proxy(self)
        self.parsers = (
            Http1Parser(REQUEST, lambda msg: me._on_request_head(msg), _ignore),
            Http1Parser(RESPONSE, lambda msg: me._on_response_head(msg), _ignore),
        )
        self.parsers[RESPONSE].expect_http09 = lambda: me._next_is_http09()

    def _next_is_http09(self) -> bool:
        return bool(self.pending) and self.pending[0].request is not None and (
            self.pending[0].request.version == "HTTP/0.9")

    def feed(self, direction: int, chunk: StreamChunk) -> None:
        parser = self.parsers[direction]
        parser.feed(chunk)
        other = self.parsers[1 - direction]
        if (parser.protocol is not None and not parser.messages_seen and other.protocol is None
                and not other.messages_seen):
            other.stop(parser.protocol)  # HTTP/2 or TLS from the first byte: the other direction is too

    def may_switch(self) -> bool:
        """Could this connection still turn out to speak another protocol from a point already fed? True
        while no message was parsed and a direction has not yet shown what it is (its first bytes decide:
        TLS, the HTTP/2 preface; bytes HTTP/1 cannot parse do not), and while an ``Upgrade: h2c`` or a
        ``CONNECT`` request waits for its response."""
        if self.switch_request is not None:
            return True
        if self.settled:
            return False
        req, resp = self.parsers
        if req.messages_seen or resp.messages_seen or req.protocol is not None or resp.protocol is not None:
            self.settled = True  # for good: messages are only counted up, a protocol once found stays
            return False
        return req.state == START or resp.state == START  # a direction has not shown what it is yet

    def detected(self) -> str | None:
        """The protocol found instead of HTTP/1 at the start of a stream (``tls``, ``h2c``), ``h2c`` after an
        answered Upgrade (then ``upgrade`` holds the two messages), ``tunnel`` after a successful CONNECT
        (``tunnel`` holds them); None while it is HTTP/1."""
        if self.upgrade is not None:
            return "h2c"
        if self.tunnel is not None:
            return "tunnel"
        for p in self.parsers:
            if p.protocol is not None and not p.messages_seen:
                return p.protocol
        return None

    # -------------------------------------------------------------------------------------- callbacks
    def _on_request_head(self, msg: Message) -> str | None:
        if msg.method == "CONNECT" or "h2c" in (msg.headers.get("upgrade") or "").lower():
            self.switch_request = msg
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
        if self.pending and self.pending[0].request is not None and (
                self.pending[0].request.ts_start_ns <= msg.ts_start_ns):
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
        if ex.request is not None and ex.request is self.switch_request:
            self.switch_request = None  # answered (switched or not)
        if (status == 101 or (method == "CONNECT" and 200 <= status < 300)):
            self.parsers[REQUEST].switch_to_tunnel()
            upgrade = (msg.headers.get("upgrade") or "").lower()
            if status == 101 and "h2c" in upgrade:
                self.upgraded_to = "h2c"  # HTTP/2 over cleartext after an Upgrade
                if ex.request is not None:
                    self.upgrade = (ex.request, msg)
            elif method == "CONNECT" and ex.request is not None:
                self.tunnel = (ex.request, msg)
        return method

    def seal(self, server_ip: str, server_port: int) -> SealedHttp1:
        """Both directions ended (FIN reached in sequence): finish parsing and keep only the results."""
        for parser in self.parsers:
            parser.feed(StreamChunk.empty(final=True))
        rows, facts = self.transaction_rows("", server_ip, server_port)
        return SealedHttp1(rows, facts, self.anomalies())

    # ----------------------------------------------------------------------------------------- results
    @property
    def protocol(self) -> str:
        if self.upgraded_to:
            return self.upgraded_to
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

    def transaction_rows(self, uid: str, server_ip: str, server_port: int
                         ) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
        """Rows for the transactions table (tuples in ``HTTP_TRANSACTION_COLUMNS`` order), and connection-level
        HTTP facts. Called when the connection is done: it consumes the exchanges (each one's messages are
        freed as its row is made, so that a connection with a million requests does not hold both), so a
        second call gives no rows (the tracker's one handler of connections without a byte has none)."""
        protocol = self.protocol
        # in capture-time order (processing order depends on how packets were chunked)
        exchanges: list[Exchange | None] = sorted(self.exchanges, key=_exchange_start)  # type: ignore[arg-type]
        self.exchanges = []
        self.pending.clear()
        requests = 0
        req_start: list[float] = []
        resp_end: list[float] = []
        rows: list[tuple[Any, ...]] = []
        spans: list[tuple[int, int] | None] = []  # per row: the response's [start, end) in the server stream
        prev_end: float | None = None
        idle_max: float | None = None
        nan = float("nan")
        for i, ex in enumerate(exchanges):
            assert ex is not None
            exchanges[i] = None
            req, resp = ex.request, ex.response
            requests += req is not None
            r_end = resp.ts_end_ns if resp is not None and resp.ts_end_ns is not None else None
            req_start.append(req.ts_start_ns if req is not None else nan)
            resp_end.append(r_end if r_end is not None else nan)
            idle_ms: float | None = None
            pipelined: bool | None = None
            if req is not None:
                if i == 0:
                    pipelined = False
                elif prev_end is not None:
                    delta = (req.ts_start_ns - prev_end) / 1e6
                    pipelined = delta < 0
                    idle_ms = delta  # negative: pipelined (sent before the previous response ended)
                    if delta >= 0 and (idle_max is None or delta > idle_max):
                        idle_max = delta
            prev_end = r_end
            req_part: tuple[Any, ...]
            req_times: tuple[float | None, float | None]
            resp_part: tuple[Any, ...]
            resp_times: tuple[float | None, float | None]
            req_conn: str | None
            resp_conn: str | None
            ua: str | None
            ctype: str | None
            req_body: int | None
            resp_body: int | None
            req_complete: bool | None
            resp_complete: bool | None
            if req is not None:
                rh = req.headers
                req_part = (req.method, rh.get("host"), req.target, req.version)
                req_times = (req.ts_start_ns / 1e9, req.ts_end_ns / 1e9 if req.ts_end_ns is not None else None)
                req_conn = rh.get("connection", "").lower() or None
                ua = rh.get("user-agent")
                req_body, req_complete = req.body_bytes, req.complete
            else:
                req_part = (None, None, None, resp.version if resp is not None else None)
                req_times = (None, None)
                req_conn = ua = req_body = req_complete = None
            if resp is not None:
                sh = resp.headers
                resp_part = (resp.version, resp.status, resp.reason)
                resp_times = (resp.ts_start_ns / 1e9, r_end / 1e9 if r_end is not None else None)
                resp_conn = sh.get("connection", "").lower() or None
                ctype = sh.get("content-type")
                resp_body, resp_complete = resp.body_bytes, resp.complete
                spans.append((resp.start, resp.end))
            else:
                spans.append(None)
                resp_part = (None, None, None)
                resp_times = (None, None)
                resp_conn = ctype = resp_body = resp_complete = None
            rows.append((
                uid, i + 1, None, *req_part, *resp_part, *req_times, *resp_times, req_body, resp_body,
                idle_ms, pipelined, i > 0, connection_persists(req, resp), req_conn, resp_conn, ua, ctype,
                ex.interim, req_complete, resp_complete, server_ip, server_port, False,
            ))
        known_ends = [e for e in resp_end if e == e]
        facts = {
            "requests": requests,
            "pipelined_max": pipelined_max(req_start, resp_end),
            "protocol": protocol,
            "keep_alive_timeout_s": self.keep_alive_timeout_s,
            "keep_alive_max": self.keep_alive_max,
            "last_response_end_ns": max(known_ends) if known_ends else None,
            "idle_max_ms": idle_max,
            "response_spans": spans,
        }
        return rows, facts


@dataclass(slots=True)
class SealedHttp1:
    """What remains of an ``Http1Connection`` once both directions ended cleanly: its final rows and facts.

    Keeps memory proportional to the output (rows), not to parsers and messages, for connections that
    closed but are kept a little longer to absorb late TCP packets. Bytes fed after sealing (data after
    both FINs) are counted as one ``data_after_close`` anomaly.
    """

    rows: list[tuple[Any, ...]]
    facts: dict[str, Any]
    http_anomalies: list[tuple[int, str, str]]
    late_bytes: int = 0
    late_ts: int = 0

    def feed(self, direction: int, chunk: StreamChunk) -> None:
        if len(chunk):
            self.late_bytes += int((chunk.end - chunk.start).sum())
            self.late_ts = self.late_ts or int(chunk.ts_ns[0])

    def transaction_rows(self, uid: str, server_ip: str, server_port: int
                         ) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
        return [(uid, *row[1:]) for row in self.rows], self.facts

    def anomalies(self) -> list[tuple[int, str, str]]:
        if self.late_bytes:
            return [*self.http_anomalies, (self.late_ts, "data_after_close",
                                           f"{self.late_bytes} bytes after both FINs")]
        return self.http_anomalies


def pipelined_max(req_start_ns: list[float], resp_end_ns: list[float]) -> int:
    """Most requests outstanding at once on one connection (requests answered in order).

    Request k (1-based) is outstanding with every earlier request whose response had not ended when k was
    sent. Responses are FIFO, so a missing response counts as ended when a later one ends. Exchanges
    without a request (orphan responses) are ignored. 0 when there is no request. (Plain Python: the lists
    are per connection and usually short.)
    """
    pairs = [(s, e) for s, e in zip(req_start_ns, resp_end_ns, strict=True) if s == s]
    if not pairs:
        return 0
    # a missing response ends no later than the next known one (FIFO); trailing ones never end
    done = [0.0] * len(pairs)
    nxt = float("inf")
    for i in range(len(pairs) - 1, -1, -1):
        e = pairs[i][1]
        if e == e:
            nxt = e
        done[i] = nxt
    best = 0
    running = float("-inf")
    answered = 0  # responses done before the current request (monotone: done is made non-decreasing)
    monotone = []
    for d in done:
        running = d if d > running else running
        monotone.append(running)
    for k, (start, _) in enumerate(pairs, 1):
        while answered < k - 1 and monotone[answered] <= start:
            answered += 1
        outstanding = k - answered
        if outstanding > best:
            best = outstanding
    return best


def _exchange_start(ex: Exchange) -> int:
    if ex.request is not None:
        return ex.request.ts_start_ns
    return ex.response.ts_start_ns if ex.response is not None else 0


def _ignore(msg: Message) -> None:
    return None
