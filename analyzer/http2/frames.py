"""Frame boundaries of one direction of an HTTP/2 connection, read from ``StreamChunk`` pieces.

``FrameReader`` cuts one direction's reassembled byte stream into frames (RFC 9113 §4.1: a 9-byte header,
then ``length`` payload bytes) and hands each complete frame to a callback with its time. It knows nothing
of streams or header compression (``connection.py`` does); it owns:

- the client's connection preface (``PRI * HTTP/2.0...``), checked and skipped;
- frames split across chunks (partial headers and payloads are kept between calls) and many frames per
  chunk;
- DATA payloads, which are **skipped, never copied**: only their length, padding and missing bytes are
  counted, so a download costs one step per frame, not per byte;
- other payloads, kept up to ``MAX_FRAME_BUFFER_BYTES`` (the bound on memory per direction); a longer one
  is skipped whole (its length keeps the frame boundary) and reported as ``h2_buffer_limit``;
- gaps (bytes the capture lacks). A gap inside a payload whose length is known keeps the frame boundary:
  DATA counts the bytes as missing, other frames are delivered as *damaged* (payload ``None``). A gap that
  swallows a frame header loses the boundary: the reader looks for the next plausible frame boundary
  (``find_boundary``: a chain of frame headers that pass every check of RFC 9113 §6) and goes on from there
  (``h2_gap``), or, after ``RESYNC_MAX_SCAN_BYTES`` without one, stops the direction (``h2_gap`` too).
  Either way frames were lost, so the caller is told (``on_lost``) and treats that direction's header
  compression state as unknown from then on.

Times: a frame's time is the time at which every byte up to its last one had been seen (``done_at`` of its
end: Wireshark's "reassembled in" frame), as ``analyzer.http.http1`` times the end of a message.

Nothing here raises on malformed input: problems become anomalies ``(ts_ns, name, detail)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from analyzer.flows.stream import StreamChunk

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 §3.4, the client's first 24 bytes
FRAME_HEADER_BYTES = 9
DEFAULT_MAX_FRAME_SIZE = 16_384  # SETTINGS_MAX_FRAME_SIZE until a peer advertises more (RFC 9113 §6.5.2)
MAX_FRAME_SIZE_LIMIT = (1 << 24) - 1  # the largest value SETTINGS_MAX_FRAME_SIZE may take
# A non-DATA payload larger than this is skipped, not kept (bounded memory per direction). Header blocks are
# the only large ones in practice: nghttp2 refuses header lists over 64 KiB by default, Chrome sends header
# blocks of a few KiB, and a 1 MiB HEADERS frame needs a peer that advertised a 1 MiB SETTINGS_MAX_FRAME_SIZE.
MAX_FRAME_BUFFER_BYTES = 1 << 20
RESYNC_MIN_CHAIN = 3  # frame headers in a row that must look right before we trust a boundary after a gap
RESYNC_MAX_SCAN_BYTES = 4 << 20  # bytes searched for a frame boundary after a gap before the direction stops

# frame types (RFC 9113 §6, RFC 7838, RFC 8336, RFC 9218)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
FRAME_NAMES = ("DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY",
               "WINDOW_UPDATE", "CONTINUATION")
END_STREAM = 0x01
ACK = 0x01
END_HEADERS = 0x04
PADDED = 0x08
PRIORITY_FLAG = 0x20

# Checks of a frame header used to find a boundary after a gap: the flags each type defines (others "MUST be
# left unset when sending", RFC 9113 §4.1), whether it belongs to a stream, and fixed payload sizes.
_ALLOWED_FLAGS = np.array([0x09, 0x2D, 0x00, 0x00, 0x01, 0x0C, 0x01, 0x00, 0x00, 0x04], dtype=np.uint8)
_NEEDS_STREAM = np.array([1, 1, 1, 1, 0, 1, 0, 0, -1, 1], dtype=np.int8)  # 1 yes, 0 must be 0, -1 either
_FIXED_LENGTH = np.array([-1, -1, 5, 4, -1, -1, 8, -1, 4, -1], dtype=np.int64)

Anomaly = tuple[int, str, str]

# reader states
_PREFACE, _HEAD, _BODY, _PAD, _SKIP, _RESYNC, _STOPPED = range(7)


@dataclass(slots=True)
class FrameEvent:
    """One complete frame (or the part of it the capture holds).

    ``payload`` is the frame's payload (padding included; ``hyperframe`` strips it) for non-DATA frames,
    ``None`` for DATA frames (skipped) and for frames whose payload was not kept: ``damaged`` (bytes of it
    missing from the capture) or too large. ``data_bytes``: DATA payload minus padding (missing bytes
    included, as HTTP/1 body sizes). ``missing``: payload bytes not captured. ``truncated``: the capture
    ended inside the frame (only DATA frames are delivered that way, with what was seen).
    """

    type: int
    flags: int
    stream_id: int
    length: int
    offset: int  # stream offset of the frame's first header byte
    ts_ns: int  # when every byte up to the frame's last one had been seen
    header: bytes
    payload: bytes | None
    data_bytes: int = 0
    missing: int = 0
    damaged: bool = False
    truncated: bool = False


def parse_header(h: bytes) -> tuple[int, int, int, int]:
    """(length, type, flags, stream id) of a 9-byte frame header (the reserved bit is ignored)."""
    return (h[0] << 16) | (h[1] << 8) | h[2], h[3], h[4], int.from_bytes(h[5:9], "big") & 0x7FFFFFFF


def plausible_header(h: bytes, max_length: int) -> bool:
    """Could ``h`` be the header of a frame a conforming peer sends? (Known types only: the checks of
    RFC 9113 §6 on flags, stream association and fixed lengths, and a length within ``max_length``.)"""
    length, ftype, flags, _ = parse_header(h)
    if ftype > CONTINUATION or h[5] & 0x80 or length > max_length:
        return False
    if flags & ~int(_ALLOWED_FLAGS[ftype]) & 0xFF:
        return False
    sid = int.from_bytes(h[5:9], "big")
    need = int(_NEEDS_STREAM[ftype])
    if (need == 1 and sid == 0) or (need == 0 and sid != 0):
        return False
    fixed = int(_FIXED_LENGTH[ftype])
    if fixed >= 0 and length != fixed:
        return False
    if ftype == SETTINGS and (length % 6 or (flags & ACK and length)):
        return False
    return not (ftype == GOAWAY and length < 8)


def find_boundary(data: bytes, max_length: int, min_chain: int = RESYNC_MIN_CHAIN) -> int:
    """Offset in ``data`` of the first frame header that starts a believable chain of frames, or -1.

    A chain is ``min_chain`` plausible headers in a row (each the end of the previous frame), or at least
    two whose last frame runs to (or past) the end of ``data``. A CONTINUATION may only follow a HEADERS or
    PUSH_PROMISE without END_HEADERS on the same stream, which must be followed by one; a chain never
    starts with a CONTINUATION. Candidates are filtered with numpy, then chains are followed in Python.
    """
    n = len(data)
    if n < FRAME_HEADER_BYTES:
        return -1
    a = np.frombuffer(data, dtype=np.uint8)
    m = n - FRAME_HEADER_BYTES + 1
    length = (a[:m].astype(np.int64) << 16) | (a[1 : m + 1].astype(np.int64) << 8) | a[2 : m + 2]
    ftype = a[3 : m + 3]
    ok = (ftype < CONTINUATION) & ((a[5 : m + 5] & 0x80) == 0) & (length <= max_length)
    idx = np.nonzero(ok)[0]
    if not len(idx):
        return -1
    flags = a[4 : m + 4][idx]
    t = ftype[idx]
    keep = (flags & ~_ALLOWED_FLAGS[t]) == 0
    for p in idx[keep].tolist():
        if _chain_ok(data, p, max_length, min_chain):
            return int(p)
    return -1


def _chain_ok(data: bytes, p: int, max_length: int, min_chain: int) -> bool:
    n = len(data)
    count = 0
    open_block: int | None = None  # stream id of a header block waiting for CONTINUATION
    while p + FRAME_HEADER_BYTES <= n:
        h = data[p : p + FRAME_HEADER_BYTES]
        if not plausible_header(h, max_length):
            return False
        length, ftype, flags, sid = parse_header(h)
        if open_block is not None:
            if ftype != CONTINUATION or sid != open_block:
                return False
        elif ftype == CONTINUATION:
            return False
        if ftype in (HEADERS, PUSH_PROMISE, CONTINUATION):
            open_block = None if flags & END_HEADERS else sid
        count += 1
        if count >= min_chain:
            return True
        p += FRAME_HEADER_BYTES + length
    return count >= 2  # the chain runs to the end of the data without a header that looks wrong


class FrameReader:
    """Frames of one direction. ``feed(chunk)`` in stream order; complete frames go to ``on_frame``.

    ``start``: stream offset where HTTP/2 begins (after an HTTP/1.1 Upgrade), ``None`` for the first
    delivered byte. ``preface``: the direction starts with the client connection preface. ``first_settings``:
    its first frame must be a SETTINGS frame (RFC 9113 §3.4); when it is not, the capture started in the
    middle of the connection, and the header compression state is unknown (``on_lost``).
    ``max_length()`` gives the largest frame length believed when looking for a boundary after a gap.
    """

    def __init__(
        self,
        on_frame: Callable[[FrameEvent], None],
        on_lost: Callable[[int, str], None],
        on_anomaly: Callable[[int, str, str], None],
        start: int | None = None,
        preface: bool = False,
        first_settings: bool = True,
        max_length: Callable[[], int] | None = None,
    ) -> None:
        self.on_frame = on_frame
        self.on_lost = on_lost
        self.on_anomaly = on_anomaly
        self.start = start
        self.max_length = max_length or _default_max_length
        self.state = _PREFACE if preface else _HEAD
        self.expect_settings = first_settings
        self.check_preface = preface
        self.pos: int | None = None
        self.buf = bytearray()  # bytes of the current unit (preface, header, payload, pad length)
        self.need = len(PREFACE) if preface else FRAME_HEADER_BYTES
        self.frame_start = 0
        self.header = b""
        self.length = self.ftype = self.flags = self.sid = 0
        self.remaining = 0  # _SKIP: payload bytes still to pass
        self.missing = 0  # payload bytes of the current frame not captured
        self.pad = -1  # DATA: pad length (-1 unknown / not padded)
        self.damaged = False
        self.scanned = 0  # bytes searched for a boundary since the last gap
        self.last_ts = 0
        self.frames = 0
        self.ended = False
        self.largest = 0  # largest frame length seen
        self.largest_ts = 0

    # ---------------------------------------------------------------------------------------------- API
    def feed(self, chunk: StreamChunk) -> None:
        if self.ended:
            return
        if len(chunk):
            self.last_ts = int(chunk.ts_ns[-1])
            if self.pos is None:
                first = int(chunk.start[0])
                if self.start is None:
                    self.start = first
                self.pos = self.start
                self.frame_start = self.start
            self._run(chunk)
        if chunk.eof >= 0 or chunk.final:
            self._end(chunk)

    @property
    def stopped(self) -> bool:
        return self.state == _STOPPED

    def stop(self) -> None:
        """Analyze nothing more of this direction."""
        self.state = _STOPPED
        self.buf = bytearray()

    # ---------------------------------------------------------------------------------------- main loop
    def _run(self, chunk: StreamChunk) -> None:
        end_of_data = chunk.data_end
        while self.state != _STOPPED:
            assert self.pos is not None
            pos = self.pos
            if pos >= end_of_data:
                return
            nxt = chunk.next_data(pos)
            if nxt < 0:
                return
            if nxt > pos:
                self._gap(chunk, nxt)
                continue
            st = self.state
            if st == _SKIP:
                take = min(chunk.contiguous_end(pos) - pos, self.remaining)
                self.pos = pos + take
                self.remaining -= take
                if self.remaining == 0:
                    self._frame_done(chunk.done_at(self.pos))
            elif st == _RESYNC:
                self._resync(chunk)
            else:
                data = chunk.read(pos, self.need - len(self.buf))
                if st == _PREFACE and self.check_preface and not PREFACE.startswith(bytes(self.buf) + data):
                    self._not_preface(chunk)
                    continue
                self.buf += data
                self.pos = pos + len(data)
                if len(self.buf) >= self.need:
                    self._unit_done(chunk)

    def _unit_done(self, chunk: StreamChunk) -> None:
        """The bytes wanted in the current state are all in ``buf``."""
        assert self.pos is not None
        st = self.state
        if st == _PREFACE:
            self._expect_header()
        elif st == _HEAD:
            self._header_done(chunk)
        elif st == _BODY:
            payload = bytes(self.buf)
            self.buf = bytearray()
            self._emit(chunk.done_at(self.pos), payload)
        else:  # _PAD: the pad length byte of a DATA frame
            self.pad = self.buf[0]
            self.buf = bytearray()
            self.remaining = self.length - 1
            self.state = _SKIP
            if self.remaining == 0:
                self._frame_done(chunk.done_at(self.pos))

    def _header_done(self, chunk: StreamChunk) -> None:
        assert self.pos is not None
        h = bytes(self.buf)
        self.buf = bytearray()
        length, ftype, flags, sid = parse_header(h)
        if self.expect_settings:
            self.expect_settings = False
            if ftype != SETTINGS or sid != 0 or flags & ACK or not plausible_header(h, MAX_FRAME_SIZE_LIMIT):
                ts = chunk.ts_at(self.frame_start)
                self.on_anomaly(ts, "h2_midstream",
                                f"first frame is not SETTINGS ({_describe(h)}): the capture starts inside the "
                                "connection; header fields of this direction are unknown")
                self.on_lost(ts, "midstream")
                back = self.frame_start
                if chunk.next_data(back) == back and chunk.contiguous_end(back) >= self.pos:
                    self.pos = back  # the 9 bytes are still in this chunk: search them too
                self._enter_resync()
                return
        self.header = h
        self.length, self.ftype, self.flags, self.sid = length, ftype, flags, sid
        self.missing = 0
        self.pad = -1
        self.damaged = False
        if length > self.largest:
            self.largest, self.largest_ts = length, chunk.ts_at(self.frame_start)
        if length == 0:
            self._emit(chunk.done_at(self.pos), b"" if ftype != DATA else None)
            return
        if ftype == DATA:
            if flags & PADDED:
                self.state, self.need = _PAD, 1
            else:
                self.state, self.remaining = _SKIP, length
        elif length > MAX_FRAME_BUFFER_BYTES:
            self.on_anomaly(chunk.ts_at(self.frame_start), "h2_buffer_limit",
                            f"{_name(ftype)} frame of {length} bytes on stream {sid} not kept "
                            f"(limit MAX_FRAME_BUFFER_BYTES = {MAX_FRAME_BUFFER_BYTES})")
            self.state, self.remaining = _SKIP, length
        else:
            self.state, self.need = _BODY, length

    def _expect_header(self) -> None:
        assert self.pos is not None
        self.buf = bytearray()
        self.state, self.need = _HEAD, FRAME_HEADER_BYTES
        self.frame_start = self.pos

    def _frame_done(self, ts: int) -> None:
        """End of a skipped payload (DATA, or a frame not kept)."""
        self._emit(ts, None)

    def _emit(self, ts: int, payload: bytes | None) -> None:
        ftype = self.ftype
        data_bytes = 0
        if ftype == DATA:
            data_bytes = self.length
            if self.flags & PADDED:
                pad = max(self.pad, 0)
                data_bytes = self.length - 1 - pad
                if data_bytes < 0:
                    self.on_anomaly(ts, "h2_frame_error",
                                    f"DATA on stream {self.sid}: padding {pad} longer than the payload "
                                    f"({self.length} bytes)")
                    data_bytes = 0
        damaged = self.damaged or (ftype != DATA and payload is None)
        ev = FrameEvent(ftype, self.flags, self.sid, self.length, self.frame_start, ts, self.header,
                        payload, data_bytes, self.missing, damaged)
        self.frames += 1
        self._expect_header()
        self.on_frame(ev)

    # ---------------------------------------------------------------------------------------------- gaps
    def _gap(self, chunk: StreamChunk, nxt: int) -> None:
        """The bytes from ``pos`` to ``nxt`` are not in the capture."""
        assert self.pos is not None
        gap = nxt - self.pos
        ts = _ts_at(chunk, nxt, self.last_ts)
        st = self.state
        if st == _PREFACE:  # the preface has a fixed length: skip what is missing of it, unchecked
            left = self.need - len(self.buf)
            self.check_preface = False
            if gap < left:
                self.buf += bytes(gap)  # placeholders: only the count matters from here on
                self.pos = nxt
                return
            self.pos += left
            self._expect_header()
            if nxt > self.pos:
                self._gap(chunk, nxt)
            return
        if st == _PAD:  # the pad length byte is missing: the padding is unknown (counted as none)
            self.state, self.remaining = _SKIP, self.length
            st = _SKIP
        if st == _BODY:  # a kept payload lost bytes: deliver the frame as damaged, its boundary is known
            have = len(self.buf)
            self.buf = bytearray()
            self.state, self.remaining, self.damaged = _SKIP, self.length - have, True
            st = _SKIP
        if st == _SKIP:
            if self.ftype != DATA:
                self.damaged = True
            if gap <= self.remaining:
                self.remaining -= gap
                self.missing += gap
                self.pos = nxt
                if self.remaining == 0:
                    self._frame_done(_done_at(chunk, nxt, self.last_ts))
                return
            self.missing += self.remaining
            lost_from = self.pos + self.remaining
            self.pos = lost_from
            self.remaining = 0
            self._frame_done(ts)  # the frame itself is accounted for; what follows it is lost
            self._lose(ts, nxt - lost_from, nxt)
            return
        if st in (_RESYNC, _STOPPED):
            self.pos = nxt
            return
        # _HEAD: the next frame header (or part of it) is missing: the boundary is lost
        self._lose(ts, gap + len(self.buf), nxt)

    def _lose(self, ts: int, nbytes: int, nxt: int) -> None:
        self.on_anomaly(ts, "h2_gap", f"{nbytes} bytes missing across a frame boundary; "
                                      "looking for the next frame, header fields of this direction unknown")
        self.on_lost(ts, "gap")
        self.pos = nxt
        self._enter_resync()

    def _enter_resync(self) -> None:
        self.buf = bytearray()
        self.state = _RESYNC
        self.scanned = 0

    def _not_preface(self, chunk: StreamChunk) -> None:
        assert self.pos is not None
        ts = chunk.ts_at(self.pos)
        self.on_anomaly(ts, "h2_bad_preface", "the client did not start with the HTTP/2 connection preface; "
                                              "header fields of this direction are unknown")
        self.on_lost(ts, "no preface")
        self.expect_settings = False
        self._enter_resync()

    def _resync(self, chunk: StreamChunk) -> None:
        """Search the contiguous bytes at ``pos`` for a frame boundary (see ``find_boundary``)."""
        assert self.pos is not None
        run = chunk.contiguous_end(self.pos) - self.pos
        budget = RESYNC_MAX_SCAN_BYTES - self.scanned
        data = chunk.read(self.pos, min(run, budget + FRAME_HEADER_BYTES))
        p = find_boundary(data, self.max_length())
        if p >= 0:
            self.pos += p
            self._expect_header()
            return
        self.scanned += len(data)
        self.pos += len(data)
        if self.scanned >= RESYNC_MAX_SCAN_BYTES:
            self.on_anomaly(chunk.ts_at(self.pos - 1), "h2_gap",
                            f"no frame boundary found in {self.scanned} bytes after a gap: "
                            "this direction is not analyzed further")
            self.state = _STOPPED

    # ----------------------------------------------------------------------------------------------- end
    def _end(self, chunk: StreamChunk) -> None:
        """The sender closed (FIN, ``eof``) or nothing more will come (``final``)."""
        self.ended = True
        if self.pos is None:
            return
        if chunk.eof > self.pos and self.state != _STOPPED:
            self._gap(chunk, chunk.eof)  # bytes missing just before the FIN
        st = self.state
        if st in (_SKIP, _PAD) and self.ftype == DATA:
            seen = self.length - self.remaining if st == _SKIP else 0
            pad_overhead = 1 + max(self.pad, 0) if self.flags & PADDED and seen else 0
            ev = FrameEvent(DATA, self.flags & ~END_STREAM, self.sid, self.length, self.frame_start,
                            self.last_ts, self.header, None, max(seen - pad_overhead, 0), self.missing,
                            False, True)
            self.on_anomaly(self.last_ts, "h2_truncated_frame",
                            f"DATA frame on stream {self.sid} cut after {seen} of {self.length} bytes")
            self.state = _STOPPED
            self.on_frame(ev)
        elif st in (_BODY, _SKIP, _PAD) or (st == _HEAD and self.buf):
            what = _name(self.ftype) if st != _HEAD else "frame header"
            self.on_anomaly(self.last_ts, "h2_truncated_frame", f"{what} incomplete at the end of the data")
            self.state = _STOPPED
        elif st == _PREFACE and self.buf:
            self.on_anomaly(self.last_ts, "h2_truncated_frame", "connection preface incomplete")
            self.state = _STOPPED


def _ts_at(chunk: StreamChunk, offset: int, default: int) -> int:
    return chunk.ts_at(offset) if len(chunk) else default


def _done_at(chunk: StreamChunk, offset: int, default: int) -> int:
    return chunk.done_at(offset) if len(chunk) else default


def _default_max_length() -> int:
    return DEFAULT_MAX_FRAME_SIZE


def _name(ftype: int) -> str:
    return FRAME_NAMES[ftype] if ftype < len(FRAME_NAMES) else f"type 0x{ftype:x}"


def _describe(h: bytes) -> str:
    length, ftype, flags, sid = parse_header(h)
    return f"{_name(ftype)} length {length} flags 0x{flags:02x} stream {sid}"
