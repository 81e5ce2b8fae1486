"""Tests of the passive HTTP/2 observer (``analyzer.http2``).

Two kinds:

- real captures of ``../shared/corpus`` (cleartext HTTP/2 with prior knowledge and after an HTTP/1.1
  ``Upgrade: h2c``), driven through the real TCP tracker (``ConnectionTracker``) and compared per connection
  with tshark: streams, their order, methods, paths, final statuses, body sizes (DATA payload minus padding)
  and the times of the frames that start requests and end responses. Known values are also asserted
  outright, so that a tshark and an analyzer wrong in the same way still fail;
- conversations built with ``hyperframe`` frames and ``hpack``'s ``Encoder``: splitting at every byte
  boundary gives the same rows, frame times, CONTINUATION, padding, RST_STREAM, GOAWAY, server push, 1xx
  and trailers, concurrency, gaps (inside a payload and across frame boundaries), header compression errors,
  oversize frames and the memory cap; and hypothesis: mutated and gapped byte streams never raise.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import struct
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from handler_rows import transaction_rows
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    ExtensionFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import analyzer
from analyzer.capture.pcapfile import open_capture
from analyzer.flows.connections import Connection, ConnectionTracker
from analyzer.flows.decode import decode_batch
from analyzer.flows.packets import TCP
from analyzer.flows.stream import StreamChunk
from analyzer.http.http1 import REQUEST, RESPONSE, Http1Parser, Message
from analyzer.http.sniff import classify_payload
from analyzer.http.transactions import SealedHttp1
from analyzer.http2 import PREFACE, H2cUpgrade, Http2Connection
from analyzer.http2 import frames as h2frames
from analyzer.http2.frames import find_boundary
from analyzer.tables import HTTP_TRANSACTION_COLUMNS, TRANSACTION_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
COLS = {name: i for i, name in enumerate(TRANSACTION_COLUMNS)}
BASE_COLUMNS = len(HTTP_TRANSACTION_COLUMNS)  # the columns the HTTP layer fills; later ones are added by records
MS = 1_000_000

# ==================================================================================== building conversations


def req_fields(path: str, method: str = "GET", authority: str = "example.org") -> list[tuple[str, str]]:
    return [(":method", method), (":scheme", "http"), (":path", path), (":authority", authority),
            ("user-agent", "test/1.0")]


def resp_fields(status: int, ctype: str | None = "text/plain") -> list[tuple[str, str]]:
    fields = [(":status", str(status))]
    if ctype:
        fields.append(("content-type", ctype))
    return fields


@dataclass
class Side:
    """One direction's bytes, with the time of every byte range written (``send``)."""

    encoder: Encoder = field(default_factory=Encoder)
    data: bytearray = field(default_factory=bytearray)
    times: list[tuple[int, int]] = field(default_factory=list)  # (start offset, ts_ns) of each write
    now: int = 0

    def at(self, ts_ns: int) -> Side:
        self.now = ts_ns
        return self

    def send(self, raw: bytes) -> Side:
        self.times.append((len(self.data), self.now))
        self.data += raw
        return self

    def headers(self, sid: int, fields: list[tuple[str, str]], end_stream: bool = False,
                end_headers: bool = True, **kw: Any) -> Side:
        flags = (["END_HEADERS"] if end_headers else []) + (["END_STREAM"] if end_stream else [])
        return self.send(HeadersFrame(sid, self.encoder.encode(fields), flags=flags, **kw).serialize())

    def data_frame(self, sid: int, payload: bytes, end_stream: bool = False, pad: int = 0) -> Side:
        flags = (["END_STREAM"] if end_stream else []) + (["PADDED"] if pad else [])
        f = DataFrame(sid, payload, flags=flags)
        f.pad_length = pad
        return self.send(f.serialize())

    def pieces(self, cuts: Iterable[int] = ()) -> list[tuple[int, bytes, int]]:
        """The bytes as pieces (offset, bytes, ts): one per write, also cut at ``cuts``."""
        bounds = sorted({0, len(self.data), *(s for s, _ in self.times), *(c for c in cuts if 0 < c < len(self.data))})
        out = []
        for a, b in itertools.pairwise(bounds):
            out.append((a, bytes(self.data[a:b]), self.time_of(a)))
        return out

    def time_of(self, offset: int) -> int:
        ts = 0
        for start, t in self.times:
            if start <= offset:
                ts = t
        return ts


def client_side(settings: dict[int, int] | None = None) -> Side:
    return Side().send(PREFACE + SettingsFrame(0, settings=settings or {3: 100}).serialize())


def server_side(settings: dict[int, int] | None = None) -> Side:
    return Side().send(SettingsFrame(0, settings=settings or {3: 128}).serialize()
                       + SettingsFrame(0, flags=["ACK"]).serialize())


def chunk_of(pieces: list[tuple[int, bytes, int]], final: bool = False, eof: int = -1) -> StreamChunk:
    """A StreamChunk of pieces (offset, bytes, ts) in stream order; holes between pieces are gaps."""
    pieces = [p for p in pieces if p[1]]
    if not pieces:
        return StreamChunk.empty(eof=eof, final=final)
    buf = np.frombuffer(b"".join(p[1] for p in pieces), dtype=np.uint8)
    lens = np.array([len(p[1]) for p in pieces], dtype=np.int64)
    start = np.array([p[0] for p in pieces], dtype=np.int64)
    off = np.zeros(len(pieces), dtype=np.int64)
    off[1:] = np.cumsum(lens)[:-1]
    ts = np.array([p[2] for p in pieces], dtype=np.int64)
    return StreamChunk(start, start + lens, np.zeros(len(pieces), dtype=np.int8), off, ts,
                       np.maximum.accumulate(ts), (buf,), eof, final)


def run(client: Side | list[list[tuple[int, bytes, int]]], server: Side | list[list[tuple[int, bytes, int]]],
        conn: Http2Connection | None = None) -> tuple[Http2Connection, list[tuple[Any, ...]], dict[str, Any]]:
    """Feed both directions (each a Side, or a list of chunks of pieces), client first, then end both."""
    conn = conn if conn is not None else Http2Connection()
    c_chunks = [client.pieces()] if isinstance(client, Side) else client
    s_chunks = [server.pieces()] if isinstance(server, Side) else server
    for i in range(max(len(c_chunks), len(s_chunks))):
        if i < len(c_chunks):
            conn.feed(0, chunk_of(c_chunks[i]))
        if i < len(s_chunks):
            conn.feed(1, chunk_of(s_chunks[i]))
    conn.feed(0, StreamChunk.empty(final=True))
    conn.feed(1, StreamChunk.empty(final=True))
    rows, facts = transaction_rows(conn, "C1", "10.0.0.1", 80)
    return conn, rows, facts


def col(rows: list[tuple[Any, ...]], name: str) -> list[Any]:
    return [r[COLS[name]] for r in rows]


def names(conn: Http2Connection) -> list[str]:
    return [a[1] for a in conn.anomalies()]


def basic_conversation() -> tuple[Side, Side]:
    """Two requests on streams 1 and 3 (the second with a padded body), a 1xx, trailers, a GOAWAY."""
    c, s = client_side(), server_side()
    c.at(1000 * MS).headers(1, req_fields("/a"), end_stream=True)
    s.at(1010 * MS).headers(1, resp_fields(200)).data_frame(1, b"x" * 300)
    s.at(1020 * MS).data_frame(1, b"y" * 200, end_stream=True)
    c.at(1500 * MS).headers(3, req_fields("/b", "POST"))
    c.at(1501 * MS).data_frame(3, b"hello", end_stream=True, pad=7)
    s.at(1510 * MS).headers(3, resp_fields(100, None)).headers(3, resp_fields(404))
    s.at(1520 * MS).data_frame(3, b"nope", pad=3).headers(3, [("grpc-status", "0")], end_stream=True)
    s.at(1600 * MS).send(GoAwayFrame(0, last_stream_id=3).serialize())
    return c, s


# ========================================================================================= built streams


def test_basic_conversation_rows_and_facts() -> None:
    c, s = basic_conversation()
    conn, rows, facts = run(c, s)
    assert len(rows) == 2 and all(len(r) == BASE_COLUMNS for r in rows)
    assert col(rows, "stream_id") == [1, 3]
    assert col(rows, "trans_depth") == [1, 2]
    assert col(rows, "method") == ["GET", "POST"]
    assert col(rows, "target") == ["/a", "/b"]
    assert col(rows, "host") == ["example.org", "example.org"]
    assert col(rows, "status") == [200, 404]
    assert col(rows, "http_version") == ["HTTP/2", "HTTP/2"]
    assert col(rows, "response_version") == ["HTTP/2", "HTTP/2"]
    assert col(rows, "reason") == [None, None]
    assert col(rows, "user_agent") == ["test/1.0", "test/1.0"]
    assert col(rows, "content_type") == ["text/plain", "text/plain"]
    assert col(rows, "request_body_bytes") == [0, 5]  # padding is not body
    assert col(rows, "response_body_bytes") == [500, 4]
    assert col(rows, "interim_responses") == [0, 1]
    assert col(rows, "ts_request_start") == [1.0, 1.5]
    assert col(rows, "ts_request_end") == [1.0, 1.501]
    assert col(rows, "ts_response_start") == [1.01, 1.51]  # the final response, not the 100
    assert col(rows, "ts_response_end") == [1.02, 1.52]  # the trailers end the second response
    assert col(rows, "reused") == [False, True]
    assert col(rows, "pipelined") == [False, False]
    assert col(rows, "idle_before_ms") == [None, pytest.approx(480.0)]
    assert col(rows, "keep_alive") == [True, True]  # the GOAWAY came after both streams ended
    assert col(rows, "request_complete") == [True, True]
    assert col(rows, "response_complete") == [True, True]
    assert facts["requests"] == 2
    assert facts["pipelined_max"] == 1 and facts["max_concurrent_streams"] == 1
    assert facts["protocol"] == "h2c"
    assert facts["idle_max_ms"] == pytest.approx(480.0)
    assert facts["last_response_end_ns"] == 1520 * MS
    assert facts["settings"] == {"client": {"MAX_CONCURRENT_STREAMS": 100},
                                 "server": {"MAX_CONCURRENT_STREAMS": 128}}
    assert facts["goaway"] == {"by": "server", "last_stream_id": 3, "error": "NO_ERROR", "ts": 1.6}
    assert set(facts) >= {"requests", "pipelined_max", "protocol", "keep_alive_timeout_s", "keep_alive_max",
                          "last_response_end_ns", "idle_max_ms", "max_concurrent_streams", "settings", "goaway"}
    assert len(facts["response_spans"]) == 2
    assert conn.anomalies() == []


