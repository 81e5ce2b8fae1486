"""Tables spilled to disk while a capture is analyzed (``analyzer.spill``, ``Session(spill=)``, used by
``analyzer export`` and ``summary``).

The bar: spilling changes nothing a user sees. The tables read back equal those held in memory, row for
row and dtype for dtype, and the exported files (CSV and JSON byte for byte, Parquet read back) equal those
written from an analysis held in memory. The chunk and block sizes are made tiny here, so that every table
is spread over many chunks and gathered back across them.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import analyzer
from analyzer import pipeline, spill
from analyzer.cli import _clean, _clean_tree, _json_default, app, write_export
from analyzer.spill import Spill, SpilledTable
from analyzer.tables import ANOMALY_COLUMNS, FLIGHT_COLUMNS, TABLES, empty_frame, frame_from_rows
from tests.hostile import generate

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "captures"
SAMPLES = ("keepalive-idle-timeout.pcap", "pipelining.pcap", "h2c.pcap", "close-race.pcap")
SPILLED = ("connections", "transactions", "anomalies", "flights", "segments")


@pytest.fixture
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "ROWS_PER_CHUNK", 3)
    monkeypatch.setattr(pipeline, "SPILL_ROWS", 7)
    monkeypatch.setattr(spill, "BLOCK_ROWS", 5)
    monkeypatch.setattr(spill, "CACHED_CHUNKS", 2)


@pytest.fixture(scope="module")
def hostile_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Connections with anomalies (absurd Content-Length values): 36 connections, 80 anomaly rows."""
    path = tmp_path_factory.mktemp("spill") / "absurd.pcap"
    generate.absurd_content_length(path, repeat=4)
    return path


