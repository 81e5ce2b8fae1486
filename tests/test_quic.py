"""``analyzer.quic``: the passive QUIC Initial observer.

- RFC 9001 appendix A (and RFC 9369 appendix A for QUIC v2): Initial secrets, keys, IVs, header protection
  keys; the protected client Initial of A.2 is re-created byte for byte and decrypts to its ClientHello
  (SNI "example.com"); the server Initial of A.3 decrypts to its ServerHello.
- Synthetic traffic: CRYPTO frames split over Initials and reordered (as Chrome does), Retry (keys from the
  Retry's SCID), coalesced Initial + Handshake + 1-RTT, ACK with ECN counts, CONNECTION_CLOSE, unknown frames,
  the CRYPTO cap, draft-29 and v2.
- Real captures of ../shared/corpus: SNI, offered ALPN and version against the tshark oracle, connection ids
  against tshark 4.0.17 (``tshark -Y quic.header_form==1 -e quic.dcid -e quic.scid``; the oracle JSON has no
  connection ids, so they are written out below).
- Hypothesis: mutated and truncated real datagrams, and random plaintext in valid Initials, never raise.
"""

from __future__ import annotations

import json
import random
import socket
from collections import defaultdict
from pathlib import Path
from typing import Any

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.quic import QuicFacts, QuicObserver, looks_like_quic_long_header, quic_version_name
from analyzer.quic.crypto import (
    QUIC_V1,
    QUIC_V2,
    SALT_V1,
    derive_initial_secrets,
    header_mask,
    hkdf_expand_label,
    hkdf_extract,
    protect_long,
)
from analyzer.quic.packets import parse_initial_frames, read_varint

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
C, S = 0, 1

# ------------------------------------------------------------------------------------ RFC 9001 appendix A
DCID = bytes.fromhex("8394c8f03e515708")
A2_HEADER = bytes.fromhex("c300000001088394c8f03e5157080000449e00000002")
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
A2_PLAINTEXT = A2_CRYPTO + bytes(917)  # PADDING up to 1162 bytes
A2_PROTECTED = bytes.fromhex(
    "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11"
    "d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399"
    "1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c"
    "8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212"
    "30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5"
    "457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208"
    "4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec"
    "4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3"
    "485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db"
    "059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c"
    "7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8"
    "9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556"
    "be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74"
    "68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a"
    "c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00"
    "f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632"
    "291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964"
    "25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd"
    "14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff"
    "ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198"
    "e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd"
    "c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73"
    "203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f"
    "cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e"
    "fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade"
    "a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047"
    "90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2"
    "162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4"
    "40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0"
    "6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e"
    "8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0"
    "be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400"
    "54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab"
    "760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9"
    "f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4"
    "056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064"
    "7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241"
    "e221af44860018ab0856972e194cd934"
)
A3_HEADER = bytes.fromhex("c1000000010008f067a5502a4262b50040750001")
A3_PLAINTEXT = bytes.fromhex(
    "02000000000600405a020000560303eefce7f7b37ba1d1632e96677825ddf739"
    "88cfc79825df566dc5430b9a045a1200130100002e00330024001d00209d3c94"
    "0d89690b84d08a60993c144eca684d1081287c834d5311bcf32bb9da1a002b00"
    "020304"
)
A3_PROTECTED = bytes.fromhex(
    "cf000000010008f067a5502a4262b5004075c0d95a482cd0991cd25b0aac406a"
    "5816b6394100f37a1c69797554780bb38cc5a99f5ede4cf73c3ec2493a1839b3"
    "dbcba3f6ea46c5b7684df3548e7ddeb9c3bf9c73cc3f3bded74b562bfb19fb84"
    "022f8ef4cdd93795d77d06edbb7aaf2f58891850abbdca3d20398c276456cbc4"
    "2158407dd074ee"
)


