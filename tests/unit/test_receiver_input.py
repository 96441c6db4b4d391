"""Whatever arrives on the receiver's port is counted and dropped, never raised, and playout
goes on (hypothesis over the datagram handler, without sockets)."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deskcast.encode.opus import OpusEncoder
from deskcast.endpoints import Direction, Endpoint
from deskcast.media import AudioFormat, PcmBlock
from deskcast.transport.arrival import SO_TIMESTAMPNS, STAMP_SPACE, ArrivalClock, kernel_stamp
from deskcast.transport.jitter import JitterBuffer
from deskcast.transport.receive.stats import ReceiverStats
from deskcast.transport.receiver import RtpReceiver
from deskcast.transport.rtp import RtpPacket

from .fakes import FakeClock

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


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=1600), max_size=20))
def test_random_datagrams_are_counted_and_dropped(datagrams: list[bytes]) -> None:
    """Each datagram is counted once, as what it turned out to be (most: dropped, by
    reason); playout goes on, and a real sender that comes next is played."""
    rx = make_receiver()
    for i, data in enumerate(datagrams):
        rx.handle(data, i * 0.001)
    assert rx.stats.datagrams == len(datagrams) == accounted(rx.stats)
    for _ in range(5):
        assert rx.read().frames > 0
    # Whatever the garbage passed for went quiet long before (takeover: 100 ms).
    for k, pkt in enumerate(tone_packets(10)):
        rx.handle(pkt, 1.0 + 0.02 * k)
    assert tone_reads(rx, 12) >= 10               # 10 frames of 20 ms, read in 20 ms frames


@pytest.mark.cpu_heavy  # 200 examples of 30 Opus packets: never beside a realtime test
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
    # Playout never stopped: nearly every read is loud (a frame whose payload was mutated
    # plays as whatever it decodes to, not necessarily the tone; one whose timestamp was
    # may be concealed; measured over 1500 random runs: 23 of 28 reads or more).
    levels = [float(np.abs(rx.read().as_float()).max()) for _ in range(28)]
    assert sum(level > 0.1 for level in levels) >= 20, levels


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


def test_a_new_sender_takes_over_100_ms_after_the_old_one_went_quiet() -> None:
    rx = make_receiver()
    old = tone_packets(50, ssrc=1)
    new = tone_packets(50, ssrc=2)
    for i in range(50):
        rx.handle(old[i], i * 0.02)                   # old sender: 0 .. 0.98 s
    accepted_at = None
    for i in range(50):
        t = 0.5 + i * 0.02                            # new sender from 0.5 s on
        rx.handle(new[i], t)
        if accepted_at is None and rx.stats.ssrc == 2:
            accepted_at = t
    assert accepted_at is not None
    assert 0.98 + 0.1 <= accepted_at <= 0.98 + 0.1 + 0.021   # within one packet of 100 ms
    assert rx.stats.dropped["other-sender"] > 20


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


def test_delay_is_each_samples_wait_from_its_packets_arrival_to_the_sink() -> None:
    """Packets on time every 20 ms, each frame read 30 ms after its packet came: the delay
    in the status is 30 ms plus the sink's buffer, the mean over the last whole second;
    nothing before the first whole second."""
    clock = FakeClock(100.0)
    rx = RtpReceiver(Endpoint("rtp", ":9", {}, Direction.SOURCE), FMT, 480,
                     jitter=JitterBuffer(48000, target_ms=20, adaptive=False), drift=False,
                     clock=clock)
    rx.pacer = None
    rx.output_latency_ms = 40.0
    packets = tone_packets(150)
    for k, pkt in enumerate(packets):
        clock.now = 100.0 + 0.02 * k
        rx.handle(pkt, clock.now)
        if k == 10:
            assert rx.status_fields()["delay_ms"] is None
        if k:
            clock.now += 0.01                     # frame k - 1, 30 ms after it came
            assert rx.read().frames == 960
    assert rx.jitter.stats.underruns == 0
    assert rx.status_fields()["delay_ms"] == pytest.approx(30.0 + 40.0, abs=0.01)
    assert rx.status_fields()["latency_ms"] == pytest.approx(20.0 + 40.0)
    clock.now += 2.5                              # nothing played for a whole second
    assert rx.status_fields()["delay_ms"] is None
    # A sink that tells what it has queued (PulseAudio's, before each read): that, not the
    # nominal buffer, is how long the frame waits there.
    clock.now = 200.0
    rx = RtpReceiver(Endpoint("rtp", ":9", {}, Direction.SOURCE), FMT, 480,
                     jitter=JitterBuffer(48000, target_ms=20, adaptive=False), drift=False,
                     clock=clock)
    rx.pacer = None
    rx.output_latency_ms = 40.0
    for k, pkt in enumerate(packets[:100]):
        clock.now = 200.0 + 0.02 * k
        rx.handle(pkt, clock.now)
        if k:
            clock.now += 0.01
            rx.sink_queued_s = 0.025
            rx.read()
    assert rx.status_fields()["delay_ms"] == pytest.approx(30.0 + 25.0, abs=0.01)


def test_arrival_is_when_the_kernel_received_the_datagram_not_when_it_was_read() -> None:
    """A network thread that gets the CPU late must not see jitter the network never had.

    The kernel switches stamping on for the machine's first socket that asks by a work item
    of its own, which on a loaded machine runs tens of ms later; until then datagrams are
    stamped when read (the flake this test had: 2 runs in 58 under load). The test waits
    for that as the receiver does not need to: a datagram read at once is none the worse."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        arrivals = ArrivalClock()
        deadline = time.monotonic() + 10.0
        while True:                               # until the kernel stamps on receipt
            tx.sendto(b"probe", rx.getsockname())
            time.sleep(0.01)
            _, ancdata, _, _ = rx.recvmsg(64, STAMP_SPACE)
            stamp = kernel_stamp(ancdata)
            assert stamp is not None, "no SO_TIMESTAMPNS stamp"
            if time.time() - stamp > 0.005:
                break
            assert time.monotonic() < deadline, "the kernel never stamped on receipt"
        sent = time.monotonic()
        tx.sendto(b"x", rx.getsockname())
        time.sleep(0.15)                          # the reader is late
        _, ancdata, _, _ = rx.recvmsg(64, STAMP_SPACE)
        arrival = arrivals.arrival(ancdata)
        read = time.monotonic()
    assert read - sent >= 0.15
    assert sent - 0.001 <= arrival < sent + 0.05
    assert arrivals.unstamped == 0
