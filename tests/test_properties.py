"""Property tests (DESIGN.md §6): segmentation, reordering and duplication do not change transactions;
random mutations of captures and random HTTP byte streams never raise.

The TCP conversations are real-looking packets built with scapy (``Ether()/IP()/TCP()``, correct seq/ack, a
3-way handshake, keep-alive HTTP/1.x exchanges with Content-Length and chunked bodies, a FIN close), written
with ``scapy.utils.wrpcap`` and read back by ``analyzer.analyze``. Every conversation carries its own truth
(what the generator sent), so each example costs one capture and one analysis.

Time model: every "send event" (one message, a part of one, or a pipelined burst) has one instant; all the
segments cut from it carry that instant. Re-segmenting an event therefore keeps every byte's time and the
transaction timestamps are compared exactly; reordering moves packets in time, so only the non-time
columns are compared there.
"""

from __future__ import annotations

import gzip
import itertools
import os
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from handler_rows import transaction_rows
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

import analyzer
from analyzer.errors import CaptureFormatError
from analyzer.flows.stream import StreamChunk
from analyzer.http.transactions import Http1Connection
from analyzer.tables import HTTP_TRANSACTION_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
ZEEK_HTTP = ROOT.parent / "shared" / "corpus" / "zeek" / "http"

CLIENT, SERVER = 0, 1
T0_US = 1_700_000_000_000_000  # capture start, µs since the epoch
STEP_US = 1_000  # between send events (a whole conversation lasts far less than the reassembly hold time)
MSS = 1448
M32 = 1 << 32

# ANALYZER_PROPERTY_SCALE=20 runs 20 times more examples (a longer bug hunt; the default stays < 60 s)
SCALE = float(os.environ.get("ANALYZER_PROPERTY_SCALE", "1"))


def _n(examples: int) -> int:
    return max(1, int(examples * SCALE))


SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]

# ------------------------------------------------------------------------------------- conversations


def _filler(n: int, seed: int) -> bytes:
    """Body bytes that look like HTTP on purpose: a parser that looks inside bodies gets lost."""
    pattern = (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nGET /in-body HTTP/1.1\r\n\r\n0\r\n\r\n"
               b"\x16\x03\x01PRI * HTTP/2.0\r\n")
    k = seed % len(pattern)
    reps = (n + k) // len(pattern) + 1
    return (pattern * reps)[k: k + n]


def _chunked(sizes: list[int], ext: bool, trailer: bool, seed: int) -> bytes:
    out = b""
    for i, n in enumerate(sizes):
        out += f"{n:x}".encode() + (b";name=value;x" if ext else b"") + b"\r\n" + _filler(n, seed + i) + b"\r\n"
    return out + b"0\r\n" + (b"X-Checksum: abc\r\nX-Other: 1\r\n" if trailer else b"") + b"\r\n"


@dataclass(frozen=True)
class Body:
    kind: str  # none | length | chunked | close
    size: int = 0
    chunks: tuple[int, ...] = ()
    ext: bool = False
    trailer: bool = False

    def headers(self) -> bytes:
        if self.kind == "length":
            return f"Content-Length: {self.size}\r\n".encode()
        if self.kind == "chunked":
            return b"Transfer-Encoding: chunked\r\n"
        return b""

    def wire(self, seed: int) -> bytes:
        if self.kind in ("length", "close"):
            return _filler(self.size, seed)
        if self.kind == "chunked":
            return _chunked(list(self.chunks), self.ext, self.trailer, seed)
        return b""


@dataclass(frozen=True)
class ExchangeSpec:
    method: str
    target: str
    status: int
    req_body: Body
    resp_body: Body
    interim: bool = False  # Expect: 100-continue, answered by an interim 100 before the request body


@dataclass(frozen=True)
class ConvSpec:
    exchanges: tuple[ExchangeSpec, ...]
    version: str  # "1.1" or "1.0" (HTTP/1.0 with Connection: keep-alive on both sides)
    ending: str  # client_fin | close_request | close_response | read_until_close
    pipelined: bool  # all requests in one burst before the first response
    ipv6: bool
    client_isn: int
    server_isn: int
    fin_on_data: bool  # the closer's FIN rides on its last data segment when it sent the last data
    splits: tuple[float, ...]  # per message: 0 = one send event, else the fraction where it is cut in two


@dataclass
class Event:
    direction: int
    data: bytes
    t_us: int


@dataclass
class Conversation:
    spec: ConvSpec
    events: list[Event]
    closer: int
    expected: list[dict[str, Any]]
    expected_conn: dict[str, Any]
    streams: tuple[bytes, bytes] = (b"", b"")


_REASONS = {100: "Continue", 200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified",
            404: "Not Found", 500: "Internal Server Error"}


