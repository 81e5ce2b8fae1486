"""A connection's transaction rows as its protocol handler hands them to the records: ``TransactionRows``.

Each row is a tuple in ``HTTP_TRANSACTION_COLUMNS`` order without the ``uid`` (given when the rows are read),
added with the byte range its response took in the server's stream (``None``: no response, or not placed),
which the TCP analysis needs before the rows are read, and when the response was last seen (its end, else
its start), which says whether the segment log still covered it. Rows wait as tuples until ``ROW_BLOCK`` of
them are held, then become a block (``analyzer.http.packing``: numbers in numpy columns, strings shared), so
that a connection with a million requests holds about 0.1 KB per row when it ends instead of 0.45 KB of
tuples (``tests/test_transactions.py``), and ``drain`` lets each block go as its rows are read: the records
hand them on to be compacted a slice at a time. With a ``BlockStore`` the blocks go there as they are made
(``analyzer.http.packing.Blocks``): twenty connections of 250,000 exchanges ending together then hold their
spans, not their rows. It knows the column schema, nothing of HTTP.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import Any

import numpy as np

from analyzer.http.packing import Blocks, BlockStore, Kinds, pack, unpack
from analyzer.tables import HTTP_TRANSACTION_COLUMNS

#: Rows kept as tuples before they are packed; then packed by blocks of this many.
ROW_BLOCK = 2048

_FIELDS = list(HTTP_TRANSACTION_COLUMNS)[1:]  # a row's fields: the columns but the uid
_KINDS = Kinds(ints=frozenset(k for k, name in enumerate(_FIELDS) if HTTP_TRANSACTION_COLUMNS[name] == "Int64"),
               bools=frozenset(k for k, name in enumerate(_FIELDS) if HTTP_TRANSACTION_COLUMNS[name] == "boolean"),
               floats=frozenset(k for k, name in enumerate(_FIELDS) if HTTP_TRANSACTION_COLUMNS[name] == "float64"),
               distinct=frozenset((_FIELDS.index("target"),)))
_RESPONSE_START = _FIELDS.index("ts_response_start")
_RESPONSE_END = _FIELDS.index("ts_response_end")


class TransactionRows:
    """The rows of one connection, in the order they were added, with their responses' spans; ``store``:
    where their blocks go (None: held)."""

    __slots__ = ("_blocks", "_count", "_fresh", "_seen_s", "_span_end", "_span_start")

    def __init__(self, store: BlockStore | None = None) -> None:
        self._fresh: list[tuple[Any, ...]] = []
        self._blocks = Blocks(store)
        self._count = 0
        self._span_start = array("q")  # -1: no span
        self._span_end = array("q")
        self._seen_s = array("d")  # the response's end, else its start (seconds; NaN: none)

    def add(self, row: tuple[Any, ...], span: tuple[int, int] | None) -> None:
        """A row (``HTTP_TRANSACTION_COLUMNS`` order without the uid) and its response's ``[start, end)`` in
        the server's stream."""
        self._fresh.append(row)
        self._count += 1
        start, end = span if span is not None else (-1, -1)
        self._span_start.append(start)
        self._span_end.append(end)
        seen = row[_RESPONSE_END]
        if seen is None:
            seen = row[_RESPONSE_START]
        self._seen_s.append(float("nan") if seen is None else seen)
        if len(self._fresh) >= ROW_BLOCK:
            self._blocks.append(pack(self._fresh, _KINDS))
            self._fresh = []

    def __len__(self) -> int:
        return self._count

    def spans(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row: its response's span start and end in the server's stream (-1 and -1: none)."""
        return np.array(self._span_start, dtype=np.int64), np.array(self._span_end, dtype=np.int64)

    def span_parts(self, starts: array[int], ends: array[int], seen_s: array[float]) -> None:
        """Append the rows' span starts and ends (-1: none) and when their responses were last seen (epoch
        seconds, NaN: none) to these: many connections gathered at C speed, one ``numpy`` call per group of
        them, not three per connection."""
        starts.extend(self._span_start)
        ends.extend(self._span_end)
        seen_s.extend(self._seen_s)

    def set_spans(self, start: np.ndarray, end: np.ndarray) -> None:
        """Replace the spans (one per row; -1 and -1: none): a TLS connection's plaintext offsets become
        those of the TCP stream."""
        assert len(start) == len(end) == self._count
        self._span_start = array("q", np.asarray(start, dtype=np.int64).tobytes())
        self._span_end = array("q", np.asarray(end, dtype=np.int64).tobytes())

    def rows(self, uid: str) -> list[tuple[Any, ...]]:
        """Every row with its ``uid``, as a list (what is held stays)."""
        out = [(uid, *row) for _, block in self._blocks.held() for row in unpack(block, _KINDS)]
        out.extend((uid, *row) for row in self._fresh)
        return out

    def drain(self, uid: str) -> Iterator[tuple[Any, ...]]:
        """Every row with its ``uid``, each block let go as it is read: the rows are read once."""
        blocks, fresh = self._blocks, self._fresh
        self._blocks, self._fresh = Blocks(blocks.store), []
        for b in range(len(blocks)):
            block = blocks[b]
            blocks.let_go(b)
            for row in unpack(block, _KINDS):
                yield (uid, *row)
            del block
        for row in fresh:
            yield (uid, *row)
