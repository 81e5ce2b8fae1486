"""Passive TLS record decryption with key-log secrets: TLS 1.3 and TLS 1.0-1.2 record protection, by hand.

This module owns the cryptographic core of decrypting a captured TLS connection: key derivation from the
secrets of an NSS key log (:mod:`analyzer.tls.keylog`), per-direction record sequence numbers, key changes,
and the record protection itself. Finding records in the TCP stream and routing plaintext to the HTTP
parsers is the TLS observer's business.

Definitions:

* *Direction* 0 is client → server, 1 is server → client. Records of one direction are decrypted in order.
* TLS 1.3 (RFC 8446 §7): each direction starts with its handshake traffic secret; after that direction's
  Finished it uses ``*_TRAFFIC_SECRET_0``, and each KeyUpdate moves to
  ``HKDF-Expand-Label(secret, "traffic upd", "", Hash.length)``. Keys are
  ``HKDF-Expand-Label(secret, "key"/"iv", "", len)``; nonce = iv XOR the 64-bit record sequence number; the
  additional data is the 5-byte record header; the inner plaintext is content || type || zero padding.
  0-RTT data (``CLIENT_EARLY_TRAFFIC_SECRET``) and captures that start after the handshake are covered by
  one rule: when a record does not authenticate with the current key, the other keys of that direction
  (early, handshake, application, next application generation) are tried at sequences 0-2 and the one
  that works is adopted.
* TLS 1.2 and older (RFC 5246, 4346, 2246; AES-GCM RFC 5288, ChaCha20-Poly1305 RFC 7905, encrypt-then-MAC
  RFC 7366): ``key_block = PRF(master_secret, "key expansion", server_random + client_random)`` split into
  MAC keys, write keys and IVs; the sequence number of each direction starts at 0 with the record after
  its ChangeCipherSpec (the Finished). AEAD suites: nonce = 4-byte fixed IV || 8-byte explicit nonce (GCM)
  or IV XOR sequence (ChaCha20); additional data = seq || type || version || plaintext length. CBC suites
  (AES, Camellia, 3DES) with HMAC-MD5/SHA1/SHA256/SHA384, MAC-then-encrypt or encrypt-then-MAC (detected
  by which one authenticates), chained IV in TLS 1.0 and explicit IV from TLS 1.1; RC4 and NULL stream
  suites.

To survive a lost or unparseable record, the current key is also tried with the next two sequence numbers.
A record that does not authenticate gives ``None``; no input raises, and the work per record is bounded (at
most a handful of AEAD/MAC checks over one record of at most 2^14 + 2048 bytes).

Why written here on top of ``cryptography`` (its AEAD, block cipher, HMAC and HKDF-Expand primitives):
no maintained Python library decrypts passively captured TLS records from a key log. Checked: ``scapy``'s
TLS layer (``scapy.layers.tls``) can decrypt when given session secrets, but it is a per-packet dissector
that rebuilds a full session object, is slow and not meant to be driven record by record from an external
TCP reassembler; ``tlslite-ng`` and ``pyOpenSSL``/``ssl`` implement live endpoints (they need the handshake
state machine and private keys, not a key log); ``pyshark`` just shells out to tshark. The record layer is
small and fully specified, so it is implemented here directly.
"""

from __future__ import annotations

import hmac as _stdhmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4, Camellia, TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _chmac
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from analyzer.tls.keylog import (
    CLIENT_EARLY_TRAFFIC_SECRET,
    CLIENT_HANDSHAKE_TRAFFIC_SECRET,
    CLIENT_RANDOM,
    CLIENT_TRAFFIC_SECRET_0,
    SERVER_HANDSHAKE_TRAFFIC_SECRET,
    SERVER_TRAFFIC_SECRET_0,
)

MAX_CIPHERTEXT = (1 << 14) + 2048  # RFC 5246 §6.2.3 (TLS 1.3 allows 2^14 + 256)
SEQ_WINDOW = 3  # current key: try seq, seq+1, seq+2 (a lost or unparseable record)
MAX_HS_BUFFER = 1 << 18  # TLS 1.3 handshake bytes kept to find message boundaries across records
GIVE_UP_ALTERNATES = 64  # consecutive failures after which other keys are no longer tried

