"""A :class:`Sink` that writes a device stream: what ``pulse:`` and ``alsa:`` playback share.

The stream (:class:`deskcast.reconnect.DeviceStream`: :mod:`deskcast.pulse`,
:mod:`deskcast.alsa`) opens the device, keeps it open and drops the audio at real time while
it is lost; each backend's sink adds how it tells what the device still holds
(:meth:`~deskcast.playback.base.Sink.wait_for_room`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from deskcast.endpoints import Endpoint
from deskcast.media import AudioFormat, PcmBlock
from deskcast.playback.base import Sink
from deskcast.reconnect import DeviceStream, StreamEnd


class DeviceSink(StreamEnd, Sink):
    """Blocks written to ``stream``, which blocks while the device's buffer is full."""

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 stream: DeviceStream) -> None:
        super().__init__(endpoint, fmt, block_frames)
        self.stream = stream
        self.sleep: Callable[[float], None] = time.sleep
        """How :meth:`wait_for_room` sleeps (a fake in tests)."""

    def write(self, block: PcmBlock) -> None:
        self.stream.write(block.data)
        self.underruns = self.stream.xruns
