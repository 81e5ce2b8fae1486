"""An undecrypted TLS connection as the pipeline sees it: the handler interface of
``analyzer.http.transactions.Http1Connection`` over a ``TlsObserver``.

It owns turning what the observer saw into table rows: the connection's TLS facts (version, SNI, ALPN,
resumption, handshake time and round trips) and, without keys, the *estimated* exchanges of HTTP/1.x over
TLS (``TlsFacts.exchanges``: a client burst of application-data records and the server burst after it).
It knows nothing of packets or TCP.

Definitions:

- ``protocol``: the ALPN protocol the server selected when it is visible (``h2``, ``http/1.1``, TLS <= 1.2);
  ``tls`` otherwise (TLS 1.3 encrypts the selection).
- Transactions of an undecrypted connection are estimates (column ``estimated`` true), one per exchange,
  except when the protocol is ``h2``: bursts mean nothing for a multiplexed protocol, so an ``h2``
  connection has no transaction rows and an unknown ``requests`` count. Estimated rows have times, the
  SNI as ``host``, ``idle_before_ms`` (previous exchange's response end → this request's first record),
  ``reused`` (not the first), ``keep_alive`` (true when another exchange followed, unknown for the last);
  method, target, status and sizes are unknown (null). ``pipelined`` is unknown: bursts cannot show it.
- ``tls_handshake_ms``: the ClientHello's first byte → the client's first application-data record
  (``TlsFacts.ts_first_client_app_data_ns``), as seen at the capture point.

With a key log (``KeyLog``: SSLKEYLOGFILE lines, or a pcapng's Decryption Secrets Blocks) the connection is
decrypted (``analyzer.tls.decrypt.RecordDecryptor``, set up once both hellos are seen: the client random
picks the secrets): each direction's records are decrypted in order and the application data is fed, as
plaintext ``StreamChunk``s (one piece per record, timed by the record's first byte and completion), to an
inner connection handler (``inner_factory``: the pipeline's protocol switch, so HTTP/1 and HTTP/2 are
recognised as in cleartext). Its transactions replace the estimate (``tls_decrypted`` true; ``protocol``
``h2`` for HTTP/2); response offsets are mapped back to the TCP stream through the records. In TLS 1.3 the
selected ALPN is read from the decrypted EncryptedExtensions. Records that arrive before the decryptor can
be set up wait, at most ``MAX_PENDING_RECORD_BYTES``. Missing secrets, an unsupported suite, a record that
does not authenticate, or a record with bytes missing from the capture stop decryption of that direction
with an anomaly (``tls_no_key``, ``tls_decrypt_unsupported``, ``tls_decrypt_failed``,
``tls_decrypt_gap``, ``tls_decrypt_buffer_limit``); never an exception.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from analyzer.flows.stream import StreamChunk
from analyzer.http.packing import BlockStore
from analyzer.http.rows import TransactionRows
from analyzer.http.transactions import SealedHttp1
from analyzer.tls.decrypt import RecordDecryptor
from analyzer.tls.keylog import KeyLog
from analyzer.tls.observer import Record, TlsFacts, TlsObserver

MAX_PENDING_RECORD_BYTES = 4 << 20  # encrypted bytes held while the decryptor cannot be set up yet
CT_ALERT, CT_HANDSHAKE, CT_APPLICATION_DATA = 21, 22, 23
TLS13 = 0x0304


class InnerHandler(Protocol):
    """What the decrypted streams are fed to (``analyzer.dispatch.ConnectionHandler``)."""

    def feed(self, direction: int, chunk: StreamChunk) -> None: ...
    def transaction_rows(self, server_ip: str, server_port: int) -> tuple[TransactionRows, dict[str, Any]]: ...
    def anomalies(self) -> list[tuple[int, str, str]]: ...

ALPN_PROTOCOLS = {"h2": "h2", "http/1.1": "http/1.1", "http/1.0": "http/1.0"}


def tls_protocol(facts: TlsFacts) -> str:
    """The connection's ``protocol`` column (see the module docstring)."""
    return ALPN_PROTOCOLS.get(facts.alpn or "", "tls")


