"""The clock exchange: its packets, the receiver's view of the sender's clock (fake clocks),
the sender's capture line and its answers."""

from __future__ import annotations

import random

import pytest

from deskcast.transport.ntp import ntp_from_unix
from deskcast.transport.rtcp import AppPacket, parse_rtcp, serialize_rtcp
from deskcast.transport.rtp import RtpError
from deskcast.transport.timeline import CaptureLine, TimeServer
from deskcast.transport.timesync import (
    APP_NAME,
    SenderClock,
    TimelinePoint,
    TimeRequest,
    TimeResponse,
    answer,
    parse_time,
)

RATE = 48000
EPOCH = 1.8e9
"""The sender's wall clock in these tests starts here (Unix seconds, 2027)."""


def test_request_and_response_travel_as_rtcp_app_packets_and_come_back_the_same() -> None:
    request = TimeRequest(0x11223344, 0x0102030405060708, 0xAABBCCDD)
    point = TimelinePoint(0xFFFFFFF0, -250_000, 60_000)
    response = answer(request, 0xAABBCCDD, EPOCH + 1.0, EPOCH + 1.25, point)
    for packet in (request, response):
        wire = serialize_rtcp([packet.app()])
        (app,) = parse_rtcp(wire)
        assert isinstance(app, AppPacket)
        assert parse_time(app) == packet
    assert response.requester == request.ssrc and response.nonce == request.nonce


@pytest.mark.parametrize(("app", "reason"), [
    (AppPacket(0, 1, APP_NAME, bytes(12)), "time-length"),   # truncated request
    (AppPacket(1, 1, APP_NAME, bytes(36)), "time-length"),   # truncated response
    (AppPacket(7, 1, APP_NAME, bytes(16)), "time-subtype"),
])
def test_malformed_time_packets_raise_with_a_reason(app: AppPacket, reason: str) -> None:
    with pytest.raises(RtpError) as err:
        parse_time(app)
    assert err.value.reason == reason


def test_another_applications_app_packet_is_not_ours() -> None:
    assert parse_time(AppPacket(0, 1, b"ABCD", bytes(16))) is None


class Exchange:
    """The sender's clock runs ``ppm`` fast against ours and ``offset_s`` ahead; each way takes
    a base delay plus random queueing (one way often longer than the other)."""

    def __init__(self, offset_s: float, ppm: float, seed: int = 1) -> None:
        self.offset_s, self.ppm = offset_s, ppm
        self.rng = random.Random(seed)
        self.clock = SenderClock()

    def sender(self, local_s: float) -> float:
        return EPOCH + self.offset_s + local_s * (1 + self.ppm * 1e-6)

    def one_way(self) -> float:
        return 100e-6 + self.rng.expovariate(1 / 400e-6)

    def ask(self, t1: float, hold_s: float = 0.01) -> bool:
        request = self.clock.ask(1, 2, t1)
        t2_local = t1 + self.one_way()
        t3_local = t2_local + self.rng.uniform(0, hold_s)   # the sender answers at its next frame
        t4 = t3_local + self.one_way()
        point = TimelinePoint(0, 0, 50_000)
        return self.clock.take(answer(request, 2, self.sender(t2_local),
                                      self.sender(t3_local), point), t4)


def test_the_sender_clock_is_known_to_tens_of_microseconds_from_the_shortest_round_trips(
) -> None:
    ex = Exchange(offset_s=0.1234, ppm=250.0)
    t = 100.0
    for _ in range(3):
        assert ex.ask(t)
        t += 0.02
    assert ex.clock.known
    assert abs(ex.clock.to_sender(t) - ex.sender(t)) < 300e-6     # three answers: under 0.3 ms
    for _ in range(8):
        t += 0.25
        ex.ask(t)
    errors = []
    for _ in range(180):
        t += 1.0
        ex.ask(t)
        errors.append(abs(ex.clock.to_sender(t) - ex.sender(t)))
    # Queueing of 0.4 ms on average each way: the rate is known within seconds, and the
    # clock to 0.2 ms from then on, to tens of microseconds after two minutes.
    assert max(errors[3:]) < 200e-6
    assert max(errors[-60:]) < 60e-6
    assert abs(ex.clock.rate * 1e6 - 250.0) < 5.0
    assert abs(ex.clock.to_local(ex.sender(t + 3.0)) - (t + 3.0)) < 100e-6
    assert 0.2e-3 < (ex.clock.round_trip_s or 0) < 0.5e-3


