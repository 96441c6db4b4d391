"""The :class:`Sink` interface every playback backend implements."""

from __future__ import annotations

import abc

from deskcast.endpoints import AudioEnd, Endpoint
from deskcast.media import AudioFormat, PcmBlock, SinkTiming

MAX_WAIT_BLOCKS = 0.75
""":meth:`Sink.wait_for_room` sleeps at most this share of a block: a device that reported a
queue longer than it is could otherwise make us slower than real time."""


class SinkClosedError(Exception):
    """The consumer went away (e.g. a closed stdout pipe): stop feeding this sink."""


class Sink(AudioEnd, abc.ABC):
    """PCM out: accepts blocks in ``fmt``; a device sink blocks while its buffer is full."""

    clocked = False
    """True when a sound card / sound server clock paces ``write()``: the device's clock
    paces the loop (told to the source in every :class:`SinkTiming`)."""

    latency_s = 0.0
    """What this sink adds by design between ``write()`` and the sound being heard, in
    seconds: a device sink declares its buffer (``--buffer-ms``); files, pipes and the
    network add nothing. The estimate when :meth:`wait_for_room` cannot measure."""

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int) -> None:
        super().__init__(endpoint, fmt, block_frames)
        self.underruns = 0
        """Times the device ran dry because we wrote too late."""

    def timing(self) -> SinkTiming:
        """When the next block written will be heard (see :class:`SinkTiming`).

        The pump calls it before it takes each block from a source that is not clocked, and
        hands the answer to the source (:meth:`deskcast.capture.base.Source.sink_timing`).
        A device sink first sleeps until it has room for that block (:meth:`wait_for_room`),
        so that the block is taken as late as the device allows. Backends override
        :meth:`wait_for_room` and :attr:`latency_s`, not this."""
        return SinkTiming(self.clocked, self.wait_for_room(), self.latency_s)

    def wait_for_room(self) -> float | None:
        """Sleep until the device has room for the next block and return what it still has
        queued, in seconds (``None``: this sink cannot tell, and returns at once): the
        measuring half of :meth:`timing`."""
        return None

    @abc.abstractmethod
    def write(self, block: PcmBlock) -> None:
        """Queue one block; raise SinkClosedError when the consumer is gone."""
