"""Unit tests of the HTTP/1.x parser (``analyzer.http.http1``) on hand-written streams.

Streams are fed through ``Http1Connection`` (both directions, pairing included) or a bare ``Http1Parser``,
one ``StreamChunk`` per ``send``; offsets are tracked per direction so that a gap is simply a skipped
range of stream offsets. Times are integers (ns) chosen by the test.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from handler_rows import transaction_rows
from hypothesis import given
from hypothesis import strategies as st

from analyzer.flows.stream import StreamChunk
from analyzer.http.http1 import REQUEST, RESPONSE, Http1Parser, Message, header_end, keep_alive_params
from analyzer.http.transactions import Http1Connection
from analyzer.tables import HTTP_TRANSACTION_COLUMNS

CLIENT, SERVER = 0, 1


class Feed:
    """Feeds both directions of one ``Http1Connection``, tracking stream offsets per direction."""

    def __init__(self) -> None:
        self.conn = Http1Connection()
        self.off = [0, 0]
        self.t = 0

    def send(self, d: int, data: bytes, ts: int | None = None, gap: int = 0) -> Feed:
        self.t = self.t + 1_000 if ts is None else ts
        self.off[d] += gap
        self.conn.feed(d, StreamChunk.from_bytes(data, self.t, self.off[d], final=False))
        self.off[d] += len(data)
        return self

    def req(self, data: bytes, **kw: Any) -> Feed:
        return self.send(CLIENT, data, **kw)

    def resp(self, data: bytes, **kw: Any) -> Feed:
        return self.send(SERVER, data, **kw)

    def fin(self, d: int) -> Feed:
        """The sender of direction ``d`` closed (FIN) right after what it sent."""
        self.conn.feed(d, StreamChunk.empty(eof=self.off[d]))
        return self

    def end(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        for d in (CLIENT, SERVER):
            self.conn.feed(d, StreamChunk.empty(final=True))
        return rows_of(self.conn)

    @property
    def anomaly_names(self) -> list[str]:
        return [name for _, name, _ in self.conn.anomalies()]


def rows_of(conn: Http1Connection) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows, facts = transaction_rows(conn, "Ctest", "192.0.2.1", 80)
    return [r if isinstance(r, dict) else dict(zip(HTTP_TRANSACTION_COLUMNS, r, strict=True)) for r in rows], facts


def col(rows: list[dict[str, Any]], name: str) -> list[Any]:
    return [r[name] for r in rows]


GARBAGE = {"unparsable_start_line", "malformed_request_line", "truncated_message", "oversized_header",
           "bad_chunk_size", "response_before_request"}

# ---------------------------------------------------------------------------------- Content-Length


def test_content_length_bodies_both_directions() -> None:
    body = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nxyz"  # looks like a message, but it is a body
    f = Feed()
    f.req(b"POST /upload HTTP/1.1\r\nHost: a.example\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    f.resp(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello")
    f.req(b"GET /next HTTP/1.1\r\nHost: a.example\r\n\r\n")
    f.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    rows, facts = f.end()
    assert col(rows, "method") == ["POST", "GET"]
    assert col(rows, "target") == ["/upload", "/next"]
    assert col(rows, "host") == ["a.example", "a.example"]
    assert col(rows, "status") == [201, 200]
    assert col(rows, "request_body_bytes") == [len(body), 0]
    assert col(rows, "response_body_bytes") == [5, 0]
    assert col(rows, "request_complete") == [True, True]
    assert col(rows, "response_complete") == [True, True]
    assert col(rows, "keep_alive") == [True, True]
    assert facts["requests"] == 2 and facts["protocol"] == "http/1.1"
    assert f.anomaly_names == []


def test_content_length_body_split_across_many_chunks() -> None:
    f = Feed().req(b"GET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
    f.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01")
    for piece in (b"234", b"5", b"6789HTTP/1.1 204 No Content\r\n\r\n"):
        f.resp(piece)
    rows, _ = f.end()
    assert col(rows, "status") == [200, 204]
    assert col(rows, "response_body_bytes") == [10, 0]
    assert f.anomaly_names == []


def test_repeated_identical_content_length_is_accepted() -> None:
    f = Feed().req(b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabcGET /x HTTP/1.1\r\n\r\n")
    rows, _ = f.end()
    assert col(rows, "target") == ["/", "/x"]
    assert col(rows, "request_body_bytes") == [3, 0]
    assert f.anomaly_names == []


@pytest.mark.parametrize("value", [b"abc", b"-1", b"3, 4", b"99999999999999999999", b"0x10", b"",
                                   b"\xb2", b"1\xb9", b"\xb3, \xb3"])  # Latin-1 superscripts: isdigit() but not int()
def test_bad_content_length_in_a_response_reads_until_close(value: bytes) -> None:
    f = Feed().req(b"GET / HTTP/1.1\r\n\r\n")
    f.resp(b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\nhello world").fin(SERVER)
    rows, _ = f.end()
    assert "bad_content_length" in f.anomaly_names
    assert col(rows, "response_body_bytes") == [11]  # RFC 9112 §6.3: invalid length -> until the close
    assert col(rows, "keep_alive") == [False]


def test_bad_content_length_in_a_request_is_reported_and_parsing_goes_on() -> None:
    f = Feed().req(b"POST /a HTTP/1.1\r\nContent-Length: -1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    rows, _ = f.end()
    assert "bad_content_length" in f.anomaly_names
    assert col(rows, "target") == ["/a", "/b"]


def test_transfer_encoding_chunked_overrides_content_length() -> None:
    f = Feed().req(b"GET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
    f.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
           b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
    rows, _ = f.end()
    assert col(rows, "response_body_bytes") == [len(b"3\r\nabc\r\n0\r\n\r\n"), 1]
    assert col(rows, "response_complete") == [True, True]


# ----------------------------------------------------------------------------------------- chunked

CHUNKED_BODY = (b"5;name=value;flag\r\nhello\r\n"
                b"A ; ext=\"quoted;value\"\r\n0123456789\r\n"
                b"0;last\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n")


def test_chunked_with_extensions_and_trailers() -> None:
    f = Feed()
    f.req(b"PUT /doc HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED_BODY + b"GET /after HTTP/1.1\r\n\r\n")
    f.resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED_BODY
           + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    rows, _ = f.end()
    assert col(rows, "target") == ["/doc", "/after"]
    # body bytes are the bytes of the body on the wire: chunk framing and trailers included
    assert col(rows, "request_body_bytes") == [len(CHUNKED_BODY), 0]
    assert col(rows, "response_body_bytes") == [len(CHUNKED_BODY), 2]
    assert col(rows, "response_complete") == [True, True]
    assert f.anomaly_names == []


@pytest.mark.parametrize("cut", range(1, len(CHUNKED_BODY)))
def test_chunked_body_split_anywhere(cut: int) -> None:
    f = Feed().req(b"GET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    f.resp(head + CHUNKED_BODY[:cut]).resp(CHUNKED_BODY[cut:] + b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    rows, _ = f.end()
    assert col(rows, "status") == [200, 404]
    assert col(rows, "response_body_bytes") == [len(CHUNKED_BODY), 0]
    assert f.anomaly_names == []


def test_chunked_with_bad_size_line_is_reported_and_resynchronises() -> None:
    f = Feed().req(b"GET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
    f.resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
           b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
    rows, _ = f.end()
    assert "bad_chunk_size" in f.anomaly_names
    assert col(rows, "status") == [200, 200]
    assert col(rows, "response_complete") == [False, True]


def test_chunked_with_bare_lf_lines() -> None:
    f = Feed().req(b"GET / HTTP/1.1\n\nGET /2 HTTP/1.1\n\n")
    f.resp(b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\nHTTP/1.1 200 OK\nContent-Length: 1\n\nx")
    rows, _ = f.end()
    assert col(rows, "response_body_bytes") == [len(b"3\nabc\n0\n\n"), 1]
    assert f.anomaly_names == []


# ------------------------------------------------------------------------------ read until close


def test_read_until_close_with_fin() -> None:
    f = Feed().req(b"GET /stream HTTP/1.1\r\n\r\n")
    f.resp(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nabc", ts=5_000)
    f.resp(b"HTTP/1.1 200 OK looks like a message but is body", ts=6_000).fin(SERVER)
    rows, _ = f.end()
    assert len(rows) == 1
    assert col(rows, "response_body_bytes") == [3 + len(b"HTTP/1.1 200 OK looks like a message but is body")]
    assert col(rows, "response_complete") == [True]
    assert col(rows, "keep_alive") == [False]
    assert rows[0]["ts_response_end"] == pytest.approx(6_000 / 1e9)
    assert f.anomaly_names == []


def test_read_until_close_without_fin_is_incomplete() -> None:
    f = Feed().req(b"GET /stream HTTP/1.1\r\n\r\n")
    f.resp(b"HTTP/1.0 200 OK\r\n\r\nabcdef")
    rows, _ = f.end()  # capture end, no FIN
    assert col(rows, "response_body_bytes") == [6]
    assert col(rows, "response_complete") == [False]
    assert col(rows, "keep_alive") == [False]


def test_eof_in_a_separate_empty_chunk_after_the_data() -> None:
    f = Feed().req(b"GET / HTTP/1.1\r\n\r\n").resp(b"HTTP/1.1 200 OK\r\n\r\nabc")
    f.conn.feed(SERVER, StreamChunk.empty(eof=f.off[SERVER]))
    rows, _ = f.end()
    assert col(rows, "response_complete") == [True]


# ----------------------------------------------------------------------- responses without a body


def test_head_response_with_content_length_has_no_body() -> None:
    f = Feed().req(b"HEAD /big HTTP/1.1\r\n\r\n")
    f.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 123456\r\n\r\n")
    f.req(b"GET /small HTTP/1.1\r\n\r\n").resp(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    rows, _ = f.end()
    assert col(rows, "method") == ["HEAD", "GET"]
    assert col(rows, "response_body_bytes") == [0, 2]
    assert col(rows, "response_complete") == [True, True]
    assert col(rows, "keep_alive") == [True, True]
    assert f.anomaly_names == []


def test_head_response_with_transfer_encoding_has_no_body_even_pipelined() -> None:
    f = Feed().req(b"HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    f.resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
    rows, _ = f.end()
    assert col(rows, "response_body_bytes") == [0, 1]
    assert f.anomaly_names == []


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body(status: int) -> None:
    f = Feed().req(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    f.resp(b"HTTP/1.1 %d X\r\nContent-Length: 50\r\n\r\n" % status + b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
    rows, _ = f.end()
    assert col(rows, "status") == [status, 200]
    assert col(rows, "response_body_bytes") == [0, 1]
    assert col(rows, "keep_alive") == [True, True]
    assert f.anomaly_names == []


# ------------------------------------------------------------------------------------- 1xx, 101


def test_100_continue_is_interim() -> None:
    f = Feed()
    f.req(b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n", ts=1_000)
    f.resp(b"HTTP/1.1 100 Continue\r\n\r\n", ts=2_000)
    f.req(b"data", ts=3_000)
    f.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", ts=4_000)
    rows, facts = f.end()
    assert len(rows) == 1
    r = rows[0]
    assert (r["status"], r["interim_responses"], r["request_body_bytes"]) == (200, 1, 4)
    assert r["ts_request_start"] == pytest.approx(1e-6) and r["ts_request_end"] == pytest.approx(3e-6)
    assert r["ts_response_start"] == pytest.approx(4e-6)
    assert r["keep_alive"] is True
    assert facts["requests"] == 1
    assert f.anomaly_names == []


def test_several_interim_responses_before_the_final_one() -> None:
    f = Feed().req(b"GET / HTTP/1.1\r\n\r\n")
    f.resp(b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
           b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
    rows, _ = f.end()
    assert col(rows, "status") == [200]
    assert col(rows, "interim_responses") == [2]


def test_101_switching_protocols_turns_both_directions_off() -> None:
    f = Feed()
    f.req(b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    f.resp(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello")
    # whatever follows is the new protocol, even when it looks like HTTP/1
    f.req(b"\x81\x85abcdGET /x HTTP/1.1\r\n\r\n").req(b"GET /y HTTP/1.1\r\n\r\n")
    f.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").resp(b"\x88\x00")
    rows, facts = f.end()
    assert col(rows, "status") == [101]
    assert col(rows, "keep_alive") == [False]
    assert facts["requests"] == 1
    assert f.anomaly_names == []


def test_upgrade_request_refused_keeps_http() -> None:
    f = Feed().req(b"GET /chat HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    f.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    f.req(b"GET /next HTTP/1.1\r\n\r\n").resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    rows, _ = f.end()
    assert col(rows, "target") == ["/chat", "/next"]
    assert f.anomaly_names == []


def test_connect_200_makes_a_tunnel() -> None:
    f = Feed()
    f.req(b"CONNECT www.example.com:443 HTTP/1.1\r\nHost: www.example.com:443\r\n\r\n")
    f.resp(b"HTTP/1.1 200 Connection Established\r\n\r\n")
    f.req(bytes.fromhex("160301005a010000560303") + bytes(80))
    f.resp(bytes.fromhex("160303003d020000390303") + bytes(57))
    f.req(b"GET / HTTP/1.1\r\n\r\n")  # inside the tunnel: not a request on this connection
    rows, facts = f.end()
    assert col(rows, "method") == ["CONNECT"]
    assert col(rows, "target") == ["www.example.com:443"]
    assert col(rows, "status") == [200]
    assert col(rows, "response_body_bytes") == [0]
    assert col(rows, "keep_alive") == [False]
    assert facts["requests"] == 1
    assert f.anomaly_names == []


def test_connect_refused_then_accepted() -> None:
    f = Feed()
    f.req(b"CONNECT a:443 HTTP/1.1\r\n\r\n").resp(b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 4\r\n\r\nauth")
    f.req(b"CONNECT a:443 HTTP/1.1\r\nProxy-Authorization: Basic eA==\r\n\r\n").resp(b"HTTP/1.1 200 OK\r\n\r\n")
    f.req(bytes.fromhex("1603010005") + b"hello").resp(bytes.fromhex("1603030005") + b"world")
    rows, _ = f.end()
    assert col(rows, "status") == [407, 200]
    assert col(rows, "response_body_bytes") == [4, 0]
    assert col(rows, "keep_alive") == [True, False]
    assert f.anomaly_names == []


# ------------------------------------------------------------------------------- versions, headers


def test_http10_keep_alive_connection() -> None:
    f = Feed()
    f.req(b"GET /1 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
    f.resp(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=15, max=99\r\n"
           b"Content-Length: 2\r\n\r\nab")
    f.req(b"GET /2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    f.resp(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\ncd").fin(SERVER)
    rows, facts = f.end()
    assert col(rows, "http_version") == ["HTTP/1.0", "HTTP/1.0"]
    assert col(rows, "keep_alive") == [True, False]  # the server did not agree the second time
    assert facts["protocol"] == "http/1.0"
    assert facts["keep_alive_timeout_s"] == 15.0 and facts["keep_alive_max"] == 99


def test_http10_response_without_length_reads_until_close() -> None:
    f = Feed().req(b"GET / HTTP/1.0\r\n\r\n").resp(b"HTTP/1.0 200 OK\r\n\r\nabc").fin(SERVER)
    rows, _ = f.end()
    assert col(rows, "response_body_bytes") == [3]
    assert col(rows, "response_complete") == [True]
    assert col(rows, "keep_alive") == [False]


def test_obs_fold_continues_the_previous_header() -> None:
    f = Feed()
    f.req(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive,\r\n close\r\n\r\n")
    f.resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\tchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    rows, _ = f.end()
    assert col(rows, "keep_alive") == [False]  # "close" arrived on the folded line
    assert rows[0]["request_connection"] is not None and "close" in rows[0]["request_connection"]
    assert col(rows, "response_body_bytes") == [len(b"3\r\nabc\r\n0\r\n\r\n")]
    assert col(rows, "response_complete") == [True]
    assert f.anomaly_names == []


def test_bare_lf_line_endings() -> None:
    f = Feed()
    f.req(b"POST /lf HTTP/1.1\nHost: lf.example\nContent-Length: 3\n\nabcGET /2 HTTP/1.1\n\n")
    f.resp(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nokHTTP/1.1 404 Not Found\nConnection: close\n\n")
    f.fin(SERVER)
    rows, _ = f.end()
    assert col(rows, "target") == ["/lf", "/2"]
    assert col(rows, "host") == ["lf.example", None]
    assert col(rows, "request_body_bytes") == [3, 0]
    assert col(rows, "status") == [200, 404]
    assert col(rows, "reason") == ["OK", "Not Found"]
    assert col(rows, "keep_alive") == [True, False]
    assert f.anomaly_names == []


def test_header_names_are_case_insensitive_and_repeated_headers_join() -> None:
    f = Feed().req(b"GET / HTTP/1.1\r\nHOST: h\r\nconnection: foo\r\nCONNECTION: Close\r\n\r\n")
    f.resp(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx")
    rows, _ = f.end()
    assert col(rows, "host") == ["h"]
    assert col(rows, "keep_alive") == [False]
    assert col(rows, "response_body_bytes") == [1]


def test_keep_alive_params() -> None:
    assert keep_alive_params("timeout=5, max=100") == (5.0, 100)
    assert keep_alive_params("Timeout = 2") == (2.0, None)
    assert keep_alive_params("") == (None, None)
    assert keep_alive_params(None) == (None, None)


# ------------------------------------------------------------------------------------------- gaps


def test_gap_inside_a_content_length_body_keeps_framing() -> None:
    f = Feed().req(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    f.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    f.resp(b"y" * 50 + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab", gap=40)
    rows, _ = f.end()
    assert col(rows, "target") == ["/a", "/b"]
    assert col(rows, "status") == [200, 200]
    assert col(rows, "response_body_bytes") == [100, 2]  # body bytes in the stream, the gap included
    assert col(rows, "response_complete") == [False, True]
    assert not GARBAGE & set(f.anomaly_names)


def test_gap_inside_a_request_body_keeps_framing() -> None:
    f = Feed().req(b"POST /a HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
    f.req(b"x" * 100 + b"GET /b HTTP/1.1\r\n\r\n", gap=800)
    rows, _ = f.end()
    assert col(rows, "target") == ["/a", "/b"]
    assert col(rows, "request_body_bytes") == [1000, 0]
    assert col(rows, "request_complete") == [False, True]
    assert not GARBAGE & set(f.anomaly_names)


def test_gap_ending_exactly_at_the_body_end() -> None:
    f = Feed().req(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    f.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    f.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab", gap=90)
    rows, _ = f.end()
    assert col(rows, "response_body_bytes") == [100, 2]
    assert col(rows, "response_complete") == [False, True]
    assert not GARBAGE & set(f.anomaly_names)


def test_gap_across_a_message_boundary_resynchronises_on_the_next_request() -> None:
    r1 = b"POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\n\r\n" + b"b" * 20
    r2 = b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n"
    r3 = b"GET /three HTTP/1.1\r\nHost: a\r\n\r\n"
    stream = r1 + r2 + r3
    lost = (len(r1) - 5, len(r1) + 10)  # the end of request 1's body and the start of request 2
    f = Feed().req(stream[: lost[0]]).req(stream[lost[1]:], gap=lost[1] - lost[0])
    rows, facts = f.end()
    assert col(rows, "target") == ["/one", "/three"]
    assert col(rows, "request_body_bytes") == [20, 0]
    assert col(rows, "request_complete") == [False, True]
    assert "message_lost_in_gap" in f.anomaly_names  # the parser's name; seq_gap is the TCP-level one
    assert "unparsable_start_line" not in f.anomaly_names
    assert facts["requests"] == 2


S1 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
S2 = b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nworld"
S3 = b"HTTP/1.1 202 Accepted\r\nContent-Length: 1\r\n\r\n!"
S4 = b"HTTP/1.1 203 Other\r\nContent-Length: 0\r\n\r\n"


def _response_gap(s2: bytes) -> Feed:
    f = Feed().req(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\nGET /d HTTP/1.1\r\n\r\n")
    stream = S1 + s2 + S3 + S4
    f.resp(stream[:20]).resp(stream[len(S1) + 8:], gap=len(S1) + 8 - 20)  # lost: S1's tail, S2's start
    return f


def test_gap_across_a_response_boundary_resynchronises_after_a_newline() -> None:
    f = _response_gap(S2.replace(b"5\r\n\r\nworld", b"6\r\n\r\nworld\n"))  # S2's body ends with LF
    rows, _ = f.end()
    assert [s for s in col(rows, "status") if s is not None] == [202, 203]
    assert "message_lost_in_gap" in f.anomaly_names  # the parser's name; seq_gap is the TCP-level one
    assert "truncated_message" not in f.anomaly_names


def test_gap_across_a_response_boundary_resynchronises_on_the_next_response() -> None:
    """Regression (fixed in 4a87e6a): resynchronisation needed the status line to follow a LF, so after a
    body that does not end with one, a gap in a response head lost every later response."""
    f = _response_gap(S2)
    rows, _ = f.end()
    assert [s for s in col(rows, "status") if s is not None] == [202, 203]
    assert "message_lost_in_gap" in f.anomaly_names  # the parser's name; seq_gap is the TCP-level one


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKED_REST = b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n"
NEXT_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab"


def _chunk_gap(lost_from: int, lost_to: int) -> tuple[list[dict[str, Any]], Feed]:
    f = Feed().req(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    stream = CHUNKED_HEAD + CHUNKED_REST + NEXT_RESPONSE
    a, b = len(CHUNKED_HEAD) + lost_from, len(CHUNKED_HEAD) + lost_to
    f.resp(stream[:a]).resp(stream[b:], gap=b - a)
    rows, _ = f.end()
    return rows, f


def test_gap_inside_chunk_data_keeps_chunked_framing() -> None:
    rows, f = _chunk_gap(5, 6)  # the "l" of "hello"
    assert col(rows, "response_body_bytes") == [len(CHUNKED_REST), 2]
    assert col(rows, "response_complete") == [False, True]
    assert not GARBAGE & set(f.anomaly_names)


def test_gap_ending_at_the_end_of_a_chunk_keeps_chunked_framing() -> None:
    """Regression (fixed in 4a87e6a): such a gap ended the whole chunked message."""
    rows, f = _chunk_gap(5, 8)  # "llo" of "hello": the gap ends where the chunk's data ends
    assert col(rows, "response_body_bytes") == [len(CHUNKED_REST), 2]
    assert col(rows, "response_complete") == [False, True]
    assert not GARBAGE & set(f.anomaly_names)


def test_a_later_message_after_a_gap_in_the_headers() -> None:
    f = Feed().req(b"GET /a HTTP/1.1\r\nHost: a\r\nUser-Ag")
    f.req(b"GET /b HTTP/1.1\r\nHost: b\r\n\r\n", gap=30)  # tail of /a's header block and more lost
    rows, _ = f.end()
    assert col(rows, "target")[-1] == "/b"
    assert "message_lost_in_gap" in f.anomaly_names  # the parser's name; seq_gap is the TCP-level one


# --------------------------------------------------------------------------------- split heads


def test_header_block_split_across_two_chunks() -> None:
    f = Feed().req(b"GET /split HTTP/1.1\r\nHost: spl").req(b"it.example\r\nUser-Agent: t\r\n\r")
    f.req(b"\n")
    f.resp(b"HTTP/1.1 200 OK\r\nCont").resp(b"ent-Length: 3\r\n\r\nabc")
    rows, _ = f.end()
    assert col(rows, "host") == ["split.example"]
    assert col(rows, "user_agent") == ["t"]
    assert col(rows, "response_body_bytes") == [3]
    assert f.anomaly_names == []


SHORT_HEAD = b"GET /items?id=7 HTTP/1.1\r\nHost: split.example\r\n\r\n"  # request line < 32 bytes


@pytest.mark.parametrize("cut", range(1, len(SHORT_HEAD)))
def test_request_head_split_anywhere(cut: int) -> None:
    f = Feed().req(SHORT_HEAD[:cut]).req(SHORT_HEAD[cut:])
    rows, _ = f.end()
    assert col(rows, "method") == ["GET"]
    assert col(rows, "target") == ["/items?id=7"]
    assert col(rows, "host") == ["split.example"]
    assert f.anomaly_names == []


@pytest.mark.parametrize("cut", range(1, 40))
def test_status_line_split_anywhere(cut: int) -> None:
    data = b"HTTP/1.1 404 Not Found Here At All\r\nContent-Length: 2\r\n\r\nno"
    f = Feed().req(b"GET / HTTP/1.1\r\n\r\n").resp(data[:cut]).resp(data[cut:])
    rows, _ = f.end()
    assert col(rows, "status") == [404]
    assert col(rows, "reason") == ["Not Found Here At All"]
    assert col(rows, "response_body_bytes") == [2]
    assert f.anomaly_names == []


@pytest.mark.parametrize("cut", [32, 34, 36])
def test_request_line_split_inside_the_version(cut: int) -> None:
    """Regression (fixed in 4a87e6a): a request line of >= 32 bytes cut inside its version was taken as
    unparsable and the request then parsed as method 'ET'."""
    line = b"GET /api/v1/items?id=7&x=%20 HTTP/1.1\r\n"
    data = line + b"Host: a\r\n\r\n"
    f = Feed().req(data[:cut]).req(data[cut:])
    rows, _ = f.end()
    assert col(rows, "method") == ["GET"]
    assert f.anomaly_names == []


def test_split_head_keeps_the_time_of_its_first_byte() -> None:
    """Regression (fixed while these tests were written): the start time was the completing chunk's."""
    f = Feed().req(b"GET /a HTTP/1.1\r\nHo", ts=1_000).req(b"st: x\r\n\r\n", ts=2_000)
    f.resp(b"HTTP/1.1 200 OK\r\nCont", ts=3_000).resp(b"ent-Length: 1\r\n\r\nx", ts=4_000)
    rows, _ = f.end()
    assert rows[0]["ts_request_start"] == pytest.approx(1_000 / 1e9)
    assert rows[0]["ts_request_end"] == pytest.approx(2_000 / 1e9)
    assert rows[0]["ts_response_start"] == pytest.approx(3_000 / 1e9)
    assert rows[0]["ts_response_end"] == pytest.approx(4_000 / 1e9)


