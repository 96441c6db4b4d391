"""The set-point, through the drift controller: where the level settled, with room for the
network's jitter; measured again after the jitter buffer's steps; raised by a near miss or a
dry run at the settled level; what a late burst added played out again slowly."""

from __future__ import annotations

import statistics

import pytest

from deskcast.transport.playout import DriftController, SettledLevel

from .simulation import PACKET, RATE, Level, Reads, late_packet


def test_a_step_while_settling_restarts_the_measurement() -> None:
    ctl = DriftController(RATE)
    level = Level(ctl, 160.0)
    level.run(3.0)                               # a start-up burst, being measured
    ctl.shift(-120 * RATE / 1000)
    level.depth = round(0.04 * RATE)
    level.run(30.0)
    assert ctl.setpoint == pytest.approx(40.0 * RATE / 1000, abs=2)


def test_audio_added_by_steps_is_played_out_again_slowly() -> None:
    """Three frames expanded after a burst of late packets: a minute later the delay starts
    returning to where the stream settled, never bending the pitch by more than 0.6 per
    mille."""
    ctl = DriftController(RATE)
    position = -1920.0                           # 40 ms buffered
    depths: list[float] = []
    ratios: list[float] = []
    for step in range(30_000):                   # 300 s of 10 ms reads at our rate
        now = (step + 1) * 0.01
        if not 2990 <= step < 3010:              # the network holds packets back 200 ms
            ctl.sender_clock(round(now * RATE), now)
        if step == 3000:                         # 30 s in: three frames concealed
            position -= 3 * PACKET
            ctl.shift(3 * PACKET)
        depths.append(1000 * (now * RATE - position) / RATE)
        ratio = ctl.update(round(now * RATE - position), 480, now, 960)
        ratios.append(ratio)
        position += 480 / ratio
    settled = depths[2999]
    assert depths[3001] == pytest.approx(settled + 60.0, abs=1.0)
    assert depths[-1] == pytest.approx(settled, abs=3.0)           # back where it settled
    assert max(abs(r - 1.0) for r in ratios) <= 0.0006  # 500 ppm and the level's lag
    back = next(i for i, d in enumerate(depths) if i > 3001 and d < settled + 3) / 100
    assert 190 < back < 230      # 60 s of margin, then 57 ms at 500 ppm: ~115 s more


def test_the_set_point_leaves_the_lowest_read_of_a_burst_room_for_the_jitter() -> None:
    """A sink that takes three frames at once: the last of them finds the buffer 40 ms
    lower than the first. Held at where it settled, that lowest read would be 5 ms from
    running dry; the set-point is raised until it keeps the jitter buffer's allowance
    (5 ms here) and a guard of a quarter frame (5 ms)."""
    ctl = DriftController(RATE)
    reads = Reads(ctl, 45.0, burst=3)
    reads.run(30.0)
    levels = [1000 * v / RATE for v in reads.levels[-150:]]
    assert statistics.mean(levels) == pytest.approx(25.0) and min(levels) == pytest.approx(5.0)
    assert ctl.setpoint is not None
    assert 1000 * ctl.setpoint / RATE == pytest.approx(20.0 + 5.0 + 5.0, abs=0.5)


def test_after_a_dropped_backlog_the_set_point_is_where_the_level_is() -> None:
    """Our thread (or the device) stalls 100 ms, the jitter buffer drops what piled up:
    the set-point is measured again where the level now is, not from a smoothed level
    that still remembers the backlog (which put it 40 ms too high in a soak, above where
    the jitter buffer drops audio)."""
    ctl = DriftController(RATE)
    reads = Reads(ctl, 40.0)
    reads.run(40.0)
    assert ctl.setpoint is not None
    before = ctl.setpoint
    reads.now += 0.1                             # nothing read for 100 ms
    reads.run(0.02, skipped=round(0.1 * RATE))   # the backlog is dropped at the next read
    reads.run(40.0)
    assert ctl.setpoint == pytest.approx(before, abs=0.5 * RATE / 1000)


