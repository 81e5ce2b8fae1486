"""Column schemas of the three record tables and the DataFrame builders.

This module owns the contract of DESIGN.md §3: the names, order and dtypes of the columns of
``connections``, ``transactions`` and ``anomalies``. Every producer (flows, http) hands plain Python rows
(one per connection, per transaction, per anomaly — never per packet) to ``frame_from_rows``, and every
consumer (metrics, report, exports) can rely on the columns existing with these dtypes, even when a table is
empty. It knows nothing about packets or protocols.

Conventions: instants are float epoch seconds ``ts_*``; durations are ``*_ms`` floats; sizes ``*_bytes``;
missing values are ``NaN`` for floats and ``<NA>`` for nullable integers, booleans and strings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa

# name -> pandas dtype. Nullable extension dtypes keep "unknown" distinct from 0/False.
CONNECTION_COLUMNS: dict[str, str] = {
    "uid": "string",
    "client_ip": "string",
    "client_port": "Int64",
    "server_ip": "string",
    "server_port": "Int64",
    "transport": "string",  # tcp | udp
    "protocol": "string",  # http/1.0 | http/1.1 | h2 | h2c | h3 | tls | unknown
    "tls": "boolean",
    "tls_version": "string",
    "sni": "string",
    "alpn": "string",  # selected (ServerHello; null in TLS 1.3, where it is encrypted)
    "alpn_offered": "string",  # the ClientHello's list, comma-separated
    "tls_cipher_suite": "string",
    "tls_resumed": "boolean",
    "tls_round_trips": "Int64",  # round trips the TLS handshake cost (full 1.2: 2; 1.3 or resumed: 1; 0-RTT: 0)
    "tls_decrypted": "boolean",  # application data decrypted with a key log (HTTP parsed inside)
    "quic_version": "string",  # QUIC connections (transport udp): QUICv1, QUICv2, draft-29
    "syn_seen": "boolean",
    "ts_start": "float64",
    "ts_end": "float64",
    "handshake_rtt_ms": "float64",  # Wireshark's tcp.analysis.initial_rtt
    "syn_to_synack_ms": "float64",  # first half of the handshake RTT
    "synack_to_ack_ms": "float64",  # second half
    "tls_handshake_ms": "float64",  # ClientHello → the client's first application data
    "requests": "Int64",
    "pipelined_max": "Int64",
    "max_concurrent_streams": "Int64",  # HTTP/2: most streams open at once (used, not the limit)
    "h2_max_streams_setting": "Int64",  # HTTP/2: the server's SETTINGS_MAX_CONCURRENT_STREAMS (the limit)
    "h2_goaway_by": "string",  # HTTP/2: client | server, the first GOAWAY's sender
    "h2_goaway_error": "string",  # its error code name (NO_ERROR for a graceful end)
    "h2_goaway_last_stream": "Int64",  # its last stream id processed
    "h2_pushed_streams": "Int64",
    "h2_reset_streams": "Int64",
    "idle_max_ms": "float64",
    "idle_after_last_ms": "float64",  # last response end -> connection close (FIN/RST)
    "close_by": "string",  # client | server | unknown | open
    "close_reason": "string",  # fin | rst | capture_end
    "client_bytes": "Int64",
    "server_bytes": "Int64",
    "client_packets": "Int64",
    "server_packets": "Int64",
    "retransmissions": "Int64",  # Wireshark's tcp.analysis.retransmission (fast and spurious included)
    "fast_retransmissions": "Int64",
    "spurious_retransmissions": "Int64",
    "out_of_order": "Int64",
    "dup_acks": "Int64",
    "zero_window": "Int64",
    "window_full": "Int64",
    "keep_alives": "Int64",  # TCP keep-alive probes (not loss)
    "max_bytes_in_flight": "Int64",  # server → client, Wireshark's tcp.bif_seq_based
    "max_bytes_in_flight_client": "Int64",  # client → server
    "initial_window_bytes": "Int64",  # the server's first flight (tcptrace's initial window)
    "rtt_min_ms": "float64",  # server data → client ACK, Karn's rule (capture point → client → capture point)
    "rtt_median_ms": "float64",
    "rtt_max_ms": "float64",
    "rtt_samples": "Int64",
    "capture_point": "string",  # client | server | middle | unknown (from the handshake halves)
    "gap_bytes": "Int64",  # bytes missing from the capture (both directions)
    "client_from": "string",  # how the client was chosen: syn | synack | payload_request | payload_response | port
    "keep_alive_timeout_s": "float64",  # advertised by the server (Keep-Alive: timeout=)
    "keep_alive_max": "Int64",  # advertised by the server (Keep-Alive: max=)
    "first_frame": "Int64",
    "capture": "string",  # the capture file (name) holding the connection's first packet
}

# the columns the HTTP layer fills (its rows are tuples in this order)
HTTP_TRANSACTION_COLUMNS: dict[str, str] = {
    "uid": "string",
    "trans_depth": "Int64",
    "stream_id": "Int64",
    "method": "string",
    "host": "string",
    "target": "string",
    "http_version": "string",  # the request's version (the response's when there is no request)
    "response_version": "string",
    "status": "Int64",
    "reason": "string",
    "ts_request_start": "float64",
    "ts_request_end": "float64",
    "ts_response_start": "float64",
    "ts_response_end": "float64",
    "request_body_bytes": "Int64",
    "response_body_bytes": "Int64",
    "idle_before_ms": "float64",
    "pipelined": "boolean",
    "reused": "boolean",
    "keep_alive": "boolean",
    "request_connection": "string",  # Connection header of the request (lower-cased)
    "response_connection": "string",  # Connection header of the response (lower-cased)
    "user_agent": "string",
    "content_type": "string",
    "interim_responses": "Int64",  # 1xx responses before the final one
    "request_complete": "boolean",
    "response_complete": "boolean",
    "server_ip": "string",
    "server_port": "Int64",
    "estimated": "boolean",  # from TLS record bursts, not parsed HTTP (encrypted, no keys)
}

# the columns the TCP sequence analysis fills (analyzer/flows/tcpanalysis.py, joined in analyzer/records.py)
TCP_TRANSACTION_COLUMNS: dict[str, str] = {
    "warmth": "string",  # cold | warm | cooled (the server restarted slow start after idle)
    "rounds": "Int64",  # flights (round trips) the response took
    "peak_bytes_in_flight": "Int64",  # server → client, while the response was sent
    "ttfb_ms": "float64",  # request end (start if unknown) → first response byte
    "transfer_ms": "float64",  # first → last response byte
    "sender_idle_ms": "float64",  # the server's silence before the response (reused connections)
}

TRANSACTION_COLUMNS: dict[str, str] = {**HTTP_TRANSACTION_COLUMNS, **TCP_TRANSACTION_COLUMNS}

# one row per flight (round trip) of a response: the cwnd-growth view
FLIGHT_COLUMNS: dict[str, str] = {
    "uid": "string",
    "trans_depth": "Int64",
    "warmth": "string",
    "round": "Int64",
    "ts_start": "float64",
    "ts_end": "float64",
    "bytes": "Int64",
    "packets": "Int64",
    "peak_bytes_in_flight": "Int64",
}

# the per-packet series (data segments), kept for a bounded number of packets (pipeline.MAX_SERIES_ROWS)
SEGMENT_COLUMNS: dict[str, str] = {
    "uid": "string",
    "from_server": "boolean",
    "ts": "float64",
    "frame": "Int64",  # frame number in the capture (as Wireshark counts)
    "seq_end": "Int64",  # stream offset after the segment
    "payload_bytes": "Int64",
    "bytes_in_flight": "Int64",
    "retransmission": "boolean",
    "round": "Int64",  # flight of the response it belongs to (0: none)
}

ANOMALY_COLUMNS: dict[str, str] = {
    "uid": "string",
    "ts": "float64",
    "name": "string",
    "detail": "string",
}

TABLES: dict[str, dict[str, str]] = {
    "connections": CONNECTION_COLUMNS,
    "transactions": TRANSACTION_COLUMNS,
    "anomalies": ANOMALY_COLUMNS,
    "flights": FLIGHT_COLUMNS,
    "segments": SEGMENT_COLUMNS,
}


def frame_from_rows(given: Iterable[Mapping[str, Any]], columns: Mapping[str, str]) -> pd.DataFrame:
    """A DataFrame with exactly ``columns`` (in order, with their dtypes) from row mappings.

    Keys missing from a row become missing values; keys not in ``columns`` are an error (a typo in a
    producer must not silently drop data).

    Rows are transposed in C: those with the same keys in the same order (nearly all of them: a producer
    builds its rows one way) are zipped together, each group's columns then put in place by row (by name
    when there are more than eight such orders). With ``_typed_frame``, a SYN flood's connection rows are
    turned into a table 2x faster than with a ``row.get(name)`` per row and column and ``astype``.
    """
    rows: list[dict[str, Any]] = [row if isinstance(row, dict) else dict(row) for row in given]
    if not rows:
        return empty_frame(columns)
    key_orders = set(map(tuple, rows))
    for keys in key_orders:
        extra = set(keys) - set(columns)
        if extra:
            raise KeyError(f"unknown column(s) {sorted(extra)}")
    n = len(rows)
    data: dict[str, Sequence[Any]]
    if len(key_orders) == 1:
        data = dict(zip(next(iter(key_orders)), _transposed(rows, dict.values), strict=True))
    elif len(key_orders) > 8:  # rows built every which way: by name
        data = {name: [row.get(name) for row in rows] for name in columns}
    else:
        groups: dict[tuple[str, ...], list[int]] = {keys: [] for keys in key_orders}
        for i, row in enumerate(rows):
            groups[tuple(row)].append(i)
        placed: dict[str, np.ndarray] = {}
        for keys, at in groups.items():
            where = np.array(at, dtype=np.int64)
            for name, values in zip(keys, _transposed([rows[i] for i in at], dict.values), strict=True):
                if name not in placed:
                    placed[name] = np.full(n, None, dtype=object)
                placed[name][where] = values
        data = {name: list(values) for name, values in placed.items()}
    return _typed_frame(data, n, columns)


TRANSPOSE_BLOCK_ROWS = 256  # rows zipped at once by ``_transposed``


def _transposed(rows: Sequence[Any], values: Callable[[Any], Iterable[Any]] | None = None) -> list[list[Any]]:
    """The values of rows of the same length (tuples, or ``values(row)`` of each, in the same order), column
    by column. Zipped a block of rows at a time: zipping thousands at once reads every row once per column,
    and rows built over time lie far apart in memory (8,192 connection rows scattered: 0.7 s for all of a
    SYN flood's 262,104, against 0.4 s; as tuples, 0.49-0.52 s against 0.31-0.37 s)."""
    columns: list[list[Any]] = []
    for i in range(0, len(rows), TRANSPOSE_BLOCK_ROWS):
        block = rows[i:i + TRANSPOSE_BLOCK_ROWS]
        by_column = zip(*(map(values, block) if values is not None else block), strict=True)
        if columns:
            for column, column_values in zip(columns, by_column, strict=True):
                column.extend(column_values)
        else:
            columns = [list(column_values) for column_values in by_column]
    return columns


def frame_from_tuples(rows: list[tuple[Any, ...]], columns: Mapping[str, str]) -> pd.DataFrame:
    """A DataFrame from rows given as tuples in exactly the order of ``columns`` (the fast path for large
    tables: no dict per row)."""
    if not rows:
        return empty_frame(columns)
    names = list(columns)
    if len(rows[0]) != len(names):
        raise ValueError(f"rows have {len(rows[0])} values for {len(names)} columns")
    return _typed_frame(dict(zip(names, _transposed(rows), strict=True)), len(rows), columns)


#: How ``_typed_frame`` hands a column of each dtype of the schema to Arrow.
_ARROW_TYPES: dict[str, pa.DataType] = {"string": pa.large_string(), "Int64": pa.int64(),
                                        "float64": pa.float64(), "boolean": pa.bool_()}


def _typed_frame(data: Mapping[str, Sequence[Any]], n: int, columns: Mapping[str, str]) -> pd.DataFrame:
    """``columns`` (in order, with their dtypes) from ``data``'s Python values per column (a column not in
    ``data`` is missing on every row).

    Each column is converted by Arrow (``pa.array``), which turns a list of Python values into a typed array
    in C, then handed to pandas as its dtype: 4x faster than ``DataFrame(data).astype(columns)``. A column
    Arrow refuses (a value of another type: an ``int`` among strings, a ``float`` among integers) is
    converted as pandas does it, as before."""
    typed: dict[str, Any] = {}
    for name, dtype in columns.items():
        values = data.get(name)
        try:
            arrow = pa.array(values, type=_ARROW_TYPES[dtype], from_pandas=True) if values is not None \
                else pa.nulls(n, _ARROW_TYPES[dtype])
        except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError):
            # what DataFrame(data).astype(columns) did
            typed[name] = pd.Series(values if values is not None else [None] * n).astype(cast(Any, dtype)).array
            continue
        typed[name] = arrow.to_numpy(zero_copy_only=False, writable=True) if dtype == "float64" \
            else cast(Any, pd.api.types.pandas_dtype(dtype)).__from_arrow__(arrow)
    return pd.DataFrame(typed, columns=list(columns), copy=False)


