"""Unit tests of the vectorized TCP option walk (``analyzer.flows.tcpoptions``)."""

from __future__ import annotations

import struct

import numpy as np

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
