"""Link, network and transport headers of a ``PacketBatch`` → ``DecodedPackets`` (TCP and UDP rows).

This module owns L2–L4 header decoding: link types (``analyzer.capture.linktypes``), VLAN/QinQ tags, MPLS,
PPPoE, LLC/SNAP, IPv4/IPv6 (extension headers, fragments), TCP/UDP headers, and VXLAN decapsulation. It must
not know about files (the readers) nor about connections or anything above the transport header (the flow
and HTTP stages).

Everything is vectorized over all packets of a batch: each step gathers header bytes for the packets still
being decoded with numpy fancy indexing. Python loops run only over *header layers* ("while some packet still
has a VLAN tag, peel one off those"), never over packets. Measured: about 3.5 M packets/s for
``decode_batch`` alone on Ethernet/IPv4/TCP traffic (one core; see ``analyzer.capture.pcapfile`` for the file).

Every input packet ends up either as a row or as exactly one count in the returned ``Counter``:

* ``unsupported_linktype``: a link type we do not decode.
* ``non_ip``: ARP, LLDP, 802.11 management/control/null/protected frames, LCP, non-SNAP LLC, ...
* ``non_tcp_udp``: IP carrying ICMP, IGMP, ESP, tunnels other than VXLAN, ...
* ``ip_fragment``: a real IPv4/IPv6 fragment (atomic fragments, offset 0 without MF, decode normally).
* ``truncated_header``: the captured bytes end inside a link, IP or transport header.
* ``malformed_ip``: bad IP version, IHL < 5, IP length shorter than the headers, TCP data offset < 5.

Lengths. ``payload_wire_len`` is the payload per the IP length field minus the IP (with extension headers)
and transport headers, so Ethernet padding and trailers (FCS, F5 trailers) never count; ``payload_len`` is
the part of that payload actually captured. An IPv4 total length (or IPv6 payload length) of 0 is taken as
segmentation offload (dpkt's note on ``ip.len == 0``) and the frame's own length is used instead.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from analyzer.capture import linktypes as lt
from analyzer.capture.batch import PacketBatch
from analyzer.flows.packets import TCP, UDP, DecodedPackets

__all__ = ["SKIP_REASONS", "VXLAN_PORT", "decode_batch"]

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
IDX = npt.NDArray[np.intp]

VXLAN_PORT: Final = 4789
#: Nested VXLAN decapsulations followed at most (then the outer UDP packet is reported as is).
MAX_TUNNEL_DEPTH: Final = 4
#: Link-layer tags (VLAN, MPLS labels, PPPoE, LLC) peeled at most before giving up as ``non_ip``.
MAX_L2_LAYERS: Final = 16
#: IPv6 extension headers skipped at most before giving up as ``malformed_ip``.
MAX_IPV6_EXT: Final = 16

# reason codes (index into SKIP_REASONS); 0 = still decoding / decoded
_OK: Final = 0
_UNSUPPORTED: Final = 1
_NON_IP: Final = 2
_NON_TCP_UDP: Final = 3
_FRAGMENT: Final = 4
_TRUNCATED: Final = 5
_MALFORMED: Final = 6
SKIP_REASONS: Final = (
    "",
    "unsupported_linktype",
    "non_ip",
    "non_tcp_udp",
    "ip_fragment",
    "truncated_header",
    "malformed_ip",
)

# ethertypes, plus pseudo values for "IP, version from the first nibble"
ETH_IPV4: Final = 0x0800
ETH_IPV6: Final = 0x86DD
_ETH_VLAN: Final = (0x8100, 0x88A8, 0x9100)
_ETH_MPLS: Final = (0x8847, 0x8848)
_ETH_PPPOE_SESSION: Final = 0x8864
_ETH_MAX_LENGTH: Final = 0x05FF  # below 0x0600 the field is an 802.3 length: LLC follows
_RAW_IP: Final = -1  # raw link types: 4 or 6 by the version nibble, anything else is malformed_ip
_MPLS_PAYLOAD: Final = -2  # after the bottom label: 4 or 6 by the nibble, anything else is non_ip
_NOT_IP: Final = -3  # known not to be IP (netlink, CAN, ...)
_ARPHRD_NETLINK: Final = 824
_PPP_IPV4: Final = 0x0021
_PPP_IPV6: Final = 0x0057
_NFULA_PAYLOAD: Final = 9
_BSD_AF_INET: Final = 2
_BSD_AF_INET6: Final = (24, 28, 30)  # NetBSD/OpenBSD, FreeBSD, Darwin
_LINUX_AF_INET6: Final = 10  # NFLOG's family byte is a Linux AF_* value
_IPV6_EXT: Final = (0, 43, 44, 51, 60)  # hop-by-hop, routing, fragment, AH, destination options


# ---------------------------------------------------------------------------------------------- gathers
# All gathers clip their index to the buffer: every read is preceded by a length check against the
# packet's captured end, so a clipped value is never used; the clip only guards against an IndexError.
_AR = np.arange(64, dtype=np.int64)


def _hdr(buf: U8, at: I64, width: int) -> U8:
    """``width`` bytes at each offset, as a C-contiguous (n, width) matrix (fields are views of it).

    Rows of a sliding-window view are gathered (one ``width``-byte copy per packet, no index matrix).
    """
    last = buf.shape[0] - width
    if last < 0:  # a buffer shorter than the header: every such read is guarded anyway
        return np.take(buf, at[:, None] + _AR[:width], mode="clip")
    return sliding_window_view(buf, width)[np.minimum(at, last)]


def _isin(values: I64, choices: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """``np.isin`` for a handful of constants (cheaper than its sort-based path on small sets)."""
    mask = values == choices[0]
    for c in choices[1:]:
        mask |= values == c
    return mask


def _u8(buf: U8, idx: I64) -> I64:
    return np.take(buf, idx, mode="clip").astype(np.int64)


def _u16be(buf: U8, idx: I64) -> I64:
    return _hdr(buf, idx, 2).view(">u2")[:, 0].astype(np.int64)


def _u16le(buf: U8, idx: I64) -> I64:
    return _hdr(buf, idx, 2).view("<u2")[:, 0].astype(np.int64)


def _u32be(buf: U8, idx: I64) -> I64:
    return _hdr(buf, idx, 4).view(">u4")[:, 0].astype(np.int64)


def _u32le(buf: U8, idx: I64) -> I64:
    return _hdr(buf, idx, 4).view("<u4")[:, 0].astype(np.int64)


class _State:
    """Per-row decoding state for one level (the packets of a batch, or the inner frames of tunnels)."""

    def __init__(self, buf: U8, start: I64, end: I64, wire_end: I64) -> None:
        n = start.shape[0]
        self.buf = buf
        self.off = start.copy()  # current header offset
        self.end = end.copy()  # end of the captured bytes of this frame
        self.wire_end = wire_end.copy()  # end of the frame on the wire (>= end)
        self.etype = np.zeros(n, dtype=np.int64)  # what is at ``off`` (ethertype or pseudo value)
        self.reason = np.zeros(n, dtype=np.int8)

    def alive(self, rows: IDX | None = None) -> IDX:
        if rows is None:
            return np.flatnonzero(self.reason == _OK)
        return rows[self.reason[rows] == _OK]

    def need(self, rows: IDX, nbytes: I64 | int) -> IDX:
        """Rows with ``nbytes`` captured at their current offset; the others are marked truncated."""
        ok = self.off[rows] + nbytes <= self.end[rows]
        self.reason[rows[~ok]] = _TRUNCATED
        return rows[ok]

    def classify(self, rows: IDX, code: npt.NDArray[np.int64]) -> tuple[IDX, npt.NDArray[np.bool_]]:
        """Record non-zero reason ``code``s; return the rows that passed and the mask selecting them."""
        ok = code == _OK
        bad = ~ok
        self.reason[rows[bad]] = code[bad]
        return rows[ok], ok

    def fail(self, rows: IDX, mask: npt.NDArray[np.bool_], reason: int) -> IDX:
        """Mark ``rows[mask]`` with ``reason``; return the others."""
        self.reason[rows[mask]] = reason
        return rows[~mask]


# ---------------------------------------------------------------------------------------------- link layers
def _link_ethernet(s: _State, rows: IDX) -> None:
    rows = s.need(rows, 14)
    s.etype[rows] = _u16be(s.buf, s.off[rows] + 12)
    s.off[rows] += 14


def _link_raw(s: _State, rows: IDX) -> None:
    s.etype[rows] = _RAW_IP


def _link_ipv4(s: _State, rows: IDX) -> None:
    s.etype[rows] = ETH_IPV4


def _link_ipv6(s: _State, rows: IDX) -> None:
    s.etype[rows] = ETH_IPV6


def _link_null(s: _State, rows: IDX) -> None:
    """BSD loopback / OpenBSD LOOP: a 4-byte address family in either byte order."""
    rows = s.need(rows, 4)
    at = s.off[rows]
    fam = np.minimum(_u32le(s.buf, at), _u32be(s.buf, at))  # the small reading is the right one
    et = np.where(fam == _BSD_AF_INET, ETH_IPV4, np.where(_isin(fam, _BSD_AF_INET6), ETH_IPV6, 0))
    rows = s.fail(rows, et == 0, _NON_IP)
    s.etype[rows] = et[et != 0]
    s.off[rows] += 4


def _ppp_to_ether(proto: I64) -> I64:
    return np.where(proto == _PPP_IPV4, ETH_IPV4, np.where(proto == _PPP_IPV6, ETH_IPV6, 0))


def _link_ppp(s: _State, rows: IDX) -> None:
    """PPP (9) and PPP in HDLC framing (50): optional FF 03, then a 1- or 2-byte protocol (PFC)."""
    rows = s.need(rows, 2)
    hdlc = _u16be(s.buf, s.off[rows]) == 0xFF03
    s.off[rows[hdlc]] += 2
    rows = s.need(rows, 1)
    first = _u8(s.buf, s.off[rows])
    short = (first & 1) == 1  # protocol-field compression: an odd first byte is the whole protocol
    rows_long = s.need(rows[~short], 2)
    proto = np.zeros(s.off.shape[0], dtype=np.int64)
    proto[rows[short]] = first[short]
    proto[rows_long] = _u16be(s.buf, s.off[rows_long])
    s.off[rows[short]] += 1
    s.off[rows_long] += 2
    rows = np.concatenate([rows[short], rows_long])
    et = _ppp_to_ether(proto[rows])
    rows = s.fail(rows, et == 0, _NON_IP)
    s.etype[rows] = et[et != 0]


def _link_chdlc(s: _State, rows: IDX) -> None:
    rows = s.need(rows, 4)
    s.etype[rows] = _u16be(s.buf, s.off[rows] + 2)
    s.off[rows] += 4


def _sll_protocol(proto: I64) -> I64:
    """The cooked-capture protocol field as an ethertype: 4 (802.2 LLC) → LLC follows; other small values
    (Novell 802.3, CAN, netlink families, ...) → a value nothing matches, i.e. ``non_ip``."""
    return np.where(proto == 0x0004, 0, np.where(proto <= _ETH_MAX_LENGTH, _NOT_IP, proto))


def _link_sll(s: _State, rows: IDX) -> None:
    """Linux cooked v1: packet type, ARPHRD type, address length, address (8), protocol."""
    rows = s.need(rows, 16)
    h = _hdr(s.buf, s.off[rows], 16).view(">u2")
    s.etype[rows] = np.where(h[:, 1] == _ARPHRD_NETLINK, _NOT_IP, _sll_protocol(h[:, 7].astype(np.int64)))
    s.off[rows] += 16


def _link_sll2(s: _State, rows: IDX) -> None:
    """Linux cooked v2: protocol, reserved, interface index, ARPHRD type, packet type, address."""
    rows = s.need(rows, 20)
    h = _hdr(s.buf, s.off[rows], 20).view(">u2")
    s.etype[rows] = np.where(h[:, 4] == _ARPHRD_NETLINK, _NOT_IP, _sll_protocol(h[:, 0].astype(np.int64)))
    s.off[rows] += 20


def _link_nflog(s: _State, rows: IDX) -> None:
    """NFLOG: family, version, resource id, then TLVs (host-order length/type, padded to 4) up to
    NFULA_PAYLOAD, which holds the IP packet."""
    buf = s.buf
    rows = s.need(rows, 4)
    family = _u8(buf, s.off[rows])
    s.etype[rows] = np.where(family == _BSD_AF_INET, ETH_IPV4, np.where(family == _LINUX_AF_INET6, ETH_IPV6,
                                                                          _RAW_IP))
    s.off[rows] += 4
    todo = rows
    while todo.size:
        todo = s.fail(todo, s.off[todo] >= s.end[todo], _NON_IP)  # no TLV left and no payload
        todo = s.need(todo, 4)
        at = s.off[todo]
        tlen = _u16le(buf, at)
        todo = s.fail(todo, tlen < 4, _TRUNCATED)  # a TLV that cannot even hold its own header
        at, tlen = at[tlen >= 4], tlen[tlen >= 4]
        found = (_u16le(buf, at + 2) & 0x7FFF) == _NFULA_PAYLOAD
        hit = todo[found]
        tlv_end = at[found] + tlen[found]
        s.end[hit] = np.minimum(s.end[hit], tlv_end)
        s.wire_end[hit] = tlv_end
        s.off[hit] += 4
        todo = todo[~found]
        s.off[todo] += (tlen[~found] + 3) & ~3


def _link_radiotap(s: _State, rows: IDX) -> None:
    """Radiotap + 802.11: data frames only (not null, not protected, not A-MSDU); QoS control, HT control,
    radiotap's FCS-at-end and data-padding flags honoured; LLC/SNAP follows."""
    rows = s.need(rows, 8)
    buf = s.buf
    start = s.off[rows]
    rt_len = _u16le(buf, start + 2)
    present = _u32le(buf, start + 4)
    ok = rt_len >= 8
    rows = s.fail(rows, ~ok, _TRUNCATED)
    start, rt_len, present = start[ok], rt_len[ok], present[ok]
    # radiotap Flags: after every present word (bit 31 = another word follows) and the 8-aligned TSFT
    pos = np.full(rows.shape[0], 8, dtype=np.int64)  # relative to the radiotap start
    ext = np.flatnonzero(present & 0x8000_0000)
    while ext.size:
        ext = ext[pos[ext] + 4 <= rt_len[ext]]
        word = _u32le(buf, start[ext] + pos[ext])
        pos[ext] += 4
        ext = ext[(word & 0x8000_0000) != 0]
    pos = np.where((present & 1) == 1, ((pos + 7) & ~7) + 8, pos)
    has_flags = ((present & 2) == 2) & (pos < rt_len)
    flags = np.zeros(rows.shape[0], dtype=np.int64)
    flags[has_flags] = _u8(buf, start[has_flags] + pos[has_flags])
    fcs = rows[(flags & 0x10) != 0]
    s.end[fcs] = np.maximum(s.end[fcs] - 4, s.off[fcs])
    s.wire_end[fcs] -= 4
    datapad = np.zeros(s.off.shape[0], dtype=bool)
    datapad[rows] = (flags & 0x20) != 0
    s.off[rows] = start + rt_len
    # 802.11 MAC header
    rows = s.need(rows, 24)
    h = s.off[rows]
    fc0 = _u8(buf, h)
    fc1 = _u8(buf, h + 1)
    subtype = fc0 >> 4
    is_data = (((fc0 >> 2) & 3) == 2) & ((subtype & 0x4) == 0) & ((fc1 & 0x40) == 0)
    hdr = np.where((fc1 & 3) == 3, 30, 24)  # ToDS and FromDS: a fourth address
    qos = (subtype & 0x8) != 0
    qos_ok = qos & (h + hdr + 2 <= s.end[rows])
    amsdu = np.zeros(rows.shape[0], dtype=bool)
    amsdu[qos_ok] = (_u8(buf, h[qos_ok] + hdr[qos_ok]) & 0x80) != 0
    hdr = hdr + np.where(qos, 2, 0) + np.where(qos & ((fc1 & 0x80) != 0), 4, 0)  # QoS, then HT control
    hdr = np.where(datapad[rows], (hdr + 3) & ~3, hdr)
    keep = is_data & ~amsdu
    rows = s.fail(rows, ~keep, _NON_IP)
    s.off[rows] += hdr[keep]
    s.etype[rows] = 0  # an LLC header follows