def frame_from_arrays(parts: Sequence[Mapping[str, Any]], columns: Mapping[str, str],
                      order: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None,
                      consume: bool = False) -> pd.DataFrame:
    """A DataFrame from column arrays (several parts, concatenated), for the large columnar tables. Missing
    values of integer columns come as NaN in float arrays. ``order``: gives the row order from the
    concatenated arrays (applied column by column, so only one column is ever copied twice). ``consume``
    (``parts`` must then be a list): the parts are dropped from it once concatenated, so that they and the
    table never exist at once."""
    source = parts
    parts = [p for p in parts if len(p) and len(next(iter(p.values())))]
    if not parts:
        return empty_frame(columns)
    if consume:  # column by column, each part's array dropped once copied: the parts and the whole never
        assert isinstance(source, list)  # both exist
        source.clear()
        owned = cast(list[dict[str, Any]], parts)
        data = {name: np.concatenate([np.asarray(p.pop(name)) for p in owned]) for name in columns}
        parts.clear()
    else:
        data = {name: np.concatenate([np.asarray(p[name]) for p in parts]) for name in columns}
    rows = order(data) if order is not None else None
    typed: dict[str, Any] = {}
    for name, dtype in columns.items():  # one column at a time: put in order, typed, the source freed
        values = data.pop(name)
        if rows is not None:
            values = values[rows]
        typed[name] = (pd.array(values, dtype=dtype) if dtype != "float64"  # type: ignore[call-overload]
                       else values.astype(np.float64, copy=False))
        del values
    return pd.DataFrame(typed, columns=list(columns), copy=False)


