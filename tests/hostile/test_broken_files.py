"""Broken capture files (issue 8, item 1): a matrix of damage × format, each built here from a committed
capture (``captures/keepalive-idle-timeout.pcap``, 246 packets), nothing large written to the repository.

For every case the file is read three ways: the reader (``open_capture``: its ``ReaderStats``), the API
(``analyzer.analyze``: the summary and the tables) and the command line (``analyzer summary`` and
``analyzer export --format json``; in process with typer's runner for the whole matrix, as real
``.venv/bin/analyzer`` processes for a representative subset). What must hold:

* exit code 2 and one line ``analyzer: error: FILE: why`` when nothing can be read (no capture header:
  zero bytes, bad magic, garbage, a header cut short); 0 otherwise, including a header-only file (a valid,
  empty capture: empty tables, ``packets_read`` 0), with one ``analyzer: warning:`` line on stderr when
  records were skipped;
* the summary names what was skipped and why (``reader_skipped`` by reason) and every packet is accounted
  for (``packets_read == packets_analyzed + sum(packets_skipped)``);
* the intact records before *and after* the damage are read: a corrupt record or block in the middle is
  stepped over (resync: pcapng by its length fields and block types, classic pcap by the next run of
  plausible record headers) and the bytes stepped over are counted; when reading has to stop (garbage at
  the end), the bytes left unread and the reason are recorded;
* timestamps: invalid ones (µs >= 1e6, ns >= 1e9, a pcapng tick count beyond int64 ns, zero or far-future
  outliers) are counted as ``invalid_timestamp`` and replaced by the previous packet's; records earlier than
  their predecessor are counted as ``timestamp_backwards`` and kept; the tables' durations stay within a
  second of the undamaged capture's;
* a record caplen above the file's snaplen is used and counted (``caplen_over_snaplen``).

The reader's counters (``ReaderStats.notes``, ``bytes_skipped``, ``bytes_unread``) reach the summary as
``reader_notes``, ``bytes_skipped`` and ``bytes_unread``. A clock stepping back by two hours mid-capture
still gives negative durations (``analyzer/records.py``; strict xfail).
"""

from __future__ import annotations

import gzip
import json
import random
import struct
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

import analyzer
from analyzer.capture import pcapfile
from analyzer.capture.pcapfile import open_capture
from analyzer.cli import app
from analyzer.errors import CaptureFormatError

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "captures" / "keepalive-idle-timeout.pcap"
ANALYZER = ROOT / ".venv" / "bin" / "analyzer"
TOLERANCE_MS = 1000.0  # a damaged timestamp may move a duration by the gap to its neighbour, never more


# ----------------------------------------------------------------------------------------- building files
@dataclass
class Rec:
    sec: int
    frac: int  # µs (ns in a nanosecond pcap)
    data: bytes
    wire: int


@cache
def source() -> tuple[int, tuple[Rec, ...]]:
    """(link type, records) of the committed capture (classic µs pcap, little-endian)."""
    raw = SOURCE.read_bytes()
    magic, _, _, _, _, _, network = struct.unpack_from("<IHHiIII", raw, 0)
    assert magic == 0xA1B2C3D4
    recs, pos = [], 24
    while pos < len(raw):
        sec, frac, caplen, wire = struct.unpack_from("<IIII", raw, pos)
        recs.append(Rec(sec, frac, raw[pos + 16: pos + 16 + caplen], wire))
        pos += 16 + caplen
    return network, tuple(recs)


def records() -> list[Rec]:
    return [Rec(r.sec, r.frac, r.data, r.wire) for r in source()[1]]


