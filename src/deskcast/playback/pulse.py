"""``pulse[:SINK]`` — play to PulseAudio or PipeWire (via pipewire-pulse).

Without a name it plays to this machine's speakers: the default sink, or, when the deskcast
hub is the default, the sink that was the default before the hub was set up. The server buffer
is ``buffer_ms``; ``write()`` blocks while it is full, so the sound server's clock paces us.
"""

from __future__ import annotations

import logging
from typing import Any

import pasimple

from deskcast import soundserver
from deskcast.capture.pulse import PA_FORMATS
from deskcast.endpoints import Endpoint
from deskcast.media import AudioFormat, PcmBlock
from deskcast.playback.base import Sink

logger = logging.getLogger(__name__)


class PulseSink(Sink):
    clocked = True

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 hub_name: str = "deskcast", buffer_ms: float = 40.0) -> None:
        super().__init__(endpoint, fmt, block_frames)
        self.hub_name = hub_name
        self.device = endpoint.target
        self.buffer_bytes = fmt.frames_for_ms(buffer_ms) * fmt.frame_bytes
        self.description = ""
        self._stream: Any = None

    @property
    def name(self) -> str:
        return f"pulse:{self.device}" if self.device else "pulse"

    def resolve(self) -> str:
        """The sink this will play to (asks the server when no name was given)."""
        if not self.device:
            with soundserver.connect() as pulse:
                self.device = soundserver.speakers(pulse, self.hub_name)
        return self.device

    def open(self) -> None:
        with soundserver.connect() as pulse:
            if not self.device:
                self.device = soundserver.speakers(pulse, self.hub_name)
            dev = soundserver.check_name("sink", self.device,
                                         soundserver.sinks(pulse, self.hub_name))
            self.description = dev.description
        block_bytes = self.block_frames * self.fmt.frame_bytes
        try:
            self._stream = pasimple.PaSimple(
                pasimple.PA_STREAM_PLAYBACK, PA_FORMATS[self.fmt.sample], self.fmt.channels,
                self.fmt.rate, app_name="deskcast", stream_name="deskcast playback",
                device_name=self.device, tlength=self.buffer_bytes,
                minreq=min(block_bytes, self.buffer_bytes // 2),
            )
        except pasimple.PaSimpleError as err:
            raise soundserver.pa_error(err, f"cannot play to {self.name}") from None
        logger.info("playing to %s (%s) at %s", self.name, self.description, self.fmt)

    def write(self, block: PcmBlock) -> None:
        try:
            self._stream.write(block.data)
        except pasimple.PaSimpleError as err:
            raise soundserver.pa_error(err, f"playback to {self.name} failed") from None

    def close(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.drain()
        except pasimple.PaSimpleError as err:
            logger.debug("drain of %s failed: %s", self.name, err)
        self._stream.close()
        self._stream = None
