"""``alsa:DEVICE`` — capture from an ALSA PCM (e.g. ``alsa:hubcap``, the snd-aloop hub).

Paced by the device clock. The ALSA period is one block; an overrun (we read too late) is
counted and capture carries on.
"""

from __future__ import annotations

import logging
from typing import Any

from deskcast.alsa import open_pcm
from deskcast.capture.base import Source
from deskcast.endpoints import Endpoint
from deskcast.errors import DeviceError
from deskcast.media import AudioFormat, PcmBlock, Reblocker

logger = logging.getLogger(__name__)


class AlsaSource(Source):
    clocked = True

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 buffer_ms: float = 40.0) -> None:
        super().__init__(endpoint, fmt, block_frames)
        self.device = endpoint.target
        self.periods = max(2, round(fmt.frames_for_ms(buffer_ms) / block_frames))
        self._pcm: Any = None
        self._reblocker = Reblocker(fmt, block_frames)
        self._pending: list[PcmBlock] = []

    @property
    def name(self) -> str:
        return f"alsa:{self.device}"

    def open(self) -> None:
        self._pcm = open_pcm(self.device, self.fmt, self.block_frames, self.periods,
                             capture=True)
        logger.info("capturing %s at %s", self.name, self.fmt)

    def read(self) -> PcmBlock:
        while not self._pending:
            try:
                frames, data = self._pcm.read()
            except Exception as err:  # alsaaudio.ALSAAudioError: device gone
                raise DeviceError(f"capture from {self.name} failed: {err}") from None
            if frames < 0:
                self.overruns += 1
                logger.debug("%s: overrun (%d)", self.name, frames)
                continue
            self._pending.extend(self._reblocker.push(data))
        return self._pending.pop(0)

    def close(self) -> None:
        if self._pcm is not None:
            self._pcm.close()
            self._pcm = None