_LINK_HANDLERS: Final = {
    lt.LINKTYPE_NULL: _link_null,
    lt.LINKTYPE_LOOP: _link_null,
    lt.LINKTYPE_ETHERNET: _link_ethernet,
    lt.LINKTYPE_PPP: _link_ppp,
    lt.LINKTYPE_PPP_HDLC: _link_ppp,
    lt.LINKTYPE_RAW: _link_raw,
    lt.LINKTYPE_RAW_12: _link_raw,
    lt.LINKTYPE_RAW_14: _link_raw,
    lt.LINKTYPE_IPV4: _link_ipv4,
    lt.LINKTYPE_IPV6: _link_ipv6,
    lt.LINKTYPE_C_HDLC: _link_chdlc,
    lt.LINKTYPE_LINUX_SLL: _link_sll,
    lt.LINKTYPE_LINUX_SLL2: _link_sll2,
    lt.LINKTYPE_NFLOG: _link_nflog,
    lt.LINKTYPE_IEEE802_11_RADIOTAP: _link_radiotap,
}


# ---------------------------------------------------------------------------------------------- L2 tags
def _l2_layers(s: _State, rows: IDX) -> IDX:
    """Peel VLAN tags, MPLS labels, PPPoE session headers and LLC/SNAP until an IP ethertype (or a
    pseudo "IP by nibble" value) is at ``off``. Returns the rows whose next header is IPv4 or IPv6."""
    buf = s.buf
    rows = s.alive(rows)
    et = s.etype[rows]
    todo = rows[(et != ETH_IPV4) & (et != ETH_IPV6)]  # the common case has no layer to peel
    for _ in range(MAX_L2_LAYERS):
        et = s.etype[todo]
        vlan = _isin(et, _ETH_VLAN)
        mpls = _isin(et, _ETH_MPLS)
        pppoe = et == _ETH_PPPOE_SESSION
        llc = (et >= 0) & (et <= _ETH_MAX_LENGTH)
        layered = vlan | mpls | pppoe | llc
        todo, vlan, mpls = todo[layered], vlan[layered], mpls[layered]
        pppoe, llc = pppoe[layered], llc[layered]
        if not todo.size:
            break
        if vlan.any():  # TCI (2), inner ethertype (2)
            r = s.need(todo[vlan], 4)
            s.etype[r] = _u16be(buf, s.off[r] + 2)
            s.off[r] += 4
        if mpls.any():  # label (20 bits), TC (3), bottom-of-stack (1), TTL (8)
            r = s.need(todo[mpls], 4)
            bottom = (_u8(buf, s.off[r] + 2) & 1) == 1
            s.off[r] += 4
            s.etype[r[bottom]] = _MPLS_PAYLOAD
        if pppoe.any():  # ver/type, code, session id, length, then the PPP protocol
            r = s.need(todo[pppoe], 8)
            e = _ppp_to_ether(_u16be(buf, s.off[r] + 6))
            r = s.fail(r, e == 0, _NON_IP)
            s.etype[r] = e[e != 0]
            s.off[r] += 8
        if llc.any():  # DSAP AA, SSAP AA, control 03, OUI (3), ethertype (2)
            r = s.need(todo[llc], 8)
            h = _hdr(buf, s.off[r], 8)
            snap = (h[:, 0] == 0xAA) & (h[:, 1] == 0xAA) & (h[:, 2] == 0x03)
            r = s.fail(r, ~snap, _NON_IP)
            s.etype[r] = h[snap].view(">u2")[:, 3]
            s.off[r] += 8
        todo = s.alive(todo)
    else:  # more layers than anyone stacks: give up on those still inside them
        et = s.etype[todo]
        deep = _isin(et, _ETH_VLAN + _ETH_MPLS + (_ETH_PPPOE_SESSION,)) | ((et >= 0) & (et <= _ETH_MAX_LENGTH))
        s.reason[todo[deep]] = _NON_IP
    rows = s.alive(rows)
    # IP by version nibble (raw link types, after the bottom MPLS label, NFLOG with an odd family)
    et = s.etype[rows]
    nib = rows[(et == _RAW_IP) | (et == _MPLS_PAYLOAD)]
    if nib.size:
        nib = s.need(nib, 1)
        version = _u8(buf, s.off[nib]) >> 4
        e = np.where(version == 4, ETH_IPV4, np.where(version == 6, ETH_IPV6, 0))
        bad = nib[e == 0]
        s.reason[bad] = np.where(s.etype[bad] == _RAW_IP, _MALFORMED, _NON_IP)
        s.etype[nib[e != 0]] = e[e != 0]
        rows = s.alive(rows)
    et = s.etype[rows]
    return s.fail(rows, (et != ETH_IPV4) & (et != ETH_IPV6), _NON_IP)


