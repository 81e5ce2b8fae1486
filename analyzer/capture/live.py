"""Live capture on a network interface → ``PacketBatch`` columns, and the pcap of what was seen.

This module owns reading frames from a live interface: opening scapy's L2 listener (``conf.L2listen``: a
Linux ``AF_PACKET`` raw socket with the BPF filter compiled and attached by scapy, promiscuous mode off by
default), a reader thread that collects raw bytes, nanosecond timestamps and original lengths into one
shared numpy buffer per batch, the accounting of drops (the kernel's, from the socket's
``PACKET_STATISTICS``, and our own when the analysis falls behind and the batch queue is full), and writing
everything seen to a classic pcap (``PcapWriter``). It is the only module that imports scapy. It must not
know any protocol above the link-layer type number and must not analyze anything: the caller feeds the
batches to ``analyzer.pipeline.Session``.

Why the read loop is hand-written over scapy's socket instead of ``sniff`` / ``recv_raw``: scapy's receive
path builds a Python ``Packet`` (or at least a ``bytes`` copy) per frame, gives the timestamp as a float
(``SO_TIMESTAMPNS`` rounded to about 0.2 µs at today's epoch, so tables would differ from the same capture
read back from the pcap) and caps a read at 65,535 bytes without telling the original length. Here each
frame is received with ``recvmsg_into`` straight into the batch buffer (no copy), the timestamp is the
kernel's integer ``SO_TIMESTAMPNS`` and the original length is ``PACKET_AUXDATA``'s ``tp_len``. The per-frame
Python is that one call and its two control messages; nothing is dissected.

Why pcap records are written by hand after dpkt's file header: ``dpkt.pcap.Writer`` takes float timestamps
(same rounding) and writes caplen as the original length; records here are built per batch with numpy
(exact nanoseconds, true original lengths), one ``write`` per batch.

Linux only (``AF_PACKET``). The interface ``any`` is not supported (its frames would need cooked headers).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import dpkt.pcap as dpcap
import numpy as np

from analyzer.capture.batch import PacketBatch, ReaderStats
from analyzer.capture.linktypes import LINKTYPE_ETHERNET, LINKTYPE_IEEE802_11_RADIOTAP, LINKTYPE_RAW
from analyzer.errors import AnalyzerError

__all__ = [
    "DEFAULT_SNAPLEN",
    "LiveCapture",
    "LiveCaptureError",
    "PcapWriter",
]

DEFAULT_SNAPLEN: Final = 262_144  # bytes kept per frame (tcpdump's default); loopback frames reach 64 KiB
BLOCK_BYTES: Final = 16 << 20  # one batch's shared buffer; a batch closes when a full snaplen no longer fits
BATCH_INTERVAL_S: Final = 0.25  # a batch is handed over at least this often while packets arrive
BATCH_MAX_PACKETS: Final = 65_536  # ... or when it holds this many frames
QUEUE_BYTES: Final = 128 << 20  # frame bytes waiting for the analysis; beyond, a batch is dropped and counted
POLL_S: Final = 0.05  # the reader wakes up this often without traffic (stop requests, batch timer)
RCVBUF_BYTES: Final = 64 << 20  # kernel socket buffer asked for (absorbs bursts while the GIL is busy)
DRAIN_MAX_S: Final = 0.5  # at stop, frames already waiting in the socket are still read for at most this long

# <linux/if_packet.h>, <asm-generic/socket.h>
_SOL_PACKET: Final = 263
_PACKET_AUXDATA: Final = 8
_PACKET_STATISTICS: Final = 6
_PACKET_OUTGOING: Final = 4
_PACKET_IGNORE_OUTGOING: Final = 23  # Linux 4.20+: the kernel does not queue our own outgoing frames
_SO_TIMESTAMPNS: Final = 35
_SO_RCVBUFFORCE: Final = 33
_TP_STATUS_VLAN_VALID: Final = 0x10
_TP_STATUS_VLAN_TPID_VALID: Final = 0x40
_ETH_P_8021Q: Final = 0x8100
_AUXDATA: Final = struct.Struct("=IIIHHHH")  # tp_status, tp_len, tp_snaplen, tp_mac, tp_net, tp_vlan_tci, tpid
_TIMESPEC: Final = struct.Struct("=qq")
_ANC_BYTES: Final = socket.CMSG_SPACE(_AUXDATA.size) + socket.CMSG_SPACE(_TIMESPEC.size)
_VLAN_ROOM: Final = 4  # bytes kept free after each frame's room for a VLAN tag put back

# ARPHRD_* (<linux/if_arp.h>) → LINKTYPE_* of the frames an AF_PACKET SOCK_RAW socket returns (as libpcap)
_ARPHRD_LINKTYPES: Final[dict[int, int]] = {
    1: LINKTYPE_ETHERNET,  # ARPHRD_ETHER
    772: LINKTYPE_ETHERNET,  # ARPHRD_LOOPBACK: a 14-byte Ethernet header with zero addresses
    65534: LINKTYPE_RAW,  # ARPHRD_NONE (tun): the IP packet
    776: LINKTYPE_RAW,  # ARPHRD_SIT
    768: LINKTYPE_RAW,  # ARPHRD_TUNNEL (ipip)
    769: LINKTYPE_RAW,  # ARPHRD_TUNNEL6
    803: LINKTYPE_IEEE802_11_RADIOTAP,  # ARPHRD_IEEE80211_RADIOTAP
}
_ARPHRD_LOOPBACK: Final = 772


class LiveCaptureError(AnalyzerError):
    """The interface cannot be captured on: missing, no permission, bad filter, unsupported link type."""


# ----------------------------------------------------------------------------------------------- pcap out
class PcapWriter:
    """A classic nanosecond pcap (native byte order, as dpkt writes its header) of ``PacketBatch`` rows.

    Records keep the exact integer nanoseconds and the original length of each frame, so analyzing the file
    gives the same tables as the batches it was written from."""

    def __init__(self, path: str | os.PathLike[str], linktype: int, snaplen: int = DEFAULT_SNAPLEN) -> None:
        self.path = Path(path)
        try:
            self._file: IO[bytes] = self.path.open("wb")
        except OSError as exc:
            raise LiveCaptureError(f"{path}: cannot write the capture: {exc.strerror or exc}") from exc
        dpcap.Writer(self._file, snaplen=snaplen, linktype=linktype, nano=True)  # writes the file header
        self._hdr = np.dtype([("sec", "=u4"), ("nsec", "=u4"), ("incl", "=u4"), ("orig", "=u4")])
        self.packets = 0

    def write(self, batch: PacketBatch) -> None:
        n = len(batch)
        if not n:
            return
        hdr = np.empty(n, dtype=self._hdr)
        hdr["sec"] = batch.ts_ns // 1_000_000_000
        hdr["nsec"] = batch.ts_ns % 1_000_000_000
        hdr["incl"] = batch.caplen
        hdr["orig"] = batch.wirelen
        caplen = batch.caplen.astype(np.int64)
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(caplen[:-1], out=starts[1:])
        first = int(batch.offset[0])
        if np.array_equal(batch.offset - first, starts):  # frames back to back in buf (the live reader's)
            data = batch.buf[first: first + int(starts[-1] + caplen[-1])]
        else:  # any other batch: gather the frames first (not the live path)
            data = np.concatenate([batch.buf[o: o + c] for o, c in zip(batch.offset.tolist(), caplen.tolist(),
                                                                        strict=True)])
        # each 16-byte record header goes in front of its frame's first byte
        where = np.repeat(starts, 16)
        out = np.insert(data, where, hdr.view(np.uint8).reshape(-1))
        self._file.write(out.tobytes())
        self.packets += n

    def close(self) -> None:
        self._file.close()


# ---------------------------------------------------------------------------------------------- capture
@dataclass(slots=True)
class _Building:
    """The batch being filled by the reader thread."""

    block: np.ndarray
    pos: int = 0
    offsets: list[int] = field(default_factory=list)
    caplens: list[int] = field(default_factory=list)
    wirelens: list[int] = field(default_factory=list)
    ts_ns: list[int] = field(default_factory=list)
    started: float = 0.0


class LiveCapture:
    """Frames from one interface, in batches: ``open()``, then ``get()`` until ``finished``; ``stop()``.

    The socket is opened in the caller's thread (so errors are raised there, as ``LiveCaptureError``); a
    reader thread fills batches and queues them, and writes each to ``write`` (a pcap) first, so the file
    holds every frame seen even when the analysis falls behind and a batch is dropped (``own_drops``).
    ``max_packets`` ends the capture after that many frames (exactly). ``stats`` is the reader's account
    (``file_format`` ``"live"``, ``kernel_drops`` from the socket; own drops are in ``skipped`` as
    ``live_queue_overflow``, and frames the kernel had queued but the stop left unread as
    ``live_unread_at_stop``): every frame that reached the socket is read, dropped or left unread, counted."""

    def __init__(self, iface: str, bpf_filter: str | None = None, *, snaplen: int = DEFAULT_SNAPLEN,
                 promisc: bool = False, max_packets: int | None = None,
                 write: str | os.PathLike[str] | None = None,
                 batch_interval_s: float = BATCH_INTERVAL_S, batch_max_packets: int = BATCH_MAX_PACKETS,
                 queue_bytes: int = QUEUE_BYTES) -> None:
        self.iface = iface
        self.bpf_filter = bpf_filter or None
        self.snaplen = snaplen
        self.promisc = promisc
        self.max_packets = max_packets
        self.write_path = write
        self.batch_interval_s = batch_interval_s
        self.batch_max_packets = batch_max_packets
        self.stats = ReaderStats(file_format="live")
        self.stats.kernel_drops = 0
        self.own_drops = 0
        self.linktype = LINKTYPE_ETHERNET
        self.writer: PcapWriter | None = None
        self.error: BaseException | None = None  # what ended the reader thread abnormally
        self._queue: queue.Queue[PacketBatch] = queue.Queue()
        self.queue_bytes = queue_bytes
        self._queued_bytes = 0  # frame bytes in the queue (the reader adds, get() subtracts; under _lock)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._scapy_socket: Any = None
        self._sock: socket.socket | None = None
        self._skip_outgoing = False
        self._next_frame = 1
        self._queued_total = 0  # frames the kernel queued on the socket (PACKET_STATISTICS packets - drops)
        self._received = 0  # frames taken from the socket (outgoing copies skipped here included)

    # -------------------------------------------------------------------------------- open and close
    def open(self) -> None:
        """Open the interface and start the reader thread (``LiveCaptureError`` when it cannot)."""
        try:
            socket.if_nametoindex(self.iface)
        except OSError:
            raise LiveCaptureError(f"{self.iface}: no such network interface") from None
        self._scapy_socket = _open_listener(self.iface, self.bpf_filter, self.promisc)
        sock: socket.socket = self._scapy_socket.ins
        self._sock = sock
        hatype = int(sock.getsockname()[3])
        linktype = _ARPHRD_LINKTYPES.get(hatype)
        if linktype is None:
            self.close()
            raise LiveCaptureError(f"{self.iface}: link type ARPHRD {hatype} is not supported for live capture")
        self.linktype = linktype
        self.stats.linktypes.add(linktype)
        self._skip_outgoing = hatype == _ARPHRD_LOOPBACK  # lo shows each frame twice: out and in (libpcap too)
        if self._skip_outgoing:
            # keep only the incoming copy in the kernel: half the frames to read under a flood, and the
            # socket's drop counter then counts frames as packets_read does (not both copies)
            with contextlib.suppress(OSError):
                sock.setsockopt(_SOL_PACKET, _PACKET_IGNORE_OUTGOING, 1)
        for option in (_SO_RCVBUFFORCE, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, RCVBUF_BYTES)
                break
        sock.setsockopt(_SOL_PACKET, _PACKET_AUXDATA, 1)
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        sock.settimeout(POLL_S)
        self._kernel_stats()  # reading resets the counters: count from here
        if self.write_path is not None:
            try:
                self.writer = PcapWriter(self.write_path, linktype, self.snaplen)
            except LiveCaptureError:
                self.close()
                raise
        self._thread = threading.Thread(target=self._run, name=f"live-{self.iface}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the reader to end: it reads what the socket already holds, hands over its last batch, ends."""
        self._stop.set()

    def close(self) -> None:
        """Stop, wait for the reader, close the socket and the pcap (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._scapy_socket is not None:
            with contextlib.suppress(OSError):
                self._scapy_socket.close()
            self._scapy_socket = None
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> LiveCapture:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def finished(self) -> bool:
        """The reader has ended (stopped, count reached or failed) and every batch was taken."""
        return self._done.is_set() and self._queue.empty()

    def get(self, timeout_s: float) -> PacketBatch | None:
        """The next batch, or None after ``timeout_s`` without one."""
        try:
            batch = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None
        with self._lock:
            self._queued_bytes -= len(batch.buf)
        return batch

    # ------------------------------------------------------------------------------------ the reader
    def _run(self) -> None:
        try:
            self._read_loop()
        except BaseException as exc:  # reported by the caller (finished + error); the thread must not die silently
            self.error = exc
        finally:
            with contextlib.suppress(OSError):
                self._kernel_stats()
            # frames the kernel had queued that were never read: the capture stopped (its bound, Ctrl-C)
            # while it was behind, and the drain at stop is bounded (DRAIN_MAX_S)
            unread = self._queued_total - self._received
            if unread > 0:
                self.stats.skipped["live_unread_at_stop"] += unread
            self._done.set()

    def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        snaplen, skip_out = self.snaplen, self._skip_outgoing
        room = snaplen + _VLAN_ROOM
        remaining = self.max_packets
        b = self._new_building()
        mv = b.block.data
        recv = sock.recvmsg_into
        anc_bytes = _ANC_BYTES
        unpack_ts = _TIMESPEC.unpack
        unpack_aux = _AUXDATA.unpack
        sol_packet, sol_socket = _SOL_PACKET, socket.SOL_SOCKET
        draining = 0
        drain_end = 0.0
        while True:
            if self._stop.is_set() and not draining:
                sock.setblocking(False)  # read what the kernel already holds, then end
                draining = 1
                drain_end = time.monotonic() + DRAIN_MAX_S
            try:
                n, anc, _flags, addr = recv([mv[b.pos: b.pos + snaplen]], anc_bytes)
            except (TimeoutError, BlockingIOError, InterruptedError):
                n = -1
            if n >= 0:
                self._received += 1
                if skip_out and addr[2] == _PACKET_OUTGOING:
                    continue
                ts = 0
                wire = n
                for level, kind, data in anc:
                    if level == sol_socket and kind == _SO_TIMESTAMPNS:
                        sec, nsec = unpack_ts(data)
                        ts = sec * 1_000_000_000 + nsec
                    elif level == sol_packet and kind == _PACKET_AUXDATA:
                        status, tp_len, _snap, _mac, _net, tci, tpid = unpack_aux(data)
                        wire = tp_len
                        if (tci or status & _TP_STATUS_VLAN_VALID) and self.linktype == LINKTYPE_ETHERNET and n >= 12:
                            n, wire = self._put_vlan_back(b, n, wire, tci, tpid, status)
                if not ts:
                    ts = time.time_ns()
                b.offsets.append(b.pos)
                b.caplens.append(n)
                b.wirelens.append(wire)
                b.ts_ns.append(ts)
                b.pos += n
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        self._hand_over(b)
                        return
            elif draining:  # the socket is empty
                self._hand_over(b)
                return
            if draining and time.monotonic() > drain_end:  # traffic goes on: stop reading here
                self._hand_over(b)
                return
            if (b.pos + room > len(b.block) or len(b.offsets) >= self.batch_max_packets
                    or (b.offsets and time.monotonic() - b.started >= self.batch_interval_s)):
                kept = self._hand_over(b)
                b = self._new_building(None if kept else b.block)
                mv = b.block.data

    def _new_building(self, block: np.ndarray | None = None) -> _Building:
        return _Building(np.empty(BLOCK_BYTES, dtype=np.uint8) if block is None else block,
                         started=time.monotonic())

    @staticmethod
    def _put_vlan_back(b: _Building, n: int, wire: int, tci: int, tpid: int, status: int) -> tuple[int, int]:
        """The kernel strips a VLAN tag into the aux data: put it back after the MAC addresses (as libpcap)."""
        p = b.pos
        blk = b.block
        blk[p + 16: p + n + 4] = blk[p + 12: p + n].copy()
        tag_tpid = tpid if status & _TP_STATUS_VLAN_TPID_VALID and tpid else _ETH_P_8021Q
        blk[p + 12: p + 16] = np.frombuffer(struct.pack("!HH", tag_tpid, tci), dtype=np.uint8)
        return n + 4, wire + 4

    def _hand_over(self, b: _Building) -> bool:
        """Close the batch being built: columns, pcap, queue (or count it as our drop). Returns whether the
        batch kept ``b.block`` itself; a batch filling less than a quarter of it gets a copy of its bytes
        instead and the block is filled again, so that what waits in the queue holds about the bytes that
        ``queue_bytes`` counts, not a 16 MiB block per small batch (a flood of small batches while the
        analysis lags)."""
        self._kernel_stats()
        n = len(b.offsets)
        if not n:
            return False
        kept = b.pos > BLOCK_BYTES // 4
        batch = PacketBatch(
            buf=b.block[: b.pos] if kept else b.block[: b.pos].copy(),
            offset=np.array(b.offsets, dtype=np.int64),
            caplen=np.array(b.caplens, dtype=np.int32),
            wirelen=np.array(b.wirelens, dtype=np.int32),
            ts_ns=np.array(b.ts_ns, dtype=np.int64),
            linktype=np.full(n, self.linktype, dtype=np.uint16),
            frame=np.arange(self._next_frame, self._next_frame + n, dtype=np.int64),
        )
        self._next_frame += n
        self.stats.packets_read += n
        self.stats.bytes_read += b.pos
        if self.writer is not None:
            self.writer.write(batch)
        with self._lock:
            full = self._queued_bytes + b.pos > self.queue_bytes and self._queued_bytes > 0
            if not full:
                self._queued_bytes += b.pos
        if not full:
            self._queue.put_nowait(batch)
        else:  # the analysis is too far behind: drop this batch (it is in the pcap)
            self.own_drops += n
            self.stats.skipped["live_queue_overflow"] += n
            self.stats.packets_read -= n  # not handed out: read = analyzed + skipped must still add up
        return kept

    def _kernel_stats(self) -> None:
        """Add the socket's drop counter (PACKET_STATISTICS resets on every read) to ``stats``."""
        if self._sock is None:
            return
        raw = self._sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8)
        packets, drops = struct.unpack("=II", raw)  # packets counts the dropped ones too
        self._queued_total += packets - drops
        self.stats.kernel_drops = (self.stats.kernel_drops or 0) + drops

    def reader_stats(self) -> ReaderStats:
        """A copy of the account so far (for reports written while the capture runs)."""
        return ReaderStats(file_format="live", packets_read=self.stats.packets_read,
                           bytes_read=self.stats.bytes_read, skipped=Counter(self.stats.skipped),
                           kernel_drops=self.stats.kernel_drops, linktypes=set(self.stats.linktypes))