def concat_frames(frames: Sequence[pd.DataFrame], columns: Mapping[str, str], consume: bool = False) -> pd.DataFrame:
    """Pieces of one table (chunks, or the parts of several captures; same columns and dtypes) as one frame
    with a fresh index; an empty frame with ``columns`` when there are none. ``consume`` (``frames`` must
    then be a list, and the pieces are the caller's to give up): the list is emptied and the table is built
    column by column, each column deleted from the pieces once copied, so that the pieces and the whole do
    not both exist (a million connection rows: about 700 MB less at the peak)."""
    if not frames:
        return empty_frame(columns)
    kept = [f for f in frames if len(f)] or list(frames[:1])
    if len(kept) == 1:
        return kept[0].reset_index(drop=True)
    if not consume:
        return pd.concat(kept, ignore_index=True)
    assert isinstance(frames, list)
    frames.clear()
    out: dict[str, pd.Series] = {}
    for name in list(kept[0].columns):
        out[name] = pd.concat([f[name] for f in kept], ignore_index=True)
        for f in kept:
            del f[name]
    return pd.DataFrame(out, copy=False)


def keys_of_chunks(chunks: Iterable[pd.DataFrame],
                   keys: Callable[[pd.DataFrame], dict[str, Any]]) -> dict[str, Any]:
    """``keys`` of each chunk (arrays of one value per row: numpy, or Arrow strings from
    ``arrow_strings``), concatenated in the chunks' order."""
    parts: dict[str, list[Any]] = {}
    for chunk in chunks:
        for name, values in keys(chunk).items():
            parts.setdefault(name, []).append(values)
    return {name: pa.concat_arrays(p) if isinstance(p[0], pa.Array) else np.concatenate(p)
            for name, p in parts.items()}


