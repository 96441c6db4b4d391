"""The sending end's socket."""

from __future__ import annotations

import socket

from deskcast.encode.opus import OpusEncoder
from deskcast.endpoints import Direction, Endpoint
from deskcast.media import AudioFormat

FMT = AudioFormat()


def test_sender_marks_dscp_and_ttl() -> None:
    from deskcast.transport.sender import RtpSender

    enc = OpusEncoder(FMT, frame_ms=20)
    tx = RtpSender(Endpoint("rtp", "127.0.0.1:9", {}, Direction.SINK), FMT, 960, encoder=enc,
                   ttl=3, dscp=46)
    tx.open()
    try:
        assert tx._sock is not None
        assert tx._sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 46 << 2
        assert tx._sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 3
    finally:
        tx.close()
