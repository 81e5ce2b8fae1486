"""``analyzer.tls.keylog`` and ``analyzer.tls.decrypt``: passive TLS decryption with an NSS key log.

- RFC 8448 §3 (Simple 1-RTT Handshake): the published traffic secrets open the published protected records
  (server handshake flight, client Finished, both application data records) to the published plaintext.
- Real captures of ../shared/corpus with key logs (files or pcapng Decryption Secrets Blocks): TLS records are
  cut from each TCP direction (tshark gives the segments, reassembled naively: these captures are clean),
  every protected record decrypts, and the HTTP/1 requests / HTTP/2 client streams found in the plaintext
  match the oracle (tshark decrypting with the same keys), per TCP connection.
- Hand-built records (encrypted here with the same primitives): TLS 1.3 ChaCha20 and AES-256, KeyUpdate,
  0-RTT, a capture that starts after the handshake, TLS 1.2 ChaCha20, CBC encrypt-then-MAC, TLS 1.0 CBC.
- Wrong keys give None, missing secrets and unsupported suites give ``supported=False`` with a reason,
  random bytes never raise (hypothesis).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.capture.pcapfile import open_capture
from analyzer.tls.decrypt import TLS12_SUITES, RecordDecryptor, hkdf_expand_label, prf
from analyzer.tls.keylog import DSB_TLS_KEY_LOG, KeyLog
from analyzer.tls.messages import parse_server_hello

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
C, S = 0, 1


def h(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


# ---------------------------------------------------------------------------------------------- RFC 8448 §3

RFC_SECRETS = {
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET": h("b3 ed db 12 6e 06 7f 35 a7 80 b3 ab f4 5e 2d 8f 3b 1a 95 07 38 f5 2e 96 "
                                         "00 74 6a 0e 27 a5 5a 21"),
    "SERVER_HANDSHAKE_TRAFFIC_SECRET": h("b6 7b 7d 69 0c c1 6c 4e 75 e5 42 13 cb 2d 37 b4 e9 c9 12 bc de d9 10 5d "
                                         "42 be fd 59 d3 91 ad 38"),
    "CLIENT_TRAFFIC_SECRET_0": h("9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52 87 5a fa 0b 06 df 00 87 f7 92 eb b7 "
                                 "c1 75 04 a5"),
    "SERVER_TRAFFIC_SECRET_0": h("a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f "
                                 "cb 63 16 43"),
}
RFC_SERVER_FLIGHT = h(
    "17 03 03 02 a2 d1 ff 33 4a 56 f5 bf f6 59 4a 07 cc 87 b5 80 23 3f 50 0f "
    "45 e4 89 e7 f3 3a f3 5e df 78 69 fc f4 0a a4 0a a2 b8 ea 73 f8 48 a7 ca "
    "07 61 2e f9 f9 45 cb 96 0b 40 68 90 51 23 ea 78 b1 11 b4 29 ba 91 91 cd "
    "05 d2 a3 89 28 0f 52 61 34 aa dc 7f c7 8c 4b 72 9d f8 28 b5 ec f7 b1 3b "
    "d9 ae fb 0e 57 f2 71 58 5b 8e a9 bb 35 5c 7c 79 02 07 16 cf b9 b1 18 3e "
    "f3 ab 20 e3 7d 57 a6 b9 d7 47 76 09 ae e6 e1 22 a4 cf 51 42 73 25 25 0c "
    "7d 0e 50 92 89 44 4c 9b 3a 64 8f 1d 71 03 5d 2e d6 5b 0e 3c dd 0c ba e8 "
    "bf 2d 0b 22 78 12 cb b3 60 98 72 55 cc 74 41 10 c4 53 ba a4 fc d6 10 92 "
    "8d 80 98 10 e4 b7 ed 1a 8f d9 91 f0 6a a6 24 82 04 79 7e 36 a6 a7 3b 70 "
    "a2 55 9c 09 ea d6 86 94 5b a2 46 ab 66 e5 ed d8 04 4b 4c 6d e3 fc f2 a8 "
    "94 41 ac 66 27 2f d8 fb 33 0e f8 19 05 79 b3 68 45 96 c9 60 bd 59 6e ea "
    "52 0a 56 a8 d6 50 f5 63 aa d2 74 09 96 0d ca 63 d3 e6 88 61 1e a5 e2 2f "
    "44 15 cf 95 38 d5 1a 20 0c 27 03 42 72 96 8a 26 4e d6 54 0c 84 83 8d 89 "
    "f7 2c 24 46 1a ad 6d 26 f5 9e ca ba 9a cb bb 31 7b 66 d9 02 f4 f2 92 a3 "
    "6a c1 b6 39 c6 37 ce 34 31 17 b6 59 62 22 45 31 7b 49 ee da 0c 62 58 f1 "
    "00 d7 d9 61 ff b1 38 64 7e 92 ea 33 0f ae ea 6d fa 31 c7 a8 4d c3 bd 7e "
    "1b 7a 6c 71 78 af 36 87 90 18 e3 f2 52 10 7f 24 3d 24 3d c7 33 9d 56 84 "
    "c8 b0 37 8b f3 02 44 da 8c 87 c8 43 f5 e5 6e b4 c5 e8 28 0a 2b 48 05 2c "
    "f9 3b 16 49 9a 66 db 7c ca 71 e4 59 94 26 f7 d4 61 e6 6f 99 88 2b d8 9f "
    "c5 08 00 be cc a6 2d 6c 74 11 6d bd 29 72 fd a1 fa 80 f8 5d f8 81 ed be "
    "5a 37 66 89 36 b3 35 58 3b 59 91 86 dc 5c 69 18 a3 96 fa 48 a1 81 d6 b6 "
    "fa 4f 9d 62 d5 13 af bb 99 2f 2b 99 2f 67 f8 af e6 7f 76 91 3f a3 88 cb "
    "56 30 c8 ca 01 e0 c6 5d 11 c6 6a 1e 2a c4 c8 59 77 b7 c7 a6 99 9b bf 10 "
    "dc 35 ae 69 f5 51 56 14 63 6c 0b 9b 68 c1 9e d2 e3 1c 0b 3b 66 76 30 38 "
    "eb ba 42 f3 b3 8e dc 03 99 f3 a9 f2 3f aa 63 97 8c 31 7f c9 fa 66 a7 3f "
    "60 f0 50 4d e9 3b 5b 84 5e 27 55 92 c1 23 35 ee 34 0b bc 4f dd d5 02 78 "
    "40 16 e4 b3 be 7e f0 4d da 49 f4 b4 40 a3 0c b5 d2 af 93 98 28 fd 4a e3 "
    "79 4e 44 f9 4d f5 a6 31 ed e4 2c 17 19 bf da bf 02 53 fe 51 75 be 89 8e "
    "75 0e dc 53 37 0d 2b ")
RFC_CLIENT_FINISHED = h("17 03 03 00 35 75 ec 4d c2 38 cc e6 0b 29 80 44 a7 1e 21 9c 56 cc 77 b0 51 7f e9 b9 3c 7a "
                        "4b fc 44 d8 7f 38 f8 03 38 ac 98 fc 46 de b3 84 bd 1c ae ac ab 68 67 d7 26 c4 05 46")
RFC_CLIENT_APP = h("17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe 82 28 ba 55 cb ef ac ea 42 f9 14 aa 66 bc ab 3f "
                   "2b 98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b 62 97 4e 1f 5a 62 92 a2 97 70 14 bd 1e 3d ea e6 "
                   "3a ee bb 21 69 49 15 e4")
RFC_SERVER_APP = h("17 03 03 00 43 2e 93 7e 11 ef 4a c7 40 e5 38 ad 36 00 5f c4 a4 69 32 fc 32 25 d0 5f 82 aa 1b 36 "
                   "e3 0e fa f9 7d 90 e6 df fc 60 2d cb 50 1a 59 a8 fc c4 9c 4b f2 e5 f0 a2 1c 00 47 c2 ab f3 32 54 "
                   "0d d0 32 e1 67 c2 95 5d")
RFC_APP_PLAINTEXT = bytes(range(0x32))  # both sides send 00 01 ... 31
RFC_SERVER_FINISHED = h("14 00 00 20 9b 9b 14 1d 90 63 37 fb d2 cb dc e7 1d f4 de da 4a b4 2c 30 95 72 cb 7f ff ee 54 "
                        "54 b7 8f 07 18")


def feed(d: RecordDecryptor, direction: int, record: bytes) -> tuple[int, bytes] | None:
    return d.decrypt(direction, record[0], int.from_bytes(record[1:3], "big"), record[5:])


def test_rfc8448_key_derivation() -> None:
    s_hs = RFC_SECRETS["SERVER_HANDSHAKE_TRAFFIC_SECRET"]
    assert hkdf_expand_label("SHA256", s_hs, "key", b"", 16) == h("3f ce 51 60 09 c2 17 27 d0 f2 e4 e8 6e e4 03 bc")
    assert hkdf_expand_label("SHA256", s_hs, "iv", b"", 12) == h("5d 31 3e b2 67 12 76 ee 13 00 0b 30")
    c_ap = RFC_SECRETS["CLIENT_TRAFFIC_SECRET_0"]
    assert hkdf_expand_label("SHA256", c_ap, "key", b"", 16) == h("17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51")


def test_rfc8448_simple_1rtt() -> None:
    d = RecordDecryptor(RFC_SECRETS, bytes(32), bytes(32), 0x0304, 0x1301)
    assert d.supported and d.why_not is None
    flight = feed(d, S, RFC_SERVER_FLIGHT)
    assert flight is not None
    ctype, pt = flight
    assert ctype == 22 and len(pt) == 657
    # EncryptedExtensions (8), Certificate (11), CertificateVerify (15), Finished (20)
    types, pos = [], 0
    while pos < len(pt):
        types.append(pt[pos])
        pos += 4 + int.from_bytes(pt[pos + 1:pos + 4], "big")
    assert types == [8, 11, 15, 20]
    assert pt.endswith(RFC_SERVER_FINISHED)
    assert feed(d, C, RFC_CLIENT_FINISHED) == (22, h("14 00 00 20 a8 ec 43 6d 67 76 34 ae 52 5a c1 fc eb e1 1a 03 "
                                                    "9e c1 76 94 fa c6 e9 85 27 b6 42 f2 ed d5 ce 61"))
    # the server's application record is its second under the application key (the first, a NewSessionTicket,
    # is not in the RFC's trace): the sequence window finds it at 1
    assert feed(d, S, RFC_SERVER_APP) == (23, RFC_APP_PLAINTEXT)
    assert feed(d, C, RFC_CLIENT_APP) == (23, RFC_APP_PLAINTEXT)
    assert d.records_ok == 4 and d.records_failed == 0


def test_rfc8448_wrong_key_and_wrong_direction() -> None:
    bad = dict(RFC_SECRETS)
    s = bytearray(bad["SERVER_HANDSHAKE_TRAFFIC_SECRET"])
    s[0] ^= 1
    bad["SERVER_HANDSHAKE_TRAFFIC_SECRET"] = bytes(s)
    d = RecordDecryptor(bad, bytes(32), bytes(32), 0x0304, 0x1301)
    assert d.supported
    assert feed(d, S, RFC_SERVER_FLIGHT) is None
    assert feed(d, S, RFC_SERVER_APP) is not None  # the application key (untouched) is found as an alternate
    d2 = RecordDecryptor(RFC_SECRETS, bytes(32), bytes(32), 0x0304, 0x1301)
    assert feed(d2, C, RFC_SERVER_APP) is None
    # the outer record header is authenticated: a changed version byte fails
    rec = bytearray(RFC_CLIENT_APP)
    rec[2] = 0x01
    assert feed(RecordDecryptor(RFC_SECRETS, bytes(32), bytes(32), 0x0304, 0x1301), C, bytes(rec)) is None


def test_capture_starting_after_the_handshake() -> None:
    d = RecordDecryptor(RFC_SECRETS, bytes(32), bytes(32), 0x0304, 0x1301)
    assert feed(d, C, RFC_CLIENT_APP) == (23, RFC_APP_PLAINTEXT)  # handshake key fails, application key adopted


# ---------------------------------------------------------------------------------------------- key log


def test_keylog_parse() -> None:
    cr = bytes(range(32))
    text = "\n".join([
        "# a comment",
        "",
        f"CLIENT_RANDOM {cr.hex()} {'ab' * 48}",
        f"CLIENT_HANDSHAKE_TRAFFIC_SECRET {cr.hex()} {'01' * 32}",
        f"SERVER_TRAFFIC_SECRET_0 {cr.hex()} {'02' * 48}",
        f"EXPORTER_SECRET {cr.hex()} {'03' * 32}",  # ignored
        f"RSA {'00' * 8} {'04' * 48}",  # ignored (keyed by encrypted pre-master)
        f"CLIENT_RANDOM {cr.hex()} {'ab' * 47}",  # master secret of the wrong length
        f"CLIENT_RANDOM {cr.hex()[:-2]} {'ab' * 48}",  # client random too short
        f"CLIENT_RANDOM {cr.hex()} zz{'ab' * 47}",  # bad hex
        "CLIENT_RANDOM only-two",
        "garbage \x00 line with ünïcode",
        "   ",
    ])
    kl = KeyLog.parse(text)
    assert len(kl) == 1
    assert kl.bad_lines == 5
    got = kl.get(cr)
    assert got == {"CLIENT_RANDOM": b"\xab" * 48, "CLIENT_HANDSHAKE_TRAFFIC_SECRET": b"\x01" * 32,
                   "SERVER_TRAFFIC_SECRET_0": b"\x02" * 48}
    assert kl.get(bytes(32)) is None


def test_keylog_pcapng_blocks_and_merge() -> None:
    a, b = bytes(32), b"\x01" * 32
    blocks = [(DSB_TLS_KEY_LOG, f"CLIENT_RANDOM {a.hex()} {'aa' * 48}\n".encode()),
              (0x57474B4C, b"wireguard keys, ignored"),
              (DSB_TLS_KEY_LOG, f"CLIENT_TRAFFIC_SECRET_0 {b.hex()} {'bb' * 32}\nbad\n".encode())]
    kl = KeyLog.from_pcapng_secrets(blocks)
    assert len(kl) == 2 and kl.bad_lines == 1
    other = KeyLog.parse(f"CLIENT_RANDOM {a.hex()} {'cc' * 48}\nSERVER_TRAFFIC_SECRET_0 {b.hex()} {'dd' * 32}")
    m = kl.merge(other)
    assert len(m) == 2 and m.bad_lines == 1
    assert m.get(a) == {"CLIENT_RANDOM": b"\xcc" * 48}
    assert m.get(b) == {"CLIENT_TRAFFIC_SECRET_0": b"\xbb" * 32, "SERVER_TRAFFIC_SECRET_0": b"\xdd" * 32}
    assert kl.get(a) == {"CLIENT_RANDOM": b"\xaa" * 48}  # merge does not modify its inputs


@given(st.text(max_size=400))
@settings(max_examples=200, deadline=None)
def test_keylog_never_raises(text: str) -> None:
    kl = KeyLog.parse(text)
    assert kl.bad_lines >= 0
    KeyLog.from_pcapng_secrets([(DSB_TLS_KEY_LOG, text.encode("utf-8", "surrogatepass"))])


# ---------------------------------------------------------------------------------------------- hand-built records


class Tls13Writer:
    """Protects TLS 1.3 records the way an endpoint does (test side, independent of the decryptor's state)."""

    def __init__(self, secret: bytes, suite: int) -> None:
        self.hash = "SHA384" if suite == 0x1302 else "SHA256"
        self.suite = suite
        self.set(secret)

    def set(self, secret: bytes) -> None:
        self.secret = secret
        key_len = 16 if self.suite == 0x1301 else 32
        key = hkdf_expand_label(self.hash, secret, "key", b"", key_len)
        self.iv = hkdf_expand_label(self.hash, secret, "iv", b"", 12)
        self.aead: AESGCM | ChaCha20Poly1305 = ChaCha20Poly1305(key) if self.suite == 0x1303 else AESGCM(key)
        self.seq = 0

    def seal(self, ctype: int, content: bytes, pad: int = 0) -> bytes:
        inner = content + bytes([ctype]) + bytes(pad)
        n = len(inner) + 16
        header = bytes([23, 3, 3]) + n.to_bytes(2, "big")
        nonce = (int.from_bytes(self.iv, "big") ^ self.seq).to_bytes(12, "big")
        self.seq += 1
        return header + self.aead.encrypt(nonce, inner, header)

    def key_update(self) -> None:
        hl = 48 if self.hash == "SHA384" else 32
        self.set(hkdf_expand_label(self.hash, self.secret, "traffic upd", b"", hl))


def _secrets13(hl: int, early: bool = False) -> dict[str, bytes]:
    names = ["CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0",
             "SERVER_TRAFFIC_SECRET_0"] + (["CLIENT_EARLY_TRAFFIC_SECRET"] if early else [])
    return {n: bytes([i + 1]) * hl for i, n in enumerate(names)}


@pytest.mark.parametrize("suite", [0x1301, 0x1302, 0x1303])
def test_tls13_handshake_split_finished_and_key_update(suite: int) -> None:
    hl = 48 if suite == 0x1302 else 32
    sec = _secrets13(hl)
    d = RecordDecryptor(sec, bytes(32), bytes(32), 0x0304, suite)
    assert d.supported
    srv = Tls13Writer(sec["SERVER_HANDSHAKE_TRAFFIC_SECRET"], suite)
    cli = Tls13Writer(sec["CLIENT_HANDSHAKE_TRAFFIC_SECRET"], suite)
    cert = bytes([11]) + (3000).to_bytes(3, "big") + bytes(3000)
    ee = bytes([8, 0, 0, 2, 0, 0])
    fin = bytes([20]) + hl.to_bytes(3, "big") + bytes(hl)
    flight = ee + cert + fin
    # the server's flight is cut across three records, the Finished split between the last two
    cuts = [0, 1000, len(flight) - 10, len(flight)]
    for a, b in itertools.pairwise(cuts):
        assert feed(d, S, srv.seal(22, flight[a:b], pad=3)) == (22, flight[a:b])
    srv.set(sec["SERVER_TRAFFIC_SECRET_0"])
    assert feed(d, C, cli.seal(22, fin)) == (22, fin)
    cli.set(sec["CLIENT_TRAFFIC_SECRET_0"])
    assert feed(d, C, cli.seal(23, b"GET / HTTP/1.1\r\n\r\n", pad=100)) == (23, b"GET / HTTP/1.1\r\n\r\n")
    assert feed(d, S, srv.seal(22, bytes([4, 0, 0, 1, 0]))) == (22, bytes([4, 0, 0, 1, 0]))  # NewSessionTicket
    assert feed(d, S, srv.seal(23, b"HTTP/1.1 200 OK\r\n")) == (23, b"HTTP/1.1 200 OK\r\n")
    ku = bytes([24, 0, 0, 1, 0])
    assert feed(d, S, srv.seal(22, ku)) == (22, ku)
    srv.key_update()
    assert feed(d, S, srv.seal(23, b"after update")) == (23, b"after update")
    # a KeyUpdate the decryptor did not see (its record lost): the next generation is found as an alternate
    srv.seal(22, ku)
    srv.key_update()
    assert feed(d, S, srv.seal(23, b"after a lost update")) == (23, b"after a lost update")
    assert feed(d, S, srv.seal(23, b"and on")) == (23, b"and on")
    assert feed(d, S, srv.seal(21, b"\x01\x00")) == (21, b"\x01\x00")  # alert


def test_tls13_early_data() -> None:
    sec = _secrets13(32, early=True)
    d = RecordDecryptor(sec, bytes(32), bytes(32), 0x0304, 0x1301)
    cli = Tls13Writer(sec["CLIENT_EARLY_TRAFFIC_SECRET"], 0x1301)
    assert feed(d, C, cli.seal(23, b"GET /0rtt HTTP/1.1\r\n\r\n")) == (23, b"GET /0rtt HTTP/1.1\r\n\r\n")
    assert feed(d, C, cli.seal(23, b"more early")) == (23, b"more early")
    eoed = bytes([5, 0, 0, 0])
    assert feed(d, C, cli.seal(22, eoed)) == (22, eoed)
    cli.set(sec["CLIENT_HANDSHAKE_TRAFFIC_SECRET"])
    fin = bytes([20, 0, 0, 32]) + bytes(32)
    assert feed(d, C, cli.seal(22, fin)) == (22, fin)
    cli.set(sec["CLIENT_TRAFFIC_SECRET_0"])
    assert feed(d, C, cli.seal(23, b"GET /1rtt HTTP/1.1\r\n\r\n")) == (23, b"GET /1rtt HTTP/1.1\r\n\r\n")


def test_tls13_rejected_early_data_then_handshake() -> None:
    sec = _secrets13(32, early=True)
    d = RecordDecryptor(sec, bytes(32), bytes(32), 0x0304, 0x1303)
    early = Tls13Writer(sec["CLIENT_EARLY_TRAFFIC_SECRET"], 0x1303)
    assert feed(d, C, early.seal(23, b"early")) == (23, b"early")
    cli = Tls13Writer(sec["CLIENT_HANDSHAKE_TRAFFIC_SECRET"], 0x1303)  # no EndOfEarlyData: server rejected 0-RTT
    fin = bytes([20, 0, 0, 32]) + bytes(32)
    assert feed(d, C, cli.seal(22, fin)) == (22, fin)
    cli.set(sec["CLIENT_TRAFFIC_SECRET_0"])
    assert feed(d, C, cli.seal(23, b"app")) == (23, b"app")


def _key_block(master: bytes, cr: bytes, sr: bytes, version: int, suite: int) -> list[bytes]:
    s = TLS12_SUITES[suite]
    mac_len = {"MD5": 16, "SHA": 20, "SHA256": 32, "SHA384": 48}.get(s.mac or "", 0)
    sizes = [mac_len, mac_len, s.key_len, s.key_len, s.iv_len, s.iv_len]
    kb = prf(version, s.prf, master, b"key expansion", sr + cr, sum(sizes))
    out, pos = [], 0
    for n in sizes:
        out.append(kb[pos:pos + n])
        pos += n
    return out


def test_tls12_chacha20() -> None:
    master, cr, sr = b"\x07" * 48, b"\x01" * 32, b"\x02" * 32
    _, _, ck, sk, civ, siv = _key_block(master, cr, sr, 0x0303, 0xCCA8)
    d = RecordDecryptor({"CLIENT_RANDOM": master}, cr, sr, 0x0303, 0xCCA8)
    assert d.supported
    for direction, key, iv in ((C, ck, civ), (S, sk, siv)):
        for seq, (ctype, msg) in enumerate([(22, b"\x14\x00\x00\x0c" + bytes(12)), (23, b"GET / HTTP/1.1\r\n")]):
            aad = seq.to_bytes(8, "big") + bytes([ctype, 3, 3]) + len(msg).to_bytes(2, "big")
            nonce = (int.from_bytes(iv, "big") ^ seq).to_bytes(12, "big")
            ct = ChaCha20Poly1305(key).encrypt(nonce, msg, aad)
            assert d.decrypt(direction, ctype, 0x0303, ct) == (ctype, msg)


@pytest.mark.parametrize("version", [0x0301, 0x0302, 0x0303])
@pytest.mark.parametrize("etm", [False, True])
def test_tls_cbc_mac_then_encrypt_and_encrypt_then_mac(version: int, etm: bool) -> None:
    suite = 0xC013  # ECDHE_RSA_WITH_AES_128_CBC_SHA
    master, cr, sr = b"\x09" * 48, b"\x03" * 32, b"\x04" * 32
    cmac, _, ck, _, civ, _ = _key_block(master, cr, sr, version, suite)
    d = RecordDecryptor({"CLIENT_RANDOM": master}, cr, sr, version, suite)
    assert d.supported
    iv = civ
    for seq, (ctype, msg) in enumerate([(22, b"\x14\x00\x00\x0c" + bytes(12)), (23, b"GET / HTTP/1.1\r\n" * 5),
                                        (23, b"x")]):
        def mac(data: bytes, seq: int = seq, ctype: int = ctype) -> bytes:
            m = hmac.HMAC(cmac, hashes.SHA1())
            m.update(seq.to_bytes(8, "big") + bytes([ctype]) + version.to_bytes(2, "big")
                     + len(data).to_bytes(2, "big") + data)
            return m.finalize()

        body = msg if etm else msg + mac(msg)
        pad = 15 - len(body) % 16
        body += bytes([pad]) * (pad + 1)
        rec_iv = bytes([seq + 0x40]) * 16 if version >= 0x0302 else iv
        enc = Cipher(algorithms.AES(ck), modes.CBC(rec_iv)).encryptor()
        ct = enc.update(body) + enc.finalize()
        wire = (rec_iv + ct) if version >= 0x0302 else ct
        iv = ct[-16:]
        if etm:
            wire += mac(wire)
        assert d.decrypt(C, ctype, version, wire) == (ctype, msg)


# ---------------------------------------------------------------------------------------------- refusals


def test_missing_secrets_and_unsupported() -> None:
    d = RecordDecryptor({}, bytes(32), bytes(32), 0x0303, 0xC02F)
    assert not d.supported and d.why_not and "CLIENT_RANDOM" in d.why_not
    d = RecordDecryptor({"CLIENT_TRAFFIC_SECRET_0": bytes(32)}, bytes(32), bytes(32), 0x0304, 0x1301)
    assert d.supported  # one direction is enough to start
    assert "SERVER_TRAFFIC_SECRET_0" in d.missing
    d = RecordDecryptor({"CLIENT_RANDOM": bytes(48)}, bytes(32), bytes(32), 0x0304, 0x1301)
    assert not d.supported and d.why_not
    d = RecordDecryptor(RFC_SECRETS, bytes(32), bytes(32), 0x0304, 0x1304)  # AES_128_CCM
    assert not d.supported and d.why_not and "0x1304" in d.why_not
    d = RecordDecryptor({"CLIENT_RANDOM": bytes(48)}, bytes(32), bytes(32), 0x0303, 0xFFFF)
    assert not d.supported and d.why_not
    d = RecordDecryptor({"CLIENT_RANDOM": bytes(48)}, bytes(32), bytes(32), 0x0300, 0x002F)  # SSL 3.0
    assert not d.supported and d.why_not
    d = RecordDecryptor({"CLIENT_RANDOM": bytes(48)}, bytes(32), bytes(32), 0x0302, 0xC02F)  # GCM needs 1.2
    assert not d.supported and d.why_not
    d = RecordDecryptor(RFC_SECRETS, bytes(32), bytes(32), 0x7F12, 0x1301)  # draft 18
    assert not d.supported and d.why_not
    assert d.decrypt(S, 23, 0x0303, RFC_SERVER_APP[5:]) is None
    # odd arguments never raise
    bad: Any = None
    d = RecordDecryptor(bad, bad, bad, 0x0303, 0xC02F)
    assert not d.supported and d.why_not
    d = RecordDecryptor(RFC_SECRETS, bytes(32), bytes(32), 0x0304, None)
    assert not d.supported and d.why_not


def test_tls12_wrong_master_secret() -> None:
    master, cr, sr = b"\x07" * 48, b"\x01" * 32, b"\x02" * 32
    _, _, ck, _, civ, _ = _key_block(master, cr, sr, 0x0303, 0xC02F)
    msg = b"GET / HTTP/1.1\r\n"
    aad = bytes(8) + bytes([22, 3, 3]) + len(msg).to_bytes(2, "big")
    wire = b"\x00" * 8 + AESGCM(ck).encrypt(civ + b"\x00" * 8, msg, aad)
    good = RecordDecryptor({"CLIENT_RANDOM": master}, cr, sr, 0x0303, 0xC02F)
    bad = RecordDecryptor({"CLIENT_RANDOM": b"\x06" + master[1:]}, cr, sr, 0x0303, 0xC02F)
    assert bad.decrypt(C, 22, 0x0303, wire) is None
    assert good.decrypt(S, 22, 0x0303, wire) is None  # the other direction's key
    assert good.decrypt(C, 22, 0x0303, wire) == (22, msg)


MAX_BIG = 40000  # larger than any TLS record
DECRYPTORS = [
    (RFC_SECRETS, 0x0304, 0x1301), (_secrets13(48, early=True), 0x0304, 0x1302), (_secrets13(32), 0x0304, 0x1303),
    *(({"CLIENT_RANDOM": bytes(48)}, 0x0303, s) for s in (0xC02F, 0xC030, 0xCCA8, 0xC013, 0xC028, 0x0005, 0x000A,
                                                          0x0002, 0x0041)),
    ({"CLIENT_RANDOM": bytes(48)}, 0x0301, 0x002F),
]


@given(st.integers(0, len(DECRYPTORS) - 1),
       st.lists(st.tuples(st.integers(-1, 2), st.integers(-5, 300), st.integers(-1, 0x10000),
                          st.binary(max_size=300)), max_size=12))
@settings(max_examples=300, deadline=None)
def test_random_records_never_raise(which: int, records: list[tuple[int, int, int, bytes]]) -> None:
    secrets, version, suite = DECRYPTORS[which]
    d = RecordDecryptor(secrets, bytes(32), bytes(32), version, suite)
    assert d.supported
    for direction, ctype, rversion, payload in records:
        assert d.decrypt(direction, ctype, rversion, payload) is None  # random bytes never authenticate
    assert d.decrypt(0, 23, 0x0303, bytes(MAX_BIG)) is None



# ---------------------------------------------------------------------------------------------- corpus

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None or not CORPUS.is_dir(),
                                  reason="tshark or ../shared/corpus missing")


