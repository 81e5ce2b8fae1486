"""``Analysis``: the result of analyzing one or more captures (three tables and a summary).

It is a plain container: producing it is the pipeline's job (``analyzer.pipeline``), reading it is the job
of metrics, report and exports. It holds no packets.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from analyzer.tables import FLIGHT_COLUMNS, SEGMENT_COLUMNS, TABLES, empty_frame

if TYPE_CHECKING:
    from analyzer.spill import SpilledTable

HELD_TABLES = ("connections", "transactions")  # the tables ``Analysis.held`` reads back


@dataclass(slots=True)
class Analysis:
    """Tables of DESIGN.md §3 plus a JSON-serialisable ``summary`` dict, the flights of every response
    (``flights``: the cwnd-growth view) and the per-packet series of data segments (``segments``, bounded).

    ``summary`` keys (all present, values may be None):
      captures (list of file names), file_format, packets_read, packets_analyzed, packets_skipped
      ({reason: count}), truncated_packets (captured shorter than on the wire, still analyzed),
      reader_skipped ({reason: count} of records that were not packets), reader_notes ({reason: count} of
      records kept with a fix: invalid_timestamp, timestamp_backwards, clock_step_back,
      caplen_over_snaplen), bytes_skipped (damaged bytes passed over), bytes_unread (left unread after
      damage), kernel_drops, ts_first, ts_last, duration_s, connections, connections_with_syn, transactions,
      anomalies ({name: count}).
    Metrics add their own keys (``analyzer.metrics.summary_metrics``).

    ``spilled``: tables left on disk by a session with a spill (``analyzer export`` and ``summary``; see
    ``analyzer.spill``), by name (all five: connections, transactions, anomalies, flights, segments), each
    with its rows' order set; the DataFrame of such a table is then empty, and the summary counts its rows.
    Code that needs the connections and transactions whole reads them back first (``held``).
    """

    connections: pd.DataFrame
    transactions: pd.DataFrame
    anomalies: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    flights: pd.DataFrame = field(default_factory=lambda: empty_frame(FLIGHT_COLUMNS))
    segments: pd.DataFrame = field(default_factory=lambda: empty_frame(SEGMENT_COLUMNS))
    spilled: dict[str, SpilledTable] = field(default_factory=dict)

    def table(self, name: str) -> pd.DataFrame:
        """The table ``name`` in memory, read back from disk when it was spilled."""
        if name in self.spilled:
            return self.spilled[name].frame()
        frame = getattr(self, name)
        assert isinstance(frame, pd.DataFrame)
        return frame

    def held(self, columns: Mapping[str, Sequence[str]] | None = None) -> Analysis:
        """This analysis with its connections and transactions in memory: read back from disk when they
        were left there (only the ``columns`` given for each, when given: one given none, or not named, comes
        as its rows without columns, without reading it); the other tables stay where they are."""
        if not any(name in self.spilled for name in HELD_TABLES):
            return self

        def read(name: str) -> pd.DataFrame:
            if name not in self.spilled:
                frame = getattr(self, name)
                assert isinstance(frame, pd.DataFrame)
                return frame
            if columns is not None and not columns.get(name):  # its rows without columns: nothing to read
                return pd.DataFrame(index=pd.RangeIndex(len(self.spilled[name])))
            return self.spilled[name].frame(None if columns is None else columns[name])

        return replace(self, connections=read("connections"), transactions=read("transactions"),
                       spilled={k: v for k, v in self.spilled.items() if k not in HELD_TABLES})

    def in_memory(self, columns: Mapping[str, Sequence[str]] | None = None,
                  rows: Mapping[str, Callable[[pd.DataFrame], pd.DataFrame]] | None = None) -> Analysis:
        """This analysis with every table in memory (read back from disk when it was left there); only the
        ``columns`` given for a table, when given, in the table's order (names it lacks are passed over; a
        table given none comes as its rows without columns, a spilled one without reading it): ``analyzer
        report`` reads for each step only what it draws.

        ``rows``: for a table named there, only the rows that function keeps of it. A spilled table is read
        a block at a time (``SpilledTable.blocks``, in the table's order), the function keeps rows of each
        block and then of what the blocks kept, so the table is never whole in memory. The function must
        keep the same rows either way: a test of each row on its own, or the first rows of each value of a
        column (the report's ``anomaly_examples``). The summary still counts every row."""
        if not self.spilled and columns is None and not rows:
            return self

        def wanted(name: str, has: Iterable[str]) -> list[str] | None:
            """The columns of ``name`` to hold, in its order (None: every one)."""
            if columns is None or name not in columns:
                return None
            asked = set(columns[name])
            return [c for c in has if c in asked]

        def read_back(table: SpilledTable, chosen: list[str] | None,
                      keep: Callable[[pd.DataFrame], pd.DataFrame] | None) -> pd.DataFrame:
            if chosen == [] and keep is None:  # its rows without columns: nothing to read
                return pd.DataFrame(index=pd.RangeIndex(len(table)))
            if keep is None:
                return table.frame(chosen)
            if not len(table):
                return keep(table.frame(chosen))
            kept = [keep(block if chosen is None else block[chosen]) for block in table.blocks()]
            return keep(pd.concat(kept, ignore_index=True))

        tables: dict[str, Any] = {}
        for name in TABLES:
            keep = (rows or {}).get(name)
            if name in self.spilled:
                table = self.spilled[name]
                tables[name] = read_back(table, wanted(name, table.columns), keep)
            else:
                frame = getattr(self, name)
                chosen = wanted(name, frame.columns)
                frame = frame if chosen is None else frame[chosen]
                tables[name] = frame if keep is None else keep(frame)
        return replace(self, **tables, spilled={})

    def _repr_html_(self) -> str:  # Jupyter
        head = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in self.summary.items() if not isinstance(v, (dict, list)))
        return f"<table>{head}</table>" + self.connections.head(20).to_html(escape=True)
