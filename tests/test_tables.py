"""The DataFrame builders of ``analyzer.tables``: rows (mappings or tuples) become exactly the schema's
columns and dtypes, as ``DataFrame(...).astype(columns)`` would make them, whatever the rows' key order."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.tables import (
    ANOMALY_COLUMNS,
    CONNECTION_COLUMNS,
    TRANSACTION_COLUMNS,
    frame_from_rows,
    frame_from_tuples,
)


def reference(rows: list[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
    """The plain way: a list of ``row.get(name)`` per column, then ``astype``."""
    names = list(columns)
    return pd.DataFrame({name: [row.get(name) for row in rows] for name in names},
                        columns=names).astype(columns)


def _value(dtype: str) -> st.SearchStrategy[Any]:
    return {
        "string": st.text(max_size=8),
        "Int64": st.integers(-(2**53), 2**53),  # beyond, the reference loses digits (see below)
        "float64": st.floats(allow_nan=True, allow_infinity=True),
        "boolean": st.booleans(),
    }[dtype] | st.none()


@st.composite
def rows_of(draw: st.DrawFn, columns: dict[str, str]) -> list[dict[str, Any]]:
    names = list(columns)
    orders = draw(st.lists(st.permutations(names), min_size=1, max_size=12))  # some rows drop keys
    count = draw(st.integers(1, 40))
    rows = []
    for i in range(count):
        order = orders[i % len(orders)]
        keep = draw(st.integers(0, len(order)))
        rows.append({name: draw(_value(columns[name])) for name in order[:keep]})
    return rows


@settings(max_examples=150, deadline=None)
@given(rows_of(ANOMALY_COLUMNS | {"n": "Int64", "ok": "boolean"}))
def test_rows_in_any_key_order_give_the_reference_frame(rows: list[dict[str, Any]]) -> None:
    columns = ANOMALY_COLUMNS | {"n": "Int64", "ok": "boolean"}
    pd.testing.assert_frame_equal(frame_from_rows(rows, columns), reference(rows, columns))


def test_one_key_order_several_and_many() -> None:
    base = {name: None for name in CONNECTION_COLUMNS} | {"uid": "C1", "ts_start": 1.5, "requests": 3,
                                                           "syn_seen": True, "client_port": 40000}
    one = [dict(base, uid=f"C{i}", requests=i) for i in range(50)]
    reordered = [dict(reversed(list(r.items()))) if i % 3 else r for i, r in enumerate(one)]
    many = [dict(sorted(r.items(), key=lambda kv, i=i: hash((kv[0], i)))) for i, r in enumerate(one)]  # type: ignore[misc]
    odd: list[dict[str, Any]] = [{"uid": "x"}, {}, {"requests": 2}]
    for rows in (one, reordered, many, odd):
        pd.testing.assert_frame_equal(frame_from_rows(rows, CONNECTION_COLUMNS), reference(rows, CONNECTION_COLUMNS))


def test_values_arrow_refuses_are_converted_as_pandas_does() -> None:
    rows: list[dict[str, Any]] = [{"uid": 5, "ts": 1, "name": "a"},
                                  {"uid": "b", "ts": np.float32(2.5), "detail": np.str_("d")}]
    pd.testing.assert_frame_equal(frame_from_rows(rows, ANOMALY_COLUMNS), reference(rows, ANOMALY_COLUMNS))
    ints: list[dict[str, Any]] = [{"trans_depth": 1.0}, {"trans_depth": np.int64(2)}, {"trans_depth": None}]
    pd.testing.assert_frame_equal(frame_from_rows(ints, TRANSACTION_COLUMNS), reference(ints, TRANSACTION_COLUMNS))


def test_integers_beyond_float_precision_are_kept_exactly() -> None:
    """Where ``DataFrame(rows)`` went through float64 (a column with missing values), 2**53 + 1 became
    2**53; Arrow converts the Python ints themselves."""
    rows: list[dict[str, Any]] = [{"trans_depth": None}, {"trans_depth": 2**53 + 1}, {"trans_depth": -(2**63)}]
    assert frame_from_rows(rows, TRANSACTION_COLUMNS)["trans_depth"].tolist() == [pd.NA, 2**53 + 1, -(2**63)]


def test_unknown_keys_are_an_error_and_no_rows_an_empty_frame() -> None:
    with pytest.raises(KeyError, match="bogus"):
        frame_from_rows([{"uid": "a"}, {"uid": "b", "bogus": 1}], ANOMALY_COLUMNS)
    empty = frame_from_rows([], ANOMALY_COLUMNS)
    assert list(empty.columns) == list(ANOMALY_COLUMNS) and empty.empty
    assert frame_from_tuples([], ANOMALY_COLUMNS).dtypes.equals(empty.dtypes)


def test_tuples_give_the_reference_frame() -> None:
    rows = [("C1", 1.5, "gap", None), (None, None, None, "d"), ("C2", float("nan"), "x", "é\x00")]
    as_dicts = [dict(zip(ANOMALY_COLUMNS, r, strict=True)) for r in rows]
    pd.testing.assert_frame_equal(frame_from_tuples(rows, ANOMALY_COLUMNS), reference(as_dicts, ANOMALY_COLUMNS))
    with pytest.raises(ValueError, match="4 columns"):
        frame_from_tuples([("a", 1.0)], ANOMALY_COLUMNS)


def test_float_columns_are_writable_numpy() -> None:
    frame = frame_from_tuples([("C1", 1.5, "gap", None)], ANOMALY_COLUMNS)
    assert frame["ts"].dtype == np.float64
    frame.loc[0, "ts"] = 2.0
    assert frame["ts"].tolist() == [2.0]
