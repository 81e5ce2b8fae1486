"""HTTP/1 on one connection: two parsers, request/response pairing, and the reuse decision.

It owns: pairing responses with requests in order (a FIFO of pending requests, as Zeek does: the n-th final
response answers the n-th request; 1xx responses are interim), the transaction rows of DESIGN.md §3
(``trans_depth``, ``pipelined``, ``idle_before_ms``, ``keep_alive``, ...), the per-connection HTTP facts
(protocol, ``pipelined_max``, advertised ``Keep-Alive``), and **the one place that decides whether a
connection may carry another request** (``connection_persists``). It knows streams and times, never packets.

A connection's finished exchanges are packed as it goes (``_Packed``, ``analyzer.http.packing``: the fields
its rows are made of, in numpy columns by blocks, strings shared) once ``PACK_EVERY`` of them accumulate, so
that a long keep-alive connection (a load test's: a million exchanges) holds 0.15 KB per exchange until it
ends instead of its parsed messages (1.2 KB; ``tests/test_transactions.py``, ``bench/hostile.py --cases
keepalive_marathon``), or, given a ``BlockStore`` (``store``: the spill's block file), about 4 bytes per
exchange, each block put there as it is made. Packing costs about 2 µs per exchange packed (5 % of a
keep-alive exchange's time); a connection with fewer than ``PACK_EVERY`` exchanges is never packed (packing
every one of 20,000 one-request connections took their scan from 2.97 to 4.7 s of CPU).
"""

from __future__ import annotations

import weakref
from array import array
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from analyzer.flows.stream import StreamChunk
from analyzer.http.http1 import REQUEST, RESPONSE, START, Http1Parser, Message, keep_alive_params
from analyzer.http.packing import NO_INT, BlockStore, Kinds, PackedRecords
from analyzer.http.rows import TransactionRows

CLIENT = 0
SERVER = 1

#: Requests still waiting for a response once a round of bytes was fed (both directions) before we call it
#: a flood and stop waiting for the newest (``_trim_pending``). Counted at that point, not as requests are
#: parsed: the tracker feeds a round's client bytes before its server bytes (``connections.ROUND_BYTES``, 256
#: KiB of a connection), so a busy keep-alive connection has the round's requests waiting until its responses
#: are fed.
MAX_PENDING_REQUESTS = 10_000
#: Exchanges a connection holds as parsed messages before its finished ones are packed (``_Packed``).
PACK_EVERY = 256
_NEVER = (1 << 63) - 1  # a response that never ended (``pipelined_max``)


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
    queued: bool = False  # waiting in ``pending`` for its response
    order: int = 0  # creation order on the connection: the tie-break of equal start times

    def finished(self) -> bool:
        """Nothing of it can change any more: not waiting for a response, and its messages read to their end."""
        return not self.queued and (self.request is None or self.request.end >= 0) and (
            self.response is None or self.response.end >= 0)


# The fields of one exchange that its transaction row is made of (``_flat``), by position.
(_F_START, _F_ORDER, _F_REQ_START, _F_REQ_END, _F_RESP_START, _F_RESP_END, _F_METHOD, _F_HOST, _F_TARGET,
 _F_VERSION, _F_RESP_VERSION, _F_STATUS, _F_REASON, _F_REQ_CONN, _F_RESP_CONN, _F_UA, _F_CTYPE, _F_REQ_BODY,
 _F_RESP_BODY, _F_REQ_COMPLETE, _F_RESP_COMPLETE, _F_KEEP_ALIVE, _F_INTERIM, _F_SPAN_START, _F_SPAN_END) = range(25)
_FIELDS = 25
_KINDS = Kinds(ints=frozenset((_F_START, _F_ORDER, _F_REQ_START, _F_REQ_END, _F_RESP_START, _F_RESP_END, _F_STATUS,
                                _F_REQ_BODY, _F_RESP_BODY, _F_INTERIM, _F_SPAN_START, _F_SPAN_END)),
               bools=frozenset((_F_REQ_COMPLETE, _F_RESP_COMPLETE, _F_KEEP_ALIVE)), distinct=frozenset((_F_TARGET,)))
