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
