"""NTP time as RTCP carries it (RFC 3550 section 4): the sender report's wall-clock stamp and
the report fields made of it (LSR, DLSR, the round trip). Pure: times are passed in."""

from __future__ import annotations

import math
from typing import Final

__all__ = ["dlsr_from_seconds", "ntp_from_unix", "ntp_middle32", "round_trip_seconds",
           "unix_from_ntp"]

_U32: Final = 0xFFFFFFFF
_U64: Final = (1 << 64) - 1

_NTP_UNIX_OFFSET: Final = 2208988800
"""Seconds from 1900-01-01 (NTP epoch) to 1970-01-01 (Unix epoch)."""
_NTP_ERA_SPLIT: Final = 1 << 31


def ntp_from_unix(t: float) -> int:
    """64-bit NTP timestamp for Unix time ``t`` (valid 1968-01-20 .. 2104-02-26).

    After 2036-02-07 the seconds field wraps (NTP era 1), as RFC 4330 section 3 describes.
    """
    seconds = math.floor(t)
    fraction = round((t - seconds) * (1 << 32))
    ntp_seconds = seconds + _NTP_UNIX_OFFSET
    if not _NTP_ERA_SPLIT <= ntp_seconds < (1 << 32) + _NTP_ERA_SPLIT:
        raise ValueError(f"Unix time {t} is outside what a 64-bit NTP timestamp can represent")
    return ((ntp_seconds << 32) + fraction) & _U64


def unix_from_ntp(ntp: int) -> float:
    """Unix time of a 64-bit NTP timestamp; seconds below 2**31 are read as era 1 (>= 2036)."""
    seconds, fraction = ntp >> 32 & _U32, ntp & _U32
    if seconds < _NTP_ERA_SPLIT:
        seconds += 1 << 32
    return seconds - _NTP_UNIX_OFFSET + fraction / (1 << 32)


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp (16.16 fixed point seconds): the LSR field."""
    return (ntp >> 16) & _U32


def dlsr_from_seconds(seconds: float) -> int:
    """A delay as the DLSR field: 1/65536 s units, clamped to 0..2**32-1."""
    return max(0, min(round(seconds * 65536), _U32))


def round_trip_seconds(arrival_ntp: int, lsr: int, dlsr: int) -> float | None:
    """Round-trip time from a report block's LSR/DLSR and when it arrived (RFC 3550 6.4.1).

    ``arrival_ntp`` is the sender's own 64-bit NTP clock at arrival. ``None`` if ``lsr`` is 0
    (the receiver has had no SR yet); may come out negative if the peer overstated DLSR.
    """
    if lsr == 0:
        return None
    units = (ntp_middle32(arrival_ntp) - lsr - dlsr + 0x80000000) & _U32
    return (units - 0x80000000) / 65536