CT_HANDSHAKE = 22
CT_APPLICATION_DATA = 23
HS_END_OF_EARLY_DATA = 5
HS_FINISHED = 20
HS_KEY_UPDATE = 24

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "MD5": hashes.MD5, "SHA": hashes.SHA1, "SHA256": hashes.SHA256, "SHA384": hashes.SHA384}
_HASH_LEN = {"MD5": 16, "SHA": 20, "SHA256": 32, "SHA384": 48}

# ---------------------------------------------------------------------------------------------- suite table

TLS13_SUITES = {0x1301: ("AES_128_GCM", 16, "SHA256"), 0x1302: ("AES_256_GCM", 32, "SHA384"),
                0x1303: ("CHACHA20_POLY1305", 32, "SHA256")}


@dataclass(frozen=True, slots=True)
class Suite12:
    """A TLS <= 1.2 suite's record protection: ``kind`` is gcm, chacha, cbc, stream (RC4) or null."""

    name: str
    kind: str
    cipher: str  # AES, CAMELLIA, 3DES, RC4, CHACHA20, NULL
    key_len: int
    iv_len: int  # key-block IV length: GCM 4, ChaCha 12, CBC block size, 0 otherwise
    mac: str | None  # MAC hash (None for AEAD)
    prf: str  # PRF hash for TLS 1.2 (SHA256 or SHA384)


# id -> IANA name; the record protection is read from the name's tail
_SUITE_NAMES = {
    0x0001: "TLS_RSA_WITH_NULL_MD5", 0x0002: "TLS_RSA_WITH_NULL_SHA", 0x003B: "TLS_RSA_WITH_NULL_SHA256",
    0x0004: "TLS_RSA_WITH_RC4_128_MD5", 0x0005: "TLS_RSA_WITH_RC4_128_SHA",
    0x0018: "TLS_DH_anon_WITH_RC4_128_MD5", 0xC007: "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    0xC011: "TLS_ECDHE_RSA_WITH_RC4_128_SHA", 0xC016: "TLS_ECDH_anon_WITH_RC4_128_SHA",
    0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA", 0x0013: "TLS_DHE_DSS_WITH_3DES_EDE_CBC_SHA",
    0x0016: "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA", 0x001B: "TLS_DH_anon_WITH_3DES_EDE_CBC_SHA",
    0xC008: "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA", 0xC012: "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    0xC017: "TLS_ECDH_anon_WITH_3DES_EDE_CBC_SHA",
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA", 0x0032: "TLS_DHE_DSS_WITH_AES_128_CBC_SHA",
    0x0033: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA", 0x0034: "TLS_DH_anon_WITH_AES_128_CBC_SHA",
    0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA", 0x0038: "TLS_DHE_DSS_WITH_AES_256_CBC_SHA",
    0x0039: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA", 0x003A: "TLS_DH_anon_WITH_AES_256_CBC_SHA",
    0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", 0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    0xC018: "TLS_ECDH_anon_WITH_AES_128_CBC_SHA", 0xC019: "TLS_ECDH_anon_WITH_AES_256_CBC_SHA",
    0x003C: "TLS_RSA_WITH_AES_128_CBC_SHA256", 0x003D: "TLS_RSA_WITH_AES_256_CBC_SHA256",
    0x0040: "TLS_DHE_DSS_WITH_AES_128_CBC_SHA256", 0x0067: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
    0x006A: "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256", 0x006B: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
    0x006C: "TLS_DH_anon_WITH_AES_128_CBC_SHA256", 0x006D: "TLS_DH_anon_WITH_AES_256_CBC_SHA256",
    0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", 0xC024: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", 0xC028: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    0x0041: "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA", 0x0084: "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA",
    0x0045: "TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA", 0x0088: "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256", 0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0x009E: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", 0x009F: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    0x00A2: "TLS_DHE_DSS_WITH_AES_128_GCM_SHA256", 0x00A3: "TLS_DHE_DSS_WITH_AES_256_GCM_SHA384",
    0x00A6: "TLS_DH_anon_WITH_AES_128_GCM_SHA256", 0x00A7: "TLS_DH_anon_WITH_AES_256_GCM_SHA384",
    0x00A8: "TLS_PSK_WITH_AES_128_GCM_SHA256", 0x00A9: "TLS_PSK_WITH_AES_256_GCM_SHA384",
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCAA: "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 0xCCAB: "TLS_PSK_WITH_CHACHA20_POLY1305_SHA256",
    0xCCAC: "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256", 0xCCAD: "TLS_DHE_PSK_WITH_CHACHA20_POLY1305_SHA256",
}


