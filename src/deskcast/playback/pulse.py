"""``pulse[:SINK]`` — play to PulseAudio or PipeWire (via pipewire-pulse).

Without a name it plays to this machine's speakers: the default sink, or, when the deskcast
hub is the default, the sink that was the default before the hub was set up. The server buffer
is ``buffer_ms``; ``write()`` blocks while it is full, so the sound server's clock paces us.

**Pull.** A blocking write returns once the block is queued, and the next block, taken from the
caller's source at once, then waits in the next write until the server asks for more: about
one device period (minreq) in which a packet that arrives is already too late for it.
:meth:`PulseSink.wait_for_room` lets the caller wait for that moment *before* it takes the
next block (the network receiver: from its jitter buffer), so the packet gets that period more
to arrive, at no cost in delay — one cushion, the jitter buffer's, instead of two.

Once open, the sink survives a restarted server or a removed device like the pulse source does
(see :mod:`deskcast.pulsestream`): one warning, audio is dropped at real time (so the pump
does not spin) while the stream is reopened with backoff, one line when it is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pasimple

from deskcast import soundserver
from deskcast.endpoints import Endpoint
from deskcast.media import AudioFormat, PcmBlock
from deskcast.pacing import Pacer
from deskcast.playback.base import MAX_WAIT_BLOCKS, Sink
from deskcast.pulsestream import PA_FORMATS, LoopThreads, StreamKeeper, lost_reason
from deskcast.reconnect import RealTimeStandIn, close_quietly

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
        self.buffer_s = buffer_ms / 1000
        self._last_frames = block_frames
        self.sleep: Callable[[float], None] = time.sleep

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

    def wait_for_room(self) -> float | None:
        """Sleep until the server's buffer has room for one more block (the last one written,
        at most ``block_frames``): what it reports queued, sink included, is at most
        ``buffer_ms`` minus that; returns what is queued then (seconds).
        Call it before taking the block from a source that is not clocked: it is then taken
        when the device wants it rather than a device period early (see the module
        docstring). At most ``MAX_WAIT_BLOCKS`` of a block; nothing while lost (None)."""
        stream = self._stream
        if stream is None or not self.keeper.usable:
            return None
        try:
            queued_s = float(stream.get_latency()) / 1e6
        except pasimple.PaSimpleError:
            return None  # write() will find out and reconnect
        # Room for a block (the server's request size, minreq), not for a whole frame when
        # frames are longer: the write takes a long frame in parts as room opens, and waiting
        # for all of it would let the device buffer run that much lower (20 ms frames in a
        # 40 ms buffer: down to 20 ms instead of 30, with dropouts on a busy machine).
        block_s = min(self._last_frames, self.block_frames) / self.fmt.rate
        wait = min(queued_s - (self.buffer_s - block_s), MAX_WAIT_BLOCKS * block_s)
        if wait > 0:
            self.sleep(wait)
            queued_s -= wait
        return queued_s

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
            self._last_frames = block.frames
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
        close_quietly(stream, self.name)

    def close(self) -> None:
        self.keeper.stop_watch()
        if self._stream is None:
            return
        try:
            self._stream.drain()
        except pasimple.PaSimpleError as err:
            logger.debug("drain of %s failed: %s", self.name, err)
        self._drop_stream()
