"""The offline pipeline: capture files → batches → decoded packets → connections → records → tables.

It wires the stages together in one direction and does the accounting of every packet (read = analyzed +
skipped by reason). It reads files only through ``analyzer.capture.pcapfile``; time comes from packets.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from analyzer.analysis import Analysis
from analyzer.capture.pcapfile import open_capture
from analyzer.flows.connections import Connection, ConnectionTracker
from analyzer.flows.decode import decode_batch
from analyzer.flows.packets import TCP, UDP
from analyzer.http.sniff import classify_payload
from analyzer.http.transactions import Http1Connection
from analyzer.metrics import summary_metrics
from analyzer.records import connection_records
from analyzer.tables import (
    ANOMALY_COLUMNS,
    CONNECTION_COLUMNS,
    TRANSACTION_COLUMNS,
    frame_from_rows,
    frame_from_tuples,
)

DEFAULT_CHUNK_PACKETS = 262_144

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


def analyze(
    *captures: str | os.PathLike[str],
    chunk_packets: int = DEFAULT_CHUNK_PACKETS,
    progress: Progress | None = None,
) -> Analysis:
    """Analyze capture files (their packets are taken as one stream per file) into an ``Analysis``."""
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

    def on_finished(conn: Connection) -> None:
        row, txs, anomalies = connection_records(conn)
        conn_rows.append(row)
        tx_rows.extend(txs)
        an_rows.extend(anomalies)

    readers = [open_capture(path, chunk_packets=chunk_packets) for path in captures]  # fail early
    total_bytes = sum(r.stats.file_size for r in readers)
    done_bytes = 0
    for reader in readers:
        tracker = ConnectionTracker(Http1Connection, classify_payload, on_finished)
        for batch in reader.batches():
            if len(batch):
                lo, hi = int(batch.ts_ns.min()), int(batch.ts_ns.max())
                ts_first = lo if ts_first is None else min(ts_first, lo)
                ts_last = hi if ts_last is None else max(ts_last, hi)
            decoded, skips = decode_batch(batch)
            skipped.update(skips)
            is_tcp = decoded.proto == TCP
            n_udp = int(np.count_nonzero(decoded.proto == UDP))
            if n_udp:
                skipped["udp_not_analyzed"] += n_udp
            tcp = decoded.take(is_tcp) if not is_tcp.all() else decoded
            truncated += int(np.count_nonzero(tcp.payload_len < tcp.payload_wire_len))
            packets_analyzed += len(tcp)
            tracker.feed(tcp)
            if progress is not None:
                progress(done_bytes + reader.stats.bytes_read, total_bytes)
        tracker.finish()
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
    }
    analysis = Analysis(connections, transactions, anomalies, summary)
    for key, value in summary_metrics(analysis).items():
        summary.setdefault(key, value)
    return analysis