def _suite_from_name(name: str) -> Suite12 | None:
    tail = name.split("_WITH_", 1)[1]
    mac = tail.rsplit("_", 1)[1]
    prf = "SHA384" if mac == "SHA384" else "SHA256"
    if "_GCM_" in tail:
        return Suite12(name, "gcm", "AES", 16 if "AES_128" in tail else 32, 4, None, prf)
    if tail.startswith("CHACHA20_POLY1305"):
        return Suite12(name, "chacha", "CHACHA20", 32, 12, None, prf)
    if tail.startswith("RC4_128"):
        return Suite12(name, "stream", "RC4", 16, 0, mac, prf)
    if tail.startswith("NULL"):
        return Suite12(name, "null", "NULL", 0, 0, mac, prf)
    if tail.startswith("3DES_EDE_CBC"):
        return Suite12(name, "cbc", "3DES", 24, 8, mac, prf)
    for cipher in ("AES", "CAMELLIA"):
        for bits in (128, 256):
            if tail.startswith(f"{cipher}_{bits}_CBC"):
                return Suite12(name, "cbc", cipher, bits // 8, 16, mac, prf)
    return None


TLS12_SUITES: dict[int, Suite12] = {}
for _id, _name in _SUITE_NAMES.items():
    _s = _suite_from_name(_name)
    if _s is not None:
        TLS12_SUITES[_id] = _s
del _id, _name, _s

# ---------------------------------------------------------------------------------------------- KDFs


def _hmac(hash_name: str, key: bytes, data: bytes) -> bytes:
    h = _chmac.HMAC(key, _HASHES[hash_name]())
    h.update(data)
    return h.finalize()


def _p_hash(hash_name: str, secret: bytes, seed: bytes, length: int) -> bytes:
    """RFC 5246 §5 P_hash."""
    out = bytearray()
    a = seed
    while len(out) < length:
        a = _hmac(hash_name, secret, a)
        out += _hmac(hash_name, secret, a + seed)
    return bytes(out[:length])


def prf(version: int, hash_name: str, secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """The TLS PRF: P_<hash> for TLS 1.2, P_MD5 XOR P_SHA1 over the two secret halves for TLS 1.0/1.1."""
    if version >= 0x0303:
        return _p_hash(hash_name, secret, label + seed, length)
    half = (len(secret) + 1) // 2
    md5 = _p_hash("MD5", secret[:half], label + seed, length)
    sha = _p_hash("SHA", secret[len(secret) - half:], label + seed, length)
    return bytes(x ^ y for x, y in zip(md5, sha, strict=True))


def hkdf_expand_label(hash_name: str, secret: bytes, label: str, context: bytes, length: int) -> bytes:
    """RFC 8446 §7.1 HKDF-Expand-Label."""
    full = b"tls13 " + label.encode()
    info = struct.pack(">H", length) + bytes([len(full)]) + full + bytes([len(context)]) + context
    return HKDFExpand(_HASHES[hash_name](), length, info).derive(secret)


def _xor_seq(iv: bytes, seq: int) -> bytes:
    n = int.from_bytes(iv, "big") ^ seq
    return n.to_bytes(len(iv), "big")


# ---------------------------------------------------------------------------------------------- TLS 1.3

_LABELS13 = {
    0: {"early": CLIENT_EARLY_TRAFFIC_SECRET, "handshake": CLIENT_HANDSHAKE_TRAFFIC_SECRET,
        "app": CLIENT_TRAFFIC_SECRET_0},
    1: {"handshake": SERVER_HANDSHAKE_TRAFFIC_SECRET, "app": SERVER_TRAFFIC_SECRET_0},
}


class _Key13:
    __slots__ = ("aead", "iv", "phase", "secret")

    def __init__(self, phase: str, secret: bytes, aead: AESGCM | ChaCha20Poly1305, iv: bytes) -> None:
        self.phase = phase
        self.secret = secret
        self.aead = aead
        self.iv = iv


class _Dir13:
    __slots__ = ("cands", "failures", "hs_buf", "key", "seq")

    def __init__(self) -> None:
        self.cands: dict[str, bytes] = {}
        self.key: _Key13 | None = None
        self.seq = 0
        self.hs_buf = bytearray()
        self.failures = 0


# ---------------------------------------------------------------------------------------------- TLS <= 1.2


class _Dir12:
    __slots__ = ("aead", "block", "cbc_iv", "enc_key", "etm", "failures", "iv", "mac_key", "seq", "stream")

    def __init__(self) -> None:
        self.seq = 0
        self.mac_key = b""
        self.enc_key = b""
        self.iv = b""
        self.aead: AESGCM | ChaCha20Poly1305 | None = None
        self.stream: CipherContext | None = None
        self.block: algorithms.AES | Camellia | TripleDES | None = None
        self.cbc_iv = b""  # TLS 1.0: the IV of the next record (last ciphertext block of the previous one)
        self.etm = False  # encrypt-then-MAC seen to authenticate
        self.failures = 0


class RecordDecryptor:
    """One TLS connection's records, both directions, in order per direction (direction 0 = client→server)."""

    def __init__(self, secrets: dict[str, bytes], client_random: bytes, server_random: bytes,
                 version: int | None, cipher_suite: int | None) -> None:
        self.supported = False
        self.why_not: str | None = None
        if version is None or cipher_suite is None:
            self.why_not = "negotiated version or cipher suite unknown"
            version, cipher_suite = version or 0, cipher_suite or 0
        self.version = version
        self.cipher_suite = cipher_suite
        self.suite_name: str | None = None
        self.missing: tuple[str, ...] = ()  # TLS 1.3 secrets absent from the key log (informational)
        self.records_ok = 0
        self.records_failed = 0
        self._tls13 = False
        self._hash = "SHA256"
        self._aead_kind = ""
        self._key_len = 0
        self._d13 = (_Dir13(), _Dir13())
        self._d12 = (_Dir12(), _Dir12())
        self._suite12: Suite12 | None = None
        if self.why_not is not None:
            return
        try:
            self._setup(dict(secrets or {}), bytes(client_random or b""), bytes(server_random or b""),
                        int(version), int(cipher_suite))
        except Exception as e:  # a constructor that must never raise on odd inputs
            self.supported = False
            self.why_not = f"setup failed: {type(e).__name__}"

    # -- setup

    def _setup(self, secrets: dict[str, bytes], client_random: bytes, server_random: bytes, version: int,
               cipher_suite: int) -> None:
        if version == 0x0304:
            self._setup13(secrets, cipher_suite)
        elif version >> 8 in (0x7F, 0xFB):
            self.why_not = f"TLS 1.3 draft version 0x{version:04x} is not supported"
        elif version in (0x0301, 0x0302, 0x0303):
            self._setup12(secrets, client_random, server_random, version, cipher_suite)
        else:
            self.why_not = f"protocol version 0x{version:04x} is not supported"

    def _setup13(self, secrets: dict[str, bytes], cipher_suite: int) -> None:
        spec = TLS13_SUITES.get(cipher_suite)
        if spec is None:
            self.why_not = f"TLS 1.3 cipher suite 0x{cipher_suite:04x} is not supported"
            return
        self.suite_name = "TLS_" + spec[0] + "_" + spec[2]
        self._aead_kind, self._key_len, self._hash = spec
        self._tls13 = True
        hl = _HASH_LEN[self._hash]
        missing = []
        for direction, labels in _LABELS13.items():
            st = self._d13[direction]
            for phase, label in labels.items():
                s = secrets.get(label)
                if s is not None and len(s) == hl:
                    st.cands[phase] = s
                elif phase != "early":
                    missing.append(label)
            first = "handshake" if "handshake" in st.cands else "app" if "app" in st.cands else None
            if first is not None:
                st.key = self._key13(first, st.cands[first])
        self.missing = tuple(missing)
        if not any(st.cands for st in self._d13):
            self.why_not = "no TLS 1.3 traffic secrets for this connection (or of the wrong length for the suite)"
            return
        self.supported = True

    def _key13(self, phase: str, secret: bytes) -> _Key13:
        key = hkdf_expand_label(self._hash, secret, "key", b"", self._key_len)
        iv = hkdf_expand_label(self._hash, secret, "iv", b"", 12)
        aead: AESGCM | ChaCha20Poly1305 = ChaCha20Poly1305(key) if self._aead_kind.startswith("CHACHA") \
            else AESGCM(key)
        return _Key13(phase, secret, aead, iv)

    def _setup12(self, secrets: dict[str, bytes], client_random: bytes, server_random: bytes, version: int,
                 cipher_suite: int) -> None:
        suite = TLS12_SUITES.get(cipher_suite)
        if suite is None:
            self.why_not = f"cipher suite 0x{cipher_suite:04x} is not supported"
            return
        self.suite_name = suite.name
        if suite.kind in ("gcm", "chacha") and version != 0x0303:
            self.why_not = f"{suite.name} needs TLS 1.2"
            return
        master = secrets.get(CLIENT_RANDOM)
        if master is None or len(master) != 48:
            self.why_not = "no CLIENT_RANDOM master secret for this connection"
            return
        if len(client_random) != 32 or len(server_random) != 32:
            self.why_not = "client or server random missing"
            return
        mac_len = _HASH_LEN[suite.mac] if suite.mac else 0
        need = 2 * (mac_len + suite.key_len + suite.iv_len)
        kb = prf(version, suite.prf, master, b"key expansion", server_random + client_random, need)
        parts = []
        pos = 0
        for n in (mac_len, mac_len, suite.key_len, suite.key_len, suite.iv_len, suite.iv_len):
            parts.append(kb[pos:pos + n])
            pos += n
        for direction in (0, 1):
            st = self._d12[direction]
            st.mac_key, st.enc_key, st.iv = parts[direction], parts[2 + direction], parts[4 + direction]
            st.cbc_iv = st.iv
            if suite.kind == "gcm":
                st.aead = AESGCM(st.enc_key)
            elif suite.kind == "chacha":
                st.aead = ChaCha20Poly1305(st.enc_key)
            elif suite.kind == "stream":
                st.stream = Cipher(ARC4(st.enc_key), mode=None).decryptor()
            elif suite.kind == "cbc":
                st.block = (algorithms.AES(st.enc_key) if suite.cipher == "AES"
                            else Camellia(st.enc_key) if suite.cipher == "CAMELLIA" else TripleDES(st.enc_key))
        self._suite12 = suite
        self.supported = True

    # -- records

    def decrypt(self, direction: int, content_type: int, record_version: int,
                payload: bytes) -> tuple[int, bytes] | None:
        """One protected record's payload → (real content type, plaintext), or None if it does not
        authenticate (wrong key, corrupt record, unsupported connection). Never raises."""
        if not self.supported or direction not in (0, 1) or not 0 <= content_type <= 255:
            return None
        payload = bytes(payload)
        if len(payload) > MAX_CIPHERTEXT:
            return None
        try:
            res = (self._decrypt13(direction, content_type, record_version & 0xFFFF, payload) if self._tls13
                   else self._decrypt12(direction, content_type, record_version & 0xFFFF, payload))
        except Exception:  # the contract: never raise on captured bytes
            res = None
        if res is None:
            self.records_failed += 1
        else:
            self.records_ok += 1
        return res

    # TLS 1.3

    def _open13(self, key: _Key13, seq: int, header: bytes, payload: bytes) -> bytes | None:
        try:
            return key.aead.decrypt(_xor_seq(key.iv, seq), payload, header)
        except InvalidTag:
            return None

    def _decrypt13(self, direction: int, content_type: int, record_version: int,
                   payload: bytes) -> tuple[int, bytes] | None:
        if content_type != CT_APPLICATION_DATA or len(payload) < 17:
            return None
        st = self._d13[direction]
        header = bytes([content_type]) + record_version.to_bytes(2, "big") + len(payload).to_bytes(2, "big")
        pt: bytes | None = None
        if st.key is not None:
            for seq in range(st.seq, st.seq + SEQ_WINDOW):
                pt = self._open13(st.key, seq, header, payload)
                if pt is not None:
                    st.seq = seq + 1
                    break
        if pt is None and st.failures < GIVE_UP_ALTERNATES:
            for phase, secret in self._alternates13(st):
                key = self._key13(phase, secret)
                for seq in range(SEQ_WINDOW):
                    pt = self._open13(key, seq, header, payload)
                    if pt is not None:
                        st.key, st.seq = key, seq + 1
                        st.hs_buf.clear()
                        break
                if pt is not None:
                    break
        if pt is None:
            st.failures += 1
            return None
        st.failures = 0
        inner = pt.rstrip(b"\x00")
        if not inner:
            return None
        real_type = inner[-1]
        content = inner[:-1]
        if real_type == CT_HANDSHAKE:
            self._handshake13(st, content)
        return real_type, content

    def _alternates13(self, st: _Dir13) -> list[tuple[str, bytes]]:
        cur = st.key
        out = [(p, s) for p, s in st.cands.items() if cur is None or s != cur.secret]
        if cur is not None and cur.phase == "app":  # a KeyUpdate we did not see
            out.append(("app", hkdf_expand_label(self._hash, cur.secret, "traffic upd", b"",
                                                 _HASH_LEN[self._hash])))
        return out

    def _handshake13(self, st: _Dir13, content: bytes) -> None:
        if len(st.hs_buf) + len(content) > MAX_HS_BUFFER:
            st.hs_buf.clear()
            return
        st.hs_buf += content
        buf = st.hs_buf
        pos = 0
        while len(buf) - pos >= 4:
            length = int.from_bytes(buf[pos + 1:pos + 4], "big")
            if len(buf) - pos - 4 < length:
                break
            msg_type = buf[pos]
            pos += 4 + length
            key = st.key
            if key is None:
                continue
            if msg_type == HS_FINISHED and key.phase in ("handshake", "early"):
                self._switch13(st, "app", st.cands.get("app"))
                del buf[:pos]
                buf.clear()  # the key changes at the record boundary: nothing after Finished belongs here
                return
            if msg_type == HS_END_OF_EARLY_DATA and key.phase == "early":
                self._switch13(st, "handshake", st.cands.get("handshake"))
                buf.clear()
                return
            if msg_type == HS_KEY_UPDATE and key.phase == "app":
                nxt = hkdf_expand_label(self._hash, key.secret, "traffic upd", b"", _HASH_LEN[self._hash])
                self._switch13(st, "app", nxt)
                buf.clear()
                return
        del buf[:pos]

    def _switch13(self, st: _Dir13, phase: str, secret: bytes | None) -> None:
        st.seq = 0
        st.key = self._key13(phase, secret) if secret is not None else None

    # TLS <= 1.2

    def _aad12(self, seq: int, content_type: int, record_version: int, length: int) -> bytes:
        return struct.pack(">QBHH", seq, content_type, record_version, length)

    def _decrypt12(self, direction: int, content_type: int, record_version: int,
                   payload: bytes) -> tuple[int, bytes] | None:
        suite = self._suite12
        st = self._d12[direction]
        if suite is None:
            return None
        seqs = range(st.seq, st.seq + SEQ_WINDOW)
        if suite.kind in ("gcm", "chacha"):
            aead = st.aead
            if aead is None:
                return None
            if suite.kind == "gcm":
                if len(payload) < 8 + 16:
                    return None
                nonce, body = st.iv + payload[:8], payload[8:]
            else:
                if len(payload) < 16:
                    return None
                body = payload
            for seq in seqs:
                if suite.kind == "chacha":
                    nonce = _xor_seq(st.iv, seq)
                try:
                    pt = aead.decrypt(nonce, body, self._aad12(seq, content_type, record_version, len(body) - 16))
                except InvalidTag:
                    continue
                st.seq = seq + 1
                return content_type, pt
            return None
        assert suite.mac is not None
        mac_len = _HASH_LEN[suite.mac]
        if suite.kind in ("stream", "null"):
            if len(payload) < mac_len:
                return None
            pt = st.stream.update(payload) if st.stream is not None else payload
            data, mac = pt[:len(pt) - mac_len], pt[len(pt) - mac_len:]
            seq_ok = self._check_mac(suite.mac, st, seqs, content_type, record_version, data, mac)
            if seq_ok is None:
                return None
            st.seq = seq_ok + 1
            return content_type, data
        return self._decrypt_cbc(suite, st, seqs, content_type, record_version, payload, mac_len)

    def _check_mac(self, mac_hash: str, st: _Dir12, seqs: range, content_type: int, record_version: int,
                   data: bytes, mac: bytes) -> int | None:
        for seq in seqs:
            expect = _hmac(mac_hash, st.mac_key, self._aad12(seq, content_type, record_version, len(data)) + data)
            if _stdhmac.compare_digest(expect, mac):
                return seq
        return None

    def _cbc_plain(self, st: _Dir12, iv: bytes, body: bytes) -> bytes:
        assert st.block is not None
        dec = Cipher(st.block, modes.CBC(iv)).decryptor()
        return dec.update(body) + dec.finalize()

    @staticmethod
    def _unpad(pt: bytes) -> bytes | None:
        if not pt:
            return None
        pad = pt[-1]
        if pad + 1 > len(pt) or pt[len(pt) - pad - 1:] != bytes([pad]) * (pad + 1):
            return None
        return pt[:len(pt) - pad - 1]

    def _decrypt_cbc(self, suite: Suite12, st: _Dir12, seqs: range, content_type: int, record_version: int,
                     payload: bytes, mac_len: int) -> tuple[int, bytes] | None:
        assert suite.mac is not None and st.block is not None
        bs = st.block.block_size // 8
        explicit_iv = self.version >= 0x0302

        def split(enc: bytes) -> tuple[bytes, bytes] | None:  # (iv, ciphertext)
            if explicit_iv:
                if len(enc) < 2 * bs or len(enc) % bs:
                    return None
                return enc[:bs], enc[bs:]
            if len(enc) < bs or len(enc) % bs:
                return None
            return st.cbc_iv, enc

        for etm in ((True, False) if st.etm else (False, True)):
            if etm:  # RFC 7366: MAC over the (IV +) ciphertext, which follows the MAC
                if len(payload) < mac_len + bs:
                    continue
                enc, mac = payload[:len(payload) - mac_len], payload[len(payload) - mac_len:]
                seq_ok = self._check_mac(suite.mac, st, seqs, content_type, record_version, enc, mac)
                if seq_ok is None:
                    continue
                parts = split(enc)
                if parts is None:
                    continue
                plain = self._unpad(self._cbc_plain(st, *parts))
                if plain is None:
                    continue
                st.etm = True
                if not explicit_iv:
                    st.cbc_iv = enc[-bs:]
                st.seq = seq_ok + 1
                return content_type, plain
            parts = split(payload)
            if parts is None:
                continue
            plain = self._unpad(self._cbc_plain(st, *parts))
            if plain is None or len(plain) < mac_len:
                continue
            data, mac = plain[:len(plain) - mac_len], plain[len(plain) - mac_len:]
            seq_ok = self._check_mac(suite.mac, st, seqs, content_type, record_version, data, mac)
            if seq_ok is None:
                continue
            if not explicit_iv:
                st.cbc_iv = payload[-bs:]
            st.seq = seq_ok + 1
            return content_type, data
        if not explicit_iv and len(payload) >= bs and len(payload) % bs == 0:
            st.cbc_iv = payload[-bs:]  # the chain goes on even when this record did not authenticate
        return None