def test_split_at_every_byte_gives_the_same_rows() -> None:
    c, s = basic_conversation()
    _, want, want_facts = run(c, s)
    for side in ("client", "server"):
        data = c if side == "client" else s
        for cut in range(1, len(data.data)):
            pieces = data.pieces([cut])
            # the cut makes two chunks: everything up to the cut, then the rest
            first = [p for p in pieces if p[0] < cut]
            rest = [p for p in pieces if p[0] >= cut]
            chunks = [first, rest]
            _, rows, facts = run(chunks if side == "client" else c, chunks if side == "server" else s)
            assert rows == want, (side, cut)
            assert facts == want_facts, (side, cut)


def test_one_piece_per_byte_gives_the_same_rows() -> None:
    c, s = basic_conversation()
    _, want, _ = run(c, s)
    c_pieces = c.pieces(range(len(c.data)))
    s_pieces = s.pieces(range(len(s.data)))
    _, rows, _ = run([c_pieces], [s_pieces])  # one chunk, one piece per byte
    assert rows == want
    _, rows, _ = run([[p] for p in c_pieces], [[p] for p in s_pieces])  # one chunk per byte
    assert rows == want


def test_frame_time_is_the_time_of_its_last_byte() -> None:
    c, s = client_side(), server_side()
    c.at(100 * MS).headers(1, req_fields("/t"), end_stream=True)
    s.at(200 * MS).headers(1, resp_fields(200)).data_frame(1, b"z" * 50, end_stream=True)
    head_start = len(client_side().data)
    # the HEADERS frame arrives in two pieces: 5 bytes at 100 ms, the rest at 130 ms
    pieces = [(0, bytes(c.data[:head_start + 5]), 100 * MS), (head_start + 5, bytes(c.data[head_start + 5:]), 130 * MS)]
    # the server's last DATA byte arrives later than the rest
    n = len(s.data)
    s_pieces = [(0, bytes(s.data[: n - 1]), 200 * MS), (n - 1, bytes(s.data[n - 1:]), 250 * MS)]
    _, rows, _ = run([pieces], [s_pieces])
    assert col(rows, "ts_request_start") == [0.13]
    assert col(rows, "ts_request_end") == [0.13]
    assert col(rows, "ts_response_start") == [0.2]
    assert col(rows, "ts_response_end") == [0.25]


def test_continuation_and_padding_and_priority() -> None:
    c, s = client_side(), server_side()
    block = c.encoder.encode([*req_fields("/continued"), ("cookie", "c" * 3000)])
    a, b = block[:1000], block[1000:2000]
    h = HeadersFrame(1, a, flags=["END_STREAM", "PADDED", "PRIORITY"], depends_on=0, stream_weight=20)
    h.pad_length = 17
    c.at(10 * MS).send(h.serialize())
    c.at(11 * MS).send(ContinuationFrame(1, b).serialize())
    c.at(12 * MS).send(ContinuationFrame(1, block[2000:], flags=["END_HEADERS"]).serialize())
    padded = HeadersFrame(1, s.encoder.encode(resp_fields(204)), flags=["END_HEADERS", "END_STREAM", "PADDED"])
    padded.pad_length = 9  # padding alone, without priority
    s.at(20 * MS).send(padded.serialize())
    conn, rows, _ = run(c, s)
    assert col(rows, "target") == ["/continued"]
    assert col(rows, "ts_request_start") == [0.01]  # the HEADERS frame opens the stream
    assert col(rows, "ts_request_end") == [0.012]  # END_STREAM takes effect at the end of the header block
    assert col(rows, "status") == [204]
    assert conn.anomalies() == []


def test_continuation_interrupted_makes_client_headers_unknown() -> None:
    c, s = client_side(), server_side()
    block = c.encoder.encode(req_fields("/x"))
    c.at(10 * MS).send(HeadersFrame(1, block, flags=["END_STREAM"]).serialize())  # no END_HEADERS
    c.at(11 * MS).send(PingFrame(0, b"12345678").serialize())  # not a CONTINUATION
    c.at(12 * MS).headers(3, req_fields("/y"), end_stream=True)
    s.at(20 * MS).headers(1, resp_fields(200), end_stream=True).headers(3, resp_fields(201), end_stream=True)
    conn, rows, _ = run(c, s)
    assert col(rows, "stream_id") == [1, 3]
    assert col(rows, "method") == [None, None]  # the client's header compression state is lost
    assert col(rows, "status") == [200, 201]  # the server's is not
    assert {"h2_continuation_error", "h2_headers_lost"} <= set(names(conn))


def test_rst_stream_by_server_and_client() -> None:
    c, s = client_side(), server_side()
    c.at(10 * MS).headers(1, req_fields("/big"), end_stream=True)
    c.at(11 * MS).headers(3, req_fields("/cancelled"), end_stream=True)
    s.at(20 * MS).headers(1, resp_fields(200)).data_frame(1, b"a" * 100)
    s.at(30 * MS).send(RstStreamFrame(1, error_code=0x2).serialize())  # INTERNAL_ERROR mid-response
    c.at(40 * MS).send(RstStreamFrame(3, error_code=0x8).serialize())  # the client gives up (CANCEL)
    conn, rows, facts = run(c, s)
    assert col(rows, "response_complete") == [False, False]
    assert col(rows, "request_complete") == [True, True]
    assert col(rows, "status") == [200, None]
    assert col(rows, "response_body_bytes") == [100, None]
    assert facts["reset_streams"] == 2
    details = [a[2] for a in conn.anomalies() if a[1] == "h2_stream_reset"]
    assert any("stream 1 reset by server: INTERNAL_ERROR" in d for d in details)
    assert any("stream 3 reset by client: CANCEL" in d for d in details)
    # the reset ends the stream: both were open at once until then
    assert facts["max_concurrent_streams"] == 2


def test_rst_stream_after_complete_response_is_harmless() -> None:
    c, s = client_side(), server_side()
    c.at(10 * MS).headers(1, req_fields("/ok"), end_stream=True)
    s.at(20 * MS).headers(1, resp_fields(200)).data_frame(1, b"k", end_stream=True)
    s.at(21 * MS).send(RstStreamFrame(1, error_code=0).serialize())
    conn, rows, _ = run(c, s)
    assert col(rows, "response_complete") == [True]
    assert "h2_stream_reset" not in names(conn)


def test_goaway_ends_reuse_and_reports_errors() -> None:
    c, s = client_side(), server_side()
    c.at(10 * MS).headers(1, req_fields("/one"), end_stream=True)
    c.at(11 * MS).headers(3, req_fields("/two"), end_stream=True)
    s.at(20 * MS).headers(1, resp_fields(200), end_stream=True)
    s.at(25 * MS).send(GoAwayFrame(0, last_stream_id=3, error_code=0xB, additional_data=b"calm").serialize())
    s.at(30 * MS).headers(3, resp_fields(200), end_stream=True)
    conn, rows, facts = run(c, s)
    assert col(rows, "keep_alive") == [True, False]  # stream 3 ended after the GOAWAY
    assert facts["goaway"] == {"by": "server", "last_stream_id": 3, "error": "ENHANCE_YOUR_CALM", "ts": 0.025}
    assert "h2_goaway_error" in names(conn)


def test_goaway_before_a_stream_that_never_ends() -> None:
    c, s = client_side(), server_side()
    c.at(10 * MS).headers(1, req_fields("/hang"), end_stream=True)
    c.at(12 * MS).send(GoAwayFrame(0, last_stream_id=0).serialize())
    conn, rows, facts = run(c, s)
    assert col(rows, "keep_alive") == [False]
    assert col(rows, "response_complete") == [None]
    assert facts["goaway"]["by"] == "client"
    assert "h2_unfinished_streams" in names(conn)


def test_server_push_is_a_transaction() -> None:
    c, s = client_side(), server_side()
    c.at(10 * MS).headers(1, req_fields("/page"), end_stream=True)
    pp = PushPromiseFrame(1, promised_stream_id=2, data=s.encoder.encode(req_fields("/style.css")),
                          flags=["END_HEADERS"])
    s.at(20 * MS).send(pp.serialize())
    s.at(21 * MS).headers(1, resp_fields(200, "text/html")).data_frame(1, b"<html>", end_stream=True)
    s.at(22 * MS).headers(2, resp_fields(200, "text/css")).data_frame(2, b"body{}" * 10, end_stream=True)
    conn, rows, facts = run(c, s)
    assert col(rows, "stream_id") == [1, 2]
    assert col(rows, "method") == ["GET", "GET"]
    assert col(rows, "target") == ["/page", "/style.css"]
    assert col(rows, "content_type") == ["text/html", "text/css"]
    assert col(rows, "ts_request_start") == [0.01, 0.02]
    assert col(rows, "response_body_bytes") == [6, 60]
    assert col(rows, "pipelined") == [False, True]  # pushed while stream 1 was open
    assert facts["requests"] == 1 and facts["pushed_streams"] == 1
    assert facts["max_concurrent_streams"] == 2 and facts["pipelined_max"] == 1
    assert conn.anomalies() == []


