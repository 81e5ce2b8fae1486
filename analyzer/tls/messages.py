"""TLS hello messages and names: ClientHello, ServerHello (and HelloRetryRequest), parsed by hand.

Only the facts a passive observer needs are extracted: versions, cipher suites, session ids, and the
extensions that tell SNI, ALPN, resumption (session ticket, pre-shared key) and 0-RTT (early_data). Parsing
is sequential over ``bytes`` with bounds checks; a message that is cut or inconsistent gives the fields read
so far plus an error string (which the observer turns into a ``tls_bad_hello`` anomaly). Nothing raises.
"""

from __future__ import annotations

from dataclasses import dataclass

# handshake message types (RFC 8446 §4, RFC 5246 §7.4, plus the draft-era hello_retry_request = 6)
CLIENT_HELLO = 1
SERVER_HELLO = 2
NEW_SESSION_TICKET = 4
END_OF_EARLY_DATA = 5
HELLO_RETRY_REQUEST_DRAFT = 6  # TLS 1.3 drafts <= 21 had a message of its own
CERTIFICATE = 11
SERVER_KEY_EXCHANGE = 12
CERTIFICATE_REQUEST = 13
SERVER_HELLO_DONE = 14
KNOWN_HANDSHAKE_TYPES = frozenset({0, 1, 2, 3, 4, 5, 6, 8, 11, 12, 13, 14, 15, 16, 20, 21, 22, 23, 24, 25, 254})

# extensions
EXT_SERVER_NAME = 0
EXT_ALPN = 16
EXT_SESSION_TICKET = 35
EXT_PRE_SHARED_KEY = 41
EXT_EARLY_DATA = 42
EXT_SUPPORTED_VERSIONS = 43
EXT_ENCRYPTED_CLIENT_HELLO = 0xFE0D

# RFC 8446 §4.1.3: a ServerHello with this random is a HelloRetryRequest (SHA-256 of "HelloRetryRequest")
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

MAX_NAMES = 64  # SNI names / ALPN protocols kept from one hello (a hello may list many; we keep the first)

_VERSION_NAMES = {0x0002: "SSL 2.0", 0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2",
                  0x0304: "TLS 1.3"}

# IANA names of the suites seen in practice (TLS 1.3, ECDHE/DHE/RSA with AES-GCM, ChaCha20, CBC, RC4, 3DES);
# any other suite is shown as hex ("0x00ff").
CIPHER_SUITES = {
    0x0000: "TLS_NULL_WITH_NULL_NULL",
    0x0001: "TLS_RSA_WITH_NULL_MD5",
    0x0002: "TLS_RSA_WITH_NULL_SHA",
    0x0004: "TLS_RSA_WITH_RC4_128_MD5",
    0x0005: "TLS_RSA_WITH_RC4_128_SHA",
    0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    0x0016: "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA",
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA",
    0x0032: "TLS_DHE_DSS_WITH_AES_128_CBC_SHA",
    0x0033: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
    0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0x0038: "TLS_DHE_DSS_WITH_AES_256_CBC_SHA",
    0x0039: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
    0x003C: "TLS_RSA_WITH_AES_128_CBC_SHA256",
    0x003D: "TLS_RSA_WITH_AES_256_CBC_SHA256",
    0x0067: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
    0x006B: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256",
    0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0x009E: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    0x009F: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    0x00FF: "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0x1304: "TLS_AES_128_CCM_SHA256",
    0x1305: "TLS_AES_128_CCM_8_SHA256",
    0x5600: "TLS_FALLBACK_SCSV",
    0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    0xC011: "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    0xC012: "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    0xC024: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    0xC028: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCAA: "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}

# TLS 1.3: hash length of each suite's HKDF hash and AEAD tag length, to know the size of an encrypted
# Finished record (4-byte header + verify_data (= hash length) + 1 inner content type + tag).
TLS13_FINISHED_RECORD_LEN = {0x1301: 4 + 32 + 1 + 16, 0x1302: 4 + 48 + 1 + 16, 0x1303: 4 + 32 + 1 + 16,
                             0x1304: 4 + 32 + 1 + 16, 0x1305: 4 + 32 + 1 + 8}

ALERT_DESCRIPTIONS = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow",
    40: "handshake_failure", 42: "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked",
    45: "certificate_expired", 46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca",
    49: "access_denied", 50: "decode_error", 51: "decrypt_error", 70: "protocol_version",
    71: "insufficient_security", 80: "internal_error", 86: "inappropriate_fallback", 90: "user_canceled",
    100: "no_renegotiation", 109: "missing_extension", 110: "unsupported_extension", 112: "unrecognized_name",
    113: "bad_certificate_status_response", 115: "unknown_psk_identity", 116: "certificate_required",
    120: "no_application_protocol",
}


