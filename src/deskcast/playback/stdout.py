"""``-`` — raw interleaved PCM in the stream format on standard output."""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

from deskcast.endpoints import Endpoint
from deskcast.errors import EndpointError
from deskcast.media import AudioFormat, PcmBlock
from deskcast.playback.base import Sink, SinkClosedError


class StdoutSink(Sink):
    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 stream: BinaryIO | None = None) -> None:
        super().__init__(endpoint, fmt, block_frames)
        self._stream = stream if stream is not None else sys.stdout.buffer

    @property
    def name(self) -> str:
        return "- (stdout)"

    def open(self) -> None:
        if self._stream.isatty():
            raise EndpointError(
                "refusing to write raw audio to a terminal: redirect it "
                "(`deskcast play SOURCE - > out.raw`) or use file:out.wav"
            )

    def write(self, block: PcmBlock) -> None:
        try:
            self._stream.write(block.data)
            self._stream.flush()
        except BrokenPipeError:
            # The reader left; stop writing and keep Python from complaining at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
            raise SinkClosedError("stdout was closed by the reader") from None
