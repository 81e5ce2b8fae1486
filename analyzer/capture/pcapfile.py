"""Capture files → ``PacketBatch`` columns: classic pcap (µs/ns, either byte order), pcapng, gzip.

This module owns reading capture *files*: detecting the format (by magic bytes, never by file name), walking
records incrementally with bounded memory, turning record headers into numpy columns, and accounting for
every record it could not hand out (``ReaderStats``). It must not know any protocol above the link-layer
type number: what is inside a frame is ``analyzer.flows.decode``'s business.

How it is fast. The only per-record Python is a tight offset walk over a chunk of a few MB
(``struct.unpack_from`` of the length field, append the offset, jump; the loop has no bounds check and ends
when ``unpack_from`` runs off the chunk). Every column (timestamps, lengths, link types, frame numbers) is then
built with numpy gathers from those offsets, and the batch's ``buf`` is a zero-copy ``np.frombuffer`` view of
the chunk: a read-only mapped window of the file (``mmap``) for a regular uncompressed file, else a fresh
buffer per chunk filled with ``readinto`` (gzip, pipes). A record cut by a chunk boundary is carried over
to the next chunk (the next window starts at it).

Hand-written because: speed, measured: 1.8-2.2 M packets/s (this reader: ``batches()`` with all columns)
vs 0.31-0.42 M packets/s (``dpkt.pcap.Reader``, only iterating its ``(ts, buf)`` tuples) on a 995,040-packet,
736 MB Ethernet pcap made by concatenating corpus captures with ``mergecap -a`` (Python 3.11, numpy 2.4, one
core, warm page cache, CPU time best of 5 on a shared 2-core machine). Reader plus ``decode_batch``: 1.25-1.4 M
packets/s on that file, 2.1 M packets/s on the same packets cut to 96 bytes (``editcap -s 96``). dpkt is
still used for the format constants (magic numbers, block types, option codes).

Rules for bad input (see ``open_capture``):

* Unreadable input (missing file, permission, zero bytes, unknown magic, header too short, corrupt gzip
  header) raises ``CaptureFormatError`` from ``open_capture``, before any batch.
* A record that runs past the end of the file stops reading: ``truncated_file`` is set and the record is
  counted as ``truncated_record`` when its length is plausible (<= ``MAX_CAPLEN`` and <= the snaplen, i.e.
  the file was cut short), as ``corrupt_record`` when it is not (a garbage length field). Earlier packets are
  all kept; ``stats.stop_reason`` and ``stats.bytes_unread`` say why and how much was left.
* A record whose caplen is absurd (> ``MAX_CAPLEN``) is corruption: ``corrupt_record``, and the reader
  resynchronises: a classic pcap at the next offset where three plausible record headers follow each other
  (``_pcap_resync``), a pcapng at the next 4-byte-aligned block of a known type whose length equals its
  trailing copy (``_ng_resync``); the bytes stepped over are counted in ``stats.bytes_skipped``. In pcapng a
  block whose own length is sane but whose contents are not (caplen past the block, unknown interface, only
  the trailing length damaged) is skipped by that length. A block length that is insane (< 12, not a
  multiple of 4, > ``MAX_BLOCK_LEN``) or differs from its trailing copy means resync. Only when nothing
  intact follows does reading stop (``stop_reason`` ``corrupt_record``, ``bytes_unread``).
* Records that are used although something is wrong with them are counted in ``stats.notes``:
  ``invalid_timestamp`` (a fraction of a second >= 1 s, a pcapng time beyond int64 ns, an outlier more than
  ``MAX_TS_OUTLIER_NS`` from both neighbours: it gets the previous packet's time), ``clock_step_back``
  (more than ``MAX_TS_STEP_BACK_NS`` earlier than the packet before it: the clock stepped, and the times
  from there on are shifted forward by the step until the recorded clock comes back, so that no duration
  spans the step), ``timestamp_backwards`` (earlier than the packet before it by less: kept as recorded),
  ``caplen_over_snaplen`` (used).
* pcapng blocks that are not packets (NRB, ISB, DSB, custom, journal) are consumed silently; block types
  this reader does not know are counted as ``pcapng_unknown_block``. ISB ``isb_ifdrop`` values become
  ``stats.kernel_drops``; DSB payloads are kept in ``reader.decryption_secrets``.
* A Simple Packet Block has no timestamp: it gets the timestamp of the packet before it (0 when first),
  so time stays monotone for the stages after us.
"""

from __future__ import annotations

import io
import mmap
import os
import stat
import struct
import zlib
from collections.abc import Iterator
from types import TracebackType
from typing import IO, Final

import dpkt.pcap as dpcap
import dpkt.pcapng as dpcapng
import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from analyzer.capture.batch import PacketBatch, ReaderStats
from analyzer.errors import CaptureFormatError

__all__ = ["DEFAULT_CHUNK_PACKETS", "MAX_BLOCK_LEN", "MAX_CAPLEN", "READ_SIZE", "CaptureReader", "open_capture",
           "ticks_to_ns"]

#: Packets per batch (``open_capture``). Every later stage works a batch at a time, and its temporaries
#: (sort orders, per-row and per-connection arrays, the lists of the per-connection loops) grow with it:
#: when each packet opens a connection (a SYN flood) they weigh about 1.5 KB a packet. 65,536, against
#: 262,144 before (``analyzer export``, /usr/bin/time): a million-connection SYN flood's packet scan peaked
#: at 747 MiB instead of 1,153 MiB; 250,000 tiny connections through ``analyze()`` took 3-10% more CPU (each
#: batch has a fixed cost); the bench capture (1.2 M packets, mostly keep-alive) took the same time
#: (10.8-11.6 s user either way) and memory (336 MiB).
DEFAULT_CHUNK_PACKETS: Final = 65_536
#: Largest caplen we believe. tcpdump's default snaplen is 262144, so exactly 256 KiB is still fine.
MAX_CAPLEN: Final = 256 * 1024
#: Largest pcapng block we are willing to hold in memory (a DSB with many keys, a big NRB, options).
MAX_BLOCK_LEN: Final = 64 * 1024 * 1024
Buffer = bytearray | memoryview  # bytes read into a buffer, or a view of a mapped window of the file (``_Source``)
#: Bytes read from the file per step: a few MB, so memory stays bounded whatever the capture's size.
READ_SIZE: Final = 32 * 1024 * 1024  # bytes per read: large batches amortize per-chunk work

