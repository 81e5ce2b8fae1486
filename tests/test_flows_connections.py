"""Connection tracking (``analyzer.flows.connections``) on hand-built captures of what real stacks and capture
points do: an RST answering a stale ACK before the handshake (RFC 793), a request captured after its
response, a receiver's ACK seen before the first bytes it covers. Each gives the same tables however its
packets are cut into chunks."""

from __future__ import annotations

from pathlib import Path

import dpkt
import numpy as np
import pandas as pd
import pytest
from hostile_capture import CLIENT, SERVER, _Connection, _response, _Writer

import analyzer

ACK, PSH, FIN, RST, SYN = dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH, dpkt.tcp.TH_FIN, dpkt.tcp.TH_RST, dpkt.tcp.TH_SYN
REQUEST = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"


def _same_whatever_the_chunks(path: Path) -> analyzer.Analysis:
    whole = analyzer.analyze(path)
    for chunk_packets in range(1, whole.summary["packets_read"] + 1):
        cut = analyzer.analyze(path, chunk_packets=chunk_packets)
        for name in ("connections", "transactions", "anomalies"):
            pd.testing.assert_frame_equal(getattr(whole, name), getattr(cut, name),
                                          obj=f"{name} @ {chunk_packets}")
    return whole


def _stale_ack_then_handshake(w: _Writer, port: int) -> _Connection:
    """A client's SYN answered by an ACK of an older incarnation of the 4-tuple: the client resets it with
    ``<SEQ=SEG.ACK><CTL=RST>`` (far from its own ISN) and retransmits its SYN three seconds later."""
    w.packet(CLIENT, SERVER, port, 80, 1000, 0, SYN)
    w.packet(SERVER, CLIENT, 80, port, 123_456_789, 2_500_000_000, ACK)
    w.packet(CLIENT, SERVER, port, 80, 2_500_000_000, 0, RST)
    w.ts += 3
    return _Connection(w, port, 80)


@pytest.mark.parametrize("rst_seq", [None, "in_window", "far_ahead"])
def test_an_rst_answering_a_stale_ack_does_not_close_the_connection_that_follows(tmp_path: Path,
                                                                                 rst_seq: str | None) -> None:
    """The RST of the stale ACK lies outside the client's stream: the connection is the handshake that
    follows, closed by its FINs (as in suricata-verify/tls-subjectaltname.pcap, port 59621). An RST at the
    client's next sequence number closes it; one more than the largest window beyond it is not its."""
    w = _Writer(tmp_path / "stale.pcap")
    c = _stale_ack_then_handshake(w, 40001)
    c.client(REQUEST)
    c.server(_response(b"hello"))
    if rst_seq is None:
        c.close_by_client()
    else:
        seq = c.cseq if rst_seq == "in_window" else (c.cseq + (3 << 30)) & 0xFFFFFFFF
        w.packet(CLIENT, SERVER, 40001, 80, seq, 0, RST)
    w.close()
    a = _same_whatever_the_chunks(tmp_path / "stale.pcap")
    assert len(a.connections) == 1
    conn = a.connections.iloc[0]
    expected = {None: ("client", "fin"), "in_window": ("client", "rst"), "far_ahead": ("open", "capture_end")}
    assert (conn["close_by"], conn["close_reason"]) == expected[rst_seq]
    assert conn["requests"] == 1 and a.transactions["status"].tolist() == [200]
    assert a.transactions["request_body_bytes"].tolist() == [0]


def test_a_client_ack_before_the_handshake_is_read_against_the_syn_ack_whatever_the_chunks(tmp_path: Path) -> None:
    """A client that answers the stale ACK with RST/ACK (an ACK number into the server's stream) before the
    SYN/ACK: when a chunk ends between them, the logged acknowledgment moves with the server stream's start
    (``SegmentLog.shift``), so the TCP analysis reads it as with one chunk."""
    w = _Writer(tmp_path / "rstack.pcap")
    w.packet(CLIENT, SERVER, 40005, 80, 1000, 0, SYN)
    w.packet(SERVER, CLIENT, 80, 40005, 5_001 + 300, 2_500_000_000, ACK)
    w.packet(CLIENT, SERVER, 40005, 80, 2_500_000_000, 5_001 + 300, RST | ACK)
    w.ts += 3
    c = _Connection(w, 40005, 80)
    c.client(REQUEST)
    c.server(_response(b"hello"))
    c.close_by_client()
    w.close()
    a = _same_whatever_the_chunks(tmp_path / "rstack.pcap")
    assert a.connections["requests"].tolist() == [1]


def test_segment_log_shift_moves_one_stream_s_offsets_in_both_directions() -> None:
    """``SegmentLog.shift`` of the server's stream: the server's sequence offsets and the client's ACKs of
    them move; the client's own sequence offsets, rows without an ACK and other connections' rows do not."""
    from analyzer.flows.tcpanalysis import LOG_DTYPES, NO_VALUE, SegmentLog

    log = SegmentLog()
    rows = {name: np.zeros(4, dtype=dtype) for name, dtype in LOG_DTYPES.items()}
    rows["serial"][:] = [7, 7, 7, 8]
    rows["lo"][:] = [False, True, True, True]  # the server is "hi": rows 1-3 are clients
    rows["seq"][:] = [10, 20, 30, 40]
    rows["ack"][:] = [5, 0, NO_VALUE, 0]
    log.append(rows)
    log.shift(7, False, 300)
    out = log.pop(np.array([7, 8]))
    assert out["seq"].tolist() == [310, 20, 30, 40]
    assert out["ack"].tolist() == [5, 300, NO_VALUE, 0]