# ---------------------------------------------------------------------------------------------- L3/L4
class _Out:
    """Decoded columns for the rows of one level (full length; only rows with reason 0 are meaningful)."""

    def __init__(self, n: int) -> None:
        self.ip_version = np.zeros(n, dtype=np.uint8)
        self.src_hi = np.zeros(n, dtype=np.uint64)
        self.src_lo = np.zeros(n, dtype=np.uint64)
        self.dst_hi = np.zeros(n, dtype=np.uint64)
        self.dst_lo = np.zeros(n, dtype=np.uint64)
        self.proto = np.zeros(n, dtype=np.uint8)
        self.ip_end = np.zeros(n, dtype=np.int64)
        self.sport = np.zeros(n, dtype=np.uint16)
        self.dport = np.zeros(n, dtype=np.uint16)
        self.tcp_seq = np.zeros(n, dtype=np.uint32)
        self.tcp_ack = np.zeros(n, dtype=np.uint32)
        self.tcp_flags = np.zeros(n, dtype=np.uint16)
        self.tcp_window = np.zeros(n, dtype=np.uint16)
        self.l4_off = np.zeros(n, dtype=np.int64)
        self.l4_hdr_len = np.zeros(n, dtype=np.int32)
        self.payload_off = np.zeros(n, dtype=np.int64)
        self.payload_len = np.zeros(n, dtype=np.int32)
        self.payload_wire_len = np.zeros(n, dtype=np.int32)
        self.reason = np.zeros(n, dtype=np.int8)

    _FIELDS: Final = (
        "ip_version", "src_hi", "src_lo", "dst_hi", "dst_lo", "proto", "ip_end", "sport", "dport", "tcp_seq",
        "tcp_ack", "tcp_flags", "tcp_window", "l4_off", "l4_hdr_len", "payload_off", "payload_len",
        "payload_wire_len", "reason",
    )

    def put(self, rows: IDX, other: _Out) -> None:
        """Overwrite ``rows`` with all rows of ``other`` (the decapsulated inner packets)."""
        for name in self._FIELDS:
            getattr(self, name)[rows] = getattr(other, name)


