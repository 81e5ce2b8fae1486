"""The offline pipeline: capture files → batches → decoded packets → connections → records → tables.

It wires the stages together in one direction (``Session``: batches in, an ``Analysis`` out; ``analyze``:
files through a session) and does the accounting of every packet (read = analyzed +
skipped by reason). It reads files only through ``analyzer.capture.pcapfile``; time comes from packets.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from analyzer.analysis import Analysis
from analyzer.capture.batch import PacketBatch, ReaderStats
from analyzer.capture.pcapfile import open_capture
from analyzer.dispatch import ConnectionHandler
from analyzer.errors import AnalyzerError
from analyzer.flows.connections import Connection, ConnectionTracker
from analyzer.flows.datagrams import QuicFlow, QuicTracker, quic_records
from analyzer.flows.decode import decode_batch
from analyzer.flows.packets import TCP, UDP
from analyzer.http.sniff import classify_payload
from analyzer.metrics import summary_metrics
from analyzer.records import batch_records
from analyzer.tables import (
    ANOMALY_COLUMNS,
    CONNECTION_COLUMNS,
    FLIGHT_COLUMNS,
    SEGMENT_COLUMNS,
    TRANSACTION_COLUMNS,
    frame_from_arrays,
    frame_from_rows,
    frame_from_tuples,
)
from analyzer.tls.keylog import KeyLog

DEFAULT_CHUNK_PACKETS = 262_144
MAX_SERIES_ROWS = 1_000_000  # per-packet series rows kept (whole connections, in the order they finish)

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


def analyze(
    *captures: str | os.PathLike[str],
    chunk_packets: int = DEFAULT_CHUNK_PACKETS,
    progress: Progress | None = None,
    series_rows: int = MAX_SERIES_ROWS,
    keylog: str | os.PathLike[str] | KeyLog | None = None,
) -> Analysis:
    """Analyze capture files (their packets are taken as one stream per file) into an ``Analysis``.

    ``series_rows`` bounds the per-packet series (``Analysis.segments``): connections are kept whole, in
    the order they finish, until the budget is spent; the summary counts the connections left out.
    ``keylog``: a TLS key log (a file in the NSS SSLKEYLOGFILE format, or a ``KeyLog``) to decrypt TLS
    with; secrets in pcapng Decryption Secrets Blocks are added to it as they are read."""
    if not captures:
        raise ValueError("analyze() needs at least one capture file")
    session = Session(keylog=keylog, series_rows=series_rows)
    readers = [open_capture(path, chunk_packets=chunk_packets) for path in captures]  # fail early
    total_bytes = sum(r.stats.file_size for r in readers)
    done_bytes = 0
    for path, reader in zip(captures, readers, strict=True):
        session.start_capture(Path(path).name)
        secrets_seen = 0
        for batch in reader.batches():
            if len(reader.decryption_secrets) > secrets_seen:  # pcapng DSBs: before the packets they decrypt
                session.add_secrets(KeyLog.from_pcapng_secrets(reader.decryption_secrets[secrets_seen:]))
                secrets_seen = len(reader.decryption_secrets)
            session.feed(batch)
            if progress is not None:
                progress(done_bytes + reader.stats.bytes_read, total_bytes)
        session.end_capture(reader.stats)
        done_bytes += reader.stats.file_size
    return session.result()


class Session:
    """Incremental analysis: packet batches in, an ``Analysis`` out.

    One session may take several captures in turn (``start_capture`` … ``feed`` … ``end_capture``); each
    capture is its own packet stream (its connections end with it). ``feed`` accepts batches from any
    reader (file or live). ``result`` may be called once all captures have ended. The session holds the
    rows of finished connections and the state of open ones, nothing per packet."""

    def __init__(self, keylog: str | os.PathLike[str] | KeyLog | None = None,
                 series_rows: int = MAX_SERIES_ROWS) -> None:
        self.keys = _load_keylog(keylog)
        self.series_rows = series_rows
        self.conn_rows: list[dict[str, Any]] = []
        self.tx_rows: list[tuple[Any, ...]] = []
        self.an_rows: list[dict[str, Any]] = []
        self.skipped: Counter[str] = Counter()
        self.reader_skipped: Counter[str] = Counter()
        self.packets_read = self.packets_analyzed = self.truncated = 0
        self.kernel_drops: int | None = None
        self.formats: list[str] = []
        self.captures: list[str] = []
        self.ts_first: int | None = None
        self.ts_last: int | None = None
        self._flight_parts: list[dict[str, np.ndarray]] = []
        self._segment_parts: list[dict[str, np.ndarray]] = []
        self._series_kept = self._series_left_out = 0
        self.tracker: ConnectionTracker | None = None
        self._quic: QuicTracker | None = None

    def start_capture(self, name: str) -> None:
        """Begin a new packet stream (a capture file, or a live interface)."""
        if self.tracker is not None:
            raise RuntimeError("start_capture() before end_capture() of the previous capture")
        self.captures.append(name)
        self.tracker = ConnectionTracker(partial(ConnectionHandler, self.keys), classify_payload,
                                         on_finished_batch=self._on_finished)
        self._quic = QuicTracker(self._on_quic)

    def add_secrets(self, more: KeyLog) -> None:
        """Add TLS secrets (for example from a pcapng DSB) before the packets they decrypt."""
        _add_secrets(self.keys, more)

    def feed(self, batch: PacketBatch) -> None:
        """Decode and analyze one batch of the current capture (time order within a capture)."""
        if self.tracker is None or self._quic is None:
            raise RuntimeError("feed() outside start_capture() … end_capture()")
        if not len(batch):
            return
        lo, hi = int(batch.ts_ns.min()), int(batch.ts_ns.max())
        self.ts_first = lo if self.ts_first is None else min(self.ts_first, lo)
        self.ts_last = hi if self.ts_last is None else max(self.ts_last, hi)
        decoded, skips = decode_batch(batch)
        self.skipped.update(skips)
        is_tcp = decoded.proto == TCP
        is_udp = decoded.proto == UDP
        if is_udp.any():
            n_udp = int(np.count_nonzero(is_udp))
            n_quic = self._quic.feed(decoded.take(is_udp))
            self.packets_analyzed += n_quic
            if n_udp > n_quic:
                self.skipped["udp_not_analyzed"] += n_udp - n_quic
        tcp = decoded.take(is_tcp) if not is_tcp.all() else decoded
        self.truncated += int(np.count_nonzero(tcp.payload_len < tcp.payload_wire_len))
        self.packets_analyzed += len(tcp)
        self.tracker.feed(tcp)

    def end_capture(self, stats: ReaderStats) -> None:
        """End the current capture: its open connections are finished; ``stats`` is its reader's account."""
        if self.tracker is None or self._quic is None:
            raise RuntimeError("end_capture() without start_capture()")
        self.tracker.finish()
        self._quic.finish()
        self.tracker = self._quic = None
        self.packets_read += stats.packets_read
        self.reader_skipped.update(stats.skipped)
        self.formats.append(stats.file_format)
        if stats.kernel_drops is not None:
            self.kernel_drops = (self.kernel_drops or 0) + stats.kernel_drops

    def _on_finished(self, conns: list[Connection], rows: dict[str, np.ndarray]) -> None:
        budget = self.series_rows - self._series_kept
        rec = batch_records(conns, rows, keep_segments=max(budget, 0))
        self.conn_rows.extend(rec.connections)
        self.tx_rows.extend(rec.transactions)
        self.an_rows.extend(rec.anomalies)
        if len(rec.flights.get("round", ())):
            self._flight_parts.append(rec.flights)
        if rec.segments:
            self._segment_parts.append(rec.segments)
            self._series_kept += len(rec.segments["ts"])
        self._series_left_out += rec.segments_left_out

    def _on_quic(self, flow: QuicFlow) -> None:
        row, anomalies = quic_records(flow)
        self.conn_rows.append(row)
        self.an_rows.extend(anomalies)

    def result(self) -> Analysis:
        """The tables and summary of everything fed so far (finished connections only)."""
        connections = frame_from_rows(self.conn_rows, CONNECTION_COLUMNS)
        if len(connections):
            order = np.lexsort((connections["first_frame"].to_numpy(dtype=np.int64),
                                connections["ts_start"].to_numpy()))
            connections = connections.iloc[order].reset_index(drop=True)
        transactions = frame_from_tuples(self.tx_rows, TRANSACTION_COLUMNS)
        if len(transactions):
            rank = {uid: i for i, uid in enumerate(connections["uid"].tolist())}
            transactions = (transactions.assign(_c=transactions["uid"].map(rank))
                            .sort_values(["_c", "trans_depth"], kind="stable").drop(columns="_c")
                            .reset_index(drop=True))
        flights = frame_from_arrays(self._flight_parts, FLIGHT_COLUMNS)
        segments = frame_from_arrays(self._segment_parts, SEGMENT_COLUMNS)
        anomalies = frame_from_rows(self.an_rows, ANOMALY_COLUMNS)
        if len(anomalies):
            anomalies = anomalies.sort_values(["ts", "uid", "name"], kind="stable").reset_index(drop=True)
        ts_first, ts_last = self.ts_first, self.ts_last
        summary: dict[str, Any] = {
            "captures": list(self.captures),
            "file_format": ",".join(sorted(set(self.formats))),
            "packets_read": self.packets_read,
            "packets_analyzed": self.packets_analyzed,
            "packets_skipped": dict(sorted(self.skipped.items())),
            "truncated_packets": self.truncated,
            "reader_skipped": dict(sorted(self.reader_skipped.items())),
            "kernel_drops": self.kernel_drops,
            "ts_first": ts_first / 1e9 if ts_first is not None else None,
            "ts_last": ts_last / 1e9 if ts_last is not None else None,
            "duration_s": (ts_last - ts_first) / 1e9 if ts_first is not None and ts_last is not None else None,
            "connections": len(connections),
            "connections_with_syn": int(connections["syn_seen"].fillna(False).sum()) if len(connections) else 0,
            "transactions": len(transactions),
            "anomalies": {k: int(v) for k, v in anomalies["name"].value_counts().sort_index().items()},
            "series_rows": len(segments),
            "tls_keys": len(self.keys),
            "series_connections_left_out": self._series_left_out,
        }
        analysis = Analysis(connections, transactions, anomalies, summary, flights=flights, segments=segments)
        for key, value in summary_metrics(analysis).items():
            summary.setdefault(key, value)
        return analysis


def _load_keylog(keylog: str | os.PathLike[str] | KeyLog | None) -> KeyLog:
    """The key log to decrypt with (empty without one). An unreadable file is an ``AnalyzerError``."""
    if isinstance(keylog, KeyLog):
        return keylog
    if keylog is None:
        return KeyLog()
    try:
        text = Path(keylog).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise AnalyzerError(f"{keylog}: cannot read the key log: {exc.strerror or exc}") from exc
    return KeyLog.parse(text)


def _add_secrets(keys: KeyLog, more: KeyLog) -> None:
    """Add ``more`` to ``keys`` in place (the connection handlers hold ``keys``)."""
    for client_random, labels in more.secrets.items():
        keys.secrets.setdefault(client_random, {}).update(labels)
