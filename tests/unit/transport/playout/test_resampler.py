"""The resampling step on audio: the length changes by the ratio, the pitch within it."""

from __future__ import annotations

import numpy as np
import pytest

from deskcast.media import AudioFormat, PcmBlock
from deskcast.transport.playout import AdaptiveResampler

from .simulation import RATE


def test_resampler_changes_length_by_the_ratio_and_keeps_the_pitch_within_the_ratio() -> None:
    fmt = AudioFormat()
    t = np.arange(RATE * 2) / RATE
    x = 0.5 * np.sin(2 * np.pi * 1000 * t)
    rs = AdaptiveResampler(fmt)
    out = []
    for i in range(0, len(x), 960):
        chunk = np.repeat(x[i:i + 960, None], 2, axis=1)
        out.append(rs.process(PcmBlock.from_float(chunk, fmt), 1.002).as_float())
    y = np.concatenate(out)
    assert len(y) == pytest.approx(len(x) * 1.002, abs=200)
    seg = y[RATE // 2: RATE // 2 + RATE, 0]
    mag = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), 8 * len(seg)))
    freq = np.argmax(mag) * RATE / (8 * len(seg))
    assert freq == pytest.approx(1000 / 1.002, abs=0.5)
