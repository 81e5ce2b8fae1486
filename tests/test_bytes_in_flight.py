"""Bytes in flight agree with tshark's ``-o tcp.bif_seq_based:TRUE``: the maximum per connection and
direction, and the value of every data packet.

Definition (DESIGN.md §4, as Wireshark's seq-based variant): highest sequence number sent so far minus the
highest ACK from the other side, minus the bytes above that ACK which the receiver's latest ACK SACKs (a
SYN or FIN is not counted on the segment that carries it). tshark's value is wrong on mid-stream
connections (huge numbers from an unknown base) and on sessions it restarts on reused ports, so only
connections with a SYN are compared.

Justified differences, packet by packet (the only list of them; ``_wireshark_bif`` applies each rule to
our value and the test requires tshark's value exactly, so an unexplained difference fails):

- ``zero``: Wireshark shows bytes in flight only when positive; we store 0.
- ``off_after_lost``: after a segment that skips sequence space ("previous segment not captured"),
  Wireshark stops computing bytes in flight for that direction until the other side sends an ACK; we go
  on (the bytes sent are known from the sequence numbers).
- ``old_ack``: Wireshark subtracts the receiver's *latest* ACK, also when a reordered or duplicated older
  ACK arrives after a higher one; we subtract the highest, since acknowledged bytes cannot be in flight.
- ``dsack``: Wireshark subtracts every SACK block, D-SACK blocks (RFC 2883) at or below the cumulative
  ACK included; those report duplicates of acknowledged data and are not above the ACK, so we do not.
- ``sack4``: Wireshark keeps at most three SACK blocks of an ACK (``num_sack_ranges <
  MAX_TCP_SACK_RANGES`` in packet-tcp.c); we use all (up to four fit in the option).
- ``ack_seq``: Wireshark's highest sequence number also comes from segments without payload (a bare ACK
  whose sequence number is ahead of every captured data segment, when data was not captured); ours only
  from segments that occupy sequence space (payload, SYN, FIN).
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

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
PER_PACKET_FILES = [
    *FILES,
    ROOT / "captures" / "shaped-bulk.pcap.gz",  # slow start, losses, SACK recovery through a shaped link
    ROOT / "captures" / "h2c.pcap",
    ROOT / "captures" / "tls.pcap",
    CORPUS / "ndpi" / "netflix.pcap",  # D-SACK, capture losses
    CORPUS / "suricata-verify" / "tls-subjectaltname.pcap",  # four SACK blocks, data missing before a bare ACK
]
#: Files on which each justified difference is seen (so none of the rules above is dead).
RULES_SEEN = {
    "wireshark-retrans.pcap": {"zero", "old_ack"},
    "netflix.pcap": {"dsack", "off_after_lost"},
    "tls-subjectaltname.pcap": {"sack4", "ack_seq"},
    "shaped-bulk.pcap.gz": {"off_after_lost"},
}
_TSHARK_PACKET_FIELDS = ("frame.number", "tcp.stream", "tcp.srcport", "tcp.flags.syn", "tcp.flags.fin",
                         "tcp.flags.ack", "tcp.seq", "tcp.ack", "tcp.len", "tcp.analysis.bytes_in_flight",
                         "tcp.analysis.lost_segment", "tcp.analysis.reused_ports", "tcp.options.sack_le",
                         "tcp.options.sack_re")


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


def _true(field: str) -> bool:
    return field in ("1", "True")


def _wireshark_bif(path: Path, ours: dict[int, int | None]) -> tuple[Counter[str], list[tuple[Any, ...]]]:
    """Compare tshark's bytes in flight of every data packet (connections with a SYN) with ours after the
    rules of the module docstring. Returns the rules applied, counted, and the packets left unexplained."""
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-o", "tcp.bif_seq_based:TRUE", "-Y", "tcp", "-T", "fields",
         "-E", "occurrence=a", *[arg for f in _TSHARK_PACKET_FIELDS for arg in ("-e", f)]],
        capture_output=True, text=True, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    with_syn = {r[1] for r in rows if _true(r[3])}
    restarted = {r[1] for r in rows if r[11]}  # Wireshark began a new session on reused ports
    highest_ack: dict[tuple[str, str], int] = {}  # (stream, port of the ACK's sender) →
    latest_ack: dict[tuple[str, str], int] = {}
    dsack_bytes: dict[tuple[str, str], int] = {}
    beyond_third_bytes: dict[tuple[str, str], int] = {}
    bif_off: dict[tuple[str, str], bool] = defaultdict(bool)  # (stream, sender port)
    seq_any: dict[tuple[str, str], int] = {}
    seq_occupied: dict[tuple[str, str], int] = {}
    rules: Counter[str] = Counter()
    unexplained: list[tuple[Any, ...]] = []
    for (frame, stream, port, syn, fin, has_ack, seq, ack, length, bif, lost, _reused,
         sack_le, sack_re) in rows:
        if stream not in with_syn or stream in restarted:
            continue
        me, seglen = (stream, port), int(length)
        if lost:
            bif_off[me] = True
        seq_any[me] = max(seq_any.get(me, 0), int(seq) + seglen)
        if seglen or _true(syn) or _true(fin):
            seq_occupied[me] = max(seq_occupied.get(me, 0), int(seq) + seglen + 1 if (_true(syn) or _true(fin))
                                   else int(seq) + seglen)
        if _true(has_ack) and ack:
            ack_val = int(ack)
            highest_ack[me] = max(highest_ack.get(me, ack_val), ack_val)
            latest_ack[me] = ack_val
            below = beyond = 0
            if sack_le:
                blocks = zip(map(int, sack_le.split(",")), map(int, sack_re.split(",")), strict=True)
                for i, (le, re_) in enumerate(blocks):
                    if i >= 3:
                        beyond += max(re_ - max(le, ack_val), 0)
                    elif re_ <= ack_val:
                        below += re_ - le
            dsack_bytes[me], beyond_third_bytes[me] = below, beyond
            for other in [k for k in bif_off if k[0] == stream and k[1] != port]:
                bif_off[other] = False
        if not seglen:
            continue
        theirs = int(bif) if bif else None
        if int(frame) not in ours:
            unexplained.append((frame, "not in our series", theirs))
            continue
        mine = ours[int(frame)]
        peer = next((k for k in latest_ack if k[0] == stream and k[1] != port), None)
        applied: list[str] = []
        expected: int | None
        if bif_off[me]:
            expected, applied = None, ["off_after_lost"]
        elif mine is None:
            expected = None
        else:
            corrections = {
                "old_ack": highest_ack[peer] - latest_ack[peer] if peer else 0,
                "dsack": -dsack_bytes[peer] if peer else 0,
                "sack4": beyond_third_bytes[peer] if peer else 0,
                "ack_seq": max(seq_any.get(me, 0) - seq_occupied.get(me, 0), 0),
            }
            applied = [name for name, delta in corrections.items() if delta]
            expected = mine + sum(corrections.values())
            if expected <= 0:
                expected = None
                applied.append("zero")
        if expected == theirs:
            rules.update(applied or ["equal"])
        else:
            unexplained.append((frame, mine, theirs, expected, applied))
    return rules, unexplained


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("path", PER_PACKET_FILES, ids=[p.name for p in PER_PACKET_FILES])
def test_bytes_in_flight_of_every_data_packet_is_tsharks_up_to_the_listed_rules(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} not available")
    segments = analyzer.analyze(str(path), series_rows=10**9).segments
    ours = {int(f): None if pd.isna(b) else int(b)
            for f, b in zip(segments["frame"], segments["bytes_in_flight"], strict=True)}
    rules, unexplained = _wireshark_bif(path, ours)
    assert not unexplained, unexplained[:10]
    assert rules["equal"] > 0
    assert RULES_SEEN.get(path.name, set()) <= set(rules), rules