def test_answers_not_asked_for_replayed_or_impossible_are_dropped_and_move_nothing() -> None:
    ex = Exchange(offset_s=-2.5, ppm=-300.0)
    for i in range(5):
        ex.ask(10.0 + 0.25 * i)
    request = ex.clock.ask(1, 2, 12.0)
    genuine = answer(request, 2, ex.sender(12.001), ex.sender(12.002), TimelinePoint(0, 0, 1))
    forged = TimeResponse(2, request.nonce ^ 1, ntp_from_unix(EPOCH + 99.0),
                          ntp_from_unix(EPOCH + 99.0), TimelinePoint(0, 0, 1), 1)
    assert not ex.clock.take(forged, 12.003)                 # a nonce never asked
    assert ex.clock.take(genuine, 12.003)
    before = ex.clock.to_sender(20.0)
    assert not ex.clock.take(genuine, 12.004)                # a replay of an answered one
    late = ex.clock.ask(1, 2, 13.0)
    assert not ex.clock.take(answer(late, 2, ex.sender(13.0), ex.sender(13.0),
                                    TimelinePoint(0, 0, 1)), 15.0)    # a 2 s round trip
    assert ex.clock.dropped == {"unasked": 2, "round-trip": 1}
    assert ex.clock.to_sender(20.0) == before
    assert abs(ex.clock.to_sender(12.5) - ex.sender(12.5)) < 300e-6


def test_the_capture_line_follows_a_fast_sound_card_without_a_step() -> None:
    rng = random.Random(3)
    line = CaptureLine(RATE)
    card_ppm = 300.0
    last = None
    t = EPOCH
    for n in range(1, 90 * 50):
        t = EPOCH + n * 0.02 / (1 + card_ppm * 1e-6)          # when the n-th block ends
        read = t + 0.002 + rng.expovariate(1 / 0.001)        # read a little later
        speed = line.speed
        line.captured(n * 960, read)
        here = line.at(read)
        if last is not None:
            # The line moves on at its speed: it is re-anchored where it is, never stepped.
            assert abs(here - last[1] - (read - last[0]) * speed) < 1e-6
        last = (read, here)
    assert abs(line.rate_ppb / 1000 - card_ppm) < 20
    captured = (t - EPOCH) * RATE * (1 + card_ppm * 1e-6)
    assert abs(line.at(t) - captured) < 0.003 * RATE      # the earliest reads: ~2 ms late


def test_the_time_server_answers_its_own_questions_only_once_it_captures() -> None:
    wall = [EPOCH]
    server = TimeServer(ssrc=7, rate=RATE, first_rtp=0xFFFFFF00, latency_s=0.05,
                        wall=lambda: wall[0])
    asked = TimeRequest(1, 42, 7).app()
    assert server.question(asked) is None
    assert server.dropped == {"time-not-started": 1}
    server.captured(960)
    wall[0] += 0.5
    request = server.question(asked)
    assert request is not None
    reply = server.answer(request, EPOCH + 0.499)
    assert reply.point.latency_us == 50_000
    assert reply.point.rtp == (0xFFFFFF00 + 960 + 24000) & 0xFFFFFFFF
    assert server.question(TimeRequest(1, 42, 8).app()) is None            # another sender's
    assert server.question(AppPacket(0, 1, APP_NAME, bytes(4))) is None    # truncated
    assert server.dropped == {"time-not-started": 1, "time-stranger": 1, "time-length": 1}