def test_concurrency_idle_and_order_of_opening() -> None:
    c, s = client_side(), server_side()
    c.at(100 * MS).headers(1, req_fields("/1"), end_stream=True)
    c.at(101 * MS).headers(3, req_fields("/3"), end_stream=True)
    c.at(102 * MS).headers(5, req_fields("/5"), end_stream=True)
    s.at(150 * MS).headers(5, resp_fields(200), end_stream=True)
    s.at(160 * MS).headers(1, resp_fields(200), end_stream=True)
    s.at(170 * MS).headers(3, resp_fields(200), end_stream=True)
    c.at(300 * MS).headers(7, req_fields("/7"), end_stream=True)  # after an idle gap
    s.at(310 * MS).headers(7, resp_fields(200), end_stream=True)
    c.at(310 * MS).headers(9, req_fields("/9"), end_stream=True)  # starts when 7 ends: not concurrent
    s.at(320 * MS).headers(9, resp_fields(200), end_stream=True)
    _, rows, facts = run(c, s)
    assert col(rows, "stream_id") == [1, 3, 5, 7, 9]
    assert col(rows, "pipelined") == [False, True, True, False, False]
    assert col(rows, "idle_before_ms") == [None, pytest.approx(-59.0), pytest.approx(-68.0),
                                           pytest.approx(130.0), pytest.approx(0.0)]
    assert facts["max_concurrent_streams"] == 3 and facts["pipelined_max"] == 3
    assert facts["idle_max_ms"] == pytest.approx(130.0)


def test_ignored_frames_open_no_stream() -> None:
    c, s = client_side(), server_side()
    c.at(10 * MS).send(PriorityFrame(3, depends_on=0, stream_weight=200).serialize())
    c.send(PriorityFrame(5, depends_on=3, stream_weight=100).serialize())
    c.send(WindowUpdateFrame(0, window_increment=1000).serialize())
    ext = ExtensionFrame(type=0xFA, stream_id=7, flag_byte=0x3, body=b"whatever")
    ext.body_len = len(ext.body)  # hyperframe serializes body_len, which only parsing sets
    c.send(ext.serialize())
    c.at(11 * MS).headers(9, req_fields("/only"), end_stream=True)
    s.at(20 * MS).send(PingFrame(0, b"pingpong").serialize()).headers(9, resp_fields(200), end_stream=True)
    conn, rows, _ = run(c, s)
    assert col(rows, "stream_id") == [9]
    assert conn.anomalies() == []


def test_oversize_frame_is_reported_and_still_read() -> None:
    c, s = client_side(), server_side()
    c.at(10 * MS).headers(1, req_fields("/big"), end_stream=True)
    s.at(20 * MS).headers(1, resp_fields(200)).data_frame(1, b"b" * 20_000, end_stream=True)
    conn, rows, _ = run(c, s)
    assert col(rows, "response_body_bytes") == [20_000]
    assert "h2_oversize_frame" in names(conn)
    # allowed once the client advertised a larger SETTINGS_MAX_FRAME_SIZE
    c2 = client_side({5: 1 << 20})
    c2.at(10 * MS).headers(1, req_fields("/big"), end_stream=True)
    s2 = server_side()
    s2.at(20 * MS).headers(1, resp_fields(200)).data_frame(1, b"b" * 20_000, end_stream=True)
    conn2, _, _ = run(c2, s2)
    assert "h2_oversize_frame" not in names(conn2)


def test_buffer_limit_skips_a_huge_header_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h2frames, "MAX_FRAME_BUFFER_BYTES", 2000)
    c, s = client_side(), server_side()
    c.at(10 * MS).headers(1, [*req_fields("/huge"), ("cookie", "q" * 5000)], end_stream=True)
    c.at(11 * MS).headers(3, req_fields("/after"), end_stream=True)
    s.at(20 * MS).headers(1, resp_fields(431), end_stream=True).headers(3, resp_fields(200), end_stream=True)
    conn, rows, _ = run([c.pieces(range(0, len(c.data), 100))], s)
    assert col(rows, "stream_id") == [1, 3]
    assert col(rows, "method") == [None, None]
    assert col(rows, "status") == [431, 200]
    assert col(rows, "request_complete") == [True, True]
    assert {"h2_buffer_limit", "h2_headers_lost"} <= set(names(conn))


MAX_LEN = (1 << 24) - 1


def test_buffered_bytes_stay_bounded() -> None:
    """A 5 MB DATA frame and a 900 kB HEADERS frame fed in 1 kB pieces: DATA is never buffered, other
    payloads at most MAX_FRAME_BUFFER_BYTES."""
    c, s = client_side({5: MAX_LEN}), server_side({5: MAX_LEN})
    c.at(10 * MS).headers(1, req_fields("/x"), end_stream=True)
    s.at(20 * MS).headers(1, resp_fields(200)).data_frame(1, bytes(5_000_000), end_stream=True)
    conn = Http2Connection()
    conn.feed(0, chunk_of(c.pieces()))
    worst = 0
    for p in s.pieces(range(0, len(s.data), 1024)):
        conn.feed(1, chunk_of([p]))
        worst = max(worst, len(conn.readers[1].buf))
    assert worst <= h2frames.FRAME_HEADER_BYTES
    _, rows, _ = run([], [], conn)
    assert col(rows, "response_body_bytes") == [5_000_000]


def test_gap_inside_data_keeps_framing_and_header_state() -> None:
    c, s = client_side(), server_side()
    c.at(10 * MS).headers(1, req_fields("/a"), end_stream=True)
    c.at(40 * MS).headers(3, req_fields("/b"), end_stream=True)
    s.at(20 * MS).headers(1, resp_fields(200)).data_frame(1, b"d" * 5000, end_stream=True)
    hole_at = len(s.data) - 3000
    s.at(50 * MS).headers(3, resp_fields(200), end_stream=True)
    pieces = s.pieces([hole_at, hole_at + 1000])
    pieces = [p for p in pieces if not hole_at <= p[0] < hole_at + 1000]  # 1000 body bytes not captured
    conn, rows, _ = run(c, [pieces])
    assert col(rows, "response_body_bytes") == [5000, 0]  # missing bytes counted, as HTTP/1 bodies
    assert col(rows, "response_complete") == [False, True]
    assert col(rows, "status") == [200, 200]  # the server's header state survived
    assert "h2_gap" not in names(conn)


def test_gap_across_frame_boundaries_resynchronises() -> None:
    c, s = client_side(), server_side()
    c.at(10 * MS).headers(1, req_fields("/a"), end_stream=True)
    for i, sid in enumerate((3, 5, 7, 9)):
        c.at((11 + i) * MS).headers(sid, req_fields(f"/{sid}"), end_stream=True)
    s.at(20 * MS).headers(1, resp_fields(200)).data_frame(1, b"1" * 100)
    lost_from = len(s.data) - 50
    s.at(21 * MS).data_frame(1, b"1" * 100, end_stream=True)
    s.headers(3, resp_fields(200)).data_frame(3, b"3" * 10, end_stream=True)
    lost_to = len(s.data) + 4  # into the next frame header
    for sid in (5, 7, 9):
        s.at(30 * MS).headers(sid, resp_fields(200)).data_frame(sid, b"5" * 10, end_stream=True)
        s.send(PingFrame(0, b"p" * 8).serialize())
    pieces = [p for p in s.pieces([lost_from, lost_to]) if not lost_from <= p[0] < lost_to]
    conn, rows, _ = run(c, [pieces])
    assert col(rows, "stream_id") == [1, 3, 5, 7, 9]
    assert col(rows, "target") == ["/a", "/3", "/5", "/7", "/9"]  # the client's side is intact
    assert col(rows, "status") == [200, None, None, None, None]  # the server's header state is lost
    # after the boundary was found again, END_STREAMs and DATA are still followed
    assert col(rows, "response_complete")[2:] == [True, True, True]
    assert col(rows, "response_body_bytes")[2:] == [10, 10, 10]
    assert "h2_gap" in names(conn)


def test_gap_with_no_boundary_after_it_stops_the_direction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h2frames, "RESYNC_MAX_SCAN_BYTES", 4096)
    c, s = client_side(), server_side()
    c.at(10 * MS).headers(1, req_fields("/a"), end_stream=True)
    s.at(20 * MS).headers(1, resp_fields(200)).data_frame(1, b"\xff" * 10_000, end_stream=True)
    cut = len(server_side().data) + 5  # inside the HEADERS frame header
    pieces = [p for p in s.pieces([cut, cut + 30]) if not cut <= p[0] < cut + 30]
    conn, rows, _ = run(c, [pieces])
    assert conn.readers[1].stopped
    details = [a[2] for a in conn.anomalies() if a[1] == "h2_gap"]
    assert any("not analyzed further" in d for d in details)
    assert col(rows, "response_complete") == [None]


