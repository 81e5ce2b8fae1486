"""Privacy and display safety of capture strings: redaction of credentials and printable text.

This module owns which capture-derived values count as secrets (``SENSITIVE_HEADERS``,
``SENSITIVE_PARAMETERS``, URL user information) and how they are hidden (``REDACTED``), for the report, the
terminal and the exports, which redact by default (``--no-redact`` keeps the values). It also owns
``printable``: control characters, lone surrogates and overlong strings made visible and bounded before a
string is escaped for HTML or printed on a terminal. Pure functions: no I/O, no clock; it knows nothing of
HTML, plotly or file formats (escaping stays with ``analyzer.report.html`` and ``figures``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

import pandas as pd
import pyarrow as pa

from analyzer.analysis import Analysis

REDACTED = "[redacted]"

# Header fields whose values are credentials or session state (request and response), lower-case.
SENSITIVE_HEADERS: frozenset[str] = frozenset({
    "cookie", "set-cookie", "set-cookie2", "authorization", "proxy-authorization", "www-authenticate",
    "proxy-authenticate", "x-api-key", "x-auth-token", "x-access-token", "x-csrf-token", "x-xsrf-token",
    "x-amz-security-token", "x-goog-api-key", "api-key", "apikey",
})
# URL query parameters whose values are credentials (compared lower-case).
SENSITIVE_PARAMETERS: frozenset[str] = frozenset({
    "access_token", "refresh_token", "id_token", "token", "api_key", "apikey", "key", "password", "passwd",
    "pwd", "secret", "client_secret", "auth", "session", "sessionid", "session_id", "sid", "jsessionid",
    "phpsessid", "signature", "sig", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
    "code",
})
# Transaction and anomaly columns that may carry a URL or raw message text.
TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "transactions": ("target", "host", "user_agent", "reason", "content_type"),
    "anomalies": ("detail",),
}

# Every sensitive header name holds one of these: an ASCII text without any of them (any case) cannot match
# _HEADER_RE, which then need not run (it costs about 7 µs a string; a SYN flood brings a million anomalies).
_HEADER_HINTS = ("cookie", "auth", "token", "key")
assert all(any(hint in name for hint in _HEADER_HINTS) for name in SENSITIVE_HEADERS)
_HEADER_RE = re.compile(
    r"(?P<name>(?<![\w-])(?:" + "|".join(re.escape(h) for h in sorted(SENSITIVE_HEADERS, key=len, reverse=True))
    + r"))(?P<sep>\s*:\s*)(?P<value>[^\r\n]*)", re.IGNORECASE)
_USERINFO_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s?#]+)@")
_PARAM_RE = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;#\s]+)=(?P<value>[^&;#\s]*)")
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _param(match: re.Match[str]) -> str:
    if match.group("name").lower() in SENSITIVE_PARAMETERS and match.group("value"):
        return f"{match.group('lead')}{match.group('name')}={REDACTED}"
    return match.group(0)


def redact_text(text: str) -> str:
    """``text`` with credential values replaced by ``REDACTED``: the values of ``SENSITIVE_HEADERS`` in
    ``Name: value`` form (to the end of the line), URL user information (``scheme://user:pass@``) and the
    values of ``SENSITIVE_PARAMETERS`` in a query string."""
    if not text:
        return text
    lower = text.lower()
    if not text.isascii() or any(hint in lower for hint in _HEADER_HINTS):  # non-ASCII: case folding
        text = _HEADER_RE.sub(lambda m: f"{m.group('name')}{m.group('sep')}{REDACTED}", text)
    if "@" in text:
        text = _USERINFO_RE.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    if "=" in text:
        text = _PARAM_RE.sub(_param, text)
    return text


def redact_value(value: Any) -> Any:
    """``redact_text`` for a string; other values (missing, numbers) unchanged."""
    return redact_text(value) if isinstance(value, str) else value


def redact_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(name, value) pairs with the values of sensitive header fields replaced and the others passed
    through ``redact_text`` (a URL in a ``Referer`` or ``Location`` may carry a token)."""
    return [(name, REDACTED if name.lower() in SENSITIVE_HEADERS else redact_text(value))
            for name, value in headers]


def _redact_column(series: pd.Series) -> pd.Series:
    """``redact_text`` over a column, each distinct text once: numbered in Arrow (no ``str`` per row), and
    the column itself returned when no text changes (a million transactions, ``redact_analysis``: 0.66 ->
    0.08 s, its peak 158 -> 30 MiB above the tables, with a ``str`` per row and a new column before)."""
    if len(series) == 0:
        return series
    codes, uniques = pd.factorize(series.astype("string"))  # missing: -1
    texts = [str(v) for v in uniques.tolist()]
    redacted = [redact_text(text) for text in texts]
    if redacted == texts:
        return series
    taken = pa.array(redacted, type=pa.large_string()).take(pa.array(codes, mask=codes < 0))
    out = pd.Series(pd.array(taken, dtype="string"), index=series.index, name=series.name)
    return out.astype(series.dtype) if str(series.dtype) == "object" else out


def redact_frame(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """A copy of ``frame`` with ``redact_text`` applied to the given string columns that it has."""
    present = [c for c in columns if c in frame.columns]
    if not present or frame.empty:
        return frame
    return frame.assign(**{c: _redact_column(frame[c]) for c in present})


def redact_analysis(analysis: Analysis) -> Analysis:
    """``analysis`` with credentials removed from its capture strings (``TEXT_COLUMNS``); the numbers and
    the other columns are untouched, so every metric stays the same."""
    return dataclasses.replace(
        analysis,
        transactions=redact_frame(analysis.transactions, TEXT_COLUMNS["transactions"]),
        anomalies=redact_frame(analysis.anomalies, TEXT_COLUMNS["anomalies"]))


def _visible(match: re.Match[str]) -> str:
    char = match.group(0)
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        return "\ufffd"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str, limit: int | None = None) -> str:
    """``text`` with control characters (C0 but tab and newline, DEL, C1, U+2028/9) shown as ``\\xNN``
    escapes, lone surrogates (undecodable bytes) as U+FFFD, and cut to ``limit`` characters with ``…``."""
    text = _CONTROL_RE.sub(_visible, text)
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    return text
