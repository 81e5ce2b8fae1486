"""Protocol layers over reassembled byte streams: HTTP/1.x parsing and request/response pairing."""
