"""The control law on its own: readings passed in, the ratio out."""

from __future__ import annotations

import pytest

from deskcast.transport.playout import MAX_PPM, ControlLaw

RATE = 48000
READ = 480 / RATE          # 10 ms of input per read


def test_without_a_set_point_the_ratio_is_the_feed_forward_clamped() -> None:
    law = ControlLaw(RATE)
    assert law.correct(300e-6, None, relax=0.0, wait=False, dt=READ, now_s=1.0) == \
        pytest.approx(1 - 300e-6, abs=1e-12)
    assert law.correct(0.01, None, relax=0.0, wait=False, dt=READ, now_s=1.0) == \
        pytest.approx(1 - MAX_PPM / 1e6, abs=1e-12)
    assert law.integral == 0.0


def test_the_level_term_is_kp_times_the_error_within_its_bound() -> None:
    """10 ms over the set-point asks for 10 ms / 60 s = 167 ppm; 100 ms for its bound, 1000."""
    law = ControlLaw(RATE)
    law.settled(0.0)                                 # the integral waits two minutes
    ratio = law.correct(0.0, 0.01 * RATE, relax=0.0, wait=False, dt=READ, now_s=1.0)
    assert (1 - ratio) * 1e6 == pytest.approx(166.7, abs=0.1)
    assert law.error_s == pytest.approx(0.01)
    ratio = law.correct(0.0, 0.1 * RATE, relax=0.0, wait=False, dt=READ, now_s=1.0)
    assert (1 - ratio) * 1e6 == pytest.approx(1000.0, abs=1e-6)
    assert law.integral == 0.0


def test_the_integral_waits_after_the_set_point_and_after_a_stall() -> None:
    law = ControlLaw(RATE)
    law.settled(0.0)
    law.correct(0.0, 0.001 * RATE, relax=0.0, wait=False, dt=READ, now_s=119.0)
    assert law.integral == 0.0
    law.correct(0.0, 0.001 * RATE, relax=0.0, wait=False, dt=READ, now_s=120.0)
    # ki = kp / 300 s: 1 ms for 10 ms of input
    assert law.integral == pytest.approx(1 / 60 / 300 * 0.001 * READ)
    law.stalled(130.0)                               # two more minutes from the stall
    before = law.integral
    law.correct(0.0, 0.001 * RATE, relax=0.0, wait=False, dt=READ, now_s=200.0)
    assert law.integral == before
    law.correct(0.0, 0.001 * RATE, relax=0.0, wait=False, dt=READ, now_s=250.0)
    assert law.integral > before


@pytest.mark.parametrize("case", ["waiting", "relaxing", "too large", "at the limit"])
def test_the_integral_does_not_move_where_the_error_is_no_clock(case: str) -> None:
    """While a stall's backlog is dropped, while the set-point moves on purpose, for an error
    over 20 ms (a transient), and when the output is pinned at the limit the way the error
    pushes (anti-windup)."""
    law = ControlLaw(RATE)
    error, relax, wait, ff = 0.005 * RATE, 0.0, False, 0.0
    if case == "waiting":
        wait = True
    elif case == "relaxing":
        relax = 500e-6
    elif case == "too large":
        error = 0.03 * RATE
    else:
        ff = MAX_PPM / 1e6
    ratio = law.correct(ff, error, relax=relax, wait=wait, dt=READ, now_s=1.0)
    assert law.integral == 0.0
    if case == "waiting":
        assert ratio == 1.0                          # and no level term either


def test_drift_ppm_is_the_mean_of_the_last_ten_seconds() -> None:
    law = ControlLaw(RATE)
    assert law.drift_ppm(123e-6) == pytest.approx(123.0)   # before the first second
    for k in range(1000):                            # 10 s at 100 ppm, then 5 s at 300 ppm
        law.correct(100e-6, None, relax=0.0, wait=False, dt=READ, now_s=k * READ)
    for k in range(500):
        law.correct(300e-6, None, relax=0.0, wait=False, dt=READ, now_s=10 + k * READ)
    assert law.drift_ppm(300e-6) == pytest.approx(200.0, abs=1.0)
