"""Two ALSA captures made in the test VM, put on one sample clock afterwards.

On plain ALSA there is no meter sink to mix the hub and an output into one recording (an ALSA
``multi`` of the hub's ``dsnoop`` and a second card overruns at once in the VM), so the
launcher's ``@record`` request (:mod:`rig.vmlaunch`) captures each device in a thread of its
own and notes, after every read, the device's frame position with ``CLOCK_MONOTONIC`` just
after it was asked. This module maps each device's frames onto that clock and lines the two
recordings up into one 4-channel array (hub on channels 0-1, output on 2-3): what
:class:`rig.meter.EventTracker` reads, as from the meter sink of the PulseAudio benchmarks.

The mapping. A position ``p`` read at time ``t`` says that frame ``p`` had been captured by
``t``: ``t - p / rate`` is never earlier than the time of frame 0, and is later by how long
ago the position last moved plus how long the reader took to look. An ``snd-aloop`` card moves
its position on the kernel's timer tick (4 ms at HZ=250), so most readings are late by up to a
tick and some, taken just after a tick, by almost nothing: the *lower envelope* of
``t - p / rate`` is frame 0's time. It is taken per 5 s window (the earliest reading of each)
and fitted with a line (offset, and the device's rate against the clock, in ppm); both devices
get the same statistic, so what remains of the tick and of the reader's own delay mostly
cancels. :attr:`StreamClock.floor_ms` (how far the window minima stray from the line) and the
benchmark's ``zero`` pair (one ``aplay`` of 4 channels into both cards at once, linked:
the delay is 0) tell what precision that gives.

A recording with an overrun (the meter read too late and frames were lost) cannot be placed:
:func:`align` says so in :attr:`Aligned.problem` and gives no audio.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

WINDOW_S = 5.0
"""Length of the windows whose earliest reading makes the lower envelope."""
MAX_PPM_APART = 20.0
"""Rates further apart than this (the two cards run on one kernel timer, so they should not
be) would move the delay by more than 1 ms a minute: the recording is then not aligned."""


@dataclass(frozen=True)
class StreamClock:
    """When a device's frame 0 was captured, on ``CLOCK_MONOTONIC``, and how well that is known."""

    device: str
    frames: int
    offset_s: float
    """Monotonic time of frame 0 (the lower envelope's line at frame 0)."""
    ppm: float
    """The device's rate against the clock: +10 means 10 ppm more frames per second."""
    floor_ms: float
    """Largest distance of a window's earliest reading from the line: the envelope's wobble."""
    late_ms: float
    """Median lateness of the readings above the line (the tick plus the reader's delay)."""
    readings: int
    overruns: int


def fit_clock(positions: npt.ArrayLike, times: npt.ArrayLike, rate: int,
              window_s: float = WINDOW_S) -> tuple[float, float, float, float]:
    """(offset s, ppm, floor ms, median late ms) of the lower envelope of ``t - p / rate``."""
    p = np.asarray(positions, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    if p.size == 0:
        raise ValueError("no readings")
    y = t - p / rate
    window = max(1, round(window_s * rate))
    bins = (p // window).astype(np.int64)
    xs, ys = [], []
    for b in np.unique(bins):
        sel = np.flatnonzero(bins == b)
        k = sel[int(np.argmin(y[sel]))]
        xs.append(p[k])
        ys.append(y[k])
    x_min, y_min = np.asarray(xs), np.asarray(ys)
    if x_min.size >= 3:
        slope, offset = np.polyfit(x_min, y_min, 1)
    else:
        slope, offset = 0.0, float(y_min.min())
    line = offset + slope * p
    # y = t - p/rate and t = offset + p / (rate * (1 + d))  =>  slope ~ -d / rate
    ppm = -float(slope) * rate * 1e6
    floor_ms = 1000 * float(np.max(np.abs(y_min - (offset + slope * x_min))))
    late_ms = 1000 * float(np.median(y - line))
    return float(offset), ppm, floor_ms, late_ms


@dataclass
class Aligned:
    """Hub and output on one sample clock, or why not."""

    clocks: list[StreamClock]
    audio: npt.NDArray[np.float32] | None
    """``(frames, 4)``: the hub's frame i and the output's frame heard at the same moment on
    row i (hub channels 0-1, output 2-3); None when :attr:`problem` says why."""
    shift_frames: int
    """How many frames after the hub's recording started the output's started."""
    problem: str = ""
    cpu_s: float = 0.0
    """CPU seconds the meter used in the VM (both threads)."""


def _stream(prefix: Path, i: int, data: dict[str, object],
            rate: int) -> tuple[StreamClock | None, npt.NDArray[np.int16] | None, str]:
    device = str(data.get("device", f"device {i}"))
    if "error" in data:
        return None, None, f"{device}: {data['error']}"
    marks = np.asarray(data["marks"], dtype=np.float64).reshape(-1, 3)
    overruns = list(data.get("overruns") or [])  # type: ignore[call-overload]
    raw = np.fromfile(Path(f"{prefix}-{i}.raw"), dtype="<i2").reshape(-1, 2)
    if marks.shape[0] == 0:
        return None, None, f"{device}: no readings"
    offset, ppm, floor_ms, late_ms = fit_clock(marks[:, 0] + marks[:, 1], marks[:, 2], rate)
    clock = StreamClock(device, int(raw.shape[0]), offset, ppm, floor_ms, late_ms,
                        int(marks.shape[0]), len(overruns))
    problem = (f"{device}: {len(overruns)} overrun(s), first after {overruns[0] / rate:.1f} s "
               "(frames lost: its frames no longer map onto the clock)") if overruns else ""
    return clock, raw, problem


def align(prefix: Path, extra_delay_frames: int = 0) -> Aligned:
    """Read ``PREFIX.json`` and ``PREFIX-0.raw`` (hub), ``PREFIX-1.raw`` (output) as
    ``@record`` wrote them and line them up. ``extra_delay_frames`` moves the output that much
    later (so that a delay near 0, as in a check of the method, stays positive)."""
    meta = json.loads(Path(f"{prefix}.json").read_text())
    rate = int(meta["rate"])
    clocks: list[StreamClock] = []
    raws: list[npt.NDArray[np.int16]] = []
    problems: list[str] = []
    for i, data in enumerate(meta["streams"][:2]):
        clock, raw, problem = _stream(prefix, i, data, rate)
        if clock is not None and raw is not None:
            clocks.append(clock)
            raws.append(raw)
        if problem:
            problems.append(problem)
    cpu = float(meta.get("cpu_s", 0.0))
    if len(clocks) < 2 or problems:
        return Aligned(clocks, None, 0, "; ".join(problems) or "fewer than two streams", cpu)
    hub, out = clocks
    if abs(hub.ppm - out.ppm) > MAX_PPM_APART:
        return Aligned(clocks, None, 0, f"the devices' rates differ by "
                       f"{hub.ppm - out.ppm:+.0f} ppm (> {MAX_PPM_APART:.0f})", cpu)
    shift = round((out.offset_s - hub.offset_s) * rate) + extra_delay_frames
    frames = min(raws[0].shape[0], raws[1].shape[0] + shift)
    audio = np.zeros((max(0, frames), 4), dtype=np.float32)
    audio[:, 0:2] = raws[0][:frames] / 32768.0
    lo = max(0, shift)
    audio[lo:, 2:4] = raws[1][lo - shift:frames - shift] / 32768.0
    return Aligned(clocks, audio, shift, "", cpu)