def test_hpack_error_makes_later_headers_of_that_direction_unknown() -> None:
    c, s = client_side(), server_side()
    c.at(10 * MS).headers(1, req_fields("/ok"), end_stream=True)
    c.at(11 * MS).send(HeadersFrame(3, b"\xff\xff\xff\xff\x7f", flags=["END_HEADERS", "END_STREAM"]).serialize())
    c.at(12 * MS).headers(5, req_fields("/later"), end_stream=True)
    s.at(20 * MS).headers(1, resp_fields(200), end_stream=True)
    s.headers(3, resp_fields(400), end_stream=True).headers(5, resp_fields(200), end_stream=True)
    conn, rows, _ = run(c, s)
    assert col(rows, "target") == ["/ok", None, None]
    assert col(rows, "status") == [200, 400, 200]
    assert "h2_hpack_error" in names(conn)
    truncated = HeadersFrame(3, b"\x82\xff", flags=["END_HEADERS", "END_STREAM"]).serialize()  # an index cut short
    c2 = client_side()
    c2.at(10 * MS).send(truncated)
    conn2, _, _ = run(c2, server_side())
    (detail,) = [d for _, n, d in conn2.anomalies() if n == "h2_hpack_error"]
    assert "integer" in detail and " at 0x" not in detail  # hpack names a memoryview by its address


def test_midstream_start_and_missing_preface() -> None:
    c, s = basic_conversation()
    start = len(client_side().data)
    s_start = len(server_side().data)
    # both directions start after their first frames: the client has no preface, the server no SETTINGS
    c_pieces = [p for p in c.pieces() if p[0] >= start]
    s_pieces = [p for p in s.pieces() if p[0] >= s_start]
    conn = Http2Connection()
    for ch, d in ((c_pieces, 0), (s_pieces, 1)):
        base = ch[0][0]
        conn.feed(d, chunk_of([(o - base, b, t) for o, b, t in ch]))
    _, rows, _ = run([], [], conn)
    assert col(rows, "stream_id") == [1, 3]
    assert col(rows, "method") == [None, None] and col(rows, "status") == [None, None]
    assert col(rows, "response_body_bytes") == [500, 4]
    assert {"h2_bad_preface", "h2_midstream"} <= set(names(conn))


def test_h2c_upgrade_starts_at_the_given_offsets() -> None:
    settings_b64 = "AAMAAABkAAQCAAAAAAIAAAAA"  # MAX_CONCURRENT_STREAMS 100, INITIAL_WINDOW_SIZE 33554432, ENABLE_PUSH 0
    h1_request = (b"GET /up HTTP/1.1\r\nHost: example.org\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                  b"Upgrade: h2c\r\nHTTP2-Settings: " + settings_b64.encode() + b"\r\n\r\n")
    h1_response = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    c = Side().at(5 * MS).send(h1_request).at(6 * MS).send(PREFACE + SettingsFrame(0).serialize())
    c.at(30 * MS).headers(3, req_fields("/next"), end_stream=True)
    s = Side().at(10 * MS).send(h1_response).send(SettingsFrame(0, settings={3: 50}).serialize())
    s.at(20 * MS).headers(1, resp_fields(200)).data_frame(1, b"u" * 42, end_stream=True)
    s.at(40 * MS).headers(3, resp_fields(200), end_stream=True)
    up = H2cUpgrade(client_offset=len(h1_request), server_offset=len(h1_response), method="GET",
                    target="/up", host="example.org", ts_request_start_ns=5 * MS, ts_request_end_ns=5 * MS,
                    http2_settings=settings_b64)
    conn, rows, facts = run(c, s, Http2Connection(upgrade=up))
    assert col(rows, "stream_id") == [1, 3]
    assert col(rows, "method") == ["GET", "GET"]
    assert col(rows, "target") == ["/up", "/next"]
    assert col(rows, "http_version") == ["HTTP/1.1", "HTTP/2"]
    assert col(rows, "status") == [200, 200]
    assert col(rows, "ts_request_start") == [0.005, 0.03]
    assert col(rows, "response_body_bytes") == [42, 0]
    assert col(rows, "idle_before_ms") == [None, pytest.approx(10.0)]
    assert facts["settings"]["client"] == {"MAX_CONCURRENT_STREAMS": 100, "INITIAL_WINDOW_SIZE": 33554432,
                                           "ENABLE_PUSH": 0}
    assert facts["settings"]["server"] == {"MAX_CONCURRENT_STREAMS": 50}
    assert conn.anomalies() == []


def test_upgrade_from_http1_messages() -> None:
    req = Message(REQUEST, 0, 7, method="GET", target="/u", version="HTTP/1.1",
                  headers={"host": "h", "user-agent": "ua"})
    req.end, req.ts_end_ns = 120, 8
    resp = Message(RESPONSE, 0, 9, version="HTTP/1.1", status=101, header_end=71)
    resp.end = 71
    up = H2cUpgrade.from_http1(req, resp)
    assert (up.client_offset, up.server_offset, up.method, up.target, up.host, up.user_agent) == (
        120, 71, "GET", "/u", "h", "ua")
    assert (up.ts_request_start_ns, up.ts_request_end_ns) == (7, 8)


def test_status_and_length_of_latin1_superscripts_are_not_numbers() -> None:
    """b"\\xb2" (Latin-1 "²") passes str.isdigit() but not int(): a ":status" or an Upgrade request's
    Content-Length made of it is not a number (it used to raise ValueError: an ``h2_internal_error``)."""
    c, s = client_side(), server_side()
    c.at(1 * MS).headers(1, req_fields("/a"), end_stream=True)
    s.at(2 * MS).headers(1, [(b":status", b"2\xb20")], end_stream=True)
    conn, rows, _ = run(c, s)
    assert col(rows, "status") == [None]
    assert "h2_internal_error" not in names(conn)  # it was caught as one
    req = Message(REQUEST, 0, 7, method="POST", target="/u", version="HTTP/1.1",
                  headers={"host": "h", "content-length": "\xb2"}, header_end=60)
    resp = Message(RESPONSE, 0, 9, version="HTTP/1.1", status=101, header_end=71)
    assert H2cUpgrade.from_http1(req, resp).client_offset == 60  # the body's length is not known


def test_seal_keeps_the_results() -> None:
    c, s = basic_conversation()
    conn = Http2Connection()
    conn.feed(0, chunk_of(c.pieces()))
    conn.feed(1, chunk_of(s.pieces()))
    sealed = conn.seal("10.0.0.1", 80)
    assert isinstance(sealed, SealedHttp1)
    _, want, _ = run(c, s)
    rows, _ = transaction_rows(sealed, "C1", "10.0.0.1", 80)
    assert rows == want


def test_find_boundary() -> None:
    frames = (HeadersFrame(1, b"abc", flags=["END_HEADERS"]).serialize() + DataFrame(1, b"x" * 40).serialize()
              + PingFrame(0, b"12345678").serialize() + WindowUpdateFrame(1, window_increment=5).serialize())
    junk = bytes(range(200, 256)) * 3
    assert find_boundary(junk + frames, 16384) == len(junk)
    assert find_boundary(bytes(7) + frames[5:], 16384) > 0  # a later frame start is found
    assert find_boundary(junk, 16384) == -1
    # a CONTINUATION never starts a chain, and must follow a header block without END_HEADERS
    cont = ContinuationFrame(1, b"zz", flags=["END_HEADERS"]).serialize()
    assert find_boundary(cont + frames, 16384) == len(cont)


# =============================================================================================== hypothesis

_FLAG_SETS = st.sampled_from([(), ("END_STREAM",), ("END_HEADERS",), ("END_STREAM", "END_HEADERS")])


@st.composite
def conversations(draw: st.DrawFn) -> tuple[bytes, bytes]:
    c, s = client_side(), server_side()
    n = draw(st.integers(1, 5))
    for i in range(n):
        sid = 2 * i + 1
        c.headers(sid, req_fields(f"/{i}", draw(st.sampled_from(["GET", "POST"]))),
                  end_stream=draw(st.booleans()))
        if draw(st.booleans()):
            c.data_frame(sid, b"q" * draw(st.integers(0, 40)), end_stream=True, pad=draw(st.integers(0, 5)))
        s.headers(sid, resp_fields(draw(st.sampled_from([100, 200, 404]))))
        s.data_frame(sid, b"r" * draw(st.integers(0, 300)), end_stream=draw(st.booleans()))
        if draw(st.booleans()):
            s.send(RstStreamFrame(sid, error_code=draw(st.integers(0, 20))).serialize())
        if draw(st.booleans()):
            s.send(ContinuationFrame(sid, b"\x82", flags=["END_HEADERS"]).serialize())
    if draw(st.booleans()):
        s.send(GoAwayFrame(0, last_stream_id=2 * n - 1, error_code=draw(st.integers(0, 15))).serialize())
    return bytes(c.data), bytes(s.data)


def _mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    b = bytearray(data)
    for kind, pos, val in edits:
        if not b:
            break
        p = pos % len(b)
        if kind == 0:
            b[p] = val
        elif kind == 1:
            del b[p : p + 1 + val % 16]
        else:
            b[p:p] = bytes([val]) * (1 + val % 7)
    return bytes(b)


def _feed_all(client: bytes, server: bytes, c_cuts: list[int], s_cuts: list[int],
              c_holes: list[int], s_holes: list[int], constant_time: bool = False) -> Http2Connection:
    """Feed both byte strings cut at ``cuts`` into pieces (three pieces a chunk), dropping the pieces at
    ``holes`` (gaps). A piece's time grows with its offset, or is one instant per direction."""
    conn = Http2Connection()
    for d, data, cuts, holes in ((0, client, c_cuts, c_holes), (1, server, s_cuts, s_holes)):
        bounds = sorted({0, len(data), *(x % (len(data) + 1) for x in cuts)})
        pieces = [(a, data[a:b], (1 + d) * MS if constant_time else a * 1000) for a, b in itertools.pairwise(bounds)]
        dropped = {h % len(pieces) for h in holes} if pieces else set()
        pieces = [p for i, p in enumerate(pieces) if i not in dropped]
        for i in range(0, len(pieces), 3):
            conn.feed(d, chunk_of(pieces[i : i + 3]))
    conn.feed(0, StreamChunk.empty(final=True))
    conn.feed(1, StreamChunk.empty(final=True))
    return conn


def _check(conn: Http2Connection) -> None:
    rows, facts = transaction_rows(conn, "C", "1.2.3.4", 80)
    assert all(len(r) == BASE_COLUMNS for r in rows)
    assert [r[COLS["trans_depth"]] for r in rows] == list(range(1, len(rows) + 1))
    assert facts["max_concurrent_streams"] >= facts["pipelined_max"] >= 0
    an = conn.anomalies()
    assert all(isinstance(t, int) and isinstance(n, str) and isinstance(d, str) for t, n, d in an)
    assert "h2_internal_error" not in {n for _, n, _ in an}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv=conversations(),
       c_edits=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
       s_edits=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
       c_cuts=st.lists(st.integers(0, 10_000), max_size=8), s_cuts=st.lists(st.integers(0, 10_000), max_size=8),
       c_holes=st.lists(st.integers(0, 100), max_size=2), s_holes=st.lists(st.integers(0, 100), max_size=2))
