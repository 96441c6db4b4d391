"""A :class:`Source` that reads a device stream: what ``pulse:`` and ``alsa:`` capture share.

The stream (:class:`deskcast.reconnect.DeviceStream`: :mod:`deskcast.pulse`,
:mod:`deskcast.alsa`) opens the device, keeps it open and stands in with silence at real time
while it is lost; this side numbers the blocks.
"""

from __future__ import annotations

from deskcast.capture.base import Source
from deskcast.endpoints import Endpoint
from deskcast.media import AudioFormat, PcmBlock
from deskcast.reconnect import DeviceStream, StreamEnd


class DeviceSource(StreamEnd, Source):
    """Blocks read from ``stream``, paced by the device's clock."""

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 stream: DeviceStream) -> None:
        super().__init__(endpoint, fmt, block_frames)
        self.stream = stream
        self._pts = 0

    def read(self) -> PcmBlock:
        block = PcmBlock(self.stream.read(), self.fmt, self._pts)
        self._pts += self.block_frames
        self.overruns = self.stream.xruns
        return block
