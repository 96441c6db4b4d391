"""``pulse[:SINK]`` — play to PulseAudio or PipeWire (via pipewire-pulse).

Without a name it plays to this machine's speakers: the default sink, or, when the deskcast
hub is the default, the sink that was the default before the hub was set up. The server buffer
is ``buffer_ms``; ``write()`` blocks while it is full, so the sound server's clock paces us.

Once open, the sink survives a restarted server or a removed device like the pulse source does
(see :mod:`deskcast.capture.pulse`): one warning, audio is dropped at real time (so the pump
does not spin) while the stream is reopened with backoff, one line when it is back.
"""

from __future__ import annotations

import logging
from typing import Any

import pasimple

from deskcast import soundserver
from deskcast.capture.base import Pacer
from deskcast.capture.pulse import (
    PA_FORMATS,
    LoopThreads,
    StreamKeeper,
    close_stream,
    lost_reason,
)
from deskcast.endpoints import Endpoint
from deskcast.media import AudioFormat, PcmBlock
from deskcast.playback.base import Sink
from deskcast.reconnect import RealTimeStandIn

logger = logging.getLogger(__name__)


class PulseSink(Sink):
    clocked = True

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 hub_name: str = "deskcast", buffer_ms: float = 40.0, *,
                 reconnect: bool = True) -> None:
        super().__init__(endpoint, fmt, block_frames)
        self.hub_name = hub_name
        self.device = endpoint.target
        self.buffer_bytes = fmt.frames_for_ms(buffer_ms) * fmt.frame_bytes
        self.description = ""
        self.reconnect = reconnect
        """Survive a restarted server or a removed device (see the module docstring)."""
        self.keeper = StreamKeeper("sink", self.name, "deskcast playback", "dropping audio")
        self._stream: Any = None
        self._loop = LoopThreads()
        self._dropping = RealTimeStandIn(fmt.rate, Pacer)

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
        self._connect()
        logger.info("playing to %s (%s) at %s", self.name, self.description, self.fmt)
        if self.reconnect:
            self.keeper.label = self.name
            self.keeper.start_watch(self.device)

    def _connect(self) -> None:
        with soundserver.connect() as pulse:
            if not self.device:
                self.device = soundserver.speakers(pulse, self.hub_name)
            dev = soundserver.check_name("sink", self.device,
                                         soundserver.sinks(pulse, self.hub_name))
            self.description = dev.description
        block_bytes = self.block_frames * self.fmt.frame_bytes
        try:
            with self._loop.opening():
                self._stream = pasimple.PaSimple(
                    pasimple.PA_STREAM_PLAYBACK, PA_FORMATS[self.fmt.sample], self.fmt.channels,
                    self.fmt.rate, app_name="deskcast", stream_name=self.keeper.media_name,
                    device_name=self.device, tlength=self.buffer_bytes,
                    minreq=min(block_bytes, self.buffer_bytes // 2),
                )
        except pasimple.PaSimpleError as err:
            raise soundserver.pa_error(err, f"cannot play to {self.name}") from None

    def write(self, block: PcmBlock) -> None:
        keeper = self.keeper
        if self._stream is not None and keeper.take_reopen():
            self._drop_stream()
        if self._stream is None and keeper.reopen(self._connect, "playing again"):
            self._dropping.reset()
        if self._stream is not None:
            if self._loop.pending:
                self._loop.share_priority()
            data = block.data if keeper.usable else bytes(len(block.data))
            try:
                self._stream.write(data)
                return
            except pasimple.PaSimpleError as err:
                if not self.reconnect:
                    raise soundserver.pa_error(err, f"playback to {self.name} failed"
                                               ) from None
                self._drop_stream()
                keeper.lose(lost_reason(err))
        # Lost: drop the audio at real time, so the loop feeding us keeps its pace.
        self._dropping.wait(block.frames)

    def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        close_stream(stream, self.name)

    def close(self) -> None:
        self.keeper.stop_watch()
        if self._stream is None:
            return
        try:
            self._stream.drain()
        except pasimple.PaSimpleError as err:
            logger.debug("drain of %s failed: %s", self.name, err)
        self._drop_stream()
