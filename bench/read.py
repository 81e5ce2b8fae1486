"""Reading and decoding alone: CPU time of ``open_capture(path).batches()`` + ``decode_batch`` over a capture,
with the file mapped (``mmap``, the default for a regular uncompressed file) and read into fresh buffers
(``readinto``, as for gzip and pipes), alternated ``--runs`` times in this one process.

    .venv/bin/python bench/read.py [CAPTURE] [--runs 3]     # default: bench/data/large.pcap
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from analyzer.capture import pcapfile
from analyzer.capture.pcapfile import open_capture
from analyzer.flows.decode import decode_batch

ROOT = Path(__file__).resolve().parents[1]


def read_and_decode(path: Path, mapped: bool) -> tuple[int, float]:
    """(packets, CPU seconds) of reading and decoding ``path`` once, mapped or read."""
    regular = pcapfile._is_regular
    pcapfile._is_regular = (lambda raw: regular(raw)) if mapped else (lambda raw: False)
    try:
        started = time.process_time()
        packets = 0
        for batch in open_capture(path).batches():
            decode_batch(batch)
            packets += len(batch)
        return packets, time.process_time() - started
    finally:
        pcapfile._is_regular = regular


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("capture", nargs="?", type=Path, default=ROOT / "bench" / "data" / "large.pcap")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"mapped": [], "read": []}
    packets = 0
    for _ in range(args.runs):
        for kind in times:
            packets, cpu_s = read_and_decode(args.capture, kind == "mapped")
            times[kind].append(cpu_s)
    for kind, runs in times.items():
        best = min(runs)
        print(f"{kind:6s} {packets:,} packets: CPU s {', '.join(f'{t:.2f}' for t in runs)}; "
              f"best {best:.2f} s = {packets / best / 1e6:.2f} M packets/s")


if __name__ == "__main__":
    main()
