"""Unit tests of ``analyzer.flows.overlaps``: what the receiver had acknowledged before a copy, which bytes
each direction keeps at a chunk's end, and the comparison of copies. The whole path (copies on either side
of a chunk's end, the budget) is tested on generated captures in ``tests/hostile/test_hostile.py``."""

from __future__ import annotations

import numpy as np
import pytest

from analyzer.flows import overlaps

NO = overlaps.NO_DATA


def _a(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def test_acked_before_a_row_is_the_other_directions_last_ack_before_it() -> None:
    # one connection: rows 0..5 in capture order; group 0 (client data), group 1 (server ACKs of group 0)
    gid = _a(0, 1, 0, 1, 0, 0)
    ack_val = _a(NO, 10, NO, 25, NO, NO)  # the server's ACKs acknowledge offsets 10, then 25, of group 0
    order_g = np.lexsort((np.arange(6), gid))
    at = overlaps.acked_before_rows(_a(0, 2, 4, 5), _a(0, 0, 0, 0), order_g, gid[order_g], ack_val, _a(3, NO))
    assert at.tolist() == [3, 10, 25, 25]  # row 0: only what earlier chunks acknowledged


def test_nothing_acknowledged_in_a_one_sided_capture() -> None:
    gid = _a(0, 0)
    order_g = np.lexsort((np.arange(2), gid))
    at = overlaps.acked_before_rows(_a(0, 1), _a(0, 0), order_g, gid[order_g], _a(NO, NO), _a(NO, NO))
    assert at.tolist() == [NO, NO]


def _plan(starts: list[int], ends: list[int], acked: int, kept: tuple[int, int] = (0, 0)
          ) -> tuple[int, int, int]:
    """``keep_plan`` for one group of pieces: (lo, hi, first piece)."""
    g = np.zeros(len(starts), dtype=np.int64)
    bounds = np.searchsorted(g, np.arange(2))
    lo, hi, first = overlaps.keep_plan(g, _a(*starts), _a(*ends), bounds, _a(acked), _a(kept[0]), _a(kept[1]))
    return int(lo[0]), int(hi[0]), int(first[0])


def test_a_direction_keeps_its_unacknowledged_bytes_after_the_last_gap() -> None:
    # delivered [0, 20) and, after a gap, [25, 30); the receiver acknowledged up to 27
    assert _plan([0, 10, 25], [10, 20, 30], acked=27) == (27, 30, 2)
    # nothing acknowledged: from the gap on (bytes before a gap cannot be compared as one run)
    assert _plan([0, 10, 25], [10, 20, 30], acked=NO) == (25, 30, 2)
    # everything acknowledged: nothing kept
    lo, hi, _ = _plan([0, 10], [10, 20], acked=20)
    assert lo >= hi


def test_kept_bytes_continue_into_the_next_chunk_when_no_gap_separates_them() -> None:
    # [0, 10) kept from before, this chunk delivered [10, 20), acknowledged up to 4
    assert _plan([10], [20], acked=4, kept=(0, 10)) == (4, 20, 0)
    # a gap between them: the old bytes are let go
    assert _plan([12], [20], acked=4, kept=(0, 10)) == (12, 20, 0)
    # no piece in this chunk: what was kept, less what was acknowledged since
    g = np.zeros(0, dtype=np.int64)
    lo, hi, first = overlaps.keep_plan(g, g, g, _a(0, 0), _a(6), _a(0), _a(10))
    assert (lo.tolist(), hi.tolist(), first.tolist()) == ([6], [10], [-1])


def test_a_direction_keeps_at_most_its_last_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overlaps, "MAX_KEPT_BYTES_PER_STREAM", 5)
    assert _plan([0, 10], [10, 20], acked=NO) == (15, 20, 1)


def test_kept_piece_bytes_are_gathered_from_the_plan() -> None:
    buf = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    # group 0: pieces [0, 4) at buf[0:4] and [4, 8) at buf[10:14]; group 1: piece [100, 103) at buf[20:23]
    pg, ps, pe, at = _a(0, 0, 1), _a(0, 4, 100), _a(4, 8, 103), _a(0, 10, 20)
    bounds = np.searchsorted(pg, np.arange(3))
    lo, hi, first = overlaps.keep_plan(pg, ps, pe, bounds, _a(2, 101), _a(0, 0), _a(0, 0))
    assert lo.tolist() == [2, 101] and hi.tolist() == [8, 103] and first.tolist() == [0, 2]
    data, starts = overlaps.kept_piece_bytes(lo, first, pg, ps, pe, np.zeros(3, dtype=np.int8), at, 2, (buf,))
    assert data.tobytes()[starts[0]:starts[1]] == b"cdklmn"
    assert data.tobytes()[starts[1]:starts[2]] == b"vw"


def test_conflicts_count_each_later_copy_once_and_every_differing_byte() -> None:
    first = np.frombuffer(b"GET /first", dtype=np.uint8)
    later = np.frombuffer(b"GET /evil!GET /first", dtype=np.uint8)
    # row 7 compares two ranges with the first copy (the second differs), row 8 one range (equal)
    conflicts, differing = overlaps.count_conflicts(
        groups=_a(0, 0, 1), rows=_a(7, 7, 8), lens=_a(5, 5, 10), ref_src=_a(0, 0, 0), ref_at=_a(0, 5, 0),
        copy_src=_a(1, 1, 1), copy_at=_a(0, 5, 10), buffers=(first, later), n_groups=2)
    assert conflicts.tolist() == [1, 0]
    assert differing.tolist() == [sum(a != b for a, b in zip(b"first", b"evil!", strict=True)), 0]