def _flights(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [{"uid": f"C{rng.integers(0, 9)}", "trans_depth": int(rng.integers(1, 4)), "round": i,
             "bytes": int(rng.integers(0, 10**6)), "warmth": None if i % 5 else "cold"} for i in range(n)]
    return frame_from_rows(rows, FLIGHT_COLUMNS)


@pytest.mark.parametrize("order_kind", ["written", "reversed", "random", "nearly sorted"])
def test_spilled_table_gives_its_rows_back_in_any_order(tmp_path: Path, order_kind: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spill, "CACHED_CHUNKS", 2)
    whole = _flights(200, seed=1)
    table = Spill(tmp_path).table("flights", FLIGHT_COLUMNS)
    slices = [(0, 17), (17, 17), (60, 61), (61, 150), (150, 200), (17, 60)]  # uneven, one empty, not in order
    for a, b in slices:
        table.append(whole.iloc[a:b])
    assert len(table) == 200
    written = pd.concat([whole.iloc[a:b] for a, b in slices], ignore_index=True)
    rng = np.random.default_rng(7)
    order = {"written": None, "reversed": np.arange(len(written))[::-1].copy(),
             "random": rng.permutation(len(written)),
             "nearly sorted": np.argsort(np.arange(len(written)) + rng.integers(0, 30, len(written)),
                                         kind="stable")}[order_kind]
    table.order = order
    expected = written if order is None else written.iloc[order].reset_index(drop=True)
    for block_rows in (1, 7, 64, 1000):
        blocks = list(table.blocks(block_rows))
        assert all(len(b) <= block_rows for b in blocks)
        pd.testing.assert_frame_equal(pd.concat(blocks, ignore_index=True), expected)
    pd.testing.assert_frame_equal(table.frame(), expected)
    cols = table.columns_of(["uid", "round", "warmth"])
    assert cols["uid"].tolist() == written["uid"].tolist()
    assert cols["round"].dtype == np.float64 and cols["round"].tolist() == written["round"].tolist()
    assert [v is pd.NA for v in cols["warmth"]] == written["warmth"].isna().tolist()


@pytest.mark.parametrize("capture", ["tls.pcap", "midstream.pcap", "close-race.pcap"])
def test_spilled_frame_keeps_every_dtype_and_missing_value(tmp_path: Path, capture: str) -> None:
    """``SpilledTable.frame`` fills numbers, nullable integers and flags in place and puts strings in
    order: the connection and transaction tables come back equal, missing values and dtypes included,
    in any order and with uids renamed."""
    from analyzer.tables import CONNECTION_COLUMNS, TRANSACTION_COLUMNS

    a = analyzer.analyze(CAPTURES / capture)
    rng = np.random.default_rng(3)
    for name, whole, columns in (("connections", a.connections, CONNECTION_COLUMNS),
                                 ("transactions", a.transactions, TRANSACTION_COLUMNS)):
        assert whole.isna().any().any()  # missing values of some kind in play
        table = Spill(tmp_path).table(name, columns)
        cuts = sorted({0, len(whole), *rng.integers(0, len(whole) + 1, 3).tolist()})
        for lo, hi in itertools.pairwise(cuts):
            table.append(whole.iloc[lo:hi])
        table.order = rng.permutation(len(whole))
        expected = whole.iloc[table.order].reset_index(drop=True)
        got = table.frame()
        pd.testing.assert_frame_equal(got, expected)
        assert got.dtypes.astype(str).tolist() == [str(pd.api.types.pandas_dtype(d)) for d in columns.values()]
        held = pipeline.HeldChunks([whole.iloc[lo:hi].copy() for lo, hi in itertools.pairwise(cuts)], columns)
        held.order = table.order
        pd.testing.assert_frame_equal(held.frame(), expected)  # the same, from chunks held in memory
        first = str(whole["uid"].iloc[0])
        renamed = table.renamed({first: "renamed"})
        renamed.order = table.order
        assert (renamed.frame()["uid"] == "renamed").sum() == (whole["uid"] == first).sum()


def test_assemble_checks_the_row_count() -> None:
    from analyzer.tables import assemble

    chunk = _flights(5, seed=4)
    with pytest.raises(ValueError, match="hold 5 rows, not 6"):
        assemble([chunk], 6, FLIGHT_COLUMNS, np.arange(6))
    assert assemble([], 0, FLIGHT_COLUMNS, np.arange(0)).columns.tolist() == list(FLIGHT_COLUMNS)


def test_spilled_table_refuses_other_columns_and_skips_empty_chunks(tmp_path: Path) -> None:
    table = Spill(tmp_path).table("anomalies", ANOMALY_COLUMNS)
    table.append(empty_frame(ANOMALY_COLUMNS))
    assert len(table) == 0 and not table.path.exists()
    assert table.frame().empty and list(table.frame().columns) == list(ANOMALY_COLUMNS)
    with pytest.raises(ValueError, match="columns"):
        table.append(_flights(3, seed=2))


def _spilled(path: Path, spill_dir: Path, **kw: object) -> analyzer.Analysis:
    spill_dir.mkdir(exist_ok=True)
    return pipeline.analyze(str(path), spill_dir=spill_dir, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [*SAMPLES, "absurd"])
def test_a_spilled_analysis_equals_one_held_in_memory(name: str, tiny_chunks: None, tmp_path: Path,
                                                      hostile_capture: Path) -> None:
    path = hostile_capture if name == "absurd" else CAPTURES / name
    held = analyzer.analyze(str(path))
    spilled = _spilled(path, tmp_path / "spill")
    assert spilled.summary == held.summary
    assert set(spilled.spilled) == set(SPILLED)
    for table in SPILLED:
        assert getattr(spilled, table).empty
        pd.testing.assert_frame_equal(spilled.table(table), getattr(held, table), obj=table)
    assert len(held.flights) > pipeline.SPILL_ROWS and len(held.segments) > pipeline.SPILL_ROWS
    if name == "absurd":
        assert len(held.anomalies) > 10 * pipeline.ROWS_PER_CHUNK


@pytest.fixture
def chunks_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the spilled tables whose chunks are read (one entry per chunk read), from now on."""
    read: list[str] = []
    real_chunk = SpilledTable._chunk

    def counted(self: SpilledTable, i: int) -> pd.DataFrame:
        read.append(self.path.stem)
        return real_chunk(self, i)

    monkeypatch.setattr(SpilledTable, "_chunk", counted)
    return read


def test_in_memory_reads_back_only_the_columns_asked_for(tiny_chunks: None, tmp_path: Path,
                                                          chunks_read: list[str]) -> None:
    """``Analysis.in_memory(columns)`` (``analyzer report``: each step only the columns it reads) gives, for
    each table named, those columns in the table's order, equal to the held ones; a table not named comes
    whole. One named with no columns comes as its rows without columns, without reading a chunk of it. The
    same for an analysis held in memory."""
    path = CAPTURES / "keepalive-idle-timeout.pcap"
    held = analyzer.analyze(str(path))
    asked = {"connections": ["server_bytes", "uid", "no_such_column"], "transactions": ["status"],
             "segments": []}
    spilled = _spilled(path, tmp_path / "spill")
    chunks_read.clear()  # (spilling read some, to put the tables in order)
    for analysis in (spilled, held):
        back = analysis.in_memory(asked)
        assert not back.spilled and back.summary == held.summary
        assert list(back.connections.columns) == ["uid", "server_bytes"]
        pd.testing.assert_frame_equal(back.connections, held.connections[["uid", "server_bytes"]])
        pd.testing.assert_frame_equal(back.transactions, held.transactions[["status"]])
        assert back.segments.shape == (len(held.segments), 0) and len(held.segments)
        for name in ("anomalies", "flights"):
            pd.testing.assert_frame_equal(back.table(name), held.table(name), obj=name)
    assert {"connections", "transactions", "flights"} <= set(chunks_read)
    assert "segments" not in chunks_read and spilled.spilled["segments"]._chunks
    assert held.in_memory() is held


def test_held_reads_back_only_the_columns_asked_for(tiny_chunks: None, tmp_path: Path,
                                                    chunks_read: list[str]) -> None:
    """``Analysis.held(columns)`` (the summary's figures, a group at a time) gives the connections and
    transactions with those columns; one not named, or named with none, comes as its rows without columns,
    without reading a chunk of it (the pools' group names connections only). The other tables stay on disk."""
    path = CAPTURES / "keepalive-idle-timeout.pcap"
    held = analyzer.analyze(str(path))
    spilled = _spilled(path, tmp_path / "spill")
    for asked in ({"connections": ["uid", "ts_start"]}, {"connections": ["uid", "ts_start"], "transactions": []}):
        chunks_read.clear()
        back = spilled.held(asked)
        pd.testing.assert_frame_equal(back.connections, held.connections[["uid", "ts_start"]])
        assert back.transactions.shape == (len(held.transactions), 0) and len(held.transactions)
        assert set(chunks_read) == {"connections"} and set(back.spilled) == {"anomalies", "flights", "segments"}


def test_in_memory_keeps_the_rows_asked_for_a_block_at_a_time(tiny_chunks: None, tmp_path: Path,
                                                              hostile_capture: Path) -> None:
    """``Analysis.in_memory(rows=)`` (``analyzer report``: of the anomalies, only the first examples of each
    name) reads a spilled table a block at a time (5 rows here) and gives the rows the function keeps of
    the whole table held in memory; the other tables come whole."""
    from analyzer.report.html import ANOMALY_EXAMPLES, anomaly_examples, report_rows

    held = analyzer.analyze(str(hostile_capture))
    names = held.anomalies["name"]
    per_name = names.value_counts()
    assert per_name.max() > 5 * ANOMALY_EXAMPLES and len(per_name) > 1  # examples from several blocks
    examples = anomaly_examples(held.anomalies)
    assert len(examples) == sum(min(n, ANOMALY_EXAMPLES) for n in per_name)
    for name in per_name.index:  # the first rows of each name, in the table's order
        pd.testing.assert_frame_equal(examples[examples["name"] == name].reset_index(drop=True),
                                      held.anomalies[names == name].head(ANOMALY_EXAMPLES).reset_index(drop=True))
    one_uid = held.anomalies["uid"].iloc[-1]

    def of_one(frame: pd.DataFrame) -> pd.DataFrame:  # a test of each row
        return frame[frame["uid"] == one_uid].reset_index(drop=True)

    for analysis in (_spilled(hostile_capture, tmp_path / "spill"), held):
        back = analysis.in_memory({"anomalies": ["ts", "name", "uid"]}, report_rows())
        pd.testing.assert_frame_equal(back.anomalies, examples[["uid", "ts", "name"]])
        pd.testing.assert_frame_equal(back.connections, held.connections)
        assert back.summary["anomalies"] == per_name.sort_index().to_dict()  # every row counted
        pd.testing.assert_frame_equal(analysis.in_memory(rows={"anomalies": of_one}).anomalies, of_one(held.anomalies))


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet", "partitioned", "har"])
def test_export_of_a_spilled_analysis_writes_the_same_files(fmt: str, tiny_chunks: None, tmp_path: Path,
                                                            hostile_capture: Path) -> None:
    """Redacted (the default) and with the series; the spilled tables are written block by block."""
    for path in (hostile_capture, CAPTURES / "keepalive-idle-timeout.pcap"):
        held = analyzer.analyze(str(path))
        spilled = _spilled(path, tmp_path / f"spill-{path.stem}")
        kind = "parquet" if fmt == "partitioned" else fmt
        a, b = tmp_path / f"held-{path.stem}.{fmt}", tmp_path / f"spilled-{path.stem}.{fmt}"
        write_export(held, a, kind, segments=True, partitioned=fmt == "partitioned")
        write_export(spilled, b, kind, segments=True, partitioned=fmt == "partitioned")
        if kind == "parquet":  # partitioned: file names are random, one directory per capture
            files = sorted(p.relative_to(a).parent for p in a.rglob("*.parquet"))
            assert files and files == sorted(p.relative_to(b).parent for p in b.rglob("*.parquet"))
            for name in (sorted(a.glob("*.parquet")) if fmt == "parquet" else sorted(a.iterdir())):
                if name.suffix != ".json":
                    pd.testing.assert_frame_equal(pd.read_parquet(name), pd.read_parquet(b / name.name),
                                                  obj=name.name)
            assert (a / "summary.json").read_bytes() == (b / "summary.json").read_bytes()
            continue
        files = sorted(p.relative_to(a) for p in a.rglob("*")) if a.is_dir() else [Path()]
        for name in files:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def _records(df: pd.DataFrame) -> list[dict[str, object]]:
    """The rows of a table as the JSON document holds them (the export writes them faster, by column)."""
    known = {n for cols in TABLES.values() for n in cols}
    names = [n for n in df.columns if n in known]
    return [{k: _clean(v) for k, v in zip(names, row, strict=True)}
            for row in df[names].astype(object).itertuples(index=False, name=None)]


def test_json_export_is_the_document_json_dumps_writes(tmp_path: Path, hostile_capture: Path,
                                                       tiny_chunks: None) -> None:
    """The JSON is written a block at a time; it is exactly ``json.dumps(doc, indent=1)`` of the whole."""
    result = _spilled(hostile_capture, tmp_path / "spill")
    out = tmp_path / "x.json"
    write_export(result, out, "json", redact=False)
    doc = {"summary": _clean_tree(result.summary),
           **{name: _records(result.table(name)) for name in ("connections", "transactions", "anomalies",
                                                               "flights")}}
    assert doc["anomalies"] and doc["flights"]
    assert out.read_text() == json.dumps(doc, indent=1, default=_json_default, allow_nan=False) + "\n"


def _assert_same(spilled: analyzer.Analysis, held: analyzer.Analysis) -> None:
    assert spilled.summary == held.summary
    for table in SPILLED:
        pd.testing.assert_frame_equal(spilled.table(table), getattr(held, table), obj=table)


@pytest.mark.parametrize("in_child", [False, True])
def test_several_captures_spilled_equal_them_held(in_child: bool, tiny_chunks: None, tmp_path: Path,
                                                  hostile_capture: Path) -> None:
    """One spill directory per capture, joined by ``combine`` with the uids of a capture given twice
    renamed in the spilled tables too; each capture read in a child process of its own, or here."""
    paths = [str(hostile_capture), str(CAPTURES / "pipelining.pcap"), str(CAPTURES / "h2c.pcap"),
             str(CAPTURES / "pipelining.pcap")]
    held = analyzer.analyze(*paths)
    assert any(u.endswith("-4") for u in held.connections["uid"])  # renamed: the same capture twice
    spilled = pipeline.analyze(*paths, spill_dir=tmp_path, scan_in_child=in_child)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"stream-{i}" for i in range(4)]
    assert set(spilled.spilled) == set(SPILLED)
    _assert_same(spilled, held)
    a, b = tmp_path / "held.csv", tmp_path / "spilled.csv"
    write_export(held, a, "csv", segments=True)
    write_export(spilled, b, "csv", segments=True)
    for name in sorted(p.name for p in a.iterdir()):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_stitched_pieces_spilled_equal_them_held(tmp_path: Path) -> None:
    path = str(CAPTURES / "pipelining.pcap")
    held = analyzer.analyze(path, path, stitch=True)
    _assert_same(pipeline.analyze(path, path, spill_dir=tmp_path, stitch=True, scan_in_child=True), held)


def test_a_process_pool_spills_each_part_and_combines_them(tmp_path: Path, hostile_capture: Path) -> None:
    """``--jobs 2``: each part (a capture, or a flow shard of one) spills to its own directory; the
    parts' spilled tables come back by name and are joined."""
    from analyzer.parallel import analyze_captures

    paths = [hostile_capture, CAPTURES / "keepalive-idle-timeout.pcap"]
    held = analyzer.analyze(*map(str, paths))
    pooled = analyze_captures(paths, jobs=2, spill_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-0", "part-1"]
    _assert_same(pooled, held)
    (tmp_path / "sharded").mkdir()
    one = analyze_captures(paths[:1], jobs=2, spill_dir=tmp_path / "sharded")  # 2 flow shards of one file
    _assert_same(one, analyzer.analyze(str(paths[0])))


def test_a_spilling_session_compacts_its_rows() -> None:
    with pytest.raises(ValueError, match="compact"):
        pipeline.Session(spill=Spill("."))


def test_cli_export_and_summary_spill_and_leave_nothing_behind(tmp_path: Path, hostile_capture: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    seen: list[Path] = []
    children: list[object] = []
    real_child = pipeline._in_child

    class Recorded(tempfile.TemporaryDirectory):
        def __enter__(self) -> str:
            seen.append(Path(self.name))
            return super().__enter__()

    def watched_child(*args: Any) -> pipeline.Session:
        children.append(args)
        return real_child(*args)

    monkeypatch.setattr(tempfile, "TemporaryDirectory", Recorded)
    monkeypatch.setattr(pipeline, "_in_child", watched_child)
    runner = CliRunner()
    done = runner.invoke(app, ["export", str(hostile_capture), "-f", "csv", "-o", str(tmp_path / "csv")])
    assert done.exit_code == 0, done.output
    assert runner.invoke(app, ["summary", str(hostile_capture)]).exit_code == 0
    assert runner.invoke(app, ["report", str(hostile_capture), "-q", "-o", str(tmp_path / "r.html")]).exit_code == 0
    assert len(seen) == 3 and all(p.parent == tmp_path / "tmp" for p in seen)  # the CLI's temporary directory
    assert len(children) == 3  # the capture was read in a child process
    assert not any((tmp_path / "tmp").iterdir())  # removed afterwards
    held = analyzer.analyze(str(hostile_capture))
    anomalies = pd.read_csv(tmp_path / "csv" / "anomalies.csv")
    assert len(anomalies) == len(held.anomalies) > 0
    assert anomalies["name"].tolist() == held.anomalies["name"].tolist()


def test_cli_report_of_a_spilled_analysis_is_the_report_of_one_held(tmp_path: Path, hostile_capture: Path,
                                                                      tiny_chunks: None) -> None:
    """``analyzer report`` reads the capture in a child process, its tables on disk, and reads them back:
    the file is the one written from an analysis held in memory (every table, the series included)."""
    from analyzer.report.html import write_report

    for path in (hostile_capture, CAPTURES / "keepalive-idle-timeout.pcap"):
        cli_out, held_out = tmp_path / f"cli-{path.stem}.html", tmp_path / f"held-{path.stem}.html"
        done = CliRunner().invoke(app, ["report", str(path), "-q", "-o", str(cli_out)])
        assert done.exit_code == 0, done.output
        held = analyzer.analyze(str(path))
        assert len(held.segments) > pipeline.SPILL_ROWS  # the bytes-in-flight chart has its series
        write_report(held, held_out)
        assert cli_out.read_bytes() == held_out.read_bytes()


def test_cli_report_computes_the_summary_metrics_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``analyzer report`` has the capture analyzed without the summary's metric keys (``with_metrics=False``:
    the report computes them with its own tables) and prints the reuse ratio the report computed."""
    import analyzer.combine

    made: list[int] = []
    real = analyzer.combine._with_metrics
    monkeypatch.setattr(analyzer.combine, "_with_metrics", lambda a: made.append(1) or real(a))
    path = CAPTURES / "keepalive-idle-timeout.pcap"
    done = CliRunner().invoke(app, ["report", str(path), "-o", str(tmp_path / "r.html")])
    assert done.exit_code == 0, done.output
    assert made == []
    held = analyzer.analyze(str(path))
    assert made == [1]  # what the parent no longer does
    ratio = held.summary["reuse_ratio"]
    assert isinstance(ratio, float) and 0 < ratio < 1
    assert done.output.strip().endswith(f"reuse ratio {ratio:.2f}")


def _fails_with(error: BaseException) -> pipeline.Session:
    raise error


def test_an_error_in_the_child_is_raised_in_the_parent() -> None:
    from analyzer.errors import AnalyzerError

    with pytest.raises(AnalyzerError, match=r"^bad capture$"):
        pipeline._in_child(lambda _report: _fails_with(AnalyzerError("bad capture")), None)
    with pytest.raises(ZeroDivisionError) as caught:
        pipeline._in_child(lambda _report: _fails_with(ZeroDivisionError("x")), None)
    assert any("in the analysis process" in note and "_fails_with" in note for note in caught.value.__notes__)


def test_a_child_that_dies_is_a_clear_error() -> None:
    import os

    from analyzer.errors import AnalyzerError

    with pytest.raises(AnalyzerError, match=r"ended without a result \(exit code 3"):
        pipeline._in_child(lambda _report: os._exit(3), None)  # type: ignore[func-returns-value]


def test_the_child_reports_progress_through_the_pipe(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    path = CAPTURES / "keepalive-idle-timeout.pcap"
    result = pipeline.analyze(str(path), spill_dir=tmp_path, scan_in_child=True,
                              progress=lambda done, total: seen.append((done, total)))
    size = path.stat().st_size
    assert seen and seen[-1] == (size, size)
    assert result.summary == analyzer.analyze(str(path)).summary


def test_json_rows_are_json_dumps_of_each_record() -> None:
    """``cli._json_rows`` writes each row by column; every kind of column and missing value gives the text
    ``json.dumps(record, indent=1)`` gives, and an infinite number is refused as ``allow_nan=False`` does."""
    from analyzer.cli import _json_rows

    frame = pd.DataFrame({
        "uid": pd.array(["C1", None, "é\u2028\x00<script>\U0001f600", "\"q\"\\"], dtype="string"),
        "requests": pd.array([1, None, -3, 2**40], dtype="Int64"),
        "tls": pd.array([True, None, False, True], dtype="boolean"),
        "ts_start": [0.1, float("nan"), -0.0, 1e300],
        "frame": np.array([1, 2, 3, 4], dtype=np.int64),
        "retransmission": np.array([True, False, True, False]),
        "detail": pd.Series(["a\udcff", None, 3, 2.5], dtype=object),
        "not_a_column": [1, 2, 3, 4],
    })
    names = [c for c in frame.columns if c != "not_a_column"]
    expected = [json.dumps({k: _clean(v) for k, v in zip(names, row, strict=True)}, indent=1,
                           default=_json_default, allow_nan=False).replace("\n", "\n  ")
                for row in frame[names].astype(object).itertuples(index=False, name=None)]
    assert list(_json_rows(frame)) == expected
    assert list(_json_rows(frame.iloc[:0])) == []
    with pytest.raises(ValueError, match="JSON compliant"):
        list(_json_rows(frame.assign(ts_start=[0.0, float("inf"), 1.0, 2.0])))
