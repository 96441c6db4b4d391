"""The set-point: the level the drift controller holds.

The level is how far the sender's clock, mapped onto ours, is ahead of the frame being read
(:meth:`deskcast.transport.playout.clocks.Clocks.level`). Its set-point is where the level
settled, but at least high enough that the lowest read of the sink's bursts keeps room for the
network's jitter and a guard. A packet that comes in time but within the guard of running dry
raises it, slowly, before any dry run; running dry there for one frame raises it by that frame
for good (:class:`SettledLevel`).

:class:`SetPoint` is what the controller asks of a set-point: the place where a different
rule plugs in. A schedule that plays each sample at a given time (issue 18) is one: the delay
a listener hears is the level plus what the sink has queued (both passed to
:meth:`SetPoint.measure`), so the set-point that plays every frame ``delay_s`` after the
sender's clock is ``delay_s x rate - queued_samples``, taken anew at every read, with none of
the measuring, raising and playing out below (:meth:`SetPoint.move` returning 0).
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

logger = logging.getLogger(__name__)


class SetPoint(Protocol):
    """The level (samples) a :class:`~deskcast.transport.playout.controller.DriftController`
    holds, and what it tells the set-point about the stream."""

    @property
    def setpoint(self) -> float | None:
        """The level to hold now; None while it is not known (the controller only follows
        the clocks then)."""

    def measure(self, level: float, played_samples: int, now_s: float, *,
                target_samples: float | None, queued_samples: float | None,
                frame: float) -> float | None:
        """One read: the raw ``level`` before ``played_samples`` were taken at ``now_s``, the
        jitter buffer's target, what the sink had queued (None: it cannot tell) and the
        frame's length. Returns the level the set-point was just measured at (the controller
        restarts its smoothed level there), else None."""

    def move(self, played_samples: int, target_samples: float | None) -> float:
        """The set-point's own motion for this read: the extra correction (ratio units,
        positive: consume faster) that moves the level with it."""

    def hold(self) -> float | None:
        """The level for the jitter buffer to keep when it drops a backlog (None: its own
        target)."""

    def packet(self, late_samples: float, draining: bool) -> None:
        """A packet came ``late_samples`` behind the packets on time (``draining``: while
        what a device stall piled up is being dropped)."""

    def allow(self, target_samples: int, frame_samples: int) -> None:
        """The jitter buffer's target at this read, and the frame's length."""

    def expanded(self, samples: int, level: float | None) -> None:
        """The buffer ran dry: ``samples`` concealed without consuming at smoothed
        ``level``."""

    def played(self, samples: int) -> None:
        """A frame of real audio was read."""

    def shift(self, samples: float) -> bool:
        """The jitter buffer stepped the level by ``samples``; True if the set-point is to be
        measured again (the control error restarts at 0)."""

    def restart(self) -> None:
        """The stream restarts after silence or with another sender."""


class SettledLevel:
    """Where the level settled, kept with room for the network's jitter (:class:`SetPoint`).

    The set-point is the level the buffer settled at, not the jitter buffer's target: the
    jitter buffer reaches its target by itself, in discrete steps (a concealed frame when it
    runs dry, dropped audio when far too much is queued), and tells us about each with
    :meth:`shift`. After a step the set-point is measured again where the buffer now sits,
    once the sender's envelope shows the network as it is now: a late burst's margin is kept
    rather than bent out, a route that got slower is not mistaken for margin, and the error
    never sits pinned against a step the jitter buffer made (the old controller's wind-up).
    A minute after the last late packet, audio that steps added beyond where the stream
    first settled relative to the jitter buffer's target is played out again at
    ``relax_ppm``; running dry there for a single frame (the level was too low for the
    sink's bursts or the usual jitter, not a burst of late packets) raises that place by
    the frame, up to ``max_raise_ms`` in all.

    The set-point is measured as the mean level of the reads (not of the smoothed level,
    which remembers a dropped backlog for tens of seconds), raised, if need be, so that the
    lowest read keeps the jitter buffer's allowance for jitter (or the latest packet seen
    while measuring, up to a frame) and a guard (:attr:`guard`). A packet that comes later
    than that allowance but in time raises it before any dry run (:meth:`packet`).
    """

    def __init__(self, rate: int, *, settle_s: float = 20.0, remeasure_after_s: float = 2.5,
                 relax_ppm: float = 500.0, relax_after_s: float = 60.0,
                 max_raise_ms: float = 20.0, guard_ms: float = 2.0,
                 guard_frames: float = 0.25) -> None:
        self.rate = rate
        self.settle_s = settle_s
        """How long the set-point is measured (a mean of the level): long enough to take in
        a good part of the sawtooth, while the feed-forward alone holds the level."""
        self.remeasure_after_s = remeasure_after_s
        """At the start and after a step, wait this long before measuring: the sender's
        envelope spans up to two 1 s bins, and a late burst's packets must have come in."""
        self.relax_ppm = relax_ppm
        """How fast audio added by the jitter buffer's steps is played out again (500 ppm:
        20 ms in 40 s, a quarter of the pitch change anyone could hear)."""
        self.relax_after_s = relax_after_s
        """... once no step came for this long (a network that was late once is often
        late again soon: keep the margin for a while; with a late burst every 20 s, 10 s here
        ran the buffer dry at every third burst in simulation)."""
        self.max_raise = max_raise_ms * rate / 1000
        """How far running dry at the settled level may raise it (a 20 ms frame: more and
        the level would meet the jitter buffer's limit, target + two frames, where it drops
        the backlog)."""
        self.guard_min = guard_ms * rate / 1000
        self.guard_frames = guard_frames
        """Margin of the lowest read's level over the network's jitter (:attr:`guard`)."""
        self.setpoint: float | None = None
        """Level (samples) the controller holds; None while it is being measured."""
        self._last_setpoint: float | None = None
        self._frame = 0.0
        self._allowance = 0.0
        """The jitter buffer's target beyond a frame: how late packets come (95 %)."""
        self._offset: float | None = None
        """Where the level returns to, relative to the jitter buffer's target: where the
        stream first settled, raised when it ran dry there."""
        self._first_offset = 0.0
        self._target = 0.0
        self._spread = 0.0
        """How far the lowest read was below the mean when the level was last measured
        (a sink that takes several frames at once reads the top and the bottom of a burst)."""
        self._since_step = 0.0
        self._dry_frames = 0
        """Frames expanded in a row, up to the last one."""
        self._may_raise = False
        self._measure_from: float | None = None
        self._sum = self._time = 0.0
        self._second_means: list[float] = []
        self._lowest = math.inf
        self._latest_late = 0.0
        """The latest packet (against the envelope) since the set-point was last measured,
        in samples."""
        self.rise = 0.0
        """What the set-point is still to be raised by, at ``relax_ppm`` (:meth:`packet`)."""

    @property
    def guard(self) -> float:
        """Margin (samples) the lowest read keeps over the latest packet the level allows
        for: a quarter of a frame, at least 2 ms. What running dry costs is a frame of delay
        for good (:meth:`_raise`); what the guard costs is itself, all the time. On a shared
        2-core VM a packet came 8-18 ms late once or twice in five minutes (the sender not
        scheduled), against under 1 ms for 99.9 % of them, and with 2 ms the first of
        those ran the buffer dry within minutes. The guard is also the margin
        :meth:`packet` keeps over the latest packet that came in time."""
        return max(self.guard_min, self.guard_frames * self._frame)

    def hold(self) -> float | None:
        """The last set-point while a new one is being measured; None before the first."""
        return self.setpoint if self.setpoint is not None else self._last_setpoint

    def allow(self, target_samples: int, frame_samples: int) -> None:
        self._allowance = max(0.0, target_samples - frame_samples)

    def packet(self, late_samples: float, draining: bool) -> None:
        """The set-point being measured leaves room for the latest packet; one that comes
        ``late_samples`` behind the envelope, in time but within the guard of the lowest
        read of the settled level, raises the level so that its lowest read keeps the guard
        over it, for good (up to ``max_raise`` in all, as a dry run raises it). How late
        packets come shows over minutes (a sender or a network thread not scheduled for a
        few ms now and then), not in the seconds the level was measured; raised before the
        first dry run, the level moves by a few ms, at ``relax_ppm`` (inaudible); a dry run
        instead conceals a frame and adds all of it to the delay at once. A packet later
        than the lowest read (it may have run the buffer dry, or a burst after a network
        stall did) is left to the dry run."""
        self._latest_late = max(self._latest_late, late_samples)
        if self.setpoint is None or self._offset is None or draining:
            return
        aim = self.setpoint + self.rise
        if late_samples >= aim - self._spread:
            return
        need = min(self._spread + late_samples + self.guard,
                   self._target + self._first_offset + self.max_raise)
        if need > self._target + self._offset:
            self._offset = need - self._target
        if need > aim:
            logger.debug("drift: a packet %.1f ms late: level raised to %.1f ms (from %.1f)",
                         1000 * late_samples / self.rate, 1000 * need / self.rate,
                         1000 * aim / self.rate)
            self.rise = need - self.setpoint

    def measure(self, level: float, played_samples: int, now_s: float, *,
                target_samples: float | None, queued_samples: float | None,
                frame: float) -> float | None:
        """Measure the set-point when there is none: the lowest of the one-second means of
        the levels read (not of the smoothed level, which takes tens of seconds to forget
        what came before a step; and not the mean of all: a stall of the device while it
        is measured piles audio up, which would be held from then on)."""
        self._frame = frame
        if self.setpoint is not None:
            return None
        if self._measure_from is None:
            self._measure_from = now_s + self.remeasure_after_s
        if now_s < self._measure_from:
            return None
        dt = played_samples / self.rate
        self._sum += level * dt
        self._time += dt
        self._lowest = min(self._lowest, level)
        if self._time >= 1.0:
            self._second_means.append(self._sum / self._time)
            self._sum = self._time = 0.0
        if len(self._second_means) < self.settle_s:
            return None
        mean = min(self._second_means)
        # Where the level settled, but high enough that its lowest reads (the last frame of
        # a burst the sink takes at once) keep what the network's jitter needs: the jitter
        # buffer's target beyond a frame or the latest packet while measuring (up to a
        # frame), and a guard.
        allowance = max(self._allowance, min(self._latest_late, self._frame))
        floor = (mean - self._lowest) + (allowance if target_samples is not None
                                         else 0.0) + self.guard
        if floor > mean:
            logger.debug("drift: level %.1f ms, lowest %.1f ms: held at %.1f ms",
                         1000 * mean / self.rate, 1000 * self._lowest / self.rate,
                         1000 * floor / self.rate)
        self.setpoint = self._last_setpoint = max(mean, floor)
        self._spread = mean - self._lowest
        if target_samples is not None:
            self._target = target_samples
            if self._offset is None:
                self._offset = self._first_offset = self.setpoint - target_samples
        return mean

    def move(self, played_samples: int, target_samples: float | None) -> float:
        """Raise the set-point towards where a near miss asked for, or play out what steps
        added above where the stream settled; the extra correction that does it (ratio
        units, negative: consume slower), the set-point moving with the level so that the
        level error is untouched (nothing for the integral to take)."""
        assert self.setpoint is not None
        if target_samples is not None:
            self._target = target_samples
        if self.rise > 0:
            # Raised for a packet that came near running dry (:meth:`packet`): consuming
            # relax_ppm slower adds exactly this much.
            step = min(self.rise, self.relax_ppm / 1e6 * played_samples)
            self.setpoint += step
            self.rise -= step
            if self._last_setpoint is not None:
                self._last_setpoint = max(self._last_setpoint, self.setpoint)
            return -step / played_samples
        if target_samples is None or self._offset is None:
            return 0.0
        self._since_step += played_samples / self.rate
        above = self.setpoint - (target_samples + self._offset)
        if above > 0.002 * self.rate and self._since_step >= self.relax_after_s:
            # Consuming relax_ppm faster drains exactly this much.
            relax = self.relax_ppm / 1e6
            self.setpoint -= relax * played_samples
            return relax
        return 0.0

    def expanded(self, samples: int, level: float | None) -> None:
        if not self._dry_frames:
            # Whether this dry run starts while settled at the level the stream settled at
            # (not while it is being measured after a step, nor above it).
            self._may_raise = self.setpoint is not None and self._offset is not None and \
                level is not None and level - (self._target + self._offset) < samples
        self._dry_frames += 1

    def played(self, samples: int) -> None:
        if self._dry_frames == 1 and self._may_raise:
            self._raise(samples)
        self._dry_frames = 0

    def _raise(self, samples: int) -> None:
        """The buffer ran dry for one frame at the settled level: that level is too low,
        for the sink's bursts or for the network's usual jitter (a packet later than any
        seen while the level was measured). It goes up by the frame, within a bound, and
        stays there: played out again a minute later (as before), the frame made a bump of
        its length in the delay, and soon the next dry run. A burst of late packets (more
        than a frame expanded) is the network's: all of it is played out again."""
        assert self._offset is not None
        raised = min(self._offset + samples, self._first_offset + self.max_raise)
        if raised > self._offset:
            logger.debug("drift: ran dry for a frame at the settled level: %+.1f ms on it",
                         1000 * (raised - self._offset) / self.rate)
            self._offset = raised

    def shift(self, samples: float) -> bool:
        """The level was stepped on purpose by ``samples`` (positive: more audio queued, e.g.
        a frame concealed without consuming; negative: audio dropped). The set-point is
        measured again, a moment later, where the buffer then sits; except after a backlog
        dropped while there was one: the jitter buffer dropped back to it (:meth:`hold`),
        and measured again each time, it crept up by whatever the next stall piled up while
        it was being measured."""
        if samples < 0 and self.setpoint is not None:
            return False
        self._remeasure()
        if samples > 0:
            # Ran dry: the network was late (or the level too low); keep the margin a while.
            # A dropped backlog (our thread or the sink stalled, a burst after a network
            # stall) says nothing about the network: what it left above the settled level is
            # played out as usual.
            self._since_step = 0.0
        return True

    def restart(self) -> None:
        self._offset = None
        self._remeasure()

    def _remeasure(self) -> None:
        self.setpoint = None
        self._measure_from = None
        self._sum = self._time = 0.0
        self._second_means = []
        self._lowest = math.inf
        self._latest_late = 0.0
        self.rise = 0.0
