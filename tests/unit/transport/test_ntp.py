"""NTP time as RTCP carries it (deskcast.transport.ntp): known values, the 2036 era, the
round trip of RFC 3550's example."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deskcast.transport.ntp import (
    dlsr_from_seconds,
    ntp_from_unix,
    ntp_middle32,
    round_trip_seconds,
    unix_from_ntp,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_ntp_known_values() -> None:
    assert ntp_from_unix(0.0) == 2208988800 << 32
    assert ntp_from_unix(0.5) == (2208988800 << 32) + (1 << 31)
    assert unix_from_ntp(2208988800 << 32) == 0.0
    assert ntp_middle32(0x0123_4567_89AB_CDEF) == 0x4567_89AB


def test_ntp_era_1_after_2036() -> None:
    t = (1 << 32) - 2208988800 + 10.25  # 2036-02-07 06:28:26.25 UTC
    ntp = ntp_from_unix(t)
    assert ntp == (10 << 32) + (1 << 30)
    assert unix_from_ntp(ntp) == t
    with pytest.raises(ValueError):
        ntp_from_unix(5e9)  # 2128
    with pytest.raises(ValueError):
        ntp_from_unix(-1e8)  # 1966


@FAST
@given(st.floats(-6e7, 4.2e9))
def test_ntp_round_trip(t: float) -> None:
    assert unix_from_ntp(ntp_from_unix(t)) == pytest.approx(t, abs=1e-6)


def test_round_trip_time_rfc3550_example() -> None:
    # RFC 3550 6.4.1: A = 0xb710:8000, LSR = 0xb705:2000, DLSR = 0x0005:4000 -> 6.125 s
    arrival = 0xB7108000 << 16
    assert round_trip_seconds(arrival, 0xB7052000, 0x00054000) == 6.125
    assert round_trip_seconds(arrival, 0, 0x00054000) is None
    assert dlsr_from_seconds(5.25) == 0x00054000
    assert dlsr_from_seconds(-1) == 0
    assert dlsr_from_seconds(1e6) == 0xFFFFFFFF


def test_round_trip_time_across_wrap() -> None:
    lsr = 0xFFFFFF00
    arrival = ((lsr + 0x00020000) & 0xFFFFFFFF) << 16  # 2 s later, middle bits wrapped
    assert round_trip_seconds(arrival, lsr, dlsr_from_seconds(1.5)) == 0.5
