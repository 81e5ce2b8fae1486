"""``analyzer.capture.pcapfile``: every corpus capture against the tshark/capinfos oracle, plus small
hand-crafted pcap/pcapng/gzip files (written with ``struct`` here) for each format rule and error path."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import random
import struct
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path

import dpkt
import numpy as np
import pytest

from analyzer.capture import pcapfile
from analyzer.capture.batch import PacketBatch
from analyzer.capture.linktypes import linktype_name
from analyzer.capture.pcapfile import MAX_CAPLEN, READ_SIZE, CaptureReader, open_capture, ticks_to_ns
from analyzer.errors import CaptureFormatError

CORPUS = Path(os.environ.get("ANALYZER_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus"))
MANIFEST = CORPUS / "manifest.json"
CORPUS_FILES = [e["file"] for e in json.loads(MANIFEST.read_text())] if MANIFEST.exists() else []

# Captures that cannot be read at all, and why (the reader must raise CaptureFormatError for them).
UNREADABLE = {
    "pcap2har-andrewf/empty.pcap": "a zero-byte file (capinfos calls it an empty ERF file; tshark refuses it)",
}
# Where our timestamp legitimately differs from the oracle's text.
TS_EXCEPTIONS = {
    # The second and third records' ts_nsec are 1e9 and 0x80000000 (>= 1e9, invalid). Wireshark stores the
    # third in a signed int and prints "-1418145370.2147483648"; we count both as invalid_timestamp and give
    # them the timestamp of the packet before them (tests/hostile/test_broken_files.py).
    "tcpdump/timestamp_invalid_nano.pcap": ("last", 1418145369 * 10**9 + 999_999_999),
}
FORMAT_OF_ORACLE = {"pcap": "pcap", "nsecpcap": "pcap-ns", "pcapng": "pcapng", "pcap (gzip compressed)": "pcap+gzip"}


def read_all(reader: CaptureReader) -> list[PacketBatch]:
    return list(reader.batches())


def concat(batches: Sequence[PacketBatch]) -> dict[str, np.ndarray]:
    cols = ("ts_ns", "caplen", "wirelen", "linktype", "frame")
    out = {c: np.concatenate([getattr(b, c) for b in batches]) if batches else np.zeros(0) for c in cols}
    out["data"] = np.array(
        [bytes(b.buf[o : o + c]) for b in batches for o, c in zip(b.offset.tolist(), b.caplen.tolist(), strict=True)],
        dtype=object,
    )
    return out


def epoch_ns(text: str) -> int:
    return int(Decimal(text) * 10**9)


# ------------------------------------------------------------------------------------------------ corpus
corpus = pytest.mark.skipif(not MANIFEST.exists(), reason=f"corpus not found at {CORPUS}")


@corpus
@pytest.mark.corpus
@pytest.mark.parametrize("rel", CORPUS_FILES)
def test_corpus_capture_matches_oracle(rel: str) -> None:
    path = CORPUS / rel
    oracle = json.loads((CORPUS / "oracle" / (rel + ".json")).read_text())
    if rel in UNREADABLE:
        with pytest.raises(CaptureFormatError, match=rel.split("/")[-1]):
            open_capture(path)
        return
    reader = open_capture(path, chunk_packets=1000)
    batches = read_all(reader)
    st = reader.stats
    assert st.packets_read == oracle["capinfos_packets"] == sum(len(b) for b in batches)
    assert st.file_format == FORMAT_OF_ORACLE[oracle["file_type"]]
    assert st.file_size == path.stat().st_size == st.bytes_read
    frames = np.concatenate([b.frame for b in batches]) if batches else np.zeros(0, np.int64)
    assert frames.tolist() == list(range(1, st.packets_read + 1))
    if oracle["file_encapsulation"] != "per-packet":
        assert {linktype_name(x) for x in st.linktypes} == {oracle["file_encapsulation"]}
    if st.packets_read:
        first, last = int(batches[0].ts_ns[0]), int(batches[-1].ts_ns[-1])
        exc = TS_EXCEPTIONS.get(rel)
        assert first == epoch_ns(oracle["first_packet_epoch"])
        assert last == (exc[1] if exc else epoch_ns(oracle["last_packet_epoch"]))
    for b in batches:
        assert b.buf.dtype == np.uint8 and b.buf.ndim == 1
        assert (b.offset + b.caplen <= b.buf.shape[0]).all()
        assert (b.wirelen >= b.caplen).all()
    # the capinfos warnings are exactly the files we flag as truncated
    assert st.truncated_file == any("cut short" in line for line in oracle.get("capinfos_stderr") or [])


@corpus
@pytest.mark.corpus
def test_corpus_truncated_last_record_keeps_earlier_packets() -> None:
    reader = open_capture(CORPUS / "pcap2har-andrewf/out-of-order.pcap")
    n = sum(len(b) for b in reader.batches())
    assert n == 3214
    assert reader.stats.truncated_file
    assert reader.stats.skipped == {"truncated_record": 1}


@corpus
@pytest.mark.corpus
def test_corpus_gzip_pcap_is_streamed() -> None:
    path = CORPUS / "zeek/http/1000-requests-one-dropped-response.pcap.gz"
    reader = open_capture(path, chunk_packets=500)
    batches = read_all(reader)
    assert reader.stats.file_format == "pcap+gzip"
    sizes = [len(b) for b in batches]
    assert max(sizes) == 500 and sizes.count(500) >= 6
    assert reader.stats.packets_read == 4102
    assert reader.stats.bytes_read == path.stat().st_size  # compressed bytes, for a progress bar


@corpus
@pytest.mark.corpus
@pytest.mark.parametrize(
    ("rel", "count"),
    [
        ("pcap2har-mikekap/firefox-tls13-facebook-dsb.pcapng", 1),
        ("pcap2har-mikekap/http2-dump.pcap", 1),  # pcapng despite the name: detected by magic
        ("pcap2har-mikekap/http3-connection7.pcap", 1),
    ],
)
def test_corpus_decryption_secrets_block(rel: str, count: int) -> None:
    reader = open_capture(CORPUS / rel)
    read_all(reader)
    assert len(reader.decryption_secrets) == count
    stype, data = reader.decryption_secrets[0]
    assert stype == 0x544C534B  # "TLSK": an NSS key log
    assert b"SECRET" in data or b"CLIENT_RANDOM" in data


@corpus
@pytest.mark.corpus
def test_corpus_pcapng_per_packet_linktypes() -> None:
    reader = open_capture(CORPUS / "pcapplusplus/many_interfaces-1.pcapng")
    batches = read_all(reader)
    assert reader.stats.linktypes == {0, 1, 12}
    # tshark: 62 packets on interface 0 (Ethernet), 2 on interface 10 (NULL/loopback)
    values, counts = np.unique(np.concatenate([b.linktype for b in batches]), return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist(), strict=True)) == {1: 62, 0: 2}
    assert reader.stats.kernel_drops == 0  # it has ISBs with isb_ifdrop = 0


@corpus
@pytest.mark.corpus
def test_corpus_pcapng_mixed_resolutions() -> None:
    """zeek/pcapng-multi-interface.pcapng: interface 0 is in ns (if_tsresol 9), interface 1 in µs."""
    batches = read_all(open_capture(CORPUS / "zeek/pcapng-multi-interface.pcapng"))
    ts = np.concatenate([b.ts_ns for b in batches])
    assert int(ts[0]) == 1767663089500330493
    assert int(ts[-1]) == 1767663437140942000


@corpus
@pytest.mark.corpus
@pytest.mark.parametrize("rel", ["zeek/http/bro.org.pcap", "chrissanders/http_espn.pcapng", "pcapplusplus/sll.pcap"])
def test_corpus_batches_equal_dpkt_reader(rel: str) -> None:
    """Same timestamps and bytes as dpkt's (slow, per-packet) reader, with tiny chunks to exercise splits."""
    ours = concat(read_all(open_capture(CORPUS / rel, chunk_packets=13)))
    with open(CORPUS / rel, "rb") as fh:
        reader = dpkt.pcapng.Reader(fh) if rel.endswith("pcapng") else dpkt.pcap.Reader(fh)
        theirs = list(reader)
    assert len(theirs) == len(ours["ts_ns"])
    assert ours["data"].tolist() == [buf for _, buf in theirs]
    # dpkt gives float seconds: compare at µs
    assert (ours["ts_ns"] // 1000).tolist() == [round(ts * 1e6) for ts, _ in theirs]


# ------------------------------------------------------------------------------------------------ writers
def pcap_bytes(
    packets: Iterable[tuple[int, int, bytes] | tuple[int, int, bytes, int]],
    *,
    endian: str = "<",
    nano: bool = False,
    linktype: int = 1,
    snaplen: int = 65535,
) -> bytes:
    """A classic pcap: packets are (sec, frac, data[, wirelen])."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for p in packets:
        sec, frac, data = p[0], p[1], p[2]
        wire = p[3] if len(p) > 3 else len(data)
        out.append(struct.pack(endian + "IIII", sec, frac, len(data), wire) + data)
    return b"".join(out)


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def ng_block(btype: int, body: bytes, endian: str = "<") -> bytes:
    body = _pad4(body)
    n = len(body) + 12
    return struct.pack(endian + "II", btype, n) + body + struct.pack(endian + "I", n)


def ng_opt(code: int, value: bytes, endian: str = "<") -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + _pad4(value)


def ng_shb(endian: str = "<") -> bytes:
    return ng_block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1), endian)


def ng_idb(linktype: int, tsresol: int | None = None, tsoffset: int | None = None, endian: str = "<",
           snaplen: int = 0) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += ng_opt(9, bytes([tsresol]), endian)
    if tsoffset is not None:
        opts += ng_opt(14, struct.pack(endian + "q", tsoffset), endian)
    if opts:
        opts += struct.pack(endian + "HH", 0, 0)
    return ng_block(1, struct.pack(endian + "HHI", linktype, 0, snaplen) + opts, endian)


def ng_epb(if_id: int, ticks: int, data: bytes, endian: str = "<", wirelen: int | None = None,
           caplen: int | None = None) -> bytes:
    body = struct.pack(endian + "IIIII", if_id, ticks >> 32, ticks & 0xFFFFFFFF,
                       len(data) if caplen is None else caplen, len(data) if wirelen is None else wirelen)
    return ng_block(6, body + data, endian)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


FRAMES = [bytes([i]) * (20 + 7 * i) for i in range(12)]


# ------------------------------------------------------------------------------------------------ classic pcap
@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, endian: str, nano: bool) -> None:
    pkts = [(1_700_000_000 + i, (999_999_999 if nano else 999_999) - i, f) for i, f in enumerate(FRAMES)]
    path = write(tmp_path, "x.pcap", pcap_bytes(pkts, endian=endian, nano=nano, linktype=101))
    reader = open_capture(path, chunk_packets=5)
    batches = read_all(reader)
    assert [len(b) for b in batches] == [5, 5, 2]
    cols = concat(batches)
    mul = 1 if nano else 1000
    assert cols["ts_ns"].tolist() == [s * 10**9 + f * mul for s, f, _ in pkts]
    assert cols["data"].tolist() == FRAMES
    assert cols["linktype"].tolist() == [101] * 12
    assert cols["frame"].tolist() == list(range(1, 13))
    assert reader.stats.file_format == ("pcap-ns" if nano else "pcap")
    assert reader.stats.linktypes == {101}
    assert not reader.stats.skipped and not reader.stats.truncated_file


def test_pcap_snaplen_truncated_record_keeps_wirelen(tmp_path: Path) -> None:
    path = write(tmp_path, "s.pcap", pcap_bytes([(1, 2, b"abcd", 1514), (1, 3, b"xy", 0)]))
    b = read_all(open_capture(path))[0]
    assert b.caplen.tolist() == [4, 2]
    assert b.wirelen.tolist() == [1514, 2]  # a wirelen below caplen is raised to caplen


def test_header_only_pcap_yields_nothing(tmp_path: Path) -> None:
    reader = open_capture(write(tmp_path, "h.pcap", pcap_bytes([])))
    assert read_all(reader) == []
    assert reader.stats.packets_read == 0
    assert not reader.stats.truncated_file and not reader.stats.skipped
    assert reader.stats.linktypes == {1}


@pytest.mark.parametrize("cut", [1, 10, 15, 16, 17, 30])
def test_truncated_last_record(tmp_path: Path, cut: int) -> None:
    """The file ends inside the last record (inside its header for cut < 16, inside its data after)."""
    full = pcap_bytes([(1, i, f) for i, f in enumerate(FRAMES[:4])])
    last_len = 16 + len(FRAMES[3])
    data = full[: len(full) - last_len + cut]
    reader = open_capture(write(tmp_path, "t.pcap", data))
    cols = concat(read_all(reader))
    assert cols["data"].tolist() == FRAMES[:3]
    assert reader.stats.truncated_file
    assert reader.stats.skipped == {"truncated_record": 1}


def test_corrupt_caplen_beyond_buffer_resyncs(tmp_path: Path) -> None:
    """A corrupt record is skipped: reading goes on at the next run of plausible records (resync)."""
    good = pcap_bytes([(1, i, f) for i, f in enumerate(FRAMES[:3])])
    bad = struct.pack("<IIII", 1, 0, 0x7FFF_0000, 60) + b"\0" * 100
    reader = open_capture(write(tmp_path, "c.pcap", good + bad + good[24:]))
    cols = concat(read_all(reader))
    assert cols["data"].tolist() == FRAMES[:3] * 2
    assert reader.stats.skipped == {"corrupt_record": 1}
    assert reader.stats.bytes_skipped == len(bad) and reader.stats.stop_reason is None


def test_corrupt_caplen_inside_buffer_resyncs(tmp_path: Path) -> None:
    """An absurd caplen (> 256 KiB) that still lands inside the read buffer is caught by the column check."""
    good = pcap_bytes([(1, i, f) for i, f in enumerate(FRAMES[:3])])
    bad = struct.pack("<IIII", 1, 0, MAX_CAPLEN + 4, 60) + b"\0" * (MAX_CAPLEN + 4)
    reader = open_capture(write(tmp_path, "c.pcap", good + bad + good[24:]))
    cols = concat(read_all(reader))
    assert cols["data"].tolist() == FRAMES[:3] * 2
    assert reader.stats.skipped == {"corrupt_record": 1}
    assert reader.stats.bytes_skipped == len(bad)
    assert not reader.stats.truncated_file


def test_garbage_length_at_end_of_file_is_corrupt_not_truncated(tmp_path: Path) -> None:
    good = pcap_bytes([(1, 0, FRAMES[0])], snaplen=1500)
    reader = open_capture(write(tmp_path, "g.pcap", good + struct.pack("<IIII", 1, 0, 200_000, 60) + b"xx"))
    assert len(concat(read_all(reader))["data"]) == 1
    assert reader.stats.skipped == {"corrupt_record": 1}  # 200000 > snaplen: not a cut-short record
    assert reader.stats.truncated_file


def test_records_across_read_chunks(tmp_path: Path) -> None:
    """A file several read buffers long: records cut by buffer boundaries are carried over intact."""
    rng = random.Random(7)
    frames = [rng.randbytes(rng.randint(0, 9000)) for _ in range(int(2.5 * READ_SIZE / 4500))]
    pkts = [(1_600_000_000 + i // 1000, i % 1000, f) for i, f in enumerate(frames)]
    path = write(tmp_path, "big.pcap", pcap_bytes(pkts, endian=">"))
    reader = open_capture(path, chunk_packets=1000)
    batches = read_all(reader)
    assert max(len(b) for b in batches) == 1000
    assert len({id(b.buf) for b in batches}) >= 3  # one buffer per read chunk at least
    cols = concat(batches)
    assert cols["data"].tolist() == frames
    assert cols["ts_ns"].tolist() == [s * 10**9 + f * 1000 for s, f, _ in pkts]
    assert reader.stats.bytes_read == reader.stats.file_size == path.stat().st_size


def test_modified_pcap_magic(tmp_path: Path) -> None:
    """Kuznetzov's modified pcap (magic a1b2cd34): 8 more bytes per record header."""
    hdr = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, 1)
    rec = struct.pack("<IIII", 5, 6, 3, 3) + b"\0" * 8 + b"abc"
    cols = concat(read_all(open_capture(write(tmp_path, "m.pcap", hdr + rec + rec))))
    assert cols["data"].tolist() == [b"abc", b"abc"]
    assert cols["ts_ns"].tolist() == [5_000_006_000] * 2