def test_message_times_within_one_chunk_follow_the_pieces() -> None:
    """A chunk of several pieces: start = arrival of the first byte, end = when the last byte was in."""
    data = b"GET /t HTTP/1.1\r\n\r\n"
    buf = np.frombuffer(data, dtype=np.uint8)
    i64 = np.int64
    chunk = StreamChunk(np.array([0, 5], i64), np.array([5, len(data)], i64), np.zeros(2, np.int8),
                        np.array([0, 5], i64), np.array([100, 200], i64), np.array([100, 200], i64), (buf,))
    conn = Http1Connection()
    conn.feed(CLIENT, chunk)
    conn.feed(SERVER, StreamChunk.from_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 300, 0, False))
    rows, _ = rows_of(conn)
    assert rows[0]["ts_request_start"] == pytest.approx(100 / 1e9)
    assert rows[0]["ts_request_end"] == pytest.approx(200 / 1e9)


def _pieces(parts: list[bytes], ts: int) -> StreamChunk:
    """One chunk whose pieces are ``parts``, back to back (as the packets of one keep-alive connection)."""
    ends = np.cumsum([len(p) for p in parts], dtype=np.int64)
    starts = ends - np.array([len(p) for p in parts], dtype=np.int64)
    times = np.arange(ts, ts + len(parts), dtype=np.int64)
    return StreamChunk(starts, ends, np.zeros(len(parts), np.int8), starts.copy(), times, times.copy(),
                       (np.frombuffer(b"".join(parts), dtype=np.uint8),))


