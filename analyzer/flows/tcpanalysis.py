"""TCP sequence analysis of finished connections: loss classes, RTT samples, flights, warmth.

The connection tracker keeps, per active connection, one compact row per captured packet (``SegmentLog``:
direction, time, flags, unwrapped sequence and acknowledgment offsets, window, bytes in flight). When
connections finish, their rows come out of the log in capture order and ``analyze`` works on all of them at
once with numpy (sorts, running maxima and searches: never a Python loop over packets). It knows TCP and
stream offsets; what a response is comes from the caller as byte ranges of the server's stream.

Definitions (per packet, as Wireshark's ``tcp_analyze_sequence_number`` in packet-tcp.c, which the tests
compare against tshark 4.0 frame by frame):
- *keep-alive*: 0 or 1 byte one below the highest sequence number sent (SYN/FIN/RST never);
- *duplicate ACK*: no payload, same window (non-zero), same ACK and sequence number as the previous packet
  of that direction, no SYN/FIN/RST, and not the answer to a keep-alive;
- a segment carrying data, SYN or FIN (not a keep-alive) is, in this order: a *spurious retransmission*
  when all of its data was already acknowledged; else, when it starts below the highest sequence number
  sent (a segment of 2+ bytes starting one below, after a possible zero-window probe, does not count): a
  *fast retransmission* (≥ 2 duplicate ACKs of that sequence number from the receiver, the last less than
  20 ms before), *out of order* (less than the handshake RTT — or 3 ms — after the highest segment, and not
  ending where it did), else a *retransmission*. ``retransmissions`` counts the three retransmission kinds (Wireshark's
  ``tcp.analysis.retransmission``), not out-of-order segments nor keep-alives;
- *zero window*: window 0 without SYN/FIN/RST; *window full*: a data segment reaching exactly the right
  edge of the receiver's advertised window (window scaling from the SYNs; unknown without them).

Round trips and flights (ours; Wireshark has no such field):
- *RTT sample* (``rtt_*_ms``): a data segment of the server and the first client ACK that acknowledges
  exactly its end (as Wireshark's ``tcp.analysis.ack_rtt``), with Karn's rule: no sample when the segment
  is itself resent data or any segment of that direction was resent between it and the ACK. It measures
  capture point → client → capture point: the path RTT when captured at the server, the client's ACK delay
  when captured at the client (see ``capture_point``; ``handshake_rtt_ms`` is the full RTT anywhere).
- *flight* (round) of a response: the data segments sent between ACK clocks. The first new-data segment
  of a response opens round 1; a later new-data segment opens the next round when an ACK that
  acknowledges data of the current round had already reached the sender: it was captured at least half
  the capture-point-to-sender round trip (``syn_to_synack_ms`` for the server) earlier. At the server this
  is "after that ACK in capture order"; at the client it keeps the tail of a burst in its round. In slow
  start flights double; with the pipe full they stay the same. Retransmitted segments belong to the round
  in which they were sent.
- ``initial_window_bytes``: bytes of the server's first flight on a connection that started with a SYN
  (tcptrace's initial window: data sent before the first ACK of data, with the causal rule above).
- *warmth* of a response: ``cold`` on the first transaction of a connection opened in the capture;
  ``cooled`` when the server had sent nothing for longer than its retransmission timeout before the
  response (Linux then restarts slow start, ``tcp_slow_start_after_idle``; the RTO is estimated as Linux
  computes it for a steady path: RTT + ``RTO_MIN_MS``); ``warm`` otherwise; unknown (null) on a
  connection seen mid-stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from analyzer.flows.packets import FIN, RST, SYN

I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

NO_VALUE = np.iinfo(np.int64).min
FAST_RTX_WINDOW_NS = 20_000_000  # Wireshark: the retransmission follows the last duplicate ACK within 20 ms
DEFAULT_OOO_NS = 3_000_000  # Wireshark's out-of-order threshold when the handshake RTT is unknown
RTO_MIN_MS = 200.0  # Linux TCP_RTO_MIN: a steady path's RTO is about RTT + 200 ms
MAX_LOG_CHUNKS = 64  # remnants of chunks kept apart in the segment log before they are merged

LOG_DTYPES: dict[str, type] = {
    "serial": np.int64,  # connection serial number (tracker-wide)
    "lo": np.bool_,  # sent by the canonical "lo" endpoint (the client is decided later)
    "ts": np.int64,
    "frame": np.int64,  # frame number in the capture (as Wireshark counts)
    "flags": np.uint16,
    "seq": np.int64,  # unwrapped offset of the first sequence number (the SYN is at -1)
    "seglen": np.int64,  # payload bytes on the wire
    "ack": np.int64,  # acknowledged offset in the other direction's stream; NO_VALUE without ACK
    "ack_raw": np.int64,  # the 32-bit ACK number as sent (-1 without ACK): compared as Wireshark does
    "win": np.int64,  # raw (unscaled) window
    "wscale": np.int8,  # window scale option of a SYN (-1: none)
    "bif": np.int64,  # bytes in flight after a data segment (-1: unknown or not data)
    "tsval": np.int64,  # timestamps option (RFC 7323), -1 without
    "tsecr": np.int64,
}


class SegmentLog:
    """Per-packet rows of the connections still open, in capture order per connection.

    Memory follows the packets of active connections: rows leave with ``pop`` when their connection
    finishes."""

    def __init__(self) -> None:
        self._chunks: list[dict[str, np.ndarray]] = []
        self.rows = 0

    def append(self, cols: dict[str, np.ndarray]) -> None:
        n = len(cols["serial"])
        if n:
            self._chunks.append({k: np.asarray(cols[k], dtype=t) for k, t in LOG_DTYPES.items()})
            self.rows += n

    def discard(self, serial: int, lo: bool) -> int:
        """Forget the rows one endpoint of a connection sent so far (its sequence space was abandoned);
        returns how many. Each chunk with such rows is replaced by its remnant at once (as ``pop``)."""
        dropped = 0
        for i, ch in enumerate(self._chunks):
            drop = (ch["serial"] == serial) & (ch["lo"] == lo)
            if drop.any():
                dropped += int(np.count_nonzero(drop))
                self._chunks[i] = {k: v[~drop] for k, v in ch.items()}
        self.rows -= dropped
        return dropped

    def shift(self, serial: int, lo: bool, delta: int) -> None:
        """Add ``delta`` to the offsets into one endpoint's stream logged so far for a connection (its
        stream's base moved: a SYN/ACK came after packets of that endpoint that set it): the sequence
        offsets of the rows it sent and the acknowledgments of the rows the other endpoint sent."""
        for ch in self._chunks:
            if ch:
                mine = ch["serial"] == serial
                sent = mine & (ch["lo"] == lo)
                if sent.any():
                    ch["seq"] = np.where(sent, ch["seq"] + delta, ch["seq"])
                acked = mine & (ch["lo"] != lo) & (ch["ack"] != NO_VALUE)
                if acked.any():
                    ch["ack"] = np.where(acked, ch["ack"] + delta, ch["ack"])

    def pop(self, serials: npt.NDArray[np.int64]) -> dict[str, np.ndarray]:
        """The rows of these connections, removed from the log (capture order within each connection;
        ``analyze`` groups them). Chunk by chunk, each chunk's remnant replacing it at once, and remnants
        merged a few chunks at a time: the log is never copied whole (twenty long connections finishing
        together at a capture's end, 8,000,000 rows logged: a pop held a copy of the rest, 0.7 GB)."""
        taken: list[dict[str, np.ndarray]] = []
        chunks = self._chunks
        for i, ch in enumerate(chunks):
            take = np.isin(ch["serial"], serials)
            if not take.any():
                continue
            taken.append({k: v[take] for k, v in ch.items()})
            keep = ~take
            chunks[i] = {k: v[keep] for k, v in ch.items()} if keep.any() else {}
            del ch
        kept = [ch for ch in chunks if ch]
        del chunks
        self._chunks = []  # the remnants are held by ``kept`` only: merged, each is let go in turn
        if len(kept) > MAX_LOG_CHUNKS:  # many small remnants: merged into a quarter as many chunks
            kept = _merged(kept, MAX_LOG_CHUNKS // 4)
        self._chunks = kept
        self.rows = sum(len(ch["serial"]) for ch in kept)
        if not taken:
            return {k: np.zeros(0, dtype=t) for k, t in LOG_DTYPES.items()}
        return taken[0] if len(taken) == 1 else {k: np.concatenate([ch[k] for ch in taken]) for k in LOG_DTYPES}


def _merged(chunks: list[dict[str, np.ndarray]], groups: int) -> list[dict[str, np.ndarray]]:
    """Consecutive ``chunks`` (consumed) concatenated into about ``groups`` chunks, each group's arrays let
    go as its merged chunk is made (a chunk's columns may share one buffer: a column alone frees nothing)."""
    target = -(-sum(len(ch["serial"]) for ch in chunks) // groups)
    out: list[dict[str, np.ndarray]] = []
    group: list[dict[str, np.ndarray]] = []
    size = 0
    for i in range(len(chunks)):
        ch, chunks[i] = chunks[i], {}
        group.append(ch)
        size += len(ch["serial"])
        if size >= target or i == len(chunks) - 1:
            out.append({k: np.concatenate([g[k] for g in group]) for k in LOG_DTYPES})
            group, size = [], 0
    return out


@dataclass(slots=True)
class ConnInputs:
    """Per connection (arrays aligned with the ``serials`` given to ``analyze``)."""

    serials: I64
    client_is_lo: B
    syn_seen: B
    irtt_ns: I64  # -1 unknown
    server_rtt_ns: I64  # capture point → server → capture point (SYN → SYN/ACK); -1 unknown


@dataclass(slots=True)
class Spans:
    """Responses: byte ranges of the server's stream (``end`` -1 when unknown), one per transaction row."""

    conn: I64  # index into ConnInputs
    start: I64
    end: I64


@dataclass(slots=True)
class TcpResults:
    # per connection
    retransmissions: I64
    fast_retransmissions: I64
    spurious_retransmissions: I64
    out_of_order: I64
    dup_acks: I64
    zero_window: I64
    window_full: I64
    keep_alives: I64
    rtt_samples: I64
    rtt_min_ms: npt.NDArray[np.float64]
    rtt_median_ms: npt.NDArray[np.float64]
    rtt_max_ms: npt.NDArray[np.float64]
    initial_window_bytes: I64  # -1 unknown
    # per span
    rounds: I64  # 0: no data segment captured
    peak_bytes_in_flight: I64  # -1 unknown
    warmth: npt.NDArray[np.object_]  # "cold" | "warm" | "cooled" | None
    sender_idle_ms: npt.NDArray[np.float64]
    # flights: one row per (span, round)
    flight_span: I64
    flight_round: I64
    flight_ts_start: I64
    flight_ts_end: I64
    flight_bytes: I64
    flight_packets: I64
    flight_peak_bif: I64
    # per row of the input log, in the order ``row_order`` (input positions, grouped by connection index):
    # connection index, client→server (0) or not, retransmission, flight
    row_order: I64
    row_conn: I64
    row_retransmission: B
    row_dir: npt.NDArray[np.int8]
    row_round: I64  # 0 outside any response flight


def _segment_starts(key: np.ndarray) -> B:
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    return first


def _prev_in_group(g: I64, order: I64) -> I64:
    """For rows in capture order, the index of the previous row of the same group (-1 for the first).
    ``order``: rows sorted by group, stable."""
    n = len(g)
    prev = np.full(n, -1, dtype=np.int64)
    if n:
        gs = g[order]
        same = np.zeros(n, dtype=bool)
        same[1:] = gs[1:] == gs[:-1]
        prev[order[1:][same[1:]]] = order[:-1][same[1:]]
    return prev


def _excl_group_cummax(g: I64, v: I64, order: I64) -> tuple[I64, I64]:
    """Per row: the max of ``v`` over earlier rows (capture order) of its group, and the row that first
    reached that max (-1 / NO_VALUE when none). ``order``: rows sorted by group, stable."""
    n = len(g)
    best = np.full(n, NO_VALUE, dtype=np.int64)
    at = np.full(n, -1, dtype=np.int64)
    if not n:
        return best, at
    gs, vs = g[order], v[order]
    start = _segment_starts(gs)
    seg = np.cumsum(start) - 1
    run = pd.Series(vs).groupby(seg).cummax().to_numpy()
    prev_run = np.empty(n, dtype=np.int64)
    prev_run[1:] = run[:-1]
    prev_run[start] = NO_VALUE
    # the row that set each new maximum (strictly greater than before)
    setter = np.where(vs > prev_run, np.arange(n), -1)
    setter_run = pd.Series(setter).groupby(seg).cummax().to_numpy()
    prev_setter = np.empty(n, dtype=np.int64)
    prev_setter[1:] = setter_run[:-1]
    prev_setter[start] = -1
    best[order] = prev_run
    at[order] = np.where(prev_setter >= 0, order[np.maximum(prev_setter, 0)], -1)
    return best, at


def analyze(rows: dict[str, np.ndarray], conns: ConnInputs, spans: Spans) -> TcpResults:
    """All connections of ``conns`` at once. ``rows``: their log rows, in capture order within each
    connection (as ``SegmentLog.pop`` returns them); the per-row results follow ``row_order``."""
    n_conn = len(conns.serials)
    order_c = np.argsort(conns.serials, kind="stable")
    pos = np.searchsorted(conns.serials[order_c], rows["serial"])
    c = order_c[np.minimum(pos, max(n_conn - 1, 0))] if n_conn else np.zeros(0, np.int64)
    n = len(c)
    # rows must be grouped by connection in capture order: re-sort by connection index (stable), unless they
    # are (one connection: a copy of its log less)
    if n and not (c[1:] >= c[:-1]).all():
        by_c = np.argsort(c, kind="stable")
        r = {k: v[by_c] for k, v in rows.items()}
        c = c[by_c]
    else:
        by_c, r = np.arange(n), rows
    del pos
    d = (r["lo"] != conns.client_is_lo[c]).astype(np.int64)  # 0 client→server, 1 server→client
    g = 2 * c + d
    ts, flags, seq, seglen, ack, win = r["ts"], r["flags"].astype(np.int64), r["seq"], r["seglen"], r["ack"], r["win"]
    idx = np.arange(n)
    syn, fin, rst = (flags & SYN) != 0, (flags & FIN) != 0, (flags & RST) != 0
    sfr = syn | fin | rst
    synfin = syn.astype(np.int64) + fin.astype(np.int64)
    end = seq + seglen + synfin

    order_g = np.argsort(g, kind="stable")
    nextseq, nextseq_row = _excl_group_cummax(g, end, order_g)
    has_next = nextseq != NO_VALUE
    prev_same = _prev_in_group(g, order_g)
    has_prev = prev_same >= 0
    pp = np.maximum(prev_same, 0)
    win_prev = np.where(has_prev, win[pp], -1)
    ack_raw = r["ack_raw"]
    ack_prev = np.where(has_prev, ack_raw[pp], -2)
    # the latest row of the other direction before this one (same connection)
    rev = np.full(n, -1, dtype=np.int64)
    conn_first = np.searchsorted(c, c)
    for dd in (0, 1):
        last = np.maximum.accumulate(np.where(d == dd, idx, -1)) if n else idx
        prev_last = np.empty(n, dtype=np.int64)
        if n:
            prev_last[1:] = last[:-1]
            prev_last[0] = -1
        ok = (d == 1 - dd) & (prev_last >= conn_first)
        rev[ok] = prev_last[ok]
    del idx, last, prev_last, ok, conn_first, pp, prev_same  # (a log of a million packets: 8 MB each)
    has_rev = rev >= 0
    rv = np.maximum(rev, 0)

    keepalive = (seglen <= 1) & has_next & (seq == nextseq - 1) & ~sfr
    dup = ((seglen == 0) & (win != 0) & (win == win_prev) & has_next & (seq == nextseq) & (ack_raw == ack_prev)
           & (ack_raw >= 0) & ~sfr & ~(has_rev & keepalive[rv]))
    # duplicate ACKs counted since the ACK value last changed (per direction)
    brk = ~has_prev | (ack_raw != ack_prev)
    gs_dup = dup[order_g].astype(np.int64)
    run = np.cumsum(brk[order_g]) - 1
    cs = np.cumsum(gs_dup)
    run_start = np.searchsorted(run, run)  # first sorted row of each run
    base = cs[run_start] - gs_dup[run_start]
    dupnum = np.empty(n, dtype=np.int64)
    dupnum[order_g] = cs - base
    del brk, gs_dup, run, cs, run_start, base

    zero_window = (win == 0) & ~sfr
    # window scaling: the SYN of each direction says (Wireshark: both SYNs must carry the option)
    scale = _window_scales(c, d, syn, r["wscale"], n_conn)
    rev_scale = scale[c, 1 - d]
    rev_ack = np.where(has_rev, ack[rv], NO_VALUE)
    rev_win = np.where(has_rev, win[rv], -1)
    window_full = ((seglen > 0) & (rev_scale != -1) & has_rev & (rev_ack != NO_VALUE) & ~sfr
                   & (seq + seglen == rev_ack + (rev_win << np.maximum(rev_scale, 0))))
    del rev_scale, rev_win, win_prev, ack_prev

    cand = ((seglen > 0) | syn | fin) & ~keepalive
    # not advancing: starts below the highest sequence number sent, unless it adds more than one byte right
    # after a possible zero-window probe
    not_adv = has_next & (seq < nextseq) & ~((seglen > 1) & (seq == nextseq - 1))
    spurious = cand & (seglen > 0) & (rev_ack != NO_VALUE) & (seq + seglen <= rev_ack)
    ooo_thres = np.where(conns.irtt_ns[c] > 0, conns.irtt_ns[c], DEFAULT_OOO_NS)
    fast = (cand & ~spurious & not_adv & has_rev & (dupnum[rv] >= 2) & (rev_ack == seq)
            & (ts - ts[rv] < FAST_RTX_WINDOW_NS))
    nst = np.where(nextseq_row >= 0, ts[np.maximum(nextseq_row, 0)], NO_VALUE)
    ooo = cand & ~spurious & ~fast & not_adv & (ts - nst < ooo_thres) & (nextseq != end)
    rtx = (cand & not_adv & ~ooo) | spurious
    backwards = rtx | ooo  # resent or late: not new data
    del nst, ooo_thres, nextseq, nextseq_row, rev, rv, rev_ack, dupnum

    def per_conn(mask: B) -> I64:
        return np.bincount(c[mask], minlength=n_conn).astype(np.int64)

    rtt_samples, rtt_min, rtt_med, rtt_max = _rtt(c, d, g, order_g, ts, ack, end, seglen, backwards, n_conn)
    rounds = _flights(c, d, ts, seq, seglen, ack, r, backwards, conns, spans)
    return TcpResults(
        retransmissions=per_conn(rtx), fast_retransmissions=per_conn(fast),
        spurious_retransmissions=per_conn(spurious), out_of_order=per_conn(ooo), dup_acks=per_conn(dup),
        zero_window=per_conn(zero_window), window_full=per_conn(window_full), keep_alives=per_conn(keepalive),
        rtt_samples=rtt_samples, rtt_min_ms=rtt_min, rtt_median_ms=rtt_med, rtt_max_ms=rtt_max,
        row_order=by_c, row_conn=c, row_retransmission=rtx, row_dir=d.astype(np.int8), **rounds,
    )


def _window_scales(c: I64, d: I64, syn: B, wscale: npt.NDArray[np.int8], n_conn: int) -> I64:
    """Per (connection, direction): the window shift, -2 when scaling is off, -1 when unknown (no SYN)."""
    seen = np.zeros((n_conn, 2), dtype=bool)
    shift = np.full((n_conn, 2), -1, dtype=np.int64)
    sr = np.nonzero(syn)[0]
    if len(sr):
        seen[c[sr], d[sr]] = True
        shift[c[sr], d[sr]] = np.minimum(wscale[sr].astype(np.int64), 14)
    out = np.full((n_conn, 2), -1, dtype=np.int64)
    both = seen[:, 0] & seen[:, 1]
    scaled = both & (shift[:, 0] >= 0) & (shift[:, 1] >= 0)
    out[scaled] = shift[scaled]
    off = (seen[:, 0] & (shift[:, 0] < 0)) | (seen[:, 1] & (shift[:, 1] < 0))
    out[off] = -2
    return out


def _rtt(c: I64, d: I64, g: I64, order_g: I64, ts: I64, ack: I64, end: I64, seglen: I64, backwards: B, n_conn: int
         ) -> tuple[I64, npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Server data segments matched with the first client ACK of exactly their end (Karn's rule)."""
    n = len(c)
    samples = np.zeros(n_conn, dtype=np.int64)
    nan = np.full(n_conn, np.nan)
    if not n:
        return samples, nan, nan.copy(), nan.copy()
    data = np.nonzero((d == 1) & (seglen > 0))[0]
    # new client ACKs of server data: ACK values above every earlier one of the client
    acks_all = np.nonzero((d == 0) & (ack != NO_VALUE))[0]
    best, _ = _excl_group_cummax(g, ack, order_g)
    new_ack = acks_all[ack[acks_all] > best[acks_all]]
    if not len(data) or not len(new_ack):
        return samples, nan, nan.copy(), nan.copy()
    # resent server segments so far (Karn); rows are grouped by connection, so differences between two
    # rows of one connection count that connection's only
    bw = (backwards & (d == 1)).astype(np.int64)
    srv_rows = np.nonzero(d == 1)[0]
    cnt = np.zeros(n, dtype=np.int64)
    cnt[srv_rows] = np.cumsum(bw[srv_rows])
    last_srv = np.maximum.accumulate(np.where(d == 1, np.arange(n), -1))
    cnt_at = np.where(last_srv >= 0, cnt[np.maximum(last_srv, 0)], 0)  # at every row, server rows so far
    # events: data rows (kind 0) and new ACKs (kind 1) keyed by (connection, value, capture position)
    ev_c = np.concatenate([c[data], c[new_ack]])
    ev_v = np.concatenate([end[data], ack[new_ack]])
    ev_kind = np.concatenate([np.zeros(len(data), np.int64), np.ones(len(new_ack), np.int64)])
    ev_row = np.concatenate([data, new_ack])
    o = np.lexsort((ev_row, ev_v, ev_c))
    ev_c, ev_v, ev_kind, ev_row = ev_c[o], ev_v[o], ev_kind[o], ev_row[o]
    is_ack = np.nonzero(ev_kind[1:] == 1)[0] + 1
    prev = is_ack - 1
    match = (ev_kind[prev] == 0) & (ev_c[prev] == ev_c[is_ack]) & (ev_v[prev] == ev_v[is_ack])
    a_rows, s_rows = ev_row[is_ack][match], ev_row[prev][match]
    karn = ~backwards[s_rows] & (cnt_at[a_rows] == cnt_at[s_rows])
    a_rows, s_rows = a_rows[karn], s_rows[karn]
    if not len(a_rows):
        return samples, nan, nan.copy(), nan.copy()
    ms = (ts[a_rows] - ts[s_rows]) / 1e6
    sc = c[a_rows]
    frame = pd.DataFrame({"c": sc, "ms": ms}).groupby("c")["ms"].agg(["count", "min", "median", "max"])
    at = frame.index.to_numpy()
    samples[at] = frame["count"].to_numpy()
    mn, md, mx = nan.copy(), nan.copy(), nan.copy()
    mn[at], md[at], mx[at] = frame["min"].to_numpy(), frame["median"].to_numpy(), frame["max"].to_numpy()
    return samples, mn, md, mx


def _flights(c: I64, d: I64, ts: I64, seq: I64, seglen: I64, ack: I64, r: dict[str, np.ndarray], backwards: B,
             conns: ConnInputs, spans: Spans) -> dict[str, np.ndarray]:
    """Rounds of every response span, per-span results, flight rows and the per-row round."""
    bif = r["bif"]
    n = len(c)
    n_span = len(spans.conn)
    n_conn = len(conns.serials)
    row_round = np.zeros(n, dtype=np.int64)
    out: dict[str, np.ndarray] = {
        "rounds": np.zeros(n_span, dtype=np.int64),
        "peak_bytes_in_flight": np.full(n_span, -1, dtype=np.int64),
        "warmth": np.full(n_span, None, dtype=object),
        "sender_idle_ms": np.full(n_span, np.nan),
        "initial_window_bytes": np.full(n_conn, -1, dtype=np.int64),
        "row_round": row_round,
    }
    empty = np.zeros(0, dtype=np.int64)
    for k in ("flight_span", "flight_round", "flight_ts_start", "flight_ts_end", "flight_bytes",
              "flight_packets", "flight_peak_bif"):
        out[k] = empty
    data = np.nonzero((d == 1) & (seglen > 0))[0]
    if not n_span or not len(data):
        return out
    # each server data row → the span holding its first byte (the latest span starting at or before it)
    span_of = _latest_before(c[data], seq[data], spans.conn, spans.start, np.arange(n_span), strict=False)
    cv = np.maximum(span_of, 0)
    s_end = np.where(spans.end >= 0, spans.end, np.iinfo(np.int64).max)
    valid = (span_of >= 0) & (seq[data] < s_end[cv])
    rows = data[valid]
    sp = cv[valid]  # span index of each data row
    if not len(rows):
        return _warmth(out, spans, conns, c, d, ts, seglen, np.full(n_span, NO_VALUE, dtype=np.int64))
    # rows grouped by span, capture order within
    o = np.lexsort((rows, sp))
    rows, sp = rows[o], sp[o]
    new = ~backwards[rows]
    # causal ACK clock: the highest client ACK that had reached the server before each data row
    reach = _acked_before(c, d, ts, ack, rows, conns, r["tsval"], r["tsecr"])
    first_of_span = _segment_starts(sp)
    # the ACK level must never decrease within a span
    reach = pd.Series(reach).groupby(np.cumsum(first_of_span)).cummax().to_numpy()
    round_start = _chain_rounds(sp, rows, seq, new, reach, first_of_span)
    span_block = np.cumsum(first_of_span) - 1
    rnd = pd.Series(round_start.astype(np.int64)).groupby(span_block).cumsum().to_numpy()
    rnd = np.maximum(rnd, 1)  # resent data before the first new segment belongs to round 1
    row_round[rows] = rnd
    # flights
    key = sp * (1 << 32) + rnd
    fs = _segment_starts(key)
    f_first = np.nonzero(fs)[0]
    f_id = np.cumsum(fs) - 1
    nf = len(f_first)
    f_bytes = np.bincount(f_id, weights=seglen[rows], minlength=nf).astype(np.int64)
    f_pk = np.bincount(f_id, minlength=nf).astype(np.int64)
    f_ts0 = np.minimum.reduceat(ts[rows], f_first)
    f_ts1 = np.maximum.reduceat(ts[rows], f_first)
    f_bif = np.maximum.reduceat(bif[rows], f_first)
    f_span = sp[f_first]
    out.update(flight_span=f_span, flight_round=rnd[f_first], flight_ts_start=f_ts0, flight_ts_end=f_ts1,
               flight_bytes=f_bytes, flight_packets=f_pk, flight_peak_bif=f_bif)
    span_first = np.nonzero(first_of_span)[0]
    out["rounds"][sp[span_first]] = np.maximum.reduceat(rnd, span_first)
    out["peak_bytes_in_flight"][sp[span_first]] = np.maximum.reduceat(bif[rows], span_first)
    # initial window: the first flight of the first response on a connection opened in the capture
    first_flight = np.nonzero(rnd[f_first] == 1)[0]
    fc = spans.conn[f_span[first_flight]]
    by_ts = np.lexsort((f_ts0[first_flight], fc))
    fc_sorted = fc[by_ts]
    firsts = by_ts[_segment_starts(fc_sorted)]
    conn_of = fc[firsts]
    has_syn = conns.syn_seen[conn_of]
    out["initial_window_bytes"][conn_of[has_syn]] = f_bytes[first_flight[firsts[has_syn]]]
    # each span's first new segment
    first_ts = np.full(n_span, NO_VALUE, dtype=np.int64)
    nr, ns = rows[new], sp[new]
    fst = _segment_starts(ns)
    first_ts[ns[fst]] = ts[nr[fst]]
    del data, span_of, cv, s_end, valid, rows, sp, o, new, reach, first_of_span, round_start, span_block, rnd, key
    del fs, f_id, nr, ns, fst
    return _warmth(out, spans, conns, c, d, ts, seglen, first_ts)


def _acked_before(c: I64, d: I64, ts: I64, ack: I64, rows: I64, conns: ConnInputs, tsval: I64, tsecr: I64
                  ) -> I64:
    """For server data rows: the highest client ACK that had reached the server when the row was sent.

    With TCP timestamps on both sides the server says so itself: its TSecr echoes the client's latest
    TSval, so the ACKs captured before the row with a TSval at most that TSecr had arrived. Otherwise: the
    ACKs captured early enough (half the capture-point→server round trip before the row, and before it in
    capture order)."""
    acks = np.nonzero((d == 0) & (ack != NO_VALUE))[0]
    out = np.full(len(rows), NO_VALUE, dtype=np.int64)
    if not len(acks) or not len(rows):
        return out
    by_time = _acked_before_by_time(c, ts, ack, rows, conns, acks)
    # timestamps: per connection, only when every data row and every ACK carries the option
    n_conn = len(conns.serials)
    ts_ok = np.ones(n_conn, dtype=bool)
    np.logical_and.at(ts_ok, c[rows], tsecr[rows] >= 0)
    np.logical_and.at(ts_ok, c[acks], tsval[acks] >= 0)
    use = ts_ok[c[rows]]
    if not use.any():
        return by_time
    a = acks[ts_ok[c[acks]]]
    q = rows[use]
    # ACKs are in capture order within a connection: the running max of their TSval and ACK values lets
    # "captured before the row and TSval <= TSecr" become a search on the prefix before the row
    a_tsv = pd.Series(tsval[a]).groupby(c[a]).cummax().to_numpy()
    a_ack = pd.Series(ack[a]).groupby(c[a]).cummax().to_numpy()
    # the prefix of ACKs captured before each row
    n_before = _latest_before(c[q], q, c[a], a, np.arange(len(a)), strict=True)
    # within that prefix, the last ACK whose (running) TSval is <= the row's TSecr (running max is sorted)
    hit = _latest_before(c[q], tsecr[q], c[a], a_tsv, np.arange(len(a)), strict=False)
    best = np.minimum(hit, n_before)
    ok = (best >= 0) & (hit != NO_VALUE) & (n_before != NO_VALUE)
    res = np.full(len(q), NO_VALUE, dtype=np.int64)
    res[ok] = a_ack[best[ok]]
    by_time[use] = res
    return by_time


def _acked_before_by_time(c: I64, ts: I64, ack: I64, rows: I64, conns: ConnInputs, acks: I64) -> I64:
    lag = np.maximum(conns.server_rtt_ns, 0) // 2
    a_time = ts[acks] + lag[c[acks]]
    # events sorted by (connection, time, capture position); ACK events carry their value
    ev_c = np.concatenate([c[acks], c[rows]])
    ev_t = np.concatenate([a_time, ts[rows]])
    ev_pos = np.concatenate([acks, rows])
    ev_v = np.concatenate([ack[acks], np.full(len(rows), NO_VALUE, dtype=np.int64)])
    # (an ACK captured after the row never sorts before it: with no lag the capture position decides the
    # ties, with a lag its time is later too)
    o = np.lexsort((ev_pos, ev_t, ev_c))
    res = np.empty(len(o), dtype=np.int64)
    res[o] = pd.Series(ev_v[o]).groupby(ev_c[o]).cummax().to_numpy()
    return res[len(acks):]


def _chain_rounds(sp: I64, rows: I64, seq: I64, new: B, reach: I64, first_of_span: B) -> B:
    """Round starts: the chain from each span's first new-data row; the next round starts at the first
    later new-data row whose ACK level exceeds the start sequence of the current round's first row."""
    m = len(rows)
    start = np.zeros(m, dtype=bool)
    nd = np.nonzero(new)[0]  # positions (in rows) of new-data rows
    if not len(nd):
        start[first_of_span] = True
        return start
    nsp = sp[nd]
    nreach = reach[nd]
    nseq = seq[rows[nd]]
    # monotone global key: per span block, reach shifted into its own range
    blk_first = _segment_starts(nsp)
    blk = np.cumsum(blk_first) - 1
    b_lo = np.minimum.reduceat(nseq, np.nonzero(blk_first)[0]) - 1
    b_hi = np.maximum.reduceat(np.maximum(nreach, nseq), np.nonzero(blk_first)[0]) + 1
    width = b_hi - b_lo + 1
    off = np.concatenate([[0], np.cumsum(width)[:-1]])
    key = off[blk] + (np.clip(nreach, b_lo[blk], b_hi[blk]) - b_lo[blk])
    blk_end = np.append(np.nonzero(blk_first)[0][1:], len(nd))
    frontier = np.nonzero(blk_first)[0]
    start_nd = np.zeros(len(nd), dtype=bool)
    # one vectorized step per round, over all spans at once: as many steps as the most rounds of a response
    while len(frontier):
        start_nd[frontier] = True
        fb = blk[frontier]
        q = off[fb] + (np.clip(nseq[frontier], b_lo[fb], b_hi[fb]) - b_lo[fb])
        nxt = np.searchsorted(key, q, side="right")
        nxt = np.maximum(nxt, frontier + 1)
        ok = nxt < blk_end[fb]
        frontier = nxt[ok]
    start[nd[start_nd]] = True
    return start


def _warmth(out: dict[str, np.ndarray], spans: Spans, conns: ConnInputs, c: I64, d: I64, ts: I64, seglen: I64,
            first_ts: I64) -> dict[str, np.ndarray]:
    """cold / warm / cooled per span, from the server's idle time before the span's first new segment
    (``first_ts``, NO_VALUE when it has none)."""
    n_span = len(spans.conn)
    # the server's previous data segment before that time (any span, or none)
    data = np.nonzero((d == 1) & (seglen > 0))[0]
    idle = np.full(n_span, np.nan)
    known = first_ts != NO_VALUE
    if len(data) and known.any():
        si = np.nonzero(known)[0]
        prev_ts = _latest_before(spans.conn[si], first_ts[si], c[data], ts[data], ts[data], strict=True)
        has = prev_ts != NO_VALUE
        idle[si[has]] = (first_ts[si][has] - prev_ts[has]) / 1e6
    rtt_ms = np.where(conns.irtt_ns > 0, conns.irtt_ns / 1e6, np.nan)
    rto_ms = np.where(np.isnan(rtt_ms), RTO_MIN_MS, rtt_ms + RTO_MIN_MS)
    warmth = out["warmth"]
    order = np.lexsort((spans.start, spans.conn))
    first_span = np.zeros(n_span, dtype=bool)
    first_span[order[_segment_starts(spans.conn[order])]] = True
    syn = conns.syn_seen[spans.conn]
    warmth[first_span & syn] = "cold"
    reused = ~first_span & known
    cooled = reused & (idle > rto_ms[spans.conn])
    warmth[cooled] = "cooled"
    warmth[reused & ~cooled & ~np.isnan(idle)] = "warm"
    out["sender_idle_ms"] = np.where(first_span, np.nan, idle)
    return out


def _latest_before(q_conn: I64, q_key: I64, e_conn: I64, e_key: I64, e_val: I64, strict: bool) -> I64:
    """Per query: ``e_val`` of the last event of the same connection whose key is below the query's
    (``strict``) or at most the query's; ``NO_VALUE`` when none. "Last" in key order, ties by event order.
    One sort of queries and events together: no per-query Python."""
    nq, ne = len(q_conn), len(e_conn)
    out = np.full(nq, NO_VALUE, dtype=np.int64)
    if not nq or not ne:
        return out
    # at equal keys, strict puts queries before events; otherwise events before queries
    kind = np.concatenate([np.full(ne, 1 if strict else 0), np.full(nq, 0 if strict else 1)])
    allc = np.concatenate([e_conn, q_conn])
    allk = np.concatenate([e_key, q_key])
    seq_no = np.arange(ne + nq)
    o = np.lexsort((seq_no, kind, allk, allc))
    is_event = o < ne
    last = np.maximum.accumulate(np.where(is_event, np.arange(ne + nq), -1))
    oc = allc[o]
    first_of_conn = np.searchsorted(oc, oc)  # merged order is grouped by connection
    ok = last >= first_of_conn
    qpos = np.nonzero(~is_event)[0]
    qi = o[qpos] - ne
    hit = ok[qpos]
    out[qi[hit]] = e_val[o[last[qpos[hit]]]]
    return out
