"""rig.alsameter: two captures placed on one clock from (position, time) readings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rig.alsameter import align, fit_clock

RATE = 48000
TICK_S = 0.004  # snd-aloop moves its position on the 250 Hz kernel tick


def readings(start_s: float, seconds: float, *, ppm: float = 0.0,
             seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(positions, times) as a reader sees them: the position moves on the tick, the reader
    looks at random moments (every ~5 ms) and takes up to 0.3 ms to note the time."""
    rng = np.random.default_rng(seed)
    looks = np.cumsum(rng.uniform(0.003, 0.007, round(seconds / 0.005)))
    ticks = np.floor(looks / TICK_S) * TICK_S
    positions = np.floor(ticks * RATE * (1 + ppm * 1e-6))
    times = start_s + looks + rng.uniform(0.0, 0.0003, looks.size)
    return positions, times


def test_the_lower_envelope_finds_frame_zero_despite_the_tick() -> None:
    positions, times = readings(100.0, 60.0)
    offset, ppm, floor_ms, late_ms = fit_clock(positions, times, RATE)
    assert offset == pytest.approx(100.0, abs=0.0002)
    assert abs(ppm) < 5
    assert floor_ms < 0.5
    assert 0.5 < late_ms < 4.5  # readings are late by up to a tick: the median is not used


def test_a_device_running_fast_shows_its_ppm() -> None:
    positions, times = readings(5.0, 60.0, ppm=50.0)
    _, ppm, _, _ = fit_clock(positions, times, RATE)
    assert ppm == pytest.approx(50.0, abs=5.0)


def _write(prefix: Path, streams: list[dict[str, object]], audio: list[np.ndarray]) -> None:
    prefix.with_suffix(".json").write_text(json.dumps({"rate": RATE, "streams": streams}))
    for i, x in enumerate(audio):
        x.astype("<i2").tofile(f"{prefix}-{i}.raw")


def _stream(device: str, start_s: float, seed: int, overruns: list[int] | None = None
            ) -> dict[str, object]:
    positions, times = readings(start_s, 20.0, seed=seed)
    marks = np.stack([positions, np.zeros_like(positions), times], axis=1)
    return {"device": device, "marks": marks.ravel().tolist(), "overruns": overruns or []}


def test_two_recordings_are_lined_up_by_when_each_started(tmp_path: Path) -> None:
    """The output's recording started 0.25 s after the hub's; a click 57.5 ms late at the
    output lands 57.5 ms after the hub's click in the joined recording."""
    frames = 20 * RATE
    hub = np.zeros((frames, 2), dtype=np.int16)
    out = np.zeros((frames, 2), dtype=np.int16)
    click_s, delay_s, out_start_s = 3.0, 0.0575, 0.25
    hub[round(click_s * RATE)] = 20000
    out[round((click_s + delay_s - out_start_s) * RATE)] = 20000
    prefix = tmp_path / "meter"
    _write(prefix, [_stream("hub", 10.0, 1), _stream("out", 10.0 + out_start_s, 2)], [hub, out])
    aligned = align(prefix)
    assert aligned.problem == ""
    assert aligned.audio is not None
    assert aligned.shift_frames == pytest.approx(out_start_s * RATE, abs=RATE * 0.0003)
    hub_at = int(np.argmax(aligned.audio[:, 0]))
    out_at = int(np.argmax(aligned.audio[:, 2]))
    assert (out_at - hub_at) / RATE == pytest.approx(delay_s, abs=0.0004)


def test_a_recording_that_overran_is_not_placed(tmp_path: Path) -> None:
    frames = 20 * RATE
    silent = np.zeros((frames, 2), dtype=np.int16)
    prefix = tmp_path / "meter"
    _write(prefix, [_stream("hub", 10.0, 1, overruns=[2 * RATE]), _stream("out", 10.2, 2)],
           [silent, silent])
    aligned = align(prefix)
    assert aligned.audio is None
    assert "hub: 1 overrun(s), first after 2.0 s" in aligned.problem