def test_rfc9001_a1_keys() -> None:
    initial = hkdf_extract(SALT_V1, DCID)
    assert initial.hex() == "7db5df06e7a69e432496adedb00851923595221596ae2ae9fb8115c1e9ed0a44"
    assert hkdf_expand_label(initial, b"client in", b"", 32).hex() == (
        "c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea")
    c = derive_initial_secrets(QUIC_V1, DCID, server=False)
    s = derive_initial_secrets(QUIC_V1, DCID, server=True)
    assert c is not None and s is not None
    assert c.secret.hex() == "c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea"
    assert (c.key.hex(), c.iv.hex(), c.hp.hex()) == (
        "1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c", "9f50449e04a0e810283a1e9933adedd2")
    assert s.secret.hex() == "3c199828fd139efd216c155ad844cc81fb82fa8d7446fa7d78be803acdda951b"
    assert (s.key.hex(), s.iv.hex(), s.hp.hex()) == (
        "cf3a5331653c364c88f0f379b6067e37", "0ac1493ca1905853b0bba03e", "c206b8d9b9f0f37644430b490eeaa314")


def test_rfc9001_a2_header_protection_and_payload() -> None:
    keys = derive_initial_secrets(QUIC_V1, DCID, server=False)
    assert keys is not None
    assert header_mask(keys, bytes.fromhex("d1b1c98dd7689fb8ec11d242b123dc9b")).hex() == "437b9aec36"
    assert protect_long(keys, A2_HEADER, 4, 2, A2_PLAINTEXT) == A2_PROTECTED
    frames = parse_initial_frames(A2_PLAINTEXT)
    assert frames.error is None and [o for o, _ in frames.crypto] == [0] and len(frames.crypto[0][1]) == 241


def test_rfc9001_a2_a3_observer() -> None:
    obs = QuicObserver()
    obs.feed(C, 1_000, A2_PROTECTED)
    obs.feed(S, 2_000, A3_PROTECTED)
    f = obs.facts()
    assert f.sni == "example.com"
    assert f.alpn_offered == ("alpn",)
    assert f.alpn is None
    assert f.tls_version == "TLS 1.3"
    assert (f.version, f.client_dcid, f.client_scid) == (QUIC_V1, DCID, b"")
    assert f.server_scid == bytes.fromhex("f067a5502a4262b5")
    assert (f.client_initials, f.server_initials, f.ts_client_initial_ns, f.ts_server_first_ns) == (1, 1, 1_000, 2_000)
    assert obs.anomalies() == []
    s = derive_initial_secrets(QUIC_V1, DCID, server=True)
    assert s is not None and protect_long(s, A3_HEADER, 2, 1, A3_PLAINTEXT) == A3_PROTECTED


def test_rfc9369_v2_keys_and_header() -> None:
    c = derive_initial_secrets(QUIC_V2, DCID, server=False)
    s = derive_initial_secrets(QUIC_V2, DCID, server=True)
    assert c is not None and s is not None
    assert c.secret.hex() == "14ec9d6eb9fd7af83bf5a668bc17a7e283766aade7ecd0891f70f9ff7f4bf47b"
    assert (c.key.hex(), c.iv.hex(), c.hp.hex()) == (
        "8b1a0bc121284290a29e0971b5cd045d", "91f73e2351d8fa91660e909f", "45b95e15235d6f45a6b19cbcb0294ba9")
    assert s.secret.hex() == "0263db1782731bf4588e7e4d93b7463907cb8cd8200b5da55a8bd488eafc37c1"
    assert (s.key.hex(), s.iv.hex(), s.hp.hex()) == (
        "82db637861d55e1d011f19ea71d5d2a7", "dd13c276499c0249d3310652", "edf6d05c83121201b436e16877593c3a")
    header = bytes.fromhex("d36b3343cf088394c8f03e5157080000449e00000002")
    packet = protect_long(c, header, 4, 2, A2_PLAINTEXT)
    assert packet[:22].hex() == "d76b3343cf088394c8f03e5157080000449ea0c95e82"
    obs = QuicObserver()
    obs.feed(C, 0, packet)
    f = obs.facts()
    assert (f.version, f.sni, f.client_initials) == (QUIC_V2, "example.com", 1)
    assert obs.anomalies() == []


