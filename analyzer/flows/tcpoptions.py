"""Vectorized TCP option parsing: the SACK blocks, window scale and timestamps of many packets at once.

Walks the options area of every selected packet in lock-step (one numpy step per option position, at most
40 steps, never a Python loop over packets): EOL ends a packet's walk, NOP advances one byte, any other kind
advances by its length; a length below 2 or past the header ends the walk (malformed). Knows TCP option
encoding only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

WSCALE = 3
TIMESTAMPS = 8
SACK = 5
MAX_SACK_BLOCKS = 4
_MAX_STEPS = 40  # options occupy at most 40 bytes


def _u32be(buf: npt.NDArray[np.uint8], pos: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    b = buf[np.stack([pos, pos + 1, pos + 2, pos + 3])].astype(np.int64)
    return (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]


def sack_blocks(buf: npt.NDArray[np.uint8], l4_off: npt.NDArray[np.int64], l4_hdr_len: npt.NDArray[np.int64]
                ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(left edges, right edges, block count) of the SACK option of each packet: arrays of shape
    (n, MAX_SACK_BLOCKS) with absolute 32-bit sequence numbers, and (n,) counts (0 without SACK)."""
    n = int(l4_off.shape[0])
    left = np.zeros((n, MAX_SACK_BLOCKS), dtype=np.int64)
    right = np.zeros((n, MAX_SACK_BLOCKS), dtype=np.int64)
    count = np.zeros(n, dtype=np.int64)
    if n == 0:
        return left, right, count
    pos = l4_off + 20
    end = np.minimum(l4_off + l4_hdr_len, len(buf))
    active = pos < end
    for _ in range(_MAX_STEPS):
        idx = np.nonzero(active)[0]
        if not len(idx):
            break
        p = pos[idx]
        kind = buf[p]
        nop = kind == 1
        eol = kind == 0
        has_len = ~nop & ~eol & (p + 1 < end[idx])
        ln = np.where(has_len, buf[np.minimum(p + 1, len(buf) - 1)].astype(np.int64), 0)
        bad = ~nop & ~eol & ((ln < 2) | (p + ln > end[idx]))
        is_sack = has_len & ~bad & (kind == SACK) & (count[idx] == 0)
        if is_sack.any():
            si = idx[is_sack]
            nb = np.minimum((ln[is_sack] - 2) // 8, MAX_SACK_BLOCKS)
            count[si] = nb
            for j in range(MAX_SACK_BLOCKS):
                have = nb > j
                if not have.any():
                    break
                rows = si[have]
                at = p[is_sack][have] + 2 + 8 * j
                left[rows, j] = _u32be(buf, at)
                right[rows, j] = _u32be(buf, at + 4)
        step = np.where(nop, 1, ln)
        pos[idx] = p + step
        stop = eol | bad
        active[idx] = ~stop & (pos[idx] < end[idx])
    return left, right, count


def window_scale(buf: npt.NDArray[np.uint8], l4_off: npt.NDArray[np.int64], l4_hdr_len: npt.NDArray[np.int64]
                 ) -> npt.NDArray[np.int8]:
    """The shift of each packet's window scale option (RFC 7323), -1 without one. Meant for SYNs."""
    n = int(l4_off.shape[0])
    shift = np.full(n, -1, dtype=np.int8)
    if n == 0:
        return shift
    pos = l4_off + 20
    end = np.minimum(l4_off + l4_hdr_len, len(buf))
    active = pos < end
    for _ in range(_MAX_STEPS):
        idx = np.nonzero(active)[0]
        if not len(idx):
            break
        p = pos[idx]
        kind = buf[p]
        nop = kind == 1
        eol = kind == 0
        has_len = ~nop & ~eol & (p + 1 < end[idx])
        ln = np.where(has_len, buf[np.minimum(p + 1, len(buf) - 1)].astype(np.int64), 0)
        bad = ~nop & ~eol & ((ln < 2) | (p + ln > end[idx]))
        hit = has_len & ~bad & (kind == WSCALE) & (ln == 3)
        if hit.any():
            shift[idx[hit]] = buf[p[hit] + 2].astype(np.int8)
        step = np.where(nop, 1, ln)
        pos[idx] = p + step
        active[idx] = ~(eol | bad | hit) & (pos[idx] < end[idx])
    return shift


def timestamps(buf: npt.NDArray[np.uint8], l4_off: npt.NDArray[np.int64], l4_hdr_len: npt.NDArray[np.int64]
               ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(TSval, TSecr) of each packet's timestamps option (RFC 7323), -1 without one."""
    n = int(l4_off.shape[0])
    tsval = np.full(n, -1, dtype=np.int64)
    tsecr = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return tsval, tsecr
    pos = l4_off + 20
    end = np.minimum(l4_off + l4_hdr_len, len(buf))
    active = pos < end
    for _ in range(_MAX_STEPS):
        idx = np.nonzero(active)[0]
        if not len(idx):
            break
        p = pos[idx]
        kind = buf[p]
        nop = kind == 1
        eol = kind == 0
        has_len = ~nop & ~eol & (p + 1 < end[idx])
        ln = np.where(has_len, buf[np.minimum(p + 1, len(buf) - 1)].astype(np.int64), 0)
        bad = ~nop & ~eol & ((ln < 2) | (p + ln > end[idx]))
        hit = has_len & ~bad & (kind == TIMESTAMPS) & (ln == 10)
        if hit.any():
            tsval[idx[hit]] = _u32be(buf, p[hit] + 2)
            tsecr[idx[hit]] = _u32be(buf, p[hit] + 6)
        step = np.where(nop, 1, ln)
        pos[idx] = p + step
        active[idx] = ~(eol | bad | hit) & (pos[idx] < end[idx])
    return tsval, tsecr