def pcap_parts(recs: list[Rec], *, nano: bool = False, snaplen: int = 262144) -> list[bytes]:
    """[file header, record 0, record 1, ...] of a classic pcap."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    head = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, source()[0])
    return [head] + [struct.pack("<IIII", r.sec, r.frac, len(r.data), r.wire) + r.data
                     for r in recs]


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)


def pcapng_parts(recs: list[Rec], *, snaplen: int = 0, ticks: Callable[[Rec], int] | None = None) -> list[bytes]:
    """[SHB + IDB (µs resolution), EPB 0, EPB 1, ...] of a pcapng (the way the repository's reader tests and
    ``editcap -F pcapng`` lay it out)."""
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = _block(0x00000001, struct.pack("<HHI", source()[0], 0, snaplen))
    out = [shb + idb]
    for r in recs:
        t = ticks(r) if ticks is not None else r.sec * 1_000_000 + r.frac
        t &= (1 << 64) - 1
        out.append(_block(0x00000006, struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF, len(r.data), r.wire)
                          + r.data))
    return out


def build(fmt: str, recs: list[Rec], **kw: Any) -> list[bytes]:
    return pcapng_parts(recs, **kw) if fmt == "pcapng" else pcap_parts(recs, **kw)


MID = 123  # the damaged record: in the middle of a keep-alive connection


@dataclass
class Case:
    """One damaged file and what reading it must give."""

    data: bytes
    kept: list[bytes]  # the packets the reader must hand out, in order
    skipped: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    bytes_skipped: int = 0
    bytes_unread: int = 0
    stop_reason: str | None = None


def _frames(recs: list[Rec]) -> list[bytes]:
    return [r.data for r in recs]


def truncated_end(fmt: str) -> Case:
    recs = records()
    parts = build(fmt, recs)
    cut = len(parts[-1]) // 2
    return Case(b"".join(parts[:-1]) + parts[-1][:cut], _frames(recs[:-1]), {"truncated_record": 1},
                bytes_unread=cut, stop_reason="truncated_record")


def truncated_record_header(fmt: str) -> Case:
    recs = records()
    parts = build(fmt, recs)
    return Case(b"".join(parts[:-1]) + parts[-1][:10], _frames(recs[:-1]), {"truncated_record": 1},
                bytes_unread=10, stop_reason="truncated_record")


def corrupt_length_middle(fmt: str) -> Case:
    """An absurd length field in the middle: pcap caplen 0x7FFF0000, pcapng block length 13."""
    recs = records()
    parts = build(fmt, recs)
    bad = bytearray(parts[1 + MID])
    if fmt == "pcapng":
        struct.pack_into("<I", bad, 4, 13)
    else:
        struct.pack_into("<I", bad, 8, 0x7FFF_0000)
    parts[1 + MID] = bytes(bad)
    return Case(b"".join(parts), _frames(recs[:MID] + recs[MID + 1:]), {"corrupt_record": 1},
                bytes_skipped=len(bad))


def wrong_block_length_middle(fmt: str) -> Case:
    """A sane but wrong pcapng block length (8 bytes too long): the trailing copy disagrees."""
    recs = records()
    parts = build(fmt, recs)
    bad = bytearray(parts[1 + MID])
    struct.pack_into("<I", bad, 4, len(bad) + 8)
    parts[1 + MID] = bytes(bad)
    return Case(b"".join(parts), _frames(recs[:MID] + recs[MID + 1:]), {"corrupt_record": 1},
                bytes_skipped=len(bad))


def corrupt_trailer_middle(fmt: str) -> Case:
    """Only a pcapng block's trailing length is damaged: that block is dropped, the next one is intact."""
    recs = records()
    parts = build(fmt, recs)
    bad = bytearray(parts[1 + MID])
    struct.pack_into("<I", bad, len(bad) - 4, 0xDEADBEEF)
    parts[1 + MID] = bytes(bad)
    return Case(b"".join(parts), _frames(recs[:MID] + recs[MID + 1:]), {"corrupt_record": 1},
                bytes_skipped=len(bad))


def garbage_tail(fmt: str) -> Case:
    recs = records()
    junk = random.Random(8).randbytes(1000)
    return Case(b"".join(build(fmt, recs)) + junk, _frames(recs), {"corrupt_record": 1}, bytes_unread=1000,
                stop_reason="corrupt_record")


def unknown_block(fmt: str) -> Case:
    recs = records()
    parts = build(fmt, recs)
    parts.insert(1 + MID, _block(0x0BADF00D, b"what is this" * 3))
    return Case(b"".join(parts), _frames(recs), {"pcapng_unknown_block": 1})


