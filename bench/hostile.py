"""Hostile-traffic benchmark (issue 8): every case of ``tests/hostile/generate.py`` at full size, analyzed
in a fresh process each; wall time, CPU time and peak RSS of that process, and what it found.

Each capture is generated into a temporary directory (deleted afterwards; nothing is sent anywhere), then
``analyzer.analyze(path)`` runs in a child process (``python -c``) and the parent reads the child's peak RSS
and CPU time from ``os.wait4``, through a small launcher (``LAUNCHER``): Linux hands a forked process the
high-water mark of the process it was forked from, so a child of this one (which holds each generated
capture's packets for a while: about 430 MiB) reported at least that peak, whatever it used. A baseline child
analyzes a 1-connection capture (the cost of the imports).
Growth: the SYN flood and the tiny connections also run at a quarter of their size, and the table gives the
time and memory ratios (about 4 means linear). Figures go to stdout and ``bench/results/hostile.md``.

    .venv/bin/python bench/hostile.py [--scale 1.0] [--cases syn_flood,tiny_connections] [--no-growth]
                                      [--export | --report | --summary]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hostile import generate as g  # noqa: E402

CHILD = """
import json, sys, time
import analyzer
t0 = time.perf_counter()
a = analyzer.analyze(sys.argv[1])
s = a.summary
print(json.dumps({"analyze_s": time.perf_counter() - t0, "packets_read": s["packets_read"],
                  "accounted": s["packets_read"] == s["packets_analyzed"] + sum(s["packets_skipped"].values()),
                  "connections": s["connections"], "transactions": s["transactions"], "anomalies": s["anomalies"]}))
