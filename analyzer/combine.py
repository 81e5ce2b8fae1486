"""Combining the ``Analysis`` of several captures (analyzed apart: in a process pool or on a cluster) into
one, as if one ``Session`` had read them in turn.

It owns the merge rules: tables are concatenated in the order of the captures given (and shards of one
capture, ``Session(shard=)``, in shard order), then put in table order as a session's are
(``order_tables``); a connection uid that an earlier capture already used (the same connection captured
twice, e.g. at two points) gets the suffix ``-<capture number>``, so uids stay unique and the ``capture``
column says where each row came from; the summary's packet accounting is summed, its time span widened,
and the metric keys recomputed over the combined tables. Tables the parts left on disk
(``Analysis.spilled``) are joined without being read: their chunks one after the other, uids renamed as
they are read, the order set from their keys. It knows nothing of files, processes or clusters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from analyzer.analysis import Analysis
from analyzer.pipeline import (
    SPILLED_TABLES,
    HeldChunks,
    anomaly_counts,
    anomaly_order,
    by_place,
    count_true,
    metric_keys,
    order_spilled,
    order_tables,
)
from analyzer.spill import SpilledTable
from analyzer.tables import (
    ANOMALY_COLUMNS,
    CONNECTION_COLUMNS,
    FLIGHT_COLUMNS,
    SEGMENT_COLUMNS,
    TABLES,
    TRANSACTION_COLUMNS,
    concat_frames,
    empty_frame,
)

_SUMMED = ("packets_read", "packets_analyzed", "truncated_packets", "series_connections_left_out", "bytes_skipped",
           "bytes_unread")
_COUNTERS = ("packets_skipped", "reader_skipped", "reader_notes")


def _unique_uids(parts: Sequence[Analysis]) -> list[Analysis]:
    """The parts with uids already used by an earlier part renamed ``uid-<part number>`` in every table."""
    seen: set[str] = set()
    out = []
    for number, part in enumerate(parts, start=1):
        uids = (part.spilled["connections"].columns_of(["uid"])["uid"] if "connections" in part.spilled
                else part.connections["uid"].to_numpy()).astype(str).tolist()
        clashes = [u for u in uids if u in seen]  # set lookups: linear in the total number of connections
        seen.update(uids)
        if not clashes:
            out.append(part)
            continue
        rename = {u: f"{u}-{number}" for u in clashes}
        tables = {}
        for name in ("connections", "transactions", "anomalies", "flights", "segments"):
            frame = getattr(part, name)
            tables[name] = frame.assign(uid=frame["uid"].replace(rename)) if len(frame) else frame
        seen.update(rename.values())
        out.append(Analysis(tables["connections"], tables["transactions"], tables["anomalies"], dict(part.summary),
                            flights=tables["flights"], segments=tables["segments"],
                            spilled={name: table.renamed(rename) for name, table in part.spilled.items()}))
    return out


def combine(parts: Sequence[Analysis], with_metrics: bool = True) -> Analysis:
    """One ``Analysis`` of several captures' analyses (in the order given). The metric keys of the summary
    are computed here, over the combined tables (``with_metrics``), so the parts need not carry them
    (``Session.result(with_metrics=False)``: each metric is then computed once)."""
    if not parts:
        raise ValueError("combine() needs at least one analysis")
    if len(parts) == 1:
        return _with_metrics(replace(parts[0], summary=dict(parts[0].summary))) if with_metrics else parts[0]
    parts = _unique_uids(parts)
    spilled: dict[str, SpilledTable] = {}
    if any(p.spilled for p in parts):  # parts analyzed with a spill (all of them): their tables on disk, joined
        if not all(set(p.spilled) == set(SPILLED_TABLES) for p in parts):
            raise ValueError("combine() of parts with and without a spill")
        spilled = {name: SpilledTable.concat([p.spilled[name] for p in parts]) for name in SPILLED_TABLES}
        order_spilled(spilled)
        connections, transactions, anomalies, flights, segments = (empty_frame(TABLES[name])
                                                                   for name in SPILLED_TABLES)
        counts = (len(spilled["connections"]), count_true(spilled["connections"].columns_of(["syn_seen"])["syn_seen"]),
                  len(spilled["transactions"]))
    else:  # the parts' tables as the chunks of one table each, put in order as a session's are
        conns = HeldChunks([p.connections for p in parts], CONNECTION_COLUMNS)
        txs = HeldChunks([p.transactions for p in parts], TRANSACTION_COLUMNS)
        counts = (len(conns), count_true(conns.columns_of(["syn_seen"])["syn_seen"]), len(txs))
        places = order_tables(conns, txs)
        connections, transactions = conns.frame(), txs.frame()
        flights = by_place(concat_frames([p.flights for p in parts], FLIGHT_COLUMNS), places, "flights")
        segments = by_place(concat_frames([p.segments for p in parts], SEGMENT_COLUMNS), places, "segments")
        anomalies = concat_frames([p.anomalies for p in parts], ANOMALY_COLUMNS)
        if len(anomalies):
            anomalies = anomalies.iloc[anomaly_order(anomalies)].reset_index(drop=True)
    sums = [p.summary for p in parts]
    summary: dict[str, Any] = {
        "captures": [name for s in sums for name in s["captures"]],
        "file_format": ",".join(sorted({f for s in sums for f in str(s["file_format"]).split(",") if f})),
    }
    for key in _SUMMED:
        summary[key] = sum(int(s.get(key) or 0) for s in sums)
    for key in _COUNTERS:
        total: Counter[str] = Counter()
        for s in sums:
            total.update(s.get(key) or {})
        summary[key] = dict(sorted(total.items()))
    summary["tls_keys"] = max(int(s.get("tls_keys") or 0) for s in sums)  # one key log, given to every part
    drops = [s["kernel_drops"] for s in sums if s.get("kernel_drops") is not None]
    summary["kernel_drops"] = sum(drops) if drops else None
    firsts = [s["ts_first"] for s in sums if s.get("ts_first") is not None]
    lasts = [s["ts_last"] for s in sums if s.get("ts_last") is not None]
    summary["ts_first"] = min(firsts) if firsts else None
    summary["ts_last"] = max(lasts) if lasts else None
    spanning = [s["duration_s"] for s in sums if firsts and lasts and s.get("ts_first") == summary["ts_first"]
                and s.get("ts_last") == summary["ts_last"]]  # e.g. shards of one capture: its exact duration
    summary["duration_s"] = (spanning[0] if spanning else summary["ts_last"] - summary["ts_first"]
                             if firsts and lasts else None)
    summary["connections"], summary["connections_with_syn"], summary["transactions"] = counts
    summary["anomalies"] = anomaly_counts(anomalies, spilled)
    summary["series_rows"] = len(spilled["segments"]) if spilled else len(segments)
    order = ["captures", "file_format", "packets_read", "packets_analyzed", "packets_skipped", "truncated_packets",
             "reader_skipped", "reader_notes", "bytes_skipped", "bytes_unread", "kernel_drops", "ts_first",
             "ts_last", "duration_s", "connections",
             "connections_with_syn", "transactions", "anomalies", "series_rows", "tls_keys",
             "series_connections_left_out"]
    summary = {k: summary[k] for k in order}
    analysis = Analysis(connections, transactions, anomalies, summary, flights=flights, segments=segments,
                        spilled=spilled)
    return _with_metrics(analysis) if with_metrics else analysis


def _with_metrics(analysis: Analysis) -> Analysis:
    """``analysis`` with the metric keys added to its summary (keys already there are kept)."""
    for key, value in metric_keys(analysis).items():
        analysis.summary.setdefault(key, value)
    return analysis
