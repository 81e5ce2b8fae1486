"""Time the analyzer's full export against tcptrace and tshark on one large capture.

Each tool runs under ``/usr/bin/time -v`` (wall time and peak RSS of the process tree's largest
process), ``--repeat`` times (default 3) on a page-cache-warm capture; the median of each figure
is reported. The commands:

* analyzer: ``analyzer export CAPTURE --format parquet -o /tmp/bench-out`` (output dir emptied
  before every run);
* tcptrace: ``tcptrace -n CAPTURE`` (stdout to /dev/null);
* tshark:   ``tshark -r CAPTURE -q -z http,tree`` (stdout to /dev/null);
* the floor of any Python implementation, in two commands: ``python -c "import numpy, pandas,
  pyarrow.parquet"`` (what the export writes its tables with) and ``python bench/walk.py CAPTURE`` (one
  interpreted step per packet record, nothing else).

Prints a table (tool, wall s, packets/s, peak RSS MiB), the speed ratios analyzer-vs-peer (how
many times faster), the targets, the reach of each speed target (the wall time it allows on this
capture against the floor), and writes ``bench/results/latest.json`` and
``bench/results/latest.md``. If the analyzer fails, the peers are still measured and reported and
the analyzer's error is printed.

Usage::

    .venv/bin/python bench/run.py                      # bench/data/large.pcap (recorded if missing + root)
    .venv/bin/python bench/run.py some.pcap --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_CAPTURE = BENCH_DIR / "data" / "large.pcap"
DEFAULT_RESULTS = BENCH_DIR / "results"
DEFAULT_ANALYZER = REPO / ".venv" / "bin" / "analyzer"
DEFAULT_EXPORT_DIR = Path("/tmp/bench-out")
GNU_TIME = "/usr/bin/time"
MIB = 1024 * 1024

#: Targets from the README; checked and reported, never asserted.
TARGET_PACKETS_PER_S = 1_000_000
TARGET_VS_TCPTRACE = 5.0
TARGET_VS_TSHARK = 20.0
TARGET_PEAK_RSS_MIB = 512.0

#: The floor of a Python implementation (``reach_rows``): what the export cannot do without, timed alone.
FLOOR_IMPORTS = "floor: imports"  # numpy, pandas and pyarrow's Parquet writer, which the export writes with
FLOOR_WALK = "floor: record walk"  # bench/walk.py: one interpreted step per packet record, nothing else


@dataclass
class Run:
    """One timed run, as /usr/bin/time -v reported it."""

    wall_s: float
    peak_rss_kib: int
    user_s: float
    sys_s: float
    exit_status: int
    host_wall_s: float  # perf_counter around the whole /usr/bin/time call, for cross-checking


@dataclass
class ToolResult:
    """All runs of one tool and their medians."""

    tool: str
    command: list[str]
    runs: list[Run] = field(default_factory=list)
    ok: bool = True
    error: str = ""
    wall_s: float | None = None
    peak_rss_mib: float | None = None
    cpu_s: float | None = None  # median user + sys: less sensitive than wall to a busy machine
    packets_per_s: float | None = None
    version: str = ""


class BenchError(RuntimeError):
    """The benchmark cannot proceed."""


def log(msg: str) -> None:
    """Progress on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- capture


def ensure_capture(capture: Path, *, record: bool) -> None:
    """Record the default capture if it is missing and we may; otherwise insist it exists."""
    if capture.exists():
        return
    if not record or capture.resolve() != DEFAULT_CAPTURE:
        raise BenchError(
            f"{capture} does not exist (record it with: sudo .venv/bin/python bench/record_large.py -o {capture})"
        )
    if os.geteuid() != 0:
        raise BenchError(f"{capture} is missing and recording needs root: sudo .venv/bin/python bench/record_large.py")
    log(f"{capture} is missing: recording it with bench/record_large.py")
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "record_large.py")], check=False)
    if proc.returncode != 0 or not capture.exists():
        raise BenchError(f"record_large.py exited {proc.returncode}")


