"""Every capture of ../shared/corpus is analyzed without an exception, every packet is accounted for, and
per TCP connection syn_seen, HTTP/1 request counts and iRTT agree with the tshark oracle (and transactions
with Zeek's http.log max_trans_depth), except for the explained differences in
tests/corpus/expected_differences.toml."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import pytest

import analyzer
from analyzer.errors import CaptureFormatError

sys.path.insert(0, str(Path(__file__).parent / "corpus"))
from oracle_compare import CORPUS, disagreements, quic_disagreements, zeek_disagreements

pytestmark = pytest.mark.corpus
MANIFEST = CORPUS / "manifest.json"
EXPECTED = tomllib.loads((Path(__file__).parent / "corpus" / "expected_differences.toml").read_text())
UNREADABLE = {"pcap2har-andrewf/empty.pcap"}  # a zero-byte file: nothing to read

if not MANIFEST.exists():  # pragma: no cover - the corpus sits beside the repository in CI
    pytest.skip(f"corpus not found at {CORPUS}", allow_module_level=True)

FILES = [entry["file"] for entry in json.loads(MANIFEST.read_text())]
KEYLOGS = {entry["file"]: entry["keylog"] for entry in json.loads(MANIFEST.read_text()) if entry.get("keylog")}


@pytest.mark.parametrize("rel", FILES)
def test_corpus_capture_agrees_with_oracle(rel: str) -> None:
    path = CORPUS / rel
    if rel in UNREADABLE:
        with pytest.raises(CaptureFormatError):
            analyzer.analyze(str(path))
        return
    keylog = CORPUS / KEYLOGS[rel] if rel in KEYLOGS else None  # as the oracle: tshark ran with it
    result = analyzer.analyze(str(path), keylog=keylog)
    s = result.summary
    assert s["packets_read"] == s["packets_analyzed"] + sum(s["packets_skipped"].values()), s
    oracle = json.loads((CORPUS / "oracle" / (rel + ".json")).read_text())
    assert s["packets_read"] == oracle["capinfos_packets"]
    found = sorted(set(disagreements(rel, result.connections) + quic_disagreements(rel, result.connections)
                       + zeek_disagreements(rel, result.connections, result.transactions)))
    expected = sorted(EXPECTED.get(rel, {}).get("diffs", []))
    assert found == expected


def test_expected_differences_name_real_files() -> None:
    assert set(EXPECTED) <= set(FILES)
    for rel, entry in EXPECTED.items():
        assert entry.get("reason"), rel
