"""``analyzer.tls``: the passive TLS observer.

- Real captures of ../shared/corpus through the connection tracker (``ConnectionTracker(TlsObserver, ...)``)
  against tshark, per TCP connection: SNI, offered ALPN, negotiated version, cipher suite, ClientHello and
  ServerHello counts and times; resumption against the oracle's unambiguous hints; the exchange estimate
  against the HTTP/1 requests tshark decrypts with the capture's key log.
- Hand-built conversations: TLS 1.2 full / session-id / ticket resumption, TLS 1.3 full, HelloRetryRequest,
  PSK + 0-RTT, SSLv2-compatible ClientHello, gaps, mid-stream starts; split at every byte boundary and fed in
  either direction order.
- Hypothesis: random and mutated bytes, random splits and gaps never raise.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.capture.pcapfile import open_capture
from analyzer.flows.connections import Connection, ConnectionTracker
from analyzer.flows.decode import decode_batch
from analyzer.flows.packets import TCP
from analyzer.flows.stream import StreamChunk
from analyzer.http.sniff import classify_payload
from analyzer.tls import TlsFacts, TlsObserver, looks_like_tls
from analyzer.tls.messages import HRR_RANDOM

C, S = 0, 1
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
TSHARK = shutil.which("tshark")
ANOMALY_NAMES = {"tls_gap", "tls_bad_record", "tls_midstream", "tls_resync", "tls_resync_failed",
                 "tls_bad_handshake", "tls_bad_hello", "tls_truncated_record", "tls_record_cap"}

# ------------------------------------------------------------------------------------------ record builders


def rec(ct: int, payload: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", ct, version, len(payload)) + payload


def hs(t: int, body: bytes) -> bytes:
    return bytes([t]) + len(body).to_bytes(3, "big") + body


def ext(t: int, data: bytes) -> bytes:
    return struct.pack("!HH", t, len(data)) + data


def u16(*values: int) -> bytes:
    return b"".join(struct.pack("!H", v) for v in values)


def alpn_ext(protos: tuple[str, ...]) -> bytes:
    lst = b"".join(bytes([len(p)]) + p.encode() for p in protos)
    return ext(16, u16(len(lst)) + lst)


def client_hello(sni: str | None = "example.com", alpn: tuple[str, ...] = ("h2", "http/1.1"),
                 session_id: bytes = b"", ticket: bytes | None = None, psk: bool = False, early: bool = False,
                 versions: tuple[int, ...] = (), suites: tuple[int, ...] = (0xC02F, 0x1301)) -> bytes:
    exts = b""
    if sni is not None:
        name = sni.encode()
        entry = b"\x00" + u16(len(name)) + name
        exts += ext(0, u16(len(entry)) + entry)
    if alpn:
        exts += alpn_ext(alpn)
    if ticket is not None:
        exts += ext(35, ticket)
    if versions:
        exts += ext(43, bytes([2 * len(versions)]) + u16(*versions))
    if early:
        exts += ext(42, b"")
    if psk:  # identities (one of 4 bytes + age) and binders (one of 32 bytes): last, as RFC 8446 wants
        exts += ext(41, u16(10) + u16(4) + b"abcd" + b"\x00" * 4 + u16(33) + b"\x20" + b"\x00" * 32)
    body = (u16(0x0303) + bytes(range(32)) + bytes([len(session_id)]) + session_id + u16(2 * len(suites))
            + u16(*suites) + b"\x01\x00" + u16(len(exts)) + exts)
    return hs(1, body)


def server_hello(suite: int = 0xC02F, session_id: bytes = b"", version: int | None = None, psk: bool = False,
                 alpn: str | None = None, hrr: bool = False, legacy: int = 0x0303, ticket_ext: bool = False) -> bytes:
    exts = b""
    if version is not None:
        exts += ext(43, u16(version))
    if psk:
        exts += ext(41, u16(0))
    if alpn is not None:
        exts += alpn_ext((alpn,))
    if ticket_ext:
        exts += ext(35, b"")
    rnd = HRR_RANDOM if hrr else bytes(range(100, 132))
    body = (u16(legacy) + rnd + bytes([len(session_id)]) + session_id + u16(suite) + b"\x00" + u16(len(exts))
            + exts)
    return hs(2, body)


def ciphertext(n: int) -> bytes:
    """Bytes that look encrypted (never a plaintext hello)."""
    return bytes((i * 151 + 77) & 0xFF for i in range(n))


def sslv2_client_hello() -> bytes:
    specs = b"\x00\x00\x04" + b"\x00\x00\x05" + b"\x01\x00\x80"
    body = b"\x01" + u16(0x0301) + u16(len(specs)) + u16(0) + u16(16) + specs + bytes(16)
    return bytes([0x80 | (len(body) >> 8), len(body) & 0xFF]) + body


# ----------------------------------------------------------------------------------------- conversations

Event = tuple[int, bytes, int]  # (direction, bytes, ts_ns)
MS = 1_000_000


def tls12_full(cert: int = 3000, app: int = 5000) -> list[Event]:
    return [
        (C, rec(22, client_hello(), 0x0301), 1 * MS),
        (S, rec(22, server_hello(alpn="http/1.1") + hs(11, bytes(cert)) + hs(12, bytes(300)) + hs(14, b"")), 2 * MS),
        (C, rec(22, hs(16, bytes(66))) + rec(20, b"\x01") + rec(22, ciphertext(40)), 3 * MS),
        (S, rec(20, b"\x01") + rec(22, ciphertext(40)), 4 * MS),
        (C, rec(23, ciphertext(300)), 5 * MS),
        (S, rec(23, ciphertext(app)) + rec(23, ciphertext(100)), 6 * MS),
        (C, rec(23, ciphertext(200)), 7 * MS),
        (S, rec(23, ciphertext(800)), 8 * MS),
        (C, rec(21, ciphertext(26)), 9 * MS),  # encrypted close_notify
    ]


def tls12_resumed_session_id() -> list[Event]:
    sid = b"\x11" * 32
    return [
        (C, rec(22, client_hello(session_id=sid)), 1 * MS),
        (S, rec(22, server_hello(session_id=sid)) + rec(20, b"\x01") + rec(22, ciphertext(40)), 2 * MS),
        (C, rec(20, b"\x01") + rec(22, ciphertext(40)), 3 * MS),
        (C, rec(23, ciphertext(300)), 3 * MS + 1000),
        (S, rec(23, ciphertext(900)), 4 * MS),
    ]


def tls12_ticket() -> list[Event]:
    return [
        (C, rec(22, client_hello(ticket=b"\x22" * 100)), 1 * MS),
        (S, rec(22, server_hello(ticket_ext=True) + hs(4, bytes(120))) + rec(20, b"\x01") + rec(22, ciphertext(40)),
         2 * MS),
        (C, rec(20, b"\x01") + rec(22, ciphertext(40)) + rec(23, ciphertext(300)), 3 * MS),
        (S, rec(23, ciphertext(900)), 4 * MS),
    ]


def tls13_full(finished_len: int = 53) -> list[Event]:
    return [
        (C, rec(22, client_hello(versions=(0x0304, 0x0303)), 0x0301), 1 * MS),
        (S, rec(22, server_hello(0x1301, version=0x0304)) + rec(20, b"\x01") + rec(23, ciphertext(1200))
         + rec(23, ciphertext(300)), 2 * MS),
        (C, rec(20, b"\x01") + rec(23, ciphertext(finished_len)), 3 * MS),
        (C, rec(23, ciphertext(300)), 3 * MS + 500_000),
        (S, rec(23, ciphertext(250)) + rec(23, ciphertext(2000)), 4 * MS),  # NewSessionTicket + response
    ]


def tls13_hrr() -> list[Event]:
    return [
        (C, rec(22, client_hello(versions=(0x0304,)), 0x0301), 1 * MS),
        (S, rec(22, server_hello(0x1302, version=0x0304, hrr=True)) + rec(20, b"\x01"), 2 * MS),
        (C, rec(20, b"\x01") + rec(22, client_hello(versions=(0x0304,))), 3 * MS),
        (S, rec(22, server_hello(0x1302, version=0x0304)) + rec(23, ciphertext(1500)), 4 * MS),
        (C, rec(23, ciphertext(69)) + rec(23, ciphertext(100)), 5 * MS),
        (S, rec(23, ciphertext(500)), 6 * MS),
    ]


def tls13_zero_rtt() -> list[Event]:
    return [
        (C, rec(22, client_hello(versions=(0x0304,), psk=True, early=True), 0x0301)
         + rec(23, ciphertext(400)), 1 * MS),
        (S, rec(22, server_hello(0x1301, version=0x0304, psk=True)) + rec(23, ciphertext(100))
         + rec(23, ciphertext(53)), 2 * MS),
        (S, rec(23, ciphertext(900)), 2 * MS + 100_000),
        (C, rec(23, ciphertext(21)) + rec(23, ciphertext(53)), 3 * MS),
    ]


def sslv2_then_tls10() -> list[Event]:
    return [
        (C, sslv2_client_hello(), 1 * MS),
        (S, rec(22, server_hello(0x0004, legacy=0x0301) + hs(11, bytes(500)) + hs(14, b""), 0x0301), 2 * MS),
        (C, rec(22, hs(16, bytes(130)), 0x0301) + rec(20, b"\x01", 0x0301) + rec(22, ciphertext(36), 0x0301), 3 * MS),
        (S, rec(20, b"\x01", 0x0301) + rec(22, ciphertext(36), 0x0301), 4 * MS),
        (C, rec(23, ciphertext(100), 0x0301), 5 * MS),
        (S, rec(23, ciphertext(100), 0x0301), 6 * MS),
    ]


def app_stream(n: int = 20, size: int = 700) -> list[Event]:
    """Application data only (a connection captured after its handshake): n exchanges."""
    out: list[Event] = []
    for i in range(n):
        out.append((C, rec(23, ciphertext(size // 2 + i)), (2 * i + 1) * MS))
        out.append((S, rec(23, ciphertext(size + i)) + rec(23, ciphertext(size)), (2 * i + 2) * MS))
    return out


CONVERSATIONS: dict[str, Callable[[], list[Event]]] = {
    "tls12_full": tls12_full, "tls12_resumed_session_id": tls12_resumed_session_id, "tls12_ticket": tls12_ticket,
    "tls13_full": tls13_full, "tls13_hrr": tls13_hrr, "tls13_zero_rtt": tls13_zero_rtt,
    "sslv2_then_tls10": sslv2_then_tls10, "app_stream": app_stream,
}

# --------------------------------------------------------------------------------------------- streams

Piece = tuple[int, int, int]  # (start, end, ts_ns) in stream offsets
MSS = 1448


def streams(events: list[Event]) -> tuple[tuple[bytes, list[Piece]], tuple[bytes, list[Piece]]]:
    """Per direction: the stream bytes and its pieces (one per MSS-sized segment of each event)."""
    data: list[bytearray] = [bytearray(), bytearray()]
    pieces: list[list[Piece]] = [[], []]
    for d, payload, ts in events:
        for i in range(0, len(payload), MSS):
            a = len(data[d])
            data[d] += payload[i: i + MSS]
            pieces[d].append((a, len(data[d]), ts))
    return (bytes(data[0]), pieces[0]), (bytes(data[1]), pieces[1])


def make_chunk(data: bytes, pieces: list[Piece], eof: int = -1, final: bool = False) -> StreamChunk:
    if not pieces:
        return StreamChunk.empty(eof=eof, final=final)
    start = np.array([p[0] for p in pieces], dtype=np.int64)
    end = np.array([p[1] for p in pieces], dtype=np.int64)
    ts = np.array([p[2] for p in pieces], dtype=np.int64)
    buf = np.frombuffer(data, dtype=np.uint8)
    return StreamChunk(start, end, np.zeros(len(pieces), dtype=np.int8), start.copy(), ts,
                       np.maximum.accumulate(ts), (buf,), eof, final)


def cut(pieces: list[Piece], points: list[int]) -> list[list[Piece]]:
    """Split pieces into consecutive chunks at the given stream offsets (a piece may be cut in two)."""
    out: list[list[Piece]] = [[]]
    bounds = sorted(set(points))
    k = 0
    for a, e, ts in pieces:
        while a < e:
            while k < len(bounds) and bounds[k] <= a:
                k += 1
                out.append([])
            stop = min(e, bounds[k]) if k < len(bounds) else e
            out[-1].append((a, stop, ts))
            a = stop
    while k < len(bounds):
        k += 1
        out.append([])
    return out


def drop(pieces: list[Piece], lo: int, hi: int) -> list[Piece]:
    """Remove stream offsets [lo, hi) from the pieces (bytes the capture does not have)."""
    out: list[Piece] = []
    for a, e, ts in pieces:
        if e <= lo or a >= hi:
            out.append((a, e, ts))
            continue
        if a < lo:
            out.append((a, lo, ts))
        if e > hi:
            out.append((hi, e, ts))
    return out


def run(sides: tuple[tuple[bytes, list[Piece]], tuple[bytes, list[Piece]]],
        cuts: tuple[list[int], list[int]] = ([], []), server_first: bool = False, eof: bool = True) -> TlsObserver:
    obs = TlsObserver()
    chunks = [cut(sides[d][1], cuts[d]) for d in (0, 1)]
    order = (1, 0) if server_first else (0, 1)
    for i in range(max(len(chunks[0]), len(chunks[1]))):
        for d in order:
            if i < len(chunks[d]):
                obs.feed(d, make_chunk(sides[d][0], chunks[d][i]))
    for d in order:
        obs.feed(d, make_chunk(sides[d][0], [], eof=len(sides[d][0]) if eof else -1, final=True))
    return obs


def observe_events(events: list[Event], **kw: Any) -> TlsObserver:
    return run(streams(events), **kw)


# ------------------------------------------------------------------------------------------ unit tests


def test_tls12_full_handshake() -> None:
    obs = observe_events(tls12_full())
    f = obs.facts()
    assert obs.anomalies() == []
    assert (f.tls, f.version, f.version_id, f.sni, f.alpn_offered, f.alpn) == (
        True, "TLS 1.2", 0x0303, "example.com", ("h2", "http/1.1"), "http/1.1")
    assert (f.cipher_suite, f.cipher_suite_id) == ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xC02F)
    assert (f.resumed, f.abbreviated_handshake, f.session_id_echoed, f.hello_retry, f.alpn_encrypted) == (
        False, False, False, False, False)
    assert (f.ts_client_hello_ns, f.ts_server_hello_ns, f.ts_first_client_app_data_ns) == (1 * MS, 2 * MS, 5 * MS)
    assert f.handshake_round_trips == 2
    assert f.certificate_seen and f.client_hellos == 1 and f.server_hellos == 1
    assert f.app_records == (2, 3) and f.app_bytes == (500, 5900)
    assert f.exchanges_estimate == 2
    assert f.exchange_bounds == ((5 * MS, 6 * MS), (7 * MS, 8 * MS))
    first = f.exchanges[0]
    assert (first.request_records, first.request_bytes, first.response_records, first.response_bytes) == (
        1, 300, 2, 5100)


def test_record_times_are_first_byte_and_completion() -> None:
    """A burst starts with its first record's first byte and ends when its last record was complete."""
    events = tls12_full()
    events[5] = (S, rec(23, ciphertext(5000)), 6 * MS)
    (c_data, c_pieces), (s_data, s_pieces) = streams(events)
    retimed: list[Piece] = []
    j = 0
    for a, e, ts in s_pieces:
        if ts == 6 * MS:  # one 5000-byte record in 4 segments 0.1 ms apart
            ts += j * 100_000
            j += 1
        retimed.append((a, e, ts))
    assert j == 4
    f = run(((c_data, c_pieces), (s_data, retimed))).facts()
    ex = f.exchanges[0]
    assert (ex.ts_request_start_ns, ex.ts_request_end_ns) == (5 * MS, 5 * MS)
    assert (ex.ts_response_start_ns, ex.ts_response_end_ns) == (6 * MS, 6 * MS + 300_000)
    assert f.exchange_bounds[0] == (5 * MS, 6 * MS + 300_000)


