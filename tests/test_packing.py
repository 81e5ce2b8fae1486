"""``analyzer.http.packing``: records packed into columns come back as they were, in key order, without
those taken back out; ``values`` gives a field of the records held. ``analyzer.http.rows``: a connection's
transaction rows come back as they were added."""

from __future__ import annotations

import tempfile
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.http.packing import NO_INT, Kinds, PackedRecords, pack, unpack
from analyzer.spill import BlockFile
from analyzer.tables import HTTP_TRANSACTION_COLUMNS

KINDS = Kinds(ints=frozenset((0, 1, 2)), bools=frozenset((3,)), distinct=frozenset((5,)))
# (key, id, size or None, flag or None, shared string or None, distinct string)
records = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 10**12), st.none() | st.integers(-5, 5),
                             st.none() | st.booleans(), st.none() | st.sampled_from(["GET", "POST"]),
                             st.text(max_size=5)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(rows=records, block=st.integers(1, 7), decoded=st.integers(1, 3), take=st.lists(st.integers(0, 60), max_size=8),
       stored=st.booleans())
def test_records_come_back_in_key_order_without_those_taken(rows: list[tuple[Any, ...]], block: int, decoded: int,
                                                            take: list[int], stored: bool) -> None:
    """Held, or with every block put in a file (``spill.BlockFile``) as it is made."""
    with tempfile.TemporaryDirectory() as directory:
        store = BlockFile(Path(directory) / "blocks.bin") if stored else None
        _records_come_back(rows, block, decoded, take, store)
        if store is not None:
            full = len(rows) // block  # blocks made full (the last, partly full, is read as it is)
            assert store.blocks_put == full if not take else store.blocks_put <= full


def _records_come_back(rows: list[tuple[Any, ...]], block: int, decoded: int, take: list[int],
                       store: BlockFile | None) -> None:
    rows = [(k, i, *rest) for i, (k, _, *rest) in enumerate(rows)]  # ids unique, as stream ids are
    packed = PackedRecords(KINDS, block, decoded, index=1, store=store)
    taken: list[tuple[Any, ...]] = []
    for n, row in enumerate(rows):
        packed.add(row)
        if take and n == len(rows) // 2:  # some taken back from blocks, some from the fresh ones
            for t in take:
                got = packed.take(t)
                if t < n + 1 and t not in {r[1] for r in taken}:
                    assert got == rows[t]
                    taken.append(rows[t])
                else:
                    assert got is None
    left = [r for r in rows if r not in taken]
    assert len(packed) == len(left)
    ids, sizes, flags = packed.values(1, 2, 3)
    assert sorted(ids.tolist()) == [r[1] for r in left]
    assert sorted(zip(ids.tolist(), sizes.tolist(), flags.tolist(), strict=True)) == sorted(
        (r[1], NO_INT if r[2] is None else r[2], -1 if r[3] is None else int(r[3])) for r in left)
    assert list(packed.flats(0, 1)) == sorted(left, key=lambda r: (r[0], r[1]))
    assert len(packed) == 0 and list(packed.flats(0, 1)) == []


def test_a_value_the_whole_block_repeats_is_kept_once(tmp_path: Path) -> None:
    """Also once written to a ``BlockFile`` (once on disk: the file is smaller than the two columns
    that vary) and read back."""
    rows = [(7, i, None, True, "GET", f"/{i}") for i in range(1000)]
    block = pack(rows, KINDS)
    store = BlockFile(tmp_path / "blocks.bin")
    store.put(pack(rows[:3], KINDS))
    ref = store.put(block)
    assert ref > 0
    size = store.path.stat().st_size - ref
    for got in (block, store.get(ref)):
        assert [column.base is not None and column.strides == (0,) for column in got] == [
            True, False, True, True, True, False]
        assert unpack(got, KINDS) == rows
        assert sum(np.asarray(c).nbytes for c in got if c.strides != (0,)) == 2 * 8 * 1000
    assert size < 8 * 1000 + 7 * 1000 + 1000  # the ids, the targets (short strings), little else


def test_take_reads_back_only_the_block_that_holds_the_record(tmp_path: Path) -> None:
    """With a store, ``take`` finds the record by the blocks' id columns kept in memory and reads back
    one block: the one that holds it, even where blocks' id ranges overlap (records taken back out and
    packed again, as an HTTP/2 stream a late frame came for)."""
    store = BlockFile(tmp_path / "blocks.bin")
    got: list[int] = []
    real_get = store.get

    def counted(ref: int) -> list[np.ndarray]:
        got.append(ref)
        return real_get(ref)

    store.get = counted  # type: ignore[method-assign]
    packed = PackedRecords(KINDS, 4, 1, index=1, store=store)
    rows = [(0, i, i, True, "GET", f"/{i}") for i in range(40)]
    for row in rows:
        packed.add(row)
    for i in (1, 5, 9, 13):  # back out, then packed again after the others: a block of ids 1 to 13
        again = packed.take(i)
        assert again == rows[i]
        packed.add(again)
    assert len(got) == 4 and len(set(got)) == 4
    for i in (2, 6, 10, 12, 17, 30):  # in the range of the block of 1 to 13 and of their own, one block each
        got.clear()
        assert packed.take(i) == rows[i]
        assert len(got) == 1
    got.clear()
    assert packed.take(5) == rows[5] and len(got) == 1  # from the block it was packed in again
    assert packed.take(5) is None and packed.take(99) is None and len(got) == 1
    assert [r[1] for r in packed.flats(0, 1)] == sorted(set(range(40)) - {2, 6, 10, 12, 17, 30, 5})


