"""Decoded packets → TCP connections and reassembled byte streams with explicit gaps."""
