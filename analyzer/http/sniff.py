"""Vectorized first-bytes hints: does a payload start like a client's or a server's first message?

Used to pick the client of a connection captured without its handshake. Works on a matrix of payload
prefixes (one row per packet, 16 bytes), all rows at once. Knows message *starts* only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_CLIENT_STARTS = (
    b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE ",
    b"PROPFIND ", b"PRI * HTTP/2",
)
_SERVER_STARTS = (b"HTTP/1.", b"HTTP/2 ")


def _starts_with(prefixes: npt.NDArray[np.uint8], token: bytes) -> npt.NDArray[np.bool_]:
    pat = np.frombuffer(token, dtype=np.uint8)
    return np.all(prefixes[:, : len(pat)] == pat, axis=1)


def classify_payload(prefixes: npt.NDArray[np.uint8]) -> npt.NDArray[np.int8]:
    """+1 where a payload starts like a client message (HTTP request, TLS ClientHello, HTTP/2 preface),
    -1 like a server message (HTTP status line, TLS ServerHello), 0 otherwise."""
    out = np.zeros(prefixes.shape[0], dtype=np.int8)
    if prefixes.shape[0] == 0:
        return out
    for tok in _CLIENT_STARTS:
        out[_starts_with(prefixes, tok)] = 1
    for tok in _SERVER_STARTS:
        out[_starts_with(prefixes, tok)] = -1
    tls = (prefixes[:, 0] == 0x16) & (prefixes[:, 1] == 0x03) & (prefixes[:, 2] <= 0x04)
    out[tls & (prefixes[:, 5] == 0x01)] = 1
    out[tls & (prefixes[:, 5] == 0x02)] = -1
    return out