def version_name(v: int | None) -> str | None:
    """"TLS 1.2", "TLS 1.3", "TLS 1.3 draft-19" (0x7f13), or hex for anything else."""
    if v is None:
        return None
    name = _VERSION_NAMES.get(v)
    if name is not None:
        return name
    if v >> 8 == 0x7F:
        return f"TLS 1.3 draft-{v & 0xFF}"
    if v >> 8 == 0xFB:  # Facebook's TLS 1.3 drafts (Fizz)
        return f"TLS 1.3 draft-{v & 0xFF} (fb)"
    return f"0x{v:04x}"


def is_tls13(v: int | None) -> bool:
    return v is not None and (v == 0x0304 or v >> 8 in (0x7F, 0xFB))


def cipher_suite_name(cs: int | None) -> str | None:
    if cs is None:
        return None
    return CIPHER_SUITES.get(cs, f"0x{cs:04x}")


def alert_name(level: int, desc: int) -> str:
    lvl = {1: "warning", 2: "fatal"}.get(level, f"level{level}")
    return f"{lvl} {ALERT_DESCRIPTIONS.get(desc, str(desc))}"


@dataclass(slots=True)
class ClientHello:
    legacy_version: int = 0
    random: bytes = b""
    session_id: bytes = b""
    cipher_suites: tuple[int, ...] = ()
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    supported_versions: tuple[int, ...] = ()
    ticket_offered: bool = False  # a non-empty session_ticket extension (RFC 5077): resumption by ticket
    psk_offered: bool = False  # pre_shared_key extension (TLS 1.3 resumption or external PSK)
    early_data: bool = False  # early_data extension: the client intends to send 0-RTT data
    ech: bool = False  # encrypted_client_hello extension (the SNI seen is the outer one)
    sslv2: bool = False  # SSLv2-compatible record format (RFC 5246 appendix E.2)
    extensions: tuple[int, ...] = ()


@dataclass(slots=True)
class ServerHello:
    legacy_version: int = 0
    random: bytes = b""
    session_id: bytes = b""
    cipher_suite: int | None = None
    selected_version: int | None = None  # from supported_versions (TLS 1.3)
    alpn: str | None = None  # only in TLS <= 1.2 (1.3 selects ALPN in the encrypted EncryptedExtensions)
    psk_accepted: bool = False  # pre_shared_key extension in the ServerHello (TLS 1.3 resumption)
    ticket_ext: bool = False  # session_ticket extension: the server will send a NewSessionTicket (<= 1.2)
    hello_retry: bool = False
    extensions: tuple[int, ...] = ()

    @property
    def version(self) -> int:
        return self.selected_version if self.selected_version is not None else self.legacy_version


