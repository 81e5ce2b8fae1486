"""Tests of analyzer.metrics.closerace on the recorded captures.

captures/close-race.pcap (captures/record.py scenario ``close-race``): raw-socket clients send their second
request at nginx's 1 s keepalive_timeout without checking for its FIN; the truth lists, per connection, the
requests that got no response (status null) and the retry connection that follows each. Every other
committed capture has no race.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import analyzer
import analyzer.metrics as metrics
from analyzer.metrics.closerace import close_races

CAPTURES = Path(__file__).resolve().parents[1] / "captures"


def test_races_found_where_the_client_knows_it_lost_them() -> None:
    truth = json.loads((CAPTURES / "close-race.truth.json").read_text())
    result = analyzer.analyze(str(CAPTURES / "close-race.pcap"))
    races = close_races(result.connections, result.transactions)
    ports = dict(zip(result.connections["uid"], result.connections["client_port"], strict=True))
    expected = []
    for i, conn in enumerate(truth["connections"]):
        for request in conn["requests"]:
            if request["status"] is None:
                retry = truth["connections"][i + 1]  # the client retries at once on a new connection
                assert retry["requests"][0]["target"] == request["target"]
                expected.append((conn["client_port"], request["target"], retry["client_port"]))
    assert len(expected) >= 1
    got = [(ports[u], t, ports[r]) for u, t, r in zip(races["uid"], races["target"], races["retry_uid"], strict=True)]
    assert got == expected
    assert races["retried"].all() and (races["outcome"] == "no_response").all()
    assert (races["request_after_close_ms"] >= -races["window_ms"]).all()
    assert (races["retry_delay_ms"] > 0).all() and (races["retry_delay_ms"] < 1000).all()
    summary = metrics.summary_metrics(result)
    assert summary["close_races"] == len(expected) == summary["close_races_retried"]


@pytest.mark.parametrize("capture", sorted(p.name for p in CAPTURES.glob("*.pcap*") if "close-race" not in p.name))
def test_no_race_in_the_other_captures(capture: str) -> None:
    result = analyzer.analyze(str(CAPTURES / capture))
    assert close_races(result.connections, result.transactions).empty


def test_race_section_in_the_report() -> None:
    from analyzer.report import render_report

    result = analyzer.analyze(str(CAPTURES / "close-race.pcap"))
    document = render_report(result, "close race")
    assert 'id="races"' in document and "/small.txt?idle=1.300" in document
