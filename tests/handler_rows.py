"""Tests' view of a protocol handler's results: its rows as a list of tuples with their uid, and its facts
with the responses' spans as ``response_spans`` (``(start, end)`` or None per row)."""

from __future__ import annotations

from typing import Any


def transaction_rows(handler: Any, uid: str, server_ip: str, server_port: int
                     ) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    rows, facts = handler.transaction_rows(server_ip, server_port)
    start, end = rows.spans()
    spans = [(s, e) if s >= 0 else None for s, e in zip(start.tolist(), end.tolist(), strict=True)]
    return rows.rows(uid), {**facts, "response_spans": spans}
