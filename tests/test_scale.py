"""Many captures: expansion of files/directories/globs, combining, --jobs, a dask LocalCluster, --stitch,
partitioned Parquet (issue 7).

The bar: how the work is spread never changes the tables. Several captures in one process, in a pool of
two, and on a two-worker ``distributed.LocalCluster`` give equal tables; a real capture cut into rotated
pieces and stitched gives the tables of the uncut capture.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import analyzer
from analyzer.errors import AnalyzerError
from analyzer.metrics import metric_key_names
from analyzer.parallel import analyze_captures, expand_captures

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "captures"
SEVERAL = [CAPTURES / n for n in ("keepalive-idle-timeout.pcap", "pipelining.pcap", "http10-and-close.pcap",
                                  "h2c.pcap", "tls.pcap", "ipv6-pcapng.pcapng")]
TABLES = ("connections", "transactions", "anomalies", "flights", "segments")
CLI = [sys.executable, "-m", "analyzer"]


def _assert_same(a: analyzer.Analysis, b: analyzer.Analysis, drop: tuple[str, ...] = ()) -> None:
    for name in TABLES:
        left, right = getattr(a, name), getattr(b, name)
        cols = [c for c in left.columns if c not in drop]
        pd.testing.assert_frame_equal(left[cols], right[cols], obj=name)


def test_several_captures_are_combined_with_a_capture_column() -> None:
    result = analyzer.analyze(*map(str, SEVERAL))
    assert result.summary["captures"] == [p.name for p in SEVERAL]
    alone = [analyzer.analyze(str(p)) for p in SEVERAL]
    assert len(result.connections) == sum(len(a.connections) for a in alone)
    assert result.summary["packets_read"] == sum(a.summary["packets_read"] for a in alone)
    assert result.summary["transactions"] == sum(a.summary["transactions"] for a in alone)
    for path, part in zip(SEVERAL, alone, strict=True):
        mine = result.connections[result.connections["capture"] == path.name]
        assert sorted(mine["uid"]) == sorted(part.connections["uid"])
        assert (part.connections["capture"] == path.name).all()
    assert result.connections["uid"].is_unique


def test_the_same_capture_twice_keeps_uids_unique() -> None:
    path = str(CAPTURES / "pipelining.pcap")
    twice = analyzer.analyze(path, path)
    once = analyzer.analyze(path)
    assert len(twice.connections) == 2 * len(once.connections)
    assert twice.connections["uid"].is_unique
    renamed = set(twice.connections["uid"]) - set(once.connections["uid"])
    assert renamed == {f"{u}-2" for u in once.connections["uid"]}
    assert set(twice.transactions["uid"]) == set(twice.connections["uid"])


def test_jobs_do_not_change_the_tables() -> None:
    paths = list(map(str, SEVERAL))
    one = analyzer.analyze(*paths, jobs=1)
    two = analyzer.analyze(*paths, jobs=2)
    _assert_same(one, two)
    assert one.summary == two.summary
    lean = analyze_captures(paths, jobs=2, with_metrics=False)  # what ``analyzer report`` asks for
    _assert_same(one, lean)
    assert all(one.summary[k] == v for k, v in lean.summary.items())
    counted = {"connections", "transactions"}  # the counts of rows: in every summary
    assert set(one.summary) - set(lean.summary) == set(metric_key_names()) - counted


CORPUS = ROOT.parent / "shared" / "corpus"
SHARDED = [CAPTURES / "shaped-bulk.pcap.gz", CAPTURES / "h2c.pcap", CAPTURES / "midstream.pcap",
           CAPTURES / "tls.pcap", CORPUS / "zeek" / "quic" / "firefox-102.13.0esr-blog-cloudflare-com.pcap",
           CORPUS / "ndpi" / "1kxun.pcap"]


@pytest.mark.parametrize("path", SHARDED, ids=[p.name for p in SHARDED])
@pytest.mark.parametrize("n", [2, 3])
def test_shards_of_one_capture_combine_to_its_tables(path: Path, n: int) -> None:
    """Splitting a capture by flow hash (what --jobs does with fewer files than workers) changes nothing."""
    from analyzer.combine import combine

    if not path.exists():
        pytest.skip(f"{path} not available")
    whole = analyzer.analyze(str(path))
    parts = [analyzer.analyze(str(path), shard=(k, n)) for k in range(n)]
    if len(whole.connections) >= 10:  # the work really is split
        assert max(len(p.connections) for p in parts) < len(whole.connections)
    combined = combine(parts)
    _assert_same(whole, combined)
    assert combined.summary == whole.summary


def test_one_capture_with_two_jobs_is_split_and_unchanged() -> None:
    path = str(CAPTURES / "shaped-bulk.pcap.gz")
    one, two = analyzer.analyze(path, jobs=1), analyzer.analyze(path, jobs=2)
    _assert_same(one, two)
    assert one.summary == two.summary


def test_a_dask_local_cluster_gives_the_single_process_tables() -> None:
    distributed = pytest.importorskip("distributed")
    paths = list(map(str, SEVERAL))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  protocol="tcp", host="127.0.0.1") as cluster:
        on_cluster = analyzer.analyze(*paths, scheduler=cluster.scheduler_address)
        one_file = analyzer.analyze(paths[0], scheduler=cluster.scheduler_address)  # split in 2 shards
    single = analyzer.analyze(*paths)
    _assert_same(single, on_cluster)
    assert single.summary == on_cluster.summary
    alone = analyzer.analyze(paths[0])
    _assert_same(alone, one_file)
    assert alone.summary == one_file.summary


def test_an_unreachable_scheduler_is_a_clear_error() -> None:
    paths = list(map(str, SEVERAL[:2]))
    with pytest.raises(AnalyzerError, match="cannot reach the dask scheduler"):
        analyzer.analyze(*paths, scheduler="tcp://127.0.0.1:9")


def _rotate(source: Path, directory: Path, pieces: int) -> list[Path]:
    """Cut a classic little-endian pcap into ``pieces`` files named like ``tcpdump -C`` (x.pcap, x.pcap1,
    ... x.pcap11), each with the source's file header and its records copied byte for byte."""
    data = source.read_bytes()
    header, pos, records = data[:24], 24, []
    while pos < len(data):
        (caplen,) = struct.unpack_from("<I", data, pos + 8)
        records.append(data[pos:pos + 16 + caplen])
        pos += 16 + caplen
    per = -(-len(records) // pieces)
    out = []
    for i in range(pieces):
        path = directory / ("cut.pcap" + (str(i) if i else ""))
        path.write_bytes(header + b"".join(records[i * per:(i + 1) * per]))
        out.append(path)
    return out


@pytest.mark.parametrize("name", ["keepalive-idle-timeout.pcap", "pipelining.pcap"])
def test_stitched_rotated_pieces_give_the_uncut_tables(tmp_path: Path, name: str) -> None:
    source = CAPTURES / name
    pieces = _rotate(source, tmp_path, 12)  # 12 pieces: cut.pcap10 must come after cut.pcap9
    shuffled = [str(p) for p in reversed(pieces)]
    whole = analyzer.analyze(str(source))
    stitched = analyzer.analyze(*shuffled, stitch=True)
    assert stitched.summary["captures"] == [p.name for p in pieces]
    _assert_same(whole, stitched, drop=("capture",))
    assert stitched.connections["capture"].tolist() != []
    first = stitched.connections["first_frame"].tolist()
    per = -(-whole.summary["packets_read"] // 12)
    assert stitched.connections["capture"].tolist() == [pieces[(f - 1) // per].name for f in first]
    assert stitched.summary["packets_read"] == whole.summary["packets_read"]
    apart = analyzer.analyze(*shuffled)  # without --stitch each piece is its own stream: connections split
    assert len(apart.connections) > len(whole.connections)


def test_expand_files_directories_and_globs(tmp_path: Path) -> None:
    pieces = _rotate(CAPTURES / "pipelining.pcap", tmp_path, 3)
    (tmp_path / "notes.txt").write_text("not a capture")
    assert expand_captures([tmp_path]) == pieces
    assert expand_captures([str(tmp_path / "cut.pcap*")]) == pieces
    assert expand_captures([pieces[1], pieces[0]]) == [pieces[1], pieces[0]]
    with pytest.raises(AnalyzerError, match="no file matches"):
        expand_captures([str(tmp_path / "*.pcapng")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AnalyzerError, match="no capture files"):
        expand_captures([empty])
    with pytest.raises(AnalyzerError, match="no such file"):
        expand_captures([tmp_path / "missing.pcap"])


def test_files_named_with_digit_like_characters_sort_by_their_numbers(tmp_path: Path) -> None:
    """A directory's captures sort by the numbers in their names; a character that str.isdigit() takes but
    int() does not (a superscript: "²") is text, not a number (it used to raise ValueError)."""
    names = ["cap10.pcap", "cap2².pcap", "cap2.pcap", "cap1²2.pcap"]
    for name in names:
        (tmp_path / name).write_bytes((CAPTURES / "pipelining.pcap").read_bytes())
    assert [p.name for p in expand_captures([tmp_path])] == [
        "cap1²2.pcap", "cap2.pcap", "cap2².pcap", "cap10.pcap"]


def test_cli_directory_jobs_and_partitioned_parquet(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for p in SEVERAL[:3]:
        (src / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    done = subprocess.run([*CLI, "export", str(src), "--jobs", "2", "--format", "parquet", "--partitioned",
                           "-o", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    expected = analyzer.analyze(*sorted(map(str, src.iterdir())))
    for table in ("connections", "transactions"):
        parts = sorted(d.name for d in (out / table).iterdir())
        assert parts == sorted(f"capture={p.name}" for p in SEVERAL[:3])
        back = pd.read_parquet(out / table)
        assert len(back) == len(getattr(expected, table))
        assert set(back["uid"]) == set(getattr(expected, table)["uid"])
    done = subprocess.run([*CLI, "summary", str(src / "*.pcap"), "--stitch"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    bad = subprocess.run([*CLI, "summary", str(tmp_path / "nothing-*.pcap")], capture_output=True, text=True,
                         check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"analyzer: error: {tmp_path / 'nothing-*.pcap'}: no file matches this pattern"


def test_one_key_log_for_several_captures_counts_its_keys_once() -> None:
    keylog = str(CAPTURES / "tls.keylog")
    alone = analyzer.analyze(str(CAPTURES / "tls.pcap"), keylog=keylog)
    both = analyzer.analyze(str(CAPTURES / "tls.pcap"), str(CAPTURES / "h2c.pcap"), keylog=keylog)
    assert both.summary["tls_keys"] == alone.summary["tls_keys"] > 0
    mine = both.connections[both.connections["capture"] == "tls.pcap"].reset_index(drop=True)
    assert mine["tls_decrypted"].tolist() == alone.connections["tls_decrypted"].tolist()
    assert alone.connections["tls_decrypted"].fillna(False).all()


def test_export_without_segments_keeps_no_series_and_the_same_tables(tmp_path: Path) -> None:
    """``export`` leaves the per-packet series out unless ``--segments`` (memory: up to MAX_SERIES_ROWS rows);
    every other table and every metric are the same either way."""
    src = SEVERAL[0]
    plain, full = tmp_path / "plain", tmp_path / "full"
    for out, extra in ((plain, []), (full, ["--segments"])):
        done = subprocess.run([*CLI, "export", str(src), "--format", "parquet", "-o", str(out), *extra],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    assert not (plain / "segments.parquet").exists()
    assert len(pd.read_parquet(full / "segments.parquet")) > 0
    for table in ("connections", "transactions", "flights", "anomalies"):
        pd.testing.assert_frame_equal(pd.read_parquet(plain / f"{table}.parquet"),
                                      pd.read_parquet(full / f"{table}.parquet"))
    s_plain = json.loads((plain / "summary.json").read_text())
    s_full = json.loads((full / "summary.json").read_text())
    assert s_plain["series_rows"] == 0 and s_full["series_rows"] > 0
    differ = {k for k in s_full if s_plain.get(k) != s_full[k]}
    assert differ == {"series_rows", "series_connections_left_out"}, differ
