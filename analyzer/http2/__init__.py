"""HTTP/2 over cleartext TCP (h2c), observed passively: frames (``hyperframe``), header fields (``hpack``),
streams as transactions. ``Http2Connection`` has the interface of ``analyzer.http.transactions.Http1Connection``.
"""

from analyzer.http2.connection import H2cUpgrade, Http2Connection
from analyzer.http2.frames import PREFACE

__all__ = ["PREFACE", "H2cUpgrade", "Http2Connection"]
