"""The offline pipeline: capture files → batches → decoded packets → connections → records → tables.

It wires the stages together in one direction (``Session``: batches in, an ``Analysis`` out; ``analyze``:
files through a session) and does the accounting of every packet (read = analyzed +
skipped by reason). It reads files only through ``analyzer.capture.pcapfile``; time comes from packets.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import sys
import traceback
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from analyzer.analysis import Analysis
from analyzer.capture.batch import PacketBatch, ReaderStats
from analyzer.capture.pcapfile import DEFAULT_CHUNK_PACKETS, CaptureReader, open_capture
from analyzer.dispatch import ConnectionHandler
from analyzer.errors import AnalyzerError
from analyzer.flows.connections import Connection, ConnectionTracker
from analyzer.flows.datagrams import QuicFlow, QuicTracker, quic_records
from analyzer.flows.decode import decode_batch
from analyzer.flows.packets import TCP, UDP, DecodedPackets
from analyzer.heap import release_free_memory
from analyzer.http.sniff import classify_payload
from analyzer.metrics import summary_metrics_read
from analyzer.metrics.frames import positions
from analyzer.records import batch_records
from analyzer.spill import Spill, SpilledTable
from analyzer.tables import (
    ANOMALY_COLUMNS,
    CONNECTION_COLUMNS,
    FLIGHT_COLUMNS,
    SEGMENT_COLUMNS,
    TABLES,
    TRANSACTION_COLUMNS,
    arrow_strings,
    assemble,
    concat_frames,
    empty_frame,
    frame_from_arrays,
    frame_from_rows,
    frame_from_tuples,
    keys_of_chunks,
)
from analyzer.tls.keylog import KeyLog

MAX_SERIES_ROWS = 1_000_000  # per-packet series rows kept (whole connections, in the order they finish)
ROWS_PER_CHUNK = 8_192  # finished connection / transaction rows kept as Python objects before compaction
SPILL_ROWS = 65_536  # flight and series rows gathered before they are spilled as one chunk (``Session(spill=)``)

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


def analyze(
    *captures: str | os.PathLike[str],
    chunk_packets: int = DEFAULT_CHUNK_PACKETS,
    progress: Progress | None = None,
    series_rows: int = MAX_SERIES_ROWS,
    keylog: str | os.PathLike[str] | KeyLog | None = None,
    stitch: bool = False,
    shard: tuple[int, int] = (0, 1),
    with_metrics: bool = True,
    spill_dir: str | os.PathLike[str] | None = None,
    scan_in_child: bool = False,
) -> Analysis:
    """Analyze capture files into one ``Analysis`` (its ``capture`` column names each row's file).

    Each file is its own packet stream, analyzed apart and combined (``analyzer.combine``), unless
    ``stitch``: then the files are the rotated pieces of one capture (``tcpdump -G/-C``), read in the
    natural order of their names (``x.pcap``, ``x.pcap1``, ``x.pcap2``, ``x.pcap10``) as one stream, so a
    connection that spans two files is one connection; frame numbers continue from file to file.

    ``shard`` = (k, n): only the flows of shard k of n (see ``Session``; ``analyzer.parallel`` splits one
    capture this way; it combines the parts with ``with_metrics=False`` and computes the metric keys of the
    summary once, over the whole). ``series_rows`` bounds the per-packet series (``Analysis.segments``) per stream:
    connections are kept whole, in the order they finish, until the budget is spent; the summary counts the
    connections left out. ``keylog``: a TLS key log (a file in the NSS SSLKEYLOGFILE format, or a
    ``KeyLog``) to decrypt TLS with; secrets in pcapng Decryption Secrets Blocks are added to it as they are read.

    ``spill_dir`` (an existing directory, the caller's to remove): the tables are written there as they are
    made (``Session(spill=)``; one subdirectory per packet stream when there are several) and stay there
    (``Analysis.spilled``; ``Analysis.held`` reads the connections and transactions back).
    ``scan_in_child`` (with ``spill_dir``): each packet stream is read in a forked child process
    (``_in_child``; where fork is available), one after the other; its tables stay on disk."""
    if not captures:
        raise ValueError("analyze() needs at least one capture file")
    if stitch:
        captures = tuple(sorted(captures, key=lambda p: natural_key(Path(p).name)))
    readers = [open_capture(path, chunk_packets=chunk_packets) for path in captures]  # fail early
    streams = [list(range(len(captures)))] if stitch else [[i] for i in range(len(captures))]
    total_bytes = sum(r.stats.file_size for r in readers)
    in_child = spill_dir is not None and scan_in_child and "fork" in multiprocessing.get_all_start_methods()
    parts: list[Analysis] = []
    done_bytes = 0
    for number, members in enumerate(streams):
        files, files_readers = [captures[i] for i in members], [readers[i] for i in members]
        stream_dir: Path | None = None
        if spill_dir is not None:
            stream_dir = Path(spill_dir) / f"stream-{number}" if len(streams) > 1 else Path(spill_dir)
            stream_dir.mkdir(exist_ok=True)
        report = None if progress is None else partial(_progress_from, progress, done_bytes, total_bytes)
        scan = partial(_scan, files, files_readers, stitch=stitch, keylog=keylog, series_rows=series_rows,
                       shard=shard, spill_dir=stream_dir)
        session = _in_child(scan, report) if in_child else scan(report)
        for reader in files_readers:
            reader.close()  # read in the child: closed here too
        parts.append(session.result(with_metrics=False, release=True))
        done_bytes += sum(r.stats.file_size for r in files_readers)
    from analyzer.combine import combine  # combine imports this module

    return combine(parts, with_metrics=with_metrics)  # the metrics once, over all files


def _progress_from(progress: Progress, before: int, total: int, done: int, _of: int) -> None:
    progress(before + done, total)


def _scan(captures: Sequence[str | os.PathLike[str]], readers: list[CaptureReader], progress: Progress | None, *,
          stitch: bool, keylog: str | os.PathLike[str] | KeyLog | None, series_rows: int, shard: tuple[int, int],
          spill_dir: str | os.PathLike[str] | None) -> Session:
    """Read the captures into one session: one packet stream (one file, or the rotated pieces of one
    capture with ``stitch``); the session is returned once its capture has ended."""
    total_bytes = sum(r.stats.file_size for r in readers)
    done_bytes = 0
    session = Session(keylog=keylog, series_rows=series_rows, shard=shard, compact=True,
                      spill=Spill(spill_dir) if spill_dir is not None else None)
    session.start_capture(Path(captures[0]).name)
    for i, reader in enumerate(readers):
        secrets_seen = 0
        for batch in reader.batches():
            if len(reader.decryption_secrets) > secrets_seen:  # pcapng DSBs: before the packets they decrypt
                session.add_secrets(KeyLog.from_pcapng_secrets(reader.decryption_secrets[secrets_seen:]))
                secrets_seen = len(reader.decryption_secrets)
            session.feed(batch)
            release_free_memory()
            if progress is not None:
                progress(done_bytes + reader.stats.bytes_read, total_bytes)
        reader.close()
        done_bytes += reader.stats.file_size
        if i + 1 < len(captures):
            assert stitch
            session.next_file(Path(captures[i + 1]).name, reader.stats)
    session.end_capture(readers[-1].stats)
    return session


def _in_child(scan: Callable[[Progress | None], Session], progress: Progress | None) -> Session:
    """``scan`` run in a forked child process; its session (ended, every row spilled, so small) comes back.

    Why: reading a capture leaves the heap fragmented (pymalloc arenas and glibc pages pinned by a few live
    objects: about 130 MiB on bench/ after every table is freed), and the tables and metrics at the end
    would sit on top of that. In a child the scan's memory goes back to the system when it exits, and the
    parent reads the tables back into a clean heap. Measured on a 5 GB capture (``analyzer export``): peak
    RSS 586 MiB with the tables in memory, 529 MiB with the spill alone, 465 MiB with the spill and the
    child. Progress goes through the pipe; an exception in the child is raised here (with the child's
    traceback as a note)."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child() -> None:
        # fresh text streams on the same descriptors: a lock of the parent's (held by its progress-bar
        # thread at the fork) must not block a warning written here
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives as long as the process
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        try:
            report = (lambda done, total: send.send(("progress", done, total))) if progress is not None else None
            session = scan(report)
            session.spill_rest()
            send.send(("done", session))
        except BaseException as exc:  # every failure goes to the parent
            try:
                send.send(("error", exc, traceback.format_exc()))
            except Exception:  # an exception that does not pickle
                send.send(("error", RuntimeError(repr(exc)), traceback.format_exc()))

    process = context.Process(target=child, name="analyzer-scan", daemon=True)
    process.start()
    send.close()
    try:
        while True:
            try:
                message = receive.recv()
            except EOFError:
                process.join()
                raise AnalyzerError(f"the analysis process ended without a result (exit code {process.exitcode}; "
                                    "out of memory?)") from None
            if message[0] == "progress":
                if progress is not None:
                    progress(message[1], message[2])
            elif message[0] == "done":
                session: Session = message[1]
                return session
            else:
                error: BaseException = message[1]
                if not isinstance(error, AnalyzerError):
                    error.add_note(f"in the analysis process:\n{message[2]}")
                raise error
    finally:
        receive.close()
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()


def flow_shard(packets: DecodedPackets, n: int) -> np.ndarray:
    """Per packet, its flow's shard in 0..n-1: a hash of the two endpoints that does not depend on the
    direction (both directions of a connection, and every connection on that address and port pair, land
    in the same shard)."""
    a = packets.src_hi ^ packets.src_lo ^ (packets.sport.astype(np.uint64) << np.uint64(48))
    b = packets.dst_hi ^ packets.dst_lo ^ (packets.dport.astype(np.uint64) << np.uint64(48))
    x = _mix64(_mix64(np.minimum(a, b)) ^ np.maximum(a, b))  # the endpoints in a fixed order: symmetric
    return (x % np.uint64(n)).astype(np.int64)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit affects every output bit."""
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x = (x ^ (x >> np.uint64(shift))) * np.uint64(factor)
    return x ^ (x >> np.uint64(31))


def natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded numbers by value (``cap.pcap2`` before ``cap.pcap10``)."""
    return [int(t) if t.isdecimal() else t for t in re.split(r"(\d+)", name)]  # not isdigit(): "²" is one


class Session:
    """Incremental analysis: packet batches in, an ``Analysis`` out.

    One session may take several captures in turn (``start_capture`` … ``feed`` … ``end_capture``); each
    capture is its own packet stream (its connections end with it). ``feed`` accepts batches from any
    reader (file or live). ``result`` may be called once all captures have ended. The session holds the
    rows of finished connections and the state of open ones, nothing per packet."""

    def __init__(self, keylog: str | os.PathLike[str] | KeyLog | None = None,
                 series_rows: int = MAX_SERIES_ROWS, shard: tuple[int, int] = (0, 1), compact: bool = False,
                 spill: Spill | None = None) -> None:
        """``shard`` = (k, n): analyze only the flows whose endpoint hash is k modulo n (a whole connection
        always falls in one shard), so n sessions over the same capture split its work; the capture-wide
        counts (packets read, skipped by reason, keys) are reported by shard 0 only, so that
        ``analyzer.combine`` of the n results equals one session's.

        ``compact``: every ``ROWS_PER_CHUNK`` finished connections (transactions, anomalies) their rows
        become a typed DataFrame chunk instead of Python dicts and tuples (a connection row as a dict costs
        about 5 KB, in a DataFrame about 0.6 KB: on the bench capture 160 MiB less at the end). Off for live
        capture, which reads the recent rows (``conn_rows``, ``tx_rows``) and forgets old ones.

        ``spill`` (with ``compact``): the chunks are written there instead of kept, and so are the flights
        and the series once ``SPILL_ROWS`` of them are waiting; ``result`` leaves every table on disk
        (``Analysis.spilled``) with its order set, to be written out block by block (``analyzer export``),
        and the summary's metrics read back only the columns they need (``metric_keys``). Memory then
        follows the connections open at once during the scan, and those columns at the end."""
        if not 0 <= shard[0] < shard[1]:
            raise ValueError(f"shard {shard}: need 0 <= k < n")
        if spill is not None and not compact:
            raise ValueError("spill needs compact")
        self.spill = spill
        self.shard = shard
        self.keys = _load_keylog(keylog)
        self.series_rows = series_rows
        self.conn_rows: list[dict[str, Any]] = []
        self.tx_rows: list[tuple[Any, ...]] = []
        self.compact = compact
        self._conn_chunks: list[pd.DataFrame] = []  # compacted rows (``compact``), in the order they finished
        self._tx_chunks: list[pd.DataFrame] = []
        self._an_chunks: list[pd.DataFrame] = []
        self._released = False  # result(release=True) handed the rows over
        self.an_rows: list[dict[str, Any]] = []
        self.skipped: Counter[str] = Counter()
        self.reader_skipped: Counter[str] = Counter()
        self.reader_notes: Counter[str] = Counter()  # odd records kept (timestamps, caplen), by reason
        self.bytes_skipped = self.bytes_unread = 0  # bytes of damaged files passed over / left unread
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
        self._file_frames: list[int] = []  # first frame number of each file of the current stream
        self._file_names: list[str] = []
        self._frame_offset = self._last_frame = 0
        self.forgotten_connections = self.forgotten_transactions = 0  # see forget_finished (live capture)

    def start_capture(self, name: str) -> None:
        """Begin a new packet stream (a capture file, or a live interface)."""
        if self.tracker is not None:
            raise RuntimeError("start_capture() before end_capture() of the previous capture")
        self.captures.append(name)
        self._file_frames, self._file_names = [1], [name]
        self._frame_offset = self._last_frame = 0
        store = self.spill.block_file() if self.spill is not None else None  # long connections' packed blocks
        self.tracker = ConnectionTracker(partial(ConnectionHandler, self.keys, store), classify_payload,
                                         on_finished_batch=self._on_finished)
        self._quic = QuicTracker(self._on_quic)

    def next_file(self, name: str, stats: ReaderStats) -> None:
        """The current capture goes on in another file (rotated pieces of one capture): open connections
        stay open, frame numbers continue after the previous file's; ``stats`` is that file's account."""
        if self.tracker is None:
            raise RuntimeError("next_file() without start_capture()")
        self._account(stats)
        self._frame_offset = self._last_frame
        self.captures.append(name)
        self._file_frames.append(self._frame_offset + 1)
        self._file_names.append(name)

    def add_secrets(self, more: KeyLog) -> None:
        """Add TLS secrets (for example from a pcapng DSB) before the packets they decrypt."""
        _add_secrets(self.keys, more)

    def feed(self, batch: PacketBatch) -> None:
        """Decode and analyze one batch of the current capture (time order within a capture)."""
        if self.tracker is None or self._quic is None:
            raise RuntimeError("feed() outside start_capture() … end_capture()")
        if not len(batch):
            return
        if self._frame_offset:
            batch = replace(batch, frame=batch.frame + self._frame_offset)
        self._last_frame = max(self._last_frame, int(batch.frame[-1]))
        lo, hi = int(batch.ts_ns.min()), int(batch.ts_ns.max())
        self.ts_first = lo if self.ts_first is None else min(self.ts_first, lo)
        self.ts_last = hi if self.ts_last is None else max(self.ts_last, hi)
        decoded, skips = decode_batch(batch)
        if self.shard[1] > 1:
            if self.shard[0]:
                skips = Counter()  # counted by shard 0
            decoded = decoded.take(flow_shard(decoded, self.shard[1]) == self.shard[0])
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
        if self.spill is not None:
            self.spill.drop_blocks()  # every connection ended: no packed block is read again
        self._account(stats)
        release_free_memory()

    def _account(self, stats: ReaderStats) -> None:
        if self.shard[0]:  # shard 0 reports the capture-wide counts
            self.formats.append("")
            return
        self.packets_read += stats.packets_read
        self.reader_skipped.update(stats.skipped)
        self.reader_notes.update(stats.notes)
        self.bytes_skipped += stats.bytes_skipped
        self.bytes_unread += stats.bytes_unread
        self.formats.append(stats.file_format)
        if stats.kernel_drops is not None:
            self.kernel_drops = (self.kernel_drops or 0) + stats.kernel_drops

    def _on_finished(self, conns: list[Connection], rows: dict[str, np.ndarray]) -> None:
        budget = self.series_rows - self._series_kept
        rec = batch_records(conns, rows, keep_segments=max(budget, 0))
        for row in rec.connections:
            row["capture"] = self._capture_of(row["first_frame"])
        self.conn_rows.extend(rec.connections)
        self.an_rows.extend(rec.anomalies)
        # held by the session's lists only, so that _compact frees each slice it converts
        rec.connections.clear()
        rec.anomalies.clear()
        while True:  # the transactions a slice at a time, compacted as they come (a million on one connection)
            before = len(self.tx_rows)
            self.tx_rows.extend(islice(rec.transactions, ROWS_PER_CHUNK))
            if len(self.tx_rows) == before:
                break
            self._compact()
        if len(rec.flights.get("round", ())):
            self._flight_parts.append(rec.flights)
        if rec.segments:
            self._segment_parts.append(rec.segments)
            self._series_kept += len(rec.segments["ts"])
        self._series_left_out += rec.segments_left_out
        self._compact()
        self._spill_arrays()
        if self.compact:  # at capture end this runs once per batch of connections finished together
            release_free_memory()

    def _on_quic(self, flow: QuicFlow) -> None:
        row, anomalies = quic_records(flow)
        row["capture"] = self._capture_of(row["first_frame"])
        self.conn_rows.append(row)
        self.an_rows.extend(anomalies)
        self._compact()

    def _compact(self) -> None:
        """Turn the finished rows into DataFrame chunks once there are ``ROWS_PER_CHUNK`` (``compact``), at
        most ``ROWS_PER_CHUNK`` rows at a time, each slice's rows freed before the next is converted (one
        connection may bring a million transactions at once: converting them in one piece needed about
        1.5 KB per row on top of the rows)."""
        if not self.compact:
            return
        if len(self.conn_rows) >= ROWS_PER_CHUNK:
            self._keep("connections", frame_from_rows(self.conn_rows, CONNECTION_COLUMNS))
            self.conn_rows = []
        while len(self.tx_rows) >= ROWS_PER_CHUNK:
            self._keep("transactions", frame_from_tuples(self.tx_rows[:ROWS_PER_CHUNK], TRANSACTION_COLUMNS))
            del self.tx_rows[:ROWS_PER_CHUNK]
        if len(self.an_rows) >= ROWS_PER_CHUNK:  # a SYN flood brings one per connection evicted
            self._keep("anomalies", frame_from_rows(self.an_rows, ANOMALY_COLUMNS))
            self.an_rows = []

    def _keep(self, table: str, chunk: pd.DataFrame) -> None:
        """A compacted chunk of ``table``: to the spill, or kept."""
        if self.spill is not None:
            self.spill.table(table, TABLES[table]).append(chunk)
        else:
            {"connections": self._conn_chunks, "transactions": self._tx_chunks,
             "anomalies": self._an_chunks}[table].append(chunk)

    def spill_rest(self) -> None:
        """With a spill: what is still waiting (rows, flights, series) goes where the rest went; the session
        is then small (its counters), to be sent to another process (``_in_child``)."""
        if self.spill is None:
            return
        self._keep("connections", frame_from_rows(self.conn_rows, CONNECTION_COLUMNS))
        self._keep("transactions", frame_from_tuples(self.tx_rows, TRANSACTION_COLUMNS))
        self._keep("anomalies", frame_from_rows(self.an_rows, ANOMALY_COLUMNS))
        self.conn_rows, self.tx_rows, self.an_rows = [], [], []
        self._spill_arrays(everything=True)

    def _spill_arrays(self, everything: bool = False) -> None:
        """With a spill: the waiting flights and series as one chunk each, once there are ``SPILL_ROWS`` of
        them (``everything``: whatever is waiting)."""
        if self.spill is None:
            return
        for name, parts, columns in (("flights", self._flight_parts, FLIGHT_COLUMNS),
                                     ("segments", self._segment_parts, SEGMENT_COLUMNS)):
            waiting = sum(len(p["uid"]) for p in parts)
            if waiting and (everything or waiting >= SPILL_ROWS):
                self.spill.table(name, columns).append(frame_from_arrays(parts, columns, consume=True))

    # ------------------------------------------------------------------ live capture hooks (analyzer live)
    def snapshot(self, stats: ReaderStats) -> Analysis:
        """``result()`` while the current capture still runs (``analyzer live --interval``): the connections
        finished so far, with ``stats`` (the running reader's account so far) counted in and
        ``open_connections`` in the summary. The session itself is left as it was."""
        saved = (self.packets_read, Counter(self.reader_skipped), Counter(self.reader_notes), self.bytes_skipped,
                 self.bytes_unread, list(self.formats), self.kernel_drops)
        try:
            self._account(stats)
            analysis = self.result()
        finally:
            (self.packets_read, self.reader_skipped, self.reader_notes, self.bytes_skipped, self.bytes_unread,
             self.formats, self.kernel_drops) = saved
        analysis.summary["open_connections"] = len(self.tracker.active) if self.tracker is not None else 0
        return analysis

    def forget_finished(self, keep: int) -> int:
        """Drop the rows of all but the ``keep`` most recently finished connections (with their transactions,
        anomalies, flights and series), so that a capture running for hours keeps bounded memory; the
        summary counts them (``connections_forgotten``, ``transactions_forgotten``). Returns how many
        connections were dropped. Rows are appended as connections finish, so the dropped ones are the
        oldest, and their transactions a prefix of ``tx_rows``."""
        if self.compact:
            raise RuntimeError("forget_finished() needs a session without compact")
        drop = len(self.conn_rows) - max(keep, 0)
        if drop <= 0:
            return 0
        gone = {row["uid"] for row in self.conn_rows[:drop]}
        del self.conn_rows[:drop]
        kept_tx = [t for t in self.tx_rows if t[0] not in gone]
        self.forgotten_transactions += len(self.tx_rows) - len(kept_tx)
        self.tx_rows = kept_tx
        self.an_rows = [a for a in self.an_rows if a.get("uid") not in gone]
        gone_arr = np.array(sorted(gone), dtype=object)
        for parts in (self._flight_parts, self._segment_parts):
            for i, part in enumerate(parts):
                keep_mask = ~np.isin(part["uid"], gone_arr)
                if not keep_mask.all():
                    parts[i] = {k: v[keep_mask] for k, v in part.items()}
            parts[:] = [p for p in parts if len(p["uid"])]
        self.forgotten_connections += drop
        return drop

    def _capture_of(self, first_frame: int) -> str:
        """The file of the current stream that holds this frame."""
        return self._file_names[max(bisect_right(self._file_frames, first_frame) - 1, 0)]

    def result(self, with_metrics: bool = True, release: bool = False) -> Analysis:
        """The tables and summary of everything fed so far (finished connections only); the summary's metric
        keys (``analyzer.metrics.summary_metrics``) only ``with_metrics``. ``release``: the session's rows are
        handed over (freed as the tables are built) and the session cannot give another result (always so
        with a spill)."""
        if self._released:
            raise RuntimeError("result() after result(release=True)")
        if self.spill is not None and not release:
            raise RuntimeError("a session with a spill gives its result once, with release=True")
        self._released = release
        if self.spill is not None:
            self.spill_rest()
            conns: SpilledTable | HeldChunks = self.spill.table("connections", CONNECTION_COLUMNS)
            txs: SpilledTable | HeldChunks = self.spill.table("transactions", TRANSACTION_COLUMNS)
        else:  # the lists are new: the session's own chunks stay as they are unless released
            conns = HeldChunks([*self._conn_chunks, frame_from_rows(self.conn_rows, CONNECTION_COLUMNS)],
                               CONNECTION_COLUMNS)
            txs = HeldChunks([*self._tx_chunks, frame_from_tuples(self.tx_rows, TRANSACTION_COLUMNS)],
                             TRANSACTION_COLUMNS)
            if release:
                self.conn_rows, self.tx_rows, self._conn_chunks, self._tx_chunks = [], [], [], []
        with_syn = count_true(conns.columns_of(["syn_seen"])["syn_seen"])
        if self.spill is not None:  # every table stays on disk, its order set
            spilled = {name: self.spill.table(name, TABLES[name]) for name in SPILLED_TABLES}
            order_spilled(spilled)
            release_free_memory()
            connections, transactions, anomalies, flights, segments = (empty_frame(TABLES[name])
                                                                       for name in SPILLED_TABLES)
        else:
            spilled = {}
            places = order_tables(conns, txs)
            connections, transactions = conns.frame(), txs.frame()
            if release:
                release_free_memory()
            # the large columnar tables are put in order as arrays, before they become DataFrames (memory)
            flights = frame_from_arrays(self._flight_parts, FLIGHT_COLUMNS, consume=release,
                                        order=lambda d: rows_in_order(d["uid"], d, places, "flights"))
            if release:
                release_free_memory()
            segments = frame_from_arrays(self._segment_parts, SEGMENT_COLUMNS, consume=release,
                                         order=lambda d: rows_in_order(d["uid"], d, places, "segments"))
            if release:
                release_free_memory()
            anomalies = concat_frames([*self._an_chunks, frame_from_rows(self.an_rows, ANOMALY_COLUMNS)],
                                      ANOMALY_COLUMNS, consume=release)
            if release:
                self.an_rows, self._an_chunks = [], []
            if len(anomalies):
                anomalies = anomalies.iloc[anomaly_order(anomalies)].reset_index(drop=True)
        ts_first, ts_last = self.ts_first, self.ts_last
        summary: dict[str, Any] = {
            "captures": list(self.captures) if not self.shard[0] else [],
            "file_format": ",".join(sorted(set(self.formats) - {""})),
            "packets_read": self.packets_read,
            "packets_analyzed": self.packets_analyzed,
            "packets_skipped": dict(sorted(self.skipped.items())),
            "truncated_packets": self.truncated,
            "reader_skipped": dict(sorted(self.reader_skipped.items())),
            "reader_notes": dict(sorted(self.reader_notes.items())),
            "bytes_skipped": self.bytes_skipped,
            "bytes_unread": self.bytes_unread,
            "kernel_drops": self.kernel_drops,
            "ts_first": ts_first / 1e9 if ts_first is not None else None,
            "ts_last": ts_last / 1e9 if ts_last is not None else None,
            "duration_s": (ts_last - ts_first) / 1e9 if ts_first is not None and ts_last is not None else None,
            "connections": len(conns),
            "connections_with_syn": with_syn,
            "transactions": len(txs),
            "anomalies": anomaly_counts(anomalies, spilled),
            "series_rows": len(spilled["segments"]) if spilled else len(segments),
            "tls_keys": len(self.keys) if not self.shard[0] else 0,
            "series_connections_left_out": self._series_left_out,
        }
        if self.forgotten_connections:  # live capture: rows dropped to bound memory (forget_finished)
            summary["connections_forgotten"] = self.forgotten_connections
            summary["transactions_forgotten"] = self.forgotten_transactions
        analysis = Analysis(connections, transactions, anomalies, summary, flights=flights, segments=segments,
                            spilled=spilled)
        if with_metrics:
            for key, value in metric_keys(analysis).items():
                summary.setdefault(key, value)
        return analysis


#: The tables a session with a spill leaves on disk (``Analysis.spilled``): all of them.
SPILLED_TABLES = ("connections", "transactions", "anomalies", "flights", "segments")


def metric_keys(analysis: Analysis) -> dict[str, Any]:
    """The metric keys of ``analysis``'s summary (``analyzer.metrics.summary_metrics``). Connections and
    transactions left on disk are read back for it with only the columns the summary reads, one group of
    figures at a time (``summary_metrics_read``, ``SUMMARY_GROUPS``: each group's columns let go of before
    the next group's are read)."""
    return summary_metrics_read(analysis.held)


def count_true(flags: np.ndarray) -> int:
    """How many of ``flags`` (a flag column as floats: 1, 0, NaN for missing) are true."""
    return int((np.asarray(flags) == 1).sum())


def order_spilled(tables: Mapping[str, SpilledTable]) -> None:
    """Set the table order of every spilled table (that of the tables held in memory: ``order_tables``,
    ``anomaly_order``, ``rows_in_order``), from their key columns only, chunk by chunk."""
    places = order_tables(tables["connections"], tables["transactions"])
    keys = tables["anomalies"].map_chunks(lambda chunk: {
        "ts": chunk["ts"].to_numpy(dtype=np.float64, na_value=np.nan),
        "uid": arrow_strings(chunk["uid"]), "name": arrow_strings(chunk["name"])})
    tables["anomalies"].order = anomaly_order(pd.DataFrame({
        "ts": keys["ts"], "uid": pd.arrays.ArrowStringArray(keys["uid"]),
        "name": pd.arrays.ArrowStringArray(keys["name"])})) if keys else np.arange(0, dtype=np.int64)
    for name in ("flights", "segments"):
        tables[name].order = _order_by_keys(tables[name], places, name)


class HeldChunks:
    """Chunks of one table held in memory, read as a ``SpilledTable`` is (``map_chunks``, ``order``,
    ``frame``; ``columns_of`` for numeric columns only, as floats); ``frame`` hands the chunks over (they
    are let go of as they are read)."""

    def __init__(self, chunks: list[pd.DataFrame], columns: Mapping[str, str]) -> None:
        self._chunks = [c for c in chunks if len(c)]
        self.columns = dict(columns)
        self.rows = sum(len(c) for c in self._chunks)
        self.order: np.ndarray | None = None

    def __len__(self) -> int:
        return self.rows

    def map_chunks(self, keys: Callable[[pd.DataFrame], dict[str, Any]]) -> dict[str, Any]:
        return keys_of_chunks(self._chunks, keys)

    def columns_of(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        out = self.map_chunks(lambda chunk: {n: chunk[n].to_numpy(dtype=np.float64, na_value=np.nan)
                                             for n in names})
        return {n: out.get(n, np.zeros(0)) for n in names}

    def frame(self) -> pd.DataFrame:
        def handed_over() -> Iterator[pd.DataFrame]:
            while self._chunks:
                yield self._chunks.pop(0)

        order = self.order if self.order is not None else np.arange(self.rows, dtype=np.int64)
        return assemble(handed_over(), self.rows, self.columns, order)


class Places:
    """The connections' uids in table order (``order_tables``): the rows of the other tables are placed by
    their connection's uid (``of``).

    The uids are one Arrow string array, looked up with Arrow's hash set (``index_in``, once per table):
    as Python strings in a ``pd.Index`` (and the other tables' uids as Python strings too) ordering the
    spilled tables of a million tiny connections peaked 310 MiB above the process's size and took 2.7 s,
    as Arrow arrays 211 MiB and 1.7 s."""

    def __init__(self, uids: pa.Array) -> None:
        self.uids = uids

    def __len__(self) -> int:
        return len(self.uids)

    def of(self, uids: pa.Array | pd.Series | pd.Index | np.ndarray) -> np.ndarray:
        """The place (row in the connection table) of each of ``uids``; -1 for a uid of no connection.
        The connections' uids are unique."""
        return positions(self.uids, uids)


def order_tables(conns: SpilledTable | HeldChunks, txs: SpilledTable | HeldChunks) -> Places:
    """Set the table order of the connections and transactions (``connection_order``, then
    ``rows_in_order``) from their key columns, chunk by chunk on disk or in memory, and return the
    connections' uids in that order (the places of the other tables' rows). Each table is then built in
    its order (``frame``; ``analyzer.tables.assemble``: about one table's worth of memory, not two) or
    read block by block."""
    keys = conns.map_chunks(lambda chunk: {"ts_start": chunk["ts_start"].to_numpy(dtype=np.float64),
                                           "first_frame": chunk["first_frame"].to_numpy(dtype=np.int64),
                                           "uid": arrow_strings(chunk["uid"])})
    conns.order = connection_order(keys["ts_start"], keys["first_frame"]) if keys \
        else np.arange(0, dtype=np.int64)
    places = Places(keys["uid"].take(pa.array(conns.order)) if keys else pa.array([], type=pa.large_string()))
    txs.order = _order_by_keys(txs, places, "transactions")
    return places


def _order_by_keys(table: SpilledTable | HeldChunks, places: Places, name: str) -> np.ndarray:
    """The order of the rows of the table ``name`` (``rows_in_order``), from its key columns read chunk by
    chunk (the uids as Arrow strings, placed in one lookup)."""
    cols = table.map_chunks(partial(_order_keys, names=ROW_ORDER[name]))
    if not cols:
        return np.arange(0, dtype=np.int64)
    return order_by_place(places.of(cols.pop("uid")), cols, name)


def anomaly_counts(anomalies: pd.DataFrame, spilled: Mapping[str, SpilledTable]) -> dict[str, int]:
    """The summary's anomaly counts by name, from the table or, when it was spilled, from its name column."""
    names = (pd.Series(spilled["anomalies"].columns_of(["name"])["name"], dtype="string") if "anomalies" in spilled
             else anomalies["name"])
    return {str(k): int(v) for k, v in names.value_counts().sort_index().items()}


def anomaly_order(anomalies: pd.DataFrame) -> np.ndarray:
    """The order of the anomaly table's rows: by time, then connection and name (stable)."""
    if not len(anomalies):
        return np.arange(0, dtype=np.int64)
    ranked = anomalies[["ts", "uid", "name"]].reset_index(drop=True)
    return ranked.sort_values(["ts", "uid", "name"], kind="stable").index.to_numpy()


def by_place(frame: pd.DataFrame, places: Places, name: str) -> pd.DataFrame:
    """The rows of the table ``name`` held in memory in table order: by their connection's place in
    ``places`` (the connections' uids in table order, ``order_tables``), then ``ROW_ORDER[name]``."""
    if not len(frame):
        return frame
    cols = {c: frame[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in ROW_ORDER[name]}
    return frame.iloc[rows_in_order(frame["uid"], cols, places, name)].reset_index(drop=True)


#: After the connection's place, the columns that order each table's rows.
ROW_ORDER: dict[str, tuple[str, ...]] = {"transactions": ("trans_depth",), "flights": ("trans_depth", "round"),
                                         "segments": ("frame",)}


def connection_order(ts_start: np.ndarray, first_frame: np.ndarray) -> np.ndarray:
    """The order of the connection table's rows: by start time, then first frame (stable)."""
    return np.lexsort((first_frame, ts_start))


def rows_in_order(uids: np.ndarray | pd.Series, cols: Mapping[str, np.ndarray], places: Places,
                  name: str) -> np.ndarray:
    """The order of a table's rows: by their connection's place in ``places``, then ``ROW_ORDER[name]``."""
    return order_by_place(places.of(uids), cols, name)


def order_by_place(place: np.ndarray, cols: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """``rows_in_order`` from each row's connection place (its row in the connection table)."""
    keys = [np.asarray(cols[c]) for c in reversed(ROW_ORDER[name])]
    return np.lexsort((*keys, place))


def _order_keys(chunk: pd.DataFrame, names: Sequence[str]) -> dict[str, Any]:
    """A chunk's order keys: its rows' connection uids (Arrow strings, ``arrow_strings``: a table's worth of
    uids as Python strings cost about 170 MiB on a 5 GB capture's 583,000 flights), and the columns
    ``names`` as floats."""
    keys: dict[str, Any] = {"uid": arrow_strings(chunk["uid"])}
    keys.update({c: chunk[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in names})
    return keys


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
