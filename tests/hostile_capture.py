"""A hostile capture for the report's safety tests, written with dpkt (no traffic is sent anywhere).

``write_hostile_capture(path)`` writes a classic pcap of hand-built Ethernet/IPv4/TCP packets:

* connection 1 (client port 40001 → 127.0.0.1:80): a keep-alive request whose target, Host and User-Agent
  carry ``<script>`` (setting ``window.__pwned``), an ``<img onerror>``, a plotly hover template
  ``%{x}``, a JavaScript link, control characters (ESC, NUL, BEL), invalid UTF-8 and U+2028; Cookie and
  Authorization headers; the response sets a cookie. A second request has a token in its query string and
  a password in an absolute URL; a third has an overlong (20,000 characters) target;
* connection 2 (40002 → :80): a start line that is not HTTP (``<script>`` and a ``Cookie:`` line), an
  anomaly whose detail quotes it;
* connection 3 (40003 → :443): a TLS ClientHello whose SNI is ``<script>``.

``SECRETS`` are the credential values that must never appear in a redacted report or export.
"""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt

T0 = 1_750_000_000.0
PWN = "<script>window.__pwned=1;alert(1)</script>"
IMG = "<img src=x onerror=\"window.__pwned=2\">"
SECRETS = ("SESSIONSECRET42", "BEARERSECRET42", "SETCOOKIESECRET42", "TOKENSECRET42", "URLPASSWORD42",
           "ANOMALYCOOKIE42")
CLIENT = "10.9.8.7"
SERVER = "127.0.0.1"


class _Writer:
    def __init__(self, path: Path) -> None:
        self.file = path.open("wb")
        self.pcap = dpkt.pcap.Writer(self.file, linktype=dpkt.pcap.DLT_EN10MB)
        self.ts = T0

    def packet(self, src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
               payload: bytes = b"", step: float = 0.001) -> None:
        tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=65535, data=payload)
        ip = dpkt.ip.IP(src=bytes(map(int, src.split("."))), dst=bytes(map(int, dst.split("."))),
                        p=dpkt.ip.IP_PROTO_TCP, ttl=64, data=tcp)
        ip.len = len(bytes(ip))
        eth = dpkt.ethernet.Ethernet(src=b"\x02\x00\x00\x00\x00\x01", dst=b"\x02\x00\x00\x00\x00\x02",
                                     type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
        self.ts += step
        self.pcap.writepkt(bytes(eth), ts=self.ts)

    def close(self) -> None:
        self.pcap.close()


class _Connection:
    def __init__(self, writer: _Writer, sport: int, dport: int) -> None:
        self.w, self.sport, self.dport = writer, sport, dport
        self.cseq, self.sseq = 1000, 5000
        w = writer
        w.packet(CLIENT, SERVER, sport, dport, self.cseq, 0, dpkt.tcp.TH_SYN)
        w.packet(SERVER, CLIENT, dport, sport, self.sseq, self.cseq + 1, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
        self.cseq += 1
        self.sseq += 1
        w.packet(CLIENT, SERVER, sport, dport, self.cseq, self.sseq, dpkt.tcp.TH_ACK)

    def client(self, data: bytes) -> None:
        for i in range(0, len(data), 1400):
            part = data[i:i + 1400]
            self.w.packet(CLIENT, SERVER, self.sport, self.dport, self.cseq, self.sseq,
                          dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, part)
            self.cseq += len(part)
        self.w.packet(SERVER, CLIENT, self.dport, self.sport, self.sseq, self.cseq, dpkt.tcp.TH_ACK)

    def server(self, data: bytes) -> None:
        self.w.packet(SERVER, CLIENT, self.dport, self.sport, self.sseq, self.cseq,
                      dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, data)
        self.sseq += len(data)
        self.w.packet(CLIENT, SERVER, self.sport, self.dport, self.cseq, self.sseq, dpkt.tcp.TH_ACK)

    def close_by_client(self) -> None:
        w = self.w
        w.packet(CLIENT, SERVER, self.sport, self.dport, self.cseq, self.sseq, dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)
        w.packet(SERVER, CLIENT, self.dport, self.sport, self.sseq, self.cseq + 1,
                 dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)
        w.packet(CLIENT, SERVER, self.sport, self.dport, self.cseq + 1, self.sseq + 1, dpkt.tcp.TH_ACK)


def _response(body: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\nKeep-Alive: timeout=5\r\n" + extra + b"\r\n" + body)


def client_hello(sni: bytes) -> bytes:
    """A TLS 1.2 ClientHello record offering one suite, with ``sni`` as its server name."""
    name = struct.pack("!BH", 0, len(sni)) + sni
    sni_ext = struct.pack("!HH", 0, len(name) + 2) + struct.pack("!H", len(name)) + name
    alpn = b"\x08http/1.1"
    alpn_ext = struct.pack("!HHH", 16, len(alpn) + 2, len(alpn)) + alpn
    extensions = sni_ext + alpn_ext
    body = (b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\xc0\x2f" + b"\x01\x00"
            + struct.pack("!H", len(extensions)) + extensions)
    handshake = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


def write_hostile_capture(path: Path) -> Path:
    """Write the hostile capture to ``path`` and return it."""
    w = _Writer(path)
    c = _Connection(w, 40001, 80)
    evil_target = ("/" + PWN + IMG + "%{x}" + "javascript:window.__pwned=3" + "\x1b[2J\x00\x07"
                   + "\u2028").encode("utf-8") + b"\xff\xfe\xc3(" + b"?q=1"
    c.client(b"GET " + evil_target.replace(b" ", b"%20") + b" HTTP/1.1\r\nHost: " + PWN.encode() + b".example"
             + b"\r\nUser-Agent: " + IMG.encode() + b"\x1b]0;title\x07\r\nCookie: sid=SESSIONSECRET42; a=b"
             + b"\r\nAuthorization: Bearer BEARERSECRET42\r\n\r\n")
    c.server(_response(b"<p>hi</p>", b"Set-Cookie: sid=SETCOOKIESECRET42; HttpOnly\r\n"))
    c.client(b"GET /next?access_token=TOKENSECRET42&x=1 HTTP/1.1\r\nHost: " + PWN.encode() + b".example\r\n\r\n")
    c.server(_response(b"ok"))
    c.client(b"GET http://admin:URLPASSWORD42@example.test/" + b"A" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    c.server(_response(b"ok"))
    c.close_by_client()

    d = _Connection(w, 40002, 80)
    d.client(PWN.encode() + b" Cookie: sid=ANOMALYCOOKIE42\r\n\r\n")
    d.close_by_client()

    e = _Connection(w, 40003, 443)
    e.client(client_hello(PWN.encode()))
    e.close_by_client()
    w.close()
    return path
