"""Recorded TLS and cleartext HTTP/2 traffic (captures/tls.pcap, captures/h2c.pcap) against the clients' truth.

The captures were recorded by ``captures/record.py`` (scenarios ``tls`` and ``h2c``: nginx, nghttpx, Python's
``ssl`` + ``http.client``, nghttp and curl in a network namespace, loopback only). Their truth files say what
the clients' libraries reported: per connection the client port, the TLS version (``SSLSocket.version()``),
whether the session was resumed (``session_reused``), the SNI sent, the ALPN offered and selected; for HTTP/2
the stream each request went on and whether the connection was upgraded from HTTP/1.1 (``Upgrade: h2c``).

The analyzer gets no key log: TLS connections are seen from their handshake (SNI, version, ALPN when TLS 1.2
shows it, resumption) and their requests are estimated from record bursts (``estimated``). The key log is
committed (``captures/tls.keylog``) for later decryption work; tshark uses it here as the oracle.

``captures/h2-tls.pcap`` (scenario ``h2-tls``: curl ``--http2`` over TLS 1.3 and 1.2, writing SSLKEYLOGFILE
into ``captures/h2-tls.keylog``) is checked both ways: with the key log the analyzer must find
the clients' HTTP/2 streams exactly (stream id, method, target, status, not estimated); without it, what the
handshake shows (``h2`` only where TLS 1.2 shows the ALPN, not estimated; TLS 1.3 is ``tls``, estimated).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from test_e2e_recorded import record  # one loaded copy of captures/record.py

import analyzer

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "captures"
TLS_CAPTURE = CAPTURES / "tls.pcap"
H2C_CAPTURE = CAPTURES / "h2c.pcap"
H2_TLS_CAPTURE = CAPTURES / "h2-tls.pcap"
H2_TLS_KEYLOG = CAPTURES / "h2-tls.keylog"




def _truth(capture: Path) -> dict[str, Any]:
    truth: dict[str, Any] = json.loads(capture.with_name(capture.name.split(".")[0] + ".truth.json").read_text())
    return truth


@pytest.fixture(scope="module")
def tls() -> analyzer.Analysis:
    return analyzer.analyze(str(TLS_CAPTURE))


@pytest.fixture(scope="module")
def h2c() -> analyzer.Analysis:
    return analyzer.analyze(str(H2C_CAPTURE))


@pytest.fixture(scope="module")
def h2_tls() -> analyzer.Analysis:
    return analyzer.analyze(str(H2_TLS_CAPTURE), keylog=str(H2_TLS_KEYLOG))


@pytest.fixture(scope="module")
def h2_tls_no_keys() -> analyzer.Analysis:
    return analyzer.analyze(str(H2_TLS_CAPTURE))


def _row(a: Any, conn: dict[str, Any]) -> pd.Series:
    rows = a.connections[
        (a.connections["client_port"] == conn["client_port"]) & (a.connections["server_port"] == conn["server_port"])
    ]
    assert len(rows) == 1, f"client port {conn['client_port']}: {len(rows)} rows"
    return rows.iloc[0]


def _transactions(a: Any, uid: str) -> pd.DataFrame:
    return a.transactions[a.transactions["uid"] == uid].sort_values("trans_depth")


def _none(value: Any) -> Any:
    return None if value is pd.NA or (isinstance(value, float) and value != value) else value


# --- the truth files describe what the scenarios are meant to show ---------------------------------------


def test_tls_truth_covers_the_cases() -> None:
    conns = _truth(TLS_CAPTURE)["connections"]
    kinds = {(c["tls_version"], c["tls_resumed"]) for c in conns}
    assert kinds == {("TLSv1.3", False), ("TLSv1.3", True), ("TLSv1.2", False), ("TLSv1.2", True)}
    assert all(c["alpn"] == "http/1.1" and c["sni"] == record.TLS_SNI for c in conns)
    assert (CAPTURES / "tls.keylog").read_text().count("CLIENT_RANDOM") == 2  # the two TLS 1.2 handshakes
    assert TLS_CAPTURE.stat().st_size < 100_000 and H2C_CAPTURE.stat().st_size < 100_000


def test_h2c_truth_covers_the_cases() -> None:
    conns = _truth(H2C_CAPTURE)["connections"]
    assert [c["upgrade"] for c in conns] == [False, False, True, True]
    assert [c["client"] for c in conns] == ["nghttp", "h2load", "curl", "nghttp"]
    assert all(c["requests"][0]["stream_id"] == 1 for c in conns if c["upgrade"])


# --- TLS ------------------------------------------------------------------------------------------------


def test_tls_connections_match_truth(tls: Any) -> None:
    truth = _truth(TLS_CAPTURE)["connections"]
    assert len(tls.connections) == len(truth)
    for conn in truth:
        row = _row(tls, conn)
        version = conn["tls_version"].replace("TLSv", "TLS ")
        visible_alpn = conn["alpn"] if version == "TLS 1.2" else None  # TLS 1.3 encrypts EncryptedExtensions
        got = {
            "tls": bool(row["tls"]),
            "tls_version": row["tls_version"],
            "sni": row["sni"],
            "tls_resumed": bool(row["tls_resumed"]),
            "alpn": _none(row["alpn"]),
            "alpn_offered": row["alpn_offered"],
            "tls_round_trips": int(row["tls_round_trips"]),
            "requests": int(row["requests"]),
            "protocol": row["protocol"],
            "syn_seen": bool(row["syn_seen"]),
            "close_by": row["close_by"],
        }
        want = {
            "tls": True,
            "tls_version": version,
            "sni": conn["sni"],
            "tls_resumed": conn["tls_resumed"],
            "alpn": visible_alpn,
            "alpn_offered": conn["alpn_offered"],
            # a full TLS 1.2 handshake costs 2 round trips; TLS 1.3 and any resumption 1
            "tls_round_trips": 1 if conn["tls_resumed"] or version == "TLS 1.3" else 2,
            "requests": len(conn["requests"]),
            "protocol": visible_alpn or "tls",
            "syn_seen": conn["syn_seen"],
            "close_by": conn["close_by"],
        }
        assert got == want, f"client port {conn['client_port']} ({conn['note']})"


def test_tls_transactions_are_estimated(tls: Any) -> None:
    for conn in _truth(TLS_CAPTURE)["connections"]:
        tx = _transactions(tls, _row(tls, conn)["uid"])
        assert len(tx) == len(conn["requests"])
        assert tx["estimated"].tolist() == [True] * len(tx)
        assert tx["trans_depth"].tolist() == list(range(1, len(tx) + 1))
        assert tx["method"].isna().all() and tx["status"].isna().all()  # encrypted: not invented


def test_tls_handshake_agrees_with_tshark(tls: Any) -> None:
    """SNI and negotiated version per connection as tshark reads the handshakes (no keys needed)."""
    tshark = record.find_tool("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed")
    fields = ["tcp.srcport", "tcp.dstport", "tls.handshake.type", "tls.handshake.version",
              "tls.handshake.extensions.supported_version", "tls.handshake.extensions_server_name"]
    args = [tshark, "-r", str(TLS_CAPTURE), "-n", "-d", f"tcp.port=={record.PORT_TLS},tls",
            "-Y", "tls.handshake.type == 1 || tls.handshake.type == 2", "-T", "fields",
            "-E", "separator=/t", "-E", "occurrence=f"]
    for name in fields:
        args += ["-e", name]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout
    seen: dict[int, dict[str, Any]] = {}
    for line in out.splitlines():
        sport, dport, kind, version, supported, sni = (line.split("\t") + [""] * 6)[:6]
        if kind == "1":  # ClientHello
            seen.setdefault(int(sport), {})["sni"] = sni or None
        elif kind == "2":  # ServerHello: supported_versions (TLS 1.3) or the legacy version
            number = int(supported or version, 16)
            seen.setdefault(int(dport), {})["tls_version"] = f"TLS 1.{(number & 0xFF) - 1}"
    got = {
        int(r.client_port): {"sni": r.sni, "tls_version": r.tls_version}
        for r in tls.connections.itertuples()
    }
    assert got == seen


def test_tls_keylog_decrypts_to_the_truth() -> None:
    """The committed key log is good test data: with it tshark sees exactly the clients' requests."""
    if record.find_tool("tshark") is None:
        pytest.skip("tshark is not installed")
    assert record.verify_with_tshark(TLS_CAPTURE, _truth(TLS_CAPTURE)) == []


