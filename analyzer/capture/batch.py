"""The columnar unit that flows from capture readers to the decoder.

A ``PacketBatch`` holds raw link-layer frames of up to a few hundred thousand packets as numpy columns over
one shared byte buffer: no Python object per packet. Readers (file or live) produce batches; the decoder
(``analyzer.flows.decode``) turns them into ``DecodedPackets``. This module knows nothing about files or
protocols.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U16 = npt.NDArray[np.uint16]


@dataclass(frozen=True, slots=True)
class PacketBatch:
    """Raw frames, one row per packet.

    ``buf`` is the shared byte buffer; packet ``i`` occupies ``buf[offset[i] : offset[i] + caplen[i]]``.
    ``wirelen`` is the original length on the wire (>= caplen when the snaplen truncated it).
    ``ts_ns`` is the packet timestamp in integer nanoseconds since the Unix epoch (exact for both
    microsecond and nanosecond captures). ``linktype`` is the LINKTYPE_* value per packet (pcapng files may
    mix interfaces). ``frame`` is the 1-based packet number in the capture, as Wireshark counts frames.
    """

    buf: U8
    offset: I64
    caplen: I32
    wirelen: I32
    ts_ns: I64
    linktype: U16
    frame: I64

    def __len__(self) -> int:
        return int(self.frame.shape[0])


@dataclass(slots=True)
class ReaderStats:
    """What a reader saw, for the capture-quality part of the summary.

    ``packets_read`` counts every packet record handed out in batches. ``skipped`` counts records (or
    blocks) that could not become packets, by reason (for example ``pcapng_unknown_block``,
    ``truncated_record``). ``kernel_drops`` comes from pcapng interface statistics or live capture when known.
    """

    file_format: str = "unknown"
    packets_read: int = 0
    bytes_read: int = 0
    file_size: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    truncated_file: bool = False
    kernel_drops: int | None = None
    linktypes: set[int] = field(default_factory=set)
    notes: Counter[str] = field(default_factory=Counter)
    bytes_skipped: int = 0
    bytes_unread: int = 0
    stop_reason: str | None = None
