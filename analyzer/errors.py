"""Exceptions of the analyzer.

Only two situations raise: an input that cannot be read at all (``CaptureFormatError``, which the CLI turns
into one line on stderr and exit code 2) and programmer errors (plain Python exceptions). Malformed *traffic*
never raises: it becomes an anomaly row or a counted skip reason. Nothing here is created per packet.
"""

from __future__ import annotations


class AnalyzerError(Exception):
    """Base class of the analyzer's own errors."""


class CaptureFormatError(AnalyzerError):
    """The capture file cannot be read: missing, not a pcap/pcapng, or corrupt before any packet."""
