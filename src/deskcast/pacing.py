"""Real-time pacing: what makes a source that has no sound card behind it (a file, a generator,
a lost device's stand-in) go no faster than real time."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Pacer:
    """Sleeps so that frame ``n`` is released at ``start + n / rate`` (real time).

    If the process was stalled for longer than ``max_lag_s`` it starts counting afresh instead
    of bursting out everything it missed.
    """

    def __init__(self, rate: float, *, max_lag_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self.max_lag_s = max_lag_s
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None
        self._origin_frames = 0
        self.resyncs = 0

    def wait(self, frames: int) -> None:
        """Wait until ``frames`` frames since the first call are due."""
        now = self._clock()
        if self._start is None:
            self._start, self._origin_frames = now, frames
            return
        due = self._start + (frames - self._origin_frames) / self.rate
        if now - due > self.max_lag_s:
            logger.debug("pacer: %.3f s behind, restarting the real-time clock", now - due)
            self._start, self._origin_frames = now, frames
            self.resyncs += 1
            return
        if due > now:
            self._sleep(due - now)
