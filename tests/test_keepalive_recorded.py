"""A real keep-alive connection with more exchanges in one chunk than ``MAX_PENDING_REQUESTS``: wrk against
nginx on one connection, recorded by ``bench/record_large.py`` in a network namespace of its own (loopback
only). A chunk feeds all its requests before its responses; every request must still be paired with its
response, as tshark pairs them (before ``_trim_pending``, 12,581 of 30,000 such exchanges were not)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import analyzer
from analyzer.capture.pcapfile import DEFAULT_CHUNK_PACKETS
from analyzer.http.transactions import MAX_PENDING_REQUESTS

REPO = Path(__file__).resolve().parents[1]
REQUESTS = 12_000  # more than MAX_PENDING_REQUESTS, in fewer packets than one chunk (two per exchange)


@pytest.mark.netns
def test_a_real_keepalive_connection_pairs_every_exchange(tmp_path: Path) -> None:
    assert REQUESTS > MAX_PENDING_REQUESTS and 2 * REQUESTS + 100 < DEFAULT_CHUNK_PACKETS
    if os.geteuid() != 0:
        pytest.skip("needs root (a network namespace, tcpdump)")
    missing = [t for t in ("ip", "nginx", "wrk", "tcpdump", "capinfos", "tshark") if shutil.which(t) is None
               and not Path("/usr/sbin", t).exists()]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}")
    out = tmp_path / "keepalive.pcap"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "record_large.py"), "-o", str(out), "--paths", "/1k.bin",
         "--keepalive-requests", str(REQUESTS), "--close-duration", "0", "-c", "1", "-t", "1",
         "--min-packets", str(2 * REQUESTS), "--max-packets", str(DEFAULT_CHUNK_PACKETS), "--attempts", "3"],
        capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    a = analyzer.analyze(out)
    assert a.summary["packets_read"] <= DEFAULT_CHUNK_PACKETS  # one chunk
    assert a.anomalies.empty, a.anomalies["name"].value_counts().to_dict()
    (busy,) = [c for _, c in a.connections.iterrows() if c["requests"] > 0]
    assert busy["requests"] == REQUESTS and busy["pipelined_max"] == 1
    t = a.transactions
    assert len(t) == REQUESTS
    assert t["method"].notna().all() and (t["status"] == 200).all() and (t["response_body_bytes"] == 1024).all()
    assert (t["trans_depth"].to_numpy() == range(1, REQUESTS + 1)).all()
    paired = subprocess.run(["tshark", "-r", str(out), "-Y", "http.response", "-T", "fields", "-e",
                             "http.request_in"], capture_output=True, text=True, check=True).stdout.split()
    assert len(paired) == REQUESTS  # tshark pairs every response with a request too