def arrow_strings(values: pd.Series | pd.Index | pd.api.extensions.ExtensionArray | pa.Array
                  | Sequence[str | None]) -> pa.Array:
    """A column of strings (or a sequence of ``str``/``None``; missing: null) as one Arrow ``large_string``
    array, without a Python object per value when the column is one of the tables' string columns
    (Arrow-backed already): a million uids as Python strings cost about 80 MiB, as Arrow about 24."""
    if isinstance(values, pa.Array):
        return values if values.type == pa.large_string() else values.cast(pa.large_string())
    if isinstance(values, (pd.Series, pd.Index)):
        values = values.array if isinstance(values.dtype, pd.StringDtype) else values.astype("string").array
    if isinstance(values, pd.arrays.ArrowStringArray):
        arrow = values.__arrow_array__()
        if isinstance(arrow, pa.ChunkedArray):
            arrow = arrow.combine_chunks()
        return arrow.cast(pa.large_string())
    return pa.array(np.asarray(values, dtype=object), type=pa.large_string(), from_pandas=True)


def assemble(chunks: Iterable[pd.DataFrame], rows: int, columns: Mapping[str, str],
             order: np.ndarray) -> pd.DataFrame:
    """One table from its ``chunks`` (``rows`` rows in all, the ``columns`` in order; a chunk may hold
    others, which are passed over), its row ``i`` being row ``order[i]`` of the chunks one after the other,
    with the declared dtypes.

    Built column by column as the chunks come (the caller lets go of each chunk once it is read): numbers
    and flags go straight to their final rows (arrays made once, at full size), and the
    other columns (strings) are put in order once all their pieces are in, one column after another. So
    the peak is about the table plus one chunk, where joining the chunks and then reordering held the table
    twice over (a million connections: about 550 MiB less)."""
    if not rows:
        return empty_frame(columns)
    destination = np.empty(rows, dtype=np.int64)  # row of the chunks → its row in the table
    destination[order] = np.arange(rows, dtype=np.int64)
    builders = {name: _ColumnBuilder(pd.api.types.pandas_dtype(dtype), rows) for name, dtype in columns.items()}
    start = 0
    for chunk in chunks:
        placed = destination[start:start + len(chunk)]
        start += len(chunk)
        for name, builder in builders.items():  # the chunk may hold more columns: only these are read
            builder.place(chunk[name], placed)
    if start != rows:
        raise ValueError(f"assemble(): the chunks hold {start} rows, not {rows}")
    return pd.DataFrame({name: builders.pop(name).finish(order) for name in list(columns)},
                        index=pd.RangeIndex(rows), copy=False)  # (the index keeps the rows of no columns)