def test_tls12_resumption_by_session_id() -> None:
    f = observe_events(tls12_resumed_session_id()).facts()
    assert (f.resumed, f.session_id_echoed, f.abbreviated_handshake, f.certificate_seen) == (True, True, True, False)
    assert f.handshake_round_trips == 1
    assert f.ts_first_client_app_data_ns == 3 * MS + 1000
    assert f.exchanges_estimate == 1


def test_tls12_resumption_by_ticket() -> None:
    """Ticket resumption: no session id echo, but the server's CCS follows ServerHello + NewSessionTicket."""
    f = observe_events(tls12_ticket()).facts()
    assert (f.ticket_offered, f.session_id_echoed, f.abbreviated_handshake, f.resumed) == (True, False, True, True)
    assert f.handshake_round_trips == 1


def test_tls13_full_handshake() -> None:
    obs = observe_events(tls13_full())
    f = obs.facts()
    assert obs.anomalies() == []
    assert (f.version, f.cipher_suite, f.alpn, f.alpn_encrypted, f.resumed) == (
        "TLS 1.3", "TLS_AES_128_GCM_SHA256", None, True, False)
    # the client's Finished (53 bytes) is its first application_data record after the ServerHello
    assert f.ts_first_client_app_data_ns == 3 * MS + 500_000
    assert f.handshake_round_trips == 1
    assert f.app_records == (2, 4)
    assert f.exchange_bounds == ((3 * MS + 500_000, 4 * MS),)


