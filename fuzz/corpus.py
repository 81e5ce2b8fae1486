"""Seed inputs per target, built from the committed captures (captures/*.pcap*) and real protocol bytes.

Seeds are computed (deterministically) rather than stored: whole captures and slices of them (first packets,
pcapng blocks, gzip of a slice) for ``pcap``; their frames (and the same packets under other link types)
for ``decode``; their TCP connections in the ``tcp`` packet format; their reassembled-in-order payloads as
stream scripts for ``http1``/``tls``/``http2``; their TLS hellos for ``tls_hello``; RFC 9001 appendix A
Initial packets (and synthetic ones) for ``quic``. Saved regression inputs (tests/fuzz_regressions) join
the seeds of their target.
"""

from __future__ import annotations

import gzip
import io
import struct
from collections import defaultdict
from functools import cache
from pathlib import Path

import dpkt

from fuzz.targets import ROOT, TCP_HEADER, encode_quic, encode_stream

CAPTURES = ROOT / "captures"
REGRESSIONS = ROOT / "tests" / "fuzz_regressions"

Packet = tuple[int, bytes]  # (ts_ns, Ethernet frame)


def _raw(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


@cache
def capture_files() -> tuple[Path, ...]:
    return tuple(sorted(p for p in CAPTURES.iterdir() if ".pcap" in p.name))


@cache
def packets(path: Path) -> tuple[Packet, ...]:
    raw = _raw(path)
    f = io.BytesIO(raw)
    reader = dpkt.pcapng.Reader(f) if raw[:4] == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)
    return tuple((int(ts * 1e9), bytes(buf)) for ts, buf in reader)


def _pcap_file(pkts: list[Packet] | tuple[Packet, ...], linktype: int = 1) -> bytes:
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype))
    for ts, frame in pkts:
        out += struct.pack("<IIII", ts // 10**9, ts % 10**9 // 1000, len(frame), len(frame)) + frame
    return bytes(out)


def _pcapng_blocks(raw: bytes, count: int) -> bytes:
    """The first ``count`` blocks of a (little-endian) pcapng file."""
    pos = 0
    for _ in range(count):
        if pos + 12 > len(raw):
            break
        pos += struct.unpack_from("<I", raw, pos + 4)[0]
    return raw[:pos]


def _tcp(frame: bytes) -> tuple[tuple[bytes, int, bytes, int], dpkt.tcp.TCP] | None:
    try:
        eth = dpkt.ethernet.Ethernet(frame)
    except (dpkt.UnpackError, dpkt.NeedData):
        return None
    ip = eth.data
    if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) or not isinstance(ip.data, dpkt.tcp.TCP):
        return None
    tcp = ip.data
    return (bytes(ip.src), tcp.sport, bytes(ip.dst), tcp.dport), tcp


def connections(path: Path) -> list[list[tuple[int, int, dpkt.tcp.TCP, int]]]:
    """The TCP connections of a capture: per connection, (direction, ts_ns, tcp, is_ipv6) in capture order;
    direction 0 is the sender of the first packet (the SYN when there is one)."""
    conns: dict[tuple[bytes, int, bytes, int], list[tuple[int, int, dpkt.tcp.TCP, int]]] = defaultdict(list)
    for ts, frame in packets(path):
        got = _tcp(frame)
        if got is None:
            continue
        key, tcp = got
        rev = (key[2], key[3], key[0], key[1])
        if rev in conns:
            conns[rev].append((1, ts, tcp, len(key[0]) == 16))
        else:
            conns[key].append((0, ts, tcp, len(key[0]) == 16))
    return list(conns.values())


def streams(path: Path) -> list[list[tuple[int, bytes]]]:
    """Per connection, its payloads as (direction, bytes) in capture order, retransmissions dropped."""
    out = []
    for conn in connections(path):
        nxt: list[int | None] = [None, None]
        parts: list[tuple[int, bytes]] = []
        for d, _ts, tcp, _v6 in conn:
            if tcp.flags & dpkt.tcp.TH_SYN:
                nxt[d] = (tcp.seq + 1) % (1 << 32)
                continue
            if not tcp.data:
                continue
            if nxt[d] is None:
                nxt[d] = tcp.seq
            if tcp.seq != nxt[d]:
                continue
            nxt[d] = (tcp.seq + len(tcp.data)) % (1 << 32)
            if parts and parts[-1][0] == d and len(parts[-1][1]) < 4000:
                parts[-1] = (d, parts[-1][1] + bytes(tcp.data))
            else:
                parts.append((d, bytes(tcp.data)))
        if parts:
            out.append(parts)
    return out


