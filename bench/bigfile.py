"""Multi-GB benchmark (issue 7): peak memory and time of ``analyzer export`` on one capture of several GB.

The capture is made from the recorded bench capture (``bench/data/large.pcap``, real traffic, see
README.md): ``--copies`` copies of its records back to back in one classic pcap file, copy k with its
timestamps moved ``k * 60 s`` later, so the connections of one copy have ended before the next begins
(with 4 copies: 4.87 M packets, 5.08 GB). It is written to a temporary directory (``--tmp``) and deleted
afterwards. The run is ``analyzer export BIG --format parquet`` under ``/usr/bin/time -v``: its peak RSS
is that of the largest process (the command and the child that reads the capture). Not a test: figures go
to stdout and ``bench/results/bigfile.md``.

    .venv/bin/python bench/bigfile.py [--copies 4] [--tmp /var/tmp]
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LARGE = ROOT / "bench" / "data" / "large.pcap"
SHIFT_S = 60


def record_offsets(body: memoryview) -> np.ndarray:
    """Byte offset of every record header in a classic little-endian pcap body (after the file header)."""
    offsets = []
    pos, end = 0, len(body)
    while pos + 16 <= end:
        offsets.append(pos)
        pos += 16 + struct.unpack_from("<I", body, pos + 8)[0]
    return np.asarray(offsets, dtype=np.int64)


def write_copies(source: Path, target: Path, copies: int) -> int:
    """``copies`` time-shifted copies of ``source``'s records in ``target``; returns the packet count."""
    data = source.read_bytes()
    if data[:4] != b"\xd4\xc3\xb2\xa1":
        raise SystemExit(f"{source}: not a little-endian microsecond pcap")
    header, body = data[:24], memoryview(data)[24:]
    offsets = record_offsets(body)
    seconds_at = (offsets[:, None] + np.arange(4)).ravel()
    with target.open("wb") as out:
        out.write(header)
        for k in range(copies):
            copy = np.frombuffer(body, dtype=np.uint8).copy()
            seconds = copy[seconds_at].view("<u4") + np.uint32(k * SHIFT_S)
            copy[seconds_at] = seconds.view(np.uint8)
            out.write(copy.tobytes())
            del copy
    return len(offsets) * copies


def timed_export(capture: Path, output: Path) -> dict[str, float]:
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "analyzer", "export", str(capture), "--format",
           "parquet", "-o", str(output)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(done.stderr)

    def field(name: str) -> float:
        match = re.search(rf"{name}: ([0-9.]+)", done.stderr)
        return float(match.group(1)) if match else float("nan")

    return {"wall_s": wall, "user_s": field("User time \\(seconds\\)"), "system_s": field("System time \\(seconds\\)"),
            "peak_mib": field("Maximum resident set size \\(kbytes\\)") / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--tmp", type=Path, default=None, help="where the big capture is written")
    args = parser.parse_args()
    if not LARGE.exists():
        raise SystemExit(f"{LARGE} is missing: record it first (sudo .venv/bin/python bench/record_large.py)")
    with tempfile.TemporaryDirectory(prefix="analyzer-bigfile-", dir=args.tmp) as tmp:
        big = Path(tmp) / f"x{args.copies}.pcap"
        packets = write_copies(LARGE, big, args.copies)
        size_gb = big.stat().st_size / 1e9
        run = timed_export(big, Path(tmp) / "out")
        summary = json.loads((Path(tmp) / "out" / "summary.json").read_text())
    rows = (f"| {args.copies} copies of bench/data/large.pcap | {packets:,} | {size_gb:.2f} | {run['wall_s']:.1f} | "
            f"{run['user_s']:.1f} | {run['system_s']:.1f} | {run['peak_mib']:,.0f} | {summary['connections']:,} | "
            f"{summary['transactions']:,} |")
    text = "\n".join([
        "# One multi-GB capture: time and peak memory",
        "",
        f"`.venv/bin/python bench/bigfile.py --copies {args.copies}` on 2 cores, {time.strftime('%Y-%m-%d')}: "
        "`/usr/bin/time -v analyzer export BIG --format parquet` (peak RSS of the largest process). Target: "
        "under 512 MiB for a 5 GB capture.",
        "",
        "| capture | packets | GB | wall s | user s | system s | peak RSS MiB | connections | transactions |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        rows,
        "",
    ])
    print(text)
    (ROOT / "bench" / "results" / "bigfile.md").write_text(text)


if __name__ == "__main__":
    main()
