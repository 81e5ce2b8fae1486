"""QUIC connections over UDP: grouping datagrams into flows, and what a passive observer can tell of them.

``QuicTracker.feed(packets)`` takes the UDP rows of one chunk (``DecodedPackets``). A UDP flow (its two
endpoints) becomes a QUIC connection when a datagram of it starts with a QUIC long header of a known
version (``analyzer.quic.looks_like_quic_long_header``); the sender of that first long-header datagram is
the client. Everything else of the flow is counted per direction with numpy reductions over the chunk;
only long-header datagrams (Initial, 0-RTT, Handshake, Retry: a handful per connection) are handed to the
connection's ``QuicObserver`` as bytes, so the per-packet Python work does not grow with the transfer.
UDP datagrams of flows that never showed a QUIC long header are not analyzed (the caller counts them as
skipped, ``udp_not_analyzed``). A flow silent for ``QUIC_IDLE_NS`` of capture time is finished (QUIC's
idle timeout; a later datagram on the same endpoints starts a new connection only with a new long
header), so memory follows the QUIC connections open at once.

Definitions (QUIC encrypts almost everything; these are what the first packets show):
- ``handshake_rtt_ms``: the client's first Initial → the server's Initial that completes its ServerHello
  (one round trip at the client, two after a Retry; as tshark's Initial → ServerHello);
  ``tls_handshake_ms``: the client's first Initial → its first short-header (1-RTT) datagram, sent once
  it has the handshake keys. ``tls_resumed``: the ServerHello (readable with the Initial keys) accepted a
  pre-shared key; ``tls_round_trips``: 1, or 0 when the client sent 0-RTT packets.
- ``protocol``: ``h3`` when the client offered an HTTP/3 ALPN (``h3``, ``h3-NN``), else ``unknown``;
  request counts are unknown (null) without keys.
- ``close_by`` is ``unknown`` and ``close_reason`` null: CONNECTION_CLOSE travels encrypted.
- ``syn_seen``: the client's Initial was captured (the start of the handshake, as TCP's SYN);
  ``client_from`` is ``quic_initial``; ``client_bytes``/``server_bytes`` are UDP payload bytes.

It knows UDP and QUIC's public headers, nothing about HTTP.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from analyzer.flows.packets import DecodedPackets, format_ip
from analyzer.quic import QuicObserver, looks_like_quic_long_header, quic_version_name
from analyzer.quic.packets import INITIAL, ZERO_RTT, parse_long_header

QUIC_IDLE_NS = 60 * 1_000_000_000  # capture time without a datagram after which a QUIC flow is finished
_KNOWN_VERSIONS = np.array([0x00000001, 0x6B3343CF, 0], dtype=np.uint32)  # v1, v2, version negotiation


@dataclass(slots=True, eq=False)
class QuicFlow:
    key: tuple[int, int, int, int, int, int]  # (lo_hi, lo_lo, lo_port, hi_hi, hi_lo, hi_port)
    client_is_lo: bool
    first_frame: int
    ts_start_ns: int
    ts_end_ns: int
    observer: QuicObserver = field(default_factory=QuicObserver)
    packets: list[int] = field(default_factory=lambda: [0, 0])  # per direction (0 client → server)
    payload_bytes: list[int] = field(default_factory=lambda: [0, 0])
    ts_client_short_ns: int | None = None
    cids: set[bytes] = field(default_factory=set)  # connection ids seen in its long headers
    server_seen: bool = False  # a long header from the server

    def endpoint(self, side: int) -> tuple[str, int]:
        lo = (side == 0) == self.client_is_lo
        k = self.key
        return (format_ip(k[0], k[1]), k[2]) if lo else (format_ip(k[3], k[4]), k[5])


class QuicTracker:
    """UDP rows in, finished ``QuicFlow``s out (``on_finished``)."""

    def __init__(self, on_finished: Callable[[QuicFlow], None]) -> None:
        self.on_finished = on_finished
        self.active: dict[tuple[int, ...], QuicFlow] = {}

    def feed(self, pk: DecodedPackets) -> int:
        """Take a chunk's UDP rows; return how many of them belong to QUIC connections (analyzed)."""
        if not len(pk):
            return 0
        skipped = self._process(pk)
        self._evict(int(pk.ts_ns.max()))
        return len(pk) - skipped

    def finish(self) -> None:
        for flow in sorted(self.active.values(), key=lambda f: (f.ts_start_ns, f.first_frame)):
            self.on_finished(flow)
        self.active.clear()

    # --------------------------------------------------------------------------------------------------
    def _evict(self, now_ns: int) -> None:
        stale = [k for k, f in self.active.items() if f.ts_end_ns < now_ns - QUIC_IDLE_NS]
        for k in stale:
            self.on_finished(self.active.pop(k))

    def _process(self, pk: DecodedPackets) -> int:
        buf = pk.batch.buf
        n = len(pk)
        src_lt = (pk.src_hi < pk.dst_hi) | ((pk.src_hi == pk.dst_hi) & (
            (pk.src_lo < pk.dst_lo) | ((pk.src_lo == pk.dst_lo) & (pk.sport <= pk.dport))))
        keys = np.stack([np.where(src_lt, pk.src_hi, pk.dst_hi), np.where(src_lt, pk.src_lo, pk.dst_lo),
                         np.where(src_lt, pk.sport, pk.dport).astype(np.uint64),
                         np.where(src_lt, pk.dst_hi, pk.src_hi), np.where(src_lt, pk.dst_lo, pk.src_lo),
                         np.where(src_lt, pk.dport, pk.sport).astype(np.uint64)], axis=1)
        uniq, group = np.unique(keys, axis=0, return_inverse=True)
        group = group.reshape(-1)
        # first payload bytes: the header form and the version of a long header
        plen = pk.payload_len.astype(np.int64)
        off = pk.payload_off
        have = plen >= 7
        idx = np.where(have, off, 0)
        b0 = np.where(have, buf[idx], 0).astype(np.uint8) if n else np.zeros(0, dtype=np.uint8)
        version = np.zeros(n, dtype=np.uint32)
        for i in range(1, 5):
            byte = np.where(have, buf[np.where(have, off + i, 0)], 0).astype(np.uint32)
            version = (version << np.uint32(8)) | byte
        draft = (version & np.uint32(0xFFFFFF00)) == np.uint32(0xFF000000)  # IETF drafts 0xff0000NN
        # the fixed bit (0x40) may be greased (RFC 9287): only the form bit tells long from short
        long_hdr = have & ((b0 & 0x80) == 0x80) & (np.isin(version, _KNOWN_VERSIONS) | draft)
        one = plen >= 1
        short_hdr = one & ((np.where(one, buf[np.where(one, off, 0)], 0) & 0x80) == 0)

        order = np.argsort(group, kind="stable")  # rows by flow, capture order inside
        bounds = np.searchsorted(group[order], np.arange(len(uniq) + 1))
        # only flows with a long header in this chunk, or already QUIC, need Python: the rest (DNS, ...) is
        # counted as skipped at once
        candidate = np.bincount(group, weights=long_hdr, minlength=len(uniq)) > 0
        if self.active:
            as_void = np.dtype((np.void, 48))
            known = np.array(list(self.active), dtype=np.uint64).view(as_void).ravel()
            candidate |= np.isin(np.ascontiguousarray(uniq).view(as_void).ravel(), known)
        sizes = np.diff(bounds)
        skipped = int(sizes[~candidate].sum())
        key_list = uniq.tolist()
        ts_l = pk.ts_ns
        for g in np.nonzero(candidate)[0].tolist():
            rows = order[bounds[g]: bounds[g + 1]]
            key = tuple(int(x) for x in key_list[g])
            # silences longer than QUIC's idle timeout end a connection: cut the rows there
            flow = self.active.get(key)
            if flow is not None and int(ts_l[rows[0]]) - flow.ts_end_ns > QUIC_IDLE_NS:
                self.on_finished(self.active.pop(key))
            cuts = (np.nonzero(np.diff(ts_l[rows]) > QUIC_IDLE_NS)[0] + 1).tolist()
            for i, part in enumerate(np.split(rows, cuts)):
                if i and key in self.active:
                    self.on_finished(self.active.pop(key))
                skipped += self._flow_rows(key, part, src_lt, long_hdr, short_hdr, buf, off, plen, pk)
        return skipped

    def _flow_rows(self, key: tuple[int, ...], rows: np.ndarray, src_lt: np.ndarray, long_hdr: np.ndarray,
                   short_hdr: np.ndarray, buf: npt.NDArray[np.uint8], off: npt.NDArray[np.int64],
                   plen: npt.NDArray[np.int64], pk: DecodedPackets) -> int:
        """Rows of one flow (capture order, no idle gap inside): into its connection(s). Returns the rows
        skipped (no QUIC connection to put them in)."""
        skipped = 0
        flow = self.active.get(key)
        if flow is None:
            starts = rows[long_hdr[rows]]
            if not len(starts) or not self._quic(buf, off, plen, int(starts[0])):
                return len(rows)
            skipped = int(np.searchsorted(rows, int(starts[0])))  # rows are in capture order
            rows = rows[skipped:]
            flow = self._start(key, int(rows[0]), src_lt, pk)
        # a client's first flight to a connection id never used on these endpoints: a new connection
        while True:
            split = self._new_client_connection(flow, rows, src_lt, long_hdr, buf, off, plen)
            if split is None:
                break
            self._account(flow, rows[:split], src_lt, long_hdr, short_hdr, buf, off, plen, pk.ts_ns)
            self.on_finished(self.active.pop(key))
            rows = rows[split:]
            flow = self._start(key, int(rows[0]), src_lt, pk)
        self._account(flow, rows, src_lt, long_hdr, short_hdr, buf, off, plen, pk.ts_ns)
        return skipped

    def _start(self, key: tuple[int, ...], row: int, src_lt: np.ndarray, pk: DecodedPackets) -> QuicFlow:
        ts = int(pk.ts_ns[row])
        flow = QuicFlow((key[0], key[1], key[2], key[3], key[4], key[5]), bool(src_lt[row]), int(pk.frame[row]),
                        ts, ts)
        self.active[key] = flow
        return flow

    @staticmethod
    def _new_client_connection(flow: QuicFlow, rows: np.ndarray, src_lt: np.ndarray, long_hdr: np.ndarray,
                               buf: npt.NDArray[np.uint8], off: npt.NDArray[np.int64], plen: npt.NDArray[np.int64]
                               ) -> int | None:
        """Position in ``rows`` of the first client Initial or 0-RTT datagram, after the server answered,
        whose destination connection id is none of the ids this connection used so far (the client's
        original one, a Retry's, the server's): a new connection on the same endpoints (a resumption from the
        same port). None when there is none. Connection ids come from the long headers, in capture order."""
        client = src_lt[rows] == flow.client_is_lo
        for k in np.nonzero(long_hdr[rows])[0].tolist():
            r = int(rows[k])
            header, _ = parse_long_header(buf[int(off[r]): int(off[r]) + int(plen[r])].tobytes(), 0)
            if header is None:
                continue  # the observer reports why
            if not client[k]:
                flow.server_seen = True
                flow.cids.add(header.scid)
                continue
            if not flow.cids:
                flow.cids.update((header.dcid, header.scid))
            elif header.kind in (INITIAL, ZERO_RTT) and flow.server_seen and header.dcid not in flow.cids:
                return k
            else:
                flow.cids.add(header.scid)
        return None

    @staticmethod
    def _account(flow: QuicFlow, rows: np.ndarray, src_lt: np.ndarray, long_hdr: np.ndarray, short_hdr: np.ndarray,
                 buf: npt.NDArray[np.uint8], off: npt.NDArray[np.int64], plen: npt.NDArray[np.int64],
                 ts_l: np.ndarray) -> None:
        """Count ``rows`` (capture order) in ``flow`` and feed its long-header datagrams to the observer."""
        if not len(rows):
            return
        direction = (src_lt[rows] != flow.client_is_lo).astype(np.int64)
        counts = np.bincount(direction, minlength=2)
        sizes = np.bincount(direction, weights=plen[rows], minlength=2)
        for d in (0, 1):
            flow.packets[d] += int(counts[d])
            flow.payload_bytes[d] += int(sizes[d])
        flow.ts_end_ns = max(flow.ts_end_ns, int(ts_l[rows].max()))
        client_short = rows[(direction == 0) & short_hdr[rows]]
        if flow.ts_client_short_ns is None and len(client_short):
            flow.ts_client_short_ns = int(ts_l[client_short[0]])
        is_long = long_hdr[rows]
        for r, d in zip(rows[is_long].tolist(), direction[is_long].tolist(), strict=True):
            a = int(off[r])
            flow.observer.feed(int(d), int(ts_l[r]), buf[a: a + int(plen[r])].tobytes())

    @staticmethod
    def _quic(buf: npt.NDArray[np.uint8], off: npt.NDArray[np.int64], plen: npt.NDArray[np.int64],
              r: int) -> bool:
        a = int(off[r])
        return looks_like_quic_long_header(buf[a: a + min(int(plen[r]), 64)].tobytes())


