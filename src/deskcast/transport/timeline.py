"""The sender's timeline: which RTP timestamp it captures when, on its wall clock, and its
answers to the receivers' clock questions (:mod:`deskcast.transport.timesync`).

A block is read from the source as soon as its last sample is captured (a little later when
the thread was busy), so the reads' earliest times against the samples read so far (their
upper envelope, :class:`~deskcast.transport.playout.clocktrack.ClockTrack`) trace the
capture clock. :class:`CaptureLine` is a smooth line through them: anchored at the first
read, running at the rate measured, and pulled towards the envelope slowly (at most
``max_steer_ppm``), so that what it tells the receivers never steps: every receiver that
asks at any moment hears the same line, whatever it joined.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from deskcast.transport.playout.clocktrack import ClockTrack
from deskcast.transport.rtcp import AppPacket
from deskcast.transport.rtp import U32, RtpError
from deskcast.transport.timesync import (
    TimelinePoint,
    TimeRequest,
    TimeResponse,
    answer,
    parse_time,
)

logger = logging.getLogger(__name__)


class CaptureLine:
    """Samples captured against the wall clock, as a line that never steps."""

    def __init__(self, rate: int, *, correct_s: float = 5.0, max_steer_ppm: float = 500.0,
                 update_s: float = 1.0) -> None:
        self.rate = rate
        self.correct_s = correct_s
        """The line closes its distance to the envelope over this long."""
        self.max_steer = max_steer_ppm / 1e6
        self.update_s = update_s
        self.track = ClockTrack()
        self._t0: float | None = None
        self._s0 = 0.0
        self.speed = float(rate)
        """Samples a second of the wall clock."""
        self._next = 0.0

    def captured(self, samples: int, at_s: float) -> None:
        """``samples`` have been captured since the start, as read at ``at_s`` (wall)."""
        self.track.add(at_s, samples / self.rate)
        if self._t0 is None:
            self._t0, self._s0, self._next = at_s, float(samples), at_s + self.update_s
            return
        if at_s < self._next:
            return
        self._next = at_s + self.update_s
        envelope = self.track.offset_s
        assert envelope is not None
        here = self.at(at_s)
        ahead = here - (at_s + envelope) * self.rate
        steer = max(-self.max_steer, min(self.max_steer, ahead / self.rate / self.correct_s))
        self._t0, self._s0 = at_s, here
        self.speed = self.rate * (1.0 + (self.track.slope or 0.0) - steer)

    def at(self, at_s: float) -> float:
        """Samples captured by ``at_s`` on the line."""
        if self._t0 is None:
            return 0.0
        return self._s0 + (at_s - self._t0) * self.speed

    @property
    def started(self) -> bool:
        return self._t0 is not None

    @property
    def rate_ppb(self) -> int:
        return round((self.speed / self.rate - 1.0) * 1e9)


class TimeServer:
    """The sender's side of the clock exchange: its timeline, and the answers."""

    def __init__(self, ssrc: int, rate: int, first_rtp: int, latency_s: float,
                 wall: Callable[[], float] = time.time) -> None:
        self.ssrc = ssrc
        self.first_rtp = first_rtp
        self.latency_us = round(latency_s * 1e6)
        self.line = CaptureLine(rate)
        self.wall = wall
        self.answered = 0
        self.dropped: dict[str, int] = {}

    def captured(self, samples: int) -> None:
        """``samples`` have been read from the source since the start, just now."""
        self.line.captured(samples, self.wall())

    def point(self, at_s: float) -> TimelinePoint:
        rtp = (self.first_rtp + round(self.line.at(at_s))) & U32
        return TimelinePoint(rtp, self.line.rate_ppb, self.latency_us)

    def question(self, app: AppPacket) -> TimeRequest | None:
        """The clock question in ``app``, if it is one to us (others are counted)."""
        try:
            packet = parse_time(app)
        except RtpError as err:
            self.drop(err.reason)
            return None
        if packet is None:
            return None
        if not isinstance(packet, TimeRequest) or packet.sender != self.ssrc:
            self.drop("time-stranger")
            return None
        if not self.line.started:
            self.drop("time-not-started")
            return None
        return packet

    def answer(self, request: TimeRequest, t2_s: float) -> TimeResponse:
        """The answer to ``request``, which arrived at ``t2_s`` (wall), leaving now."""
        t3 = self.wall()
        self.answered += 1
        return answer(request, self.ssrc, t2_s, t3, self.point(t3))

    def drop(self, reason: str) -> None:
        """Count a clock question not answered."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
