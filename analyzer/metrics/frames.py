"""Column helpers shared by the metric modules and the report.

This module owns the handling of the nullable dtypes of ``analyzer.tables`` (``<NA>`` booleans and
strings, ``Int64``, ``NaN`` floats) so that metric code can work on plain numpy arrays, the naming of a
server endpoint (``ip:port``), and the conversion of results to JSON-safe Python scalars. It knows nothing
about what the columns mean.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.tables import arrow_strings


def flags(series: pd.Series) -> np.ndarray:
    """A nullable boolean column as a numpy bool array, missing values as False."""
    if len(series) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(series.astype("boolean").fillna(False).to_numpy(dtype=bool), dtype=bool)


def known_false(series: pd.Series) -> np.ndarray:
    """True where a nullable boolean column is known to be False (missing values are not)."""
    if len(series) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray((~series.astype("boolean")).fillna(False).to_numpy(dtype=bool), dtype=bool)


def equals(series: pd.Series, value: str) -> np.ndarray:
    """``series == value`` as a numpy bool array, missing values as False."""
    if len(series) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(series.eq(value).fillna(False).to_numpy(dtype=bool), dtype=bool)


def floats(series: pd.Series) -> np.ndarray:
    """A numeric column (float or nullable integer) as float64 with NaN for missing values."""
    return np.asarray(pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan))


def texts(series: pd.Series) -> list[str | None]:
    """A string (or integer) column as a list of ``str`` or ``None``: one ``str`` object per distinct value
    (a column of a million rows with a few thousand addresses costs a million pointers, not a million
    strings)."""
    return list(shared_strings(series).tolist())


def shared_strings(series: pd.Series) -> np.ndarray:
    """``texts`` as an object array."""
    if len(series) == 0:
        return np.zeros(0, dtype=object)
    if isinstance(series.dtype, pd.CategoricalDtype):  # its codes as they are (a string per row otherwise)
        codes, uniques = series.cat.codes.to_numpy(), series.cat.categories
    else:
        codes, uniques = pd.factorize(series.astype("string"))
    values = np.array([*object_strings(pd.Series(uniques, dtype="string")).tolist(), None],  # code -1: None
                      dtype=object)
    return np.asarray(values[codes], dtype=object)


def object_strings(series: pd.Series) -> np.ndarray:
    """A string column as an object array of ``str`` with ``None`` for missing values."""
    values = np.asarray(series.to_numpy(dtype=object), dtype=object)
    values[series.isna().to_numpy()] = None
    return values


def pair_codes(first: pd.Series | Sequence[Any] | np.ndarray, second: pd.Series | Sequence[Any] | np.ndarray
               ) -> np.ndarray:
    """One integer per row for its (first, second) pair, numbered in order of first appearance (a missing
    value is a value of its own): what factorizing ``f"{first}|{second}"`` gives, without a string per row
    (a string column given as a ``Series`` is factorized as it is: no ``str`` per distinct value either)."""
    a = _codes(first)
    b = _codes(second)
    b_uniques = range(int(b.max()) + 1 if b.size else 0)
    codes, _ = pd.factorize(a.astype(np.int64) * (len(b_uniques) + 1) + b.astype(np.int64))
    return np.asarray(codes, dtype=np.int64)


def _codes(values: pd.Series | Sequence[Any] | np.ndarray) -> np.ndarray:
    """Codes in order of first appearance, a missing value a value of its own (numbered like the others)."""
    if isinstance(values, pd.Series):
        codes, _ = pd.factorize(values.astype("string"), use_na_sentinel=True)
        missing = codes < 0
        if missing.any():  # number the missing value where it first appears, as use_na_sentinel=False
            codes, _ = pd.factorize(np.where(missing, np.iinfo(np.int64).max, codes.astype(np.int64)))
        return np.asarray(codes, dtype=np.int64)
    codes, _ = pd.factorize(np.array(values, dtype=object), use_na_sentinel=False)
    return np.asarray(codes, dtype=np.int64)


def positions(keys: pd.Series | pa.Array | Sequence[str | None],
              queries: pd.Series | pa.Array | Sequence[str | None]) -> np.ndarray:
    """For each query, the position of the first equal key (-1 when absent or missing), as ``int64``.

    String columns are matched as Arrow arrays (``pyarrow.compute.index_in``), without a Python ``str``
    per row: on a million connections' uids that is 0.4 s and no garbage, where an index of ``str``
    objects cost 2 s and about 150 MiB of heap that stayed fragmented."""
    found = pc.index_in(arrow_strings(queries), value_set=arrow_strings(keys), skip_nulls=True)
    return np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def sorted_codes(values: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Per row of a string column without nulls, the rank of its value among the distinct values in sorted
    order (code point order, as Python compares ``str``), and those values in that order:
    ``pd.factorize(values, sort=True)`` without a ``str`` object per row or per value (for the keep-alive
    what-if, whose pairs of a million client addresses were named by Python strings)."""
    encoded = pc.dictionary_encode(values)
    order = np.asarray(pc.array_sort_indices(encoded.dictionary), dtype=np.int64)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[np.asarray(encoded.indices, dtype=np.int64)], encoded.dictionary.take(pa.array(order))


