"""The :class:`Source` interface every capture backend implements."""

from __future__ import annotations

import abc

from deskcast.endpoints import AudioEnd, Endpoint
from deskcast.media import AudioFormat, PcmBlock, SinkTiming
from deskcast.pacing import Pacer


class Source(AudioEnd, abc.ABC):
    """PCM in: yields blocks of exactly ``block_frames`` frames in ``fmt``.

    ``read()`` blocks until the next block is due and returns None when the source has ended
    (a file without ``loop``, stdin at EOF). Device sources are paced by the device clock;
    file and generator sources pace themselves at real time.
    """

    clocked = False
    """True when a sound card / sound server clock paces ``read()``."""

    pacer: Pacer | None = None
    """Self-pacing of file and generator sources (see :meth:`pace`): at real time, unless
    the sink says its device clock paces the loop."""

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int) -> None:
        super().__init__(endpoint, fmt, block_frames)
        self.block_bytes = block_frames * fmt.frame_bytes
        self.overruns = 0
        """Times the device dropped captured audio because we read too late."""
        self.last_sink_timing: SinkTiming | None = None
        """What the sink said last (:meth:`sink_timing`); None: not told (a clocked source)."""

    def sink_timing(self, timing: SinkTiming) -> None:
        """The sink's timing for the block the next :meth:`read` returns (when it will be
        heard, whether the device's clock paces the loop). The pump calls it before each read
        of a source that is not clocked, with :meth:`deskcast.playback.base.Sink.timing`.
        Sources that use it (the network receiver: its delay and the sink's clock) read
        :attr:`last_sink_timing`; a wrapper passes it on."""
        self.last_sink_timing = timing

    @property
    def paced_by_sink(self) -> bool:
        """The sink said its device clock paces the loop: do not pace at real time too (the
        sound card then sets the pace and its buffer stays full instead of near empty)."""
        timing = self.last_sink_timing
        return timing is not None and timing.clocked

    def pace(self, pts: int) -> None:
        """Wait until frame ``pts`` is due at real time (:attr:`pacer`), unless the sink's
        clock paces the loop or the source has no pacer."""
        if self.pacer is not None and not self.paced_by_sink:
            self.pacer.wait(pts)

    @abc.abstractmethod
    def read(self) -> PcmBlock | None:
        """The next block, or None at the end of the source."""
