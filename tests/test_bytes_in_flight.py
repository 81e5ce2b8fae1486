"""max_bytes_in_flight (per direction) agrees with tshark's ``-o tcp.bif_seq_based:TRUE`` per connection.

Definition (DESIGN.md §4, as Wireshark's seq-based variant): highest sequence number sent so far minus the
highest ACK from the other side, minus the bytes above that ACK which the receiver's latest ACK SACKs.
The files include SACK loss recovery (206_example_b, 1kxun, m57). tshark's value is wrong on mid-stream
connections (huge numbers from an unknown base), so only connections with a SYN are compared. Known
differences not yet explained (issue 3): some connections of ndpi/netflix.pcap and
suricata-verify/tls-subjectaltname.pcap, where ours is higher (Wireshark may keep SACK state across ACKs).
"""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

import analyzer

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
FILES = [
    ROOT / "captures" / "keepalive-idle-timeout.pcap",
    ROOT / "captures" / "http10-and-close.pcap",
    ROOT / "captures" / "pipelining.pcap",
    ROOT / "captures" / "ipv6-pcapng.pcapng",
    CORPUS / "zeek" / "http" / "get.pcap",
    CORPUS / "zeek" / "http" / "bro.org.pcap",
    CORPUS / "suricata-verify" / "sll2-http-download.pcap",
    CORPUS / "chrissanders" / "http_espn_fail.pcapng",
    CORPUS / "arkime" / "wireshark-retrans.pcap",
    CORPUS / "zeek" / "http" / "206_example_b.pcap",  # SACK recovery
    CORPUS / "zeek" / "http" / "m57-long-49583-80.pcap",  # SACK recovery, capture gaps
    CORPUS / "ndpi" / "1kxun.pcap",
]


def _tshark_max_bif(path: Path) -> dict[tuple[int, int], int]:
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-o", "tcp.bif_seq_based:TRUE", "-Y", "tcp.len > 0", "-T", "fields",
         "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.analysis.bytes_in_flight"],
        capture_output=True, text=True, check=True).stdout
    best: dict[tuple[int, int], int] = defaultdict(int)
    for line in out.splitlines():
        _stream, sport, dport, bif = line.split("\t")
        if bif:
            key = (int(sport), int(dport))
            best[key] = max(best[key], int(bif))
    return best


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_max_bytes_in_flight_agrees_with_tshark(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} not available")
    tshark = _tshark_max_bif(path)
    result = analyzer.analyze(str(path))
    compared = 0
    for row in result.connections.itertuples():
        if not row.syn_seen:
            continue
        for key, ours in (((row.server_port, row.client_port), row.max_bytes_in_flight),
                          ((row.client_port, row.server_port), row.max_bytes_in_flight_client)):
            expected = tshark.get((int(key[0]), int(key[1])))
            got = None if pd.isna(ours) else int(ours)
            assert got == expected, (row.uid, key, got, expected)
            compared += 1
    assert compared > 0
