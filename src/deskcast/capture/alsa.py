"""``alsa:DEVICE`` — capture from an ALSA PCM (e.g. ``alsa:hubcap``, the snd-aloop hub).

Paced by the device clock. The ALSA period is one block and the buffer at least 200 ms
(:data:`deskcast.alsa.RING_MS`); an overrun (we read too late) is counted and capture carries
on.

Once open, a device that fails is ridden out by :class:`deskcast.alsa.AlsaStream` (the stream
``alsa:`` playback uses too): one warning, silence at real time, reopened with backoff, one
line when it is back. A device that cannot be opened at the start is still an error.
"""

from __future__ import annotations

from deskcast.alsa import AlsaStream
from deskcast.capture.device import DeviceSource
from deskcast.endpoints import Endpoint
from deskcast.media import AudioFormat


class AlsaSource(DeviceSource):
    stream: AlsaStream

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 buffer_ms: float = 40.0, *, reconnect: bool = True) -> None:
        super().__init__(endpoint, fmt, block_frames, AlsaStream(
            endpoint.target, fmt, block_frames, capture=True, buffer_ms=buffer_ms,
            reconnect=reconnect))
