"""The command line: ``analyzer report | summary | export | compare | live``. Wiring only; the core never imports it.

Unreadable input is one line on stderr and exit code 2. Long runs show a progress bar on a terminal.
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Annotated, Any, TextIO

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

import analyzer
from analyzer.analysis import Analysis
from analyzer.errors import AnalyzerError
from analyzer.spill import BLOCK_ROWS
from analyzer.tables import TABLES, empty_frame

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    help="Are HTTP connections being reused, and what does it cost when they are not?",
)
PROGRESS_MIN_BYTES = 32 << 20  # show a progress bar for inputs larger than this (on a terminal)


class ExportFormat(StrEnum):
    json = "json"
    csv = "csv"
    parquet = "parquet"
    har = "har"


Captures = Annotated[list[Path], typer.Argument(help="Capture files (pcap, pcapng, optionally gzip-compressed), "
                                                "directories of them, or glob patterns.")]
Jobs = Annotated[int, typer.Option("--jobs", "-j", min=1, help="Analyze the captures in N processes (one capture "
                                   "per process at a time; the result does not depend on N).")]
Scheduler = Annotated[str | None, typer.Option("--scheduler", help="Run the per-capture work on this "
                                               "dask.distributed scheduler (tcp://host:8786); workers must "
                                               "see the capture files at the same paths.")]
Stitch = Annotated[bool, typer.Option("--stitch", help="The captures are rotated pieces of one capture "
                                      "(tcpdump -G/-C): read them as one stream, in natural name order.")]
Keylog = Annotated[Path | None, typer.Option("--keylog", help="TLS key log (SSLKEYLOGFILE / NSS format) to "
                                             "decrypt TLS; keys in pcapng Decryption Secrets Blocks are used "
                                             "anyway.")]
NoRedact = Annotated[bool, typer.Option("--no-redact", help="Keep cookies, authorization values, URL passwords "
                                        "and tokens (redacted by default).")]


def _fail(message: str) -> None:
    typer.echo(f"analyzer: error: {message}", err=True)
    raise typer.Exit(2)


def _warn_damage(summary: dict[str, Any]) -> None:
    """One line on stderr when the reader skipped records or stopped early (exit code stays 0: what could
    be read is analyzed; the summary's reader_skipped says which records, by reason)."""
    parts = []
    skipped = summary.get("reader_skipped") or {}
    if skipped:
        parts.append("records skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())))
    # records used with a note (timestamps, caplen > snaplen); a timestamp a little earlier than the one before
    # is normal (captures from several CPU queues), so it is counted in the summary but does not warn
    notes = {k: v for k, v in (summary.get("reader_notes") or {}).items() if k != "timestamp_backwards"}
    if notes:
        parts.append("records kept with a note: " + ", ".join(f"{k} {v}" for k, v in sorted(notes.items())))
    if notes.get("clock_step_back"):
        parts.append("times after a clock step back are shifted forward by the step")
    if summary.get("bytes_unread"):
        parts.append(f"{summary['bytes_unread']} bytes left unread")
    if parts:
        typer.echo(f"analyzer: warning: damaged capture: {'; '.join(parts)} (see the summary)", err=True)


def _analyze(captures: list[Path], quiet: bool = False, keylog: Path | None = None, jobs: int = 1,
             scheduler: str | None = None, stitch: bool = False, series: bool = True,
             spill_dir: Path | None = None, with_metrics: bool = True) -> Analysis:
    """The analysis of the captures (one error line and exit 2 when none can be read). ``series``: keep the
    per-packet series (``Analysis.segments``). Only the report's bytes-in-flight chart and ``export
    --segments`` show it; the other commands leave it out, and with it up to ``MAX_SERIES_ROWS`` rows of
    memory. ``spill_dir``: tables written there as they are made (``analyzer.spill``; export and summary,
    which do not need every table in memory). ``with_metrics``: the summary's metric keys (the report
    computes them itself)."""
    result = _analyze_files(captures, quiet, keylog, jobs, scheduler, stitch, series, spill_dir, with_metrics)
    _warn_damage(result.summary)
    return result


def _analyze_files(captures: list[Path], quiet: bool, keylog: Path | None, jobs: int, scheduler: str | None,
                   stitch: bool, series: bool, spill_dir: Path | None, with_metrics: bool) -> Analysis:
    from analyzer.parallel import analyze_captures, expand_captures
    from analyzer.pipeline import MAX_SERIES_ROWS

    _tune_gc()

    if keylog is not None and not keylog.is_file():
        _fail(f"{keylog}: no such file")
    err = Console(stderr=True)
    try:
        files = expand_captures(captures)
        total = sum(p.stat().st_size for p in files)
        options: dict[str, Any] = {"keylog": keylog, "jobs": jobs, "scheduler": scheduler, "stitch": stitch,
                                   "series_rows": MAX_SERIES_ROWS if series else 0, "spill_dir": spill_dir,
                                   "with_metrics": with_metrics}
        if quiet or not err.is_terminal or total < PROGRESS_MIN_BYTES:
            return analyze_captures(files, **options)
        columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task("analyzing", total=total)
            return analyze_captures(files, **options,
                                    progress=lambda done, _total: bar.update(task, completed=done))
    except AnalyzerError as exc:
        _fail(str(exc))
        raise  # unreachable


def _version(value: bool) -> None:
    if value:
        typer.echo(f"analyzer {analyzer.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Packet-capture analyzer for HTTP connection reuse."""


@app.command()
def report(
    captures: Captures,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="HTML file to write "
                                                "(default: reports/<first capture>.html).")] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress bar, no summary line.")] = False,
    keylog: Keylog = None,
    no_redact: NoRedact = False,
    jobs: Jobs = 1,
    scheduler: Scheduler = None,
    stitch: Stitch = False,
) -> None:
    """Write a self-contained interactive HTML report (works offline)."""
    from analyzer.report.html import write_report

    # the capture is read in a child process with its tables on disk (``analyzer.pipeline._in_child``): a
    # million tiny connections peaked at 2,807 MiB in one process. The report reads them back here, into a
    # clean heap, a step at a time: each metric and section the columns it reads (``report_reader``), and
    # of the anomalies only the examples it shows. The summary's metric keys are not computed in the child:
    # the report computes them with its own tables (the two readings back that ``analyze`` makes for them:
    # 10 s of a quarter million tiny connections' 92 s)
    with _spill_dir() as spill_dir:
        result = _analyze(captures, quiet, keylog, jobs, scheduler, stitch, spill_dir=spill_dir,
                          with_metrics=False)
        target = output or Path("reports") / (str(result.summary["captures"][0]).split(".")[0] + ".html")
        key = write_report(result, target, redact=not no_redact)
    if not quiet:
        s = result.summary
        typer.echo(f"{target}: {s['connections']} connections, {s['transactions']} transactions, "
                   f"reuse ratio {_fmt(key.get('reuse_ratio'))}")


@app.command()
def summary(captures: Captures, keylog: Keylog = None, jobs: Jobs = 1, scheduler: Scheduler = None,
            stitch: Stitch = False) -> None:
    """Print the key figures as terminal tables."""
    from analyzer.report.terminal import print_summary

    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # logs and pipes: room for the per-host table
    with _spill_dir() as spill_dir:
        print_summary(_analyze(captures, keylog=keylog, jobs=jobs, scheduler=scheduler, stitch=stitch,
                               series=False, spill_dir=spill_dir), console)


@app.command()
def export(
    captures: Captures,
    output: Annotated[Path, typer.Option("-o", "--output", help="File (json, har) or directory (csv, parquet).")],
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="json, csv, parquet or har (HAR 1.2).")]
    = ExportFormat.json,
    segments: Annotated[bool, typer.Option("--segments", help="Also write the per-packet series of data "
                                           "segments (bytes in flight; bounded, see the summary).")] = False,
    keylog: Keylog = None,
    no_redact: NoRedact = False,
    jobs: Jobs = 1,
    scheduler: Scheduler = None,
    stitch: Stitch = False,
    partitioned: Annotated[bool, typer.Option("--partitioned", help="Parquet only: one directory per table, "
                                              "partitioned by capture (DIR/connections/capture=x.pcap/...), "
                                              "for pandas, pyarrow or DuckDB.")] = False,
) -> None:
    """Write the tables: JSON {summary, connections, transactions, anomalies, flights[, segments]}, or one
    CSV/Parquet file per table plus summary.json in a directory, or HAR 1.2 (one entry per transaction).
    Credentials in capture strings are redacted unless --no-redact."""
    if partitioned and fmt != ExportFormat.parquet:
        _fail("--partitioned needs --format parquet")
    with _spill_dir() as spill_dir:
        result = _analyze(captures, quiet=True, keylog=keylog, jobs=jobs, scheduler=scheduler, stitch=stitch,
                          series=segments, spill_dir=spill_dir)
        write_export(result, output, fmt.value, segments=segments, redact=not no_redact, partitioned=partitioned)


