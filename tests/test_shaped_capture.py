"""shaped-bulk: the capture against what the SENDING KERNEL reported while it was recorded.

``captures/record.py`` records ``shaped-bulk`` through a token bucket on the namespace's ``lo`` whose queue drops
its oldest packet when full (real losses: the sender believed those packets sent), with reno, microsecond TCP
timestamps and the kernel's own view written into the truth's ``kernel`` key (``ss -tinH`` per socket, ``nstat``
deltas, ``tc -s qdisc``; see ``kernel.notes`` in the truth file and captures/README.md). Checked here with
tshark only (nothing of the analyzer), on the committed capture and on a fresh recording (``netns``):

* the capture reads with tshark and agrees with the truth (the recorder's own check);
* every packet the kernel counts as sent is either in the capture or in the qdisc's drop count;
* every retransmission the kernel counts for the server sockets is in the capture, or was itself dropped;
* the first flight of a fresh response (cold connection; warm one) is the initial window, 10 x MSS, and the
  flight after 1.5 s idle (slow start restarted) is no larger.

The capture point matters: tcpdump on ``lo`` sees a packet when the shaper RELEASES it, in both directions. A
client's ACK of the first data segment is generated as soon as that segment leaves the shaper and is queued
ahead of the data the server sends later, so in capture order it comes right after the first one or two data
segments, long before the server read it. Counting data "before the first client ACK" in capture order gives 1
or 2 segments; the server's own timeline is in its TCP timestamps instead (TSecr = the TSval of the last client
segment it had processed when it sent the segment; microsecond TSvals make every client segment distinct).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from recorder import load_record

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "captures"
SCENARIO = "shaped-bulk"
BULK = "/bulk.txt"


record = load_record()
SCN = record.SCENARIO_BY_NAME[SCENARIO]
SERVER_PORT = record.PORT_MAIN


# --- the capture as tshark dissects it -----------------------------------------------------------------

FIELDS = (
    "tcp.stream",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags.syn",
    "tcp.flags.fin",
    "tcp.seq",
    "tcp.len",
    "tcp.options.timestamp.tsval",
    "tcp.options.timestamp.tsecr",
    "tcp.analysis.retransmission",
    "tcp.analysis.fast_retransmission",
    "tcp.analysis.spurious_retransmission",
    "tcp.analysis.out_of_order",
)


@dataclass(frozen=True)
class Segment:
    index: int  # position in the capture
    stream: int
    client_port: int
    from_server: bool
    syn: bool
    fin: bool
    seq: int  # relative to the sender's ISN
    length: int
    tsval: int
    tsecr: int
    retransmission: bool  # tshark: retransmission, fast_retransmission or spurious_retransmission
    out_of_order: bool

    @property
    def end(self) -> int:
        return self.seq + self.length


def _flag(value: str) -> bool:
    return value not in ("", "0", "False")


def tshark_segments(capture: Path) -> list[Segment]:
    tshark = record.find_tool("tshark")
    assert tshark is not None
    args = [tshark, "-r", str(capture), "-n", "-Y", "tcp", "-T", "fields", "-E", "separator=/t"]
    args += ["-o", "tcp.relative_sequence_numbers:TRUE", "-o", "tcp.analyze_sequence_numbers:TRUE"]
    for name in FIELDS:
        args += ["-e", name]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"tshark cannot read {capture.name}: {done.stderr.strip()}"
    segments = []
    for index, line in enumerate(done.stdout.splitlines()):
        cols = line.split("\t")
        cols += [""] * (len(FIELDS) - len(cols))
        stream, sport, dport, syn, fin, seq, length, tsval, tsecr, rtx, fast, spurious, ooo = cols
        from_server = int(sport) == SERVER_PORT
        segments.append(
            Segment(
                index,
                int(stream),
                int(dport) if from_server else int(sport),
                from_server,
                _flag(syn),
                _flag(fin),
                int(seq),
                int(length),
                int(tsval or 0),
                int(tsecr or 0),
                _flag(rtx) or _flag(fast) or _flag(spurious),
                _flag(ooo),
            )
        )
    return segments


def by_client_port(segments: list[Segment]) -> dict[int, list[Segment]]:
    conns: dict[int, list[Segment]] = {}
    for seg in segments:
        conns.setdefault(seg.client_port, []).append(seg)
    return conns


def before_client_fin(segs: list[Segment]) -> list[Segment]:
    """The connection's packets before the client's FIN: the client took the kernel's snapshot of both
    sockets just before closing, when the server had nothing unacknowledged (so nothing more to send)."""
    for i, seg in enumerate(segs):
        if seg.fin and not seg.from_server:
            return segs[:i]
    return segs


def responses(segs: list[Segment]) -> list[tuple[Segment, list[Segment]]]:
    """(request segment, the server's data segments until the next request) per request, in order."""
    out: list[tuple[Segment, list[Segment]]] = []
    for seg in segs:
        if seg.length and not seg.from_server:
            out.append((seg, []))
        elif seg.length and seg.from_server and out:
            out[-1][1].append(seg)
    return out


def first_flight_bytes(request: Segment, data: list[Segment]) -> int:
    """Bytes the server sent before it had processed any client segment after the request: its data segments
    whose TSecr still echoes the request's TSval. They must be the first bytes of the response, in order."""
    flight = [seg for seg in data if seg.tsecr == request.tsval]
    assert flight == data[: len(flight)], "the first flight is not the start of the response"
    assert all(a.end == b.seq for a, b in pairwise(flight)), "the first flight has a hole"
    return sum(seg.length for seg in flight)


class Covered:
    """Byte ranges of one direction already seen in the capture."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []

    def contains(self, start: int, end: int) -> bool:
        return any(lo <= start and end <= hi for lo, hi in self.ranges)

    def add(self, start: int, end: int) -> None:
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted([*self.ranges, (start, end)]):
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self.ranges = merged


# --- the committed capture and a fresh recording -------------------------------------------------------


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = record.missing_requirements() or (None if record.find_tool("tshark") else "tshark is not installed")
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("shaped")
    done = subprocess.run(
        [sys.executable, str(CAPTURES / "record.py"), "--out", str(out), "--scenario", SCENARIO],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"captures/record.py failed ({done.returncode}):\n{done.stdout}\n{done.stderr}", pytrace=False)
    return out


@pytest.fixture(params=["committed", pytest.param("fresh", marks=pytest.mark.netns)])
def shaped(request: pytest.FixtureRequest) -> tuple[Path, dict[str, Any], list[Segment]]:
    if record.find_tool("tshark") is None:
        pytest.skip("tshark is not installed")
    directory = CAPTURES if request.param == "committed" else request.getfixturevalue("fresh")
    truth = json.loads((directory / SCN.truth_name).read_text())
    capture = directory / truth["capture"]
    return capture, truth, tshark_segments(capture)


def kernel_connections(truth: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["role"]: entry for entry in truth["kernel"]["connections"]}


# --- tests ---------------------------------------------------------------------------------------------


def test_scenario_writes_a_gzip_capture_that_the_truth_names() -> None:
    assert SCN.capture_name == "shaped-bulk.pcap.gz"
    truth = json.loads((CAPTURES / SCN.truth_name).read_text())
    assert truth["capture"] == SCN.capture_name
    assert (CAPTURES / SCN.capture_name).read_bytes()[:2] == b"\x1f\x8b"
    assert record.truth_files(CAPTURES).count(CAPTURES / SCN.truth_name) == 1


def test_capture_reads_with_tshark_and_matches_the_truth(
    shaped: tuple[Path, dict[str, Any], list[Segment]],
) -> None:
    capture, truth, segments = shaped
    assert record.verify_with_tshark(capture, truth) == []
    conns = by_client_port(segments)
    # the kernel's snapshots are of these very connections: the client ports of the truth, in order
    assert list(conns) == [c["client_port"] for c in truth["connections"]]
    assert [c["client_port"] for c in truth["kernel"]["connections"]] == list(conns)
    assert [len(c["requests"]) for c in truth["connections"]] == [3, 1]
    kernel = truth["kernel"]
    assert kernel["lo"] == {"mtu": 1500, "gso_max_segs": 1}
    assert kernel["sysctl"]["net.ipv4.tcp_congestion_control"] == "reno"
    assert kernel["sysctl"]["net.ipv4.tcp_slow_start_after_idle"] == 1
    # one MSS-sized segment per packet: gso_max_segs 1 works
    assert max(seg.length for seg in segments) == kernel_connections(truth)["cold"]["server_socket"]["mss"]


def test_every_packet_the_kernel_sent_is_captured_or_dropped_by_the_qdisc(
    shaped: tuple[Path, dict[str, Any], list[Segment]],
) -> None:
    """segs_out of each socket (at the snapshot before the close) = its packets in the capture + its packets
    the shaper dropped; summed over the sockets, the drops are exactly the qdisc's drop count. (The SYN-ACK is
    sent by the listener's request socket, not counted in the connection's segs_out; the client's SYN is.)
    The drops all happen during the bulk transfers: nothing is queued at the handshakes and closes."""
    _capture, truth, segments = shaped
    conns = by_client_port(segments)
    dropped = 0
    for entry in truth["kernel"]["connections"]:
        segs = before_client_fin(conns[entry["client_port"]])
        server = [s for s in segs if s.from_server and not s.syn]
        client = [s for s in segs if not s.from_server]
        assert entry["server_socket"]["segs_out"] >= len(server)
        assert entry["client_socket"]["segs_out"] >= len(client)
        dropped += entry["server_socket"]["segs_out"] - len(server)
        dropped += entry["client_socket"]["segs_out"] - len(client)
    stats = truth["kernel"]["tbf"]["stats"]
    assert dropped == stats[0]["dropped"] > 0
    assert stats[0]["sent_packets"] == len(segments)


def test_every_kernel_retransmission_is_in_the_capture(
    shaped: tuple[Path, dict[str, Any], list[Segment]],
) -> None:
    """The kernel's ``retrans`` total (tcpi_total_retrans) of each server socket against tshark's
    retransmission, fast_retransmission and spurious_retransmission flags on server -> client segments.

    The exact relation, per server socket: retrans_total = T + (D - H), where T is tshark's count, D the server
    data segments the shaper dropped (data_segs_out minus the data segments captured) and H the captured
    segments that fill a hole (their bytes had never been captured: the first transmission was dropped). Each
    dropped first transmission leaves one hole that exactly one captured retransmission fills, so D - H is
    the number of RETRANSMISSIONS the shaper dropped: the kernel counted them (it had handed them to the
    qdisc, which returned success), the capture cannot show them. TLP probes that send new data are not
    retransmissions in either count; a TLP that resends the last segment is in both. Every segment below the
    highest sequence number already captured is flagged by tshark (none is labelled out-of-order instead),
    and no SYN is retransmitted (the handshake retransmissions would be in retrans_total too).
    """
    _capture, truth, segments = shaped
    conns = by_client_port(segments)
    kernel_total = captured_total = 0
    for entry in truth["kernel"]["connections"]:
        server_socket = entry["server_socket"]
        segs = before_client_fin(conns[entry["client_port"]])
        assert not any(s.syn and s.retransmission for s in segs)
        data = [s for s in segs if s.from_server and s.length]
        seen = Covered()
        highest = 0
        flagged = holes = 0
        for seg in data:
            below = seg.seq < highest
            assert seg.retransmission == below, f"segment {seg.index}: tshark flags disagree with seq < highest"
            assert not seg.out_of_order
            if seg.retransmission:
                flagged += 1
                holes += not seen.contains(seg.seq, seg.end)
            seen.add(seg.seq, seg.end)
            highest = max(highest, seg.end)
        dropped_data = server_socket["data_segs_out"] - len(data)
        lost_retransmissions = dropped_data - holes
        assert lost_retransmissions >= 0
        assert server_socket["retrans_total"] == flagged + lost_retransmissions, entry["role"]
        kernel_total += server_socket["retrans_total"]
        captured_total += flagged
    assert captured_total > 0, "no retransmission in the capture: the shaper must cause some"
    nstat = truth["kernel"]["nstat_delta"]
    client_total = sum(entry["client_socket"]["retrans_total"] for entry in truth["kernel"]["connections"])
    # the namespace's counter is these sockets' sum: nothing else ran TCP in it, nothing was resent after
    # the snapshots (the closes happen on an empty queue)
    assert nstat["TcpRetransSegs"] == kernel_total + client_total


def test_first_flight_is_the_initial_window(shaped: tuple[Path, dict[str, Any], list[Segment]]) -> None:
    """The server's first flight of a response = its data segments sent before it had processed any client
    segment after the request (TSecr still = the request's TSval) = initial cwnd x MSS as the kernel reports
    them: for the cold connection's response, and for the warm one (the 273-byte response before it did not
    grow cwnd: slow start grows it only when at least half of it was in use)."""
    _capture, truth, segments = shaped
    kernel = truth["kernel"]
    iw = kernel["initial_cwnd"]
    assert iw == 10 and kernel["initial_cwnd_source"].startswith("no initcwnd")
    assert "features 0x10" in kernel["ip_route_get"]  # microsecond TCP timestamps on 127.0.0.1
    conns = by_client_port(segments)
    roles = kernel_connections(truth)
    warm_conn = responses(conns[roles["warm then cooled"]["client_port"]])
    cold_conn = responses(conns[roles["cold"]["client_port"]])
    assert len(warm_conn) == 3 and len(cold_conn) == 1
    for role, (request, data) in (("cold", cold_conn[0]), ("warm then cooled", warm_conn[1])):
        mss = roles[role]["server_socket"]["mss"]
        # the attribution needs the client's next segment to carry another TSval than the request
        first_ack = next(s for s in conns[request.client_port] if not s.from_server and s.index > request.index)
        assert first_ack.tsval != request.tsval
        assert first_flight_bytes(request, data) == iw * mss, role


def test_slow_start_restarts_after_idle(shaped: tuple[Path, dict[str, Any], list[Segment]]) -> None:
    """After 1.5 s idle (> RTO) the kernel restarts slow start (tcp_slow_start_after_idle 1): the cooled
    response's first flight is at most the initial window although the kernel's cwnd before the idle was
    larger. (At most, not equal: TCP small queues allow about 1 ms of the pacing rate in the qdisc, and the
    pacing rate now uses the srtt the previous transfer's queue inflated, so the flight can stop earlier.)"""
    _capture, truth, segments = shaped
    kernel = truth["kernel"]
    entry = kernel_connections(truth)["warm then cooled"]
    before_idle = entry["snapshots"][0]
    assert before_idle["after"] == f"GET {BULK} (warm)"
    mss = before_idle["mss"]
    assert before_idle["cwnd"] > kernel["initial_cwnd"]
    request, data = responses(by_client_port(segments)[entry["client_port"]])[2]
    cooled = first_flight_bytes(request, data)
    assert 0 < cooled <= kernel["initial_cwnd"] * mss


# --- the analyzer on this traffic (analyzer/flows/tcpanalysis.py) ---------------------------------------


def test_analyzer_retransmissions_initial_window_and_warmth_match_the_kernel(
    shaped: tuple[Path, dict[str, Any], list[Segment]],
) -> None:
    """Per connection, our retransmission count equals the server socket's retrans total minus the
    retransmissions the shaper dropped (see above; none in the committed capture); the cold connection's
    initial window is the kernel's initial cwnd in MSS-sized segments; the responses are cold, warm and
    cooled (slow start restarted after 1.5 s idle), and the cooled one's first flight is at most the
    initial window while the warm one's peak in flight is larger."""
    import analyzer

    capture, truth, segments = shaped
    result = analyzer.analyze(str(capture))
    conns = result.connections.set_index("client_port")
    tx = result.transactions
    by_port = by_client_port(segments)
    initcwnd = int(truth["kernel"]["initial_cwnd"])
    for entry in truth["kernel"]["connections"]:
        row = conns.loc[entry["client_port"]]
        server_socket = entry["server_socket"]
        data = [s for s in before_client_fin(by_port[entry["client_port"]]) if s.from_server and s.length]
        seen, holes, highest = Covered(), 0, 0
        for seg in data:
            if seg.seq < highest:
                holes += not seen.contains(seg.seq, seg.end)
            seen.add(seg.seq, seg.end)
            highest = max(highest, seg.end)
        lost_retransmissions = server_socket["data_segs_out"] - len(data) - holes
        assert int(row["retransmissions"]) == server_socket["retrans_total"] - lost_retransmissions, entry["role"]
        mine = tx[tx["uid"] == row["uid"]].sort_values("trans_depth")
        if entry["role"].startswith("cold"):
            assert int(row["initial_window_bytes"]) == initcwnd * server_socket["mss"]
            assert mine["warmth"].tolist() == ["cold"]
        else:
            assert mine["warmth"].tolist() == ["cold", "warm", "cooled"]
            flights = result.flights[result.flights["uid"] == row["uid"]]
            cooled_first = flights[(flights["trans_depth"] == 3) & (flights["round"] == 1)]["bytes"].iloc[0]
            assert cooled_first <= initcwnd * server_socket["mss"]
            warm_peak, cooled_peak = mine["peak_bytes_in_flight"].iloc[1], mine["peak_bytes_in_flight"].iloc[2]
            assert warm_peak > cooled_peak