#: A timestamp this far (ns) from both of its neighbours, in the same direction, is an outlier (a garbage
#: field, not a clock step): one day.
MAX_TS_OUTLIER_NS: Final = 86_400 * 1_000_000_000
#: A packet this much (ns) earlier than the one before it means the capturing host's clock stepped back
#: (NTP, a VM resumed): the packets from it on are shifted forward by the step, until the recorded clock
#: comes back (``_unstepped``). Smaller steps back are normal (CPU queues) and kept as recorded.
MAX_TS_STEP_BACK_NS: Final = 1_000_000_000
#: Rows looked at per search for the next clock step (so that a clock stepping at every packet costs
#: O(n · this), not O(n²)).
_STEP_WINDOW: Final = 4096
#: Latest timestamp (s) an int64 of nanoseconds since the epoch holds (year 2262).
_MAX_TS_S: Final = (2**63 - 1) // 1_000_000_000

_GZIP_MAGIC: Final = b"\x1f\x8b"
_HEAD_SIZE: Final = 64 * 1024  # read at open: enough for the headers, small while readers wait their turn
_PCAP_HDR_LEN: Final = 24
_NS_PER_S: Final = 1_000_000_000

# classic pcap magics as read little-endian from the first 4 bytes → (byte order, ns?, record header length)
_PCAP_MAGICS: Final[dict[int, tuple[str, bool, int]]] = {
    dpcap.TCPDUMP_MAGIC: ("<", False, 16),
    dpcap.PMUDPCT_MAGIC: (">", False, 16),
    dpcap.TCPDUMP_MAGIC_NANO: ("<", True, 16),
    dpcap.PMUDPCT_MAGIC_NANO: (">", True, 16),
    dpcap.MODPCAP_MAGIC: ("<", False, 24),  # Kuznetzov's "modified" pcap: 8 extra bytes per record
    dpcap.PACPDOM_MAGIC: (">", False, 24),
}

_BT_SHB: Final = dpcapng.PCAPNG_BT_SHB
_BT_IDB: Final = dpcapng.PCAPNG_BT_IDB
_BT_PB: Final = dpcapng.PCAPNG_BT_PB
_BT_SPB: Final = dpcapng.PCAPNG_BT_SPB
_BT_NRB: Final = 0x00000004
_BT_ISB: Final = 0x00000005
_BT_EPB: Final = dpcapng.PCAPNG_BT_EPB
_BT_JOURNAL: Final = 0x00000009
_BT_DSB: Final = 0x0000000A
_BT_CUSTOM: Final = 0x00000BAD
_BT_CUSTOM_NOCOPY: Final = 0x40000BAD
_KNOWN_SKIPPED_BLOCKS: Final = frozenset(
    {_BT_NRB, _BT_ISB, _BT_JOURNAL, _BT_DSB, _BT_CUSTOM, _BT_CUSTOM_NOCOPY}
)
#: Block types a resynchronisation after corrupt bytes may land on (SHB in the current byte order only).
_RESYNC_TYPES: Final = np.array(
    sorted({_BT_SHB, _BT_IDB, _BT_PB, _BT_SPB, _BT_EPB} | _KNOWN_SKIPPED_BLOCKS), dtype=np.uint32
)
_OPT_ENDOFOPT: Final = dpcapng.PCAPNG_OPT_ENDOFOPT
_OPT_IF_TSRESOL: Final = dpcapng.PCAPNG_OPT_IF_TSRESOL
_OPT_IF_TSOFFSET: Final = dpcapng.PCAPNG_OPT_IF_TSOFFSET
_OPT_ISB_IFDROP: Final = 5

# walk outcomes
_NEED_MORE: Final = 0  # the chunk ends inside a record: read more
_CORRUPT: Final = 1  # an absurd length: stop the file
_SECTION: Final = 2  # pcapng: a new section starts here (flush the batch first)
_FLUSH: Final = 3  # pcapng: an IDB after packets: columns are built before it is added


I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


def _gather_rows(arr: npt.NDArray[np.uint8], offs: I64, width: int) -> npt.NDArray[np.uint8]:
    """``width`` bytes at each offset as a contiguous (n, width) matrix: rows of a sliding-window view, so
    no (n, width) index matrix is built. Rows that would run past the buffer (a short SPB at its very end)
    are gathered byte by byte with the missing bytes clipped; callers only use their in-block fields."""
    if arr.shape[0] < width:
        return np.take(arr, offs[:, None] + np.arange(width), mode="clip")
    last = arr.shape[0] - width
    out = sliding_window_view(arr, width)[np.minimum(offs, last)]
    over = np.flatnonzero(offs > last)
    if over.size:
        out[over] = np.take(arr, offs[over, None] + np.arange(width), mode="clip")
    return out


class _Interface:
    """One pcapng interface (IDB): link type and how to turn its timestamps into ns."""

    __slots__ = ("linktype", "offset_s", "resol_base", "resol_exp", "snaplen")

    def __init__(self, linktype: int, resol_base: int, resol_exp: int, offset_s: int, snaplen: int = 0) -> None:
        self.linktype = linktype
        self.snaplen = snaplen
        self.resol_base = resol_base
        self.resol_exp = resol_exp
        self.offset_s = offset_s


def ticks_to_ns(ticks: U64, base: int, exp: int, offset_s: int = 0) -> I64:
    """Timestamps counted in units of ``base ** -exp`` seconds → int64 ns since the epoch, in integers.

    Exact for decimal resolutions up to ns; for finer decimal and for binary resolutions it is the exact
    floor. ``offset_s`` is pcapng's ``if_tsoffset`` (whole seconds added to every timestamp).
    """
    t = ticks.astype(np.uint64, copy=False)
    if base == 10:
        if exp <= 9:
            out = t * np.uint64(10 ** (9 - exp))
        elif exp - 9 < 20:
            out = t // np.uint64(10 ** (exp - 9))
        else:  # a tick is < 1e-29 s: every 64-bit count is below 1 ns
            out = np.zeros_like(t)
    else:
        k = min(exp, 63)  # a 64-bit tick counter cannot use a finer binary resolution
        sec = t >> np.uint64(k)
        frac = t & np.uint64((1 << k) - 1)
        if k <= 34:  # frac * 1e9 < 2**64
            frac_ns = (frac * np.uint64(_NS_PER_S)) >> np.uint64(k)
        else:  # split frac = a * 2**m + b so that every product stays below 2**64 (see module tests)
            m = k - 30
            a = frac >> np.uint64(m)
            b = frac & np.uint64((1 << m) - 1)
            a1 = a * np.uint64(_NS_PER_S)
            q_a = a1 >> np.uint64(30)
            r_a = a1 & np.uint64((1 << 30) - 1)
            frac_ns = q_a + (((r_a << np.uint64(m)) + b * np.uint64(_NS_PER_S)) >> np.uint64(k))
        out = sec * np.uint64(_NS_PER_S) + frac_ns
    res = out.view(np.int64)
    if offset_s:
        res = res + np.int64(offset_s * _NS_PER_S)
    return res