@contextmanager
def _spill_dir() -> Iterator[Path]:
    """A temporary directory for the tables of one run (``analyzer.spill``; under ``$TMPDIR``), removed
    afterwards."""
    with tempfile.TemporaryDirectory(prefix="analyzer-spill-") as name:
        yield Path(name)


@app.command()
def compare(
    before: Annotated[Path, typer.Argument(help="Capture before the change.")],
    after: Annotated[Path, typer.Argument(help="Capture after the change.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="HTML file to write.")] = Path("reports/compare.html"),
    keylog: Keylog = None,
    no_redact: NoRedact = False,
) -> None:
    """Write a self-contained HTML page comparing two captures (connections, reuse, handshakes, per host)."""
    from analyzer.report.compare import write_compare

    first = _analyze([before], quiet=True, keylog=keylog)
    second = _analyze([after], quiet=True, keylog=keylog)
    write_compare(first, second, before.name, after.name, output, redact=not no_redact)
    typer.echo(f"{output}: {first.summary['connections']} → {second.summary['connections']} connections, reuse "
               f"ratio {_fmt(first.summary.get('reuse_ratio'))} → {_fmt(second.summary.get('reuse_ratio'))}")


def write_export(result: Analysis, output: Path, fmt: str, segments: bool = False, redact: bool = True,
                 partitioned: bool = False) -> None:
    """Write the tables in ``fmt`` (see ``export``), block by block: a table left on disk
    (``Analysis.spilled``) is read back ``analyzer.spill.BLOCK_ROWS`` rows at a time and redacted block by
    block; a table held in memory is written in slices of as many rows. The files are the same either way.
    HAR and ``partitioned`` Parquet need the connections and transactions whole: they are read back first."""
    from analyzer.heap import release_free_memory
    from analyzer.report.redact import TEXT_COLUMNS, redact_analysis, redact_frame

    if fmt == "har" or partitioned:  # both need the connections and transactions whole
        result = result.held()
    if redact:
        result = redact_analysis(result)
    if fmt == "har":
        from analyzer.report.har import write_har

        write_har(result, output)
        return
    names = ["connections", "transactions", "anomalies", "flights", *(["segments"] if segments else [])]

    def blocks(name: str) -> Iterator[pd.DataFrame]:
        """The table's rows in order, in one or more blocks of at most ``BLOCK_ROWS`` (at least one, maybe
        empty): a table's conversion (Arrow, JSON records) is made a block at a time."""
        if name not in result.spilled:
            table = getattr(result, name)
            for at in range(0, max(len(table), 1), BLOCK_ROWS):
                yield table.iloc[at:at + BLOCK_ROWS]
            return
        some = False
        for block in result.spilled[name].blocks():
            some = True
            yield redact_frame(block, TEXT_COLUMNS.get(name, ())) if redact else block
        if not some:
            yield empty_frame(TABLES[name])

    summary = _clean_tree(result.summary)
    if fmt == "json":
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w") as out:
            _write_json(out, summary, {name: blocks(name) for name in names})
        return
    output.mkdir(parents=True, exist_ok=True)
    capture_of = (dict(zip(result.connections["uid"], result.connections["capture"], strict=True)) if partitioned
                  else {})
    for name in names:
        release_free_memory()  # each table's conversion (Arrow, CSV text) is garbage once written
        path = output / f"{name}.{fmt}"
        if fmt == "csv":
            for i, block in enumerate(blocks(name)):
                block.to_csv(path, index=False, mode="w" if i == 0 else "a", header=i == 0)
        elif partitioned:  # every table gets its rows' capture (from their connection) as the partition key
            df = pd.concat(list(blocks(name)), ignore_index=True)
            part = df if "capture" in df.columns else df.assign(capture=df["uid"].map(capture_of).fillna(""))
            part.to_parquet(output / name, index=False, partition_cols=["capture"],
                            existing_data_behavior="delete_matching")
        else:
            _write_parquet_blocks(path, blocks(name), TABLES[name])
    (output / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default, allow_nan=False) + "\n")


def _write_parquet_blocks(path: Path, blocks: Iterable[pd.DataFrame], columns: dict[str, str]) -> None:
    """One Parquet file from blocks of one table (a row group or more each), with the schema of the
    table's columns (not inferred from the first block, where a column may be all missing)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.Schema.from_pandas(empty_frame(columns), preserve_index=False)
    with pq.ParquetWriter(path, schema) as writer:
        for block in blocks:
            writer.write_table(pa.Table.from_pandas(block, schema=schema, preserve_index=False))


def _write_json(out: TextIO, summary: dict[str, Any], tables: dict[str, Iterable[pd.DataFrame]]) -> None:
    """``{"summary": ..., table: [rows], ...}`` as ``json.dumps(doc, indent=1)`` would write it, written a
    block of rows at a time (the whole document is never in memory)."""
    def dumps(value: Any) -> str:
        return json.dumps(value, indent=1, default=_json_default, allow_nan=False)

    out.write("{\n " + dumps("summary") + ": " + dumps(summary).replace("\n", "\n "))
    for name, blocks in tables.items():
        out.write(",\n " + dumps(name) + ": [")
        first = True
        for block in blocks:
            for record in _json_rows(block):
                out.write(("\n  " if first else ",\n  ") + record)
                first = False
        out.write("]" if first else "\n ]")
    out.write("\n}\n")


def _json_rows(block: pd.DataFrame) -> Iterator[str]:
    """Each row of ``block`` (its columns of the tables' schema) as ``json.dumps(record, indent=1)``
    writes it two levels deep in the document: ``{``, one ``"name": value`` line per column, ``}``.

    Built a column at a time (``_json_column``): ``json.dumps`` with ``indent`` runs the pure-Python
    encoder on every row (the rows of 50,000 tiny connections: 6.1 s that way, 1.9 s this way); a record
    here is flat, so the indentation is fixed text. Byte for byte the same (``tests/test_spill.py``)."""
    known = {n for cols in TABLES.values() for n in cols}
    names = [n for n in block.columns if n in known]
    if not names:
        return iter(["{}"] * len(block))
    columns = [_json_column(block[n]) for n in names]
    keys = ["\n   " + json.dumps(n) + ": " for n in names]
    return ("{" + ",".join(k + v for k, v in zip(keys, row, strict=True)) + "\n  }"
            for row in zip(*columns, strict=True))


def _json_column(column: pd.Series) -> list[str]:
    """The JSON text of each value of ``column`` as ``json.dumps`` writes it (missing: ``null``; an
    infinite number raises ``ValueError``, as ``allow_nan=False`` does)."""
    values = column.array
    if isinstance(values, pd.arrays.BooleanArray):
        missing = values.isna().tolist()
        return ["null" if m else "true" if v else "false"
                for v, m in zip(values.to_numpy(dtype=bool, na_value=False).tolist(), missing, strict=True)]
    if isinstance(values, pd.arrays.IntegerArray):
        missing = values.isna().tolist()
        return ["null" if m else int.__repr__(v)
                for v, m in zip(values.to_numpy(dtype=np.int64, na_value=0).tolist(), missing, strict=True)]
    if column.dtype.kind in "iu":
        return [int.__repr__(v) for v in column.to_numpy().tolist()]
    if column.dtype.kind == "b":
        return ["true" if v else "false" for v in column.to_numpy().tolist()]
    if column.dtype == np.float64:
        numbers = column.to_numpy()
        if np.isinf(numbers).any():
            raise ValueError("Out of range float values are not JSON compliant")
        return ["null" if v != v else float.__repr__(v) for v in numbers.tolist()]
    if isinstance(column.dtype, pd.StringDtype):
        return ["null" if v is None or v is pd.NA or v != v else encode_basestring_ascii(v)
                for v in column.tolist()]
    return [_json_cell(v) for v in column.astype(object).tolist()]


def _json_cell(value: Any) -> str:
    value = _clean(value)
    return json.dumps(value, indent=1, default=_json_default, allow_nan=False).replace("\n", "\n   ")


def _clean(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _clean(value.item())
    return value


def _clean_tree(value: Any) -> Any:
    """The summary with NaN and numpy scalars made JSON-safe (null, plain numbers), recursively."""
    if isinstance(value, dict):
        return {k: _clean_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_tree(v) for v in value]
    return _clean(value)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


# --- live capture (issue 5) ----------------------------------------------------------------------------


@app.command()
def live(
    interface: Annotated[str, typer.Option("-i", "--interface", help="Network interface to capture on.")],
    bpf_filter: Annotated[str | None, typer.Option("--filter", help="BPF capture filter, as tcpdump's "
                                                   "(e.g. \"tcp port 80 or tcp port 443\").")] = None,
    duration: Annotated[float | None, typer.Option("--duration", min=0.0, help="Stop after S seconds.")] = None,
    count: Annotated[int | None, typer.Option("--count", min=1, help="Stop after N packets.")] = None,
    write: Annotated[Path | None, typer.Option("--write", "-w", help="Also write every packet seen to this "
                                               "pcap (nanosecond timestamps).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="HTML report written at the end "
                                                "(default: reports/live-<interface>.html).")] = None,
    keylog: Keylog = None,
    interval: Annotated[float | None, typer.Option("--interval", min=0.5, help="Also rewrite the HTML report "
                                                   "every S seconds while capturing.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the tables as `analyzer export "
                                                  "--format json` does.")] = None,
    snaplen: Annotated[int, typer.Option("--snaplen", min=64, help="Bytes kept per packet.")] = 262_144,
    promisc: Annotated[bool, typer.Option("--promisc", help="Put the interface in promiscuous mode.")] = False,
    keep_connections: Annotated[int, typer.Option("--keep-connections", min=1, help="Finished connections "
                                                  "whose rows are kept for the report (older ones are "
                                                  "counted, then dropped: bounded memory).")] = 100_000,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No dashboard, no summary line.")] = False,
) -> None:
    """Capture on an interface with a live dashboard; on Ctrl-C, --duration or --count write the HTML
    report (and the pcap with --write). Needs root or CAP_NET_RAW."""
    import os
    import signal
    import threading
    import time

    from analyzer.capture.live import LiveCapture, LiveCaptureError
    from analyzer.pipeline import Session
    from analyzer.report.html import write_report
    from analyzer.report.live_dashboard import CaptureHealth, LiveDashboard

    if keylog is not None and not keylog.is_file():
        _fail(f"{keylog}: no such file")
    try:
        session = Session(keylog=keylog)
    except AnalyzerError as exc:
        _fail(str(exc))
        raise  # unreachable
    target = output or Path("reports") / f"live-{interface}.html"
    cap = LiveCapture(interface, bpf_filter, snaplen=snaplen, promisc=promisc, max_packets=count, write=write)
    try:
        cap.open()
    except LiveCaptureError as exc:
        _fail(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    session.start_capture(f"live:{interface}")
    err = Console(stderr=True)
    typer.echo(f"analyzer: listening on {interface}" + (f" ({bpf_filter})" if bpf_filter else ""), err=True)
    deadline = time.monotonic() + duration if duration is not None else None
    next_report = time.monotonic() + interval if interval is not None else None
    next_refresh = 0.0
    try:
        with LiveDashboard(err, line_every_s=10.0 if not quiet else math.inf) as board:
            while not cap.finished:
                if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    cap.stop()
                batch = cap.get(0.1)
                if batch is not None:
                    session.feed(batch)
                now = time.monotonic()
                if now >= next_refresh:
                    next_refresh = now + 1.0
                    if len(session.conn_rows) > keep_connections + keep_connections // 10:
                        session.forget_finished(keep_connections)
                    if not quiet:
                        board.refresh(session, CaptureHealth(cap.stats.packets_read, cap.stats.kernel_drops or 0,
                                                             cap.own_drops, interface))
                if next_report is not None and interval is not None and now >= next_report:
                    next_report = now + interval
                    partial = target.with_name(target.name + ".part")
                    write_report(session.snapshot(cap.reader_stats()), partial)
                    os.replace(partial, target)
    finally:
        cap.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    session.end_capture(cap.stats)
    session.forget_finished(keep_connections)  # the connections closed at the end count against the bound too
    result = session.result()
    result.summary["live_interface"] = interface
    result.summary["live_own_drops"] = cap.own_drops
    if json_out is not None:
        write_export(result, json_out, "json")
    write_report(result, target)
    if cap.error is not None:
        _fail(f"capture on {interface} stopped: {cap.error}")
    if not quiet:
        s = result.summary
        typer.echo(f"{target}: {s['connections']} connections, {s['transactions']} transactions, reuse ratio "
                   f"{_fmt(s.get('reuse_ratio'))}; {s['packets_read']} packets, kernel drops "
                   f"{s['kernel_drops']}, own drops {cap.own_drops}, unread at stop "
                   f"{(s.get('reader_skipped') or {}).get('live_unread_at_stop', 0)}"
                   + (f"; wrote {write}" if write else ""))


def _tune_allocator() -> None:
    """Keep large numpy temporaries on glibc's heap instead of a fresh mmap each time, and Arrow's there too.

    Chunk-sized arrays (tens of MB) are allocated and freed per chunk; with glibc's default dynamic mmap
    threshold each one costs an mmap/munmap and page faults. Measured on bench/ (1.2 M packets, 1.27 GB):
    system time 3.7 s → 1.5 s, wall 14.4 s → 11.8 s, peak RSS 470 → 478 MiB. A process-wide choice, so it
    is made by the command line, never by the library. No-op where glibc's mallopt is not available.

    Arrow allocates from the same heap (``pyarrow.system_memory_pool``) instead of its own mimalloc pool:
    memory Arrow frees (the string columns, ``index_in``'s hash tables) is then reused by numpy and Python,
    where mimalloc's pages were reused by Arrow only and stayed in the RSS. Measured: the summary's metrics
    over the columns of a million tiny connections peak 471 MiB above them instead of 553–574, in 12.6 s
    instead of 15.5; ``analyzer export`` of a quarter million, 524–532 MiB instead of 540–545 (the scan),
    user time within this machine's noise.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 128 << 20)
    except (OSError, AttributeError):
        pass
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def _tune_gc() -> None:
    """Spare the analysis most of the cyclic garbage collector's full passes.

    The objects there are before an analysis (modules, classes, functions: hundreds of thousands) are
    frozen (``gc.freeze``: never traversed again), and collections are made rarer (``gc.set_threshold(2000,
    20, 100)``: a full pass after 100 middle ones, instead of 10). The analysis makes few reference cycles
    (an HTTP/1 connection and its parsers have none, so they are freed by reference counting), so the
    garbage a cycle holds waits a little longer at most. Measured on bench/ (1.2 M packets): time in the
    collector 2.5 s → 0.4 s, peak RSS unchanged (513 → 511 MiB). A process-wide choice, so it is made by the
    command line, never by the library."""
    gc.freeze()
    gc.set_threshold(2000, 20, 100)


def main() -> None:
    _tune_allocator()
    try:
        app()
    except BrokenPipeError:  # e.g. `analyzer summary x | head`
        sys.exit(0)