PACK_BLOCK = 1024  # exchanges packed into columns at once
_DECODED_BLOCKS = 4  # blocks kept decoded while rows are made in an order other than packed (orphan responses)


def _flat(ex: Exchange) -> tuple[Any, ...]:
    """The fields of ``ex`` its transaction row is made of (``_F_*``): message fields as read now, the
    Connection, User-Agent and Content-Type headers, and the reuse decision. Without a request, the request
    version is the response's (as the row shows it)."""
    req, resp = ex.request, ex.response
    req_start = req_end = method = host = target = req_conn = ua = req_body = req_complete = None
    resp_start = resp_end = resp_version = status = reason = resp_conn = ctype = resp_body = None
    resp_complete = span_start = span_end = None
    if req is not None:
        req_start, req_end, req_body, req_complete = req.ts_start_ns, req.ts_end_ns, req.body_bytes, req.complete
        method, target, version = req.method, req.target, req.version
        host, ua = req.headers.get("host"), req.headers.get("user-agent")
        req_conn = req.headers.get("connection", "").lower() or None
    else:
        version = resp.version if resp is not None else None
    if resp is not None:
        resp_start, resp_end, resp_body, resp_complete = (resp.ts_start_ns, resp.ts_end_ns, resp.body_bytes,
                                                          resp.complete)
        resp_version, status, reason = resp.version, resp.status, resp.reason
        ctype = resp.headers.get("content-type")
        resp_conn = resp.headers.get("connection", "").lower() or None
        span_start, span_end = resp.start, resp.end
    start = req_start if req_start is not None else resp_start if resp_start is not None else 0
    return (start, ex.order, req_start, req_end, resp_start, resp_end, method, host, target, version, resp_version,
            status, reason, req_conn, resp_conn, ua, ctype, req_body, resp_body, req_complete, resp_complete,
            connection_persists(req, resp), ex.interim, span_start, span_end)


class _Packed(PackedRecords):
    """Finished exchanges of one connection (``analyzer.http.packing``): their ``_flat`` fields, by blocks of
    ``PACK_BLOCK``, and the HTTP versions of their messages (``protocol``)."""

    __slots__ = ("versions",)

    def __init__(self, store: BlockStore | None) -> None:
        super().__init__(_KINDS, PACK_BLOCK, _DECODED_BLOCKS, store=store)
        self.versions: set[str] = set()

    def add_exchange(self, ex: Exchange) -> None:
        for msg in (ex.request, ex.response):
            if msg is not None and msg.version:
                self.versions.add(msg.version)
        self.add(_flat(ex))


