"""``alsa:DEVICE`` — play to an ALSA PCM (``alsa:default``, ``alsa:hw:0``, ``alsa:pulse``).

The ALSA period is one block and the buffer ``buffer_ms``; an underrun is counted and the
block is written again so playback carries on.

**Reconnection.** Once open, a device that fails (a USB card unplugged, the sound server
behind ``alsa:pulse`` restarted) is reported in one warning, audio is dropped at real time
meanwhile (so the loop feeding the sink keeps its pace), and the device is reopened with
backoff (:mod:`deskcast.reconnect`); one more line says when it is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from deskcast.alsa import open_pcm
from deskcast.endpoints import Endpoint
from deskcast.errors import DeviceError
from deskcast.media import AudioFormat, PcmBlock
from deskcast.pacing import Pacer
from deskcast.playback.base import MAX_WAIT_BLOCKS, Sink
from deskcast.reconnect import RealTimeStandIn, Reconnector, close_quietly

logger = logging.getLogger(__name__)


class AlsaSink(Sink):
    clocked = True

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 buffer_ms: float = 40.0, *, reconnect: bool = True) -> None:
        super().__init__(endpoint, fmt, block_frames)
        self.device = endpoint.target
        self.periods = max(2, round(fmt.frames_for_ms(buffer_ms) / block_frames))
        self.reconnect = reconnect
        """Survive a device that fails once open (see the module docstring)."""
        self.keeper = Reconnector(self.name, "dropping audio")
        self._pcm: Any = None
        self._dropping = RealTimeStandIn(fmt.rate, Pacer)
        self._buffer_frames = self.periods * block_frames
        self.sleep: Callable[[float], None] = time.sleep

    @property
    def name(self) -> str:
        return f"alsa:{self.device}"

    def open(self) -> None:
        self._connect()
        logger.info("playing to %s at %s", self.name, self.fmt)

    def _connect(self) -> None:
        self._pcm = open_pcm(self.device, self.fmt, self.block_frames, self.periods,
                             capture=False)
        # What the device granted, if it says (an ALSA buffer is often not what was asked).
        size = self._pcm.info().get("buffer_size")
        if isinstance(size, int) and size > 0:
            self._buffer_frames = size

    def wait_for_room(self) -> float | None:
        """Sleep until the device's buffer has room for a block (what it holds, its buffer
        minus what is free, leaves one) and return what it holds then, in seconds; at most
        ``MAX_WAIT_BLOCKS`` of a block. None while lost or in an xrun (write() sees to
        those). The receiver then takes each frame as late as the device allows, as with
        ``pulse:`` (see :mod:`deskcast.playback.pulse`)."""
        pcm = self._pcm
        if pcm is None:
            return None
        try:
            free = int(pcm.avail())
        except Exception:  # alsaaudio.ALSAAudioError: the device is gone; write() finds out
            return None
        if free < 0:
            return None
        queued = float(max(0, self._buffer_frames - free))
        wait = min(queued - (self._buffer_frames - self.block_frames),
                   MAX_WAIT_BLOCKS * self.block_frames)
        if wait > 0:
            self.sleep(wait / self.fmt.rate)
            queued -= wait
        return queued / self.fmt.rate

    def write(self, block: PcmBlock) -> None:
        if self._pcm is None and self.keeper.reopen(self._connect, "playing again"):
            self._dropping.reset()
        for _attempt in range(2):
            if self._pcm is None:
                break
            try:
                written = self._pcm.write(block.data)
            except Exception as err:  # alsaaudio.ALSAAudioError: device gone
                if not self.reconnect:
                    raise DeviceError(f"playback to {self.name} failed: {err}") from None
                self._drop_pcm()
                self.keeper.lose(str(err))
                break
            if written >= 0:
                return
            self.underruns += 1
            logger.debug("%s: underrun (%d)", self.name, written)
        if self._pcm is None:
            # Lost: drop the audio at real time, so the loop feeding us keeps its pace.
            self._dropping.wait(block.frames)

    def _drop_pcm(self) -> None:
        pcm, self._pcm = self._pcm, None
        if pcm is not None:
            close_quietly(pcm, self.name)

    def close(self) -> None:
        if self._pcm is None:
            return
        try:
            self._pcm.drain()
        except Exception as err:  # pragma: no cover - device vanished
            logger.debug("drain of %s failed: %s", self.name, err)
        self._drop_pcm()
