"""The drift controller's stall watch right after the jitter buffer stepped the level.

A step of the jitter buffer (frames expanded for late packets, a backlog dropped) used to make
the watch forget its seconds, and it needed ten new ones before it saw anything: a stall of the
device in that time was neither counted nor dropped by it (the jitter buffer dropped the
backlog a second later, with the margin the late packets had earned). The simulation is
``simulation.simulate``: the receiver's playout path with a fake clock.
"""

from __future__ import annotations

import statistics

import pytest

from deskcast.transport.playout.stalls import Seen, StallWatch

from .simulation import simulate

BURST_AT = 150.0


@pytest.mark.parametrize("after_s, stall_s", [(5.0, 0.08), (9.0, 0.2), (5.0, 0.2)])
def test_a_stall_soon_after_a_late_burst_is_counted_and_dropped(after_s: float,
                                                              stall_s: float) -> None:
    """100 ms of packets 80 ms late (the buffer runs dry, expands, then drops the backlog),
    then the device stalls ``after_s`` later: the stall is counted once, and 20 s later the
    delay is where the same run without the stall has it (within 5 ms): what piled up was
    dropped, and nothing more."""
    end = BURST_AT + after_s + 20
    run = simulate(0.0, end, late_at=(BURST_AT,), stall_at=(BURST_AT + after_s,),
                   stall_s=stall_s)
    ref = simulate(0.0, end, late_at=(BURST_AT,))
    delay = statistics.mean(run.total_ms[-5:])
    ref_delay = statistics.mean(ref.total_ms[-5:])
    assert ref.stalls == 0
    assert run.stalls == 1
    assert delay == pytest.approx(ref_delay, abs=5.0)


def test_two_stalls_twelve_seconds_apart_are_both_counted() -> None:
    """As the frozen-server integration test does it: two stalls, 12 s apart, each counted,
    and the delay back where it was before them."""
    run = simulate(0.0, 235.0, stall_at=(200.0, 212.0), stall_s=0.08)
    assert run.stalls == 2
    before = statistics.mean(run.total_ms[190:199])
    assert statistics.mean(run.total_ms[-5:]) == pytest.approx(before, abs=5.0)


# --- the watch on its own: reads of 20 ms passed in --------------------------------------

RATE = 48000
FRAME = 960
DT = FRAME / RATE


def watch_reads(watch: StallWatch, seconds: float, level_ms: float, start_s: float,
                queued_ms: float = 0.0) -> list[Seen]:
    seen = []
    for k in range(round(seconds / DT)):
        seen.append(watch.add(level_ms * RATE / 1000, queued_ms * RATE / 1000, DT,
                              start_s + k * DT, float(FRAME)))
    return seen


def test_a_jump_of_the_delay_is_a_stall_whose_whole_frames_the_jitter_buffer_drops() -> None:
    """Fifteen steady seconds, then the delay (level plus what the sink has queued) jumps by
    50 ms: one stall, two whole frames for the jitter buffer to drop (asked once), the rest
    cut from the next frame, and meanwhile the jitter buffer leaves any backlog alone."""
    watch = StallWatch(RATE)
    assert not any(s != Seen() for s in watch_reads(watch, 15.0, 20.0, 0.0, queued_ms=30.0))
    seen = watch_reads(watch, 1.0, 20.0, 15.0, queued_ms=80.0)
    assert [s for s in seen if s.stall] == [Seen(stall=True, dropped=True)]
    assert watch.stalls == 1 and watch.draining
    drop, trim = watch.take_drop(), watch.take_trim()
    assert drop == 2 * FRAME
    assert trim == pytest.approx(0.01 * RATE, abs=1)
    assert watch.take_drop() == 0 and watch.take_trim() == 0
    assert watch.skipped(drop + 480) == 480        # beyond what it asked: the buffer's own


def test_a_ramp_is_no_stall() -> None:
    """A drift not yet measured moves the delay steadily (here 1 ms a second): no stall."""
    watch = StallWatch(RATE)
    for second in range(60):
        watch_reads(watch, 1.0, 20.0 + second, float(second))
    assert watch.stalls == 0


def test_a_sink_whose_means_wander_by_frames_needs_a_larger_jump() -> None:
    """Means that move between 20 and 25 ms from second to second (a sink taking whole frames
    at its own period): a second at 26 ms is within that wander; at 35 ms (15 over the low
    seconds, 1.5 times the largest move is 9) it is a stall."""
    watch = StallWatch(RATE)
    for second in range(20):
        watch_reads(watch, 1.0, 20.0 + 5.0 * (second % 2), float(second))
    watch_reads(watch, 1.0, 26.0, 20.0)
    assert watch.stalls == 0
    watch_reads(watch, 1.0, 20.0, 21.0)
    watch_reads(watch, 1.0, 35.0, 22.0)
    assert watch.stalls == 1


def test_after_a_step_of_the_level_the_watch_still_sees_a_stall_at_once() -> None:
    """The jitter buffer expanded a frame (the level steps by 20 ms): the seconds kept step
    with it, so a stall two seconds later is counted; forgotten, ten new seconds were needed."""
    watch = StallWatch(RATE)
    watch_reads(watch, 15.0, 20.0, 0.0)
    watch.shift(FRAME)
    watch_reads(watch, 2.0, 40.0, 15.0)
    assert watch.stalls == 0
    watch_reads(watch, 1.0, 80.0, 17.0)
    assert watch.stalls == 1


def test_after_a_restart_the_watch_waits_for_ten_seconds() -> None:
    watch = StallWatch(RATE)
    watch_reads(watch, 15.0, 20.0, 0.0)
    watch.forget()
    watch_reads(watch, 5.0, 60.0, 15.0)
    watch_reads(watch, 1.0, 120.0, 20.0)
    assert watch.stalls == 0