def _h3(alpn: tuple[str, ...]) -> bool:
    return any(p == "h3" or p.startswith("h3-") for p in alpn)


def quic_uid(flow: QuicFlow) -> str:
    """A stable id, as TCP connections' (``connections.connection_uid``), with a ``U`` prefix."""
    (cip, cport), (sip, sport) = flow.endpoint(0), flow.endpoint(1)
    text = f"udp|{flow.ts_start_ns}|{cip}|{cport}|{sip}|{sport}"
    digest = hashlib.blake2b(text.encode(), digest_size=10).digest()
    return "U" + base64.b32encode(digest).decode("ascii").rstrip("=")[:15]


def quic_records(flow: QuicFlow) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The connection row of a finished QUIC flow and its anomalies."""
    uid = quic_uid(flow)
    facts = flow.observer.facts()
    (cip, cport), (sip, sport) = flow.endpoint(0), flow.endpoint(1)
    start = facts.ts_client_initial_ns if facts.ts_client_initial_ns is not None else flow.ts_start_ns
    hello = facts.ts_server_hello_ns
    rtt = (hello - start) / 1e6 if hello is not None and hello >= start else None
    done = facts.ts_handshake_done_ns if facts.ts_handshake_done_ns is not None else flow.ts_client_short_ns
    tls_ms = (done - start) / 1e6 if done is not None and done >= start else None
    row: dict[str, Any] = {
        "uid": uid, "client_ip": cip, "client_port": cport, "server_ip": sip, "server_port": sport,
        "transport": "udp", "protocol": "h3" if _h3(facts.alpn_offered) else "unknown",
        "tls": True, "tls_version": facts.tls_version or "TLS 1.3", "sni": facts.sni, "alpn": facts.alpn,
        "alpn_offered": ",".join(facts.alpn_offered) if facts.alpn_offered else None,
        "tls_round_trips": 0 if facts.zero_rtt_packets else 1, "tls_decrypted": False,
        "tls_resumed": facts.resumed,
        "quic_version": quic_version_name(facts.version) if facts.version is not None else None,
        "syn_seen": facts.client_initials > 0, "ts_start": flow.ts_start_ns / 1e9,
        "ts_end": flow.ts_end_ns / 1e9,
        "handshake_rtt_ms": rtt, "tls_handshake_ms": tls_ms, "requests": None,
        "close_by": "unknown", "close_reason": None,
        "client_bytes": flow.payload_bytes[0], "server_bytes": flow.payload_bytes[1],
        "client_packets": flow.packets[0], "server_packets": flow.packets[1],
        "client_from": "quic_initial", "first_frame": flow.first_frame,
    }
    anomalies = [{"uid": uid, "ts": ts / 1e9, "name": name, "detail": detail}
                 for ts, name, detail in flow.observer.anomalies()]
    return row, anomalies
