"""The control law: clocks, integral and level error into one resampling ratio.

ratio = 1 - correction; correction = the clocks' feed-forward + ``integral`` (what is left,
mostly our sink's clock against the system clock when it cannot tell) + ``kp`` x level error
(+ what the set-point's own motion asks), clamped to ``max_ppm``.

* **Integral, slow.** What the feed-forward misses shows only as a slow creep of the level;
  an integral learns it over minutes. It is clamped, and it waits while the level is being
  measured, for two minutes after a step or a stall of the device, while the level is being
  returned to where it settled, and whenever the error is larger than a clock could make it.
* **Level, proportional.** A small term pulls the level back to its set-point.
"""

from __future__ import annotations

import statistics
from collections import deque

MAX_PPM = 2000.0
"""Largest correction: 2‰ changes pitch by 3.5 cents, inaudible; 300 ppm drift needs 15 %."""


class ControlLaw:
    """Proportional-integral control of the level around the clocks' feed-forward."""

    def __init__(self, rate: int, *, max_ppm: float = MAX_PPM, kp_per_s: float = 1 / 60,
                 integral_s: float = 300.0, max_integral_ppm: float = 500.0,
                 integrate_after_s: float = 120.0, integrate_below_ms: float = 20.0,
                 max_level_ppm: float = 1000.0) -> None:
        self.rate = rate
        self.max_dev = max_ppm / 1e6
        self.kp = kp_per_s
        """10 ms off the set-point asks for 167 ppm: a level error closes with a minute's time
        constant, and an estimate 10 ppm off leaves the level 0.6 ms away."""
        self.ki = kp_per_s / integral_s
        """The integral closes what the feed-forward misses within ~5 minutes (our sink's
        clock, which only a long look at the level can tell); that slow, the level's
        sawtooth moves it by ppm, not hundreds."""
        self.max_integral = max_integral_ppm / 1e6
        """Sound cards are within a few hundred ppm of the system clock."""
        self.integrate_after_s = integrate_after_s
        """After the set-point is measured the integral waits this long: what came before
        (a start, a stall, a late burst and the jitter buffer's steps) takes a while to
        settle, and clocks do not change in minutes."""
        self.integrate_below_s = integrate_below_ms / 1000
        """Errors beyond this (a frame) are transients, not drift: the integral waits."""
        self.max_level = max_level_ppm / 1e6
        """The level term's share: large errors are the jitter buffer's to fix (it drops a
        backlog within a second); we only trim."""
        self.integral = 0.0
        self.error_s = 0.0
        """Level minus the set-point, in seconds."""
        self._integrate_from = 0.0
        self._drift_seconds: deque[float] = deque(maxlen=10)
        """The estimate's mean over each of the last ten seconds of input (:meth:`drift_ppm`)."""
        self._drift_sum = self._drift_time = 0.0

    def settled(self, now_s: float) -> None:
        """The set-point was just measured: the integral waits until what came before (a
        start, a stall, a late burst and what the jitter buffer did about it) has settled:
        clocks do not change in minutes."""
        self._integrate_from = now_s + self.integrate_after_s

    def stalled(self, now_s: float) -> None:
        """The device lost time: the integral waits (it would take the tail for a clock)."""
        self._integrate_from = max(self._integrate_from, now_s + self.integrate_after_s)

    def correct(self, feed_forward: float, error: float | None, *, relax: float, wait: bool,
                dt: float, now_s: float) -> float:
        """The ratio for ``dt`` seconds of input: ``error`` is the level minus its set-point
        (samples; None while there is none), ``relax`` what the set-point's motion adds,
        ``wait``: the level term and the integral wait (what a device stall piled up is
        being dropped: the smoothed level has it in it)."""
        level = 0.0
        if error is not None:
            self.error_s = error / self.rate
            if not wait:
                level = _clamp(self.kp * self.error_s, self.max_level)
            wanted = feed_forward + self.integral + level + relax
            # Anti-windup: the integral only moves while its output can act, and only on
            # the small, slow errors a clock makes (a stall or a late burst is the jitter
            # buffer's to settle, and the level being played out is ours, not the clocks').
            if not relax and not wait and now_s >= self._integrate_from and \
                    abs(self.error_s) < self.integrate_below_s and \
                    (abs(wanted) < self.max_dev or (wanted > 0) != (self.error_s > 0)):
                self.integral = _clamp(self.integral + self.ki * self.error_s * dt,
                                       self.max_integral)
        drift = feed_forward + self.integral
        # Too much buffered -> consume input faster -> fewer output samples per input.
        ratio = 1.0 - _clamp(drift + level + relax, self.max_dev)
        self._drift_sum += drift * dt
        self._drift_time += dt
        if self._drift_time >= 1.0:
            self._drift_seconds.append(self._drift_sum / self._drift_time)
            self._drift_sum = self._drift_time = 0.0
        return ratio

    def drift_ppm(self, drift: float) -> float:
        """The drift estimate in ppm, the mean of the last ten seconds (``drift``, the
        estimate now, before the first second). A mean of ten seconds, not a smoothing with a
        ten-second time constant: that still read 9 ppm short 47 s after the estimate stepped
        to -1000 ppm."""
        if not self._drift_seconds:
            return drift * 1e6
        return statistics.fmean(self._drift_seconds) * 1e6


def _clamp(x: float, limit: float) -> float:
    return max(-limit, min(limit, x))