def _tcp_directions(path: Path) -> dict[tuple[int, int], bytes]:
    """(tcp.stream, source port) -> the direction's bytes, reassembled naively by sequence number."""
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "tcp.len>0", "-T", "fields", "-e", "tcp.stream", "-e", "tcp.srcport",
         "-e", "tcp.seq", "-e", "tcp.payload", "-o", "tcp.relative_sequence_numbers:TRUE",
         "-o", "tcp.desegment_tcp_streams:FALSE"], capture_output=True, text=True, check=True, timeout=120).stdout
    segs: dict[tuple[int, int], list[tuple[int, bytes]]] = defaultdict(list)
    for line in out.splitlines():
        f_stream, f_port, f_seq, f_payload = line.split("\t")
        segs[(int(f_stream), int(f_port))].append((int(f_seq), bytes.fromhex(f_payload.replace(":", ""))))
    data = {}
    for k, lst in segs.items():
        lst.sort(key=lambda x: x[0])
        buf, start = bytearray(), lst[0][0]
        for seq, p in lst:
            off = seq - start
            if off > len(buf):
                break  # a hole: stop there
            if off + len(p) > len(buf):
                buf += p[len(buf) - off:]
        data[k] = bytes(buf)
    return data


def _records(buf: bytes) -> Iterator[tuple[int, int, bytes]]:
    pos = 0
    while pos + 5 <= len(buf):
        n = int.from_bytes(buf[pos + 3:pos + 5], "big")
        if pos + 5 + n > len(buf):
            return
        yield buf[pos], int.from_bytes(buf[pos + 1:pos + 3], "big"), buf[pos + 5:pos + 5 + n]
        pos += 5 + n


