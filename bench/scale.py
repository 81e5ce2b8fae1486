"""Scale benchmark (issue 7): the same captures analyzed in 1 process, 2 processes (``--jobs 2``) and on a
2-worker ``dask.distributed`` LocalCluster; wall time, speed-up and peak memory per run.

The captures are the pieces of the recorded bench capture (``bench/data/large.pcap``, see README.md) cut
with ``editcap -c`` into ``--pieces`` files, so the work is real HTTP traffic. Each run is
``analyzer export PIECES... --format parquet`` in a fresh process under ``/usr/bin/time -v``, so peak RSS
is that of the largest of the main process and the children it forks and waits for (the child that reads
each capture, ``analyze(scan_in_child=True)``); the workers of the pool (started by a forkserver) and of
the cluster are not among them: the cluster run reports its workers' peak from ``psutil`` samples. Not a
test: figures go to stdout and ``bench/results/scale.md``.

    .venv/bin/python bench/scale.py [--pieces 4] [--repeat 1]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LARGE = ROOT / "bench" / "data" / "large.pcap"
ANALYZER = [sys.executable, "-m", "analyzer"]

CLUSTER_RUN = """
import sys, time, threading, psutil, distributed, analyzer
from analyzer.cli import write_export
from pathlib import Path
paths, out = sys.argv[1:-1], Path(sys.argv[-1])
with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                              host="127.0.0.1") as cluster:
    peak = [0]
    workers = [psutil.Process(w.pid) for w in cluster.workers.values()]
    stop = threading.Event()
    def sample():
        while not stop.is_set():
            for w in workers:
                try:
                    peak[0] = max(peak[0], w.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.05)
    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    result = analyzer.analyze(*paths, scheduler=cluster.scheduler_address)
    write_export(result, out, "parquet")
    wall = time.perf_counter() - t0
    stop.set()
print(f"WALL {wall:.3f} WORKER_PEAK_MIB {peak[0] / 2**20:.0f} PACKETS {result.summary['packets_read']}")
"""


def _timed(cmd: list[str]) -> tuple[float, float, str]:
    """(wall s, peak RSS MiB of that process, stdout) of one command under /usr/bin/time -v."""
    t0 = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))  # type: ignore[union-attr]
    return wall, rss_kb / 1024, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture", nargs="?", type=Path, default=LARGE)
    ap.add_argument("--pieces", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    if not args.capture.exists():
        sys.exit(f"{args.capture} is missing: sudo .venv/bin/python bench/record_large.py")
    with tempfile.TemporaryDirectory() as tmp:
        count = int(subprocess.run(["capinfos", "-c", "-M", "-T", str(args.capture)], capture_output=True,
                                   text=True, check=True).stdout.strip().splitlines()[-1].split("\t")[1])
        subprocess.run(["editcap", "-c", str(-(-count // args.pieces)), str(args.capture), f"{tmp}/piece.pcap"],
                       check=True)
        pieces = sorted(str(p) for p in Path(tmp).glob("piece*.pcap"))
        rows = []
        whole = [str(args.capture)]
        for label, files, extra in ((f"{len(pieces)} pieces, 1 process", pieces, ["--jobs", "1"]),
                                    (f"{len(pieces)} pieces, --jobs 2", pieces, ["--jobs", "2"]),
                                    ("1 file, 1 process", whole, ["--jobs", "1"]),
                                    ("1 file, --jobs 2 (2 flow shards)", whole, ["--jobs", "2"])):
            runs = [_timed([*ANALYZER, "export", *files, "--format", "parquet", "-o", f"{tmp}/out", *extra])
                    for _ in range(args.repeat)]
            rows.append((label, statistics.median(r[0] for r in runs), max(r[1] for r in runs),
                         "main process only; each worker holds its own" if "jobs 2" in label
                         else "main process or its scan child"))
            shutil.rmtree(f"{tmp}/out", ignore_errors=True)
        walls, peaks = [], []
        for _ in range(args.repeat):
            _wall, parent_mib, out = _timed([sys.executable, "-c", CLUSTER_RUN, *pieces, f"{tmp}/out"])
            m = re.search(r"WALL ([\d.]+) WORKER_PEAK_MIB (\d+)", out)
            assert m, out
            walls.append(float(m.group(1)))
            peaks.append(int(m.group(2)))
            shutil.rmtree(f"{tmp}/out", ignore_errors=True)
        rows.append((f"{len(pieces)} pieces, dask LocalCluster, 2 workers", statistics.median(walls), parent_mib,
                     f"worker peak {max(peaks)} MiB; wall excludes cluster start"))
    base = {"pieces": rows[0][1], "file": rows[2][1]}
    lines = [f"Scale benchmark: {args.capture.name} ({count:,} packets) cut into {len(pieces)} pieces, "
             f"median of {args.repeat}", "",
             "| run | wall s | packets/s | speed-up vs 1 process | peak RSS MiB | note |",
             "|---|---:|---:|---:|---:|---|"]
    for label, wall, rss, note in rows:
        ref = base["file"] if label.startswith("1 file") else base["pieces"]
        lines.append(f"| {label} | {wall:.2f} | {count / wall:,.0f} | {ref / wall:.2f}× | {rss:.0f} | {note} |")
    text = "\n".join(lines)
    print(text)
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "scale.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