def test_mutated_streams_never_raise(conv: tuple[bytes, bytes], c_edits: list[tuple[int, int, int]],
                                     s_edits: list[tuple[int, int, int]], c_cuts: list[int], s_cuts: list[int],
                                     c_holes: list[int], s_holes: list[int]) -> None:
    client, server = conv
    conn = _feed_all(_mutate(client, c_edits), _mutate(server, s_edits), c_cuts, s_cuts, c_holes, s_holes)
    _check(conn)


@settings(max_examples=200, deadline=None)
@given(client=st.binary(max_size=400), server=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=5))
def test_random_bytes_never_raise(client: bytes, server: bytes, cuts: list[int]) -> None:
    _check(_feed_all(PREFACE + client, server, cuts, cuts, [], []))
    _check(_feed_all(client, server, cuts, cuts, [1], [2]))


@settings(max_examples=100, deadline=None)
@given(conv=conversations(), c_cuts=st.lists(st.integers(0, 10_000), max_size=10),
       s_cuts=st.lists(st.integers(0, 10_000), max_size=10))
def test_resegmenting_never_changes_rows(conv: tuple[bytes, bytes], c_cuts: list[int], s_cuts: list[int]) -> None:
    client, server = conv
    # one instant per direction: a frame's time then does not depend on where the pieces were cut
    want = _feed_all(client, server, [], [], [], [], constant_time=True)
    got = _feed_all(client, server, c_cuts, s_cuts, [], [], constant_time=True)
    assert transaction_rows(got, "C", "h", 1) == transaction_rows(want, "C", "h", 1)
    assert sorted(got.anomalies()) == sorted(want.anomalies())


# ========================================================================================== real captures


@dataclass(frozen=True)
class Capture:
    path: str
    mode: str  # prior | upgrade
    # expected (client port → [(stream id, method, target, status)] in trans_depth order), independent of tshark
    expect: dict[int, list[tuple[int, str | None, str | None, int | None]]]


CAPTURES = [
    Capture("arkime/http2-nghttp2.pcap", "prior", {
        49570: [(13, "GET", "/", 200), (2, "GET", "/stylesheets/screen.css", 200)]}),
    Capture("suricata-verify/http2-h2c-ipv6-port3000.pcap", "prior", {
        56508: [(1, "GET", "/doc/manual/html/index.html", 200),
                (3, "GET", "/doc/manual/html/_static/css/theme.css", 200),
                (5, "GET", "/doc/manual/html/_static/jquery.js", 200),
                (7, "GET", "/doc/manual/html/_static/underscore.js", 200),
                (9, "GET", "/doc/manual/html/_static/doctools.js", 200),
                (11, "GET", "/doc/manual/html/_static/js/theme.js", 200)]}),
    Capture("suricata-verify/http2-plaintext-on-443.pcap", "prior", {
        56238: [(1, "GET", "/robots.txt", 200),
                (3, "POST", "/youtubei/v1/log_event?alt=json&key=AIzaSyAO_FJ2SlqU8Q4STEHLGCilw_Y9_11qcW8", 200),
                (5, "GET", "/favicon.ico", 200), (7, "GET", "/sw.js", 200)]}),
    Capture("suricata-verify/dns_over_http2_post.pcap", "prior", {
        52694: [(sid, "POST", "/dns-query", 200) for sid in range(15, 83, 2)]}),
    Capture("suricata-verify/http2-range.pcap", "upgrade", {
        57226: [(1, "GET", "/eicar", 206)], 57228: [(1, "GET", "/eicar", 206)],
        57230: [(1, "GET", "/eicar", 206)]}),
    Capture("scapy/http2_h2c.pcap", "upgrade", {
        58038: [(1, "GET", "/robots.txt", 200), (3, "GET", "/humans.txt", 404)]}),
]


class UpgradeSwitch:
    """Test handler for h2c after ``Upgrade``: the HTTP/1.1 head of each direction is parsed by its own
    ``Http1Parser`` (the request, the ``101``); when both directions have ended, an ``Http2Connection`` is
    started at the offsets they give (``H2cUpgrade.from_http1``) and the kept chunks are replayed to it."""

    def __init__(self) -> None:
        self.messages: tuple[list[Message], list[Message]] = ([], [])
        self.parsers = (Http1Parser(REQUEST, _no_method, self.messages[0].append),
                        Http1Parser(RESPONSE, _get_method, self.messages[1].append))
        self.chunks: tuple[list[StreamChunk], list[StreamChunk]] = ([], [])
        self.ended = [False, False]
        self.h2: Http2Connection | None = None

    def feed(self, direction: int, chunk: StreamChunk) -> None:
        self.chunks[direction].append(chunk)
        self.parsers[direction].feed(chunk)
        if chunk.final:
            self.ended[direction] = True
        switched = [m for m in self.messages[1] if m.status == 101]
        if all(self.ended) and self.h2 is None and switched and self.messages[0]:
            self.h2 = Http2Connection(upgrade=H2cUpgrade.from_http1(self.messages[0][0], switched[0]))
            for d in (0, 1):
                for ch in self.chunks[d]:
                    self.h2.feed(d, ch)


def _no_method(msg: Message) -> str | None:
    return None


def _get_method(msg: Message) -> str | None:
    return "GET"


def observe(cap: Capture, chunk_packets: int = 262_144) -> dict[int, tuple[Http2Connection | SealedHttp1,
                                                                            tuple[str, int], tuple[str, int]]]:
    """Run the capture through the TCP tracker; per client port: (the HTTP/2 result, client, server)."""
    finished: list[Connection] = []
    factory = Http2Connection if cap.mode == "prior" else UpgradeSwitch
    tracker = ConnectionTracker(factory, classify_payload, finished.append)
    for batch in open_capture(CORPUS / cap.path, chunk_packets=chunk_packets).batches():
        decoded, _ = decode_batch(batch)
        tracker.feed(decoded.take(decoded.proto == TCP))
    tracker.finish()
    out: dict[int, Any] = {}
    for conn in finished:
        handler: Any = conn.handler
        if isinstance(handler, UpgradeSwitch):
            handler = handler.h2
        if handler is not None:
            out[conn.endpoint(0)[1]] = (handler, conn.endpoint(0), conn.endpoint(1))
    return out


def _rows(result: Any, server: tuple[str, int]) -> list[dict[str, Any]]:
    rows, _ = transaction_rows(result, "C", *server)
    return [dict(zip(TRANSACTION_COLUMNS, r, strict=False)) for r in rows]


def _needs(cap: Capture) -> None:
    if not (CORPUS / cap.path).exists():
        pytest.skip(f"{cap.path} is not in the corpus")


@pytest.mark.corpus
@pytest.mark.parametrize("cap", CAPTURES, ids=[c.path for c in CAPTURES])
def test_capture_streams_as_expected(cap: Capture) -> None:
    _needs(cap)
    seen = observe(cap)
    got = {}
    for port, (result, _client, server) in seen.items():
        rows = _rows(result, server)
        if rows:
            got[port] = [(r["stream_id"], r["method"], r["target"], r["status"]) for r in rows]
    assert got == cap.expect
    for result, _, server in seen.values():
        rows = _rows(result, server)
        assert all(r["response_complete"] for r in rows)
        assert all(r["request_complete"] for r in rows)
        assert {a[1] for a in result.anomalies()} <= {"h2_stream_reset"}, result.anomalies()


@pytest.mark.corpus
@pytest.mark.parametrize("cap", CAPTURES, ids=[c.path for c in CAPTURES])
def test_capture_chunking_does_not_change_rows(cap: Capture) -> None:
    _needs(cap)

    def rows_of(n: int) -> dict[int, list[dict[str, Any]]]:
        return {port: _rows(res, server) for port, (res, _c, server) in observe(cap, n).items()}

    want = rows_of(262_144)
    for n in (1, 2, 7):
        assert rows_of(n) == want, n


@pytest.mark.corpus
def test_arkime_facts() -> None:
    cap = CAPTURES[0]
    _needs(cap)
    [(result, _, server)] = observe(cap).values()
    rows, facts = transaction_rows(result, "C", *server)
    assert facts["requests"] == 1 and facts["pushed_streams"] == 1
    assert facts["max_concurrent_streams"] == 2
    assert facts["goaway"]["by"] == "client" and facts["goaway"]["error"] == "NO_ERROR"
    assert facts["goaway"]["last_stream_id"] == 2
    assert facts["settings"]["server"]["HEADER_TABLE_SIZE"] == 8192
    r = [dict(zip(TRANSACTION_COLUMNS, x, strict=False)) for x in rows]
    assert [x["response_body_bytes"] for x in r] == [6616, 39082]  # the responses' Content-Length
    assert [x["keep_alive"] for x in r] == [True, True]  # the client's GOAWAY came after both ended


