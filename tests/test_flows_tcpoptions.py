"""Unit tests of the vectorized TCP option walk (``analyzer.flows.tcpoptions``)."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.flows.tcpoptions import parse_options


def _hdr(opts: bytes) -> bytes:
    ln = 20 + len(opts)
    ln += (-ln) % 4
    return bytes(12) + bytes([(ln // 4) << 4]) + bytes(7) + opts + bytes(ln - 20 - len(opts))


def test_sack_blocks_of_several_packets_at_once() -> None:
    packets = [
        _hdr(b"\x01\x01\x05\x12" + struct.pack(">IIII", 100, 200, 300, 450)),  # NOP NOP SACK x2
        _hdr(b"\x02\x04\x05\xb4"),  # MSS only
        _hdr(b"\x01\x01\x08\x0a" + bytes(8) + b"\x01\x01\x05\x0a" + struct.pack(">II", 4294967000, 5)),  # TS + SACK
        _hdr(b""),  # no options
        _hdr(b"\x05\x01\x00\x00"),  # malformed length: the walk stops
    ]
    buf = np.frombuffer(b"".join(packets), dtype=np.uint8)
    offs = np.cumsum([0] + [len(p) for p in packets[:-1]]).astype(np.int64)
    lens = np.array([len(p) for p in packets], dtype=np.int64)
    opts = parse_options(buf, offs, lens)
    left, right, count = opts.sack_left, opts.sack_right, opts.sack_count
    assert count.tolist() == [2, 0, 1, 0, 0]
    assert left[0, :2].tolist() == [100, 300] and right[0, :2].tolist() == [200, 450]
    assert left[2, 0] == 4294967000 and right[2, 0] == 5  # wraps: unwrapped by the caller


def test_option_area_cut_by_the_snaplen_does_not_read_past_the_buffer() -> None:
    pkt = _hdr(b"\x01\x01\x05\x12" + struct.pack(">IIII", 1, 2, 3, 4))
    buf = np.frombuffer(pkt[:26], dtype=np.uint8)  # captured only 6 bytes of options
    count = parse_options(buf, np.array([0]), np.array([len(pkt)])).sack_count
    assert count.tolist() == [0]


def test_timestamps_and_window_scale_come_from_the_same_walk() -> None:
    packets = [
        _hdr(b"\x02\x04\x05\xb4\x04\x02\x08\x0a" + struct.pack(">II", 7, 0) + b"\x01\x03\x03\x07"),  # a SYN's
        _hdr(b"\x01\x01\x08\x0a" + struct.pack(">II", 4000000000, 9)),  # NOP NOP TS
        _hdr(b"\x03\x03\x02\x00"),  # window scale alone
        _hdr(b"\x08\x09" + bytes(6)),  # timestamps with a wrong length: not read
    ]
    buf = np.frombuffer(b"".join(packets), dtype=np.uint8)
    offs = np.cumsum([0] + [len(p) for p in packets[:-1]]).astype(np.int64)
    opts = parse_options(buf, offs, np.array([len(p) for p in packets], dtype=np.int64))
    assert opts.tsval.tolist() == [7, 4000000000, -1, -1]
    assert opts.tsecr.tolist() == [0, 9, -1, -1]
    assert opts.wscale.tolist() == [7, -1, 2, -1]
    assert opts.sack_count.tolist() == [0, 0, 0, 0]


def _walk_one(opts: bytes) -> tuple[list[tuple[int, int]], int, int, int]:
    """The options of one packet, walked byte by byte as RFC 9293 lays them out: the reference."""
    sacks: list[tuple[int, int]] = []
    tsval = tsecr = wscale = -1
    at = 0
    while at < len(opts):
        kind = opts[at]
        if kind == 0:
            break
        if kind == 1:
            at += 1
            continue
        if at + 1 >= len(opts) or opts[at + 1] < 2 or at + opts[at + 1] > len(opts):
            break  # malformed: the walk ends
        length = opts[at + 1]
        if kind == 5 and not sacks:  # the first SACK option with a block
            blocks = min((length - 2) // 8, 4)
            sacks = [struct.unpack_from(">II", opts, at + 2 + 8 * j) for j in range(blocks)]
        elif kind == 8 and length == 10 and tsval < 0:
            tsval, tsecr = struct.unpack_from(">II", opts, at + 2)
        elif kind == 3 and length == 3 and wscale < 0:
            wscale = min(opts[at + 2], 14)  # RFC 7323 §2.3: a larger shift is used as 14
        at += length
    return sacks, tsval, tsecr, wscale


_COMMON = b"\x01\x01\x08\x0a"  # NOP NOP timestamps: the options of most packets
_one_option = st.one_of(
    st.just(b"\x01"), st.just(b"\x00"), st.just(b"\x02\x04\x05\xb4"),
    st.builds(lambda v: b"\x08\x0a" + v, st.binary(min_size=8, max_size=8)),
    st.builds(lambda v: b"\x03\x03" + v, st.binary(min_size=1, max_size=1)),
    st.builds(lambda n, v: bytes([5, 2 + 8 * n]) + v[: 8 * n], st.integers(0, 4), st.binary(min_size=32, max_size=32)),
)
_option_areas = st.one_of(
    st.binary(max_size=40),
    st.lists(_one_option, max_size=8).map(lambda options: b"".join(options)[:40]),
    st.builds(lambda ts, tail: _COMMON + ts + tail, st.binary(min_size=8, max_size=8), st.binary(max_size=28)),
    st.builds(lambda head, ts: head + ts, st.sampled_from([_COMMON, b"\x01\x01\x08\x09", b"\x01\x08\x0a\x01"]),
              st.binary(min_size=8, max_size=8)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_option_areas, min_size=1, max_size=12))
def test_the_vectorized_walk_reads_what_a_walk_of_each_packet_reads(areas: list[bytes]) -> None:
    """Packets of any option bytes, those of nearly every packet (NOP, NOP, timestamps) among them, read at
    once or walked: the same SACK blocks, timestamps and window scale as a byte-by-byte walk of each."""
    packets = [bytes(12) + bytes([(20 + len(a) + 3) // 4 << 4]) + bytes(7) + a + bytes(-len(a) % 4) for a in areas]
    buf = np.frombuffer(b"".join(packets), dtype=np.uint8)
    offs = np.cumsum([0] + [len(p) for p in packets[:-1]]).astype(np.int64)
    opts = parse_options(buf, offs, np.array([len(p) for p in packets], dtype=np.int64))
    for i, packet in enumerate(packets):
        sacks, tsval, tsecr, wscale = _walk_one(packet[20:])
        assert opts.sack_count[i] == len(sacks)
        assert [(int(opts.sack_left[i, j]), int(opts.sack_right[i, j])) for j in range(len(sacks))] == sacks
        assert (opts.tsval[i], opts.tsecr[i], opts.wscale[i]) == (tsval, tsecr, wscale)
