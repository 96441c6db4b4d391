"""Reconnector's schedule of reopen attempts, on a fake clock."""

from __future__ import annotations

from deskcast.reconnect import RETRY_FIRST_S, RETRY_MAX_S, Reconnector


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def attempt_times(rc: Reconnector, clock: Clock, failures: int) -> list[float]:
    """When the next ``failures`` attempts fall due (each one failing), from now."""
    start, times = clock.now, []
    for _ in range(failures):
        while not rc.retry_due():
            clock.now = round(clock.now + 0.05, 6)
        times.append(round(clock.now - start, 6))
        rc.failed("refused")
    return times


def test_reopen_attempts_back_off_from_the_loss() -> None:
    clock = Clock()
    rc = Reconnector("pulse:x", "capturing silence", clock)
    rc.lose("gone")
    assert rc.lost_at == 100.0 and rc.losses == 1
    first, m = RETRY_FIRST_S, RETRY_MAX_S
    assert attempt_times(rc, clock, 5) == [first, 3 * first, 7 * first, 7 * first + m,
                                           7 * first + 2 * m]


def test_an_attempt_made_due_at_once_takes_the_first_place() -> None:
    clock = Clock()
    rc = Reconnector("pulse:x", "capturing silence", clock)
    rc.lose("moved")
    rc.due_now()
    assert rc.retry_due()
    assert attempt_times(rc, clock, 3) == [0.0, 2 * RETRY_FIRST_S, 6 * RETRY_FIRST_S]


def test_back_starts_the_backoff_over() -> None:
    clock = Clock()
    rc = Reconnector("pulse:x", "capturing silence", clock)
    rc.lose("gone")
    attempt_times(rc, clock, 4)
    rc.back("capturing again", reopened=True)
    assert rc.lost_at is None
    rc.lose("gone again")
    assert rc.losses == 2
    assert attempt_times(rc, clock, 2) == [RETRY_FIRST_S, 3 * RETRY_FIRST_S]
