"""``alsa:DEVICE`` — play to an ALSA PCM (``alsa:default``, ``alsa:hw:0``, ``alsa:pulse``).

The ALSA period is one block and the buffer ``buffer_ms``; an underrun is counted and the
block is written again so playback carries on.
"""

from __future__ import annotations

import logging
from typing import Any

from deskcast.alsa import open_pcm
from deskcast.endpoints import Endpoint
from deskcast.errors import DeviceError
from deskcast.media import AudioFormat, PcmBlock
from deskcast.playback.base import Sink

logger = logging.getLogger(__name__)


class AlsaSink(Sink):
    clocked = True

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 buffer_ms: float = 40.0) -> None:
        super().__init__(endpoint, fmt, block_frames)
        self.device = endpoint.target
        self.periods = max(2, round(fmt.frames_for_ms(buffer_ms) / block_frames))
        self._pcm: Any = None

    @property
    def name(self) -> str:
        return f"alsa:{self.device}"

    def open(self) -> None:
        self._pcm = open_pcm(self.device, self.fmt, self.block_frames, self.periods,
                             capture=False)
        logger.info("playing to %s at %s", self.name, self.fmt)

    def write(self, block: PcmBlock) -> None:
        for _attempt in range(2):
            try:
                written = self._pcm.write(block.data)
            except Exception as err:  # alsaaudio.ALSAAudioError: device gone
                raise DeviceError(f"playback to {self.name} failed: {err}") from None
            if written >= 0:
                return
            self.underruns += 1
            logger.debug("%s: underrun (%d)", self.name, written)

    def close(self) -> None:
        if self._pcm is None:
            return
        try:
            self._pcm.drain()
        except Exception as err:  # pragma: no cover - device vanished
            logger.debug("drain of %s failed: %s", self.name, err)
        self._pcm.close()
        self._pcm = None
