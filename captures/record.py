"""Record the committed sample captures from real traffic, with the truth the clients know.

Each scenario runs inside a network namespace created for this run (``anz-rec-<pid>``), on its loopback
addresses only (127.0.0.1 and ::1): nothing is ever sent outside the namespace. In it:

* a real nginx with a generated configuration in a temporary directory (static files of several sizes,
  ``keepalive_timeout`` / ``keepalive_requests`` set per scenario, a server on :8081 that answers every
  request with ``Connection: close`` and one on :8082 that closes after two requests);
* ``tcpdump -i lo -s 0 -w FILE``, started before the clients and stopped with SIGINT after the tail of the
  capture has been flushed (tcpdump on ``lo`` hands packets over in ring blocks retired on a ~1 s timer);
* the clients of the scenario: Python's ``http.client``, raw sockets (HTTP/1.0, ``Connection: close``,
  pipelining) and curl. They run in a child process of this script (``record.py _client SCENARIO``)
  started with ``ip netns exec`` and print, as one JSON line, what they know they did: per connection the
  addresses and ports (``getsockname``), the requests in order with their status, who closed first, and the
  most requests they had outstanding at once. Where a client claims the server closed first it has seen EOF
  before closing; where it claims it closed first it has checked that nothing (no FIN) was pending.

``tls`` adds nginx TLS servers (a self-signed certificate made at record time) and Python ``ssl`` clients
that write a key log (committed next to the capture as ``tls.keylog``); ``h2c`` adds nginx's cleartext
HTTP/2 server (prior knowledge, driven by ``nghttp -n``) and nghttpx accepting ``Upgrade: h2c`` (``curl
--http2``, ``nghttp -u``) in front of nginx's unix socket; ``h2-tls`` runs ``curl --http2`` (TLS 1.3, then
``--tls-max 1.2``) against nginx's ``ssl http2`` server with ``SSLKEYLOGFILE`` set (the key log
is committed as ``h2-tls.keylog``).

The namespace's ``lo`` gets MTU 1500 and ``gso_max_segs 1`` so that TCP segments have the sizes of a real
Ethernet link instead of 64 KB GSO super-packets. ``shaped-bulk`` also shapes ``lo`` (a ``tbf`` token
bucket with a ``pfifo_head_drop`` queue inside), sets its sysctls (reno, ``tcp_pacing_ss_ratio``) and
microsecond TCP timestamps on 127.0.0.1 (``record.py _usec_ts``, rtnetlink), and its client writes what the
kernel reports (``ss -tinH`` per socket, ``nstat`` deltas, ``tc -s qdisc``) into the truth's ``kernel``
key. After recording, a capture is post-processed if the scenario asks for it (``midstream`` drops the
packets before a cut instant, ``ipv6-pcapng`` is converted with ``editcap -F pcapng``, ``shaped-bulk`` is
gzip-compressed) and, when tshark is installed, checked against the truth with tshark as an independent
oracle; a scenario whose capture dropped packets or disagrees with the truth is recorded again.

Usage (needs root)::

    sudo .venv/bin/python captures/record.py --out captures                  # all scenarios
    sudo .venv/bin/python captures/record.py --out /tmp/x --scenario midstream
    .venv/bin/python captures/record.py --check captures                     # analyzer output vs truth

The helpers used by ``tests/test_e2e_recorded.py`` (``missing_requirements``, ``compare_with_truth``,
``verify_with_tshark``, ``run_analyzer_export``) live here too, so the test needs no extra module.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import ipaddress
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

THIS_FILE = Path(__file__).resolve()
REPO_ROOT = THIS_FILE.parent.parent

# --- constants -----------------------------------------------------------------------------------------

PORT_MAIN = 8080  # keep-alive server (keepalive_timeout / keepalive_requests of the scenario)
PORT_CLOSE = 8081  # keepalive_timeout 0: every response says "Connection: close"
PORT_LIMIT = 8082  # keepalive_requests 2: the second response on a connection says "Connection: close"
PORT_TLS = 8443  # nginx "listen ... ssl" (HTTP/1.1 over TLS; scenarios with tls=True)
PORT_TLS_H2 = 8444  # nginx "listen ... ssl http2" (HTTP/2 over TLS, ALPN h2; scenarios with tls=True)
PORT_H2C = 8090  # nginx "listen ... http2" without ssl: h2c with prior knowledge (scenarios with h2c=True)
PORT_H2C_UPGRADE = 8091  # nghttpx (no TLS) in front of nginx's unix socket: accepts "Upgrade: h2c"
SERVER_PORTS = (PORT_MAIN, PORT_CLOSE, PORT_LIMIT, PORT_TLS, PORT_TLS_H2, PORT_H2C, PORT_H2C_UPGRADE)
# How tshark (the recording's oracle) decodes each server port ("-d tcp.port==PORT,PROTOCOL").
TSHARK_DECODE: dict[int, str] = {
    PORT_MAIN: "http",
    PORT_CLOSE: "http",
    PORT_LIMIT: "http",
    PORT_TLS: "tls",
    PORT_TLS_H2: "tls",
    PORT_H2C: "http2",
    PORT_H2C_UPGRADE: "http",  # HTTP/1.1 until the 101, then tshark follows the Upgrade to http2
}
TLS_SNI = "tls.anz.test"  # the name the TLS clients send (and the certificate's subjectAltName)

FLUSH_WAIT_S = 1.3  # tcpdump on lo retires ring blocks on a ~1 s timer: wait this long after the last packet
ATTEMPTS = 3  # a scenario is recorded again when tcpdump dropped packets or the tshark check disagrees
MAX_CAPTURE_BYTES = 2_000_000  # committed samples stay small
CLIENT_TIMEOUT_S = 30.0  # the clients of one scenario take ~1-2 s; this is only a safety net
EOF_TIMEOUT_S = 5.0  # how long a client waits for the server to close (nginx's timeout is 1 s here)
SOCKET_TIMEOUT_S = 10.0

TOOLS = (
    "ip", "nginx", "tcpdump", "curl", "editcap", "tc", "ss", "nstat", "sysctl", "openssl", "nghttp", "nghttpx",
    "h2load",
)  # tshark: optional

# Static files served by nginx: name -> size in bytes (deterministic contents).
STATIC_FILES: dict[str, int] = {
    "index.html": 0,  # written as a small HTML page
    "small.txt": 0,  # one line of text
    "medium.bin": 24_000,
    "large.bin": 150_000,
}
# Highly compressible text served too (not listed in index.html): the shaped-bulk transfers.
TEXT_FILES: dict[str, int] = {"bulk.txt": 400_000}
BULK_TEXT = (
    b"The quick brown fox jumps over the lazy dog while the kernel grows its congestion window. "
    b"Slow start doubles it every round trip until a loss or the threshold stops it.\n"
)

# shaped-bulk: the namespace's kernel state recorded into the truth (DESIGN.md section 7, captures/README.md)
SHAPED_IDLE_S = 1.5  # idle between the warm and the cooled GET: well above the RTO (Linux minimum 200 ms)
NSTAT_COUNTERS = (
    "TcpOutSegs",
    "TcpRetransSegs",
    "TcpExtTCPLossProbes",
    "TcpExtTCPLossProbeRecovery",
    "TcpExtTCPFastRetrans",
    "TcpExtTCPSlowStartRetrans",
    "TcpExtTCPTimeouts",
    "TcpExtTCPRetransFail",
    "TcpExtTCPSpuriousRTOs",
    "TcpExtTCPSpuriousRtxHostQueues",
    "TcpExtTCPDSACKRecv",
    "TcpExtTCPDSACKOldSent",
    "TcpExtTCPLostRetransmit",
    "TcpExtTCPSackRecovery",
    "TcpExtTCPRenoRecovery",
)


@dataclass(frozen=True)
class Tbf:
    """A token bucket on the namespace's ``lo`` (tc syntax; it shapes both directions), optionally with
    another qdisc inside it instead of tbf's own byte FIFO (whose size ``latency`` sets)."""

    rate: str
    burst: str
    latency: str
    inner: str | None = None  # e.g. "pfifo_head_drop limit 20"

    def commands(self) -> list[list[str]]:
        """The ``tc`` command lines (without the ``tc`` itself)."""
        root = ["qdisc", "add", "dev", "lo", "root", "handle", "1:", "tbf"]
        cmds = [[*root, "rate", self.rate, "burst", self.burst, "latency", self.latency]]
        if self.inner is not None:
            cmds.append(["qdisc", "add", "dev", "lo", "parent", "1:1", "handle", "10:", *self.inner.split()])
        return cmds


@dataclass(frozen=True)
class Scenario:
    """One capture: its name (fixed: the Makefile and docs use it), nginx settings and output format."""

    name: str
    description: str
    keepalive_timeout: str  # nginx syntax, e.g. "1s 1s" (second value: the Keep-Alive: timeout= header)
    keepalive_requests: int = 100
    pcapng: bool = False
    gzip: bool = False  # the committed capture is gzip-compressed (NAME.pcap.gz)
    tbf: Tbf | None = None  # rate limiter on the namespace's lo (losses, queueing delay)
    sysctls: tuple[str, ...] = ()  # "name=value" set in the namespace before nginx starts
    usec_ts: bool = False  # TCP timestamps in microseconds on 127.0.0.1 (route feature tcp_usec_ts)
    tls: bool = False  # nginx also serves TLS (self-signed certificate made at record time); clients log keys
    h2c: bool = False  # nginx also serves h2c (prior knowledge) and nghttpx accepts Upgrade: h2c

    @property
    def keylog_name(self) -> str | None:
        """The clients' TLS key log (NSS key log format) committed next to the capture."""
        return f"{self.name}.keylog" if self.tls else None

    @property
    def capture_name(self) -> str:
        name = f"{self.name}.pcapng" if self.pcapng else f"{self.name}.pcap"
        return f"{name}.gz" if self.gzip else name

    @property
    def truth_name(self) -> str:
        return f"{self.name}.truth.json"


SCENARIO_LIST: tuple[Scenario, ...] = (
    Scenario(
        "keepalive-idle-timeout",
        "http.client keep-alive connections that nginx closes after its 1 s keepalive_timeout, a reconnect "
        "closed by the client, and curl reusing one connection for three URLs",
        keepalive_timeout="1s 1s",
    ),
    Scenario(
        "http10-and-close",
        "HTTP/1.0 with and without Connection: keep-alive, HTTP/1.1 Connection: close from the client, and "
        "servers answering Connection: close (keepalive_timeout 0 on :8081, keepalive_requests 2 on :8082)",
        keepalive_timeout="10s",
    ),
    Scenario(
        "pipelining",
        "raw sockets sending 3 and 5 pipelined GETs in one write (a 150 kB response in the middle, a 404, a "
        "final Connection: close); nginx answers in order",
        keepalive_timeout="10s",
    ),
    Scenario(
        "midstream",
        "the capture starts on an established keep-alive connection after its handshake and first two "
        "requests (packets before a cut instant removed), then a complete connection",
        keepalive_timeout="10s",
    ),
    Scenario(
        "ipv6-pcapng",
        "keep-alive connections over ::1 (http.client and curl), one still open when the capture ends; "
        "converted to pcapng",
        keepalive_timeout="10s",
        pcapng=True,
    ),
    Scenario(
        "tls",
        "HTTP/1.1 over TLS to nginx (self-signed certificate, ALPN http/1.1, SNI tls.anz.test) with Python's "
        "ssl + http.client: a TLS 1.3 keep-alive connection with four requests, a TLS 1.3 connection resuming "
        "its session (ticket), a TLS 1.2 connection and a TLS 1.2 connection resuming it; the client's key "
        "log is committed as tls.keylog",
        keepalive_timeout="10s",
        tls=True,
    ),
    Scenario(
        "h2c",
        "cleartext HTTP/2: nghttp with prior knowledge (four concurrent streams) and h2load (six requests, "
        "up to three streams at once) to nginx; curl --http2 "
        "(three streams one after the other) and nghttp -u (two streams) upgrading an HTTP/1.1 request "
        "with Upgrade: h2c (101) to nghttpx in front of nginx",
        keepalive_timeout="10s",
        h2c=True,
    ),
    Scenario(
        "h2-tls",
        "HTTP/2 over TLS (ALPN h2, SNI tls.anz.test) to nginx's ssl http2 server: curl --http2 with four URLs "
        "over one TLS 1.3 connection (streams 1-7, a 404 among them), curl --http2 --tls-max 1.2 with two "
        "URLs over a second connection (ALPN visible); curl writes SSLKEYLOGFILE, committed as h2-tls.keylog",
        keepalive_timeout="10s",
        tls=True,
    ),
    Scenario(
        "shaped-bulk",
        "reno bulk transfers of a 400 kB text file through a 20 Mbit/s token bucket on lo whose 30-packet "
        "queue drops its oldest packet when full: a small then a large GET (warm), 1.5 s idle, the large GET "
        "again (slow start restarts after idle), then a new connection's large GET (cold); slow start over "
        "several round trips, real losses and SACK recovery, with the kernel's own counters (ss, nstat)",
        keepalive_timeout="10s",
        gzip=True,
        tbf=Tbf(rate="20mbit", burst="3000", latency="30ms", inner="pfifo_head_drop limit 30"),
        sysctls=(
            "net.ipv4.tcp_congestion_control=reno",
            "net.ipv4.tcp_pacing_ss_ratio=1000",
        ),
        usec_ts=True,
    ),
    Scenario(
        "close-race",
        "raw-socket keep-alive connections that send their second request at nginx's 1 s keepalive_timeout "
        "(after 1.3 s, then around 1.000 s) without checking for the server's FIN: requests that race the "
        "close get no response (nginx answers the late bytes with RST) and are retried on a new connection; "
        "requests that arrive before the timer fires are answered",
        keepalive_timeout="1s",
    ),
)
SCENARIOS: tuple[str, ...] = tuple(s.name for s in SCENARIO_LIST)
SCENARIO_BY_NAME: dict[str, Scenario] = {s.name: s for s in SCENARIO_LIST}