# --- h2c ------------------------------------------------------------------------------------------------


def test_h2c_connections_match_truth(h2c: Any) -> None:
    truth = _truth(H2C_CAPTURE)["connections"]
    assert len(h2c.connections) == len(truth)
    for conn in truth:
        row = _row(h2c, conn)
        where = f"client port {conn['client_port']} ({conn['note']})"
        assert row["protocol"] == "h2c", where
        assert not bool(row["tls"]), where
        assert int(row["requests"]) == len(conn["requests"]), where
        assert row["close_by"] == conn["close_by"] and bool(row["syn_seen"]), where
        tx = _transactions(h2c, row["uid"])
        got = [(int(t.stream_id), t.method, t.target, int(t.status)) for t in tx.itertuples()]
        want = [(r["stream_id"], r["method"], r["target"], r["status"]) for r in conn["requests"]]
        assert got == want, where
        versions = tx["http_version"].tolist()
        if conn["upgrade"]:
            # the upgraded request was an HTTP/1.1 message; its response came on HTTP/2 stream 1
            assert versions == ["HTTP/1.1"] + ["HTTP/2"] * (len(tx) - 1), where
        else:
            assert versions == ["HTTP/2"] * len(tx), where
        assert not tx["estimated"].any(), where


def test_h2c_concurrent_streams(h2c: Any) -> None:
    """nghttp sends its four requests at once (prior knowledge); h2load keeps at most three streams open
    (``-m 3``) for its six; curl after an upgrade one at a time."""
    truth = _truth(H2C_CAPTURE)["connections"]
    nghttp_prior, h2load, curl_upgrade = truth[0], truth[1], truth[2]
    assert int(_row(h2c, nghttp_prior)["max_concurrent_streams"]) == len(nghttp_prior["requests"])
    assert int(_row(h2c, h2load)["max_concurrent_streams"]) == 3
    assert int(_row(h2c, h2load)["requests"]) == 6
    assert int(_row(h2c, curl_upgrade)["max_concurrent_streams"]) == 1


