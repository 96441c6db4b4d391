"""Clock estimation: a clock's rate read through jitter and steps, and the level it gives."""

from __future__ import annotations

import random

import pytest

from deskcast.transport.playout import MAX_PPM, Clocks, ClockTrack, DriftController

from .simulation import RATE, Reads


def test_clock_track_reads_a_rate_through_jitter_and_is_not_fooled_by_steps() -> None:
    rng = random.Random(7)
    track = ClockTrack()
    for k in range(50 * 400):                    # 400 s of 20 ms packets from a +300 ppm clock
        sent = k * 0.02 / (1 + 300e-6)
        delay = 0.002 + rng.expovariate(200) + (0.05 if sent > 150 else 0.0)
        if rng.random() < 0.01:
            delay += 0.2                         # the odd packet very late
        track.add(sent + delay, k * 0.02)
    assert track.slope is not None
    assert track.slope * 1e6 == pytest.approx(300.0, abs=3.0)   # the 50 ms step is no rate
    assert track.offset_s is not None


def test_the_level_is_the_senders_clock_ahead_of_the_frame_not_whole_packets() -> None:
    ctl = DriftController(RATE)
    reads = Reads(ctl, 30.0)
    reads.run(5.0)
    assert {round(v) for v in reads.levels[-100:]} == {round(0.03 * RATE)}


def sender_at(clocks: Clocks, ppm: float, seconds: float, start_s: float = 0.0) -> None:
    """20 ms packets from a sender whose clock runs ``ppm`` off the system clock, each 1 ms
    in the network."""
    for k in range(round(start_s * 50), round((start_s + seconds) * 50)):
        clocks.sender_packet(k * 960, k * 0.02 / (1 + ppm / 1e6) + 0.001)


def test_a_packet_is_told_how_late_it_came_against_the_packets_on_time() -> None:
    clocks = Clocks(RATE, MAX_PPM / 1e6)
    sender_at(clocks, 0.0, 5.0)
    late = clocks.sender_packet(250 * 960, 250 * 0.02 + 0.001 + 0.005)   # 5 ms late
    assert late == pytest.approx(0.005 * RATE, abs=1e-6)
    level = clocks.level(249 * 960, 250 * 0.02)
    assert level == pytest.approx((0.02 - 0.001) * RATE, abs=1e-6)     # its packet came 19 ms ago


def test_before_the_sinks_clock_is_known_the_feed_forward_is_the_senders_against_ours() -> None:
    """The sender measured at +200 ppm against the system clock, the sink not yet: the
    feed-forward takes the sink to run at the system clock (the known weakness of a null sink
    that does not, RELIABILITY.md); once the sink reads -120 ppm, their ratio: +320 ppm."""
    clocks = Clocks(RATE, MAX_PPM / 1e6)
    assert not clocks.update() and clocks.feed_forward == 0.0
    sender_at(clocks, 200.0, 30.0)
    assert not clocks.update()
    assert clocks.feed_forward * 1e6 == pytest.approx(200.0, abs=3.0)
    for k in range(0, 200 * 25):                 # 200 s of reads of what the sink played
        now = k * 0.04
        clocks.sink_played(now, now * (1 - 120e-6) * RATE)
    assert clocks.sink_ppm == pytest.approx(-120.0, abs=0.5)
    clocks.update()
    assert clocks.feed_forward * 1e6 == pytest.approx(320.0, abs=3.0)


def test_the_end_to_end_rate_replaces_the_two_once_measured_and_says_so_once() -> None:
    """The level plus what the sink has queued grows by 300 ppm: within a minute that is the
    feed-forward, whatever the sender against the system clock said (0 here), and update()
    tells the controller the first time (its integral is in that measurement)."""
    clocks = Clocks(RATE, MAX_PPM / 1e6)
    sender_at(clocks, 0.0, 60.0)
    firsts = []
    for k in range(60 * 50):
        now = k * 0.02
        clocks.delay_read(now, 960 + 300e-6 * now * RATE, 1920.0)
        firsts.append(clocks.update())
    assert firsts.count(True) == 1
    assert clocks.end_to_end.slope is not None
    assert clocks.feed_forward * 1e6 == pytest.approx(300.0, abs=2.0)


def test_what_the_corrections_consumed_is_not_taken_for_drift() -> None:
    """The corrections consumed 300 ppm more input than the sink played, so the level stayed
    flat: the end-to-end reading adds it back, and reads the drift they corrected."""
    clocks = Clocks(RATE, MAX_PPM / 1e6)
    for k in range(60 * 50):
        now = k * 0.02
        clocks.delay_read(now, 960.0, 1920.0)
        clocks.consumed(960, 1 - 300e-6)
        clocks.update()
    assert clocks.feed_forward * 1e6 == pytest.approx(300.0, abs=2.0)


def test_a_restart_keeps_the_feed_forward_and_a_new_sender_forgets_the_rate() -> None:
    clocks = Clocks(RATE, MAX_PPM / 1e6)
    sender_at(clocks, 200.0, 30.0)
    clocks.update()
    learnt = clocks.feed_forward
    clocks.restart(new_sender=False)
    assert clocks.sender.slope is not None and clocks.feed_forward == learnt
    clocks.restart(new_sender=True)
    assert clocks.sender.slope is None and clocks.sender.offset_s is None
    clocks.update()
    assert clocks.feed_forward == learnt            # applied until the new one is measured
