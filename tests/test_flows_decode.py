"""``analyzer.flows.decode``: corpus captures against tshark field by field, and crafted frames (built with
scapy or by hand with ``struct``) for every link type, tag, tunnel, IP rule and skip reason."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import shutil
import struct
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.capture.batch import PacketBatch
from analyzer.capture.pcapfile import open_capture
from analyzer.errors import CaptureFormatError
from analyzer.flows.connections import _base32_15
from analyzer.flows.decode import SKIP_REASONS, decode_batch
from analyzer.flows.packets import ACK, FIN, PSH, SYN, DecodedPackets, format_ip

scapy_all = pytest.importorskip("scapy.all")
from scapy.contrib.mpls import MPLS  # noqa: E402
from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import (  # noqa: E402
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH  # noqa: E402
from scapy.layers.l2 import ARP, LLC, SNAP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether  # noqa: E402
from scapy.layers.ppp import PPP, PPPoE  # noqa: E402
from scapy.layers.vxlan import VXLAN  # noqa: E402

CORPUS = Path(os.environ.get("ANALYZER_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus"))
MANIFEST = CORPUS / "manifest.json"
CORPUS_FILES = [e["file"] for e in json.loads(MANIFEST.read_text())] if MANIFEST.exists() else []
TSHARK = shutil.which("tshark")


def make_batch(frames: list[bytes], linktype: int | list[int] = 1, wirelen: list[int] | None = None) -> PacketBatch:
    """A batch over one buffer holding ``frames`` back to back (a little slack between them)."""
    offs, parts, pos = [], [], 0
    for f in frames:
        offs.append(pos)
        parts.append(f + b"\xee" * 3)
        pos += len(f) + 3
    n = len(frames)
    caplen = [len(f) for f in frames]
    lts = [linktype] * n if isinstance(linktype, int) else linktype
    return PacketBatch(
        buf=np.frombuffer(b"".join(parts), dtype=np.uint8),
        offset=np.array(offs, dtype=np.int64),
        caplen=np.array(caplen, dtype=np.int32),
        wirelen=np.array(wirelen if wirelen is not None else caplen, dtype=np.int32),
        ts_ns=np.arange(n, dtype=np.int64) * 1000,
        linktype=np.array(lts, dtype=np.uint16),
        frame=np.arange(1, n + 1, dtype=np.int64),
    )


def decode(frames: list[bytes], linktype: int | list[int] = 1,
           wirelen: list[int] | None = None) -> tuple[DecodedPackets, Counter[str]]:
    batch = make_batch(frames, linktype, wirelen)
    d, skipped = decode_batch(batch)
    assert len(d) + sum(skipped.values()) == len(batch)
    assert set(skipped) <= set(SKIP_REASONS[1:])
    return d, skipped


def one(frame: bytes, linktype: int = 1, wirelen: int | None = None) -> dict[str, object]:
    """Decode a single frame that must become a row; its columns as Python values."""
    d, skipped = decode([frame], linktype, None if wirelen is None else [wirelen])
    assert len(d) == 1, skipped
    row: dict[str, object] = {k: getattr(d, k)[0].item() for k in (
        "ip_version", "proto", "sport", "dport", "tcp_seq", "tcp_ack", "tcp_flags", "tcp_window", "l4_hdr_len",
        "payload_len", "payload_wire_len", "payload_off", "l4_off")}
    row["src"] = format_ip(d.src_hi[0], d.src_lo[0])
    row["dst"] = format_ip(d.dst_hi[0], d.dst_lo[0])
    off, n = int(d.payload_off[0]), int(d.payload_len[0])
    row["payload"] = bytes(d.batch.buf[off : off + n])
    return row


def reason(frame: bytes, linktype: int = 1) -> str:
    d, skipped = decode([frame], linktype)
    assert len(d) == 0 and sum(skipped.values()) == 1, skipped
    return next(iter(skipped))


TCP4 = IP(src="10.1.2.3", dst="192.168.0.9") / TCP(sport=40000, dport=80, seq=1000, ack=77, flags="PA",
                                                     window=512) / b"GET / HTTP/1.1\r\n\r\n"
TCP6 = IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=5, dport=443, seq=2**32 - 1, flags="S")
UDP4 = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=53, dport=5353) / b"abcd"


def check_tcp4(row: dict[str, object]) -> None:
    assert row["ip_version"] == 4 and row["proto"] == 6
    assert (row["src"], row["dst"], row["sport"], row["dport"]) == ("10.1.2.3", "192.168.0.9", 40000, 80)
    assert (row["tcp_seq"], row["tcp_ack"], row["tcp_flags"], row["tcp_window"]) == (1000, 77, PSH | ACK, 512)
    assert row["payload"] == b"GET / HTTP/1.1\r\n\r\n"
    assert row["payload_len"] == row["payload_wire_len"] == 18
    assert row["l4_hdr_len"] == 20


# ------------------------------------------------------------------------------------------------ Ethernet & tags
def test_ethernet_ipv4_tcp() -> None:
    check_tcp4(one(bytes(Ether() / TCP4)))


def test_ethernet_padding_is_not_payload() -> None:
    """A bare ACK is 54 bytes: Ethernet pads it to 60. The padding must not count as payload."""
    frame = bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(flags="A"))
    assert len(frame) == 54
    row = one(frame + b"\0" * 6 + b"FCS!")  # padding plus a trailer
    assert row["payload_len"] == row["payload_wire_len"] == 0
    row = one(bytes(Ether() / IP() / TCP() / b"hi") + b"\0" * 4)
    assert row["payload_len"] == row["payload_wire_len"] == 2 and row["payload"] == b"hi"


def test_ipv6_tcp_and_udp() -> None:
    row = one(bytes(Ether() / TCP6))
    assert (row["ip_version"], row["src"], row["dst"], row["tcp_seq"], row["tcp_flags"]) == (
        6, "2001:db8::1", "2001:db8::2", 2**32 - 1, SYN)
    row = one(bytes(Ether() / UDP4))
    assert (row["proto"], row["sport"], row["dport"], row["tcp_seq"], row["l4_hdr_len"]) == (17, 53, 5353, 0, 8)
    assert row["payload"] == b"abcd" and row["payload_wire_len"] == 4


@pytest.mark.parametrize(
    "tags",
    [
        [Dot1Q(vlan=0)],
        [Dot1AD(vlan=5), Dot1Q(vlan=6)],  # QinQ 0x88a8 + 0x8100
        [Dot1Q(vlan=1, type=0x9100), Dot1Q(vlan=2, type=0x8100), Dot1Q(vlan=3)],  # triple, with 0x9100
    ],
)
def test_vlan_tags(tags: list[object]) -> None:
    pkt = Ether()
    for t in tags:
        pkt = pkt / t
    check_tcp4(one(bytes(pkt / TCP4)))


def test_mpls_label_stack_ipv4_and_ipv6() -> None:
    check_tcp4(one(bytes(Ether() / MPLS(label=16, s=0) / MPLS(label=17, s=1) / TCP4)))
    assert one(bytes(Ether(type=0x8848) / MPLS(label=3, s=1) / TCP6))["ip_version"] == 6
    # after the bottom label, neither 4 nor 6 (an Ethernet pseudowire): not IP
    assert reason(bytes(Ether() / MPLS(label=16, s=1)) + b"\x00" * 40) == "non_ip"
    assert reason(bytes(Ether() / MPLS(label=16, s=0))) == "truncated_header"


def test_layer_limit() -> None:
    """Up to MAX_L2_LAYERS tags are peeled; a frame needing more is given up as non_ip."""
    from analyzer.flows.decode import MAX_L2_LAYERS

    def tagged(n: int) -> bytes:
        pkt = Ether()
        for _ in range(n):
            pkt = pkt / Dot1Q(vlan=1)
        return bytes(pkt / TCP4)

    check_tcp4(one(tagged(MAX_L2_LAYERS)))
    assert reason(tagged(MAX_L2_LAYERS + 1)) == "non_ip"


def test_vlan_then_mpls() -> None:
    check_tcp4(one(bytes(Ether() / Dot1Q(vlan=9) / MPLS(label=100, s=1) / TCP4)))


def test_pppoe_session() -> None:
    check_tcp4(one(bytes(Ether() / PPPoE(sessionid=3) / PPP(proto=0x0021) / TCP4)))
    assert reason(bytes(Ether() / PPPoE() / PPP(proto=0xC021) / b"\x01\x01\x00\x04")) == "non_ip"  # LCP


def test_llc_snap_on_ethernet() -> None:
    check_tcp4(one(bytes(Ether(type=None) / LLC() / SNAP(code=0x0800) / TCP4)))
    assert reason(bytes(Ether(type=None) / LLC(dsap=0x42, ssap=0x42, ctrl=3) / (b"\0" * 40))) == "non_ip"  # STP


def test_non_ip_and_non_tcp_udp() -> None:
    assert reason(bytes(Ether() / ARP())) == "non_ip"
    assert reason(bytes(Ether(type=0x88CC) / (b"\0" * 40))) == "non_ip"  # LLDP
    assert reason(bytes(Ether() / IP() / ICMP())) == "non_tcp_udp"
    assert reason(bytes(Ether() / IPv6(nh=58) / (b"\x80\0" + b"\0" * 6))) == "non_tcp_udp"  # ICMPv6
    assert reason(bytes(Ether() / IPv6(nh=59))) == "non_tcp_udp"  # no next header


# ------------------------------------------------------------------------------------------------ IP rules
def test_ipv4_options_are_skipped() -> None:
    pkt = IP(src="10.1.2.3", dst="192.168.0.9", options=[scapy_all.IPOption_RR(routers=["1.2.3.4"])]) / TCP4[TCP]
    ihl = IP(bytes(pkt)).ihl * 4
    assert ihl > 20
    row = one(bytes(Ether() / pkt))
    assert row["l4_off"] == 14 + ihl
    check_tcp4(row)


def test_ipv4_fragments() -> None:
    atomic = IP(src="10.1.2.3", dst="192.168.0.9", flags="DF", frag=0) / TCP4[TCP]
    check_tcp4(one(bytes(Ether() / atomic)))
    first = bytes(Ether() / IP(flags="MF", frag=0, proto=6) / bytes(TCP4[TCP]))
    later = bytes(Ether() / IP(flags=0, frag=10, proto=6) / (b"x" * 20))
    d, skipped = decode([first, later])
    assert len(d) == 0 and skipped == {"ip_fragment": 2}


def test_ipv6_extension_headers_and_fragments() -> None:
    chain = (IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
             / IPv6ExtHdrRouting(addresses=[]) / AH(nh=6, payloadlen=4, spi=1, icv=b"\0" * 12)
             / TCP(sport=1, dport=2) / b"xyz")
    row = one(bytes(Ether() / chain))
    assert (row["sport"], row["dport"], row["payload"], row["payload_wire_len"]) == (1, 2, b"xyz", 3)
    atomic = IPv6() / IPv6ExtHdrFragment(offset=0, m=0, id=7) / TCP(sport=3, dport=4) / b"ok"
    assert one(bytes(Ether() / atomic))["payload"] == b"ok"
    real = [bytes(Ether() / IPv6() / IPv6ExtHdrFragment(offset=0, m=1) / TCP() / b"a"),
            bytes(Ether() / IPv6() / IPv6ExtHdrFragment(offset=8, m=0, nh=6) / (b"b" * 8))]
    _, skipped = decode(real)
    assert skipped == {"ip_fragment": 2}


def test_ip_total_length_zero_means_offload() -> None:
    frame = bytearray(bytes(Ether() / TCP4))
    frame[16:18] = b"\0\0"  # ip.len = 0 (TSO: the NIC fills it in later)
    row = one(bytes(frame))
    assert row["payload_len"] == row["payload_wire_len"] == 18
    frame6 = bytearray(bytes(Ether() / IPv6() / TCP() / b"abc"))
    frame6[18:20] = b"\0\0"
    row = one(bytes(frame6))
    assert row["payload_len"] == row["payload_wire_len"] == 3


def test_snaplen_truncated_packet_keeps_its_row() -> None:
    full = bytes(Ether() / IP() / TCP() / (b"z" * 1000))
    row = one(full[:100], wirelen=len(full))
    assert row["payload_len"] == 100 - 54 and row["payload_wire_len"] == 1000
    # ip.len == 0 with a snapped frame: the wire length of the frame counts
    frame = bytearray(full[:100])
    frame[16:18] = b"\0\0"
    row = one(bytes(frame), wirelen=len(full))
    assert row["payload_len"] == 46 and row["payload_wire_len"] == 1000


def test_truncated_headers() -> None:
    frame = bytes(Ether() / Dot1Q() / TCP4)
    for cut, where in [(10, "ethernet"), (16, "vlan"), (30, "ipv4"), (45, "tcp")]:
        assert reason(frame[:cut]) == "truncated_header", where
    tcp_with_options = bytes(Ether() / IP() / TCP(options=[("MSS", 1460), ("NOP", None), ("WScale", 7)]))
    assert reason(tcp_with_options[:-2]) == "truncated_header"
    assert reason(bytes(Ether() / UDP4)[:40]) == "truncated_header"
    assert reason(bytes(Ether() / TCP6)[:50]) == "truncated_header"
    ext = bytes(Ether() / IPv6() / IPv6ExtHdrDestOpt() / TCP())
    assert reason(ext[: 14 + 40 + 4]) == "truncated_header"


def test_malformed_ip() -> None:
    frame = bytearray(bytes(Ether() / TCP4))
    bad_version = frame.copy()
    bad_version[14] = 0x55
    assert reason(bytes(bad_version)) == "malformed_ip"
    bad_ihl = frame.copy()
    bad_ihl[14] = 0x44
    assert reason(bytes(bad_ihl)) == "malformed_ip"
    bad_doff = frame.copy()
    bad_doff[14 + 20 + 12] = 0x40
    assert reason(bytes(bad_doff)) == "malformed_ip"
    short_len = frame.copy()
    short_len[16:18] = struct.pack(">H", 30)  # shorter than IP + TCP headers
    assert reason(bytes(short_len)) == "malformed_ip"
    assert reason(bytes(Ether(type=0x86DD) / TCP4)) == "malformed_ip"  # says IPv6, is IPv4
    assert reason(b"\x75" + b"\0" * 40, 101) == "malformed_ip"  # raw IP, version 7


def test_tcp_flags_include_ns_bit() -> None:
    frame = bytearray(bytes(Ether() / IP() / TCP(flags="FA")))
    frame[14 + 20 + 12] |= 1  # the NS / AE bit
    assert one(bytes(frame))["tcp_flags"] == 0x100 | FIN | ACK


# ------------------------------------------------------------------------------------------------ link types
def test_raw_ip_link_types() -> None:
    for lt in (101, 12, 14):
        check_tcp4(one(bytes(TCP4), lt))
        assert one(bytes(TCP6), lt)["ip_version"] == 6
    check_tcp4(one(bytes(TCP4), 228))
    assert one(bytes(TCP6), 229)["ip_version"] == 6


@pytest.mark.parametrize("linktype", [0, 108])
@pytest.mark.parametrize("endian", ["<", ">"])
def test_null_and_loop_either_byte_order(linktype: int, endian: str) -> None:
    check_tcp4(one(struct.pack(endian + "I", 2) + bytes(TCP4), linktype))
    for af6 in (24, 28, 30):
        assert one(struct.pack(endian + "I", af6) + bytes(TCP6), linktype)["ip_version"] == 6
    assert reason(struct.pack(endian + "I", 7) + bytes(TCP4), linktype) == "non_ip"


def test_linux_sll_and_sll2() -> None:
    check_tcp4(one(bytes(CookedLinux(proto=0x0800) / TCP4), 113))
    assert one(bytes(CookedLinux(proto=0x86DD) / TCP6), 113)["ip_version"] == 6
    assert reason(bytes(CookedLinux(proto=0x0806) / ARP()), 113) == "non_ip"
    check_tcp4(one(bytes(CookedLinuxV2(proto=0x0800) / TCP4), 276))
    assert reason(bytes(CookedLinuxV2(proto=0x0800))[:10], 276) == "truncated_header"
    check_tcp4(one(bytes(CookedLinux(proto=0x0004) / LLC() / SNAP(code=0x0800) / TCP4), 113))  # 802.2 LLC
    assert reason(bytes(CookedLinux(proto=0x000C)) + b"\0" * 4, 113) == "non_ip"  # CAN: short, still non_ip
    assert reason(bytes(CookedLinux(lladdrtype=824, proto=0x0000)) + b"\0" * 20, 113) == "non_ip"  # netlink
    assert reason(bytes(CookedLinuxV2(lladdrtype=824, proto=0x0800)) + bytes(TCP4), 276) == "non_ip"


@pytest.mark.parametrize("prefix", [b"\xff\x03\x00\x21", b"\x00\x21", b"\x21", b"\xff\x03\x21"])
@pytest.mark.parametrize("linktype", [9, 50])
def test_ppp_variants(prefix: bytes, linktype: int) -> None:
    check_tcp4(one(prefix + bytes(TCP4), linktype))
    v6 = prefix[:-1] + b"\x57"
    assert one(v6 + bytes(TCP6), linktype)["ip_version"] == 6
    lcp = (b"\xff\x03" if prefix.startswith(b"\xff") else b"") + b"\xc0\x21\x01\x01\x00\x04"
    assert reason(lcp, linktype) == "non_ip"


def test_cisco_hdlc() -> None:
    check_tcp4(one(b"\x0f\x00\x08\x00" + bytes(TCP4), 104))


def nflog(ip: bytes, family: int = 2, extra_tlvs: bool = True) -> bytes:
    def tlv(t: int, v: bytes) -> bytes:
        raw = struct.pack("<HH", 4 + len(v), t) + v
        return raw + b"\0" * (-len(raw) % 4)

    body = struct.pack("<BBH", family, 0, 0)
    if extra_tlvs:
        body += tlv(1, b"\x08\x00\x03\x00") + tlv(10, b"pre\0\0")  # packet header, prefix (odd, padded)
    return body + tlv(9, ip) + (tlv(11, b"\0\0\0\0") if extra_tlvs else b"")


def test_nflog() -> None:
    check_tcp4(one(nflog(bytes(TCP4)), 239))
    assert one(nflog(bytes(TCP6), family=10), 239)["ip_version"] == 6
    assert one(nflog(bytes(TCP4), family=0, extra_tlvs=False), 239)["ip_version"] == 4  # by the nibble
    assert reason(struct.pack("<BBH", 2, 0, 0) + struct.pack("<HH", 8, 1) + b"\0" * 4, 239) == "non_ip"


def radiotap(flags: int | None, tsft: bool = True, ext: bool = True) -> bytes:
    """A radiotap header with TSFT (8-aligned) and Flags, optionally an extended present bitmap."""
    present = (1 if tsft else 0) | (2 if flags is not None else 0) | (0x8000_0000 if ext else 0)
    words = struct.pack("<I", present) + (struct.pack("<I", 0x20) if ext else b"")
    body = b"\0\0\0\0" + words  # version, pad, len (patched), present words
    if tsft:
        body += b"\0" * (-len(body) % 8) + struct.pack("<Q", 123456)
    if flags is not None:
        body += bytes([flags])
    body += b"\x55" * 3  # antenna signal etc.
    return body[:2] + struct.pack("<H", len(body)) + body[4:]


def dot11(fc0: int, fc1: int, qos: bool = False, four_addr: bool = False) -> bytes:
    hdr = bytes([fc0, fc1]) + b"\0\0" + b"\x11" * 18 + b"\0\0"
    if four_addr:
        hdr += b"\x22" * 6
    if qos:
        hdr += b"\x00\x00"
    return hdr


SNAP_IP = b"\xaa\xaa\x03\x00\x00\x00\x08\x00"


def test_radiotap_80211_data_frames() -> None:
    data = 0x08  # type data, subtype 0
    qos_data = 0x88
    check_tcp4(one(radiotap(0) + dot11(data, 0x01) + SNAP_IP + bytes(TCP4), 127))
    check_tcp4(one(radiotap(None, tsft=False, ext=False) + dot11(qos_data, 0x02, qos=True) + SNAP_IP
                   + bytes(TCP4), 127))
    check_tcp4(one(radiotap(0) + dot11(qos_data, 0x03, qos=True, four_addr=True) + SNAP_IP + bytes(TCP4), 127))
    # QoS + order bit: a 4-byte HT control field follows the QoS control
    check_tcp4(one(radiotap(0) + dot11(qos_data, 0x81, qos=True) + b"\0" * 4 + SNAP_IP + bytes(TCP4), 127))
    # FCS at the end (radiotap flag 0x10): the 4 trailing bytes are not payload
    row = one(radiotap(0x10) + dot11(data, 0x01) + SNAP_IP + bytes(TCP4) + b"FCS!", 127)
    check_tcp4(row)
    # data padding (radiotap flag 0x20): header padded to 4 bytes (QoS header is 26 → 28)
    check_tcp4(one(radiotap(0x20) + dot11(qos_data, 0x01, qos=True) + b"\0\0" + SNAP_IP + bytes(TCP4), 127))


def test_radiotap_non_data_frames() -> None:
    assert reason(radiotap(0) + dot11(0x80, 0) + b"\0" * 40, 127) == "non_ip"  # beacon (management)
    assert reason(radiotap(0) + dot11(0x48, 0x01), 127) == "non_ip"  # null function (no data)
    assert reason(radiotap(0) + dot11(0x08, 0x41) + b"\0" * 60, 127) == "non_ip"  # protected (encrypted)
    assert reason(radiotap(0) + dot11(0x08, 0x01) + b"\xaa\xaa\x03\x00\x00\x00\x08\x06" + bytes(ARP()),
                  127) == "non_ip"
    assert reason(radiotap(0)[:6], 127) == "truncated_header"


def test_vxlan_inner_packet_is_reported() -> None:
    inner = Ether() / TCP4
    outer = Ether() / IP(src="172.16.0.1", dst="172.16.0.2") / UDP(sport=12345, dport=4789) / VXLAN(vni=42) / inner
    row = one(bytes(outer) + b"\0" * 8)  # outer Ethernet padding/trailer too
    check_tcp4(row)
    # nested VXLAN, and an ARP inside VXLAN
    twice = Ether() / IP() / UDP(dport=4789) / VXLAN() / Ether() / IP() / UDP(dport=4789) / VXLAN() / inner
    check_tcp4(one(bytes(twice)))
    assert reason(bytes(Ether() / IP() / UDP(dport=4789) / VXLAN() / Ether() / ARP())) == "non_ip"
    # without the VNI flag it is just UDP
    plain = one(bytes(Ether() / IP() / UDP(sport=1, dport=4789) / (b"\x00" * 8 + bytes(inner))))
    assert (plain["proto"], plain["dport"]) == (17, 4789)


def test_unsupported_linktype_and_mixed_batch() -> None:
    frames = [bytes(Ether() / TCP4), b"\x01\x02\x03", bytes(TCP4), bytes(Ether() / ARP()), bytes(Ether() / UDP4)]
    d, skipped = decode(frames, [1, 147, 101, 1, 1])
    assert skipped == {"unsupported_linktype": 1, "non_ip": 1}
    assert d.frame.tolist() == [1, 3, 5]  # capture order kept
    assert d.ts_ns.tolist() == [0, 2000, 4000]
    assert d.proto.tolist() == [6, 6, 17]


def test_empty_batch() -> None:
    d, skipped = decode([])
    assert len(d) == 0 and not skipped


def test_garbage_never_raises() -> None:
    rng = np.random.default_rng(1)
    base = [bytes(Ether() / Dot1Q() / TCP4), bytes(Ether() / TCP6), radiotap(0) + dot11(0x88, 1, qos=True) + SNAP_IP
            + bytes(TCP4), nflog(bytes(TCP4)), b"\xff\x03\x00\x21" + bytes(TCP4)]
    lts = [1, 1, 127, 239, 9]
    for _ in range(300):
        frames, kinds = [], []
        for f, lt in zip(base, lts, strict=True):
            b = bytearray(f)
            for _ in range(int(rng.integers(1, 6))):
                b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
            frames.append(bytes(b[: int(rng.integers(0, len(b) + 1))]))
            kinds.append(lt)
        d, _ = decode(frames, kinds)
        assert (d.payload_len >= 0).all() and (d.payload_len <= d.payload_wire_len).all()
        assert (d.payload_off + d.payload_len <= d.batch.offset[d.frame - 1] + d.batch.caplen[d.frame - 1]).all()


# ------------------------------------------------------------------------------------------------ corpus
corpus = pytest.mark.skipif(not MANIFEST.exists(), reason=f"corpus not found at {CORPUS}")


@corpus
@pytest.mark.corpus
@pytest.mark.parametrize("rel", CORPUS_FILES)
def test_corpus_every_packet_accounted_for(rel: str) -> None:
    try:
        reader = open_capture(CORPUS / rel, chunk_packets=700)
    except CaptureFormatError:
        assert rel == "pcap2har-andrewf/empty.pcap"
        return
    rows, skipped = 0, Counter[str]()
    for batch in reader.batches():
        d, s = decode_batch(batch)
        rows += len(d)
        skipped += s
        assert (np.diff(d.frame) > 0).all()
        assert (d.payload_len >= 0).all() and (d.payload_len <= d.payload_wire_len).all()
        assert set(np.unique(d.proto).tolist()) <= {6, 17}
    assert rows + sum(skipped.values()) == reader.stats.packets_read
    oracle = json.loads((CORPUS / "oracle" / (rel + ".json")).read_text())
    if oracle.get("tcp_connections", 0) or oracle.get("udp_streams", 0):
        assert rows > 0


def tshark_rows(path: Path) -> dict[int, tuple[object, ...]]:
    """frame → (proto, src, dst, sport, dport, seq, tcp.len / udp payload) from tshark's last layer."""
    fields = ["frame.number", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "tcp.srcport", "tcp.dstport",
              "tcp.seq_raw", "tcp.len", "udp.srcport", "udp.dstport", "udp.length"]
    cmd = [str(TSHARK), "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=l"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout  # rc 2 on a cut-short file
    rows: dict[int, tuple[object, ...]] = {}
    for line in out.splitlines():
        p = line.split("\t")
        src, dst = p[1] or p[2], p[3] or p[4]
        if p[5]:
            rows[int(p[0])] = (6, src, dst, int(p[5]), int(p[6]), int(p[7]), int(p[8]))
        elif p[9]:
            rows[int(p[0])] = (17, src, dst, int(p[9]), int(p[10]), 0, int(p[11]) - 8)
    return rows


# One or more capture per link type / encapsulation; each must agree with tshark on every frame.
TSHARK_FILES = [
    "zeek/http/get.pcap",  # Ethernet, pcap
    "zeek/http/1000-requests-one-dropped-response.pcap.gz",  # IPv6 loopback over Ethernet, gzip
    "zeek/http-vlan-0.pcap",  # 802.1Q
    "zeek/http-qinq-0.pcap",  # QinQ
    "zeek/vlan-qinqinq.pcap",  # triple tag
    "zeek/mixed-vlan-mpls.pcap",  # VLAN + MPLS, F5 Ethernet trailers
    "zeek/nflog-http.pcap",  # NFLOG (239)
    "zeek/tunnels/vxlan-encapsulated-http.pcap",  # VXLAN: the inner TCP is reported
    "zeek/ipv6-http-atomic-frag.pcap",  # IPv6 atomic fragments
    "zeek/http/connect-with-header.pcap",  # BSD NULL (0)
    "arkime/http2-nghttp2.pcap",  # NULL, another capture host
    "pcapplusplus/raw_ip.pcap",  # raw IP (101)
    "pcapplusplus/four_ipv6_http_streams.pcap",  # raw IP as link type 12
    "pcapplusplus/sll.pcap",  # Linux SLL (113)
    "suricata-verify/sll2-http-download.pcap",  # Linux SLL2 (276)
    "zeek/quic/quic-go_interop_retry.pcap",  # PPP (9) without address/control
    "zeek/quic/quic-go_interop_zerortt.pcap",
    "arkime/80211http.pcap",  # radiotap + 802.11 QoS data + LLC/SNAP
    "pcapplusplus/many_interfaces-1.pcapng",  # pcapng, per-packet link types (Ethernet + NULL)
    "pcap2har-mikekap/firefox-tls13-facebook-dsb.pcapng",  # pcapng, ns, GRO-sized frames
    "pcapplusplus/nanosecs_big_endian.pcap",  # big-endian ns pcap
    "pcap2har-andrewf/out-of-order.pcap",  # truncated last record
    "zeek/trunc/trunc-hdr.pcap",  # an 8-byte frame: truncated_header
    "ndpi/1kxun.pcap",  # a large mixed capture (UDP too)
]


@corpus
@pytest.mark.corpus
@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
@pytest.mark.parametrize("rel", TSHARK_FILES)
def test_corpus_fields_agree_with_tshark(rel: str) -> None:
    path = CORPUS / rel
    want = tshark_rows(path)
    got: dict[int, tuple[object, ...]] = {}
    for batch in open_capture(path).batches():
        d, _ = decode_batch(batch)
        for i in range(len(d)):
            seq = int(d.tcp_seq[i]) if d.proto[i] == 6 else 0
            got[int(d.frame[i])] = (int(d.proto[i]), format_ip(d.src_hi[i], d.src_lo[i]),
                                    format_ip(d.dst_hi[i], d.dst_lo[i]), int(d.sport[i]), int(d.dport[i]), seq,
                                    int(d.payload_wire_len[i]))
    assert got == want


@corpus
@pytest.mark.corpus
def test_corpus_snap_and_padding_lengths() -> None:
    """payload_len is what was captured: equal to the wire payload unless the snaplen cut the frame."""
    for rel in ("zeek/http/get.pcap", "zeek/mixed-vlan-mpls.pcap", "pcap2har-andrewf/http.pcap"):
        for batch in open_capture(CORPUS / rel).batches():
            d, _ = decode_batch(batch)
            full = batch.caplen[d.frame - batch.frame[0]] == batch.wirelen[d.frame - batch.frame[0]]
            assert (d.payload_len[full] == d.payload_wire_len[full]).all()


@corpus
@pytest.mark.corpus
def test_corpus_skip_reasons_on_known_files() -> None:
    def skips(rel: str) -> Counter[str]:
        total = Counter[str]()
        for batch in open_capture(CORPUS / rel).batches():
            total += decode_batch(batch)[1]
        return total

    assert skips("zeek/trunc/trunc-hdr.pcap") == {"truncated_header": 1}
    assert skips("zeek/quic/quic-go_interop_retry.pcap") == {"non_tcp_udp": 4}  # ICMPv6 neighbour discovery
    assert skips("pcap2har-andrewf/sajal.pcap") == {"non_ip": 2613, "non_tcp_udp": 7}  # ARP; ICMP


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**128 - 1))
def test_addresses_are_written_as_ipaddress_writes_them(v4: int, v6: int) -> None:
    format_ip.cache_clear()
    assert format_ip(0, (0xFFFF << 32) | v4) == str(ipaddress.IPv4Address(v4))
    assert format_ip(v6 >> 64, v6 & (2**64 - 1)) == (str(ipaddress.IPv6Address(v6)) if v6 >> 32 != 0xFFFF
                                                        else str(ipaddress.IPv4Address(v6 & 0xFFFF_FFFF)))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=10, max_size=10))
def test_connection_uids_are_base32_of_the_digest(digest: bytes) -> None:
    assert _base32_15(int.from_bytes(digest, "big")) == base64.b32encode(digest).decode("ascii")[:15]
