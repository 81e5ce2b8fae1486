"""TLS over one TCP connection, observed passively (no keys): record framing, hellos, resumption,
handshake timing and an estimate of request/response exchanges from application-data record bursts."""

from analyzer.tls.observer import TlsExchange, TlsFacts, TlsObserver, looks_like_tls

__all__ = ["TlsExchange", "TlsFacts", "TlsObserver", "looks_like_tls"]