def test_a_stall_while_the_set_point_is_measured_is_not_held() -> None:
    """The device stalls 30 ms while the level is being measured: what piled up is not
    taken for where the level settled (the lowest one-second mean is)."""
    ctl = DriftController(RATE)
    reads = Reads(ctl, 40.0)
    reads.run(12.0)                              # being measured from 2.5 s on
    reads.now += 0.03                            # nothing read for 30 ms
    reads.run(20.0)
    assert ctl.setpoint == pytest.approx(0.04 * RATE, abs=0.001 * RATE)


@pytest.mark.parametrize("frames", [1, 3])
def test_running_dry_for_a_frame_raises_the_level_for_good_a_late_burst_does_not(
        frames: int) -> None:
    """Dry for one frame at the settled level: the level was too low (the sink's bursts,
    the usual jitter), the frame is kept instead of played out a minute later (a bump in
    the delay, and the next dry run). Three frames: a burst of late packets, played out."""
    ctl = DriftController(RATE)
    reads = Reads(ctl, 40.0)
    reads.run(40.0)
    assert ctl.setpoint is not None
    settled = ctl.setpoint
    reads.expand(frames)
    reads.run(240.0)                             # the margin is kept 60 s, then played out
    kept = PACKET if frames == 1 else 0
    assert ctl.setpoint == pytest.approx(settled + kept, abs=0.1 * PACKET)


def test_a_packet_that_nearly_ran_the_buffer_dry_raises_the_level_before_one_does() -> None:
    """Settled with 10 ms of level, a packet comes 8 ms late: in time, but within the guard
    of running dry. The level goes up so that it keeps the guard over that packet, slowly
    (the level term), and stays there: the next one as late finds room, where a dry run
    would have concealed a frame and added all 20 ms to the delay at once."""
    ctl = DriftController(RATE)
    reads = Reads(ctl, 10.0, follow=True)
    reads.run(40.0)
    assert ctl.setpoint is not None
    settled = ctl.setpoint
    late_packet(ctl, reads, 8.0)
    raised = 0.008 * RATE + ctl.settled.guard
    assert settled < raised
    reads.run(20.0)
    assert ctl.setpoint == pytest.approx(raised)
    levels = [v / RATE * 1000 for v in reads.levels[-250:]]
    assert statistics.mean(levels) == pytest.approx(1000 * raised / RATE, abs=0.5)
    reads.run(240.0)                             # not played out a minute later
    assert ctl.setpoint == pytest.approx(raised)
    levels = [v / RATE * 1000 for v in reads.levels[-500:]]
    assert statistics.mean(levels) == pytest.approx(1000 * raised / RATE, abs=0.5)
    # ... up to a frame in all, as running dry raises it.
    for _ in range(20):
        late_packet(ctl, reads, 1000 * (ctl.setpoint + ctl.settled.rise) / RATE - 0.5)
    reads.run(60.0)
    assert ctl.setpoint == pytest.approx(settled + ctl.settled.max_raise)


@pytest.mark.parametrize("late_ms", [3.0, 30.0])
def test_a_packet_well_in_time_or_later_than_the_level_does_not_raise_it(
        late_ms: float) -> None:
    """3 ms late against 10 ms of level: room to spare. 30 ms late: later than the lowest
    read (it ran the buffer dry, or came in a burst after a network stall): the jitter buffer
    and the dry run deal with it, not this."""
    ctl = DriftController(RATE)
    reads = Reads(ctl, 10.0)
    reads.run(40.0)
    settled = ctl.setpoint
    late_packet(ctl, reads, late_ms)
    reads.run(20.0)                              # where an 8 ms late one raised it by 3 ms
    assert ctl.setpoint == settled


# --- the settled level on its own: reads of 10 ms passed in ------------------------------

READ = 480
TARGET = 1200                                    # the jitter buffer's: a frame and 5 ms