# ------------------------------------------------------------------------------------------- per target


def seeds_pcap() -> list[bytes]:
    out = []
    for path in capture_files():
        raw = _raw(path)
        if raw[:4] == b"\x0a\x0d\x0d\x0a":
            out += [_pcapng_blocks(raw, 6), _pcapng_blocks(raw, 30)]
        else:
            pk = packets(path)
            out += [_pcap_file(pk[:12]), _pcap_file(pk[:60])]
        if len(path.read_bytes()) <= 64 << 10:
            out.append(path.read_bytes())
    pk = packets(CAPTURES / "pipelining.pcap")[:20]
    out.append(gzip.compress(_pcap_file(pk), mtime=0))
    ns = bytearray(_pcap_file(pk[:10]))
    ns[0:4] = struct.pack("<I", 0xA1B23C4D)  # nanosecond magic (the fractions are then off: fine)
    out.append(bytes(ns))
    be = bytearray(struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for ts, frame in pk[:10]:
        be += struct.pack(">IIII", ts // 10**9, ts % 10**9 // 1000, len(frame), len(frame)) + frame
    out.append(bytes(be))
    return out


def _decode_seed(linktype: int, frames: list[bytes]) -> bytes:
    out = bytearray(struct.pack(">H", linktype))
    for f in frames:
        out += struct.pack(">HB", len(f), 0) + f
    return bytes(out)


def seeds_decode() -> list[bytes]:
    out = []
    for path in capture_files():
        frames = [f for _, f in packets(path)[:16]]
        out.append(_decode_seed(1, frames))
    frames = [f for _, f in packets(CAPTURES / "pipelining.pcap")[:8]]
    frames6 = [f for _, f in packets(CAPTURES / "ipv6-pcapng.pcapng")[:8]]
    ips = [f[14:] for f in frames]
    ip6s = [f[14:] for f in frames6]
    out.append(_decode_seed(101, ips + ip6s))  # raw IP
    out.append(_decode_seed(228, ips))  # raw IPv4
    out.append(_decode_seed(229, ip6s))  # raw IPv6
    out.append(_decode_seed(0, [struct.pack("<I", 2) + p for p in ips] + [struct.pack("<I", 30) + p for p in ip6s]))
    out.append(_decode_seed(108, [struct.pack(">I", 2) + p for p in ips]))  # LOOP
    out.append(_decode_seed(113, [struct.pack(">HHH8sH", 0, 1, 6, bytes(8), 0x0800) + p for p in ips]))  # SLL
    out.append(_decode_seed(276, [struct.pack(">HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, bytes(8)) + p for p in ips]))
    out.append(_decode_seed(9, [b"\xff\x03\x00\x21" + p for p in ips]))  # PPP
    out.append(_decode_seed(1, [f[:12] + b"\x81\x00\x00\x05" + f[12:] for f in frames]))  # 802.1Q
    out.append(_decode_seed(1, [f[:12] + b"\x88\xa8\x00\x05\x81\x00\x00\x06" + f[12:] for f in frames]))  # QinQ
    out.append(_decode_seed(1, [f[:12] + b"\x88\x47\x00\x01\x01\x40" + f[14:] for f in frames]))  # MPLS
    vx = [frames[0][:14] + struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + 8 + 8 + len(f), 0, 0, 64, 17, 0,
                                         bytes(4), bytes(4))
          + struct.pack(">HHHH", 4789, 4789, 8 + 8 + len(f), 0) + b"\x08\x00\x00\x00\x00\x00\x01\x00" + f
          for f in frames]
    out.append(_decode_seed(1, vx))  # VXLAN
    nflog = [b"\x02\x00\x00\x00" + struct.pack("<HH", 4 + len(p), 9) + p + bytes(-len(p) % 4) for p in ips]
    out.append(_decode_seed(239, nflog))
    radiotap = [struct.pack("<BBHI", 0, 0, 8, 0) + b"\x08\x02" + bytes(22) + b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + p
                for p in ips]
    out.append(_decode_seed(127, radiotap))
    return out


def _tcp_record(d: int, tcp: dpkt.tcp.TCP, isn: tuple[int, int] | None, ipv6: int, dt_us: int) -> bytes:
    control = d | (2 if ipv6 else 0)
    if isn is None:
        control |= 4
        seq, ack = tcp.seq, tcp.ack
    else:
        seq = (tcp.seq - isn[d]) % (1 << 32)
        ack = (tcp.ack - isn[1 - d]) % (1 << 32) if tcp.flags & dpkt.tcp.TH_ACK else 0
    seq = seq - (1 << 32) if seq >= 1 << 31 else seq
    ack = ack - (1 << 32) if ack >= 1 << 31 else ack
    opts = bytes(tcp.opts)
    opt = 1 if opts[:1] == b"\x02" else 2 if b"\x08\x0a" in opts else 0
    unit = 0
    while dt_us > 255 and unit < 3:
        dt_us //= 1000
        unit += 1
    control |= unit << 6
    payload = bytes(tcp.data)
    return TCP_HEADER.pack(control, tcp.flags & 0xFF, seq, ack, tcp.win, len(payload), min(dt_us, 255), opt) + payload


def tcp_seed(conn: list[tuple[int, int, dpkt.tcp.TCP, int]], limit: int = 40) -> bytes:
    """A connection in the ``tcp`` packet format (ISNs mapped to the harness's 1000 / 5000)."""
    isns: list[int | None] = [None, None]
    for d, _ts, tcp, _v6 in conn:
        if tcp.flags & dpkt.tcp.TH_SYN and isns[d] is None:
            isns[d] = tcp.seq
    isn = None
    if isns[0] is not None and isns[1] is not None:
        isn = ((isns[0] - 1000) % (1 << 32), (isns[1] - 5000) % (1 << 32))
    out = bytearray()
    prev = conn[0][1]
    for d, ts, tcp, v6 in conn[:limit]:
        if isn is not None:
            tcp = dpkt.tcp.TCP(bytes(tcp))
            tcp.seq = (tcp.seq - isn[d]) % (1 << 32)
            tcp.ack = (tcp.ack - isn[1 - d]) % (1 << 32)
        out += _tcp_record(d, tcp, (0, 0) if isn is not None else None, v6, (ts - prev) // 1000)
        prev = ts
    return bytes(out)


def seeds_tcp() -> list[bytes]:
    out = []
    for path in capture_files():
        conns = connections(path)
        for conn in conns[:2]:
            out.append(tcp_seed(conn))
    return out


def _stream_seeds(paths: list[str], limit: int = 3) -> list[bytes]:
    out = []
    for name in paths:
        for parts in streams(CAPTURES / name)[:limit]:
            out.append(encode_stream(parts[:30]))
    return out


def seeds_http1() -> list[bytes]:
    out = _stream_seeds(["pipelining.pcap", "keepalive-idle-timeout.pcap", "http10-and-close.pcap",
                         "close-race.pcap", "midstream.pcap"], limit=2)
    out += _stream_seeds(["h2c.pcap"], limit=1)
    out.append(encode_stream([
        (0, b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"
            b"Connection: Upgrade, HTTP2-Settings\r\n\r\n"),
        (1, b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
            b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
        (0, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
    ]))
    out.append(encode_stream([
        (0, b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n"),
        (1, b"HTTP/1.1 200 Connection established\r\n\r\n"),
        (0, b"GET /inside HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        (1, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n"),
    ]))
    out.append(encode_stream([
        (0, b"POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"),
        (1, b"HTTP/1.1 100 Continue\r\n\r\n"), (0, b"data"),
        (1, b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.0 200 OK\r\n\r\nbody until close"),
    ]))
    out.append(encode_stream([(0, b"GET /old\r\n"), (1, b"<html>0.9</html>")]))
    return out


def seeds_tls() -> list[bytes]:
    return _stream_seeds(["tls.pcap", "h2-tls.pcap"], limit=3)


def seeds_http2() -> list[bytes]:
    return [
        *_stream_seeds(["h2c.pcap"], limit=4),
        encode_stream([(0, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x06\x04\x00\x00\x00\x00\x00"
                           b"\x00\x03\x00\x00\x00\x64"
                           b"\x00\x00\x05\x01\x05\x00\x00\x00\x01\x82\x86\x84\x41\x80"),
                       (1, b"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x01\x01\x04\x00\x00\x00\x01\x88"
                           b"\x00\x00\x02\x00\x01\x00\x00\x00\x01hi"
                           b"\x00\x00\x08\x07\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00")]),
    ]


def seeds_tls_hello() -> list[bytes]:
    out = []
    for name in ("tls.pcap", "h2-tls.pcap"):
        for parts in streams(CAPTURES / name)[:3]:
            for d, payload in parts[:2]:
                if payload[:1] == b"\x16" and len(payload) > 9:
                    n = int.from_bytes(payload[6:9], "big")
                    out.append(bytes([0 if d == 0 else 1]) + payload[9: 9 + n])
    return out


# RFC 9001 appendix A.2 / A.3: the CRYPTO frames of the client's and the server's first Initial
A2_DCID = bytes.fromhex("8394c8f03e515708")
A2_CRYPTO = bytes.fromhex(
    "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868"
    "04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578"
    "616d706c652e636f6dff01000100000a00080006001d00170018001000070005"
    "04616c706e000500050100000000003300260024001d00209370b2c9caa47fba"
    "baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400"
    "0d0010000e0403050306030203080408050806002d00020101001c0002400100"
    "3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000"
    "75300901100f088394c8f03e51570806048000ffff"
)
A3_PLAINTEXT = bytes.fromhex(
    "02000000000600405a020000560303eefce7f7b37ba1d1632e96677825ddf739"
    "88cfc79825df566dc5430b9a045a1200130100002e00330024001d00209d3c94"
    "0d89690b84d08a60993c144eca684d1081287c834d5311bcf32bb9da1a002b00"
    "020304"
)


def _sealed(ptype: int, version_index: int, dcid: bytes, scid: bytes, pn: int, plaintext: bytes,
            pn_len: int = 4) -> bytes:
    sel = ptype | version_index << 2 | (pn_len - 1) << 5
    return bytes([sel, len(dcid)]) + dcid + bytes([len(scid)]) + scid + bytes([pn]) + plaintext


def seeds_quic() -> list[bytes]:
    scid = bytes.fromhex("f067a5502a4262b5")
    client = _sealed(0, 0, A2_DCID, b"", 2, A2_CRYPTO + bytes(40))
    server = _sealed(0, 0, b"", scid, 1, A3_PLAINTEXT)
    split1 = _sealed(0, 0, A2_DCID, b"", 2, b"\x06\x00\x40\x60" + A2_CRYPTO[4:4 + 0x60])  # CRYPTO in two
    split2 = _sealed(0, 0, A2_DCID, b"", 3, b"\x06\x40\x60\x40\x91" + A2_CRYPTO[4 + 0x60:] + b"\x01\x00")
    handshake = _sealed(2, 0, scid, b"", 0, bytes(30))
    zero_rtt = _sealed(1, 0, A2_DCID, b"", 4, bytes(30))
    short = b"\x40" + A2_DCID + bytes(30)
    v2 = _sealed(0, 1, A2_DCID, b"", 2, A2_CRYPTO + bytes(40))
    d29 = _sealed(0, 2, A2_DCID, b"\x01\x02", 0, A2_CRYPTO)
    retry = b"\xf0\x00\x00\x00\x01\x00\x08" + scid + b"token" + bytes(16)
    vneg = b"\x80\x00\x00\x00\x00\x08" + A2_DCID + b"\x00\x00\x00\x00\x01\xff\x00\x00\x1d"
    close = _sealed(0, 0, A2_DCID, b"", 5, b"\x1c\x0a\x00\x03bye" + bytes(20))
    return [
        encode_quic([(0, False, client), (1, False, server), (1, False, handshake), (0, True, short)]),
        encode_quic([(0, False, split1), (0, False, split2), (0, False, zero_rtt), (1, False, server)]),
        encode_quic([(0, False, v2), (1, True, retry), (0, False, v2)]),
        encode_quic([(0, False, d29), (1, True, vneg), (0, False, close)]),
    ]


SEEDS = {"pcap": seeds_pcap, "decode": seeds_decode, "tcp": seeds_tcp, "http1": seeds_http1, "tls": seeds_tls,
         "tls_hello": seeds_tls_hello, "http2": seeds_http2, "quic": seeds_quic}


def regressions(target: str) -> list[Path]:
    return sorted(REGRESSIONS.glob(f"{target}-*.bin")) if REGRESSIONS.is_dir() else []


def seeds(target: str) -> list[bytes]:
    """The seed inputs of ``target`` (deterministic order), saved regression inputs included."""
    out = [s for s in SEEDS[target]() if s]
    out += [p.read_bytes() for p in regressions(target)]
    return out


# ------------------------------------------------------------------------------------------ dictionaries

# Latin-1 bytes that str.isdigit() / isdecimal-like checks may take for digits once decoded (superscripts
# two, three, one; one quarter, one half) but int() refuses: a Content-Length or :status made of them raised
_NOT_ASCII_DIGITS = [b"\xb2", b"\xb3", b"\xb9", b"\xbc", b"\xbd"]
_HTTP_TOKENS = [b"GET ", b"POST ", b"HEAD ", b"CONNECT ", b"OPTIONS * ", b" HTTP/1.1\r\n", b" HTTP/1.0\r\n",
                b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 100 Continue\r\n", b"HTTP/1.1 101 Switching Protocols\r\n",
                b"HTTP/1.1 204 \r\n", b"HTTP/1.1 304 \r\n", b"Content-Length: ", b"Transfer-Encoding: chunked\r\n",
                b"Connection: close\r\n", b"Connection: keep-alive\r\n", b"Connection: Upgrade\r\n",
                b"Upgrade: h2c\r\n", b"Expect: 100-continue\r\n", b"Keep-Alive: timeout=5, max=100\r\n",
                b"\r\n\r\n", b"\r\n", b"0\r\n\r\n", b"ffffffff\r\n", b";ext=1", b"-1", b"99999999999999999999",
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\x16\x03\x01", b"\x16\x03\x03",
                *_NOT_ASCII_DIGITS, b"Content-Length: \xb2\r\n"]
_TLS_TOKENS = [b"\x16\x03\x01", b"\x16\x03\x03", b"\x17\x03\x03", b"\x14\x03\x03\x00\x01\x01", b"\x15\x03\x03\x00\x02",
               b"\x01\x00\x00", b"\x02\x00\x00", b"\x00\x00", b"\x00\x10", b"\x00\x2b\x00\x03\x02\x03\x04",
               b"\x00\x29", b"\x00\x2a\x00\x00", b"\x13\x01", b"\x13\x03", b"\xc0\x2f", b"\x02h2", b"\x08http/1.1",
               bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"),
               b"\x80\x2e\x01\x03\x01"]
_H2_TOKENS = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
              b"\x00\x00\x00\x04\x01\x00\x00\x00\x00", b"\x00\x00\x08\x06\x00\x00\x00\x00\x00",
              b"\x00\x00\x08\x07\x00\x00\x00\x00\x00", b"\x00\x00\x04\x03\x00\x00\x00\x00\x01",
              b"\x00\x00\x04\x08\x00\x00\x00\x00\x00", b"\x01\x04\x00\x00\x00\x01", b"\x00\x05\x00\x00\x00\x03",
              b"\x00\x00\x00\x09\x04\x00\x00\x00\x01", b"\x05\x00\x00\x00\x05", b"\x82\x84\x86\x87\x88",
              b"\x3f\xe1\x1f", b"\x20", b"\x41\x80", b"\x7f\xff\xff\xff\x0f", b"\xff\xff\xff",
              b"\x08\x032\xb20", *_NOT_ASCII_DIGITS]  # :status (static index 8) as a literal "2\xb20"
_PCAP_TOKENS = [b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\x0a\x0d\x0d\x0a",
                b"\x4d\x3c\x2b\x1a", b"\x01\x00\x00\x00", b"\x06\x00\x00\x00", b"\x03\x00\x00\x00",
                b"\x05\x00\x00\x00", b"\x0a\x00\x00\x00", b"\x1f\x8b\x08", b"\x08\x00\x45\x00", b"\x86\xdd\x60",
                b"\x81\x00", b"\x88\xa8", b"\x88\x47", b"\x12\xb5", b"\x00\x50", b"\x01\xbb"]
_QUIC_TOKENS = [b"\x06\x00", b"\x06\x40\x60", b"\x02\x00\x00\x00\x00", b"\x1c", b"\x1d", b"\x01", b"\x00" * 8,
                b"\x00\x00\x00\x01", b"\x6b\x33\x43\xcf", b"\xff\x00\x00\x1d", b"\x44\x9e", b"\x7f\xff",
                b"\x01\x00\x00", b"\x02\x00\x00", b"\x00\x10", b"\x00\x39"]

_TCP_TOKENS = [b"\x02", b"\x12", b"\x10", b"\x18", b"\x11", b"\x04", b"\x14", b"\x19", b"\xff\xff\xff\xff",
               b"\x80\x00\x00\x00"]

DICTIONARY = {"pcap": _PCAP_TOKENS + _HTTP_TOKENS[:8], "decode": _PCAP_TOKENS, "tcp": _HTTP_TOKENS + _TCP_TOKENS,
    "http1": _HTTP_TOKENS, "tls": _TLS_TOKENS, "tls_hello": _TLS_TOKENS, "http2": _H2_TOKENS, "quic": _QUIC_TOKENS}