# ----------------------------------------------------------------------------------------- tshark oracle


def _list(x: Any) -> list[Any]:
    if x is None:
        return []
    return x if isinstance(x, list) else [x]


@dataclass
class TsStream:
    first_frame: int = 0
    method: str | None = None
    path: str | None = None
    statuses: list[int] = field(default_factory=list)
    body: list[int] = field(default_factory=lambda: [0, 0])  # DATA payload minus padding, per direction
    request_start: float | None = None  # first client HEADERS whose header fields tshark decoded
    response_end: float | None = None  # server END_STREAM


def tshark_streams(cap: Capture, client_ports: set[int]) -> dict[frozenset[int], dict[int, TsStream]]:
    """Per TCP connection (its two ports): tshark's HTTP/2 streams that carried HEADERS or DATA or were
    promised (PRIORITY-only streams are not streams in use). ``client_ports``: which side is the client."""
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    entries = manifest if isinstance(manifest, list) else next(v for v in manifest.values() if isinstance(v, list))
    extra: list[str] = next((e.get("tshark_args", []) for e in entries if e.get("file") == cap.path), [])
    out = subprocess.run(
        ["tshark", "-n", "-r", str(CORPUS / cap.path), *extra, "-Y", "http2", "-T", "json", "--no-duplicate-keys",
         "-J", "frame tcp http2"], capture_output=True, text=True, check=True).stdout
    conns: dict[frozenset[int], dict[int, TsStream]] = {}
    for pkt in json.loads(out):
        layers = pkt["_source"]["layers"]
        frame = layers["frame"]
        number = int(_list(frame["frame.number"])[0])
        ts = float(_list(frame["frame.time_epoch"])[0])
        tcp = _list(layers["tcp"])[0]
        sport, dport = int(_list(tcp["tcp.srcport"])[0]), int(_list(tcp["tcp.dstport"])[0])
        streams = conns.setdefault(frozenset((sport, dport)), {})
        for layer in _list(layers.get("http2")):
            for fr in _list(layer.get("http2.stream") if isinstance(layer, dict) else None):
                _tshark_frame(fr, sport in client_ports, number, ts, streams)
    return conns


def _tshark_frame(fr: dict[str, Any], from_client: bool, number: int, ts: float,
                  streams: dict[int, TsStream]) -> None:
    ftype = int(_list(fr.get("http2.type", "-1"))[0])
    sid = int(_list(fr.get("http2.streamid", "0"))[0])
    flags = int(_list(fr.get("http2.flags", "0x00"))[0], 16)
    fields = {h.get("http2.header.name"): h.get("http2.header.value") for h in _list(fr.get("http2.header"))}
    if ftype == 5:  # PUSH_PROMISE: the promised stream's request
        pid = int(_list(fr["http2.push_promise.promised_stream_id"])[0])
        st_ = streams.setdefault(pid, TsStream(number))
        st_.method, st_.path, st_.request_start = fields.get(":method"), fields.get(":path"), ts
        return
    if sid == 0 or ftype not in (0, 1):
        return
    st_ = streams.setdefault(sid, TsStream(number))
    if ftype == 1:
        if from_client and ":method" in fields and st_.method is None:
            st_.method, st_.path, st_.request_start = fields[":method"], fields.get(":path"), ts
        if not from_client and ":status" in fields:
            st_.statuses.append(int(fields[":status"]))
    else:
        length = int(_list(fr.get("http2.length", "0"))[0])
        pad = int(_list(fr.get("http2.pad_length", "0"))[0])
        st_.body[0 if from_client else 1] += length - (pad + 1 if flags & 0x8 else 0)
    if not from_client and flags & 0x1:
        st_.response_end = ts


@pytest.mark.corpus
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("cap", CAPTURES, ids=[c.path for c in CAPTURES])
def test_capture_matches_tshark(cap: Capture) -> None:
    _needs(cap)
    seen = observe(cap)
    oracle = tshark_streams(cap, set(seen))
    compared = 0
    for (result, (_cip, cport), server) in seen.values():
        key = frozenset((cport, server[1]))
        if key not in oracle:
            assert _rows(result, server) == [], f"HTTP/2 streams tshark does not see on port {cport}"
            continue
        ts_streams = oracle[key]
        rows = _rows(result, server)
        # streams: the same set, opened in the same order
        assert [r["stream_id"] for r in rows] == sorted(ts_streams, key=lambda s: (ts_streams[s].first_frame, s))
        for r in rows:
            t = ts_streams[r["stream_id"]]
            if t.method is not None:  # tshark decoded the request's header fields
                assert (r["method"], r["target"]) == (t.method, t.path)
                assert r["ts_request_start"] == pytest.approx(t.request_start, abs=1e-6)
            finals = [s for s in t.statuses if not 100 <= s < 200]
            assert r["status"] == (finals[0] if finals else None)
            assert r["interim_responses"] == len(t.statuses) - len(finals)
            assert r["response_body_bytes"] == t.body[1]
            if r["http_version"] == "HTTP/2":
                assert r["request_body_bytes"] == t.body[0]
            if t.response_end is not None:
                assert r["ts_response_end"] == pytest.approx(t.response_end, abs=1e-6)
            compared += 1
    assert compared == sum(len(v) for v in cap.expect.values())


# ======================================================================= a fresh recording (nghttp → nginx)

NGINX_CONF = """
daemon off;
master_process on;
user root;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:8080 http2;
        root {tmp}/www;
        location /api/ {{ return 200 "ok\\n"; }}
    }}
}}
"""
RECORD_TOOLS = ("ip", "nginx", "tcpdump", "nghttp")


def _nghttp_truth(log: str) -> list[tuple[int, str | None, str | None, int | None]]:
    """(stream id, method, path, status) of every stream ``nghttp -v`` opened or was promised."""
    streams: dict[int, dict[str, Any]] = {}
    current: int | None = None
    for line in log.splitlines():
        if line.startswith("["):
            current = None
            if "send HEADERS frame" in line or "recv PUSH_PROMISE frame" in line:
                key = "promised_stream_id=" if "PUSH_PROMISE" in line else "stream_id="
                if key in line:
                    current = int(line.split(key)[1].split(">")[0].split(",")[0])
                    streams.setdefault(current, {})
            elif "recv (stream_id=" in line and ":status:" in line:
                sid = int(line.split("stream_id=")[1].split(")")[0])
                streams.setdefault(sid, {})["status"] = int(line.split(":status:")[1])
        elif current is not None and "promised_stream_id=" in line:
            promised = int(line.split("promised_stream_id=")[1].split(")")[0].split(",")[0])
            streams.pop(current, None)
            current = promised
            streams.setdefault(current, {})
        elif current is not None and line.strip().startswith((":method:", ":path:")):
            name, _, value = line.strip()[1:].partition(": ")
            streams[current][name] = value
    return sorted((sid, v.get("method"), v.get("path"), v.get("status")) for sid, v in streams.items()
                  if "method" in v)


def _record_h2c(tmp_path: Path, clients: list[list[str]]) -> tuple[Path, list[str]]:
    """nginx serving h2c (prior knowledge) on 127.0.0.1:8080 in a network namespace of its own, each client
    command run in it in turn while tcpdump records lo: the capture and each client's output."""
    import os
    import signal
    import time

    if os.geteuid() != 0:
        pytest.skip("recording in a network namespace needs root")
    www = tmp_path / "www"
    (www / "api").mkdir(parents=True)
    (www / "index.html").write_bytes(b"<html>" + b"i" * 294)
    (www / "big.bin").write_bytes(bytes(range(256)) * 800)  # 204 800 bytes: many DATA frames
    (www / "small.txt").write_bytes(b"small\n")
    (tmp_path / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp_path))
    ns = f"anz-h2-{os.getpid()}"
    pcap = tmp_path / "h2c.pcap"
    logs: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "mtu", "1500", "up"], check=True)
        nginx = subprocess.Popen(["ip", "netns", "exec", ns, "nginx", "-c", str(tmp_path / "nginx.conf"),
                                  "-p", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(nginx)
        for _ in range(100):
            if (tmp_path / "nginx.pid").exists():
                break
            time.sleep(0.05)
        tcpdump = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", "lo", "-s", "0", "-w", str(pcap)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(tcpdump)
        assert tcpdump.stderr is not None
        tcpdump.stderr.readline()  # "listening on lo ..."
        for args in clients:
            out = subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True, text=True, timeout=60)
            logs.append(out.stdout)
            time.sleep(0.2)
        time.sleep(1.3)  # tcpdump on lo hands packets over on a ~1 s timer
        tcpdump.send_signal(signal.SIGINT)
        _, err = tcpdump.communicate(timeout=10)
        assert re.search(rb"(^|\n)0 packets dropped by kernel", err), err
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGQUIT if p is procs[0] else signal.SIGINT)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        subprocess.run(["ip", "netns", "del", ns], check=False)
    return pcap, logs