_MASKED = (pd.arrays.IntegerArray, pd.arrays.FloatingArray, pd.arrays.BooleanArray)


class _ColumnBuilder:
    """One column of ``assemble`` filled chunk by chunk: numpy and masked (nullable) dtypes in
    arrays of the final size, others (strings) as pieces put in order at the end."""

    def __init__(self, dtype: Any, rows: int) -> None:
        self.dtype = dtype
        self.values: np.ndarray | None = None
        self.mask: np.ndarray | None = None
        self.pieces: list[pd.Series] = []
        self.masked: Any = None  # the masked array type (IntegerArray, ...): made from values and mask
        empty: Any = pd.array([], dtype=dtype)
        if isinstance(dtype, np.dtype):
            self.values = np.empty(rows, dtype=dtype)
        elif isinstance(empty, _MASKED):
            self.masked = type(empty)
            masked_dtype: Any = empty.dtype
            self.values = np.empty(rows, dtype=masked_dtype.numpy_dtype)
            self.mask = np.empty(rows, dtype=bool)

    def place(self, column: pd.Series, rows: np.ndarray) -> None:
        if self.values is None:
            self.pieces.append(column)
        elif self.mask is None:
            self.values[rows] = column.to_numpy(dtype=self.values.dtype)
        else:
            array = column.astype(self.dtype).array
            self.values[rows] = array.to_numpy(dtype=self.values.dtype, na_value=self.values.dtype.type(0))
            self.mask[rows] = array.isna()

    def finish(self, order: np.ndarray) -> pd.Series:
        if self.values is None:
            pieces, self.pieces = self.pieces, []
            whole = pd.concat(pieces, ignore_index=True) if len(pieces) > 1 else pieces[0]
            del pieces
            return whole.take(order).reset_index(drop=True).astype(self.dtype)
        if self.mask is None:
            return pd.Series(self.values, copy=False)
        return pd.Series(self.masked(self.values, self.mask), copy=False)


def empty_frame(columns: Mapping[str, str]) -> pd.DataFrame:
    """An empty DataFrame with the declared columns and dtypes."""
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in columns.items()})