def first_valid(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """For the runs of ``values`` that begin at ``starts`` (strictly ascending, the first 0; each run goes on
    to the next start), each run's first value that is not NaN, NaN when it has none: what a ``groupby``'s
    ``first`` gives over contiguous groups, without building the groups."""
    n = len(values)
    valid_at_or_after = np.minimum.accumulate(np.where(np.isnan(values), n, np.arange(n))[::-1])[::-1]
    found = valid_at_or_after[starts] if n else np.zeros(0, dtype=np.int64)
    ok = found < np.append(starts[1:], n)
    out = np.full(len(starts), np.nan)
    out[ok] = values[found[ok]]
    return out


def last_valid(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``first_valid``'s twin: each run's last value that is not NaN (a ``groupby``'s ``last``)."""
    n = len(values)
    valid_at_or_before = np.maximum.accumulate(np.where(np.isnan(values), -1, np.arange(n)))
    found = valid_at_or_before[np.append(starts[1:], n) - 1] if n else np.zeros(0, dtype=np.int64)
    ok = found >= starts
    out = np.full(len(starts), np.nan)
    out[ok] = values[found[ok]]
    return out


def grouped_order(groups: np.ndarray, *keys: np.ndarray, nan_first: bool = True) -> np.ndarray:
    """The stable order of rows by ``groups`` (integers), then by each of ``keys`` in turn (floats, NaN
    first or last): what ``sort_values([group, *keys], kind="stable", na_position=...)`` gives."""
    columns: list[np.ndarray] = [np.arange(len(groups))]
    for key in reversed(keys):
        missing = np.isnan(key)
        columns += [np.where(missing, 0.0, key), ~missing if nan_first else missing]
    return np.lexsort((*columns, groups))


def last_of_group(groups: np.ndarray) -> np.ndarray:
    """For rows sorted by ``groups``: True on the last row of each group."""
    return np.append(groups[1:] != groups[:-1], True) if len(groups) else np.zeros(0, dtype=bool)


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def endpoint(ip: Any, port: Any) -> str:
    """``ip:port`` (``[ip]:port`` for IPv6); ``?`` for a missing part."""
    ip_text = "?" if _missing(ip) else str(ip)
    port_text = "?" if _missing(port) else str(int(port))
    if ":" in ip_text:
        ip_text = f"[{ip_text}]"
    return f"{ip_text}:{port_text}"


def endpoints(ips: pd.Series, ports: pd.Series) -> list[str]:
    """``endpoint`` for each row of two columns (vectorized)."""
    if len(ips) == 0:
        return []
    ip_codes, ip_uniques = pd.factorize(ips.astype("string"))  # distinct pairs are named once, then shared
    port_codes, port_uniques = pd.factorize(pd.to_numeric(ports, errors="coerce").astype("Int64"))
    width = len(port_uniques) + 1
    pair_codes, pairs = pd.factorize((ip_codes.astype(np.int64) + 1) * width + (port_codes.astype(np.int64) + 1))
    ip_of, port_of = np.divmod(np.asarray(pairs, dtype=np.int64), width)
    ip_text = ["?", *(str(v) for v in ip_uniques)]  # index 0: missing
    port_text = ["?", *(str(v) for v in port_uniques)]
    names = [f"[{ip_text[i]}]:{port_text[p]}" if ":" in ip_text[i] else f"{ip_text[i]}:{port_text[p]}"
             for i, p in zip(ip_of.tolist(), port_of.tolist(), strict=True)]
    return list(np.array(names, dtype=object)[pair_codes].tolist())


def json_float(value: Any, ndigits: int = 3) -> float | None:
    """A finite number rounded to ``ndigits`` as ``float``; ``None`` for missing, NaN or infinite."""
    if _missing(value):
        return None
    number = float(value)
    if not math.isfinite(number):
        return None
    return round(number, ndigits)


def json_int(value: Any) -> int | None:
    """An integer as ``int``; ``None`` for missing."""
    if _missing(value):
        return None
    number = float(value)
    return int(number) if math.isfinite(number) else None


def nan_median(values: Iterable[float] | np.ndarray) -> float:
    """Median ignoring NaN; NaN when nothing is left (no RuntimeWarning)."""
    array = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    array = array[~np.isnan(array)]
    return float(np.median(array)) if array.size else math.nan


def nan_quantile(values: np.ndarray, q: float) -> float:
    """Quantile ignoring NaN (linear interpolation); NaN when nothing is left."""
    array = np.asarray(values, dtype=float)
    array = array[~np.isnan(array)]
    return float(np.quantile(array, q)) if array.size else math.nan