def _is_regular(raw: IO[bytes]) -> bool:
    """Whether ``raw`` is a regular file (mappable), not a pipe, a device or a file-like object."""
    try:
        return stat.S_ISREG(os.fstat(raw.fileno()).st_mode)
    except (OSError, AttributeError, io.UnsupportedOperation):
        return False


class _Gunzip:
    """Streaming gunzip (``readinto`` like a file) that keeps every byte decompressed before a cut or a
    corrupt spot. Hand-written over ``zlib.decompressobj`` because ``gzip.GzipFile.read`` drops the output of
    the call that fails, losing up to a whole read of packets before the cut (and refusing small cut files
    outright). Concatenated gzip members are read one after the other."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.pending = bytearray()
        self.done = False
        self.error: str | None = None

    def _more(self) -> None:
        data = self.raw.read(1 << 20)
        if not data:
            if not self.dec.eof:
                self.pending += self.dec.flush()
                self.error = "gzip stream cut short"
            self.done = True
            return
        saved = self.dec.copy()
        try:
            self._feed(data)
        except zlib.error:
            # zlib drops the output of a failing call: replay this input in small pieces from the state before
            # it, so at most one piece's output is lost before the corrupt spot
            self.dec = saved
            for i in range(0, len(data), 512):
                try:
                    self._feed(data[i : i + 512])
                except zlib.error as exc:
                    self.error = str(exc)
                    self.done = True
                    return

    def _feed(self, data: bytes) -> None:
        self.pending += self.dec.decompress(data)
        while self.dec.eof and self.dec.unused_data:  # another member follows
            rest = self.dec.unused_data
            self.dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self.pending += self.dec.decompress(rest)

    def readinto(self, view: memoryview) -> int:
        n = len(view)
        while len(self.pending) < n and not self.done:
            self._more()
        k = min(n, len(self.pending))
        view[:k] = self.pending[:k]
        del self.pending[:k]
        return k

    def close(self) -> None:
        self.pending = bytearray()


class _Source:
    """The byte stream under a reader: the raw file, or a gzip stream over it. Errors become EOF + a flag.

    A regular uncompressed file is mapped (``mmap``, read only) a window at a time instead of read: the
    buffers handed out are views of the page cache, with no copy and no fresh zeroed memory per chunk
    (measured with ``bench/read.py`` on the bench capture: reading and decoding take 1.4–1.8 s of CPU
    mapped, 2.6–2.8 s read). A window is unmapped when the last batch holding a view of it is let go, so memory follows
    the batches alive, as with buffers. The windows never reach past the file's size when they are
    mapped; a file cut shorter *while* it is being read would fault (SIGBUS), as with any mapped reader.
    A file system that refuses to map the file gets it read, from where the windows stopped.
    """

    def __init__(self, raw: IO[bytes], gz: bool) -> None:
        self.raw = raw
        self.gz = gz
        self.stream: IO[bytes] | _Gunzip = raw
        if gz:
            self.stream = _Gunzip(raw)
        self.error: str | None = None
        self.eof = False
        self.offset = 0  # mapped: the stream offset just past the bytes handed out
        self.mapped = not gz and _is_regular(raw)

    def refill(self, tail: bytes | Buffer, n: int) -> tuple[Buffer, int]:
        """A fresh buffer holding ``tail`` (the last bytes handed out, not used yet) then up to ``n`` more
        bytes of the stream: (buffer, bytes added).

        Fresh, because batches handed out earlier keep views of their own buffer: a new mapped window of
        the file, or a new buffer filled with ``readinto`` (the stream's bytes copied once).
        """
        if self.mapped:
            return self._window(tail, n)
        keep = len(tail)
        buf = bytearray(keep + n)
        buf[:keep] = tail
        got = 0
        if not self.eof:
            view = memoryview(buf)
            try:
                while got < n:
                    k = self.stream.readinto(view[keep + got : keep + n])  # type: ignore[union-attr]
                    if not k:
                        self.eof = True
                        break
                    got += k
            except OSError as exc:
                self.error = str(exc) or type(exc).__name__
                self.eof = True
            finally:
                view.release()
            if isinstance(self.stream, _Gunzip) and self.stream.error and self.eof:
                self.error = self.stream.error
        if got < n:
            del buf[keep + got :]
        return buf, got

    def _window(self, tail: bytes | Buffer, n: int) -> tuple[Buffer, int]:
        """``refill`` of a mapped file: the file from ``len(tail)`` bytes before ``offset`` up to ``n``
        bytes after it (less at the end of the file), as a view of a read-only mapping."""
        start = self.offset - len(tail)
        try:
            size = os.fstat(self.raw.fileno()).st_size  # a file still being written may have grown
        except OSError as exc:  # as a failed read: what was read is kept, reading stops
            self.error, self.eof, size = str(exc) or type(exc).__name__, True, self.offset
        end = max(min(self.offset + n, size), self.offset)
        got = end - self.offset
        self.eof = self.eof or got < n
        self.offset = end
        if end == start:
            return memoryview(b""), got
        aligned = start - start % mmap.ALLOCATIONGRANULARITY
        try:
            window = mmap.mmap(self.raw.fileno(), end - aligned, access=mmap.ACCESS_READ, offset=aligned)
        except (OSError, ValueError):  # a file system that cannot map it: read it from here on
            self.mapped, self.offset, self.eof = False, start + len(tail), False
            self.raw.seek(self.offset)
            return self.refill(tail, n)
        return memoryview(window)[start - aligned:], got

    def consumed(self) -> int:
        if self.mapped:
            return self.offset
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        if self.stream is not self.raw:
            self.stream.close()
        self.raw.close()


class CaptureReader:
    """An opened capture file. Iterate ``batches()`` once; ``stats`` fills in as batches are read.

    ``decryption_secrets`` collects pcapng Decryption Secrets Blocks as ``(secrets_type, data)`` in file
    order (for example ``0x544c534b`` "TLSK" = an NSS key log).
    """

    def __init__(
        self, path: str, source: _Source, head: Buffer, file_size: int, chunk_packets: int
    ) -> None:
        self.path = path
        self.stats = ReaderStats(file_size=file_size)
        self.decryption_secrets: list[tuple[int, bytes]] = []
        self._src = source
        self._chunk_packets = max(1, int(chunk_packets))
        self._frames = 0  # packets handed out so far (frame numbers are 1-based)
        self._started = False
        self._last_ts = 0
        self._ts_shift = 0  # ns added to the recorded times while a clock step back lasts (``_unstepped``)
        self._base = 0  # stream offset of the current buffer's first byte
        self._gz = source.gz
        self._head = head
        self._head_pos = 0
        # classic pcap
        self._endian = "<"
        self._ns = False
        self._rec_len = 16
        self._snaplen = 0
        self._linktype = 0
        # pcapng
        self._ifaces: list[_Interface] = []
        self._section = 0
        self._isb_drops: dict[tuple[int, int], int] = {}
        self._parse_file_header(head)
        self.stats.bytes_read = source.consumed()

    # ------------------------------------------------------------------ header
    def _fail(self, reason: str) -> CaptureFormatError:
        return CaptureFormatError(f"{self.path}: {reason}")

    def _parse_file_header(self, head: Buffer) -> None:
        suffix = "+gzip" if self._gz else ""
        if len(head) == 0:
            raise self._fail("empty gzip stream" if self._gz else "empty file (0 bytes)")
        magic = struct.unpack_from("<I", head, 0)[0] if len(head) >= 4 else -1
        if magic in _PCAP_MAGICS:
            if len(head) < _PCAP_HDR_LEN:
                raise self._fail(f"file too short for a pcap header ({len(head)} of 24 bytes)")
            self._endian, self._ns, self._rec_len = _PCAP_MAGICS[magic]
            _, _, _, _, snaplen, network = struct.unpack_from(self._endian + "HHiIII", head, 4)
            self._snaplen = snaplen
            self._linktype = network & 0xFFFF  # the upper bits may carry FCS-length flags
            self.stats.file_format = ("pcap-ns" if self._ns else "pcap") + suffix
            self.stats.linktypes.add(self._linktype)
            self._head_pos = _PCAP_HDR_LEN
            return
        if magic == _BT_SHB:
            if len(head) < 28:
                raise self._fail(f"file too short for a pcapng section header ({len(head)} bytes)")
            endian = self._shb_endian(head, 0)
            if endian is None:
                raise self._fail("pcapng section header has a bad byte-order magic")
            (blen,) = struct.unpack_from(endian + "I", head, 4)
            if blen < 28 or blen % 4 or blen > MAX_BLOCK_LEN:
                raise self._fail(f"pcapng section header has a bad length ({blen})")
            self.stats.file_format = "pcapng" + suffix
            return
        if len(head) < 4:
            raise self._fail(f"file too short for a capture header ({len(head)} bytes)")
        raise self._fail(f"not a pcap or pcapng file (magic 0x{bytes(head[:4]).hex()})")

    @staticmethod
    def _shb_endian(data: Buffer, pos: int) -> str | None:
        (bom,) = struct.unpack_from("<I", data, pos + 8)
        if bom == dpcapng.BYTE_ORDER_MAGIC:
            return "<"
        if bom == dpcapng.BYTE_ORDER_MAGIC_LE:
            return ">"
        return None

    # ------------------------------------------------------------------ API
    def batches(self) -> Iterator[PacketBatch]:
        """Yield the packets as batches of at most ``chunk_packets`` rows, in file order. Single use."""
        if self._started:
            raise RuntimeError(f"{self.path}: batches() can only be iterated once")
        self._started = True
        try:
            if self.stats.file_format.startswith("pcapng"):
                yield from self._pcapng_batches()
            else:
                yield from self._pcap_batches()
        finally:
            self.stats.bytes_read = self._src.consumed()
            if self._src.error is not None:
                self.stats.truncated_file = True
                self.stats.skipped["corrupt_gzip" if self._gz else "read_error"] += 1
            self.close()

    def close(self) -> None:
        """Release the file (also done when ``batches()`` finishes)."""
        self._src.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ shared
    def _more(self, data: Buffer, pos: int, need: int) -> tuple[Buffer, bool]:
        """A new buffer: ``data[pos:]`` plus at least ``need`` more bytes when the file has them."""
        buf, got = self._src.refill(data[pos:], max(READ_SIZE, need))
        self._base += pos
        self.stats.bytes_read = self._src.consumed()
        return buf, got > 0

    def _stopped(self, reason: str, data: Buffer, at: int) -> None:
        """Reading ends at stream offset ``at`` (``data`` is the current buffer) before the end of the
        stream: say why and how many bytes are left unread."""
        self.stats.stop_reason = reason
        end = self._base + len(data)
        if self._gz:  # the decompressed size is not known: count the rest of the stream
            while True:
                _, got = self._src.refill(b"", READ_SIZE)
                if not got:
                    break
                end += got
        else:
            end = max(end, self.stats.file_size)
        self.stats.bytes_unread = max(end - at, 0)

    def _split(
        self,
        arr: npt.NDArray[np.uint8],
        offs: I64,
        ts: I64,
        caplen: I64,
        wirelen: I64,
        linktype: npt.NDArray[np.uint16],
        invalid: npt.NDArray[np.bool_] | None = None,
        snaplen: I64 | int = 0,
    ) -> Iterator[PacketBatch]:
        """Batches of at most ``chunk_packets`` rows over one buffer's columns (views, no copies).

        ``invalid`` marks timestamps the format says are wrong (a fraction of a second >= 1 s, a value beyond
        int64 ns); ``snaplen`` is the file's (or per row the interface's) snaplen, 0 when unknown."""
        n = int(offs.shape[0])
        if not n:
            return
        ts = self._checked_times(ts, invalid)
        over = caplen > snaplen
        if not isinstance(snaplen, int):
            over &= snaplen > 0
        elif not snaplen:
            over[:] = False
        if over.any():
            self.stats.notes["caplen_over_snaplen"] += int(np.count_nonzero(over))
        caplen32 = caplen.astype(np.int32)
        wirelen32 = np.minimum(np.maximum(wirelen, caplen), 0x7FFF_FFFF).astype(np.int32)
        frame = np.arange(self._frames + 1, self._frames + 1 + n, dtype=np.int64)
        self._frames += n
        self._last_ts = int(ts[-1])
        step = self._chunk_packets
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            self.stats.packets_read += hi - lo
            yield PacketBatch(
                buf=arr,
                offset=offs[lo:hi],
                caplen=caplen32[lo:hi],
                wirelen=wirelen32[lo:hi],
                ts_ns=ts[lo:hi],
                linktype=linktype[lo:hi],
                frame=frame[lo:hi],
            )

    def _checked_times(self, ts: I64, invalid: npt.NDArray[np.bool_] | None) -> I64:
        """The timestamps to hand out, and the count of the wrong ones (``stats.notes``).

        Invalid (the format's ``invalid``; an outlier: more than ``MAX_TS_OUTLIER_NS`` away from both
        neighbours in the same direction, as a garbage far-future or zeroed field is, while a clock step
        is not; a row with one neighbour, the file's first, is judged by that one) → ``invalid_timestamp``,
        replaced by the timestamp of the packet before it (by the next valid one at the start of a file).
        Then every packet earlier than the one before it is counted as ``timestamp_backwards`` and kept as
        recorded (small steps back are normal in captures from several CPU queues; Wireshark keeps them)."""
        n = ts.shape[0]
        have_prev = self._frames > 0
        prev = np.int64(self._last_ts - self._ts_shift)  # the packet before, as recorded
        bad = np.zeros(n, dtype=bool) if invalid is None else invalid.copy()
        before = np.empty(n, dtype=np.int64)
        before[1:] = ts[:-1]
        before[0] = prev if have_prev else ts[0]
        after = np.empty(n, dtype=np.int64)
        after[:-1] = ts[1:]
        after[-1] = ts[-1]
        has_before = np.ones(n, dtype=bool)
        has_before[0] = have_prev
        has_after = np.ones(n, dtype=bool)
        has_after[-1] = False  # no look-ahead past this buffer
        lim = np.int64(MAX_TS_OUTLIER_NS)
        with np.errstate(over="ignore"):
            up_b, up_a = ts - before > lim, ts - after > lim
            down_b, down_a = before - ts > lim, after - ts > lim
        both = has_before & has_after
        outlier = both & ((up_b & up_a) | (down_b & down_a))
        # a row with one neighbour (the first of the file, the last of the buffer) is judged by that one,
        # unless the neighbour is an outlier itself
        only_b = has_before & ~has_after
        if only_b[-1] and not (n > 1 and outlier[-2]):
            outlier[-1] |= bool(up_b[-1] or down_b[-1])
        only_a = has_after & ~has_before
        if only_a[0] and not (n > 1 and outlier[1]):
            outlier[0] |= bool(up_a[0] or down_a[0])
        bad |= outlier
        if bad.any():
            self.stats.notes["invalid_timestamp"] += int(np.count_nonzero(bad))
            good = ~bad
            if not good.any():
                fill = int(prev) if have_prev else 0
                ts = np.full(n, fill, dtype=np.int64)
            else:
                idx = np.where(good, np.arange(n), -1)
                np.maximum.accumulate(idx, out=idx)
                first_good = ts[int(np.argmax(good))]
                lead = prev if have_prev else first_good
                ts = np.where(idx >= 0, ts[np.maximum(idx, 0)], lead)
        last = np.int64(self._last_ts)  # the packet before, as handed out
        if have_prev or n > 1:
            ts = self._unstepped(ts, last if have_prev else ts[0])
        prev_ts = np.empty(n, dtype=np.int64)
        prev_ts[1:] = ts[:-1]
        prev_ts[0] = last if have_prev else ts[0]
        back = int(np.count_nonzero(ts < prev_ts))
        if back:
            self.stats.notes["timestamp_backwards"] += back
        return ts

    def _unstepped(self, ts: I64, last: np.int64) -> I64:
        """The times with clock steps back taken out (``last``: the time handed out before ``ts[0]``).

        A packet more than ``MAX_TS_STEP_BACK_NS`` earlier than the packet before it (as handed out) is a
        step back of the capturing clock (``clock_step_back``): from it on, the recorded times are shifted
        forward so that time goes on from the packet before, and the shift lasts (it is one clock that
        stepped) until a recorded time is no longer that much behind the last time handed out (the clock
        came back: a single packet's glitch, or a step forward again), when the shift ends. So durations
        never span a step, at the price of absolute times after a step differing from the recorded ones
        (Wireshark shows them as recorded). Steps are rare; each costs one search of at most
        ``_STEP_WINDOW`` rows past it."""
        n = ts.shape[0]
        shift = self._ts_shift
        if not shift:
            d = np.empty(n, dtype=np.int64)
            d[0] = ts[0] - last
            d[1:] = np.diff(ts)
            if not (d < -MAX_TS_STEP_BACK_NS).any():
                return ts
        out = ts.copy()
        lim = np.int64(MAX_TS_STEP_BACK_NS)
        start, prev_out = 0, np.int64(last)
        while start < n:
            stop = min(start + _STEP_WINDOW, n)
            raw = ts[start:stop]
            prev_raw = np.empty(stop - start, dtype=np.int64)
            prev_raw[0] = prev_out - shift
            prev_raw[1:] = raw[:-1]
            with np.errstate(over="ignore"):
                step = raw < prev_raw - lim  # behind the packet before, at the current shift
                if shift:
                    step |= raw >= prev_raw + np.int64(shift) - lim  # the recorded clock came back
            hit = np.flatnonzero(step)
            if not len(hit):
                out[start:stop] = raw + shift
                prev_out = out[stop - 1]
                start = stop
                continue
            i = start + int(hit[0])
            out[start:i] = ts[start:i] + shift
            if i > start:
                prev_out = out[i - 1]
            if ts[i] >= prev_out - lim:  # the clock came back
                shift = 0
            else:
                shift = int(prev_out) - int(ts[i])
                self.stats.notes["clock_step_back"] += 1
            out[i] = ts[i] + shift
            prev_out = out[i]
            start = i + 1
        self._ts_shift = shift
        return out

    # ------------------------------------------------------------------ classic pcap
    def _pcap_walk(self, data: Buffer, pos: int) -> tuple[list[int], int]:
        """Offsets of the complete records in ``data`` from ``pos``, and where the walk stopped.

        The hot loop has no bounds check: it runs until ``unpack_from`` fails past the buffer's end, then
        drops the (at most two) last offsets whose records are not complete. Lengths are not checked here
        either (that is done vectorized afterwards): a garbage caplen jumps past the buffer (the caller
        looks at the record where the walk stopped) or lands inside it (the column check catches it).
        """
        caplen_at = struct.Struct(self._endian + "8xI").unpack_from
        rec = self._rec_len
        n = len(data)
        offs: list[int] = []
        append = offs.append
        try:
            while True:
                append(pos)
                pos += rec + caplen_at(data, pos)[0]
        except struct.error:
            pass  # the record header at ``pos`` is not (entirely) in the buffer
        while offs:
            last = offs[-1]
            if last + rec <= n:
                nxt = last + rec + caplen_at(data, last)[0]
                if nxt <= n:
                    return offs, nxt
            offs.pop()
            pos = last
        return offs, pos

    def _pcap_batches(self) -> Iterator[PacketBatch]:
        data = self._head
        pos = self._head_pos
        self._head = bytearray()
        caplen_at = struct.Struct(self._endian + "I").unpack_from
        frac_mul = 1 if self._ns else 1000
        rec = self._rec_len
        frac_max = _NS_PER_S if self._ns else 1_000_000
        while True:
            offs_list, pos = self._pcap_walk(data, pos)
            corrupt_at = -1
            if offs_list:
                arr = np.frombuffer(data, dtype=np.uint8)
                offs = np.array(offs_list, dtype=np.int64)
                words = _gather_rows(arr, offs, 16).view(self._endian + "u4").astype(np.int64)
                caplen = words[:, 2]
                bad = np.flatnonzero(caplen > MAX_CAPLEN)
                if bad.size:  # a garbage length that happened to land inside the buffer
                    cut = int(bad[0])
                    corrupt_at = int(offs[cut])
                    offs, words, caplen = offs[:cut], words[:cut], caplen[:cut]
                ts = words[:, 0] * _NS_PER_S + words[:, 1] * frac_mul
                linktype = np.full(offs.shape[0], self._linktype, dtype=np.uint16)
                yield from self._split(arr, offs + rec, ts, caplen, words[:, 3], linktype,
                                       invalid=words[:, 1] >= frac_max, snaplen=self._snaplen)
            if corrupt_at < 0 and pos + rec <= len(data) and caplen_at(data, pos + 8)[0] > MAX_CAPLEN:
                corrupt_at = pos
            if corrupt_at >= 0:
                found = self._pcap_resync(data, corrupt_at)
                if found is None:
                    return
                data, pos = found
                continue
            data, got = self._more(data, pos, READ_SIZE)
            pos = 0
            if not got:
                if data:
                    self._truncated_tail(data)
                return

    def _pcap_plausible(self, data: Buffer, at: int, ref_s: int | None) -> int:
        """The length of the record at ``data[at]`` when its header is plausible (0 < caplen <= ``MAX_CAPLEN``
        and <= its original length, the fraction of a second below 1 s, within a day of ``ref_s``), else -1."""
        if at + self._rec_len > len(data):
            return -1
        sec, frac, caplen, wirelen = struct.unpack_from(self._endian + "IIII", data, at)
        if not 0 < caplen <= MAX_CAPLEN or caplen > wirelen or wirelen > 1 << 24:
            return -1
        if frac >= (_NS_PER_S if self._ns else 1_000_000):
            return -1
        if ref_s is not None and abs(sec - ref_s) > MAX_TS_OUTLIER_NS // _NS_PER_S:
            return -1
        return self._rec_len + caplen

    def _pcap_resync(self, data: Buffer, start: int) -> tuple[Buffer, int] | None:
        """Corrupt record at ``data[start]`` (counted as ``corrupt_record``): the next offset where three
        plausible records follow each other (or fewer up to the end of the file), as (buffer, position); the
        bytes stepped over are counted in ``stats.bytes_skipped``. None (reading stopped, ``bytes_unread``
        set) when there is none."""
        self.stats.skipped["corrupt_record"] += 1
        window = 1 << 20
        lookahead = 3 * (self._rec_len + MAX_CAPLEN)
        ref_s = (self._last_ts - self._ts_shift) // _NS_PER_S if self._frames else None  # as recorded
        start_abs = self._base + start
        p = start + 1
        while True:
            end = len(data) - self._rec_len + 1 if self._src.eof else len(data) - lookahead
            if p < end:
                stop = min(end, p + window)
                a = np.frombuffer(data, dtype=np.uint8)[p : stop + 16].astype(np.uint32)
                m = stop - p

                def field(k: int, a: npt.NDArray[np.uint32] = a, m: int = m) -> npt.NDArray[np.int64]:
                    b = [a[k + j : k + j + m].astype(np.int64) for j in range(4)]
                    if self._endian == ">":
                        b.reverse()
                    return b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)

                frac, caplen, wirelen = field(4), field(8), field(12)
                ok = (caplen > 0) & (caplen <= MAX_CAPLEN) & (caplen <= wirelen) & (wirelen <= 1 << 24)
                ok &= frac < (_NS_PER_S if self._ns else 1_000_000)
                if ref_s is not None:
                    ok &= np.abs(field(0) - ref_s) <= MAX_TS_OUTLIER_NS // _NS_PER_S
                for k in np.flatnonzero(ok).tolist():
                    q = p + k
                    r, chained = q, 0
                    while chained < 3:
                        length = self._pcap_plausible(data, r, ref_s)
                        if length < 0 or r + length > len(data):
                            break
                        r += length
                        chained += 1
                        if r == len(data) and self._src.eof:
                            chained = 3
                    if chained >= 3 or (chained and self._src.eof and r + self._rec_len > len(data)):
                        self.stats.bytes_skipped += self._base + q - start_abs
                        return data, q
                p = stop
                continue
            if self._src.eof:
                self._stopped("corrupt_record", data, start_abs)
                return None
            data, _ = self._more(data, p, READ_SIZE)
            p = 0

    def _truncated_tail(self, tail: Buffer) -> None:
        """The file ends inside a record: a cut-short file, or a garbage length field."""
        self.stats.truncated_file = True
        self.stats.stop_reason = "truncated_record"
        self.stats.bytes_unread = len(tail)
        plausible = True
        if len(tail) >= self._rec_len:
            (caplen,) = struct.unpack_from(self._endian + "I", tail, 8)
            plausible = caplen <= MAX_CAPLEN and (self._snaplen == 0 or caplen <= max(self._snaplen, 65535))
        self.stats.skipped["truncated_record" if plausible else "corrupt_record"] += 1

    # ------------------------------------------------------------------ pcapng
    def _pcapng_batches(self) -> Iterator[PacketBatch]:
        data = self._head
        self._head = bytearray()
        pos = 0
        endian = "<"
        while True:
            offs, special, pos, outcome, need = self._ng_walk(data, pos, endian)
            if offs:
                drop, cut = self._ng_check_trailers(data, offs, endian)
                if cut is not None:  # a block whose length is wrong: what the walk found after it is garbage
                    bad_at = offs[cut]
                    special = [(r, k) for r, k in special if r < cut]
                    offs = offs[:cut]
                    drop = drop[:cut] if drop is not None else None
                    if offs:
                        yield from self._ng_batches(data, offs, special, endian, drop)
                    found = self._ng_resync(data, bad_at, endian)
                    if found is None:
                        return
                    data, pos = found
                    continue
                yield from self._ng_batches(data, offs, special, endian, drop)
            if outcome == _FLUSH:
                continue
            if outcome == _CORRUPT:
                found = self._ng_resync(data, pos, endian)
                if found is None:
                    return
                data, pos = found
                continue
            if outcome == _SECTION:
                new_endian = self._shb_endian(data, pos)
                blen = struct.unpack_from((new_endian or "<") + "I", data, pos + 4)[0]
                if pos + blen > len(data) and new_endian is not None and blen <= MAX_BLOCK_LEN:
                    data, _ = self._more(data, pos, blen)
                    pos = 0
                    if len(data) < blen:
                        self._ng_truncated(data, pos)
                        return
                if (new_endian is None or blen < 28 or blen & 3 or blen > MAX_BLOCK_LEN
                        or struct.unpack_from(new_endian + "I", data, pos + blen - 4)[0] != blen):
                    found = self._ng_resync(data, pos, endian)
                    if found is None:
                        return
                    data, pos = found
                    continue
                endian = new_endian
                if self._ifaces or self._frames:
                    self._section += 1
                self._ifaces = []
                pos += blen
                continue
            data, got = self._more(data, pos, need)
            pos = 0
            if not got:
                if data:
                    self._ng_truncated(data, 0)
                return

    def _ng_truncated(self, data: Buffer, pos: int) -> None:
        self.stats.truncated_file = True
        self.stats.skipped["truncated_record"] += 1
        self.stats.stop_reason = "truncated_record"
        self.stats.bytes_unread = len(data) - pos

    def _ng_check_trailers(
        self, data: Buffer, offs: list[int], endian: str
    ) -> tuple[npt.NDArray[np.bool_] | None, int | None]:
        """Packet blocks whose trailing length differs from their leading one: (rows to drop: the next block
        starts right after them and is intact, so only the trailer is damaged; the first row whose length
        must be wrong, or None)."""
        arr = np.frombuffer(data, dtype=np.uint8)
        o = np.array(offs, dtype=np.int64)
        blen = _gather_rows(arr, o + 4, 4).view(endian + "u4")[:, 0].astype(np.int64)
        trailer = _gather_rows(arr, o + blen - 4, 4).view(endian + "u4")[:, 0].astype(np.int64)
        wrong = trailer != blen
        if not wrong.any():
            return None, None
        isolated = wrong.copy()
        isolated[-1] = False
        isolated[:-1] &= ~wrong[1:]
        rest = np.flatnonzero(wrong & ~isolated)
        return isolated, (int(rest[0]) if rest.size else None)

    def _ng_resync(self, data: Buffer, start: int, endian: str) -> tuple[Buffer, int] | None:
        """Corrupt block at ``data[start]`` (counted as ``corrupt_record``): the next intact block after it (a
        known type, a sane length equal to its trailing copy; blocks are 4-byte aligned), as (buffer,
        position); the bytes stepped over are counted in ``stats.bytes_skipped``. None (reading stopped,
        ``bytes_unread`` set) at the end."""
        self.stats.skipped["corrupt_record"] += 1
        start_abs = self._base + start
        p = start + 4
        while True:
            m = (len(data) - p) // 4 - 1
            wait_at: int | None = None  # a candidate that runs past the buffer: read more, look again
            if m > 0:
                words = np.frombuffer(data, dtype=endian + "u4", count=m + 1, offset=p)
                btype, blen = words[:-1], words[1:]
                ok = np.isin(btype, _RESYNC_TYPES) & (blen >= 12) & (blen % 4 == 0) & (blen <= MAX_BLOCK_LEN)
                for k in np.flatnonzero(ok).tolist():
                    q = p + 4 * k
                    length = int(blen[k])
                    if q + length > len(data):
                        if self._src.eof:
                            continue  # it would run past the end of the file: not a block
                        wait_at = q
                        break
                    if struct.unpack_from(endian + "I", data, q + length - 4)[0] == length:
                        self.stats.bytes_skipped += self._base + q - start_abs
                        return data, q
                if wait_at is None:
                    p += 4 * m
            if wait_at is None and self._src.eof:
                break
            data, _ = self._more(data, p if wait_at is None else wait_at, READ_SIZE)
            p = 0
        self._stopped("corrupt_record", data, start_abs)
        return None

    def _ng_walk(
        self, data: Buffer, pos: int, endian: str
    ) -> tuple[list[int], list[tuple[int, int]], int, int, int]:
        """Walk blocks from ``pos``: (packet block offsets, [(row, block type)] of SPB/PB rows, next pos,
        outcome, bytes needed for the next block)."""
        unpack = struct.Struct(endian + "II").unpack_from
        n = len(data)
        offs: list[int] = []
        append = offs.append
        special: list[tuple[int, int]] = []
        try:
            while True:
                btype, blen = unpack(data, pos)
                if btype == _BT_EPB and blen >= 32 and not blen & 3:
                    # hot path, no bounds check: only this block can end past the buffer (fixed below)
                    append(pos)
                    pos += blen
                    continue
                if btype == _BT_SHB:  # a section starts: flush, the caller switches byte order
                    return offs, special, pos, _SECTION, 0
                if blen < 12 or blen & 3 or blen > MAX_BLOCK_LEN:
                    return offs, special, pos, _CORRUPT, 0
                nxt = pos + blen
                if nxt > n:
                    return offs, special, pos, _NEED_MORE, blen
                if unpack(data, nxt - 8)[1] != blen:  # the trailing copy of the length differs: corrupt
                    return offs, special, pos, _CORRUPT, 0
                if btype in (_BT_SPB, _BT_PB):
                    special.append((len(offs), btype))
                    append(pos)
                elif btype == _BT_IDB:
                    if offs:  # packets before it must not see it (an EPB naming a later interface)
                        return offs, special, pos, _FLUSH, 0
                    self._read_idb(data, pos, blen, endian)
                elif btype == _BT_DSB:
                    self._read_dsb(data, pos, blen, endian)
                elif btype == _BT_ISB:
                    self._read_isb(data, pos, blen, endian)
                elif btype not in _KNOWN_SKIPPED_BLOCKS:
                    self.stats.skipped["pcapng_unknown_block"] += 1
                pos = nxt
        except struct.error:
            pass  # fewer than 8 bytes left at ``pos``
        if pos > n:  # the last EPB ends past the buffer
            last = offs.pop()
            blen = pos - last
            if blen > MAX_BLOCK_LEN:
                return offs, special, last, _CORRUPT, 0
            return offs, special, last, _NEED_MORE, blen
        return offs, special, pos, _NEED_MORE, 12

    @staticmethod
    def _options(data: Buffer, start: int, stop: int, endian: str) -> Iterator[tuple[int, bytes]]:
        hdr = struct.Struct(endian + "HH")
        pos = start
        while pos + 4 <= stop:
            code, length = hdr.unpack_from(data, pos)
            if code == _OPT_ENDOFOPT:
                return
            value = bytes(data[pos + 4 : pos + 4 + length])
            if len(value) < length:
                return
            yield code, value
            pos += 4 + ((length + 3) & ~3)

    def _read_idb(self, data: Buffer, pos: int, blen: int, endian: str) -> None:
        if blen < 20:
            self.stats.skipped["corrupt_record"] += 1
            return
        linktype, _, snaplen = struct.unpack_from(endian + "HHI", data, pos + 8)
        base, exp, offset_s = 10, 6, 0
        for code, value in self._options(data, pos + 16, pos + blen - 4, endian):
            if code == _OPT_IF_TSRESOL and len(value) >= 1:
                base, exp = (2, value[0] & 0x7F) if value[0] & 0x80 else (10, value[0])
            elif code == _OPT_IF_TSOFFSET and len(value) >= 8:
                (offset_s,) = struct.unpack_from(endian + "q", value, 0)
        self._ifaces.append(_Interface(linktype, base, exp, offset_s, snaplen))
        self.stats.linktypes.add(linktype)

    def _read_isb(self, data: Buffer, pos: int, blen: int, endian: str) -> None:
        if blen < 24:
            return
        (if_id,) = struct.unpack_from(endian + "I", data, pos + 8)
        for code, value in self._options(data, pos + 20, pos + blen - 4, endian):
            if code == _OPT_ISB_IFDROP and len(value) >= 8:
                (drops,) = struct.unpack_from(endian + "Q", value, 0)
                self._isb_drops[(self._section, if_id)] = drops  # counters are cumulative: keep the last
                self.stats.kernel_drops = sum(self._isb_drops.values())

    def _read_dsb(self, data: Buffer, pos: int, blen: int, endian: str) -> None:
        if blen < 20:
            self.stats.skipped["corrupt_record"] += 1
            return
        stype, slen = struct.unpack_from(endian + "II", data, pos + 8)
        slen = min(slen, blen - 20)
        self.decryption_secrets.append((stype, bytes(data[pos + 16 : pos + 16 + slen])))

    def _ng_batches(
        self, data: Buffer, offs_list: list[int], special: list[tuple[int, int]], endian: str,
        drop: npt.NDArray[np.bool_] | None = None,
    ) -> Iterator[PacketBatch]:
        arr = np.frombuffer(data, dtype=np.uint8)
        offs = np.array(offs_list, dtype=np.int64)
        n = offs.shape[0]
        # EPB: type, len, if_id, ts_hi, ts_lo, caplen, origlen; SPB/PB are patched below (an SPB may be
        # shorter than 28 bytes: see _gather_rows).
        hdr = _gather_rows(arr, offs, 28)
        w = hdr.view(endian + "u4").astype(np.int64)
        blen = w[:, 1]
        if_id = w[:, 2]
        ticks = (w[:, 3].astype(np.uint64) << np.uint64(32)) | w[:, 4].astype(np.uint64)
        caplen = w[:, 5]
        wirelen = w[:, 6]
        data_off = offs + 28
        is_spb = np.zeros(n, dtype=bool)
        if special:
            rows = np.array([r for r, _ in special], dtype=np.int64)
            kinds = np.array([k for _, k in special], dtype=np.int64)
            pb = rows[kinds == _BT_PB]
            if pb.size:  # Packet Block: 16-bit if_id then a 16-bit drop count; the rest as EPB
                if_id[pb] = hdr[pb].view(endian + "u2")[:, 4].astype(np.int64)
            spb = rows[kinds == _BT_SPB]
            if spb.size:  # Simple Packet Block: origlen, data; interface 0; no timestamp
                is_spb[spb] = True
                wirelen[spb] = w[spb, 2]
                caplen[spb] = np.minimum(w[spb, 2], blen[spb] - 16)
                if_id[spb] = 0
                data_off[spb] = offs[spb] + 12
                ticks[spb] = 0
        overhead = np.where(is_spb, 16, 32)
        bad = (caplen > MAX_CAPLEN) | (caplen < 0) | (caplen + overhead > blen) | (if_id >= len(self._ifaces))
        if drop is not None:
            bad |= drop
        if bad.any():  # the block length is sane (the walk checked it): skip just these blocks
            self.stats.skipped["corrupt_record"] += int(bad.sum())
            self.stats.bytes_skipped += int(blen[bad].sum())
            keep = ~bad
            caplen, wirelen, if_id = caplen[keep], wirelen[keep], if_id[keep]
            ticks, data_off, is_spb = ticks[keep], data_off[keep], is_spb[keep]
        m = data_off.shape[0]
        ts = np.zeros(m, dtype=np.int64)
        linktype = np.zeros(m, dtype=np.uint16)
        snaplen = np.zeros(m, dtype=np.int64)
        invalid = np.zeros(m, dtype=bool)
        for i in np.unique(if_id).tolist():
            iface = self._ifaces[i]
            sel = if_id == i
            ts[sel] = ticks_to_ns(ticks[sel], iface.resol_base, iface.resol_exp, iface.offset_s)
            linktype[sel] = iface.linktype
            snaplen[sel] = iface.snaplen
            # beyond an int64 of ns (year 2262) or before 1970: the tick count is garbage
            secs = ticks[sel].astype(np.float64) / float(iface.resol_base) ** iface.resol_exp + iface.offset_s
            invalid[sel] = (secs >= _MAX_TS_S) | (secs < 0)
        invalid &= ~is_spb
        if is_spb.any():  # no timestamp: carry the previous packet's forward
            src = np.where(is_spb, -1, np.arange(m))
            np.maximum.accumulate(src, out=src)
            ts = np.where(src >= 0, ts[np.maximum(src, 0)], self._last_ts - self._ts_shift)  # as recorded
        yield from self._split(arr, data_off, ts, caplen, wirelen, linktype, invalid=invalid, snaplen=snaplen)


def open_capture(path: str | os.PathLike[str], chunk_packets: int = DEFAULT_CHUNK_PACKETS) -> CaptureReader:
    """Open a pcap / pcapng file, gzip-compressed or not, and read its header.

    Raises ``CaptureFormatError`` (one line naming the file and the reason) when the file cannot be read as
    a capture at all. Otherwise returns a reader whose ``batches()`` yields ``PacketBatch`` objects of at
    most ``chunk_packets`` packets each.
    """
    name = os.fspath(path)
    try:
        raw: IO[bytes] = open(name, "rb")  # noqa: SIM115 - the reader owns and closes it
    except OSError as exc:
        raise CaptureFormatError(f"{name}: cannot open: {exc.strerror or exc}") from None
    try:
        file_size = os.fstat(raw.fileno()).st_size
        gz = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        src = _Source(raw, gz)
        head, _ = src.refill(b"", _HEAD_SIZE)
        if src.error is not None and not head:
            raise CaptureFormatError(f"{name}: corrupt gzip stream: {src.error}")
        return CaptureReader(name, src, head, file_size, chunk_packets)
    except OSError as exc:
        raw.close()
        raise CaptureFormatError(f"{name}: cannot read: {exc.strerror or exc}") from None
    except BaseException:
        raw.close()
        raise
