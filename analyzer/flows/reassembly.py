"""Columnar TCP stream reassembly for every direction of every connection in a chunk at once.

Input: the data segments of a chunk (one row per packet carrying payload), each tagged with its *group*
(a connection direction), its start in the direction's unwrapped relative sequence space, its length on the
wire and the bytes actually captured. Output: which segments bring new bytes, the byte *pieces* to hand to
protocol parsers (pointing into packet buffers; nothing is copied), the explicit gaps, and the segments held
back for the next chunk.

Rules (the same as Wireshark's and Zeek's reassembly, decided per byte in sequence order):
- duplicates and retransmissions of bytes already delivered are dropped: every byte comes from the
  earliest-captured segment that carries it (its arrival time is its first capture; overlapping segments
  carrying different bytes keep the first copy, as captured). The ranges that a later copy covers again
  within the chunk are returned (``overlap_*``) so that the caller, which has the bytes, can compare the
  copies (anomaly ``overlap_conflict``, ``overlaps.py``); a copy of bytes delivered in an earlier chunk is
  dropped here (the caller compares it with the bytes it kept of that chunk);
- out-of-order segments are placed by sequence number;
- a hole the receiver has not acknowledged past will be retransmitted, so when it is still open at the end
  of a chunk the segments from that hole on are *held* (returned to the caller, who copies and re-submits
  them with the next chunk), for at most a capped time; a hole the receiver acknowledged past (the capture
  missed bytes that did arrive), or older than the cap, is a *gap*: its bytes are counted as missing, never
  invented. At capture end nothing is held.
- bytes past the captured length of a truncated packet (snaplen) are a gap as well.

Everything is numpy over all segments of the chunk; Python runs per chunk, not per packet. Segmented
cumulative maxima use pandas' grouped ``cummax`` (C speed). This module knows nothing about protocols.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]


@dataclass(slots=True)
class Reassembled:
    """Result: per input row (in the caller's row order), per group, and a table of pieces.

    Pieces are sorted by (group, start) and do not overlap; each names the row (segment) whose bytes it
    carries: the earliest-captured segment covering that range.
    """

    delivered: B  # per row: carries at least one piece
    held: B  # per row: kept for the next chunk
    delivered_end: I64  # per group: stream offset delivered after this chunk
    gap_bytes: I64  # per group: bytes declared missing in this chunk (holes + truncated tails)
    gap_count: I64  # per group: number of holes declared in this chunk
    tail_bytes: I64  # per group: of gap_bytes, the bytes cut from packets by the snaplen
    piece_group: I64
    piece_start: I64
    piece_cap_end: I64  # end of the captured bytes of the piece (<= its wire end)
    piece_row: I64  # the row whose bytes the piece carries
    piece_ts: I64  # that row's capture time
    # ranges carried again by a later-captured segment of the same chunk: [start, end) of group, the row
    # whose bytes were kept (owner) and the row of the later copy (other); one entry per elementary range
    overlap_group: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    overlap_start: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    overlap_end: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    overlap_owner: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    overlap_other: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def reassemble(
    group: I64,
    start: I64,
    wire_len: npt.NDArray[np.int32] | I64,
    cap_len: npt.NDArray[np.int32] | I64,
    frame: I64,
    ts_ns: I64,
    delivered_end: I64,
    n_groups: int,
    hold_after_ns: int | None,
    final_group: B | None = None,
    pair_groups: bool = False,
    acked_through: I64 | None = None,
    hold_from_ns: I64 | None = None,
) -> Reassembled:
    """Reassemble the data rows of one chunk.

    ``group`` in ``0..n_groups-1``; ``start`` unwrapped stream offset of each row's first byte;
    ``delivered_end[g]`` the stream offset already delivered for group ``g`` before this chunk
    (``np.iinfo(np.int64).min`` for a new group: the first byte seen starts the stream);
    ``hold_after_ns``: holes whose next segment arrived at or after this time may still be filled by the
    next chunk; ``final_group[g]`` forbids holding for groups that end now. With ``pair_groups``, groups
    ``2k`` and ``2k + 1`` are the two directions of one connection and are held from the same instant;
    ``hold_from_ns[k]`` (with ``pair_groups``) holds connection ``k`` from that instant too (the caller's
    reason: a receiver acknowledged bytes not captured yet).
    """
    n = int(group.shape[0])
    wire_end = start + wire_len.astype(np.int64)
    order = np.lexsort((frame, start, group))
    g = group[order]
    s = start[order]
    e = wire_end[order]
    init = delivered_end.copy()
    new_group = init == np.iinfo(np.int64).min
    if new_group.any() and n:
        first = np.full(n_groups, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, g, s)
        init[new_group] = np.where(first[new_group] == np.iinfo(np.int64).max, 0, first[new_group])
    # exclusive running max of wire end within each group, seeded with what was delivered before
    prev = exclusive_group_max(g, e, init)
    hole = s > prev
    held_sorted = np.zeros(n, dtype=bool)
    if hold_after_ns is not None and n:
        ts_sorted = ts_ns[order]
        waitable = hole & (ts_sorted >= hold_after_ns)
        if acked_through is not None:
            waitable &= acked_through[g] <= prev
        if final_group is not None:
            waitable &= ~final_group[g]
        if waitable.any() or (pair_groups and hold_from_ns is not None):
            idx = np.nonzero(waitable)[0]
            first_idx = np.full(n_groups, n, dtype=np.int64)
            np.minimum.at(first_idx, g[idx], idx)
            held_sorted = np.arange(n) >= first_idx[g]
            if pair_groups:
                # Hold the whole connection from the first held instant on, in both directions, so that
                # its two streams are parsed in capture-time order whatever the chunking.
                big = np.iinfo(np.int64).max
                t_hold = np.full(n_groups // 2 + 1, big, dtype=np.int64)
                hs = np.nonzero(held_sorted)[0]
                np.minimum.at(t_hold, g[hs] // 2, ts_sorted[hs])
                if hold_from_ns is not None:
                    t_hold[:-1] = np.minimum(t_hold[:-1], hold_from_ns)
                # (a late copy of bytes already there brings nothing: holding it would hold the rows
                # sorted after it, captured earlier, and part a request from the response it precedes)
                late = (ts_sorted >= t_hold[g // 2]) & (e > prev)
                if final_group is not None:
                    late &= ~final_group[g]
                li = np.nonzero(late)[0]
                np.minimum.at(first_idx, g[li], li)
                held_sorted = np.arange(n) >= first_idx[g]
    delivered_sorted = (e > prev) & ~held_sorted
    gap_sorted = np.where(delivered_sorted & hole, s - prev, 0)
    held = np.zeros(n, dtype=bool)
    held[order] = held_sorted

    # Every byte comes from the earliest-captured segment that carries it (its arrival time is its first
    # capture; with overlapping different bytes the first copy wins).
    live = np.nonzero(~held)[0]
    pg, ps, pe, prow, overlaps = _earliest_owner(group, start, wire_end, frame, init, live, n_groups)
    cap_end_row = start + np.minimum(cap_len.astype(np.int64), wire_len.astype(np.int64))
    pce = np.clip(cap_end_row[prow], ps, pe)
    tail = pe - pce
    delivered = np.zeros(n, dtype=bool)
    delivered[prow] = True

    new_end = init.copy()
    if len(pe):
        np.maximum.at(new_end, pg, pe)
    gap_bytes = np.zeros(n_groups, dtype=np.int64)
    gap_count = np.zeros(n_groups, dtype=np.int64)
    tail_bytes = np.zeros(n_groups, dtype=np.int64)
    if n:
        np.add.at(gap_bytes, g, gap_sorted)
        np.add.at(gap_count, g, (gap_sorted > 0).astype(np.int64))
    if len(pe):
        np.add.at(gap_bytes, pg, tail)
        np.add.at(tail_bytes, pg, tail)
    return Reassembled(delivered, held, new_end, gap_bytes, gap_count, tail_bytes, pg, ps, pce, prow,
                       ts_ns[prow], *overlaps)


_SPAN = np.int64(1) << 42  # per-group offset range inside one chunk's search keys


def _earliest_owner(group: I64, start: I64, end: I64, frame: I64, init: I64, rows: I64, n_groups: int
                    ) -> tuple[I64, I64, I64, I64, tuple[I64, I64, I64, I64, I64]]:
    """Split each group's sequence space at every segment boundary (above ``init[g]``, what was delivered
    before) and give each elementary range to the lowest-frame segment among ``rows`` covering it.

    Returns (group, start, end, owner row) of the covered ranges, sorted by (group, start), and the
    redundant coverage: (group, start, end, owner row, other row) of each elementary range that a later
    segment covers again. Ranges no segment covers are holes and are absent. Vectorized: each segment is
    expanded over the ranges it covers (one range per segment in ordinary traffic; a retransmission that
    collapses k segments covers k).
    """
    empty = np.zeros(0, dtype=np.int64)
    no_overlap = (empty, empty, empty, empty, empty)
    if not len(rows):
        return empty, empty, empty, empty, no_overlap
    gr = group[rows]
    s_eff = np.maximum(start[rows], init[gr])
    e_r = end[rows]
    keep = e_r > s_eff
    rows, gr, s_eff, e_r = rows[keep], gr[keep], s_eff[keep], e_r[keep]
    if not len(rows):
        return empty, empty, empty, empty, no_overlap
    bg = np.concatenate([gr, gr])
    bp = np.concatenate([s_eff, e_r])
    o = np.lexsort((bp, bg))
    bg, bp = bg[o], bp[o]
    uniq = np.ones(len(bg), dtype=bool)
    uniq[1:] = (bg[1:] != bg[:-1]) | (bp[1:] != bp[:-1])
    bg, bp = bg[uniq], bp[uniq]
    gmin = np.full(n_groups, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(gmin, bg, bp)
    key = bg * _SPAN + (bp - gmin[bg])
    ks = np.searchsorted(key, gr * _SPAN + (s_eff - gmin[gr]))
    ke = np.searchsorted(key, gr * _SPAN + (e_r - gmin[gr]))
    cnt = ke - ks
    total = int(cnt.sum())
    rep = np.repeat(np.arange(len(rows)), cnt)
    k = np.repeat(ks, cnt) + (np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt))
    oo = np.lexsort((frame[rows][rep], k))
    k_sorted = k[oo]
    first = np.ones(total, dtype=bool)
    first[1:] = k_sorted[1:] != k_sorted[:-1]
    kk = k_sorted[first]
    owner = rows[rep[oo][first]]
    overlaps = no_overlap
    if len(kk) < total:  # some elementary ranges are covered more than once
        again = np.nonzero(~first)[0]
        run_first = np.maximum.accumulate(np.where(first, np.arange(total), 0))[again]
        k_again = k_sorted[again]
        overlaps = (bg[k_again], bp[k_again], bp[k_again + 1], rows[rep[oo][run_first]], rows[rep[oo][again]])
    pg, ps, pe = bg[kk], bp[kk], bp[kk + 1]
    # one piece per run of contiguous ranges with the same owner
    run_start = np.ones(len(kk), dtype=bool)
    run_start[1:] = (owner[1:] != owner[:-1]) | (pg[1:] != pg[:-1]) | (ps[1:] != pe[:-1])
    starts_i = np.nonzero(run_start)[0]
    ends_i = np.append(starts_i[1:], len(kk)) - 1
    return pg[starts_i], ps[starts_i], pe[ends_i], owner[starts_i], overlaps


def exclusive_group_max(group: I64, values: I64, seed: I64) -> I64:
    """For rows sorted by ``group``: the maximum of ``values`` over the earlier rows of the same group, and of
    ``seed[group]`` (what earlier chunks reached)."""
    n = int(group.shape[0])
    prev = np.empty(n, dtype=np.int64)
    if n == 0:
        return prev
    cm = pd.Series(values).groupby(group).cummax().to_numpy()
    prev[1:] = cm[:-1]
    first = np.ones(n, dtype=bool)
    first[1:] = group[1:] != group[:-1]
    prev[first] = seed[group[first]]
    return np.maximum(prev, seed[group])
