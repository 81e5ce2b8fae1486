"""QUIC connections over UDP in the pipeline (analyzer/flows/datagrams.py): flows become connections on a
QUIC long header, a new client first flight on the same endpoints is a new connection, every datagram is
accounted for (QUIC analyzed, other UDP skipped by reason), and the connection rows carry what the Initial
packets show. SNI, ALPN, version and timing against tshark are in tests/test_corpus.py (quic_disagreements).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, UDP
from scapy.packet import Raw
from scapy.utils import wrpcap

import analyzer
from analyzer.flows.datagrams import QUIC_IDLE_NS

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def _corpus(rel: str) -> str:
    path = CORPUS / rel
    if not path.exists():
        pytest.skip(f"{rel} is not in the corpus")
    return str(path)


def test_http3_connection_row() -> None:
    a = analyzer.analyze(_corpus("pcap2har-mikekap/http3-connection7.pcap"))
    quic = a.connections[a.connections["transport"] == "udp"]
    assert len(quic) == 1
    row = quic.iloc[0]
    assert (row["protocol"], row["sni"], row["alpn_offered"], row["quic_version"]) == (
        "h3", "www.google.com", "h3", "QUICv1")
    assert (row["client_port"], row["server_port"]) == (64350, 443)
    assert row["tls"] and row["tls_version"] == "TLS 1.3" and not row["tls_decrypted"]
    assert row["client_packets"] == 188 and row["server_packets"] == 597  # every datagram (tshark: same)
    assert row["handshake_rtt_ms"] > 0 and row["tls_handshake_ms"] >= row["handshake_rtt_ms"]
    assert a.summary["protocols"].get("h3") == 1
    assert a.summary["packets_analyzed"] + sum(a.summary["packets_skipped"].values()) == a.summary["packets_read"]


def test_a_resumption_from_the_same_port_is_a_new_connection() -> None:
    """quic-go's interop run: a 0-RTT resumption reuses the client port with new connection ids."""
    a = analyzer.analyze(_corpus("zeek/quic/quic-go_interop_zerortt.pcap"))
    quic = a.connections[a.connections["transport"] == "udp"].sort_values("ts_start")
    assert list(quic["client_port"]) == [60492, 49394, 49394]
    assert list(quic["sni"].fillna("")) == ["server4:443", "server4:443", ""]  # the 0-RTT one: no Initial SNI seen
    assert quic["uid"].is_unique


def test_other_udp_is_skipped_with_a_reason(tmp_path: Path) -> None:
    pkts = [IP(src="10.0.0.1", dst="10.0.0.53") / UDP(sport=5353 + i, dport=53) / DNS(qd=DNSQR(qname="a.test"))
            for i in range(3)]
    # looks like a QUIC v1 long header but carries garbage: a QUIC flow whose Initial does not decrypt
    pkts.append(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=40000, dport=443)
                / Raw(b"\xc0\x00\x00\x00\x01\x08" + bytes(8) + b"\x00" + bytes(1200)))
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i
    path = tmp_path / "udp.pcap"
    wrpcap(str(path), pkts)
    a = analyzer.analyze(str(path))
    assert a.summary["packets_skipped"] == {"udp_not_analyzed": 3}
    assert a.summary["packets_analyzed"] == 1
    quic = a.connections[a.connections["transport"] == "udp"]
    assert len(quic) == 1 and quic.iloc[0]["protocol"] == "unknown"
    assert (a.anomalies["name"].str.startswith("quic_")).any()


def test_idle_flows_are_finished_and_a_later_initial_starts_anew(tmp_path: Path) -> None:
    src = Path(_corpus("illustrated/illustrated-quic.pcap"))
    from scapy.utils import rdpcap

    first = rdpcap(str(src))
    later = rdpcap(str(src))
    shift = QUIC_IDLE_NS / 1e9 + 5
    for p in later:
        p.time = float(p.time) + shift
    path = tmp_path / "twice.pcap"
    wrpcap(str(path), list(first) + list(later))
    a = analyzer.analyze(str(path), chunk_packets=4)
    quic = a.connections[a.connections["transport"] == "udp"]
    assert len(quic) == 2 and quic["uid"].is_unique
    assert list(quic["sni"]) == ["example.ulfheim.net"] * 2
    assert list(quic["client_packets"]) == [4, 4] and list(quic["server_packets"]) == [4, 4]
