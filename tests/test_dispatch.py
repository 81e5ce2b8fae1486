"""The protocol switch (analyzer/dispatch.py): every connection starts as HTTP/1 and becomes TLS or HTTP/2
when its bytes say so, whatever the chunking and the order in which the two directions are fed.

Conversations are built byte for byte (TLS records as in test_tls, HTTP/2 frames with hyperframe and
hpack); each is fed once whole, and again cut into random chunks with the directions interleaved at random:
the transaction rows and facts must not change, and must be those of the protocol's own handler.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from handler_rows import transaction_rows
from hyperframe.frame import SettingsFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_http2 import PREFACE, Side, client_side, req_fields, resp_fields, server_side
from test_tls import CONVERSATIONS, MS, cut, make_chunk, streams

from analyzer.dispatch import MAX_KEPT_BYTES, ConnectionHandler, TunnelConnection
from analyzer.flows.stream import StreamChunk
from analyzer.http.transactions import Http1Connection, SealedHttp1
from analyzer.http2 import Http2Connection
from analyzer.tables import HTTP_TRANSACTION_COLUMNS
from analyzer.tls.connection import TlsConnection

COL = {name: i for i, name in enumerate(HTTP_TRANSACTION_COLUMNS)}
NO_OWN = ("h2_upgrade", "connect_tunnel")  # handlers made from an HTTP/1 start, not from the first byte
Conversation = tuple[bytes, list[tuple[int, int, int]]]  # a direction's bytes and pieces (start, end, ts)


def _from_sides(client: Side, server: Side) -> tuple[Conversation, Conversation]:
    out = []
    for side in (client, server):
        data = bytes(side.data)
        pieces = [(a, a + len(b), ts) for a, b, ts in side.pieces()]
        out.append((data, pieces))
    return out[0], out[1]


def h2_prior() -> tuple[Conversation, Conversation]:
    c, s = client_side(), server_side()
    c.at(2 * MS).headers(1, req_fields("/a"), end_stream=True)
    s.at(3 * MS).headers(1, resp_fields(200)).data_frame(1, b"x" * 500, end_stream=True)
    c.at(4 * MS).headers(3, req_fields("/b"), end_stream=True)
    s.at(5 * MS).headers(3, resp_fields(404)).data_frame(3, b"", end_stream=True)
    return _from_sides(c, s)


def h2_upgrade(body: bytes = b"") -> tuple[Conversation, Conversation]:
    """curl --http2 over cleartext: an HTTP/1.1 Upgrade request, the client's preface right after the 101 (the
    capture may deliver it before the 101), then stream 1's response over HTTP/2 and a second stream."""
    method = b"POST" if body else b"GET"
    request = (method + b" /up HTTP/1.1\r\nHost: example.org\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
               + (b"Content-Length: %d\r\n" % len(body) if body else b"") + b"\r\n" + body)
    c = Side().at(1 * MS).send(request)
    c.at(2 * MS).send(PREFACE + SettingsFrame(0, settings={3: 100}).serialize())
    c.at(4 * MS).headers(3, req_fields("/second"), end_stream=True)
    s = Side().at(2 * MS).send(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
    s.send(SettingsFrame(0, settings={3: 128}).serialize())
    s.at(3 * MS).headers(1, resp_fields(200)).data_frame(1, b"y" * 300, end_stream=True)
    s.at(5 * MS).headers(3, resp_fields(200)).data_frame(3, b"z" * 10, end_stream=True)
    return _from_sides(c, s)


def http1_keepalive() -> tuple[Conversation, Conversation]:
    c, s = Side(), Side()
    for i in range(3):
        c.at((2 * i + 1) * MS).send(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
        s.at((2 * i + 2) * MS).send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    return _from_sides(c, s)


def connect_tunnel() -> tuple[Conversation, Conversation]:
    """A proxy: an HTTP/1.1 GET, then CONNECT answered by 200, then a TLS 1.2 handshake and exchanges."""
    (t0, p0), (t1, p1) = tls("tls12_full")
    c = Side().at(0).send(b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n")
    s = Side().at(0).send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    c.send(b"CONNECT b.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n")
    s.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
    (d0, q0), (d1, q1) = _from_sides(c, s)
    shift0, shift1 = len(d0), len(d1)
    return ((d0 + t0, q0 + [(a + shift0, e + shift0, ts) for a, e, ts in p0]),
            (d1 + t1, q1 + [(a + shift1, e + shift1, ts) for a, e, ts in p1]))


def tls(name: str) -> tuple[Conversation, Conversation]:
    (d0, p0), (d1, p1) = streams(CONVERSATIONS[name]())
    return (d0, p0), (d1, p1)


CASES: dict[str, Any] = {
    "tls12_full": lambda: tls("tls12_full"),
    "tls13_full": lambda: tls("tls13_full"),
    "tls13_zero_rtt": lambda: tls("tls13_zero_rtt"),
    "sslv2_then_tls10": lambda: tls("sslv2_then_tls10"),
    "tls_midstream_app_data": lambda: tls("app_stream"),
    "h2_prior": h2_prior,
    "h2_upgrade": h2_upgrade,
    "http1_keepalive": http1_keepalive,
    "connect_tunnel": connect_tunnel,
}
EXPECTED_HANDLER = {"h2_prior": Http2Connection, "h2_upgrade": Http2Connection, "http1_keepalive": Http1Connection,
                    "connect_tunnel": TunnelConnection}


def _pieces_cut(pieces: list[tuple[int, int, int]], points: list[int]) -> list[list[tuple[int, int, int]]]:
    return [c for c in cut(pieces, points) if c]


def feed(handler: Any, sides: tuple[Conversation, Conversation], cuts: tuple[list[int], list[int]] = ([], []),
         order: list[int] | None = None) -> Any:
    """Feed both directions chunk by chunk, in ``order`` (a list of directions; the rest alternately), each
    direction in stream order; then the final empty chunks."""
    queues = [_pieces_cut(sides[d][1], cuts[d]) for d in (0, 1)]
    for d in order or []:
        if queues[d]:
            handler.feed(d, make_chunk(sides[d][0], queues[d].pop(0)))
    while queues[0] or queues[1]:
        for d in (0, 1):
            if queues[d]:
                handler.feed(d, make_chunk(sides[d][0], queues[d].pop(0)))
    for d in (0, 1):
        handler.feed(d, make_chunk(sides[d][0], [], eof=len(sides[d][0]), final=True))
    return handler


def result(handler: Any) -> tuple[list[tuple[Any, ...]], dict[str, Any], list[str]]:
    rows, facts = transaction_rows(handler, "C", "10.0.0.1", 443)
    facts = {k: v for k, v in facts.items() if k != "response_spans"}
    return rows, facts, sorted(n for _, n, _ in handler.anomalies())


@pytest.mark.parametrize("name", list(CASES))
def test_switches_to_the_protocol_handler(name: str) -> None:
    sides = CASES[name]()
    h = feed(ConnectionHandler(), sides)
    assert isinstance(h.inner, EXPECTED_HANDLER.get(name, TlsConnection))
    assert h.kept == [] and h.kept_bytes == 0
    own = feed(EXPECTED_HANDLER.get(name, TlsConnection)(), sides) if name not in NO_OWN else None
    if own is not None:
        assert result(h) == result(own)


def test_h2c_upgrade_rows_whatever_the_direction_order() -> None:
    """The client's preface may be fed before the server's 101 (one capture chunk holds both): the 101 is
    still parsed and the connection still switches (it used to stay HTTP/1 with the 101 unparsed). The
    tracker feeds a chunk's client bytes before its server bytes, so the request is always fed first."""
    sides = h2_upgrade()
    for order in ([0, 0, 0], [0, 1], [0, 0, 1], [0, 1, 1]):
        h = feed(ConnectionHandler(), sides, order=order)
        rows, facts, anomalies = result(h)
        assert isinstance(h.inner, Http2Connection), order
        assert facts["protocol"] == "h2c" and facts["requests"] == 2
        got = [(r[COL["stream_id"]], r[COL["method"]], r[COL["target"]], r[COL["status"]], r[COL["http_version"]])
               for r in rows]
        assert got == [(1, "GET", "/up", 200, "HTTP/1.1"), (3, "GET", "/second", 200, "HTTP/2")]
        assert "protocol_switch_partial" not in anomalies


def test_plain_http1_keeps_nothing_after_its_first_message() -> None:
    (d0, p0), (d1, p1) = http1_keepalive()
    h = ConnectionHandler()
    h.feed(0, make_chunk(d0, p0[:1]))
    assert isinstance(h.inner, Http1Connection) and h.kept == []
    feed(h, ((d0, p0[1:]), (d1, p1)))
    _, facts, _ = result(h)
    assert facts["protocol"] == "http/1.1" and facts["requests"] == 3


def test_undecided_first_bytes_are_kept_then_replayed() -> None:
    """A 2-byte first chunk cannot tell TLS from anything else: it is kept and replayed to the TLS handler."""
    sides = tls("tls12_full")
    h = feed(ConnectionHandler(), sides, cuts=([2, 4], [1]))
    assert isinstance(h.inner, TlsConnection)
    assert result(h) == result(feed(TlsConnection(), sides))
    facts = h.inner.observer.facts()
    assert facts.sni == "example.com" and facts.version == "TLS 1.2"


def test_upgrade_beyond_the_kept_bytes_still_switches_with_an_anomaly() -> None:
    body = b"b" * (MAX_KEPT_BYTES + 10)
    sides = h2_upgrade(body)
    h = feed(ConnectionHandler(), sides, cuts=([100, 200], [30]), order=[0, 0, 0])
    assert isinstance(h.inner, Http2Connection)
    _, _, anomalies = result(h)
    assert "protocol_switch_partial" in anomalies
    # the same body, with the 101 fed before the body's end: the preface is found after the declared length
    h = feed(ConnectionHandler(), sides, cuts=([100, 200], [30]))
    rows, facts, anomalies = result(h)
    assert facts["requests"] == 2 and anomalies == []
    assert rows[0][COL["method"]] == "POST" and rows[0][COL["request_body_bytes"]] == len(body)


def test_seal_keeps_the_switch_anomalies_and_rows() -> None:
    sides = h2_prior()
    h = feed(ConnectionHandler(), sides)
    sealed = h.seal("10.0.0.1", 443)
    assert isinstance(sealed, SealedHttp1)
    rows, facts = transaction_rows(sealed, "C", "10.0.0.1", 443)
    assert facts["protocol"] == "h2c" and len(rows) == 2


def test_compact_chunk_owns_its_bytes() -> None:
    big = bytes(range(256)) * 40
    ch = make_chunk(big, [(0, 10, 1), (20, 30, 2), (1000, 1100, 3)], eof=-1)
    small = ch.compact()
    assert small.buffers[0].nbytes == 120 and small.nbytes == ch.nbytes == 120
    for off, n in ((0, 10), (20, 10), (1000, 100), (25, 3)):
        assert small.read(off, n) == ch.read(off, n)
    assert StreamChunk.empty().compact().nbytes == 0


def feed_like_the_tracker(handler: Any, sides: tuple[Conversation, Conversation],
                          byte_cuts: tuple[list[int], list[int]], chunk_cuts: list[int]) -> Any:
    """As ``ConnectionTracker`` feeds: the pieces of both directions in capture-time order, cut into capture
    chunks at ``chunk_cuts`` (indices into that order); within a chunk the client's pieces, then the
    server's."""
    pieces = [(ts, d, a, e) for d in (0, 1) for chunk in _pieces_cut(sides[d][1], byte_cuts[d])
              for a, e, ts in chunk]
    timeline = sorted(pieces, key=lambda p: (p[0], p[1], p[2]))
    bounds = sorted({0, len(timeline), *(c for c in chunk_cuts if 0 < c < len(timeline))})
    for lo, hi in itertools.pairwise(bounds):
        for d in (0, 1):
            mine = [(a, e, ts) for ts, dd, a, e in timeline[lo:hi] if dd == d]
            if mine:
                handler.feed(d, make_chunk(sides[d][0], mine))
    for d in (0, 1):
        handler.feed(d, make_chunk(sides[d][0], [], eof=len(sides[d][0]), final=True))
    return handler


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(list(CASES)), data=st.data())
def test_chunking_does_not_change_the_result(name: str, data: st.DataObject) -> None:
    sides = CASES[name]()
    whole = result(feed(ConnectionHandler(), sides))
    byte_cuts = tuple(sorted(data.draw(st.lists(st.integers(1, max(1, len(sides[d][0]) - 1)), max_size=8)))
                      for d in (0, 1))
    chunk_cuts = data.draw(st.lists(st.integers(1, 40), max_size=6))
    assert result(feed_like_the_tracker(ConnectionHandler(), sides, byte_cuts, chunk_cuts)) == whole


def test_h2_connection_columns_from_a_real_capture() -> None:
    """arkime's nghttp2 capture through the pipeline: h2c found on its own, the server push (tshark's oracle:
    1 pushed stream), the server's SETTINGS limit, and who sent GOAWAY and why."""
    from pathlib import Path

    import analyzer

    path = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "arkime" / "http2-nghttp2.pcap"
    if not path.exists():
        pytest.skip("corpus capture missing")
    row = analyzer.analyze(str(path)).connections.iloc[0]
    assert (row["protocol"], row["requests"], row["max_concurrent_streams"]) == ("h2c", 1, 2)
    assert (row["h2_pushed_streams"], row["h2_reset_streams"], row["h2_max_streams_setting"]) == (1, 0, 100)
    assert (row["h2_goaway_by"], row["h2_goaway_error"], row["h2_goaway_last_stream"]) == ("client", "NO_ERROR", 2)


def test_connect_tunnel_rows_then_tls_inside() -> None:
    h = feed(ConnectionHandler(), connect_tunnel())
    assert isinstance(h.inner, TunnelConnection)
    rows, facts, anomalies = result(h)
    got = [(r[COL["trans_depth"]], r[COL["method"]], r[COL["status"]], r[COL["reused"]], r[COL["estimated"]])
           for r in rows]
    assert got == [(1, "GET", 200, False, False), (2, "CONNECT", 200, True, False), (3, None, None, True, True),
                   (4, None, None, True, True)]  # two exchanges estimated from the TLS records
    assert facts["protocol"] == "http/1.1"  # TLS 1.2 with ALPN http/1.1 selected, inside the tunnel
    assert facts["tls"]["sni"] == "example.com" and facts["tls"]["tls_version"] == "TLS 1.2"
    assert facts["requests"] == 4 and anomalies == []


def test_a_closed_switch_window_does_not_spoil_a_later_switch() -> None:
    """An Upgrade: h2c request with a body over MAX_KEPT_BYTES, answered without switching (200), then a
    CONNECT tunnel: the tunnel is analyzed whole, with no protocol_switch_partial."""
    body = b"x" * (MAX_KEPT_BYTES + 100)
    c = Side().at(0).send(b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                          b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    s = Side().at(0).send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    (d0, q0), (d1, q1) = _from_sides(c, s)
    (t0, p0), (t1, p1) = connect_tunnel()
    sides = ((d0 + t0, q0 + [(a + len(d0), e + len(d0), ts) for a, e, ts in p0]),
             (d1 + t1, q1 + [(a + len(d1), e + len(d1), ts) for a, e, ts in p1]))
    h = feed(ConnectionHandler(), sides, cuts=([300, 400_000, len(d0)], [len(d1)]), order=[0, 0, 0, 1])
    rows, facts, anomalies = result(h)
    assert isinstance(h.inner, TunnelConnection) and "protocol_switch_partial" not in anomalies
    assert [r[COL["method"]] for r in rows] == ["POST", "GET", "CONNECT", None, None]
    assert facts["tls"]["sni"] == "example.com"


def h2_upgrade_then_upload(size: int) -> tuple[Conversation, Conversation]:
    """An Upgrade: h2c GET answered by 101, then, over HTTP/2, a POST of ``size`` bytes on stream 3 (DATA
    frames of 16 KiB) sent right after the preface."""
    c = Side().at(1 * MS).send(b"GET /up HTTP/1.1\r\nHost: example.org\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n")
    c.at(3 * MS).send(PREFACE + SettingsFrame(0, settings={3: 100}).serialize())
    c.headers(3, req_fields("/upload", "POST"))
    for start in range(0, size, 16384):
        c.data_frame(3, b"u" * min(16384, size - start), end_stream=start + 16384 >= size)
    s = Side().at(2 * MS).send(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
    s.send(SettingsFrame(0, settings={3: 128}).serialize())
    s.at(4 * MS).headers(1, resp_fields(200)).data_frame(1, b"y" * 300, end_stream=True)
    s.at(5 * MS).headers(3, resp_fields(201)).data_frame(3, b"", end_stream=True)
    return _from_sides(c, s)


def test_a_client_upload_right_after_the_switch_in_one_chunk_is_kept_whole() -> None:
    """A chunk feeds the client's bytes before the server's: the upload sent after the 101 is fed before it.
    More than ``MAX_KEPT_BYTES`` of it are kept until the server's side of the chunk is fed, so the
    connection switches whole, as when the 101 is fed first (before, the preface was dropped with the rest:
    ``protocol_switch_partial`` and no HTTP/2 rows). Past the server's turn the limit holds."""
    size = MAX_KEPT_BYTES + 200_000
    sides = h2_upgrade_then_upload(size)
    in_order = result(feed(ConnectionHandler(), sides))  # the 101 before the preface
    rows, facts, anomalies = in_order
    assert anomalies == [] and facts["protocol"] == "h2c" and facts["requests"] == 2
    assert [(r[COL["method"]], r[COL["status"]], r[COL["request_body_bytes"]]) for r in rows] == [
        ("GET", 200, 0), ("POST", 201, size)]
    for chunk_cuts in ([], [1], [2], [3]):  # every piece in one chunk, or the request alone first, ...
        h = feed_like_the_tracker(ConnectionHandler(), sides, ([], []), chunk_cuts)
        assert result(h) == in_order, chunk_cuts
    # the client's bytes fed in chunks of 100 kB before the server's first: past the limit, it holds
    cuts = list(range(100_000, len(sides[0][0]), 100_000))
    h = feed(ConnectionHandler(), sides, cuts=(cuts, []), order=[0] * (len(cuts) + 1))
    rows, facts, anomalies = result(h)
    assert "protocol_switch_partial" in anomalies and isinstance(h.inner, Http2Connection)
