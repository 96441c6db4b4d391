"""The delay in the receiver's status: each sample's wait from its packet's arrival to the
sink, with a fake clock."""

from __future__ import annotations

import pytest

from deskcast.endpoints import Direction, Endpoint
from deskcast.transport.jitter import JitterBuffer
from deskcast.transport.receiver import RtpReceiver

from ...fakes import FakeClock
from .streams import FMT, tone_packets


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
