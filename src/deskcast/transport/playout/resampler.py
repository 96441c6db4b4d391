"""The resampling step: the drift controller's ratio applied to the audio.

libsamplerate's ratio may change between calls, so a ratio a few hundred ppm off 1 (far below
what anyone can hear as pitch) is applied frame by frame (:class:`AdaptiveResampler`), and
what it applied over the last second of input is kept for the receiver's report
(:class:`CorrectionMeter`).
"""

from __future__ import annotations

import collections

import numpy as np
import numpy.typing as npt
import samplerate

from deskcast.media import AudioFormat, PcmBlock


class AdaptiveResampler:
    """Resamples PCM blocks by a ratio that may change from block to block."""

    def __init__(self, fmt: AudioFormat, converter: str = "sinc_fastest") -> None:
        self.fmt = fmt
        self._resampler = samplerate.Resampler(converter, channels=fmt.channels)

    def process(self, block: PcmBlock, ratio: float) -> PcmBlock:
        if ratio == 1.0 and not self.active:
            return block
        self.active = True
        x: npt.NDArray[np.float32] = block.as_float()
        y = np.asarray(self._resampler.process(x, ratio), dtype=np.float32)
        return PcmBlock.from_float(y.reshape(-1, self.fmt.channels), self.fmt, block.pts)

    active = False
    """Once resampling has started it stays on: switching it off would cut the filter's
    buffered samples out of the stream."""

    def reset(self) -> None:
        self._resampler.reset()
        self.active = False


class CorrectionMeter:
    """The correction applied over the last second of input (``rate`` samples)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._corrections: collections.deque[tuple[int, float]] = collections.deque()
        """(input samples, ratio) of each frame resampled in the last second of input."""
        self._corrected = 0
        """... and the samples they add up to."""

    def add(self, samples: int, ratio: float) -> None:
        """``samples`` of input were resampled by ``ratio``."""
        corrections = self._corrections
        corrections.append((samples, ratio))
        self._corrected += samples
        while self._corrected - corrections[0][0] >= self.rate:
            self._corrected -= corrections.popleft()[0]

    @property
    def ppm(self) -> float | None:
        """1 - ratio in ppm, weighted by input (positive consumes the input faster, for a
        sender whose clock runs ahead of the sink's); None before the first frame."""
        frames = list(self._corrections)
        total = sum(n for n, _ in frames)
        if not total:
            return None
        return 1e6 * sum(n * (1.0 - r) for n, r in frames) / total