def _hello(recs: list[tuple[int, int, bytes]], msg_type: int) -> bytes | None:
    """The body of the first handshake message of that type in the plaintext records before the first other one."""
    lead = b""
    for t, _, p in recs:
        if t != 22:
            break
        lead += p
    pos = 0
    while pos + 4 <= len(lead):
        n = int.from_bytes(lead[pos + 1:pos + 4], "big")
        if lead[pos] == msg_type:
            return lead[pos + 4:pos + 4 + n]
        pos += 4 + n
    return None


def _decrypt_connection(c2s: bytes, s2c: bytes, keylog: KeyLog) -> dict[str, Any]:
    crecs, srecs = list(_records(c2s)), list(_records(s2c))
    ch, shb = _hello(crecs, 1), _hello(srecs, 2)
    assert ch is not None and shb is not None
    client_random = ch[2:34]
    sh, err = parse_server_hello(shb)
    assert err is None and sh.cipher_suite is not None
    d = RecordDecryptor(keylog.get(client_random) or {}, client_random, sh.random, sh.version, sh.cipher_suite)
    assert d.supported, d.why_not
    plain: dict[int, list[tuple[int, bytes]]] = {C: [], S: []}
    failed = 0
    for direction, recs in ((S, srecs), (C, crecs)):
        protected = False
        for t, v, p in recs:
            if sh.version == 0x0304:
                if t != 23:
                    continue
            elif not protected:
                protected = t == 20  # ChangeCipherSpec: everything after it is protected
                continue
            res = d.decrypt(direction, t, v, p)
            if res is None:
                failed += 1
            else:
                plain[direction].append(res)
    return {"suite": sh.cipher_suite, "version": sh.version, "plain": plain, "failed": failed}