@dataclass(slots=True, weakref_slot=True)
class Http1Connection:
    """Both directions of one connection. Feed chunks with ``feed(direction, chunk)``; then ``finish()``."""

    exchanges: list[Exchange] = field(default_factory=list)  # not packed yet, in creation order
    pending: deque[Exchange] = field(default_factory=deque)
    packed: _Packed | None = None  # finished exchanges packed (``_pack``)
    exchanges_seen: int = 0  # exchanges made so far, packed or not
    pack_at: int = 0  # pack when this many exchanges are held unpacked (``PACK_EVERY`` at first)
    keep_alive_timeout_s: float | None = None
    keep_alive_max: int | None = None
    parsers: tuple[Http1Parser, Http1Parser] = field(init=False)
    flood_reported: bool = False
    settled: bool = False  # a message was parsed or a direction showed another protocol (``may_switch``)
    upgraded_to: str | None = None  # protocol switched to by a 101 (h2c)
    upgrade: tuple[Message, Message] | None = None  # (request, 101 response) of an h2c Upgrade
    switch_request: Message | None = None  # an Upgrade: h2c or CONNECT request whose response is not in yet
    tunnel: tuple[Message, Message] | None = None  # (CONNECT request, its 2xx response): a tunnel follows
    store: BlockStore | None = None  # where packed blocks go (``analyzer.http.packing``; None: held)

    def __post_init__(self) -> None:
        # the parsers call back through a weak proxy: no reference cycle, so a finished connection is freed
        # at once by reference counting instead of waiting for (and costing) the cyclic garbage collector
        me = weakref.proxy(self)
        self.pack_at = PACK_EVERY
        self.parsers = (
            Http1Parser(REQUEST, lambda msg: me._on_request_head(msg), _ignore),
            Http1Parser(RESPONSE, lambda msg: me._on_response_head(msg), _ignore),
        )
        self.parsers[RESPONSE].expect_http09 = lambda: me._next_is_http09()

    def _next_is_http09(self) -> bool:
        return bool(self.pending) and self.pending[0].request is not None and (
            self.pending[0].request.version == "HTTP/0.9")

    def feed(self, direction: int, chunk: StreamChunk) -> None:
        if direction == REQUEST and len(self.pending) > MAX_PENDING_REQUESTS:
            self._trim_pending()  # the responses of the chunk before were fed: these are still waiting
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
        ex = Exchange(msg, queued=True)
        self.pending.append(ex)
        self._add(ex)
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
            ex.queued = False
            ex.response = msg
        else:
            ex = Exchange(None, msg)
            self._add(ex)
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

    def _trim_pending(self) -> None:
        """More than ``MAX_PENDING_REQUESTS`` requests wait for a response after a round's responses were fed: a
        flood (one ``excessive_pipelining``, the first time). The newest beyond the limit are no longer waited
        for: responses pair with the oldest waiting, then with requests sent after this point. All keep their
        rows."""
        first_over: Exchange | None = None
        while len(self.pending) > MAX_PENDING_REQUESTS:
            first_over = self.pending.pop()
            first_over.queued = False
        if first_over is not None and not self.flood_reported and first_over.request is not None:
            self.flood_reported = True
            self.parsers[REQUEST].anomalies.append(
                (first_over.request.ts_start_ns, "excessive_pipelining",
                 f"more than {MAX_PENDING_REQUESTS} requests pending"))

    def _add(self, ex: Exchange) -> None:
        ex.order = self.exchanges_seen
        self.exchanges_seen += 1
        self.exchanges.append(ex)
        if len(self.exchanges) >= self.pack_at:
            self._pack()

    def _pack(self, everything: bool = False) -> None:
        """Pack the finished exchanges (``everything``: all of them, as they are). The next pass comes when the
        exchanges held have doubled (at least ``PACK_EVERY``), so that those still waiting (up to
        ``MAX_PENDING_REQUESTS``) are looked at a bounded number of times per exchange."""
        if self.packed is None:
            self.packed = _Packed(self.store)
        keep = []
        held: list[Exchange | None] = list(self.exchanges)
        self.exchanges = []
        for i, ex in enumerate(held):
            held[i] = None  # each packed exchange's messages let go at once (all of them: a million, at the end)
            assert ex is not None
            if everything or ex.finished():
                self.packed.add_exchange(ex)
            else:
                keep.append(ex)
            del ex
        self.exchanges = keep
        self.pack_at = max(PACK_EVERY, 2 * len(keep))

    def seal(self, server_ip: str, server_port: int) -> SealedHttp1:
        """Both directions ended (FIN reached in sequence): finish parsing and keep only the results."""
        for parser in self.parsers:
            parser.feed(StreamChunk.empty(final=True))
        rows, facts = self.transaction_rows(server_ip, server_port)
        return SealedHttp1(rows, facts, self.anomalies())

    # ----------------------------------------------------------------------------------------- results
    @property
    def protocol(self) -> str:
        if self.upgraded_to:
            return self.upgraded_to
        for parser in self.parsers:
            if parser.protocol:
                return parser.protocol
        versions = set(self.packed.versions) if self.packed is not None else set()
        for ex in self.exchanges:
            for msg in (ex.request, ex.response):
                if msg is not None and msg.version:
                    versions.add(msg.version)
        if not versions:
            return "unknown"
        if "HTTP/1.1" in versions:
            return "http/1.1"
        if "HTTP/1.0" in versions:
            return "http/1.0"
        return "http/0.9" if versions == {"HTTP/0.9"} else "unknown"

    def anomalies(self) -> list[tuple[int, str, str]]:
        return self.parsers[REQUEST].anomalies + self.parsers[RESPONSE].anomalies

    def transaction_rows(self, server_ip: str, server_port: int) -> tuple[TransactionRows, dict[str, Any]]:
        """Rows for the transactions table (``TransactionRows``: with their responses' spans), and
        connection-level HTTP facts. Called when the connection is done: it consumes the exchanges (the
        messages of those not packed yet are freed as they are packed, a packed block as its rows are made,
        so that a connection with a million requests does not hold both), so a second call gives no rows
        (the tracker's one handler of connections without a byte has none)."""
        if len(self.pending) > MAX_PENDING_REQUESTS:
            self._trim_pending()  # still waiting at the end of the data
        protocol = self.protocol
        # in capture-time order (processing order depends on how packets were chunked); ties in creation order
        flats: list[tuple[Any, ...] | None]
        self.pending.clear()
        packed = self.packed
        if packed is None:  # never packed (fewer than PACK_EVERY exchanges): made from the messages directly
            flats = [_flat(ex) for ex in sorted(self.exchanges, key=_exchange_start)]
        else:
            self._pack(everything=True)
            flats = []
        self.exchanges = []
        self.packed = None
        requests = 0
        req_start, resp_end = array("q"), array("q")  # per row (NO_INT: none), for ``pipelined_max``
        rows = TransactionRows(self.store)
        prev_end: float | None = None
        idle_max: float | None = None
        for i, f in enumerate(packed.flats(_F_START, _F_ORDER) if packed is not None else _each_once(flats)):
            start_ns = f[_F_REQ_START]
            has_request = start_ns is not None
            has_response = f[_F_RESP_START] is not None
            requests += has_request
            r_end = f[_F_RESP_END] if has_response else None
            req_start.append(start_ns if has_request else NO_INT)
            resp_end.append(r_end if r_end is not None else NO_INT)
            idle_ms: float | None = None
            pipelined: bool | None = None
            if has_request:
                if i == 0:
                    pipelined = False
                elif prev_end is not None:
                    delta = (start_ns - prev_end) / 1e6
                    pipelined = delta < 0
                    idle_ms = delta  # negative: pipelined (sent before the previous response ended)
                    if delta >= 0 and (idle_max is None or delta > idle_max):
                        idle_max = delta
            prev_end = r_end
            if has_request:
                req_end = f[_F_REQ_END]
                req_times: tuple[float | None, float | None] = (
                    start_ns / 1e9, req_end / 1e9 if req_end is not None else None)
            else:
                req_times = (None, None)
            if has_response:
                resp_times: tuple[float | None, float | None] = (
                    f[_F_RESP_START] / 1e9, r_end / 1e9 if r_end is not None else None)
                span: tuple[int, int] | None = (f[_F_SPAN_START], f[_F_SPAN_END])
            else:
                resp_times = (None, None)
                span = None
            rows.add((
                i + 1, None, f[_F_METHOD], f[_F_HOST], f[_F_TARGET], f[_F_VERSION], f[_F_RESP_VERSION],
                f[_F_STATUS], f[_F_REASON], *req_times, *resp_times, f[_F_REQ_BODY], f[_F_RESP_BODY],
                idle_ms, pipelined, i > 0, f[_F_KEEP_ALIVE], f[_F_REQ_CONN], f[_F_RESP_CONN], f[_F_UA],
                f[_F_CTYPE], f[_F_INTERIM], f[_F_REQ_COMPLETE], f[_F_RESP_COMPLETE], server_ip, server_port,
                False,
            ), span)
        last_end = max((e for e in resp_end if e != NO_INT), default=None)
        facts = {
            "requests": requests,
            "pipelined_max": pipelined_max(req_start, resp_end),
            "protocol": protocol,
            "keep_alive_timeout_s": self.keep_alive_timeout_s,
            "keep_alive_max": self.keep_alive_max,
            "last_response_end_ns": last_end,
            "idle_max_ms": idle_max,
        }
        return rows, facts


