"""serve's sink: the encoders that run, fed from the :class:`~deskcast.pump.Pump`'s audio thread,
and their chunks handed to the event loop, where each format's broadcaster fans them out.

:class:`EncoderFeed` is a :class:`~deskcast.playback.base.Sink` like any other, so ``serve``
runs the same audio loop as play, send and receive. :meth:`EncoderFeed._hand_over` is the one
place where a thread hands audio to asyncio: one ``call_soon_threadsafe`` per block at most.

A format's encoder runs while somebody listens to it (or always, with ``always_on``): the
event loop starts and stops it (:class:`~deskcast.http.streams.FormatStream`) and the audio
thread reads :attr:`FormatStream.running` once per block. A freshly started encoder is first
fed the last burst's worth of PCM, so that the listener who started it gets a burst too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence

from deskcast.endpoints import Direction, Endpoint
from deskcast.http.broadcaster import Broadcaster, Chunk
from deskcast.http.streams import FormatStream
from deskcast.media import AudioFormat, PcmBlock
from deskcast.playback.base import Sink

logger = logging.getLogger(__name__)


class EncoderFeed(Sink):
    """Fans each block out to the running encoders of ``streams``; not clocked (the source
    paces serve). Open it with the event loop that publishes (:meth:`attach`)."""

    def __init__(self, streams: Sequence[FormatStream], fmt: AudioFormat,
                 block_frames: int) -> None:
        super().__init__(Endpoint("null", "", {}, Direction.SINK), fmt, block_frames)
        self.streams = list(streams)
        self.loop: asyncio.AbstractEventLoop | None = None
        # The last burst's worth of PCM: a freshly started encoder encodes it first (~2 s of
        # audio: tens of ms of CPU, once).
        self._keep_s = max((s.burst_s for s in self.streams), default=0.0)
        self._history: deque[PcmBlock] = deque()
        self._history_s = 0.0

    @property
    def name(self) -> str:
        return "serve's encoders"

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Publish on ``loop`` (before the first :meth:`write`)."""
        self.loop = loop

    def write(self, block: PcmBlock) -> None:
        batch: list[tuple[Broadcaster, Chunk]] = []
        for stream in self.streams:
            running = stream.running  # set and cleared by the loop thread
            if running is None:
                continue
            if not running.primed:
                running.primed = True
                skip = self._history_s - stream.burst_s
                for old in self._history:
                    if skip >= old.duration - 1e-9:
                        skip -= old.duration
                        continue
                    batch += [(running.broadcaster, c) for c in running.encoder.encode(old)]
            batch += [(running.broadcaster, c) for c in running.encoder.encode(block)]
        if batch:
            self._hand_over(_publish, batch)
        if self._keep_s > 0:
            history = self._history
            history.append(block)
            self._history_s += block.duration
            while history and self._history_s - history[0].duration >= self._keep_s - 1e-9:
                self._history_s -= history.popleft().duration

    def close(self) -> None:
        """No more audio: every stream ends (its listeners' handlers finish)."""
        for stream in self.streams:
            self._hand_over(stream.end)

    def _hand_over(self, callback: Callable[..., object], *args: object) -> None:
        """Run ``callback(*args)`` on the event loop: the one place where audio crosses from
        the audio thread to asyncio."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)


def _publish(batch: list[tuple[Broadcaster, Chunk]]) -> None:
    for broadcaster, chunk in batch:
        broadcaster.publish(chunk)
