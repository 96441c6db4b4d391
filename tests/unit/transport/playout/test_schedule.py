"""Playout on a schedule, simulated with fake clocks: rooms whose clocks, sinks and output
paths differ hear every sample at the same instant, within a fraction of a millisecond, and
lock onto the timeline within two seconds without a jump afterwards."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from deskcast.media import AudioFormat
from deskcast.transport.jitter import JitterBuffer
from deskcast.transport.playout import Playout
from deskcast.transport.playout.schedule import Schedule
from deskcast.transport.receiver import ASK_EVERY_S
from deskcast.transport.timeline import TimeServer
from deskcast.transport.timesync import SenderClock

RATE = 48000
F = 960
EPOCH = 1.8e9
FIRST = (1 << 32) - 20 * F
"""The sender's first timestamp: the RTP clock wraps 20 frames in."""
LATENCY_S = 0.05
STEP_S = 0.00025


def unwrap(rtp: int, near: int) -> int:
    """The extended timestamp of 32-bit ``rtp`` nearest to extended ``near`` (what the
    receiver's stream does for the timeline's RTP time)."""
    return near + ((rtp - near + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


@dataclass
class Room:
    clock_offset_s: float
    """Our clock minus the sender's (any: another machine's monotonic clock)."""
    clock_ppm: float
    sink_ppm: float
    """The sound card's rate against true time."""
    queue_ms: float
    """What the sink keeps queued (its output path)."""
    output_offset_ms: float = 0.0
    """What the speakers add beyond it (told with --output-offset-ms)."""
    join_s: float = 0.0
    """When the room joins, after the sender started (it measures its sound card's rate in
    its first ten seconds or so: the rooms follow whatever its timeline says)."""


def simulate(room: Room, *, card_ppm: float = 250.0, seconds: float = 8.0, seed: int = 1,
             loss: float = 0.0) -> tuple[np.ndarray, np.ndarray, Schedule]:
    """Per frame played (after the first): its first sample's timestamp (from the first)
    and how long after its capture it was heard, in true time."""
    rng = random.Random(seed)
    server = TimeServer(ssrc=5, rate=RATE, first_rtp=FIRST & 0xFFFFFFFF, latency_s=LATENCY_S,
                        wall=lambda: EPOCH + now[0])
    clock = SenderClock()
    schedule = Schedule(RATE, clock, output_offset_s=room.output_offset_ms / 1000)
    playout = Playout(JitterBuffer(RATE, target_ms=20, adaptive=False),
                      AudioFormat(RATE, 2), None, schedule)

    def local(t: float) -> float:
        return t * (1 + room.clock_ppm * 1e-6) + room.clock_offset_s

    now = [0.0]
    card = RATE * (1 + card_ppm * 1e-6)
    sink_rate = RATE * (1 + room.sink_ppm * 1e-6)
    packets: list[tuple[float, int]] = []     # (arrival, n)
    answers: list[tuple[float, object]] = []  # (arrival, response)
    asks: list[tuple[float, object]] = []     # (arrival at the sender, request)
    next_block, next_ask, queued, asked = 1, room.join_s, 0.0, 0
    heard: list[tuple[int, float]] = []
    half = (FIRST + F) >> 1
    t = 0.0
    while next_block * F / card + 0.001 <= room.join_s:    # the sender alone, block by block
        now[0] = next_block * F / card + 0.001
        server.captured(next_block * F)
        next_block += 1
    t = now[0]
    while t < room.join_s + seconds:
        t += STEP_S
        now[0] = t
        while next_block * F / card + 0.001 <= t:        # the sender reads a block
            server.captured(next_block * F)
            for arrival, request in asks:                # ... and answers what came in
                answers.append((t + 0.0002 + rng.expovariate(1 / 0.0002),
                                server.answer(request, EPOCH + arrival)))  # type: ignore[arg-type]
            asks = []
            if t >= room.join_s and rng.random() >= loss:
                packets.append((t + 0.0003 + rng.expovariate(1 / 0.0003), next_block - 1))
            next_block += 1
        for arrival, n in [p for p in packets if p[0] <= t]:
            packets.remove((arrival, n))
            playout.jitter.put(FIRST + n * F, b"x", F, local(arrival))
        for arrival, response in [a for a in answers if a[0] <= t]:
            answers.remove((arrival, response))
            clock.take(response, local(arrival),  # type: ignore[arg-type]
                       lambda rtp: unwrap(rtp, FIRST))
        if t >= next_ask:
            asks.append((t + 0.0002 + rng.expovariate(1 / 0.0002),
                         clock.ask(1, 5, local(t))))
            asked += 1
            next_ask = t + ASK_EVERY_S[min(clock.answers, len(ASK_EVERY_S) - 1)]
        queued = max(0.0, queued - STEP_S * sink_rate)
        while queued < room.queue_ms / 1000 * RATE:
            read = playout.read(local(t), queued)
            if read.frame is None:
                queued += read.silence or F
                continue
            out = (read.frame.samples - read.trim) * read.ratio
            if read.frame.payload is not None:
                heard.append((read.frame.timestamp + read.trim,
                              t + queued / sink_rate + room.output_offset_ms / 1000))
            queued += out
    assert half  # the unwrapping was exercised: FIRST is below 2**32, the stream past it
    ts = np.array([h[0] - FIRST for h in heard], dtype=np.float64)
    at = np.array([h[1] for h in heard])
    return ts, at - ts / card, schedule


def test_unwrap_finds_the_timestamp_nearest_the_stream() -> None:
    assert unwrap(10, (1 << 32) - 5) == (1 << 32) + 10
    assert unwrap((1 << 32) - 5, (1 << 32) + 10) == (1 << 32) - 5
    assert unwrap(123, 5 << 32) == (5 << 32) + 123


def test_rooms_with_different_clocks_sinks_and_output_paths_hear_each_sample_together(
) -> None:
    rooms = [Room(clock_offset_s=-1234.5, clock_ppm=200.0, sink_ppm=-80.0, queue_ms=8.0,
                  join_s=30.0),
             Room(clock_offset_s=77.0, clock_ppm=-300.0, sink_ppm=120.0, queue_ms=20.0,
                  output_offset_ms=6.0, join_s=31.3)]
    results = [simulate(room, seed=i) for i, room in enumerate(rooms)]
    for ts, late, schedule in results:
        assert schedule.locks == 1                        # locked once, never jumped after
        settled = ts >= (ts[0] + 2.0 * RATE)              # two seconds after its first sound
        # Heard at capture + the route's latency (+ the ms by which the capture line trails
        # the reads), the same to a tenth of a millisecond from two seconds on.
        assert 0.050 < np.median(late[settled]) < 0.0535
        assert np.ptp(late[settled]) < 0.0002
    (ts_a, late_a, _), (ts_b, late_b, _) = results
    common = np.intersect1d(ts_a[ts_a >= ts_b[0] + 2.0 * RATE], ts_b)
    between = np.interp(common, ts_a, late_a) - np.interp(common, ts_b, late_b)
    assert np.max(np.abs(between)) < 0.0002
    assert np.median(np.abs(between)) < 0.0001


def test_a_room_that_loses_packets_stays_on_the_timeline() -> None:
    ts, late, schedule = simulate(Room(0.0, 50.0, 0.0, 15.0, join_s=30.0), loss=0.05,
                                  seconds=6.0)
    settled = ts >= ts[0] + 2.0 * RATE
    assert schedule.locks == 1
    assert np.ptp(late[settled]) < 0.0002
