"""``pulse[:SOURCE]`` — capture from PulseAudio or PipeWire (via pipewire-pulse).

Without a name it captures the desktop mix: the hub's monitor if the hub exists, else the
monitor of the default sink ("what I am hearing"). Paced by the sound server's clock.

Once open, the stream survives its sound server (:mod:`deskcast.pulsestream`): while it is
lost, or moved by the server to another device, the source yields silence at real time (so a
sender's stream or a server's listeners stay alive; never a microphone because the hub
vanished).
"""

from __future__ import annotations

import logging
from typing import Any

import pasimple

from deskcast import soundserver
from deskcast.capture.base import Source
from deskcast.endpoints import Endpoint
from deskcast.media import AudioFormat, PcmBlock
from deskcast.pacing import Pacer
from deskcast.pulsestream import PA_FORMATS, LoopThreads, StreamKeeper, lost_reason
from deskcast.reconnect import RealTimeStandIn, close_quietly

logger = logging.getLogger(__name__)


class PulseSource(Source):
    clocked = True

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 hub_name: str = "deskcast", *,
                 reconnect: bool = True) -> None:
        super().__init__(endpoint, fmt, block_frames)
        self.hub_name = hub_name
        self.device = endpoint.target
        self.description = ""
        self.monitor_of: str | None = None
        """The sink this source is the monitor of, if it is one."""
        self.reconnect = reconnect
        """Survive a restarted server or a removed device (see the module docstring)."""
        self.keeper = StreamKeeper("source", self.name, "deskcast capture",
                                   "capturing silence")
        self._stream: Any = None
        self._loop = LoopThreads()
        self._pts = 0
        self._silence = RealTimeStandIn(fmt.rate, Pacer)

    @property
    def name(self) -> str:
        return f"pulse:{self.device}" if self.device else "pulse"

    def open(self) -> None:
        self._connect()
        logger.info("capturing %s (%s) at %s", self.name, self.description, self.fmt)
        if self.reconnect:
            self.keeper.label = self.name
            self.keeper.start_watch(self.device)

    def _connect(self) -> None:
        with soundserver.connect() as pulse:
            if not self.device:
                self.device = soundserver.desktop_monitor(pulse, self.hub_name)
            dev = soundserver.check_name(
                "source", self.device, soundserver.sources(pulse, self.hub_name)
            )
            self.description = dev.description
            self.monitor_of = dev.monitor_of
        try:
            with self._loop.opening():
                self._stream = pasimple.PaSimple(
                    pasimple.PA_STREAM_RECORD, PA_FORMATS[self.fmt.sample], self.fmt.channels,
                    self.fmt.rate, app_name="deskcast", stream_name=self.keeper.media_name,
                    device_name=self.device, fragsize=self.block_bytes,
                )
        except pasimple.PaSimpleError as err:
            raise soundserver.pa_error(err, f"cannot capture from {self.name}") from None

    def read(self) -> PcmBlock:
        keeper = self.keeper
        if self._stream is not None and keeper.take_reopen():
            self._drop_stream()
        if self._stream is None and keeper.reopen(self._connect, "capturing again"):
            self._silence.reset()
        if self._stream is not None:
            if self._loop.pending:
                self._loop.share_priority()
            try:
                data = self._stream.read(self.block_bytes)
            except pasimple.PaSimpleError as err:
                if not self.reconnect:
                    raise soundserver.pa_error(err, f"capture from {self.name} failed"
                                               ) from None
                self._drop_stream()
                keeper.lose(lost_reason(err))
            else:
                if not keeper.usable:
                    data = bytes(len(data))  # the server moved us: not our device's audio
                return self._block(data)
        # Lost: silence at real time, so whoever reads us keeps going.
        self._silence.wait(self.block_frames)
        return self._block(bytes(self.block_bytes))

    def _block(self, data: bytes) -> PcmBlock:
        block = PcmBlock(data, self.fmt, self._pts)
        self._pts += self.block_frames
        return block

    def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        close_quietly(stream, self.name)

    def close(self) -> None:
        self.keeper.stop_watch()
        self._drop_stream()