def _open_listener(iface: str, bpf_filter: str | None, promisc: bool) -> Any:
    """scapy's L2 listen socket on ``iface`` with the filter attached; its errors as ``LiveCaptureError``."""
    try:
        import scapy.arch  # noqa: F401  (sets conf.L2listen for this platform)
        from scapy.config import conf
        from scapy.error import Scapy_Exception
    except ImportError as exc:
        raise LiveCaptureError(f"live capture needs scapy (pip install 'analyzer[live]'): {exc}") from exc
    if conf.L2listen is None:
        raise LiveCaptureError("live capture is not supported on this platform")
    runtime_log = logging.getLogger("scapy.runtime")
    level = runtime_log.level
    runtime_log.setLevel(logging.ERROR)  # "Unable to guess type": we map the link type ourselves
    try:
        return conf.L2listen(iface=iface, filter=bpf_filter, promisc=promisc)
    except PermissionError:
        raise LiveCaptureError(f"{iface}: no permission to capture (needs root or CAP_NET_RAW)") from None
    except Scapy_Exception as exc:
        text = str(exc).removeprefix("Cannot set filter: ")
        raise LiveCaptureError(f"bad capture filter {bpf_filter!r}: {text}") from None
    except (OSError, ValueError) as exc:
        raise LiveCaptureError(f"{iface}: cannot capture: {exc}") from None
    finally:
        runtime_log.setLevel(level)