def test_tls13_finished_with_padding_falls_back_to_second_record() -> None:
    f = observe_events(tls13_full(finished_len=80)).facts()
    assert f.ts_first_client_app_data_ns == 3 * MS + 500_000


def test_tls13_hello_retry_request() -> None:
    obs = observe_events(tls13_hrr())
    f = obs.facts()
    assert obs.anomalies() == []
    assert (f.hello_retry, f.client_hellos, f.server_hellos, f.version) == (True, 2, 2, "TLS 1.3")
    assert f.ts_server_hello_ns == 4 * MS  # the real ServerHello, not the HRR
    assert f.handshake_round_trips == 2
    assert f.cipher_suite == "TLS_AES_256_GCM_SHA384"
    assert f.ts_first_client_app_data_ns == 5 * MS  # after the 69-byte (SHA-384) Finished
    assert f.exchanges_estimate == 1


def test_tls13_hrr_only_gives_version_and_suite() -> None:
    events = tls13_hrr()[:2]
    f = observe_events(events).facts()
    assert (f.hello_retry, f.version, f.cipher_suite_id, f.ts_server_hello_ns, f.handshake_round_trips) == (
        True, "TLS 1.3", 0x1302, None, None)


def test_tls13_psk_and_zero_rtt() -> None:
    f = observe_events(tls13_zero_rtt()).facts()
    assert (f.psk_offered, f.early_data, f.resumed, f.early_data_records) == (True, True, True, 1)
    assert f.handshake_round_trips == 0