def caplen_over_snaplen(fmt: str) -> Case:
    recs = records()
    over = sum(len(r.data) > 128 for r in recs)
    assert over > 50
    return Case(b"".join(build(fmt, recs, snaplen=128)), _frames(recs), notes={"caplen_over_snaplen": over})


def _retimed(fmt: str, change: Callable[[list[Rec]], None], notes: dict[str, int], nano: bool = False) -> Case:
    recs = records()
    if nano:
        for r in recs:
            r.frac *= 1000
    change(recs)
    kw: dict[str, Any] = {"nano": True} if nano else {}
    return Case(b"".join(build(fmt, recs, **kw)), _frames(recs), notes=notes)


def ts_backwards(fmt: str) -> Case:
    """Two neighbours' timestamps swapped: one record earlier than its predecessor."""
    def swap(recs: list[Rec]) -> None:
        a, b = recs[MID], recs[MID + 1]
        a.sec, a.frac, b.sec, b.frac = b.sec, b.frac, a.sec, a.frac
    return _retimed(fmt, swap, {"timestamp_backwards": 1})


def ts_zero(fmt: str) -> Case:
    def zero(recs: list[Rec]) -> None:
        recs[MID].sec = recs[MID].frac = 0
    return _retimed(fmt, zero, {"invalid_timestamp": 1})


def ts_first_zero(fmt: str) -> Case:
    def zero(recs: list[Rec]) -> None:
        recs[0].sec = recs[0].frac = 0
    return _retimed(fmt, zero, {"invalid_timestamp": 1})


def ts_far_future(fmt: str) -> Case:
    def future(recs: list[Rec]) -> None:
        recs[MID].sec = 4_000_000_000  # 2096
    return _retimed(fmt, future, {"invalid_timestamp": 1})


def ts_usec_overflow(fmt: str) -> Case:
    def overflow(recs: list[Rec]) -> None:
        recs[MID].frac = 2_500_000
        recs[MID + 5].frac = 0xFFFF_FFFF
    return _retimed(fmt, overflow, {"invalid_timestamp": 2})


def ts_nsec_overflow(fmt: str) -> Case:
    def overflow(recs: list[Rec]) -> None:
        recs[MID].frac = 1_000_000_000
        recs[MID + 5].frac = 0x8000_0000
    return _retimed(fmt, overflow, {"invalid_timestamp": 2}, nano=True)


def ts_pcapng_beyond_int64(fmt: str) -> Case:
    recs = records()
    big = (1 << 64) - 1  # 2**64 µs: far beyond what an int64 of ns holds (year 2262)
    mid = recs[MID]
    parts = pcapng_parts(recs, ticks=lambda r: big if r is mid else r.sec * 1_000_000 + r.frac)
    return Case(b"".join(parts), _frames(recs), notes={"invalid_timestamp": 1})


def clock_step_back(fmt: str) -> Case:
    """The capturing host's clock steps back two hours mid-capture (and stays there)."""
    def step(recs: list[Rec]) -> None:
        for r in recs[MID:]:
            r.sec -= 7200
    return _retimed(fmt, step, {"clock_step_back": 1})


def header_only(fmt: str) -> Case:
    return Case(build(fmt, [])[0], [])


BOTH = ("pcap", "pcapng")
CASES: dict[str, tuple[Callable[[str], Case], tuple[str, ...]]] = {
    "truncated_end": (truncated_end, BOTH),
    "truncated_record_header": (truncated_record_header, BOTH),
    "corrupt_length_middle": (corrupt_length_middle, BOTH),
    "wrong_block_length_middle": (wrong_block_length_middle, ("pcapng",)),
    "corrupt_trailer_middle": (corrupt_trailer_middle, ("pcapng",)),
    "garbage_tail": (garbage_tail, BOTH),
    "unknown_block": (unknown_block, ("pcapng",)),
    "caplen_over_snaplen": (caplen_over_snaplen, BOTH),
    "ts_backwards": (ts_backwards, BOTH),
    "ts_zero": (ts_zero, BOTH),
    "ts_first_zero": (ts_first_zero, BOTH),
    "ts_far_future": (ts_far_future, BOTH),
    "ts_usec_overflow": (ts_usec_overflow, ("pcap",)),
    "ts_nsec_overflow": (ts_nsec_overflow, ("pcap",)),
    "ts_beyond_int64": (ts_pcapng_beyond_int64, ("pcapng",)),
    "clock_step_back": (clock_step_back, BOTH),
    "header_only": (header_only, BOTH),
}
MATRIX = [pytest.param(name, fmt, id=f"{name}-{fmt}") for name, (_, fmts) in CASES.items() for fmt in fmts]