@pytest.mark.parametrize("split", ["whole", "blank_line", "tiny", "folded"])
def test_later_heads_read_from_their_piece_give_what_one_read_gives(split: str) -> None:
    """A later message's head is first looked for in the piece it starts in (``StreamChunk.read_piece``);
    a head cut across pieces (its blank line split, a piece of 3 bytes, a folded header line split) is read
    on as before. The transactions are those of the same bytes in one piece."""
    heads = [b"GET /%d HTTP/1.1\r\nHost: a.example\r\nX-Long: %s\r\n\r\n" % (i, b"y" * (300 * i))
             for i in range(6)]
    heads[3] = b"GET /3 HTTP/1.1\r\nHost: a.example\r\nCookie: a=1\r\n b=2\r\n\r\n"
    cut = {"whole": [], "blank_line": [(4, -1)], "tiny": [(2, 3)], "folded": [(3, 43)]}[split]
    parts = list(heads)
    for i, at in reversed(cut):
        parts[i:i + 1] = [heads[i][:at], heads[i][at:]]
    responses = b"".join(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx" for _ in heads)
    results = []
    for chunk in (_pieces(parts, 100), _pieces([b"".join(heads)], 100)):
        conn = Http1Connection()
        conn.feed(CLIENT, chunk)
        conn.feed(SERVER, StreamChunk.from_bytes(responses, 10_000, 0, False))
        for d in (CLIENT, SERVER):
            conn.feed(d, StreamChunk.empty(final=True))
        rows, _ = rows_of(conn)
        results.append([(r["target"], r["host"], r["status"], r["trans_depth"]) for r in rows])
    assert results[0] == results[1] == [(f"/{i}", "a.example", 200, i + 1) for i in range(6)]


# --------------------------------------------------------------------------------- not HTTP/1

H2_SETTINGS = bytes.fromhex("000012040000000000" "000300000064" "00040000ffff" "000500004000")
H2_WINDOW_UPDATE = bytes.fromhex("000004080000000000000f0001")
H2_SETTINGS_ACK = bytes.fromhex("000000040100000000")
CLIENT_HELLO = bytes.fromhex("16030100c4010000c00303") + bytes(32) + bytes.fromhex("00") + bytes(160)
SERVER_HELLO = bytes.fromhex("160303005a020000560303") + bytes(86)


def test_h2_prior_knowledge_preface_is_detected() -> None:
    f = Feed().req(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + H2_SETTINGS)
    rows, facts = f.end()
    assert facts["protocol"] == "h2c"
    assert rows == []
    assert f.anomaly_names == []


def test_h2_prior_knowledge_server_frames_are_not_garbage() -> None:
    """Regression (fixed in 4a87e6a): the server's HTTP/2 frames were parsed as HTTP/1 responses."""
    f = Feed().req(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + H2_SETTINGS)
    f.resp(H2_SETTINGS + H2_WINDOW_UPDATE + H2_SETTINGS_ACK).req(H2_SETTINGS_ACK)
    _, facts = f.end()
    assert facts["protocol"] == "h2c"
    assert f.anomaly_names == []


@pytest.mark.parametrize("split", [0, 3, 10, 23])
def test_h2_preface_split_across_chunks(split: int) -> None:
    data = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + H2_SETTINGS
    f = Feed()
    if split:
        f.req(data[:split])
    f.req(data[split:])
    _, facts = f.end()
    assert facts["protocol"] == "h2c"
    assert f.anomaly_names == []


def test_tls_client_hello_is_detected_both_directions_quiet() -> None:
    f = Feed().req(CLIENT_HELLO).resp(SERVER_HELLO).req(bytes.fromhex("1403030001011703030020") + bytes(32))
    rows, facts = f.end()
    assert facts["protocol"] == "tls"
    assert rows == []
    assert f.anomaly_names == []


def test_sslv2_compatible_client_hello_is_tls() -> None:
    f = Feed().req(bytes.fromhex("802e0100020015000000100000") + bytes(37))
    _, facts = f.end()
    assert facts["protocol"] == "tls"
    assert f.anomaly_names == []


def test_tls_alert_reply_is_not_garbage() -> None:
    """Regression (fixed in 4a87e6a): an alert answering the ClientHello was a truncated_message."""
    f = Feed().req(CLIENT_HELLO).resp(bytes.fromhex("15030300020228"))
    _, facts = f.end()
    assert facts["protocol"] == "tls"
    assert f.anomaly_names == []


def test_http09_request_and_response() -> None:
    f = Feed().req(b"GET /old.html\r\n").resp(b"<html>old school</html>").fin(SERVER)
    rows, facts = f.end()
    assert col(rows, "method") == ["GET"]
    assert col(rows, "target") == ["/old.html"]
    assert col(rows, "http_version") == ["HTTP/0.9"]
    assert col(rows, "status") == [None]
    assert col(rows, "response_body_bytes") == [len(b"<html>old school</html>")]
    assert col(rows, "response_complete") == [True]
    assert col(rows, "keep_alive") == [False]
    assert facts["protocol"] == "http/0.9"
    assert f.anomaly_names == []


# -------------------------------------------------------------------------------- garbage, limits


def test_garbage_before_a_request_is_reported_and_skipped() -> None:
    f = Feed().req(b"\x00\x01garbage line\r\nGET /real HTTP/1.1\r\n\r\n")
    rows, _ = f.end()
    assert col(rows, "target") == ["/real"]
    assert "unparsable_start_line" in f.anomaly_names


def test_response_without_request_is_an_orphan() -> None:
    f = Feed().resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    rows, facts = f.end()
    assert col(rows, "method") == [None]
    assert col(rows, "status") == [200]
    assert facts["requests"] == 0
    assert "response_before_request" in f.anomaly_names


def test_incomplete_head_at_the_end_is_truncated() -> None:
    f = Feed().req(b"GET / HTTP/1.1\r\nHost: never-finished")
    rows, _ = f.end()
    assert rows == []
    assert "truncated_message" in f.anomaly_names


def test_body_incomplete_at_the_end_is_truncated() -> None:
    f = Feed().req(b"GET / HTTP/1.1\r\n\r\n").resp(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    rows, _ = f.end()
    assert col(rows, "response_complete") == [False]
    assert "truncated_message" in f.anomaly_names


def test_oversized_header_is_reported() -> None:
    f = Feed().req(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\nGET /next HTTP/1.1\r\n\r\n")
    rows, _ = f.end()
    assert "oversized_header" in f.anomaly_names
    assert col(rows, "target")[-1:] == ["/next"]


def test_lowercase_method_is_not_a_request() -> None:
    f = Feed().req(b"get / HTTP/1.1\r\n\r\nGET /ok HTTP/1.1\r\n\r\n")
    rows, _ = f.end()
    assert col(rows, "target") == ["/ok"]
    assert "unparsable_start_line" in f.anomaly_names


def test_bare_parser_callbacks_and_messages() -> None:
    heads: list[Message] = []
    ends: list[Message] = []

    def on_head(m: Message) -> str | None:
        heads.append(m)
        return None

    p = Http1Parser(REQUEST, on_head, ends.append)
    p.feed(StreamChunk.from_bytes(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nDELETE /r HTTP/1.1\r\n\r\n", 10, 0, True))
    assert [(m.method, m.target, m.version) for m in heads] == [("OPTIONS", "*", "HTTP/1.1"),
                                                                 ("DELETE", "/r", "HTTP/1.1")]
    first = len(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    second = first + len(b"DELETE /r HTTP/1.1\r\n\r\n")
    assert [(m.start, m.end, m.complete) for m in ends] == [(0, first, True), (first, second, True)]
    assert ends[0].headers == {"host": "x"}

    r = Http1Parser(RESPONSE, lambda m: "HEAD", lambda m: None)
    r.feed(StreamChunk.from_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", 10, 0, True))
    assert r.anomalies == []


_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b" ", b":"]), max_size=24).map(b"".join))
def test_header_end_is_the_first_match_of_the_blank_line_pattern(data: bytes) -> None:
    m = _BLANK_LINE.search(data)
    assert header_end(data) == ((m.start(), m.end()) if m else (-1, -1))


def _headers_reference(lines: list[bytes]) -> dict[str, str]:
    """``Http1Parser._parse_headers`` as it was before its first-byte shortcut: every line split."""
    kept = {"host", "connection", "keep-alive", "content-length", "transfer-encoding", "user-agent",
            "content-type", "expect", "upgrade", "proxy-connection"}
    headers: dict[str, str] = {}
    last: str | None = None
    for raw in lines:
        if not raw or raw == b"\r":
            continue
        if raw[0] in (0x20, 0x09) and last is not None:
            headers[last] = headers[last] + " " + raw.strip().decode("latin-1")
            continue
        name, sep, value = raw.partition(b":")
        if not sep:
            continue
        lname = name.strip().lower().decode("ascii", "replace")
        if lname not in kept:
            last = None
            continue
        val = value.strip().decode("latin-1")
        headers[lname] = headers[lname] + ", " + val if lname in headers else val
        last = lname
    return headers


_HEADER_PIECES = [b"Host", b"host", b"HOST", b"Connection", b"Keep-Alive", b"Content-Length", b"Server", b"ETag",
                  b"Expect", b"X-Kept", b"Date", b":", b" ", b"\t", b"\r", b"\x0b", b"\x0c", b"v", b"close", b"1",
                  b"\xe9"]


@given(st.lists(st.lists(st.sampled_from(_HEADER_PIECES), max_size=6).map(b"".join), max_size=8))
def test_header_lines_kept_as_by_splitting_every_line(lines: list[bytes]) -> None:
    msg = Message(REQUEST, 0, 0)
    Http1Parser._parse_headers(msg, lines)
    assert msg.headers == _headers_reference(lines)