def test_sslv2_compatible_client_hello() -> None:
    obs = observe_events(sslv2_then_tls10())
    f = obs.facts()
    assert obs.anomalies() == []
    assert (f.sslv2_client_hello, f.client_hellos, f.version, f.sni, f.cipher_suite) == (
        True, 1, "TLS 1.0", None, "TLS_RSA_WITH_RC4_128_MD5")
    assert f.exchanges_estimate == 1


def test_handshake_message_spanning_records_and_several_per_record() -> None:
    """A ClientHello cut over three handshake records; Certificate and ServerHelloDone sharing a record."""
    ch = client_hello(sni="split.example", alpn=("http/1.1",))
    ch_records = rec(22, ch[:10]) + rec(22, ch[10:50]) + rec(22, ch[50:])
    sh = server_hello(0x009C)
    events = [(C, ch_records, MS), (S, rec(22, sh + hs(11, bytes(20))[:7]) + rec(22, hs(11, bytes(20))[7:]
                                                                          + hs(14, b"")), 2 * MS)]
    obs = observe_events(events)
    f = obs.facts()
    assert obs.anomalies() == []
    assert (f.sni, f.alpn_offered, f.cipher_suite, f.certificate_seen) == (
        "split.example", ("http/1.1",), "TLS_RSA_WITH_AES_128_GCM_SHA256", True)


