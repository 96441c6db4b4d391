"""A capture clock off nominal, for tests and benchmarks: ``pulse:hub.monitor?clock_ppm=300``.

A sound card whose crystal runs 300 ppm fast takes 48,014.4 samples in each real second and
calls them 48,000 Hz audio. Resampling what a device captured by ``1 + ppm/1e6`` makes exactly
that stream: more samples for the same sound, handed over at the device's pace. It lets a
benchmark drive the receiver's drift compensation with a real capture path (the sound server,
its timing and its hiccups) while the sound going in and the sound coming out stay on one
sample clock, which a generator paced off nominal (``tone?clock_ppm=``) cannot give.

The device is read in small pieces (:data:`PIECE_MS`) and a block is handed on as soon as the
resampled samples fill it, so blocks leave at the fast clock's pace, give or take a piece: read
in whole blocks, 300 ppm would be one extra 20 ms block every 67 s, a sawtooth no sound card
makes.
"""

from __future__ import annotations

import numpy as np
import samplerate

from deskcast.capture.base import Source
from deskcast.errors import EndpointError
from deskcast.media import PcmBlock, Reblocker, SinkTiming

MAX_PPM = 10000.0
PIECE_MS = 2.5
"""The device is read in pieces this long (ms): blocks leave within that of their time."""


class SkewedSource(Source):
    """Wraps a device source (opened with blocks of :data:`PIECE_MS`); its blocks of
    ``block_frames`` come ``ppm`` parts per million more numerous."""

    def __init__(self, inner: Source, ppm: float, block_frames: int) -> None:
        super().__init__(inner.endpoint, inner.fmt, block_frames)
        if abs(ppm) > MAX_PPM:
            raise EndpointError(f"{inner.endpoint}: clock_ppm must be within ±{MAX_PPM:g}")
        self.inner = inner
        self.ratio = 1.0 + ppm / 1e6
        self.clocked = inner.clocked
        self._resampler = samplerate.Resampler("sinc_fastest", channels=inner.fmt.channels)
        self._blocks = Reblocker(inner.fmt, block_frames)
        self._ready: list[PcmBlock] = []

    @property
    def name(self) -> str:
        return self.inner.name

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def sink_timing(self, timing: SinkTiming) -> None:
        super().sink_timing(timing)
        self.inner.sink_timing(timing)

    def read(self) -> PcmBlock | None:
        while not self._ready:
            block = self.inner.read()
            self.overruns = self.inner.overruns
            if block is None:
                return None
            y = self._resampler.process(block.as_float(), self.ratio)
            pcm = PcmBlock.from_float(np.asarray(y, dtype=np.float32).reshape(
                -1, self.fmt.channels), self.fmt, block.pts)
            self._ready.extend(self._blocks.push(pcm.data))
        return self._ready.pop(0)
