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
(:class:`deskcast.pulse.PulseStream`, the stream of both): one warning, audio is dropped at
real time (so the pump does not spin) while the stream is reopened with backoff, one line when
it is back.
"""

from __future__ import annotations

import pasimple

from deskcast.endpoints import Endpoint
from deskcast.media import AudioFormat, PcmBlock
from deskcast.playback.base import MAX_WAIT_BLOCKS
from deskcast.playback.device import DeviceSink
from deskcast.pulse import PulseStream


class PulseSink(DeviceSink):
    stream: PulseStream

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 hub_name: str = "deskcast", buffer_ms: float = 40.0, *,
                 reconnect: bool = True) -> None:
        super().__init__(endpoint, fmt, block_frames, PulseStream(
            endpoint.target, fmt, block_frames, capture=False, hub_name=hub_name,
            buffer_ms=buffer_ms, reconnect=reconnect))
        self.buffer_s = buffer_ms / 1000
        self.latency_s = self.buffer_s
        self._last_frames = block_frames

    @property
    def device(self) -> str:
        """The sink played to (once resolved or open, the speakers when none was named)."""
        return self.stream.device

    def resolve(self) -> str:
        """The sink this will play to (asks the server when no name was given)."""
        return self.stream.resolve()

    def wait_for_room(self) -> float | None:
        """Sleep until the server's buffer has room for one more block (the last one written,
        at most ``block_frames``): what it reports queued, sink included, is at most
        ``buffer_ms`` minus that; returns what is queued then (seconds).
        Call it before taking the block from a source that is not clocked: it is then taken
        when the device wants it rather than a device period early (see the module
        docstring). At most ``MAX_WAIT_BLOCKS`` of a block; nothing while lost (None)."""
        handle = self.stream.handle
        if handle is None or not self.stream.keeper.usable:
            return None
        try:
            queued_s = float(handle.get_latency()) / 1e6
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
        self._last_frames = block.frames
        super().write(block)