@pytest.mark.parametrize("name", ["tls12_full", "tls13_full", "tls13_hrr", "tls12_ticket", "sslv2_then_tls10"])
def test_split_at_every_byte_boundary(name: str) -> None:
    events = CONVERSATIONS[name]()
    if name == "tls12_full":
        events = tls12_full(cert=200, app=300)
    sides = streams(events)
    ref = run(sides).facts()
    assert ref.tls
    for d in (0, 1):
        for k in range(1, len(sides[d][0])):
            cuts: tuple[list[int], list[int]] = ([k], []) if d == 0 else ([], [k])
            obs = run(sides, cuts)
            assert obs.facts() == ref, (d, k)
            assert obs.anomalies() == []
    every = (list(range(1, len(sides[0][0]))), list(range(1, len(sides[1][0]))))
    assert run(sides, every).facts() == ref
    assert run(sides, every, server_first=True).facts() == ref
    assert run(sides, server_first=True).facts() == ref


def test_gap_inside_application_data_costs_nothing() -> None:
    sides = streams(tls12_full())
    ref = run(sides).facts()
    data, pieces = sides[1]
    big = data.index(rec(23, ciphertext(5000))[:5])  # the server's 5000-byte record
    obs = run((sides[0], (data, drop(pieces, big + 1000, big + 2500))))
    assert obs.anomalies() == []
    assert obs.facts() == ref


def test_gap_over_a_record_header_resynchronises() -> None:
    sides = streams(app_stream(20))
    data, pieces = sides[1]
    ref = run(sides).facts()
    assert ref.app_records == (20, 40) and ref.exchanges_estimate == 20
    offsets = [0]
    while offsets[-1] < len(data):
        offsets.append(offsets[-1] + 5 + ((data[offsets[-1] + 3] << 8) | data[offsets[-1] + 4]))
    lost = offsets[10]  # the header of the 11th server record
    obs = run((sides[0], (data, drop(pieces, lost + 2, lost + 30))))
    names = [a[1] for a in obs.anomalies()]
    assert names == ["tls_gap", "tls_resync"]
    f = obs.facts()
    assert f.app_records == (20, 39)  # the record whose header was lost is not counted
    assert f.exchanges_estimate == 20


def test_gap_inside_a_handshake_record_loses_only_that_record() -> None:
    events = tls12_full()
    flight = rec(22, server_hello()) + rec(22, hs(11, bytes(3000))) + rec(22, hs(14, b""))
    events[1] = (S, flight, 2 * MS)
    sides = streams(events)
    data, pieces = sides[1]
    cert_at = len(rec(22, server_hello()))
    obs = run((sides[0], (data, drop(pieces, cert_at + 100, cert_at + 200))))
    assert [a[1] for a in obs.anomalies()] == ["tls_gap"]
    f = obs.facts()
    assert (f.version, f.certificate_seen, f.exchanges_estimate) == ("TLS 1.2", False, 2)


def test_midstream_start_resynchronises() -> None:
    sides = streams(app_stream(10))
    (c_data, c_pieces), (s_data, s_pieces) = sides
    obs = run(((c_data, drop(c_pieces, 0, 100)), (s_data, drop(s_pieces, 0, 17))))
    names = [a[1] for a in obs.anomalies()]
    assert names.count("tls_midstream") == 2 and names.count("tls_resync") == 2
    f = obs.facts()
    assert not f.client_hellos and f.version is None
    assert f.exchanges_estimate == 9  # the first client record was cut


def test_not_tls_is_reported_and_does_not_raise() -> None:
    req = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n" * 50
    obs = run(((req, [(0, len(req), MS)]), (b"", [])))
    f = obs.facts()
    assert not f.tls and f.version is None
    assert [a[1] for a in obs.anomalies()] == ["tls_midstream"]


def test_truncated_record_at_fin() -> None:
    data = rec(22, client_hello())[:-10]
    obs = run(((data, [(0, len(data), MS)]), (b"", [])))
    assert [a[1] for a in obs.anomalies()] == ["tls_truncated_record"]


def test_malformed_hello_is_an_anomaly() -> None:
    ch = client_hello()
    broken = ch[:39] + b"\xff\xff" + ch[41:]  # the cipher suites' length runs past the message
    obs = observe_events([(C, rec(22, broken), MS), (S, rec(22, server_hello()), 2 * MS)])
    assert [a[1] for a in obs.anomalies()] == ["tls_bad_hello"]
    assert obs.facts().version == "TLS 1.2"


