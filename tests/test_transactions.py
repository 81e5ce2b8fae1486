"""Tests of request/response pairing and the reuse decision (``analyzer.http.transactions``).

``connection_persists`` is checked as a truth table (RFC 9112 §9.3 and DESIGN.md §2: close tokens on either
side, HTTP/1.0 keep-alive only when both sides say so, read-until-close and tunnels end the connection);
``pipelined_max``, ``pipelined``, ``idle_before_ms`` and ``reused`` are checked on exchanges whose times the
test sets (ns).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from handler_rows import transaction_rows

from analyzer.flows.stream import StreamChunk
from analyzer.http.http1 import REQUEST, RESPONSE, Message
from analyzer.http.packing import NO_INT, BlockStore
from analyzer.http.transactions import Http1Connection, connection_persists, pipelined_max
from analyzer.tables import HTTP_TRANSACTION_COLUMNS

CLIENT, SERVER = 0, 1
MS = 1_000_000  # ns
NAN = float("nan")


def _msg(kind: int, version: str, connection: str | None = None, framing: str = "length",
         proxy_connection: str | None = None) -> Message:
    headers = {}
    if connection is not None:
        headers["connection"] = connection
    if proxy_connection is not None:
        headers["proxy-connection"] = proxy_connection
    m = Message(kind, 0, 0, version=version, headers=headers)
    m.framing = framing
    if kind == RESPONSE:
        m.status = 200
    else:
        m.method = "GET"
    return m


# (request version, request Connection, response version, response Connection, response framing) -> persists
PERSISTS_TABLE = [
    # HTTP/1.1: persistent by default, unless a close token on either side
    ("HTTP/1.1", None, "HTTP/1.1", None, "length", True),
    ("HTTP/1.1", None, "HTTP/1.1", None, "chunked", True),
    ("HTTP/1.1", None, "HTTP/1.1", None, "none", True),
    ("HTTP/1.1", "keep-alive", "HTTP/1.1", "keep-alive", "length", True),
    ("HTTP/1.1", "close", "HTTP/1.1", None, "length", False),
    ("HTTP/1.1", None, "HTTP/1.1", "close", "length", False),
    ("HTTP/1.1", "Close", "HTTP/1.1", None, "length", False),
    ("HTTP/1.1", None, "HTTP/1.1", "CLOSE", "length", False),
    ("HTTP/1.1", "keep-alive, close", "HTTP/1.1", None, "length", False),
    ("HTTP/1.1", "TE, close", "HTTP/1.1", "keep-alive", "length", False),
    ("HTTP/1.1", " close ", "HTTP/1.1", None, "length", False),
    ("HTTP/1.1", "closed", "HTTP/1.1", None, "length", True),  # a token, not a substring
    ("HTTP/1.1", "upgrade", "HTTP/1.1", None, "length", True),
    # read-until-close framing and switches to another protocol end HTTP on the connection
    ("HTTP/1.1", None, "HTTP/1.1", None, "close", False),
    ("HTTP/1.1", None, "HTTP/1.1", "keep-alive", "close", False),
    ("HTTP/1.1", "upgrade", "HTTP/1.1", "upgrade", "tunnel", False),
    # an HTTP/1.0 response to an HTTP/1.1 request: persistent only with keep-alive
    ("HTTP/1.1", None, "HTTP/1.0", None, "length", False),
    ("HTTP/1.1", None, "HTTP/1.0", "keep-alive", "length", True),
    ("HTTP/1.1", None, "HTTP/1.0", "Keep-Alive", "length", True),
    ("HTTP/1.1", "close", "HTTP/1.0", "keep-alive", "length", False),
    # HTTP/1.0 requests: the client asks for keep-alive and the server agrees (whatever its version)
    ("HTTP/1.0", None, "HTTP/1.0", None, "length", False),
    ("HTTP/1.0", None, "HTTP/1.1", None, "length", False),
    ("HTTP/1.0", None, "HTTP/1.0", "keep-alive", "length", False),
    ("HTTP/1.0", None, "HTTP/1.1", "keep-alive", "length", False),
    ("HTTP/1.0", "keep-alive", "HTTP/1.0", None, "length", False),
    ("HTTP/1.0", "keep-alive", "HTTP/1.1", None, "length", False),
    ("HTTP/1.0", "keep-alive", "HTTP/1.0", "keep-alive", "length", True),
    ("HTTP/1.0", "Keep-Alive", "HTTP/1.1", "keep-alive", "length", True),
    ("HTTP/1.0", "keep-alive", "HTTP/1.0", "close", "length", False),
    ("HTTP/1.0", "keep-alive", "HTTP/1.0", "keep-alive, close", "length", False),
    ("HTTP/1.0", "keep-alive", "HTTP/1.0", "keep-alive", "close", False),
    ("HTTP/0.9", None, "HTTP/0.9", None, "close", False),
]


@pytest.mark.parametrize(("req_v", "req_c", "resp_v", "resp_c", "framing", "want"), PERSISTS_TABLE)
def test_connection_persists_truth_table(req_v: str, req_c: str | None, resp_v: str, resp_c: str | None,
                                         framing: str, want: bool) -> None:
    req = _msg(REQUEST, req_v, req_c)
    resp = _msg(RESPONSE, resp_v, resp_c, framing)
    assert connection_persists(req, resp) is want


def test_connection_persists_unknown_without_a_response() -> None:
    assert connection_persists(_msg(REQUEST, "HTTP/1.1"), None) is None
    assert connection_persists(None, None) is None


def test_connection_persists_orphan_response_uses_its_own_version() -> None:
    assert connection_persists(None, _msg(RESPONSE, "HTTP/1.1")) is True
    assert connection_persists(None, _msg(RESPONSE, "HTTP/1.1", "close")) is False
    assert connection_persists(None, _msg(RESPONSE, "HTTP/1.0")) is False


@pytest.mark.parametrize(("proxy_connection", "want"), [("keep-alive", True), ("close", False)])
def test_proxy_connection_header_counts(proxy_connection: str, want: bool) -> None:
    req = _msg(REQUEST, "HTTP/1.0", None, proxy_connection=proxy_connection)
    resp = _msg(RESPONSE, "HTTP/1.0", "keep-alive")
    assert connection_persists(req, resp) is want


# ------------------------------------------------------------ the same decisions through the parser

PARSED_CASES = [
    # request bytes, response bytes (answer to it), server closes after?, keep_alive
    (b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", False, True),
    (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", True, False),
    (b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", True, False),
    (b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\nuntil the close", True, False),
    (b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", True, False),
    (b"GET / HTTP/1.0\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", True, False),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
     b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", False, True),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
     b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", True, False),
    (b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False, True),
    (b"HEAD / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", False, True),
    (b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 304 Not Modified\r\n\r\n", False, True),
    (b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
     b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", False, False),
    (b"CONNECT a:443 HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 Connection established\r\n\r\n", False, False),
    (b"GET /old\r\n", b"<html>0.9</html>", True, False),
]


@pytest.mark.parametrize(("request_bytes", "response_bytes", "server_fin", "want"), PARSED_CASES)
def test_keep_alive_column_from_parsed_messages(request_bytes: bytes, response_bytes: bytes, server_fin: bool,
                                                want: bool) -> None:
    conn = Http1Connection()
    conn.feed(CLIENT, StreamChunk.from_bytes(request_bytes, 1 * MS, 0, False))
    conn.feed(SERVER, StreamChunk.from_bytes(response_bytes, 2 * MS, 0, False))
    if server_fin:
        conn.feed(SERVER, StreamChunk.empty(eof=len(response_bytes)))
    rows, _ = _rows(conn)
    assert [r["keep_alive"] for r in rows] == [want]


# ----------------------------------------------------------------------------------- pipelined_max


def _pm(starts: list[float], ends: list[float]) -> int:
    """``pipelined_max`` of times in ns given as floats (NaN: none)."""
    def ns(values: list[float]) -> list[int]:
        return [int(v) if v == v else NO_INT for v in values]
    return pipelined_max(ns(starts), ns(ends))


@pytest.mark.parametrize(("starts", "ends", "want"), [
    ([], [], 0),
    ([0], [10], 1),
    ([0], [NAN], 1),
    ([0, 20, 40], [10, 30, 50], 1),  # sequential
    ([0, 10, 20], [10, 20, 30], 1),  # each request exactly when the previous response ended
    ([0, 1, 2], [10, 20, 30], 3),  # three pipelined
    ([0, 1, 2, 50, 51], [10, 20, 30, 60, 70], 3),  # a burst of three, later a burst of two
    ([0, 1, 50, 51, 52, 53], [10, 20, 60, 70, 80, 90], 4),
    ([0, 15, 25], [20, 30, 40], 2),  # overlapping pairs: never three at once
    ([0, 1, 2], [10, NAN, 30], 3),  # missing middle response: FIFO, it ended by the time the third did
    ([0, 1], [10, NAN], 2),  # the last response is missing: still outstanding
    ([0, 20, 40], [10, NAN, 50], 2),  # missing response counts as ending with the next known one (FIFO)
    ([0, 1, 50], [40, 30, 60], 2),  # responses end in order: response 2 cannot end before response 1
    ([NAN, 0, 20], [5, 10, 30], 1),  # orphan responses (no request) are ignored
    ([NAN, NAN], [5, 10], 0),
])
def test_pipelined_max(starts: list[float], ends: list[float], want: int) -> None:
    assert _pm(starts, ends) == want


# --------------------------------------------------------- rows: idle_before_ms, pipelined, reused


def _rows(conn: Http1Connection) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    for d in (CLIENT, SERVER):
        conn.feed(d, StreamChunk.empty(final=True))
    rows, facts = transaction_rows(conn, "Ct", "192.0.2.1", 80)
    return [r if isinstance(r, dict) else dict(zip(HTTP_TRANSACTION_COLUMNS, r, strict=True)) for r in rows], facts


class Timeline:
    """Sends messages at chosen times (ns), tracking offsets per direction."""

    def __init__(self, store: BlockStore | None = None) -> None:
        self.conn = Http1Connection(store=store)
        self.off = [0, 0]

    def at(self, t_ns: int, d: int, data: bytes) -> Timeline:
        self.conn.feed(d, StreamChunk.from_bytes(data, t_ns, self.off[d], False))
        self.off[d] += len(data)
        return self


def _get(path: str, extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: h\r\n" + extra + b"\r\n"


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"
OK_HEAD, OK_BODY = OK[:-4], OK[-4:]


def test_sequential_requests_idle_gaps() -> None:
    t = Timeline()
    t.at(100 * MS, CLIENT, _get("/1")).at(110 * MS, SERVER, OK_HEAD).at(120 * MS, SERVER, OK_BODY)
    t.at(370 * MS, CLIENT, _get("/2")).at(380 * MS, SERVER, OK)
    t.at(1_380 * MS, CLIENT, _get("/3")).at(1_390 * MS, SERVER, OK)
    rows, facts = _rows(t.conn)
    assert [r["idle_before_ms"] for r in rows] == [None, pytest.approx(250.0), pytest.approx(1000.0)]
    assert [r["pipelined"] for r in rows] == [False, False, False]
    assert [r["reused"] for r in rows] == [False, True, True]
    assert [r["trans_depth"] for r in rows] == [1, 2, 3]
    assert rows[0]["ts_response_start"] == pytest.approx(0.110)
    assert rows[0]["ts_response_end"] == pytest.approx(0.120)
    assert facts["pipelined_max"] == 1
    assert facts["idle_max_ms"] == pytest.approx(1000.0)
    assert facts["requests"] == 3


def test_request_exactly_at_the_previous_response_end_is_not_pipelined() -> None:
    t = Timeline()
    t.at(1 * MS, CLIENT, _get("/1")).at(2 * MS, SERVER, OK).at(2 * MS, CLIENT, _get("/2")).at(3 * MS, SERVER, OK)
    rows, facts = _rows(t.conn)
    assert rows[1]["pipelined"] is False
    assert rows[1]["idle_before_ms"] == pytest.approx(0.0)
    assert facts["pipelined_max"] == 1


def test_three_pipelined_requests() -> None:
    t = Timeline()
    t.at(0, CLIENT, _get("/1") + _get("/2"))  # two in one segment
    t.at(1 * MS, CLIENT, _get("/3"))
    t.at(10 * MS, SERVER, OK).at(20 * MS, SERVER, OK).at(30 * MS, SERVER, OK)
    rows, facts = _rows(t.conn)
    assert [r["target"] for r in rows] == ["/1", "/2", "/3"]
    assert [r["pipelined"] for r in rows] == [False, True, True]
    assert [r["reused"] for r in rows] == [False, True, True]
    # negative: the request was sent before the previous response ended (README glossary)
    assert [r["idle_before_ms"] for r in rows] == [None, pytest.approx(-10.0), pytest.approx(-19.0)]
    assert facts["pipelined_max"] == 3
    assert facts["idle_max_ms"] is None  # no idle gap at all


def test_pipelined_then_sequential() -> None:
    t = Timeline()
    t.at(0, CLIENT, _get("/1") + _get("/2")).at(10 * MS, SERVER, OK).at(20 * MS, SERVER, OK)
    t.at(70 * MS, CLIENT, _get("/3")).at(80 * MS, SERVER, OK)
    rows, facts = _rows(t.conn)
    assert [r["pipelined"] for r in rows] == [False, True, False]
    assert rows[2]["idle_before_ms"] == pytest.approx(50.0)
    assert facts["pipelined_max"] == 2
    assert facts["idle_max_ms"] == pytest.approx(50.0)


def test_missing_response_fifo_pairing() -> None:
    """Three pipelined requests, the capture has only two responses: FIFO pairs them with the first two."""
    t = Timeline()
    t.at(0, CLIENT, _get("/1") + _get("/2") + _get("/3"))
    t.at(10 * MS, SERVER, OK).at(20 * MS, SERVER, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    rows, facts = _rows(t.conn)
    assert [r["status"] for r in rows] == [200, 404, None]
    assert [r["keep_alive"] for r in rows] == [True, True, None]
    assert facts["pipelined_max"] == 3
    assert facts["requests"] == 3


def test_previous_response_missing_leaves_idle_and_pipelined_unknown() -> None:
    t = Timeline()
    t.at(0, CLIENT, _get("/1"))
    t.at(50 * MS, CLIENT, _get("/2")).at(60 * MS, SERVER, OK)  # the only response: FIFO gives it to /1
    t.at(100 * MS, CLIENT, _get("/3"))
    rows, _ = _rows(t.conn)
    assert [r["status"] for r in rows] == [200, None, None]
    assert rows[1]["pipelined"] is True and rows[1]["idle_before_ms"] == pytest.approx(-10.0)
    assert rows[2]["pipelined"] is None and rows[2]["idle_before_ms"] is None  # response 2 never seen


def test_interim_responses_do_not_pair() -> None:
    t = Timeline()
    t.at(0, CLIENT, b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    t.at(1 * MS, SERVER, b"HTTP/1.1 100 Continue\r\n\r\n").at(2 * MS, CLIENT, b"ok")
    t.at(3 * MS, SERVER, OK).at(9 * MS, CLIENT, _get("/next")).at(10 * MS, SERVER, OK)
    rows, facts = _rows(t.conn)
    assert [r["status"] for r in rows] == [200, 200]
    assert [r["interim_responses"] for r in rows] == [1, 0]
    assert rows[0]["ts_request_end"] == pytest.approx(0.002)
    assert rows[1]["idle_before_ms"] == pytest.approx(6.0)
    assert facts["pipelined_max"] == 1


def test_orphan_response_does_not_count_as_a_request() -> None:
    t = Timeline()
    t.at(0, SERVER, OK)  # e.g. the capture started after the request
    t.at(10 * MS, CLIENT, _get("/1")).at(20 * MS, SERVER, OK)
    rows, facts = _rows(t.conn)
    assert [r["method"] for r in rows] == [None, "GET"]
    assert facts["requests"] == 1
    assert facts["pipelined_max"] == 1
    assert rows[1]["idle_before_ms"] == pytest.approx(10.0)
    assert "response_before_request" in [n for _, n, _ in t.conn.anomalies()]


def test_keep_alive_header_values_are_recorded() -> None:
    t = Timeline()
    t.at(0, CLIENT, _get("/1"))
    t.at(1 * MS, SERVER, b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=100\r\nContent-Length: 0\r\n\r\n")
    _, facts = _rows(t.conn)
    assert facts["keep_alive_timeout_s"] == 5.0
    assert facts["keep_alive_max"] == 100


def test_no_traffic() -> None:
    rows, facts = _rows(Http1Connection())
    assert rows == []
    assert facts["requests"] == 0 and facts["pipelined_max"] == 0 and facts["protocol"] == "unknown"


def test_a_used_connection_is_freed_without_the_cycle_collector() -> None:
    """No reference cycle between a connection and its parsers: once dropped it is freed by reference
    counting (the command line makes full collector passes rare, so a cycle would hold it much longer)."""
    import gc
    import weakref

    t = Timeline()
    t.at(100 * MS, CLIENT, _get("/1")).at(110 * MS, SERVER, OK)
    t.at(200 * MS, CLIENT, b"GET /old\r\n")  # an HTTP/0.9 request: the response parser asks the connection
    _rows(t.conn)
    gone = weakref.ref(t.conn)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        del t.conn
        assert gone() is None
    finally:
        if was_enabled:
            gc.enable()


# ------------------------------------------------------------------------ packing and the pending limit
def _mixed_timeline() -> Timeline:
    """A long connection with every kind of exchange: plain, with headers the rows read, 100-continue,
    a response split over two feeds, a pipelined burst, an orphan response, HTTP/1.0 keep-alive, and
    requests still waiting at the end."""
    t = Timeline()
    ms = 0
    for i in range(40):
        ms += 10
        if i % 10 == 3:  # pipelined burst of three, answered together
            t.at(ms * MS, CLIENT, _get(f"/p{i}a") + _get(f"/p{i}b") + _get(f"/p{i}c"))
            t.at((ms + 1) * MS, SERVER, OK + OK + OK)
        elif i % 10 == 5:  # 100-continue, then a body and the final response in two feeds
            t.at(ms * MS, CLIENT, b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
            t.at((ms + 1) * MS, SERVER, b"HTTP/1.1 100 Continue\r\n\r\n")
            t.at((ms + 2) * MS, CLIENT, b"abc")
            t.at((ms + 3) * MS, SERVER, OK_HEAD)
            t.at((ms + 4) * MS, SERVER, OK_BODY)
        elif i % 10 == 7:  # an orphan response, then an HTTP/1.0 exchange, kept alive or not (the server says)
            t.at(ms * MS, SERVER, b"HTTP/1.1 204 No Content\r\n\r\n")
            t.at((ms + 1) * MS, CLIENT, b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            agreed = b"Connection: keep-alive\r\n" if i < 20 else b""
            t.at((ms + 2) * MS, SERVER, b"HTTP/1.0 200 OK\r\n" + agreed + b"Content-Length: 0\r\n\r\n")
        elif i % 10 == 9:  # a request fed before an orphan response sent earlier (as a chunk feeds them)
            t.at((ms + 1) * MS, CLIENT, _get(f"/{i}"))
            t.at(ms * MS, SERVER, b"HTTP/1.1 204 No Content\r\n\r\n")
            t.at((ms + 2) * MS, SERVER, OK)
        else:
            t.at(ms * MS, CLIENT, _get(f"/{i}", b"User-Agent: ua/" + str(i % 3).encode() + b"\r\n"))
            t.at((ms + 1) * MS, SERVER, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
    t.at((ms + 10) * MS, CLIENT, _get("/never") + _get("/answered"))
    return t


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Rows equal, NaN equal to NaN."""
    def norm(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [tuple("nan" if isinstance(v, float) and v != v else v for v in r.values()) for r in rows]
    return norm(a) == norm(b)


@pytest.mark.parametrize("block,decoded", [(3, 4), (2, 1), (1024, 4)])
def test_packed_exchanges_give_the_rows_of_the_messages(monkeypatch: pytest.MonkeyPatch, block: int,
                                                        decoded: int) -> None:
    """Finished exchanges packed after every exchange (``PACK_EVERY = 1``) into blocks of ``block``, and
    read back with ``decoded`` blocks kept decoded (the orphan responses are read back out of packing
    order), give the same rows, facts and anomalies as exchanges kept as parsed messages to the end."""
    import analyzer.http.transactions as transactions

    kept = _mixed_timeline()
    rows, facts = _rows(kept.conn)
    # bursts of 3, two kinds of orphans, the last two requests
    assert kept.conn.exchanges_seen == len(rows) == 40 + 2 * 4 + 4 + 4 + 2
    before = rows[[r["target"] for r in rows].index("/9") - 1]  # made after it, sent before it
    assert (before["status"], before["method"]) == (204, None)
    monkeypatch.setattr(transactions, "PACK_EVERY", 1)
    monkeypatch.setattr(transactions, "PACK_BLOCK", block)
    monkeypatch.setattr(transactions, "_DECODED_BLOCKS", decoded)
    t = _mixed_timeline()
    packed = t.conn.packed
    assert packed is not None and len(packed) >= len(rows) - 5  # all but those still open
    assert len(t.conn.exchanges) <= 3  # the requests still waiting, and the last one made
    packed_rows, packed_facts = _rows(t.conn)
    assert _same(packed_rows, rows)
    assert {k: v for k, v in packed_facts.items()} == facts
    assert t.conn.anomalies() == kept.conn.anomalies()
    assert {r["status"] for r in rows} == {200, 204, None} and any(r["interim_responses"] for r in rows)
    assert {r["keep_alive"] for r in rows} == {True, False, None}
    assert _rows(t.conn)[0] == []  # consumed


def test_a_long_keep_alive_connection_holds_its_exchanges_packed() -> None:
    """20,000 exchanges with browser-like headers: at most ``2 * PACK_EVERY`` held as parsed messages at any
    time, the rest packed at under 0.2 KB each (0.15 KB: the values every exchange repeats kept once per
    block; 0.25 KB with every column whole; parsed messages hold 1.2 KB an exchange)."""
    import tracemalloc

    from analyzer.http.transactions import PACK_EVERY

    headers = b"".join(b"X-Header-%d: %s\r\n" % (k, b"v" * 40) for k in range(10))
    t = Timeline()
    n = 20_000
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            t.at(i * MS, CLIENT, _get(f"/{i}", b"User-Agent: test\r\n" + headers))
            t.at(i * MS + MS // 2, SERVER, OK)
            assert len(t.conn.exchanges) <= 2 * PACK_EVERY
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert held / n < 200, f"{held / n:.0f} B per exchange"
    rows, facts = _rows(t.conn)
    assert len(rows) == facts["requests"] == t.conn.exchanges_seen == n
    assert [r["target"] for r in rows[:2]] == ["/0", "/1"] and rows[-1]["trans_depth"] == n


def test_a_long_connection_s_rows_are_packed_as_they_are_made() -> None:
    """The rows of 20,000 exchanges (``TransactionRows``): packed by blocks of ``ROW_BLOCK``, they hold under
    130 B a row (107: the distinct targets, and times and sizes in numpy columns; tuples held 450), and
    making them from the packed exchanges needs under 260 B a row at the peak (285 with the lists
    ``pipelined_max`` read). ``tests/test_chunking.py`` checks that packed rows read back as they were."""
    import tracemalloc

    from analyzer.http.rows import ROW_BLOCK

    headers = b"".join(b"X-Header-%d: %s\r\n" % (k, b"v" * 40) for k in range(10))
    t = Timeline()
    n = 20_000
    for i in range(n):
        t.at(i * MS, CLIENT, _get(f"/{i}", b"User-Agent: test\r\n" + headers))
        t.at(i * MS + MS // 2, SERVER, OK)
    for d in (CLIENT, SERVER):
        t.conn.feed(d, StreamChunk.empty(final=True))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        rows, facts = t.conn.transaction_rows("192.0.2.1", 80)
        with_rows, peak = tracemalloc.get_traced_memory()
        count = len(rows)
        del rows
        rows_bytes = with_rows - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert count == facts["requests"] == n
    assert n > 4 * ROW_BLOCK
    print(f"{rows_bytes / n:.0f} B per row held, {(peak - base) / n:.0f} at the peak")
    assert rows_bytes / n < 130, f"{rows_bytes / n:.0f} B per row"
    assert (peak - base) / n < 260, f"{(peak - base) / n:.0f} B per row at the peak"


def test_a_long_connection_with_a_block_store_holds_what_does_not_grow_with_it(tmp_path: Path) -> None:
    """With a block store (``analyzer export``: ``spill.BlockFile``), an open connection's second 16,384
    exchanges add under 8 B each to what it holds (4 measured: a reference per block, and how full the
    newest block is; without a store 0.15 KB each):
    it holds its newest exchanges, not all of them. Its rows, made when it ends, hold their spans and
    response times (24 B each) and at most a block of rows as tuples, not 0.1 KB each; they are the rows
    of the same connection without a store."""
    import tracemalloc

    from analyzer.http.rows import ROW_BLOCK
    from analyzer.spill import BlockFile

    headers = b"".join(b"X-Header-%d: %s\r\n" % (k, b"v" * 40) for k in range(10))
    n = 16_384

    def talk(t: Timeline, first: int, end: bool) -> Timeline:
        for i in range(first, first + n):
            t.at(i * MS, CLIENT, _get(f"/{i}", b"User-Agent: test\r\n" + headers))
            t.at(i * MS + MS // 2, SERVER, OK)
        for d in (CLIENT, SERVER) if end else ():
            t.conn.feed(d, StreamChunk.empty(final=True))
        return t

    want, want_facts = talk(talk(Timeline(), 0, False), n, True).conn.transaction_rows("192.0.2.1", 80)
    store = BlockFile(tmp_path / "blocks.bin")
    t = Timeline(store)
    tracemalloc.start()
    try:
        talk(t, 0, False)
        half = tracemalloc.get_traced_memory()[0]
        talk(t, n, True)
        whole = tracemalloc.get_traced_memory()[0]
        got, facts = t.conn.transaction_rows("192.0.2.1", 80)
        assert facts == want_facts
        assert got.rows("C") == want.rows("C")
        with_rows = tracemalloc.get_traced_memory()[0]
        del got
        rows_bytes = with_rows - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    print(f"{(whole - half) / n:.1f} B per exchange added, {rows_bytes / (2 * n):.1f} B per row")
    assert store.blocks_put >= 2 * n // 1024 + 2 * n // ROW_BLOCK
    assert (whole - half) / n < 8, f"{(whole - half) / n:.1f} B per exchange added"
    # the spans, the newest rows as tuples and the block read last by ``rows``
    assert rows_bytes < 24 * 2 * n + 2 * 400 * ROW_BLOCK, f"{rows_bytes / (2 * n):.1f} B per row"


def test_requests_of_one_chunk_wait_for_its_responses_whatever_their_number(monkeypatch: pytest.MonkeyPatch
                                                                             ) -> None:
    """A chunk feeds all its requests before any of its responses: more than ``MAX_PENDING_REQUESTS`` in
    one chunk, all answered in the same chunk, is no flood (it was: the rest became orphan responses)."""
    import analyzer.http.transactions as transactions

    monkeypatch.setattr(transactions, "MAX_PENDING_REQUESTS", 50)
    t = Timeline()
    t.at(0, CLIENT, b"".join(_get(f"/{i}") for i in range(200)))
    t.at(MS, SERVER, OK * 200)
    rows, _ = _rows(t.conn)
    assert len(rows) == 200 and all(r["status"] == 200 for r in rows)
    assert [r["target"] for r in rows] == [f"/{i}" for i in range(200)]
    assert t.conn.anomalies() == []


def test_requests_still_waiting_after_a_chunk_beyond_the_limit_are_a_flood(monkeypatch: pytest.MonkeyPatch
                                                                          ) -> None:
    """Still waiting once the responses of their chunk were fed: the newest beyond the limit are no longer
    waited for (one ``excessive_pipelining``, at the first of them); the oldest get the responses."""
    import analyzer.http.transactions as transactions

    monkeypatch.setattr(transactions, "MAX_PENDING_REQUESTS", 50)
    t = Timeline()
    t.at(0, CLIENT, b"".join(_get(f"/{i}") for i in range(80)))  # chunk 1: no response
    t.at(10 * MS, CLIENT, _get("/late"))  # chunk 2
    t.at(20 * MS, SERVER, OK * 51)
    rows, _ = _rows(t.conn)
    anomalies = t.conn.anomalies()
    assert [(name, ts) for ts, name, _ in anomalies] == [("excessive_pipelining", 0)]
    assert "50" in anomalies[0][2]
    answered = [r["target"] for r in rows if r["status"] == 200]
    assert answered == [*(f"/{i}" for i in range(50)), "/late"]
    assert len(rows) == 81


def test_the_live_dashboard_counts_packed_exchanges(monkeypatch: pytest.MonkeyPatch) -> None:
    """The live view's requests of an open connection count the packed exchanges too."""
    import analyzer.http.transactions as transactions
    from analyzer.report.live_dashboard import requests_so_far

    monkeypatch.setattr(transactions, "PACK_EVERY", 2)
    t = Timeline()
    for i in range(7):
        t.at(i * MS, CLIENT, _get(f"/{i}")).at(i * MS + MS // 2, SERVER, OK)
    assert t.conn.packed is not None and len(t.conn.packed) >= 5
    assert requests_so_far(t.conn) == 7
