"""HTTP/2 on one connection, observed passively: every stream is a transaction.

``Http2Connection`` has the interface of ``analyzer.http.transactions.Http1Connection``: ``feed(direction,
chunk)`` with the reassembled pieces of each direction (0 client → server, 1 server → client),
``transaction_rows(server_ip, server_port)`` and ``anomalies()``. It owns:

- frames: ``frames.FrameReader`` cuts each direction into frames; ``hyperframe`` parses their payloads, but
  for a HEADERS frame without padding or priority, whose header block fragment is its payload (hyperframe's
  parse was a sixth of a long connection's time: 50,000 streams 3.48 -> 2.79 s of CPU);
- header fields: one ``hpack.Decoder`` per direction, fed every header block of that direction in order
  (HEADERS + CONTINUATION, and PUSH_PROMISE from the server). A decode error, a header block that was not
  captured whole, or a gap that lost a frame boundary makes the decoder's state unknown: from then on the
  header fields of that direction are unknown (null columns) and an anomaly says why. Frames, streams,
  times and sizes are still followed;
- streams: a client HEADERS opens a request stream, a PUSH_PROMISE a pushed one (its request is the
  promised header block, decoded by the server's decoder), a stream seen first through the server's
  frames (the capture started late, or the request was lost) is kept without a request. PRIORITY frames
  open nothing (nghttp2 sends them for idle streams it never uses). After an HTTP/1.1 ``Upgrade: h2c``,
  stream 1 is the upgraded request (``H2cUpgrade``);
- the transaction rows of DESIGN.md §3 and the connection facts (``pipelined_max``,
  ``max_concurrent_streams``, SETTINGS, GOAWAY);
- what a long connection keeps of its history: closed streams packed into columns
  (``STREAM_PACK_EVERY``, ``analyzer.http.packing``; put in a ``BlockStore`` when given one), taken back
  out when a frame still comes for one;
  header blocks that left the HPACK table unchanged kept decoded (``DECODED_BLOCKS_KEPT``).

Definitions (where they differ from HTTP/1, ``analyzer.http.transactions``):

- times: a frame's time is when every byte up to its last one had been seen (Wireshark's "reassembled in"
  frame). ``ts_request_start``: the client's first HEADERS frame of the stream (the PUSH_PROMISE for a
  pushed stream); ``ts_request_end``: the frame that ends the request (END_STREAM; the end of the header
  block when it carries END_STREAM). ``ts_response_start``: the HEADERS frame of the final (non-1xx)
  response; ``ts_response_end``: the server's END_STREAM. HTTP/1 starts a message at its first byte's
  packet; for HTTP/2 the HEADERS frame is a complete unit and is timed when complete;
- ``request_body_bytes`` / ``response_body_bytes``: DATA payload bytes without padding, bytes missing from
  the capture included (as HTTP/1 bodies);
- ``trans_depth``: order of stream opening (time of the opening frame, then stream id); ``reused``: not the
  first stream;
- a stream is *open* from its start (``ts_request_start``, or the first frame seen) until both sides ended
  it (END_STREAM) or either reset it (RST_STREAM); when the response ended but the request end was not
  seen, until the response end;
- ``pipelined``: another stream was open when this one started (concurrency; HTTP/1's pipelining is the
  same question); ``idle_before_ms``: the latest end of the earlier streams → this stream's start:
  non-negative when no stream was open, negative when some were (by how much they overlapped), null when
  an earlier stream never ended (or for the first stream, or a stream without a request);
- ``pipelined_max``: most request streams (client-initiated) open at once; ``max_concurrent_streams``: the
  same over all streams, pushed ones included (the most streams actually used at once, not the
  SETTINGS_MAX_CONCURRENT_STREAMS limit, which is in ``settings``);
- ``keep_alive``: the connection could still open streams after this one ended: false when a GOAWAY (from
  either side) came before or at the stream's end, or when the stream never ended and a GOAWAY was seen;
- ``request_complete`` / ``response_complete``: END_STREAM seen, no payload bytes missing, and not reset
  before; a reset stream whose response was not complete is ``response_complete`` false (anomaly
  ``h2_stream_reset``). Null when nothing of that half was seen;
- ``interim_responses``: 1xx HEADERS before the final response; later HEADERS are trailers.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from sys import intern
from typing import Any

import numpy as np
from hpack import Decoder, HPACKError
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, PushPromiseFrame, RstStreamFrame, SettingsFrame

from analyzer.flows.stream import StreamChunk
from analyzer.http.http1 import Message
from analyzer.http.packing import NO_INT, BlockStore, Kinds, PackedRecords
from analyzer.http.rows import TransactionRows
from analyzer.http.transactions import SealedHttp1
from analyzer.http2.frames import (
    CONTINUATION,
    DATA,
    DEFAULT_MAX_FRAME_SIZE,
    END_HEADERS,
    END_STREAM,
    FRAME_HEADER_BYTES,
    FRAME_NAMES,
    GOAWAY,
    HEADERS,
    MAX_FRAME_SIZE_LIMIT,
    PADDED,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    FrameEvent,
    FrameReader,
)

CLIENT = 0
SERVER = 1
SIDES = ("client", "server")

MAX_HEADER_BLOCK_BYTES = 1 << 20  # a header block (HEADERS + CONTINUATIONs) kept while it is assembled
# hpack's limit on a decoded header list (name + value + 32 per field; its default is 64 KiB). Indexed fields
# share the table's bytes, so this bounds work, not copies; above it the block is an ``h2_hpack_error``.
MAX_HEADER_LIST_SIZE = 1 << 22
# Largest dynamic table an encoder may switch to. A conforming encoder stays within the receiver's
# SETTINGS_HEADER_TABLE_SIZE (4096 by default, 65536 for browsers); the SETTINGS of the other direction may
# be read after the header blocks they govern, so a generous constant replaces them.
MAX_HPACK_TABLE_SIZE = 1 << 20
MAX_ANOMALIES_PER_NAME = 100  # per connection; the rest are counted in one ``h2_anomalies_suppressed``
# Header blocks decoded again without hpack: a block that left the decoder's dynamic table as it was (only
# indexed fields and literals not indexed: every request of a load test after the first few) gives the same
# fields for the same bytes while the table stays so. hpack's decode was a third of a long h2 connection's
# time (``bench/hostile.py --cases h2_marathon``). Per direction, at most this many blocks of at most this
# many bytes; forgotten when the table changes.
DECODED_BLOCKS_KEPT = 8
DECODED_BLOCK_MAX_BYTES = 512
# A long connection's closed streams are packed (``analyzer.http.packing``) once this many streams are held
# as objects (about 0.7 KB each; packed, 0.2 KB), by blocks of ``STREAM_PACK_BLOCK``. A frame on a packed
# stream (a late RST_STREAM, DATA after the end) takes it back out first, so the rows are the same.
STREAM_PACK_EVERY = 256
STREAM_PACK_BLOCK = 1024
# Streams still open held as objects at most (about 0.5 KB each): beyond it the newest open ones are packed
# too, and taken back out by their next frame, as a closed one is. The tracker feeds a connection's bytes in
# rounds of ``connections.ROUND_BYTES`` (256 KiB; a round's client bytes before its server bytes), so an
# h2load-style client has about a round's requests open when their responses come: this limit is the safety
# net for a client that really keeps more streams open (each packed once and taken back once). Before rounds,
# ``bench/hostile.py --cases h2_load`` (a million streams in one chunk of packets) held them all as objects,
# its reading child peaking at 658 MiB; 367 MiB with this limit, for a quarter more CPU; 302 MiB with rounds,
# for less CPU than either. Fewer open streams cost nothing more.
MAX_OPEN_STREAMS_HELD = 65_536
_DECODED_STREAM_BLOCKS = 4  # blocks kept decoded while the rows are made (streams opened out of order)

ERROR_CODES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM",
    0x8: "CANCEL", 0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR", 0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY", 0xD: "HTTP_1_1_REQUIRED",
}
SETTING_NAMES = {
    0x1: "HEADER_TABLE_SIZE", 0x2: "ENABLE_PUSH", 0x3: "MAX_CONCURRENT_STREAMS", 0x4: "INITIAL_WINDOW_SIZE",
    0x5: "MAX_FRAME_SIZE", 0x6: "MAX_HEADER_LIST_SIZE", 0x8: "ENABLE_CONNECT_PROTOCOL",
    0x9: "NO_RFC7540_PRIORITIES",
}
_KEPT = frozenset({b":method", b":path", b":authority", b":status", b"host", b"user-agent", b"content-type"})
_PARSE_ERRORS = (HyperframeError, ValueError, struct.error, IndexError)
_HPACK_ERRORS = (HPACKError, ValueError, IndexError, KeyError, TypeError, UnicodeError, struct.error)

Anomaly = tuple[int, str, str]


def error_name(code: int | None) -> str | None:
    """RFC 9113 §7 name of an error code (``0x..`` for unknown ones), None when unknown."""
    if code is None:
        return None
    return ERROR_CODES.get(code, f"0x{code:x}")


@dataclass(frozen=True, slots=True)
class H2cUpgrade:
    """How an HTTP/1.1 connection switched to HTTP/2 (``Upgrade: h2c`` answered by ``101``), RFC 7540 §3.2.

    ``client_offset``: stream offset (direction 0) of the client's first HTTP/2 byte, the connection
    preface: the end of the Upgrade request (body included). ``server_offset``: offset (direction 1) of the
    server's first HTTP/2 byte: the end of the 101 response head. Stream 1 is the upgraded request, whose
    request half came over HTTP/1.1: its method, target, host and times are given here.
    ``http2_settings``: the request's ``HTTP2-Settings`` header (base64url SETTINGS payload), if known.
    """

    client_offset: int
    server_offset: int
    method: str | None = None
    target: str | None = None
    host: str | None = None
    ts_request_start_ns: int | None = None
    ts_request_end_ns: int | None = None
    request_body_bytes: int = 0
    user_agent: str | None = None
    http2_settings: str | None = None

    @classmethod
    def from_http1(cls, request: Message, response: Message) -> H2cUpgrade:
        """From the parsed Upgrade request and its ``101`` response (``analyzer.http.http1`` messages)."""
        client_offset, body_bytes = request.end, request.body_bytes
        if client_offset < 0:  # the body is not all in yet: its declared length says where it ends
            length = (request.headers.get("content-length") or "").strip()
            body_bytes = int(length) if length.isascii() and length.isdigit() else body_bytes
            client_offset = request.header_end + body_bytes
        return cls(
            client_offset=client_offset,
            server_offset=response.end if response.end >= 0 else response.header_end,
            method=request.method, target=request.target, host=request.headers.get("host"),
            ts_request_start_ns=request.ts_start_ns, ts_request_end_ns=request.ts_end_ns,
            request_body_bytes=body_bytes, user_agent=request.headers.get("user-agent"),
            http2_settings=request.headers.get("http2-settings"),
        )


@dataclass(slots=True, eq=False)
class _Half:
    """One direction of one stream."""

    head_ns: int | None = None  # request head / final response head
    end_ns: int | None = None  # END_STREAM
    head_off: int = -1  # stream offset of the head's first frame
    end_off: int = -1  # stream offset just past the frame that carried END_STREAM
    body_bytes: int = 0
    missing: int = 0
    seen: bool = False  # any HEADERS or DATA of this half


@dataclass(slots=True, eq=False)
class _Stream:
    sid: int
    open_ns: int
    pushed: bool = False
    upgraded: bool = False
    request_seen: bool = False  # client HEADERS, PUSH_PROMISE or the Upgrade request
    final_seen: bool = False  # a final (non-1xx) response head, even with unknown fields
    method: str | None = None
    host: str | None = None
    target: str | None = None
    status: int | None = None
    user_agent: str | None = None
    content_type: str | None = None
    interim: int = 0
    req: _Half = field(default_factory=_Half)
    resp: _Half = field(default_factory=_Half)
    reset_ns: int | None = None
    reset_by: int = -1
    reset_code: int | None = None

    @property
    def start_ns(self) -> int:
        return self.req.head_ns if self.req.head_ns is not None else self.open_ns

    @property
    def end_ns(self) -> int | None:
        """When the stream closed (both END_STREAMs, or a reset); None while open."""
        done: int | None = None
        if self.resp.end_ns is not None:
            done = max(self.resp.end_ns, self.req.end_ns) if self.req.end_ns is not None else self.resp.end_ns
        if self.reset_ns is not None and (done is None or self.reset_ns < done):
            done = self.reset_ns
        if done is not None and done < self.start_ns:
            done = self.start_ns
        return done


@dataclass(slots=True, eq=False)
class _Block:
    """A header block being assembled (HEADERS or PUSH_PROMISE, then CONTINUATIONs)."""

    kind: int
    sid: int
    promised: int | None
    fragments: list[bytes] | None  # None: part of it was not captured (or too large)
    first_ns: int
    end_stream: bool
    size: int = 0
    first_off: int = -1


# A stream as a packed record (``_stream_flat``): its fields by position, each half's seven in ``_Half`` order.
(_S_OPEN, _S_SID, _S_PUSHED, _S_UPGRADED, _S_REQUEST_SEEN, _S_FINAL_SEEN, _S_METHOD, _S_HOST, _S_TARGET, _S_STATUS,
 _S_UA, _S_CTYPE, _S_INTERIM) = range(13)
_S_REQ, _S_RESP = 13, 20  # head_ns, end_ns, head_off, end_off, body_bytes, missing, seen
_S_RESET_NS, _S_RESET_BY, _S_RESET_CODE = 27, 28, 29
_STREAM_KINDS = Kinds(
    ints=frozenset((_S_OPEN, _S_SID, _S_STATUS, _S_INTERIM, *range(_S_REQ, _S_REQ + 6), *range(_S_RESP, _S_RESP + 6),
                    _S_RESET_NS, _S_RESET_BY, _S_RESET_CODE)),
    bools=frozenset((_S_PUSHED, _S_UPGRADED, _S_REQUEST_SEEN, _S_FINAL_SEEN, _S_REQ + 6, _S_RESP + 6)),
    distinct=frozenset((_S_TARGET,)))


def _half_flat(h: _Half) -> tuple[Any, ...]:
    return h.head_ns, h.end_ns, h.head_off, h.end_off, h.body_bytes, h.missing, h.seen


def _stream_flat(s: _Stream) -> tuple[Any, ...]:
    return (s.open_ns, s.sid, s.pushed, s.upgraded, s.request_seen, s.final_seen, s.method, s.host, s.target,
            s.status, s.user_agent, s.content_type, s.interim, *_half_flat(s.req), *_half_flat(s.resp),
            s.reset_ns, s.reset_by, s.reset_code)


def _stream_of(f: tuple[Any, ...]) -> _Stream:
    """The stream a packed record was made of."""
    return _Stream(f[_S_SID], f[_S_OPEN], f[_S_PUSHED], f[_S_UPGRADED], f[_S_REQUEST_SEEN], f[_S_FINAL_SEEN],
                   f[_S_METHOD], f[_S_HOST], f[_S_TARGET], f[_S_STATUS], f[_S_UA], f[_S_CTYPE], f[_S_INTERIM],
                   _Half(*f[_S_REQ:_S_REQ + 7]), _Half(*f[_S_RESP:_S_RESP + 7]), f[_S_RESET_NS], f[_S_RESET_BY],
                   f[_S_RESET_CODE])


class Http2Connection:
    """Both directions of one HTTP/2 connection. ``feed(direction, chunk)``; then the results."""

    def __init__(self, upgrade: H2cUpgrade | None = None, protocol: str = "h2c", store: BlockStore | None = None
                 ) -> None:
        """``store``: where packed blocks go (``analyzer.http.packing``; None: held)."""
        self.protocol = protocol
        self.store = store
        self.upgrade = upgrade
        self.streams: dict[int, _Stream] = {}  # not packed
        self.packed: PackedRecords | None = None  # closed streams packed (``_pack``)
        self.packed_top = -1  # the highest stream id packed so far
        self.open_packed = 0  # streams packed while still open (``MAX_OPEN_STREAMS_HELD``), counted each time
        self.pack_at = STREAM_PACK_EVERY  # pack when this many streams are held as objects
        self._stream_notes: tuple[list[int], int | None, list[int]] | None = None  # kept by transaction_rows
        self.decoders: list[Decoder | None] = [_decoder(), _decoder()]
        self.decoded: tuple[dict[bytes, dict[str, str]], dict[bytes, dict[str, str]]] = ({}, {})  # by direction
        self.blocks: list[_Block | None] = [None, None]
        self.settings: tuple[dict[str, int], dict[str, int]] = ({}, {})
        self.max_frame_size = [DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_FRAME_SIZE]  # largest advertised, per side
        self.goaways: list[dict[str, Any]] = []
        self.goaway_ns: int | None = None
        self._anomalies: list[Anomaly] = []
        self._counts: Counter[str] = Counter()
        self.last_ts = 0
        self.readers = (
            FrameReader(self._on_client_frame, self._client_lost, self._anomaly,
                        start=upgrade.client_offset if upgrade else None, preface=True,
                        max_length=self._client_max_length),
            FrameReader(self._on_server_frame, self._server_lost, self._anomaly,
                        start=upgrade.server_offset if upgrade else None, preface=False,
                        max_length=self._server_max_length),
        )
        if upgrade is not None:
            self._start_upgraded(upgrade)

    # ---------------------------------------------------------------------------------------------- API
    def feed(self, direction: int, chunk: StreamChunk) -> None:
        if direction not in (CLIENT, SERVER):
            return
        if len(chunk):
            self.last_ts = max(self.last_ts, int(chunk.ts_ns[-1]))
        reader = self.readers[direction]
        try:
            reader.feed(chunk)
        except Exception as exc:  # pragma: no cover - a safety net: an observer must never stop the analysis
            reader.stop()
            self._anomaly(self.last_ts, "h2_internal_error", f"{SIDES[direction]}: {type(exc).__name__}: "
                                                             f"{str(exc)[:200]}")
        self._make_room()

    @property
    def exchanges_seen(self) -> int:
        """Streams so far, packed or not (the live view's count)."""
        return len(self.streams) + (len(self.packed) if self.packed is not None else 0)

    def _pack(self, everything: bool = False) -> None:
        """Pack the closed streams (``everything``: all of them, as they are), and the newest open ones beyond
        ``MAX_OPEN_STREAMS_HELD``. The next pass comes when the streams held have doubled (at least
        ``STREAM_PACK_EVERY``), so that open ones are looked at a bounded number of times per stream: from
        ``feed``, and as a stream is made (one feed may open a million)."""
        if self.packed is None:
            self.packed = PackedRecords(_STREAM_KINDS, STREAM_PACK_BLOCK, _DECODED_STREAM_BLOCKS, index=_S_SID,
                                        store=self.store)
        keep: dict[int, _Stream] = {}
        packed = self.packed
        for sid, s in self.streams.items():
            if everything or s.end_ns is not None:
                packed.add(_stream_flat(s))
                self.packed_top = max(self.packed_top, sid)
            else:
                keep[sid] = s
        if len(keep) > MAX_OPEN_STREAMS_HELD // 2:  # the oldest half of the limit stay objects (so the next
            held = sorted(keep)  # pass comes at the limit), the newer ones are packed
            for sid in held[MAX_OPEN_STREAMS_HELD // 2:]:
                packed.add(_stream_flat(keep.pop(sid)))
            self.packed_top = max(self.packed_top, held[-1])
            self.open_packed += len(held) - MAX_OPEN_STREAMS_HELD // 2
        self.streams = keep
        self.pack_at = max(STREAM_PACK_EVERY, 2 * len(keep))

    def _make_room(self) -> None:
        """A pass of ``_pack`` when the streams held as objects reached ``pack_at``: after a feed, and before
        a stream is made or taken back out (then no caller holds a stream object, which a pass could pack)."""
        if len(self.streams) >= self.pack_at:
            self._pack()

    def _known(self, sid: int) -> _Stream | None:
        """The stream ``sid`` if seen, taken back out of the packed ones when it is there (a frame on it)."""
        s = self.streams.get(sid)
        if s is None and self.packed is not None and sid <= self.packed_top:
            self._make_room()
            flat = self.packed.take(sid)
            if flat is not None:
                s = self.streams[sid] = _stream_of(flat)
        return s

    def seal(self, server_ip: str, server_port: int) -> SealedHttp1:
        """Both directions ended: finish and keep only the results (as ``Http1Connection.seal``)."""
        for d in (CLIENT, SERVER):
            self.feed(d, StreamChunk.empty(final=True))
        rows, facts = self.transaction_rows(server_ip, server_port)
        return SealedHttp1(rows, facts, self.anomalies())

    # ------------------------------------------------------------------------------------- frame events
    def _on_client_frame(self, ev: FrameEvent) -> None:
        self._on_frame(CLIENT, ev)

    def _on_server_frame(self, ev: FrameEvent) -> None:
        self._on_frame(SERVER, ev)

    def _client_lost(self, ts: int, why: str) -> None:
        self._lost(CLIENT, ts)

    def _server_lost(self, ts: int, why: str) -> None:
        self._lost(SERVER, ts)

    def _client_max_length(self) -> int:
        return self.max_frame_size[SERVER]  # frames the client sends are limited by the server's setting

    def _server_max_length(self) -> int:
        return self.max_frame_size[CLIENT]

    def _lost(self, d: int, ts: int) -> None:
        """Frames of direction ``d`` were lost (the reader reported why): its header fields are unknown."""
        self.decoders[d] = None
        blk = self.blocks[d]
        if blk is not None:
            self.blocks[d] = None
            blk.fragments = None
            self._block_done(d, blk, ts, -1)

    def _on_frame(self, d: int, ev: FrameEvent) -> None:
        t = ev.type
        blk = self.blocks[d]
        if blk is not None and t != CONTINUATION:
            self._anomaly(ev.ts_ns, "h2_continuation_error",
                          f"{_name(t)} on stream {ev.stream_id} while the header block of stream {blk.sid} "
                          "waited for CONTINUATION")
            self.blocks[d] = None
            blk.fragments = None
            self._block_done(d, blk, ev.ts_ns, -1)
        if t == DATA:
            self._data(d, ev)
        elif t in (HEADERS, PUSH_PROMISE):
            self._header_frame(d, ev)
        elif t == CONTINUATION:
            self._continuation(d, ev)
        elif t == RST_STREAM:
            self._rst_stream(d, ev)
        elif t == SETTINGS:
            self._settings(d, ev)
        elif t == GOAWAY:
            self._goaway(d, ev)
        # PRIORITY, PING, WINDOW_UPDATE and extension frames (ALTSVC, ORIGIN, PRIORITY_UPDATE, unknown
        # types, which RFC 9113 §4.1 says to ignore) change nothing here.

    def _parse(self, ev: FrameEvent) -> Frame | None:
        """The frame as ``hyperframe`` reads it (body parsed when kept), or None with an anomaly."""
        try:
            frame, _ = Frame.parse_frame_header(memoryview(ev.header))
            if ev.payload is not None:
                frame.parse_body(memoryview(ev.payload))
        except _PARSE_ERRORS as exc:
            self._anomaly(ev.ts_ns, "h2_frame_error", f"{_name(ev.type)} on stream {ev.stream_id}: {_short(exc)}")
            return None
        return frame

    def _data(self, d: int, ev: FrameEvent) -> None:
        if ev.stream_id == 0:
            self._anomaly(ev.ts_ns, "h2_frame_error", "DATA on stream 0")
            return
        s = self._stream(ev.stream_id, ev.ts_ns)
        half = s.req if d == CLIENT else s.resp
        half.seen = True
        half.body_bytes += ev.data_bytes
        half.missing += ev.missing
        if ev.flags & END_STREAM and not ev.truncated and half.end_ns is None:
            half.end_ns = ev.ts_ns
            half.end_off = _frame_end(ev)

    def _header_frame(self, d: int, ev: FrameEvent) -> None:
        fragment: bytes | None = None
        promised: int | None = None
        if ev.type == HEADERS and ev.stream_id and ev.payload is not None and not ev.flags & (PADDED | PRIORITY_FLAG):
            # hyperframe's HeadersFrame.data of such a frame (nothing to strip) is its payload; parsing it with
            # hyperframe was a sixth of a long h2 connection's time (tests/test_http2.py checks they agree)
            fragment = ev.payload
        else:
            frame = self._parse(ev)
            if isinstance(frame, (HeadersFrame, PushPromiseFrame)) and ev.payload is not None:
                fragment = frame.data
                if isinstance(frame, PushPromiseFrame):
                    promised = frame.promised_stream_id
        if ev.type == PUSH_PROMISE and d == CLIENT:
            self._anomaly(ev.ts_ns, "h2_frame_error", f"PUSH_PROMISE from the client on stream {ev.stream_id}")
        if ev.stream_id == 0:  # hyperframe refused it (h2_frame_error); its fields are lost
            self._lost_block(d, ev.ts_ns, f"{_name(ev.type)} on stream 0")
            return
        if fragment is None:
            why = "not captured whole" if ev.damaged or ev.payload is None else "unreadable"
            self._lost_block(d, ev.ts_ns, f"{_name(ev.type)} frame on stream {ev.stream_id} {why}")
        blk = _Block(ev.type, ev.stream_id, promised, [fragment] if fragment is not None else None, ev.ts_ns,
                     ev.type == HEADERS and bool(ev.flags & END_STREAM), len(fragment or b""), ev.offset)
        if ev.flags & END_HEADERS:
            self._block_done(d, blk, ev.ts_ns, _frame_end(ev))
        else:
            self.blocks[d] = blk

    def _continuation(self, d: int, ev: FrameEvent) -> None:
        blk = self.blocks[d]
        if blk is None or blk.sid != ev.stream_id:
            self._anomaly(ev.ts_ns, "h2_continuation_error",
                          f"CONTINUATION on stream {ev.stream_id} without a header block in progress")
            self._lost_block(d, ev.ts_ns, "a CONTINUATION without its HEADERS")
            if blk is not None:
                self.blocks[d] = None
                blk.fragments = None
                self._block_done(d, blk, ev.ts_ns, -1)
            return
        if blk.fragments is not None:
            if ev.payload is None or ev.damaged:
                blk.fragments = None
                self._lost_block(d, ev.ts_ns, f"CONTINUATION on stream {ev.stream_id} not captured whole")
            elif blk.size + len(ev.payload) > MAX_HEADER_BLOCK_BYTES:
                blk.fragments = None
                self._anomaly(ev.ts_ns, "h2_buffer_limit", f"header block of stream {blk.sid} larger than "
                                                           f"MAX_HEADER_BLOCK_BYTES = {MAX_HEADER_BLOCK_BYTES}")
                self._lost_block(d, ev.ts_ns, "a header block too large to keep")
            else:
                blk.fragments.append(ev.payload)
                blk.size += len(ev.payload)
        if ev.flags & END_HEADERS:
            self.blocks[d] = None
            self._block_done(d, blk, ev.ts_ns, _frame_end(ev))

    def _lost_block(self, d: int, ts: int, why: str) -> None:
        """A header block of direction ``d`` was not decoded: the decoder's state is unknown from here."""
        if self.decoders[d] is not None:
            self.decoders[d] = None
            self._anomaly(ts, "h2_headers_lost", f"{SIDES[d]}: {why}; header fields of this direction are "
                                                 "unknown from here on")

    def _block_done(self, d: int, blk: _Block, end_ns: int, end_off: int) -> None:
        """A header block ended (``end_off`` past its last frame, -1 when it was cut short)."""
        fields: dict[str, str] | None = None
        dec = self.decoders[d]
        if blk.fragments is None:
            self._lost_block(d, end_ns, f"header block of stream {blk.sid} not captured whole")
        elif dec is not None:
            try:
                fields = self._decode(d, dec, b"".join(blk.fragments))
            except _HPACK_ERRORS as exc:
                self.decoders[d] = None
                self._anomaly(end_ns, "h2_hpack_error", f"{SIDES[d]}, stream {blk.sid}: {_short(exc)}; header "
                                                        "fields of this direction are unknown from here on")
        if blk.kind == PUSH_PROMISE:
            self._push(blk, fields, end_ns)
        elif d == CLIENT:
            self._request_head(blk, fields, end_ns, end_off)
        else:
            self._response_head(blk, fields, end_ns, end_off)

    def _decode(self, d: int, dec: Decoder, block: bytes) -> dict[str, str]:
        """The kept fields of a header block: from ``decoded`` when the same bytes were decoded before with
        the dynamic table as it is now (``DECODED_BLOCKS_KEPT``), else with hpack. The fields are shared, never
        changed by their users."""
        kept = self.decoded[d]
        fields = kept.get(block)
        if fields is not None:
            return fields
        entries = dec.header_table.dynamic_entries
        # an entry is added at the left, evicted at the right: the length, the leftmost entry and the size
        # limit tell whether the block changed the table
        count, newest, size = len(entries), entries[0] if entries else None, dec.header_table_size
        fields = _kept_fields(dec.decode(block, raw=True))
        if len(entries) != count or (entries and entries[0] is not newest) or dec.header_table_size != size:
            kept.clear()  # the table changed: what was kept may read other entries now
        elif len(block) <= DECODED_BLOCK_MAX_BYTES:
            if len(kept) >= DECODED_BLOCKS_KEPT:
                kept.clear()
            kept[block] = fields
        return fields

    def _request_head(self, blk: _Block, fields: dict[str, str] | None, end_ns: int, end_off: int) -> None:
        s = self._stream(blk.sid, blk.first_ns)
        s.req.seen = True
        if not s.request_seen:
            s.request_seen = True
            s.req.head_ns = blk.first_ns
            s.req.head_off = blk.first_off
            s.open_ns = min(s.open_ns, blk.first_ns)
            if fields is not None:
                _set_request(s, fields)
        if blk.end_stream and s.req.end_ns is None:
            s.req.end_ns = end_ns
            s.req.end_off = end_off

    def _response_head(self, blk: _Block, fields: dict[str, str] | None, end_ns: int, end_off: int) -> None:
        s = self._stream(blk.sid, blk.first_ns)
        s.resp.seen = True
        if not s.final_seen:
            status = _status(fields.get(":status")) if fields is not None else None
            if status is not None and 100 <= status < 200 and not blk.end_stream:
                s.interim += 1
            else:  # unknown fields are taken for the final response (a lost 1xx is a known limit)
                s.final_seen = True
                s.status = status
                s.resp.head_ns = blk.first_ns
                s.resp.head_off = blk.first_off
                if fields is not None:
                    s.content_type = _shared(fields.get("content-type"))
        if blk.end_stream and s.resp.end_ns is None:
            s.resp.end_ns = end_ns
            s.resp.end_off = end_off

    def _push(self, blk: _Block, fields: dict[str, str] | None, end_ns: int) -> None:
        pid = blk.promised
        if pid is None or pid == 0:
            return
        if self._known(pid) is not None:
            self._anomaly(end_ns, "h2_frame_error", f"PUSH_PROMISE of stream {pid}, which is already in use")
            return
        self._make_room()
        s = _Stream(pid, blk.first_ns, pushed=True, request_seen=True)
        s.req.seen = True
        s.req.head_ns = blk.first_ns
        s.req.end_ns = end_ns  # a promised request has no body
        if fields is not None:
            _set_request(s, fields)
        self.streams[pid] = s

    def _rst_stream(self, d: int, ev: FrameEvent) -> None:
        frame = self._parse(ev) if ev.payload is not None else None
        code = frame.error_code if isinstance(frame, RstStreamFrame) else None
        s = self._known(ev.stream_id)
        who = SIDES[d]
        if s is None:
            self._anomaly(ev.ts_ns, "h2_stream_reset", f"stream {ev.stream_id} (not seen open) reset by {who}: "
                                                       f"{error_name(code) or 'unknown error'}")
            return
        if s.reset_ns is not None:
            return
        s.reset_ns, s.reset_by, s.reset_code = ev.ts_ns, d, code
        cut = []
        if s.req.end_ns is None or s.req.end_ns > ev.ts_ns:
            cut.append("request")
        if s.resp.end_ns is None or s.resp.end_ns > ev.ts_ns:
            cut.append("response")
        if cut or code != 0:
            what = f" ({' and '.join(cut)} incomplete)" if cut else ""
            self._anomaly(ev.ts_ns, "h2_stream_reset",
                          f"stream {ev.stream_id} reset by {who}: {error_name(code) or 'unknown error'}{what}")

    def _settings(self, d: int, ev: FrameEvent) -> None:
        if ev.flags & 0x01:  # ACK
            return
        frame = self._parse(ev) if ev.payload is not None else None
        if isinstance(frame, SettingsFrame):
            self._apply_settings(d, frame.settings)

    def _apply_settings(self, d: int, settings: dict[int, int]) -> None:
        for ident, value in settings.items():
            self.settings[d][SETTING_NAMES.get(ident, f"0x{ident:x}")] = value
            if ident == 0x5 and DEFAULT_MAX_FRAME_SIZE <= value <= MAX_FRAME_SIZE_LIMIT:
                self.max_frame_size[d] = max(self.max_frame_size[d], value)

    def _goaway(self, d: int, ev: FrameEvent) -> None:
        frame = self._parse(ev) if ev.payload is not None else None
        last = frame.last_stream_id if isinstance(frame, GoAwayFrame) else None
        code = frame.error_code if isinstance(frame, GoAwayFrame) else None
        self.goaways.append({"by": SIDES[d], "last_stream_id": last, "error": error_name(code),
                             "ts": ev.ts_ns / 1e9})
        if self.goaway_ns is None or ev.ts_ns < self.goaway_ns:
            self.goaway_ns = ev.ts_ns
        if code is not None and code != 0:
            self._anomaly(ev.ts_ns, "h2_goaway_error",
                          f"GOAWAY from the {SIDES[d]}: {error_name(code)}, last stream {last}")

    # --------------------------------------------------------------------------------------- bookkeeping
    def _stream(self, sid: int, ts: int) -> _Stream:
        s = self._known(sid)
        if s is None:
            self._make_room()
            s = self.streams[sid] = _Stream(sid, ts)
        return s

    def _start_upgraded(self, up: H2cUpgrade) -> None:
        start = up.ts_request_start_ns if up.ts_request_start_ns is not None else 0
        s = _Stream(1, start, upgraded=True, request_seen=True, method=up.method, host=up.host,
                    target=up.target, user_agent=up.user_agent)
        s.req.seen = True
        s.req.head_ns = start
        s.req.end_ns = up.ts_request_end_ns if up.ts_request_end_ns is not None else start
        s.req.body_bytes = up.request_body_bytes
        self.streams[1] = s
        if up.http2_settings:
            try:
                raw = base64.urlsafe_b64decode(up.http2_settings + "=" * (-len(up.http2_settings) % 4))
                frame = SettingsFrame(0)
                frame.parse_body(memoryview(raw))
            except (binascii.Error, *_PARSE_ERRORS) as exc:
                self._anomaly(start, "h2_frame_error", f"HTTP2-Settings header: {_short(exc)}")
            else:
                self._apply_settings(CLIENT, frame.settings)

    def _anomaly(self, ts: int, name: str, detail: str) -> None:
        self._counts[name] += 1
        if self._counts[name] <= MAX_ANOMALIES_PER_NAME:
            self._anomalies.append((ts, name, detail))

    # ------------------------------------------------------------------------------------------- results
    def anomalies(self) -> list[Anomaly]:
        out = list(self._anomalies)
        suppressed = {k: v - MAX_ANOMALIES_PER_NAME for k, v in self._counts.items() if v > MAX_ANOMALIES_PER_NAME}
        if suppressed:
            out.append((self.last_ts, "h2_anomalies_suppressed",
                        ", ".join(f"{k}: {v} more" for k, v in sorted(suppressed.items()))))
        for d in (CLIENT, SERVER):
            reader = self.readers[d]
            limit = self.max_frame_size[1 - d]
            if reader.largest > limit:
                out.append((reader.largest_ts, "h2_oversize_frame",
                            f"{SIDES[d]} sent a {reader.largest}-byte frame; the {SIDES[1 - d]}'s "
                            f"SETTINGS_MAX_FRAME_SIZE is {limit}"))
        orphans, first, unfinished = self._stream_notes or self._notes()
        if orphans and first is not None:
            out.append((first, "h2_stream_without_request",
                        f"{len(orphans)} stream(s) without a request seen (opened before the capture or lost "
                        f"in a gap): {_ids(orphans)}"))
        if all(r.ended for r in self.readers) and unfinished:
            out.append((self.last_ts, "h2_unfinished_streams",
                        f"{len(unfinished)} stream(s) still open at the end of the data: {_ids(unfinished)}"))
        return out

    def _notes(self) -> tuple[list[int], int | None, list[int]]:
        """The ids of the streams without a request and the time the first of them opened; the ids of the
        streams that never ended; packed ones included."""
        held = self.streams.values()
        orphans = [s.sid for s in held if not s.request_seen]
        opened = [s.open_ns for s in held if not s.request_seen]
        unfinished = [s.sid for s in held if s.end_ns is None]
        if self.packed is not None and len(self.packed):
            sid, request_seen, open_ns, resp_end, reset_ns = self.packed.values(
                _S_SID, _S_REQUEST_SEEN, _S_OPEN, _S_RESP + 1, _S_RESET_NS)
            no_request = request_seen != 1
            orphans += sid[no_request].tolist()
            opened += open_ns[no_request].tolist()
            never = (resp_end == NO_INT) & (reset_ns == NO_INT)
            unfinished += sid[never].tolist()  # (only when packed at the end: closed streams are packed)
        return sorted(orphans), min(opened) if opened else None, sorted(unfinished)

    def transaction_rows(self, server_ip: str, server_port: int) -> tuple[TransactionRows, dict[str, Any]]:
        """Rows for the transactions table (``TransactionRows``), one per stream, and the connection's HTTP
        facts (the keys of ``Http1Connection.transaction_rows`` and more)."""
        streams: Iterable[_Stream]
        if self.packed is None:  # never packed (fewer than STREAM_PACK_EVERY streams at once)
            streams = sorted(self.streams.values(), key=lambda st: (st.open_ns, st.sid))
        else:  # made from the packed records one at a time, each block let go once its rows are made
            self._stream_notes = self._notes()
            self._pack(everything=True)
            packed, self.packed, self.streams = self.packed, None, {}
            assert packed is not None
            streams = (_stream_of(f) for f in packed.flats(_S_OPEN, _S_SID))
        rows = TransactionRows(self.store)
        goaway = self.goaway_ns
        max_end: int | None = None  # latest end among earlier streams
        open_forever = False  # an earlier stream never ended
        idle_max: float | None = None
        last_response_end: int | None = None
        starts, ends = array("q"), array("q")  # per stream, for the most open at once (NO_INT: never ended)
        pushed = array("b")
        requests = resets = 0
        for i, s in enumerate(streams):
            start = s.start_ns
            end = s.end_ns
            starts.append(start)
            ends.append(NO_INT if end is None else end)
            pushed.append(s.pushed)
            requests += s.request_seen and not s.pushed
            resets += s.reset_ns is not None
            idle_ms: float | None = None
            pipelined: bool | None = None
            if s.request_seen:
                if i == 0:
                    pipelined = False
                elif open_forever:
                    pipelined = True
                elif max_end is not None:
                    pipelined = max_end > start
                    idle_ms = (start - max_end) / 1e6
                    if idle_ms >= 0 and (idle_max is None or idle_ms > idle_max):
                        idle_max = idle_ms
                else:
                    pipelined = False
            if end is None:
                open_forever = True
            elif max_end is None or end > max_end:
                max_end = end
            keep_alive = not (goaway is not None and (end is None or goaway <= end))
            req, resp = s.req, s.resp
            reset_before = _reset_before(s)
            req_complete: bool | None = None
            if req.seen or s.request_seen:
                req_complete = req.end_ns is not None and req.missing == 0 and not reset_before(req.end_ns)
            resp_complete: bool | None = None
            if resp.seen or s.reset_ns is not None:
                resp_complete = resp.end_ns is not None and resp.missing == 0 and not reset_before(resp.end_ns)
            if resp.end_ns is not None and (last_response_end is None or resp.end_ns > last_response_end):
                last_response_end = resp.end_ns
            rows.add((
                i + 1, s.sid, s.method, s.host, s.target,
                "HTTP/1.1" if s.upgraded else "HTTP/2" if s.request_seen else None,
                "HTTP/2" if resp.seen else None, s.status, None,
                _s(req.head_ns), _s(req.end_ns), _s(resp.head_ns), _s(resp.end_ns),
                req.body_bytes if (req.seen or s.request_seen) else None,
                resp.body_bytes if resp.seen else None,
                idle_ms, pipelined, i > 0, keep_alive, None, None, s.user_agent, s.content_type,
                s.interim, req_complete, resp_complete, server_ip, server_port, False,
            ), (resp.head_off, resp.end_off) if 0 <= resp.head_off < resp.end_off else None)
        start_at, end_at = np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)
        is_pushed = np.array(pushed, dtype=bool)
        facts: dict[str, Any] = {
            "requests": requests,
            "pipelined_max": _max_open(start_at[~is_pushed], end_at[~is_pushed]),
            "protocol": self.protocol,
            "keep_alive_timeout_s": None,
            "keep_alive_max": None,
            "last_response_end_ns": last_response_end,
            "idle_max_ms": idle_max,
            "max_concurrent_streams": _max_open(start_at, end_at),
            "settings": {"client": dict(self.settings[CLIENT]), "server": dict(self.settings[SERVER])},
            "goaway": dict(self.goaways[0]) if self.goaways else None,
            "pushed_streams": int(is_pushed.sum()),
            "reset_streams": resets,
        }
        return rows, facts


def _decoder() -> Decoder:
    dec = Decoder(max_header_list_size=MAX_HEADER_LIST_SIZE)
    dec.max_allowed_table_size = MAX_HPACK_TABLE_SIZE
    return dec


def _kept_fields(headers: Any) -> dict[str, str]:
    """The header fields the tables use, lower-case names, values as latin-1 text (as HTTP/1)."""
    out: dict[str, str] = {}
    for name, value in headers:
        n = bytes(name).lower()
        if n not in _KEPT:
            continue
        key = n.decode("latin-1")
        text = bytes(value).decode("latin-1")
        if key in out:
            if key[0] != ":":
                out[key] = out[key] + ", " + text
        else:
            out[key] = text
    return out


def _set_request(s: _Stream, fields: dict[str, str]) -> None:
    s.method = _shared(fields.get(":method"))
    s.host = _shared(fields.get(":authority") or fields.get("host"))
    s.target = fields.get(":path") or (s.host if s.method == "CONNECT" else None)
    s.user_agent = _shared(fields.get("user-agent"))


def _shared(value: str | None) -> str | None:
    """One object per distinct value of a field most streams repeat (method, authority, user agent, content
    type): HPACK decodes a new string for every stream, and a long connection keeps its streams until it
    ends (a fifth of a stream's memory: ``tests/test_http2.py``). Interned strings are freed with their
    last user."""
    return intern(value) if value is not None else None


def _status(raw: str | None) -> int | None:
    if raw is None or not (len(raw) == 3 and raw.isascii() and raw.isdigit()):  # not Latin-1's "\xb2"
        return None
    return int(raw)


def _reset_before(s: _Stream) -> Any:
    def before(end_ns: int | None) -> bool:
        return s.reset_ns is not None and (end_ns is None or s.reset_ns < end_ns)
    return before


def _max_open(start_ns: np.ndarray, end_ns: np.ndarray) -> int:
    """Most streams open at once (``end_ns`` NO_INT: never ended; an end at the same instant as a start closes
    first)."""
    ended = end_ns != NO_INT
    times = np.concatenate([start_ns, end_ns[ended]])
    steps = np.concatenate([np.ones(len(start_ns), dtype=np.int64), np.full(int(ended.sum()), -1, dtype=np.int64)])
    if not len(times):
        return 0
    return max(int(np.cumsum(steps[np.lexsort((steps, times))]).max()), 0)


def _frame_end(ev: FrameEvent) -> int:
    return ev.offset + FRAME_HEADER_BYTES + ev.length


def _s(ns: int | None) -> float | None:
    return ns / 1e9 if ns is not None else None


def _name(ftype: int) -> str:
    return FRAME_NAMES[ftype] if ftype < len(FRAME_NAMES) else f"type 0x{ftype:x}"


def _short(exc: BaseException) -> str:
    """The error in at most 160 characters, without object addresses (hpack names the memoryview it read:
    ``<memory at 0x7f...>``), so that the same capture always gives the same anomaly detail."""
    text = _ADDRESS.sub("", f"{type(exc).__name__}: {exc}")
    return text if len(text) <= 160 else text[:157] + "..."


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _ids(ids: list[int], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")
