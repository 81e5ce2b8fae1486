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
"""

from __future__ import annotations

from typing import Any

from analyzer.flows.stream import StreamChunk
from analyzer.http.transactions import SealedHttp1
from analyzer.tls.observer import TlsFacts, TlsObserver

ALPN_PROTOCOLS = {"h2": "h2", "http/1.1": "http/1.1", "http/1.0": "http/1.0"}


def tls_protocol(facts: TlsFacts) -> str:
    """The connection's ``protocol`` column (see the module docstring)."""
    return ALPN_PROTOCOLS.get(facts.alpn or "", "tls")


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
    """Both directions of one TLS connection without keys. ``feed(direction, chunk)``; then the results."""

    __slots__ = ("observer",)

    def __init__(self) -> None:
        self.observer = TlsObserver()

    def feed(self, direction: int, chunk: StreamChunk) -> None:
        self.observer.feed(direction, chunk)

    def anomalies(self) -> list[tuple[int, str, str]]:
        return self.observer.anomalies()

    def seal(self, server_ip: str, server_port: int) -> SealedHttp1:
        for d in (0, 1):
            self.observer.feed(d, StreamChunk.empty(final=True))
        rows, facts = self.transaction_rows("", server_ip, server_port)
        return SealedHttp1(rows, facts, self.anomalies())

    def transaction_rows(self, uid: str, server_ip: str, server_port: int
                         ) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
        """Estimated rows (``HTTP_TRANSACTION_COLUMNS`` order) and the connection facts."""
        tf = self.observer.facts()
        protocol = tls_protocol(tf)
        rows: list[tuple[Any, ...]] = []
        spans: list[tuple[int, int] | None] = []
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
            spans.append((ex.response_offset, ex.response_end_offset)
                         if 0 <= ex.response_offset < ex.response_end_offset else None)
            rows.append((
                uid, i + 1, None, None, tf.sni, None, None, None, None, None,
                ex.ts_request_start_ns / 1e9, ex.ts_request_end_ns / 1e9,
                _s(ex.ts_response_start_ns), _s(resp_end),
                None, None, idle_ms, None, i > 0, True if i + 1 < len(exchanges) else None,
                None, None, None, None, 0, None, None, server_ip, server_port, True,
            ))
        facts: dict[str, Any] = {
            "requests": len(exchanges) if protocol != "h2" else None,
            "pipelined_max": None,
            "protocol": protocol,
            "keep_alive_timeout_s": None,
            "keep_alive_max": None,
            "last_response_end_ns": last_end,
            "idle_max_ms": idle_max,
            "response_spans": spans,
            "tls": tls_columns(tf),
            "tls_decrypted": False,
        }
        return rows, facts


def _s(ns: int | None) -> float | None:
    return ns / 1e9 if ns is not None else None
