"""A passive, sans-IO TLS handshake observer for one TCP connection.

``TlsObserver.feed(direction, chunk)`` takes the same reassembled ``StreamChunk``s the HTTP layer gets
(direction 0 = client → server, 1 = server → client). Each direction is cut into TLS records; handshake
records are reassembled into handshake messages (several messages per record, one message over several
records, records split across chunks at any byte); ClientHello and ServerHello are decoded
(``messages.py``); application-data records are only framed (type, length, first-byte time, completion
time), never buffered. ``facts()`` combines both directions by capture time into a frozen ``TlsFacts``;
``anomalies()`` lists what went wrong as ``(ts_ns, name, detail)``. Nothing raises on any input.

Why hand-parsed (``bytes`` + bounds checks, no library): the libraries made for this do not fit a passive
observer. ``dpkt.ssl`` (already a dependency) decodes only TLS <= 1.2 structures, raises on the first
inconsistency, cannot continue a handshake message across records, and builds an object tree per record;
scapy's TLS layer is slow, pulls in its whole stack and expects to own the session. We need five header
fields per record and a dozen fields of two hello messages: a few hundred lines we control, which never
raise and never buffer application data.

Definitions (the cross-direction ones are decided in ``facts()`` by capture time, because the tracker may
feed a direction's later bytes before the other direction's earlier ones within a round):

- ``version``: the ServerHello's supported_versions extension when present (how TLS 1.3 is negotiated),
  else its legacy version; from a HelloRetryRequest when no ServerHello was captured; None without either.
- ``resumed``: TLS 1.3: the ServerHello carries pre_shared_key. TLS <= 1.2: the ServerHello echoes the
  client's non-empty session id, or the handshake is abbreviated (the server's ChangeCipherSpec follows its
  ServerHello with no Certificate, ServerKeyExchange, CertificateRequest or ServerHelloDone in between: how
  session-ticket resumption looks on the wire). (In TLS 1.3 the legacy session id is always echoed for
  middlebox compatibility: ``session_id_echoed`` is reported but means nothing there.)
- ``alpn``: selected protocol from the ServerHello (TLS <= 1.2). In TLS 1.3 the selection travels in the
  encrypted EncryptedExtensions: ``alpn`` stays None and ``alpn_encrypted`` is True.
- ``ts_first_client_app_data_ns``: the first byte of the client's first application-data record after the
  handshake. TLS <= 1.2: the client's first application_data (23) record (its Finished is a handshake
  record, sent after its ChangeCipherSpec). TLS 1.3 encrypts the client's Finished (and EndOfEarlyData,
  and a client Certificate/CertificateVerify) in records that also say application_data on the wire. We
  take the client's records that start at or after the ServerHello's time, find its Finished by size (an
  encrypted Finished record is exactly 4 + hash length + 1 + AEAD tag bytes: 53 for the SHA-256 suites, 69
  for TLS_AES_256_GCM_SHA384, 45 for CCM_8) among the first 8 of them, and the first record after it is
  the first application data. When no record has that size (record padding), the first record after the
  ServerHello is taken as the Finished (the second after it when the client offered early_data and the
  first is 21 bytes: an EndOfEarlyData). So in a full 1.3 handshake it is the client's second
  application_data record after the ServerHello.
- ``handshake_round_trips``: TLS <= 1.2: 2 for a full handshake, 1 resumed; TLS 1.3: 1, plus 1 after a
  HelloRetryRequest; 0 when the server accepted a PSK and the client sent application-data records before
  the ServerHello (0-RTT attempted; whether the server accepted the early data is in the encrypted
  EncryptedExtensions and not visible). None without a ServerHello.
- ``app_records`` / ``app_bytes``: application_data (23) records and their lengths per direction (0, 1) as
  on the wire: in TLS 1.3 they include the encrypted handshake messages.
- ``exchanges``: an estimate of request/response exchanges for HTTP/1.x over TLS without keys. The
  application-data records after the handshake (client: from ``ts_first_client_app_data_ns`` on; server:
  TLS <= 1.2 all, TLS 1.3 those starting at or after the client's Finished) of both directions are ordered
  by first-byte time and cut into bursts (maximal runs of one direction). A client burst and the server
  burst after it are one exchange; a server burst with no client burst before it (a TLS 1.3
  NewSessionTicket, server push) is not; a last client burst with no server burst after it is an exchange
  with no response (times None). Each exchange has its bursts' times (first byte of the first record, time
  its last record was complete) and record bytes. Meaningless for HTTP/2 or pipelined HTTP/1.1. On a
  connection captured mid-stream (no hello in either direction) all records are used, direction 0 as the
  client.
- Message times: the capture time of the packet carrying the header of the record in which the message
  starts. Record times: first byte (``ts_at``) and completion (``done_at``, Wireshark's "reassembled in").

Gaps (bytes missing from the capture): inside an application-data record they cost nothing (its length is
known, the payload is skipped anyway). Inside a handshake record they lose that record's messages
(``tls_gap``), framing continues after it. Over a record header the framing is lost (``tls_gap``) and the
direction resynchronises: it looks for a record header (type 20-24, version 3.0-3.4, length <= 2^14 +
2048) whose successor, right after it, is a valid header too; found: ``tls_resync``; nothing within
``MAX_RESYNC_SCAN`` bytes: ``tls_resync_failed`` and the direction stops. A direction that does not start at
a record boundary (a connection captured mid-stream) resynchronises the same way (``tls_midstream``).
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from analyzer.flows.stream import StreamChunk, read_after_carry
from analyzer.tls.messages import (
    CERTIFICATE,
    CERTIFICATE_REQUEST,
    CLIENT_HELLO,
    HELLO_RETRY_REQUEST_DRAFT,
    KNOWN_HANDSHAKE_TYPES,
    SERVER_HELLO,
    SERVER_HELLO_DONE,
    SERVER_KEY_EXCHANGE,
    TLS13_FINISHED_RECORD_LEN,
    ClientHello,
    ServerHello,
    alert_name,
    cipher_suite_name,
    is_tls13,
    parse_client_hello,
    parse_server_hello,
    parse_sslv2_client_hello,
    version_name,
)

CLIENT = 0
SERVER = 1

CT_CHANGE_CIPHER_SPEC = 20
CT_ALERT = 21
CT_HANDSHAKE = 22
CT_APPLICATION_DATA = 23
CT_HEARTBEAT = 24

# Limits (named, as h11 does, with where they come from)
MAX_RECORD_LEN = (1 << 14) + 2048  # RFC 5246 §6.2.3 TLSCiphertext.length bound (TLS 1.3's is smaller)
MAX_HELLO_BYTES = 1 << 17  # a hello we buffer; real ones are < 4 KiB even with post-quantum key shares
MAX_EVENTS = 256  # handshake / CCS / alert events kept per direction (renegotiation storms stop here)
MAX_HELLOS = 8  # hellos kept per direction (HRR gives 2; more is odd)
MAX_APP_RECORDS = 1 << 18  # application-data record times kept per direction (24 bytes each: 6 MiB)
MAX_RESYNC_SCAN = 1 << 20  # bytes searched for record framing before giving up on a direction
TLS13_FLIGHT_RECORDS = 8  # client records after the ServerHello searched for its encrypted Finished
END_OF_EARLY_DATA_RECORD_LEN = 4 + 1 + 16  # encrypted EndOfEarlyData with a 16-byte tag

# per-direction modes
_RECORDS = 0  # at a record boundary (or inside a record being skipped)
_RESYNC = 1  # looking for record framing again
_STOPPED = 2  # gave up on this direction
_ENDED = 3  # FIN or capture end reached

# event kinds (stream order, per direction)
EV_HANDSHAKE = 0  # value: handshake message type
EV_CCS = 1
EV_ENCRYPTED_HANDSHAKE = 2  # a handshake record after ChangeCipherSpec (TLS <= 1.2 Finished, renegotiation)
EV_ALERT = 3  # value: level << 8 | description (plaintext alerts only)

_HEADER_RE = re.compile(rb"[\x14-\x18]\x03[\x00-\x04]")


def _valid_header(t: int, major: int, minor: int, length: int) -> bool:
    return CT_CHANGE_CIPHER_SPEC <= t <= CT_HEARTBEAT and major == 3 and minor <= 4 and length <= MAX_RECORD_LEN


def _sslv2_hello_header(b: bytes) -> bool:
    """SSLv2-format ClientHello: 2-byte length with the high bit set, msg_type 1, version 0.2 or 3.x."""
    return len(b) >= 5 and b[0] & 0x80 != 0 and b[2] == 1 and (b[3] == 3 or (b[3] == 0 and b[4] == 2)) and (
        ((b[0] & 0x7F) << 8 | b[1]) >= 9)


def looks_like_tls(prefix: bytes) -> bool:
    """Cheap test on a stream's first bytes: a TLS record header (any content type, version 3.0-3.4,
    plausible length; a handshake record must hold a ClientHello or ServerHello when the 6th byte is
    there) or an SSLv2-compatible ClientHello. Needs at least 3 bytes; False for anything shorter."""
    if len(prefix) < 3:
        return False
    if _sslv2_hello_header(prefix):
        return True
    t = prefix[0]
    if not (CT_CHANGE_CIPHER_SPEC <= t <= CT_HEARTBEAT and prefix[1] == 3 and prefix[2] <= 4):
        return False
    if len(prefix) >= 5 and ((prefix[3] << 8) | prefix[4]) > MAX_RECORD_LEN:
        return False
    return not (t == CT_HANDSHAKE and len(prefix) >= 6 and prefix[5] not in (CLIENT_HELLO, SERVER_HELLO))


def _plaintext_hello(payload: bytes) -> bool:
    """Does a handshake record sent after this direction's ChangeCipherSpec hold a plaintext hello?

    TLS 1.3 allows a ChangeCipherSpec before the second ClientHello (after a HelloRetryRequest) and before
    the real ServerHello; TLS <= 1.2 encrypts everything after it. A random ciphertext passes this with
    probability ~1e-9 (type 1/2, version byte 3 or 0x7f, length in range)."""
    if len(payload) < 6 or payload[0] not in (CLIENT_HELLO, SERVER_HELLO) or payload[4] not in (3, 0x7F):
        return False
    n = (payload[1] << 16) | (payload[2] << 8) | payload[3]
    return 38 <= n <= MAX_HELLO_BYTES


@dataclass(frozen=True, slots=True)
class Record:
    """A whole TLS record handed to a decryptor: outer type and version, payload (None when bytes of it are
    missing from the capture), first-byte and completion times, and its stream offset (header included)."""

    content_type: int
    version: int
    payload: bytes | None
    ts_ns: int
    done_ns: int
    offset: int


RecordSink = Callable[[Record], None]


@dataclass(frozen=True, slots=True)
class TlsExchange:
    """One estimated request/response exchange: a client burst of application-data records and the
    server burst after it (None when the capture has none)."""

    ts_request_start_ns: int
    ts_request_end_ns: int
    request_bytes: int
    request_records: int
    ts_response_start_ns: int | None
    ts_response_end_ns: int | None
    response_bytes: int
    response_records: int
    response_offset: int = -1  # server stream offsets of the response burst: first record header …
    response_end_offset: int = -1  # … and the end of its last record


@dataclass(frozen=True, slots=True)
class TlsFacts:
    """What a passive observer can tell about one connection's TLS (see the module docstring)."""

    tls: bool  # a TLS record (or SSLv2 ClientHello) was seen
    version: str | None
    version_id: int | None
    sni: str | None
    alpn_offered: tuple[str, ...]
    alpn: str | None
    alpn_encrypted: bool  # TLS 1.3: the selection is in EncryptedExtensions
    cipher_suite: str | None
    cipher_suite_id: int | None
    session_id_echoed: bool
    ticket_offered: bool
    psk_offered: bool
    resumed: bool | None
    abbreviated_handshake: bool
    hello_retry: bool
    early_data: bool  # the ClientHello carries early_data (0-RTT intended)
    early_data_records: int  # TLS 1.3: client application-data records before the ServerHello
    ts_client_hello_ns: int | None
    ts_server_hello_ns: int | None
    ts_first_client_app_data_ns: int | None
    handshake_round_trips: int | None
    app_records: tuple[int, int]  # per direction (0, 1)
    app_bytes: tuple[int, int]
    exchanges_estimate: int
    exchange_bounds: tuple[tuple[int, int], ...]  # (request start, response end or request end)
    exchanges: tuple[TlsExchange, ...]
    client_hellos: int
    server_hellos: int  # including HelloRetryRequests
    sslv2_client_hello: bool
    certificate_seen: bool  # a plaintext Certificate from the server (TLS <= 1.2)
    ech_offered: bool
    alert: str | None  # the first plaintext alert, e.g. "fatal handshake_failure"
    roles_swapped: bool  # the ClientHello came from direction 1


