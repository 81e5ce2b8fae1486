"""Fuzz harness for the analyzer's parsers (issue 8, item 3).

One target per layer (``fuzz.targets``): ``pcap`` (capture readers → whole analysis), ``decode`` (link/IP/TCP
header decoding of a packet batch), ``tcp`` (a TCP conversation with fuzzer-chosen seq/ack/flags/options/
payloads through the connection tracker, reassembly and everything above), ``http1``, ``tls``, ``http2``
(one connection's two byte streams, cut into chunks, pieces and gaps) and ``quic`` (UDP datagrams, with
Initial packets sealed with the right keys so that mutations reach the frame and ClientHello parsers).

A target takes ``bytes`` and returns ``None``; a *finding* is any exception escaping it (the house rule:
malformed traffic becomes an anomaly row, never an exception), an ``*_internal_error`` anomaly (a safety net
caught an exception: a bug all the same), or an input that takes longer than the per-input time limit.

``python -m fuzz.run --target all --seconds 60`` runs the built-in engine (``fuzz.engine``: a seeded,
reproducible mutation loop with optional line-coverage guidance); ``--engine atheris`` runs libFuzzer via
atheris when it is installed. Findings are saved as ``tests/fuzz_regressions/<target>-<sha1[:12]>.bin`` and
replayed by ``tests/test_fuzz_regressions.py``.
"""
