"""The floor of a Python implementation that ``bench/run.py`` sets against the speed targets: ``bench/walk.py``
must find exactly the packet records the analyzer's reader reads (or its time is the floor of something
else), and ``reach_rows`` must compare each target's allowed time with the floor."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from analyzer.capture.pcapfile import open_capture

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("ANALYZER_CORPUS", REPO.parent / "shared" / "corpus"))
MANIFEST = CORPUS / "manifest.json"
CORPUS_FILES = [CORPUS / e["file"] for e in json.loads(MANIFEST.read_text())] if MANIFEST.exists() else []
CAPTURES = [p for p in [*sorted((REPO / "captures").glob("*.pcap*")), *CORPUS_FILES] if p.suffix != ".gz"]


def _bench_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


walk = _bench_module("walk").walk
run = _bench_module("run")


def _records_read(path: Path) -> tuple[int, bool]:
    """(records the reader handed out, whether it skipped anything)."""
    reader = open_capture(path)
    for _ in reader.batches():
        pass
    reader.close()
    return reader.stats.packets_read, bool(reader.stats.skipped) or reader.stats.truncated_file


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_the_walk_finds_the_records_the_reader_reads(path: Path) -> None:
    if path.stat().st_size == 0:
        with pytest.raises(ValueError):
            walk(b"")
        return
    read, skipped = _records_read(path)
    if skipped:
        pytest.skip("a damaged capture: the reader skips what the walk may count")
    assert walk(path.read_bytes()) == read


def test_the_walk_reads_both_byte_orders_and_stops_at_a_cut_record() -> None:
    def pcap(order: str, caplens: list[int]) -> bytes:
        out = struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
        for n in caplens:
            out += struct.pack(order + "IIII", 0, 0, n, n) + bytes(n)
        return out

    for order in "<>":
        assert walk(pcap(order, [60, 1500, 0, 54])) == 4
        assert walk(pcap(order, [60, 1500])[:-1]) == 1  # the last record is cut short
        assert walk(pcap(order, [])) == walk(pcap(order, [])[:10]) == 0  # a file header, whole or cut
    with pytest.raises(ValueError):
        walk(b"GET / HTTP/1.1\r\n")


def test_the_walk_counts_packet_blocks_of_both_byte_orders() -> None:
    def block(order: str, kind: int, body: bytes) -> bytes:
        length = 12 + len(body)
        return struct.pack(order + "II", kind, length) + body + struct.pack(order + "I", length)

    def section(order: str) -> bytes:
        shb = block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))
        idb = block(order, 1, struct.pack(order + "HHI", 1, 0, 65535))
        epb = block(order, 6, struct.pack(order + "IIIII", 0, 0, 0, 4, 4) + b"abcd")
        spb = block(order, 3, struct.pack(order + "I", 4) + b"abcd")
        return shb + idb + epb + spb + block(order, 5, b"")  # an interface statistics block is not a packet

    assert walk(section("<") + section(">")) == 4


def test_each_speed_target_is_set_against_the_floor() -> None:
    def timed(tool: str, wall_s: float) -> Any:
        return run.ToolResult(tool, [tool], wall_s=wall_s)

    by_tool = {r.tool: r for r in [timed(run.FLOOR_IMPORTS, 0.5), timed(run.FLOOR_WALK, 0.4),
                                   timed("tcptrace", 1.5), timed("tshark", 20.0)]}
    rows = run.reach_rows(by_tool, packets=1_200_000)
    assert [r[0] for r in rows] == ["1,000,000 packets/s", "5× faster than tcptrace", "20× faster than tshark"]
    assert [r[1:3] for r in rows] == [["1.20", "0.90"], ["0.30", "0.90"], ["1.00", "0.90"]]
    assert [r[3] for r in rows] == ["not ruled out", "no: the floor alone takes 3.0× that", "not ruled out"]
    del by_tool["tshark"]  # a peer not run: its target is not set against the floor
    assert [r[0] for r in run.reach_rows(by_tool, packets=1_200_000)] == ["1,000,000 packets/s",
                                                                          "5× faster than tcptrace"]
    del by_tool[run.FLOOR_WALK]  # without both floor runs there is no floor
    assert run.reach_rows(by_tool, packets=1_200_000) == []