def _build(spec: ConvSpec) -> Conversation:
    """Messages, send events and the truth of a conversation spec."""
    n = len(spec.exchanges)
    v = "HTTP/1.0" if spec.version == "1.0" else "HTTP/1.1"
    requests: list[tuple[bytes, bytes]] = []  # (head, body)
    responses: list[tuple[bytes, bytes, bytes]] = []  # (interim, head, body)
    expected: list[dict[str, Any]] = []
    for i, ex in enumerate(spec.exchanges):
        last = i == n - 1
        conn_req = b""
        conn_resp = b""
        keep_alive = True
        if spec.version == "1.0":
            conn_req = b"Connection: keep-alive\r\n"
            conn_resp = b"Connection: keep-alive\r\nKeep-Alive: timeout=5, max=100\r\n"
            if last and spec.ending != "client_fin":
                conn_resp = b""  # the server does not agree: the connection ends
                keep_alive = False
        if last and spec.ending == "close_request":
            conn_req, conn_resp, keep_alive = b"Connection: close\r\n", b"Connection: close\r\n", False
        elif last and spec.ending == "close_response":
            conn_resp, keep_alive = b"Connection: close\r\n", False
        elif last and spec.ending == "read_until_close":
            keep_alive = False
        expect = b"Expect: 100-continue\r\n" if ex.interim else b""
        req_head = (f"{ex.method} {ex.target} {v}\r\nHost: www.example.test\r\nUser-Agent: prop/1.0\r\n"
                    .encode() + expect + ex.req_body.headers() + conn_req + b"Accept: */*\r\n\r\n")
        req_body = ex.req_body.wire(7 * i)
        no_body = ex.method == "HEAD" or ex.status in (204, 304)
        resp_head = (f"{v} {ex.status} {_REASONS[ex.status]}\r\nServer: prop\r\n".encode()
                     + ex.resp_body.headers() + conn_resp + b"Content-Type: text/plain\r\n\r\n")
        resp_body = b"" if no_body else ex.resp_body.wire(11 * i + 3)
        interim = b"HTTP/1.1 100 Continue\r\n\r\n" if ex.interim else b""
        requests.append((req_head, req_body))
        responses.append((interim, resp_head, resp_body))
        expected.append({
            "trans_depth": i + 1, "method": ex.method, "target": ex.target, "status": ex.status,
            "http_version": v, "request_body_bytes": len(req_body), "response_body_bytes": len(resp_body),
            "keep_alive": keep_alive,
        })

    events: list[Event] = []
    clock = [T0_US + 2 * STEP_US]
    split_iter = iter(spec.splits)

    def emit(direction: int, data: bytes, split: bool = True) -> tuple[int, int]:
        """Send ``data`` as one or two events; (time of the first byte, time of the last byte)."""
        frac = next(split_iter, 0.0) if split else 0.0
        cut = int(len(data) * frac)
        parts = [data[:cut], data[cut:]] if 0 < cut < len(data) else [data]
        times = []
        for part in parts:
            clock[0] += STEP_US
            events.append(Event(direction, part, clock[0]))
            times.append(clock[0])
        return times[0], times[-1]

    if spec.pipelined:
        t_req = emit(CLIENT, b"".join(h + b for h, b in requests), split=False)
        for i, (interim, head, body) in enumerate(responses):
            ts = emit(SERVER, interim + head + body)
            expected[i].update(ts_request_start=t_req[0], ts_request_end=t_req[1],
                               ts_response_start=ts[0], ts_response_end=ts[1])
    else:
        for i, ((req_head, req_body), (interim, head, body)) in enumerate(zip(requests, responses, strict=True)):
            if interim:
                t_head = emit(CLIENT, req_head, split=False)
                emit(SERVER, interim, split=False)
                t_body = emit(CLIENT, req_body)
                t_req = (t_head[0], t_body[1])
                t_resp = emit(SERVER, head + body)
            else:
                t_req = emit(CLIENT, req_head + req_body)
                t_resp = emit(SERVER, head + body)
            expected[i].update(ts_request_start=t_req[0], ts_request_end=t_req[1],
                               ts_response_start=t_resp[0], ts_response_end=t_resp[1])
    closer = CLIENT if spec.ending == "client_fin" else SERVER
    streams = (b"".join(e.data for e in events if e.direction == CLIENT),
               b"".join(e.data for e in events if e.direction == SERVER))
    conn = {"requests": n, "pipelined_max": n if spec.pipelined and n else 1, "close_by":
            "client" if closer == CLIENT else "server"}
    return Conversation(spec, events, closer, expected, conn, streams)


# ------------------------------------------------------------------------------------------ segments


