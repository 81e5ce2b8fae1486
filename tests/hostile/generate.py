"""Generators of hostile captures: classic pcap files (nanosecond, Ethernet/IPv4/TCP) built with numpy.

Packets are made in bulk: per case a small *template* (the packets of one connection: direction, sequence and
acknowledgement offsets, flags, payload, time offset) is replicated over N connections with numpy, sorted by
time and written in blocks; long streams are cut into segments the same way. No per-packet Python objects,
so a million connections take seconds. Addresses are private (10.0.0.0/8 clients, 192.168.7.1 the server):
nothing is sent anywhere, these are files.

One function per case; each writes ``path`` and returns a ``Made`` (packets written, and what the test or
the benchmark needs to know). Sizes are parameters: tests use small ones, ``bench/hostile.py`` the full ones.

- ``syn_flood``: N half-open connections (SYN, and the server's SYN/ACK; the client never completes the
  handshake), plus one real keep-alive connection that lives through the flood.
- ``tiny_connections``: N complete short connections (handshake, one GET, one response, FIN both ways).
- ``many_clients``: the same, each from a client address of its own (per-client tables: pools, the what-if).
- ``huge_header``: a request whose header block is ``header_bytes`` long, then an ordinary request.
- ``endless_chunked``: a chunked response body of ``body_bytes`` that never ends (no last chunk, no FIN).
- ``overlap_conflict``: N connections whose request is sent twice, the copies carrying different bytes.
- ``absurd_content_length``: requests and responses with Content-Length values that are huge, negative or
  garbage.
- ``pipelined_flood``: one connection carrying N pipelined requests and no response.
- ``keepalive_marathon``: one keep-alive connection carrying N request/response exchanges one after the
  other (a load test's connection), still open when the capture ends.
- ``keepalive_crowd``: C such connections side by side (a load test), all open when the capture ends.
- ``h2_marathon``: one HTTP/2 connection carrying N streams, one or several per packet, still open at the end.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10
T0_NS = 1_750_000_000 * 10**9
SERVER_IP = 0xC0A80701  # 192.168.7.1
SERVER_PORT = 80
CLIENT_NET = 0x0A000000  # 10.0.0.0/8
MSS = 1448
BLOCK_BYTES = 8 << 20  # bytes of packets built at once

_HDR = np.dtype([
    ("ts_sec", "<u4"), ("ts_ns", "<u4"), ("incl", "<u4"), ("orig", "<u4"),
    ("eth_dst", "V6"), ("eth_src", "V6"), ("eth_type", ">u2"),
    ("ver_ihl", "u1"), ("tos", "u1"), ("ip_len", ">u2"), ("ip_id", ">u2"), ("frag", ">u2"), ("ttl", "u1"),
    ("proto", "u1"), ("ip_csum", ">u2"), ("src", ">u4"), ("dst", ">u4"),
    ("sport", ">u2"), ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"), ("doff", "u1"), ("flags", "u1"),
    ("win", ">u2"), ("tcp_csum", ">u2"), ("urg", ">u2"),
])
HDR_LEN = _HDR.itemsize  # 70: pcap record header 16 + Ethernet 14 + IPv4 20 + TCP 20
assert HDR_LEN == 70


@dataclass
class Made:
    """What a generator wrote."""

    path: Path
    packets: int
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Packets:
    """Columns of a run of packets, sorted by time. Payload bytes are ``payload[poff : poff + plen]``."""

    ts: npt.NDArray[np.int64]
    src: npt.NDArray[np.uint32]
    dst: npt.NDArray[np.uint32]
    sport: npt.NDArray[np.uint16]
    dport: npt.NDArray[np.uint16]
    seq: npt.NDArray[np.uint32]
    ack: npt.NDArray[np.uint32]
    flags: npt.NDArray[np.uint8]
    poff: npt.NDArray[np.int64]
    plen: npt.NDArray[np.int64]
    payload: npt.NDArray[np.uint8]

    def __len__(self) -> int:
        return int(self.ts.shape[0])


class PcapWriter:
    """A classic nanosecond pcap (magic a1b23c4d), link type Ethernet, written in numpy blocks."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.file: BinaryIO = self.path.open("wb")
        self.file.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
        self.packets = 0

    def write(self, p: Packets) -> None:
        n = len(p)
        if not n:
            return
        # in blocks of about BLOCK_BYTES so that building big runs needs bounded memory
        rec = HDR_LEN + p.plen
        ends = np.cumsum(rec)
        a = 0
        while a < n:
            base = ends[a - 1] if a else 0
            b = max(int(np.searchsorted(ends, base + BLOCK_BYTES, side="right")), a + 1)
            self._write_block(p, a, min(b, n))
            a = b
        self.packets += n

    def _write_block(self, p: Packets, a: int, b: int) -> None:
        n = b - a
        plen = p.plen[a:b]
        h = np.zeros(n, dtype=_HDR)
        ts = p.ts[a:b]
        h["ts_sec"] = ts // 10**9
        h["ts_ns"] = ts % 10**9
        h["incl"] = h["orig"] = 54 + plen
        h["eth_dst"] = b"\x02\x00\x00\x00\x00\x02"
        h["eth_src"] = b"\x02\x00\x00\x00\x00\x01"
        h["eth_type"] = 0x0800
        h["ver_ihl"] = 0x45
        h["ip_len"] = 40 + plen
        h["ttl"] = 64
        h["proto"] = 6
        h["src"], h["dst"] = p.src[a:b], p.dst[a:b]
        h["sport"], h["dport"] = p.sport[a:b], p.dport[a:b]
        h["seq"], h["ack"] = p.seq[a:b], p.ack[a:b]
        h["doff"] = 0x50
        h["flags"] = p.flags[a:b]
        h["win"] = 65535
        total_payload = int(plen.sum())
        if not total_payload:
            self.file.write(h.tobytes())
            return
        rec_start = np.zeros(n, dtype=np.int64)
        np.cumsum(HDR_LEN + plen[:-1], out=rec_start[1:])
        out = np.empty(int(rec_start[-1] + HDR_LEN + plen[-1]), dtype=np.uint8)
        out[(rec_start[:, None] + np.arange(HDR_LEN)[None, :]).ravel()] = h.view(np.uint8)
        # payload byte j of the block goes to its record's payload area
        pay_start = np.zeros(n, dtype=np.int64)
        np.cumsum(plen[:-1], out=pay_start[1:])
        rel = np.arange(total_payload, dtype=np.int64)
        shift_dst = np.repeat(rec_start + HDR_LEN - pay_start, plen)
        shift_src = np.repeat(p.poff[a:b] - pay_start, plen)
        out[rel + shift_dst] = p.payload[rel + shift_src]
        self.file.write(out.tobytes())

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------ templates

