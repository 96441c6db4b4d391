"""``-`` — raw interleaved PCM in the stream format on standard input.

Not paced: whatever writes into the pipe (``parec``, ``arecord``, ``ffmpeg -re``) sets the pace.
"""

from __future__ import annotations

import sys
from typing import BinaryIO

from deskcast.capture.base import Source
from deskcast.endpoints import Endpoint
from deskcast.media import AudioFormat, PcmBlock, Reblocker


class StdinSource(Source):
    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 stream: BinaryIO | None = None) -> None:
        super().__init__(endpoint, fmt, block_frames)
        self._stream = stream if stream is not None else sys.stdin.buffer
        self._reblocker = Reblocker(fmt, block_frames)
        self._eof = False
        self._pending: list[PcmBlock] = []

    @property
    def name(self) -> str:
        return "- (stdin)"

    def read(self) -> PcmBlock | None:
        while not self._pending and not self._eof:
            chunk = self._stream.read(self.block_bytes)
            if chunk:
                self._pending.extend(self._reblocker.push(chunk))
            else:
                self._eof = True
                last = self._reblocker.flush()
                if last is not None:
                    self._pending.append(last)
        return self._pending.pop(0) if self._pending else None
