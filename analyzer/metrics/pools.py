"""Connection pools: how many connections each client kept open to each host at once, over time.

This module owns the reconstruction of client connection pools from the connections table (one pool per
client IP and host label of ``analyzer.metrics.hosts``) and its comparison with a browser's limit of
``BROWSER_PER_HOST_LIMIT`` connections per host. Pure, vectorized functions over ``connections`` (and the
host labels); no I/O, no clock. It knows nothing of packets or HTTP parsing, nor how results are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analyzer.metrics.frames import floats

#: Chrome, Firefox and Safari open at most 6 HTTP/1.x connections per host (per browser profile).
BROWSER_PER_HOST_LIMIT = 6

DEFINITIONS: dict[str, str] = {
    "parallel_connections": (
        "Connections one client IP had open to one host (the host label of `host`) at the same instant, "
        "counted over time from each connection's first to last packet (`ts_start` → `ts_end`; a "
        "connection ending at the instant another starts is not counted twice; a connection of a single instant "
        "counts at that instant). The pool is that set of "
        "connections. `max_parallel` is its peak, `mean_parallel` the time-weighted mean while at least one "
        "was open, `seconds_over_limit` the time spent above a browser's 6 connections per host (Chrome, "
        "Firefox and Safari's HTTP/1.x limit). A pool above 6 is a client that does not pool like a "
        "browser (a load generator, a service client with a large pool, several users behind one IP); a "
        "peak of 1 with many connections is a client that opens connections one after the other and does "
        "not reuse them."
    ),
}

POOL_COLUMNS = ("client_ip", "host", "connections", "max_parallel", "mean_parallel", "seconds_over_limit",
                "ts_peak")


def pool_events(connections: pd.DataFrame, hosts: pd.Series) -> pd.DataFrame:
    """+1/-1 events per pool, sorted by pool and time (see ``_phase``), with the running ``open`` count:
    the input of ``pool_timeline`` and ``connection_pools`` (compute it once for both). ``_pool`` numbers
    the pools in the order of (client IP, host): sorting and grouping go by it, not by the two strings
    (a million connections: about 0.5 GB less at the peak)."""
    steps = _pool_steps(connections, hosts, named=True)
    width = max(len(steps.host_names), 1)
    return pd.DataFrame({
        "client_ip": steps.client_names.take(steps.pool // width).astype("str").array,  # Arrow: no str per row
        "host": steps.host_names.take(steps.pool % width).astype("str").array,
        "ts": steps.ts, "delta": steps.delta, "_phase": steps.phase, "_pool": steps.pool, "open": steps.open,
    })


def pool_peaks(connections: pd.DataFrame, hosts: pd.Series, limit: int = BROWSER_PER_HOST_LIMIT
               ) -> tuple[int, int]:
    """The most connections one pool had open at once, and how many pools had more than ``limit`` open: what
    the summary keeps of ``connection_pools`` (the largest ``max_parallel``, and the pools whose
    ``max_parallel`` is over ``limit``), from the pools' numbers alone: no names, no per-pool table (the
    summary's metrics over a million half-open connections peaked at 1,212 MiB in ``connection_pools``, now
    at 880 MiB elsewhere)."""
    steps = _pool_steps(connections, hosts, named=False)
    if not len(steps.pool):
        return 0, 0
    return int(steps.open.max()), int(np.unique(steps.pool[steps.open > limit]).size)


@dataclass(frozen=True, slots=True)
class _PoolSteps:
    """The events of ``pool_events`` as arrays, sorted by pool, time and phase."""

    pool: np.ndarray  # client number * len(host_names) + host number
    ts: np.ndarray
    delta: np.ndarray  # +1 open, -1 close
    phase: np.ndarray
    open: np.ndarray  # connections of the pool open after the event
    client_names: pd.Index
    host_names: pd.Index


def _pool_steps(connections: pd.DataFrame, hosts: pd.Series, named: bool) -> _PoolSteps:
    """The pools' events (``pool_events``). ``named``: clients and hosts are numbered in the order of their
    names (``pool_events`` puts its rows in that order); otherwise in order of appearance (cheaper: a SYN
    flood has a million client addresses to sort)."""
    start = floats(connections["ts_start"])
    end = floats(connections["ts_end"])
    end = np.where(np.isnan(end) | (end < start), start, end)
    ok = ~np.isnan(start)
    n = int(np.count_nonzero(ok))
    instant = end[ok] == start[ok]
    # factorized as string columns: no ``str`` object per row (a SYN flood has a million client addresses)
    client_codes, client_names = pd.factorize(connections["client_ip"].astype("string").fillna("")[ok], sort=named)
    host_codes, host_names = pd.factorize(hosts.astype("string").fillna("")[ok], sort=named)
    pool = client_codes.astype(np.int64) * max(len(host_names), 1) + host_codes.astype(np.int64)
    del client_codes, host_codes
    pool = np.concatenate([pool, pool])
    ts = np.concatenate([start[ok], end[ok]])
    # at one instant: closes first (a handover is not two open), then opens, then the closes of
    # single-instant connections (open at that instant)
    phase = np.concatenate([np.ones(n, dtype=np.int8), np.where(instant, 2, 0).astype(np.int8)])
    delta = np.concatenate([np.ones(n, dtype=np.int64), -np.ones(n, dtype=np.int64)])
    order = np.lexsort((phase, ts, pool))  # stable: ties keep the connections' order
    pool, delta = pool[order], delta[order]
    running = np.cumsum(delta)
    first = np.r_[True, pool[1:] != pool[:-1]] if len(pool) else np.zeros(0, dtype=bool)
    before = np.maximum.accumulate(np.where(first, np.arange(len(pool)), 0)) if len(pool) else pool
    start_sum = (running - delta)[before] if len(pool) else running  # the running sum before each pool
    return _PoolSteps(pool=pool, ts=ts[order], delta=delta, phase=phase[order], open=running - start_sum,
                      client_names=pd.Index(client_names), host_names=pd.Index(host_names))


def pool_timeline(connections: pd.DataFrame, hosts: pd.Series, events: pd.DataFrame | None = None
                  ) -> pd.DataFrame:
    """Per pool, the open-connection count after each change: columns ``client_ip``, ``host``, ``ts`` and
    ``open`` (a step function; the last row of a pool is 0). ``events``: ``pool_events`` if already made."""
    if not len(connections):
        return pd.DataFrame({"client_ip": [], "host": [], "ts": [], "open": []})
    events = pool_events(connections, hosts) if events is None else events
    last_at_ts = ~events.duplicated(["client_ip", "host", "ts"], keep="last")  # one step per instant
    return events.loc[last_at_ts, ["client_ip", "host", "ts", "open"]].reset_index(drop=True)


def connection_pools(connections: pd.DataFrame, hosts: pd.Series, limit: int = BROWSER_PER_HOST_LIMIT,
                     events: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per pool (client IP, host): ``connections``, ``max_parallel``, ``mean_parallel``,
    ``seconds_over_limit`` (time with more than ``limit`` open) and ``ts_peak`` (when the peak was first
    reached); largest peak first. ``events``: ``pool_events`` if already made (it is not changed)."""
    if not len(connections):
        return pd.DataFrame({c: [] for c in POOL_COLUMNS})
    events = pool_events(connections, hosts) if events is None else events
    # the numbers only, grouped by the integer pool (events come sorted by it): no copy of the name columns
    pool = events["_pool"].to_numpy()
    ts = events["ts"].to_numpy(dtype=float)
    opened = events["open"].to_numpy()
    last = np.append(pool[1:] != pool[:-1], True) if len(pool) else np.zeros(0, dtype=bool)
    span = np.where(last, 0.0, np.append(ts[1:], 0.0) - ts)
    work = pd.DataFrame({
        "_pool": pool, "ts": ts, "open": opened,
        "_busy": np.where(opened > 0, span, 0.0),
        "_weighted": opened * span,
        "_over": np.where(opened > limit, span, 0.0),
        "_opens": (events["delta"].to_numpy() > 0).astype(np.int64),
    })
    grouped = work.groupby("_pool", sort=False)
    out = pd.DataFrame({
        "connections": grouped["_opens"].sum(),
        "max_parallel": grouped["open"].max(),
        "busy": grouped["_busy"].sum(),
        "weighted": grouped["_weighted"].sum(),
        "seconds_over_limit": grouped["_over"].sum(),
    })
    peak_rows = work.loc[work["open"] == grouped["open"].transform("max")]
    out["ts_peak"] = peak_rows.groupby("_pool", sort=False)["ts"].min()
    del work, grouped, peak_rows
    out["mean_parallel"] = np.where(out["busy"] > 0, out["weighted"] / out["busy"].where(out["busy"] > 0, 1.0),
                                    out["max_parallel"].astype(float))
    firsts = np.flatnonzero(np.append(True, last[:-1])[:len(pool)])  # each pool's first event, in pool order
    out["client_ip"] = events["client_ip"].iloc[firsts].array
    out["host"] = events["host"].iloc[firsts].array
    out = out.reset_index(drop=True)
    out = out.sort_values(["max_parallel", "connections", "client_ip", "host"],
                          ascending=[False, False, True, True], kind="stable")
    return out[list(POOL_COLUMNS)].reset_index(drop=True)
