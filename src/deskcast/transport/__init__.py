"""transport: RTP/RTCP packets, jitter buffer, sender and receiver over UDP."""

DEFAULT_PORT = 1350
"""trx's port, so either end can talk to the other without options."""
