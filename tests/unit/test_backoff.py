"""Backoff: the one rule for waiting before a retry (devices, Icecast, route legs)."""

from __future__ import annotations

import pytest

from deskcast.backoff import Backoff


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    b = Backoff(1.0, 30.0)
    assert [b.next() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    b.reset()
    assert b.next() == 1
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)


def test_backoff_forgives_a_run_of_stable_s() -> None:
    b = Backoff(first_s=0.5, max_s=4.0, stable_s=30.0)
    assert [b.next(0.1) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.next(31.0) == 0.5  # it ran long enough: healthy again
    assert b.next(1.0) == 1.0
    b.reset()
    assert b.next(0.0) == 0.5


def test_backoff_never_overflows_however_long_it_fails() -> None:
    b = Backoff(0.5, 30.0)
    assert [b.next() for _ in range(5000)][-3:] == [30.0, 30.0, 30.0]
