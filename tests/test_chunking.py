"""The same capture gives the same tables however its packets are cut into chunks.

The pipeline processes a capture in chunks (bounded memory); holes held across chunk ends, handshakes split
over chunks, header blocks split over chunks, roles guessed before the first payload and retransmissions
captured chunks apart must all end up exactly as with one chunk.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import analyzer

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
FILES = [
    *sorted(str(p) for p in (ROOT / "captures").glob("*.pcap*")),
    *(str(CORPUS / rel) for rel in (
        "zeek/http/206_example_b.pcap",  # many copies of one retransmission, minutes apart
        "zeek/http/zero-length-bodies-with-drops.pcap",  # gaps, orphan response
        "zeek/http/docker-http-upgrade.pcap",  # upgrade to a raw stream
        "zeek/http/websocket.pcap",
        "zeek/tcp/handshake-reorder.pcap",
        "pcapplusplus/http-packets2.pcap",  # connections without SYN, first chunk without payload
        "pcapplusplus/one_tcp_stream_max_seq.pcap",  # sequence wrap-around
        "pcap2har-andrewf/out-of-order.pcap",  # reordering and hundreds of retransmissions
        "suricata-verify/http-protocol-nodup.pcap",  # pipelining, several messages per segment
        "pcapplusplus/650HttpResponses.pcap",  # responses ending at a gap where a chunk starts
        "zeek/ipv6-http-atomic-frag.pcap",  # requests captured after their responses
        "suricata-verify/tls-subjectaltname.pcap",  # RSTs answering stale ACKs before the handshake
        "ndpi/1kxun.pcap",  # ACKs below the stream start seen before it
        "ndpi/quickplay.pcap",
    )),
]


@pytest.mark.parametrize("path", FILES, ids=[Path(f).name for f in FILES])
def test_tables_do_not_depend_on_chunk_size(path: str) -> None:
    if not Path(path).exists():
        pytest.skip(f"{path} not available")
    whole = analyzer.analyze(path)
    for chunk_packets in (1, 7, 100):
        if chunk_packets == 1 and whole.summary["packets_read"] > 3000:
            continue  # one packet per chunk is slow on big files; 7 exercises the same boundaries
        cut = analyzer.analyze(path, chunk_packets=chunk_packets)
        for name in ("connections", "transactions", "anomalies"):
            pd.testing.assert_frame_equal(getattr(whole, name), getattr(cut, name), obj=f"{name} @ {chunk_packets}")


@pytest.mark.parametrize("path", FILES[:12], ids=[Path(f).name for f in FILES[:12]])
def test_tables_do_not_depend_on_row_compaction(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finished rows compacted into DataFrame chunks of 2 rows (``pipeline.ROWS_PER_CHUNK``) give the same
    tables and summary as rows kept as Python objects to the end."""
    if not Path(path).exists():
        pytest.skip(f"{path} not available")
    from analyzer import pipeline

    whole = analyzer.analyze(path)
    monkeypatch.setattr(pipeline, "ROWS_PER_CHUNK", 2)
    compacted = analyzer.analyze(path)
    for name in ("connections", "transactions", "anomalies", "flights", "segments"):
        pd.testing.assert_frame_equal(getattr(whole, name), getattr(compacted, name), obj=name)
    assert whole.summary == compacted.summary


_MANIFEST = CORPUS / "manifest.json"
EVERY_CAPTURE = [
    *sorted(str(p) for p in (ROOT / "captures").glob("*.pcap*")),
    *(str(CORPUS / e["file"]) for e in (json.loads(_MANIFEST.read_text()) if _MANIFEST.exists() else [])),
]


