"""The :class:`Source` interface every capture backend implements, and self-pacing."""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from deskcast.endpoints import Endpoint
from deskcast.media import AudioFormat, PcmBlock

logger = logging.getLogger(__name__)


class Source(abc.ABC):
    """PCM in: yields blocks of exactly ``block_frames`` frames in ``fmt``.

    ``read()`` blocks until the next block is due and returns None when the source has ended
    (a file without ``loop``, stdin at EOF). Device sources are paced by the device clock;
    file and generator sources pace themselves at real time.
    """

    clocked = False
    """True when a sound card / sound server clock paces ``read()``."""

    pacer: Pacer | None = None
    """Self-pacing of file and generator sources. Set it to None when the sink is clocked:
    the sound card then sets the pace and its buffer stays full instead of running near empty
    (one clock, not two)."""

    sink_queued_s: float | None = None
    """What the sink still had queued when this read was asked for (seconds), set before
    each read of a source that is not clocked when the sink can tell (None: it cannot)."""

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int) -> None:
        self.endpoint = endpoint
        self.fmt = fmt
        self.block_frames = block_frames
        self.block_bytes = block_frames * fmt.frame_bytes
        self.overruns = 0
        """Times the device dropped captured audio because we read too late."""

    @property
    def name(self) -> str:
        """What is actually being read, for status lines (e.g. the resolved device)."""
        return str(self.endpoint)

    def open(self) -> None:  # noqa: B027 - optional hook
        """Acquire the device or file; raise DeskcastError with a one-line reason."""

    @abc.abstractmethod
    def read(self) -> PcmBlock | None:
        """The next block, or None at the end of the source."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device; safe to call twice."""

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


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