"""

#: Runs ``argv[2:]`` and writes its ``os.wait4`` figures to the file ``argv[1]`` (JSON): its peak RSS is its
#: own, as the launcher starts small (a process forked from this one reports this one's peak at least)
LAUNCHER = """
import json, os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump({"status": status, "cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss}, out)
sys.exit(os.waitstatus_to_exitcode(status))
"""

#: case name → (generator, keyword arguments at full size, what it is)
FULL: dict[str, tuple[str, dict[str, Any], str]] = {
    "syn_flood": ("syn_flood", {"n": 1_000_000}, "1,000,000 half-open connections (SYN + SYN/ACK)"),
    "tiny_connections": ("tiny_connections", {"n": 1_000_000}, "1,000,000 complete connections, 1 GET each"),
    "many_clients": ("many_clients", {"n": 1_000_000}, "the same from 1,000,000 client addresses"),
    "huge_header": ("huge_header", {"header_bytes": 16 << 20}, "a 16 MiB request header block"),
    "endless_chunked_1B": ("endless_chunked", {"body_bytes": 200_000_000, "chunk_size": 1},
                           "200 MB chunked body of 1-byte chunks, never ends"),
    "endless_chunked_1MiB": ("endless_chunked", {"body_bytes": 500_000_000, "chunk_size": 1 << 20},
                             "500 MB chunked body of 1 MiB chunks, never ends"),
    "overlap_conflict": ("overlap_conflict", {"n": 100_000},
                         "100,000 connections, request re-sent with different bytes"),
    "absurd_content_length": ("absurd_content_length", {"repeat": 5_000},
                              "45,000 connections, absurd Content-Length values"),
    "pipelined_flood": ("pipelined_flood", {"n": 1_000_000}, "1,000,000 pipelined GETs, no response"),
    "keepalive_marathon": ("keepalive_marathon", {"n": 1_000_000},
                           "1,000,000 GET/200 exchanges on one keep-alive connection"),
    "keepalive_crowd": ("keepalive_crowd", {"connections": 20, "n": 250_000},
                        "20 keep-alive connections side by side, 250,000 GET/200 exchanges each"),
    "h2_marathon": ("h2_marathon", {"n": 1_000_000}, "1,000,000 HTTP/2 streams on one connection, one at a time"),
    "h2_load": ("h2_marathon", {"n": 1_000_000, "per_packet": 100},
                "1,000,000 HTTP/2 streams on one connection, 100 at a time"),
}
GROWTH = ("syn_flood", "tiny_connections", "many_clients")
SIZE_KEYS = ("n", "header_bytes", "body_bytes", "repeat")


def run_child(path: Path) -> dict[str, Any]:
    """Analyze ``path`` in a fresh process: its report plus wall, CPU seconds and peak RSS (MiB). With
    ``--export`` the process is ``analyzer export PATH --format parquet`` (its peak RSS and CPU time
    include those of the child process it reads the capture in); with ``--report``, ``analyzer report PATH``
    (the same, and the figures are read from the line it prints: connections and transactions only); with
    ``--summary``, ``analyzer summary PATH`` (the same, the figures read from its headline table)."""
    t0 = time.perf_counter()
    out_dir = path.with_suffix(".out")
    cmd = {"export": [sys.executable, "-m", "analyzer", "export", str(path), "--format", "parquet", "-o", str(out_dir)],
           "report": [sys.executable, "-m", "analyzer", "report", str(path), "-o", str(out_dir) + ".html"],
           "summary": [sys.executable, "-m", "analyzer", "summary", str(path)],
           }.get(MODE[0], [sys.executable, "-c", CHILD, str(path)])
    usage_file = path.with_suffix(".usage.json")
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(usage_file), *cmd], stdout=subprocess.PIPE,
                            cwd=ROOT)
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"analysis of {path} failed with exit code {proc.returncode}")
    usage = json.loads(usage_file.read_text())
    usage_file.unlink()
    if MODE[0] == "export":
        s = json.loads((out_dir / "summary.json").read_text())
        shutil.rmtree(out_dir)
        result: dict[str, Any] = {
            "analyze_s": wall, "packets_read": s["packets_read"], "connections": s["connections"],
            "accounted": s["packets_read"] == s["packets_analyzed"] + sum(s["packets_skipped"].values()),
            "transactions": s["transactions"], "anomalies": s["anomalies"]}
    elif MODE[0] == "report":
        Path(str(out_dir) + ".html").unlink()
        said = re.search(r"(\d+) connections, (\d+) transactions", out.decode())
        assert said is not None, out
        result = {"analyze_s": wall, "connections": int(said[1]), "transactions": int(said[2]), "anomalies": None,
                  "accounted": None}
    elif MODE[0] == "summary":
        result = {"analyze_s": wall, "anomalies": None, "accounted": None}
        for key, name in (("connections", "Connections"), ("transactions", "Requests")):  # the headline's rows
            said = re.search(rf"│ {name} +│ +([\d,]+) │", out.decode())
            assert said is not None, out[:2000]
            result[key] = int(said[1].replace(",", ""))
    else:
        result = json.loads(out.decode().strip().splitlines()[-1])
    result.update(wall_s=wall, cpu_s=usage["cpu_s"], peak_mib=usage["maxrss_kib"] / 1024)
    return result


def scaled(kwargs: dict[str, Any], factor: float) -> dict[str, Any]:
    return {k: max(int(v * factor), 1) if k in SIZE_KEYS else v for k, v in kwargs.items()}


def measure(name: str, kwargs: dict[str, Any], tmp: Path) -> dict[str, Any]:
    gen, _, _ = FULL[name]
    path = tmp / f"{name}.pcap"
    t0 = time.perf_counter()
    made = getattr(g, gen)(path, **kwargs)
    gen_s = time.perf_counter() - t0
    size = path.stat().st_size
    try:
        res = run_child(path)
    finally:
        path.unlink()
    res.update(case=name, size=kwargs, packets=made.packets, file_mib=size / 2**20, gen_s=gen_s)
    print(f"{name} {kwargs}: {res['wall_s']:.1f} s wall, {res['cpu_s']:.1f} s CPU, {res['peak_mib']:.0f} MiB, "
          f"{res['anomalies']}", file=sys.stderr, flush=True)
    return res


def table(rows: list[dict[str, Any]], baseline: dict[str, Any]) -> str:
    lines = ["| case | input | packets | file MiB | wall s | CPU s | peak RSS MiB | packets/s (CPU) "
             "| connections | transactions | anomalies | accounted |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        desc = FULL[r["case"]][2] if r["size"] == FULL[r["case"]][1] else ", ".join(
            f"{k}={v:,}" for k, v in r["size"].items())
        anomalies = "(not read)" if r["anomalies"] is None else (
            ", ".join(f"`{k}` {v:,}" for k, v in r["anomalies"].items()) or "none")
        accounted = "(not read)" if r["accounted"] is None else "yes" if r["accounted"] else "NO"
        lines.append(f"| {r['case']} | {desc} | {r['packets']:,} | {r['file_mib']:,.0f} | {r['wall_s']:.1f} "
                     f"| {r['cpu_s']:.1f} | {r['peak_mib']:,.0f} | {r['packets'] / max(r['cpu_s'], 1e-9):,.0f} "
                     f"| {r['connections']:,} | {r['transactions']:,} | {anomalies} "
                     f"| {accounted} |")
    lines.append(f"| baseline | 1 connection (imports only) | {baseline['packets']} | 0 | {baseline['wall_s']:.1f} "
                 f"| {baseline['cpu_s']:.1f} | {baseline['peak_mib']:,.0f} | | | | | |")
    return "\n".join(lines)


def growth_table(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    lines = ["| case | small → full | CPU s | ratio (CPU) | wall ratio | peak RSS MiB | RSS above baseline, ratio |",
             "|---|---|---|---:|---:|---|---:|"]
    for small, full in pairs:
        base = BASELINE_MIB[0]
        lines.append(
            f"| {full['case']} | {small['size']['n']:,} → {full['size']['n']:,} | {small['cpu_s']:.1f} → "
            f"{full['cpu_s']:.1f} | {full['cpu_s'] / small['cpu_s']:.2f} | {full['wall_s'] / small['wall_s']:.2f} "
            f"| {small['peak_mib']:,.0f} → {full['peak_mib']:,.0f} "
            f"| {(full['peak_mib'] - base) / max(small['peak_mib'] - base, 1):.2f} |")
    return "\n".join(lines)


BASELINE_MIB = [0.0]
MODE = ["analyze"]  # or "export" (--export), "report" (--report), "summary" (--summary)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every size by this (quick runs)")
    ap.add_argument("--cases", default=",".join(FULL), help="comma-separated subset of: " + ", ".join(FULL))
    ap.add_argument("--no-growth", action="store_true", help="skip the quarter-size runs")
    ap.add_argument("--export", action="store_true", help="run `analyzer export --format parquet` (tables spilled "
                    "to disk, the capture read in a child process) instead of `analyzer.analyze()`")
    ap.add_argument("--report", action="store_true", help="run `analyzer report` (the capture read in a child "
                    "process, its tables read back a step at a time for the report)")
    ap.add_argument("--summary", action="store_true", help="run `analyzer summary` (the capture read in a child "
                    "process, its columns read back a group at a time for the terminal tables)")
    ap.add_argument("-o", "--output", type=Path, default=None,
                    help="default bench/results/hostile.md (hostile-export.md with --export, hostile-report.md "
                    "with --report, hostile-summary.md with --summary)")
    args = ap.parse_args()
    if args.export + args.report + args.summary > 1:
        ap.error("one of --export, --report and --summary")
    MODE[0] = "export" if args.export else "report" if args.report else "summary" if args.summary else "analyze"
    output = args.output or ROOT / "bench" / "results" / (f"hostile-{MODE[0]}.md" if MODE[0] != "analyze"
                                                          else "hostile.md")
    names = [c for c in args.cases.split(",") if c]
    rows: list[dict[str, Any]] = []
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="hostile-") as d:
        tmp = Path(d)
        baseline = measure("tiny_connections", {"n": 1}, tmp)
        BASELINE_MIB[0] = baseline["peak_mib"]
        for name in names:
            full = measure(name, scaled(FULL[name][1], args.scale), tmp)
            rows.append(full)
            if name in GROWTH and not args.no_growth:
                small = measure(name, scaled(FULL[name][1], args.scale / 4), tmp)
                pairs.append((small, full))
    text = ["# Hostile traffic: time and peak memory", "",
            f"`.venv/bin/python bench/hostile.py{' --scale ' + str(args.scale) if args.scale != 1 else ''}"
            f"{'' if MODE[0] == 'analyze' else ' --' + MODE[0]}` on {os.cpu_count()} cores, "
            f"{time.strftime('%Y-%m-%d')}; one fresh process per case ("
            + {"export": "`analyzer export PATH --format parquet`, which reads the capture in a child process: "
                         "peak RSS of the larger of the two",
               "report": "`analyzer report PATH`, which reads the capture in a child process: peak RSS of the "
                         "larger of the two; anomalies and accounting are not read from a report",
               "summary": "`analyzer summary PATH`, which reads the capture in a child process: peak RSS of the "
                          "larger of the two; anomalies and accounting are not read from the terminal tables",
               }.get(MODE[0], "`analyzer.analyze(path)`")
            + "; peak RSS and CPU time from `os.wait4`, through a launcher that starts small). Wall time depends "
            "on the machine's load (shared); CPU "
            "time less so.", "", table(rows, baseline)]
    if pairs:
        text += ["", "Growth (a quarter of the size, then the full size; linear is a ratio of about 4):", "",
                 growth_table(pairs)]
    out = "\n".join(text) + "\n"
    print(out)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(out)


if __name__ == "__main__":
    main()
