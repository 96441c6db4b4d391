"""The rooms' click detector on synthetic recordings: fractional delays found to a small
fraction of a sample, with noise too; a click that never came out counted as lost, not taken
for another; offsets between rooms from the delays (no sound server: fast)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from rig.meter import Meter, MeterRecording
from rig.rooms import ClickSignal, ClickTracker, hub_onsets, locate, summarize

RATE = 48000
_F64 = npt.NDArray[np.float64]


def shifted(x: _F64, samples: float) -> _F64:
    """``x`` delayed by a fractional number of samples (a phase ramp: exact for a band-limited
    signal with silence at both ends)."""
    size = 1 << (x.size + int(samples) + 64).bit_length()
    spectrum = np.fft.rfft(x, size) * np.exp(-2j * np.pi * np.fft.rfftfreq(size) * samples)
    return np.fft.irfft(spectrum, size)[: x.size]


def one_click(k: int = 1) -> _F64:
    signal = ClickSignal()
    return signal.render(k * signal.period - 240, 2 * 240 + round(signal.click_s * RATE))


@pytest.mark.parametrize("delay", [0.0, 0.25, 0.5, 0.75, 3.1, 1234.6])
def test_a_fractional_delay_is_found_to_a_hundredth_of_a_sample(delay: float) -> None:
    template = one_click()
    window = shifted(np.concatenate((template, np.zeros(2000))), delay)
    match = locate(template, window)
    assert match is not None
    assert match.lag == pytest.approx(delay, abs=0.01)
    assert match.corr > 0.98  # at the nearest whole sample, up to half a sample off


@pytest.mark.parametrize("k", range(1, 9))
def test_noise_at_minus_50_dbfs_moves_the_peak_by_less_than_a_tenth_of_a_sample(k: int) -> None:
    rng = np.random.default_rng(k)
    template = one_click(k)
    window = shifted(np.concatenate((np.zeros(500), template, np.zeros(500))), 0.4)
    window += rng.normal(0.0, 10 ** (-50 / 20), window.size)
    match = locate(template, window)
    assert match is not None
    assert match.lag == pytest.approx(500.4, abs=0.1)
    assert match.corr > 0.95


def test_no_click_is_taken_for_another_in_the_cycle() -> None:
    clicks = ClickSignal().clicks()
    for a, b in itertools.permutations(clicks, 2):
        match = locate(a, np.concatenate((np.zeros(300), b, np.zeros(300))))
        assert match is not None and match.corr < 0.4


def test_silence_or_a_short_window_has_no_match() -> None:
    assert locate(np.zeros(100), np.ones(500)) is None
    assert locate(np.ones(100), np.ones(50)) is None
    match = locate(one_click(), np.zeros(5000))
    assert match is not None and match.corr == 0.0


def test_hub_onsets_are_the_clicks_starts() -> None:
    signal = ClickSignal()
    hub = signal.render(0, 5 * RATE)
    # the Hann window's first millisecond is below -40 dBFS: the onset is a few ms in
    onsets = hub_onsets(hub)
    assert len(onsets) == 9
    for k, at in enumerate(onsets, start=1):
        assert 0 <= at - k * signal.period <= 0.006 * RATE


def _write(path: Path, channels: list[_F64]) -> None:
    both = np.stack([c for ch in channels for c in (ch, ch)], axis=1)
    path.write_bytes(np.round(np.clip(both, -1, 1) * 32767).astype("<i2").tobytes())


def test_each_rooms_delay_offsets_and_a_lost_click(tmp_path: Path) -> None:
    signal = ClickSignal()
    n = 12 * RATE
    hub = signal.render(0, n)
    delays = {"room1": 0.050 * RATE, "room2": 0.050 * RATE + 0.5, "room3": 1.2003 * RATE}
    rooms = {r: shifted(hub, d) for r, d in delays.items()}
    # the fourth click never reached room3
    lost = 4 * signal.period + round(delays["room3"])
    rooms["room3"][lost - 50:lost + round(0.03 * RATE)] = 0.0
    rng = np.random.default_rng(1)
    for x in rooms.values():
        np.add(x, rng.normal(0.0, 10 ** (-60 / 20), n), out=x)
    meter = Meter(("hub", "room1", "room2", "room3"))
    _write(tmp_path / "m.raw", [hub, *rooms.values()])
    tracker = ClickTracker(MeterRecording(meter, tmp_path / "m.raw"), ("room1", "room2", "room3"))
    tracker.update()
    tracker.update()  # nothing new: nothing measured twice
    # every click with a full search window behind it: 12 s - 2.03 s
    assert len(tracker.clicks) == 19
    s = summarize(tracker.clicks, ("room1", "room2", "room3"))
    assert s.lost == {"room1": 0, "room2": 0, "room3": 1}
    assert [c.delays_ms["room3"] is None for c in tracker.clicks].index(True) == 3
    for room, d in delays.items():
        assert s.delay_ms[room].median == pytest.approx(1000 * d / RATE, abs=0.002)
    one_two = s.offset_ms[("room1", "room2")]
    assert one_two.count == 19
    assert one_two.median == pytest.approx(1000 * 0.5 / RATE, abs=0.001)
    assert one_two.max == pytest.approx(1000 * 0.5 / RATE, abs=0.002)
    assert s.offset_ms[("room1", "room3")].count == 18
    assert s.offset_ms[("room2", "room3")].median == pytest.approx(1150.3 - 0.5 / RATE * 1000,
                                                                   abs=0.003)
