"""TLS decryption end to end (analyzer/tls/connection.py + keylog + decrypt, through the pipeline and the
CLI): with the key log the transactions inside TLS are parsed as in cleartext and equal the clients' truth
(our recorded captures/tls.pcap) and tshark's decrypted counts (tests/test_corpus.py runs every corpus
capture with its key log, as the oracle was made); without it, or with a wrong one, the exchanges are
estimated and an anomaly says why, never an exception. The record cryptography itself is tested in
tests/test_tls_decrypt.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import analyzer
from analyzer.cli import app

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
TLS_CAPTURE = ROOT / "captures" / "tls.pcap"
TLS_KEYLOG = ROOT / "captures" / "tls.keylog"


def _truth() -> dict[int, list[tuple[str, str, int]]]:
    truth = json.loads((ROOT / "captures" / "tls.truth.json").read_text())
    return {c["client_port"]: [(r["method"], r["target"], r["status"]) for r in c["requests"]]
            for c in truth["connections"]}


def _per_port(a: analyzer.Analysis) -> dict[int, list[tuple[str, str, int]]]:
    tx = a.transactions.merge(a.connections[["uid", "client_port"]], on="uid")
    out: dict[int, list[tuple[str, str, int]]] = {}
    for port, g in tx.groupby("client_port", sort=True):
        g = g.sort_values("trans_depth")
        out[int(port)] = [(m, t, int(s)) for m, t, s in zip(g["method"], g["target"], g["status"], strict=True)]
    return out


def test_recorded_tls_decrypts_to_the_clients_requests() -> None:
    a = analyzer.analyze(str(TLS_CAPTURE), keylog=TLS_KEYLOG)
    assert _per_port(a) == _truth()
    c = a.connections
    assert c["tls_decrypted"].all() and (c["protocol"] == "http/1.1").all()
    assert (c["alpn"] == "http/1.1").all()  # TLS 1.3 too: read from the decrypted EncryptedExtensions
    assert not a.transactions["estimated"].any()
    assert a.transactions["response_complete"].all()
    # the TCP analysis still places every response in the TCP stream (spans mapped through the records)
    assert a.transactions["rounds"].notna().all() and a.transactions["warmth"].notna().all()
    assert a.summary["tls_keys"] >= 4
    assert not a.anomalies["name"].str.startswith("tls_").any()


def test_without_keys_the_same_capture_is_estimated() -> None:
    a = analyzer.analyze(str(TLS_CAPTURE))
    assert not a.connections["tls_decrypted"].fillna(False).any()
    assert a.transactions["estimated"].all()
    tx = a.transactions.merge(a.connections[["uid", "client_port"]], on="uid")
    assert tx.groupby("client_port").size().to_dict() == {p: len(r) for p, r in _truth().items()}


def test_wrong_and_missing_keys_are_anomalies(tmp_path: Path) -> None:
    lines = TLS_KEYLOG.read_text().splitlines()
    broken = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3:  # flip the secret's last hex digit
            parts[2] = parts[2][:-1] + ("0" if parts[2][-1] != "0" else "1")
        broken.append(" ".join(parts))
    wrong = tmp_path / "wrong.keylog"
    wrong.write_text("\n".join(broken) + "\n")
    a = analyzer.analyze(str(TLS_CAPTURE), keylog=wrong)
    assert set(a.anomalies["name"]) >= {"tls_decrypt_failed"}
    assert not a.connections["tls_decrypted"].fillna(False).any()
    assert a.transactions["estimated"].all() and len(a.transactions) == sum(map(len, _truth().values()))
    empty = tmp_path / "other.keylog"
    empty.write_text("CLIENT_RANDOM " + "00" * 32 + " " + "11" * 48 + "\nnot a key line\n")
    b = analyzer.analyze(str(TLS_CAPTURE), keylog=empty)
    assert (b.anomalies["name"] == "tls_no_key").sum() == len(b.connections)


@pytest.mark.parametrize("rel", ["zeek/tls/tls12-decryption.pcap", "zeek/tls/tls-1.2-stream-keylog.pcap",
                                 "pcapfs/all_ciphers.pcap"])
def test_estimates_without_keys_equal_the_decrypted_counts(rel: str) -> None:
    """HTTP/1.1 over TLS without pipelining: record bursts give the exact request count (tshark's, with keys)."""
    if not (CORPUS / rel).exists():
        pytest.skip(f"{rel} not in the corpus")
    oracle = json.loads((CORPUS / "oracle" / (rel + ".json")).read_text())
    a = analyzer.analyze(str(CORPUS / rel))
    by_port = {int(r.client_port): r for r in a.connections.itertuples()}
    for entry in oracle["tcp"]:
        port = int(entry["client"].rpartition(":")[2])
        want = (entry.get("http1") or {}).get("requests", 0)
        if want:
            assert int(by_port[port].requests) == want, entry["client"]


def test_pcapng_decryption_secrets_block_decrypts_h2() -> None:
    rel = "pcap2har-mikekap/firefox-tls13-facebook-dsb.pcapng"
    if not (CORPUS / rel).exists():
        pytest.skip(f"{rel} not in the corpus")
    a = analyzer.analyze(str(CORPUS / rel))
    row = a.connections.iloc[0]
    assert row["tls_decrypted"] and row["protocol"] == "h2" and row["alpn"] == "h2"
    assert int(row["requests"]) == 6  # tshark: 6 client streams with HEADERS
    tx = a.transactions
    assert tx["stream_id"].notna().all() and (tx["host"] == "www.facebook.com").any()


def test_cli_keylog_option(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    res = CliRunner().invoke(app, ["export", str(TLS_CAPTURE), "--keylog", str(TLS_KEYLOG), "--format", "json",
                                   "-o", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert len(data["transactions"]) == sum(map(len, _truth().values()))
    assert {t["method"] for t in data["transactions"]} == {"GET"}
    res = CliRunner().invoke(app, ["summary", str(TLS_CAPTURE), "--keylog", str(tmp_path / "missing.keylog")])
    assert res.exit_code == 2 and "no such file" in res.output


def test_decrypted_columns_in_frames() -> None:
    a = analyzer.analyze(str(TLS_CAPTURE), keylog=TLS_KEYLOG)
    assert pd.api.types.is_bool_dtype(a.connections["tls_decrypted"].dtype)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(24, 41_000), st.integers(1, 255)), min_size=1, max_size=12),
       cut=st.one_of(st.none(), st.integers(2_000, 41_000)))
def test_corrupted_and_truncated_records_with_keys_never_raise(tmp_path_factory: pytest.TempPathFactory,
                                                              flips: list[tuple[int, int]], cut: int | None) -> None:
    """Bytes flipped anywhere in the recorded TLS capture (records, headers, handshakes) and the file cut
    short, analyzed with the right key log: no exception, every packet accounted for, and what cannot be
    decrypted is an anomaly or an estimate."""
    data = bytearray(TLS_CAPTURE.read_bytes())
    for offset, xor in flips:
        if offset < len(data):
            data[offset] ^= xor
    if cut is not None:
        data = data[:cut]
    path = tmp_path_factory.mktemp("mut") / "mutated.pcap"
    path.write_bytes(bytes(data))
    a = analyzer.analyze(str(path), keylog=TLS_KEYLOG)
    s = a.summary
    assert s["packets_read"] == s["packets_analyzed"] + sum(s["packets_skipped"].values())
    assert set(a.connections.columns) >= {"tls_decrypted", "protocol"}
