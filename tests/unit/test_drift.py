"""Drift compensation, simulated over an hour with a fake clock, and the resampler on audio."""

from __future__ import annotations

import numpy as np
import pytest

from deskcast.media import AudioFormat, PcmBlock
from deskcast.transport.drift import AdaptiveResampler, DriftController

RATE = 48000
PACKET = 960          # the sender's 20 ms packets
OUT = 480             # our sink takes 10 ms blocks
TARGET = 1920         # 40 ms jitter target


def simulate(ppm: float, seconds: float, compensate: bool = True) -> tuple[list[float], float]:
    """Sender at (1 + ppm) x nominal, receiver at nominal; returns depths (ms) once a second
    and the controller's drift estimate."""
    ctl = DriftController(RATE)
    sender_rate = RATE * (1 + ppm / 1e6)
    produced = float(TARGET)  # start at the target
    consumed = 0.0
    depths: list[float] = []
    t = 0.0
    step = OUT / RATE
    next_report = 1.0
    while t < seconds:
        t += step
        produced_now = TARGET + int(t * sender_rate / PACKET) * PACKET  # whole packets
        depth = produced_now - consumed
        ratio = ctl.update(depth, OUT) if compensate else 1.0
        consumed += OUT / ratio
        produced = produced_now
        if t >= next_report:
            depths.append(1000 * (produced - consumed) / RATE)
            next_report += 1.0
    return depths, ctl.drift_ppm


@pytest.mark.parametrize("ppm", [300.0, -300.0, 1000.0, 0.0])
def test_an_hour_of_drift_neither_underruns_nor_grows(ppm: float) -> None:
    depths, estimate = simulate(ppm, 3600.0)
    settled = depths[120:]
    assert min(depths) > 5.0, "the buffer ran dry"
    assert max(settled) < 40.0 + 30.0                   # no creep: target + deadband + packet
    # It holds the level the stream settled at (here: the sawtooth of 20 ms packets popped in
    # 10 ms steps sits below the start threshold) rather than pulling it elsewhere.
    assert np.mean(settled) == pytest.approx(40.0, abs=20.0)
    assert estimate == pytest.approx(ppm, abs=max(30.0, abs(ppm) * 0.1))


def test_without_compensation_the_delay_creeps() -> None:
    depths, _ = simulate(300.0, 600.0, compensate=False)
    assert depths[-1] - depths[0] > 150.0  # 300 ppm for 10 minutes: +180 ms


def test_correction_is_limited_to_two_per_mille() -> None:
    ctl = DriftController(RATE)
    for _ in range(500):
        ctl.update(TARGET, OUT)  # settles at the target
    for _ in range(10000):
        ratio = ctl.update(10 * RATE, OUT)  # then absurdly full
    assert ratio == pytest.approx(1 - 0.002)


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


def test_steps_the_jitter_buffer_makes_are_followed_not_corrected() -> None:
    """An underrun concealed by expanding adds a frame of depth for good; the controller
    moves its set-point instead of bending the pitch to pull the frame back out."""
    ctl = DriftController(RATE)
    for _ in range(400):                          # 4 s at the target: settled
        assert ctl.update(TARGET, OUT) == pytest.approx(1.0, abs=1e-9)
    assert ctl.setpoint == pytest.approx(TARGET)
    ctl.shift(3 * PACKET)                         # three expands: +60 ms, far past the deadband
    ratios = [ctl.update(TARGET + 3 * PACKET, OUT) for _ in range(3000)]
    assert max(abs(r - 1.0) for r in ratios) < 1e-9
    ctl.shift(-2 * PACKET)                        # the backlog dropped again
    ratios = [ctl.update(TARGET + PACKET, OUT) for _ in range(3000)]
    assert max(abs(r - 1.0) for r in ratios) < 1e-9


def test_a_step_while_settling_restarts_the_measurement() -> None:
    ctl = DriftController(RATE)
    for _ in range(100):
        ctl.update(4 * TARGET, OUT)               # 1 s of a start-up burst
    ctl.shift(PACKET)
    for _ in range(250):
        ctl.update(TARGET, OUT)
    assert ctl.setpoint == pytest.approx(TARGET)


def test_audio_added_by_steps_is_played_out_again_slowly() -> None:
    """Three frames expanded after a burst of late packets: 60 s later the delay starts
    returning to where the stream settled, never bending the pitch by more than 0.5 per mille."""
    ctl = DriftController(RATE)
    consumed = 0.0
    produced = float(TARGET)
    depths: list[float] = []
    ratios: list[float] = []
    for step in range(int(250 * RATE / OUT)):
        if step == 400:                          # 4 s in: three frames concealed, not consumed
            produced += 3 * PACKET
            ctl.shift(3 * PACKET)
        produced += OUT                          # the sender, at our rate
        depth = produced - consumed
        ratio = ctl.update(depth, OUT, TARGET)
        consumed += OUT / ratio
        depths.append(1000 * depth / RATE)
        ratios.append(ratio)
    steps_per_s = RATE // OUT
    settled = depths[399]                                      # target + one block
    assert depths[401] == pytest.approx(settled + 60.0, abs=1.0)
    assert depths[-1] == pytest.approx(settled, abs=3.0)       # back where it settled
    assert max(abs(r - 1.0) for r in ratios) <= 0.0005 + 1e-6
    back = next(i for i, d in enumerate(depths) if i > 401 and d < settled + 3) / steps_per_s
    assert 160 < back < 200                    # 60 s of margin, then 57 ms at 500 ppm: ~175 s
