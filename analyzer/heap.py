"""Handing the C heap's free pages back to the system (glibc ``malloc_trim``) between the steps of an analysis.

The scan (``analyzer.pipeline``), the metrics (``analyzer.metrics.compute_all``) and the report's sections
each allocate and free tens to hundreds of MB of numpy, Arrow and Python temporaries. glibc keeps what is
freed (the command line raises its trim threshold to 128 MiB for speed, ``cli._tune_allocator``) and cannot
always reuse it for the next step's larger arrays, so without a trim the peak RSS carries the garbage of
earlier steps on top of what is live. This module owns only that call; it knows nothing of the analysis.
A no-op where glibc is not available.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import lru_cache

import pyarrow as pa


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system: after each chunk of packets, between the steps
    that build and write the tables, between metric tables and between report sections. Measured: 100,000
    tiny connections 852 → 627 MiB at the end of the scan; a quarter million in ``analyzer report``, the
    metrics' peak 643 → 614 MiB and the TCP section's 675 → 597 (about 4 ms a call on that heap)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    pool = pa.default_memory_pool()
    if pool.backend_name != "system":  # Arrow's own pool (the system one is glibc's heap: trimmed above)
        pool.release_unused()


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
