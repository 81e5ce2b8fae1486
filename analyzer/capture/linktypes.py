"""LINKTYPE_* values (tcpdump.org/linktypes.html) that the analyzer can decode, and their names.

This module owns the numbers and the human-readable names only. It knows nothing about how a link-layer
header is parsed (that is ``analyzer.flows.decode``) nor about file formats (``analyzer.capture.pcapfile``).
The values are the *file* link types (LINKTYPE_*), which differ from some platforms' DLT_* values; where a
value means different things on different platforms (12, 14) it is noted.
"""

from __future__ import annotations

from typing import Final

LINKTYPE_NULL: Final = 0  # BSD loopback: 4-byte address family in the capturing host's byte order
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_PPP: Final = 9  # PPP, optionally with HDLC-like address/control (FF 03) in front
LINKTYPE_RAW_12: Final = 12  # DLT_RAW on most BSDs/Linux (libpcap writes 101, old files keep 12)
LINKTYPE_RAW_14: Final = 14  # DLT_RAW on OpenBSD; Wireshark also reads 14 as raw IP
LINKTYPE_PPP_HDLC: Final = 50  # PPP in HDLC-like framing (RFC 1662)
LINKTYPE_RAW: Final = 101  # raw IPv4/IPv6, version from the first nibble
LINKTYPE_C_HDLC: Final = 104  # Cisco HDLC: address, control, 2-byte ethertype
LINKTYPE_LOOP: Final = 108  # OpenBSD loopback: like NULL but the family is meant to be big-endian
LINKTYPE_LINUX_SLL: Final = 113  # Linux "cooked" capture v1, 16-byte header
LINKTYPE_IEEE802_11_RADIOTAP: Final = 127  # 802.11 frames behind a radiotap header
LINKTYPE_IPV4: Final = 228  # raw IPv4 only
LINKTYPE_IPV6: Final = 229  # raw IPv6 only
LINKTYPE_NFLOG: Final = 239  # Linux netfilter NFLOG: TLVs, the packet in NFULA_PAYLOAD
LINKTYPE_LINUX_SLL2: Final = 276  # Linux "cooked" capture v2, 20-byte header

#: Every link type ``decode_batch`` understands, with a short name (capinfos's where it has one).
LINKTYPE_NAMES: Final[dict[int, str]] = {
    LINKTYPE_NULL: "null",
    LINKTYPE_ETHERNET: "ether",
    LINKTYPE_PPP: "ppp",
    LINKTYPE_RAW_12: "rawip",
    LINKTYPE_RAW_14: "rawip",
    LINKTYPE_PPP_HDLC: "ppp-hdlc",
    LINKTYPE_RAW: "rawip",
    LINKTYPE_C_HDLC: "chdlc",
    LINKTYPE_LOOP: "loop",
    LINKTYPE_LINUX_SLL: "linux-sll",
    LINKTYPE_IEEE802_11_RADIOTAP: "ieee-802-11-radiotap",
    LINKTYPE_IPV4: "rawip4",
    LINKTYPE_IPV6: "rawip6",
    LINKTYPE_NFLOG: "nflog",
    LINKTYPE_LINUX_SLL2: "linux-sll2",
}

SUPPORTED_LINKTYPES: Final[frozenset[int]] = frozenset(LINKTYPE_NAMES)


def linktype_name(linktype: int) -> str:
    """Short name of a link type, ``"linktype-N"`` for ones the decoder does not support."""
    return LINKTYPE_NAMES.get(int(linktype), f"linktype-{int(linktype)}")
