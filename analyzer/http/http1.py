"""A tolerant, incremental HTTP/1.x message parser for one direction of one connection.

It owns message framing: start lines, header blocks, Content-Length / chunked (with trailers) /
read-until-close bodies, no body for HEAD, 1xx, 204 and 304 responses, and resynchronisation on the next
message start after a gap or garbage. It reads bytes only through ``StreamChunk`` (it never sees packets)
and does not pair requests with responses (``transactions.py`` does). It must be an *observer*: nothing
raises on malformed input; problems become ``anomalies`` entries and parsing goes on.

Why hand-written and not h11/httptools: h11 is strict by design and stops at the first violation, which a
passive observer cannot afford, and neither library can skip a body it has not seen (capture gaps) or work
without copying body bytes. Content-Length and read-until-close bodies are skipped without being copied, so
their cost is per message, not per byte; chunked bodies cost one step per chunk.

Limits (named, with precedents): ``MAX_HEADER_BYTES`` 64 KiB (nginx's default large_client_header_buffers
is 4 x 8 KiB; Apache's LimitRequestFieldSize 8 KiB per field, h11's max_incomplete_event_size 16 KiB);
past it the message is reported as ``oversized_header``. When its start line is complete and well formed,
the message still counts (a request is paired with its response): its headers are taken from the complete
lines within the limit, the rest of the header block is skipped without being kept (a scan for the blank
line, a few bytes carried across chunks), and its body is framed from the headers kept. Otherwise (a start
line longer than the limit, or garbage) the parser resynchronises on the next message start.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from sys import intern

from analyzer.flows.stream import StreamChunk, read_after_carry
from analyzer.tls.observer import looks_like_tls

MAX_HEADER_BYTES = 64 * 1024
MAX_CHUNK_LINE_BYTES = 1024
RESYNC_SCAN_BYTES = 1 << 20  # bytes scanned per step when looking for the next message start
CHUNK_RUN_BYTES = 1 << 20  # largest window read at once to walk a run of small chunks (``_chunk_run``)

REQUEST = 0
RESPONSE = 1

# parser states
START, BODY_LENGTH, BODY_CHUNK_SIZE, BODY_CHUNK_DATA, BODY_CHUNK_CRLF, TRAILERS, BODY_CLOSE, TUNNEL, RESYNC, \
    OTHER, HEADER_SKIP = range(11)
_DELIMITED_BODY = frozenset({BODY_LENGTH, BODY_CHUNK_SIZE, BODY_CHUNK_DATA, BODY_CHUNK_CRLF, TRAILERS})

_TOKEN_METHOD = rb"[A-Z][A-Z0-9_-]{1,23}"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN_METHOD + rb") +(\S+)(?: +(HTTP/\d\.\d))? *\r?$")
# What a tolerant observer still takes for a request line (Zeek logs these; servers answer 400/405):
# a method token, then an optional target and an optional (possibly malformed) version.
_LOOSE_REQUEST_LINE = re.compile(rb"(" + _TOKEN_METHOD + rb")(?: +(\S+))?(?: +(\S+))? *\r?$")
_STATUS_LINE = re.compile(rb"(HTTP/\d\.\d) +(\d{3})(?: ([^\r\n]*))?\r?$")
# Resynchronisation: the next complete start line anywhere (a body rarely ends with a line break).
_REQUEST_START = re.compile(rb"(" + _TOKEN_METHOD + rb" +\S+ +HTTP/1\.[019]\r?\n)")
_RESPONSE_START = re.compile(rb"(HTTP/1\.[019] +\d{3}[^\r\n]*\r?\n)")
# a (possibly incomplete) first line that may still become a request / status line
_REQUEST_PREFIX = re.compile(rb"[A-Z][A-Z0-9_-]{0,23}(?: +\S*(?: +\S*)?)? *$")
_STATUS_PREFIX = re.compile(rb"(?:H(?:T(?:T(?:P(?:/(?:\d(?:\.(?:\d(?: +(?:\d{0,3}(?: .*)?))?)?)?)?)?)?)?)?)?$")
_HTTP09_REQUEST = re.compile(_TOKEN_METHOD + rb" +\S+ *\r?$")
_HEX_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")  # a chunk size the fast path takes (else the step-by-step parser)
_KEEPALIVE_PARAM = re.compile(r"(timeout|max)\s*=\s*(\d+)", re.IGNORECASE)

# Headers kept on messages (lower-case names). Everything else is counted, not stored.
KEPT_HEADERS = frozenset({
    b"host", b"connection", b"keep-alive", b"content-length", b"transfer-encoding", b"user-agent",
    b"content-type", b"expect", b"upgrade", b"proxy-connection",
})

# Per first byte of a header line: could the line be a kept header? (A name's first letter in either case,
# or blank space, which ``bytes.strip`` removes before the name.) Most header lines are not kept, and this
# skips them without splitting them: 0.6 µs a line.
_MAY_BE_KEPT = tuple(any(b in (name[0], name[0] - 32) for name in KEPT_HEADERS) or bytes([b]).isspace()
                     for b in range(256))

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass(slots=True, eq=False)
class Message:
    """One HTTP/1 request or response. Offsets are stream offsets; times are ns epoch."""

    kind: int
    start: int
    ts_start_ns: int
    method: str | None = None
    target: str | None = None
    version: str | None = None
    status: int | None = None
    reason: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    header_end: int = -1
    end: int = -1  # exclusive; -1 while the body is still being read
    ts_end_ns: int | None = None
    body_bytes: int = 0  # body bytes in the stream (gaps included)
    body_missing_bytes: int = 0  # body bytes the capture lacks
    framing: str = "none"  # none | length | chunked | close | tunnel
    complete: bool = False
    _tokens: frozenset[str] | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def connection_tokens(self) -> frozenset[str]:
        """Lower-cased tokens of Connection (and the non-standard Proxy-Connection) headers."""
        if self._tokens is None:
            raw = self.headers.get("connection", "")
            if "proxy-connection" in self.headers:
                raw += "," + self.headers["proxy-connection"]
            self._tokens = _connection_tokens(raw)
        return self._tokens


Anomaly = tuple[int, str, str]  # (ts_ns, name, detail)

_TOKENS_SEEN: dict[str, frozenset[str]] = {}  # Connection header value -> its tokens (a few distinct values)
_TOKENS_SEEN_MAX = 1024  # values remembered (each at most ``_TOKENS_SEEN_MAX_CHARS``): bounded by both
_TOKENS_SEEN_MAX_CHARS = 128


def _connection_tokens(raw: str) -> frozenset[str]:
    """The lower-cased tokens of a Connection header value; the values seen before are remembered (a
    capture has a handful: "keep-alive", "close", "Upgrade"), as the split cost a microsecond per message."""
    tokens = _TOKENS_SEEN.get(raw)
    if tokens is None:
        tokens = frozenset(t.strip() for t in raw.lower().split(",") if t.strip()) if raw else frozenset()
        if len(_TOKENS_SEEN) < _TOKENS_SEEN_MAX and len(raw) <= _TOKENS_SEEN_MAX_CHARS:
            _TOKENS_SEEN[raw] = tokens
    return tokens


class Http1Parser:
    """Incremental parser of one direction. Feed it ``StreamChunk``s in order; read ``messages``.

    ``on_message_head(msg)`` is called when a header block is complete, before the body is framed: for
    responses the callback returns the method of the matching request (``None`` when unknown), because
    framing depends on it (HEAD, CONNECT). ``on_message_end(msg)`` is called when a message is complete.
    """

    def __init__(
        self,
        kind: int,
        on_message_head: Callable[[Message], str | None],
        on_message_end: Callable[[Message], None],
    ) -> None:
        self.kind = kind
        self._on_head = on_message_head
        self._on_end = on_message_end
        self.state = START
        self.pos: int | None = None  # next stream offset to parse
        self.current: Message | None = None
        self.remaining = 0  # body bytes left (BODY_LENGTH / BODY_CHUNK_DATA)
        self.carry = b""  # unparsed bytes at ``pos`` kept across chunks (incomplete header or line)
        self.carry_ts = 0  # arrival time of the first carried byte
        self.anomalies: list[Anomaly] = []
        self.protocol: str | None = None  # 'h2c' / 'tls' when the stream is not HTTP/1
        self.tunnel_after_current = False  # request side: CONNECT/Upgrade may switch to a tunnel
        self.tunnel_after_body = False  # the switch was agreed while this message's body was being read
        self.messages_seen = 0
        self.gap_bytes = 0
        self.expect_http09: Callable[[], bool] = _never
        self._last_ts = 0
        self._fed_end = -1  # stream offset just past the bytes of the chunks fed before (``_done_at``)
        self._fed_done_ns = 0  # when every byte before ``_fed_end`` had been seen
        self._skip_tail = b""  # HEADER_SKIP: the last bytes skipped (the blank line may straddle two reads)
        self._skip_method: str | None = None  # HEADER_SKIP: what the head callback returned
        self._run_window = 4096  # bytes ``_chunk_run`` reads next (doubles while it consumes them)

    # ---------------------------------------------------------------------------------------------- API
    def feed(self, chunk: StreamChunk) -> None:
        if len(chunk):
            self._last_ts = int(chunk.ts_ns[-1])
            if self.pos is None:
                self.pos = int(chunk.start[0])
            self._run(chunk)
            self._fed_end, self._fed_done_ns = int(chunk.end[-1]), int(chunk.done_ns[-1])
        if chunk.final or chunk.eof >= 0:
            self._eof(chunk)

    def stop(self, protocol: str) -> None:
        """The connection is not HTTP/1 (its other direction spoke ``protocol``): stop parsing."""
        self.protocol = protocol
        self.state = OTHER
        self.carry = b""

    def switch_to_tunnel(self) -> None:
        """Stop parsing HTTP (after 101 Switching Protocols or a successful CONNECT). A request whose
        delimited body is still being read switches after that body (RFC 9110 §7.8: the protocol changes
        after the message that asked for it)."""
        if self.current is not None and self.state in _DELIMITED_BODY:
            self.tunnel_after_body = True
            return
        if self.state != TUNNEL:
            self._finish_current_at_headers_end()
            self.state = TUNNEL
            self.carry = b""

    # ------------------------------------------------------------------------------------------ helpers
    def _anomaly(self, ts_ns: int, name: str, detail: str) -> None:
        self.anomalies.append((ts_ns, name, detail))

    def _done_at(self, chunk: StreamChunk, offset: int) -> int:
        """When every byte before ``offset`` had been seen. An offset up to where the chunks fed before ended
        (a message that ends at a gap found at the start of this chunk) was complete when they were, not when
        this chunk's first bytes were: the same time however the packets were cut into chunks."""
        if not len(chunk):
            return self._last_ts
        return self._fed_done_ns if offset <= self._fed_end else chunk.done_at(offset)

    def _read(self, chunk: StreamChunk, off: int, limit: int) -> bytes:
        return read_after_carry(self.carry, chunk, off, limit)

    def _consume(self, n: int) -> None:
        assert self.pos is not None
        self.pos += n
        if self.carry:
            self.carry = self.carry[n:]

    def _stash(self, chunk: StreamChunk) -> None:
        """Keep the unparsed contiguous bytes at ``pos`` for the next chunk."""
        assert self.pos is not None
        end = chunk.contiguous_end(self.pos + len(self.carry)) if len(chunk) else self.pos + len(self.carry)
        if end <= self.pos:
            return
        if end - self.pos > MAX_HEADER_BYTES:
            return  # handled by the caller as oversized
        if not self.carry:
            self.carry_ts = chunk.ts_at(self.pos)
        self.carry = self._read(chunk, self.pos, end - self.pos)

    def _skip_gap(self, chunk: StreamChunk) -> bool:
        """At ``pos`` there is no data: jump to the next piece, accounting the gap. False at chunk end."""
        assert self.pos is not None
        nxt = chunk.next_data(self.pos)
        if nxt < 0:
            return False
        return self._gap_to(chunk, nxt, chunk.ts_at(nxt))

    def _gap_to(self, chunk: StreamChunk, nxt: int, ts: int) -> bool:
        """The bytes from ``pos`` to ``nxt`` are missing from the capture: account them by state."""
        assert self.pos is not None
        gap = nxt - self.pos
        if gap <= 0:
            return True
        self.gap_bytes += gap
        self.carry = b""
        st = self.state
        if st in (BODY_LENGTH, BODY_CHUNK_DATA):
            take = min(gap, self.remaining)
            self.remaining -= take
            if self.current is not None:
                self.current.body_bytes += take
                self.current.body_missing_bytes += take
            self.pos += take
            if self.pos < nxt:  # gap goes past the body end: the next message start is lost
                self._end_body(chunk, self.pos)
                self._anomaly(ts, "message_lost_in_gap", f"{nxt - self.pos} bytes missing at a message boundary")
                self.pos = nxt
                self.state = RESYNC
            elif self.remaining == 0:
                if st == BODY_LENGTH:
                    self._end_body(chunk, self.pos)
                else:
                    self.state = BODY_CHUNK_CRLF  # the chunk's data ended in the gap; framing goes on
            return True
        if st == BODY_CLOSE:
            if self.current is not None:
                self.current.body_bytes += gap
                self.current.body_missing_bytes += gap
            self.pos = nxt
            return True
        if st in (TUNNEL, OTHER):
            self.pos = nxt
            return True
        # START, headers in progress, chunk framing, RESYNC: framing is lost
        if st != START and st != RESYNC and self.current is not None:
            self.current.body_missing_bytes += gap
            self._end_body(chunk, self.pos, complete=False)
        if st != RESYNC or gap:
            self._anomaly(ts, "message_lost_in_gap", f"{gap} bytes missing; resynchronising on the next message")
        self.pos = nxt
        self.state = RESYNC
        return True

    # --------------------------------------------------------------------------------------- main loop
    def _run(self, chunk: StreamChunk) -> None:
        end_of_data = chunk.data_end
        last = (-1, -1, -1)
        while self.pos is not None:
            st = self.state
            now = (self.pos, st, len(self.carry))
            if now == last:  # pragma: no cover - defensive: a state that consumes nothing must not spin
                self._anomaly(chunk.ts_at(self.pos), "parser_stalled", f"state {st} at offset {self.pos}")
                self.state, self.carry = OTHER, b""
                return
            last = now
            if not self.carry and (self.pos >= end_of_data or chunk.next_data(self.pos) != self.pos):
                if self.pos >= end_of_data or not self._skip_gap(chunk):
                    return
                continue
            if st == START:
                progressed = self._parse_head(chunk)
            elif st in (BODY_LENGTH, BODY_CHUNK_DATA):
                avail = self._available(chunk)
                take = min(avail, self.remaining)
                self._consume(take)
                self.remaining -= take
                assert self.current is not None
                self.current.body_bytes += take
                if self.remaining == 0:
                    if st == BODY_LENGTH:
                        self._end_body(chunk, self.pos)
                    else:
                        self.state = BODY_CHUNK_CRLF
                progressed = True
            elif st == BODY_CHUNK_SIZE and not self.carry and self._chunk_run(chunk):
                progressed = True
            elif st in (BODY_CHUNK_SIZE, BODY_CHUNK_CRLF, TRAILERS):
                progressed = self._parse_chunk_line(chunk)
            elif st in (BODY_CLOSE, TUNNEL, OTHER):
                new_pos = self.pos + self._available(chunk)
                if st == BODY_CLOSE and self.current is not None:
                    self.current.body_bytes += new_pos - self.pos
                self.carry = b""
                self.pos = new_pos
                progressed = True
            elif st == HEADER_SKIP:
                progressed = self._skip_header(chunk)
            else:  # RESYNC
                progressed = self._resync(chunk)
            if not progressed:
                # Waiting for more bytes. If the chunk has data after a gap, those bytes never come.
                cend = self.pos + self._available(chunk)
                if chunk.next_data(cend) > cend:
                    self.carry = b""
                    self.pos = cend
                    continue
                return

    def _available(self, chunk: StreamChunk) -> int:
        """Contiguous bytes available at ``pos`` (carried bytes included)."""
        assert self.pos is not None
        if self.carry:
            return len(self.carry) + (chunk.contiguous_end(self.pos + len(self.carry)) - self.pos - len(self.carry)
                                      if len(chunk) else 0)
        return chunk.contiguous_end(self.pos) - self.pos

    def _parse_head(self, chunk: StreamChunk) -> bool:
        """Parse a start line + header block at ``pos``. False when more data is needed."""
        assert self.pos is not None
        pos = self.pos
        data = b""
        if self.messages_seen and not self.carry:
            # a later message of the connection: its head most often ends in the piece it starts in, where a
            # read of 1 KiB walks on through the pieces of the small messages after it (keep-alive requests:
            # 9 in 10 did). A blank line found here is the first one in any longer read (``header_end``),
            # and 5 bytes or more decide the HTTP/0.9 test below as a longer read would.
            data = chunk.read_piece(pos, 1024)
            head_end, head_len = header_end(data)
            if head_end < 0 or len(data) < 5:
                data = b""
        if not data:
            data = self._read(chunk, pos, 1024)
            head_end, head_len = header_end(data)
        if head_end < 0 and len(data) == 1024:
            data = self._read(chunk, pos, 4096)
            head_end, head_len = header_end(data)
        if head_end < 0 and len(data) == 4096:
            data = self._read(chunk, pos, MAX_HEADER_BYTES + 4)
            head_end, head_len = header_end(data)
        if head_end < 0 and self.messages_seen == 0 and self.protocol is None and self._detect_other(data, chunk):
            return True
        if self.kind == RESPONSE and self.expect_http09() and not data.startswith(b"HTTP/"[: len(data)]):
            return self._http09_response(chunk)
        nl = data.find(b"\n")
        if head_end < 0 and self.kind == REQUEST and nl >= 0 and _HTTP09_REQUEST.match(data[:nl]):
            head_end, head_len = nl, nl + 1  # an HTTP/0.9 request: the line is all of it
        if head_end < 0:
            first_line = data.split(b"\n", 1)[0]
            if not self._valid_start(first_line) and (b"\n" in data or len(data) >= 32):
                return self._garbage(chunk, first_line.rstrip(b"\r"), pos)
            if len(data) > MAX_HEADER_BYTES:
                self._anomaly(chunk.ts_at(pos), "oversized_header", f"no header end within {MAX_HEADER_BYTES} B")
                if self._oversized_head(chunk, data, pos):
                    return True
                self.state = RESYNC
                self._consume(1)
                return True
            self._stash(chunk)
            return False
        head = data[:head_end]
        if self.messages_seen == 0 and self.protocol is None and self._detect_other(data, chunk):
            return True
        lines = head.split(b"\n")
        start_line = lines[0].rstrip(b"\r")
        ts = chunk.ts_at(pos) if not self.carry else self.carry_ts
        msg = Message(self.kind, pos, ts)
        if self.kind == REQUEST:
            rm = _LOOSE_REQUEST_LINE.match(start_line)
            if rm is None:
                return self._garbage(chunk, start_line, pos)
            method, target, version = rm.group(1), rm.group(2), rm.group(3)
            if method == b"PRI" and target == b"*" and version == b"HTTP/2.0":
                self.protocol = "h2c"  # HTTP/2 connection preface (prior knowledge or after an Upgrade)
                self.state = OTHER
                self.carry = b""
                return True
            if version is None and target is not None and target.startswith(b"HTTP/"):
                target, version = None, target
            if version is not None and not version.startswith(b"HTTP/"):
                return self._garbage(chunk, start_line, pos)
            if rm.group(0) != start_line or _REQUEST_LINE.match(start_line) is None:
                self._anomaly(chunk.ts_at(pos), "malformed_request_line", _preview(start_line))
            msg.method = intern(method.decode("ascii"))  # one object per distinct value: requests are many
            msg.target = target.decode("latin-1") if target is not None else None
            msg.version = intern(version.decode("latin-1")) if version is not None else (
                "HTTP/0.9" if target is not None else None)
        else:
            sm = _STATUS_LINE.match(start_line)
            if sm is None:
                return self._garbage(chunk, start_line, pos)
            msg.version = intern(sm.group(1).decode("ascii"))
            msg.status = int(sm.group(2))
            msg.reason = (sm.group(3) or b"").decode("latin-1")
        self._parse_headers(msg, lines[1:])
        self.tunnel_after_current = False
        self._consume(head_len)
        msg.header_end = self.pos
        self.messages_seen += 1
        self.current = msg
        request_method = self._on_head(msg)
        self._frame_body(msg, request_method, chunk)
        return True

    def _oversized_head(self, chunk: StreamChunk, data: bytes, pos: int) -> bool:
        """A header block longer than ``MAX_HEADER_BYTES``: when its start line is complete and well formed,
        start the message from it and the complete header lines within the limit, and skip the rest of the
        block (``HEADER_SKIP``). False: not a message start; the caller resynchronises."""
        last = data.rfind(b"\n", 0, MAX_HEADER_BYTES)
        nl = data.find(b"\n")
        if nl < 0 or last < 0:
            return False
        lines = data[:last].split(b"\n")
        start_line = data[:nl].rstrip(b"\r")
        msg = Message(self.kind, pos, chunk.ts_at(pos) if not self.carry else self.carry_ts)
        if self.kind == REQUEST:
            rm = _REQUEST_LINE.match(start_line)
            if rm is None:
                return False
            msg.method = intern(rm.group(1).decode("ascii"))
            msg.target = rm.group(2).decode("latin-1")
            msg.version = intern(rm.group(3).decode("latin-1")) if rm.group(3) is not None else "HTTP/0.9"
        else:
            sm = _STATUS_LINE.match(start_line)
            if sm is None:
                return False
            msg.version = intern(sm.group(1).decode("ascii"))
            msg.status = int(sm.group(2))
            msg.reason = (sm.group(3) or b"").decode("latin-1")
        self._parse_headers(msg, lines[1:])
        self.tunnel_after_current = False
        self._consume(last + 1)
        self.messages_seen += 1
        self.current = msg
        self._skip_tail = b"\n"
        self._skip_method = self._on_head(msg)
        self.state = HEADER_SKIP
        return True

    def _skip_header(self, chunk: StreamChunk) -> bool:
        """``HEADER_SKIP``: find the blank line that ends the header block, keeping nothing but the last
        bytes skipped; then frame the body from the headers kept."""
        assert self.pos is not None and self.current is not None
        avail = self._available(chunk)
        if avail <= 0:
            return False
        data = self._read(chunk, self.pos, min(avail, RESYNC_SCAN_BYTES))
        scan = self._skip_tail + data
        _, end = header_end(scan)
        if end < 0:
            self._consume(len(data))
            self._skip_tail = scan[-3:]
            return True
        self._consume(end - len(self._skip_tail))
        self._skip_tail = b""
        msg = self.current
        msg.header_end = self.pos
        self._frame_body(msg, self._skip_method, chunk)
        return True

    def _http09_response(self, chunk: StreamChunk) -> bool:
        """An HTTP/0.9 response: no status line, no headers, the body runs until the close."""
        assert self.pos is not None
        msg = Message(self.kind, self.pos, chunk.ts_at(self.pos) if not self.carry else self.carry_ts,
                      version="HTTP/0.9", header_end=self.pos)
        self.messages_seen += 1
        self.current = msg
        self._on_head(msg)
        msg.framing = "close"
        self.state = BODY_CLOSE
        return True

    def _garbage(self, chunk: StreamChunk, start_line: bytes, pos: int) -> bool:
        if self.tunnel_after_current and self.kind == REQUEST:
            self.state = TUNNEL  # bytes after an Upgrade/CONNECT request: not HTTP any more
            return True
        self._anomaly(chunk.ts_at(pos), "unparsable_start_line", _preview(start_line))
        self.state = RESYNC
        self._consume(1)
        return True

    def _detect_other(self, data: bytes, chunk: StreamChunk) -> bool:
        """The stream is not HTTP/1: HTTP/2 prior knowledge or TLS. Stop parsing it."""
        if data.startswith(H2_PREFACE[: min(len(data), len(H2_PREFACE))]) and len(data) >= 16:
            self.protocol = "h2c"
        elif looks_like_tls(data):  # a TLS record (any type: a capture may start mid-connection) or SSLv2 hello
            self.protocol = "tls"
        else:
            return False
        self.state = OTHER
        self.carry = b""
        return True

    def _valid_start(self, line: bytes) -> bool:
        """Could ``line`` (possibly cut short) begin a message of this direction?"""
        line = line.rstrip(b"\r")
        if self.kind == REQUEST:
            return _REQUEST_PREFIX.match(line) is not None
        return _STATUS_PREFIX.match(line) is not None

    @staticmethod
    def _parse_headers(msg: Message, lines: list[bytes]) -> None:
        headers = msg.headers
        last: str | None = None
        for raw in lines:
            if not raw or raw == b"\r":
                continue
            first = raw[0]
            if first in (0x20, 0x09) and last is not None:  # obsolete line folding
                headers[last] = headers[last] + " " + raw.strip().decode("latin-1")
                continue
            if not _MAY_BE_KEPT[first]:  # the common case: a header not kept, told by its first byte
                if last is not None and b":" in raw:
                    last = None
                continue
            name, sep, value = raw.partition(b":")
            if not sep:
                continue
            lname = name.strip().lower()
            if lname not in KEPT_HEADERS:
                last = None
                continue
            key = intern(lname.decode("ascii", "replace"))
            val = value.strip().decode("latin-1")
            if key == "host":
                val = intern(val)  # the same on every request of a connection
            if key in headers:
                headers[key] = headers[key] + ", " + val
            else:
                headers[key] = val
            last = key

    def _frame_body(self, msg: Message, request_method: str | None, chunk: StreamChunk) -> None:
        """Decide how the body of ``msg`` is delimited (RFC 9112 §6.3) and enter that state."""
        te = msg.headers.get("transfer-encoding", "").lower()
        cl_raw = msg.headers.get("content-length")
        if self.kind == REQUEST and (msg.method == "CONNECT" or "upgrade" in msg.connection_tokens()
                                     or "upgrade" in msg.headers):
            self.tunnel_after_current = True  # non-HTTP bytes after it mean the switch happened
        if self.kind == RESPONSE:
            status = msg.status or 0
            if request_method == "HEAD" or 100 <= status < 200 or status in (204, 304):
                if status == 101:
                    msg.framing = "tunnel"
                self._end_message(msg, chunk)
                if status == 101:
                    self.state = TUNNEL
                return
            if request_method == "CONNECT" and 200 <= status < 300:
                msg.framing = "tunnel"
                self._end_message(msg, chunk)
                self.state = TUNNEL
                return
        if te and "chunked" in te:
            msg.framing = "chunked"
            self.state = BODY_CHUNK_SIZE
            return
        if cl_raw is not None:
            length = _content_length(cl_raw)
            if length is None:
                self._anomaly(msg.ts_start_ns, "bad_content_length", _preview(cl_raw.encode("latin-1")))
            elif length == 0:
                msg.framing = "length"
                self._end_message(msg, chunk)
                return
            else:
                msg.framing = "length"
                self.remaining = length
                self.state = BODY_LENGTH
                return
        if self.kind == REQUEST:  # requests without length have no body (RFC 9112 §6.3 rule 7)
            self._end_message(msg, chunk)
            return
        msg.framing = "close"
        self.state = BODY_CLOSE

    def _parse_chunk_line(self, chunk: StreamChunk) -> bool:
        assert self.pos is not None and self.current is not None
        data = self._read(chunk, self.pos, MAX_CHUNK_LINE_BYTES if self.state != TRAILERS else MAX_HEADER_BYTES)
        nl = data.find(b"\n")
        if nl < 0:
            if len(data) >= (MAX_CHUNK_LINE_BYTES if self.state != TRAILERS else MAX_HEADER_BYTES):
                self._anomaly(chunk.ts_at(self.pos), "bad_chunk_size", _preview(data[:40]))
                self._end_body(chunk, self.pos, complete=False)
                self.state = RESYNC
                return True
            self._stash(chunk)
            return False
        line = data[:nl].rstrip(b"\r")
        st = self.state
        self._consume(nl + 1)
        self.current.body_bytes += nl + 1
        if st == BODY_CHUNK_CRLF:
            if line:
                self._anomaly(chunk.ts_at(self.pos), "bad_chunk_size", "missing CRLF after chunk data")
            self.state = BODY_CHUNK_SIZE
            return True
        if st == TRAILERS:
            if not line:
                self._end_body(chunk, self.pos)
            return True
        size_txt = line.split(b";", 1)[0].strip()
        try:
            size = int(size_txt, 16)
            if size < 0:  # "-5": int() takes a sign, a chunk size has none
                raise ValueError(size_txt)
        except ValueError:
            self._anomaly(chunk.ts_at(self.pos), "bad_chunk_size", _preview(line))
            self._end_body(chunk, self.pos, complete=False)
            self.state = RESYNC
            return True
        if size == 0:
            self.state = TRAILERS
        else:
            self.remaining = size
            self.state = BODY_CHUNK_DATA
        return True

    def _chunk_run(self, chunk: StreamChunk) -> bool:
        """Fast path for a chunked body: walk the whole chunks (size line, data, CRLF) that lie in one window
        of contiguous bytes in a tight loop, instead of a parser step per line and per data run (a body of
        1-byte chunks costs about a microsecond per chunk, not tens). It stops before anything else (the
        last chunk, a chunk not entirely in the window, a malformed line), which the step-by-step parser
        then handles. False when it consumed nothing. The window grows while it is consumed whole and
        falls back to 4 KiB when nothing was, so a body that defeats it costs at most 4 KiB read per chunk."""
        assert self.pos is not None and self.current is not None
        avail = chunk.contiguous_end(self.pos) - self.pos
        window = min(avail, self._run_window)
        if window < 8:
            return False
        data = chunk.read(self.pos, window)
        n = len(data)
        i = 0
        find, hexdigits = data.find, _HEX_SIZE.fullmatch
        while True:
            nl = find(b"\n", i, i + MAX_CHUNK_LINE_BYTES)
            if nl < 0:
                break
            semi = find(b";", i, nl)
            txt = data[i: semi if semi >= 0 else nl].strip()
            if hexdigits(txt) is None:
                break
            size = int(txt, 16)
            end = nl + 1 + size
            if size == 0 or end + 2 > n or data[end: end + 2] != b"\r\n":
                break
            i = end + 2
        if i:
            self._consume(i)
            self.current.body_bytes += i
        self._run_window = min(self._run_window * 2, CHUNK_RUN_BYTES) if i * 2 >= window else 4096
        return i > 0

    def _resync(self, chunk: StreamChunk) -> bool:
        """Find the next message start at or after ``pos``; skip what precedes it."""
        assert self.pos is not None
        avail = self._available(chunk)
        pattern = _REQUEST_START if self.kind == REQUEST else _RESPONSE_START
        data = self._read(chunk, self.pos, min(avail, RESYNC_SCAN_BYTES))
        m = pattern.search(data)
        if m is not None:
            self._consume(m.start(1))
            self.state = START
            return True
        keep = 64  # a start line may straddle the end of what is available
        if len(data) <= keep:
            self._stash(chunk)
            return False
        self._consume(len(data) - keep)
        return True

    def _end_body(self, chunk: StreamChunk, end: int, complete: bool = True) -> None:
        msg = self.current
        if msg is None:
            self.state = START
            return
        msg.end = end
        msg.ts_end_ns = self._done_at(chunk, end)
        msg.complete = complete and msg.body_missing_bytes == 0
        self.current = None
        self.state = TUNNEL if self.tunnel_after_body else START
        self._on_end(msg)

    def _end_message(self, msg: Message, chunk: StreamChunk) -> None:
        assert self.pos is not None
        msg.end = self.pos
        msg.ts_end_ns = self._done_at(chunk, self.pos)
        msg.complete = True
        self.current = None
        self.state = TUNNEL if self.tunnel_after_body else START
        self._on_end(msg)

    def _finish_current_at_headers_end(self) -> None:
        msg = self.current
        if msg is not None and msg.end < 0:
            msg.end = msg.header_end
            msg.ts_end_ns = msg.ts_end_ns or msg.ts_start_ns
            msg.complete = True
            self.current = None
            self._on_end(msg)

    def _eof(self, chunk: StreamChunk) -> None:
        """The sender closed (FIN) or the capture ended: close read-until-close bodies."""
        if chunk.eof >= 0 and self.pos is not None and chunk.eof > self.pos + len(self.carry):
            # bytes missing just before the FIN (capture loss, snaplen): a gap like any other
            self.pos += len(self.carry)
            self.carry = b""
            self._gap_to(chunk, chunk.eof, self._last_ts)
        msg = self.current
        if msg is None:
            if self.carry and chunk.final and self.state == START and self.protocol is None:
                self._anomaly(self._last_ts, "truncated_message", f"{len(self.carry)} B of an incomplete head")
            self.carry = b""
            return
        if self.state == BODY_CLOSE and (chunk.eof >= 0 or chunk.final):
            closed_by_fin = chunk.eof >= 0
            assert self.pos is not None
            msg.end = self.pos
            msg.ts_end_ns = self._last_ts if not len(chunk) else int(chunk.done_ns[-1])
            msg.complete = closed_by_fin and msg.body_missing_bytes == 0
            self.current = None
            self.state = START
            self._on_end(msg)
            return
        if chunk.final:
            self._anomaly(self._last_ts, "truncated_message",
                          f"{'request' if self.kind == REQUEST else 'response'} incomplete at the end of data")
            msg.end = self.pos if self.pos is not None else msg.header_end
            msg.ts_end_ns = self._last_ts
            msg.complete = False
            self.current = None
            self.state = START
            self._on_end(msg)