def _ipv4(s: _State, rows: IDX, out: _Out) -> IDX:
    """IPv4: version, IHL (options skipped), total length (0 = offload), fragments, addresses."""
    at = s.off[rows]
    end = s.end[rows]
    h = _hdr(s.buf, at, 20)  # garbage past ``end``: such rows are classified before anything is used
    b0 = h[:, 0]
    ihl = (b0 & 15).astype(np.int64) * 4
    h16 = h.view(">u2")
    tot = h16[:, 1].astype(np.int64)
    code = np.select(
        [
            at + 20 > end,
            ((b0 >> 4) != 4) | (ihl < 20),
            at + ihl > end,
            (h16[:, 3] & 0x3FFF) != 0,  # MF set or a fragment offset: a real fragment
            (tot != 0) & (tot < ihl),
        ],
        [_TRUNCATED, _MALFORMED, _TRUNCATED, _FRAGMENT, _MALFORMED],
        _OK,
    )
    rows, ok = s.classify(rows, code)
    at, ihl, tot, h = at[ok], ihl[ok], tot[ok], h[ok]
    h32 = h.view(">u4")
    out.ip_version[rows] = 4
    out.proto[rows] = h[:, 9]
    out.src_lo[rows] = h32[:, 3].astype(np.uint64) | np.uint64(0xFFFF_0000_0000)
    out.dst_lo[rows] = h32[:, 4].astype(np.uint64) | np.uint64(0xFFFF_0000_0000)
    out.ip_end[rows] = np.where(tot == 0, s.wire_end[rows], at + tot)  # 0: segmentation offload
    s.off[rows] = at + ihl
    return rows