@pytest.mark.parametrize("path", EVERY_CAPTURE, ids=["/".join(Path(f).parts[-2:]) for f in EVERY_CAPTURE])
def test_tables_do_not_depend_on_exchange_packing(path: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                                                   ) -> None:
    """Every HTTP/1 exchange packed as soon as it is finished (``transactions.PACK_EVERY = 1``), and every
    closed HTTP/2 stream (``STREAM_PACK_EVERY = 1``) and every open one but the oldest
    (``MAX_OPEN_STREAMS_HELD = 2``), into blocks of two, read back with one block decoded
    at a time, and every connection's transaction rows packed by twos (``rows.ROW_BLOCK``) and joined with
    their TCP columns two at a time (``records._WINDOW``), their spans placed three rows at a time
    (``records._SPAN_GROUP``), gives the same tables and summary as exchanges kept as parsed messages,
    streams as objects and rows as tuples until their connection ends (the sample and corpus captures have
    fewer than ``PACK_EVERY`` exchanges, ``STREAM_PACK_EVERY`` streams and ``ROW_BLOCK`` rows per
    connection). So does the same packing with a spill, every block put in its file as it is made
    (``spill.BlockFile``) and read back from there."""
    from analyzer import pipeline, records
    from analyzer.errors import CaptureFormatError
    from analyzer.http import rows, transactions
    from analyzer.http2 import connection
    from analyzer.spill import BlockFile

    keylog = Path(path).with_suffix(".keylog")  # decrypted, for HTTP/2 inside TLS
    keys = str(keylog) if keylog.exists() else None
    try:
        whole = analyzer.analyze(path, keylog=keys)
    except CaptureFormatError:
        pytest.skip("nothing readable")  # the empty corpus file
    monkeypatch.setattr(transactions, "PACK_EVERY", 1)
    monkeypatch.setattr(transactions, "PACK_BLOCK", 2)
    monkeypatch.setattr(transactions, "_DECODED_BLOCKS", 1)
    monkeypatch.setattr(connection, "STREAM_PACK_EVERY", 1)
    monkeypatch.setattr(connection, "STREAM_PACK_BLOCK", 2)
    monkeypatch.setattr(connection, "_DECODED_STREAM_BLOCKS", 1)
    monkeypatch.setattr(connection, "MAX_OPEN_STREAMS_HELD", 2)
    monkeypatch.setattr(rows, "ROW_BLOCK", 2)
    monkeypatch.setattr(records, "_WINDOW", 2)
    monkeypatch.setattr(records, "_SPAN_GROUP", 3)
    packed = analyzer.analyze(path, keylog=keys)
    for name in ("connections", "transactions", "anomalies", "flights", "segments"):
        pd.testing.assert_frame_equal(getattr(whole, name), getattr(packed, name), obj=name)
    assert packed.summary == whole.summary
    put = BlockFile.put
    blocks_put: list[int] = []

    def counted(store: BlockFile, block: list[Any]) -> int:
        blocks_put.append(len(block[0]))
        return put(store, block)

    monkeypatch.setattr(BlockFile, "put", counted)
    spilled = pipeline.analyze(path, keylog=keys, spill_dir=tmp_path, scan_in_child=False)
    for name in ("connections", "transactions", "anomalies", "flights", "segments"):
        pd.testing.assert_frame_equal(whole.table(name), spilled.table(name), obj=name)
    assert spilled.summary == whole.summary
    assert not (tmp_path / "blocks.bin").exists()  # removed once every connection ended
    longest = whole.transactions.groupby("uid").size().max() if len(whole.transactions) else 0
    assert (len(blocks_put) >= longest // 2) if longest > 2 else True


@pytest.mark.parametrize("path", EVERY_CAPTURE, ids=["/".join(Path(f).parts[-2:]) for f in EVERY_CAPTURE])
def test_tables_do_not_depend_on_feeding_rounds(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection's bytes of a chunk fed in rounds of one completion time each (``connections.ROUND_BYTES =
    1``: a round's client bytes, then its server bytes, in the order they were complete) give the same tables
    and summary as a chunk's client bytes all fed before its server bytes (the sample and corpus captures
    have fewer than ``ROUND_BYTES`` of a connection in most chunks)."""
    from analyzer.errors import CaptureFormatError
    from analyzer.flows import connections

    keylog = Path(path).with_suffix(".keylog")
    keys = str(keylog) if keylog.exists() else None
    monkeypatch.setattr(connections, "ROUND_BYTES", 1 << 40)
    try:
        whole = analyzer.analyze(path, keylog=keys)
    except CaptureFormatError:
        pytest.skip("nothing readable")  # the empty corpus file
    rounds: list[int] = []
    cut = connections._rounds

    def counted(*args: Any) -> list[tuple[int, int, int, int]]:
        made = cut(*args)
        rounds.append(len(made))
        return made

    monkeypatch.setattr(connections, "ROUND_BYTES", 1)
    monkeypatch.setattr(connections, "_rounds", counted)
    fed = analyzer.analyze(path, keylog=keys)
    for name in ("connections", "transactions", "anomalies", "flights", "segments"):
        pd.testing.assert_frame_equal(getattr(whole, name), getattr(fed, name), obj=name)
    assert fed.summary == whole.summary
    assert sum(rounds) >= len(rounds)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 5), st.integers(0, 3000)), max_size=60),
       st.integers(1, 4000))
def test_feeding_rounds_keep_each_direction_in_order_and_time_order_across(
        pieces: list[tuple[int, int, int]], round_bytes: int) -> None:
    """``_rounds`` over random pieces (direction, time step, size): each direction's pieces are fed once,
    in stream order; a piece of a later round was complete after every piece of an earlier one; a round
    holds at most ``ROUND_BYTES`` besides the pieces complete at its last time."""
    import numpy as np

    from analyzer.flows import connections

    sides = [[(t, n) for d, t, n in pieces if d == side] for side in (0, 1)]
    done = [np.cumsum([t for t, _ in side], dtype=np.int64) for side in sides]  # not decreasing
    size = [np.array([n for _, n in side], dtype=np.int64) for side in sides]
    done_ns = np.concatenate(done)
    start = np.zeros(len(done_ns), dtype=np.int64)
    end = np.concatenate(size)
    a0, b0, b1 = 0, len(done[0]), len(done_ns)
    connections.ROUND_BYTES, saved = round_bytes, connections.ROUND_BYTES
    try:
        rounds = connections._rounds(done_ns, start, end, a0, b0, b1) if b1 else [(0, 0, 0, 0)]
    finally:
        connections.ROUND_BYTES = saved
    client = [i for ca, cb, _, _ in rounds for i in range(ca, cb)]
    server = [i for _, _, sa, sb in rounds for i in range(sa, sb)]
    assert client == list(range(a0, b0)) and server == list(range(b0, b1))
    times = [done_ns[[*range(ca, cb), *range(sa, sb)]] for ca, cb, sa, sb in rounds]
    fed = [t for t in times if len(t)]
    for earlier, later in itertools.pairwise(fed):
        assert earlier.max() < later.min()
    for (ca, cb, sa, sb), t in zip(rounds, times, strict=True):
        idx = np.array([*range(ca, cb), *range(sa, sb)], dtype=np.int64)
        if len(idx):
            assert (end - start)[idx][t < t.max()].sum() <= round_bytes