class _Reader:
    """Bounds-checked reads over ``bytes``; ``ok`` goes False at the first short read and stays False."""

    __slots__ = ("data", "end", "ok", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else min(end, len(data))
        self.ok = True

    def left(self) -> int:
        return self.end - self.pos

    def u8(self) -> int:
        if self.pos + 1 > self.end:
            self.ok = False
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def u16(self) -> int:
        if self.pos + 2 > self.end:
            self.ok = False
            return 0
        self.pos += 2
        return (self.data[self.pos - 2] << 8) | self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            self.ok = False
            self.pos = self.end
            return b""
        self.pos += n
        return self.data[self.pos - n: self.pos]


def _extensions(r: _Reader) -> list[tuple[int, bytes]] | None:
    """The extension block at ``r`` (absent = empty list); None when it is malformed."""
    if r.left() == 0:
        return []
    total = r.u16()
    if not r.ok or total > r.left():
        return None
    out: list[tuple[int, bytes]] = []
    er = _Reader(r.data, r.pos, r.pos + total)
    while er.left() > 0:
        et = er.u16()
        body = er.take(er.u16())
        if not er.ok:
            return None
        out.append((et, body))
    r.pos += total
    return out


def _text(raw: bytes) -> str:
    return raw.decode("ascii", "backslashreplace")


def _sni(body: bytes) -> str | None:
    r = _Reader(body)
    r.end = min(r.end, 2 + r.u16())
    while r.ok and r.left() > 0:
        kind = r.u8()
        name = r.take(r.u16())
        if r.ok and kind == 0:
            return _text(name)
    return None


def _alpn_list(body: bytes) -> tuple[str, ...]:
    r = _Reader(body)
    r.end = min(r.end, 2 + r.u16())
    out: list[str] = []
    while r.ok and r.left() > 0 and len(out) < MAX_NAMES:
        proto = r.take(r.u8())
        if r.ok:
            out.append(_text(proto))
    return tuple(out)


def parse_client_hello(body: bytes) -> tuple[ClientHello, str | None]:
    """The ClientHello message body (after the 4-byte handshake header) → (facts, error or None)."""
    ch = ClientHello()
    r = _Reader(body)
    ch.legacy_version = r.u16()
    ch.random = r.take(32)
    ch.session_id = r.take(r.u8())
    n = r.u16()
    raw = r.take(n)
    if not r.ok:
        return ch, "ClientHello cut before its cipher suites end"
    ch.cipher_suites = tuple((raw[i] << 8) | raw[i + 1] for i in range(0, n - 1, 2))
    r.take(r.u8())  # compression methods
    if not r.ok:
        return ch, "ClientHello cut before its compression methods end"
    exts = _extensions(r)
    if exts is None:
        return ch, "malformed ClientHello extensions"
    ch.extensions = tuple(et for et, _ in exts)
    for et, data in exts:
        if et == EXT_SERVER_NAME:
            ch.sni = _sni(data)
        elif et == EXT_ALPN:
            ch.alpn = _alpn_list(data)
        elif et == EXT_SESSION_TICKET:
            ch.ticket_offered = len(data) > 0
        elif et == EXT_PRE_SHARED_KEY:
            ch.psk_offered = True
        elif et == EXT_EARLY_DATA:
            ch.early_data = True
        elif et == EXT_ENCRYPTED_CLIENT_HELLO:
            ch.ech = True
        elif et == EXT_SUPPORTED_VERSIONS and data:
            vr = _Reader(data, 1, 1 + data[0])
            vs = []
            while vr.left() >= 2:
                vs.append(vr.u16())
            ch.supported_versions = tuple(vs)
    return ch, None


def parse_sslv2_client_hello(record: bytes) -> tuple[ClientHello, str | None]:
    """An SSLv2-format ClientHello (2-byte header with the high bit set, msg_type 1): version and suites."""
    ch = ClientHello(sslv2=True)
    r = _Reader(record, 2)
    r.u8()  # msg_type (1)
    ch.legacy_version = r.u16()
    spec_len, sid_len = r.u16(), r.u16()
    r.u16()  # challenge length
    specs = r.take(spec_len)
    ch.session_id = r.take(sid_len)
    if not r.ok:
        return ch, "SSLv2 ClientHello cut short"
    # 3-byte cipher specs; those of the form 00 XX YY are TLS suites 0xXXYY
    ch.cipher_suites = tuple((specs[i + 1] << 8) | specs[i + 2] for i in range(0, spec_len - 2, 3) if specs[i] == 0)
    return ch, None


def parse_server_hello(body: bytes, hrr_message: bool = False) -> tuple[ServerHello, str | None]:
    """A ServerHello body → (facts, error). ``hrr_message``: draft-era hello_retry_request (type 6)."""
    sh = ServerHello(hello_retry=hrr_message)
    r = _Reader(body)
    sh.legacy_version = r.u16()
    draft = sh.legacy_version >> 8 == 0x7F and (sh.legacy_version & 0xFF) < 22
    if hrr_message:  # draft HRR: version, (cipher suite from draft 19 on), extensions
        if (sh.legacy_version & 0xFF) >= 19 or sh.legacy_version >> 8 != 0x7F:
            sh.cipher_suite = r.u16()
        if draft:
            sh.selected_version = sh.legacy_version
        exts = _extensions(r)
        if not r.ok or exts is None:
            return sh, "malformed HelloRetryRequest"
        sh.extensions = tuple(et for et, _ in exts)
        return sh, None
    sh.random = r.take(32)
    if not draft:  # drafts <= 21 had no legacy_session_id and no compression method
        sh.session_id = r.take(r.u8())
    cs = r.u16()
    if r.ok:
        sh.cipher_suite = cs
    if not draft:
        r.u8()  # compression method
    if not r.ok:
        return sh, "ServerHello cut short"
    if draft:
        sh.selected_version = sh.legacy_version
    sh.hello_retry = sh.random == HRR_RANDOM
    exts = _extensions(r)
    if exts is None:
        return sh, "malformed ServerHello extensions"
    sh.extensions = tuple(et for et, _ in exts)
    for et, data in exts:
        if et == EXT_SUPPORTED_VERSIONS and len(data) >= 2:
            sh.selected_version = (data[0] << 8) | data[1]
        elif et == EXT_PRE_SHARED_KEY:
            sh.psk_accepted = True
        elif et == EXT_ALPN:
            protos = _alpn_list(data)
            sh.alpn = protos[0] if protos else None
        elif et == EXT_SESSION_TICKET:
            sh.ticket_ext = True
    return sh, None