def _ipv6(s: _State, rows: IDX, out: _Out) -> IDX:
    buf = s.buf
    rows = s.need(rows, 40)
    h = _hdr(buf, s.off[rows], 40)
    bad = (h[:, 0] >> 4) != 6
    rows, h = s.fail(rows, bad, _MALFORMED), h[~bad]
    at = s.off[rows]
    plen = h.view(">u2")[:, 2].astype(np.int64)
    addr = h.view(">u8")
    out.ip_version[rows] = 6
    out.src_hi[rows] = addr[:, 1]
    out.src_lo[rows] = addr[:, 2]
    out.dst_hi[rows] = addr[:, 3]
    out.dst_lo[rows] = addr[:, 4]
    out.ip_end[rows] = np.where(plen == 0, s.wire_end[rows], at + 40 + plen)  # 0: jumbogram or offload
    nh = np.zeros(s.off.shape[0], dtype=np.int64)
    nh[rows] = h[:, 6]
    s.off[rows] = at + 40
    ext = rows[_isin(nh[rows], _IPV6_EXT)]
    for _ in range(MAX_IPV6_EXT):
        if not ext.size:
            break
        ext = s.need(ext, 8)
        at = s.off[ext]
        e = _hdr(buf, at, 4)
        kind = nh[ext]
        hlen = e[:, 1].astype(np.int64)
        hdr_len = np.where(kind == 44, 8, np.where(kind == 51, (hlen + 2) * 4, (hlen + 1) * 8))
        fo = e.view(">u2")[:, 1]
        frag = (kind == 44) & (((fo & 0xFFF8) != 0) | ((fo & 1) == 1))  # offset or M: a real fragment
        ext = s.fail(ext, frag, _FRAGMENT)
        nh[ext] = e[~frag, 0]
        s.off[ext] = at[~frag] + hdr_len[~frag]
        ext = ext[_isin(nh[ext], _IPV6_EXT)]
    else:
        s.reason[ext] = _MALFORMED
    rows = s.alive(rows)
    out.proto[rows] = nh[rows]
    return rows


