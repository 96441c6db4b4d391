"""Whatever arrives on the receiver's port is counted and dropped, never raised, and playout
goes on (hypothesis over the datagram handler, without sockets)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from deskcast.encode.opus import OpusEncoder
from deskcast.endpoints import Direction, Endpoint
from deskcast.media import AudioFormat, PcmBlock
from deskcast.transport.jitter import JitterBuffer
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


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=1600), max_size=20))
def test_random_datagrams_are_counted_and_dropped(datagrams: list[bytes]) -> None:
    rx = make_receiver()
    for i, data in enumerate(datagrams):
        rx.handle(data, i * 0.001)
    assert rx.stats.datagrams == len(datagrams)
    for _ in range(5):
        assert rx.read().frames > 0


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_packets_between_good_ones_do_not_stop_playout(data: st.DataObject) -> None:
    rx = make_receiver()
    good = tone_packets(30)
    now = 0.0
    for pkt in good:
        if data.draw(st.booleans()):
            pos = data.draw(st.integers(0, len(pkt) - 1))
            bad = bytearray(pkt)
            bad[pos] ^= data.draw(st.integers(1, 255))
            rx.handle(bytes(bad[: data.draw(st.integers(0, len(bad)))]), now)
        rx.handle(pkt, now)
        now += 0.02
    levels = [float(np.abs(rx.read().as_float()).max()) for _ in range(28)]
    assert max(levels) > 0.1


def test_trx_stream_is_recognised_by_its_8khz_timestamps() -> None:
    rx = make_receiver()
    for i, pkt in enumerate(tone_packets(10, pt=0, ts_step=160)):
        rx.handle(pkt, i * 0.02)
    assert rx.stats.trx and rx.stats.packets == 10
    frames = [rx.read() for _ in range(9)]
    assert all(f.frames == 960 for f in frames)
    assert rx.jitter.stats.concealed_samples == 0


def test_pt0_with_48khz_timestamps_is_not_mistaken_for_trx_scaling() -> None:
    rx = make_receiver()
    for i, pkt in enumerate(tone_packets(10, pt=0, ts_step=960)):
        rx.handle(pkt, i * 0.02)
    for _ in range(9):
        rx.read()
    assert rx.jitter.stats.concealed_samples == 0 and rx.jitter.stats.late == 0


def test_reasons_are_counted() -> None:
    rx = make_receiver()
    rx.handle(b"\x00" * 3, 0.0)                                   # short
    rx.handle(bytes(RtpPacket(13, 1, 1, 1, b"x")), 0.0)           # comfort noise PT
    rx.handle(bytes(RtpPacket(96, 1, 1, 1, b"")), 0.0)            # no Opus TOC
    rx.handle(b"\x80\xc8" + bytes(26), 0.0)                        # RTCP SR on the RTP port
    assert rx.stats.dropped["short"] == 1
    assert rx.stats.dropped["payload-type"] == 1
    assert rx.stats.dropped["opus-toc"] == 1
    assert rx.stats.rtcp == 1