class RecordError(RuntimeError):
    """A scenario could not be recorded (after its retries)."""


class RetryableError(RecordError):
    """One attempt failed in a way a new attempt may not (dropped packets, timing, tshark mismatch)."""


class ClientError(RuntimeError):
    """A client saw something other than what its scenario expects (so its truth would be wrong)."""


# --- tools and requirements ----------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    """Path of an executable, also looking in the sbin directories that a non-login PATH may miss."""
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        raise RecordError(f"{name} is not installed (see tools/install-system-deps.sh)")
    return path


def missing_requirements() -> str | None:
    """Why recording cannot run here (not root, a tool missing, no network namespaces), or None."""
    if os.geteuid() != 0:
        return "recording real traffic needs root (network namespace, tcpdump)"
    missing = [name for name in TOOLS if find_tool(name) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (tools/install-system-deps.sh installs them)"
    probe = f"anz-probe-{os.getpid()}"
    ip = _tool("ip")
    made = subprocess.run([ip, "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run([ip, "netns", "delete", probe], capture_output=True, check=False)
    return None


# --- truth kept by the clients -------------------------------------------------------------------------


@dataclass
class RequestTruth:
    method: str
    target: str
    status: int | None  # None: no response (the request raced the server's close: close-race)
    stream_id: int | None = None  # HTTP/2: the stream the client opened for it


@dataclass
class ConnectionTruth:
    client: str  # http.client | raw-socket | curl (informative)
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    syn_seen: bool = True
    close_by: str | None = "open"  # client | server | open; None: not known to the client (FINs crossed)
    pipelined_max: int | None = 0  # None: not known to the client (HTTP/2 streams sent by nghttp or curl)
    requests: list[RequestTruth] = field(default_factory=list)
    note: str = ""
    # Written only when set (TLS and HTTP/2 scenarios): what the client's library reports.
    protocol: str | None = None  # http/1.1 | h2 | h2c: what the client spoke inside TCP (or TLS)
    upgrade: bool | None = None  # h2c reached with "Upgrade: h2c" (101) rather than prior knowledge
    tls_version: str | None = None  # SSLSocket.version() ("TLSv1.3") or curl's
    tls_resumed: bool | None = None  # SSLSocket.session_reused
    sni: str | None = None  # the server_hostname sent in the ClientHello
    alpn_offered: str | None = None  # comma-separated, in the ClientHello's order
    alpn: str | None = None  # SSLSocket.selected_alpn_protocol()

    OPTIONAL = ("protocol", "upgrade", "tls_version", "tls_resumed", "sni", "alpn_offered", "alpn")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["requests"] = [{k: v for k, v in r.items() if v is not None or k == "status"}
                            for r in data["requests"]]
        order = [
            "client_ip",
            "client_port",
            "server_ip",
            "server_port",
            "syn_seen",
            "close_by",
            "pipelined_max",
            "requests",
            "client",
            "note",
        ]
        order[7:7] = [name for name in self.OPTIONAL if data[name] is not None]
        return {key: data[key] for key in order}


@dataclass
class TruthLog:
    """What the clients of one scenario did, connection by connection, in the order they connected."""

    scenario: str
    connections: list[ConnectionTruth] = field(default_factory=list)
    cut_ts: float | None = None  # midstream: packets before this instant are removed from the capture
    kernel: dict[str, Any] | None = None  # shaped-bulk: what the namespace's kernel reports (KernelProbe)

    def add(self, conn: ConnectionTruth) -> ConnectionTruth:
        self.connections.append(conn)
        return conn

    def cut_here(self) -> None:
        """The capture will start now: forget what came before (requests, handshakes, closed connections)."""
        self.cut_ts = time.time()
        kept = []
        for conn in self.connections:
            if conn.close_by != "open":
                continue  # entirely before the cut
            conn.syn_seen = False
            conn.requests.clear()
            conn.pipelined_max = 0
            kept.append(conn)
        self.connections = kept

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "scenario": self.scenario,
            "connections": [c.to_json() for c in self.connections],
            "cut_ts": self.cut_ts,
        }
        if self.kernel is not None:
            data["kernel"] = self.kernel
        return data


def _new_connection(log: TruthLog, sock: socket.socket, client: str, note: str) -> ConnectionTruth:
    local = sock.getsockname()
    peer = sock.getpeername()
    return log.add(ConnectionTruth(client, local[0], local[1], peer[0], peer[1], note=note))


def _pending_eof_or_data(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def _wait_eof(sock: socket.socket, what: str) -> None:
    """Wait until the server has closed (recv gives b''); anything else breaks the scenario's truth."""
    deadline = time.monotonic() + EOF_TIMEOUT_S
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClientError(f"{what}: the server did not close within {EOF_TIMEOUT_S} s")
        readable, _, _ = select.select([sock], [], [], remaining)
        if readable:
            data = sock.recv(65536)
            if data:
                raise ClientError(f"{what}: unexpected bytes while waiting for the close: {data[:80]!r}")
            return


# --- clients: http.client ------------------------------------------------------------------------------


class TrackedHTTP:
    """``http.client.HTTPConnection`` that records each TCP connection it opens and what it sent on it."""

    def __init__(self, log: TruthLog, host: str, port: int, note: str = "") -> None:
        self.log = log
        self.http = http.client.HTTPConnection(host, port, timeout=SOCKET_TIMEOUT_S)
        self.conn: ConnectionTruth | None = None
        self.note = note

    def request(
        self, method: str, target: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> int:
        if self.http.sock is None:
            self.http.connect()  # explicit, so the new connection is recorded before its first request
            assert self.http.sock is not None
            self.conn = _new_connection(self.log, self.http.sock, "http.client", self.note)
        assert self.conn is not None
        self.http.request(method, target, body=body, headers=dict(headers or {}))
        self.conn.pipelined_max = max(self.conn.pipelined_max or 0, 1)
        response = self.http.getresponse()
        response.read()
        if response.will_close:
            raise ClientError(f"{method} {target}: nginx unexpectedly closes after this response")
        self.conn.requests.append(RequestTruth(method, target, response.status))
        return response.status

    def wait_server_close(self) -> None:
        """Stay idle until nginx's keepalive_timeout closes the connection, then close our side."""
        assert self.http.sock is not None and self.conn is not None
        _wait_eof(self.http.sock, f"http.client {self.conn.client_port}")
        self.conn.close_by = "server"
        self.http.close()
        self.conn = None

    def close(self) -> None:
        """Close from the client side while nginx would still keep the connection."""
        assert self.http.sock is not None and self.conn is not None
        if _pending_eof_or_data(self.http.sock):
            raise ClientError(f"http.client {self.conn.client_port}: the server closed first")
        self.conn.close_by = "client"
        self.http.close()
        self.conn = None


# --- clients: raw sockets ------------------------------------------------------------------------------


@dataclass
class Response:
    version: str
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def connection(self) -> str:
        return self.headers.get("connection", "").lower()


class RawHTTP:
    """A socket speaking HTTP/1.x by hand: HTTP/1.0, explicit Connection headers, pipelining."""

    def __init__(self, log: TruthLog, host: str, port: int, note: str = "", source_port: int | None = None
                 ) -> None:
        source = ("", source_port) if source_port is not None else None
        self.sock = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT_S, source_address=source)
        self.conn = _new_connection(log, self.sock, "raw-socket", note)
        self.buf = b""
        self.outstanding: list[tuple[str, str]] = []
        self.host = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def send(self, *requests: tuple[str, str, str, Mapping[str, str]]) -> None:
        """Send requests (method, target, version, headers) in ONE write: more than one is pipelining."""
        wire = b""
        for method, target, version, headers in requests:
            lines = [f"{method} {target} {version}"]
            lines += [f"{name}: {value}" for name, value in headers.items()]
            wire += ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
            self.outstanding.append((method, target))
        self.sock.sendall(wire)
        self.conn.pipelined_max = max(self.conn.pipelined_max or 0, len(self.outstanding))

    def request(
        self, method: str, target: str, version: str = "HTTP/1.1", headers: Mapping[str, str] | None = None
    ) -> Response:
        self.send((method, target, version, self.default_headers(version, headers)))
        return self.read_response()

    def default_headers(self, version: str, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"Host": self.host, "User-Agent": "anz-record/1"} if version == "HTTP/1.1" else {}
        headers.update(extra or {})
        return headers

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def _read_exact(self, size: int) -> bytes:
        while len(self.buf) < size:
            if not self._fill():
                raise ClientError("connection closed in the middle of a response")
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def _read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise ClientError("connection closed in the middle of a response")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_response(self) -> Response:
        """Read the response to the oldest outstanding request and record the pair."""
        method, target = self.outstanding.pop(0)
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ClientError(f"{method} {target}: connection closed before a response")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        version, status_text = status_line.split(" ", 2)[:2]
        status = int(status_text)
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked()
        elif "content-length" in headers:
            body = self._read_exact(int(headers["content-length"]))
        else:  # read until close
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        self.conn.requests.append(RequestTruth(method, target, status))
        return Response(version, status, headers, body)

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self._read_line().split(b";")[0], 16)
            if size == 0:
                while self._read_line():  # trailers up to the empty line
                    pass
                return body
            body += self._read_exact(size)
            self._read_line()

    def wait_server_close(self) -> None:
        if self.buf:
            raise ClientError(f"raw {self.conn.client_port}: unread bytes {self.buf[:80]!r}")
        _wait_eof(self.sock, f"raw {self.conn.client_port}")
        self.conn.close_by = "server"
        self.sock.close()

    def close(self) -> None:
        if self.buf or _pending_eof_or_data(self.sock):
            raise ClientError(f"raw {self.conn.client_port}: the server closed or sent data first")
        self.conn.close_by = "client"
        self.sock.close()


def _expect(response: Response, status: int, connection: str, what: str) -> None:
    if response.status != status or response.connection != connection:
        raise ClientError(
            f"{what}: expected {status} with Connection: {connection}, got {response.status} "
            f"with Connection: {response.connection or '(none)'}"
        )


# --- clients: TLS (ssl + http.client) ---------------------------------------------------------------------


def rec_dir() -> Path:
    """The recording's temporary directory (certificate, key log), given to the clients by the recorder."""
    return Path(os.environ["ANZ_REC_DIR"])


def tls_context(maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client context that trusts the recording's self-signed certificate, offers ALPN http/1.1 and
    appends its secrets to the scenario's key log."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(rec_dir() / "nginx" / "cert.pem"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if maximum is not None:
        ctx.maximum_version = maximum
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.keylog_filename = str(rec_dir() / "keylog")
    return ctx


class TrackedTLS:
    """HTTP/1.1 over one TLS connection (``http.client`` on an ``SSLSocket`` made here, so that a session
    can be passed in for resumption); records the TLS facts the ``ssl`` module reports."""

    def __init__(
        self,
        log: TruthLog,
        ctx: ssl.SSLContext,
        port: int,
        note: str,
        session: ssl.SSLSession | None = None,
    ) -> None:
        host = "127.0.0.1"
        raw = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT_S)
        self.sock = ctx.wrap_socket(raw, server_hostname=TLS_SNI, session=session)
        self.conn = _new_connection(log, self.sock, "python-ssl", note)
        self.conn.tls_version = self.sock.version()
        self.conn.tls_resumed = self.sock.session_reused
        self.conn.sni = TLS_SNI
        self.conn.alpn_offered = "http/1.1"
        self.conn.alpn = self.sock.selected_alpn_protocol()
        self.conn.protocol = "http/1.1"
        if session is not None and not self.sock.session_reused:
            raise ClientError(f"TLS {self.conn.client_port}: the session was not resumed")
        if session is None and self.sock.session_reused:
            raise ClientError(f"TLS {self.conn.client_port}: resumed without a session")
        self.http = http.client.HTTPConnection(TLS_SNI, port, timeout=SOCKET_TIMEOUT_S)
        self.http.sock = self.sock

    def request(self, method: str, target: str) -> int:
        self.http.request(method, target)
        response = self.http.getresponse()
        response.read()
        if response.will_close:
            raise ClientError(f"{method} {target}: nginx unexpectedly closes after this response")
        self.conn.requests.append(RequestTruth(method, target, response.status))
        self.conn.pipelined_max = 1
        return response.status

    @property
    def session(self) -> ssl.SSLSession:
        """The session to resume (TLS 1.3: a ticket that came after the handshake, so after a response)."""
        session = self.sock.session
        if session is None or (self.sock.version() == "TLSv1.3" and not session.has_ticket):
            raise ClientError(f"TLS {self.conn.client_port}: no resumable session")
        return session

    def close(self) -> None:
        if self.sock.pending() or _pending_eof_or_data(self.sock):
            raise ClientError(f"TLS {self.conn.client_port}: the server closed or sent data first")
        self.conn.close_by = "client"
        self.http.close()  # closes the SSLSocket (no close_notify: as http.client does)


# --- clients: HTTP/2 (nghttp, curl) --------------------------------------------------------------------

NGHTTP_SEND_HEADERS = re.compile(r"send HEADERS frame <[^>]*stream_id=(\d+)>")
NGHTTP_UPGRADE_REQUEST = re.compile(r"^(GET|HEAD|POST) (\S+) HTTP/1\.1$")
NGHTTP_PSEUDO = re.compile(r"^\s+:(method|path): (.*)$")
NGHTTP_STATUS = re.compile(r"recv \(stream_id=(\d+)\) :status: (\d+)")


def parse_nghttp_verbose(text: str) -> tuple[bool, list[RequestTruth]]:
    """(upgraded, requests by stream id) from ``nghttp -v`` output: the HEADERS it sent (``:method``,
    ``:path``), the ``:status`` it received per stream, and, with ``-u``, the HTTP/1.1 Upgrade request
    (stream 1)."""
    upgraded = "HTTP Upgrade success" in text
    requests: dict[int, dict[str, Any]] = {}
    current: int | None = None
    for line in text.splitlines():
        sent = NGHTTP_SEND_HEADERS.search(line)
        if sent:
            current = int(sent.group(1))
            requests[current] = {}
            continue
        pseudo = NGHTTP_PSEUDO.match(line)
        if pseudo and current is not None:
            requests[current][pseudo.group(1)] = pseudo.group(2).strip()
            continue
        up = NGHTTP_UPGRADE_REQUEST.match(line)
        if up and upgraded and 1 not in requests:
            requests[1] = {"method": up.group(1), "path": up.group(2)}
            continue
        status = NGHTTP_STATUS.search(line)
        if status:
            requests.setdefault(int(status.group(1)), {})["status"] = int(status.group(2))
        if not line.startswith(" "):
            current = None
    result = []
    for sid in sorted(requests):
        r = requests[sid]
        if {"method", "path", "status"} - r.keys():
            raise ClientError(f"nghttp stream {sid}: incomplete ({r})")
        result.append(RequestTruth(r["method"], r["path"], int(r["status"]), sid))
    return upgraded, result


def _time_wait_ports(server_port: int) -> set[int]:
    """Local ports of this namespace's TIME-WAIT sockets to ``server_port``: a client that closed first."""
    out = _run_text([_tool("ss"), "-t", "-a", "-n", "-H", "state", "time-wait", "dport", "=", f":{server_port}"])
    return {int(line.split()[-2].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


def _server_time_wait_ports(server_port: int) -> set[int]:
    """Peer (client) ports of this namespace's server-side TIME-WAIT sockets on ``server_port``: connections
    the server closed first (or both at once)."""
    out = _run_text([_tool("ss"), "-t", "-a", "-n", "-H", "state", "time-wait", "sport", "=", f":{server_port}"])
    return {int(line.split()[-1].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


H2LOAD_STATUS = re.compile(r"\[stream_id=(\d+)\] :status: (\d+)")


def run_h2load(log: TruthLog, port: int, url: str, requests: int, concurrent: int, note: str) -> None:
    """``h2load -n N -c 1 -m M -v`` (h2c prior knowledge): N requests of ``url`` over one connection, at most
    M streams at once. Its port: the one new TIME-WAIT socket of the connection, on either side. h2load
    ends with GOAWAY and FIN while nginx closes on the GOAWAY, so the FINs may cross: the side that closed
    first is known only when just one side kept TIME-WAIT (``close_by`` None otherwise)."""
    before_c, before_s = _time_wait_ports(port), _server_time_wait_ports(port)
    args = [_tool("h2load"), "-n", str(requests), "-c", "1", "-m", str(concurrent), "-v", url]
    done = subprocess.run(args, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S, check=False)
    if done.returncode != 0 or f"{requests} succeeded" not in done.stdout:
        raise ClientError(f"h2load failed ({done.returncode}): {done.stderr.strip()} {done.stdout[-500:]}")
    client_tw = _time_wait_ports(port) - before_c
    server_tw = _server_time_wait_ports(port) - before_s
    ports = client_tw | server_tw
    if len(ports) != 1:
        raise ClientError(f"h2load: expected one new TIME-WAIT connection to :{port}, found {sorted(ports)}")
    statuses = {int(m.group(1)): int(m.group(2)) for m in H2LOAD_STATUS.finditer(done.stdout)}
    if len(statuses) != requests:
        raise ClientError(f"h2load: {len(statuses)} statuses for {requests} requests")
    client_port = ports.pop()
    conn = log.add(ConnectionTruth("h2load", "127.0.0.1", client_port, "127.0.0.1", port, note=note))
    conn.close_by = "client" if client_port not in server_tw else ("server" if client_port not in client_tw else None)
    conn.pipelined_max = None
    conn.protocol = "h2c"
    conn.upgrade = False
    path = "/" + url.split("/", 3)[3]
    conn.requests = [RequestTruth("GET", path, status, sid) for sid, status in sorted(statuses.items())]


def run_nghttp(log: TruthLog, port: int, urls: Sequence[str], upgrade: bool, note: str) -> None:
    """``nghttp -n -v`` (prior knowledge, or ``-u``: HTTP/1.1 Upgrade) fetching ``urls`` over ONE
    connection. nghttp does not print its local port: it is the one new TIME-WAIT socket to ``port``
    after it exits (the side that closes first keeps TIME-WAIT, so this also proves close_by client)."""
    before = _time_wait_ports(port)
    args = [_tool("nghttp"), "-n", "-v", *(["-u"] if upgrade else []), *urls]
    done = subprocess.run(args, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise ClientError(f"nghttp failed ({done.returncode}): {done.stderr.strip()} {done.stdout[-500:]}")
    new = _time_wait_ports(port) - before
    if len(new) != 1:
        raise ClientError(f"nghttp: expected one new TIME-WAIT socket to :{port}, found {sorted(new)}")
    upgraded, requests = parse_nghttp_verbose(done.stdout)
    if upgraded != upgrade or len(requests) != len(urls):
        raise ClientError(f"nghttp: upgraded {upgraded}, {len(requests)} streams for {len(urls)} URLs")
    conn = log.add(ConnectionTruth("nghttp", "127.0.0.1", new.pop(), "127.0.0.1", port, note=note))
    conn.close_by = "client"
    conn.pipelined_max = None  # nghttp sends all its requests at once; how many overlap is its business
    conn.protocol = "h2c"
    conn.upgrade = upgrade
    conn.requests = requests


CURL_STREAM_ID = re.compile(r"Using Stream ID: (\d+)")


def run_curl_h2c(log: TruthLog, urls: Sequence[str], upgrade: bool, note: str) -> None:
    """curl over h2c: ``--http2`` (HTTP/1.1 request with ``Upgrade: h2c``) or ``--http2-prior-knowledge``;
    one connection for all ``urls`` (requests one after the other). Port and statuses from ``-w``; the
    stream ids from ``-v`` ("Using Stream ID: N"; the upgraded request is stream 1)."""
    flag = "--http2" if upgrade else "--http2-prior-knowledge"
    args = [_tool("curl"), "-s", "-v", "-g", flag, "-w", CURL_FORMAT.replace("%{method}", "%{http_version} %{method}")]
    for url in urls:
        args += ["-o", "/dev/null", url]
    done = subprocess.run(args, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise ClientError(f"curl failed ({done.returncode}): {done.stderr.strip()[-1000:]}")
    stream_ids = [int(m) for m in CURL_STREAM_ID.findall(done.stderr)]
    if upgrade:
        if "101 Switching Protocols" not in done.stderr:
            raise ClientError("curl --http2: no 101 Switching Protocols")
        stream_ids.insert(0, 1)
    conn = _curl_h2_connection(log, done.stdout.splitlines(), stream_ids, len(urls), "curl h2c", note)
    conn.protocol = "h2c"
    conn.upgrade = upgrade


def _curl_h2_connection(log: TruthLog, lines: list[str], stream_ids: list[int], expected: int, what: str,
                        note: str) -> ConnectionTruth:
    """The one HTTP/2 connection of a curl run from its ``-w`` lines (one per URL) and the stream ids of
    its ``-v`` output: every transfer on HTTP/2, the first one opening the connection and the others
    reusing it. The client closes it (curl exits); one stream at a time (curl's URLs are sequential)."""
    if len(lines) != expected or len(stream_ids) != expected:
        raise ClientError(f"{what}: {len(lines)} results, stream ids {stream_ids} for {expected} URLs")
    conn: ConnectionTruth | None = None
    for line, sid in zip(lines, stream_ids, strict=True):
        local_ip, local_port, remote_ip, remote_port, connects, code, version, method, url = line.split(" ", 8)
        if version != "2":
            raise ClientError(f"{what}: HTTP version {version}: {line}")
        if int(connects) > 0:
            if conn is not None:
                raise ClientError(f"{what} opened a second connection: {line}")
            conn = log.add(ConnectionTruth("curl", local_ip, int(local_port), remote_ip, int(remote_port), note=note))
        elif conn is None or conn.client_port != int(local_port):
            raise ClientError(f"{what} reused a connection it never opened: {line}")
        conn.requests.append(RequestTruth(method, urllib.parse.urlsplit(url).path, int(code), sid))
    if conn is None:
        raise ClientError(f"{what}: no transfer")
    conn.close_by = "client"
    conn.pipelined_max = 1
    return conn


# --- clients: HTTP/2 over TLS (curl) -------------------------------------------------------------------

CURL_TLS_VERSION = re.compile(r"SSL connection using (TLSv1\.\d) ")
CURL_ALPN_OFFERS = re.compile(r"ALPN: offers (\S+)")
CURL_ALPN_ACCEPTED = re.compile(r"ALPN: server accepted (\S+)")


def h2_tls_env() -> dict[str, str]:
    """The clients' environment: SSLKEYLOGFILE (curl's OpenSSL backend appends to it)."""
    return {**os.environ, "SSLKEYLOGFILE": str(rec_dir() / "keylog")}


def run_curl_h2_tls(log: TruthLog, targets: Sequence[str], tls_max: str | None, note: str) -> None:
    """``curl --http2`` over TLS to nginx's ``ssl http2`` server: ALPN h2, SNI ``TLS_SNI`` (``--resolve``
    to 127.0.0.1), one connection for all ``targets`` (one stream each, one after the other). Port,
    status and HTTP version from ``-w``; TLS version, ALPN and stream ids from ``-v``."""
    base = f"https://{TLS_SNI}:{PORT_TLS_H2}"
    args = [
        _tool("curl"), "-s", "-v", "-g", "--http2", "--cacert", str(rec_dir() / "nginx" / "cert.pem"),
        "--resolve", f"{TLS_SNI}:{PORT_TLS_H2}:127.0.0.1", "--tlsv1.2",
        *(["--tls-max", tls_max] if tls_max else []),
        "-w", CURL_FORMAT.replace("%{method}", "%{http_version} %{method}"),
    ]
    for target in targets:
        args += ["-o", "/dev/null", base + target]
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S, check=False, env=h2_tls_env()
    )
    if done.returncode != 0:
        raise ClientError(f"curl failed ({done.returncode}): {done.stderr.strip()[-1000:]}")
    versions = CURL_TLS_VERSION.findall(done.stderr)
    offers = CURL_ALPN_OFFERS.findall(done.stderr)
    accepted = CURL_ALPN_ACCEPTED.findall(done.stderr)
    stream_ids = [int(m) for m in CURL_STREAM_ID.findall(done.stderr)]
    lines = done.stdout.splitlines()
    if len(versions) != 1 or len(offers) != 1 or accepted != ["h2"]:
        raise ClientError(f"curl h2 TLS: handshakes {versions}, ALPN offered {offers}, accepted {accepted}")
    if tls_max is not None and versions[0] != f"TLSv{tls_max}":
        raise ClientError(f"curl --tls-max {tls_max} negotiated {versions[0]}")
    conn = _curl_h2_connection(log, lines, stream_ids, len(targets), "curl h2 TLS", note)
    conn.protocol = "h2"
    conn.tls_version = versions[0]
    conn.tls_resumed = False  # a new curl process has no session to resume
    conn.sni = TLS_SNI
    conn.alpn_offered = offers[0]
    conn.alpn = accepted[0]


def client_h2_tls(log: TruthLog) -> None:
    run_curl_h2_tls(
        log,
        ["/index.html", "/small.txt", "/medium.bin", "/missing.html"],
        tls_max=None,
        note="curl --http2, TLS 1.3: four URLs over one connection, streams 1, 3, 5, 7 one after the other",
    )
    run_curl_h2_tls(
        log,
        ["/small.txt", "/index.html"],
        tls_max="1.2",
        note="curl --http2 --tls-max 1.2: a second process, a new full handshake (ALPN h2 visible), two streams",
    )
    # No h2load (it honours SSLKEYLOGFILE): it ends with GOAWAY, close_notify and FIN at once and nginx
    # closes on reading the close_notify, so the FINs often cross; who closed first is then not known to
    # the client (TIME-WAIT on nginx's side while tshark sees h2load's FIN first), see captures/README.md.


# --- clients: curl -------------------------------------------------------------------------------------

CURL_FORMAT = (
    "%{local_ip} %{local_port} %{remote_ip} %{remote_port} %{num_connects} %{http_code} %{method} "
    "%{url_effective}\\n"
)


def run_curl(log: TruthLog, urls: Sequence[str], note: str = "") -> None:
    """One curl command line with several URLs (curl reuses its connection); the truth from ``-w``.

    curl closes its connections when it exits, before nginx's keepalive_timeout: close_by is the client.
    """
    args = [_tool("curl"), "-s", "-g", "--http1.1", "-w", CURL_FORMAT]
    for url in urls:
        args += ["-o", "/dev/null", url]
    done = subprocess.run(args, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise ClientError(f"curl failed ({done.returncode}): {done.stderr.strip()}")
    by_port: dict[int, ConnectionTruth] = {}
    for line in done.stdout.splitlines():
        local_ip, local_port, remote_ip, remote_port, connects, code, method, url = line.split(" ", 7)
        port = int(local_port)
        if int(connects) > 0:
            if port in by_port:
                raise ClientError(f"curl reported a new connection on a port it already used: {line}")
            by_port[port] = log.add(
                ConnectionTruth("curl", local_ip, port, remote_ip, int(remote_port), note=note)
            )
        elif port not in by_port:
            raise ClientError(f"curl reused a connection it never opened: {line}")
        conn = by_port[port]
        split = urllib.parse.urlsplit(url)
        target = split.path + (f"?{split.query}" if split.query else "")
        conn.requests.append(RequestTruth(method, target, int(code)))
        conn.pipelined_max = 1
    for conn in by_port.values():
        conn.close_by = "client"


# --- the kernel's view (shaped-bulk) -------------------------------------------------------------------

TCP_INIT_CWND = 10  # include/net/tcp.h; a route's ``initcwnd`` would override it (none is set here)
SHAPED_NOTES = (
    "Capture point: tcpdump on lo sees a packet when the shaper releases it, in both directions: server data "
    "as the client receives it, client ACKs as the server receives them.",
    "A plain tbf drops on enqueue and returns NET_XMIT_DROP to the sending socket: TCP does not count that "
    "segment as sent (it sends it later as new data and enters CWR), so with gso_max_segs 1 it gives no "
    "retransmission. The inner pfifo_head_drop drops the OLDEST queued packet when it holds `limit` packets "
    "and returns NET_XMIT_CN for the new one: the dropped packet had been reported as sent, a real loss "
    "(SACK, fast retransmit); the socket whose enqueue caused the drop enters CWR. tbf's latency only sizes "
    "tbf's own byte FIFO, which the inner qdisc replaces.",
    "net.ipv4.tcp_pacing_ss_ratio=1000: TCP small queues let a socket keep about 1 ms of its pacing rate "
    "(ratio x cwnd x mss / srtt) in the qdisc; at the default 200 the shaper's queue stayed under 30 packets "
    "(no drop at all); 1000 lets slow start fill it.",
    "Route feature tcp_usec_ts (features 0x10 on local 127.0.0.1, set by rtnetlink): TSval in microseconds, so "
    "the TSecr of a server segment is the TSval of the last client segment the server had processed when it "
    "sent it, and its TSval is when it sent it.",
    "ss omits zero retrans, bytes_retrans, lost, dsack_dups, unacked, notsent: written as 0; ssthresh null is "
    "the initial (infinite) one. retrans_total is tcpi_total_retrans; segs_out and data_segs_out count the "
    "segments the qdisc then dropped; nstat TcpOutSegs excludes retransmissions.",
)
SS_VALUE_AFTER = ("send", "pacing_rate", "delivery_rate")  # ``ss -i`` fields written "name VALUE"
SS_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
SNAPSHOT_TIMEOUT_S = 5.0  # how long a snapshot waits for the server to have nothing unacknowledged
# ``ss -i`` leaves these out when they are zero; the truth writes the 0. (An absent ssthresh means the
# initial "infinite" one and is written as null.)
SS_ZERO_WHEN_ABSENT = ("retrans_total", "retrans_out", "bytes_retrans", "lost", "dsack_dups", "unacked", "notsent")


def _run_text(args: Sequence[str]) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise ClientError(f"{' '.join(args)} exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _number(text: str) -> int | float | str:
    if SS_NUMBER.fullmatch(text) is None:
        return text
    return float(text) if "." in text else int(text)


def parse_ss_info(info: str) -> dict[str, Any]:
    """The fields of one ``ss -i`` info line: ``key:value`` tokens (numbers converted), ``retrans:X/Y`` as
    ``retrans_out`` X (now) and ``retrans_total`` Y (``tcpi_total_retrans``), ``rtt:A/B`` as ``rtt_ms`` and
    ``rttvar_ms``, "send"/"pacing_rate"/"delivery_rate" with their value, other words in ``flags``."""
    fields: dict[str, Any] = {}
    flags: list[str] = []
    tokens = info.split()
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token in SS_VALUE_AFTER and index < len(tokens):
            fields[token] = tokens[index]
            index += 1
            continue
        key, sep, value = token.partition(":")
        if not sep:
            flags.append(token)
        elif key == "retrans" and "/" in value:
            now, total = value.split("/", 1)
            fields["retrans_out"], fields["retrans_total"] = int(now), int(total)
        elif key == "rtt" and "/" in value:
            rtt, var = value.split("/", 1)
            fields["rtt_ms"], fields["rttvar_ms"] = float(rtt), float(var)
        else:
            fields[key] = _number(value)
    fields["flags"] = flags
    return fields


def ss_socket(local_port: int, peer_port: int) -> tuple[str, dict[str, Any]]:
    """``ss -tinH`` for the one TCP socket with this local and peer port: (its state, its info fields)."""
    out = _run_text(
        [_tool("ss"), "-t", "-i", "-n", "-H", "sport", "=", f":{local_port}", "and", "dport", "=", f":{peer_port}"]
    )
    sockets: list[tuple[str, list[str]]] = []
    for line in out.splitlines():
        if not line.strip():
            continue
        if line[0].isspace() and sockets:
            sockets[-1][1].append(line.strip())
        else:
            sockets.append((line.strip(), []))
    if len(sockets) != 1:
        raise ClientError(f"ss: {len(sockets)} sockets with local port {local_port}, peer {peer_port}: {out!r}")
    head, info = sockets[0]
    fields: dict[str, Any] = dict.fromkeys(SS_ZERO_WHEN_ABSENT, 0)
    fields.update(parse_ss_info(" ".join(info)))
    fields["ss"] = " ".join([head, *info])
    return head.split()[0], fields


def parse_tc_stats(text: str) -> list[dict[str, Any]]:
    """Per qdisc of ``tc -s qdisc show``: its kind and handle, packets sent, dropped and overlimits."""
    stats: list[dict[str, Any]] = []
    for block in re.split(r"\n(?=qdisc )", text.strip()):
        head = re.match(r"qdisc (\S+) (\S+)", block)
        sent = re.search(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)", block)
        if head is None or sent is None:
            continue
        stats.append(
            {
                "qdisc": head.group(1),
                "handle": head.group(2),
                "sent_bytes": int(sent.group(1)),
                "sent_packets": int(sent.group(2)),
                "dropped": int(sent.group(3)),
                "overlimits": int(sent.group(4)),
            }
        )
    return stats


def nstat_counters() -> dict[str, int]:
    """This network namespace's SNMP/netstat counters (``nstat -asz``: absolute, history file untouched)."""
    data = json.loads(_run_text([_tool("nstat"), "-a", "-s", "-z", "-j"]))
    return {name: int(value) for name, value in data["kernel"].items()}


def _sysctl(name: str) -> int | float | str:
    """A sysctl of the namespace this process runs in (``/proc/sys/net`` follows the reader's netns)."""
    return _number(Path("/proc/sys", *name.split(".")).read_text().strip())


SS_KEPT = (
    "retrans_total",
    "retrans_out",
    "mss",
    "advmss",
    "pmtu",
    "cwnd",
    "ssthresh",
    "rtt_ms",
    "rttvar_ms",
    "minrtt",
    "rto",
    "bytes_sent",
    "bytes_retrans",
    "bytes_acked",
    "bytes_received",
    "segs_out",
    "segs_in",
    "data_segs_out",
    "data_segs_in",
    "lost",
    "dsack_dups",
    "reordering",
    "delivered",
    "snd_wnd",
    "rwnd_limited",
    "busy",
    "unacked",
    "notsent",
    "ss",
)


class KernelProbe:
    """What the kernel of the namespace reports while the shaped-bulk client runs (it runs inside it)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.started = nstat_counters()
        self.qdisc_before = _run_text([_tool("tc"), "qdisc", "show", "dev", "lo"]).strip()
        self.connections: list[dict[str, Any]] = []

    def _entry(self, conn: ConnectionTruth, role: str) -> dict[str, Any]:
        for entry in self.connections:
            if entry["client_port"] == conn.client_port:
                return entry
        entry = {
            "client_port": conn.client_port,
            "server_port": conn.server_port,
            "role": role,
            "snapshots": [],
        }
        self.connections.append(entry)
        return entry

    def _server_socket(self, conn: ConnectionTruth) -> dict[str, Any]:
        """The server-side socket, once it has nothing unacknowledged or unsent (so that no retransmission
        of what the client already has can still follow this snapshot)."""
        deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S
        while True:
            state, fields = ss_socket(conn.server_port, conn.client_port)
            if not fields["unacked"] and not fields["notsent"]:
                return {"state": state, **{k: fields.get(k) for k in SS_KEPT}}
            if time.monotonic() > deadline:
                raise ClientError(f"server socket for {conn.client_port} still has data in flight: {fields}")
            time.sleep(0.01)

    def snapshot(self, conn: ConnectionTruth, role: str, label: str) -> None:
        """The server socket after a response: cwnd, ssthresh, retransmissions so far."""
        self._entry(conn, role)["snapshots"].append({"after": label, **self._server_socket(conn)})

    def before_close(self, conn: ConnectionTruth, role: str) -> None:
        """The final state of both sockets of a connection, just before the client closes it."""
        entry = self._entry(conn, role)
        entry["server_socket"] = self._server_socket(conn)
        state, fields = ss_socket(conn.client_port, conn.server_port)
        entry["client_socket"] = {"state": state, **{k: fields.get(k) for k in SS_KEPT}}

    def finish(self) -> dict[str, Any]:
        time.sleep(0.3)  # the closing handshakes (FIN, FIN, ACK) are done
        ended = nstat_counters()
        delta = {name: ended.get(name, 0) - self.started.get(name, 0) for name in NSTAT_COUNTERS}
        qdisc = _run_text([_tool("tc"), "-s", "qdisc", "show", "dev", "lo"]).strip()
        link = _run_text([_tool("ip"), "-d", "link", "show", "dev", "lo"])
        routes = _run_text([_tool("ip"), "route", "show", "table", "all"]).strip()
        route_get = _run_text([_tool("ip"), "route", "get", "127.0.0.1"]).strip()
        initcwnd = re.search(r"initcwnd (\d+)", routes + "\n" + route_get)
        mtu = re.search(r"\bmtu (\d+)", link)
        gso = re.search(r"\bgso_max_segs (\d+)", link)
        assert self.scenario.tbf is not None
        return {
            "tbf": {
                **asdict(self.scenario.tbf),
                "commands": [" ".join(["tc", *cmd]) for cmd in self.scenario.tbf.commands()],
                "qdisc": self.qdisc_before,
                "qdisc_stats_after": qdisc,
                "stats": parse_tc_stats(qdisc),
            },
            "lo": {
                "mtu": int(mtu.group(1)) if mtu else None,
                "gso_max_segs": int(gso.group(1)) if gso else None,
            },
            "sysctl": {
                name: _sysctl(name)
                for name in (
                    "net.ipv4.tcp_congestion_control",
                    "net.ipv4.tcp_slow_start_after_idle",
                    "net.ipv4.tcp_sack",
                    "net.ipv4.tcp_timestamps",
                    "net.ipv4.tcp_early_retrans",
                    "net.ipv4.tcp_recovery",
                    "net.ipv4.tcp_limit_output_bytes",
                    "net.ipv4.tcp_pacing_ss_ratio",
                    "net.ipv4.tcp_pacing_ca_ratio",
                )
            },
            "initial_cwnd": int(initcwnd.group(1)) if initcwnd else TCP_INIT_CWND,
            "initial_cwnd_source": (
                "initcwnd of the route" if initcwnd else "no initcwnd on any route: the kernel's TCP_INIT_CWND"
            ),
            "ip_route": routes,
            "ip_route_get": route_get,
            "nstat_delta": delta,
            "connections": self.connections,
            "notes": list(SHAPED_NOTES),
        }


# --- the scenarios' clients ----------------------------------------------------------------------------


def client_keepalive_idle_timeout(log: TruthLog) -> None:
    v4 = "127.0.0.1"
    a = TrackedHTTP(log, v4, PORT_MAIN, "idle after its requests: nginx's keepalive_timeout closes it")
    b = TrackedHTTP(log, v4, PORT_MAIN, "HEAD, POST and a 404, then idle: nginx closes it")
    a.request("GET", "/index.html")
    a.request("GET", "/medium.bin")
    b.request("GET", "/small.txt")
    b.request("HEAD", "/large.bin")
    b.request("POST", "/api/echo", body=b'{"hello": "nginx"}', headers={"Content-Type": "application/json"})
    b.request("GET", "/missing.html")
    a.request("GET", "/small.txt")
    a.wait_server_close()
    b.wait_server_close()
    # The same HTTPConnection object reconnects: a new TCP connection, closed by the client this time.
    a.note = "reconnect after the idle close; closed by the client"
    a.request("GET", "/large.bin")
    a.request("GET", "/index.html")
    a.close()
    base = f"http://{v4}:{PORT_MAIN}"
    run_curl(
        log, [f"{base}/index.html", f"{base}/small.txt", f"{base}/nope"], "curl, three URLs, one connection"
    )


def client_http10_and_close(log: TruthLog) -> None:
    v4 = "127.0.0.1"
    ka = {"Connection": "keep-alive"}

    c = RawHTTP(log, v4, PORT_MAIN, "HTTP/1.0 without keep-alive: nginx closes after the response")
    _expect(c.request("GET", "/index.html", "HTTP/1.0"), 200, "close", "plain HTTP/1.0")
    c.wait_server_close()

    c = RawHTTP(log, v4, PORT_MAIN, "HTTP/1.0 with Connection: keep-alive twice, then the client closes")
    _expect(c.request("GET", "/small.txt", "HTTP/1.0", ka), 200, "keep-alive", "HTTP/1.0 keep-alive #1")
    _expect(c.request("GET", "/medium.bin", "HTTP/1.0", ka), 200, "keep-alive", "HTTP/1.0 keep-alive #2")
    c.close()

    c = RawHTTP(log, v4, PORT_MAIN, "HTTP/1.0 keep-alive, then a plain HTTP/1.0 request: nginx closes")
    _expect(c.request("GET", "/index.html", "HTTP/1.0", ka), 200, "keep-alive", "HTTP/1.0 keep-alive")
    _expect(c.request("GET", "/missing.html", "HTTP/1.0"), 404, "close", "plain HTTP/1.0 after keep-alive")
    c.wait_server_close()

    c = RawHTTP(log, v4, PORT_MAIN, "HTTP/1.1, then HTTP/1.1 with Connection: close from the client")
    _expect(c.request("GET", "/index.html"), 200, "keep-alive", "HTTP/1.1")
    _expect(
        c.request("GET", "/small.txt", headers={"Connection": "close"}),
        200,
        "close",
        "HTTP/1.1 Connection: close",
    )
    c.wait_server_close()

    c = RawHTTP(log, v4, PORT_CLOSE, "server with keepalive_timeout 0 answers Connection: close")
    _expect(c.request("GET", "/small.txt"), 200, "close", "keepalive_timeout 0")
    c.wait_server_close()

    c = RawHTTP(log, v4, PORT_LIMIT, "server with keepalive_requests 2 closes after the second response")
    _expect(c.request("GET", "/index.html"), 200, "keep-alive", "keepalive_requests 2, #1")
    _expect(c.request("GET", "/small.txt"), 200, "close", "keepalive_requests 2, #2")
    c.wait_server_close()


def client_pipelining(log: TruthLog) -> None:
    v4 = "127.0.0.1"
    c = RawHTTP(log, v4, PORT_MAIN, "3 pipelined GETs in one write, then a HEAD, closed by the client")
    h = c.default_headers("HTTP/1.1", None)
    c.send(
        ("GET", "/index.html", "HTTP/1.1", h),
        ("GET", "/small.txt", "HTTP/1.1", h),
        ("GET", "/medium.bin", "HTTP/1.1", h),
    )
    for _ in range(3):
        _expect(c.read_response(), 200, "keep-alive", "pipelined x3")
    _expect(c.request("HEAD", "/medium.bin"), 200, "keep-alive", "after the pipeline")
    c.close()

    # No HEAD inside a pipeline: tshark 4.0 (the recording's oracle) then reads the HEAD response's
    # Content-Length as a body and loses the responses after it.
    c = RawHTTP(
        log,
        v4,
        PORT_MAIN,
        "5 pipelined GETs in one write (a 404, the last one with Connection: "
        "close): nginx answers in order and closes",
    )
    h = c.default_headers("HTTP/1.1", None)
    last = {**h, "Connection": "close"}
    c.send(
        ("GET", "/small.txt", "HTTP/1.1", h),
        ("GET", "/large.bin", "HTTP/1.1", h),
        ("GET", "/missing.html", "HTTP/1.1", h),
        ("GET", "/index.html", "HTTP/1.1", h),
        ("GET", "/medium.bin", "HTTP/1.1", last),
    )
    for status in (200, 200, 404, 200):
        _expect(c.read_response(), status, "keep-alive", "pipelined x5")
    _expect(c.read_response(), 200, "close", "pipelined x5, last")
    c.wait_server_close()


def client_midstream(log: TruthLog) -> None:
    v4 = "127.0.0.1"
    before = TrackedHTTP(log, v4, PORT_MAIN, "entirely before the cut: not in the capture")
    before.request("GET", "/small.txt")
    before.close()
    a = TrackedHTTP(
        log,
        v4,
        PORT_MAIN,
        "established before the capture starts: no handshake, the first two requests are cut off",
    )
    a.request("GET", "/index.html")
    a.request("GET", "/small.txt")
    time.sleep(0.25)
    log.cut_here()
    time.sleep(0.25)
    a.request("GET", "/medium.bin")
    a.request("GET", "/index.html")
    a.close()
    b = TrackedHTTP(log, v4, PORT_MAIN, "a complete connection after the cut")
    b.request("GET", "/small.txt")
    b.request("GET", "/missing.html")
    b.close()


def client_ipv6_pcapng(log: TruthLog) -> None:
    v6 = "::1"
    a = TrackedHTTP(log, v6, PORT_MAIN, "IPv6 keep-alive, closed by the client")
    a.request("GET", "/index.html")
    a.request("GET", "/medium.bin")
    a.close()
    b = TrackedHTTP(log, v6, PORT_MAIN, "IPv6 keep-alive, still open when the capture ends")
    b.request("GET", "/small.txt")
    b.request("HEAD", "/index.html")
    b.request("GET", "/large.bin")
    base = f"http://[{v6}]:{PORT_MAIN}"
    run_curl(log, [f"{base}/small.txt", f"{base}/index.html"], "curl over IPv6, two URLs, one connection")
    _CLIENT_KEEPALIVE.append(b)  # keeps the socket open until the recorder has stopped tcpdump


def client_shaped_bulk(log: TruthLog) -> None:
    v4 = "127.0.0.1"
    bulk = "/" + next(iter(TEXT_FILES))
    probe = KernelProbe(SCENARIO_BY_NAME[log.scenario])
    role_a = "warm then cooled"
    a = TrackedHTTP(
        log,
        v4,
        PORT_MAIN,
        f"small then large GET (warm), {SHAPED_IDLE_S} s idle, the large GET again (cooled: slow start "
        "restarts after idle); closed by the client",
    )
    a.request("GET", "/small.txt")
    a.request("GET", bulk)
    assert a.conn is not None
    conn_a = a.conn
    probe.snapshot(conn_a, role_a, f"GET {bulk} (warm)")
    time.sleep(SHAPED_IDLE_S)
    a.request("GET", bulk)
    probe.snapshot(conn_a, role_a, f"GET {bulk} (cooled)")
    probe.before_close(conn_a, role_a)
    a.close()
    b = TrackedHTTP(log, v4, PORT_MAIN, "a new connection's first GET is the large file (cold); client closes")
    b.request("GET", bulk)
    assert b.conn is not None
    conn_b = b.conn
    probe.snapshot(conn_b, "cold", f"GET {bulk} (cold)")
    probe.before_close(conn_b, "cold")
    b.close()
    log.kernel = probe.finish()
    if not any(entry["server_socket"]["retrans_total"] for entry in log.kernel["connections"]):
        raise ClientError("no retransmission on the server sockets: the shaper dropped nothing this time")


def client_tls(log: TruthLog) -> None:
    tls13 = tls_context()
    a = TrackedTLS(log, tls13, PORT_TLS, "TLS 1.3, full handshake, four keep-alive requests; client closes")
    for target in ("/index.html", "/small.txt", "/medium.bin", "/missing.html"):
        a.request("GET", target)
    session13 = a.session
    a.close()
    b = TrackedTLS(log, tls13, PORT_TLS, "TLS 1.3 resuming the first session (ticket, PSK)", session=session13)
    b.request("GET", "/index.html")
    b.request("GET", "/small.txt")
    b.close()
    tls12 = tls_context(maximum=ssl.TLSVersion.TLSv1_2)
    c = TrackedTLS(log, tls12, PORT_TLS, "TLS 1.2, full handshake (ALPN visible), two requests")
    c.request("GET", "/index.html")
    c.request("GET", "/small.txt")
    session12 = c.session
    c.close()
    d = TrackedTLS(log, tls12, PORT_TLS, "TLS 1.2 resuming the previous session (abbreviated)", session=session12)
    d.request("GET", "/small.txt")
    d.request("GET", "/missing.html")
    d.close()


def client_h2c(log: TruthLog) -> None:
    base = f"http://127.0.0.1:{PORT_H2C}"
    run_nghttp(
        log,
        PORT_H2C,
        [f"{base}/index.html", f"{base}/small.txt", f"{base}/medium.bin", f"{base}/missing.html"],
        upgrade=False,
        note="nghttp prior knowledge: four concurrent streams (after nghttp's PRIORITY-only streams 3-11)",
    )
    run_h2load(log, PORT_H2C, f"{base}/small.txt", requests=6, concurrent=3,
               note="h2load -n 6 -m 3: six GETs over one connection, up to three streams at once")
    # No curl --http2-prior-knowledge here: curl 7.88.1 fails its second URL on the reused connection
    # (exit 16, "Re-using existing connection" and no request), so it would only ever carry one stream.
    up = f"http://127.0.0.1:{PORT_H2C_UPGRADE}"
    run_curl_h2c(
        log,
        [f"{up}/index.html", f"{up}/small.txt", f"{up}/missing.html"],
        upgrade=True,
        note="curl --http2: GET with Upgrade: h2c, 101, its response on stream 1; then streams 3 and 5",
    )
    run_nghttp(
        log,
        PORT_H2C_UPGRADE,
        [f"{up}/small.txt", f"{up}/medium.bin"],
        upgrade=True,
        note="nghttp -u: Upgrade: h2c on the first URL (stream 1), the second on its own stream",
    )


_CLIENT_KEEPALIVE: list[object] = []

CLOSE_RACE_IDLE_S = (1.3, 0.998, 1.0, 1.001, 1.002, 1.004)  # idle before the second request (timeout 1 s)
CLOSE_RACE_FIRST_PORT = 42000  # client ports of the close-race connections (the namespace is empty)


def client_close_race(log: TruthLog) -> None:
    """Second requests sent at nginx's keepalive_timeout without looking for its FIN first (like a pool
    that does not check its idle connections): a request that loses the race gets EOF or a reset instead
    of a response and is retried at once on a new connection, which the client then closes."""
    v4 = "127.0.0.1"
    races = 0
    # Each connection gets a port of its own: a connection the server closed leaves its TIME-WAIT on the
    # server, and the kernel would hand the same client port to the retry (the truth is keyed by ports).
    ports = iter(range(CLOSE_RACE_FIRST_PORT, CLOSE_RACE_FIRST_PORT + 2 * len(CLOSE_RACE_IDLE_S)))
    for idle in CLOSE_RACE_IDLE_S:
        c = RawHTTP(log, v4, PORT_MAIN, f"second request after {idle:.3f} s idle", source_port=next(ports))
        _expect(c.request("GET", "/index.html"), 200, "keep-alive", "close race, first request")
        time.sleep(idle)
        target = f"/small.txt?idle={idle:.3f}"
        try:
            c.send(("GET", target, "HTTP/1.1", c.default_headers("HTTP/1.1", None)))
            response = c.read_response()
        except (ClientError, OSError) as exc:
            c.outstanding.clear()
            c.conn.requests.append(RequestTruth("GET", target, None))
            c.conn.close_by = "server"
            c.conn.note += f": raced the server's close ({type(exc).__name__}), no response"
            c.sock.close()
            races += 1
            retry = RawHTTP(log, v4, PORT_MAIN, f"retry of {target} on a new connection", source_port=next(ports))
            _expect(retry.request("GET", target), 200, "keep-alive", "close race, retry")
            retry.close()
            continue
        _expect(response, 200, "keep-alive", "close race, answered second request")
        c.conn.note += ": answered before the timer fired"
        time.sleep(0.05)
        if _pending_eof_or_data(c.sock):
            c.wait_server_close()
        else:
            c.close()
    if races == 0:
        raise ClientError("no request raced the server's close")


CLIENTS: dict[str, Callable[[TruthLog], None]] = {
    "close-race": client_close_race,
    "keepalive-idle-timeout": client_keepalive_idle_timeout,
    "http10-and-close": client_http10_and_close,
    "pipelining": client_pipelining,
    "midstream": client_midstream,
    "ipv6-pcapng": client_ipv6_pcapng,
    "shaped-bulk": client_shaped_bulk,
    "tls": client_tls,
    "h2c": client_h2c,
    "h2-tls": client_h2_tls,
}


# --- microsecond TCP timestamps (shaped-bulk) -----------------------------------------------------------

RTM_NEWROUTE = 24
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE = 0x1, 0x4, 0x100
RTA_DST, RTA_OIF, RTA_PREFSRC, RTA_METRICS, RTA_TABLE = 1, 4, 7, 8, 15
RTAX_FEATURES = 12
RTAX_FEATURE_TCP_USEC_TS = 1 << 4  # Linux 6.7+; iproute2 6.1 has no keyword for it, hence raw netlink
RT_TABLE_LOCAL, RTPROT_KERNEL, RT_SCOPE_HOST, RTN_LOCAL = 255, 2, 254, 2


def _rtattr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def set_loopback_usec_ts() -> None:
    """Replace the namespace's route ``local 127.0.0.1 dev lo table local`` by the same route with the
    feature ``tcp_usec_ts``: connections over it put microseconds in their TCP timestamps (TSval), so every
    segment a client sends carries its own TSval and the server's TSecr tells which one it had processed
    when it sent a segment. Runs inside the namespace (``record.py _usec_ts`` under ``ip netns exec``)."""
    addr = socket.inet_aton("127.0.0.1")
    rtmsg = struct.pack(
        "=BBBBBBBBI", socket.AF_INET, 32, 0, 0, RT_TABLE_LOCAL, RTPROT_KERNEL, RT_SCOPE_HOST, RTN_LOCAL, 0
    )
    attrs = (
        _rtattr(RTA_DST, addr)
        + _rtattr(RTA_OIF, struct.pack("=I", socket.if_nametoindex("lo")))
        + _rtattr(RTA_PREFSRC, addr)
        + _rtattr(RTA_TABLE, struct.pack("=I", RT_TABLE_LOCAL))
        + _rtattr(RTA_METRICS, _rtattr(RTAX_FEATURES, struct.pack("=I", RTAX_FEATURE_TCP_USEC_TS)))
    )
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE
    message = struct.pack("=IHHII", 16 + len(rtmsg) + len(attrs), RTM_NEWROUTE, flags, 1, 0) + rtmsg + attrs
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
        nl.bind((0, 0))
        nl.send(message)
        reply = nl.recv(65536)
    _length, kind = struct.unpack_from("=IH", reply)
    if kind != NLMSG_ERROR:
        raise RecordError(f"rtnetlink: unexpected reply type {kind}")
    (error,) = struct.unpack_from("=i", reply, 16)
    if error:
        raise RecordError(f"rtnetlink: cannot set tcp_usec_ts on 127.0.0.1: {os.strerror(-error)}")


def client_main(scenario: str) -> int:
    """Run inside the namespace: do the scenario's traffic, print the truth as one JSON line, then wait
    for stdin to close (connections meant to be open at capture end stay open until then)."""
    log = TruthLog(scenario)
    CLIENTS[scenario](log)
    for conn in log.connections:
        if not conn.requests:
            raise ClientError(f"connection {conn.client_port} carried no request")
    sys.stdout.write(json.dumps(log.to_json()) + "\n")
    sys.stdout.flush()
    sys.stdin.read()
    return 0


# --- nginx ---------------------------------------------------------------------------------------------


def _static_content(name: str, size: int) -> bytes:
    if name == "index.html":
        items = "".join(f'<li><a href="/{n}">{n}</a></li>' for n in STATIC_FILES)
        return (
            f"<!doctype html>\n<html><head><title>anz recorder</title></head>\n"
            f"<body><h1>analyzer sample server</h1><ul>{items}</ul></body></html>\n"
        ).encode()
    if name == "small.txt":
        return b"hello from the analyzer's recording server\n"
    if name in TEXT_FILES:
        return (BULK_TEXT * (size // len(BULK_TEXT) + 1))[:size]
    pattern = bytes(range(256))
    return (pattern * (size // len(pattern) + 1))[:size]


def nginx_config(scn: Scenario, prefix: Path) -> str:
    """nginx.conf for one scenario: everything (pid, logs, temp paths, files) under ``prefix``."""
    www = prefix / "www"
    common = f"root {www}; default_type application/octet-stream;"
    return f"""# generated by captures/record.py for scenario {scn.name}
daemon off;
master_process on;
worker_processes 1;
user root root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 128; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    types {{ text/html html; text/plain txt; application/octet-stream bin; }}
    sendfile off;
    server_tokens off;
    server {{
        listen 127.0.0.1:{PORT_MAIN};
        listen [::1]:{PORT_MAIN};
        keepalive_timeout {scn.keepalive_timeout};
        keepalive_requests {scn.keepalive_requests};
        {common}
        location = /api/echo {{ default_type application/json; return 200 '{{"ok": true}}\\n'; }}
    }}
    server {{
        listen 127.0.0.1:{PORT_CLOSE};
        keepalive_timeout 0;
        {common}
    }}
    server {{
        listen 127.0.0.1:{PORT_LIMIT};
        keepalive_timeout 10s;
        keepalive_requests 2;
        {common}
    }}
{_extra_servers(scn, prefix, common)}}}
"""


def _extra_servers(scn: Scenario, prefix: Path, common: str) -> str:
    """The TLS and HTTP/2 servers of the scenarios that use them (nginx 1.22: ``listen ... http2``)."""
    servers = ""
    if scn.tls:
        tls = (
            f"ssl_certificate {prefix}/cert.pem; ssl_certificate_key {prefix}/key.pem; "
            "ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on; "
            "ssl_session_cache shared:anz:1m; ssl_session_timeout 10m;"
        )
        servers += f"""    server {{
        listen 127.0.0.1:{PORT_TLS} ssl;
        server_name {TLS_SNI};
        keepalive_timeout {scn.keepalive_timeout};
        {tls}
        {common}
    }}
    server {{
        listen 127.0.0.1:{PORT_TLS_H2} ssl http2;
        server_name {TLS_SNI};
        keepalive_timeout {scn.keepalive_timeout};
        {tls}
        {common}
    }}
"""
    if scn.h2c:
        servers += f"""    server {{
        listen 127.0.0.1:{PORT_H2C} http2;
        keepalive_timeout {scn.keepalive_timeout};
        {common}
    }}
    server {{
        listen unix:{prefix}/backend.sock;
        keepalive_timeout {scn.keepalive_timeout};
        {common}
    }}
"""
    return servers


def _prepare_nginx(scn: Scenario, prefix: Path) -> Path:
    (prefix / "www").mkdir()
    (prefix / "tmp").mkdir()
    for name, size in {**STATIC_FILES, **TEXT_FILES}.items():
        (prefix / "www" / name).write_bytes(_static_content(name, size))
    if scn.tls:
        _make_certificate(prefix)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(scn, prefix))
    return conf


def _make_certificate(prefix: Path) -> None:
    """A self-signed P-256 certificate for TLS_SNI, made for this recording only (nothing secret is
    committed but the clients' key log of these throw-away sessions)."""
    done = subprocess.run(
        [
            _tool("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(prefix / "key.pem"), "-out", str(prefix / "cert.pem"), "-days", "30",
            "-subj", f"/CN={TLS_SNI}", "-addext", f"subjectAltName=DNS:{TLS_SNI}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RecordError(f"openssl req: {done.stderr.strip()}")


def _wait_listening(in_ns: list[str], port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run(
            [*in_ns, _tool("ss"), "-t", "-l", "-n", "-H", "sport", "=", f":{port}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if out.strip():
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RecordError(f"{what} did not start listening on :{port}")
        time.sleep(0.05)


# --- recording -----------------------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"record: {message}", file=sys.stderr, flush=True)


def _read_available(fd: int, timeout: float) -> bytes:
    readable, _, _ = select.select([fd], [], [], timeout)
    return os.read(fd, 65536) if readable else b""


def _stop(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Send ``sig`` to one process we started (by its PID), then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, sig)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@dataclass
class Recorded:
    raw_pcap: Path
    truth: dict[str, Any]
    tcpdump_stats: str


def _record_once(scn: Scenario, tmp: Path, ns: str) -> Recorded:
    ip = _tool("ip")
    nginx_bin = _tool("nginx")
    tcpdump_bin = _tool("tcpdump")
    prefix = tmp / "nginx"
    prefix.mkdir()
    conf = _prepare_nginx(scn, prefix)
    raw = tmp / "raw.pcap"
    procs: list[subprocess.Popen[bytes]] = []
    created = False
    try:
        for cmd in (
            ["netns", "add", ns],
            ["-n", ns, "link", "set", "lo", "mtu", "1500"],
            ["-n", ns, "link", "set", "lo", "gso_max_segs", "1"],
            ["-n", ns, "link", "set", "lo", "up"],
        ):
            done = subprocess.run([ip, *cmd], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RecordError(f"ip {' '.join(cmd)}: {done.stderr.strip()}")
            created = True
        in_ns = [ip, "netns", "exec", ns]
        setup: list[list[str]] = []
        if scn.tbf is not None:
            setup += [[_tool("tc"), *cmd] for cmd in scn.tbf.commands()]
        setup += [[_tool("sysctl"), "-q", "-w", setting] for setting in scn.sysctls]
        if scn.usec_ts:
            setup.append([sys.executable, str(THIS_FILE), "_usec_ts"])
        for cmd in setup:
            done = subprocess.run([*in_ns, *cmd], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RecordError(f"{' '.join(cmd)} in {ns}: {done.stderr.strip()}")

        nginx_log = (tmp / "nginx.out").open("wb")
        nginx = subprocess.Popen(
            [*in_ns, nginx_bin, "-p", f"{prefix}/", "-e", f"{prefix}/error.log", "-c", str(conf)],
            stdout=nginx_log,
            stderr=subprocess.STDOUT,
        )
        procs.append(nginx)
        deadline = time.monotonic() + 10
        while not (prefix / "nginx.pid").exists():  # written after the listening sockets are bound
            if nginx.poll() is not None or time.monotonic() > deadline:
                raise RecordError(
                    f"nginx did not start: {(tmp / 'nginx.out').read_text()}"
                    f"{(prefix / 'error.log').read_text() if (prefix / 'error.log').exists() else ''}"
                )
            time.sleep(0.02)

        if scn.h2c:
            nghttpx = subprocess.Popen(
                [
                    *in_ns, _tool("nghttpx"), "--conf=/dev/null", f"--frontend=127.0.0.1,{PORT_H2C_UPGRADE};no-tls",
                    f"--backend=unix:{prefix}/backend.sock", "--single-process", "--workers=1",
                    f"--pid-file={tmp}/nghttpx.pid", f"--errorlog-file={tmp}/nghttpx.log", "--accesslog-file=/dev/null",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(nghttpx)
            _wait_listening(in_ns, PORT_H2C_UPGRADE, nghttpx, "nghttpx")

        tcpdump = subprocess.Popen(
            [*in_ns, tcpdump_bin, "-Z", "root", "-i", "lo", "-s", "0", "-n", "-w", str(raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append(tcpdump)
        assert tcpdump.stderr is not None
        err_fd = tcpdump.stderr.fileno()
        stderr = b""
        deadline = time.monotonic() + 10
        while b"listening on" not in stderr:
            if tcpdump.poll() is not None or time.monotonic() > deadline:
                raise RecordError(f"tcpdump did not start: {stderr.decode(errors='replace')}")
            stderr += _read_available(err_fd, 0.1)

        client_err = (tmp / "client.err").open("wb")
        client = subprocess.Popen(
            [*in_ns, sys.executable, str(THIS_FILE), "_client", scn.name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=client_err,
            env={**os.environ, "ANZ_REC_DIR": str(tmp)},
        )
        procs.append(client)
        assert client.stdout is not None and client.stdin is not None
        readable, _, _ = select.select([client.stdout], [], [], CLIENT_TIMEOUT_S)
        line = client.stdout.readline() if readable else b""
        if not line:
            _stop(client, signal.SIGTERM, 5)
            raise RetryableError(f"client failed: {(tmp / 'client.err').read_text().strip()[-2000:]}")
        truth = json.loads(line)

        time.sleep(FLUSH_WAIT_S)  # the last ring block of tcpdump on lo
        _stop(tcpdump, signal.SIGINT, 10)
        while chunk := os.read(err_fd, 65536):
            stderr += chunk
        stats = stderr.decode(errors="replace")
        client.stdin.close()
        client.wait(timeout=10)
        if client.returncode != 0:
            raise RetryableError(
                f"client exited with {client.returncode}: {(tmp / 'client.err').read_text()}"
            )
        _stop(nginx, signal.SIGTERM, 10)
        dropped = re.search(r"(\d+) packets? dropped by kernel", stats)
        if dropped is None:
            raise RetryableError(f"no drop count in tcpdump's output: {stats!r}")
        if int(dropped.group(1)) != 0:
            raise RetryableError(f"tcpdump: {dropped.group(0)}")
        return Recorded(raw, truth, stats)
    finally:
        for proc in reversed(procs):
            _stop(proc, signal.SIGTERM, 5)
        if created:
            subprocess.run([ip, "netns", "delete", ns], capture_output=True, check=False)


def cut_pcap_before(src: Path, dst: Path, cut_ts: float) -> tuple[int, int]:
    """Copy a classic pcap without the packets stamped before ``cut_ts``; returns (kept, dropped)."""
    data = src.read_bytes()
    formats = {
        b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
        b"\xa1\xb2\xc3\xd4": (">", 1e-6),
        b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
        b"\xa1\xb2\x3c\x4d": (">", 1e-9),
    }
    if data[:4] not in formats:
        raise RecordError(f"{src}: not a classic pcap file")
    endian, scale = formats[data[:4]]
    out = [data[:24]]
    offset, kept, dropped = 24, 0, 0
    while offset + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from(f"{endian}IIII", data, offset)
        end = offset + 16 + incl
        if end > len(data):
            raise RecordError(f"{src}: truncated record at offset {offset}")
        if sec + frac * scale >= cut_ts:
            out.append(data[offset:end])
            kept += 1
        else:
            dropped += 1
        offset = end
    dst.write_bytes(b"".join(out))
    return kept, dropped


def _finish_capture(scn: Scenario, rec: Recorded, tmp: Path) -> tuple[Path, dict[str, Any]]:
    truth = dict(rec.truth)
    cut_ts = truth.pop("cut_ts", None)
    capture = rec.raw_pcap
    if cut_ts is not None:
        cut = tmp / "cut.pcap"
        kept, dropped = cut_pcap_before(capture, cut, float(cut_ts))
        if dropped == 0 or kept == 0:
            raise RetryableError(f"the cut kept {kept} and dropped {dropped} packets")
        capture = cut
    if scn.pcapng:
        converted = tmp / "converted.pcapng"
        done = subprocess.run(
            [_tool("editcap"), "-F", "pcapng", str(capture), str(converted)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RecordError(f"editcap: {done.stderr.strip()}")
        capture = converted
    if scn.gzip:
        compressed = tmp / "compressed.gz"
        # mtime 0 and no file name in the gzip header: the same capture always gives the same bytes
        with (
            capture.open("rb") as src,
            compressed.open("wb") as raw_out,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw_out, compresslevel=9, mtime=0) as out,
        ):
            shutil.copyfileobj(src, out)
        capture = compressed
    ordered = {
        "scenario": scn.name,
        "capture": scn.capture_name,
        "description": scn.description,
        "connections": truth["connections"],
    }
    if scn.keylog_name is not None:
        if not (tmp / "keylog").is_file():
            raise RetryableError("the TLS clients wrote no key log")
        ordered["keylog"] = scn.keylog_name
    if truth.get("kernel") is not None:
        ordered["kernel"] = truth["kernel"]
    return capture, ordered


# --- tshark as an independent check of capture + truth -------------------------------------------------


@dataclass
class TsharkStream:
    client: tuple[str, int] | None = None
    server: tuple[str, int] | None = None
    syn_seen: bool = False
    close_by: str = "open"
    requests: list[tuple[str, str]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    outstanding: int = 0
    pipelined_max: int = 0
    h2: dict[int, dict[str, Any]] = field(default_factory=dict)  # HTTP/2 stream id -> method, path, status
    stream_ids: list[int] = field(default_factory=list)

    def finish_h2(self) -> None:
        """HTTP/2 streams as requests in stream order; an upgraded connection's HTTP/1.1 request is stream 1
        (and its 101 is not a final status)."""
        if not self.h2:
            return
        if self.requests and 1 in self.h2 and "method" not in self.h2[1]:
            method, uri = self.requests[0]
            self.h2[1].update(method=method, path=uri)
        self.stream_ids = sorted(self.h2)
        self.requests = [(self.h2[i].get("method", "?"), self.h2[i].get("path", "?")) for i in self.stream_ids]
        self.statuses = [self.h2[i].get("status", 0) for i in self.stream_ids]


def tshark_streams(capture: Path, keylog: Path | None = None) -> tuple[int, list[TsharkStream]]:
    """(frames, TCP streams in order of first packet) as tshark dissects them: HTTP, TLS or HTTP/2 on the
    server ports (``TSHARK_DECODE``); TLS decrypted with the clients' key log when one is given, so the
    HTTP inside is seen too. HTTP/2 requests are listed in stream order and their statuses by stream."""
    tshark = find_tool("tshark")
    if tshark is None:
        raise RecordError("tshark is not installed")
    fields = [
        "tcp.stream",
        "ip.src",
        "ipv6.src",
        "tcp.srcport",
        "tcp.dstport",
        "tcp.flags.syn",
        "tcp.flags.fin",
        "tcp.flags.reset",
        "http.request.method",
        "http.request.uri",
        "http.response.code",
        "http2.streamid",
        "http2.type",
        "http2.headers.method",
        "http2.headers.path",
        "http2.headers.status",
    ]
    args = [
        tshark,
        "-r",
        str(capture),
        "-n",
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
        "-o",
        "tcp.reassemble_out_of_order:TRUE",  # a segment lost in shaped-bulk's qdisc comes after later ones
    ]
    for port in SERVER_PORTS:
        args += ["-d", f"tcp.port=={port},{TSHARK_DECODE[port]}"]
    if keylog is not None:
        args += ["-o", f"tls.keylog_file:{keylog}"]
    for name in fields:
        args += ["-e", name]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RecordError(f"tshark: {done.stderr.strip()}")
    streams: dict[int, TsharkStream] = {}
    frames = 0
    for line in done.stdout.splitlines():
        frames += 1
        cols = line.split("\t")
        cols += [""] * (len(fields) - len(cols))
        if not cols[0]:
            continue
        (stream_id, ip4, ip6, sport, dport, syn, fin, rst, methods, uris, codes) = cols[:11]
        h2_ids, h2_types, h2_methods, h2_paths, h2_statuses = cols[11:]
        st = streams.setdefault(int(stream_id), TsharkStream())
        src = (ip4 or ip6, int(sport))
        dst_port = int(dport)
        from_client = dst_port in SERVER_PORTS
        if st.client is None:
            st.client = src if from_client else None
            st.server = None if from_client else src
        if from_client and st.client is None:
            st.client = src
        if not from_client and st.server is None:
            st.server = src
        if syn in ("1", "True"):
            st.syn_seen = True
        if st.close_by == "open" and (fin in ("1", "True") or rst in ("1", "True")):
            st.close_by = "client" if from_client else "server"
        if methods:
            for method, uri in zip(methods.split(","), uris.split(","), strict=True):
                st.requests.append((method, uri))
                st.outstanding += 1
            st.pipelined_max = max(st.pipelined_max, st.outstanding)
        if codes:
            for code in codes.split(","):
                if code == "101":
                    continue  # Upgrade: h2c accepted; the final status comes on HTTP/2 stream 1
                st.statuses.append(int(code))
                st.outstanding -= 1
        if h2_ids and h2_types:
            # HEADERS frames (type 1) in order; a client's carry :method and :path, a server's :status.
            headers = [
                int(sid)
                for sid, kind in zip(h2_ids.split(","), h2_types.split(","), strict=False)
                if kind == "1"
            ]
            if from_client:
                for sid, method, uri in zip(headers, h2_methods.split(","), h2_paths.split(","), strict=False):
                    st.h2.setdefault(sid, {}).update(method=method, path=uri)
                    st.outstanding += 1
                st.pipelined_max = max(st.pipelined_max, st.outstanding)
            elif h2_statuses:
                for sid, code in zip(headers, h2_statuses.split(","), strict=False):
                    st.h2.setdefault(sid, {})["status"] = int(code)
                    st.outstanding -= 1
    for st in streams.values():
        st.finish_h2()
    return frames, [streams[k] for k in sorted(streams)]


def verify_with_tshark(capture: Path, truth: Mapping[str, Any]) -> list[str]:
    """Differences between the truth and tshark's view of the capture (empty when they agree); TLS is
    decrypted with the truth's ``keylog`` (a file next to the capture) when it names one."""
    keylog = capture.parent / truth["keylog"] if truth.get("keylog") else None
    return compare_tshark_streams(tshark_streams(capture, keylog)[1], truth)


def compare_tshark_streams(streams: Sequence[TsharkStream], truth: Mapping[str, Any]) -> list[str]:
    """Differences between the truth and the TCP streams tshark found (see ``verify_with_tshark``)."""
    conns = truth["connections"]
    problems: list[str] = []
    if len(streams) != len(conns):
        problems.append(f"tshark sees {len(streams)} TCP streams, the truth lists {len(conns)} connections")
    for index, (st, conn) in enumerate(zip(streams, conns, strict=False)):
        where = f"connection #{index} ({conn['client_ip']} port {conn['client_port']})"
        seen = {
            "client": st.client and (_norm_ip(st.client[0]), st.client[1]),
            "server_port": st.server[1] if st.server else conn["server_port"],
            "syn_seen": st.syn_seen,
            "close_by": st.close_by,
            "pipelined_max": st.pipelined_max,
            "requests": [[m, t, s] for (m, t), s in zip(st.requests, st.statuses, strict=False)],
            "request_count": len(st.requests),
            "response_count": len(st.statuses),
        }
        expected = {
            "client": (_norm_ip(conn["client_ip"]), conn["client_port"]),
            "server_port": conn["server_port"],
            "syn_seen": conn["syn_seen"],
            "close_by": conn["close_by"],
            "pipelined_max": conn["pipelined_max"],
            # A request that raced the server's close has no response (status None), and is the last one.
            "requests": [[r["method"], r["target"], r["status"]] for r in conn["requests"]
                         if r["status"] is not None],
            "request_count": len(conn["requests"]),
            "response_count": sum(r["status"] is not None for r in conn["requests"]),
        }
        if conn["pipelined_max"] is None:  # not known to the client (nghttp's concurrent streams)
            del expected["pipelined_max"]
        if any("stream_id" in r for r in conn["requests"]):
            seen["stream_ids"] = st.stream_ids
            expected["stream_ids"] = [r["stream_id"] for r in conn["requests"]]
        for key, value in expected.items():
            if seen[key] != value:
                problems.append(f"{where}: {key}: tshark {seen[key]!r}, truth {value!r}")
    return problems


# --- the analyzer's export compared with the truth -----------------------------------------------------


def _norm_ip(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        return str(value)


def _as_int(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return int(value)


def _as_bool(value: Any) -> bool | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, str):
        return value.lower() in ("true", "1")
    return bool(value)


def _conn_key(row: Mapping[str, Any]) -> tuple[str, int | None, str, int | None]:
    return (
        _norm_ip(row.get("client_ip")),
        _as_int(row.get("client_port")),
        _norm_ip(row.get("server_ip")),
        _as_int(row.get("server_port")),
    )


def analyzer_requests(export: Mapping[str, Any], uid: Any) -> list[tuple[str | None, str | None, int | None]]:
    """(method, target, status) of one connection's transactions, ordered by trans_depth."""
    rows = [t for t in export.get("transactions", []) if t.get("uid") == uid]
    rows.sort(key=lambda t: (_as_int(t.get("trans_depth")) is None, _as_int(t.get("trans_depth")) or 0))
    return [(t.get("method"), t.get("target"), _as_int(t.get("status"))) for t in rows]


def compare_with_truth(export: Mapping[str, Any], truth: Mapping[str, Any], decrypted: bool = False) -> list[str]:
    """Differences between ``analyzer export --format json`` output and a truth file (empty = equal).

    Connections are matched by (client_ip, client_port, server_ip, server_port). Compared exactly: the
    number of connections, and per connection the requests (method, target, status; ordered by
    trans_depth), syn_seen, close_by and pipelined_max. A TLS connection (its truth has ``tls_version``)
    is encrypted to the analyzer (no key log is given to it): only the NUMBER of its transactions
    (estimated from record bursts) is compared with the requests, pipelined_max is not (unknown to it),
    and its TLS facts are: version, resumption, SNI, ALPN offered, the selected ALPN when the handshake
    shows it (TLS 1.2; TLS 1.3 encrypts it) and the protocol (``tls``, or the visible ALPN). HTTP/2 inside
    TLS is not estimated: with ALPN h2 visible the connection has no transaction, and the count of a TLS 1.3
    connection's estimates is not compared when the client spoke h2 (record bursts are not streams).
    HTTP/2 connections also compare their stream ids and the protocol (``h2c``); pipelined_max only when
    the client knows it.

    ``decrypted``: the export was made with the truth's key log (``run_analyzer_export(..., keylog=)``):
    TLS connections are then compared like cleartext ones (requests, stream ids) and their TLS facts
    include the selected ALPN whatever the version, the protocol spoken inside (``h2``, ``http/1.1``) and
    ``tls_decrypted`` True.
    """
    problems: list[str] = []
    rows = list(export.get("connections", []))
    truth_conns = list(truth["connections"])
    if len(rows) != len(truth_conns):
        problems.append(
            f"number of connections: analyzer {len(rows)}, truth {len(truth_conns)} "
            f"(analyzer {sorted(map(_fmt_key, map(_conn_key, rows)))}, "
            f"truth {sorted(map(_fmt_key, map(_conn_key, truth_conns)))})"
        )
    by_key: dict[tuple[str, int | None, str, int | None], Mapping[str, Any]] = {}
    for row in rows:
        by_key.setdefault(_conn_key(row), row)
    for conn in truth_conns:
        key = _conn_key(conn)
        where = f"connection {_fmt_key(key)}"
        row = by_key.get(key)
        if row is None:
            swapped = (key[2], key[3], key[0], key[1])
            hint = " (present with client and server swapped)" if swapped in by_key else ""
            problems.append(f"{where}: missing from the analyzer's connections{hint}")
            continue
        checks: list[tuple[str, Any, Any]] = [
            ("syn_seen", _as_bool(row.get("syn_seen")), conn["syn_seen"]),
        ]
        if conn["close_by"] is not None:  # None: the client cannot know (its FIN crossed the server's)
            checks.append(("close_by", row.get("close_by"), conn["close_by"]))
        encrypted = conn.get("tls_version") is not None and not decrypted
        if conn.get("tls_version") is not None:
            checks += tls_checks(export, row, conn, decrypted)
        if not encrypted:
            if conn["pipelined_max"] is not None and conn.get("tls_version") is None:
                checks.append(("pipelined_max", _as_int(row.get("pipelined_max")), conn["pipelined_max"]))
            checks.append(
                (
                    "requests",
                    analyzer_requests(export, row.get("uid")),
                    [(r["method"], r["target"], r["status"]) for r in conn["requests"]],
                )
            )
        if not encrypted and any("stream_id" in r for r in conn["requests"]):
            checks.append(("stream_ids", analyzer_stream_ids(export, row.get("uid")),
                           [r.get("stream_id") for r in conn["requests"]]))
        if conn.get("protocol") is not None and conn.get("tls_version") is None:
            checks.append(("protocol", row.get("protocol"), conn["protocol"]))
        for name, got, want in checks:
            if got != want:
                problems.append(f"{where}: {name}: analyzer {got!r}, truth {want!r}")
    return problems


def analyzer_stream_ids(export: Mapping[str, Any], uid: Any) -> list[int | None]:
    """HTTP/2 stream ids of one connection's transactions, ordered by trans_depth."""
    rows = [t for t in export.get("transactions", []) if t.get("uid") == uid]
    rows.sort(key=lambda t: _as_int(t.get("trans_depth")) or 0)
    return [_as_int(t.get("stream_id")) for t in rows]


def tls_version_name(version: str) -> str:
    """The analyzer's spelling of ``SSLSocket.version()``: "TLSv1.3" -> "TLS 1.3"."""
    return version.replace("TLSv", "TLS ")


def tls_expected(conn: Mapping[str, Any], decrypted: bool = False) -> dict[str, Any]:
    """What the analyzer can see of a TLS connection, from the client's truth: without its keys (the
    handshake, estimated transactions) or, ``decrypted``, with the key log (the requests are then compared
    by ``compare_with_truth`` itself)."""
    version = tls_version_name(conn["tls_version"])
    expected: dict[str, Any] = {
        "tls": True,
        "tls_version": version,
        "tls_resumed": conn["tls_resumed"],
        "sni": conn.get("sni"),
        "alpn_offered": conn.get("alpn_offered"),
    }
    if decrypted:
        # TLS 1.3's EncryptedExtensions are decrypted too; the protocol is what the client spoke inside
        expected.update(alpn=conn.get("alpn"), protocol=conn.get("protocol"), tls_decrypted=True)
        return expected
    visible_alpn = conn.get("alpn") if version in ("TLS 1.0", "TLS 1.1", "TLS 1.2") else None
    expected.update(alpn=visible_alpn, protocol=visible_alpn or "tls")
    if visible_alpn == "h2":
        expected["requests"] = 0  # HTTP/2 streams are not estimated from TLS records
    elif conn.get("protocol") != "h2":
        expected["requests"] = len(conn["requests"])  # else: record bursts of h2 are not its streams
    return expected


def tls_checks(
    export: Mapping[str, Any], row: Mapping[str, Any], conn: Mapping[str, Any], decrypted: bool = False
) -> list[tuple[str, Any, Any]]:
    """(name, analyzer, truth) for the TLS facts of one connection (see ``compare_with_truth``)."""
    expected = tls_expected(conn, decrypted)
    got: dict[str, Any] = {
        "tls": _as_bool(row.get("tls")),
        "tls_version": row.get("tls_version"),
        "tls_resumed": _as_bool(row.get("tls_resumed")),
        "sni": row.get("sni"),
        "alpn_offered": row.get("alpn_offered"),
        "alpn": row.get("alpn"),
        "protocol": row.get("protocol"),
        "requests": len(analyzer_requests(export, row.get("uid"))),
        "tls_decrypted": _as_bool(row.get("tls_decrypted")),
    }
    return [(name, got[name], want) for name, want in expected.items()]


def _fmt_key(key: tuple[str, int | None, str, int | None]) -> str:
    def addr(ip: str, port: int | None) -> str:
        return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

    return f"{addr(key[0], key[1])}->{addr(key[2], key[3])}"


def analyzer_command() -> list[str]:
    """How to run the analyzer CLI: the ``analyzer`` script next to this Python, else ``python -m``."""
    script = Path(sys.executable).with_name("analyzer")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "analyzer"]


def run_analyzer_export(capture: Path, out: Path, keylog: Path | None = None) -> dict[str, Any]:
    """``analyzer export CAPTURE [--keylog KEYLOG] --format json -o OUT`` and its parsed output
    (RecordError on failure)."""
    keys = ["--keylog", str(keylog)] if keylog is not None else []
    done = subprocess.run(
        [*analyzer_command(), "export", str(capture), *keys, "--format", "json", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO_ROOT,
    )
    if done.returncode != 0:
        raise RecordError(
            f"analyzer export {capture.name} exited with {done.returncode}: "
            f"{(done.stderr or done.stdout).strip()[-3000:]}"
        )
    if not out.is_file():
        raise RecordError(f"analyzer export {capture.name} wrote no {out}")
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def truth_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.truth.json"))


# --- driver --------------------------------------------------------------------------------------------


@dataclass
class Summary:
    scenario: str
    capture: Path
    size: int
    packets: int | None
    connections: int
    requests: int
    attempts: int
    seconds: float

    def line(self) -> str:
        packets = "?" if self.packets is None else str(self.packets)
        return (
            f"{self.scenario}: {self.capture.name} {self.size} bytes, {packets} packets, "
            f"{self.connections} connections, {self.requests} requests "
            f"(attempt {self.attempts}, {self.seconds:.1f} s)"
        )


def record_scenario(scn: Scenario, out_dir: Path, verify: bool = True) -> Summary:
    """Record one scenario into ``out_dir`` (capture + truth), retrying up to ATTEMPTS times."""
    ns = f"{os.environ.get('ANZ_NETNS_PREFIX', 'anz-rec')}-{os.getpid()}"
    started = time.monotonic()
    failures: list[str] = []
    for attempt in range(1, ATTEMPTS + 1):
        with tempfile.TemporaryDirectory(prefix=f"anz-rec-{scn.name}-") as tmp_name:
            tmp = Path(tmp_name)
            os.chmod(tmp, 0o755)
            try:
                rec = _record_once(scn, tmp, ns)
                capture, truth = _finish_capture(scn, rec, tmp)
                packets: int | None = None
                keylog = tmp / "keylog" if scn.keylog_name is not None else None
                if verify:
                    packets, streams = tshark_streams(capture, keylog)
                    problems = compare_tshark_streams(streams, truth)
                    if problems:
                        raise RetryableError("tshark disagrees with the truth: " + "; ".join(problems))
                size = capture.stat().st_size
                if size > MAX_CAPTURE_BYTES:
                    raise RecordError(f"{scn.capture_name} is {size} bytes (> {MAX_CAPTURE_BYTES})")
            except RetryableError as exc:
                failures.append(f"attempt {attempt}: {exc}")
                _log(f"{scn.name}: attempt {attempt} failed: {exc}")
                continue
            out_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(capture, out_dir / scn.capture_name)
            if keylog is not None and scn.keylog_name is not None:
                shutil.copyfile(keylog, out_dir / scn.keylog_name)
            (out_dir / scn.truth_name).write_text(json.dumps(truth, indent=2) + "\n")
            return Summary(
                scn.name,
                out_dir / scn.capture_name,
                size,
                packets,
                len(truth["connections"]),
                sum(len(c["requests"]) for c in truth["connections"]),
                attempt,
                time.monotonic() - started,
            )
    raise RecordError(f"{scn.name}: no good recording in {ATTEMPTS} attempts: " + " | ".join(failures))


def check_directory(directory: Path, scratch: Path) -> int:
    """Run the analyzer over every capture with a truth file in ``directory``; print the differences."""
    failed = 0
    for truth_path in truth_files(directory):
        truth = json.loads(truth_path.read_text())
        capture = directory / truth["capture"]
        try:
            export = run_analyzer_export(capture, scratch / f"{truth_path.stem}.json")
            problems = compare_with_truth(export, truth)
            if truth.get("keylog"):  # and decrypted with the clients' key log
                keylog = directory / truth["keylog"]
                export = run_analyzer_export(capture, scratch / f"{truth_path.stem}.keylog.json", keylog)
                problems += [f"with {keylog.name}: {p}" for p in compare_with_truth(export, truth, decrypted=True)]
        except RecordError as exc:
            problems = [str(exc)]
        failed += bool(problems)
        print(f"{capture.name}: {'OK' if not problems else 'DIFFERS'}")
        for problem in problems:
            print(f"  {problem}")
    return 1 if failed else 0


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks (processes, namespace)


def main(argv: Iterable[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["_client"]:
        return client_main(args_list[1])
    if args_list[:1] == ["_usec_ts"]:
        set_loopback_usec_ts()
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, help="directory for the captures and their truth files")
    parser.add_argument(
        "--scenario",
        action="extend",
        nargs="+",
        choices=SCENARIOS,
        metavar="NAME",
        help=f"record only these (default: all of {', '.join(SCENARIOS)})",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the tshark check of capture vs truth")
    parser.add_argument(
        "--check",
        type=Path,
        metavar="DIR",
        help="do not record: run the analyzer over DIR's captures and compare with the truth",
    )
    args = parser.parse_args(args_list)
    if args.check is not None:
        with tempfile.TemporaryDirectory(prefix="anz-check-") as scratch:
            return check_directory(args.check, Path(scratch))
    if args.out is None:
        parser.error("--out is required (or --check DIR)")
    reason = missing_requirements()
    if reason is not None:
        _log(f"cannot record: {reason}")
        return 2
    verify = not args.no_verify
    if verify and find_tool("tshark") is None:
        _log("tshark not installed: recording without the tshark check")
        verify = False
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    try:
        for name in args.scenario or SCENARIOS:
            print(record_scenario(SCENARIO_BY_NAME[name], args.out, verify).line(), flush=True)
    except RecordError as exc:
        _log(str(exc))
        return 1
    _log(f"done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