def _transport(s: _State, rows: IDX, out: _Out) -> IDX:
    """TCP (data offset, options skipped) and UDP headers; payload offsets and lengths."""
    proto = out.proto[rows]
    is_tcp = proto == TCP
    rows = s.fail(rows, ~is_tcp & (proto != UDP), _NON_TCP_UDP)
    is_tcp = out.proto[rows] == TCP
    tcp = rows[is_tcp]
    at = s.off[tcp]
    end = s.end[tcp]
    h = _hdr(s.buf, at, 20)
    doff = (h[:, 12] >> 4).astype(np.int64) * 4
    code = np.select([at + 20 > end, doff < 20, at + doff > end], [_TRUNCATED, _MALFORMED, _TRUNCATED], _OK)
    tcp, ok = s.classify(tcp, code)
    h, doff = h[ok], doff[ok]
    h16 = h.view(">u2")
    h32 = h.view(">u4")
    out.sport[tcp] = h16[:, 0]
    out.dport[tcp] = h16[:, 1]
    out.tcp_seq[tcp] = h32[:, 1]
    out.tcp_ack[tcp] = h32[:, 2]
    out.tcp_flags[tcp] = ((h[:, 12].astype(np.uint16) & 1) << 8) | h[:, 13]
    out.tcp_window[tcp] = h16[:, 7]
    out.l4_hdr_len[tcp] = doff
    udp = s.need(rows[~is_tcp], 8)
    h16 = _hdr(s.buf, s.off[udp], 4).view(">u2")
    out.sport[udp] = h16[:, 0]
    out.dport[udp] = h16[:, 1]
    out.l4_hdr_len[udp] = 8
    rows = s.alive(rows)
    l4 = s.off[rows]
    payload = l4 + out.l4_hdr_len[rows]
    ip_end = out.ip_end[rows]
    ok = ip_end >= payload
    rows = s.fail(rows, ~ok, _MALFORMED)  # the IP length does not even cover the headers
    l4, payload, ip_end = l4[ok], payload[ok], ip_end[ok]
    out.l4_off[rows] = l4
    out.payload_off[rows] = payload
    out.payload_wire_len[rows] = ip_end - payload
    out.payload_len[rows] = np.maximum(np.minimum(s.end[rows], ip_end) - payload, 0)
    return rows


