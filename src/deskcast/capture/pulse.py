"""``pulse[:SOURCE]`` — capture from PulseAudio or PipeWire (via pipewire-pulse).

Without a name it captures the desktop mix: the hub's monitor if the hub exists, else the
monitor of the default sink ("what I am hearing"). Paced by the sound server's clock.
"""

from __future__ import annotations

import logging
from typing import Any

import pasimple

from deskcast import soundserver
from deskcast.capture.base import Source
from deskcast.endpoints import Endpoint
from deskcast.media import AudioFormat, PcmBlock, SampleFormat

logger = logging.getLogger(__name__)

PA_FORMATS = {
    SampleFormat.S16LE: pasimple.PA_SAMPLE_S16LE,
    SampleFormat.S32LE: pasimple.PA_SAMPLE_S32LE,
    SampleFormat.F32LE: pasimple.PA_SAMPLE_FLOAT32LE,
}


class PulseSource(Source):
    clocked = True

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 hub_name: str = "deskcast") -> None:
        super().__init__(endpoint, fmt, block_frames)
        self.hub_name = hub_name
        self.device = endpoint.target
        self.description = ""
        self.monitor_of: str | None = None
        """The sink this source is the monitor of, if it is one."""
        self._stream: Any = None
        self._pts = 0

    @property
    def name(self) -> str:
        return f"pulse:{self.device}" if self.device else "pulse"

    def open(self) -> None:
        with soundserver.connect() as pulse:
            if not self.device:
                self.device = soundserver.desktop_monitor(pulse, self.hub_name)
            dev = soundserver.check_name(
                "source", self.device, soundserver.sources(pulse, self.hub_name)
            )
            self.description = dev.description
            self.monitor_of = dev.monitor_of
        try:
            self._stream = pasimple.PaSimple(
                pasimple.PA_STREAM_RECORD, PA_FORMATS[self.fmt.sample], self.fmt.channels,
                self.fmt.rate, app_name="deskcast", stream_name="deskcast capture",
                device_name=self.device, fragsize=self.block_bytes,
            )
        except pasimple.PaSimpleError as err:
            raise soundserver.pa_error(err, f"cannot capture from {self.name}") from None
        logger.info("capturing %s (%s) at %s", self.name, self.description, self.fmt)

    def read(self) -> PcmBlock:
        try:
            data = self._stream.read(self.block_bytes)
        except pasimple.PaSimpleError as err:
            raise soundserver.pa_error(err, f"capture from {self.name} failed") from None
        block = PcmBlock(data, self.fmt, self._pts)
        self._pts += self.block_frames
        return block

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
