"""The offline pipeline: capture files → batches → decoded packets → connections → records → tables.

It wires the stages together in one direction and does the accounting of every packet (read = analyzed +
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
    conn_rows: list[dict[str, Any]] = []
    tx_rows: list[tuple[Any, ...]] = []
    an_rows: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    reader_skipped: Counter[str] = Counter()
    packets_read = packets_analyzed = truncated = 0
    kernel_drops: int | None = None
    formats: list[str] = []
    ts_first: int | None = None
    ts_last: int | None = None

    flight_parts: list[dict[str, np.ndarray]] = []
    segment_parts: list[dict[str, np.ndarray]] = []
    series = {"kept": 0, "left_out": 0}

    def on_finished(conns: list[Connection], rows: dict[str, np.ndarray]) -> None:
        budget = series_rows - series["kept"]
        rec = batch_records(conns, rows, keep_segments=max(budget, 0))
        conn_rows.extend(rec.connections)
        tx_rows.extend(rec.transactions)
        an_rows.extend(rec.anomalies)
        if len(rec.flights.get("round", ())):
            flight_parts.append(rec.flights)
        if rec.segments:
            segment_parts.append(rec.segments)
            series["kept"] += len(rec.segments["ts"])
        series["left_out"] += rec.segments_left_out

    def on_quic(flow: QuicFlow) -> None:
        row, anomalies = quic_records(flow)
        conn_rows.append(row)
        an_rows.extend(anomalies)

    keys = _load_keylog(keylog)
    readers = [open_capture(path, chunk_packets=chunk_packets) for path in captures]  # fail early
    total_bytes = sum(r.stats.file_size for r in readers)
    done_bytes = 0
    for reader in readers:
        tracker = ConnectionTracker(partial(ConnectionHandler, keys), classify_payload, on_finished_batch=on_finished)
        secrets_seen = 0
        quic = QuicTracker(on_quic)
        for batch in reader.batches():
            if len(batch):
                lo, hi = int(batch.ts_ns.min()), int(batch.ts_ns.max())
                ts_first = lo if ts_first is None else min(ts_first, lo)
                ts_last = hi if ts_last is None else max(ts_last, hi)
            if len(reader.decryption_secrets) > secrets_seen:  # pcapng DSBs: before the packets they decrypt
                _add_secrets(keys, KeyLog.from_pcapng_secrets(reader.decryption_secrets[secrets_seen:]))
                secrets_seen = len(reader.decryption_secrets)
            decoded, skips = decode_batch(batch)
            skipped.update(skips)
            is_tcp = decoded.proto == TCP
            is_udp = decoded.proto == UDP
            if is_udp.any():
                n_udp = int(np.count_nonzero(is_udp))
                n_quic = quic.feed(decoded.take(is_udp))
                packets_analyzed += n_quic
                if n_udp > n_quic:
                    skipped["udp_not_analyzed"] += n_udp - n_quic
            tcp = decoded.take(is_tcp) if not is_tcp.all() else decoded
            truncated += int(np.count_nonzero(tcp.payload_len < tcp.payload_wire_len))
            packets_analyzed += len(tcp)
            tracker.feed(tcp)
            if progress is not None:
                progress(done_bytes + reader.stats.bytes_read, total_bytes)
        tracker.finish()
        quic.finish()
        st = reader.stats
        done_bytes += st.file_size
        packets_read += st.packets_read
        reader_skipped.update(st.skipped)
        formats.append(st.file_format)
        if st.kernel_drops is not None:
            kernel_drops = (kernel_drops or 0) + st.kernel_drops

    connections = frame_from_rows(conn_rows, CONNECTION_COLUMNS)
    if len(connections):
        order = np.lexsort((connections["first_frame"].to_numpy(dtype=np.int64),
                            connections["ts_start"].to_numpy()))
        connections = connections.iloc[order].reset_index(drop=True)
    transactions = frame_from_tuples(tx_rows, TRANSACTION_COLUMNS)
    if len(transactions):
        rank = {uid: i for i, uid in enumerate(connections["uid"].tolist())}
        transactions = (transactions.assign(_c=transactions["uid"].map(rank))
                        .sort_values(["_c", "trans_depth"], kind="stable").drop(columns="_c").reset_index(drop=True))
    flights = frame_from_arrays(flight_parts, FLIGHT_COLUMNS)
    segments = frame_from_arrays(segment_parts, SEGMENT_COLUMNS)
    anomalies = frame_from_rows(an_rows, ANOMALY_COLUMNS)
    if len(anomalies):
        anomalies = anomalies.sort_values(["ts", "uid", "name"], kind="stable").reset_index(drop=True)
    summary: dict[str, Any] = {
        "captures": [Path(p).name for p in captures],
        "file_format": ",".join(sorted(set(formats))),
        "packets_read": packets_read,
        "packets_analyzed": packets_analyzed,
        "packets_skipped": dict(sorted(skipped.items())),
        "truncated_packets": truncated,
        "reader_skipped": dict(sorted(reader_skipped.items())),
        "kernel_drops": kernel_drops,
        "ts_first": ts_first / 1e9 if ts_first is not None else None,
        "ts_last": ts_last / 1e9 if ts_last is not None else None,
        "duration_s": (ts_last - ts_first) / 1e9 if ts_first is not None and ts_last is not None else None,
        "connections": len(connections),
        "connections_with_syn": int(connections["syn_seen"].fillna(False).sum()) if len(connections) else 0,
        "transactions": len(transactions),
        "anomalies": {k: int(v) for k, v in anomalies["name"].value_counts().sort_index().items()},
        "series_rows": len(segments),
        "tls_keys": len(keys),
        "series_connections_left_out": series["left_out"],
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
