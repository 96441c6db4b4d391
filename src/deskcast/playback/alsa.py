"""``alsa:DEVICE`` — play to an ALSA PCM (``alsa:default``, ``alsa:hw:0``, ``alsa:pulse``).

The ALSA period is one block and the buffer ``buffer_ms``; an underrun is counted and the
block is written again so playback carries on.

Once open, a device that fails is ridden out by :class:`deskcast.alsa.AlsaStream` (the stream
``alsa:`` capture uses too): one warning, audio dropped at real time meanwhile (so the loop
feeding the sink keeps its pace), reopened with backoff, one line when it is back.
"""

from __future__ import annotations

import alsaaudio

from deskcast.alsa import AlsaStream
from deskcast.endpoints import Endpoint
from deskcast.media import AudioFormat
from deskcast.playback.base import MAX_WAIT_BLOCKS
from deskcast.playback.device import DeviceSink


class AlsaSink(DeviceSink):
    stream: AlsaStream

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 buffer_ms: float = 40.0, *, reconnect: bool = True) -> None:
        super().__init__(endpoint, fmt, block_frames, AlsaStream(
            endpoint.target, fmt, block_frames, capture=False, buffer_ms=buffer_ms,
            reconnect=reconnect))
        self.latency_s = buffer_ms / 1000

    def wait_for_room(self) -> float | None:
        """Sleep until the device's buffer has room for a block (what it holds, its buffer
        minus what is free, leaves one) and return what it holds then, in seconds; at most
        ``MAX_WAIT_BLOCKS`` of a block. None while lost or in an xrun (write() sees to
        those). The receiver then takes each frame as late as the device allows, as with
        ``pulse:`` (see :mod:`deskcast.playback.pulse`)."""
        pcm = self.stream.handle
        if pcm is None:
            return None
        try:
            free = int(pcm.avail())
        except alsaaudio.ALSAAudioError:  # the device is gone; write() finds out
            return None
        if free < 0:
            return None
        buffer_frames = self.stream.buffer_frames
        queued = float(max(0, buffer_frames - free))
        wait = min(queued - (buffer_frames - self.block_frames),
                   MAX_WAIT_BLOCKS * self.block_frames)
        if wait > 0:
            self.sleep(wait / self.fmt.rate)
            queued -= wait
        return queued / self.fmt.rate