@pytest.mark.netns
@pytest.mark.skipif(any(shutil.which(t) is None for t in RECORD_TOOLS), reason="needs ip, nginx, tcpdump, nghttp")
def test_fresh_nghttp_recording(tmp_path: Path) -> None:
    base = "http://127.0.0.1:8080"
    runs = [  # one nghttp process = one connection
        [f"{base}/index.html", f"{base}/big.bin", f"{base}/small.txt", f"{base}/missing", f"{base}/api/x"],
        ["-m", "3", f"{base}/small.txt"],
    ]
    pcap, logs = _record_h2c(tmp_path, [["nghttp", "-v", "-n", *args] for args in runs])
    truths = [_nghttp_truth(log) for log in logs]
    assert [len(t) for t in truths] == [5, 3], logs
    assert truths[0][3][3] == 404 and truths[0][1][3] == 200
    finished: list[Connection] = []
    tracker = ConnectionTracker(Http2Connection, classify_payload, finished.append)
    for batch in open_capture(pcap, chunk_packets=64).batches():
        decoded, _ = decode_batch(batch)
        tracker.feed(decoded.take(decoded.proto == TCP))
    tracker.finish()
    finished.sort(key=lambda cn: cn.first_frame)
    assert len(finished) == len(runs)
    for conn, truth in zip(finished, truths, strict=True):
        handler: Any = conn.handler
        rows = _rows(handler, conn.endpoint(1))
        got = sorted((r["stream_id"], r["method"], r["target"], r["status"]) for r in rows)
        assert got == truth
        assert all(r["response_complete"] and r["request_complete"] for r in rows)
        assert handler.anomalies() == []
    big = next(r for r in _rows(finished[0].handler, finished[0].endpoint(1)) if r["target"] == "/big.bin")
    assert big["response_body_bytes"] == 204_800


@pytest.mark.netns
@pytest.mark.skipif(any(shutil.which(t) is None for t in (*RECORD_TOOLS, "h2load", "tshark")),
                    reason="needs ip, nginx, tcpdump, h2load, tshark")
def test_fresh_h2load_recording_packs_its_streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """h2load makes 3,000 requests on one h2c connection, ten streams at a time: the connection's closed
    streams are packed as it goes (``STREAM_PACK_EVERY``), and every stream still gets its row, as tshark
    sees the responses, the same as with streams kept as objects."""
    from analyzer.http2 import connection

    n = 3_000
    pcap, logs = _record_h2c(tmp_path, [["h2load", "-n", str(n), "-c", "1", "-m", "10",
                                         "http://127.0.0.1:8080/small.txt"]])
    assert f"{n} succeeded" in logs[0], logs[0][-1000:]
    a = analyzer.analyze(pcap)
    assert a.anomalies.empty, a.anomalies["name"].value_counts().to_dict()
    (c,) = [row for _, row in a.connections.iterrows() if row["requests"] > 0]
    assert (c["protocol"], c["requests"]) == ("h2c", n) and 1 < c["max_concurrent_streams"] <= 10
    t = a.transactions
    assert len(t) == n and (t["status"] == 200).all() and (t["response_body_bytes"] == 6).all()
    assert t["request_complete"].all() and t["response_complete"].all()
    assert sorted(t["stream_id"]) == list(range(1, 2 * n, 2))
    oracle = subprocess.run(["tshark", "-n", "-r", str(pcap), "-d", "tcp.port==8080,http2", "-Y", "http2",
                             "-T", "json", "--no-duplicate-keys", "-J", "frame tcp http2"],
                            capture_output=True, text=True, check=True).stdout
    streams: dict[int, TsStream] = {}
    for pkt in json.loads(oracle):  # frame by frame: a packet may carry HEADERS and DATA of several streams
        layers = pkt["_source"]["layers"]
        from_client = int(_list(_list(layers["tcp"])[0]["tcp.srcport"])[0]) != 8080
        for layer in _list(layers.get("http2")):
            for fr in _list(layer.get("http2.stream") if isinstance(layer, dict) else None):
                _tshark_frame(fr, from_client, int(_list(layers["frame"]["frame.number"])[0]),
                              float(_list(layers["frame"]["frame.time_epoch"])[0]), streams)
    assert {sid: st.statuses for sid, st in streams.items()} == {sid: [200] for sid in range(1, 2 * n, 2)}
    monkeypatch.setattr(connection, "STREAM_PACK_EVERY", 1 << 30)  # never packed: the same tables
    kept = analyzer.analyze(pcap)
    pd.testing.assert_frame_equal(kept.transactions, t)
    pd.testing.assert_frame_equal(kept.connections, a.connections)


