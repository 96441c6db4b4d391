"""Riding out a device that goes away: the device stream both backends and both directions
share, written once.

Once a device stream has opened, losing it (a sound server restarted, a USB card unplugged, a
null sink unloaded) is not the end: :class:`Reconnector` says so in one warning, schedules
reopen attempts with backoff (:mod:`deskcast.backoff`) and says in one more line when the
stream is back. Meanwhile the stream stands in for the device at real time
(:class:`RealTimeStandIn`, :mod:`deskcast.pacing`): a source reads silence, a sink drops audio,
so whatever is downstream (a sender's RTP stream, serve's listeners, the loop feeding a sink)
neither stops nor spins. :class:`DeviceStream` puts these together around one library stream;
a backend module says only how its stream opens, moves a block and words its errors:
:mod:`deskcast.pulse` (``PulseStream``) and :mod:`deskcast.alsa` (``AlsaStream``). The
``pulse:`` and ``alsa:`` Sources (:mod:`deskcast.capture`) and Sinks (:mod:`deskcast.playback`)
each hold one such stream.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from deskcast.backoff import Backoff
from deskcast.errors import DeskcastError, DeviceError
from deskcast.media import AudioFormat
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
        """``make_pacer``: a parameter so that tests can fake the clock."""
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


@dataclass(frozen=True)
class Words:
    """How the messages of one direction say it."""

    opened: str
    """``capturing pulse:hub.monitor (Monitor of hub) at …``"""
    while_lost: str
    """``… lost: …; capturing silence and reconnecting``"""
    resumed: str
    """``… is back after 1.8 s: capturing again``"""
    failed: str
    """``capture from alsa:hubcap failed: …`` (without reconnect)"""


CAPTURE = Words("capturing", "capturing silence", "capturing again", "capture from")
PLAYBACK = Words("playing to", "dropping audio", "playing again", "playback to")


class DeviceStream(abc.ABC):
    """One library stream on a device, in one direction, kept there: opened once, reopened
    with backoff after a failure, stood in for at real time while lost.

    :meth:`open` is the first opening: a failure there is the user's to fix (a one-line
    :class:`~deskcast.errors.DeskcastError`). After it, :meth:`read` captures one block and
    :meth:`write` plays one; when the device fails under either, the stream is closed,
    :attr:`keeper` says so in one warning and reopens it when due, and meanwhile :meth:`read`
    returns silence and :meth:`write` drops the audio, both at real time. Without
    ``reconnect`` the failure is raised as a one-line error instead.

    A backend says how its stream opens (:meth:`_open`), moves a block (:meth:`_read`,
    :meth:`_write`) and words a failure (:meth:`_error`, :meth:`_lost_reason`).
    """

    errors: tuple[type[Exception], ...]
    """What the backend's library raises when its device fails."""

    def __init__(self, fmt: AudioFormat, block_frames: int, *, capture: bool,
                 reconnect: bool = True, keeper: Reconnector | None = None) -> None:
        self.fmt = fmt
        self.block_frames = block_frames
        self.block_bytes = block_frames * fmt.frame_bytes
        self.capture = capture
        self.words = CAPTURE if capture else PLAYBACK
        self.reconnect = reconnect
        """Survive a device that fails once open (else the failure is raised)."""
        self.keeper = (keeper if keeper is not None
                       else Reconnector(self.name, self.words.while_lost))
        self.handle: Any = None
        """The library's stream (a ``pasimple.PaSimple``, an ``alsaaudio.PCM``); None while
        lost or closed."""
        self.description = ""
        """What the device calls itself, if it says (for the "capturing" line)."""
        self.xruns = 0
        """Times the device ran over (capture) or dry (playback) because we were late, where
        the backend can tell."""
        self._stand_in = RealTimeStandIn(fmt.rate, Pacer)

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The device as the user names it, e.g. ``alsa:hubcap``."""

    def open(self) -> None:
        """Open the device, or raise a one-line DeskcastError."""
        self._connect()
        self.keeper.label = self.name  # a device found by asking the server is named now
        what = f"{self.name} ({self.description})" if self.description else self.name
        logger.info("%s %s at %s", self.words.opened, what, self.fmt)

    def read(self) -> bytes:
        """One block captured: the device's audio, or silence at real time while it is
        lost."""
        handle = self.ready()
        if handle is not None:
            try:
                return self._read(handle)
            except self.errors as err:
                self._failed(err)
        self._stand_in.wait(self.block_frames)
        return bytes(self.block_bytes)

    def write(self, data: bytes) -> None:
        """Play one block; while the device is lost, drop it at real time (so that the loop
        feeding the sink keeps its pace)."""
        handle = self.ready()
        if handle is not None:
            try:
                self._write(handle, data)
                return
            except self.errors as err:
                self._failed(err)
        self._stand_in.wait(len(data) // self.fmt.frame_bytes)

    def ready(self) -> Any:
        """The open library stream, reopened first if it was lost and a reopen is due; None
        while lost."""
        if self.handle is None and self.keeper.reopen(self._connect, self.words.resumed):
            self._stand_in.reset()
        return self.handle

    def drop(self) -> None:
        """Close the library stream without a word (its device may be gone already)."""
        handle, self.handle = self.handle, None
        close_quietly(handle, self.name)

    def close(self) -> None:
        """Play out what a playback stream still holds, then release; safe to call twice."""
        if self.handle is not None and not self.capture:
            try:
                self.handle.drain()
            except self.errors as err:
                logger.debug("drain of %s failed: %s", self.name, err)
        self.drop()

    def _connect(self) -> None:
        self.handle = self._open()

    def _failed(self, err: Exception) -> None:
        if not self.reconnect:
            raise self._error(err, f"{self.words.failed} {self.name} failed") from None
        self.drop()
        self.keeper.lose(self._lost_reason(err))

    @abc.abstractmethod
    def _open(self) -> Any:
        """Open the library stream; raise a one-line DeskcastError."""

    @abc.abstractmethod
    def _read(self, handle: Any) -> bytes:
        """Capture one block (``block_bytes``) from the open stream."""

    @abc.abstractmethod
    def _write(self, handle: Any, data: bytes) -> None:
        """Play one block on the open stream."""

    def _error(self, err: Exception, what: str) -> DeskcastError:
        """``what`` (``capture from alsa:x failed``) and why, in one line."""
        return DeviceError(f"{what}: {err}")

    def _lost_reason(self, err: Exception) -> str:
        """Why the stream was lost, for the one warning."""
        return str(err)


class StreamEnd:
    """What the Source or Sink holding a :class:`DeviceStream` does by asking the stream:
    its name, open and close (mixed into :class:`~deskcast.capture.device.DeviceSource` and
    :class:`~deskcast.playback.device.DeviceSink`)."""

    stream: DeviceStream
    clocked = True
    """The device's clock paces the reads or writes."""

    @property
    def name(self) -> str:
        return self.stream.name

    def open(self) -> None:
        self.stream.open()

    def close(self) -> None:
        self.stream.close()
