"""transport: RTP/RTCP packets, jitter buffer, sender and receiver over UDP."""
