"""Presentation of an ``Analysis``: the self-contained HTML report and the terminal summary.

This package owns how results look, not what they are: the figures come from ``analyzer.metrics``.
``html`` renders and writes the report (the only module here that touches the file system), ``figures``
builds one plotly figure per chart, ``terminal`` prints rich tables for ``analyzer summary``. It knows
nothing of packets or protocols.

    from analyzer.report import write_report, print_summary
"""

from __future__ import annotations

from analyzer.report.html import render_report, write_report
from analyzer.report.terminal import print_summary

__all__ = ["print_summary", "render_report", "write_report"]
