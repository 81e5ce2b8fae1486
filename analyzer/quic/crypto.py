"""QUIC Initial packet protection (RFC 9001 §5, RFC 9369 §3.3.1–3.3.3): keys from the connection id, header
protection removal and AES-128-GCM payload decryption, with ``cryptography``'s primitives.

Initial keys are public: anyone who sees the client's first Destination Connection ID can derive them.

- ``initial_secret = HKDF-Extract(salt(version), client_dcid)``
- ``client_secret = HKDF-Expand-Label(initial_secret, "client in", "", 32)`` (``"server in"`` for the server)
- ``key = HKDF-Expand-Label(secret, "quic key", "", 16)``, ``iv = ... "quic iv" ... 12``,
  ``hp = ... "quic hp" ... 16``; QUIC v2 uses the labels ``"quicv2 key"``, ``"quicv2 iv"``, ``"quicv2 hp"``.
- HKDF-Expand-Label (RFC 8446 §7.1): HKDF-Expand with ``info = uint16 length || uint8 len("tls13 " + label)
  || "tls13 " + label || uint8 len(context) || context``.
- Header protection (RFC 9001 §5.4): ``mask = AES-128-ECB(hp, sample)``, the sample being the 16 bytes at
  ``pn_offset + 4``; the low 4 bits of a long header's first byte and the packet number bytes are XORed
  with the mask.
- Payload (RFC 9001 §5.3): AES-128-GCM, ``nonce = iv XOR packet_number`` (left-padded), associated data =
  the unprotected header up to and including the packet number.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

VERSION_NEGOTIATION = 0x00000000
QUIC_V1 = 0x00000001
QUIC_V2 = 0x6B3343CF  # RFC 9369
DRAFT_29 = 0xFF00001D

# initial salts (RFC 9001 §5.2, RFC 9369 §3.3.1, draft-ietf-quic-tls-23 … -32)
SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
SALT_V2 = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")
SALT_DRAFT_29 = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")  # drafts 29 … 32
SALT_DRAFT_23 = bytes.fromhex("c3eef712c72ebb5a11a7d2432bb46365bef9f502")  # drafts 23 … 28


def initial_salt(version: int) -> bytes | None:
    """The Initial salt of a version we can decrypt, else None."""
    if version == QUIC_V1:
        return SALT_V1
    if version == QUIC_V2:
        return SALT_V2
    if version >> 8 == 0xFF0000:
        draft = version & 0xFF
        if 29 <= draft <= 32:
            return SALT_DRAFT_29
        if 23 <= draft <= 28:
            return SALT_DRAFT_23
    return None


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    h = hmac.HMAC(salt, hashes.SHA256())
    h.update(ikm)
    return h.finalize()


def hkdf_expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(secret)


@dataclass(frozen=True, slots=True)
class InitialSecrets:
    """One direction's Initial keys. ``hp_ecb`` and ``aead`` are ready-made cipher objects."""

    secret: bytes
    key: bytes
    iv: bytes
    hp: bytes
    hp_ecb: CipherContext
    aead: AESGCM


def derive_initial_secrets(version: int, dcid: bytes, server: bool) -> InitialSecrets | None:
    """The client's (``server`` False) or server's Initial keys for ``version`` and the client's DCID."""
    salt = initial_salt(version)
    if salt is None:
        return None
    initial = hkdf_extract(salt, dcid)
    secret = hkdf_expand_label(initial, b"server in" if server else b"client in", b"", 32)
    prefix = b"quicv2 " if version == QUIC_V2 else b"quic "
    key = hkdf_expand_label(secret, prefix + b"key", b"", 16)
    iv = hkdf_expand_label(secret, prefix + b"iv", b"", 12)
    hp = hkdf_expand_label(secret, prefix + b"hp", b"", 16)
    ecb = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()  # stateless mode: one context serves every sample
    return InitialSecrets(secret, key, iv, hp, ecb, AESGCM(key))


def header_mask(keys: InitialSecrets, sample: bytes) -> bytes:
    """The 5-byte header protection mask for a 16-byte ``sample``."""
    return keys.hp_ecb.update(sample)[:5]


def decode_packet_number(truncated: int, nbits: int, largest: int | None) -> int:
    """RFC 9000 appendix A.3: the full packet number closest to ``largest + 1``."""
    expected = 0 if largest is None else largest + 1
    win = 1 << nbits
    hwin = win // 2
    mask = win - 1
    candidate = (expected & ~mask) | truncated
    if candidate <= expected - hwin and candidate < (1 << 62) - win:
        return candidate + win
    if candidate > expected + hwin and candidate >= win:
        return candidate - win
    return candidate


def nonce(iv: bytes, pn: int) -> bytes:
    return (int.from_bytes(iv, "big") ^ pn).to_bytes(len(iv), "big")


def unprotect_long(keys: InitialSecrets, packet: bytes, pn_offset: int, end: int,
                   largest: int | None) -> tuple[bytes, int, bytes] | None:
    """Remove header protection and decrypt one long-header packet ``packet[:end]`` whose packet number
    starts at ``pn_offset``. Returns (unprotected header, packet number, plaintext), or None when the packet
    is too short for a sample or does not authenticate."""
    if pn_offset + 20 > end or end > len(packet):
        return None
    mask = header_mask(keys, packet[pn_offset + 4:pn_offset + 20])
    first = packet[0] ^ (mask[0] & 0x0F)
    pn_len = (first & 0x03) + 1
    if pn_offset + pn_len + 16 > end:
        return None
    truncated = 0
    pn_bytes = bytearray(pn_len)
    for i in range(pn_len):
        pn_bytes[i] = packet[pn_offset + i] ^ mask[1 + i]
        truncated = (truncated << 8) | pn_bytes[i]
    header = bytes([first]) + packet[1:pn_offset] + bytes(pn_bytes)
    pn = decode_packet_number(truncated, pn_len * 8, largest)
    try:
        plain = keys.aead.decrypt(nonce(keys.iv, pn), packet[pn_offset + pn_len:end], header)
    except InvalidTag:
        return None
    return header, pn, plain


def protect_long(keys: InitialSecrets, header: bytes, pn_len: int, pn: int, plaintext: bytes) -> bytes:
    """The inverse of :func:`unprotect_long` (for tests and synthetic traffic): ``header`` is the
    unprotected header ending with the ``pn_len``-byte packet number."""
    ciphertext = keys.aead.encrypt(nonce(keys.iv, pn), plaintext, header)
    pn_offset = len(header) - pn_len
    sample = ciphertext[4 - pn_len:20 - pn_len]
    mask = header_mask(keys, sample)
    out = bytearray(header)
    out[0] ^= mask[0] & 0x0F
    for i in range(pn_len):
        out[pn_offset + i] ^= mask[1 + i]
    return bytes(out) + ciphertext