# ------------------------------------------------------------------------------------ synthetic traffic
def varint(v: int) -> bytes:
    if v < 0x40:
        return bytes([v])
    if v < 0x4000:
        return (v | 0x4000).to_bytes(2, "big")
    if v < 0x4000_0000:
        return (v | 0x8000_0000).to_bytes(4, "big")
    return (v | 0xC000_0000_0000_0000).to_bytes(8, "big")


def crypto_frame(offset: int, data: bytes) -> bytes:
    return b"\x06" + varint(offset) + varint(len(data)) + data


_TYPE_CODES = {QUIC_V2: {"initial": 1, "0rtt": 2, "handshake": 3, "retry": 0}}
_V1_CODES = {"initial": 0, "0rtt": 1, "handshake": 2, "retry": 3}


def long_packet(kind: str, frames: bytes, *, version: int = QUIC_V1, dcid: bytes = DCID, scid: bytes = b"\x01\x02",
                key_dcid: bytes | None = None, server: bool = False, pn: int = 0, pn_len: int = 2,
                token: bytes = b"", pad_to: int = 0) -> bytes:
    """One protected long-header packet (Initial packets get real Initial keys; other kinds are filled with
    random bytes, as their keys are unknown to an observer anyway)."""
    code = _TYPE_CODES.get(version, _V1_CODES)[kind]
    plain = frames + bytes(max(0, pad_to - len(frames)))
    if len(plain) < 20:
        plain += bytes(20 - len(plain))
    head = bytes([0xC0 | code << 4 | (pn_len - 1)]) + version.to_bytes(4, "big")
    head += bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
    if kind == "initial":
        head += varint(len(token)) + token
    length = pn_len + len(plain) + 16
    header = head + (length | 0x4000).to_bytes(2, "big") + (pn & ((1 << 8 * pn_len) - 1)).to_bytes(pn_len, "big")
    if kind != "initial":
        return header + random.Random(pn).randbytes(len(plain) + 16)
    keys = derive_initial_secrets(version, key_dcid if key_dcid is not None else dcid, server)
    assert keys is not None
    return protect_long(keys, header, pn_len, pn, plain)


