"""Decode and conceal: a lost packet rebuilt from the next one's inband FEC."""

from __future__ import annotations

import numpy as np

from deskcast.encode.opus import OpusEncoder
from deskcast.endpoints import Direction, Endpoint
from deskcast.media import PcmBlock
from deskcast.transport.jitter import JitterBuffer
from deskcast.transport.receiver import RtpReceiver
from deskcast.transport.rtp import RtpPacket

from .streams import FMT


def test_inband_fec_rebuilds_a_lost_packet_better_than_concealment() -> None:
    """A SILK-mode (voip) sender with inband FEC: the packet after a loss carries a copy of
    the lost one, and the receiver uses it."""
    t = np.arange(960 * 60) / 48000
    speechy = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))

    def run(lose: bool, use_fec: bool) -> np.ndarray:
        enc = OpusEncoder(FMT, frame_ms=20, bitrate_kbps=24, application="voip",
                          inband_fec=True, loss_percent=20)
        rx = RtpReceiver(Endpoint("rtp", ":9", {}, Direction.SOURCE), FMT, 480,
                         jitter=JitterBuffer(48000, target_ms=40, adaptive=False),
                         fec=use_fec, drift=False)
        rx.pacer = None
        for i in range(60):
            chunk = np.repeat(speechy[i * 960:(i + 1) * 960, None], 2, axis=1)
            payload = enc.encode(PcmBlock.from_float(chunk, FMT))
            if lose and i == 30:
                continue
            rx.handle(bytes(RtpPacket(96, i, i * 960, 7, payload)), i * 0.02)
        out = np.concatenate([rx.read().as_float()[:, 0] for _ in range(58)])
        if use_fec and lose:
            assert rx.stats.fec_used == 1
        return out

    clean = run(lose=False, use_fec=True)
    lost = slice(30 * 960, 31 * 960)
    with_fec = run(lose=True, use_fec=True)
    plc_only = run(lose=True, use_fec=False)
    err_fec = float(np.mean((with_fec[lost] - clean[lost]) ** 2))
    err_plc = float(np.mean((plc_only[lost] - clean[lost]) ** 2))
    assert err_fec < 0.05 * err_plc