def _h2_client_streams(data: bytes) -> int:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    assert data.startswith(preface)
    pos, streams = len(preface), set()
    while pos + 9 <= len(data):
        n = int.from_bytes(data[pos:pos + 3], "big")
        ftype, sid = data[pos + 3], int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        if ftype == 1 and sid % 2 == 1:
            streams.add(sid)
        pos += 9 + n
    return len(streams)


REQUEST_LINE = re.compile(rb"(?m)^(?:GET|POST|HEAD|PUT|DELETE|OPTIONS|PATCH) \S+ HTTP/1\.[01]\r?\n")

CAPTURES = [
    ("illustrated/illustrated-tls13.pcap", "illustrated/illustrated-tls13.keylog"),
    ("illustrated/illustrated-tls12.pcap", "illustrated/illustrated-tls12.keylog"),
    ("zeek/tls/tls12-decryption.pcap", "zeek/tls/tls12-decryption.keylog"),
    ("zeek/tls/tls-1.2-stream-keylog.pcap", "zeek/tls/tls-1.2-stream-keylog.keylog"),
    ("pcapfs/all_ciphers.pcap", "pcapfs/all_ciphers.keylog"),
    ("pcap2har-mikekap/http2-dump.pcap", None),  # a pcapng despite its name, keys in a DSB
    ("pcap2har-mikekap/firefox-tls13-facebook-dsb.pcapng", None),
]


