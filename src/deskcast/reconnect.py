"""Riding out a device that goes away: shared by the ``pulse:`` and ``alsa:`` backends.

Once a device stream has opened, losing it (a sound server restarted, a USB card unplugged, a
null sink unloaded) is not the end: :class:`Reconnector` says so in one warning, schedules
reopen attempts with backoff and says in one more line when the stream is back. Meanwhile
the backend stands in for the device at real time (:class:`RealTimeStandIn`): a source yields
silence, a sink drops audio, so whatever is downstream (a sender's RTP stream, serve's
listeners, the loop feeding a sink) neither stops nor spins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from deskcast.backoff import Backoff
from deskcast.errors import DeskcastError
from deskcast.pacing import Pacer

logger = logging.getLogger(__name__)

RETRY_FIRST_S = 0.25
"""First reopen attempt after a lost stream; doubles while it fails ..."""
RETRY_MAX_S = 2.0
"""... up to this: a restarted server is back in well under a second, a removed device may
take minutes; 2 s keeps the wait short without hammering a server that is starting."""


class Reconnector:
    """The audio thread's side of a lost stream: one warning when lost, reopen attempts with
    backoff, one line when back."""

    def __init__(self, label: str, while_lost: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        """What the messages call the device, e.g. ``pulse:hub.monitor``."""
        self.while_lost = while_lost
        """What happens meanwhile, for the warning (``capturing silence``)."""
        self.clock = clock
        self.lost_at: float | None = None
        self.losses = 0
        self._retry_at = 0.0
        self._backoff = Backoff(RETRY_FIRST_S, RETRY_MAX_S)

    def lose(self, reason: str) -> None:
        """The stream failed (or was moved off the device): say so once, schedule a reopen."""
        if self.lost_at is None:
            self.lost_at = self.clock()
            self.losses += 1
            logger.warning("%s lost: %s; %s and reconnecting", self.label, reason,
                           self.while_lost)
        self._backoff.reset()
        self._retry_at = self.clock() + self._backoff.next()

    def retry_due(self) -> bool:
        return self.clock() >= self._retry_at

    def due_now(self) -> None:
        """Make the next reopen attempt due at once, from the start of the backoff."""
        self._backoff.reset()
        self._backoff.next()  # this attempt stands for the first one: a failure waits 2x
        self._retry_at = self.clock()

    def failed(self, reason: str) -> None:
        """A reopen attempt failed: try again later (backoff)."""
        delay = self._backoff.next()
        self._retry_at = self.clock() + delay
        logger.debug("%s: reopen failed (%s); next try in %.2f s", self.label, reason, delay)

    def reopen(self, connect: Callable[[], None], resumed: str) -> bool:
        """If a reopen is due, try ``connect()``: True once it worked (and said so)."""
        if not self.retry_due():
            return False
        try:
            connect()
        except DeskcastError as err:
            self.failed(str(err))
            return False
        self.back(resumed, reopened=True)
        return True

    def back(self, resumed: str, *, reopened: bool = False) -> None:
        """Working again; ``reopened``: on a fresh stream, opened on the device by name."""
        if self.lost_at is not None:
            logger.warning("%s is back after %.1f s: %s", self.label,
                           self.clock() - self.lost_at, resumed)
        self.lost_at = None
        self._backoff.reset()


class Closable(Protocol):
    def close(self) -> None: ...


def close_quietly(stream: Closable | None, name: str) -> None:
    """Close a device stream whose device or sound server may be gone already (a pasimple
    stream, an alsaaudio PCM): a failure to close a lost stream is no news."""
    if stream is None:
        return
    try:
        stream.close()
    except Exception as err:  # PaSimpleError, ALSAAudioError: the device is gone
        logger.debug("closing the failed stream of %s: %s", name, err)


class RealTimeStandIn:
    """Paces what stands in for a lost device (silence read, audio dropped) at real time."""

    def __init__(self, rate: int, make_pacer: Callable[[int], Pacer] = Pacer) -> None:
        """``make_pacer``: given where a backend imports it, so that tests can fake the clock."""
        self.rate = rate
        self._make_pacer = make_pacer
        self._pacer: Pacer | None = None
        self._frames = 0

    def reset(self) -> None:
        """The device is back: the next loss starts a fresh real-time count."""
        self._pacer = None

    def wait(self, frames: int) -> None:
        """Wait until the frames stood in for so far are due, then count ``frames`` more."""
        if self._pacer is None:
            self._pacer = self._make_pacer(self.rate)
            self._frames = 0
        self._pacer.wait(self._frames)
        self._frames += frames