class _Side:
    """One direction: record framing, handshake reassembly, and what it saw (in stream order)."""

    __slots__ = (
        "anomalies", "app_bytes", "app_count", "app_end", "app_len", "app_off", "app_start", "carry", "carry_ts",
        "ccs_seen", "events", "hellos", "hs_buf", "hs_skip", "hs_ts", "last_ts", "mode", "on_record", "pos",
        "rec_app", "rec_buf", "rec_len", "rec_ts", "rec_type", "rec_version", "records", "resync_from",
        "resync_scanned", "role", "skip_end", "sslv2",
    )

    def __init__(self, role: int) -> None:
        self.role = role
        self.pos: int | None = None  # next stream offset to parse
        self.carry = b""  # bytes from ``pos`` kept across chunks (incomplete header or handshake record)
        self.carry_ts = 0
        self.mode = _RECORDS
        self.skip_end = -1  # stream offset where the record being skipped ends (-1: none)
        self.rec_ts = 0
        self.rec_len = 0
        self.rec_app = False
        self.ccs_seen = False
        self.hs_buf = bytearray()
        self.hs_ts = 0
        self.hs_skip = 0  # bytes of a handshake message body still to drop (messages we do not decode)
        self.hellos: list[tuple[int, ClientHello | ServerHello]] = []
        self.events: list[tuple[int, int, int]] = []  # (kind, value, ts_ns)
        self.app_start = array("q")
        self.app_end = array("q")
        self.app_len = array("q")
        self.app_off = array("q")  # stream offset of each record's header
        self.app_count = 0
        self.app_bytes = 0
        self.records = 0
        self.sslv2 = False
        self.resync_from = 0
        self.resync_scanned = 0
        self.last_ts = 0
        self.anomalies: list[tuple[int, str, str]] = []
        # decryption: every application-data, alert and (after ChangeCipherSpec) handshake record, whole
        self.on_record: RecordSink | None = None
        self.rec_type = 0
        self.rec_version = 0
        self.rec_buf: bytearray | None = None  # the record's payload being collected (None: not collecting)

    # ---------------------------------------------------------------------------------------------- API
    def feed(self, chunk: StreamChunk) -> None:
        if self.mode >= _STOPPED:
            return
        if len(chunk):
            self.last_ts = int(chunk.ts_ns[-1])
            if self.pos is None:
                self.pos = int(chunk.start[0])
            self._run(chunk)
        if chunk.final or chunk.eof >= 0:
            self._end(chunk)

    # ------------------------------------------------------------------------------------------ helpers
    def _anomaly(self, ts: int, name: str, detail: str) -> None:
        self.anomalies.append((ts, name, detail))

    def _event(self, kind: int, value: int, ts: int) -> None:
        if len(self.events) < MAX_EVENTS:
            self.events.append((kind, value, ts))

    def _read(self, chunk: StreamChunk, off: int, limit: int) -> bytes:
        return read_after_carry(self.carry, chunk, off, limit)

    def _ts(self, chunk: StreamChunk, off: int) -> int:
        assert self.pos is not None
        if self.carry and off < self.pos + len(self.carry):
            return self.carry_ts
        return chunk.ts_at(off) if len(chunk) else self.last_ts

    def _consume(self, n: int) -> None:
        assert self.pos is not None
        self.pos += n
        if self.carry:
            self.carry = self.carry[n:]

    def _run(self, chunk: StreamChunk) -> None:
        while self.mode < _STOPPED:
            if self.skip_end >= 0:
                if not self._skip(chunk):
                    return
            elif self.mode == _RESYNC:
                if not self._resync(chunk):
                    return
            elif not self._record(chunk):
                return

    # ------------------------------------------------------------------------------------------ records
    def _record(self, chunk: StreamChunk) -> bool:
        """Parse the record at ``pos``. False when the chunk has no more bytes for it."""
        pos = self.pos
        assert pos is not None
        hdr = self._read(chunk, pos, 5)
        if len(hdr) < 5:
            return self._short(chunk, hdr, "record header")
        t = hdr[0]
        if self.records == 0 and t & 0x80 and _sslv2_hello_header(hdr):
            n = 2 + (((t & 0x7F) << 8) | hdr[1])
            rec = self._read(chunk, pos, n)
            if len(rec) < n:
                return self._short(chunk, rec, "SSLv2 ClientHello", pos + n)
            ts = self._ts(chunk, pos)
            self.records += 1
            self.sslv2 = True
            self._consume(n)
            ch, err = parse_sslv2_client_hello(rec)
            if err:
                self._anomaly(ts, "tls_bad_hello", err)
            self._event(EV_HANDSHAKE, CLIENT_HELLO, ts)
            self.hellos.append((ts, ch))
            return True
        length = (hdr[3] << 8) | hdr[4]
        ts = self._ts(chunk, pos)
        if not _valid_header(t, hdr[1], hdr[2], length):
            if self.records == 0:
                self._lose_framing(ts, pos, "tls_midstream",
                                   f"the stream does not start with a TLS record ({hdr.hex()}); resynchronising")
            else:
                self._lose_framing(ts, pos + 1, "tls_bad_record",
                                   f"invalid record header {hdr.hex()} at offset {pos}; resynchronising")
            return True
        self.records += 1
        end = pos + 5 + length
        self.rec_type, self.rec_version = t, (hdr[1] << 8) | hdr[2]
        if t == CT_APPLICATION_DATA:
            self._consume(5)
            self._begin_skip(end, ts, length, True)
            return True
        if t == CT_HANDSHAKE or (t == CT_ALERT and length == 2):
            rec = self._read(chunk, pos, 5 + length)
            if len(rec) < 5 + length:
                return self._short(chunk, rec, "handshake record" if t == CT_HANDSHAKE else "alert", end)
            self._consume(5 + length)
            payload = rec[5:]
            if t == CT_ALERT:
                self._event(EV_ALERT, (payload[0] << 8) | payload[1], ts)
            elif self.ccs_seen and not _plaintext_hello(payload):
                self._event(EV_ENCRYPTED_HANDSHAKE, 0, ts)
                if self.on_record is not None:
                    self.on_record(Record(t, self.rec_version, payload, ts, self._done(chunk, end), pos))
            else:
                self._handshake(payload, ts)
            return True
        if t == CT_CHANGE_CIPHER_SPEC:
            self.ccs_seen = True
            self._event(EV_CCS, 0, ts)
        self._consume(5)  # encrypted alert, ChangeCipherSpec, heartbeat: skip the payload
        self._begin_skip(end, ts, length, False)
        return True

    def _begin_skip(self, end: int, ts: int, length: int, app: bool) -> None:
        self.skip_end = end
        self.rec_ts = ts
        self.rec_len = length
        self.rec_app = app
        collect = self.on_record is not None and self.rec_type in (CT_APPLICATION_DATA, CT_ALERT)
        self.rec_buf = bytearray() if collect else None

    def _done(self, chunk: StreamChunk, end: int) -> int:
        return chunk.done_at(end) if len(chunk) else self.last_ts

    def _skip(self, chunk: StreamChunk) -> bool:
        """Move ``pos`` to the end of the record being skipped (gaps inside it cost nothing)."""
        end = self.skip_end
        assert self.pos is not None
        if self.carry:
            if self.rec_buf is not None:
                self.rec_buf += self.carry[: end - self.pos]
            self._consume(min(len(self.carry), end - self.pos))
        if self.pos < end:
            last = chunk.data_end if len(chunk) else -1
            if self.rec_buf is not None:
                self._collect(chunk, min(end, last))
            if last < end:
                if last > self.pos:
                    self.pos = last
                return False
            self.pos = end
            done = chunk.done_at(end)
        else:
            done = self.carry_ts
        self._end_record(done)
        return True

    def _collect(self, chunk: StreamChunk, stop: int) -> None:
        """Append the record's bytes from ``pos`` to ``stop``; a gap makes the record unusable."""
        assert self.pos is not None and self.rec_buf is not None
        if stop <= self.pos:
            return
        data = chunk.read(self.pos, stop - self.pos)
        if len(data) < stop - self.pos:
            self.rec_buf = None  # bytes missing from the capture: this record cannot be decrypted
            return
        self.rec_buf += data

    def _end_record(self, done_ns: int) -> None:
        record_off = self.skip_end - 5 - self.rec_len
        self.skip_end = -1
        if self.on_record is not None and self.rec_type in (CT_APPLICATION_DATA, CT_ALERT):
            payload = bytes(self.rec_buf) if self.rec_buf is not None and len(self.rec_buf) == self.rec_len else None
            self.rec_buf = None
            self.on_record(Record(self.rec_type, self.rec_version, payload, self.rec_ts, max(done_ns, self.rec_ts),
                                  record_off))
        if not self.rec_app:
            return
        self.app_count += 1
        self.app_bytes += self.rec_len
        if len(self.app_start) < MAX_APP_RECORDS:
            self.app_start.append(self.rec_ts)
            self.app_end.append(max(done_ns, self.rec_ts))
            self.app_len.append(self.rec_len)
            self.app_off.append(record_off)
            if len(self.app_start) == MAX_APP_RECORDS:
                self._anomaly(self.rec_ts, "tls_record_cap",
                              f"more than {MAX_APP_RECORDS} application-data records: later ones are counted only")

    def _short(self, chunk: StreamChunk, have: bytes, what: str, record_end: int | None = None) -> bool:
        """Fewer contiguous bytes than needed at ``pos``: a gap (handle it) or the chunk's end (keep them)."""
        pos = self.pos
        assert pos is not None
        cont_end = pos + len(have)
        nxt = chunk.next_data(cont_end) if len(chunk) else -1
        if nxt > cont_end:
            ts = chunk.ts_at(nxt)
            self.carry = b""
            self.hs_buf.clear()
            self.hs_skip = 0
            if record_end is not None and nxt < record_end:
                self._anomaly(ts, "tls_gap", f"{nxt - cont_end} bytes missing inside a {what} at offset "
                                             f"{cont_end}: its contents are lost")
                self.pos = cont_end
                self._begin_skip(record_end, self._ts(chunk, pos), 0, False)
                return True
            self._anomaly(ts, "tls_gap", f"{nxt - cont_end} bytes missing at offset {cont_end} ({what}); "
                                         "resynchronising")
            self.pos = nxt
            self.resync_from = nxt
            self.mode = _RESYNC
            return True
        if have:
            if not self.carry:
                self.carry_ts = chunk.ts_at(pos) if len(chunk) else self.last_ts
            self.carry = have
        return False

    def _lose_framing(self, ts: int, resume: int, name: str, detail: str) -> None:
        self._anomaly(ts, name, detail)
        assert self.pos is not None
        self._consume(resume - self.pos)
        self.resync_from = self.pos
        self.mode = _RESYNC
        self.hs_buf.clear()
        self.hs_skip = 0

    def _resync(self, chunk: StreamChunk) -> bool:
        """Look for two chained valid record headers from ``pos``. False when the chunk is exhausted."""
        assert self.pos is not None
        if self.carry:
            after = self.pos + len(self.carry)
            cont = chunk.contiguous_end(after) if len(chunk) else after
            data = self.carry + (chunk.read(after, cont - after) if cont > after else b"")
        else:
            nd = chunk.next_data(self.pos) if len(chunk) else -1
            if nd < 0:
                return False
            self.pos = nd
            data = chunk.read(nd, chunk.contiguous_end(nd) - nd)
            self.carry_ts = chunk.ts_at(nd)
        base = self.pos
        more_may_come = not chunk.final and (not len(chunk) or chunk.data_end == base + len(data))
        for m in _HEADER_RE.finditer(data):
            i = m.start()
            if i + 5 > len(data):
                if more_may_come:
                    return self._resync_wait(chunk, data, i)
                break
            length = (data[i + 3] << 8) | data[i + 4]
            if length > MAX_RECORD_LEN:
                continue
            j = i + 5 + length
            if j + 5 <= len(data):
                if _valid_header(data[j], data[j + 1], data[j + 2], (data[j + 3] << 8) | data[j + 4]):
                    self._resync_found(chunk, data, i)
                    return True
                continue
            if more_may_come:
                return self._resync_wait(chunk, data, i)
        self.resync_scanned += len(data)
        self.carry = b""
        self.pos = base + len(data)
        if self.resync_scanned > MAX_RESYNC_SCAN:
            self._anomaly(self._ts(chunk, self.pos), "tls_resync_failed",
                          f"no TLS record framing in {self.resync_scanned} bytes; direction abandoned")
            self.mode = _STOPPED
            return False
        return not more_may_come

    def _resync_wait(self, chunk: StreamChunk, data: bytes, i: int) -> bool:
        assert self.pos is not None
        self.resync_scanned += i
        if i >= len(self.carry):
            self.carry_ts = chunk.ts_at(self.pos + i)
        self.carry = data[i:]  # all of it: the next chunk starts after these bytes
        self.pos += i
        return False

    def _resync_found(self, chunk: StreamChunk, data: bytes, i: int) -> None:
        assert self.pos is not None
        off = self.pos + i
        if i < len(self.carry):
            self.carry = self.carry[i:]
        else:
            self.carry = b""
        self.pos = off
        self.mode = _RECORDS
        self.resync_scanned = 0
        self._anomaly(self._ts(chunk, off), "tls_resync",
                      f"record framing found again at offset {off} after {off - self.resync_from} bytes")

    # ---------------------------------------------------------------------------------------- handshake
    def _handshake(self, payload: bytes, ts: int) -> None:
        """Handshake messages from one record's payload (continuing a message begun in earlier records)."""
        if self.hs_skip:
            k = min(self.hs_skip, len(payload))
            self.hs_skip -= k
            payload = payload[k:]
            if not payload:
                return
        buf = self.hs_buf
        if not buf:
            self.hs_ts = ts
        buf += payload
        while len(buf) >= 4:
            t = buf[0]
            n = (buf[1] << 16) | (buf[2] << 8) | buf[3]
            mts = self.hs_ts
            if t not in KNOWN_HANDSHAKE_TYPES:
                self._anomaly(mts, "tls_bad_handshake", f"unknown handshake message type {t} ({n} bytes)")
                buf.clear()
                return
            if t in (CLIENT_HELLO, SERVER_HELLO, HELLO_RETRY_REQUEST_DRAFT):
                if n > MAX_HELLO_BYTES:
                    self._anomaly(mts, "tls_bad_handshake", f"hello message of {n} bytes (limit {MAX_HELLO_BYTES})")
                    buf.clear()
                    return
                if len(buf) < 4 + n:
                    return  # the rest comes in the next handshake record
                body = bytes(buf[4: 4 + n])
                del buf[: 4 + n]
                self._event(EV_HANDSHAKE, t, mts)
                self._hello(t, body, mts)
            else:
                self._event(EV_HANDSHAKE, t, mts)
                if len(buf) >= 4 + n:
                    del buf[: 4 + n]
                else:
                    self.hs_skip = 4 + n - len(buf)
                    buf.clear()
            self.hs_ts = ts  # what remains of the buffer came with the current record

    def _hello(self, t: int, body: bytes, ts: int) -> None:
        hello: ClientHello | ServerHello
        if t == CLIENT_HELLO:
            hello, err = parse_client_hello(body)
        else:
            hello, err = parse_server_hello(body, hrr_message=t == HELLO_RETRY_REQUEST_DRAFT)
        if err:
            self._anomaly(ts, "tls_bad_hello", err)
        if len(self.hellos) < MAX_HELLOS:
            self.hellos.append((ts, hello))

    def _end(self, chunk: StreamChunk) -> None:
        """FIN reached (``eof``) or nothing more will come (``final``)."""
        if self.mode == _RECORDS and self.records and (self.skip_end >= 0 or self.carry) and chunk.eof >= 0:
            assert self.pos is not None
            self._anomaly(self.last_ts, "tls_truncated_record",
                          f"the sender closed inside a record (offset {self.pos}, FIN at {chunk.eof})")
        if self.skip_end >= 0:
            self._end_record(self.last_ts)
        self.carry = b""
        self.mode = _ENDED


