"""Tables kept on disk while a capture is analyzed (``analyzer export`` and ``analyzer summary``).

The rows of finished connections are written out in chunks as they are made, so that during the scan memory
follows the connections open at once, not the size of the result. This module owns the spill files (in a
directory the caller creates and removes) and reading them back: a table's chunks in the order they were
written, some of its columns, or all of its rows in a given order, block by block.

A chunk is a pickled DataFrame (protocol 5), not Parquet: the dtypes come back exactly as they went in
(pandas' nullable types, missing values), so a table read back equals the table held in memory, and the
files exported from it are those of an analysis held in memory. It also keeps the packed blocks of the
connections still open (``BlockFile``, an ``analyzer.http.packing.BlockStore``), so that a long connection
holds only its newest records until it ends. It is the one module of the core besides the capture readers
that touches files, and only its own. It knows nothing of packets, connections, metrics or export formats.
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analyzer.tables import assemble, keys_of_chunks

BLOCK_ROWS = 65_536  # rows per block read back in order (bounds that memory)
CACHED_CHUNKS = 4  # chunks kept decoded while rows are gathered in another order than written


class Spill:
    """The spilled tables of one analysis, one file each under ``directory`` (which must exist)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.tables: dict[str, SpilledTable] = {}

    def table(self, name: str, columns: Mapping[str, str]) -> SpilledTable:
        """The table ``name`` (created empty on first use)."""
        if name not in self.tables:
            self.tables[name] = SpilledTable(self.directory / f"{name}.chunks", columns)
        return self.tables[name]

    def block_file(self) -> BlockFile:
        """Where open connections put their packed blocks (``BlockFile``): one file, removed by
        ``drop_blocks`` once no connection is open."""
        return BlockFile(self.directory / "blocks.bin")

    def drop_blocks(self) -> None:
        """Remove the blocks' file (every connection ended: no block is read again)."""
        (self.directory / "blocks.bin").unlink(missing_ok=True)