@pytest.mark.parametrize("packed", [False, True])
def test_a_long_connection_shares_the_values_its_streams_repeat(monkeypatch: pytest.MonkeyPatch,
                                                                packed: bool) -> None:
    """Method, authority, user agent and content type: one object per distinct value, not one per stream
    (HPACK decodes a new string each time). 5,000 streams held as objects at under 800 B each (about 690;
    920 with a string per stream); packed as they close (the default), at under 350 B each."""
    import tracemalloc

    from analyzer.http2 import connection

    if not packed:
        monkeypatch.setattr(connection, "STREAM_PACK_EVERY", 1 << 30)
    n, per_chunk = 5_000, 500
    c, s = client_side(), server_side()
    cuts: list[tuple[int, int]] = []
    for k in range(n):
        sid = 2 * k + 1
        c.at(k * MS).headers(sid, req_fields(f"/{k}"), end_stream=True)
        s.at(k * MS + MS // 2).headers(sid, resp_fields(200)).data_frame(sid, b"ok", end_stream=True)
        if k % per_chunk == per_chunk - 1:
            cuts.append((len(c.data), len(s.data)))
    chunks: list[tuple[list[tuple[int, bytes, int]], list[tuple[int, bytes, int]]]] = []
    c_pieces, s_pieces = c.pieces(), s.pieces()
    lo = (0, 0)
    for hi in cuts:
        chunks.append(([p for p in c_pieces if lo[0] <= p[0] < hi[0]], [p for p in s_pieces if lo[1] <= p[0] < hi[1]]))
        lo = hi
    conn = Http2Connection()
    conn.feed(0, chunk_of(chunks[0][0]))
    conn.feed(1, chunk_of(chunks[0][1]))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for client, server in chunks[1:]:
            conn.feed(0, chunk_of(client))
            conn.feed(1, chunk_of(server))
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    print(f"{held / (n - per_chunk):.0f} B per stream")
    assert held / (n - per_chunk) < (350 if packed else 800), f"{held / (n - per_chunk):.0f} B per stream"
    assert len(conn.streams) <= (2 * connection.STREAM_PACK_EVERY if packed else n)
    first, last = conn._known(1), conn._known(2 * n - 1)  # (taken back out when packed)
    assert first is not None and last is not None
    for name in ("method", "host", "user_agent", "content_type"):
        assert getattr(first, name) is getattr(last, name) is not None, name
    rows = transaction_rows(conn, "C1", "10.0.0.1", 80)[0]
    assert len(rows) == n and col(rows, "host")[-1] == "example.org" and col(rows, "target")[-1] == f"/{n - 1}"


def test_header_blocks_decoded_again_only_while_the_table_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """A header block that leaves the dynamic table as it was is not decoded again for the same bytes
    (a load test's requests); one that changes the table makes the same bytes read other entries, so what
    was kept is forgotten: the fields are hpack's every time."""
    from hpack import Decoder

    calls = [0]
    decode = Decoder.decode

    def counted(self: Decoder, data: bytes, raw: bool = False) -> Any:
        calls[0] += 1
        return decode(self, data, raw=raw)

    monkeypatch.setattr(Decoder, "decode", counted)
    get = bytes([0x82, 0x86, 0x84])  # :method GET, :scheme http, :path / (static table)
    blocks = [
        get + bytes([0x7A, 0x01]) + b"A",  # user-agent "A", indexed: the table is [A]
        get + bytes([0xBE]),  # index 62: A (the table unchanged)
        get + bytes([0xBE]),  # the same bytes: not decoded again
        get + bytes([0x7A, 0x01]) + b"B",  # user-agent "B", indexed: the table is [B, A]
        get + bytes([0xBE]),  # the same bytes as before, now B
        get + bytes([0xBF]),  # index 63: A
        get + bytes([0xBE]),  # B again, from what was kept
    ]
    c, s = client_side(), server_side()
    for k, block in enumerate(blocks):
        sid = 2 * k + 1
        c.at(k * MS).send(HeadersFrame(sid, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
        s.at(k * MS + MS // 2).headers(sid, resp_fields(200), end_stream=True)
    calls[0] = 0
    _conn, rows, _facts = run(c, s)
    assert col(rows, "user_agent") == ["A", "A", "A", "B", "B", "A", "B"]
    assert col(rows, "method") == ["GET"] * len(blocks)
    # client blocks decoded: all but the two repeated while the table stood still; server blocks: the
    # first and the one after it changed the table (the encoder indexes content-type once)
    assert calls[0] == (len(blocks) - 2) + 2


def late_frames_conversation() -> tuple[Side, Side]:
    """Streams that close and are then touched again (a late RST_STREAM, DATA after END_STREAM, a
    PUSH_PROMISE of a closed pushed stream's id), a stream without a request, one that never ends, two
    opened in the same frame time, and a reset of a stream never seen."""
    c, s = client_side(), server_side()
    for k in range(12):
        sid = 2 * k + 1
        c.at(k * MS).headers(sid, req_fields(f"/{k}"), end_stream=True)
        s.at(k * MS + MS // 2).headers(sid, resp_fields(200)).data_frame(sid, b"ok", end_stream=True)
    pp = PushPromiseFrame(1, promised_stream_id=2, data=s.encoder.encode(req_fields("/pushed")), flags=["END_HEADERS"])
    s.at(13 * MS).send(pp.serialize())
    s.at(13 * MS).headers(2, resp_fields(200, "text/css")).data_frame(2, b"x", end_stream=True)
    s.at(14 * MS).headers(101, resp_fields(204), end_stream=True)  # no request seen: an orphan
    c.at(15 * MS).headers(25, req_fields("/a"), end_stream=True)
    c.at(15 * MS).headers(27, req_fields("/b"), end_stream=True)  # the same time: by stream id
    s.at(16 * MS).headers(27, resp_fields(200)).data_frame(27, b"b", end_stream=True)
    s.at(16 * MS).headers(25, resp_fields(200)).data_frame(25, b"a", end_stream=True)
    c.at(17 * MS).headers(29, req_fields("/never"), end_stream=True)  # never answered
    c.at(30 * MS).send(RstStreamFrame(3, error_code=8).serialize())  # CANCEL, long after stream 3 ended
    s.at(31 * MS).data_frame(5, b"late", end_stream=True)  # DATA on a closed stream
    s.at(32 * MS).send(pp.serialize())  # promises stream 2 again: in use
    c.at(33 * MS).send(RstStreamFrame(4, error_code=0).serialize())  # never seen
    c.at(34 * MS).send(RstStreamFrame(23, error_code=0).serialize())  # NO_ERROR after the end: harmless
    return c, s


@pytest.mark.parametrize(("every", "block", "decoded"), [(1, 1, 1), (1, 2, 1), (2, 3, 2), (4, 1024, 4)])
def test_packed_streams_give_the_rows_of_the_streams(monkeypatch: pytest.MonkeyPatch, every: int, block: int,
                                                     decoded: int) -> None:
    """Closed streams packed as they close, into blocks of ``block``, read back ``decoded`` blocks at a time:
    the same rows, facts and anomalies as streams kept as objects, also when a frame comes for a stream
    already packed (it is taken back out first), fed whole or in pieces."""
    from analyzer.http2 import connection

    c, s = late_frames_conversation()

    def fed(cuts: list[int], parts: int) -> tuple[Http2Connection, list[tuple[Any, ...]], dict[str, Any], Any]:
        conn = Http2Connection()
        for client, server in itertools.zip_longest(_cut(c.pieces(cuts), parts), _cut(s.pieces(cuts), parts),
                                                    fillvalue=[]):
            conn.feed(0, chunk_of(client))
            conn.feed(1, chunk_of(server))
        seen = conn.exchanges_seen
        conn.feed(0, StreamChunk.empty(final=True))
        conn.feed(1, StreamChunk.empty(final=True))
        rows, facts = transaction_rows(conn, "C1", "10.0.0.1", 80)
        assert seen == len(rows)
        return conn, rows, facts, conn.anomalies()

    for cuts, parts in (([], 1), ([], 5), (list(range(0, max(len(c.data), len(s.data)), 97)), 7)):
        monkeypatch.setattr(connection, "STREAM_PACK_EVERY", 1 << 30)
        kept_conn, kept_rows, kept_facts, kept_anomalies = fed(cuts, parts)
        assert kept_conn.packed is None
        assert kept_facts["reset_streams"] == 2 and kept_facts["pushed_streams"] == 1
        assert col(kept_rows, "response_body_bytes")[2] == 6  # stream 5: "ok" then "late"
        assert {a[1] for a in kept_anomalies} >= {"h2_stream_reset", "h2_frame_error", "h2_stream_without_request",
                                                  "h2_unfinished_streams"}
        monkeypatch.setattr(connection, "STREAM_PACK_EVERY", every)
        monkeypatch.setattr(connection, "STREAM_PACK_BLOCK", block)
        monkeypatch.setattr(connection, "_DECODED_STREAM_BLOCKS", decoded)
        conn, rows, facts, anomalies = fed(cuts, parts)
        assert conn.packed is None and conn._stream_notes is not None  # it was packed, and consumed
        assert rows == kept_rows
        assert facts == kept_facts
        assert anomalies == kept_anomalies
        assert transaction_rows(conn, "C1", "10.0.0.1", 80)[0] == []


@pytest.mark.parametrize("stored", [False, True])
def test_a_chunk_that_opens_thousands_of_streams_holds_a_bounded_number(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path, stored: bool) -> None:
    """An h2load-style client: 3,000 requests in the client's chunk, all answered in the server's (a chunk
    feeds one direction's bytes before the other's, so all are open when the responses come). With
    ``MAX_OPEN_STREAMS_HELD = 256`` no more than that are held as objects while either side is fed (the
    newest open ones are packed, and taken back out by their responses, in order); the rows, facts and
    anomalies are those of every stream held. Held in memory, or with a block file."""
    from analyzer.http2 import connection
    from analyzer.spill import BlockFile

    n = 3000
    c, s = client_side(), server_side()
    for i in range(n):
        c.at(1000 * MS + i).headers(2 * i + 1, req_fields(f"/{i}"), end_stream=True)
    for i in range(n):
        s.at(1100 * MS + i).headers(2 * i + 1, resp_fields(200)).data_frame(2 * i + 1, b"ok", end_stream=True)
    _, want_rows, want_facts = run(c, s)
    monkeypatch.setattr(connection, "MAX_OPEN_STREAMS_HELD", 256)
    monkeypatch.setattr(connection, "STREAM_PACK_EVERY", 64)
    conn = Http2Connection(store=BlockFile(tmp_path / "blocks.bin") if stored else None)
    most = 0
    real_stream = connection.Http2Connection._stream

    def counted(self: Http2Connection, sid: int, ts: int) -> Any:
        nonlocal most
        most = max(most, len(self.streams))
        return real_stream(self, sid, ts)

    monkeypatch.setattr(connection.Http2Connection, "_stream", counted)
    _, rows, facts = run(c, s, conn)
    assert rows == want_rows and facts == want_facts
    assert conn.open_packed >= n - 2 * 256
    assert 128 <= most <= 256


def _cut(pieces: list[tuple[int, bytes, int]], parts: int) -> list[list[tuple[int, bytes, int]]]:
    size = -(-len(pieces) // parts)
    return [pieces[i:i + size] for i in range(0, len(pieces), size)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv=conversations(),
       c_edits=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
       s_edits=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
       step=st.integers(3, 40))
def test_mutated_streams_give_the_same_results_packed(conv: tuple[bytes, bytes], c_edits: list[tuple[int, int, int]],
                                                      s_edits: list[tuple[int, int, int]], step: int) -> None:
    """Whatever the bytes, packing every closed stream at once (blocks of two, one decoded at a time), and
    also every open one but the oldest (``MAX_OPEN_STREAMS_HELD = 2``), gives the rows, facts and anomalies
    of streams kept as objects. Fed in small pieces, so that frames come for streams already packed."""
    from analyzer.http2 import connection

    client, server = _mutate(conv[0], c_edits), _mutate(conv[1], s_edits)
    sides = []
    for data in (client, server):  # pieces of ``step`` bytes, timed by offset
        sides.append([[(a, data[a:a + step], a * 1000)] for a in range(0, len(data), step)])
    results = []
    for every, block, open_held in ((1 << 30, 1024, 1 << 30), (1, 2, 1 << 30), (1, 2, 2)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(connection, "STREAM_PACK_EVERY", every)
            mp.setattr(connection, "STREAM_PACK_BLOCK", block)
            mp.setattr(connection, "_DECODED_STREAM_BLOCKS", 1)
            mp.setattr(connection, "MAX_OPEN_STREAMS_HELD", open_held)
            conn = Http2Connection()
            for c_piece, s_piece in itertools.zip_longest(*sides, fillvalue=[]):  # the two sides in turn
                conn.feed(0, chunk_of(c_piece))
                conn.feed(1, chunk_of(s_piece))
            conn.feed(0, StreamChunk.empty(final=True))
            conn.feed(1, StreamChunk.empty(final=True))
            rows, facts = transaction_rows(conn, "C", "1.2.3.4", 80)
            results.append((rows, facts, conn.anomalies()))
    assert results[0] == results[1]


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300), flags=st.integers(0, 255), sid=st.integers(1, (1 << 31) - 1))
def test_a_headers_frame_without_padding_or_priority_is_its_payload(payload: bytes, flags: int, sid: int) -> None:
    """``Http2Connection`` takes such a frame's header block fragment without hyperframe: hyperframe agrees."""
    flags &= ~(h2frames.PADDED | h2frames.PRIORITY_FLAG)
    header = struct.pack(">I", len(payload))[1:] + bytes([h2frames.HEADERS, flags]) + struct.pack(">I", sid)
    frame, length = Frame.parse_frame_header(memoryview(header))
    frame.parse_body(memoryview(payload))
    assert isinstance(frame, HeadersFrame) and length == len(payload) and frame.data == payload


def test_the_live_dashboard_counts_packed_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    """The live view's requests of an open HTTP/2 connection count its packed streams too (not only those
    still held as objects), directly and through the TLS / dispatch wrappers' ``inner``."""
    from analyzer.dispatch import ConnectionHandler
    from analyzer.http2 import connection
    from analyzer.report.live_dashboard import requests_so_far

    monkeypatch.setattr(connection, "STREAM_PACK_EVERY", 2)
    c, s = client_side(), server_side()
    for k in range(7):
        c.at(k * MS).headers(2 * k + 1, req_fields(f"/{k}"), end_stream=True)
        s.at(k * MS + MS // 2).headers(2 * k + 1, resp_fields(200), end_stream=True)
    conn = Http2Connection()
    for (c_piece, s_piece) in itertools.zip_longest(c.pieces(), s.pieces(), fillvalue=None):
        if c_piece is not None:
            conn.feed(0, chunk_of([c_piece]))
        if s_piece is not None:
            conn.feed(1, chunk_of([s_piece]))
    assert conn.packed is not None and len(conn.packed) >= 4 and len(conn.streams) < 7
    assert requests_so_far(conn) == 7
    wrapped = ConnectionHandler()
    wrapped.inner = conn
    assert requests_so_far(wrapped) == 7
