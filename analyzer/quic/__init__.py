"""``analyzer.quic``: a passive, sans-IO QUIC observer that reads SNI and ALPN from a connection's Initial packets.

QUIC (RFC 9000) encrypts even its first packets, but the Initial keys derive from public values: the version's
salt and the Destination Connection ID of the client's first Initial (RFC 9001 §5.2). So a passive observer
can remove header protection, decrypt the client's Initial packets, reassemble the CRYPTO stream and read the
TLS ClientHello (SNI, offered ALPN), and likewise the server's Initial (ServerHello: TLS version). Everything
after (EncryptedExtensions with the selected ALPN, certificates, HTTP/3) uses handshake and 1-RTT keys that a
passive observer without a key log does not have.

Versions: QUIC v1 (RFC 9000/9001), QUIC v2 (RFC 9369: its own salt, ``quicv2`` key labels and packet type
codes), IETF drafts 23 … 32 (draft-29 is 0xff00001d; drafts 23 … 28 and 29 … 32 share a salt each).
Version Negotiation packets (version 0) are recognized. ``looks_like_quic_long_header`` wants the fixed bit
(0x40) set; ``feed`` also accepts long headers without it, as endpoints that negotiated "grease the QUIC bit"
(RFC 9287) send them (the draft-28 server of ndpi/quic_0RTT.pcap does).

Definitions (``QuicFacts``; one observer per UDP flow, fed in capture order):

- **client**: the side the caller calls direction 0, meant to be the sender of the flow's first long-header
  Initial packet.
- ``version``: the version field of the first long-header packet that is not Version Negotiation.
- ``client_dcid`` / ``client_scid``: connection ids of the client's first Initial (the *original* DCID, kept
  after a Retry). ``server_scid``: the source connection id of the server's first Initial or Handshake packet
  (a Retry's SCID is not the server's connection id: it only becomes the client's next DCID).
- ``sni``, ``alpn_offered``: from the ClientHello reassembled from the CRYPTO frames of the client's
  Initials (by offset, whatever their order and however many packets carry it); ``alpn``: selected ALPN,
  None unless a server Initial carried one (QUIC's ServerHello has none: ALPN is selected in
  EncryptedExtensions, under handshake keys). ``tls_version``: from the ServerHello (supported_versions),
  else "TLS 1.3" when the ClientHello offers it (QUIC requires TLS 1.3, RFC 9001 §4.2).
- ``client_initials`` / ``server_initials`` / ``handshake_packets`` / ``zero_rtt_packets``: long-header
  packets of each type; packets coalesced in one datagram count separately.
- ``retry``: the server sent a Retry; the client's later Initials then derive their keys from the Retry's
  SCID (the observer follows). ``version_negotiation``: the server sent a Version Negotiation packet.
- ``ts_client_initial_ns``: the client's first Initial; ``ts_server_first_ns``: the server's first packet
  of any kind; ``ts_handshake_done_ns``: best effort, the client's first short-header (1-RTT) packet (the
  client only sends 1-RTT once it has the handshake keys, i.e. after the server's Handshake flight).

Anomalies (``(ts_ns, name, detail)``): ``quic_bad_header`` (cut or inconsistent long header, Retry or Version
Negotiation from the client, 0-RTT from the server), ``quic_decrypt_failed`` (an Initial that does not
authenticate with the expected keys), ``quic_unknown_frame`` (a frame type not allowed in Initial packets:
parsing of that packet stops), ``quic_bad_frame`` (a cut frame), ``quic_connection_close`` (CONNECTION_CLOSE
in an Initial), ``quic_bad_client_hello`` / ``quic_bad_server_hello``, ``quic_crypto_cap``,
``quic_coalesced_cap``, ``quic_anomaly_cap``, ``quic_internal_error`` (a bug: the safety net caught an
exception).

Bounds: CRYPTO reassembly keeps at most 64 KiB per direction; at most 32 Initials are decrypted per direction
(later ones are only counted); 32 coalesced packets per datagram; 32 anomalies per flow.

Not done: Retry integrity tag verification, Handshake/1-RTT decryption with a key log, ChaCha20 (Initial
packets always use AES-128-GCM), gQUIC (Google QUIC, versions Q0xx).

Why hand-written: no maintained *passive* QUIC parser library for Python fits. aioquic is an endpoint
implementation (its header and crypto helpers are internal API, raise on malformed input and no longer
support draft versions), scapy's QUIC layer parses headers without decrypting, and pyshark drives tshark as a
subprocess. What is needed is a few hundred lines on top of ``cryptography``'s HKDF, AES-ECB and AES-GCM.
"""

from analyzer.quic.observer import QuicFacts, QuicObserver
from analyzer.quic.packets import looks_like_quic_long_header, quic_version_name

__all__ = ["QuicFacts", "QuicObserver", "looks_like_quic_long_header", "quic_version_name"]