@needs_tshark
@pytest.mark.parametrize(("capture", "keylog_file"), CAPTURES)
def test_corpus_decrypts_like_tshark(capture: str, keylog_file: str | None) -> None:
    path = CORPUS / capture
    if keylog_file is not None:
        keylog = KeyLog.parse((CORPUS / keylog_file).read_text())
    else:
        with open_capture(path) as reader:
            for _ in reader.batches():
                pass
            keylog = KeyLog.from_pcapng_secrets(reader.decryption_secrets)
    assert len(keylog) > 0 and keylog.bad_lines == 0
    oracle = json.loads((CORPUS / "oracle" / f"{capture}.json").read_text())
    directions = _tcp_directions(path)
    assert oracle["tcp"]
    for conn in oracle["tcp"]:
        sid = conn["tcp_stream"]
        cport, sport = int(conn["client"].rsplit(":", 1)[1]), int(conn["server"].rsplit(":", 1)[1])
        r = _decrypt_connection(directions.get((sid, cport), b""), directions.get((sid, sport), b""), keylog)
        where = f"{capture} stream {sid} suite 0x{r['suite']:04x}"
        assert r["failed"] == 0, where
        client_app = b"".join(pt for t, pt in r["plain"][C] if t == 23)
        server_app = b"".join(pt for t, pt in r["plain"][S] if t == 23)
        assert client_app and server_app, where
        # the first protected record of each direction is the handshake's Finished
        assert all(r["plain"][d][0][0] == 22 and r["plain"][d][0][1][:1] in (b"\x14", b"\x08")
                   for d in (C, S)), where
        if conn.get("http2"):
            assert _h2_client_streams(client_app) == conn["http2"]["client_streams_with_headers_frame"], where
            assert server_app[3] == 4  # the server's SETTINGS frame
        else:
            requests = len(REQUEST_LINE.findall(client_app))
            assert requests == (conn.get("http1") or {}).get("requests", 0), where
            if requests:
                assert REQUEST_LINE.match(client_app) and server_app.startswith(b"HTTP/1."), where
