"""Fuzz targets: ``fuzz_<layer>(data: bytes) -> None``, one per layer of the analyzer.

Every target turns arbitrary bytes into the input of one entry point and drives it to its results (rows and
anomalies), so that the code run at the end of a connection or capture is fuzzed too. A target raises when
the code under test does: an exception escaping, or an ``*_internal_error`` anomaly (``InternalError``), or
(``pcap``) packets that are not accounted for. Expected refusals (``CaptureFormatError`` for a file that is
not a capture at all) are not findings.

Byte formats (all tolerate any input; the seeds in ``fuzz.corpus`` are written in them):

- ``pcap``: a capture file as is (pcap, pcapng, gzip).
- ``decode``: ``[linktype u16][record]*`` with record = ``[caplen u16][wirelen-caplen u8][bytes]``: one
  ``PacketBatch`` for ``decode_batch``.
- ``tcp``: a sequence of 16-byte packet headers each followed by its payload (see ``tcp_packets``): one
  TCP conversation (plus odd packets) fed to a ``pipeline.Session`` as a packet batch.
- ``http1`` / ``tls`` / ``http2``: a *stream script* (see ``stream_script``): the two directions of one TCP
  connection as reassembled chunks, with gaps, multi-piece chunks and FINs; fed to ``ConnectionHandler``
  (HTTP/1 with the protocol switch), ``TlsConnection`` (with the committed key logs, so the seeds decrypt)
  and ``Http2Connection``.
- ``quic``: a datagram script (see ``quic_datagrams``): raw datagrams, or long-header packets the harness
  seals with the QUIC Initial keys, fed to a ``QuicObserver``.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CLIENT, SERVER = 0, 1
T0_NS = 1_700_000_000_000_000_000


class InternalError(Exception):
    """An ``*_internal_error`` anomaly: a safety net caught an exception inside the analyzer."""


class Unaccounted(AssertionError):
    """``packets_read != packets_analyzed + sum(packets_skipped)`` (DESIGN.md §2: every packet accounted for)."""


def _check_anomalies(anomalies: list[tuple[int, str, str]]) -> None:
    for _ts, name, detail in anomalies:
        if not isinstance(name, str) or not isinstance(detail, str):
            raise TypeError(f"anomaly with a non-str name or detail: {name!r} {detail!r}")
        if name.endswith("internal_error"):
            raise InternalError(f"{name}: {detail}")


# ------------------------------------------------------------------------------------------------ keys

_KEYLOG = None


def keylog() -> object:
    """The committed key logs (captures/*.keylog), so that the TLS seeds decrypt."""
    global _KEYLOG
    if _KEYLOG is None:
        from analyzer.tls.keylog import KeyLog

        text = "\n".join(p.read_text() for p in sorted((ROOT / "captures").glob("*.keylog")))
        _KEYLOG = KeyLog.parse(text)
    return _KEYLOG


# ------------------------------------------------------------------------------------------------ pcap

_TMPDIR: str | None = None


def _tmp_path() -> str:
    global _TMPDIR
    if _TMPDIR is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        _TMPDIR = tempfile.mkdtemp(prefix="analyzer-fuzz-", dir=base)
    return os.path.join(_TMPDIR, f"input-{os.getpid()}.bin")


def _check_analysis(a: object) -> None:
    s = a.summary  # type: ignore[attr-defined]
    skipped = sum(s["packets_skipped"].values())
    if s["packets_read"] != s["packets_analyzed"] + skipped:
        raise Unaccounted(f"packets_read {s['packets_read']} != analyzed {s['packets_analyzed']} + skipped {skipped}")
    an = a.anomalies  # type: ignore[attr-defined]
    if len(an):
        _check_anomalies(list(zip(an["ts"], an["name"], an["detail"], strict=True)))


def _with_metrics(data: bytes, metrics: bool | None) -> bool:
    """The summary metrics (``analyzer.metrics``) cost ~10 times the rest of a small capture's analysis: the
    fuzz loop computes them for one input in 8 (chosen by the input's CRC, so a replay does the same);
    regression replays pass ``metrics=True``."""
    return metrics if metrics is not None else zlib.crc32(data) % 8 == 0


def fuzz_pcap(data: bytes, metrics: bool | None = None) -> None:
    """A capture file: reader (pcap/pcapng/gzip) → decode → TCP/UDP → protocols → tables (and metrics)."""
    import analyzer
    from analyzer.errors import CaptureFormatError

    path = _tmp_path()
    with open(path, "wb") as f:
        f.write(data)
    try:
        a = analyzer.analyze(path, with_metrics=_with_metrics(data, metrics))
    except CaptureFormatError:
        return
    _check_analysis(a)


# ---------------------------------------------------------------------------------------------- decode


def packet_batch(frames: list[tuple[int, bytes, int, int]]) -> object:
    """A ``PacketBatch`` of ``(linktype, bytes, wirelen, ts_ns)`` frames."""
    from analyzer.capture.batch import PacketBatch

    n = len(frames)
    buf = np.frombuffer(b"".join(f[1] for f in frames) or b"\0", dtype=np.uint8).copy()
    caplen = np.array([len(f[1]) for f in frames], dtype=np.int32)
    offset = np.zeros(n, dtype=np.int64)
    if n:
        offset[1:] = np.cumsum(caplen[:-1], dtype=np.int64)
    return PacketBatch(buf, offset, caplen, np.array([f[2] for f in frames], dtype=np.int32),
                       np.array([f[3] for f in frames], dtype=np.int64),
                       np.array([f[0] for f in frames], dtype=np.uint16), np.arange(1, n + 1, dtype=np.int64))


def decode_frames(data: bytes) -> list[tuple[int, bytes, int, int]]:
    if len(data) < 2:
        return []
    linktype = struct.unpack_from(">H", data)[0]
    pos = 2
    frames: list[tuple[int, bytes, int, int]] = []
    while pos + 3 <= len(data) and len(frames) < 512:
        caplen, extra = struct.unpack_from(">HB", data, pos)
        pos += 3
        body = data[pos: pos + caplen]
        pos += caplen
        lt = linktype if not extra & 0x80 else (linktype + extra) & 0xFFFF  # a few packets of other types
        frames.append((lt, body, len(body) + (extra & 0x7F), T0_NS + len(frames) * 1000))
    return frames


def fuzz_decode(data: bytes) -> None:
    """Link-layer frames of one (or a few) link types → ``decode_batch`` (vectorized header decoding)."""
    from analyzer.flows.decode import decode_batch

    frames = decode_frames(data)
    if not frames:
        return
    batch = packet_batch(frames)
    decoded, skips = decode_batch(batch)  # type: ignore[arg-type]
    if len(decoded) + sum(skips.values()) != len(frames):
        raise Unaccounted(f"decode_batch: {len(decoded)} decoded + {sum(skips.values())} skipped != {len(frames)}")


# ------------------------------------------------------------------------------------------------- tcp

TCP_HEADER = struct.Struct(">BBiiHHBB")  # 16 bytes
_MACS = (b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02")
_IP4 = (bytes([10, 1, 2, 3]), bytes([192, 0, 2, 80]))
_IP6 = (bytes.fromhex("fd000001000000000000000000000010"), bytes.fromhex("fd000002000000000000000000000080"))
_OPTIONS = (
    b"",
    b"\x02\x04\x05\xb4\x04\x02\x08\x0a\x00\x00\x00\x01\x00\x00\x00\x00\x01\x03\x03\x07",  # SYN options
    b"\x01\x01\x08\x0a\x00\x00\x10\x00\x00\x00\x0f\x00",  # timestamps
    b"\x01\x01\x05\x0a\x00\x00\x10\x00\x00\x00\x20\x00",  # one SACK block (relative to nothing: odd on purpose)
    b"\x05\x12" + bytes(16),  # SACK option with 2 zero blocks
    b"\x08\x0a\x00",  # cut timestamp option
    b"\x03\x00\x00\x00",  # zero-length option
    b"\x02\x04\xff\xff\x00\x00\x00\x00",
)
M32 = 1 << 32


def _csum_free_ipv4(src: bytes, dst: bytes, proto: int, l4: bytes, ident: int) -> bytes:
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident & 0xFFFF, 0x4000, 64, proto, 0, src, dst) + l4


def tcp_packets(data: bytes) -> list[tuple[int, bytes, int, int]]:
    """The frames of a TCP conversation described by ``data``: a sequence of records, each a 16-byte header
    ``>BBiiHHBB`` = (control, flags, seq, ack, window, payload length, time step, options) and the payload.

    control: bit 0 direction (0 client → server), bit 1 IPv6, bit 2 seq/ack absolute (else relative to the
    ISNs 1000 / 5000), bit 3 another source port (a second connection), bit 4 payload cut by the snaplen
    (wirelen > caplen), bit 5 an IPv4 fragment / IPv6 with a hop-by-hop header, bits 6-7 time step unit
    (µs, ms, s, 1000 s). options: index into a few TCP option lists (and the data offset's top nibble bits).
    """
    frames: list[tuple[int, bytes, int, int]] = []
    pos = 0
    ts = T0_NS
    isn = (1000, 5000)
    while pos + TCP_HEADER.size <= len(data) and len(frames) < 1024:
        control, flags, seq, ack, window, length, step, opt = TCP_HEADER.unpack_from(data, pos)
        pos += TCP_HEADER.size
        payload = data[pos: pos + length]
        pos += len(payload)
        d = control & 1
        ts += step * (1000, 1_000_000, 1_000_000_000, 1_000_000_000_000)[(control >> 6) & 3]
        if not control & 4:
            seq = (isn[d] + seq) % M32
            ack = (isn[1 - d] + ack) % M32
        else:
            seq %= M32
            ack %= M32
        options = _OPTIONS[opt % len(_OPTIONS)]
        options += b"\x00" * (-len(options) % 4)
        doff = (20 + len(options)) // 4
        if opt & 0x80:  # a lying data offset
            doff = (opt >> 3) & 0xF
        ports = (49152 + (control >> 3 & 1), 80)
        sport, dport = (ports[0], ports[1]) if d == CLIENT else (ports[1], ports[0])
        tcp = struct.pack(">HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, window, 0, 0) + options + payload
        if control & 2:
            src, dst = (_IP6[0], _IP6[1]) if d == CLIENT else (_IP6[1], _IP6[0])
            if control & 0x20:  # hop-by-hop options header first
                l3 = struct.pack(">IHBB16s16s", 0x60000000, 8 + len(tcp), 0, 64, src, dst) + b"\x06\x00" + bytes(6)
            else:
                l3 = struct.pack(">IHBB16s16s", 0x60000000, len(tcp), 6, 64, src, dst)
            frame = _MACS[d] + _MACS[1 - d] + b"\x86\xdd" + l3 + tcp
        else:
            src, dst = (_IP4[0], _IP4[1]) if d == CLIENT else (_IP4[1], _IP4[0])
            ip = bytearray(_csum_free_ipv4(src, dst, 6, tcp, len(frames)))
            if control & 0x20:
                ip[6:8] = b"\x20\x05"  # more fragments, offset 40
            frame = _MACS[d] + _MACS[1 - d] + b"\x08\x00" + bytes(ip)
        wirelen = len(frame)
        if control & 0x10 and payload:
            frame = frame[: len(frame) - 1 - len(payload) // 2]
        frames.append((1, frame, wirelen, ts))
    return frames


def fuzz_tcp(data: bytes, metrics: bool | None = None) -> None:
    """A fuzzer-built TCP conversation → ``pipeline.Session``: connection tracking, reassembly, TCP analysis,
    the protocol switch and the parsers above, then the tables and metrics."""
    from analyzer.capture.batch import ReaderStats
    from analyzer.pipeline import Session

    frames = tcp_packets(data)
    session = Session()
    session.start_capture("fuzz.pcap")
    if frames:
        session.feed(packet_batch(frames))  # type: ignore[arg-type]
    stats = ReaderStats(file_format="pcap", packets_read=len(frames), file_size=len(data))
    session.end_capture(stats)
    _check_analysis(session.result(with_metrics=_with_metrics(data, metrics)))


# -------------------------------------------------------------------------------------- stream scripts


def _chunk(pieces: list[tuple[int, bytes]], ts: list[int], eof: int) -> object:
    from analyzer.flows.stream import StreamChunk

    buf = b"".join(p for _, p in pieces)
    i64 = np.int64
    starts = np.array([s for s, _ in pieces], dtype=i64)
    lens = np.array([len(p) for _, p in pieces], dtype=i64)
    offs = np.zeros(len(pieces), dtype=i64)
    if len(pieces):
        offs[1:] = np.cumsum(lens[:-1])
    t = np.array(ts, dtype=i64)
    return StreamChunk(starts, starts + lens, np.zeros(len(pieces), dtype=np.int8), offs, t, t.copy(),
                       (np.frombuffer(buf, dtype=np.uint8),), eof, False)


def stream_script(data: bytes) -> list[tuple[int, object]]:
    """``(direction, StreamChunk)`` feeds of one connection described by ``data``: records of a 3-byte
    header ``[control u8][length u16 BE]`` and ``length`` bytes (the last record takes what is left).

    control: bit 0 direction; bit 1 a gap (``1 + (control >> 4) * 61`` missing bytes) before this piece;
    bit 2 this piece joins the previous chunk of its direction (a chunk of several pieces), else it starts a
    new one; bit 3 the sender's FIN after this piece (nothing more is fed for that direction). Each record
    advances the clock by 1 µs. The chunks keep the reassembler's contract: pieces in stream order, not
    overlapping, non-empty; after the script both directions get a final empty chunk."""
    feeds: list[tuple[int, object]] = []
    offset = [0, 0]
    pending: list[list[tuple[int, bytes]]] = [[], []]
    pending_ts: list[list[int]] = [[], []]
    ended = [False, False]
    ts = T0_NS
    pos = 0

    def flush(d: int, eof: int = -1) -> None:
        if pending[d] or eof >= 0:
            feeds.append((d, _chunk(pending[d], pending_ts[d], eof)))
            pending[d], pending_ts[d] = [], []

    while pos < len(data) and len(feeds) < 4096:
        control = data[pos]
        length = int.from_bytes(data[pos + 1: pos + 3], "big")
        payload = data[pos + 3: pos + 3 + length]
        pos += 3 + length
        ts += 1000
        d = control & 1
        if ended[d]:
            continue
        if not control & 4:
            flush(d)
        if control & 2:
            offset[d] += 1 + (control >> 4) * 61
        if payload:
            pending[d].append((offset[d], payload))
            pending_ts[d].append(ts)
            offset[d] += len(payload)
        if control & 8:
            flush(d, offset[d])
            ended[d] = True
    for d in (CLIENT, SERVER):
        flush(d)
    from analyzer.flows.stream import StreamChunk

    feeds.extend((d, StreamChunk.empty(final=True)) for d in (CLIENT, SERVER))
    return feeds


def encode_stream(parts: list[tuple[int, bytes]]) -> bytes:
    """The stream script of ``(direction, bytes)`` parts (one chunk each, no gaps)."""
    out = bytearray()
    for d, payload in parts:
        for i in range(0, max(1, len(payload)), 0xFFFF):
            piece = payload[i: i + 0xFFFF]
            out += bytes([d]) + len(piece).to_bytes(2, "big") + piece
    return bytes(out)


def _run_handler(handler: object, data: bytes, server_port: int) -> None:
    for d, chunk in stream_script(data):
        handler.feed(d, chunk)  # type: ignore[attr-defined]
    sealed = handler.seal("192.0.2.80", server_port)  # type: ignore[attr-defined]
    rows, _facts = sealed.transaction_rows("192.0.2.80", server_port)
    rows.spans()
    list(rows.drain("Cfuzz"))
    _check_anomalies(sealed.anomalies())


def fuzz_http1(data: bytes) -> None:
    """One connection's streams → ``ConnectionHandler``: the HTTP/1 parser and transaction pairing, and the
    protocol switch (TLS, h2c prior knowledge, Upgrade: h2c, CONNECT tunnels)."""
    from analyzer.dispatch import ConnectionHandler

    _run_handler(ConnectionHandler(keylog()), data, 80)  # type: ignore[arg-type]


def fuzz_tls(data: bytes) -> None:
    """One connection's streams → ``TlsConnection`` with the committed key logs: record framing, hellos,
    resynchronisation, the estimate, and decryption (the seeds of captures/tls.pcap and h2-tls.pcap)."""
    from analyzer.dispatch import ConnectionHandler
    from analyzer.tls.connection import TlsConnection

    _run_handler(TlsConnection(keylog(), inner_factory=ConnectionHandler), data, 443)  # type: ignore[arg-type]


def fuzz_tls_hello(data: bytes) -> None:
    """A handshake message body → the ClientHello / ServerHello parsers (the first byte picks which)."""
    from analyzer.tls import messages

    if not data:
        return
    kind, body = data[0], data[1:]
    if kind % 4 == 0:
        messages.parse_client_hello(body)
    elif kind % 4 == 1:
        messages.parse_server_hello(body)
    elif kind % 4 == 2:
        messages.parse_server_hello(body, hrr_message=True)
    else:
        messages.parse_sslv2_client_hello(body)


def fuzz_http2(data: bytes) -> None:
    """One connection's streams → ``Http2Connection`` (prior knowledge): frames, HPACK, streams, SETTINGS,
    GOAWAY, RST_STREAM, push, gaps."""
    from analyzer.http2.connection import Http2Connection

    _run_handler(Http2Connection(), data, 80)


# ------------------------------------------------------------------------------------------------ quic

_QUIC_VERSIONS = (0x00000001, 0x6B3343CF, 0xFF00001D, 0xFF000017, 0x00000000, 0x1A2A3A4A)


def seal_long(version: int, ptype: int, dcid: bytes, scid: bytes, token: bytes, pn_len: int, pn: int,
              plaintext: bytes, key_dcid: bytes, server: bool) -> bytes:
    """A long-header packet protected with the Initial keys of ``key_dcid`` (any type: the keys are only
    right for Initials, which is what the observer decrypts)."""
    from analyzer.quic.crypto import derive_initial_secrets, protect_long

    pn_len = 1 + (pn_len - 1) % 4
    v2 = version == 0x6B3343CF
    type_bits = ((1, 2, 3, 0)[ptype] if v2 else ptype) & 3
    first = 0xC0 | type_bits << 4 | (pn_len - 1)
    plaintext = plaintext + bytes(max(0, 20 - len(plaintext)))
    length = pn_len + len(plaintext) + 16
    head = bytes([first]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
    if ptype == 0:
        head += _varint(len(token)) + token
    head += _varint(length) + (pn % (1 << (8 * pn_len))).to_bytes(pn_len, "big")
    keys = derive_initial_secrets(version, key_dcid, server)
    if keys is None:  # unknown version: no keys, send the header with an unprotected payload
        return head + plaintext + bytes(16)
    return protect_long(keys, head, pn_len, pn % (1 << (8 * pn_len)), plaintext)


def _varint(v: int) -> bytes:
    if v < 0x40:
        return bytes([v])
    if v < 0x4000:
        return (v | 0x4000).to_bytes(2, "big")
    return (v | 0x80000000).to_bytes(4, "big")


def quic_datagrams(data: bytes) -> list[tuple[int, int, bytes]]:
    """``(direction, ts_ns, datagram)`` of one UDP flow described by ``data``: records of a 3-byte header
    ``[control u8][length u16 BE]`` and ``length`` bytes.

    control bit 0: direction; bit 1: the body is a raw datagram, sent as is; else the body is
    ``[ptype/version u8][dcid len u8][dcid][scid len u8][scid][pn u8][plaintext]`` and the harness seals it:
    packet type = bits 0-1, version = ``_QUIC_VERSIONS[bits 2-4]``, packet number length = bits 5-6 + 1; the
    keys derive from the DCID of the first sealed client packet (as the observer's do, Retry aside). bit 2:
    coalesce with the previous datagram of the same direction."""
    out: list[tuple[int, int, bytes]] = []
    key_dcid: bytes | None = None
    pos, ts = 0, T0_NS
    while pos < len(data) and len(out) < 256:
        control = data[pos]
        length = int.from_bytes(data[pos + 1: pos + 3], "big")
        body = data[pos + 3: pos + 3 + length]
        pos += 3 + length
        ts += 1_000_000
        d = control & 1
        if control & 2 or len(body) < 4:
            dgram = body
        else:
            sel = body[0]
            i = 1
            dl = min(body[i], 20)
            dcid = body[i + 1: i + 1 + dl]
            i += 1 + dl
            sl = min(body[i], 20) if i < len(body) else 0
            scid = body[i + 1: i + 1 + sl]
            i += 1 + sl
            pn = body[i] if i < len(body) else 0
            plaintext = body[i + 1:]
            if key_dcid is None and d == CLIENT:
                key_dcid = dcid
            version = _QUIC_VERSIONS[(sel >> 2) % len(_QUIC_VERSIONS)]
            dgram = seal_long(version, sel & 3, dcid, scid, b"", 1 + ((sel >> 5) & 3), pn, plaintext,
                              key_dcid if key_dcid is not None else dcid, server=d == SERVER)
        if control & 4 and out and out[-1][0] == d:
            out[-1] = (d, out[-1][1], out[-1][2] + dgram)
        else:
            out.append((d, ts, dgram))
    return out


def encode_quic(parts: list[tuple[int, bool, bytes]]) -> bytes:
    """The datagram script of ``(direction, raw, body)`` parts."""
    out = bytearray()
    for d, raw, body in parts:
        out += bytes([d | (2 if raw else 0)]) + len(body).to_bytes(2, "big") + body
    return bytes(out)


def fuzz_quic(data: bytes) -> None:
    """UDP datagrams of one flow → ``QuicObserver``: long headers, Initial decryption, frames, CRYPTO
    reassembly, the ClientHello / ServerHello, then the facts and anomalies."""
    from analyzer.quic.observer import QuicObserver

    obs = QuicObserver()
    for d, ts, dgram in quic_datagrams(data):
        obs.feed(d, ts, dgram)
    obs.facts()
    _check_anomalies(obs.anomalies())


# ----------------------------------------------------------------------------------------------- table

TARGETS: dict[str, Callable[[bytes], None]] = {
    "pcap": fuzz_pcap,
    "decode": fuzz_decode,
    "tcp": fuzz_tcp,
    "http1": fuzz_http1,
    "tls": fuzz_tls,
    "tls_hello": fuzz_tls_hello,
    "http2": fuzz_http2,
    "quic": fuzz_quic,
}

# the largest input worth trying, per target (bigger inputs only slow the loop down)
MAX_LEN = {"pcap": 1 << 17, "decode": 1 << 14, "tcp": 1 << 15, "http1": 1 << 14, "tls": 1 << 15,
           "tls_hello": 1 << 12, "http2": 1 << 14, "quic": 1 << 13}
