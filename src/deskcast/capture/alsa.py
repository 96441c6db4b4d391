"""``alsa:DEVICE`` — capture from an ALSA PCM (e.g. ``alsa:hubcap``, the snd-aloop hub).

Paced by the device clock. The ALSA period is one block; an overrun (we read too late) is
counted and capture carries on.

**Reconnection.** Once open, a device that fails (a USB card unplugged, the sound server
behind ``alsa:pulse…`` restarted) is reported in one warning, silence is captured at real time
meanwhile, and the device is reopened with backoff (:mod:`deskcast.reconnect`); one more line
says when it is back. A device that cannot be opened at the start is still an error.
"""

from __future__ import annotations

import logging
from typing import Any

from deskcast.alsa import open_pcm
from deskcast.capture.base import Source
from deskcast.endpoints import Endpoint
from deskcast.errors import DeviceError
from deskcast.media import AudioFormat, PcmBlock, Reblocker
from deskcast.pacing import Pacer
from deskcast.reconnect import RealTimeStandIn, Reconnector, close_quietly

logger = logging.getLogger(__name__)

RING_MS = 200.0
"""The least the device's capture buffer holds. On capture a buffer costs no delay (a block is
read as soon as its period is complete; the buffer only fills while we are late), so it is
made large enough to ride out a late reader: with 40 ms, ``send`` from the ``hubcap`` dsnoop
overran 234 times in 10 s on an emulated CPU (a garbled tone), with 200 ms never."""


class AlsaSource(Source):
    clocked = True

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 buffer_ms: float = 40.0, *, reconnect: bool = True) -> None:
        super().__init__(endpoint, fmt, block_frames)
        self.device = endpoint.target
        ring_ms = max(buffer_ms, RING_MS)
        self.periods = max(2, round(fmt.frames_for_ms(ring_ms) / block_frames))
        self.reconnect = reconnect
        """Survive a device that fails once open (see the module docstring)."""
        self.keeper = Reconnector(self.name, "capturing silence")
        self._pcm: Any = None
        self._reblocker = Reblocker(fmt, block_frames)
        self._pending: list[PcmBlock] = []
        self._pts = 0
        self._silence = RealTimeStandIn(fmt.rate, Pacer)

    @property
    def name(self) -> str:
        return f"alsa:{self.device}"

    def open(self) -> None:
        self._connect()
        logger.info("capturing %s at %s", self.name, self.fmt)

    def _connect(self) -> None:
        self._pcm = open_pcm(self.device, self.fmt, self.block_frames, self.periods,
                             capture=True)
        self._reblocker = Reblocker(self.fmt, self.block_frames, self._pts)

    def read(self) -> PcmBlock:
        if self._pcm is None and self.keeper.reopen(self._connect, "capturing again"):
            self._silence.reset()
        while self._pcm is not None and not self._pending:
            try:
                frames, data = self._pcm.read()
            except Exception as err:  # alsaaudio.ALSAAudioError: device gone
                if not self.reconnect:
                    raise DeviceError(f"capture from {self.name} failed: {err}") from None
                self._drop_pcm()
                self.keeper.lose(str(err))
                break
            if frames < 0:
                self.overruns += 1
                logger.debug("%s: overrun (%d)", self.name, frames)
                continue
            self._pending.extend(self._reblocker.push(data))
        if self._pending:
            block = self._pending.pop(0)
            self._pts = block.pts + block.frames
            return block
        # Lost: silence at real time, so whoever reads us keeps going.
        self._silence.wait(self.block_frames)
        block = PcmBlock(bytes(self.block_frames * self.fmt.frame_bytes), self.fmt, self._pts)
        self._pts += self.block_frames
        return block

    def _drop_pcm(self) -> None:
        pcm, self._pcm = self._pcm, None
        self._pending.clear()
        if pcm is not None:
            close_quietly(pcm, self.name)

    def close(self) -> None:
        self._drop_pcm()
