"""The stall watch: time the device loses, found and dropped.

A sink that stops taking audio for a while (a sound server or our thread not scheduled in
time; the listener hears a gap) leaves the audio that came in meanwhile waiting: the delay
jumps. The level plus what the sink reports queued (the delay of the frame being read) moves
by tenths of a ms from one second to the next, so a jump of a few ms is plain; its whole
frames are dropped at once (the jitter buffer drops them, :meth:`StallWatch.take_drop`) and the
rest is cut from the next frame (:meth:`StallWatch.take_trim`), back to where the delay was.
"""

from __future__ import annotations

import itertools
import logging
import statistics
from collections import deque
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Seen:
    """What one read showed the watch (:meth:`StallWatch.add`)."""

    stall: bool = False
    """The device lost time, just found: what came before is no ground for an integral."""
    dropped: bool = False
    """Audio is to be dropped: the level steps (not the clocks)."""
    level: float | None = None
    """A drop ended: the smoothed level starts anew at this mean of the last second."""


NOTHING = Seen()


class StallWatch:
    """Finds the device losing time in the second means of the delay, in samples of ``rate``.

    With the packets on time, a second's mean level rises over the seconds before it only
    when the device stopped taking audio for a while (it stalled and played silence, or our
    thread was not scheduled): the audio that came in meanwhile waits, and unless it is played
    out, everything after it is that much later. A rise of more than :attr:`stall` (and
    :attr:`stall_factor` times the largest move of the last minute's means) is one: what piled
    up is dropped at once, whole frames from the jitter buffer and the rest cut from the next
    frame (the listener heard the device's gap already; holding it would delay all that
    follows, and playing it out at the largest correction, 2 ms a second, takes up to 10 s
    for a frame's worth). A second's mean may have caught only part of the stall: the next
    seconds' excess is dropped too, until what is left is under half of :attr:`stall` (a
    mean's noise).
    """

    def __init__(self, rate: int, *, stall_ms: float = 3.0, stall_factor: float = 1.5,
                 stall_history_s: int = 60) -> None:
        self.rate = rate
        self.stall = stall_ms * rate / 1000
        """The smallest rise of a second's mean level over the seconds before that counts as
        the device losing time (3 ms: on a sound server that keeps time the means move by
        tenths of a ms from one second to the next)."""
        self.stall_factor = stall_factor
        """... and at least this many times the largest such move of the last
        ``stall_history_s`` seconds: a sink that takes whole frames at a fixed period makes
        the means wander by several ms, and that is no stall."""
        self.stalls = 0
        """How often the device lost time (and the receiver played out what piled up)."""
        self._seconds: deque[float] = deque(maxlen=stall_history_s)
        """The mean level of each of the last seconds that had no stall or step."""
        self._drain_until = 0.0
        """While draining: when to give up (the level is held up by something this does not
        see)."""
        self._dropping = 0
        """Taken by the receiver, not yet seen dropped."""
        self._drain_to: float | None = None
        """While audio a stall piled up is being dropped: the level to return to."""
        self._drop = 0
        """Whole frames of it to drop, for :meth:`take_drop`."""
        self._trim = 0
        """... and the rest, under a frame, to cut from the next frame, for :meth:`take_trim`."""
        self._second_sum = self._second_level = self._second_time = 0.0
        self._half_checked = False
        """Whether the second being summed was looked at half-way (:meth:`add`)."""

    @property
    def draining(self) -> bool:
        """Whether what a stall of the device piled up is being dropped (for a second or
        three after it): the jitter buffer leaves the backlog to this."""
        return self._drain_to is not None

    def add(self, level: float, queued: float, dt: float, now_s: float,
            frame: float) -> Seen:
        """A read at ``now_s`` of ``level`` (samples) with ``queued`` in the sink, for ``dt``
        seconds of input (a ``frame`` of samples)."""
        self._second_sum += (level + queued) * dt
        self._second_level += level * dt
        self._second_time += dt
        if self._second_time < 1.0:
            if self._second_time >= 0.5 and not self._half_checked:
                # Half a second in, once: a stall late in the last second showed there too
                # little to tell, and the jitter buffer drops what is over its limit after
                # a second of it, by its own depth, blind to what the sink lost from its
                # queue (simulated: 20 ms too much dropped, and the stall not counted).
                self._half_checked = True
                jump = None if self._drain_to is not None else \
                    self._jump(self._second_sum / self._second_time)
                if jump is not None:
                    self._stalled(*jump, now_s)
                    self._drop_frames(jump[1], frame)
                    # The rest of what piled up shows in the next second's mean (this one
                    # began before the stall): it is drained as usual.
                    self._second_sum = self._second_level = self._second_time = 0.0
                    self._half_checked = False
                    return Seen(stall=True, dropped=True)
            return NOTHING
        self._half_checked = False
        mean = self._second_sum / self._second_time
        level_mean = self._second_level / self._second_time
        self._second_sum = self._second_level = self._second_time = 0.0
        if self._drain_to is not None:
            excess = mean - self._drain_to
            if excess > self.stall / 2 and now_s < self._drain_until:
                logger.debug("drift: %.1f ms more of the stall to drop", 1000 * excess / self.rate)
                self._drop_frames(excess, frame)
                return Seen(dropped=True)
            if excess > self.stall / 2:
                logger.debug("drift: %.1f ms of a stall not dropped; left to the level term",
                             1000 * excess / self.rate)
                # Where the level is now is the new baseline: the seconds move up to it
                # (cleared, they left the watch blind for the next ten seconds).
                self._seconds = deque((m + excess for m in self._seconds),
                                      maxlen=self._seconds.maxlen)
            self._drain_to = None
            return Seen(level=level_mean)  # the smoothed level took the stall in
        jump = self._jump(mean)
        if jump is not None:
            self._stalled(*jump, now_s)
            self._drop_frames(jump[1], frame)
            return Seen(stall=True, dropped=True)
        self._seconds.append(mean)
        return NOTHING

    def _jump(self, mean: float) -> tuple[float, float] | None:
        """(baseline, rise) if a second's mean ``mean`` rose over the last ten seconds' by
        more than :attr:`stall` (and :attr:`stall_factor` times the largest move of the
        seconds kept) in a jump, not a ramp (a drift not yet measured moves the level
        steadily); None if not, or while fewer than ten seconds are kept."""
        if len(self._seconds) < 10:
            return None
        recent = list(self._seconds)
        baseline = statistics.median(recent[-10:])
        moves = max(abs(b - a) for a, b in itertools.pairwise(recent))
        rise = mean - baseline
        threshold = max(self.stall, self.stall_factor * moves)
        if rise > threshold and mean - recent[-1] > threshold / 2:
            return baseline, rise
        return None

    def _stalled(self, baseline: float, rise: float, now_s: float) -> None:
        """The device lost time: count it and drain back to ``baseline``."""
        self.stalls += 1
        self._drain_to = baseline
        # Three seconds' means (the level may be held where it is by what this does not
        # see, e.g. a sink that keeps losing time).
        self._drain_until = now_s + 3.0
        logger.debug("drift: the device lost %.1f ms (or more): playing it out",
                     1000 * rise / self.rate)

    def _drop_frames(self, excess: float, frame: float) -> None:
        if frame:
            self._drop = int(excess // frame * frame)
            self._trim = int(excess - self._drop)

    def take_drop(self) -> int:
        """Samples (whole frames) the jitter buffer is to drop before the next read: audio
        that piled up while the device lost time."""
        drop, self._drop = self._drop, 0
        self._dropping += drop
        return drop

    def take_trim(self) -> int:
        """Samples (under a frame) to cut from the start of the next frame decoded: the rest
        of what piled up while the device lost time."""
        trim, self._trim = self._trim, 0
        return trim

    def skipped(self, samples: int) -> int:
        """The jitter buffer dropped ``samples`` at the last read: how many of them it
        dropped by itself (a backlog), beyond what :meth:`take_drop` asked for."""
        own = min(samples, self._dropping)
        self._dropping = 0
        return samples - own

    def forget(self) -> None:
        """A new start (after silence, another sender): the seconds before are no baseline."""
        self._seconds.clear()
        self._drain_to = None
        self._drop = self._trim = 0
        self._second_sum = self._second_level = self._second_time = 0.0
        self._half_checked = False

    def shift(self, samples: float) -> None:
        """The jitter buffer stepped the level by ``samples`` (a frame expanded, a backlog
        dropped): every second's mean the watch keeps steps with it (the level is how far the
        sender is ahead of the frame played, and the step moves exactly that), and so does
        the second being summed. Forgetting them instead left the watch blind until ten new
        seconds were in: a device stall 3-9 s after a late burst was not counted, and the
        jitter buffer dropped its backlog a second later down to its own level, the margin
        the burst had earned with it (simulated, 60 random cases of a stall 3-20 s after a
        burst or another stall: 19 uncounted before, none now). A drain under way ends: the
        buffer ran dry under it, or the backlog is gone."""
        self._seconds = deque((m + samples for m in self._seconds),
                              maxlen=self._seconds.maxlen)
        self._second_sum += samples * self._second_time
        self._second_level += samples * self._second_time
        self._drain_to = None
        self._drop = self._trim = 0