def _abbreviated(events: list[tuple[int, int, int]]) -> bool:
    """The server's ChangeCipherSpec follows its ServerHello without Certificate/ServerKeyExchange/
    CertificateRequest/ServerHelloDone in between (TLS <= 1.2 resumption)."""
    seen_hello = False
    for kind, value, _ in events:
        if not seen_hello:
            seen_hello = kind == EV_HANDSHAKE and value == SERVER_HELLO
        elif kind == EV_HANDSHAKE and value in (CERTIFICATE, SERVER_KEY_EXCHANGE, CERTIFICATE_REQUEST,
                                                SERVER_HELLO_DONE):
            return False
        elif kind == EV_CCS:
            return True
    return False


Records = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # first-byte time, done time, length, offset


def _records(side: _Side) -> Records:
    return (np.frombuffer(side.app_start, dtype=np.int64), np.frombuffer(side.app_end, dtype=np.int64),
            np.frombuffer(side.app_len, dtype=np.int64), np.frombuffer(side.app_off, dtype=np.int64))


def _take(rec: Records, keep: np.ndarray | slice) -> Records:
    return (rec[0][keep], rec[1][keep], rec[2][keep], rec[3][keep])


def _bursts(client: Records, server: Records) -> tuple[TlsExchange, ...]:
    """Client burst + following server burst = one exchange (records ordered by first-byte time)."""
    nc, ns = len(client[0]), len(server[0])
    if nc == 0:
        return ()
    starts = np.concatenate([client[0], server[0]])
    ends = np.concatenate([client[1], server[1]])
    lens = np.concatenate([client[2], server[2]])
    offs = np.concatenate([client[3], server[3]])
    who = np.concatenate([np.zeros(nc, dtype=np.int8), np.ones(ns, dtype=np.int8)])
    order = np.argsort(starts, kind="stable")  # ties: the client's record first (it was concatenated first)
    starts, ends, lens, offs, who = starts[order], ends[order], lens[order], offs[order], who[order]
    change = np.ones(len(who), dtype=bool)
    change[1:] = who[1:] != who[:-1]
    first = np.nonzero(change)[0]
    run_who = who[first].tolist()
    run_start = starts[first].tolist()
    run_end = np.maximum.reduceat(ends, first).tolist()
    run_bytes = np.add.reduceat(lens, first).tolist()
    run_n = np.diff(np.append(first, len(who))).tolist()
    run_off = np.minimum.reduceat(offs, first).tolist()
    run_off_end = np.maximum.reduceat(offs + 5 + lens, first).tolist()
    out: list[TlsExchange] = []
    k = 0
    while k < len(run_who):
        if run_who[k] != 0:
            k += 1  # a server burst with no request before it
            continue
        if k + 1 < len(run_who):
            out.append(TlsExchange(run_start[k], run_end[k], run_bytes[k], run_n[k],
                                   run_start[k + 1], run_end[k + 1], run_bytes[k + 1], run_n[k + 1],
                                   run_off[k + 1], run_off_end[k + 1]))
            k += 2
        else:
            out.append(TlsExchange(run_start[k], run_end[k], run_bytes[k], run_n[k], None, None, 0, 0))
            k += 1
    return tuple(out)


