"""QUIC wire format for a passive observer: variable-length integers, long headers (RFC 9000 §17.2, RFC 9369
§3.2) and the frames allowed in Initial packets (RFC 9000 §12.4, §19). Every function is bounds-checked and
returns None (or an error string) instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass

from analyzer.quic.crypto import QUIC_V1, QUIC_V2, VERSION_NEGOTIATION, initial_salt

# packet kinds (version-independent names; the 2-bit wire codes differ between v1 and v2)
INITIAL = "initial"
ZERO_RTT = "0rtt"
HANDSHAKE = "handshake"
RETRY = "retry"
VERSION_NEG = "version_negotiation"

_TYPES_V1 = (INITIAL, ZERO_RTT, HANDSHAKE, RETRY)
_TYPES_V2 = (RETRY, INITIAL, ZERO_RTT, HANDSHAKE)  # RFC 9369 §3.2

MAX_CID_LEN = 20  # RFC 9000 §17.2: v1 connection ids are at most 20 bytes

# frame types found in Initial packets
FRAME_PADDING = 0x00
FRAME_PING = 0x01
FRAME_ACK = 0x02
FRAME_ACK_ECN = 0x03
FRAME_CRYPTO = 0x06
FRAME_CONNECTION_CLOSE = 0x1C
FRAME_CONNECTION_CLOSE_APP = 0x1D


def known_version(version: int) -> bool:
    """Versions whose Initial packets we can decrypt (v1, v2, drafts 23 … 32)."""
    return initial_salt(version) is not None


def looks_like_quic_long_header(payload: bytes) -> bool:
    """Cheap test on a UDP payload: a long header (0x80) with the fixed bit (0x40), at least 7 bytes, and a
    version we know: 1, QUIC v2 (0x6b3343cf), an IETF draft 23 … 32 (0xff000017 … 0xff000020; draft-29 is
    0xff00001d), or 0 (Version Negotiation)."""
    if len(payload) < 7 or payload[0] & 0xC0 != 0xC0:
        return False
    version = int.from_bytes(payload[1:5], "big")
    return version == VERSION_NEGOTIATION or known_version(version)


def quic_version_name(version: int) -> str:
    """"QUICv1", "QUICv2", "draft-29" (any IETF draft 0xff0000NN), else "0x%08x"."""
    if version == QUIC_V1:
        return "QUICv1"
    if version == QUIC_V2:
        return "QUICv2"
    if version >> 8 == 0xFF0000:
        return f"draft-{version & 0xFF}"
    return f"0x{version & 0xFFFFFFFF:08x}"



def read_varint(data: bytes, pos: int, end: int | None = None) -> tuple[int, int] | None:
    """RFC 9000 §16: (value, next position), or None when cut."""
    if end is None:
        end = len(data)
    if pos >= end:
        return None
    first = data[pos]
    n = 1 << (first >> 6)
    if pos + n > end:
        return None
    value = first & 0x3F
    for i in range(1, n):
        value = (value << 8) | data[pos + i]
    return value, pos + n


@dataclass(frozen=True, slots=True)
class LongHeader:
    """One long-header packet inside a datagram: ``start`` … ``end`` are its bytes (``end`` is the end of
    the datagram for Retry and Version Negotiation). ``pn_offset`` is where the protected packet number
    starts (Initial, 0-RTT, Handshake only, else -1)."""

    kind: str
    version: int
    dcid: bytes
    scid: bytes
    start: int
    end: int
    pn_offset: int
    token: bytes = b""
    versions: tuple[int, ...] = ()  # Version Negotiation: the versions the server supports


def parse_long_header(data: bytes, start: int) -> tuple[LongHeader | None, str | None]:
    """The long-header packet at ``data[start:]`` → (header, None), or (None, error)."""
    end = len(data)
    if start + 7 > end:
        return None, "long header cut before its connection ids"
    first = data[start]
    version = int.from_bytes(data[start + 1:start + 5], "big")
    pos = start + 5
    dlen = data[pos]
    pos += 1
    if pos + dlen + 1 > end:
        return None, "long header cut in its destination connection id"
    dcid = data[pos:pos + dlen]
    pos += dlen
    slen = data[pos]
    pos += 1
    if pos + slen > end:
        return None, "long header cut in its source connection id"
    scid = data[pos:pos + slen]
    pos += slen
    if version == VERSION_NEGOTIATION:
        vs = tuple(int.from_bytes(data[i:i + 4], "big") for i in range(pos, end - 3, 4))
        return LongHeader(VERSION_NEG, version, dcid, scid, start, end, -1, versions=vs[:64]), None
    if not known_version(version):
        return None, f"unknown QUIC version 0x{version:08x}"
    if dlen > MAX_CID_LEN or slen > MAX_CID_LEN:
        return None, f"connection id longer than {MAX_CID_LEN} bytes"
    kind = (_TYPES_V2 if version == QUIC_V2 else _TYPES_V1)[(first >> 4) & 0x03]
    if kind == RETRY:
        # Retry: token then a 16-byte integrity tag, up to the end of the datagram
        return LongHeader(kind, version, dcid, scid, start, end, -1, token=data[pos:max(pos, end - 16)]), None
    token = b""
    if kind == INITIAL:
        r = read_varint(data, pos)
        if r is None:
            return None, "Initial cut in its token length"
        tlen, pos = r
        if pos + tlen > end:
            return None, "Initial cut in its token"
        token = data[pos:pos + tlen]
        pos += tlen
    r = read_varint(data, pos)
    if r is None:
        return None, "long header cut in its length"
    length, pos = r
    if pos + length > end:
        return None, f"packet length {length} runs past the datagram end ({end - pos} bytes left)"
    return LongHeader(kind, version, dcid, scid, start, pos + length, pos, token=token), None


@dataclass(slots=True)
class InitialFrames:
    """What the frames of one decrypted Initial packet carry."""

    crypto: list[tuple[int, bytes]]  # (offset, data)
    close: tuple[int, int, str] | None = None  # (frame type, error code, reason phrase)
    error: str | None = None  # why parsing stopped early


def parse_initial_frames(plain: bytes) -> InitialFrames:
    """Frames PADDING, PING, ACK (with and without ECN counts), CRYPTO, CONNECTION_CLOSE; parsing stops at the
    first other frame type (not allowed in Initial packets) with an error."""
    out = InitialFrames([])
    pos, end = 0, len(plain)
    while pos < end:
        ftype = plain[pos]
        if ftype == FRAME_PADDING:
            pos += 1
            while pos < end and plain[pos] == 0:
                pos += 1
            continue
        if ftype == FRAME_PING:
            pos += 1
            continue
        if ftype in (FRAME_ACK, FRAME_ACK_ECN):
            p: int | None = pos + 1
            fields = 4 + (3 if ftype == FRAME_ACK_ECN else 0)  # largest, delay, range count, first range (+ECN)
            count = 0
            i = 0
            while p is not None and i < fields:
                r = read_varint(plain, p)
                if r is None:
                    p = None
                    break
                value, p = r
                if i == 2:
                    count = value
                    if count > (end - p) // 2:  # every range takes two varints of at least one byte
                        p = None
                        break
                    fields += 2 * count
                i += 1
            if p is None:
                out.error = "ACK frame cut short"
                return out
            pos = p
            continue
        if ftype == FRAME_CRYPTO:
            r = read_varint(plain, pos + 1)
            r2 = read_varint(plain, r[1]) if r is not None else None
            if r is None or r2 is None or r2[1] + r2[0] > end:
                out.error = "CRYPTO frame cut short"
                return out
            offset, (length, p2) = r[0], r2
            out.crypto.append((offset, plain[p2:p2 + length]))
            pos = p2 + length
            continue
        if ftype in (FRAME_CONNECTION_CLOSE, FRAME_CONNECTION_CLOSE_APP):
            r = read_varint(plain, pos + 1)
            p3: int | None = None
            code = 0
            if r is not None:
                code, p3 = r
                if ftype == FRAME_CONNECTION_CLOSE and p3 is not None:
                    r = read_varint(plain, p3)  # the frame type that triggered the error
                    p3 = r[1] if r is not None else None
            r = read_varint(plain, p3) if p3 is not None else None
            if r is None or r[1] + r[0] > end:
                out.error = "CONNECTION_CLOSE frame cut short"
                return out
            reason = plain[r[1]:r[1] + r[0]].decode("utf-8", "backslashreplace")[:200]
            out.close = (ftype, code, reason)
            pos = r[1] + r[0]
            continue
        out.error = f"frame type 0x{ftype:02x} not expected in an Initial packet"
        return out
    return out