@dataclass
class Seg:
    """One TCP segment before rendering: stream offsets instead of sequence numbers."""

    direction: int
    off: int  # stream offset of the first payload byte (-1 for a SYN)
    data: bytes
    t_us: int
    flags: str
    ack_off: int | None  # stream offset acknowledged in the other direction (None: no ACK flag)

    @property
    def significant(self) -> bool:
        return bool(self.data) or "S" in self.flags or "F" in self.flags


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` and wherever a piece would exceed the MSS."""
    pieces = []
    prev = 0
    for p in [*sorted({c for c in cuts if 0 < c < len(data)}), len(data)]:
        while p - prev > MSS:
            pieces.append(data[prev: prev + MSS])
            prev += MSS
        if p > prev:
            pieces.append(data[prev:p])
            prev = p
    return pieces


def segments(conv: Conversation, cuts: list[list[int]] | None = None) -> list[Seg]:
    """Handshake, data segments (MSS-sized, or cut where ``cuts[event]`` says), ACKs, and the FIN close."""
    t = T0_US
    segs = [Seg(CLIENT, -1, b"", t, "S", None), Seg(SERVER, -1, b"", t + 100, "SA", 0),
            Seg(CLIENT, 0, b"", t + 200, "A", 0)]
    sent = [0, 0]
    for k, ev in enumerate(conv.events):
        d = ev.direction
        for piece in _cut(ev.data, cuts[k] if cuts is not None and k < len(cuts) else []):
            segs.append(Seg(d, sent[d], piece, ev.t_us, "PA", sent[1 - d]))
            sent[d] += len(piece)
        segs.append(Seg(1 - d, sent[1 - d], b"", ev.t_us + 50, "A", sent[d]))
    c = conv.closer
    t_fin = conv.events[-1].t_us + STEP_US if conv.events else T0_US + STEP_US
    last_data = max((i for i, s in enumerate(segs) if s.data), default=-1)
    if conv.spec.fin_on_data and last_data >= 0 and segs[last_data].direction == c:
        segs[last_data].flags = "FPA"
    else:
        segs.append(Seg(c, sent[c], b"", t_fin, "FA", sent[1 - c]))
    segs.append(Seg(1 - c, sent[1 - c], b"", t_fin + 100, "FA", sent[c] + 1))
    segs.append(Seg(c, sent[c] + 1, b"", t_fin + 200, "A", sent[1 - c] + 1))
    return segs


def render(conv: Conversation, segs: list[Seg], path: Path) -> Path:
    spec = conv.spec
    isn = (spec.client_isn, spec.server_isn)
    addrs = ("fd00:1::10", "fd00:2::80") if spec.ipv6 else ("10.1.2.3", "192.0.2.80")
    ports = (49152 + spec.client_isn % 1000, 8080)
    macs = ("02:00:00:00:00:01", "02:00:00:00:00:02")
    pkts = []
    for s in segs:
        d = s.direction
        l3 = (IPv6(src=addrs[d], dst=addrs[1 - d]) if spec.ipv6 else
              IP(src=addrs[d], dst=addrs[1 - d], id=len(pkts) & 0xFFFF))
        seq = (isn[d] + 1 + s.off) % M32
        ack = (isn[1 - d] + 1 + s.ack_off) % M32 if s.ack_off is not None else 0
        tcp = TCP(sport=ports[d], dport=ports[1 - d], seq=seq, ack=ack, flags=s.flags, window=65535)
        pkt = Ether(src=macs[d], dst=macs[1 - d]) / l3 / tcp
        if s.data:
            pkt = pkt / Raw(load=s.data)
        pkt.time = s.t_us / 1e6
        pkts.append(pkt)
    wrpcap(str(path), pkts)
    return path


def _monotone(segs: list[Seg]) -> list[Seg]:
    out = []
    t = 0
    for s in segs:
        t = max(t, s.t_us)
        out.append(replace(s, t_us=t))
    return out


def reorder(segs: list[Seg], swaps: list[int]) -> list[Seg]:
    """Swap neighbours (the SYN stays first). Two packets of different directions that both carry data,
    SYN or FIN are never swapped: that would change what each side had sent when (e.g. make a sequential
    request pipelined), not just the order the capture saw. Nor does an ACK move before the data it
    acknowledges: no capture point sees that (and the analyzer rightly takes such a hole as a capture
    drop, not as reordering)."""
    segs = list(segs)
    for i in swaps:
        i = 1 + i % (len(segs) - 2)
        a, b = segs[i], segs[i + 1]
        if a.direction != b.direction:
            if a.significant and b.significant:
                continue
            if a.significant and b.ack_off is not None and b.ack_off > a.off:
                continue
        segs[i], segs[i + 1] = b, a
    return _monotone(segs)


def duplicate(segs: list[Seg], dups: list[tuple[int, int]], copied: list[int] | None = None) -> list[Seg]:
    """Exact copies of data segments, inserted 1..8 packets after the original (retransmissions).
    The lengths of the copies are appended to ``copied``."""
    segs = list(segs)
    data_idx = [i for i, s in enumerate(segs) if s.data]
    if not data_idx:
        return segs
    for pick, later in dups:
        i = data_idx[pick % len(data_idx)]
        orig = segs[i]
        j = min(len(segs), i + 1 + later)
        segs.insert(j, replace(orig, t_us=segs[j - 1].t_us, flags=orig.flags.replace("F", "")))
        if copied is not None:
            copied.append(len(orig.data))
        data_idx = [k for k, s in enumerate(segs) if s.data]
    return _monotone(segs)


def repacketize(segs: list[Seg], streams: tuple[bytes, bytes], ranges: list[tuple[int, int, int, int]]) -> list[Seg]:
    """Retransmissions that cover an arbitrary range of already-sent bytes (overlapping the originals'
    boundaries, as TCP does when it repacketizes), inserted after every original carrying those bytes."""
    segs = list(segs)
    for d, a, ln, later in ranges:
        stream = streams[d]
        if not stream:
            continue
        a %= len(stream)
        b = min(len(stream), a + 1 + ln % MSS)
        last = max(i for i, s in enumerate(segs) if s.direction == d and s.data and s.off < b)
        j = min(len(segs), last + 1 + later)
        ack = segs[last].ack_off
        segs.insert(j, Seg(d, a, stream[a:b], segs[j - 1].t_us, "PA", ack))
    return _monotone(segs)


# ---------------------------------------------------------------------------------------- strategies

_body_small = st.one_of(
    st.builds(Body, st.just("length"), st.integers(0, 3000)),
    st.builds(Body, st.just("chunked"), st.just(0),
              st.lists(st.integers(1, 1200), max_size=3).map(tuple), st.booleans(), st.booleans()),
)


@st.composite
def exchange_specs(draw: st.DrawFn, version: str) -> ExchangeSpec:
    method = draw(st.sampled_from(["GET", "GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS"]))
    target = draw(st.sampled_from(["/", "/index.html", "/api/v1/items?id=7&x=%20", "/a/b/c.bin", "*"]))
    if target == "*":
        method = "OPTIONS"
    status = draw(st.sampled_from([200, 200, 201, 204, 304, 404, 500]))
    req_body = Body("none")
    if method in ("POST", "PUT"):
        req_body = draw(_body_small)
    resp_body = draw(_body_small)
    if version == "1.0":  # no chunked framing in HTTP/1.0
        req_body = Body("length", len(req_body.wire(0))) if req_body.kind == "chunked" else req_body
        resp_body = Body("length", len(resp_body.wire(0))) if resp_body.kind == "chunked" else resp_body
    if status == 204:
        resp_body = Body("none")
    interim = version == "1.1" and req_body.kind != "none" and len(req_body.wire(0)) > 0 and draw(st.booleans())
    return ExchangeSpec(method, target, status, req_body, resp_body, interim)


_isn = st.one_of(st.integers(0, M32 - 1), st.integers(1, 6000).map(lambda k: M32 - k))


@st.composite
def conv_specs(draw: st.DrawFn, pipelined: bool | None = None, ipv6: bool | None = None,
               max_exchanges: int = 4) -> ConvSpec:
    version = draw(st.sampled_from(["1.1", "1.1", "1.0"]))
    n = draw(st.integers(1, max_exchanges))
    exchanges = [draw(exchange_specs(version)) for _ in range(n)]
    pipe = draw(st.booleans()) if pipelined is None else pipelined
    if pipe:
        exchanges = [replace(e, interim=False) for e in exchanges]
    ending = draw(st.sampled_from(["client_fin", "close_request", "close_response", "read_until_close"]))
    if ending == "read_until_close":
        last = exchanges[-1]
        body = last.resp_body if last.resp_body.kind == "length" else Body("length", 100)
        exchanges[-1] = replace(last, method="GET", target="/stream", status=200, req_body=Body("none"),
                                resp_body=Body("close", body.size), interim=False)
    return ConvSpec(
        exchanges=tuple(exchanges), version=version, ending=ending, pipelined=pipe,
        ipv6=draw(st.booleans()) if ipv6 is None else ipv6,
        client_isn=draw(_isn), server_isn=draw(_isn), fin_on_data=draw(st.booleans()),
        splits=tuple(draw(st.lists(st.sampled_from([0.0, 0.0, 0.01, 0.3, 0.5, 0.9, 0.999]),
                                   min_size=2 * n, max_size=2 * n))),
    )


# ------------------------------------------------------------------------------------------- checks

TX_COLUMNS = ["trans_depth", "method", "target", "status", "http_version", "request_body_bytes",
              "response_body_bytes", "keep_alive"]
TS_COLUMNS = ["ts_request_start", "ts_request_end", "ts_response_start", "ts_response_end"]


def _py(v: Any) -> Any:
    """A table cell as a plain Python value (None for NA/NaN)."""
    if v is None or (not isinstance(v, (str, bytes)) and pd.isna(v)):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def check_analysis(a: analyzer.Analysis, conv: Conversation, times: bool) -> None:
    """The analysis finds exactly the conversation's truth (no anomaly, one connection, its requests,
    ``pipelined_max`` and ``close_by``, the transactions); ``times``: the four timestamps too."""
    s = a.summary
    assert s["packets_read"] == s["packets_analyzed"] + sum(s["packets_skipped"].values())
    assert list(a.anomalies["name"]) == [], a.anomalies.to_dict("records")
    assert len(a.connections) == 1, a.connections
    conn = a.connections.iloc[0]
    got_conn = {k: _py(conn[k]) for k in conv.expected_conn}
    assert got_conn == conv.expected_conn
    assert _py(conn["syn_seen"]) is True
    cols = TX_COLUMNS + (TS_COLUMNS if times else [])
    got = [{k: _py(r[k]) for k in cols} for r in a.transactions.to_dict("records")]
    want = [{k: e[k] for k in cols} for e in conv.expected]
    for row in want:
        for k in TS_COLUMNS:
            if k in row:
                row[k] = row[k] / 1e6
    if times:
        for g, w in zip(got, want, strict=False):
            for k in TS_COLUMNS:
                assert g[k] is not None and abs(g[k] - w[k]) < 2e-6, (k, g, w)
                g[k] = w[k]
    assert got == want


def _analyze(conv: Conversation, segs: list[Seg], tmp: Path, name: str, **options: Any) -> analyzer.Analysis:
    return analyzer.analyze(str(render(conv, segs, tmp / name)), **options)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("props")


# ------------------------------------------------------------------------------------- the properties


@st.composite
def cut_lists(draw: st.DrawFn, conv: Conversation) -> list[list[int]]:
    out = []
    for ev in conv.events:
        if len(ev.data) < 2:
            out.append([])
            continue
        out.append(draw(st.lists(st.integers(1, len(ev.data) - 1), max_size=4)))
    return out


@settings(max_examples=_n(30), deadline=None, suppress_health_check=SLOW)
@given(spec=conv_specs(), data=st.data())
def test_resegmentation_keeps_transactions_and_times(tmp: Path, spec: ConvSpec, data: st.DataObject) -> None:
    conv = _build(spec)
    cuts = data.draw(cut_lists(conv), label="cuts")
    a = _analyze(conv, segments(conv, cuts), tmp, "reseg.pcap")
    check_analysis(a, conv, times=True)


@settings(max_examples=_n(25), deadline=None, suppress_health_check=SLOW)
@given(spec=conv_specs(), data=st.data())
def test_reordering_within_a_window_keeps_transactions(tmp: Path, spec: ConvSpec, data: st.DataObject) -> None:
    conv = _build(spec)
    cuts = data.draw(cut_lists(conv), label="cuts")
    segs = segments(conv, cuts)
    swaps = data.draw(st.lists(st.integers(0, 10_000), min_size=1, max_size=12), label="swaps")
    a = _analyze(conv, reorder(segs, swaps), tmp, "reorder.pcap")
    check_analysis(a, conv, times=False)


@settings(max_examples=_n(25), deadline=None, suppress_health_check=SLOW)
@given(spec=conv_specs(), data=st.data())
def test_exact_duplicates_keep_transactions_and_times(tmp: Path, spec: ConvSpec, data: st.DataObject) -> None:
    """A copy of a segment arriving after the original changes nothing: not even a byte's first time."""
    conv = _build(spec)
    segs = segments(conv, data.draw(cut_lists(conv), label="cuts"))
    dups = data.draw(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 8)), min_size=1, max_size=6),
                     label="dups")
    copied: list[int] = []
    a = _analyze(conv, duplicate(segs, dups, copied), tmp, "dup.pcap")
    check_analysis(a, conv, times=True)
    if any(n > 1 for n in copied):  # a 1-byte copy of the last byte sent looks like a keep-alive probe
        # as Wireshark: a copy arriving soon after the highest segment is out of order, else a retransmission
        row = a.connections.iloc[0]
        assert int(row["retransmissions"]) + int(row["out_of_order"]) >= 1


_cut_fractions = st.lists(st.lists(st.floats(0.001, 0.999), max_size=4), max_size=12)


def _cuts_from_fractions(conv: Conversation, fractions: list[list[float]]) -> list[list[int]]:
    return [[int(f * len(ev.data)) for f in (fractions[k] if k < len(fractions) else [])]
            for k, ev in enumerate(conv.events)]


# Response 1 written in small pieces (head, then three body writes), all at one instant; the server then
# retransmits it collapsed into one segment (a spurious RTO crossing request 2), after request 2.
_REPACK_SPEC = ConvSpec(
    (ExchangeSpec("GET", "/1", 200, Body("none"), Body("length", 900)),
     ExchangeSpec("GET", "/2", 200, Body("none"), Body("length", 10))),
    "1.1", "client_fin", False, False, 1000, 5000, False, ())
_REPACK_LEN = len(_build(_REPACK_SPEC).events[1].data)


@settings(max_examples=_n(25), deadline=None, suppress_health_check=SLOW)
@example(spec=_REPACK_SPEC, cut_fractions=[[], [0.1, 0.4, 0.7]], ranges=[(1, 0, _REPACK_LEN - 1, 2)])
@given(spec=conv_specs(), cut_fractions=_cut_fractions,
       ranges=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1 << 20), st.integers(0, 4000),
                                 st.integers(0, 6)), min_size=1, max_size=4))
def test_overlapping_retransmissions_keep_transactions(tmp: Path, spec: ConvSpec, cut_fractions: list[list[float]],
                                                       ranges: list[tuple[int, int, int, int]]) -> None:
    """Retransmissions covering any range of bytes already sent (at most one MSS, across the originals'
    boundaries) change nothing: every byte keeps the time it was first seen."""
    conv = _build(spec)
    segs = segments(conv, _cuts_from_fractions(conv, cut_fractions))
    a = _analyze(conv, repacketize(segs, conv.streams, ranges), tmp, "rtx.pcap")
    check_analysis(a, conv, times=True)


def _two_sequential_gets() -> Conversation:
    ex = (ExchangeSpec("GET", "/1", 200, Body("none"), Body("length", 100)),
          ExchangeSpec("GET", "/2", 200, Body("none"), Body("length", 10)))
    return _build(ConvSpec(ex, "1.1", "client_fin", False, False, 1000, 5000, False, ()))


def test_late_exact_retransmission_of_a_whole_response_changes_nothing(tmp: Path) -> None:
    conv = _two_sequential_gets()
    segs = segments(conv, [[], [60], [], []])  # response 1 in two segments
    first_resp = [i for i, sg in enumerate(segs) if sg.direction == SERVER and sg.data][:2]
    req2 = next(i for i, sg in enumerate(segs) if sg.direction == CLIENT and sg.off > 0 and sg.data)
    for i in first_resp:  # both segments again, after request 2
        segs.insert(req2 + 1, replace(segs[i], t_us=segs[req2].t_us + 10))
    a = _analyze(conv, _monotone(segs), tmp, "late-dup.pcap")
    check_analysis(a, conv, times=True)


def test_late_retransmission_of_two_segments_keeps_first_arrival_times(tmp: Path) -> None:
    conv = _two_sequential_gets()
    segs = segments(conv, [[], [60], [], []])  # response 1 in two segments, at the same instant
    req2 = next(i for i, sg in enumerate(segs) if sg.direction == CLIENT and sg.off > 0 and sg.data)
    resp1 = conv.events[1].data
    segs.insert(req2 + 1, Seg(SERVER, 0, resp1, segs[req2].t_us + 10, "PA", segs[req2].off + len(segs[req2].data)))
    a = _analyze(conv, _monotone(segs), tmp, "repack2.pcap")
    assert int(a.connections.iloc[0]["retransmissions"]) == 1
    check_analysis(a, conv, times=True)


def test_late_retransmission_of_three_segments_keeps_first_arrival_times(tmp: Path) -> None:
    conv = _two_sequential_gets()
    segs = segments(conv, [[], [40, 80], [], []])  # response 1 in three segments, at the same instant
    req2 = next(i for i, sg in enumerate(segs) if sg.direction == CLIENT and sg.off > 0 and sg.data)
    resp1 = conv.events[1].data
    # the server retransmits all of response 1 as one segment (a spurious RTO), seen after request 2
    segs.insert(req2 + 1, Seg(SERVER, 0, resp1, segs[req2].t_us + 10, "PA", segs[req2].off + len(segs[req2].data)))
    a = _analyze(conv, _monotone(segs), tmp, "repack3.pcap")
    assert int(a.connections.iloc[0]["retransmissions"]) == 1
    check_analysis(a, conv, times=True)  # got: pipelined_max 2 (response 1 "ends" at the retransmission)


@settings(max_examples=_n(25), deadline=None, suppress_health_check=SLOW)
@given(spec=conv_specs(), data=st.data())
def test_reordering_and_duplication_across_small_batches(tmp: Path, spec: ConvSpec, data: st.DataObject) -> None:
    """The same under any batch size of the reader (holes held across batches, state carried over)."""
    conv = _build(spec)
    segs = segments(conv, data.draw(cut_lists(conv), label="cuts"))
    segs = reorder(segs, data.draw(st.lists(st.integers(0, 10_000), max_size=8), label="swaps"))
    segs = duplicate(segs, data.draw(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 8)), max_size=3),
                                     label="dups"))
    chunk = data.draw(st.sampled_from([1, 2, 3, 5, 8, 13, 21]), label="chunk_packets")
    a = _analyze(conv, segs, tmp, "batches.pcap", chunk_packets=chunk)
    check_analysis(a, conv, times=False)


@pytest.mark.parametrize("chunk", [13, 1000])
def test_a_late_duplicate_does_not_hold_the_request_behind_it(tmp: Path, chunk: int) -> None:
    """Found by ``test_reordering_and_duplication_across_small_batches``: a request sent as ``G`` then the
    rest, a copy of ``G`` captured after the response, and a hole in the response held to the next chunk.
    The connection is held from the hole's time on; the late copy of ``G`` sorts before the rest of the
    request (by sequence number), which was captured earlier, and holding from it on held the request too:
    the response was parsed first and became an orphan (``response_before_request``)."""
    spec = ConvSpec((ExchangeSpec("GET", "/", 200, Body("none"), Body("length", 187)),), "1.1", "client_fin",
                    True, False, client_isn=0, server_isn=0, fin_on_data=False, splits=(0.3, 0.0))
    conv = _build(spec)
    segs = duplicate(reorder(segments(conv, [[1], [], [1, 2, 3, 4]]), [5215]), [(0, 5)])
    assert [(s.direction, s.off, len(s.data)) for s in segs[8:14]] == [
        (1, 80, 1), (0, 0, 1), (1, 81, 1), (1, 82, 1), (1, 84, 183), (1, 83, 1)]  # the copy; the hole at 83
    a = _analyze(conv, segs, tmp, f"late-dup-{chunk}.pcap", chunk_packets=chunk)
    check_analysis(a, conv, times=False)


@settings(max_examples=_n(20), deadline=None, suppress_health_check=SLOW)
@given(spec=conv_specs(), data=st.data())
def test_small_batches_keep_transactions_and_times(tmp: Path, spec: ConvSpec, data: st.DataObject) -> None:
    """Messages cut across reader batches keep the times of their bytes (first byte, last byte)."""
    conv = _build(spec)
    segs = segments(conv, data.draw(cut_lists(conv), label="cuts"))
    segs = duplicate(segs, data.draw(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 8)), max_size=2),
                                     label="dups"))
    chunk = data.draw(st.sampled_from([1, 2, 3, 4, 5, 7, 11]), label="chunk_packets")
    a = _analyze(conv, segs, tmp, "batches-t.pcap", chunk_packets=chunk)
    check_analysis(a, conv, times=True)


@settings(max_examples=_n(15), deadline=None, suppress_health_check=SLOW)
@given(spec=conv_specs(pipelined=True, max_exchanges=5), data=st.data())
def test_pipelined_burst_any_segmentation(tmp: Path, spec: ConvSpec, data: st.DataObject) -> None:
    """Several requests in one segment (or cut anywhere, across request boundaries): pipelined_max = n."""
    conv = _build(spec)
    cuts = data.draw(cut_lists(conv), label="cuts")
    a = _analyze(conv, segments(conv, cuts), tmp, "pipe.pcap")
    check_analysis(a, conv, times=True)
    rows = a.transactions.to_dict("records")
    assert [bool(r["pipelined"]) for r in rows[1:]] == [True] * (len(rows) - 1)


def _wrap_spec(version: str = "1.1", ipv6: bool = False) -> ConvSpec:
    ex = (ExchangeSpec("GET", "/one", 200, Body("none"), Body("length", 5000)),
          ExchangeSpec("POST", "/two", 200, Body("chunked", 0, (700, 900), True, True), Body("length", 10)),
          ExchangeSpec("GET", "/three", 200, Body("none"), Body("length", 20)))
    # the server's stream wraps 2**32 in the middle of the first response body, the client's in the
    # middle of the second request's chunked body
    return ConvSpec(ex, version, "client_fin", False, ipv6, client_isn=M32 - 2 - 150 - 500,
                    server_isn=M32 - 1 - 2500, fin_on_data=False, splits=())


@pytest.mark.parametrize("ipv6", [False, True])
def test_sequence_wrap_inside_a_body(tmp: Path, ipv6: bool) -> None:
    conv = _build(_wrap_spec(ipv6=ipv6))
    assert len(conv.streams[SERVER]) > 2500 and len(conv.streams[CLIENT]) > 650
    a = _analyze(conv, segments(conv), tmp, f"wrap{int(ipv6)}.pcap")
    check_analysis(a, conv, times=True)
    assert a.connections.iloc[0]["client_ip"] == ("fd00:1::10" if ipv6 else "10.1.2.3")


@settings(max_examples=_n(15), deadline=None, suppress_health_check=SLOW)
@given(data=st.data(), client_back=st.integers(1, 4000), server_back=st.integers(1, 9000))
def test_sequence_wrap_anywhere_with_reordering(tmp: Path, data: st.DataObject, client_back: int,
                                                 server_back: int) -> None:
    spec = replace(_wrap_spec(ipv6=data.draw(st.booleans())), client_isn=M32 - client_back,
                   server_isn=M32 - server_back)
    conv = _build(spec)
    segs = segments(conv, data.draw(cut_lists(conv), label="cuts"))
    segs = reorder(segs, data.draw(st.lists(st.integers(0, 10_000), max_size=10), label="swaps"))
    a = _analyze(conv, segs, tmp, "wrap-any.pcap")
    check_analysis(a, conv, times=False)


# ------------------------------------------------------------------------------- (d) mutated captures


def _capture_files() -> list[Path]:
    files = sorted((ROOT / "captures").glob("*.pcap")) + sorted((ROOT / "captures").glob("*.pcapng"))
    zeek = ["get.pcap", "get_nosyn.pcap", "http_09.pcap", "websocket.pcap", "100-continue.pcap",
            "zero-length-bodies-with-drops.pcap", "connect-with-header.pcap", "docker-http-upgrade.pcap",
            "zeek-image-1080-80-x.pcapng", "http-desync-request-response-5.pcap"]
    files += [ZEEK_HTTP / z for z in zeek if (ZEEK_HTTP / z).exists()]
    return files


CAPTURE_FILES = _capture_files()


def _record_offsets(raw: bytes) -> tuple[int, list[int]]:
    """(file header length, offsets of the records / blocks that follow it)."""
    magic = raw[:4]
    offsets = []
    if magic == b"\x0a\x0d\x0d\x0a":
        endian = "<" if raw[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        header = struct.unpack_from(endian + "I", raw, 4)[0]
        pos = header
        while pos + 8 <= len(raw) and len(offsets) < 5000:
            offsets.append(pos)
            blen = struct.unpack_from(endian + "I", raw, pos + 4)[0]
            if blen < 12:
                break
            pos += blen
        return header, offsets
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    pos = 24
    while pos + 16 <= len(raw) and len(offsets) < 5000:
        offsets.append(pos)
        pos += 16 + struct.unpack_from(endian + "I", raw, pos + 8)[0]
    return 24, offsets


_FILE_CACHE: dict[Path, tuple[bytes, int, list[int]]] = {}


def _load(path: Path) -> tuple[bytes, int, list[int]]:
    if path not in _FILE_CACHE:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        _FILE_CACHE[path] = (raw, *_record_offsets(raw))
    return _FILE_CACHE[path]


@st.composite
def mutations(draw: st.DrawFn, size: int, header: int, records: list[int]) -> list[tuple[str, int, bytes]]:
    """(op, position, bytes): ops flip / set / insert / delete / truncate, positions biased towards the
    record headers and the L2-L4 headers right after them (where a wrong byte hurts most)."""
    def position() -> int:
        how = draw(st.sampled_from(["record", "record", "record", "anywhere", "header"]))
        if how == "record" and records:
            return min(size - 1, draw(st.sampled_from(records)) + draw(st.integers(0, 90)))
        if how == "header":
            return draw(st.integers(0, max(0, header - 1)))
        return draw(st.integers(0, size - 1))

    ops = []
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "flip", "set", "set", "insert", "delete", "truncate"]))
        pos = position()
        if op == "flip":
            ops.append((op, pos, bytes([1 << draw(st.integers(0, 7))])))
        elif op == "set":
            ops.append((op, pos, draw(st.binary(min_size=1, max_size=8)
                                      | st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00",
                                                         b"\x00\x00\x04\x00", b"\x7f\xff\xff\xff"]))))
        elif op == "insert":
            ops.append((op, pos, draw(st.binary(min_size=1, max_size=64))))
        elif op == "delete":
            ops.append((op, pos, bytes(draw(st.integers(1, 64)))))
        else:
            ops.append((op, pos, b""))
    return ops


def _apply(raw: bytes, ops: list[tuple[str, int, bytes]], header: int) -> tuple[bytes, bool]:
    """Mutated bytes, and whether the file header may have been destroyed."""
    buf = bytearray(raw)
    header_hit = False
    for op, pos, arg in ops:
        pos = min(pos, len(buf))
        if op == "flip" and pos < len(buf):
            buf[pos] ^= arg[0]
            header_hit |= pos < header
        elif op == "set":
            buf[pos: pos + len(arg)] = arg
            header_hit |= pos < header
        elif op == "insert":
            buf[pos:pos] = arg
            header_hit |= pos < header
        elif op == "delete":
            del buf[pos: pos + len(arg)]
            header_hit |= pos < header
        elif op == "truncate":
            del buf[pos:]
            header_hit |= pos < header
    return bytes(buf), header_hit


@settings(max_examples=_n(60), deadline=None, suppress_health_check=SLOW)
@given(data=st.data())
def test_mutated_captures_never_raise(tmp: Path, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(CAPTURE_FILES), label="capture")
    raw, header, records = _load(path)
    ops = data.draw(mutations(len(raw), header, records), label="mutations")
    mutated, header_hit = _apply(raw, ops, header)
    out = tmp / ("mutated" + path.suffix)
    out.write_bytes(mutated)
    try:
        a = analyzer.analyze(str(out))
    except CaptureFormatError:
        assert header_hit, "CaptureFormatError although the file header is intact"
        return
    s = a.summary
    assert s["packets_read"] == s["packets_analyzed"] + sum(s["packets_skipped"].values()), s
    assert s["transactions"] == len(a.transactions) and s["connections"] == len(a.connections)
    for name in a.anomalies["name"]:
        assert isinstance(name, str) and name == name.lower() and " " not in name


def _gunzip_prefix(data: bytes) -> bytes:
    """What a tolerant reader can decompress from a (possibly cut or corrupt) gzip stream."""
    d = zlib.decompressobj(31)
    out = []
    for i in range(0, len(data), 512):
        try:
            out.append(d.decompress(data[i: i + 512]))
        except zlib.error:
            break
    return b"".join(out)


def _complete_records(pcap: bytes) -> int:
    pos, n = 24, 0
    while pos + 16 <= len(pcap):
        caplen = struct.unpack_from("<I", pcap, pos + 8)[0]
        if pos + 16 + caplen > len(pcap):
            break
        pos += 16 + caplen
        n += 1
    return n


GZ_SOURCES = [ROOT / "captures" / "pipelining.pcap", ROOT / "captures" / "http10-and-close.pcap"]


@settings(max_examples=_n(20), deadline=None, suppress_health_check=SLOW)
@given(data=st.data())
def test_mutated_gzip_captures_never_raise(tmp: Path, data: st.DataObject) -> None:
    """Compressed captures, cut or corrupted anywhere: CaptureFormatError (when not even the file header
    decompresses) or a consistent analysis of what does (see test_corrupt_gzip_keeps_what_decompresses)."""
    raw = _load(data.draw(st.sampled_from(GZ_SOURCES), label="capture"))[0]
    gz = gzip.compress(raw, compresslevel=6, mtime=0)
    ops = data.draw(mutations(len(gz), 10, []), label="mutations")
    mutated, _ = _apply(gz, ops, 10)
    out = tmp / "mutated.pcap.gz"
    out.write_bytes(mutated)
    try:
        a = analyzer.analyze(str(out))
    except CaptureFormatError:
        return
    s = a.summary
    assert s["packets_read"] == s["packets_analyzed"] + sum(s["packets_skipped"].values()), s


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_gzip_capture_keeps_the_packets_before_the_cut(tmp: Path, fraction: float) -> None:
    """Regression: the reader lost the last up to 64 KiB of decompressed data of a cut gzip stream (and
    refused a file cut within its first 64 KiB with CaptureFormatError)."""
    raw = _load(ROOT / "captures" / "keepalive-idle-timeout.pcap")[0]
    gz = gzip.compress(raw, mtime=0)
    cut = gz[: int(len(gz) * fraction)]
    readable = _complete_records(_gunzip_prefix(cut))
    assert readable > 0
    out = tmp / f"cut{fraction}.pcap.gz"
    out.write_bytes(cut)
    a = analyzer.analyze(str(out))  # was (0.1): CaptureFormatError "corrupt gzip stream"
    assert a.summary["packets_read"] >= readable - 1  # was (0.9): 147 of 228 readable packets


@pytest.mark.parametrize("where", ["crc_trailer", "middle"])
def test_corrupt_gzip_keeps_what_decompresses(tmp: Path, where: str) -> None:
    raw = _load(ROOT / "captures" / "pipelining.pcap")[0]
    gz = bytearray(gzip.compress(raw, mtime=0))
    pos = len(gz) - 8 if where == "crc_trailer" else len(gz) // 2
    gz[pos] ^= 0x01
    readable = _complete_records(_gunzip_prefix(bytes(gz)))
    assert readable > 0
    out = tmp / f"corrupt-{where}.pcap.gz"
    out.write_bytes(bytes(gz))
    a = analyzer.analyze(str(out))  # got: CaptureFormatError "corrupt gzip stream: ... incorrect data check"
    assert a.summary["packets_read"] >= readable - 1


@pytest.mark.parametrize("path", CAPTURE_FILES, ids=lambda p: p.name)
def test_unmutated_captures_account_for_every_packet(path: Path) -> None:
    a = analyzer.analyze(str(path))
    s = a.summary
    assert s["packets_read"] > 0
    assert s["packets_read"] == s["packets_analyzed"] + sum(s["packets_skipped"].values())


# --------------------------------------------------------------------- (e) random bytes as HTTP streams

_FRAGMENTS = [
    b"GET / HTTP/1.1\r\n", b"POST /x HTTP/1.0\r\n", b"HEAD /h HTTP/1.1\r\n", b"CONNECT a:443 HTTP/1.1\r\n",
    b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 100 Continue\r\n", b"HTTP/1.1 101 Switching\r\n", b"HTTP/1.0 204 N\r\n",
    b"HTTP/1.1 304 NM\r\n", b"Content-Length: 5\r\n", b"Content-Length: 0\r\n", b"Content-Length: x\r\n",
    b"Content-Length: 99999999999999999999\r\n", b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n",
    b"Connection: keep-alive\r\n", b"Upgrade: websocket\r\n", b"Expect: 100-continue\r\n", b" folded\r\n",
    b"\r\n", b"\n", b"\r", b"5\r\nhello\r\n", b"0\r\n\r\n", b"ffffffffffffffffff\r\n", b"3;ext=1\r\nabc\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\x16\x03\x01\x02\x00\x01", b"\x80\x2e\x01", b"GET /old\r\n",
    b"HTTP/1.1 ", b"GET", b"HTTP/", b":", b" ", b"\x00", b"\xff" * 40,
]

_stream_bytes = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.binary(max_size=40)), max_size=30).map(
    b"".join)


def _multi_piece_chunk(pieces: list[tuple[int, bytes]], ts: int, eof: int, final: bool) -> StreamChunk:
    """One chunk with several pieces (gaps between them), as the reassembler delivers them."""
    buf = b"".join(p for _, p in pieces)
    starts, ends, offs = [], [], []
    o = 0
    for start, p in pieces:
        starts.append(start)
        ends.append(start + len(p))
        offs.append(o)
        o += len(p)
    n = len(pieces)
    i64 = np.int64
    ts_arr = np.arange(ts, ts + n, dtype=i64)
    return StreamChunk(np.array(starts, dtype=i64), np.array(ends, dtype=i64), np.zeros(n, dtype=np.int8),
                       np.array(offs, dtype=i64), ts_arr, ts_arr.copy(),
                       (np.frombuffer(buf, dtype=np.uint8),), eof, final)


@st.composite
def fed_streams(draw: st.DrawFn) -> list[tuple[int, StreamChunk]]:
    """Both directions' bytes, split into chunks of one or more pieces with gaps, interleaved."""
    feeds: list[list[tuple[int, StreamChunk]]] = [[], []]
    ts = 1_000
    for d in (CLIENT, SERVER):
        data = draw(_stream_bytes)
        pos = 0  # index into data
        off = draw(st.integers(0, 3))  # stream offset (data is laid out with gaps)
        while pos < len(data):
            n_pieces = draw(st.integers(1, 3))
            pieces = []
            for _ in range(n_pieces):
                if pos >= len(data):
                    break
                take = draw(st.integers(1, max(1, len(data) - pos)))
                pieces.append((off, data[pos: pos + take]))
                off += take
                pos += take
                off += draw(st.sampled_from([0, 0, 0, 1, 7, 300]))
            ts += draw(st.integers(0, 5))
            eof = off if pos >= len(data) and draw(st.booleans()) else -1
            feeds[d].append((d, _multi_piece_chunk(pieces, ts, eof, False)))
            ts += len(pieces)  # one ns per piece: times never go back
    order = draw(st.lists(st.booleans(), min_size=len(feeds[0]) + len(feeds[1]),
                          max_size=len(feeds[0]) + len(feeds[1])))
    out = []
    i = [0, 0]
    for pick_server in order:
        d = SERVER if (pick_server and i[1] < len(feeds[1])) or i[0] >= len(feeds[0]) else CLIENT
        out.append(feeds[d][i[d]])
        i[d] += 1
    return out


def _finish(conn: Http1Connection) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    for d in (CLIENT, SERVER):
        conn.feed(d, StreamChunk.empty(final=True))
    rows, facts = transaction_rows(conn, "Cx", "192.0.2.1", 80)
    return [r if isinstance(r, dict) else dict(zip(HTTP_TRANSACTION_COLUMNS, r, strict=True)) for r in rows], facts


@settings(max_examples=_n(400), deadline=None, suppress_health_check=SLOW)
@given(feeds=fed_streams())
def test_random_bytes_as_http_never_raise(feeds: list[tuple[int, StreamChunk]]) -> None:
    conn = Http1Connection()
    for d, chunk in feeds:
        conn.feed(d, chunk)
    rows, facts = _finish(conn)
    assert [r["trans_depth"] for r in rows] == list(range(1, len(rows) + 1))
    assert 0 <= facts["pipelined_max"] <= max(facts["requests"], 0)
    assert facts["protocol"] in {"http/0.9", "http/1.0", "http/1.1", "h2c", "tls", "unknown"}
    for r in rows:
        for k in ("request_body_bytes", "response_body_bytes"):
            assert r[k] is None or r[k] >= 0
        if r["idle_before_ms"] is not None:  # negative exactly when pipelined (README glossary)
            assert (r["idle_before_ms"] < 0) == bool(r["pipelined"])
    for _ts, name, detail in conn.anomalies():
        assert isinstance(name, str) and name == name.lower() and isinstance(detail, str)


@settings(max_examples=_n(200), deadline=None)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=10),
       direction=st.sampled_from([CLIENT, SERVER]))
def test_pure_random_bytes_never_raise(data: bytes, cuts: list[int], direction: int) -> None:
    conn = Http1Connection()
    prev = 0
    for c in sorted({min(c, len(data)) for c in cuts} | {len(data)}):
        if c > prev:
            conn.feed(direction, StreamChunk.from_bytes(data[prev:c], 1000 + c, prev, final=False))
        prev = c
    _finish(conn)


# ------------------------------------------------ split invariance of well-formed streams (parser level)


@st.composite
def wellformed_streams(draw: st.DrawFn) -> tuple[bytes, bytes]:
    conv = _build(draw(conv_specs(max_exchanges=5)))
    return conv.streams


def _summary(conn: Http1Connection) -> list[tuple[Any, ...]]:
    rows, facts = _finish(conn)
    return [tuple(r[k] for k in ("method", "target", "status", "request_body_bytes", "response_body_bytes",
                                 "keep_alive", "request_complete", "response_complete", *TS_COLUMNS))
            for r in rows] + [(facts["requests"], facts["protocol"], facts["pipelined_max"],
                               tuple(sorted(n for _, n, _ in conn.anomalies())))]


@settings(max_examples=_n(150), deadline=None, suppress_health_check=SLOW)
@given(streams=wellformed_streams(), data=st.data())
def test_parser_split_invariance(streams: tuple[bytes, bytes], data: st.DataObject) -> None:
    """The same bytes with the same arrival times give the same exchanges (times included) whether they
    come as one chunk of several pieces or as one chunk per piece (the parser carrying partial heads and
    chunk lines from one chunk to the next)."""
    whole = Http1Connection()
    split = Http1Connection()
    for d in (CLIENT, SERVER):
        s = streams[d]
        cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(s) - 1)), max_size=12),
                                    label=f"cuts{d}")))
        bounds = [0, *[c for c in cuts if 0 < c < len(s)], len(s)]
        pieces = [(a, s[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
        t0 = 1_000 + 1_000 * d  # every client byte before every server byte
        whole.feed(d, _multi_piece_chunk(pieces, t0, -1, False))
        for i, (start, piece) in enumerate(pieces):
            split.feed(d, StreamChunk.from_bytes(piece, t0 + i, start, False))
    assert _summary(split) == _summary(whole)


def test_strategies_build_realistic_conversations(tmp: Path) -> None:
    """The generator itself: a fixed conversation with every feature analyzes to its truth."""
    ex = (ExchangeSpec("GET", "/", 200, Body("none"), Body("chunked", 0, (10, 2000), True, True)),
          ExchangeSpec("POST", "/up", 201, Body("length", 3000), Body("length", 0), interim=True),
          ExchangeSpec("HEAD", "/", 200, Body("none"), Body("length", 1234)),
          ExchangeSpec("GET", "/nm", 304, Body("none"), Body("length", 77)),
          ExchangeSpec("GET", "/last", 200, Body("none"), Body("close", 2500)))
    spec = ConvSpec(ex, "1.1", "read_until_close", False, False, 12345, 67890, True, (0.5,) * 10)
    conv = _build(spec)
    a = _analyze(conv, segments(conv), tmp, "fixed.pcap")
    check_analysis(a, conv, times=True)
    assert int(a.transactions.iloc[1]["interim_responses"]) == 1