@dataclass
class Pkt:
    """One packet of a connection template. ``seq``/``ack`` are offsets from the sender's / receiver's ISN
    (the SYN is offset 0, the first data byte offset 1); ``ack`` None: no ACK flag."""

    to_server: bool
    flags: int
    seq: int
    ack: int | None
    payload: bytes = b""
    dt_ns: int = 0  # time after the connection's start


def _conversation(client: bytes, server: bytes, rtt_ns: int = 200_000, close: bool = True) -> list[Pkt]:
    """Handshake, the client's bytes, the server's bytes (each cut into MSS segments), FINs."""
    t = 0
    out = [Pkt(True, SYN, 0, None, b"", t)]
    t += rtt_ns // 2
    out.append(Pkt(False, SYN | ACK, 0, 1, b"", t))
    t += rtt_ns // 2
    c, s = 1, 1
    for i in range(0, len(client), MSS):
        part = client[i:i + MSS]
        out.append(Pkt(True, ACK | PSH, c, s, part, t))
        c += len(part)
        t += 1_000
    t += rtt_ns // 2
    for i in range(0, len(server), MSS):
        part = server[i:i + MSS]
        out.append(Pkt(False, ACK | PSH, s, c, part, t))
        s += len(part)
        t += 1_000
    if close:
        t += rtt_ns // 2
        out.append(Pkt(True, FIN | ACK, c, s, b"", t))
        t += rtt_ns // 2
        out.append(Pkt(False, FIN | ACK, s, c + 1, b"", t))
        t += rtt_ns // 2
        out.append(Pkt(True, ACK, c + 1, s + 1, b"", t))
    return out


