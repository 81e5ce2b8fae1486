"""TLS key logs: the NSS ``SSLKEYLOGFILE`` format and pcapng Decryption Secrets Blocks, parsed into secrets.

This module owns reading the secrets that make passive TLS decryption possible; the record cryptography that
uses them lives in :mod:`analyzer.tls.decrypt`.

Definitions:

* A *key log* is text with one secret per line: ``LABEL <client_random hex> <secret hex>``; ``#`` starts a
  comment line, blank lines are allowed (NSS key log format, as written by browsers, curl, OpenSSL's
  ``SSL_CTX_set_keylog_callback`` and Wireshark).
* The *client random* (32 bytes, from the ClientHello) identifies the TLS connection a secret belongs to.
* Labels kept: ``CLIENT_RANDOM`` (TLS <= 1.2 master secret, 48 bytes) and the TLS 1.3 traffic secrets
  ``CLIENT_EARLY_TRAFFIC_SECRET``, ``CLIENT_HANDSHAKE_TRAFFIC_SECRET``, ``SERVER_HANDSHAKE_TRAFFIC_SECRET``,
  ``CLIENT_TRAFFIC_SECRET_0``, ``SERVER_TRAFFIC_SECRET_0``. Other well-formed labels (``EXPORTER_SECRET``,
  ``EARLY_EXPORTER_SECRET``, the ``RSA`` pre-master lines keyed by encrypted pre-master, ECH lines) are
  ignored without counting as errors.
* A pcapng *Decryption Secrets Block* (DSB) of type ``0x544c534b`` ("TLSK") carries key log text embedded in
  the capture; other DSB types (WireGuard, ZigBee, ...) are ignored.

Malformed lines (wrong field count, bad hex, a client random that is not 32 bytes, a master secret that is
not 48 bytes) are counted in ``bad_lines``; parsing never raises.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field

DSB_TLS_KEY_LOG = 0x544C534B  # pcapng secrets_type "TLSK"

CLIENT_RANDOM = "CLIENT_RANDOM"
CLIENT_EARLY_TRAFFIC_SECRET = "CLIENT_EARLY_TRAFFIC_SECRET"
CLIENT_HANDSHAKE_TRAFFIC_SECRET = "CLIENT_HANDSHAKE_TRAFFIC_SECRET"
SERVER_HANDSHAKE_TRAFFIC_SECRET = "SERVER_HANDSHAKE_TRAFFIC_SECRET"
CLIENT_TRAFFIC_SECRET_0 = "CLIENT_TRAFFIC_SECRET_0"
SERVER_TRAFFIC_SECRET_0 = "SERVER_TRAFFIC_SECRET_0"

KEPT_LABELS = frozenset({CLIENT_RANDOM, CLIENT_EARLY_TRAFFIC_SECRET, CLIENT_HANDSHAKE_TRAFFIC_SECRET,
                         SERVER_HANDSHAKE_TRAFFIC_SECRET, CLIENT_TRAFFIC_SECRET_0, SERVER_TRAFFIC_SECRET_0})
# well-formed lines we do not need (not counted as bad)
IGNORED_LABELS = frozenset({"EXPORTER_SECRET", "EARLY_EXPORTER_SECRET", "RSA", "RSA_SESSION", "PMS_CLIENT_RANDOM",
                            "ECH_SECRET", "ECH_CONFIG", "CLIENT_TRAFFIC_SECRET_N", "SERVER_TRAFFIC_SECRET_N"})

MAX_SECRET_LEN = 128  # longest TLS secret is 48 bytes (SHA-384); anything much longer is garbage


def _unhex(s: str) -> bytes | None:
    try:
        return binascii.unhexlify(s)
    except (binascii.Error, ValueError):
        return None


@dataclass
class KeyLog:
    """Secrets by client random: ``secrets[client_random][label] = secret``."""

    secrets: dict[bytes, dict[str, bytes]] = field(default_factory=dict)
    bad_lines: int = 0

    @classmethod
    def parse(cls, text: str) -> KeyLog:
        kl = cls()
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 3:
                kl.bad_lines += 1
                continue
            label, cr_hex, secret_hex = parts
            if label in IGNORED_LABELS:
                continue
            if label not in KEPT_LABELS:
                # an unknown label in the right shape (future NSS labels) is ignored, anything else is bad
                if not (label.replace("_", "").isalnum() and label.upper() == label):
                    kl.bad_lines += 1
                continue
            cr = _unhex(cr_hex)
            secret = _unhex(secret_hex)
            if (cr is None or secret is None or len(cr) != 32 or not secret or len(secret) > MAX_SECRET_LEN
                    or (label == CLIENT_RANDOM and len(secret) != 48)):
                kl.bad_lines += 1
                continue
            kl.secrets.setdefault(cr, {})[label] = secret
        return kl

    @classmethod
    def from_pcapng_secrets(cls, blocks: list[tuple[int, bytes]]) -> KeyLog:
        kl = cls()
        for item in blocks:
            try:
                stype, data = item
            except (TypeError, ValueError):
                continue
            if stype != DSB_TLS_KEY_LOG or not isinstance(data, (bytes, bytearray, memoryview)):
                continue
            kl = kl.merge(cls.parse(bytes(data).decode("utf-8", "replace")))
        return kl

    def merge(self, other: KeyLog) -> KeyLog:
        """A new key log with the secrets of both (``other`` wins where both have the same label)."""
        out: dict[bytes, dict[str, bytes]] = {cr: dict(d) for cr, d in self.secrets.items()}
        for cr, d in other.secrets.items():
            out.setdefault(cr, {}).update(d)
        return KeyLog(out, self.bad_lines + other.bad_lines)

    def get(self, client_random: bytes) -> dict[str, bytes] | None:
        return self.secrets.get(bytes(client_random))

    def __len__(self) -> int:
        return len(self.secrets)
