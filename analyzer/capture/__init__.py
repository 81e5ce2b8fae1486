"""Capture readers: files (pcap, pcapng, gzip) and, later, live interfaces → ``PacketBatch`` columns."""