def test_roles_swapped() -> None:
    events = [(1 - d, b, ts) for d, b, ts in tls12_full()]
    f = observe_events(events).facts()
    assert f.roles_swapped and f.sni == "example.com" and f.ts_first_client_app_data_ns == 5 * MS
    assert f.app_records == (3, 2)


def test_looks_like_tls() -> None:
    assert looks_like_tls(rec(22, client_hello())[:16])
    assert looks_like_tls(rec(22, server_hello())[:6])
    assert looks_like_tls(b"\x17\x03\x03\x00\x20")
    assert looks_like_tls(sslv2_client_hello()[:8])
    assert not looks_like_tls(b"GET / HTTP/1.1\r\n")
    assert not looks_like_tls(b"PRI * HTTP/2.0\r\n")
    assert not looks_like_tls(b"\x16\x03")
    assert not looks_like_tls(b"\x16\x03\x01\xff\xff")  # longer than any record
    assert not looks_like_tls(b"\x16\x03\x01\x00\x10\x0b")  # a handshake record that is not a hello


# --------------------------------------------------------------------------------------- property tests

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(obs: TlsObserver) -> TlsFacts:
    f = obs.facts()
    for ts, name, detail in obs.anomalies():
        assert isinstance(ts, int) and name in ANOMALY_NAMES and isinstance(detail, str)
    assert f.exchanges_estimate == len(f.exchanges) == len(f.exchange_bounds)
    assert min(f.app_records) >= 0
    return f


@PROPS
@given(c=st.binary(max_size=2000), s=st.binary(max_size=2000), data=st.data())
def test_random_bytes_never_raise(c: bytes, s: bytes, data: st.DataObject) -> None:
    cuts = tuple(data.draw(st.lists(st.integers(1, max(1, len(x))), max_size=5)) for x in (c, s))
    _check(run(((c, [(0, len(c), MS)] if c else []), (s, [(0, len(s), 2 * MS)] if s else [])),
               (cuts[0], cuts[1])))