def encrypted_extensions_alpn(plaintext: bytes) -> str | None:
    """The ALPN protocol in a decrypted TLS 1.3 EncryptedExtensions message, if the handshake plaintext
    holds one (several handshake messages may share the plaintext)."""
    pos = 0
    while pos + 4 <= len(plaintext):
        mtype, length = plaintext[pos], int.from_bytes(plaintext[pos + 1: pos + 4], "big")
        body = plaintext[pos + 4: pos + 4 + length]
        pos += 4 + length
        if mtype != 8 or len(body) < 2:
            continue
        end = min(len(body), 2 + int.from_bytes(body[0:2], "big"))
        i = 2
        while i + 4 <= end:
            etype, elen = int.from_bytes(body[i: i + 2], "big"), int.from_bytes(body[i + 2: i + 4], "big")
            ext = body[i + 4: i + 4 + elen]
            i += 4 + elen
            if etype == 16 and len(ext) >= 3 and 3 + ext[2] <= len(ext):
                return ext[3: 3 + ext[2]].decode("latin-1")
    return None


def tls_columns(facts: TlsFacts) -> dict[str, Any]:
    """The connections-table columns that come from the handshake."""
    handshake_ms = None
    if facts.ts_client_hello_ns is not None and facts.ts_first_client_app_data_ns is not None:
        handshake_ms = (facts.ts_first_client_app_data_ns - facts.ts_client_hello_ns) / 1e6
    return {
        "tls": facts.tls,
        "tls_version": facts.version,
        "sni": facts.sni,
        "alpn": facts.alpn,
        "alpn_offered": ",".join(facts.alpn_offered) if facts.alpn_offered else None,
        "tls_cipher_suite": facts.cipher_suite,
        "tls_resumed": facts.resumed,
        "tls_round_trips": facts.handshake_round_trips,
        "tls_handshake_ms": handshake_ms,
    }


