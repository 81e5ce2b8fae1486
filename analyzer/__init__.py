"""analyzer: are HTTP connections being reused, and what does it cost when they are not?

Public API::

    import analyzer
    a = analyzer.analyze("capture.pcap")
    a.connections, a.transactions, a.anomalies  # pandas DataFrames (DESIGN.md §3)
    a.summary                                    # dict
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from analyzer.analysis import Analysis

try:
    __version__ = version("analyzer")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["Analysis", "__version__", "analyze"]


def analyze(*captures: str, **options: object) -> Analysis:
    """Analyze one or more capture files and return their tables (see ``analyzer.pipeline.analyze``)."""
    from analyzer.pipeline import analyze as _analyze

    return _analyze(*captures, **options)  # type: ignore[arg-type]
