"""The passive QUIC observer of one UDP flow: see the package docstring for the definitions."""

from __future__ import annotations

from dataclasses import dataclass

from analyzer.quic.crypto import InitialSecrets, derive_initial_secrets, unprotect_long
from analyzer.quic.packets import (
    FRAME_CONNECTION_CLOSE,
    HANDSHAKE,
    INITIAL,
    RETRY,
    VERSION_NEG,
    ZERO_RTT,
    LongHeader,
    parse_initial_frames,
    parse_long_header,
    quic_version_name,
)
from analyzer.tls.messages import (
    CLIENT_HELLO,
    SERVER_HELLO,
    ClientHello,
    ServerHello,
    parse_client_hello,
    parse_server_hello,
    version_name,
)

C2S, S2C = 0, 1

MAX_CRYPTO_BYTES = 64 * 1024  # CRYPTO stream bytes kept per direction (reassembled prefix + pending pieces)
MAX_DECRYPTED_INITIALS = 32  # Initial packets decrypted per direction; later ones are only counted
MAX_PACKETS_PER_DATAGRAM = 32  # coalesced long-header packets parsed in one datagram
MAX_ANOMALIES = 32  # anomaly rows kept per flow (then one quic_anomaly_cap)
MAX_KEYS = 8  # cached (version, dcid, side) Initial key sets
TLS13 = 0x0304


@dataclass(frozen=True, slots=True)
class QuicFacts:
    version: int | None  # from the first long header (not Version Negotiation)
    client_dcid: bytes | None  # original destination connection id chosen by the client
    client_scid: bytes | None
    server_scid: bytes | None  # from the server's first Initial or Handshake packet, if seen
    sni: str | None
    alpn_offered: tuple[str, ...]
    alpn: str | None  # selected: None unless a server Initial carried it (QUIC's ServerHello never does)
    tls_version: str | None  # "TLS 1.3"
    client_initials: int  # Initial packets from the client (coalesced packets counted separately)
    server_initials: int
    handshake_packets: int  # long-header Handshake packets (both directions)
    zero_rtt_packets: int
    retry: bool
    version_negotiation: bool
    ts_client_initial_ns: int | None
    ts_server_first_ns: int | None  # first packet from the server
    ts_handshake_done_ns: int | None  # best effort: first short-header (1-RTT) packet from the client
    ts_server_hello_ns: int | None = None  # the server Initial carrying the start of its ServerHello (tshark)
    resumed: bool | None = None  # the ServerHello accepted a pre-shared key (None without a ServerHello)


class _CryptoStream:
    """One direction's CRYPTO stream at the Initial level: the contiguous prefix from offset 0 plus pieces
    waiting for a hole to fill. Overlaps: the first bytes received win. At most MAX_CRYPTO_BYTES are kept."""

    __slots__ = ("capped", "data", "pending", "pending_bytes")

    def __init__(self) -> None:
        self.data = bytearray()
        self.pending: list[tuple[int, bytes]] = []
        self.pending_bytes = 0
        self.capped = False

    def add(self, offset: int, chunk: bytes) -> None:
        if offset + len(chunk) > MAX_CRYPTO_BYTES:
            self.capped = True
            if offset >= MAX_CRYPTO_BYTES:
                return
            chunk = chunk[:MAX_CRYPTO_BYTES - offset]
        if not chunk:
            return
        if offset <= len(self.data):
            self._append(offset, chunk)
            self._drain()
        elif len(self.data) + self.pending_bytes + len(chunk) > MAX_CRYPTO_BYTES:
            self.capped = True
        else:
            self.pending.append((offset, chunk))
            self.pending_bytes += len(chunk)

    def _append(self, offset: int, chunk: bytes) -> None:
        have = len(self.data)
        if offset + len(chunk) > have:
            self.data += chunk[have - offset:]

    def _drain(self) -> None:
        self.pending.sort(key=lambda p: p[0])
        keep: list[tuple[int, bytes]] = []
        for offset, chunk in self.pending:
            if offset <= len(self.data):
                self._append(offset, chunk)
            else:
                keep.append((offset, chunk))
        self.pending = keep
        self.pending_bytes = sum(len(c) for _, c in keep)