def test_a_request_captured_after_its_response_is_paired_whatever_the_chunks(tmp_path: Path) -> None:
    """A capture point that writes a client's request after the server's ACK and response (its timestamp
    earlier than theirs; zeek/ipv6-http-atomic-frag.pcap, whose request went through IPv6 fragment
    reassembly): the response is held from the ACK of the bytes not seen yet, so a chunk that ends before
    the request does not read the response first."""
    w = _Writer(tmp_path / "late.pcap")
    c = _Connection(w, 40002, 80)
    w.packet(SERVER, CLIENT, 80, 40002, c.sseq, c.cseq + len(REQUEST), ACK)
    body = _response(b"hello")
    w.packet(SERVER, CLIENT, 80, 40002, c.sseq, c.cseq + len(REQUEST), ACK | PSH, body)
    w.packet(CLIENT, SERVER, 40002, 80, c.cseq, c.sseq, ACK | PSH, REQUEST, step=-0.0015)  # captured late
    c.cseq += len(REQUEST)
    c.sseq += len(body)
    w.ts += 0.003
    c.close_by_client()
    w.close()
    a = _same_whatever_the_chunks(tmp_path / "late.pcap")
    assert a.transactions["status"].tolist() == [200] and a.transactions["target"].tolist() == ["/x"]
    assert "response_before_request" not in set(a.anomalies["name"])


def test_an_ack_below_a_stream_start_seen_before_it_is_ignored_whatever_the_chunks(tmp_path: Path) -> None:
    """A connection caught mid-stream whose first packet is the server's ACK of client bytes before the
    first ones captured: that ACK says nothing about the bytes captured, whether the client's first segment
    comes in the same chunk or the next (``max_bytes_in_flight`` as with one chunk)."""
    w = _Writer(tmp_path / "mid.pcap")
    cseq, sseq = 10_000, 50_000
    w.packet(SERVER, CLIENT, 80, 40003, sseq, cseq - 5_000, ACK)
    w.packet(CLIENT, SERVER, 40003, 80, cseq, sseq, ACK | PSH, REQUEST)
    w.packet(CLIENT, SERVER, 40003, 80, cseq + len(REQUEST), sseq, ACK | PSH, REQUEST)
    cseq += 2 * len(REQUEST)
    w.packet(SERVER, CLIENT, 80, 40003, sseq, cseq, ACK | PSH, _response(b"one"))
    w.packet(CLIENT, SERVER, 40003, 80, cseq, sseq, ACK | PSH, REQUEST)  # in flight: this request only
    w.close()
    a = _same_whatever_the_chunks(tmp_path / "mid.pcap")
    assert a.connections["max_bytes_in_flight_client"].tolist() == [len(REQUEST)]


@pytest.mark.parametrize("reorder_hold_ns", [None, "as_long_as_a_hole"])
def test_an_ack_of_bytes_the_capture_lost_holds_the_connection_briefly(tmp_path: Path, reorder_hold_ns: str | None,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The capture lost a request's last segment (the server acknowledges it): a response of 2.8 MB over two
    seconds that follows is held ``REORDER_HOLD_NS`` (100 ms), not as long as a hole may wait (20 s): it never
    reaches ``MAX_HELD_BYTES_PER_STREAM`` (here 1 MiB), and the tables are those of one chunk."""
    from analyzer.flows import connections

    monkeypatch.setattr(connections, "MAX_HELD_BYTES_PER_STREAM", 1 << 20)
    if reorder_hold_ns is not None:
        monkeypatch.setattr(connections, "REORDER_HOLD_NS", connections.HOLD_NS)
    w = _Writer(tmp_path / "lost.pcap")
    c = _Connection(w, 40004, 80)
    w.packet(CLIENT, SERVER, 40004, 80, c.cseq, c.sseq, ACK | PSH, REQUEST[:10])
    c.cseq += len(REQUEST)  # the rest was not captured
    body = bytes(2_000 * 1_400)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    c.server(head)
    for i in range(0, len(body), 1_400):
        w.packet(SERVER, CLIENT, 80, 40004, c.sseq, c.cseq, ACK, body[i:i + 1_400])
        c.sseq += 1_400
    w.close()
    whole = analyzer.analyze(tmp_path / "lost.pcap")
    cut = analyzer.analyze(tmp_path / "lost.pcap", chunk_packets=50)
    limit_hit = "held_bytes_limit" in set(cut.anomalies["name"])
    assert limit_hit == (reorder_hold_ns is not None)
    if not limit_hit:
        for name in ("connections", "transactions", "anomalies"):
            pd.testing.assert_frame_equal(getattr(whole, name), getattr(cut, name), obj=name)
    assert whole.transactions["response_body_bytes"].tolist() == [len(body)]
