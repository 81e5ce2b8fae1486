"""Replays every input the fuzzer found (tests/fuzz_regressions/<target>-<sha1>.bin) through its target.

Each file is a crash the fuzz harness (``fuzz/``, ``python -m fuzz.run``) found: an exception that escaped a
parser, an ``*_internal_error`` anomaly, a hang, or packets not accounted for. Replaying must not raise (nor
take longer than the per-input limit). Inputs of crashes in modules owned elsewhere are kept as strict
xfails, with the last line of their traceback, until that module is fixed (then the xfail turns into an
XPASS failure: remove the entry).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fuzz/ package
from fuzz.engine import run_one
from fuzz.targets import TARGETS, fuzz_pcap, fuzz_tcp

REGRESSIONS = Path(__file__).parent / "fuzz_regressions"
FILES = sorted(REGRESSIONS.glob("*.bin"))
TIME_LIMIT_S = 30.0

# file name -> why it still fails (the last line of the traceback): crashes in modules this harness does
# not own yet; strict, so a fix shows up as XPASS
XFAIL: dict[str, str] = {}
# (fixed: tcp-1da4974b37ae.bin, a SYN then a SYN/ACK in the same µs whose ack is not ISN+1: two connections
# on one 4-tuple with the same start got the same uid; Connection.uid_salt now keeps them apart)


def _target(path: Path) -> str:
    return path.stem.rsplit("-", 1)[0]


def _replay(name: str, data: bytes) -> None:
    if name == "pcap":
        fuzz_pcap(data, metrics=True)
    elif name == "tcp":
        fuzz_tcp(data, metrics=True)
    else:
        TARGETS[name](data)


def _params() -> list[object]:
    out: list[object] = []
    for path in FILES:
        marks = [pytest.mark.xfail(strict=True, reason=XFAIL[path.name])] if path.name in XFAIL else []
        out.append(pytest.param(path, id=path.name, marks=marks))
    return out


@pytest.mark.parametrize("path", _params())
def test_fuzz_regression_replays_cleanly(path: Path) -> None:
    name = _target(path)
    assert name in TARGETS, f"{path.name}: no fuzz target {name!r}"
    got = run_one(lambda data: _replay(name, data), path.read_bytes(), TIME_LIMIT_S)
    assert got is None, f"{path.name}: {got[0]}\n{got[1]}" if got else ""


def test_regression_files_are_named_after_targets() -> None:
    for path in FILES:
        assert _target(path) in TARGETS, path.name
        assert path.stat().st_size <= 64 << 10, f"{path.name}: keep regression inputs small (minimize it)"
    assert set(XFAIL) <= {p.name for p in FILES}, "XFAIL names a file that does not exist"


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_targets_accept_trivial_inputs(name: str) -> None:
    for data in (b"", b"\x00", b"\xff" * 64):
        _replay(name, data)
