"""Which protocol a TCP connection speaks, and the one handler that parses it.

``ConnectionHandler`` is the stream handler the pipeline gives every connection. It starts as HTTP/1
(``Http1Connection``, whose parsers are the one place that recognises a stream's first bytes) and switches
when the HTTP/1 layer reports another protocol (``Http1Connection.detected``):

- ``tls``: a TLS record (or an SSLv2-compatible ClientHello) at the start of either direction, on any
  port → ``analyzer.tls.connection.TlsConnection`` (given the key log, if any: decrypted application data
  goes to a new ``ConnectionHandler``, so HTTP/1 and HTTP/2 inside TLS are recognised the same way);
- ``h2c`` from the first byte: the client's HTTP/2 connection preface (prior knowledge), on any port →
  ``analyzer.http2.Http2Connection``;
- ``h2c`` after ``Upgrade: h2c`` answered by ``101`` → ``Http2Connection`` started at the offsets the two
  HTTP/1.1 messages give (stream 1 is the upgraded request);
- ``tunnel`` after a ``CONNECT`` answered by 2xx (a proxy) → ``TunnelConnection``: the HTTP/1 exchanges up
  to the CONNECT, then a new ``ConnectionHandler`` for the bytes after the two messages (usually TLS to
  the origin, decrypted with the key log like any other).

To switch, the bytes already fed must be fed again to the new handler. So while a switch is still possible
(``Http1Connection.may_switch``: nothing parsed yet, or an Upgrade request awaiting its response) the
chunks fed are kept, as compact copies that do not pin packet buffers, at most ``MAX_KEPT_BYTES`` per
connection once the other direction had its turn: the tracker feeds a round's client bytes before its
server bytes (``connections.ROUND_BYTES``), so a client that sends more than that right after its
``CONNECT`` or ``Upgrade`` (an upload through a proxy's tunnel) has it all kept until the round's response
is fed (about a round's bytes more: where the switch comes within one round, where rounds end does not
matter). Past that limit the switch still happens, from the bytes that follow, with the anomaly
``protocol_switch_partial``.
HTTP/1 transactions before an Upgrade on the same connection are not kept when it switches (clients
upgrade on their first request).

It knows handlers and stream chunks, never packets or TCP.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from analyzer.flows.stream import StreamChunk
from analyzer.http.packing import BlockStore
from analyzer.http.rows import TransactionRows
from analyzer.http.transactions import Http1Connection, SealedHttp1
from analyzer.http2 import H2cUpgrade, Http2Connection
from analyzer.tables import HTTP_TRANSACTION_COLUMNS
from analyzer.tls.connection import TlsConnection
from analyzer.tls.keylog import KeyLog

_REUSED = list(HTTP_TRANSACTION_COLUMNS).index("reused")
MAX_KEPT_BYTES = 1 << 20  # bytes of one connection kept for replay while its protocol may still change

Handler = Http1Connection | Http2Connection | TlsConnection


class ConnectionHandler:
    """Both directions of one connection: ``feed(direction, chunk)``; then ``transaction_rows`` and
    ``anomalies`` (or ``seal``), as ``Http1Connection``."""

    __slots__ = ("inner", "kept", "kept_bytes", "keylog", "last_fed", "over_ts", "overflow_ts", "store")

    def __init__(self, keylog: KeyLog | None = None, store: BlockStore | None = None) -> None:
        """``store``: where every handler of the connection puts its packed blocks (``analyzer.http.packing``;
        None: held)."""
        self.keylog = keylog
        self.store = store
        self.inner: Handler | TunnelConnection = Http1Connection(store=store)
        self.kept: list[tuple[int, StreamChunk]] = []
        self.kept_bytes = 0
        self.overflow_ts: int | None = None  # when kept bytes went over MAX_KEPT_BYTES (replay incomplete)
        self.over_ts: int | None = None  # when kept bytes went over MAX_KEPT_BYTES, before the other side's turn
        self.last_fed = 1  # the direction fed last: a client feed, or a second server feed, starts a new round

    def feed(self, direction: int, chunk: StreamChunk) -> None:
        inner = self.inner
        if not isinstance(inner, Http1Connection):
            inner.feed(direction, chunk)
            return
        new_round = direction == 0 or self.last_fed == 1
        self.last_fed = direction
        if new_round and self.kept_bytes > MAX_KEPT_BYTES:  # both sides had their turn and no switch came
            self.overflow_ts, self.kept, self.kept_bytes, self.over_ts = self.over_ts, [], 0, None
        could = inner.may_switch()
        inner.feed(direction, chunk)
        found = inner.detected()
        if found is not None:
            if could:
                self.kept.append((direction, chunk))
            self._switch(inner, found)
            return
        if inner.may_switch():
            self._keep(direction, chunk)
        elif self.kept or self.overflow_ts is not None:  # the window closed without a switch: start afresh
            self.kept = []
            self.kept_bytes = 0
            self.overflow_ts = self.over_ts = None

    def _keep(self, direction: int, chunk: StreamChunk) -> None:
        if self.overflow_ts is not None or not len(chunk):
            if chunk.final or chunk.eof >= 0:
                self.kept.append((direction, StreamChunk.empty(chunk.eof, chunk.final)))
            return
        size = chunk.nbytes
        if self.kept_bytes <= MAX_KEPT_BYTES < self.kept_bytes + size:
            self.over_ts = int(chunk.ts_ns[0])
        self.kept.append((direction, chunk.compact()))
        self.kept_bytes += size

    def _switch(self, http1: Http1Connection, found: str) -> None:
        new: Handler | TunnelConnection
        if found == "tls":
            new = TlsConnection(self.keylog, inner_factory=partial(ConnectionHandler, store=self.store),
                                store=self.store)
        elif found == "tunnel" and http1.tunnel is not None:
            new = TunnelConnection(http1, ConnectionHandler(self.keylog, self.store))
        elif http1.upgrade is not None:
            new = Http2Connection(upgrade=H2cUpgrade.from_http1(*http1.upgrade), store=self.store)
        else:
            new = Http2Connection(store=self.store)
        self.inner = new
        kept, self.kept, self.kept_bytes, self.over_ts = self.kept, [], 0, None
        for d, ch in kept:
            new.feed(d, ch)

    # ------------------------------------------------------------------------------------------ results
    def _own_anomalies(self) -> list[tuple[int, str, str]]:
        if self.overflow_ts is None or isinstance(self.inner, Http1Connection):
            return []
        return [(self.overflow_ts, "protocol_switch_partial",
                 f"the connection switched to {_name(self.inner)} after more than {MAX_KEPT_BYTES} bytes: "
                 "what came before the switch was not analyzed as it")]

    def anomalies(self) -> list[tuple[int, str, str]]:
        return self.inner.anomalies() + self._own_anomalies()

    def transaction_rows(self, server_ip: str, server_port: int) -> tuple[TransactionRows, dict[str, Any]]:
        return self.inner.transaction_rows(server_ip, server_port)

    def seal(self, server_ip: str, server_port: int) -> SealedHttp1:
        sealed = self.inner.seal(server_ip, server_port)
        sealed.http_anomalies = sealed.http_anomalies + self._own_anomalies()
        return sealed


def _name(handler: Handler | TunnelConnection) -> str:
    if isinstance(handler, TunnelConnection):
        return "a CONNECT tunnel"
    return "TLS" if isinstance(handler, TlsConnection) else "HTTP/2"


class TunnelConnection:
    """A proxy connection after a successful ``CONNECT``: the HTTP/1 exchanges up to it, then whatever the
    tunnel carries, analyzed by ``inner`` from the stream offsets where the two messages end (offsets stay
    those of the TCP stream, so the TCP analysis places the inner responses too).

    Rows: the HTTP/1 ones (the CONNECT last), then the inner ones, numbered on (``trans_depth``, ``reused``
    true: the proxy connection was used again). Facts: the inner protocol (``tls``, ``h2``...), its TLS
    columns; ``requests`` counts both, unknown when the inner count is."""

    def __init__(self, http1: Http1Connection, inner: ConnectionHandler) -> None:
        assert http1.tunnel is not None
        request, response = http1.tunnel
        self.http1 = http1
        self.inner = inner
        self.offsets = (request.end if request.end >= 0 else request.header_end,
                        response.header_end)

    def feed(self, direction: int, chunk: StreamChunk) -> None:
        if direction in (0, 1):
            self.inner.feed(direction, chunk.after(self.offsets[direction]))

    def anomalies(self) -> list[tuple[int, str, str]]:
        return self.http1.anomalies() + self.inner.anomalies()

    def seal(self, server_ip: str, server_port: int) -> SealedHttp1:
        for d in (0, 1):
            self.inner.feed(d, StreamChunk.empty(final=True))
        rows, facts = self.transaction_rows(server_ip, server_port)
        return SealedHttp1(rows, facts, self.anomalies())

    def transaction_rows(self, server_ip: str, server_port: int) -> tuple[TransactionRows, dict[str, Any]]:
        rows, outer_facts = self.http1.transaction_rows(server_ip, server_port)
        inner, facts = self.inner.transaction_rows(server_ip, server_port)
        n = len(rows)
        start, end = inner.spans()
        for r, s, e in zip(inner.drain(""), start.tolist(), end.tolist(), strict=True):
            rows.add((r[1] + n, *r[2:_REUSED], True, *r[_REUSED + 1:]), (s, e) if s >= 0 else None)
        merged = dict(facts)
        inner_requests = facts.get("requests")
        merged["requests"] = outer_facts["requests"] + inner_requests if inner_requests is not None else None
        ends = [e for e in (outer_facts.get("last_response_end_ns"), facts.get("last_response_end_ns"))
                if e is not None]
        merged["last_response_end_ns"] = max(ends) if ends else None
        merged["keep_alive_timeout_s"] = outer_facts.get("keep_alive_timeout_s")
        merged["keep_alive_max"] = outer_facts.get("keep_alive_max")
        if merged.get("protocol") in (None, "unknown"):
            merged["protocol"] = outer_facts["protocol"]
        return rows, merged
