"""End-to-end tests: real traffic, the analyzer's export, and what the clients know they did.

Two kinds of tests, both comparing ``analyzer export CAPTURE --format json`` with a truth file written by
``captures/record.py`` (the clients' own record of their connections and requests):

* the committed samples in ``captures/`` still match their truth files (no root needed);
* FRESH recordings of every scenario (nginx, curl, ``http.client`` and raw sockets inside a network
  namespace created for the run, loopback only) match theirs (``@pytest.mark.netns``: needs root, nginx,
  tcpdump, curl, editcap and ``ip netns``; skipped with the reason otherwise).

Compared exactly, connection by connection, matched by (client_ip, client_port, server_ip, server_port): the
number of connections, the requests (method, target, status, in ``trans_depth`` order), ``syn_seen``,
``close_by`` and ``pipelined_max`` (``record.compare_with_truth``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from recorder import load_record

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "captures"


record = load_record()

COMMITTED_TRUTHS = record.truth_files(CAPTURES)


def _assert_matches(capture: Path, truth: dict[str, Any], out: Path) -> None:
    failure = None
    try:
        export = record.run_analyzer_export(capture, out)
    except record.RecordError as exc:
        failure = str(exc)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    problems = record.compare_with_truth(export, truth)
    assert not problems, f"{capture.name} differs from its truth:\n  " + "\n  ".join(problems)


# --- committed samples ---------------------------------------------------------------------------------


def test_every_scenario_has_a_committed_sample() -> None:
    for name in record.SCENARIOS:
        scn = record.SCENARIO_BY_NAME[name]
        capture = CAPTURES / scn.capture_name
        assert capture.is_file(), (
            f"{capture} is missing (sudo .venv/bin/python captures/record.py --out captures)"
        )
        assert (CAPTURES / scn.truth_name).is_file()
        assert capture.stat().st_size < record.MAX_CAPTURE_BYTES


@pytest.mark.parametrize("truth_path", COMMITTED_TRUTHS, ids=lambda p: p.name.removesuffix(".truth.json"))
def test_committed_sample_matches_truth(truth_path: Path, tmp_path: Path) -> None:
    truth = json.loads(truth_path.read_text())
    _assert_matches(CAPTURES / truth["capture"], truth, tmp_path / "export.json")


@pytest.mark.parametrize("truth_path", COMMITTED_TRUTHS, ids=lambda p: p.name.removesuffix(".truth.json"))
def test_committed_truth_agrees_with_tshark(truth_path: Path) -> None:
    """The truth files themselves, checked against an independent dissector (skipped without tshark)."""
    if record.find_tool("tshark") is None:
        pytest.skip("tshark is not installed")
    truth = json.loads(truth_path.read_text())
    problems = record.verify_with_tshark(CAPTURES / truth["capture"], truth)
    assert not problems, "\n".join(problems)


def test_compare_with_truth_reports_each_difference() -> None:
    """The comparison itself: equal tables give no problem, and each kind of difference is named."""
    truth = {
        "connections": [
            {
                "client_ip": "::1",
                "client_port": 40000,
                "server_ip": "::1",
                "server_port": 8080,
                "syn_seen": True,
                "close_by": "server",
                "pipelined_max": 2,
                "requests": [
                    {"method": "GET", "target": "/a", "status": 200},
                    {"method": "HEAD", "target": "/b", "status": 404},
                ],
            }
        ]
    }
    export: dict[str, Any] = {
        "connections": [
            {
                "uid": "C1",
                "client_ip": "0:0::1",
                "client_port": 40000.0,
                "server_ip": "::1",
                "server_port": 8080,
                "syn_seen": True,
                "close_by": "server",
                "pipelined_max": 2,
            }
        ],
        "transactions": [
            {"uid": "C1", "trans_depth": 2, "method": "HEAD", "target": "/b", "status": 404},
            {"uid": "C1", "trans_depth": 1, "method": "GET", "target": "/a", "status": 200},
        ],
    }
    assert record.compare_with_truth(export, truth) == []
    export["connections"][0].update(close_by="client", pipelined_max=1, syn_seen=False)
    export["transactions"][0]["status"] = 200
    problems = record.compare_with_truth(export, truth)
    assert [p.split(": ")[1] for p in problems] == ["syn_seen", "close_by", "pipelined_max", "requests"]
    export["connections"][0]["client_port"] = 40001
    assert "missing" in record.compare_with_truth(export, truth)[0]


def test_cut_pcap_before(tmp_path: Path) -> None:
    """The midstream cut keeps exactly the packets stamped at or after the cut instant."""
    import struct

    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    packets = [struct.pack("<IIII", 100 + i, 500_000, 4, 4) + bytes([i]) * 4 for i in range(4)]
    src = tmp_path / "in.pcap"
    src.write_bytes(header + b"".join(packets))
    kept, dropped = record.cut_pcap_before(src, tmp_path / "out.pcap", 101.6)
    assert (kept, dropped) == (2, 2)
    assert (tmp_path / "out.pcap").read_bytes() == header + packets[2] + packets[3]


# --- fresh recordings ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All scenarios recorded once for this module (about 10-15 s), into a temporary directory."""
    reason = record.missing_requirements()
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("recorded")
    done = subprocess.run(
        [sys.executable, str(CAPTURES / "record.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"captures/record.py failed ({done.returncode}):\n{done.stdout}\n{done.stderr}", pytrace=False
        )
    return out


@pytest.mark.netns
@pytest.mark.parametrize("scenario", record.SCENARIOS)
def test_recorded_scenario_matches_truth(recorded: Path, scenario: str, tmp_path: Path) -> None:
    scn = record.SCENARIO_BY_NAME[scenario]
    truth = json.loads((recorded / scn.truth_name).read_text())
    assert truth["scenario"] == scenario and truth["connections"]
    _assert_matches(recorded / scn.capture_name, truth, tmp_path / "export.json")