def replicate(template: Sequence[Pkt], n: int, spacing_ns: int, first: int = 0, block: int = 131_072,
              client_ip: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.int64]] | None = None,
              client_port: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.int64]] | None = None,
              ) -> Iterator[Packets]:
    """The template's packets for connections ``first .. first + n - 1`` (connection i starts at
    ``T0_NS + i * spacing_ns`` from client 10.x.y.z:port, unique per i), in time order, in blocks."""
    k = len(template)
    to_server = np.array([p.to_server for p in template], dtype=bool)
    flags = np.array([p.flags | (ACK if p.ack is not None else 0) for p in template], dtype=np.uint8)
    seq_off = np.array([p.seq for p in template], dtype=np.int64)
    ack_off = np.array([p.ack if p.ack is not None else 0 for p in template], dtype=np.int64)
    has_ack = np.array([p.ack is not None for p in template], dtype=bool)
    dt = np.array([p.dt_ns for p in template], dtype=np.int64)
    plen = np.array([len(p.payload) for p in template], dtype=np.int64)
    poff = np.zeros(k, dtype=np.int64)
    np.cumsum(plen[:-1], out=poff[1:])
    payload = np.frombuffer(b"".join(p.payload for p in template) or b"\0", dtype=np.uint8)
    span = int(dt.max())
    carry: Packets | None = None
    for a in range(first, first + n, block):
        b = min(a + block, first + n)
        i = np.arange(a, b, dtype=np.int64)
        c_ip = (client_ip(i) if client_ip else CLIENT_NET + 0x010000 + i // 50_000).astype(np.uint32)
        c_port = (client_port(i) if client_port else 10_000 + i % 50_000).astype(np.uint16)
        c_isn = ((i * 2_654_435_761) & 0xFFFFFFFF).astype(np.int64)
        s_isn = ((i * 40_503 + 12_345) & 0xFFFFFFFF).astype(np.int64)
        ts = (T0_NS + i * spacing_ns)[:, None] + dt[None, :]
        ts_flat = ts.ravel()
        own_isn = np.where(to_server[None, :], c_isn[:, None], s_isn[:, None])
        peer_isn = np.where(to_server[None, :], s_isn[:, None], c_isn[:, None])
        pk = Packets(
            ts=ts_flat,
            src=np.where(to_server[None, :], c_ip[:, None], np.uint32(SERVER_IP)).astype(np.uint32).ravel(),
            dst=np.where(to_server[None, :], np.uint32(SERVER_IP), c_ip[:, None]).astype(np.uint32).ravel(),
            sport=np.where(to_server[None, :], c_port[:, None], SERVER_PORT).astype(np.uint16).ravel(),
            dport=np.where(to_server[None, :], SERVER_PORT, c_port[:, None]).astype(np.uint16).ravel(),
            seq=((own_isn + seq_off[None, :]) & 0xFFFFFFFF).astype(np.uint32).ravel(),
            ack=np.where(has_ack[None, :], (peer_isn + ack_off[None, :]) & 0xFFFFFFFF, 0).astype(np.uint32).ravel(),
            flags=np.broadcast_to(flags, (b - a, k)).ravel().copy(),
            poff=np.broadcast_to(poff, (b - a, k)).ravel().copy(),
            plen=np.broadcast_to(plen, (b - a, k)).ravel().copy(),
            payload=payload,
        )
        if carry is not None:
            pk = _concat([carry, pk])
        order = np.argsort(pk.ts, kind="stable")
        pk = _take(pk, order)
        # packets at or after the next block's first start may interleave with it: carry them over
        nxt = T0_NS + b * spacing_ns if b < first + n else None
        if nxt is None:
            yield pk
            carry = None
        else:
            cut = int(np.searchsorted(pk.ts, nxt, side="left")) if span else len(pk)
            yield _take(pk, np.arange(cut))
            carry = _take(pk, np.arange(cut, len(pk)))
    if carry is not None and len(carry):
        yield carry


def _take(p: Packets, idx: npt.NDArray[np.int64]) -> Packets:
    return Packets(p.ts[idx], p.src[idx], p.dst[idx], p.sport[idx], p.dport[idx], p.seq[idx], p.ack[idx],
                   p.flags[idx], p.poff[idx], p.plen[idx], p.payload)


def _concat(parts: Sequence[Packets]) -> Packets:
    """One run of packets from several (payload buffers joined, offsets moved)."""
    bufs = [p.payload for p in parts]
    base = np.cumsum([0] + [len(b) for b in bufs[:-1]])
    return Packets(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("ts", "src", "dst", "sport", "dport", "seq", "ack", "flags")),
                   np.concatenate([p.poff + base[i] for i, p in enumerate(parts)]),
                   np.concatenate([p.plen for p in parts]), np.concatenate(bufs))


def _write_template(path: Path, template: Sequence[Pkt], n: int, spacing_ns: int) -> int:
    with PcapWriter(path) as w:
        for pk in replicate(template, n, spacing_ns):
            w.write(pk)
        return w.packets


def _one(path_packets: Iterable[Packets], path: Path) -> int:
    with PcapWriter(path) as w:
        for p in path_packets:
            w.write(p)
        return w.packets


def _single(template: Sequence[Pkt], index: int, t0_ns: int) -> Packets:
    """The packets of one connection (client number ``index``) starting at ``t0_ns``."""
    (pk,) = list(replicate(template, 1, 1, first=index))
    pk.ts = pk.ts - (T0_NS + index) + t0_ns
    return pk


REQUEST = b"GET /x HTTP/1.1\r\nHost: hostile.test\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# -------------------------------------------------------------------------------------------------- cases

