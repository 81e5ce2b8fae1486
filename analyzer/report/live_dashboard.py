"""The live terminal dashboard of ``analyzer live``: reuse as it happens, refreshed about once a second.

This module owns the dashboard's figures and their rendering with rich: connections open, closing and idle,
new connections per second, requests per connection and the reuse ratio, handshake time, top hosts, and the
capture's own health (packets per second, kernel and own drops). It reads a running
``analyzer.pipeline.Session`` (its tracker's open connections and the rows of connections finished since
the last refresh) and never changes it; it knows nothing of sockets, files or packets.

Memory stays bounded: finished connections are kept only as small tuples inside a rolling window of
``WINDOW_S`` seconds (at most ``WINDOW_MAX_CONNECTIONS``), and per-second rates in a deque of the same span.

Definitions (the window is the last ``WINDOW_S`` seconds of wall-clock time):

- **open**: connections the tracker holds that saw neither FIN from both sides nor RST; **closing**: closed
  but still held (the tracker finishes a closed connection after 30 s of capture time without packets);
  **idle**: open connections without a packet for ``IDLE_S`` seconds of capture time.
- **new connections/s**: connections the tracker started (SYN or mid-stream) per second, over the window.
- **requests per connection**, **reuse ratio** (transactions with ``trans_depth`` > 1 / transactions) and
  **handshake** (median and 95th percentile of ``handshake_rtt_ms``): over the connections finished in the
  window and the closed ones the tracker still holds (their requests counted from their handlers).
  **requests on open connections**: the requests seen so far on connections still open, counted from their
  protocol handlers (HTTP/1 exchanges, HTTP/2 streams; 0 for encrypted TLS without keys).
- **top hosts**: ``host`` of the transactions of connections finished in the window, by request count.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from analyzer.pipeline import Session
from analyzer.tables import TRANSACTION_COLUMNS

WINDOW_S: Final = 60.0  # rolling window of the dashboard's figures
WINDOW_MAX_CONNECTIONS: Final = 100_000  # finished connections kept in the window at most
IDLE_S: Final = 1.0  # an open connection without a packet for this long (capture time) counts as idle
TOP_HOSTS: Final = 8
_HOST: Final = list(TRANSACTION_COLUMNS).index("host")
_UID: Final = list(TRANSACTION_COLUMNS).index("uid")


@dataclass(frozen=True, slots=True)
class _Finished:
    wall_s: float
    requests: int
    handshake_ms: float | None
    hosts: tuple[str, ...]


@dataclass(slots=True)
class CaptureHealth:
    """What the capture itself reports (given by the caller each refresh)."""

    packets: int = 0
    kernel_drops: int = 0
    own_drops: int = 0
    iface: str = ""


class DashboardState:
    """The figures, updated from a session; ``render()`` gives the rich renderable."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self.finished: deque[_Finished] = deque(maxlen=WINDOW_MAX_CONNECTIONS)
        self.rates: deque[tuple[float, int, int]] = deque()  # (wall s, connections started, packets) samples
        self._conns_seen = 0  # finished connection rows already taken (forgotten ones included)
        self._tx_seen = 0
        self.figures: dict[str, Any] = {}
        self.started = time.monotonic()

    def update(self, session: Session, health: CaptureHealth, now_s: float | None = None) -> dict[str, Any]:
        """Take what changed in ``session`` since the last call; returns the figures."""
        now = time.monotonic() if now_s is None else now_s
        self._take_finished(session, now)
        while self.finished and self.finished[0].wall_s < now - self.window_s:
            self.finished.popleft()
        tracker = session.tracker
        started = tracker.next_serial if tracker is not None else 0
        self.rates.append((now, started, health.packets))
        while len(self.rates) > 2 and self.rates[0][0] < now - self.window_s:
            self.rates.popleft()
        t0, c0, p0 = self.rates[0]
        span = max(now - t0, 1e-9)
        open_n = closing = idle = open_requests = 0
        handshakes: list[float] = [f.handshake_ms for f in self.finished if f.handshake_ms is not None]
        closed_requests: list[int] = []  # closed connections the tracker still holds count as finished
        if tracker is not None:
            last_ns = session.ts_last or 0
            for conn in tracker.active.values():
                if conn.closed:
                    closing += 1
                    closed_requests.append(requests_so_far(conn.handler))
                    if conn.irtt_ns is not None:
                        handshakes.append(conn.irtt_ns / 1e6)
                    continue
                open_n += 1
                open_requests += requests_so_far(conn.handler)
                if last_ns - conn.ts_end_ns > IDLE_S * 1e9:
                    idle += 1
        requests = sum(f.requests for f in self.finished) + sum(closed_requests)
        conns = len(self.finished) + len(closed_requests)
        carried = sum(1 for f in self.finished if f.requests) + sum(1 for r in closed_requests if r)
        hosts: Counter[str] = Counter()
        for f in self.finished:
            hosts.update(f.hosts)
        self.figures = {
            "iface": health.iface,
            "elapsed_s": now - self.started,
            "packets": health.packets,
            "packets_per_s": (health.packets - p0) / span if len(self.rates) > 1 else 0.0,
            "kernel_drops": health.kernel_drops,
            "own_drops": health.own_drops,
            "open": open_n,
            "closing": closing,
            "idle": idle,
            "new_per_s": (started - c0) / span if len(self.rates) > 1 else 0.0,
            "connections_started": started,
            "finished_window": len(self.finished),
            "finished_total": self._conns_seen,
            "requests_per_connection": requests / conns if conns else None,
            "reuse_ratio": (requests - carried) / requests if requests else None,
            "open_requests": open_requests,
            "handshake_median_ms": float(np.median(handshakes)) if handshakes else None,
            "handshake_p95_ms": float(np.percentile(handshakes, 95)) if handshakes else None,
            "top_hosts": hosts.most_common(TOP_HOSTS),
        }
        return self.figures

    def _take_finished(self, session: Session, now: float) -> None:
        """The rows appended since the last call (``forget_finished`` drops a prefix: offsets account for it)."""
        total = session.forgotten_connections + len(session.conn_rows)
        new_rows = session.conn_rows[max(len(session.conn_rows) - (total - self._conns_seen), 0):]
        self._conns_seen = total
        tx_total = session.forgotten_transactions + len(session.tx_rows)
        new_tx = session.tx_rows[max(len(session.tx_rows) - (tx_total - self._tx_seen), 0):]
        self._tx_seen = tx_total
        hosts: dict[str, list[str]] = {}
        for tx in new_tx:
            host = tx[_HOST]
            if isinstance(host, str) and host:
                hosts.setdefault(tx[_UID], []).append(host)
        for row in new_rows:
            hs = row.get("handshake_rtt_ms")
            self.finished.append(_Finished(now, int(row.get("requests") or 0),
                                           float(hs) if hs is not None and hs == hs else None,
                                           tuple(hosts.get(row["uid"], ()))))

    def render(self) -> Group:
        f = self.figures
        head = Text.assemble(
            ("analyzer live ", "bold"), (f"on {f.get('iface', '')}  ", "cyan"),
            f"{f.get('elapsed_s', 0):.0f} s, {f.get('packets', 0):,} packets ({f.get('packets_per_s', 0):,.0f}/s)  ",
            (f"kernel drops {f.get('kernel_drops', 0):,}  own drops {f.get('own_drops', 0):,}",
             "red" if f.get("kernel_drops") or f.get("own_drops") else "green"),
        )
        t = Table(show_header=False, box=None, padding=(0, 2))
        t.add_column(style="dim")
        t.add_column(justify="right")
        t.add_column(style="dim")
        t.add_column(justify="right")
        t.add_row("connections open", _n(f.get("open")), "new connections/s", _x(f.get("new_per_s"), 1))
        t.add_row("idle (no packet ≥ 1 s)", _n(f.get("idle")), "closing", _n(f.get("closing")))
        t.add_row("requests/connection", _x(f.get("requests_per_connection"), 2), "reuse ratio",
                  _x(f.get("reuse_ratio"), 2))
        t.add_row("requests on open conns", _n(f.get("open_requests")), "finished (window / total)",
                  f"{_n(f.get('finished_window'))} / {_n(f.get('finished_total'))}")
        t.add_row("handshake median ms", _x(f.get("handshake_median_ms"), 3), "handshake p95 ms",
                  _x(f.get("handshake_p95_ms"), 3))
        hosts = Table(title="top hosts", title_justify="left", box=None, min_width=40)
        hosts.add_column("host")
        hosts.add_column("requests", justify="right")
        for host, count in f.get("top_hosts", []):
            hosts.add_row(Text(host), f"{count:,}")  # Text: capture strings are never markup
        return Group(head, t, hosts, Text(f"figures over the last {self.window_s:.0f} s · Ctrl-C stops",
                                          style="dim"))

    def line(self) -> str:
        """One plain line (logs, non-terminals)."""
        f = self.figures
        return (f"live {f.get('iface', '')}: {f.get('packets', 0)} packets, {f.get('open', 0)} open, "
                f"{_x(f.get('new_per_s'), 1)} new/s, reuse ratio {_x(f.get('reuse_ratio'), 2)}, "
                f"drops kernel {f.get('kernel_drops', 0)} own {f.get('own_drops', 0)}")