# --- the CLI end to end ---------------------------------------------------------------------------------


@pytest.mark.parametrize("capture", [TLS_CAPTURE, H2C_CAPTURE], ids=lambda p: p.name)
def test_cli_export_json_matches_truth(capture: Path, tmp_path: Path) -> None:
    """``analyzer export CAPTURE --format json -o FILE`` (the console script, as a subprocess)."""
    truth = _truth(capture)
    export = record.run_analyzer_export(capture, tmp_path / "export.json")
    assert set(export) >= {"summary", "connections", "transactions", "anomalies"}
    assert len(export["connections"]) == len(truth["connections"])
    assert len(export["transactions"]) == sum(len(c["requests"]) for c in truth["connections"])
    assert export["anomalies"] == []
    assert record.compare_with_truth(export, truth) == []
    ports = {int(c["client_port"]): c for c in export["connections"]}
    for conn in truth["connections"]:
        row = ports[conn["client_port"]]
        if "tls_version" in conn:
            assert row["tls"] is True and row["sni"] == conn["sni"]
        else:
            assert row["protocol"] == "h2c"


def test_compare_with_truth_checks_tls_facts() -> None:
    """The recorder's comparison names each TLS difference (no key log: only the request count)."""
    truth = {
        "connections": [
            {
                "client_ip": "127.0.0.1", "client_port": 40000, "server_ip": "127.0.0.1", "server_port": 8443,
                "syn_seen": True, "close_by": "client", "pipelined_max": 1,
                "requests": [{"method": "GET", "target": "/a", "status": 200}] * 2,
                "tls_version": "TLSv1.2", "tls_resumed": True, "sni": "x.test", "alpn_offered": "http/1.1",
                "alpn": "http/1.1",
            }
        ]
    }
    row = {
        "uid": "C1", "client_ip": "127.0.0.1", "client_port": 40000, "server_ip": "127.0.0.1",
        "server_port": 8443, "syn_seen": True, "close_by": "client", "pipelined_max": None, "tls": True,
        "tls_version": "TLS 1.2", "tls_resumed": True, "sni": "x.test", "alpn_offered": "http/1.1",
        "alpn": "http/1.1", "protocol": "http/1.1",
    }
    tx = [{"uid": "C1", "trans_depth": d, "method": None, "target": None, "status": None} for d in (1, 2)]
    export: dict[str, Any] = {"connections": [row], "transactions": tx}
    assert record.compare_with_truth(export, truth) == []
    row.update(tls_version="TLS 1.3", alpn=None, protocol="tls", tls_resumed=False)
    names = [p.split(": ")[1] for p in record.compare_with_truth(export, truth)]
    assert names == ["tls_version", "tls_resumed", "alpn", "protocol"]


