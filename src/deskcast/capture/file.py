"""``file:PATH`` — any audio file ffmpeg can read, converted to the stream format.

Paced at real time (unlike audiostreamer, which spun through files at 100% CPU); ``?loop``
starts again at the end, ``?pace=0`` reads as fast as the sink takes it (file conversion).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import av.error

from deskcast.capture.base import Source
from deskcast.endpoints import Endpoint
from deskcast.errors import EndpointError
from deskcast.media import AudioFormat, PcmBlock, Reblocker, SampleFormat, convert
from deskcast.pacing import Pacer

logger = logging.getLogger(__name__)

_AV_FORMATS = {SampleFormat.S16LE: "s16", SampleFormat.S32LE: "s32", SampleFormat.F32LE: "flt"}


class FileSource(Source):
    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 pacer: Pacer | None = None) -> None:
        super().__init__(endpoint, fmt, block_frames)
        self.path = Path(endpoint.target).expanduser()
        self.loop = endpoint.flag("loop")
        paced = endpoint.options.get("pace", "1").lower() not in ("0", "no", "false", "off")
        self.pacer: Pacer | None = (pacer or Pacer(fmt.rate)) if paced else None
        self.decode_errors = 0
        self.passes = 0
        self._container: Any = None
        self._frames: Iterator[bytes] | None = None
        self._reblocker = Reblocker(fmt, block_frames)
        self._pending: list[PcmBlock] = []
        self._ended = False

    @property
    def name(self) -> str:
        return f"file:{self.path}"

    def open(self) -> None:
        self._frames = self._decode()
        # Decode up to the first block now, so that every problem with the file is reported
        # before anything starts playing.
        self._fill()

    def _open_container(self) -> Any:
        try:
            container = av.open(str(self.path), "r")
        except FileNotFoundError:
            raise EndpointError(f"file source: {self.path} does not exist") from None
        except PermissionError:
            raise EndpointError(
                f"file source: cannot read {self.path}: permission denied"
            ) from None
        except IsADirectoryError:
            raise EndpointError(f"file source: {self.path} is a directory, not a file") from None
        except av.error.FFmpegError as err:
            if getattr(err, "errno", None) == errno.EISDIR:
                raise EndpointError(f"file source: {self.path} is a directory") from None
            raise EndpointError(
                f"file source: cannot decode {self.path}: {_reason(err)} — is it an audio file?"
            ) from None
        if not container.streams.audio:
            container.close()
            raise EndpointError(f"file source: {self.path} has no audio stream")
        return container

    def _decode(self) -> Iterator[bytes]:
        """PCM bytes in the stream format, file after file when looping."""
        while True:
            container = self._container = self._open_container()
            stream = container.streams.audio[0]
            resampler: Any = None
            channels = 0
            produced = 0
            try:
                for frame in self._frames_of(container, stream):
                    if resampler is None:
                        # Keep the file's channel layout here and remix below: ffmpeg would
                        # turn mono into stereo 3 dB quieter; a mono file should play at full
                        # level on both speakers.
                        channels = len(frame.layout.channels)
                        resampler = av.AudioResampler(
                            format=_AV_FORMATS[self.fmt.sample], layout=frame.layout,
                            rate=self.fmt.rate,
                        )
                    for out in resampler.resample(frame):
                        data = self._remix(out, channels)
                        produced += len(data)
                        yield data
                if resampler is not None:
                    for out in resampler.resample(None):
                        data = self._remix(out, channels)
                        produced += len(data)
                        yield data
            finally:
                container.close()
                self._container = None
            self.passes += 1
            if not self.loop:
                return
            if produced == 0:
                raise EndpointError(f"file source: {self.path} holds no audio to loop")
            logger.debug("file source: looping %s", self.path)

    def _remix(self, frame: Any, channels: int) -> bytes:
        have = AudioFormat(self.fmt.rate, channels, self.fmt.sample)
        data = bytes(frame.planes[0])[: frame.samples * have.frame_bytes]
        return convert(data, have, self.fmt)

    def _frames_of(self, container: Any, stream: Any) -> Iterator[Any]:
        for packet in container.demux(stream):
            try:
                yield from packet.decode()
            except av.error.FFmpegError as err:
                self.decode_errors += 1
                if self.decode_errors == 1:
                    logger.warning("file source: skipping undecodable data in %s (%s)",
                                   self.path, _reason(err))

    def _fill(self) -> None:
        assert self._frames is not None, "open() first"
        while not self._pending and not self._ended:
            chunk = next(self._frames, None)
            if chunk is None:
                self._ended = True
                last = self._reblocker.flush()
                if last is not None:
                    self._pending.append(last)
                elif self._reblocker.pts == 0:
                    what = "undecodable" if self.decode_errors else "empty"
                    raise EndpointError(
                        f"file source: {self.path} holds no audio ({what}) — is it an audio file?"
                    )
            else:
                self._pending.extend(self._reblocker.push(chunk))

    def read(self) -> PcmBlock | None:
        self._fill()
        if not self._pending:
            return None
        block = self._pending.pop(0)
        if self.pacer is not None:
            self.pacer.wait(block.pts)
        return block

    def close(self) -> None:
        if self._frames is not None:
            close = getattr(self._frames, "close", None)
            if close is not None:
                close()
            self._frames = None
        if self._container is not None:
            self._container.close()
            self._container = None


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return str(text).rstrip(".")