class QuicObserver:
    """One UDP flow (client = the sender of the first long-header Initial). feed() in capture order.

    ``direction`` 0 is client → server, as the caller decided; any other value counts as server → client.
    Never raises: malformed input becomes ``quic_*`` anomalies.
    """

    def __init__(self) -> None:
        self._version: int | None = None
        self._client_dcid: bytes | None = None
        self._client_scid: bytes | None = None
        self._first_client_cids: tuple[bytes, bytes] | None = None  # of any client long header
        self._server_scid: bytes | None = None
        self._key_dcid: bytes | None = None  # the DCID the Initial keys derive from (client's, or Retry's SCID)
        self._keys: dict[tuple[int, bytes, bool], InitialSecrets | None] = {}
        self._largest_pn: list[int | None] = [None, None]
        self._decrypted = [0, 0]
        self._streams = (_CryptoStream(), _CryptoStream())
        self._hello_done = [False, False]
        self._client_hello: ClientHello | None = None
        self._server_hello: ServerHello | None = None
        self._client_initials = 0
        self._server_initials = 0
        self._handshake_packets = 0
        self._zero_rtt_packets = 0
        self._retry = False
        self._version_negotiation = False
        self._ts_client_initial: int | None = None
        self._ts_server_first: int | None = None
        self._ts_server_hello_start: int | None = None  # first server Initial with CRYPTO at offset 0
        self._ts_handshake_done: int | None = None
        self._anomalies: list[tuple[int, str, str]] = []
        self._anomalies_capped = False

    # ------------------------------------------------------------------------------------------ public
    def feed(self, direction: int, ts_ns: int, payload: bytes) -> None:
        try:
            self._feed(C2S if direction == C2S else S2C, ts_ns, bytes(payload))
        except Exception as exc:  # a safety net: the parsers below are written not to raise
            self._anomaly(ts_ns, "quic_internal_error", f"{type(exc).__name__}: {exc}"[:200])

    def facts(self) -> QuicFacts:
        ch, sh = self._client_hello, self._server_hello
        tls_version: str | None = None
        if sh is not None and sh.version:
            tls_version = version_name(sh.version)
        elif ch is not None and TLS13 in ch.supported_versions:
            tls_version = version_name(TLS13)  # QUIC requires TLS 1.3 (RFC 9001 §4.2)
        client_dcid, client_scid = self._client_dcid, self._client_scid
        if client_dcid is None and self._first_client_cids is not None:
            client_dcid, client_scid = self._first_client_cids
        return QuicFacts(
            version=self._version,
            client_dcid=client_dcid,
            client_scid=client_scid,
            server_scid=self._server_scid,
            sni=ch.sni if ch is not None else None,
            alpn_offered=ch.alpn if ch is not None else (),
            alpn=sh.alpn if sh is not None else None,
            tls_version=tls_version,
            client_initials=self._client_initials,
            server_initials=self._server_initials,
            handshake_packets=self._handshake_packets,
            zero_rtt_packets=self._zero_rtt_packets,
            retry=self._retry,
            version_negotiation=self._version_negotiation,
            ts_client_initial_ns=self._ts_client_initial,
            ts_server_first_ns=self._ts_server_first,
            ts_handshake_done_ns=self._ts_handshake_done,
            ts_server_hello_ns=self._ts_server_hello_start if sh is not None else None,
            resumed=sh.psk_accepted if sh is not None else None,
        )

    def anomalies(self) -> list[tuple[int, str, str]]:
        return list(self._anomalies)

    # ------------------------------------------------------------------------------------------ internals
    def _anomaly(self, ts_ns: int, name: str, detail: str) -> None:
        if len(self._anomalies) < MAX_ANOMALIES:
            self._anomalies.append((ts_ns, name, detail))
        elif not self._anomalies_capped:
            self._anomalies_capped = True
            self._anomalies.append((ts_ns, "quic_anomaly_cap",
                                    f"more than {MAX_ANOMALIES} anomalies; later ones dropped"))

    def _feed(self, d: int, ts: int, payload: bytes) -> None:
        if d == S2C and self._ts_server_first is None:
            self._ts_server_first = ts
        pos, n, end = 0, 0, len(payload)
        while pos < end:
            first = payload[pos]
            if first & 0x80 == 0:
                # a short-header (1-RTT) packet, running to the end of the datagram; after a long-header
                # packet a zero byte is padding instead (a short header with a greased fixed bit, RFC 9287,
                # could start with 0x00 too: we cannot tell, and count it as padding)
                if (pos == 0 or first) and d == C2S and self._ts_handshake_done is None:
                    self._ts_handshake_done = ts
                return
            if n >= MAX_PACKETS_PER_DATAGRAM:
                self._anomaly(ts, "quic_coalesced_cap", f"more than {MAX_PACKETS_PER_DATAGRAM} packets in one datagram")
                return
            hdr, err = parse_long_header(payload, pos)
            if hdr is None:
                self._anomaly(ts, "quic_bad_header", f"{err} (packet at byte {pos} of {end})")
                return
            n += 1
            self._packet(d, ts, payload, hdr)
            if hdr.end <= pos:  # cannot happen (a header is at least 7 bytes); guards the loop anyway
                return
            pos = hdr.end

    def _packet(self, d: int, ts: int, payload: bytes, hdr: LongHeader) -> None:
        if hdr.kind == VERSION_NEG:
            if d == S2C:
                self._version_negotiation = True
            else:
                self._anomaly(ts, "quic_bad_header", "Version Negotiation packet from the client")
            return
        if self._version is None:
            self._version = hdr.version
        if d == C2S and self._first_client_cids is None:
            self._first_client_cids = (hdr.dcid, hdr.scid)
        if hdr.kind == RETRY:
            if d == S2C:
                self._retry = True
                self._key_dcid = hdr.scid  # the client's next Initials use this DCID and derive keys from it
            else:
                self._anomaly(ts, "quic_bad_header", "Retry packet from the client")
            return
        if d == S2C and self._server_scid is None:
            self._server_scid = hdr.scid
        if hdr.kind == HANDSHAKE:
            self._handshake_packets += 1
            return
        if hdr.kind == ZERO_RTT:
            self._zero_rtt_packets += 1
            if d == S2C:
                self._anomaly(ts, "quic_bad_header", "0-RTT packet from the server")
            return
        if hdr.kind != INITIAL:
            return
        if d == C2S:
            self._client_initials += 1
            if self._client_dcid is None:
                self._client_dcid, self._client_scid = hdr.dcid, hdr.scid
                self._ts_client_initial = ts
            if self._key_dcid is None:
                self._key_dcid = hdr.dcid
        else:
            self._server_initials += 1
        if self._decrypted[d] < MAX_DECRYPTED_INITIALS:
            self._decrypted[d] += 1
            self._decrypt_initial(d, ts, payload, hdr)

    def _keys_for(self, version: int, dcid: bytes, server: bool) -> InitialSecrets | None:
        k = (version, dcid, server)
        if k not in self._keys:
            if len(self._keys) >= MAX_KEYS:
                self._keys.clear()
            self._keys[k] = derive_initial_secrets(version, dcid, server)
        return self._keys[k]

    def _decrypt_initial(self, d: int, ts: int, payload: bytes, hdr: LongHeader) -> None:
        if self._key_dcid is None:
            self._anomaly(ts, "quic_decrypt_failed", "server Initial before any client Initial: no key")
            return
        packet = payload[hdr.start:hdr.end]
        pn_offset = hdr.pn_offset - hdr.start
        candidates = [self._key_dcid]
        if d == C2S and hdr.dcid != self._key_dcid:
            candidates.append(hdr.dcid)  # a Retry or a new attempt after Version Negotiation we did not see
        for dcid in candidates:
            keys = self._keys_for(hdr.version, dcid, d == S2C)
            res = unprotect_long(keys, packet, pn_offset, len(packet), self._largest_pn[d]) if keys else None
            if res is not None:
                break
        else:
            side = "client" if d == C2S else "server"
            self._anomaly(ts, "quic_decrypt_failed",
                          f"{side} Initial ({len(packet)} bytes, {quic_version_name(hdr.version)}) does not "
                          f"decrypt with keys from DCID {self._key_dcid.hex() or '(empty)'}")
            return
        self._key_dcid = dcid
        _, pn, plain = res
        largest = self._largest_pn[d]
        if largest is None or pn > largest:
            self._largest_pn[d] = pn
        frames = parse_initial_frames(plain)
        stream = self._streams[d]
        was_capped = stream.capped
        for offset, data in frames.crypto:
            if d == S2C and offset == 0 and self._ts_server_hello_start is None:
                self._ts_server_hello_start = ts
            stream.add(offset, data)
        if stream.capped and not was_capped:
            self._anomaly(ts, "quic_crypto_cap", f"CRYPTO stream beyond {MAX_CRYPTO_BYTES} bytes not kept")
        if frames.close is not None:
            ftype, code, reason = frames.close
            kind = "transport" if ftype == FRAME_CONNECTION_CLOSE else "application"
            self._anomaly(ts, "quic_connection_close",
                          f"{'client' if d == C2S else 'server'} closed in an Initial: {kind} error 0x{code:x}"
                          + (f" ({reason})" if reason else ""))
        if frames.error is not None:
            name = "quic_unknown_frame" if frames.error.startswith("frame type") else "quic_bad_frame"
            self._anomaly(ts, name, f"packet {pn}: {frames.error}")
        if not self._hello_done[d]:
            self._parse_hello(d, ts)

    def _parse_hello(self, d: int, ts: int) -> None:
        data = self._streams[d].data
        if len(data) < 4:
            return
        want = CLIENT_HELLO if d == C2S else SERVER_HELLO
        name = "quic_bad_client_hello" if d == C2S else "quic_bad_server_hello"
        if data[0] != want:
            self._hello_done[d] = True
            self._anomaly(ts, name, f"first handshake message has type {data[0]}, expected {want}")
            return
        length = int.from_bytes(data[1:4], "big")
        if 4 + length > MAX_CRYPTO_BYTES:
            self._hello_done[d] = True
            self._anomaly(ts, name, f"hello of {length} bytes exceeds the {MAX_CRYPTO_BYTES}-byte cap")
            return
        if len(data) < 4 + length:
            return  # wait for more CRYPTO data
        self._hello_done[d] = True
        body = bytes(data[4:4 + length])
        if d == C2S:
            self._client_hello, err = parse_client_hello(body)
        else:
            self._server_hello, err = parse_server_hello(body)
        if err is not None:
            self._anomaly(ts, name, err)
