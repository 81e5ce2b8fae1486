"""``StreamChunk``: the new bytes of one direction of one connection, as seen by protocol parsers.

The reassembler (``reassembly.py``) delivers, per chunk of packets, a run of *pieces* for each direction:
byte ranges in the direction's relative sequence space (0 = first byte after the SYN, or the first byte
seen on a mid-stream connection), each pointing into a packet buffer without copying, with the time the
piece arrived and the time the stream was complete up to the piece's end. Holes between pieces are gaps:
bytes the capture does not have. They are explicit (``gap_before``) and never zero-filled.

Protocol parsers (``analyzer.http``) read bytes through this class only; they never see packets, sequence
numbers or buffers. This module knows nothing about HTTP.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]

SMALL_CHUNK_PIECES = 64  # up to this many pieces, per-chunk work loops over lists instead of calling numpy


@dataclass(slots=True)
class StreamChunk:
    """Pieces ``i = 0..n-1`` of one direction, in stream order, non-overlapping.

    ``start[i]``/``end[i]``: stream offsets of the captured bytes of piece i. ``buffers[src[i]]`` holds them
    at ``buf_off[i]``. ``ts_ns[i]``: capture time of the packet that carried them. ``done_ns[i]``: time at
    which every byte up to ``end[i]`` had been seen (Wireshark's "reassembled in" frame time).
    ``eof`` is the stream offset of the sender's FIN when this chunk reaches it (no more data will follow),
    else -1. ``final`` is True when nothing more will ever be delivered (connection finished or capture
    end).
    """

    start: I64
    end: I64
    src: npt.NDArray[np.int8]
    buf_off: I64
    ts_ns: I64
    done_ns: I64
    buffers: tuple[npt.NDArray[np.uint8], ...]
    eof: int = -1
    final: bool = False
    _run_end: list[int] | None = None  # per piece: end of the contiguous run it belongs to (lazy)
    _lists: tuple[list[int], list[int], list[int], list[int]] | None = None  # start, end, src, buf_off
    _times: tuple[list[int], list[int]] | None = None  # ts_ns, done_ns

    def _l(self) -> tuple[list[int], list[int], list[int], list[int]]:
        """The columns as Python lists: parsers call per message, and list+bisect beats numpy scalars."""
        if self._lists is None:
            self._lists = (self.start.tolist(), self.end.tolist(), self.src.tolist(), self.buf_off.tolist())
        return self._lists

    def _t(self) -> tuple[list[int], list[int]]:
        """``ts_ns`` and ``done_ns`` as Python lists (as ``_l``)."""
        if self._times is None:
            self._times = (self.ts_ns.tolist(), self.done_ns.tolist())
        return self._times

    def __len__(self) -> int:
        return len(self.start)

    @property
    def gap_before(self) -> I64:
        """Missing bytes before each piece (0 where contiguous with the previous piece)."""
        gaps = np.zeros(len(self), dtype=np.int64)
        if len(self) > 1:
            gaps[1:] = self.start[1:] - self.end[:-1]
        return gaps

    def piece_index(self, offset: int) -> int:
        """Index of the piece containing stream ``offset``, or of the first piece after it."""
        return bisect_right(self._l()[1], offset)

    def read(self, offset: int, limit: int) -> bytes:
        """Up to ``limit`` contiguous bytes from ``offset`` (stops at a gap or at the chunk end)."""
        starts, ends, srcs, offs = self._l()
        i = bisect_right(ends, offset)
        n = len(ends)
        if i >= n or starts[i] > offset:
            return b""
        a = offs[i] + offset - starts[i]
        if ends[i] - offset >= limit:  # the common case: one piece
            return self.buffers[srcs[i]][a : a + limit].tobytes()
        out: list[bytes] = []
        want = limit
        pos = offset
        while want > 0 and i < n:
            s, e = starts[i], ends[i]
            if s > pos:
                break  # gap
            take = min(e - pos, want)
            base = offs[i] + pos - s
            out.append(self.buffers[srcs[i]][base : base + take].tobytes())
            pos += take
            want -= take
            i += 1
        return b"".join(out)

    def read_piece(self, offset: int, limit: int) -> bytes:
        """Up to ``limit`` bytes from ``offset`` within the one piece that holds it (b"" in a gap): ``read``
        without walking on into the pieces after it, for a parser that most often finds what it looks for
        there."""
        starts, ends, srcs, offs = self._l()
        i = bisect_right(ends, offset)
        if i >= len(ends) or starts[i] > offset:
            return b""
        a = offs[i] + offset - starts[i]
        return self.buffers[srcs[i]][a : a + min(limit, ends[i] - offset)].tobytes()

    def contiguous_end(self, offset: int) -> int:
        """Stream offset where the run of contiguous bytes starting at ``offset`` ends."""
        starts, ends, _, _ = self._l()
        i = bisect_right(ends, offset)
        if i >= len(ends) or starts[i] > offset:
            return offset
        run_end = self._run_end
        if run_end is None:
            run_end = self._run_end = (_run_ends_of_lists(starts, ends) if len(ends) <= SMALL_CHUNK_PIECES
                                       else _run_ends(self.start, self.end).tolist())
        return run_end[i]

    def next_data(self, offset: int) -> int:
        """First stream offset >= ``offset`` that has data in this chunk, or -1."""
        starts, ends, _, _ = self._l()
        i = bisect_right(ends, offset)
        if i >= len(ends):
            return -1
        return max(offset, starts[i])

    def ts_at(self, offset: int) -> int:
        """Arrival time (ns) of the byte at ``offset`` (of the next piece when it falls in a gap)."""
        ends = self._l()[1]
        return self._t()[0][min(bisect_right(ends, offset), len(ends) - 1)]

    def done_at(self, offset: int) -> int:
        """Time (ns) when every byte before ``offset`` had been seen (``offset`` exclusive)."""
        ends = self._l()[1]
        return self._t()[1][min(bisect_left(ends, offset), len(ends) - 1)]

    @property
    def data_end(self) -> int:
        """Stream offset just past the last delivered byte (or -1 when empty)."""
        return int(self.end[-1]) if len(self) else -1

    @property
    def nbytes(self) -> int:
        """Captured bytes in this chunk."""
        return int((self.end - self.start).sum())

    def after(self, offset: int) -> StreamChunk:
        """The part of this chunk at stream offsets >= ``offset`` (same offsets, same buffers)."""
        if not len(self) or int(self.start[0]) >= offset:
            return self
        keep = self.end > offset
        start = np.maximum(self.start[keep], offset).astype(np.int64)
        buf_off = (self.buf_off[keep] + (start - self.start[keep])).astype(np.int64)
        return StreamChunk(start, self.end[keep], self.src[keep], buf_off, self.ts_ns[keep], self.done_ns[keep],
                           self.buffers, self.eof, self.final)

    def compact(self) -> StreamChunk:
        """A copy that owns its bytes (one small buffer): keeping it does not keep the packet buffers alive."""
        lens = self.end - self.start
        total = int(lens.sum())
        buf = np.empty(total, dtype=np.uint8)
        new_off = np.zeros(len(self), dtype=np.int64)
        if len(self):
            np.cumsum(lens[:-1], out=new_off[1:])
            for src, off, ln, dst in zip(self.src.tolist(), self.buf_off.tolist(), lens.tolist(), new_off.tolist(),
                                         strict=True):
                buf[dst : dst + ln] = self.buffers[src][off : off + ln]
        return StreamChunk(self.start.copy(), self.end.copy(), np.zeros(len(self), dtype=np.int8), new_off,
                           self.ts_ns.copy(), self.done_ns.copy(), (buf,), self.eof, self.final)

    @classmethod
    def empty(cls, eof: int = -1, final: bool = False) -> StreamChunk:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, np.zeros(0, dtype=np.int8), z, z, z, (), eof, final)

    @classmethod
    def from_bytes(cls, data: bytes, ts_ns: int = 0, offset: int = 0, final: bool = True) -> StreamChunk:
        """One piece holding ``data`` (for tests and for callers that already have the bytes)."""
        buf = np.frombuffer(data, dtype=np.uint8)
        one = np.ones(1, dtype=np.int64)
        return cls(
            one * offset, one * (offset + len(data)), np.zeros(1, dtype=np.int8), one * 0,
            one * ts_ns, one * ts_ns, (buf,), -1, final,
        )


def gather_ranges(buffers: tuple[npt.NDArray[np.uint8], ...], src: npt.NDArray[np.integer], at: I64, lens: I64
                  ) -> npt.NDArray[np.uint8]:
    """The bytes ``buffers[src[i]][at[i]: at[i] + lens[i]]`` of every range ``i``, concatenated in order: one
    vectorized gather per source buffer (held segments, bytes kept for comparison, compared copies)."""
    total = int(lens.sum())
    out = np.zeros(total, dtype=np.uint8)
    if not total:
        return out
    rel = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)  # index within its range
    idx = np.repeat(at, lens) + rel
    owner = np.repeat(src, lens)
    for sid, buf in enumerate(buffers):
        sel = np.nonzero(owner == sid)[0]
        if len(sel) and len(buf):
            out[sel] = buf[idx[sel]]
    return out


def _run_ends_of_lists(starts: list[int], ends: list[int]) -> list[int]:
    """``_run_ends`` of a few pieces given as lists (a loop: no numpy call, whose fixed cost dominates when
    a connection brings one or two pieces per chunk)."""
    out = ends[:]
    for i in range(len(ends) - 2, -1, -1):
        if starts[i + 1] == ends[i]:
            out[i] = out[i + 1]
    return out


def _run_ends(start: I64, end: I64) -> I64:
    """For each piece, the end of the run of contiguous pieces it belongs to (vectorized)."""
    n = int(start.shape[0])
    if n == 0:
        return end.copy()
    last_of_run = np.ones(n, dtype=bool)
    last_of_run[:-1] = start[1:] != end[:-1]
    idx = np.nonzero(last_of_run)[0]
    run_of = np.searchsorted(idx, np.arange(n))
    return end[idx][run_of]


def read_after_carry(carry: bytes, chunk: StreamChunk, offset: int, limit: int) -> bytes:
    """Up to ``limit`` contiguous bytes at stream ``offset`` for a parser that kept ``carry`` (the bytes
    from ``offset`` that an earlier chunk delivered and it has not consumed yet): the carry first, then the
    chunk's pieces that follow it."""
    if not carry:
        return chunk.read(offset, limit)
    data = carry if limit >= len(carry) else carry[:limit]
    if len(data) < limit:
        data += chunk.read(offset + len(carry), limit - len(carry))
    return data