def _bound(sink: Callable[[int, Record], None], direction: int) -> RecordSink:
    def deliver(record: Record) -> None:
        sink(direction, record)
    return deliver


class TlsObserver:
    """Both directions of one TCP connection. ``feed(direction, chunk)`` in any interleaving of the two
    directions (each in stream order); ``facts()`` and ``anomalies()`` at any time."""

    __slots__ = ("_sides",)

    def __init__(self, on_record: Callable[[int, Record], None] | None = None) -> None:
        """``on_record(direction, record)``, when given, receives every application-data and alert record,
        and every handshake record after that direction's ChangeCipherSpec, whole (for decryption)."""
        self._sides = (_Side(CLIENT), _Side(SERVER))
        if on_record is not None:
            for d, side in enumerate(self._sides):
                side.on_record = _bound(on_record, d)

    def feed(self, direction: int, chunk: StreamChunk) -> None:
        self._sides[1 if direction else 0].feed(chunk)

    def anomalies(self) -> list[tuple[int, str, str]]:
        return self._sides[0].anomalies + self._sides[1].anomalies

    def stop_records(self) -> None:
        """Stop handing records to ``on_record`` (decryption given up: no more payload copies)."""
        for side in self._sides:
            side.on_record = None
            side.rec_buf = None

    def hellos(self) -> tuple[ClientHello | None, ServerHello | None, int]:
        """The first ClientHello and the first real ServerHello seen (cheap: no facts computed), and the
        stream direction the ClientHello came from (0 unless the roles were swapped)."""
        s0, s1 = self._sides
        c_dir = 1 if (not any(isinstance(h, ClientHello) for _, h in s0.hellos)
                      and any(isinstance(h, ClientHello) for _, h in s1.hellos)) else 0
        ch = next((h for _, h in self._sides[c_dir].hellos if isinstance(h, ClientHello)), None)
        sh = next((h for _, h in self._sides[1 - c_dir].hellos if isinstance(h, ServerHello) and not h.hello_retry),
                  None)
        return ch, sh, c_dir

    def facts(self) -> TlsFacts:
        s0, s1 = self._sides
        c_dir = 1 if (not any(isinstance(h, ClientHello) for _, h in s0.hellos)
                      and any(isinstance(h, ClientHello) for _, h in s1.hellos)) else 0
        cs, ss = self._sides[c_dir], self._sides[1 - c_dir]
        client_hellos = [(ts, h) for ts, h in cs.hellos if isinstance(h, ClientHello)]
        server_hellos = [(ts, h) for ts, h in ss.hellos if isinstance(h, ServerHello)]
        ch_ts, ch = client_hellos[0] if client_hellos else (None, None)
        hrr = [h for _, h in server_hellos if h.hello_retry]
        real = [(ts, h) for ts, h in server_hellos if not h.hello_retry]
        sh_ts, sh = real[0] if real else (None, None)
        chosen = sh if sh is not None else (hrr[0] if hrr else None)
        version_id = chosen.version if chosen is not None else None
        tls13 = is_tls13(version_id)
        cipher = chosen.cipher_suite if chosen is not None else None
        echoed = bool(sh is not None and ch is not None and sh.session_id and sh.session_id == ch.session_id)
        abbreviated = False
        resumed: bool | None = None
        if sh is not None:
            if tls13:
                resumed = sh.psk_accepted
            else:
                abbreviated = _abbreviated(ss.events)
                resumed = echoed or abbreviated

        crec, srec = _records(cs), _records(ss)
        c_start, c_len = crec[0], crec[2]
        first_app: int | None = None
        finished_ts: int | None = None
        early_records = 0
        if sh is not None and sh_ts is not None:
            n = len(c_start)
            if tls13:
                after = np.nonzero(c_start >= sh_ts)[0]
                k0 = int(after[0]) if len(after) else n
                early_records = int(np.count_nonzero(c_start[:k0] < sh_ts))
                fin: int | None = None
                fin_len = TLS13_FINISHED_RECORD_LEN.get(cipher) if cipher is not None else None
                if fin_len is not None:
                    window = c_len[k0: k0 + TLS13_FLIGHT_RECORDS].tolist()
                    if fin_len in window:
                        fin = k0 + window.index(fin_len)
                if fin is None and k0 < n:
                    fin = k0
                    if (ch is not None and ch.early_data and k0 + 1 < n
                            and int(c_len[k0]) == END_OF_EARLY_DATA_RECORD_LEN):
                        fin = k0 + 1
                if fin is not None:
                    finished_ts = int(c_start[fin])
                    if fin + 1 < n:
                        first_app = fin + 1
            elif n:
                first_app = 0
        exchanges: tuple[TlsExchange, ...] = ()
        if first_app is not None:
            client = _take(crec, slice(first_app, None))
            server = srec
            if finished_ts is not None:
                server = _take(srec, srec[0] >= finished_ts)
            exchanges = _bursts(client, server)
        elif not client_hellos and not server_hellos:  # mid-stream: no handshake seen at all
            exchanges = _bursts(_records(s0), _records(s1))

        if sh is None:
            rtts = None
        elif tls13:
            rtts = 0 if (resumed and early_records > 0) else 1 + (1 if hrr else 0)
        else:
            rtts = 1 if resumed else 2
        alert = None
        alert_ts = None
        for side in self._sides:
            for kind, value, ts in side.events:
                if kind == EV_ALERT and (alert_ts is None or ts < alert_ts):
                    alert, alert_ts = alert_name(value >> 8, value & 0xFF), ts
                    break
        return TlsFacts(
            tls=s0.records > 0 or s1.records > 0,
            version=version_name(version_id),
            version_id=version_id,
            sni=ch.sni if ch is not None else None,
            alpn_offered=ch.alpn if ch is not None else (),
            alpn=sh.alpn if sh is not None and not tls13 else None,
            alpn_encrypted=tls13,
            cipher_suite=cipher_suite_name(cipher),
            cipher_suite_id=cipher,
            session_id_echoed=echoed,
            ticket_offered=bool(ch is not None and ch.ticket_offered),
            psk_offered=bool(ch is not None and ch.psk_offered),
            resumed=resumed,
            abbreviated_handshake=abbreviated,
            hello_retry=bool(hrr),
            early_data=bool(ch is not None and ch.early_data),
            early_data_records=early_records,
            ts_client_hello_ns=ch_ts,
            ts_server_hello_ns=sh_ts,
            ts_first_client_app_data_ns=int(c_start[first_app]) if first_app is not None else None,
            handshake_round_trips=rtts,
            app_records=(s0.app_count, s1.app_count),
            app_bytes=(s0.app_bytes, s1.app_bytes),
            exchanges_estimate=len(exchanges),
            exchange_bounds=tuple((e.ts_request_start_ns, e.ts_response_end_ns if e.ts_response_end_ns is not None
                                   else e.ts_request_end_ns) for e in exchanges),
            exchanges=exchanges,
            client_hellos=len(client_hellos),
            server_hellos=len(server_hellos),
            sslv2_client_hello=cs.sslv2,
            certificate_seen=any(k == EV_HANDSHAKE and v == CERTIFICATE for k, v, _ in ss.events),
            ech_offered=bool(ch is not None and ch.ech),
            alert=alert,
            roles_swapped=c_dir == 1,
        )
