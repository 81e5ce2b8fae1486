"""The floor of any capture reader written in Python: find every packet record of an uncompressed pcap or
pcapng file, and nothing else (no packet is copied, decoded or analyzed).

A record's place depends on the length of the one before it, so the walk is one interpreted step per record:
it cannot be vectorized. ``bench/run.py`` times this script beside the peers, with the imports the export
cannot do without, to tell whether a speed target is within reach of a Python implementation at all
(README, Performance).

    .venv/bin/python bench/walk.py CAPTURE       # prints: <packets> packet records
"""

from __future__ import annotations

import mmap
import struct
import sys
from pathlib import Path

PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
PCAPNG_PACKET_BLOCKS = (2, 3, 6)  # obsolete Packet Block, Simple Packet Block, Enhanced Packet Block


def walk(data: bytes | mmap.mmap) -> int:
    """Packet records in ``data``, an uncompressed pcap or pcapng file (a truncated last record is not
    counted). ``ValueError`` for anything else."""
    magic = bytes(data[:4])
    if magic in PCAP_MAGICS:
        return _walk_pcap(data, PCAP_MAGICS[magic])
    if magic == PCAPNG_SHB:
        return _walk_pcapng(data)
    raise ValueError("not an uncompressed pcap or pcapng file")


def _walk_pcap(data: bytes | mmap.mmap, order: str) -> int:
    caplen_of = struct.Struct(order + "8xI").unpack_from  # a record header: ts_sec, ts_frac, caplen, len
    pos, records = 24, 0
    try:  # the loop as tight as it gets: it ends when a record header is not (entirely) in the file
        while True:
            pos += 16 + caplen_of(data, pos)[0]
            records += 1
    except struct.error:
        pass
    return records - (records > 0 and pos > len(data))  # only the last record counted can be cut short


def _walk_pcapng(data: bytes | mmap.mmap) -> int:
    end, pos, records = len(data), 0, 0
    head_of = struct.Struct("<II").unpack_from
    while pos + 12 <= end:
        if data[pos:pos + 4] == PCAPNG_SHB:  # each section says its byte order
            head_of = struct.Struct("<II" if data[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">II").unpack_from
        kind, length = head_of(data, pos)
        if length < 12 or pos + length > end:
            break
        records += kind in PCAPNG_PACKET_BLOCKS
        pos += length
    return records


def main() -> None:
    with Path(sys.argv[1]).open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        print(f"{walk(data)} packet records")


if __name__ == "__main__":
    main()
