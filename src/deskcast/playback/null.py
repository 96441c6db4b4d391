"""``null`` — discard everything (measures a source; paced by the source)."""

from __future__ import annotations

from deskcast.media import PcmBlock
from deskcast.playback.base import Sink


class NullSink(Sink):
    frames_written = 0

    def write(self, block: PcmBlock) -> None:
        self.frames_written += block.frames
