"""The :class:`Source` interface every capture backend implements."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self

from deskcast.endpoints import Endpoint
from deskcast.media import AudioFormat, PcmBlock
from deskcast.pacing import Pacer


class Source(abc.ABC):
    """PCM in: yields blocks of exactly ``block_frames`` frames in ``fmt``.

    ``read()`` blocks until the next block is due and returns None when the source has ended
    (a file without ``loop``, stdin at EOF). Device sources are paced by the device clock;
    file and generator sources pace themselves at real time.
    """

    clocked = False
    """True when a sound card / sound server clock paces ``read()``."""

    pacer: Pacer | None = None
    """Self-pacing of file and generator sources. Set it to None when the sink is clocked:
    the sound card then sets the pace and its buffer stays full instead of running near empty
    (one clock, not two)."""

    sink_queued_s: float | None = None
    """What the sink still had queued when this read was asked for (seconds), set before
    each read of a source that is not clocked when the sink can tell (None: it cannot)."""

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int) -> None:
        self.endpoint = endpoint
        self.fmt = fmt
        self.block_frames = block_frames
        self.block_bytes = block_frames * fmt.frame_bytes
        self.overruns = 0
        """Times the device dropped captured audio because we read too late."""

    @property
    def name(self) -> str:
        """What is actually being read, for status lines (e.g. the resolved device)."""
        return str(self.endpoint)

    def open(self) -> None:  # noqa: B027 - optional hook
        """Acquire the device or file; raise DeskcastError with a one-line reason."""

    @abc.abstractmethod
    def read(self) -> PcmBlock | None:
        """The next block, or None at the end of the source."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device; safe to call twice."""

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