class TlsConnection:
    """Both directions of one TLS connection. ``feed(direction, chunk)``; then the results. Without a key
    log (or without the secrets of this connection) the exchanges are estimated; with them, decrypted."""

    def __init__(self, keylog: KeyLog | None = None,
                 inner_factory: Callable[[], InnerHandler] | None = None, store: BlockStore | None = None) -> None:
        """``store``: where the blocks of the estimated rows go (``analyzer.http.packing``; None: held)."""
        self.store = store
        # an empty key log (no --keylog, no Decryption Secrets Block read so far) costs nothing
        self.keylog = keylog if keylog is not None and len(keylog) and inner_factory is not None else None
        self.observer = TlsObserver(self._on_record if self.keylog is not None else None)
        self.inner_factory = inner_factory
        self.inner: InnerHandler | None = None
        self.decryptor: RecordDecryptor | None = None
        self.off = False  # decryption given up (no key, unsupported, ...)
        self.pending: list[tuple[int, Record]] = []
        self.pending_bytes = 0
        self.client_dir = 0
        self.stopped = [False, False]  # per role (0 client, 1 server): decryption of that direction ended
        self.plain_off = [0, 0]
        self.server_map: tuple[list[int], list[int], list[int]] = ([], [], [])  # plain start, record start/end
        self.alpn_ee: str | None = None
        self.version = 0
        self._anomalies: list[tuple[int, str, str]] = []

    def feed(self, direction: int, chunk: StreamChunk) -> None:
        self.observer.feed(direction, chunk)

    def anomalies(self) -> list[tuple[int, str, str]]:
        inner = self.inner.anomalies() if self.inner is not None else []
        return self.observer.anomalies() + self._anomalies + inner

    def seal(self, server_ip: str, server_port: int) -> SealedHttp1:
        for d in (0, 1):
            self.observer.feed(d, StreamChunk.empty(final=True))
        rows, facts = self.transaction_rows(server_ip, server_port)
        return SealedHttp1(rows, facts, self.anomalies())

    # ------------------------------------------------------------------------------------- decryption
    def _on_record(self, direction: int, record: Record) -> None:
        if self.off:
            return
        if self.decryptor is None and not self._set_up(record.ts_ns):
            if not self.off:
                size = len(record.payload or b"")
                if self.pending_bytes + size > MAX_PENDING_RECORD_BYTES:
                    self._give_up(record.ts_ns, "tls_decrypt_buffer_limit",
                                  f"more than {MAX_PENDING_RECORD_BYTES} encrypted bytes before both hellos")
                    return
                self.pending.append((direction, record))
                self.pending_bytes += size
            return
        if self.pending:
            waiting, self.pending, self.pending_bytes = self.pending, [], 0
            for d, rec in waiting:
                self._decrypt(d, rec)
        self._decrypt(direction, record)

    def _set_up(self, ts: int) -> bool:
        ch, sh, c_dir = self.observer.hellos()
        if ch is None or sh is None or self.keylog is None:
            return False
        if not len(self.keylog):  # no key log at all: nothing to report, just stop collecting records
            self.off = True
            self.pending, self.pending_bytes = [], 0
            self.observer.stop_records()
            return False
        secrets = self.keylog.get(ch.random)
        if not secrets:
            self._give_up(ts, "tls_no_key", f"no key log entry for client random {ch.random.hex()[:16]}…")
            return False
        version = sh.version
        dec = RecordDecryptor(secrets, ch.random, sh.random, version, sh.cipher_suite)
        if not dec.supported:
            self._give_up(ts, "tls_decrypt_unsupported", dec.why_not or "unsupported")
            return False
        self.decryptor, self.client_dir, self.version = dec, c_dir, version
        assert self.inner_factory is not None
        self.inner = self.inner_factory()
        return True

    def _give_up(self, ts: int, name: str, detail: str) -> None:
        self.off = True
        self.pending, self.pending_bytes = [], 0
        self.observer.stop_records()
        self._anomalies.append((ts, name, detail))

    def _decrypt(self, direction: int, rec: Record) -> None:
        role = 0 if direction == self.client_dir else 1
        if self.stopped[role] or self.decryptor is None or self.inner is None:
            return
        if self.version == TLS13 and rec.content_type != CT_APPLICATION_DATA:
            return
        side = "client" if role == 0 else "server"
        if rec.payload is None:
            self.stopped[role] = True
            self._anomalies.append((rec.ts_ns, "tls_decrypt_gap", f"{side}: a record at offset {rec.offset} is not "
                                                                 "all in the capture: decryption stops there"))
            return
        out = self.decryptor.decrypt(role, rec.content_type, rec.version, rec.payload)
        if out is None:
            self.stopped[role] = True
            self._anomalies.append((rec.ts_ns, "tls_decrypt_failed", f"{side}: the record at offset {rec.offset} "
                                                                    "does not authenticate with the logged keys"))
            return
        inner_type, plain = out
        if inner_type == CT_HANDSHAKE and role == 1 and self.alpn_ee is None:
            self.alpn_ee = encrypted_extensions_alpn(plain)
        if inner_type != CT_APPLICATION_DATA or not plain:
            return
        start = self.plain_off[role]
        self.plain_off[role] = start + len(plain)
        if role == 1:
            self.server_map[0].append(start)
            self.server_map[1].append(rec.offset)
            self.server_map[2].append(rec.offset + 5 + len(rec.payload))
        one = np.ones(1, dtype=np.int64)
        chunk = StreamChunk(one * start, one * (start + len(plain)), np.zeros(1, dtype=np.int8), one * 0,
                            one * rec.ts_ns, one * rec.done_ns, (np.frombuffer(plain, dtype=np.uint8),))
        self.inner.feed(role, chunk)

    def _tcp_spans(self, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Responses' plaintext offsets (-1: none) → the TCP stream offsets of the records that carried them
        (-1 and -1: none)."""
        starts, rec_start, rec_end = self.server_map
        none = np.full(len(start), -1, dtype=np.int64)
        if not starts:
            return none, none.copy()
        at = np.asarray(starts, dtype=np.int64)
        a = np.searchsorted(at, start, side="right") - 1
        b = np.searchsorted(at, end - 1, side="right") - 1
        ok = (start >= 0) & (end > start) & (a >= 0) & (b >= 0)
        tcp_start, tcp_end = none, none.copy()
        tcp_start[ok] = np.asarray(rec_start, dtype=np.int64)[a[ok]]
        tcp_end[ok] = np.asarray(rec_end, dtype=np.int64)[b[ok]]
        return tcp_start, tcp_end

    def _decrypted_rows(self, server_ip: str, server_port: int, tf: TlsFacts
                        ) -> tuple[TransactionRows, dict[str, Any]] | None:
        if self.inner is None or not any(self.plain_off):
            return None
        for role in (0, 1):
            self.inner.feed(role, StreamChunk.empty(final=True))
        rows, facts = self.inner.transaction_rows(server_ip, server_port)
        rows.set_spans(*self._tcp_spans(*rows.spans()))
        facts = dict(facts)
        protocol = facts.get("protocol")
        facts["protocol"] = "h2" if protocol == "h2c" else protocol
        columns = tls_columns(tf)
        if columns["alpn"] is None and self.alpn_ee is not None:
            columns["alpn"] = self.alpn_ee
        facts["tls"] = columns
        facts["tls_decrypted"] = True
        return rows, facts

    # ----------------------------------------------------------------------------------------- results
    def transaction_rows(self, server_ip: str, server_port: int) -> tuple[TransactionRows, dict[str, Any]]:
        """Decrypted rows when the connection could be decrypted, else estimated rows; and the connection
        facts."""
        tf = self.observer.facts()
        decrypted = self._decrypted_rows(server_ip, server_port, tf)
        if decrypted is not None:
            return decrypted
        protocol = tls_protocol(tf)
        rows = TransactionRows(self.store)
        idle_max: float | None = None
        last_end: int | None = None
        exchanges = tf.exchanges if protocol != "h2" else ()
        prev_end: int | None = None
        for i, ex in enumerate(exchanges):
            idle_ms: float | None = None
            if prev_end is not None:
                idle_ms = (ex.ts_request_start_ns - prev_end) / 1e6
                if idle_ms >= 0 and (idle_max is None or idle_ms > idle_max):
                    idle_max = idle_ms
            resp_end = ex.ts_response_end_ns
            prev_end = resp_end if resp_end is not None else ex.ts_request_end_ns
            if resp_end is not None:
                last_end = resp_end if last_end is None else max(last_end, resp_end)
            rows.add((
                i + 1, None, None, tf.sni, None, None, None, None, None,
                ex.ts_request_start_ns / 1e9, ex.ts_request_end_ns / 1e9,
                _s(ex.ts_response_start_ns), _s(resp_end),
                None, None, idle_ms, None, i > 0, True if i + 1 < len(exchanges) else None,
                None, None, None, None, 0, None, None, server_ip, server_port, True,
            ), (ex.response_offset, ex.response_end_offset)
                if 0 <= ex.response_offset < ex.response_end_offset else None)
        facts: dict[str, Any] = {
            "requests": len(exchanges) if protocol != "h2" else None,
            "pipelined_max": None,
            "protocol": protocol,
            "keep_alive_timeout_s": None,
            "keep_alive_max": None,
            "last_response_end_ns": last_end,
            "idle_max_ms": idle_max,
            "tls": tls_columns(tf),
            "tls_decrypted": False,
        }
        return rows, facts


def _s(ns: int | None) -> float | None:
    return ns / 1e9 if ns is not None else None