@dataclass(slots=True)
class SealedHttp1:
    """What remains of an ``Http1Connection`` once both directions ended cleanly: its final rows and facts.

    Keeps memory proportional to the output (rows), not to parsers and messages, for connections that
    closed but are kept a little longer to absorb late TCP packets. Bytes fed after sealing (data after
    both FINs) are counted as one ``data_after_close`` anomaly.
    """

    rows: TransactionRows
    facts: dict[str, Any]
    http_anomalies: list[tuple[int, str, str]]
    late_bytes: int = 0
    late_ts: int = 0

    def feed(self, direction: int, chunk: StreamChunk) -> None:
        if len(chunk):
            self.late_bytes += int((chunk.end - chunk.start).sum())
            self.late_ts = self.late_ts or int(chunk.ts_ns[0])

    def transaction_rows(self, server_ip: str, server_port: int) -> tuple[TransactionRows, dict[str, Any]]:
        return self.rows, self.facts

    def anomalies(self) -> list[tuple[int, str, str]]:
        if self.late_bytes:
            return [*self.http_anomalies, (self.late_ts, "data_after_close",
                                           f"{self.late_bytes} bytes after both FINs")]
        return self.http_anomalies


def pipelined_max(req_start_ns: Sequence[int], resp_end_ns: Sequence[int]) -> int:
    """Most requests outstanding at once on one connection (requests answered in order).

    Request k (1-based) is outstanding with every earlier request whose response had not ended when k was
    sent. Responses are FIFO, so a missing response counts as ended when a later one ends. Exchanges
    without a request (orphan responses) are ignored. Times in ns, ``NO_INT`` for none. 0 when there is no
    request. (Plain Python over ``array`` columns: usually a few requests, and 24 bytes a request for a
    connection with a million.)
    """
    starts, done = array("q"), array("q")
    for s, e in zip(req_start_ns, resp_end_ns, strict=True):
        if s != NO_INT:
            starts.append(s)
            done.append(e)
    if not starts:
        return 0
    # when each request's response is done: a missing one no later than the next known one (FIFO; trailing
    # ones never), then made non-decreasing
    nxt = _NEVER
    for i in range(len(done) - 1, -1, -1):
        e = done[i]
        if e != NO_INT:
            nxt = e
        done[i] = nxt
    running = NO_INT
    for i, d in enumerate(done):
        running = d if d > running else running
        done[i] = running
    best = 0
    answered = 0  # responses done before the current request (monotone: ``done`` is non-decreasing)
    for k, start in enumerate(starts, 1):
        while answered < k - 1 and done[answered] <= start:
            answered += 1
        outstanding = k - answered
        if outstanding > best:
            best = outstanding
    return best


def _each_once(items: list[tuple[Any, ...] | None]) -> Iterator[tuple[Any, ...]]:
    """The items in order, each let go from the list as it is given."""
    for i, item in enumerate(items):
        items[i] = None
        assert item is not None
        yield item


def _exchange_start(ex: Exchange) -> int:
    if ex.request is not None:
        return ex.request.ts_start_ns
    return ex.response.ts_start_ns if ex.response is not None else 0


def _ignore(msg: Message) -> None:
    return None