@pytest.mark.parametrize("stored", [False, True])
def test_records_taken_in_a_row_come_from_the_block_decoded_once(tmp_path: Path, stored: bool) -> None:
    """Records taken back in order (an HTTP/2 client's open streams, packed, then answered one after the
    other): past ``_TAKEN_IN_A_ROW`` from one block they come from that block decoded once, looked up by
    value, and are the records added; taken back and added again, a record is found in its new block
    (its old place stays taken); the rest come back from ``flats``."""
    from analyzer.http import packing

    store = BlockFile(tmp_path / "blocks.bin") if stored else None
    packed = PackedRecords(KINDS, 32, 2, index=1, store=store)
    rows = [(i % 3, i, i * 7, i % 2 == 0, "GET", f"/{i}") for i in range(200)]
    for row in rows:
        packed.add(row)
    unpacked = []
    real_unpack = packing.unpack

    def counted(block: list[np.ndarray], kinds: Kinds) -> list[tuple[Any, ...]]:
        unpacked.append(len(block[0]))
        return real_unpack(block, kinds)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(packing, "unpack", counted)
        got = [packed.take(i) for i in range(70)]
        assert got == rows[:70]
        assert unpacked == [32, 32]  # blocks 0 and 1 decoded once each; block 2 has 6 taken, fewer than 16
        for i in range(40, 60):  # taken already
            assert packed.take(i) is None
        for i in range(70, 100):  # back, then in a block again: block 2's old places stay taken
            packed.add(packed.take(i))
        for _ in range(2):
            packed.add((0, 1000 + _, 0, None, None, "/x"))  # so that the last re-added block is full
        assert [packed.take(i) for i in range(70, 100)] == rows[70:100]
    assert len(packed) == 200 - 100 + 2
    assert list(packed.flats(0, 1)) == sorted([*rows[100:], (0, 1000, 0, None, None, "/x"),
                                               (0, 1001, 0, None, None, "/x")], key=lambda r: (r[0], r[1]))


# ---------------------------------------------------------------------------------- TransactionRows

_FIELDS = list(HTTP_TRANSACTION_COLUMNS)[1:]


def _value(dtype: str, name: str) -> st.SearchStrategy[Any]:
    if dtype == "Int64":
        return st.none() | st.integers(-(2**62), 2**62)
    if dtype == "float64":  # epoch seconds, durations (never NaN: NaN stores None)
        return st.none() | st.floats(allow_nan=False, allow_infinity=False)
    if dtype == "boolean":
        return st.none() | st.booleans()
    if name == "target":
        return st.text(max_size=6)
    return st.none() | st.sampled_from(["GET", "HTTP/1.1", "text/html"])


_row = st.tuples(*(_value(HTTP_TRANSACTION_COLUMNS[name], name) for name in _FIELDS))
_span = st.none() | st.tuples(st.integers(0, 10**12), st.integers(-1, 10**12))


@settings(max_examples=200, deadline=None)
@given(added=st.lists(st.tuples(_row, _span), max_size=30), block=st.integers(1, 7))
def test_transaction_rows_come_back_as_added(added: list[tuple[tuple[Any, ...], tuple[int, int] | None]],
                                             block: int) -> None:
    """Rows packed by blocks of ``block`` (ints exact, floats exact, ``None`` kept apart from 0, False and
    NaN) come back as they were added, with their uid, from ``rows`` (which keeps them) and then ``drain``;
    the spans and response times are the rows'."""
    from analyzer.http import rows as rows_module

    want = [("C", *row) for row, _ in added]
    old = rows_module.ROW_BLOCK
    rows_module.ROW_BLOCK = block
    try:
        rows = rows_module.TransactionRows()
        for row, span in added:
            rows.add(row, span)
    finally:
        rows_module.ROW_BLOCK = old
    assert len(rows) == len(added)
    for got in (rows.rows("C"), list(rows.drain("C"))):
        assert got == want
        assert all(type(a) is type(b) for g, w in zip(got, want, strict=True) for a, b in zip(g, w, strict=True)
                   if not isinstance(b, float))
    start, end = rows.spans()
    assert [(s, e) if s >= 0 else None for s, e in zip(start.tolist(), end.tolist(), strict=True)] == [
        span for _, span in added]
    starts, ends, seen = array("q"), array("q"), array("d")
    rows.span_parts(starts, ends, seen)
    resp_start, resp_end = _FIELDS.index("ts_response_start"), _FIELDS.index("ts_response_end")
    for s, (row, _) in zip(seen, added, strict=True):
        expected = row[resp_end] if row[resp_end] is not None else row[resp_start]
        assert (s != s) if expected is None else s == expected