def syn_flood(path: Path, n: int, synack: bool = True, rate_per_s: int = 100_000) -> Made:
    """``n`` half-open connections: the client's SYN (and the server's SYN/ACK when ``synack``), never an
    ACK; spoofed sources 10.64.0.0 + i. A real connection (client 10.1.0.0) opens before the flood, makes
    one request, stays idle through the flood, makes a second request after it and closes."""
    spacing = max(10**9 // rate_per_s, 1)
    template = [Pkt(True, SYN, 0, None)]
    if synack:
        template.append(Pkt(False, SYN | ACK, 0, 1, b"", 300_000))

    conv = _keepalive_two_exchanges(gap_ns=n * spacing + 2 * 10**9)
    real_pk = _single(conv, 0, T0_NS - 10**9)  # client 10.1.0.0:10000
    flood = replicate(template, n, spacing, client_ip=lambda i: CLIENT_NET + 0x400000 + i,
                      client_port=lambda i: 1024 + (i * 7919) % 60_000)
    blocks = list(flood)
    # the real connection's packets merged in time order
    merged = _concat([*blocks, real_pk])
    order = np.argsort(merged.ts, kind="stable")
    packets = _one([_take(merged, order)], Path(path))
    return Made(Path(path), packets, {"half_open": n, "real_packets": len(real_pk), "real_requests": 2})


def _keepalive_two_exchanges(gap_ns: int) -> list[Pkt]:
    """Handshake, request/response, ``gap_ns`` of silence, request/response, FINs (one connection)."""
    q, r = len(REQUEST), len(RESPONSE)
    t = 0
    out = [Pkt(True, SYN, 0, None, b"", t), Pkt(False, SYN | ACK, 0, 1, b"", t + 100_000),
           Pkt(True, ACK, 1, 1, b"", t + 200_000), Pkt(True, ACK | PSH, 1, 1, REQUEST, t + 210_000),
           Pkt(False, ACK | PSH, 1, 1 + q, RESPONSE, t + 400_000), Pkt(True, ACK, 1 + q, 1 + r, b"", t + 500_000)]
    t += gap_ns
    out += [Pkt(True, ACK | PSH, 1 + q, 1 + r, REQUEST, t), Pkt(False, ACK | PSH, 1 + r, 1 + 2 * q, RESPONSE,
                                                                  t + 200_000),
            Pkt(True, FIN | ACK, 1 + 2 * q, 1 + 2 * r, b"", t + 300_000),
            Pkt(False, FIN | ACK, 1 + 2 * r, 2 + 2 * q, b"", t + 400_000),
            Pkt(True, ACK, 2 + 2 * q, 2 + 2 * r, b"", t + 500_000)]
    return out


def tiny_connections(path: Path, n: int, spacing_ns: int = 20_000, own_clients: bool = False) -> Made:
    """``n`` complete connections, each: SYN, SYN/ACK, the GET (with the handshake's ACK), the response,
    FIN/ACK from the client, FIN/ACK from the server, the last ACK. 7 packets each; a new one every
    ``spacing_ns`` (about 50 open at once at the default). Clients: 50,000 connections per address, or with
    ``own_clients`` one address per connection (10.64.0.0 + i)."""
    template = tiny_template()
    if not own_clients:
        return Made(Path(path), _write_template(Path(path), template, n, spacing_ns), {"connections": n})
    with PcapWriter(Path(path)) as w:
        for pk in replicate(template, n, spacing_ns, client_ip=lambda i: CLIENT_NET + 0x400000 + i):
            w.write(pk)
        return Made(Path(path), w.packets, {"connections": n, "clients": n})


def tiny_template() -> list[Pkt]:
    """One ``tiny_connections`` connection (1 ms long)."""
    q, r = len(REQUEST), len(RESPONSE)
    return [
        Pkt(True, SYN, 0, None, b"", 0), Pkt(False, SYN | ACK, 0, 1, b"", 200_000),
        Pkt(True, ACK | PSH, 1, 1, REQUEST, 400_000), Pkt(False, ACK | PSH, 1, 1 + q, RESPONSE, 600_000),
        Pkt(True, FIN | ACK, 1 + q, 1 + r, b"", 800_000), Pkt(False, FIN | ACK, 1 + r, 2 + q, b"", 900_000),
        Pkt(True, ACK, 2 + q, 2 + r, b"", 1_000_000),
    ]


def many_clients(path: Path, n: int) -> Made:
    """``tiny_connections`` from ``n`` client addresses, one connection each."""
    return tiny_connections(path, n, own_clients=True)


def huge_header(path: Path, header_bytes: int = 1 << 20) -> Made:
    """One connection: a GET whose header block is ``header_bytes`` long (``X-Filler`` lines), then an
    ordinary GET; the server answers 431 then 200 and closes."""
    line = b"X-Filler: " + b"a" * 100 + b"\r\n"
    big = b"GET /huge HTTP/1.1\r\nHost: hostile.test\r\n" + line * (header_bytes // len(line) + 1) + b"\r\n"
    r431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n"
    conv = _conversation(big + REQUEST, r431 + RESPONSE)
    return Made(Path(path), _write_template(Path(path), conv, 1, 1), {"header_bytes": len(big)})


def endless_chunked(path: Path, body_bytes: int, chunk_size: int = 1, ack_every: int = 16) -> Made:
    """One connection: a GET, then a response ``Transfer-Encoding: chunked`` whose body is chunks of
    ``chunk_size`` bytes, ``body_bytes`` of body on the wire, with no last chunk and no FIN (the capture
    ends in the middle of it). The client ACKs every ``ack_every`` segments."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    unit = f"{chunk_size:x}\r\n".encode() + b"z" * chunk_size + b"\r\n"
    n_units = max(body_bytes // len(unit), 1)
    q = len(REQUEST)
    setup = [Pkt(True, SYN, 0, None, b"", 0), Pkt(False, SYN | ACK, 0, 1, b"", 100_000),
             Pkt(True, ACK | PSH, 1, 1, REQUEST, 200_000), Pkt(False, ACK | PSH, 1, 1 + q, head, 300_000)]

    def body() -> Iterator[Packets]:
        first = _single(setup, 0, T0_NS)
        yield first
        c_ip, c_port = int(first.src[0]), int(first.sport[0])
        s_isn = int(first.seq[1])  # the SYN/ACK carries the server ISN
        c_isn = int(first.seq[0])
        stream_base = 1 + len(head)  # stream offset of the body
        total = n_units * len(unit)
        per_block = max((16 << 20) // len(unit), 1) * len(unit)  # whole units per block of bytes
        seg_t = 400_000
        seg_no = 0
        for a in range(0, total, per_block):
            b = min(a + per_block, total)
            reps = (b - a) // len(unit)
            data = np.frombuffer(unit * reps, dtype=np.uint8)
            starts = np.arange(0, b - a, MSS, dtype=np.int64)
            lens = np.minimum(MSS, (b - a) - starts)
            m = len(starts)
            ts = T0_NS + seg_t + (seg_no + np.arange(m, dtype=np.int64)) * 10_000
            data_pk = Packets(ts, np.full(m, SERVER_IP, np.uint32), np.full(m, c_ip, np.uint32),
                              np.full(m, SERVER_PORT, np.uint16), np.full(m, c_port, np.uint16),
                              ((s_isn + stream_base + a + starts) & 0xFFFFFFFF).astype(np.uint32),
                              np.full(m, (c_isn + 1 + q) & 0xFFFFFFFF, np.uint32),
                              np.full(m, ACK, np.uint8), starts, lens, data)
            acks = np.nonzero((seg_no + np.arange(m)) % ack_every == ack_every - 1)[0]
            k = len(acks)
            ack_pk = Packets(ts[acks] + 5_000, np.full(k, c_ip, np.uint32), np.full(k, SERVER_IP, np.uint32),
                             np.full(k, c_port, np.uint16), np.full(k, SERVER_PORT, np.uint16),
                             np.full(k, (c_isn + 1 + q) & 0xFFFFFFFF, np.uint32),
                             ((s_isn + stream_base + a + starts[acks] + lens[acks]) & 0xFFFFFFFF).astype(np.uint32),
                             np.full(k, ACK, np.uint8), np.zeros(k, np.int64), np.zeros(k, np.int64), data[:1])
            both = _concat([data_pk, ack_pk])
            yield _take(both, np.argsort(both.ts, kind="stable"))
            seg_no += m

    packets = _one(body(), Path(path))
    return Made(Path(path), packets, {"chunks": n_units, "body_bytes": n_units * len(unit)})


def overlap_conflict(path: Path, n: int, spacing_ns: int = 100_000) -> Made:
    """``n`` connections whose request is sent twice with different bytes in the same sequence range:
    first ``GET /first`` (the copy captured first), then a "retransmission" ``GET /evil!``; a third
    segment overlaps the second half of the request with other bytes again. The server answers one
    response and both sides close."""
    good = b"GET /first HTTP/1.1\r\nHost: hostile.test\r\n\r\n"
    evil = b"GET /evil! HTTP/1.1\r\nHost: hostile.test\r\n\r\n"
    assert len(good) == len(evil)
    half = len(good) // 2
    tail = b"Z" * (len(good) - half)
    q, r = len(good), len(RESPONSE)
    template = [
        Pkt(True, SYN, 0, None, b"", 0), Pkt(False, SYN | ACK, 0, 1, b"", 100_000),
        Pkt(True, ACK, 1, 1, b"", 200_000),
        Pkt(True, ACK | PSH, 1, 1, good, 210_000),
        Pkt(True, ACK | PSH, 1, 1, evil, 220_000),  # same range, 5 bytes differ
        Pkt(True, ACK | PSH, 1 + half, 1, tail, 230_000),  # the second half again, all bytes differ
        Pkt(False, ACK | PSH, 1, 1 + q, RESPONSE, 400_000),
        Pkt(True, FIN | ACK, 1 + q, 1 + r, b"", 500_000), Pkt(False, FIN | ACK, 1 + r, 2 + q, b"", 600_000),
        Pkt(True, ACK, 2 + q, 2 + r, b"", 700_000),
    ]
    differ = sum(a != b for a, b in zip(good, evil, strict=True)) + sum(
        a != b for a, b in zip(good[half:], tail, strict=True))
    return Made(Path(path), _write_template(Path(path), template, n, spacing_ns),
                {"connections": n, "conflicting_segments": 2, "differing_bytes": differ})


ABSURD_LENGTHS = (b"99999999999999999999", b"-1", b"-99999999999999999999", b"abc", b"5, 6", b"0x10", b"1e9",
                  b"18446744073709551617")


def absurd_content_length(path: Path, repeat: int = 1) -> Made:
    """For each value in ``ABSURD_LENGTHS``: one connection whose request carries ``Content-Length:
    VALUE`` and whose response does too (the response body then runs until the server's FIN); and one
    connection whose response announces a valid but absurd length (999,999,999,999,999 bytes, 15 digits)
    and sends 2 bytes before closing. ``repeat`` copies of the whole set."""
    templates: list[list[Pkt]] = []
    for value in ABSURD_LENGTHS:
        req = b"POST /cl HTTP/1.1\r\nHost: hostile.test\r\nContent-Length: " + value + b"\r\n\r\n"
        resp = b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\nConnection: close\r\n\r\nbody"
        templates.append(_conversation(req, resp))
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999999\r\n\r\nok"
    templates.append(_conversation(REQUEST, big))
    parts = []
    index = 0
    for rep in range(repeat):
        for j, tpl in enumerate(templates):
            parts.append(_single(tpl, index, T0_NS + (rep * len(templates) + j) * 10_000_000))
            index += 1
    return Made(Path(path), _one(parts, Path(path)),
                {"bad_values": len(ABSURD_LENGTHS) * repeat, "huge_valid": repeat,
                 "connections": len(templates) * repeat})


def pipelined_flood(path: Path, n: int, ack_every: int = 2) -> Made:
    """One connection: ``n`` pipelined GETs sent back to back (packed into full segments), the server
    only ACKs (every ``ack_every`` segments), never answers, and the capture ends with the connection open."""
    reqs = [f"GET /{i} HTTP/1.1\r\nHost: hostile.test\r\n\r\n".encode() for i in range(min(n, 1000))]
    # n requests: the first 1000 distinct, the rest repeat them
    stream = b"".join(reqs) * (n // len(reqs)) + b"".join(reqs[: n % len(reqs)])
    setup = [Pkt(True, SYN, 0, None, b"", 0), Pkt(False, SYN | ACK, 0, 1, b"", 100_000),
             Pkt(True, ACK, 1, 1, b"", 200_000)]
    first = _single(setup, 0, T0_NS)
    c_ip, c_port = int(first.src[0]), int(first.sport[0])
    c_isn, s_isn = int(first.seq[0]), int(first.seq[1])
    data = np.frombuffer(stream, dtype=np.uint8)
    starts = np.arange(0, len(data), MSS, dtype=np.int64)
    lens = np.minimum(MSS, len(data) - starts)
    m = len(starts)
    ts = T0_NS + 300_000 + np.arange(m, dtype=np.int64) * 10_000
    data_pk = Packets(ts, np.full(m, c_ip, np.uint32), np.full(m, SERVER_IP, np.uint32),
                      np.full(m, c_port, np.uint16), np.full(m, SERVER_PORT, np.uint16),
                      ((c_isn + 1 + starts) & 0xFFFFFFFF).astype(np.uint32),
                      np.full(m, (s_isn + 1) & 0xFFFFFFFF, np.uint32), np.full(m, ACK | PSH, np.uint8),
                      starts, lens, data)
    acks = np.nonzero(np.arange(m) % ack_every == ack_every - 1)[0]
    k = len(acks)
    ack_pk = Packets(ts[acks] + 5_000, np.full(k, SERVER_IP, np.uint32), np.full(k, c_ip, np.uint32),
                     np.full(k, SERVER_PORT, np.uint16), np.full(k, c_port, np.uint16),
                     np.full(k, (s_isn + 1) & 0xFFFFFFFF, np.uint32),
                     ((c_isn + 1 + starts[acks] + lens[acks]) & 0xFFFFFFFF).astype(np.uint32),
                     np.full(k, ACK, np.uint8), np.zeros(k, np.int64), np.zeros(k, np.int64), data[:1])
    rest = _concat([data_pk, ack_pk])
    rest = _take(rest, np.argsort(rest.ts, kind="stable"))
    return Made(Path(path), _one([first, rest], Path(path)), {"requests": n, "stream_bytes": len(stream)})


def keepalive_marathon(path: Path, n: int, gap_ns: int = 100_000, block: int = 100_000) -> Made:
    """One keep-alive connection: ``n`` GETs each answered before the next is sent (request ``i`` asks for
    ``/i``, padded to one width), one segment each way per exchange (the next request ACKs the response),
    and the capture ends with the connection open. Written ``block`` exchanges at a time."""
    return Made(Path(path), _one(marathon_packets(0, n, gap_ns, T0_NS, block), Path(path)), {"requests": n})


def keepalive_crowd(path: Path, connections: int, n: int, gap_ns: int = 100_000, block: int = 20_000) -> Made:
    """``connections`` keep-alive connections, each a ``keepalive_marathon`` of ``n`` exchanges, side by
    side (a load test: connection ``j`` starts ``j * gap_ns / (2 * connections)`` after the first), all open
    when the capture ends. Written ``block`` exchanges of every connection at a time."""
    def merged() -> Iterator[Packets]:
        parts = [marathon_packets(j, n, gap_ns, T0_NS + j * gap_ns // (2 * connections), block)
                 for j in range(connections)]
        for step in zip(*parts, strict=True):  # the same exchanges of every connection: one time range
            pk = _concat(step)
            yield _take(pk, np.argsort(pk.ts, kind="stable"))

    return Made(Path(path), _one(merged(), Path(path)), {"connections": connections, "requests": connections * n})


def marathon_packets(index: int, n: int, gap_ns: int, t0_ns: int, block: int) -> Iterator[Packets]:
    """The packets of ``keepalive_marathon``'s connection from client number ``index``, starting at
    ``t0_ns``: its handshake, then ``block`` exchanges at a time (the handshake with the first block)."""
    width = len(str(max(n - 1, 0)))
    q, r = len(_marathon_request(0, width)), len(RESPONSE)
    setup = [Pkt(True, SYN, 0, None, b"", 0), Pkt(False, SYN | ACK, 0, 1, b"", 100_000),
             Pkt(True, ACK, 1, 1, b"", 200_000)]
    first = _single(setup, index, t0_ns)
    c_ip, c_port = int(first.src[0]), int(first.sport[0])
    c_isn, s_isn = int(first.seq[0]), int(first.seq[1])
    t0 = t0_ns + 300_000
    handshake: Packets | None = first
    for a in range(0, n, block):
        i = np.arange(a, min(a + block, n), dtype=np.int64)
        m = len(i)
        requests = np.frombuffer(b"".join(_marathon_request(k, width) for k in i.tolist()), dtype=np.uint8)
        data = np.concatenate([requests, np.frombuffer(RESPONSE, dtype=np.uint8)])
        pk = _turns(t0 + i * gap_ns, gap_ns // 2, c_ip, c_port, c_isn + 1 + i * q, np.full(m, q),
                    s_isn + 1 + i * r, np.full(m, r), (i - a) * q, np.full(m, len(requests)), data)
        if handshake is not None:
            pk, handshake = _concat([handshake, pk]), None
        yield pk
    if handshake is not None:  # no exchange
        yield handshake


def h2_marathon(path: Path, n: int, per_packet: int = 1, gap_ns: int = 100_000, block: int = 50_000) -> Made:
    """One HTTP/2 connection (prior knowledge, h2c on port 80) carrying ``n`` streams: GET with END_STREAM,
    answered by HEADERS (200) and a DATA frame of 2 bytes with END_STREAM. ``per_packet`` streams per
    packet each way (1: one after the other, as a browser on a quiet page; more: an h2load-style client
    keeping that many streams open), still open when the capture ends. The header blocks use no dynamic
    table (literals never indexed, static entries), so every stream's frames are the same bytes but for the
    stream id."""
    from hpack import Encoder, NeverIndexedHeaderTuple
    from hyperframe.frame import DataFrame, HeadersFrame, SettingsFrame

    enc = Encoder()
    request = enc.encode([NeverIndexedHeaderTuple(k, v) for k, v in (
        (":method", "GET"), (":scheme", "http"), (":path", "/x"), (":authority", "hostile.test"))])
    response = enc.encode([NeverIndexedHeaderTuple(k, v) for k, v in ((":status", "200"), ("content-length", "2"))])
    client_frame = np.frombuffer(HeadersFrame(1, request, flags=["END_HEADERS", "END_STREAM"]).serialize(), np.uint8)
    server_frames = np.frombuffer(HeadersFrame(1, response, flags=["END_HEADERS"]).serialize()
                                  + DataFrame(1, b"ok", flags=["END_STREAM"]).serialize(), np.uint8)
    server_sid_at = (5, 9 + len(response) + 5)  # the stream id of each of the server's two frames
    preface = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize())
    server_hello = SettingsFrame(0).serialize() + SettingsFrame(0, flags=["ACK"]).serialize()
    client_ack = SettingsFrame(0, flags=["ACK"]).serialize()
    rounds = -(-n // per_packet)
    setup = [Pkt(True, SYN, 0, None, b"", 0), Pkt(False, SYN | ACK, 0, 1, b"", 100_000),
             Pkt(True, ACK, 1, 1, b"", 200_000), Pkt(True, ACK | PSH, 1, 1, preface, 250_000),
             Pkt(False, ACK | PSH, 1, 1 + len(preface), server_hello, 300_000),
             Pkt(True, ACK | PSH, 1 + len(preface), 1 + len(server_hello), client_ack, 350_000)]
    first = _single(setup, 0, T0_NS)
    c_ip, c_port = int(first.src[0]), int(first.sport[0])
    c_isn, s_isn = int(first.seq[0]) + len(preface) + len(client_ack), int(first.seq[1]) + len(server_hello)
    t0 = T0_NS + 400_000

    def frames(template: npt.NDArray[np.uint8], sid_at: Sequence[int], sids: npt.NDArray[np.int64]
               ) -> npt.NDArray[np.uint8]:
        out = np.tile(template, (len(sids), 1))
        sid_bytes = sids.astype(">u4").view(np.uint8).reshape(-1, 4)
        for at in sid_at:
            out[:, at:at + 4] = sid_bytes
        return out.ravel()

    def blocks() -> Iterator[Packets]:
        yield first
        for a in range(0, rounds, block):
            i = np.arange(a, min(a + block, rounds), dtype=np.int64)
            m = len(i)
            # round i carries streams i * per_packet .. (the last round may carry fewer)
            stream = np.arange(i[0] * per_packet, min((i[-1] + 1) * per_packet, n), dtype=np.int64)
            per_round = np.bincount(stream // per_packet - i[0], minlength=m)
            sids = 2 * stream + 1
            q = per_round * len(client_frame)
            r = per_round * len(server_frames)
            requests = frames(client_frame, (5,), sids)
            responses = frames(server_frames, server_sid_at, sids)
            data = np.concatenate([requests, responses])
            q_before = np.concatenate([[0], np.cumsum(q)[:-1]])
            r_before = np.concatenate([[0], np.cumsum(r)[:-1]])
            q_sent = (i[0] * per_packet) * len(client_frame) + q_before  # client stream offset of round i
            r_sent = (i[0] * per_packet) * len(server_frames) + r_before
            yield _turns(t0 + i * gap_ns, gap_ns // 2, c_ip, c_port, c_isn + 1 + q_sent, q, s_isn + 1 + r_sent, r,
                         q_before, len(requests) + r_before, data)

    return Made(Path(path), _one(blocks(), Path(path)), {"streams": n})


def _turns(t_ns: npt.NDArray[np.int64], answer_ns: int, c_ip: int, c_port: int, c_seq: npt.NDArray[np.int64],
           c_len: npt.NDArray[np.int64], s_seq: npt.NDArray[np.int64], s_len: npt.NDArray[np.int64],
           c_off: npt.NDArray[np.int64], s_off: npt.NDArray[np.int64], data: npt.NDArray[np.uint8]) -> Packets:
    """One connection's exchanges, one packet each way: the client's at ``t_ns`` (``c_len`` bytes from
    sequence number ``c_seq``, ``data[c_off:]``), the server's ``answer_ns`` later; each acknowledges all the
    other side sent before it."""
    m = len(t_ns)
    ts = np.empty(2 * m, dtype=np.int64)
    ts[0::2], ts[1::2] = t_ns, t_ns + answer_ns
    client = np.arange(2 * m) % 2 == 0
    seq, ack, poff, plen = (np.empty(2 * m, dtype=np.int64) for _ in range(4))
    seq[0::2], ack[0::2], poff[0::2], plen[0::2] = c_seq, s_seq, c_off, c_len
    seq[1::2], ack[1::2], poff[1::2], plen[1::2] = s_seq, c_seq + c_len, s_off, s_len
    return Packets(ts, np.where(client, c_ip, SERVER_IP).astype(np.uint32),
                   np.where(client, SERVER_IP, c_ip).astype(np.uint32),
                   np.where(client, c_port, SERVER_PORT).astype(np.uint16),
                   np.where(client, SERVER_PORT, c_port).astype(np.uint16),
                   (seq & 0xFFFFFFFF).astype(np.uint32), (ack & 0xFFFFFFFF).astype(np.uint32),
                   np.full(2 * m, ACK | PSH, np.uint8), poff, plen, data)


def _marathon_request(i: int, width: int) -> bytes:
    return f"GET /{i:0{width}d} HTTP/1.1\r\nHost: hostile.test\r\n\r\n".encode()


CASES = {
    "syn_flood": syn_flood,
    "tiny_connections": tiny_connections,
    "many_clients": many_clients,
    "huge_header": huge_header,
    "endless_chunked": endless_chunked,
    "overlap_conflict": overlap_conflict,
    "absurd_content_length": absurd_content_length,
    "pipelined_flood": pipelined_flood,
    "keepalive_marathon": keepalive_marathon,
    "keepalive_crowd": keepalive_crowd,
    "h2_marathon": h2_marathon,
}
