"""``DecodedPackets``: the columnar L3/L4 view of a batch, produced by ``decode.decode_batch``.

One row per TCP or UDP packet that carried a complete IP + transport header. Rows keep the capture order
(ascending ``frame``). Addresses are 128-bit, stored as two big-endian ``uint64`` halves; IPv4 addresses are
IPv4-mapped (``::ffff:a.b.c.d``, i.e. ``hi == 0`` and ``lo >> 32 == 0xffff``). Payload bytes are not copied:
``payload_off`` points into the batch's ``buf``.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from analyzer.capture.batch import PacketBatch

TCP = 6
UDP = 17

# TCP flag bits (tcp_flags column)
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

_V4_MAPPED = np.uint64(0xFFFF_0000_0000)


@dataclass(frozen=True, slots=True)
class DecodedPackets:
    """L3/L4 columns, one row per decoded TCP/UDP packet (all arrays have the same length)."""

    batch: PacketBatch  # the raw batch the offsets point into
    frame: npt.NDArray[np.int64]
    ts_ns: npt.NDArray[np.int64]
    ip_version: npt.NDArray[np.uint8]  # 4 or 6
    src_hi: npt.NDArray[np.uint64]
    src_lo: npt.NDArray[np.uint64]
    dst_hi: npt.NDArray[np.uint64]
    dst_lo: npt.NDArray[np.uint64]
    proto: npt.NDArray[np.uint8]  # 6 TCP, 17 UDP
    sport: npt.NDArray[np.uint16]
    dport: npt.NDArray[np.uint16]
    tcp_seq: npt.NDArray[np.uint32]  # 0 for UDP
    tcp_ack: npt.NDArray[np.uint32]
    tcp_flags: npt.NDArray[np.uint16]
    tcp_window: npt.NDArray[np.uint16]  # raw, unscaled
    l4_off: npt.NDArray[np.int64]  # absolute offset in batch.buf of the TCP/UDP header
    l4_hdr_len: npt.NDArray[np.int32]  # TCP data offset * 4 (options included); 8 for UDP
    payload_off: npt.NDArray[np.int64]  # absolute offset in batch.buf of the payload
    payload_len: npt.NDArray[np.int32]  # captured payload bytes (limited by caplen)
    payload_wire_len: npt.NDArray[np.int32]  # payload bytes on the wire (from IP lengths)

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    def take(self, index: npt.NDArray[np.intp]) -> DecodedPackets:
        """Rows ``index`` (a boolean mask or integer index), same batch."""
        return DecodedPackets(
            self.batch,
            *(getattr(self, name)[index] for name in _COLUMNS),
        )


_COLUMNS = (
    "frame", "ts_ns", "ip_version", "src_hi", "src_lo", "dst_hi", "dst_lo", "proto", "sport", "dport",
    "tcp_seq", "tcp_ack", "tcp_flags", "tcp_window", "l4_off", "l4_hdr_len", "payload_off", "payload_len",
    "payload_wire_len",
)


@lru_cache(maxsize=1 << 16)
def format_ip(hi: int, lo: int) -> str:
    """Text form of a 128-bit address held as two halves (IPv4-mapped addresses print as IPv4). Cached: a
    capture has few distinct addresses and ``ipaddress`` takes about 8 µs per call (two per connection; the
    same text object is then shared by every row with that address). A flood from random sources misses the
    cache, so IPv4 is formatted by ``socket.inet_ntoa`` (the same text, about 20x faster)."""
    hi, lo = int(hi), int(lo)
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return socket.inet_ntoa((lo & 0xFFFF_FFFF).to_bytes(4, "big"))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def ipv4_mapped(addr32: npt.NDArray[np.uint32]) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """IPv4 addresses (host-order uint32 values) as (hi, lo) IPv4-mapped halves."""
    lo = addr32.astype(np.uint64) | _V4_MAPPED
    return np.zeros_like(lo), lo