class BlockFile:
    """Packed blocks (lists of numpy columns) appended to one file; ``put`` gives a block's offset, ``get``
    reads it back. A column made of one value repeated (``numpy.broadcast_to``) is written once with its
    length and comes back as such. The file only grows until ``Spill.drop_blocks``: a block read for the
    last time is not reclaimed (a million exchanges on one keep-alive connection: 126 MB, their packed
    exchanges and then their rows)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.blocks_put = 0

    def put(self, block: list[np.ndarray]) -> int:
        frozen = [(column[:1].copy(), len(column)) if column.strides == (0,) else column for column in block]
        with self.path.open("ab") as out:
            offset = out.tell()
            pickle.dump(frozen, out, protocol=5)
        self.blocks_put += 1
        return offset

    def get(self, ref: int) -> list[np.ndarray]:
        with self.path.open("rb") as src:
            src.seek(ref)
            frozen = pickle.load(src)  # our own file, written by put()
        return [np.broadcast_to(c[0], (c[1],)) if isinstance(c, tuple) else c for c in frozen]


@dataclass(frozen=True, slots=True)
class _Chunk:
    path: Path
    offset: int  # bytes into the file
    rows: int
    rename: Mapping[str, str] | None = None  # uid → new uid, applied as the chunk is read


class SpilledTable:
    """One table's rows on disk as chunks, in the order they were appended; ``order`` (set by the
    producer once every row is in) is the order of the finished table: row ``order[i]`` of the
    concatenated chunks is the table's row ``i``. A table may gather the chunks of several (``concat``:
    the parts of several captures), with their uids renamed (``renamed``); such a table is read only."""

    def __init__(self, path: Path, columns: Mapping[str, str]) -> None:
        self.path = path
        self.columns = dict(columns)
        self._chunks: list[_Chunk] = []
        self._starts: list[int] = []  # first row of each chunk, in the concatenation
        self.rows = 0
        self.order: np.ndarray | None = None
        self.writable = True

    @classmethod
    def concat(cls, tables: Sequence[SpilledTable]) -> SpilledTable:
        """The rows of ``tables`` one after the other (their chunks, not copied), without an order."""
        if not tables:
            raise ValueError("concat() needs at least one table")
        out = cls(tables[0].path, tables[0].columns)
        for table in tables:
            if table.columns != out.columns:
                raise ValueError("concat() of tables with other columns")
            for chunk in table._chunks:
                out._add(chunk)
        out.writable = False
        return out

    def renamed(self, rename: Mapping[str, str]) -> SpilledTable:
        """This table with the uids in ``rename`` renamed (when its chunks are read), without an order."""
        out = SpilledTable.concat([self])
        out._chunks = [_Chunk(c.path, c.offset, c.rows, {**(c.rename or {}), **rename}) for c in out._chunks]
        return out

    def _add(self, chunk: _Chunk) -> None:
        self._chunks.append(chunk)
        self._starts.append(self.rows)
        self.rows += chunk.rows

    def __len__(self) -> int:
        return self.rows

    def append(self, frame: pd.DataFrame) -> None:
        """Add ``frame``'s rows (the table's columns, in order) after those already written."""
        if not len(frame):
            return
        if not self.writable:
            raise ValueError(f"{self.path.name}: a table made by concat() or renamed() is read only")
        if list(frame.columns) != list(self.columns):
            raise ValueError(f"{self.path.name}: chunk columns differ from the table's")
        with self.path.open("ab") as out:
            offset = out.tell()
            pickle.dump(frame.reset_index(drop=True), out, protocol=5)
        self._add(_Chunk(self.path, offset, len(frame)))

    def chunks(self) -> Iterator[pd.DataFrame]:
        """The chunks in the order they were written (one in memory at a time)."""
        for i in range(len(self._chunks)):
            yield self._chunk(i)

    def _chunk(self, i: int) -> pd.DataFrame:
        chunk = self._chunks[i]
        with chunk.path.open("rb") as src:
            src.seek(chunk.offset)
            frame = pickle.load(src)  # our own file, written by append()
        assert isinstance(frame, pd.DataFrame)
        if chunk.rename:
            uids = frame["uid"]
            renamed = uids.map(chunk.rename)  # missing where not renamed
            frame["uid"] = renamed.where(renamed.notna(), uids).astype(uids.dtype)
        return frame

    def map_chunks(self, keys: Callable[[pd.DataFrame], dict[str, Any]]) -> dict[str, Any]:
        """``keys`` of each chunk (arrays of one value per row), concatenated in the order written: one
        chunk in memory at a time."""
        return keys_of_chunks(self.chunks(), keys)

    def columns_of(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The given columns of every row, in the order written, as numpy arrays (object arrays with
        ``pd.NA`` for missing strings; floats with NaN for missing numbers)."""
        def columns(chunk: pd.DataFrame) -> dict[str, np.ndarray]:
            return {name: chunk[name].to_numpy(dtype=np.float64, na_value=np.nan)
                    if self.columns[name] not in ("string", "object") else chunk[name].to_numpy()
                    for name in names}

        out = self.map_chunks(columns)
        return {name: out.get(name, np.array([], dtype=object)) for name in names}

    def frame(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The whole table in memory, in ``order`` when it is set, with the declared dtypes; only the
        ``columns`` named (in the table's column order) when given.

        Built column by column as the chunks are read, one decoded at a time: numbers and flags go straight
        to their final rows (arrays made once, at full size), and the other columns (strings) are put in
        order once all their pieces are in, one column after another. So the peak is about the table plus
        one chunk, where gathering whole rows and joining them held the table twice over (a million
        connections: about 1.8 GiB → see bench/results/hostile-export.md)."""
        order = self.order if self.order is not None else np.arange(self.rows, dtype=np.int64)
        if columns is None:
            return assemble(self.chunks(), self.rows, self.columns, order)
        kept = {name: dtype for name, dtype in self.columns.items() if name in set(columns)}
        if len(kept) != len(set(columns)):
            raise KeyError(f"{self.path.name}: no columns {sorted(set(columns) - set(kept))}")
        # whole chunks: ``assemble`` reads only the columns kept (selecting them in each chunk first took a
        # third of the time of reading back a few columns, which the report does 14 times)
        return assemble(self.chunks(), self.rows, kept, order)

    def blocks(self, block_rows: int | None = None) -> Iterator[pd.DataFrame]:
        """The table's rows in ``order`` (the order written when it is not set), ``block_rows`` at a time,
        each block with a fresh index. Rows are gathered from the chunks that hold them (a few chunks kept
        decoded): rows written in nearly the table's order, as connections finish in nearly the order they
        started, cost one read of each chunk."""
        order = self.order if self.order is not None else np.arange(self.rows, dtype=np.int64)
        block_rows = block_rows or BLOCK_ROWS
        starts = np.asarray(self._starts, dtype=np.int64)
        cache: OrderedDict[int, pd.DataFrame] = OrderedDict()
        for at in range(0, len(order), block_rows):
            rows = order[at:at + block_rows]
            which = np.searchsorted(starts, rows, side="right") - 1
            pieces, placed = [], []
            for chunk_no in np.unique(which):
                chunk_no = int(chunk_no)
                if chunk_no not in cache:
                    cache[chunk_no] = self._chunk(chunk_no)
                    if len(cache) > CACHED_CHUNKS:
                        cache.popitem(last=False)
                cache.move_to_end(chunk_no)
                mine = np.flatnonzero(which == chunk_no)
                pieces.append(cache[chunk_no].iloc[rows[mine] - starts[chunk_no]])
                placed.append(mine)
            block = pd.concat(pieces, ignore_index=True) if len(pieces) > 1 else pieces[0].reset_index(drop=True)
            yield block.iloc[np.argsort(np.concatenate(placed), kind="stable")].reset_index(drop=True)