class LiveDashboard:
    """A rich ``Live`` display on a terminal; elsewhere a plain line every ``line_every_s`` seconds."""

    def __init__(self, console: Console, line_every_s: float = 10.0) -> None:
        self.console = console
        self.state = DashboardState()
        self.line_every_s = line_every_s
        self._live: Live | None = None
        self._last_line = time.monotonic()

    def __enter__(self) -> LiveDashboard:
        if self.console.is_terminal:
            self._live = Live(self.state.render(), console=self.console, auto_refresh=False, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def refresh(self, session: Session, health: CaptureHealth) -> None:
        self.state.update(session, health)
        if self._live is not None:
            self._live.update(self.state.render(), refresh=True)
        elif time.monotonic() - self._last_line >= self.line_every_s:
            self._last_line = time.monotonic()
            self.console.print(self.state.line(), markup=False, highlight=False)


def requests_so_far(handler: Any) -> int:
    """Requests seen so far on a connection still open, from its protocol handler: HTTP/1 exchanges and
    HTTP/2 streams, packed ones included (``exchanges_seen``), the rows of a sealed handler; 0 otherwise
    (TLS without keys: estimated exchanges are only known when the connection ends). For display only."""
    inner = getattr(handler, "inner", handler)
    inner = getattr(inner, "inner", inner) if not hasattr(inner, "exchanges") else inner  # decrypted TLS
    seen = getattr(inner, "exchanges_seen", None)
    if isinstance(seen, int):
        return seen
    rows = getattr(inner, "rows", None)
    if rows is not None:
        try:
            return len(rows)
        except TypeError:
            return 0
    return 0


def _n(value: Any) -> str:
    return "–" if value is None else f"{int(value):,}"


def _x(value: Any, digits: int) -> str:
    return "–" if value is None else f"{float(value):,.{digits}f}"
