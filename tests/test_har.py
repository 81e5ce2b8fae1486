"""HAR 1.2 export (``analyzer export --format har``): the required fields of the spec, connection ids and
timings (connect and ssl -1 on reused connections), on committed captures."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

import analyzer
from analyzer.cli import app
from analyzer.report.har import har_document

CAPTURES = Path(__file__).resolve().parents[1] / "captures"


def _check_har(doc: dict[str, Any]) -> None:
    log = doc["log"]
    assert log["version"] == "1.2"
    assert isinstance(log["creator"]["name"], str) and isinstance(log["creator"]["version"], str)
    page_ids = {p["id"] for p in log.get("pages", [])}
    for page in log.get("pages", []):
        datetime.fromisoformat(page["startedDateTime"])
        assert isinstance(page["title"], str) and isinstance(page["pageTimings"], dict)
    for entry in log["entries"]:
        assert entry.get("pageref") is None or entry["pageref"] in page_ids
        datetime.fromisoformat(entry["startedDateTime"])
        assert isinstance(entry["time"], (int, float)) and entry["time"] >= 0
        req, resp, timings = entry["request"], entry["response"], entry["timings"]
        for key in ("method", "url", "httpVersion"):
            assert isinstance(req[key], str)
        for key in ("cookies", "headers", "queryString"):
            assert isinstance(req[key], list)
        assert all(set(h) >= {"name", "value"} for h in req["headers"] + resp["headers"])
        assert isinstance(req["headersSize"], int) and isinstance(req["bodySize"], int)
        assert isinstance(resp["status"], int) and isinstance(resp["statusText"], str)
        assert isinstance(resp["httpVersion"], str) and isinstance(resp["cookies"], list)
        assert isinstance(resp["content"]["size"], int) and isinstance(resp["content"]["mimeType"], str)
        assert isinstance(resp["redirectURL"], str)
        assert isinstance(resp["headersSize"], int) and isinstance(resp["bodySize"], int)
        assert isinstance(entry["cache"], dict)
        for key in ("send", "wait", "receive"):
            assert timings[key] >= 0
        for key in ("blocked", "dns", "connect", "ssl"):
            assert timings.get(key, -1) == -1 or timings[key] >= 0
        if timings["ssl"] != -1:
            assert timings["connect"] >= timings["ssl"]
        total = sum(timings[k] for k in ("blocked", "dns", "connect", "send", "wait", "receive") if timings[k] > 0)
        assert abs(entry["time"] - total) < 0.01


def test_har_of_keepalive_capture(tmp_path: Path) -> None:
    out = tmp_path / "k.har"
    result = CliRunner().invoke(app, ["export", str(CAPTURES / "keepalive-idle-timeout.pcap"), "--format", "har",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text(encoding="utf-8"))
    _check_har(doc)
    entries = doc["log"]["entries"]
    analysis = analyzer.analyze(str(CAPTURES / "keepalive-idle-timeout.pcap"))
    assert len(entries) == len(analysis.transactions) == 12
    assert {e["connection"] for e in entries} == set(analysis.connections["uid"])
    depth = {(u, t): int(d) for u, t, d in zip(analysis.transactions["uid"], analysis.transactions["target"],
                                              analysis.transactions["trans_depth"], strict=True)}
    for entry in entries:
        target = "/" + entry["request"]["url"].split("/", 3)[3]
        reused = depth[(entry["connection"], target)] > 1
        assert (entry["timings"]["connect"] == -1) == reused
        assert entry["timings"]["ssl"] == -1
        assert entry["request"]["url"].startswith("http://127.0.0.1:8080/")
    # One connection carried four requests: one connect, three reused.
    by_conn: dict[str, list[float]] = {}
    for entry in entries:
        by_conn.setdefault(entry["connection"], []).append(entry["timings"]["connect"])
    assert sorted(v.count(-1) for v in by_conn.values()) == [1, 2, 2, 3]


def test_har_tls_connect_includes_ssl() -> None:
    analysis = analyzer.analyze(str(CAPTURES / "tls.pcap"), keylog=CAPTURES / "tls.keylog")
    doc = har_document(analysis)
    _check_har(doc)
    first = [e for e in doc["log"]["entries"] if e["timings"]["connect"] != -1]
    assert first and all(e["timings"]["ssl"] > 0 and e["request"]["url"].startswith("https://") for e in first)
    reused = [e for e in doc["log"]["entries"] if e["timings"]["connect"] == -1]
    assert reused and all(e["timings"]["ssl"] == -1 for e in reused)


def test_har_of_every_capture_is_valid() -> None:
    for path in sorted(CAPTURES.glob("*.pcap*")):
        doc = har_document(analyzer.analyze(str(path)))
        _check_har(json.loads(json.dumps(doc, allow_nan=False)))