def _decode_level(buf: U8, linktype: npt.NDArray[np.uint16], start: I64, end: I64, wire_end: I64,
                  depth: int) -> _Out:
    s = _State(buf, start, end, wire_end)
    n = start.shape[0]
    out = _Out(n)
    for value in np.unique(linktype).tolist():
        rows = np.flatnonzero(linktype == value)
        handler = _LINK_HANDLERS.get(value)
        if handler is None:
            s.reason[rows] = _UNSUPPORTED
        else:
            handler(s, rows)
    rows = _l2_layers(s, s.alive())
    et = s.etype[rows]
    _ipv4(s, rows[et == ETH_IPV4], out)
    _ipv6(s, rows[et == ETH_IPV6], out)
    rows = _transport(s, s.alive(), out)
    out.reason = s.reason
    if depth < MAX_TUNNEL_DEPTH:
        vx = rows[(out.proto[rows] == UDP) & (out.dport[rows] == VXLAN_PORT) & (out.payload_len[rows] >= 8)]
        if vx.size:
            vx = vx[(_u8(buf, out.payload_off[vx]) & 0x08) != 0]  # the "VNI valid" flag
        if vx.size:
            inner_start = out.payload_off[vx] + 8
            inner = _decode_level(
                buf,
                np.full(vx.shape[0], lt.LINKTYPE_ETHERNET, dtype=np.uint16),
                inner_start,
                np.minimum(s.end[vx], out.ip_end[vx]),
                out.ip_end[vx],
                depth + 1,
            )
            out.put(vx, inner)
    return out