def header_end(data: bytes) -> tuple[int, int]:
    """Where the first blank line ending a header block (``\\r?\\n\\r?\\n``) starts and ends in ``data``;
    (-1, -1) without one. Two ``bytes.find`` scans instead of that regular expression: 2 µs instead of 7 on
    a 1 KiB read of a typical response head (measured; it ran once per message). The match starts at the
    first line feed followed by an optional CR and a line feed (one CR before it belongs to the match)."""
    lf_crlf = data.find(b"\n\r\n")
    lf_lf = data.find(b"\n\n", 0, lf_crlf + 1 if lf_crlf >= 0 else len(data))
    if lf_lf >= 0:
        at, end = lf_lf, lf_lf + 2
    elif lf_crlf >= 0:
        at, end = lf_crlf, lf_crlf + 3
    else:
        return -1, -1
    return (at - 1 if at and data[at - 1] == 13 else at), end


def _never() -> bool:
    return False


def _content_length(raw: str) -> int | None:
    """Content-Length value, tolerating repeated identical values ("5, 5"); None when invalid."""
    if "," in raw:  # (one value, the common case, is taken without a set)
        values = {v.strip() for v in raw.split(",")}
        if len(values) != 1:
            return None
        (raw,) = values
    v = raw.strip()
    # ASCII digits only: str.isdigit() also takes Latin-1's superscripts (b"\xb2"), which int() refuses
    if not (v.isascii() and v.isdigit()) or len(v) > 15:
        return None
    return int(v)


def _preview(data: bytes, limit: int = 60) -> str:
    text = data[:limit].decode("latin-1")
    return "".join(c if 32 <= ord(c) < 127 else "." for c in text)


def keep_alive_params(value: str | None) -> tuple[float | None, int | None]:
    """``Keep-Alive: timeout=5, max=100`` → (5.0, 100)."""
    if not value:
        return None, None
    timeout: float | None = None
    maximum: int | None = None
    for name, num in _KEEPALIVE_PARAM.findall(value):
        if name.lower() == "timeout":
            timeout = float(num)
        else:
            maximum = int(num)
    return timeout, maximum
