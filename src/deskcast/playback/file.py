"""``file:PATH`` — write a WAV or FLAC file (by extension) or raw PCM (``.raw``/``.pcm``).

Written through libsndfile; ``close()`` finalises the header, and the CLI closes on Ctrl-C and
SIGTERM, so a recording that is stopped is still a valid, complete file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, BinaryIO

import soundfile

from deskcast.endpoints import Endpoint
from deskcast.errors import EndpointError
from deskcast.media import AudioFormat, PcmBlock, SampleFormat
from deskcast.playback.base import Sink

logger = logging.getLogger(__name__)

# extension -> (libsndfile container, subtype per sample format)
CONTAINERS: dict[str, tuple[str, dict[SampleFormat, str]]] = {
    ".wav": ("WAV", {SampleFormat.S16LE: "PCM_16", SampleFormat.S32LE: "PCM_32",
                     SampleFormat.F32LE: "FLOAT"}),
    ".flac": ("FLAC", {SampleFormat.S16LE: "PCM_16", SampleFormat.S32LE: "PCM_24",
                       SampleFormat.F32LE: "PCM_24"}),
}
RAW_EXTENSIONS = (".raw", ".pcm")


class FileSink(Sink):
    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int) -> None:
        super().__init__(endpoint, fmt, block_frames)
        self.path = Path(endpoint.target).expanduser()
        ext = self.path.suffix.lower()
        if ext not in CONTAINERS and ext not in RAW_EXTENSIONS:
            known = ", ".join([*CONTAINERS, *RAW_EXTENSIONS])
            raise EndpointError(
                f"file sink: cannot write {ext or 'files without an extension'}: use {known}"
            )
        self.frames_written = 0
        self._sf: Any = None
        self._raw: BinaryIO | None = None

    @property
    def name(self) -> str:
        return f"file:{self.path}"

    def open(self) -> None:
        parent = self.path.parent
        if not parent.is_dir():
            raise EndpointError(f"file sink: folder {parent} does not exist")
        if self.path.is_dir():
            raise EndpointError(f"file sink: {self.path} is a folder")
        ext = self.path.suffix.lower()
        try:
            if ext in RAW_EXTENSIONS:
                self._raw = open(self.path, "wb")  # noqa: SIM115 - closed in close()
            else:
                container, subtypes = CONTAINERS[ext]
                self._sf = soundfile.SoundFile(
                    str(self.path), "w", samplerate=self.fmt.rate, channels=self.fmt.channels,
                    format=container, subtype=subtypes[self.fmt.sample],
                )
        except PermissionError:
            raise EndpointError(f"file sink: no permission to write {self.path}") from None
        except (OSError, soundfile.LibsndfileError, RuntimeError) as err:
            raise EndpointError(f"file sink: cannot create {self.path}: {err}") from None
        logger.info("writing %s (%s)", self.path, self.fmt)

    def write(self, block: PcmBlock) -> None:
        if self._raw is not None:
            self._raw.write(block.data)
        else:
            self._sf.write(block.samples())
        self.frames_written += block.frames

    def close(self) -> None:
        if self._sf is not None:
            self._sf.close()
            self._sf = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None
