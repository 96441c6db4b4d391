"""Clock estimation: a clock's rate read through jitter and steps, and the level it gives."""

from __future__ import annotations

import random

import pytest

from deskcast.transport.playout import ClockTrack, DriftController

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
