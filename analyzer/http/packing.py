"""Finished records of one long connection (HTTP/1 exchanges, HTTP/2 streams), held in numpy columns until it
ends: ``PackedRecords``.

A record is a tuple of one shape (the caller's ``_flat`` fields); ``Kinds`` says which positions are ints
(``None`` as ``NO_INT``), floats (``None`` as NaN: no field stored so is ever NaN), booleans (int8 codes 0, 1,
-1 for ``None``), strings nearly always distinct (kept as they are) and the other strings, shared with
``sys.intern`` (methods, hosts, versions, user agents). By
blocks of ``block_rows``: each block one column per field; a column whose block holds one value keeps it once
(``numpy.broadcast_to``). About 0.15 KB per HTTP/1 exchange of a load test instead of 1.2 KB of parsed
messages.

``flats(key)`` gives the records back as tuples, in the order of two int fields, a few blocks decoded at a
time, and lets each block go once given whole. ``take(field, value)`` takes one record back out, when its
connection still changes it (an HTTP/2 frame on a stream already packed).

With a ``BlockStore`` (``analyzer export``, ``summary`` and ``report``: a file of the spill,
``analyzer.spill.BlockFile``), each block goes there as it is made and is read back when needed (``Blocks``): a
connection open for a million exchanges then holds its newest records and a few ints per block, not 0.15 KB
per exchange, so memory follows the connections open, not their length.

It knows nothing of HTTP. Columns built by hand rather than with a pandas or Arrow builder: a block is made
from tuples with ``zip`` and ``numpy.array``, which is what such a builder does, without its per-connection
cost.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from sys import intern
from typing import Any, Protocol

import numpy as np

_TAKEN_IN_A_ROW = 16  # records ``take`` reads from one block in a row before it decodes the whole block
NO_INT = -(1 << 63)  # None in an int column (no time, size, offset or id takes it)
_BOOLS: tuple[bool | None, ...] = (False, True, None)  # a bool column's codes 0, 1, -1


@dataclass(frozen=True, slots=True)
class Kinds:
    """Which fields of a record are ints, booleans, floats and distinct strings (the rest: shared strings)."""

    ints: frozenset[int]
    bools: frozenset[int]
    distinct: frozenset[int] = frozenset()
    floats: frozenset[int] = frozenset()


def pack(records: list[tuple[Any, ...]], kinds: Kinds) -> list[np.ndarray]:
    """One column per field of ``records`` (all of one shape, at least one)."""
    block: list[np.ndarray] = []
    for k, values in enumerate(zip(*records, strict=True)):
        if values.count(values[0]) == len(values):  # one value (a load test's method, host, status...)
            column = np.empty(1, dtype=np.int64 if k in kinds.ints else np.int8 if k in kinds.bools else
                              np.float64 if k in kinds.floats else object)
            first = values[0]
            column[0] = (NO_INT if first is None else first) if k in kinds.ints else (
                -1 if first is None else first) if k in kinds.bools else (
                np.nan if first is None else first) if k in kinds.floats else first
            block.append(np.broadcast_to(column, (len(values),)))  # the one value, read as many times
        elif k in kinds.ints:
            try:
                block.append(np.array(values, dtype=np.int64))
            except TypeError:  # a None among them
                block.append(np.array([NO_INT if v is None else v for v in values], dtype=np.int64))
        elif k in kinds.bools:
            block.append(np.array([-1 if v is None else v for v in values], dtype=np.int8))
        elif k in kinds.floats:
            try:
                block.append(np.array(values, dtype=np.float64))
            except TypeError:  # a None among them
                block.append(np.array([np.nan if v is None else v for v in values], dtype=np.float64))
        elif k in kinds.distinct:
            block.append(np.array(values, dtype=object))
        else:
            block.append(np.array([intern(v) if v is not None else None for v in values], dtype=object))
    return block


def unpack(block: list[np.ndarray], kinds: Kinds) -> list[tuple[Any, ...]]:
    """The records of a block made by ``pack``, as they were."""
    columns: list[list[Any]] = []
    for k, column in enumerate(block):
        values = column.tolist()
        if k in kinds.ints:
            if (column == NO_INT).any():
                values = [None if v == NO_INT else v for v in values]
        elif k in kinds.bools:
            values = [_BOOLS[v] for v in values]
        elif k in kinds.floats and np.isnan(column).any():
            values = [None if v != v else v for v in values]
        columns.append(values)
    return list(zip(*columns, strict=True))


def _row(block: list[np.ndarray], j: int, kinds: Kinds) -> tuple[Any, ...]:
    """Record ``j`` of a block made by ``pack``, as it was (``unpack`` of one row)."""
    values: list[Any] = []
    for k, column in enumerate(block):
        v = column[j].item() if k in kinds.ints or k in kinds.bools or k in kinds.floats else column[j]
        values.append((None if v == NO_INT else v) if k in kinds.ints else _BOOLS[v] if k in kinds.bools else
                      (None if v != v else v) if k in kinds.floats else v)
    return tuple(values)


Block = list[np.ndarray]  # one column per field (``pack``)


class BlockStore(Protocol):
    """Where blocks go while their connection is open (the caller's: this module touches no file)."""

    def put(self, block: Block) -> int:
        """Keep ``block``; its reference."""

    def get(self, ref: int) -> Block:
        """The block kept under ``ref``, as it was put."""


class Blocks:
    """The blocks of one connection, in the order made: held in memory, or (with a ``store``) put there as
    they are made and read back when asked for, the one read last kept."""

    __slots__ = ("_items", "_last", "store")

    def __init__(self, store: BlockStore | None = None) -> None:
        self.store = store
        self._items: list[Block | int | None] = []  # a block held, a reference in the store, or None: let go
        self._last: tuple[int, Block] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def append(self, block: Block, hold: bool = False) -> None:
        """Add ``block`` after the others (``hold``: kept in memory even with a store, as the last block,
        partly full, when it is about to be read)."""
        self._items.append(block if self.store is None or hold else self.store.put(block))

    def __getitem__(self, b: int) -> Block:
        item = self._items[b]
        if item is None:
            raise IndexError(f"block {b} was let go")
        if not isinstance(item, int):
            return item
        if self._last is not None and self._last[0] == b:
            return self._last[1]
        assert self.store is not None
        block = self.store.get(item)
        self._last = (b, block)
        return block

    def held(self) -> Iterator[tuple[int, Block]]:
        """The blocks not let go, with their numbers, one read from the store at a time."""
        for b, item in enumerate(self._items):
            if item is not None:
                yield b, self[b]

    def let_go(self, b: int) -> None:
        self._items[b] = None
        if self._last is not None and self._last[0] == b:
            self._last = None

    def clear(self) -> None:
        self._items = []
        self._last = None


class PackedRecords:
    """Records of one connection, by blocks of ``block_rows``; the newest wait as tuples until their block
    is full. ``decoded_blocks``: blocks kept decoded while ``flats`` gives them in an order other than packed;
    ``store``: where the blocks go (None: held)."""

    __slots__ = ("block_rows", "blocks", "count", "decoded", "decoded_blocks", "fresh", "fresh_at", "highs", "index",
                 "index_columns", "kinds", "lows", "ranges", "taken", "taking")

    def __init__(self, kinds: Kinds, block_rows: int, decoded_blocks: int, index: int | None = None,
                 store: BlockStore | None = None) -> None:
        self.kinds = kinds
        self.block_rows = block_rows
        self.decoded_blocks = decoded_blocks
        self.index = index  # the int field ``take`` looks records up by (None: no ``take``)
        self.lows: list[int] = []  # per block: the least and greatest value of that field
        self.highs: list[int] = []
        self.ranges: tuple[np.ndarray, np.ndarray] | None = None  # the two as arrays, made when first needed
        self.index_columns: list[np.ndarray] = []  # per block: that field's column (``take`` searches them)
        # the block ``take`` read last: its records decoded once many were taken from it in a row, how many,
        # and then the row of each value of the field
        self.taking: tuple[int, list[tuple[Any, ...]] | None, int, dict[int, int] | None] | None = None
        self.fresh_at: dict[int, int] = {}  # that field's value → position in ``fresh`` (the newest)
        self.blocks = Blocks(store)
        self.fresh: list[tuple[Any, ...] | None] = []  # not in a block yet (None: taken back)
        self.taken: set[int] = set()  # positions (block * block_rows + row) taken back out of blocks
        self.decoded: dict[int, list[tuple[Any, ...]]] = {}  # blocks decoded for ``flats``, most recent last
        self.count = 0  # records held (not taken back)

    def __len__(self) -> int:
        return self.count

    def add(self, record: tuple[Any, ...]) -> None:
        if self.index is not None:
            self.fresh_at[record[self.index]] = len(self.fresh)
        self.fresh.append(record)
        self.count += 1
        if len(self.fresh) >= self.block_rows:
            self._close_block()

    def _close_block(self, hold: bool = False) -> None:
        """The fresh records become a block (one taken back is replaced by its neighbour and marked taken);
        ``hold``: kept in memory (``Blocks.append``)."""
        fresh = self.fresh
        self.fresh = []
        self.fresh_at = {}
        gone = [i for i, r in enumerate(fresh) if r is None]
        if len(gone) == len(fresh):
            return
        at = len(self.blocks) * self.block_rows
        filler = next(r for r in fresh if r is not None)
        for i in gone:
            fresh[i] = filler
            self.taken.add(at + i)
        block = pack(fresh, self.kinds)  # type: ignore[arg-type]
        if self.index is not None:
            self.lows.append(int(block[self.index].min()))
            self.highs.append(int(block[self.index].max()))
            self.ranges = None
            self.index_columns.append(block[self.index])  # the block's own column (8 bytes a record when stored)
        self.blocks.append(block, hold)

    def take(self, value: int) -> tuple[Any, ...] | None:
        """The record whose ``index`` field is ``value``, removed; None when none. That field tells the records
        held apart (a stream id); the fresh ones are found by it in a dict, and only the blocks whose range of
        it holds ``value`` are searched, by their column of it (kept in memory: with a store only the block
        that holds the record is read back)."""
        field = self.index
        assert field is not None
        i = self.fresh_at.pop(value, -1)
        if i >= 0:
            r = self.fresh[i]
            self.fresh[i] = None
            self.count -= 1
            return r
        if not self.blocks:
            return None
        last = self.taking[0] if self.taking is not None else -1
        if last >= 0 and self.lows[last] <= value <= self.highs[last]:  # records taken in a row: one block
            j = self._untaken(last, value)
            if j >= 0:
                return self._taken_row(last, j)
        if self.ranges is None:
            self.ranges = (np.array(self.lows, dtype=np.int64), np.array(self.highs, dtype=np.int64))
        lows, highs = self.ranges
        for b in np.nonzero((lows <= value) & (value <= highs))[0][::-1].tolist():
            j = self._untaken(b, value) if b != last else -1
            if j >= 0:
                return self._taken_row(b, j)
        return None

    def _untaken(self, b: int, value: int) -> int:
        """The row of block ``b`` whose ``index`` field is ``value`` and that was not taken back yet, now
        marked taken; -1 when none. In the block decoded for ``take`` the row is looked up by value first."""
        taking = self.taking
        if taking is not None and taking[0] == b and taking[3] is not None:
            j = taking[3].get(value, -1)
            if j >= 0 and b * self.block_rows + j not in self.taken:
                self.taken.add(b * self.block_rows + j)
                self.count -= 1
                return j
        for j in np.nonzero(self.index_columns[b] == value)[0][::-1].tolist():
            pos = b * self.block_rows + j
            if pos not in self.taken:
                self.taken.add(pos)
                self.count -= 1
                return int(j)
        return -1

    def _taken_row(self, b: int, j: int) -> tuple[Any, ...]:
        """Record ``j`` of block ``b``: decoded alone, or, once ``_TAKEN_IN_A_ROW`` records were taken from that
        block in a row, from the whole block decoded once (an HTTP/2 client's streams taken back in order)."""
        taking = self.taking
        if taking is not None and taking[0] == b:
            rows, in_a_row, where = taking[1], taking[2] + 1, taking[3]
            if rows is None and in_a_row >= _TAKEN_IN_A_ROW:
                rows = unpack(self.blocks[b], self.kinds)
                where = {v: k for k, v in enumerate(self.index_columns[b].tolist())}  # (the last of a value)
            self.taking = (b, rows, in_a_row, where)
            if rows is not None:
                return rows[j]
        else:
            self.taking = (b, None, 1, None)
        return _row(self.blocks[b], j, self.kinds)

    def values(self, *fields: int) -> list[np.ndarray]:
        """Each int or bool field of ``fields`` for every record held (``NO_INT`` / -1 for None), in no set
        order but the same for each (one pass over the blocks)."""
        held: list[list[np.ndarray]] = [[] for _ in fields]
        for _, block in self.blocks.held():
            for out, field in zip(held, fields, strict=True):
                out.append(np.asarray(block[field], dtype=np.int64))
        keep: np.ndarray | None = None
        if self.taken:
            keep = np.ones(sum(len(c) for c in held[0]), dtype=bool)
            keep[np.fromiter(self.taken, dtype=np.int64, count=len(self.taken))] = False
        result = []
        for columns, field in zip(held, fields, strict=True):
            every = np.concatenate(columns) if columns else np.zeros(0, dtype=np.int64)
            if keep is not None:
                every = every[keep]
            none = NO_INT if field in self.kinds.ints else -1
            fresh = [none if r[field] is None else int(r[field]) for r in self.fresh if r is not None]
            result.append(np.concatenate([every, np.array(fresh, dtype=np.int64)]))
        return result

    def flats(self, first: int, second: int) -> Iterator[tuple[Any, ...]]:
        """Every record held, by the int fields ``first`` then ``second``, then packing order; consumes them."""
        if any(r is not None for r in self.fresh):
            self._close_block(hold=True)
        self.fresh, self.fresh_at = [], {}
        if not self.blocks:
            return
        n = self.block_rows
        ones, twos = [], []
        for _, block in self.blocks.held():  # (none let go yet) one read of each block from a store
            ones.append(np.asarray(block[first]))
            twos.append(np.asarray(block[second]))
        one, two = np.concatenate(ones), np.concatenate(twos)
        del ones, twos
        ranked = np.lexsort((two, one))
        if self.taken:
            ranked = ranked[~np.isin(ranked, np.fromiter(self.taken, dtype=np.int64, count=len(self.taken)))]
        left = np.bincount(ranked // n, minlength=len(self.blocks)).tolist()  # per block: records not given yet
        decoded = self.decoded
        for i in ranked.tolist():
            b, j = divmod(i, n)
            rows = decoded.get(b)
            if rows is None:
                if len(decoded) >= self.decoded_blocks:
                    del decoded[next(iter(decoded))]
                rows = decoded[b] = unpack(self.blocks[b], self.kinds)
            yield rows[j]
            left[b] -= 1
            if not left[b]:  # the block is given whole: let it go
                self.blocks.let_go(b)
                decoded.pop(b, None)
        self.blocks.clear()
        self.lows, self.highs, self.ranges, self.index_columns, self.taking = [], [], None, [], None
        self.taken = set()
        self.count = 0
        decoded.clear()