# ------------------------------------------------------------------------------------------------ gzip
def test_gzip_pcap_detected_by_magic_not_name(tmp_path: Path) -> None:
    raw = pcap_bytes([(7, i, f) for i, f in enumerate(FRAMES)], nano=True)
    path = write(tmp_path, "no-suffix.pcap", gzip.compress(raw))
    reader = open_capture(path, chunk_packets=4)
    cols = concat(read_all(reader))
    assert cols["data"].tolist() == FRAMES
    assert reader.stats.file_format == "pcap-ns+gzip"
    assert reader.stats.bytes_read == path.stat().st_size


def test_gzip_pcapng(tmp_path: Path) -> None:
    raw = ng_shb() + ng_idb(1) + b"".join(ng_epb(0, 10**6 * i, f) for i, f in enumerate(FRAMES))
    reader = open_capture(write(tmp_path, "x.gz", gzip.compress(raw)))
    cols = concat(read_all(reader))
    assert cols["data"].tolist() == FRAMES
    assert cols["ts_ns"].tolist() == [10**9 * i for i in range(len(FRAMES))]
    assert reader.stats.file_format == "pcapng+gzip"


def test_gzip_cut_short(tmp_path: Path) -> None:
    rng = random.Random(3)
    raw = pcap_bytes([(1, i, rng.randbytes(1000)) for i in range(200)])
    comp = gzip.compress(raw)
    reader = open_capture(write(tmp_path, "cut.pcap.gz", comp[: len(comp) // 2]))
    n = sum(len(b) for b in reader.batches())
    assert 0 < n < 200
    assert reader.stats.truncated_file
    assert reader.stats.skipped["corrupt_gzip"] == 1


# ------------------------------------------------------------------------------------------------ pcapng
@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_two_interfaces_linktypes_and_resolutions(tmp_path: Path, endian: str) -> None:
    """if 0: Ethernet in ns (tsresol 9); if 1: raw IP in 2^-20 s with if_tsoffset; if 2: default µs. (Times
    in order: a step back of more than a second would be a clock step, see test_clock_step_*.)"""
    t0 = 1_700_000_000
    blocks = [ng_shb(endian), ng_idb(1, 9, endian=endian), ng_idb(101, 0x80 | 20, tsoffset=t0, endian=endian),
              ng_idb(113, endian=endian)]
    blocks += [
        ng_epb(0, t0 * 10**9 + 123_456_789, FRAMES[0], endian),
        ng_epb(1, 3 * 2**20 + 2**19, FRAMES[1], endian),  # 3.5 s after t0
        ng_epb(2, (t0 + 3) * 10**6 + 750_001, FRAMES[2], endian),
        ng_epb(1, 4 * 2**20 + 1, FRAMES[3], endian),  # 4 s + 2^-20 s (953.67 ns → floor 953)
    ]
    reader = open_capture(write(tmp_path, "two.pcapng", b"".join(blocks)))
    cols = concat(read_all(reader))
    assert cols["linktype"].tolist() == [1, 101, 113, 101]
    assert cols["ts_ns"].tolist() == [
        t0 * 10**9 + 123_456_789, (t0 + 3) * 10**9 + 500_000_000, (t0 + 3) * 10**9 + 750_001_000,
        (t0 + 4) * 10**9 + 953,
    ]
    assert cols["data"].tolist() == FRAMES[:4]
    assert reader.stats.linktypes == {1, 101, 113}
    assert reader.stats.file_format == "pcapng"


def test_pcapng_sections_reset_interfaces_and_byte_order(tmp_path: Path) -> None:
    s1 = ng_shb(">") + ng_idb(1, endian=">") + ng_epb(0, 5, FRAMES[0], ">")
    s2 = ng_shb("<") + ng_idb(101, 9) + ng_idb(0) + ng_epb(1, 7, FRAMES[1]) + ng_epb(0, 8, FRAMES[2])
    s3 = ng_shb(">") + ng_idb(276, endian=">") + ng_epb(0, 9, FRAMES[3], ">")
    reader = open_capture(write(tmp_path, "sections.pcapng", s1 + s2 + s3), chunk_packets=2)
    cols = concat(read_all(reader))
    assert cols["linktype"].tolist() == [1, 0, 101, 276]
    assert cols["ts_ns"].tolist() == [5000, 7000, 8, 9000]
    assert cols["data"].tolist() == FRAMES[:4]
    assert cols["frame"].tolist() == [1, 2, 3, 4]


def test_pcapng_simple_and_obsolete_packet_blocks(tmp_path: Path) -> None:
    spb = [ng_block(3, struct.pack("<I", len(FRAMES[1])) + FRAMES[1]),
           ng_block(3, struct.pack("<I", 1514) + FRAMES[2][:20])]  # snapped: caplen from the block length
    pb = ng_block(2, struct.pack("<HHIIII", 0, 0, 0, 4_000_000, len(FRAMES[3]), 99) + FRAMES[3])
    raw = ng_shb() + ng_idb(1, snaplen=20) + ng_epb(0, 3_000_000, FRAMES[0]) + spb[0] + spb[1] + pb
    reader = open_capture(write(tmp_path, "spb.pcapng", raw))
    cols = concat(read_all(reader))
    assert cols["data"].tolist() == [FRAMES[0], FRAMES[1], FRAMES[2][:20], FRAMES[3]]
    assert cols["wirelen"].tolist() == [len(FRAMES[0]), len(FRAMES[1]), 1514, 99]
    # an SPB has no timestamp: it carries the previous packet's
    assert cols["ts_ns"].tolist() == [3 * 10**9, 3 * 10**9, 3 * 10**9, 4 * 10**9]
    assert reader.stats.packets_read == 4 and not reader.stats.skipped
    # a tiny SPB (20 bytes, shorter than an EPB header) as the very last bytes of the file
    reader = open_capture(write(tmp_path, "spb-last.pcapng", raw + ng_block(3, struct.pack("<I", 2) + b"hi")))
    assert concat(read_all(reader))["data"].tolist()[-2:] == [FRAMES[3], b"hi"]


def test_pcapng_other_blocks_secrets_and_drops(tmp_path: Path) -> None:
    nrb = ng_block(4, struct.pack("<HH", 0, 0))
    custom = ng_block(0xBAD, struct.pack("<I", 32473) + b"hello")
    unknown = ng_block(0x1234, b"?" * 8)
    dsb = ng_block(0x0A, struct.pack("<II", 0x544C534B, 9) + b"CLIENT_RA")
    isb = ng_block(5, struct.pack("<III", 0, 0, 0) + ng_opt(5, struct.pack("<Q", 42)) + ng_opt(0, b""))
    raw = ng_shb() + ng_idb(1) + nrb + ng_epb(0, 1, FRAMES[0]) + custom + unknown + dsb + isb
    raw += ng_epb(0, 2, FRAMES[1]) + unknown
    reader = open_capture(write(tmp_path, "blocks.pcapng", raw))
    cols = concat(read_all(reader))
    assert cols["data"].tolist() == FRAMES[:2]
    assert reader.stats.skipped == {"pcapng_unknown_block": 2}
    assert reader.decryption_secrets == [(0x544C534B, b"CLIENT_RA")]
    assert reader.stats.kernel_drops == 42


def test_pcapng_corrupt_epb_is_skipped_by_its_length(tmp_path: Path) -> None:
    bad_caplen = ng_epb(0, 1, FRAMES[1], caplen=5000)  # caplen larger than the block: skip this block only
    bad_iface = ng_epb(3, 1, FRAMES[2])  # no interface 3
    early = ng_epb(1, 1, FRAMES[4])  # interface 1 is only described after it
    raw = ng_shb() + ng_idb(1) + ng_epb(0, 1, FRAMES[0]) + bad_caplen + bad_iface + early + ng_idb(101)
    raw += ng_epb(0, 2, FRAMES[3]) + ng_epb(1, 2, FRAMES[5])
    reader = open_capture(write(tmp_path, "c.pcapng", raw))
    cols = concat(read_all(reader))
    assert cols["data"].tolist() == [FRAMES[0], FRAMES[3], FRAMES[5]]
    assert cols["linktype"].tolist() == [1, 1, 101]
    assert cols["frame"].tolist() == [1, 2, 3]
    assert reader.stats.skipped == {"corrupt_record": 3}


def test_pcapng_insane_block_length_stops(tmp_path: Path) -> None:
    raw = ng_shb() + ng_idb(1) + ng_epb(0, 1, FRAMES[0]) + struct.pack("<II", 6, 13) + b"\0" * 64
    reader = open_capture(write(tmp_path, "c.pcapng", raw))
    assert concat(read_all(reader))["data"].tolist() == [FRAMES[0]]
    assert reader.stats.skipped == {"corrupt_record": 1}


def test_pcapng_truncated_last_block(tmp_path: Path) -> None:
    raw = ng_shb() + ng_idb(1) + ng_epb(0, 1, FRAMES[0]) + ng_epb(0, 2, FRAMES[5])[:-9]
    reader = open_capture(write(tmp_path, "t.pcapng", raw))
    assert concat(read_all(reader))["data"].tolist() == [FRAMES[0]]
    assert reader.stats.truncated_file
    assert reader.stats.skipped == {"truncated_record": 1}


@pytest.mark.parametrize("exp", [0, 3, 6, 9, 12, 15, 19, 25])
def test_ticks_to_ns_decimal_is_exact(exp: int) -> None:
    rng = random.Random(exp)
    ticks = [rng.randrange(0, 2**63) for _ in range(500)] + [0, 1] + [10**exp - 1] * (exp < 19)
    got = ticks_to_ns(np.array(ticks, dtype=np.uint64), 10, exp).tolist()
    want = [(t * 10**9 // 10**exp) for t in ticks]
    assert got == [((w + 2**63) % 2**64) - 2**63 for w in want]  # int64 wrap for absurd values only


@pytest.mark.parametrize("exp", [0, 1, 10, 20, 30, 34, 35, 40, 50, 63])
def test_ticks_to_ns_binary_is_exact_floor(exp: int) -> None:
    rng = random.Random(exp)
    ticks = [rng.randrange(0, 2**64) >> rng.randrange(0, 64) for _ in range(500)] + [0, 1, 2**exp - 1]
    ticks = [t for t in ticks if (t >> exp) < 2**33]  # seconds that fit in int64 ns
    got = ticks_to_ns(np.array(ticks, dtype=np.uint64), 2, exp, offset_s=-5).tolist()
    assert got == [(t * 10**9 >> exp) - 5 * 10**9 for t in ticks]


def test_scapy_pcapng_writer_roundtrip(tmp_path: Path) -> None:
    """A pcapng written by another implementation (scapy's) reads back with the same bytes and times."""
    scapy_utils = pytest.importorskip("scapy.utils")
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    pkts = []
    for i in range(5):
        p = Ether() / IP(dst="10.0.0.1") / TCP(dport=80, seq=i) / (b"x" * i)
        p.time = 1_700_000_000 + i / 8  # exact in a float
        pkts.append(p)
    path = tmp_path / "scapy.pcapng"
    scapy_utils.wrpcapng(str(path), pkts)
    cols = concat(read_all(open_capture(path)))
    assert cols["data"].tolist() == [bytes(p) for p in pkts]
    assert cols["ts_ns"].tolist() == [1_700_000_000 * 10**9 + i * 125_000_000 for i in range(5)]


# ------------------------------------------------------------------------------------------------ errors
def test_unreadable_inputs_raise_one_line_errors(tmp_path: Path) -> None:
    cases = {
        "missing.pcap": None,
        "empty.pcap": b"",
        "short.pcap": struct.pack("<I", 0xA1B2C3D4) + b"\0" * 6,
        "tiny": b"\xd4\xc3",
        "magic.pcap": b"GIF89a" + b"\0" * 40,
        "short.pcapng": ng_shb()[:20],
        "bom.pcapng": struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x11223344, 1, 0, -1) + struct.pack("<I", 28),
        "empty.gz": gzip.compress(b""),
        "bad.gz": b"\x1f\x8b" + b"\xff" * 30,
    }
    reasons = {
        "missing.pcap": "cannot open", "empty.pcap": "empty file", "short.pcap": "too short",
        "tiny": "too short", "magic.pcap": "not a pcap or pcapng", "short.pcapng": "too short",
        "bom.pcapng": "byte-order", "empty.gz": "empty gzip", "bad.gz": "gzip",
    }
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(CaptureFormatError) as info:
            open_capture(path)
        msg = str(info.value)
        assert str(path) in msg and reasons[name] in msg and "\n" not in msg, (name, msg)
    with pytest.raises(CaptureFormatError, match="cannot open"):
        open_capture(tmp_path)  # a directory


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.pcap", pcap_bytes([]))
    path.chmod(0)
    with pytest.raises(CaptureFormatError, match="cannot open"):
        open_capture(path)


def test_batches_is_single_use(tmp_path: Path) -> None:
    reader = open_capture(write(tmp_path, "x.pcap", pcap_bytes([(1, 1, b"ab")])))
    assert sum(len(b) for b in reader.batches()) == 1
    with pytest.raises(RuntimeError):
        list(reader.batches())


def test_reader_is_a_context_manager(tmp_path: Path) -> None:
    with open_capture(write(tmp_path, "x.pcap", pcap_bytes([(1, 1, b"ab")]))) as reader:
        assert reader.stats.file_format == "pcap"


def test_module_constants() -> None:
    assert pcapfile.MAX_CAPLEN == 256 * 1024
    assert 1 << 20 <= pcapfile.READ_SIZE <= 64 << 20  # "a few MB at a time"


# ------------------------------------------------------------------------------------------ clock steps
def _times(tmp_path: Path, secs_usecs: list[tuple[int, int]], chunk: int = 3,
           read_size: int | None = None) -> tuple[list[int], dict[str, int]]:
    raw = pcap_bytes([(s, u, bytes([i % 250]) * 60) for i, (s, u) in enumerate(secs_usecs)])
    reader = open_capture(write(tmp_path, "clock.pcap", raw), chunk_packets=chunk)
    ts = concat(read_all(reader))["ts_ns"].tolist()
    return [t // 1000 for t in ts], dict(reader.stats.notes)


T0 = 1_700_000_000


@pytest.mark.parametrize("read_size", [None, 200])
def test_clock_step_back_shifts_later_times(tmp_path: Path, read_size: int | None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The clock steps back an hour and stays there: time goes on from the packet before the step (read
    whole, and 200 bytes at a time so that the step and the shift cross buffers)."""
    if read_size is not None:
        monkeypatch.setattr(pcapfile, "READ_SIZE", read_size)
        monkeypatch.setattr(pcapfile, "_HEAD_SIZE", read_size)
    recorded = [(T0, 0), (T0, 100), (T0 - 3600, 300), (T0 - 3600, 500), (T0 - 3599, 500)]
    us, notes = _times(tmp_path, recorded)
    assert us == [T0 * 10**6, T0 * 10**6 + 100, T0 * 10**6 + 100, T0 * 10**6 + 300, T0 * 10**6 + 1_000_300]
    assert notes == {"clock_step_back": 1}


def test_one_packet_glitch_back_then_the_clock_returns(tmp_path: Path) -> None:
    """One packet two hours early, then the recorded clock is right again: only that packet is moved."""
    recorded = [(T0, 0), (T0 - 7200, 0), (T0, 200), (T0, 300)]
    us, notes = _times(tmp_path, recorded)
    assert us == [T0 * 10**6, T0 * 10**6, T0 * 10**6 + 200, T0 * 10**6 + 300]
    assert notes == {"clock_step_back": 1}


def test_small_steps_back_are_kept_as_recorded(tmp_path: Path) -> None:
    """Less than MAX_TS_STEP_BACK_NS back (CPU queues, interfaces): times as recorded, counted."""
    recorded = [(T0, 500_000), (T0, 100_000), (T0, 600_000)]
    us, notes = _times(tmp_path, recorded)
    assert us == [T0 * 10**6 + 500_000, T0 * 10**6 + 100_000, T0 * 10**6 + 600_000]
    assert notes == {"timestamp_backwards": 1}


def test_two_steps_back_add_up_and_time_never_jumps_back(tmp_path: Path) -> None:
    recorded = [(T0 + i, 0) for i in range(3)] + [(T0 - 100 + i, 0) for i in range(3)] + [
        (T0 - 500 + i, 0) for i in range(3)]
    us, notes = _times(tmp_path, recorded, chunk=2)
    assert us == [(T0 + i) * 10**6 for i in (0, 1, 2, 2, 3, 4, 4, 5, 6)]
    assert notes == {"clock_step_back": 2}


def test_a_clock_stepping_at_every_packet_stays_linear(tmp_path: Path) -> None:
    """Hostile: the clock alternates between two times an hour apart; every step is one search, bounded."""
    recorded = [(T0 - 3600 * (i % 2), i) for i in range(20_000)]
    us, notes = _times(tmp_path, recorded, chunk=4096)
    assert all(b >= a for a, b in itertools.pairwise(us))
    assert notes["clock_step_back"] == 10_000


# ------------------------------------------------------------------------------- mapped or read
@pytest.mark.parametrize("name", ["keepalive-idle-timeout.pcap", "ipv6-pcapng.pcapng"])
@pytest.mark.parametrize("read_size", [None, 4099])
def test_a_mapped_file_reads_as_a_read_one(name: str, read_size: int | None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A regular file is mapped a window at a time (``_Source``); the batches are those of reading it
    into buffers, also when windows start off the page size and cut records (``READ_SIZE`` 4,099)."""
    if read_size is not None:
        monkeypatch.setattr(pcapfile, "READ_SIZE", read_size)
        monkeypatch.setattr(pcapfile, "_HEAD_SIZE", read_size)
    path = Path(__file__).resolve().parents[1] / "captures" / name

    def batches(mapped: bool) -> tuple[dict[str, np.ndarray], dict[str, object]]:
        monkeypatch.setattr(pcapfile, "_is_regular", lambda raw: mapped)
        reader = open_capture(path, chunk_packets=50)
        assert reader._src.mapped is mapped
        cols = concat(read_all(reader))
        return cols, {"read": reader.stats.bytes_read, "skipped": dict(reader.stats.skipped),
                      "notes": dict(reader.stats.notes)}

    mapped, mapped_stats = batches(True)
    read, read_stats = batches(False)
    assert mapped_stats == read_stats and mapped_stats["read"] == path.stat().st_size
    for column in read:
        assert mapped[column].tolist() == read[column].tolist(), column


def test_a_mapped_file_that_grows_is_read_to_its_new_end(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A capture still being written: the records added while it is read are read too (each window is
    mapped up to the file's size at that moment)."""
    monkeypatch.setattr(pcapfile, "READ_SIZE", 1024)
    first = [(T0, i, bytes([i]) * 100) for i in range(20)]
    path = write(tmp_path, "growing.pcap", pcap_bytes(first))
    more = pcap_bytes([(T0 + 1, i, bytes([i]) * 100) for i in range(20)])[24:]  # records only
    reader = open_capture(path, chunk_packets=5)
    assert reader._src.mapped
    seen = 0
    for batch in reader.batches():
        if not seen:
            with path.open("ab") as out:
                out.write(more)
        seen += len(batch)
    assert seen == 40 and reader.stats.bytes_read == path.stat().st_size


def test_a_file_that_cannot_be_mapped_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system that refuses ``mmap`` (after the first window here): the reader goes on with reads
    from where the windows stopped, and every packet comes out as from a read file."""
    monkeypatch.setattr(pcapfile, "READ_SIZE", 1000)
    monkeypatch.setattr(pcapfile, "_HEAD_SIZE", 1000)
    pkts = [(T0, i, bytes([i]) * (60 + i)) for i in range(60)]
    path = write(tmp_path, "nomap.pcap", pcap_bytes(pkts))
    real = pcapfile.mmap.mmap
    calls = []

    def refuse_after_one(*args: object, **kwargs: object) -> object:
        calls.append(args)
        if len(calls) > 1:
            raise OSError(19, "No such device")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pcapfile.mmap, "mmap", refuse_after_one)
    reader = open_capture(path, chunk_packets=7)
    cols = concat(read_all(reader))
    assert len(calls) == 2 and not reader._src.mapped
    assert cols["data"].tolist() == [f for _, _, f in pkts]
    assert reader.stats.bytes_read == path.stat().st_size and not reader.stats.skipped