def decode_batch(batch: PacketBatch) -> tuple[DecodedPackets, Counter[str]]:
    """Decode every packet of ``batch``: TCP and UDP rows in capture order, and skip counts by reason.

    ``len(decoded) + sum(skipped.values()) == len(batch)`` always holds.
    """
    start = batch.offset.astype(np.int64, copy=False)
    end = start + batch.caplen.astype(np.int64)
    wire_end = start + np.maximum(batch.wirelen, batch.caplen).astype(np.int64)
    out = _decode_level(batch.buf, batch.linktype, start, end, wire_end, 0)
    counts = np.bincount(out.reason.astype(np.int64), minlength=len(SKIP_REASONS))
    skipped: Counter[str] = Counter(
        {SKIP_REASONS[code]: int(c) for code, c in enumerate(counts.tolist()) if code != _OK and c}
    )
    keep = np.flatnonzero(out.reason == _OK)
    decoded = DecodedPackets(
        batch,
        batch.frame[keep],
        batch.ts_ns[keep],
        out.ip_version[keep],
        out.src_hi[keep],
        out.src_lo[keep],
        out.dst_hi[keep],
        out.dst_lo[keep],
        out.proto[keep],
        out.sport[keep],
        out.dport[keep],
        out.tcp_seq[keep],
        out.tcp_ack[keep],
        out.tcp_flags[keep],
        out.tcp_window[keep],
        out.l4_off[keep],
        out.l4_hdr_len[keep],
        out.payload_off[keep],
        out.payload_len[keep],
        out.payload_wire_len[keep],
    )
    return decoded, skipped
