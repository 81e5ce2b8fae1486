"""Connection pools (analyzer/metrics/pools.py): connections open at once per client and host.

Checked against a brute-force count over the connections table (an independent, quadratic
implementation) on recorded and corpus captures, and against real browsers: the corpus holds page loads by
browsers, which open at most 6 connections per host, and the peak found there is exactly 6.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import analyzer
from analyzer.metrics import BROWSER_PER_HOST_LIMIT, compute_all, connection_hosts, connection_pools, pool_peaks

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
FILES = [ROOT / "captures" / n for n in ("keepalive-idle-timeout.pcap", "close-race.pcap", "h2c.pcap",
                                         "pipelining.pcap")] + [
    CORPUS / "chrissanders" / "http_espn.pcapng", CORPUS / "zeek" / "http" / "bro.org.pcap",
    CORPUS / "ndpi" / "1kxun.pcap"]
BROWSER_PAGE_LOADS = [CORPUS / "chrissanders" / "http_espn.pcapng", CORPUS / "zeek" / "http" / "bro.org.pcap"]


def _brute_force(starts: list[float], ends: list[float], limit: int) -> tuple[int, float]:
    """(peak open, seconds with more than ``limit`` open) by checking every instant between events."""
    instants = sorted(set(starts) | set(ends))
    peak, over = 0, 0.0
    for t, t_next in zip(instants, [*instants[1:], instants[-1]], strict=True):
        # open during [t, t_next): started at or before t, ending after t
        n = sum(1 for s, e in zip(starts, ends, strict=True) if s <= t < e)
        n_at = sum(1 for s, e in zip(starts, ends, strict=True) if s == e == t)  # zero-length connections
        peak = max(peak, n + n_at)
        if n > limit:
            over += t_next - t
    return peak, over


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
@pytest.mark.parametrize("limit", [1, BROWSER_PER_HOST_LIMIT])
def test_pools_agree_with_a_brute_force_count(path: Path, limit: int) -> None:
    if not path.exists():
        pytest.skip(f"{path} not available")
    a = analyzer.analyze(str(path))
    hosts = connection_hosts(a.connections, a.transactions)["host"]
    pools = connection_pools(a.connections, hosts, limit=limit)
    frame = a.connections.assign(host=hosts.to_numpy())
    assert pools["connections"].sum() == len(frame)
    for row in pools.to_dict("records"):
        mine = frame[(frame["client_ip"] == row["client_ip"]) & (frame["host"] == row["host"])]
        starts = mine["ts_start"].astype(float).tolist()
        ends = np.maximum(mine["ts_end"].astype(float).to_numpy(), starts).tolist()
        peak, over = _brute_force(starts, ends, limit)
        assert row["connections"] == len(mine)
        assert row["max_parallel"] == peak, row
        assert row["seconds_over_limit"] == pytest.approx(over, abs=1e-9), row
        assert 1 <= row["mean_parallel"] <= row["max_parallel"]
    # what the summary keeps, computed without the table
    assert pool_peaks(a.connections, hosts, limit=limit) == (
        int(pools["max_parallel"].max()) if len(pools) else 0, int((pools["max_parallel"] > limit).sum()))


@pytest.mark.parametrize("path", BROWSER_PAGE_LOADS, ids=[p.name for p in BROWSER_PAGE_LOADS])
def test_a_browser_page_load_peaks_at_six_connections_per_host(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} not available")
    a = analyzer.analyze(str(path))
    m = compute_all(a)
    assert m.pools["max_parallel"].max() == BROWSER_PER_HOST_LIMIT
    assert a.summary["max_parallel_connections"] == BROWSER_PER_HOST_LIMIT
    assert a.summary["pools_over_browser_limit"] == 0
    steps = m.pool_steps
    assert (steps.groupby(["client_ip", "host"])["open"].last() == 0).all()  # every pool empties at the end
