"""The one-clock meter: delays, steps and gaps found in a synthetic recording exactly where
they were put, and a real server keeping each sink on its own channels."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from rig import SoundServer
from rig.meter import EventTracker, MarkerSignal, Meter, MeterRecording, SignalPlayer, steps
from rig.signals import dominant_frequency

RATE = 48000


def _write(path: Path, hub: np.ndarray, out: np.ndarray) -> None:
    both = np.stack([hub, hub, out, out], axis=1)
    path.write_bytes(np.round(np.clip(both, -1, 1) * 32767).astype("<i2").tobytes())


def test_delays_steps_and_gaps_are_found_where_they_were_put(tmp_path: Path) -> None:
    signal = MarkerSignal()
    n = 30 * RATE
    hub = signal.render(0, n)
    out = np.zeros(n)
    step_at = 15 * RATE
    d1, d2 = round(0.050 * RATE), round(0.0725 * RATE)  # 50 ms, then 72.5 ms
    out[d1:step_at + d1] = hub[:step_at]
    out[step_at + d2:] = hub[step_at:n - d2]
    gap_at, gap = 20 * RATE + 1234, round(0.020 * RATE)
    out[gap_at:gap_at + gap] = 0.0
    _write(tmp_path / "m.raw", hub, out)
    rec = MeterRecording(Meter(), tmp_path / "m.raw")
    tracker = EventTracker(rec)
    tracker.update()

    delays = [e.delay_ms for e in tracker.events]
    # every chirp but those in the last second (not yet followed by a full search window)
    assert len(delays) + len(tracker.missed) >= 56
    before = [e.delay_ms for e in tracker.events if e.at + d1 < step_at - RATE // 10]
    after = [e.delay_ms for e in tracker.events if e.at > step_at + RATE // 10]
    assert np.allclose(before, 50.0, atol=0.05)
    assert np.allclose(after, 72.5, atol=0.05)
    found = steps(delays)
    assert len(found) == 1 and found[0][1] == pytest.approx(22.5, abs=0.1)
    # the one gap, 20 ms, where it was (the step's own 22.5 ms hole is a gap too)
    gaps = {round(at / RATE * 1000): ms for at, ms in tracker.gaps}
    assert any(abs(at - 1000 * gap_at / RATE) <= 1 and abs(ms - 20) <= 1
               for at, ms in gaps.items()), gaps
    assert len(tracker.gaps) == 2


def test_a_chirp_that_never_came_out_is_missed_not_measured(tmp_path: Path) -> None:
    signal = MarkerSignal()
    n = 8 * RATE
    hub = signal.render(0, n)
    d = round(0.1 * RATE)
    out = np.zeros(n)
    out[d:] = hub[:n - d]
    lost = 3 * signal.period + d  # the third chirp, lost on the way
    out[lost - 100:lost + round(0.04 * RATE)] = 0.0
    _write(tmp_path / "m.raw", hub, out)
    tracker = EventTracker(MeterRecording(Meter(), tmp_path / "m.raw"))
    tracker.update()
    assert len(tracker.missed) == 1
    assert abs(tracker.missed[0] - 3 * signal.period) < RATE // 100
    assert all(abs(e.delay_ms - 100.0) < 0.05 for e in tracker.events)


def test_steps_ignore_a_stray_value() -> None:
    assert steps([10.0] * 10 + [40.0] + [10.0] * 10) == []
    assert steps([10.0] * 10 + [14.0] * 10) == [(10, 4.0)]


def test_each_sink_is_recorded_on_its_own_channels(pulseaudio_server: SoundServer,
                                                    tmp_path: Path) -> None:
    meter = Meter(("a", "b"))
    with meter.installed(pulseaudio_server), \
            MeterRecording(meter, tmp_path / "m.raw", pulseaudio_server) as rec, \
            SignalPlayer(pulseaudio_server, "a", MarkerSignal(bed_db=-12.0), 1.0) as player:
        player.wait(timeout=10)
        time.sleep(0.2)
        x = rec.read(0, rec.frames())
    a, b = x[:, 0:2], x[:, 2:4]
    assert np.max(np.abs(b)) == 0.0
    loud = np.flatnonzero(np.abs(a[:, 0]) > 0.05)
    assert loud.size > 0.8 * RATE
    assert dominant_frequency(a[loud[0]:loud[-1]], RATE) == pytest.approx(1000.0, abs=1.0)