# --- h2 over TLS (h2-tls: curl --http2, SSLKEYLOGFILE) ---------------------------------------------------


def test_h2_tls_truth_covers_the_cases() -> None:
    truth = _truth(H2_TLS_CAPTURE)
    conns = truth["connections"]
    assert truth["keylog"] == H2_TLS_KEYLOG.name
    assert [(c["client"], c["tls_version"]) for c in conns] == [("curl", "TLSv1.3"), ("curl", "TLSv1.2")]
    assert all(c["alpn"] == "h2" and c["protocol"] == "h2" and c["sni"] == record.TLS_SNI for c in conns)
    assert all(not c["tls_resumed"] for c in conns)
    assert all(len(c["requests"]) > 1 for c in conns)  # several streams per connection
    keylog = H2_TLS_KEYLOG.read_text()
    assert keylog.count("CLIENT_RANDOM") == 1 and keylog.count("CLIENT_TRAFFIC_SECRET_0") == 1
    assert H2_TLS_CAPTURE.stat().st_size < 100_000


def test_h2_tls_decrypted_matches_truth(h2_tls: Any) -> None:
    truth = _truth(H2_TLS_CAPTURE)["connections"]
    assert len(h2_tls.connections) == len(truth)
    for conn in truth:
        row = _row(h2_tls, conn)
        where = f"client port {conn['client_port']} ({conn['note']})"
        got = {
            "tls_decrypted": bool(row["tls_decrypted"]),
            "protocol": row["protocol"],
            "alpn": _none(row["alpn"]),  # TLS 1.3: from the decrypted EncryptedExtensions
            "alpn_offered": row["alpn_offered"],
            "tls_version": row["tls_version"],
            "sni": row["sni"],
            "tls_resumed": bool(row["tls_resumed"]),
            "requests": int(row["requests"]),
            "close_by": row["close_by"],
            "syn_seen": bool(row["syn_seen"]),
        }
        want = {
            "tls_decrypted": True,
            "protocol": "h2",
            "alpn": "h2",
            "alpn_offered": conn["alpn_offered"],
            "tls_version": record.tls_version_name(conn["tls_version"]),
            "sni": conn["sni"],
            "tls_resumed": False,
            "requests": len(conn["requests"]),
            "close_by": conn["close_by"],
            "syn_seen": True,
        }
        assert got == want, where
        tx = _transactions(h2_tls, row["uid"])
        got_tx = [(int(t.stream_id), t.method, t.target, int(t.status)) for t in tx.itertuples()]
        want_tx = [(r["stream_id"], r["method"], r["target"], r["status"]) for r in conn["requests"]]
        assert got_tx == want_tx, where
        assert not tx["estimated"].any(), where
        assert tx["http_version"].tolist() == ["HTTP/2"] * len(tx), where


def test_h2_tls_streams_one_after_the_other(h2_tls: Any) -> None:
    """curl fetches its URLs one after the other: one stream open at a time."""
    for conn in _truth(H2_TLS_CAPTURE)["connections"]:
        assert int(_row(h2_tls, conn)["max_concurrent_streams"]) == 1


def test_h2_tls_without_keys(h2_tls_no_keys: Any) -> None:
    """No key log: h2 is visible only where TLS 1.2 shows the ALPN (and then not estimated); TLS 1.3 is
    "tls" with transactions estimated from record bursts."""
    a = h2_tls_no_keys
    for conn in _truth(H2_TLS_CAPTURE)["connections"]:
        row = _row(a, conn)
        where = f"client port {conn['client_port']} ({conn['note']})"
        version = record.tls_version_name(conn["tls_version"])
        assert row["tls_version"] == version and row["sni"] == conn["sni"], where
        assert not bool(row["tls_decrypted"]), where
        tx = _transactions(a, row["uid"])
        if version == "TLS 1.2":
            assert (row["protocol"], _none(row["alpn"])) == ("h2", "h2"), where
            assert _none(row["requests"]) is None and tx.empty, where  # no estimate for h2
        else:
            assert (row["protocol"], _none(row["alpn"])) == ("tls", None), where
            assert int(row["requests"]) == len(tx) > 0, where
            assert tx["estimated"].all() and tx["method"].isna().all(), where