def packet_count(capture: Path) -> tuple[int, str]:
    """Packets in the capture: from its meta file if it matches the file's size, else capinfos."""
    meta = capture.with_name(capture.stem + ".meta.json")
    size = capture.stat().st_size
    if meta.exists():
        try:
            data = json.loads(meta.read_text())
            if int(data["bytes"]) == size:
                return int(data["packets"]), str(meta.name)
        except (ValueError, KeyError, TypeError):
            pass
    out = subprocess.run(["capinfos", "-c", "-M", str(capture)], capture_output=True, text=True, check=True).stdout
    m = re.search(r"Number of packets:\s+(\d+)", out)
    if not m:
        raise BenchError(f"cannot parse capinfos output:\n{out}")
    return int(m.group(1)), "capinfos -c"


def warm_page_cache(capture: Path) -> float:
    """Read the capture once so every tool starts with it in the page cache; return seconds taken."""
    t0 = time.perf_counter()
    with capture.open("rb", buffering=0) as fh:
        while fh.read(8 * MIB):
            pass
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- timing


def parse_gnu_time(text: str) -> tuple[float, int, float, float, int]:
    """(wall s, peak RSS KiB, user s, sys s, exit status) from ``/usr/bin/time -v`` output."""

    def field_of(label: str) -> str:
        m = re.search(rf"^\s*{re.escape(label)}: (.+)$", text, re.MULTILINE)
        if not m:
            raise BenchError(f"/usr/bin/time output lacks {label!r}:\n{text[-600:]}")
        return m.group(1).strip()

    wall = 0.0
    for part in field_of("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":"):
        wall = wall * 60 + float(part)
    return (
        wall,
        int(field_of("Maximum resident set size (kbytes)")),
        float(field_of("User time (seconds)")),
        float(field_of("System time (seconds)")),
        int(field_of("Exit status")),
    )


def time_once(cmd: Sequence[str], *, timeout: float) -> tuple[Run, str]:
    """Run ``cmd`` once under /usr/bin/time -v, stdout to /dev/null; return the run and its stderr."""
    with tempfile.TemporaryDirectory(prefix="anz-bench-time-") as tmp:
        time_file = Path(tmp) / "time.txt"
        err_file = Path(tmp) / "stderr.txt"
        with err_file.open("wb") as err:
            t0 = time.perf_counter()
            proc = subprocess.run(
                [GNU_TIME, "-v", "-o", str(time_file), *cmd],
                stdout=subprocess.DEVNULL,
                stderr=err,
                timeout=timeout,
                check=False,
            )
            host_wall = time.perf_counter() - t0
        stderr = err_file.read_text(errors="replace")
        if not time_file.exists() or not time_file.read_text().strip():
            raise BenchError(f"/usr/bin/time wrote nothing (exit {proc.returncode}): {stderr[-600:]}")
        wall, rss, user, system, status = parse_gnu_time(time_file.read_text(errors="replace"))
    return Run(wall, rss, user, system, status, round(host_wall, 4)), stderr


def bench_tool(
    result: ToolResult, *, repeat: int, timeout: float, packets: int, before_each: Path | None = None
) -> ToolResult:
    """Time one tool ``repeat`` times (stopping at the first failure) and fill in the medians."""
    log(f"{result.tool}: {' '.join(result.command)}")
    for i in range(1, repeat + 1):
        if before_each is not None:
            shutil.rmtree(before_each, ignore_errors=True)
        try:
            run, stderr = time_once(result.command, timeout=timeout)
        except FileNotFoundError as exc:
            result.ok, result.error = False, str(exc)
            break
        except subprocess.TimeoutExpired:
            result.ok, result.error = False, f"timed out after {timeout:.0f} s"
            break
        except BenchError as exc:
            result.ok, result.error = False, str(exc)
            break
        if run.exit_status != 0:
            result.ok = False
            result.error = f"exit status {run.exit_status}: {stderr.strip()[-2000:]}"
            break
        result.runs.append(run)
        log(f"  run {i}/{repeat}: {run.wall_s:.2f} s wall, {run.peak_rss_kib / 1024:.0f} MiB peak RSS")
    if result.ok and result.runs:
        result.wall_s = statistics.median(r.wall_s for r in result.runs)
        result.peak_rss_mib = statistics.median(r.peak_rss_kib for r in result.runs) / 1024
        result.cpu_s = statistics.median(r.user_s + r.sys_s for r in result.runs)
        result.packets_per_s = packets / result.wall_s if packets and result.wall_s > 0 else None
    elif not result.ok:
        log(f"  {result.tool} FAILED: {result.error}")
    return result


# --------------------------------------------------------------------------- context


def first_line(cmd: Sequence[str]) -> str:
    """First non-empty line of a command's combined output, or '' if it cannot run."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in (proc.stdout + "\n" + proc.stderr).splitlines():
        if line.strip() and not line.startswith("1 arg remaining"):
            return line.strip()
    return ""


def host_info() -> dict[str, object]:
    """Machine facts that matter when comparing numbers across runs."""
    cpu, mem_kib = "", 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        if m := re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()):
            mem_kib = int(m.group(1))
    except OSError:
        pass
    git = first_line(["git", "-C", str(REPO), "describe", "--always", "--dirty"])
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "mem_gib": round(mem_kib / MIB, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git": git,
    }


def ratio(peer: ToolResult, analyzer: ToolResult) -> float | None:
    """How many times faster the analyzer is than ``peer`` (peer wall / analyzer wall)."""
    if analyzer.wall_s and peer.wall_s:
        return peer.wall_s / analyzer.wall_s
    return None


def verdict(value: float | None, target: float, *, below: bool = False) -> str:
    """'met' / 'not met' / 'n/a' for one target."""
    if value is None:
        return "n/a"
    return "met" if (value < target if below else value >= target) else "not met"


def reach_rows(by_tool: dict[str, ToolResult], packets: int) -> list[list[str]]:
    """Per speed target, the wall time it allows the export on this capture, the floor of any Python
    implementation (the imports the export needs plus the walk over the file's records, ``bench/walk.py``),
    and whether the floor rules the target out: rows of the reach table, none without the floor runs."""
    imports, walk = by_tool.get(FLOOR_IMPORTS), by_tool.get(FLOOR_WALK)
    if imports is None or walk is None or imports.wall_s is None or walk.wall_s is None:
        return []
    floor_s = imports.wall_s + walk.wall_s
    allowed: list[tuple[str, float | None]] = [(f"{TARGET_PACKETS_PER_S:,} packets/s", packets / TARGET_PACKETS_PER_S)]
    for peer, times in (("tcptrace", TARGET_VS_TCPTRACE), ("tshark", TARGET_VS_TSHARK)):
        wall = by_tool[peer].wall_s if peer in by_tool else None
        allowed.append((f"{times:g}× faster than {peer}", wall / times if wall else None))
    rows = []
    for target, allowed_s in allowed:
        if allowed_s is None:
            continue
        within = ("not ruled out" if floor_s < allowed_s
                  else f"no: the floor alone takes {floor_s / allowed_s:.1f}× that")
        rows.append([target, f"{allowed_s:.2f}", f"{floor_s:.2f}", within])
    return rows


REACH_HEADER = ["target", "wall s it allows", "floor s (imports + record walk)", "within reach of Python"]


# --------------------------------------------------------------------------- output


def fmt(value: float | None, spec: str) -> str:
    """Format a number, or a dash for a missing one."""
    return "-" if value is None else format(value, spec)


def table_rows(results: list[ToolResult]) -> list[list[str]]:
    """Rows of the results table (tool, wall s, packets/s, peak RSS MiB, CPU s)."""
    rows = []
    for r in results:
        if r.ok and r.wall_s is not None:
            rows.append(
                [
                    r.tool,
                    fmt(r.wall_s, ".2f"),
                    fmt(r.packets_per_s, ",.0f"),
                    fmt(r.peak_rss_mib, ".0f"),
                    fmt(r.cpu_s, ".2f"),
                ]
            )
        else:
            rows.append([r.tool, "FAILED", "-", "-", "-"])
    return rows


TABLE_HEADER = ["tool", "wall s", "packets/s", "peak RSS MiB", "CPU s (user+sys)"]


def times_faster(value: float | None) -> str:
    """'8.10× faster' / '0.12× (8.2× slower)' / '-'."""
    if value is None:
        return "-"
    if value >= 1:
        return f"{value:.2f}× faster"
    return f"{value:.2f}× ({1 / value:.1f}× slower)"


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain aligned table for the terminal."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True)))
    ]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    return "\n".join(lines)


def markdown(report: dict[str, object], results: list[ToolResult], targets: list[list[str]],
             reach: list[list[str]]) -> str:
    """The README snippet."""
    cap = report["capture"]
    assert isinstance(cap, dict)
    host = report["host"]
    assert isinstance(host, dict)
    load = report.get("loadavg_before")
    lines = [
        f"Capture: `{Path(str(cap['path'])).name}`, {cap['packets']:,} packets, "
        f"{int(cap['bytes']) / 1e9:.2f} GB; {host['cpus']} × {host['cpu']}, kernel {host['kernel']}; "
        f"median of {report['repeat']} runs, page cache warm, load average before "
        f"{load[0] if isinstance(load, list) else '?'} ({report['created']}).",
        "",
        "| tool | command | wall s | packets/s | peak RSS MiB | CPU s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r, row in zip(results, table_rows(results), strict=True):
        cmd = " ".join(Path(c).name if i == 0 else shlex.quote(c.removeprefix(f"{REPO}/"))
                       for i, c in enumerate(r.command))
        cmd = cmd.replace(str(cap["path"]), "CAPTURE")
        lines.append(f"| {row[0]} | `{cmd}` | {' | '.join(row[1:])} |")
    lines += ["", "| target | wanted | measured | verdict |", "|---|---|---|---|"]
    lines += [f"| {t[0]} | {t[1]} | {t[2]} | {t[3]} |" for t in targets]
    if reach:
        lines += ["", "| " + " | ".join(REACH_HEADER) + " |", "|---|---:|---:|---|"]
        lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in reach]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write via a .tmp sibling (gitignored) and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "capture",
        nargs="?",
        type=Path,
        default=DEFAULT_CAPTURE,
        help="capture to measure (default %(default)s)",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs per tool; the median is reported")
    p.add_argument("--analyzer", type=Path, default=DEFAULT_ANALYZER, help="analyzer CLI (default %(default)s)")
    p.add_argument(
        "--export-dir",
        type=Path,
        default=DEFAULT_EXPORT_DIR,
        help="analyzer export output dir, emptied before each run (default %(default)s)",
    )
    p.add_argument("--tools", default="analyzer,tcptrace,tshark,floor",
                   help="comma-separated subset to run (floor: the imports and the record walk, bench/walk.py)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per run")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="where latest.json/.md go")
    p.add_argument("--no-record", action="store_true", help="never record a missing capture")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print, write results. Exit 0 if the peers ran (the analyzer may still have failed)."""
    args = parse_args(argv)
    capture: Path = args.capture.resolve()
    wanted = {t.strip() for t in args.tools.split(",") if t.strip()}
    try:
        ensure_capture(capture, record=not args.no_record)
        packets, counted_by = packet_count(capture)
    except (BenchError, subprocess.CalledProcessError) as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        return 2
    size = capture.stat().st_size
    log(f"capture {capture}: {packets:,} packets ({counted_by}), {size / 1e9:.2f} GB")
    log(f"warming page cache: {warm_page_cache(capture):.1f} s")
    load_before = os.getloadavg()
    if load_before[0] > (os.cpu_count() or 1) * 0.5:
        log(f"warning: load average {load_before[0]:.1f} on {os.cpu_count()} CPUs: wall times will be noisy")

    plan: list[tuple[ToolResult, Path | None]] = []
    if "analyzer" in wanted:
        cmd = [str(args.analyzer), "export", str(capture), "--format", "parquet", "-o", str(args.export_dir)]
        plan.append(
            (
                ToolResult("analyzer", cmd, version=first_line([str(args.analyzer), "--version"])),
                args.export_dir,
            )
        )
    if "tcptrace" in wanted:
        plan.append(
            (
                ToolResult("tcptrace", ["tcptrace", "-n", str(capture)], version=first_line(["tcptrace", "-v"])),
                None,
            )
        )
    if "tshark" in wanted:
        plan.append(
            (
                ToolResult(
                    "tshark",
                    ["tshark", "-r", str(capture), "-q", "-z", "http,tree"],
                    version=first_line(["tshark", "--version"]),
                ),
                None,
            )
        )
    if "floor" in wanted:
        python = args.analyzer.parent / "python"
        python_cmd = str(python) if python.exists() else sys.executable
        plan.append((ToolResult(FLOOR_IMPORTS, [python_cmd, "-c", "import numpy, pandas, pyarrow.parquet"]), None))
        plan.append((ToolResult(FLOOR_WALK, [python_cmd, str(BENCH_DIR / "walk.py"), str(capture)]), None))

    results = [bench_tool(r, repeat=args.repeat, timeout=args.timeout, before_each=d,
                          packets=0 if r.tool == FLOOR_IMPORTS else packets)  # imports read no packet
               for r, d in plan]
    by_tool = {r.tool: r for r in results}
    an = by_tool.get("analyzer")
    export_bytes = None
    if an is not None and an.ok and args.export_dir.exists():
        export_bytes = sum(p.stat().st_size for p in args.export_dir.rglob("*") if p.is_file())

    vs_tcptrace = ratio(by_tool["tcptrace"], an) if an and "tcptrace" in by_tool else None
    vs_tshark = ratio(by_tool["tshark"], an) if an and "tshark" in by_tool else None
    an_pps = an.packets_per_s if an else None
    an_rss = an.peak_rss_mib if an else None
    targets = [
        [
            "analyzer packets/s",
            f"≥ {TARGET_PACKETS_PER_S:,}",
            fmt(an_pps, ",.0f"),
            verdict(an_pps, TARGET_PACKETS_PER_S),
        ],
        [
            "× faster than `tcptrace -n`",
            f"≥ {TARGET_VS_TCPTRACE:g}",
            fmt(vs_tcptrace, ".2f"),
            verdict(vs_tcptrace, TARGET_VS_TCPTRACE),
        ],
        [
            "× faster than tshark",
            f"≥ {TARGET_VS_TSHARK:g}",
            fmt(vs_tshark, ".2f"),
            verdict(vs_tshark, TARGET_VS_TSHARK),
        ],
        [
            "analyzer peak RSS MiB",
            f"< {TARGET_PEAK_RSS_MIB:g}",
            fmt(an_rss, ".0f"),
            verdict(an_rss, TARGET_PEAK_RSS_MIB, below=True),
        ],
    ]

    reach = reach_rows(by_tool, packets)

    report: dict[str, object] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "capture": {
            "path": str(capture),
            "packets": packets,
            "bytes": size,
            "packets_counted_by": counted_by,
        },
        "repeat": args.repeat,
        "method": "/usr/bin/time -v per run; median wall (Elapsed) and median Maximum resident set size; "
        "page cache warmed once before the first tool; stdout to /dev/null",
        "host": host_info(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "tools": {r.tool: asdict(r) for r in results},
        "analyzer_export_bytes": export_bytes,
        "ratios": {"analyzer_vs_tcptrace": vs_tcptrace, "analyzer_vs_tshark": vs_tshark},
        "targets": {t[0]: {"wanted": t[1], "measured": t[2], "verdict": t[3]} for t in targets},
        "reach": {r[0]: {"allowed_s": r[1], "floor_s": r[2], "within_reach": r[3]} for r in reach},
    }

    print()
    print(f"capture: {capture}  ({packets:,} packets, {size / 1e9:.2f} GB), median of {args.repeat} runs")
    print(text_table(TABLE_HEADER, table_rows(results)))
    print()
    print(f"analyzer vs tcptrace: {times_faster(vs_tcptrace)}    analyzer vs tshark: {times_faster(vs_tshark)}")
    print(text_table(["target", "wanted", "measured", "verdict"], targets))
    if reach:
        print()
        print(text_table(REACH_HEADER, reach))
    for r in results:
        if not r.ok:
            print(f"\n{r.tool} failed:\n{r.error}", file=sys.stderr)

    args.results.mkdir(parents=True, exist_ok=True)
    write_atomic(args.results / "latest.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    write_atomic(args.results / "latest.md", markdown(report, results, targets, reach))
    log(f"wrote {args.results / 'latest.json'} and {args.results / 'latest.md'}")
    peers_ok = all(r.ok for r in results if r.tool != "analyzer")
    return 0 if peers_ok else 1


if __name__ == "__main__":
    sys.exit(main())
