"""What the receiver's tests feed it: a receiver without sockets or pacing, and Opus packets
of a -12 dBFS 1 kHz tone."""

from __future__ import annotations

import numpy as np

from deskcast.encode.opus import OpusEncoder
from deskcast.endpoints import Direction, Endpoint
from deskcast.media import AudioFormat, PcmBlock
from deskcast.transport.jitter import JitterBuffer
from deskcast.transport.receive.stats import ReceiverStats
from deskcast.transport.receiver import RtpReceiver
from deskcast.transport.rtp import RtpPacket

FMT = AudioFormat()


def make_receiver() -> RtpReceiver:
    rx = RtpReceiver(Endpoint("rtp", ":9", {}, Direction.SOURCE), FMT, 480,
                     jitter=JitterBuffer(48000, target_ms=20, adaptive=False), drift=False)
    rx.pacer = None
    return rx


def tone_packets(n: int, ssrc: int = 0xABCD, pt: int = 96, ts_step: int = 960
                 ) -> list[bytes]:
    enc = OpusEncoder(FMT, frame_ms=20)
    t = np.arange(960 * n) / 48000
    x = 0.25 * np.sin(2 * np.pi * 1000 * t)
    out = []
    for i in range(n):
        block = PcmBlock.from_float(np.repeat(x[i * 960:(i + 1) * 960, None], 2, axis=1), FMT)
        out.append(bytes(RtpPacket(pt, i, i * ts_step, ssrc, enc.encode(block))))
    return out


def accounted(stats: ReceiverStats) -> int:
    """Datagrams the receiver put somewhere: played, RTCP, FEC repair, or dropped for a
    reason (RTCP that does not parse is counted as RTCP and dropped as "rtcp")."""
    return (stats.packets + stats.rtcp + stats.fec_packets + sum(stats.dropped.values())
            - stats.dropped["rtcp"])


def tone_reads(rx: RtpReceiver, reads: int) -> int:
    """How many of the next ``reads`` blocks carry the -12 dBFS tone of tone_packets."""
    return sum(0.2 < float(np.abs(rx.read().as_float()).max()) < 0.3 for _ in range(reads))
