"""analyzer: are HTTP connections being reused, and what does it cost when they are not?

Public API::

    import analyzer
    a = analyzer.analyze("capture.pcap")
    a.connections, a.transactions, a.anomalies  # pandas DataFrames (DESIGN.md §3)
    a.summary                                    # dict
    analyzer.analyze("a.pcap", "b.pcap", jobs=2)  # several captures, combined (a ``capture`` column)
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
    """Analyze one or more capture files and return their tables (see ``analyzer.pipeline.analyze``;
    with ``jobs=N`` or ``scheduler="tcp://host:8786"``, ``analyzer.parallel.analyze_captures``)."""
    if "jobs" in options or "scheduler" in options:
        from analyzer.parallel import analyze_captures

        return analyze_captures(captures, **options)  # type: ignore[arg-type]
    from analyzer.pipeline import analyze as _analyze

    return _analyze(*captures, **options)  # type: ignore[arg-type]
