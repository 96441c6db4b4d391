"""``clock_ppm`` on a device source: the capture clock emulated off nominal by resampling."""

from __future__ import annotations

import numpy as np
import pytest

from deskcast.capture import make_source
from deskcast.capture.base import Source
from deskcast.capture.skew import SkewedSource
from deskcast.capture.tone import ToneSource
from deskcast.endpoints import Direction, parse
from deskcast.errors import EndpointError
from deskcast.media import AudioFormat, PcmBlock
from rig.signals import dominant_frequency

FMT = AudioFormat()
BLOCK = 480
PIECE = 120


class _Device(Source):
    """A device stand-in: a 1 kHz tone, unpaced, counting what it was asked for."""

    clocked = True

    def __init__(self) -> None:
        super().__init__(parse("pulse:hub.monitor", Direction.SOURCE), FMT, PIECE)
        self._tone = ToneSource(parse("tone:1000", Direction.SOURCE), FMT, PIECE)
        self._tone.pacer = None
        self.frames_read = 0

    def read(self) -> PcmBlock | None:
        self.frames_read += PIECE
        self.overruns = self.frames_read // 48000
        return self._tone.read()


def _run(skewed: SkewedSource, device: _Device, seconds: float) -> np.ndarray:
    out: list[np.ndarray] = []
    while device.frames_read < seconds * FMT.rate:
        block = skewed.read()
        assert block is not None
        assert block.frames == BLOCK
        out.append(block.as_float())
    return np.concatenate(out)


@pytest.mark.parametrize("ppm", [5000.0, -5000.0])
def test_a_fast_clock_gives_more_samples_and_a_lower_pitch(ppm: float) -> None:
    device = _Device()
    skewed = SkewedSource(device, ppm, BLOCK)
    first = _run(skewed, device, 1.0)
    read_first = device.frames_read
    audio = np.concatenate([first, _run(skewed, device, 5.0)])
    # What a clock ppm fast makes of the same sound: (1 + ppm/1e6) times the samples (counted
    # between two points, so the resampler's delay and the partial block cancel)...
    made = audio.shape[0] - first.shape[0]
    assert made / (device.frames_read - read_first) == pytest.approx(1 + ppm / 1e6, abs=2e-4)
    # ...so, played at the nominal rate, the 1 kHz tone sounds that much lower.
    steady = audio[FMT.rate:3 * FMT.rate]
    assert dominant_frequency(steady, FMT.rate) == pytest.approx(1000 / (1 + ppm / 1e6),
                                                                 abs=0.3)
    assert skewed.clocked and skewed.overruns == device.overruns == 5


def test_blocks_leave_at_the_fast_clocks_pace_not_in_bursts() -> None:
    device = _Device()
    skewed = SkewedSource(device, 5000.0, BLOCK)
    read_at: list[int] = []
    for _ in range(2000):
        assert skewed.read() is not None
        read_at.append(device.frames_read)
    # Each block takes 480 / 1.005 = 477.6 of the device's frames, read in pieces of 120: the
    # device time between two blocks is never 0 (two at once) nor more than a block.
    between = np.diff(read_at[10:])
    assert set(between.tolist()) == {360, 480}
    assert between.mean() == pytest.approx(BLOCK / 1.005, abs=0.5)


def test_clock_ppm_on_a_device_uri_wraps_the_device_source() -> None:
    source = make_source("pulse:hub.monitor?clock_ppm=300", FMT, BLOCK)
    assert isinstance(source, SkewedSource)
    assert source.ratio == pytest.approx(1.0003)
    assert source.name == "pulse:hub.monitor"
    assert source.block_frames == BLOCK and source.inner.block_frames == PIECE
    with pytest.raises(EndpointError, match="clock_ppm must be within"):
        make_source("pulse:hub.monitor?clock_ppm=20000", FMT, BLOCK)