@st.composite
def mutated(draw: st.DrawFn) -> tuple[tuple[bytes, list[Piece]], tuple[bytes, list[Piece]], list[int], list[int]]:
    name = draw(st.sampled_from(sorted(CONVERSATIONS)))
    sides = list(streams(CONVERSATIONS[name]()))
    for d in (0, 1):
        data = bytearray(sides[d][0])
        for _ in range(draw(st.integers(0, 6))):
            if not data:
                break
            i = draw(st.integers(0, len(data) - 1))
            op = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
            if op == "flip":
                data[i] = draw(st.integers(0, 255))
            elif op == "delete":
                del data[i: i + draw(st.integers(1, 64))]
            elif op == "insert":
                data[i:i] = draw(st.binary(min_size=1, max_size=64))
            else:
                del data[i:]
        pieces = [(a, min(a + MSS, len(data)), (a // MSS + 1 + d) * MS) for a in range(0, len(data), MSS)]
        gap: bool = draw(st.booleans())
        if pieces and gap:  # bytes the capture does not have
            lo = draw(st.integers(0, len(data)))
            pieces = drop(pieces, lo, lo + draw(st.integers(1, 3000)))
        sides[d] = (bytes(data), pieces)
    cuts = [draw(st.lists(st.integers(1, max(1, len(sides[d][0]))), max_size=6)) for d in (0, 1)]
    return sides[0], sides[1], cuts[0], cuts[1]


@PROPS
@given(case=mutated(), server_first=st.booleans())
def test_mutated_conversations_never_raise(case: Any, server_first: bool) -> None:
    c, s, cc, sc = case
    _check(run((c, s), (cc, sc), server_first=server_first))


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(sorted(CONVERSATIONS)), data=st.data())
def test_any_chunking_gives_the_same_facts(name: str, data: st.DataObject) -> None:
    sides = streams(CONVERSATIONS[name]())
    ref = run(sides).facts()
    cuts = tuple(data.draw(st.lists(st.integers(1, len(sides[d][0]) - 1), max_size=12)) for d in (0, 1))
    obs = run(sides, (cuts[0], cuts[1]), server_first=data.draw(st.booleans()))
    assert obs.facts() == ref
    assert obs.anomalies() == []


# ------------------------------------------------------------------------------------ corpus vs tshark

Endpoint = tuple[str, int]


def observe_capture(path: Path) -> list[tuple[Endpoint, Endpoint, TlsObserver]]:
    """Every TCP connection of a capture, with a ``TlsObserver`` as its protocol handler."""
    out: list[tuple[Endpoint, Endpoint, TlsObserver]] = []

    def finished(conn: Connection) -> None:
        assert isinstance(conn.handler, TlsObserver)
        out.append((conn.endpoint(0), conn.endpoint(1), conn.handler))

    tracker = ConnectionTracker(TlsObserver, classify_payload, finished)
    for batch in open_capture(path).batches():
        decoded, _ = decode_batch(batch)
        tracker.feed(decoded.take(decoded.proto == TCP))
    tracker.finish()
    return out


def _manifest() -> list[dict[str, Any]]:
    path = CORPUS / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else []


TLS_FILES = [e["file"] for e in _manifest()
             if any(tag.startswith(("tls", "ssl", "https")) for tag in e.get("scenarios", []))]
# the three illustrated captures' TLS ones are tagged too; the corpus is 30 files with TLS over TCP
_FIELDS = ["tcp.stream", "ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport",
           "tls.handshake.type", "tls.handshake.extensions_server_name", "tls.handshake.extensions_alpn_str",
           "tls.handshake.ciphersuite", "tls.handshake.version", "tls.handshake.extensions.supported_version",
           "frame.time_epoch", "tcp.segment.count"]


def tshark_hellos(path: Path) -> dict[int, dict[str, Any]]:
    """Per tcp.stream: first ClientHello's endpoints, SNI, offered ALPN and time; last ServerHello's
    version (supported_versions first) and cipher suite; first ServerHello's time; hello counts.
    ``tcp.reassemble_out_of_order`` because we reassemble out-of-order segments too (hrr.pcap needs it)."""
    assert TSHARK is not None
    cmd = [TSHARK, "-n", "-o", "tcp.reassemble_out_of_order:TRUE", "-r", str(path),
           "-Y", "tls.handshake.type == 1 || tls.handshake.type == 2", "-T", "fields",
           "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for field in _FIELDS:
        cmd += ["-e", field]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result: dict[int, dict[str, Any]] = {}
    for line in out.splitlines():
        v = dict(zip(_FIELDS, line.split("\t"), strict=True))
        types = v["tls.handshake.type"].split(",")
        src = (v["ip.src"] or v["ipv6.src"], int(v["tcp.srcport"]))
        dst = (v["ip.dst"] or v["ipv6.dst"], int(v["tcp.dstport"]))
        ts = int(Decimal(v["frame.time_epoch"]) * 10**9)
        reassembled = bool(v["tcp.segment.count"])
        st_ = result.setdefault(int(v["tcp.stream"]), {"ch": 0, "sh": 0})
        if "1" in types:
            st_["ch"] += types.count("1")
            if "client" not in st_:
                st_.update(client=src, server=dst, ch_ts=ts, ch_reassembled=reassembled,
                           sni=v["tls.handshake.extensions_server_name"] or None,
                           alpn=tuple(x for x in v["tls.handshake.extensions_alpn_str"].split(",") if x))
        if "2" in types:
            st_["sh"] += types.count("2")
            st_.setdefault("client", dst)
            st_.setdefault("server", src)
            st_.setdefault("sh_ts", ts)
            st_.setdefault("sh_reassembled", reassembled)
            sv = v["tls.handshake.extensions.supported_version"]
            st_["version"] = int(sv.split(",")[0] if sv else v["tls.handshake.version"].split(",")[0], 16)
            st_["cipher"] = int(v["tls.handshake.ciphersuite"].split(",")[0], 16)
    return result


def _time_agrees(ours: int | None, theirs: int, reassembled: bool) -> bool:
    """Ours is the packet carrying the hello's record header; tshark's the frame that completed it."""
    if ours is None:
        return False
    return ours <= theirs if reassembled else ours == theirs


def tshark_disagreements(path: Path) -> tuple[int, list[str]]:
    theirs = tshark_hellos(path)
    ours: dict[tuple[Endpoint, Endpoint], list[TlsFacts]] = defaultdict(list)
    for c, s, obs in observe_capture(path):
        f = obs.facts()
        if f.client_hellos or f.server_hellos:
            ours[(s, c) if f.roles_swapped else (c, s)].append(f)
    used: dict[tuple[Endpoint, Endpoint], int] = defaultdict(int)
    diffs: list[str] = []
    for sid in sorted(theirs):
        t = theirs[sid]
        key = (t["client"], t["server"])
        if used[key] >= len(ours[key]):
            diffs.append(f"stream {sid} {key}: no TLS handshake found")
            continue
        f = ours[key][used[key]]
        used[key] += 1
        if "ch_ts" in t:
            if (f.sni, f.alpn_offered) != (t["sni"], t["alpn"]):
                diffs.append(f"stream {sid}: SNI/ALPN {f.sni!r} {f.alpn_offered} vs {t['sni']!r} {t['alpn']}")
            if not _time_agrees(f.ts_client_hello_ns, t["ch_ts"], t["ch_reassembled"]):
                diffs.append(f"stream {sid}: ClientHello at {f.ts_client_hello_ns} vs {t['ch_ts']}")
        if "version" in t:
            if (f.version_id, f.cipher_suite_id) != (t["version"], t["cipher"]):
                diffs.append(f"stream {sid}: version/suite {f.version_id} {f.cipher_suite_id} vs "
                             f"{t['version']:#06x} {t['cipher']:#06x}")
            first_sh = f.ts_server_hello_ns if not f.hello_retry else None
            if first_sh is not None and not _time_agrees(first_sh, t["sh_ts"], t["sh_reassembled"]):
                diffs.append(f"stream {sid}: ServerHello at {first_sh} vs {t['sh_ts']}")
        if (f.client_hellos, f.server_hellos) != (t["ch"], t["sh"]):
            diffs.append(f"stream {sid}: hellos {(f.client_hellos, f.server_hellos)} vs {(t['ch'], t['sh'])}")
    for key, lst in ours.items():
        if used[key] < len(lst):
            diffs.append(f"{key}: {len(lst) - used[key]} TLS connection(s) tshark does not show")
    return len(theirs), diffs


@pytest.mark.corpus
@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
@pytest.mark.skipif(not TLS_FILES, reason=f"corpus not found at {CORPUS}")
@pytest.mark.parametrize("rel", TLS_FILES)
def test_hellos_agree_with_tshark(rel: str) -> None:
    n, diffs = tshark_disagreements(CORPUS / rel)
    assert diffs == []
    if "ocsp-revoked" not in rel:  # its TLS connection is not in the capture (only OCSP over HTTP)
        assert n > 0


def _oracle(rel: str) -> dict[str, Any]:
    return json.loads((CORPUS / "oracle" / (rel + ".json")).read_text())


def _facts_by_endpoints(rel: str) -> dict[tuple[Endpoint, Endpoint], TlsFacts]:
    return {(c, s): obs.facts() for c, s, obs in observe_capture(CORPUS / rel)}


def _ep(text: str) -> Endpoint:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


@pytest.mark.corpus
@pytest.mark.skipif(not TLS_FILES, reason=f"corpus not found at {CORPUS}")
@pytest.mark.parametrize("rel", TLS_FILES)
def test_resumption_agrees_with_oracle(rel: str) -> None:
    """The oracle's unambiguous hints: ``tls13-psk`` and ``session-id`` echo (its ``session-ticket?`` hint
    means only "no Certificate seen"; in pcapfs/all_ciphers.pcap those are anonymous-DH full handshakes)."""
    ours = _facts_by_endpoints(rel)
    for conn in _oracle(rel)["tcp"]:
        tls = conn.get("tls")
        if not tls or not tls.get("server_hellos"):
            continue
        f = ours[(_ep(conn["client"]), _ep(conn["server"]))]
        hint = tls.get("resumption_hint")
        if hint == "tls13-psk" or (hint or "").startswith("session-id"):
            assert f.resumed, (conn["tcp_stream"], hint)
        elif hint is None and tls.get("certificate_msg_seen"):
            assert f.resumed is False, conn["tcp_stream"]
            # with keys (pcapng DSB) tshark sees TLS 1.3's encrypted Certificate; we never do
            assert f.certificate_seen == (not f.alpn_encrypted), conn["tcp_stream"]


KEYLOG_HTTP1 = ["zeek/tls/tls12-decryption.pcap", "zeek/tls/tls-1.2-stream-keylog.pcap"]


@pytest.mark.corpus
@pytest.mark.skipif(not TLS_FILES, reason=f"corpus not found at {CORPUS}")
@pytest.mark.parametrize("rel", KEYLOG_HTTP1)
def test_exchange_estimate_matches_decrypted_requests(rel: str) -> None:
    """HTTP/1.1 over TLS 1.2: the bursts give as many exchanges as tshark decrypts requests with the keys."""
    ours = _facts_by_endpoints(rel)
    checked = 0
    for conn in _oracle(rel)["tcp"]:
        requests = (conn.get("http1") or {}).get("requests")
        if requests:
            f = ours[(_ep(conn["client"]), _ep(conn["server"]))]
            assert f.exchanges_estimate == requests
            assert f.ts_first_client_app_data_ns == f.exchange_bounds[0][0]
            checked += 1
    assert checked == 1


@pytest.mark.corpus
@pytest.mark.skipif(not TLS_FILES, reason=f"corpus not found at {CORPUS}")
def test_illustrated_captures() -> None:
    """The byte-by-byte illustrated handshakes (tls12.xargs.org, tls13.xargs.org): "ping" → "pong"."""
    [(_, _, obs12)] = observe_capture(CORPUS / "illustrated" / "illustrated-tls12.pcap")
    f = obs12.facts()
    assert (f.version, f.sni, f.cipher_suite, f.resumed, f.handshake_round_trips) == (
        "TLS 1.2", "example.ulfheim.net", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", False, 2)
    assert (f.app_records, f.exchanges_estimate) == ((1, 1), 1)
    [(_, _, obs13)] = observe_capture(CORPUS / "illustrated" / "illustrated-tls13.pcap")
    f = obs13.facts()
    assert (f.version, f.sni, f.cipher_suite, f.alpn, f.alpn_encrypted, f.handshake_round_trips) == (
        "TLS 1.3", "example.ulfheim.net", "TLS_AES_256_GCM_SHA384", None, True, 1)
    # client: Finished, "ping"; server: EncryptedExtensions, Certificate, CertificateVerify, Finished,
    # two NewSessionTickets, "pong"
    assert f.app_records == (2, 7) and f.exchanges_estimate == 1
    assert obs12.anomalies() == [] and obs13.anomalies() == []


def test_facts_are_frozen() -> None:
    f = observe_events(tls12_full()).facts()
    with pytest.raises(AttributeError):
        f.sni = "x"  # type: ignore[misc]
    assert replace(f, sni="x").sni == "x"
