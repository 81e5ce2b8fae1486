"""Later copies of stream bytes compared with the first copy (anomaly ``overlap_conflict``).

Owns which byte ranges of which later segments are compared, and with what: the first copy captured, which
reassembly keeps (Wireshark's "overlapping data with different contents", ``tcp.segment.overlap.conflict``;
Zeek's ``rexmit_inconsistency``). Works on the arrays of one chunk of packets and on the bytes kept from
earlier chunks; it knows stream offsets, rows and packet buffers, nothing about connection objects or
protocols (``connections.ConnectionTracker`` calls it and keeps the bytes in its ``Direction`` state).

The rule, Zeek's: a later copy is compared with the first copy over the bytes the receiver had not yet
acknowledged when the later copy was captured. Once the receiver acknowledged bytes, a later copy cannot
change what it received (it drops the copy); before that, either copy may be what it kept, which is the
ambiguity an evasion relies on. A 1-byte later copy is not compared (a keep-alive probe repeats the last
byte with any value).

Copies in one chunk are compared directly. For copies of bytes delivered in an earlier chunk, each
direction keeps, at a chunk's end, the last of its delivered bytes that the receiver has not acknowledged
(``keep_plan``): at most ``MAX_KEPT_BYTES_PER_STREAM`` of them (the most recent), and at most
``MAX_KEPT_BYTES`` over all directions (beyond it a direction keeps less, counted by the caller as
``overlap_check_limit``). Within those bounds the anomaly does not depend on where chunks end. Without
any ACK in the capture (one direction captured) every delivered byte counts as unacknowledged.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from analyzer.flows.stream import gather_ranges

I64 = npt.NDArray[np.int64]
NO_DATA = np.iinfo(np.int64).min

#: Unacknowledged bytes a direction keeps across a chunk's end for comparison with later copies (the most
#: recent ones): a megabyte covers the bytes in flight of a fast transfer at a chunk's end.
MAX_KEPT_BYTES_PER_STREAM = 1 << 20
#: Unacknowledged bytes kept over all directions at once (bounds that memory; anomaly ``overlap_check_limit``
#: on a connection whose direction kept less because of it).
MAX_KEPT_BYTES = 64 << 20
COMPARE_BYTES = 1 << 22  # bytes of copies compared at once (bounds that memory)


def acked_before_rows(rows: I64, groups: I64, order_g: I64, g_sorted: I64, ack_val: I64, acked_before: I64) -> I64:
    """Per query (chunk row ``rows[i]`` of group ``groups[i]``): the highest stream offset of that group the
    receiver acknowledged before the row was captured: by earlier chunks (``acked_before[g]``) or by the
    ACKs of the other direction (group ``g ^ 1``) in earlier rows of this chunk.

    ``order_g``: the chunk's rows ordered by (group, capture order), ``g_sorted`` their groups;
    ``ack_val[r]``: the offset of group ``group(r) ^ 1`` that row ``r`` acknowledges (``NO_DATA``: none).
    The rows of one connection are in capture order in the chunk, so a row index orders them in time.
    """
    if not len(rows):
        return np.zeros(0, dtype=np.int64)
    n = len(order_g)
    running = pd.Series(ack_val[order_g]).groupby(g_sorted).cummax().to_numpy(dtype=np.int64)
    key = g_sorted * n + order_g  # increasing: by group, then row
    other = groups ^ 1
    at = np.searchsorted(key, other * n + rows) - 1  # the other direction's last row before the query row
    at_ok = np.maximum(at, 0)
    found = (at >= 0) & (g_sorted[at_ok] == other)
    return np.maximum(acked_before[groups], np.where(found, running[at_ok], NO_DATA))


def count_conflicts(groups: I64, rows: I64, lens: I64, ref_src: I64, ref_at: I64, copy_src: I64, copy_at: I64,
                    buffers: tuple[npt.NDArray[np.uint8], ...], n_groups: int) -> tuple[I64, I64]:
    """Compare comparison ``i``'s ``lens[i]`` bytes at ``buffers[ref_src[i]][ref_at[i]:]`` (the first copy)
    with those at ``buffers[copy_src[i]][copy_at[i]:]`` (the later copy, chunk row ``rows[i]``, of group
    ``groups[i]``). Returns per group: the later copies (rows) with any differing byte, and the differing
    bytes. Vectorized, in slices of at most ``COMPARE_BYTES`` bytes."""
    conflicts = np.zeros(n_groups, dtype=np.int64)
    differing = np.zeros(n_groups, dtype=np.int64)
    if not len(lens):
        return conflicts, differing
    diff_per = np.zeros(len(lens), dtype=np.int64)
    bounds = np.cumsum(lens)
    a = 0
    while a < len(lens):
        base = bounds[a - 1] if a else 0
        b = max(int(np.searchsorted(bounds, base + COMPARE_BYTES, side="right")), a + 1)
        ln = lens[a:b]
        first = gather_ranges(buffers, ref_src[a:b], ref_at[a:b], ln)
        later = gather_ranges(buffers, copy_src[a:b], copy_at[a:b], ln)
        diff_per[a:b] = np.add.reduceat((first != later).astype(np.int64), np.cumsum(ln) - ln)
        a = b
    bad = np.nonzero(diff_per)[0]
    if len(bad):
        np.add.at(differing, groups[bad], diff_per[bad])
        _, first_of_row = np.unique(rows[bad], return_index=True)  # one count per later segment
        np.add.at(conflicts, groups[bad][first_of_row], 1)
    return conflicts, differing


def keep_plan(piece_group: I64, piece_start: I64, piece_end: I64, bounds: I64, acked: I64, kept_from: I64,
              kept_end: I64) -> tuple[I64, I64, I64]:
    """Which bytes each direction keeps at a chunk's end: ``(lo, hi, first_piece)`` per group, ``[lo, hi)``
    (empty when ``lo >= hi``) of which the part from ``piece_start[first_piece]`` on comes from this chunk's
    pieces and the part below it from the bytes kept before (``[kept_from, kept_end)``).

    Pieces (captured bytes delivered in this chunk) are sorted by (group, start), ``bounds`` their group
    boundaries. Kept: the last contiguous run of delivered bytes (a gap ends it), above what the receiver
    acknowledged (``acked``), at most ``MAX_KEPT_BYTES_PER_STREAM``; a group without pieces keeps what it
    kept, less what was acknowledged since."""
    n_groups = len(bounds) - 1
    first_piece = np.full(n_groups, -1, dtype=np.int64)
    lo = np.maximum(kept_from, acked)
    hi = kept_end.copy()
    fed = np.flatnonzero(bounds[1:] > bounds[:-1])
    if len(fed):
        n = len(piece_group)
        idx = np.arange(n)
        breaks = np.ones(n, dtype=bool)  # a piece that does not continue the one before it in its group
        breaks[1:] = (piece_group[1:] != piece_group[:-1]) | (piece_start[1:] != piece_end[:-1])
        run_first = np.maximum.accumulate(np.where(breaks, idx, 0))
        last = bounds[fed + 1] - 1
        run0 = run_first[last]  # first piece of the group's last run
        hi[fed] = piece_end[last]
        joins_kept = (run0 == bounds[fed]) & (piece_start[run0] == kept_end[fed]) & (kept_end[fed] > kept_from[fed])
        floor = np.where(joins_kept, kept_from[fed], piece_start[run0])
        lo[fed] = np.maximum.reduce([floor, acked[fed], hi[fed] - MAX_KEPT_BYTES_PER_STREAM])
        # per group, the first piece of its last run that carries a byte at or above lo
        run0_of = np.full(n_groups, n, dtype=np.int64)
        run0_of[fed] = run0
        wanted = (idx >= run0_of[piece_group]) & (piece_end > lo[piece_group])
        first = np.full(n_groups, n, dtype=np.int64)
        np.minimum.at(first, piece_group[wanted], idx[wanted])
        first_piece[fed] = np.where(first[fed] < n, first[fed], -1)
    return lo, hi, first_piece


def kept_piece_bytes(lo: I64, first_piece: I64, piece_group: I64, piece_start: I64, piece_end: I64,
                     piece_src: npt.NDArray[np.int8], piece_at: I64, n_groups: int,
                     buffers: tuple[npt.NDArray[np.uint8], ...]) -> tuple[npt.NDArray[np.uint8], I64]:
    """The bytes ``keep_plan`` takes from this chunk's pieces, concatenated group after group, and each
    group's start in them (``starts[g]:starts[g + 1]``). ``piece_at``: where each piece's first byte is in
    ``buffers[piece_src]``."""
    n = len(piece_group)
    use = np.zeros(n, dtype=bool)
    if n:
        fp = first_piece[piece_group]
        use = (fp >= 0) & (np.arange(n) >= fp)
    sel = np.flatnonzero(use)
    g = piece_group[sel]
    frm: I64 = np.maximum(piece_start[sel], lo[g])
    lens: I64 = piece_end[sel] - frm
    starts = np.zeros(n_groups + 1, dtype=np.int64)
    np.add.at(starts, g + 1, lens)
    starts = np.cumsum(starts)
    data = gather_ranges(buffers, piece_src[sel], piece_at[sel] + (frm - piece_start[sel]), lens)
    return data, starts