# The file cannot be read as a capture at all: exit 2, one line, CaptureFormatError.
UNREADABLE: dict[str, tuple[bytes, str]] = {
    "zero_length": (b"", "empty file (0 bytes)"),
    "bad_magic": (b"\x89PNG" + b"".join(pcap_parts(list(source()[1][:3])))[4:], "not a pcap or pcapng file"),
    "garbage": (random.Random(1).randbytes(4096), "not a pcap or pcapng file"),
    "pcap_header_cut": (b"".join(pcap_parts([]))[:10], "file too short for a pcap header"),
    "pcapng_bad_byte_order": (_block(0x0A0D0D0A, struct.pack("<IHHq", 0x11223344, 1, 0, -1)),
                              "bad byte-order magic"),
    "three_bytes": (b"\xd4\xc3\xb2", "file too short"),
}


def write_case(tmp_path: Path, name: str, fmt: str) -> tuple[Path, Case]:
    case = CASES[name][0](fmt)
    path = tmp_path / f"{name}.{fmt}"
    path.write_bytes(case.data)
    return path, case


@cache
def pristine() -> analyzer.Analysis:
    return analyzer.analyze(SOURCE)


def _durations(a: analyzer.Analysis) -> dict[str, pd.Series]:
    out = {}
    for table in ("connections", "transactions"):
        frame = getattr(a, table)
        for col in frame.columns:
            if col.endswith("_ms"):
                out[f"{table}.{col}"] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return out


def assert_times_sane(a: analyzer.Analysis) -> None:
    """No duration beyond the undamaged capture's range by more than ``TOLERANCE_MS`` (so none goes negative
    that was not already: pipelined requests have a negative ``idle_before_ms`` by definition), and the
    capture's span within a second of the original's."""
    base = _durations(pristine())
    for name, values in _durations(a).items():
        v = values.dropna()
        if not len(v):
            continue
        ref = base[name].dropna()
        lo = min(float(ref.min()), 0.0) if len(ref) else 0.0
        hi = float(ref.max()) if len(ref) else 0.0
        assert float(v.min()) >= lo - TOLERANCE_MS, (name, float(v.min()), lo)
        assert float(v.max()) <= hi + TOLERANCE_MS, (name, float(v.max()), hi)
    span, ref_span = a.summary["duration_s"], pristine().summary["duration_s"]
    if span is not None:
        assert abs(span - ref_span) <= TOLERANCE_MS / 1000, (span, ref_span)