def retry_packet(new_scid: bytes, *, dcid: bytes = b"\x01\x02", version: int = QUIC_V1) -> bytes:
    code = _TYPE_CODES.get(version, _V1_CODES)["retry"]
    return (bytes([0xC0 | code << 4]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid
            + bytes([len(new_scid)]) + new_scid + b"token-bytes" + bytes(16))


CH = A2_CRYPTO[4:]  # the A.2 ClientHello handshake message (type, length, body), 241 bytes


def test_split_and_reordered_crypto_frames() -> None:
    # Chrome-like: the ClientHello over two Initials, CRYPTO frames out of order inside and across packets
    a, c = CH[:50], CH[160:]
    p1 = long_packet("initial", crypto_frame(160, c) + b"\x01" + crypto_frame(0, a), pn=0, pad_to=1162)
    p2 = long_packet("initial", b"\x00\x00" + crypto_frame(40, CH[40:160]), pn=1, pad_to=1162)
    obs = QuicObserver()
    obs.feed(C, 10, p1)
    assert obs.facts().sni is None
    obs.feed(C, 20, p2)
    f = obs.facts()
    assert f.sni == "example.com" and f.alpn_offered == ("alpn",) and f.client_initials == 2
    assert f.tls_version == "TLS 1.3"  # offered in supported_versions; no ServerHello seen
    assert obs.anomalies() == []


def test_retry_changes_the_key_dcid() -> None:
    new = bytes.fromhex("aabbccddeeff0011")
    obs = QuicObserver()
    obs.feed(C, 1, long_packet("initial", crypto_frame(0, CH[:100]), pn=0, pad_to=1162))
    obs.feed(S, 2, retry_packet(new))
    # after the Retry: DCID = the Retry's SCID, keys from it; the ClientHello is sent again from offset 0
    obs.feed(C, 3, long_packet("initial", crypto_frame(0, CH), dcid=new, pn=1, token=b"token-bytes", pad_to=1162))
    obs.feed(S, 4, long_packet("initial", b"\x02\x00\x00\x00\x00", dcid=b"\x01\x02", scid=b"\x55\x66",
                               key_dcid=new, server=True, pn=0))
    f = obs.facts()
    assert f.retry and f.sni == "example.com"
    assert f.client_dcid == DCID  # the original one
    assert f.server_scid == b"\x55\x66"
    assert (f.client_initials, f.server_initials) == (2, 1)
    assert obs.anomalies() == []


def test_retry_not_seen_falls_back_to_the_packet_dcid() -> None:
    obs = QuicObserver()
    obs.feed(C, 1, long_packet("initial", crypto_frame(0, CH), dcid=b"\x09" * 8, pn=0, pad_to=1162))
    assert obs.facts().sni == "example.com"
    obs2 = QuicObserver()
    obs2.feed(C, 1, long_packet("initial", b"\x01", dcid=b"\x07" * 8, pn=0))
    obs2.feed(C, 2, long_packet("initial", crypto_frame(0, CH), dcid=b"\x09" * 8, pn=1, pad_to=1162))
    assert obs2.facts().sni == "example.com" and obs2.facts().client_dcid == b"\x07" * 8


def test_coalesced_initial_handshake_and_short_header() -> None:
    server_init = long_packet("initial", b"\x02\x00\x00\x00\x00", dcid=b"\x01\x02", scid=b"\x33" * 8,
                              key_dcid=DCID, server=True, pn=0)
    server_hs = long_packet("handshake", b"", dcid=b"\x01\x02", scid=b"\x33" * 8, pn=0)
    client_init = long_packet("initial", crypto_frame(0, CH), pn=0, pad_to=1162)
    client_ack = long_packet("initial", b"\x02\x00\x00\x00\x00", dcid=b"\x33" * 8, key_dcid=DCID, pn=1)
    client_hs = long_packet("handshake", b"", dcid=b"\x33" * 8, pn=0)
    short = b"\x41" + b"\x33" * 8 + bytes(30)
    obs = QuicObserver()
    obs.feed(C, 1, client_init + long_packet("0rtt", b"", pn=0))
    obs.feed(S, 2, server_init + server_hs + bytes(50))  # trailing zero padding is ignored
    obs.feed(C, 3, client_ack + client_hs + short)
    f = obs.facts()
    assert (f.client_initials, f.server_initials, f.handshake_packets, f.zero_rtt_packets) == (2, 1, 2, 1)
    assert (f.ts_client_initial_ns, f.ts_server_first_ns, f.ts_handshake_done_ns) == (1, 2, 3)
    assert f.server_scid == b"\x33" * 8 and f.sni == "example.com"
    assert obs.anomalies() == []


def test_ack_ecn_close_unknown_frame_and_caps() -> None:
    ack_ecn = b"\x03" + varint(5) + varint(100) + varint(2) + varint(1) + varint(0) + varint(0) + varint(0) \
        + varint(0) + varint(1) + varint(2) + varint(3)
    frames = parse_initial_frames(ack_ecn + crypto_frame(0, b"abc") + b"\x00\x00")
    assert frames.error is None and frames.crypto == [(0, b"abc")]
    assert parse_initial_frames(b"\x02\x05\x00\x02\x00").error == "ACK frame cut short"
    close = b"\x1c" + varint(0x0a) + varint(0x06) + varint(6) + b"nope!!"
    obs = QuicObserver()
    obs.feed(S, 5, long_packet("initial", close, server=True, dcid=b"", key_dcid=DCID))  # before any client
    obs.feed(C, 6, long_packet("initial", crypto_frame(0, CH) + b"\x08\x00" + crypto_frame(500, b"x"), pad_to=1162))
    obs.feed(S, 7, long_packet("initial", close, server=True, dcid=b"", key_dcid=DCID, pn=1))
    obs.feed(C, 8, long_packet("initial", crypto_frame(70_000, b"late") + crypto_frame(60_000, b"y" * 6000), pn=1))
    names = [n for _, n, _ in obs.anomalies()]
    assert names == ["quic_decrypt_failed", "quic_unknown_frame", "quic_connection_close", "quic_crypto_cap"]
    assert "error 0xa (nope!!)" in obs.anomalies()[2][2]
    assert obs.facts().sni == "example.com"  # frames before the unknown one are used


def test_bad_headers_and_junk() -> None:
    obs = QuicObserver()
    for junk in (b"", b"\xc0", b"\xc0\x00\x00\x00\x01\x15" + bytes(30), b"\x80" + bytes(60),
                 b"\xc0\x00\x00\x00\x01\x00\x00\x40", A2_PROTECTED[:600], A2_PROTECTED[:-1]):
        obs.feed(C, 1, junk)
    names = {n for _, n, _ in obs.anomalies()}
    assert names <= {"quic_bad_header", "quic_decrypt_failed"} and "quic_bad_header" in names
    assert "quic_internal_error" not in names
    vn = b"\x80\x00\x00\x00\x00\x08" + DCID + b"\x00" + bytes.fromhex("0000000100000002")
    obs.feed(S, 2, vn)
    assert obs.facts().version_negotiation


def test_draft29_and_names() -> None:
    pkt = long_packet("initial", crypto_frame(0, CH), version=0xFF00001D, pad_to=1162)
    assert looks_like_quic_long_header(pkt)
    obs = QuicObserver()
    obs.feed(C, 0, pkt)
    assert obs.facts().sni == "example.com" and obs.facts().version == 0xFF00001D
    assert [quic_version_name(v) for v in (1, QUIC_V2, 0xFF00001D, 0xFF00001C, 0, 0x51303433)] == [
        "QUICv1", "QUICv2", "draft-29", "draft-28", "0x00000000", "0x51303433"]
    assert looks_like_quic_long_header(A2_PROTECTED)
    assert looks_like_quic_long_header(b"\xc0\x00\x00\x00\x00\x00\x00")  # version negotiation
    assert not looks_like_quic_long_header(b"\xc0\x00\x00\x00\x01\x00")  # too short
    assert not looks_like_quic_long_header(b"\x80\x00\x00\x00\x01\x00\x00")  # no fixed bit
    assert not looks_like_quic_long_header(b"\xc0Q043\x00\x00")  # gQUIC
    assert read_varint(bytes.fromhex("c2197c5eff14e88c"), 0) == (151288809941952652, 8)
    assert read_varint(bytes.fromhex("9d7f3e7d"), 0) == (494878333, 4)
    assert read_varint(bytes.fromhex("7bbd"), 0) == (15293, 2)
    assert read_varint(bytes.fromhex("7b"), 0) is None


# ------------------------------------------------------------------------------------ corpus vs tshark
def _udp_from_frame(linktype: int, buf: bytes) -> tuple[str, int, str, int, bytes] | None:
    try:
        family = {int.from_bytes(buf[:4], "little"), int.from_bytes(buf[:4], "big")}
        if linktype in (0, 108) and not family & {2, 24, 28, 30}:
            linktype = 1  # pcapng with interfaces of several link types (dpkt reports the first): Ethernet
        if linktype == 1:
            ip: Any = dpkt.ethernet.Ethernet(buf).data
        elif linktype in (0, 108):  # BSD loopback / LOOP: 4-byte family
            ip = dpkt.ip6.IP6(buf[4:]) if (buf[4] >> 4) == 6 else dpkt.ip.IP(buf[4:])
        elif linktype == 9:  # PPP: 2-byte protocol
            proto = int.from_bytes(buf[:2], "big")
            ip = dpkt.ip.IP(buf[2:]) if proto == 0x21 else dpkt.ip6.IP6(buf[2:]) if proto == 0x57 else None
        elif linktype == 113:  # Linux SLL
            ip = dpkt.sll.SLL(buf).data
        elif linktype in (12, 14, 101):
            ip = dpkt.ip6.IP6(buf) if (buf[0] >> 4) == 6 else dpkt.ip.IP(buf)
        else:
            return None
        if isinstance(ip, dpkt.ip.IP):
            src, dst = socket.inet_ntop(socket.AF_INET, ip.src), socket.inet_ntop(socket.AF_INET, ip.dst)
        elif isinstance(ip, dpkt.ip6.IP6):
            src = f"[{socket.inet_ntop(socket.AF_INET6, ip.src)}]"
            dst = f"[{socket.inet_ntop(socket.AF_INET6, ip.dst)}]"
        else:
            return None
        udp = ip.data
        if not isinstance(udp, dpkt.udp.UDP):
            return None
        return src, udp.sport, dst, udp.dport, bytes(udp.data)
    except (dpkt.UnpackError, IndexError, ValueError):
        return None


def _is_initial(payload: bytes) -> bool:
    if not looks_like_quic_long_header(payload):
        return False
    version = int.from_bytes(payload[1:5], "big")
    return version != 0 and (payload[0] >> 4) & 3 == (1 if version == QUIC_V2 else 0)


def udp_flows(path: Path) -> dict[str, list[tuple[int, int, bytes]]]:
    """client "ip:port" → [(direction, ts_ns, payload)] for every UDP flow whose first Initial names a client."""
    with path.open("rb") as fh:
        pcapng = fh.read(4) == b"\x0a\x0d\x0d\x0a"  # by content: http3-connection7.pcap is a pcapng file
        fh.seek(0)
        reader: Any = dpkt.pcapng.Reader(fh) if pcapng else dpkt.pcap.Reader(fh)
        linktype = reader.datalink()
        packets: dict[frozenset[str], list[tuple[str, int, bytes]]] = defaultdict(list)
        for ts, buf in reader:
            u = _udp_from_frame(linktype, buf)
            if u is None:
                continue
            src, sport, dst, dport, payload = u
            a, b = f"{src}:{sport}", f"{dst}:{dport}"
            packets[frozenset((a, b))].append((a, round(float(ts) * 1e9), payload))
    flows: dict[str, list[tuple[int, int, bytes]]] = {}
    for pkts in packets.values():
        client = next((a for a, _, p in pkts if _is_initial(p)), None)
        if client is not None:
            flows[client] = [(C if a == client else S, ts, p) for a, ts, p in pkts]
    return flows


def observe(path: Path) -> dict[str, QuicObserver]:
    out = {}
    for client, pkts in udp_flows(path).items():
        obs = QuicObserver()
        for d, ts, p in pkts:
            obs.feed(d, ts, p)
        out[client] = obs
    return out


# client endpoint → (client dcid, client scid, server scid, retry) as tshark 4.0.17 decodes them
TSHARK_CIDS: dict[str, dict[str, tuple[str, str, str, bool]]] = {
    "illustrated/illustrated-quic.pcap": {
        "127.0.0.1:60220": ("0001020304050607", "635f636964", "735f636964", False)},
    "ndpi/quic_0RTT.pcap": {
        "[::1]:60459": ("4235d5abadbe3e55", "b0ecb0f544630dfb", "16b051233761d969", False),
        "192.168.2.100:51972": ("65b9ee23b37344d6", "", "65b9ee23b37344d6", False)},
    "pcap2har-mikekap/http3-connection7.pcap": {
        "192.168.1.165:64350": ("a0f4a5dc71591a2e", "", "e0f4a5dc71591a2e", False)},
    "retina/quic_retry.pcapng": {
        "127.0.0.1:47276": ("91a421230a985d27a3d5c4fefd8b0f80", "96080f2f1d19c1d035ff8344d6e16b111c043436",
                            "045cbe10f454d43cac592763db7e9156d523540a", False),
        "127.0.0.1:52620": ("6446834734b38fbf580b46a80fe28846", "fb36050dc759fca2b1eeea3fea3c337e947692ec",
                            "76d20598ccaa42475fbd76fa8e5f22b69eea896b", True)},
    "retina/quic_kyber.pcapng": {
        "[2601:280:5f80:4580:5f8a:aea1:6e73:d422]:46069": ("d6f3de1a041191fe", "", "f6f3de1a041191fe", False)},
    "zeek/quic/curl-8.1.2-dev-http3-www-google-de.pcap": {
        "172.17.0.2:34347": ("815d62c70884f4b51e8ccadd5beed372", "e5ec6b26584229be98a164349ae910351c40d10b",
                             "c15d62c70884f4b5", False)},
    "zeek/quic/firefox-102.13.0esr-blog-cloudflare-com.pcap": {
        "82.239.54.117:44174": ("c5a5015ae8f479784a", "34696c", "01275b138ee6aca8a6276b132ae6b3547cf7773f", False)},
    "zeek/quic/quic-go_interop_retry.pcap": {
        "193.167.0.100:42834": ("4a8294bf9201d6cf", "", "fc674735", True)},
    "zeek/quic/quic-go_interop_zerortt.pcap": {
        "193.167.0.100:60492": ("b7c7841c64883e3261d840", "", "8d2041ac", False),
        "193.167.0.100:49394": ("15ae5e5e4962163f410b5529fc125bbc", "", "e483a751", False)},
    "zeek/quic/quic_win11_firefox_google.pcap": {
        "1.2.3.4:49369": ("b409bae10c6b44e5cd", "2133c4", "b409bae10c6b44e5", False)},
    "zeek/quic/quicv2-http3-443.pcap": {
        "127.0.0.1:50841": ("bdf0c5b27927cc667e58d95b", "71b8f3f4", "cdc8b6e6", False)},
}

# client endpoint → (client Initials, server Initials, Handshake packets, 0-RTT packets) as tshark counts them
# (-Y quic.header_form==1 -e quic.long.packet_type); tshark 4.0 does not decode v2 packet types
TSHARK_COUNTS: dict[str, tuple[int, int, int, int]] = {
    "127.0.0.1:60220": (2, 1, 5, 0),
    "[::1]:60459": (1, 1, 1, 1),
    "192.168.2.100:51972": (1, 1, 2, 2),  # the two 0-RTT packets are captured before the client's Initial
    "192.168.1.165:64350": (4, 6, 4, 3),
    "127.0.0.1:47276": (2, 1, 4, 0),
    "127.0.0.1:52620": (3, 1, 4, 0),
    "[2601:280:5f80:4580:5f8a:aea1:6e73:d422]:46069": (3, 3, 7, 0),
    "172.17.0.2:34347": (2, 1, 7, 0),
    "82.239.54.117:44174": (2, 2, 9, 0),
    "193.167.0.100:42834": (3, 1, 3, 0),
    "193.167.0.100:60492": (2, 1, 3, 0),
    "193.167.0.100:49394": (2, 1, 3, 28),
    "1.2.3.4:49369": (2, 1, 11, 0),
}


def _oracle(rel: str) -> dict[str, dict[str, Any]]:
    data = json.loads((CORPUS / "oracle" / (rel + ".json")).read_text())
    out: dict[str, dict[str, Any]] = {}
    for q in data.get("quic", []):
        out.setdefault(q["client"], q)  # tshark splits one flow in two connections once (zerortt): keep the first
    return out


@pytest.mark.corpus
@pytest.mark.parametrize("rel", sorted(TSHARK_CIDS))
def test_corpus_against_tshark(rel: str) -> None:
    if not (CORPUS / rel).exists() or not (CORPUS / "oracle" / (rel + ".json")).exists():
        pytest.skip(f"{rel} not in the corpus at {CORPUS}")
    observed = observe(CORPUS / rel)
    oracle = _oracle(rel)
    assert set(observed) == set(oracle) == set(TSHARK_CIDS[rel])
    for client, q in oracle.items():
        obs = observed[client]
        f: QuicFacts = obs.facts()
        assert f.version == int(q["versions"][0], 16), client
        assert f.sni == (q["sni"][0] if q["sni"] else None), client
        assert list(f.alpn_offered) == q["alpn_offered"], client
        dcid, scid, server_scid, retry = TSHARK_CIDS[rel][client]
        assert (f.client_dcid, f.client_scid, f.server_scid) == (
            bytes.fromhex(dcid), bytes.fromhex(scid), bytes.fromhex(server_scid)), client
        assert f.retry == retry, client
        if client in TSHARK_COUNTS:
            assert (f.client_initials, f.server_initials, f.handshake_packets, f.zero_rtt_packets) == (
                TSHARK_COUNTS[client]), client
        assert f.tls_version == "TLS 1.3", client
        assert f.alpn is None
        assert f.client_initials >= 1 and f.server_initials >= 1
        assert f.ts_client_initial_ns is not None and f.ts_server_first_ns is not None
        names = [n for _, n, _ in obs.anomalies()]
        assert "quic_internal_error" not in names and "quic_bad_client_hello" not in names, names


@pytest.mark.corpus
def test_corpus_gquic_is_not_ietf_quic() -> None:
    path = CORPUS / "ndpi" / "quickplay.pcap"
    if not path.exists():
        pytest.skip("quickplay.pcap not in the corpus")
    assert udp_flows(path) == {}


# ------------------------------------------------------------------------------------ never raises
def _real_datagrams() -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = [(C, A2_PROTECTED), (S, A3_PROTECTED)]
    for rel in ("pcap2har-mikekap/http3-connection7.pcap", "retina/quic_retry.pcapng",
                "zeek/quic/quicv2-http3-443.pcap", "ndpi/quic_0RTT.pcap"):
        if (CORPUS / rel).exists():
            for pkts in udp_flows(CORPUS / rel).values():
                out.extend((d, p) for d, _, p in pkts[:8])
    return out


REAL = _real_datagrams()


@st.composite
def mutated(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    seq = []
    for _ in range(draw(st.integers(1, 4))):
        d, p = REAL[draw(st.integers(0, len(REAL) - 1))]
        buf = bytearray(p)
        for _ in range(draw(st.integers(0, 6))):
            op = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
            if not buf:
                break
            i = draw(st.integers(0, len(buf) - 1))
            if op == "flip":
                buf[i] ^= 1 << draw(st.integers(0, 7))
            elif op == "cut":
                del buf[i:]
            elif op == "insert":
                buf[i:i] = draw(st.binary(max_size=8))
            else:
                buf[i] = draw(st.integers(0, 255))
        seq.append((draw(st.sampled_from([d, 1 - d])), bytes(buf)))
    return seq


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_datagrams_never_raise(seq: list[tuple[int, bytes]]) -> None:
    obs = QuicObserver()
    for i, (d, p) in enumerate(seq):
        obs.feed(d, i, p)
    obs.facts()
    assert all(n != "quic_internal_error" for _, n, _ in obs.anomalies()), obs.anomalies()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=60), st.sampled_from([CH[:10], CH, b"\x06", b"\x03\x01", b"\x1c"])),
                max_size=6),
       st.booleans())
def test_random_plaintext_in_valid_initials_never_raises(parts: list[bytes], server: bool) -> None:
    # frame parsing and hello parsing see arbitrary bytes behind a valid AEAD
    obs = QuicObserver()
    obs.feed(C, 0, long_packet("initial", b"\x01", pn=0))
    for i, part in enumerate(parts):
        obs.feed(S if server else C, i + 1,
                 long_packet("initial", part, server=server, key_dcid=DCID, dcid=b"\x01\x02" if server else DCID,
                             pn=i + 1))
    obs.facts()
    assert all(n != "quic_internal_error" for _, n, _ in obs.anomalies()), obs.anomalies()