def test_h2_tls_keylog_decrypts_to_the_truth() -> None:
    """tshark, given the key log, sees exactly the clients' streams (paths, statuses, stream ids)."""
    if record.find_tool("tshark") is None:
        pytest.skip("tshark is not installed")
    assert record.verify_with_tshark(H2_TLS_CAPTURE, _truth(H2_TLS_CAPTURE)) == []


def test_cli_export_with_keylog_matches_truth(h2_tls: Any, tmp_path: Path) -> None:
    """``analyzer export h2-tls.pcap --keylog h2-tls.keylog --format json -o FILE``: the same rows as the
    library, and the truth (``compare_with_truth(..., decrypted=True)``); without the key log the
    comparison without keys holds."""
    truth = _truth(H2_TLS_CAPTURE)
    export = record.run_analyzer_export(H2_TLS_CAPTURE, tmp_path / "export.json", H2_TLS_KEYLOG)
    assert record.compare_with_truth(export, truth, decrypted=True) == []
    assert export["anomalies"] == []
    cols = ["uid", "client_port", "protocol", "alpn", "tls_version", "sni", "tls_decrypted", "requests"]
    got = sorted(tuple(r[c] for c in cols) for r in export["connections"])
    want = sorted(tuple(_none(v) for v in r) for r in h2_tls.connections[cols].itertuples(index=False))
    assert got == want
    tcols = ["uid", "trans_depth", "stream_id", "method", "target", "status", "estimated"]
    got_tx = sorted(tuple(r[c] for c in tcols) for r in export["transactions"])
    want_tx = sorted(tuple(_none(v) for v in r) for r in h2_tls.transactions[tcols].itertuples(index=False))
    assert got_tx == want_tx
    plain = record.run_analyzer_export(H2_TLS_CAPTURE, tmp_path / "plain.json")
    assert record.compare_with_truth(plain, truth) == []
    assert record.compare_with_truth(plain, truth, decrypted=True) != []  # not decrypted: differs


def test_compare_with_truth_checks_decrypted_h2() -> None:
    """With ``decrypted`` a TLS connection's requests and stream ids are compared like cleartext ones."""
    truth = {
        "connections": [
            {
                "client_ip": "127.0.0.1", "client_port": 40000, "server_ip": "127.0.0.1", "server_port": 8444,
                "syn_seen": True, "close_by": "client", "pipelined_max": 1, "protocol": "h2",
                "requests": [{"method": "GET", "target": "/a", "status": 200, "stream_id": 1},
                             {"method": "GET", "target": "/b", "status": 404, "stream_id": 3}],
                "tls_version": "TLSv1.3", "tls_resumed": False, "sni": "x.test", "alpn_offered": "h2,http/1.1",
                "alpn": "h2",
            }
        ]
    }
    row = {
        "uid": "C1", "client_ip": "127.0.0.1", "client_port": 40000, "server_ip": "127.0.0.1",
        "server_port": 8444, "syn_seen": True, "close_by": "client", "pipelined_max": None, "tls": True,
        "tls_version": "TLS 1.3", "tls_resumed": False, "sni": "x.test", "alpn_offered": "h2,http/1.1",
        "alpn": "h2", "protocol": "h2", "tls_decrypted": True,
    }
    tx = [
        {"uid": "C1", "trans_depth": 1, "stream_id": 1, "method": "GET", "target": "/a", "status": 200},
        {"uid": "C1", "trans_depth": 2, "stream_id": 3, "method": "GET", "target": "/b", "status": 404},
    ]
    export: dict[str, Any] = {"connections": [row], "transactions": tx}
    assert record.compare_with_truth(export, truth, decrypted=True) == []
    tx[1].update(stream_id=5, status=200)
    row.update(tls_decrypted=False, protocol="tls")
    names = [p.split(": ")[1] for p in record.compare_with_truth(export, truth, decrypted=True)]
    assert names == ["protocol", "tls_decrypted", "requests", "stream_ids"]
    # without keys: TLS 1.3 hides the ALPN, and h2's record bursts are not compared with its streams
    row.update(alpn=None, tls_decrypted=False, protocol="tls")
    assert record.compare_with_truth(export, truth) == []