# ------------------------------------------------------------------------------------------- the matrix
@pytest.mark.parametrize("read_size", [None, 1000], ids=["reads-32MiB", "reads-1000B"])
@pytest.mark.parametrize(("name", "fmt"), MATRIX)
def test_reader_accounts_for_every_record(name: str, fmt: str, read_size: int | None, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Also with 1000-byte reads, so that damage, resync and the end of the file fall across buffers."""
    if read_size is not None:
        monkeypatch.setattr(pcapfile, "READ_SIZE", read_size)
        monkeypatch.setattr(pcapfile, "_HEAD_SIZE", read_size)
    path, case = write_case(tmp_path, name, fmt)
    reader = open_capture(path, chunk_packets=50)
    got = [bytes(b.buf[o: o + c]) for b in reader.batches()
           for o, c in zip(b.offset.tolist(), b.caplen.tolist(), strict=True)]
    st = reader.stats
    assert got == case.kept  # the intact records before and after the damage, in order
    assert st.packets_read == len(case.kept)
    assert dict(st.skipped) == case.skipped
    assert dict(st.notes) == case.notes
    assert st.bytes_skipped == case.bytes_skipped
    assert st.bytes_unread == case.bytes_unread
    assert st.stop_reason == case.stop_reason


@pytest.mark.parametrize(("name", "fmt"), [pytest.param(n, f, id=f"{n}-{f}") for n in (
    "corrupt_length_middle", "garbage_tail", "truncated_end", "ts_far_future") for f in BOTH])
def test_reader_same_through_gzip(name: str, fmt: str, tmp_path: Path) -> None:
    """The damaged file gzip-compressed: the same packets and counts (lengths in decompressed bytes)."""
    case = CASES[name][0](fmt)
    path = tmp_path / f"{name}.{fmt}.gz"
    path.write_bytes(gzip.compress(case.data))
    reader = open_capture(path, chunk_packets=50)
    got = [bytes(b.buf[o: o + c]) for b in reader.batches()
           for o, c in zip(b.offset.tolist(), b.caplen.tolist(), strict=True)]
    st = reader.stats
    assert got == case.kept
    assert (dict(st.skipped), dict(st.notes)) == (case.skipped, case.notes)
    assert (st.bytes_skipped, st.bytes_unread, st.stop_reason) == (case.bytes_skipped, case.bytes_unread,
                                                                   case.stop_reason)


@pytest.mark.parametrize(("name", "fmt"), MATRIX)
def test_analysis_goes_on_and_adds_up(name: str, fmt: str, tmp_path: Path) -> None:
    path, case = write_case(tmp_path, name, fmt)
    a = analyzer.analyze(path)
    s = a.summary
    assert s["packets_read"] == len(case.kept)
    assert s["packets_read"] == s["packets_analyzed"] + sum(s["packets_skipped"].values()), s
    assert s["reader_skipped"] == case.skipped  # what was skipped, and why
    if not case.kept:
        assert s["connections"] == 0 and len(a.transactions) == 0 and s["duration_s"] is None
        return
    base = pristine()
    assert s["connections"] >= len(base.connections) - 1  # one record lost costs at most one connection
    assert len(a.transactions) >= len(base.transactions) - 1
    assert s["ts_last"] is not None and s["ts_last"] >= base.summary["ts_last"] - (  # read to the end
        1.0 if name != "truncated_end" and name != "truncated_record_header" else 1.5)
    assert_times_sane(a)


@pytest.mark.parametrize("fmt", BOTH)
def test_clock_step_back_gives_no_negative_durations(fmt: str, tmp_path: Path) -> None:
    """The times after the step are shifted forward by it: every duration and the capture's span are as in
    the undamaged capture (within the gap to the neighbour), and the transactions are the same."""
    path, _ = write_case(tmp_path, "clock_step_back", fmt)
    a = analyzer.analyze(path)
    assert_times_sane(a)
    assert a.summary["reader_notes"] == {"clock_step_back": 1}
    cols = ["method", "target", "status", "trans_depth"]  # (uids follow start times: later ones differ)
    assert a.transactions[cols].equals(pristine().transactions[cols])


SUMMARY_CASES = [pytest.param(n, f, id=f"{n}-{f}") for n, f in (
    ("corrupt_length_middle", "pcapng"), ("garbage_tail", "pcap"), ("ts_far_future", "pcapng"))]


@pytest.mark.parametrize(("name", "fmt"), SUMMARY_CASES)
def test_summary_reports_notes_and_bytes(name: str, fmt: str, tmp_path: Path) -> None:
    path, case = write_case(tmp_path, name, fmt)
    s = analyzer.analyze(path).summary
    assert s["reader_notes"] == case.notes
    assert s["bytes_skipped"] == case.bytes_skipped
    assert s["bytes_unread"] == case.bytes_unread


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_input_raises_one_line(name: str, tmp_path: Path) -> None:
    data, why = UNREADABLE[name]
    path = tmp_path / f"{name}.pcap"
    path.write_bytes(data)
    with pytest.raises(CaptureFormatError) as info:
        analyzer.analyze(path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(path)) and why in text, text


# --------------------------------------------------------------------------------------- command line
def _cli(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(("name", "fmt"), MATRIX)
def test_cli_exit_code_summary_and_export(name: str, fmt: str, tmp_path: Path) -> None:
    path, case = write_case(tmp_path, name, fmt)
    out = tmp_path / "x.json"
    code, _, err = _cli(["export", str(path), "--format", "json", "-o", str(out)])
    assert code == 0, err
    s = json.loads(out.read_text())["summary"]
    assert s["packets_read"] == len(case.kept) == s["packets_analyzed"] + sum(s["packets_skipped"].values())
    assert s["reader_skipped"] == case.skipped
    lines = err.strip().splitlines()
    # one line: damaged, and how (a timestamp a little earlier than the one before is normal: no warning)
    notes = {k: v for k, v in (s.get("reader_notes") or {}).items() if k != "timestamp_backwards"}
    if case.skipped or notes or s.get("bytes_unread"):
        assert len(lines) == 1 and lines[0].startswith("analyzer: warning: damaged capture: "), lines
        assert all(reason in lines[0] for reason in [*case.skipped, *notes]), lines
    else:
        assert lines == [], err


SUMMARY_TEXT_CASES = [pytest.param(n, f, id=f"{n}-{f}") for n, f in (
    ("truncated_end", "pcapng"), ("corrupt_length_middle", "pcap"), ("garbage_tail", "pcap"),
    ("unknown_block", "pcapng"), ("header_only", "pcap"))]


@pytest.mark.parametrize(("name", "fmt"), SUMMARY_TEXT_CASES)
def test_cli_summary_names_skip_reasons(name: str, fmt: str, tmp_path: Path) -> None:
    path, case = write_case(tmp_path, name, fmt)
    code, text, err = _cli(["summary", str(path)])
    assert code == 0, err
    assert "packets read" in text and "reader skipped" in text
    for reason in case.skipped:
        assert reason in text


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_cli_unreadable_exit_2(name: str, tmp_path: Path) -> None:
    data, why = UNREADABLE[name]
    path = tmp_path / f"{name}.pcap"
    path.write_bytes(data)
    for args in (["summary", str(path)], ["export", str(path), "--format", "json", "-o", str(tmp_path / "x.json")]):
        code, _, err = _cli(args)
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"analyzer: error: {path}: ") and why in lines[0], err
    assert not (tmp_path / "x.json").exists()


def test_cli_processes_exit_codes(tmp_path: Path) -> None:
    """The installed ``analyzer`` script, as a user runs it, on a subset of the matrix (in parallel)."""
    if not ANALYZER.is_file():
        pytest.skip(f"{ANALYZER} is not installed")
    runs: list[tuple[Path, list[str], int, str | None]] = []  # file, args, exit code, first stderr words
    for name, command in (("zero_length", "summary"), ("bad_magic", "export")):
        path = tmp_path / f"{name}.pcap"
        path.write_bytes(UNREADABLE[name][0])
        args = [command] if command == "summary" else [command, "--format", "json", "-o", str(tmp_path / "u.json")]
        runs.append((path, args, 2, f"analyzer: error: {path}: "))
    for name, fmt, command in (("header_only", "pcap", "summary"), ("corrupt_length_middle", "pcapng", "export"),
                               ("truncated_end", "pcap", "summary")):
        path, case = write_case(tmp_path, name, fmt)
        warn = "analyzer: warning: damaged capture: " if case.skipped else None
        args = [command] if command == "summary" else [command, "--format", "json", "-o",
                                                       str(path.with_suffix(".json"))]
        runs.append((path, args, 0, warn))

    def run(item: tuple[Path, list[str], int, str | None]) -> subprocess.CompletedProcess[str]:
        path, args, _, _ = item
        return subprocess.run([str(ANALYZER), args[0], str(path), *args[1:]], capture_output=True, text=True,
                              timeout=120, check=False, cwd=tmp_path)

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(run, runs))
    for (path, args, code, first), proc in zip(runs, done, strict=True):
        assert proc.returncode == code, (path.name, args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        if first is None:
            assert lines == [], (path.name, args, proc.stderr)
        else:
            assert len(lines) == 1 and lines[0].startswith(first), (path.name, args, proc.stderr)
        if code == 0 and args[0] == "export":
            s = json.loads(path.with_suffix(".json").read_text())["summary"]
            assert s["packets_read"] == s["packets_analyzed"] + sum(s["packets_skipped"].values())
        if code == 0 and args[0] == "summary":
            assert "packets read" in proc.stdout