def reads(sp: SettledLevel, levels_ms: list[float], seconds: float, start_s: float,
          target: int = TARGET) -> list[float]:
    """Reads of 10 ms at ``start_s`` on, the level cycling through ``levels_ms``; the level
    the set-point was measured at, each time it was."""
    sp.allow(target, 960)
    measured = []
    for k in range(round(seconds * 100)):
        level = levels_ms[k % len(levels_ms)] * RATE / 1000
        mean = sp.measure(level, READ, start_s + k / 100, target_samples=target,
                          queued_samples=None, frame=960.0)
        if mean is not None:
            measured.append(mean)
    return measured


def test_the_set_point_is_measured_once_after_twenty_seconds_where_the_level_is() -> None:
    sp = SettledLevel(RATE)
    assert sp.hold() is None
    assert reads(sp, [30.0], 22.0, 0.0) == []    # 2.5 s waited, then 20 one-second means
    assert sp.setpoint is None
    assert reads(sp, [30.0], 1.0, 22.0) == [pytest.approx(0.03 * RATE)]
    assert sp.setpoint == pytest.approx(0.03 * RATE)
    assert reads(sp, [30.0], 10.0, 23.0) == []   # measured once


def test_the_lowest_read_keeps_the_jitter_allowance_and_a_guard() -> None:
    """Reads alternating 40 and 10 ms (a sink taking two frames at once): settled at 25 ms,
    the lowest read would have 10 ms; it is to keep the jitter allowance (the target beyond a
    frame: 10 ms) and a guard (a quarter frame: 5 ms), so the set-point goes 5 ms up."""
    sp = SettledLevel(RATE)
    reads(sp, [40.0, 10.0], 23.0, 0.0, target=960 + 480)
    assert sp.setpoint == pytest.approx(0.030 * RATE)


def test_a_near_miss_raises_the_set_point_at_relax_ppm_by_what_the_guard_needs() -> None:
    """Settled at 10 ms, a packet 8 ms late: the level is to keep the 5 ms guard over it,
    3 ms more; the set-point moves there at 500 ppm (the correction consumes that much
    slower), then stays."""
    sp = SettledLevel(RATE)
    reads(sp, [10.0], 23.0, 0.0)
    settled = sp.setpoint
    assert settled == pytest.approx(0.010 * RATE)
    sp.packet(0.008 * RATE, draining=False)
    assert sp.rise == pytest.approx(0.003 * RATE)
    assert sp.move(READ, TARGET) == pytest.approx(-500e-6)
    while sp.rise > 0:
        sp.move(READ, TARGET)
    assert sp.setpoint == pytest.approx(0.013 * RATE)
    assert sp.move(READ, TARGET) == 0.0
    sp.packet(0.020 * RATE, draining=False)      # later than the lowest read: a dry run's
    sp.packet(0.008 * RATE, draining=True)       # while a stall is dropped: not judged
    assert sp.rise == 0.0


def test_a_dropped_backlog_keeps_the_set_point_a_frame_expanded_measures_it_again() -> None:
    sp = SettledLevel(RATE)
    reads(sp, [30.0], 23.0, 0.0)
    settled = sp.setpoint
    assert not sp.shift(-960)
    assert sp.setpoint == settled
    assert sp.shift(960)
    assert sp.setpoint is None
    assert sp.hold() == settled                  # the jitter buffer keeps the last one


@pytest.mark.parametrize("frames", [1, 3])
def test_one_dry_frame_raises_the_level_returned_to_a_burst_is_played_out(frames: int) -> None:
    """Dry for one frame at the settled level: that level was too low, the new one is kept.
    Three frames: a burst of late packets; a minute on, played out at 500 ppm."""
    sp = SettledLevel(RATE)
    reads(sp, [30.0], 23.0, 0.0)
    assert sp.setpoint is not None
    for _ in range(frames):
        sp.expanded(960, sp.setpoint)
        sp.shift(960)
    sp.played(960)
    reads(sp, [30.0 + 20.0 * frames], 23.0, 23.0)
    relax = [sp.move(READ, TARGET) for _ in range(61 * 100)]
    assert relax[0] == 0.0                       # a minute's margin first
    assert relax[-1] == (0.0 if frames == 1 else pytest.approx(500e-6))
