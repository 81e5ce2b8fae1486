"""Unit tests of the columnar reassembly (``analyzer.flows.reassembly``) and of ``StreamChunk``."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.flows.reassembly import Reassembled, reassemble
from analyzer.flows.stream import StreamChunk, _run_ends, _run_ends_of_lists

NEW = np.iinfo(np.int64).min


def _ra(starts, lens, groups=None, caps=None, delivered=None, hold_after=None, ts=None, n_groups=None,
        frames=None) -> Reassembled:
    starts = np.asarray(starts, dtype=np.int64)
    lens = np.asarray(lens, dtype=np.int64)
    n = len(starts)
    groups = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    caps = lens if caps is None else np.asarray(caps, dtype=np.int64)
    ng = n_groups or (int(groups.max()) + 1 if n else 1)
    delivered = np.zeros(ng, dtype=np.int64) if delivered is None else np.asarray(delivered, dtype=np.int64)
    ts = np.arange(n, dtype=np.int64) if ts is None else np.asarray(ts, dtype=np.int64)
    frames = np.arange(n, dtype=np.int64) if frames is None else np.asarray(frames, dtype=np.int64)
    return reassemble(groups, starts, lens, caps, frames, ts, delivered, ng, hold_after)


def _pieces(r: Reassembled) -> list[tuple[int, int, int]]:
    """(start, captured end, owner row) of every piece."""
    return list(zip(r.piece_start.tolist(), r.piece_cap_end.tolist(), r.piece_row.tolist(), strict=True))


def test_in_order_segments_are_delivered_whole() -> None:
    r = _ra([0, 100, 250], [100, 150, 50])
    assert r.delivered.tolist() == [True, True, True]
    assert _pieces(r) == [(0, 100, 0), (100, 250, 1), (250, 300, 2)]
    assert r.delivered_end.tolist() == [300]
    assert r.gap_bytes.tolist() == [0]


def test_duplicates_and_retransmissions_are_dropped() -> None:
    r = _ra([0, 100, 0, 100], [100, 100, 100, 100])
    assert r.delivered.tolist() == [True, True, False, False]
    assert r.delivered_end.tolist() == [200]


def test_out_of_order_segments_are_placed_by_sequence() -> None:
    r = _ra([100, 0, 200], [100, 100, 100])
    assert _pieces(r) == [(0, 100, 1), (100, 200, 0), (200, 300, 2)]
    assert r.gap_bytes.tolist() == [0]


def test_overlap_keeps_the_earliest_capture_of_each_byte() -> None:
    r = _ra([0, 50], [100, 100])
    assert _pieces(r) == [(0, 100, 0), (100, 150, 1)]
    # a later retransmission with a lower start does not take bytes captured earlier
    r = _ra([100, 50], [100, 100], frames=[0, 1], ts=[5, 9], delivered=[50])
    assert [(p, t) for p, t in zip(_pieces(r), r.piece_ts.tolist(), strict=True)] == [
        ((50, 100, 1), 9), ((100, 200, 0), 5)]


def test_retransmission_collapsing_several_segments_keeps_their_times() -> None:
    # originals [0,100) [100,200) [200,300) at t=1..3, then one retransmission [0,300) at t=9
    r = _ra([0, 100, 200, 0], [100, 100, 100, 300], ts=[1, 2, 3, 9])
    assert r.piece_ts.tolist() == [1, 2, 3]
    assert r.delivered.tolist() == [True, True, True, False]
    # with the middle original missing, the retransmission fills exactly the hole
    r = _ra([0, 200, 0], [100, 100, 300], ts=[1, 3, 9])
    assert _pieces(r) == [(0, 100, 0), (100, 200, 2), (200, 300, 1)]
    assert r.gap_bytes.tolist() == [0]


def test_hole_is_a_counted_gap_never_filled() -> None:
    r = _ra([0, 300], [100, 100])
    assert _pieces(r) == [(0, 100, 0), (300, 400, 1)]
    assert r.gap_bytes.tolist() == [200]
    assert r.gap_count.tolist() == [1]
    assert r.delivered_end.tolist() == [400]


def test_recent_hole_is_held_for_the_next_chunk() -> None:
    r = _ra([0, 300, 400], [100, 100, 100], ts=[0, 10, 11], hold_after=10)
    assert r.held.tolist() == [False, True, True]
    assert r.delivered.tolist() == [True, False, False]
    assert r.delivered_end.tolist() == [100]
    # the next chunk brings the missing bytes: with the held segments, the stream is complete
    r2 = _ra([100, 300, 400], [200, 100, 100], delivered=[100])
    assert r2.delivered.all() and r2.gap_bytes.tolist() == [0] and r2.delivered_end.tolist() == [500]


def test_truncated_payload_tail_is_a_gap() -> None:
    r = _ra([0, 100], [100, 100], caps=[100, 40])
    assert _pieces(r) == [(0, 100, 0), (100, 140, 1)]
    assert r.gap_bytes.tolist() == [60]
    assert r.tail_bytes.tolist() == [60]
    assert r.gap_count.tolist() == [0]


def test_groups_are_independent_and_new_groups_start_at_their_first_byte() -> None:
    r = _ra([5000, 5100, 0, 10], [100, 100, 10, 10], groups=[1, 1, 0, 0], delivered=[0, NEW])
    assert r.delivered_end.tolist() == [20, 5200]
    assert r.gap_bytes.tolist() == [0, 0]
    assert r.piece_group.tolist() == [0, 0, 1, 1]


def test_bytes_delivered_in_an_earlier_chunk_are_retransmissions() -> None:
    r = _ra([0, 100], [100, 100], delivered=[150])
    assert r.delivered.tolist() == [False, True]
    assert _pieces(r) == [(150, 200, 1)]


def test_stream_chunk_reads_across_pieces_and_stops_at_gaps() -> None:
    buf = np.frombuffer(b"HELLOWORLD--tail", dtype=np.uint8)
    chunk = StreamChunk(
        start=np.array([0, 5, 20], dtype=np.int64), end=np.array([5, 10, 24], dtype=np.int64),
        src=np.zeros(3, dtype=np.int8), buf_off=np.array([0, 5, 12], dtype=np.int64),
        ts_ns=np.array([1, 2, 3], dtype=np.int64), done_ns=np.array([1, 2, 3], dtype=np.int64),
        buffers=(buf,),
    )
    assert chunk.read(0, 100) == b"HELLOWORLD"
    assert chunk.read(3, 4) == b"LOWO"
    assert chunk.read(12, 4) == b""  # in the gap
    assert chunk.contiguous_end(2) == 10
    assert chunk.next_data(12) == 20
    assert chunk.read(21, 10) == b"ail"
    assert chunk.gap_before.tolist() == [0, 0, 10]
    assert chunk.ts_at(7) == 2 and chunk.done_at(10) == 2 and chunk.done_at(24) == 3


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 5)), min_size=1, max_size=150))
def test_run_ends_of_a_few_pieces_equal_the_vectorized_ones(pieces: list[tuple[int, int]]) -> None:
    """``contiguous_end`` walks lists for up to SMALL_CHUNK_PIECES pieces and numpy beyond: same runs."""
    starts, ends, pos = [], [], 0
    for gap, size in pieces:
        pos += gap
        starts.append(pos)
        pos += size
        ends.append(pos)
    assert _run_ends_of_lists(starts, ends) == _run_ends(np.array(starts), np.array(ends)).tolist()
    chunk = StreamChunk(np.array(starts), np.array(ends), np.zeros(len(starts), dtype=np.int8),
                        np.array(starts), np.array(starts), np.array(starts), (np.zeros(pos, dtype=np.uint8),))
    for offset in range(pos + 1):
        run = next((e for s, e in zip(starts, _run_ends(np.array(starts), np.array(ends)).tolist(), strict=True)
                    if s <= offset < e), None)
        inside = any(s <= offset < e for s, e in zip(starts, ends, strict=True))
        assert chunk.contiguous_end(offset) == (run if inside else offset)
